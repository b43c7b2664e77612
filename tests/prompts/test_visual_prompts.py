"""VisualPromptGenerator (MMPL eq. 21) and its use as CLIPImageEncoder prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidkit.clip import CLIPImageEncoder
from reidkit.prompts import VisualPromptGenerator
from tests.clip.tiny_models import tiny_clip


def test_prompts_are_mlp_of_pooled_convolution() -> None:
    torch.manual_seed(0)
    generator = VisualPromptGenerator(num_prompts=3, width=10, hidden=7, conv_channels=5, stride=2)
    images = torch.randn(2, 3, 9, 6, dtype=torch.float64)
    generator.double()
    prompts = generator(images)
    assert prompts.shape == (2, 3, 10)

    conv, first, second = generator.conv, generator.mlp[0], generator.mlp[2]
    expected = []
    for image in images:  # one image at a time, pooling as an explicit mean
        feature_map = F.gelu(F.conv2d(image[None], conv.weight, conv.bias, stride=2, padding=1))
        pooled = feature_map.mean(dim=(2, 3))[0]
        hidden = F.gelu(first.weight @ pooled + first.bias)
        expected.append((second.weight @ hidden + second.bias).view(3, 10))
    torch.testing.assert_close(prompts, torch.stack(expected))


def test_generated_prompts_train_through_the_image_encoder() -> None:
    model, _ = tiny_clip()
    model.requires_grad_(False)
    generator = VisualPromptGenerator(num_prompts=2, width=64, hidden=16, conv_channels=4)
    images = torch.randn(2, 3, 64, 32)
    features = CLIPImageEncoder(model)(images, generator(images))
    features.embedding.sum().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_prompts": 0, "width": 8}, "num_prompts"), ({"num_prompts": 2, "width": -1}, "width")],
)
def test_bad_sizes_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VisualPromptGenerator(**kwargs)


def test_images_with_other_channels_are_rejected() -> None:
    with pytest.raises(ValueError, match="images"):
        VisualPromptGenerator(2, 8)(torch.zeros(1, 1, 8, 8))
