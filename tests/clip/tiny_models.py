"""Tiny open_clip models with random weights, built offline for the CLIP and prompt tests."""

from __future__ import annotations

import copy
from typing import Any

import open_clip
import torch
from open_clip.transformer import Transformer
from torch import nn

from reidkit.clip import load_clip

# Text and vision widths differ (and neither is 512) so that no width is taken for granted.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 16,
        "width": 64,
        "layers": 2,
        "head_width": 16,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 48,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}
# A CustomTextCLIP whose text tower lives on ``model.text`` and projects with an nn.Linear.
TINY_CUSTOM_TEXT_CONFIG: dict[str, Any] = {
    **copy.deepcopy(TINY_CONFIG),
    "custom_text": True,
}
TINY_CUSTOM_TEXT_CONFIG["text_cfg"]["proj_bias"] = True
PERSON_SIZE = (64, 32)  # a 4 x 2 patch grid


def tiny_clip(
    seed: int = 0, config: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[nn.Module, open_clip.SimpleTokenizer]:
    """A tiny CLIP in eval mode, re-gridded to ``PERSON_SIZE`` unless ``image_size`` is given."""
    torch.manual_seed(seed)
    kwargs.setdefault("image_size", PERSON_SIZE)
    model, tokenizer = load_clip(TINY_CONFIG if config is None else config, **kwargs)
    return model.eval(), tokenizer


def as_sequence_first(transformer: Transformer) -> Transformer:
    """The same blocks and weights in an open_clip transformer that runs ``(N, B, width)``."""
    block = transformer.resblocks[0]
    sequence_first = Transformer(
        transformer.width,
        transformer.layers,
        block.attn.num_heads,
        mlp_ratio=block.mlp.c_fc.out_features / transformer.width,
        batch_first=False,
    )
    sequence_first.load_state_dict(transformer.state_dict())
    return sequence_first.eval()
