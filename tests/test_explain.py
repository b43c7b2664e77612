"""Attention rollout: a hand-computed case, and a tiny CLIP against a float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidkit.clip import CLIPImageEncoder
from reidkit.explain import attention_rollout, class_token_rollout
from tests.clip.tiny_models import tiny_clip


def test_two_blocks_of_two_tokens_by_hand() -> None:
    # A^1 = 0.5 I + 0.5 [[.5, .5], [0, 1]] = [[.75, .25], [0, 1]];
    # A^2 = 0.5 I + 0.5 [[0, 1], [1, 0]] = [[.5, .5], [.5, .5]];
    # R = A^2 A^1 = [[.375, .625], [.375, .625]].
    first = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    second = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    expected = torch.tensor([[[0.375, 0.625], [0.375, 0.625]]])
    torch.testing.assert_close(attention_rollout([first, second]), expected)
    # Without the residual path the rollout is the plain product; with only it, the identity.
    torch.testing.assert_close(attention_rollout([first, second], 0.0), second @ first)
    torch.testing.assert_close(attention_rollout([first, second], 1.0), torch.eye(2)[None])


def _block_inputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's input, batch first, caught by hooks on open_clip's own encode_image."""
    inputs: list[torch.Tensor] = []
    transformer = model.visual.transformer
    batch_first = getattr(transformer, "batch_first", False)
    handles = [
        block.register_forward_pre_hook(
            lambda _, args: inputs.append(args[0] if batch_first else args[0].transpose(0, 1))
        )
        for block in transformer.resblocks
    ]
    model.encode_image(images)
    for handle in handles:
        handle.remove()
    return inputs


def _reference_attention(block: torch.nn.Module, tokens: torch.Tensor) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) per head in float64 from the packed projection, head mean."""
    attention = block.attn
    heads, width = attention.num_heads, tokens.shape[-1]
    x = block.ln_1(tokens).double()
    weight, bias = attention.in_proj_weight.double(), attention.in_proj_bias.double()
    q, k, _ = (x @ weight.T + bias).split(width, dim=-1)
    batch, length = tokens.shape[:2]
    q = q.reshape(batch, length, heads, -1)
    k = k.reshape(batch, length, heads, -1)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(width // heads)
    return scores.softmax(dim=-1).mean(dim=1).numpy()


def test_rollout_of_a_tiny_clip_equals_a_float64_reference() -> None:
    model, _ = tiny_clip()
    encoder = CLIPImageEncoder(model).eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        attentions = encoder.attention_weights(images)
        inputs = _block_inputs(model, images)
        references = [
            _reference_attention(block, tokens)
            for block, tokens in zip(model.visual.transformer.resblocks, inputs)
        ]
        maps = class_token_rollout(attentions, (4, 2))
    assert len(attentions) == len(references) == 2
    for attention, reference in zip(attentions, references):
        np.testing.assert_allclose(attention.numpy(), reference, atol=1e-5)
    expected = []
    for image in range(2):  # R = (I/2 + A_2/2)(I/2 + A_1/2), one image at a time
        rollout = np.eye(9)
        for reference in references:
            rollout = (0.5 * np.eye(9) + 0.5 * reference[image]) @ rollout
        expected.append(rollout[0, 1:].reshape(4, 2))
    np.testing.assert_allclose(maps.numpy(), np.stack(expected), atol=1e-5)


def test_visual_prompts_join_every_block_and_are_left_out_of_the_map() -> None:
    model, _ = tiny_clip()
    encoder = CLIPImageEncoder(model).eval()
    images, prompts = torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64)
    with torch.no_grad():
        attentions = encoder.attention_weights(images, prompts)
        maps = class_token_rollout(attentions, (4, 2))
        rollout = attention_rollout(attentions)
    assert [tuple(a.shape) for a in attentions] == [(2, 12, 12)] * 2
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 12))
    torch.testing.assert_close(maps, rollout[:, 0, 1:9].reshape(2, 4, 2))
    assert float(maps.sum()) < 2.0  # the class token and the prompts keep a share


@pytest.mark.parametrize(
    ("attentions", "weight", "message"),
    [
        ([], 0.5, "at least one"),
        ([torch.rand(2, 3, 4)], 0.5, r"attentions\[0\] must have shape \(B, N, N\)"),
        ([torch.rand(2, 3, 3), torch.rand(2, 4, 4)], 0.5, "share one shape"),
        ([torch.rand(2, 3, 3)], 1.5, r"residual_weight must be in \[0, 1\]"),
    ],
)
def test_bad_input_is_named(attentions: list[torch.Tensor], weight: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attention_rollout(attentions, weight)
    with pytest.raises(ValueError, match="fewer than the class token"):
        class_token_rollout([torch.rand(1, 3, 3)], (2, 2))
