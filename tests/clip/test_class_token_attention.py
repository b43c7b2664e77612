"""Class-token attention of the last block against a per-head computation."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.clip import CLIPImageEncoder, class_token_attention
from tests.clip.tiny_models import as_sequence_first, tiny_clip


def _reference_attention(block, tokens: torch.Tensor, patches: int) -> torch.Tensor:
    """Softmax(q_cls k^T / sqrt(d)) per head from the block's packed projection, head mean."""
    attention = block.attn
    heads, width = attention.num_heads, tokens.shape[-1]
    x = block.ln_1(tokens)
    q, k, _ = (x @ attention.in_proj_weight.T + attention.in_proj_bias).split(width, dim=-1)
    batch, length = tokens.shape[:2]
    q = q.reshape(batch, length, heads, -1)[:, 0]  # (B, H, d)
    k = k.reshape(batch, length, heads, -1)  # (B, T, H, d)
    scores = torch.einsum("bhd,bthd->bht", q, k) / math.sqrt(width // heads)
    return scores.softmax(dim=-1).mean(dim=1)[:, 1 : 1 + patches]


@pytest.mark.parametrize("prompts", [0, 2])
def test_attention_equals_per_head_reference(prompts: int) -> None:
    model, _ = tiny_clip()
    encoder = CLIPImageEncoder(model, return_layers=(0, -2)).eval()
    images = torch.randn(3, 3, 64, 32)
    visual_prompts = torch.randn(3, prompts, 64) if prompts else None
    with torch.no_grad():
        features = encoder(images, visual_prompts)
        weights = encoder.class_token_attention(features)
        block, tokens = model.visual.transformer.resblocks[-1], features.layers[1]
        expected = _reference_attention(block, tokens, 8).reshape(3, 4, 2, 1)
        sequence_first = as_sequence_first(model.visual.transformer).resblocks[-1]
        from_sequence_first = class_token_attention(sequence_first, tokens, (4, 2))
    assert weights.shape == (3, 4, 2, 1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(from_sequence_first, expected)
    assert (weights.sum(dim=(1, 2, 3)) <= 1 + 1e-6).all()


def test_attention_needs_the_input_of_the_last_block() -> None:
    model, _ = tiny_clip()
    encoder = CLIPImageEncoder(model, return_layers=(-1,)).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 32))
    with pytest.raises(ValueError, match="-2 among its return_layers"):
        encoder.class_token_attention(features)
    with pytest.raises(ValueError, match="tokens must have shape"):
        class_token_attention(model.visual.transformer.resblocks[-1], features.layers[0], (5, 2))
