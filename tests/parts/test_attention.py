"""PartTokenAttention (AAformer eq. 1-2) against a float64 brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from timm.models.vision_transformer import Attention

from reidkit.ot import SinkhornOptions
from reidkit.parts import PartTokenAttention, assign_patches, assignment_mask
from reidkit.parts.assignment import fixed_part_mask

DIM, HEADS, PREFIX = 16, 2, 1


def _layer(part_groups=(2, 3), **kwargs) -> PartTokenAttention:
    torch.manual_seed(0)
    return PartTokenAttention(DIM, HEADS, part_groups, **kwargs).double().eval()


def _tokens(num_parts: int, patches: int = 12, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, PREFIX + num_parts + patches, DIM, generator=generator).double()


def _reference(layer: PartTokenAttention, x: torch.Tensor, assignment: torch.Tensor):
    """Eq. 1 for prefix and patch rows, eq. 2 for [PART] rows, one softmax at a time."""
    batch, length, _ = x.shape
    head_dim = DIM // HEADS
    qkv = x @ layer.qkv.weight.T + layer.qkv.bias
    q, k, v = qkv.reshape(batch, length, 3, HEADS, head_dim).unbind(2)  # (B, L, heads, d)
    start, stop = PREFIX, PREFIX + layer.num_parts
    out = torch.zeros(batch, length, HEADS, head_dim, dtype=x.dtype)
    for b in range(batch):
        for h in range(HEADS):
            for row in range(length):
                if start <= row < stop:
                    part = row - start
                    members = [
                        stop + n for n in range(length - stop) if part in assignment[b, h, :, n]
                    ]
                    keys = members or [row]  # an empty [PART] attends to itself
                else:
                    keys = list(range(length))
                logits = torch.stack([q[b, row, h] @ k[b, j, h] for j in keys]) / math.sqrt(
                    head_dim
                )
                weights = torch.softmax(logits, dim=0)
                out[b, row, h] = sum(w * v[b, j, h] for w, j in zip(weights, keys))
    return out.reshape(batch, length, DIM) @ layer.proj.weight.T + layer.proj.bias


@pytest.mark.parametrize("part_groups", [(2, 3), (4,), (1, 2)])
def test_matches_brute_force_reference(part_groups) -> None:
    layer = _layer(part_groups)
    x = _tokens(sum(part_groups))
    out = layer(x)
    assert layer.last_assignment.shape == (2, HEADS, len(part_groups), 12)
    torch.testing.assert_close(out, _reference(layer, x, layer.last_assignment))


def test_last_part_attention_is_zero_outside_the_assigned_patches() -> None:
    layer = _layer()
    layer(_tokens(5))
    mask = assignment_mask(layer.last_assignment, 5)
    weights = layer.last_part_attention
    assert weights.shape == (2, HEADS, 5, 12)
    assert torch.all(weights[~mask] == 0) and torch.all(weights[mask] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, 5, dtype=weights.dtype))


def test_part_output_ignores_patches_of_other_parts() -> None:
    layer = _layer()
    x = _tokens(5)
    out = layer(x)
    assignment = layer.last_assignment
    mask = assignment_mask(assignment, 5)  # (B, heads, P, N)
    part = 0
    others = ~mask[:, :, part].any(dim=1)  # (B, N) patches outside Phi_0 in every head
    assert others.any()
    perturbed = x.clone()
    patch_rows = perturbed[:, PREFIX + 5 :]
    patch_rows[others] += torch.randn_like(patch_rows[others])
    replayed = layer(perturbed, assignment=assignment)
    assert torch.equal(replayed[:, PREFIX + part], out[:, PREFIX + part])
    # Every other [PART] that owns a perturbed patch, and the class token, do change.
    assert not torch.allclose(replayed[:, 0], out[:, 0])
    for other in range(1, 5):
        owns = (mask[:, :, other] & others[:, None]).any(dim=(1, 2))
        changed = (replayed[:, PREFIX + other] - out[:, PREFIX + other]).abs().amax(-1) > 0
        assert torch.equal(changed, owns)


def test_empty_part_attends_to_itself() -> None:
    layer = _layer((2,))
    x = _tokens(2, patches=6)
    assignment = torch.zeros(2, HEADS, 1, 6, dtype=torch.long)  # [PART] 1 receives nothing
    out = layer(x, assignment=assignment)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _reference(layer, x, assignment))


def test_without_parts_equals_timm_attention_exactly() -> None:
    torch.manual_seed(0)
    timm_attention = Attention(DIM, num_heads=HEADS, qkv_bias=True).eval()
    layer = PartTokenAttention(
        DIM, HEADS, (), qkv=timm_attention.qkv, proj=timm_attention.proj
    ).eval()
    x = torch.randn(3, 9, DIM)
    assert torch.equal(layer(x), timm_attention(x))
    assert layer.last_assignment is None


def test_gradient_flows_to_part_tokens_but_not_through_the_assignment() -> None:
    layer = _layer()
    x = _tokens(5).requires_grad_(True)
    layer(x)[:, PREFIX : PREFIX + 5].sum().backward()
    assert x.grad[:, PREFIX : PREFIX + 5].abs().sum() > 0
    assert not layer.last_assignment.requires_grad


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda layer: layer(torch.randn(2, 6, DIM).double()), "x must have shape"),
        (lambda layer: layer(torch.randn(2, 10, DIM + 1).double()), "x must have shape"),
        (
            lambda layer: layer(_tokens(5), assignment=torch.zeros(2, HEADS, 1, 12).long()),
            "assignment must be",
        ),
        (
            lambda layer: layer(_tokens(5), assignment=torch.full((2, HEADS, 2, 12), 5)),
            "assignment must be",
        ),
        (
            lambda layer: layer(_tokens(5), attn_mask=torch.zeros(18, 18)),
            "attn_mask",
        ),
    ],
)
def test_bad_inputs_raise(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call(_layer())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 3}, "num_heads"),
        ({"assignment": "kmeans"}, "method"),
        ({"similarity": "l2"}, "similarity"),
        ({"num_prefix_tokens": -1}, "num_prefix_tokens"),
        ({"qkv": torch.nn.Linear(DIM, DIM)}, "qkv"),
    ],
)
def test_bad_options_raise(kwargs, message) -> None:
    options = {"num_heads": HEADS, **kwargs}
    with pytest.raises(ValueError, match=message):
        PartTokenAttention(DIM, part_groups=(2,), **options)


def test_options_reach_the_assignment_and_the_former_keywords_warn(
    fresh_deprecations: None,
) -> None:
    options = SinkhornOptions(epsilon=0.5, max_iter=6, tol=None, grad="envelope", backend="torch")
    layer = _layer((2, 3), options=options)
    assert layer.options is options
    x = _tokens(5)
    layer(x)
    q, k, _ = layer.qkv(x).reshape(2, x.shape[1], 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
    expected = assign_patches(q[:, :, 1:6], k[:, :, 6:], (2, 3), options=options)
    assert torch.equal(layer.last_assignment, expected)
    with pytest.warns(DeprecationWarning, match="sinkhorn_iterations") as records:
        old = _layer((2, 3), epsilon=0.5, sinkhorn_iterations=6, sinkhorn_backend="torch")
    assert old.options == options and records[0].filename == __file__
    with pytest.raises(TypeError, match="unexpected keyword argument 'iterations'"):
        _layer((2, 3), iterations=6)


@given(
    part_groups=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    patches=st.integers(1, 6),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_any_small_shape_matches_reference(part_groups, patches, batch, seed) -> None:
    layer = _layer(part_groups)
    x = _tokens(sum(part_groups), patches=patches, batch=batch, seed=seed)
    out = layer(x)
    assignment = layer.last_assignment
    # One [PART] of each group per patch, in that group's index range.
    starts = torch.tensor([0, *part_groups[:-1]]).cumsum(0)
    ends = starts + torch.tensor(part_groups)
    assert ((assignment >= starts[:, None]) & (assignment < ends[:, None])).all()
    torch.testing.assert_close(out, _reference(layer, x, assignment))


@pytest.mark.parametrize("method", ["stripes", "mgn"])
def test_fixed_partition_matches_brute_force_reference(method) -> None:
    part_groups, grid = (2, 3), (4, 3)  # 12 patches
    layer = _layer(part_groups, assignment=method, grid_size=grid)
    x = _tokens(5)
    out = layer(x)
    mask = fixed_part_mask(method, part_groups, grid)
    assert layer.last_assignment is None
    assert torch.equal(layer.last_part_mask, mask.expand(2, HEADS, -1, -1))
    # The reference reads membership per patch; write the masks as one assignment row per
    # [PART] (the patches outside it go to a [PART] of no interest: -1 never matches).
    rows = torch.where(mask, torch.arange(5)[:, None], torch.tensor(-1))
    torch.testing.assert_close(out, _reference(layer, x, rows.expand(2, HEADS, -1, -1)))
    assert torch.all(layer.last_part_attention[~layer.last_part_mask] == 0)


def test_fixed_partition_needs_the_grid() -> None:
    with pytest.raises(ValueError, match="grid_size"):
        PartTokenAttention(DIM, HEADS, (2,), assignment="stripes")
    layer = _layer((2,), assignment="stripes", grid_size=(4, 2))
    with pytest.raises(ValueError, match="covers 8 patches, the input has 12"):
        layer(_tokens(2))
