"""CLIPImageEncoder against open_clip's encode_image, forward hooks and visual prompts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reidkit.clip import CLIPImageEncoder
from tests.clip.tiny_models import TINY_CONFIG, as_sequence_first, tiny_clip


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_clip(image_size=(64, 32))[0]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(0))


def test_without_prompts_the_embedding_equals_encode_image(model, images) -> None:
    with torch.no_grad():
        features = CLIPImageEncoder(model)(images)
        expected = model.encode_image(images)
    assert features.embedding.shape == (3, 32)
    torch.testing.assert_close(features.embedding, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.cls @ model.visual.proj, features.embedding)


def test_patches_and_layers_match_the_blocks_outputs(model, images) -> None:
    captured = []
    hooks = [
        block.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        for block in model.visual.transformer.resblocks
    ]
    try:
        with torch.no_grad():
            features = CLIPImageEncoder(model, return_layers=(-1, 0))(images)
    finally:
        for hook in hooks:
            hook.remove()
    first, last = captured  # open_clip's vision blocks run batch first
    assert [layer.shape for layer in features.layers] == [(3, 1 + 4 * 2, 64)] * 2
    torch.testing.assert_close(features.layers[0], last)
    torch.testing.assert_close(features.layers[1], first)

    normed = model.visual.ln_post(last)
    torch.testing.assert_close(features.cls, normed[:, 0])
    assert features.patches.shape == (3, 4, 2, 64)
    # Row-major grid: patch (r, c) is token 1 + 2 r + c.
    torch.testing.assert_close(features.patches[:, 2, 1], normed[:, 1 + 2 * 2 + 1])
    torch.testing.assert_close(features.projected_patches, features.patches @ model.visual.proj)


def test_prompts_join_every_layer_and_change_the_output(model, images) -> None:
    prompts = torch.randn(3, 5, 64, requires_grad=True)
    encoder = CLIPImageEncoder(model, return_layers=(0,))
    features = encoder(images, prompts)
    assert features.layers[0].shape == (3, 1 + 4 * 2 + 5, 64)
    assert features.patches.shape == (3, 4, 2, 64)
    assert features.embedding.shape == (3, 32)
    assert not torch.allclose(features.embedding, encoder(images).embedding, atol=1e-4)
    features.embedding.sum().backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0


def test_sequence_first_transformers_give_the_same_features(model, images) -> None:
    sequence_first = copy.deepcopy(model)
    sequence_first.visual.transformer = as_sequence_first(model.visual.transformer)
    prompts = torch.randn(3, 2, 64)
    with torch.no_grad():
        expected = CLIPImageEncoder(model, return_layers=(0,))(images, prompts)
        features = CLIPImageEncoder(sequence_first, return_layers=(0,))(images, prompts)
        torch.testing.assert_close(
            CLIPImageEncoder(sequence_first)(images).embedding,
            sequence_first.encode_image(images),
            atol=1e-5,
            rtol=1e-5,
        )
    for name in ("embedding", "cls", "patches"):
        torch.testing.assert_close(getattr(features, name), getattr(expected, name))
    torch.testing.assert_close(features.layers[0], expected.layers[0])


def test_activation_checkpointing_keeps_values_and_gradients(model, images) -> None:
    results = []
    for checkpointed in (False, True):
        prompts = torch.ones(3, 2, 64, requires_grad=True)
        encoder = CLIPImageEncoder(model, checkpoint_activations=checkpointed)
        embedding = encoder(images, prompts).embedding
        embedding.square().sum().backward()
        results.append((embedding.detach(), prompts.grad))
    for plain, checkpointed in zip(*results):
        torch.testing.assert_close(checkpointed, plain)


@pytest.mark.parametrize(
    ("image_shape", "prompt_shape", "message"),
    [
        ((2, 1, 64, 32), None, "images"),
        ((2, 3, 64, 64), None, "images"),
        ((2, 3, 64, 32), (2, 3, 63), "prompts"),
        ((2, 3, 64, 32), (1, 3, 64), "prompts"),
    ],
)
def test_bad_inputs_name_the_argument(model, image_shape, prompt_shape, message) -> None:
    prompts = None if prompt_shape is None else torch.zeros(prompt_shape)
    with pytest.raises(ValueError, match=message):
        CLIPImageEncoder(model)(torch.zeros(image_shape), prompts)


def test_unsupported_towers_and_layers_are_rejected(model) -> None:
    with pytest.raises(ValueError, match="return_layers"):
        CLIPImageEncoder(model, return_layers=(2,))
    pooled = {**TINY_CONFIG, "vision_cfg": {**TINY_CONFIG["vision_cfg"], "pool_type": "avg"}}
    with pytest.raises(ValueError, match="class-token pooling"):
        CLIPImageEncoder(tiny_clip(config=pooled)[0])
