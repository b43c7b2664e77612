"""Tiny randomly initialised ViTs (timm and open_clip), built offline for the [PART] tests."""

from __future__ import annotations

import timm
import torch
from torch import nn

from tests.clip.tiny_models import PERSON_SIZE, tiny_clip


def tiny_timm_vit(seed: int = 0) -> nn.Module:
    """A two-block timm ViT on ``PERSON_SIZE`` images (a 4 x 2 patch grid), in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=PERSON_SIZE,
        depth=2,
        num_classes=0,
    ).eval()


def tiny_open_clip_visual(seed: int = 0) -> nn.Module:
    """The vision tower of a tiny open_clip CLIP on ``PERSON_SIZE`` images, in eval mode."""
    model, _ = tiny_clip(seed)
    return model.visual


def person_images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *PERSON_SIZE, generator=generator)
