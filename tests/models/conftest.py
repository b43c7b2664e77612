"""A tiny random CLIP at a person's aspect ratio and a batch of images for the model tests."""

from __future__ import annotations

import pytest
import torch

from tests.clip.tiny_models import tiny_clip


@pytest.fixture(scope="module")
def clip_model() -> torch.nn.Module:
    return tiny_clip(image_size=(64, 32))[0]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
