"""freeze_patch_projection freezes conv1 of the vision tower and nothing else (sec. 4.2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidkit.clip import CLIPImageEncoder
from reidkit.memory import freeze_patch_projection
from tests.clip.tiny_models import PERSON_SIZE, tiny_clip


def test_only_the_patch_projection_stops_training() -> None:
    clip_model = tiny_clip()[0]
    encoder = CLIPImageEncoder(clip_model)
    frozen = freeze_patch_projection(encoder)

    conv1 = clip_model.visual.conv1
    assert {id(p) for p in frozen} == {id(p) for p in conv1.parameters()}
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and not any(name.startswith("visual.conv1") for name in trainable)

    before = conv1.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=1.0)
    images = torch.randn(2, 3, *PERSON_SIZE)
    encoder(images).embedding.square().sum().backward()
    optimizer.step()
    assert conv1.weight.grad is None
    torch.testing.assert_close(conv1.weight, before, rtol=0, atol=0)
    assert clip_model.visual.class_embedding.grad is not None


def test_a_model_without_a_vit_tower_is_rejected() -> None:
    with pytest.raises(ValueError, match="ViT vision tower"):
        freeze_patch_projection(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)))
