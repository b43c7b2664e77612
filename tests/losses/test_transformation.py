"""TransformationLoss (MMPL eq. 23 with a bounded diversity term) against a float64 loop."""

from __future__ import annotations

import pytest
import torch

from reidkit.losses.transformation import TransformationLoss


def _printed_reference(projected, text, weight: float) -> torch.Tensor:
    """Eq. 23 as printed: sums of absolute differences, minus the prompts' pairwise L1."""
    batch, levels, dim = projected.shape
    total = torch.zeros((), dtype=torch.float64)
    for b in range(batch):
        for k in range(levels):
            total += sum(abs(float(projected[b, k, d] - text[b, k, d])) for d in range(dim))
        for i in range(levels - 1):
            for j in range(i + 1, levels):
                gap = sum(abs(float(projected[b, i, d] - projected[b, j, d])) for d in range(dim))
                total -= weight * gap
    return total / batch


def _reference(projected, text, margin: float | None, weight: float) -> torch.Tensor:
    """The stabilised form; ``margin=None``: each pair's margin the mean |T^i - T^j| of its
    targets."""
    batch, levels, dim = projected.shape
    total = torch.zeros((), dtype=torch.float64)
    for b in range(batch):
        for k in range(levels):
            total += (projected[b, k] - text[b, k]).abs().sum() / dim
        for i in range(levels - 1):
            for j in range(i + 1, levels):
                pair_margin = (
                    float((text[b, i] - text[b, j]).abs().sum()) / dim if margin is None else margin
                )
                gap = float((projected[b, i] - projected[b, j]).abs().sum()) / dim
                total += weight * max(0.0, pair_margin - gap)
    return total / batch


@pytest.mark.parametrize(("levels", "width", "dim"), [(3, 6, 4), (1, 4, 4), (4, 5, 5), (2, 3, 7)])
def test_loss_equals_loop(levels: int, width: int, dim: int) -> None:
    torch.manual_seed(levels + width)
    loss = TransformationLoss(width, dim, margin=0.8, diversity_weight=0.5).double()
    prompts = torch.randn(3, levels, width, dtype=torch.float64)
    text = torch.randn(3, levels, dim, dtype=torch.float64)
    projected = loss.projection(prompts).detach()
    torch.testing.assert_close(loss(prompts, text), _reference(projected, text, 0.8, 0.5))
    assert isinstance(loss.projection, torch.nn.Identity) == (width == dim)


def test_reduction_none_gives_one_value_per_image() -> None:
    torch.manual_seed(2)
    loss = TransformationLoss(4, 4, reduction="none")
    prompts, text = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    values = loss(prompts, text)
    assert values.shape == (3,)
    torch.testing.assert_close(values.mean(), TransformationLoss(4, 4)(prompts, text))


def test_diversity_term_is_bounded_and_saturates_beyond_the_margin() -> None:
    loss = TransformationLoss(2, 2, margin=1.0)
    text = torch.zeros(1, 2, 2)
    near = torch.tensor([[[0.1, 0.0], [-0.1, 0.0]]])  # gap 0.1 < margin: diversity active
    far = torch.tensor([[[5.0, 0.0], [-5.0, 0.0]]])  # gap 5 > margin: diversity is zero
    assert loss(near, text) == pytest.approx(0.1 + (1.0 - 0.1))
    assert loss(far, text) == pytest.approx(5.0)
    # Moving the prompts further apart never lowers the loss below the alignment term.
    assert loss(far * 10, text) > loss(far, text)


def test_gradients_reach_prompts_and_projection_but_not_text() -> None:
    torch.manual_seed(0)
    loss = TransformationLoss(6, 4, margin=2.0)
    prompts = torch.randn(2, 3, 6, requires_grad=True)
    text = torch.randn(2, 3, 4, requires_grad=True)
    loss(prompts, text).backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert loss.projection.weight.grad is not None
    assert text.grad is None


def test_bad_shapes_and_options_are_rejected() -> None:
    loss = TransformationLoss(6, 4)
    with pytest.raises(ValueError, match="visual_prompts"):
        loss(torch.randn(2, 3, 5), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="text_features"):
        loss(torch.randn(2, 3, 6), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="margin"):
        TransformationLoss(6, 4, margin=-1.0)


@pytest.mark.parametrize(("levels", "width", "dim"), [(3, 6, 4), (2, 4, 4), (4, 5, 5)])
def test_printed_form_equals_eq_23_loop(levels: int, width: int, dim: int) -> None:
    torch.manual_seed(levels * width)
    loss = TransformationLoss(width, dim, margin=None, diversity_weight=0.7, form="printed")
    loss = loss.double()
    prompts = torch.randn(3, levels, width, dtype=torch.float64)
    text = torch.randn(3, levels, dim, dtype=torch.float64)
    projected = loss.projection(prompts).detach()
    torch.testing.assert_close(loss(prompts, text), _printed_reference(projected, text, 0.7))


@pytest.mark.parametrize(("levels", "width", "dim"), [(3, 6, 4), (2, 4, 4), (4, 5, 5)])
def test_target_margin_equals_loop(levels: int, width: int, dim: int) -> None:
    torch.manual_seed(levels + 10 * width)
    loss = TransformationLoss(width, dim, margin=None, diversity_weight=0.5).double()
    prompts = torch.randn(3, levels, width, dtype=torch.float64)
    text = torch.randn(3, levels, dim, dtype=torch.float64)
    projected = loss.projection(prompts).detach()
    torch.testing.assert_close(loss(prompts, text), _reference(projected, text, None, 0.5))


def test_with_the_target_margin_the_targets_are_the_minimum() -> None:
    """At W P^k = T^k every hinge is met: the loss is 0, its minimum, whatever the targets'
    scale; a fixed margin above the targets' gaps makes the same point cost > 0."""
    torch.manual_seed(5)
    text = 0.6 * torch.randn(4, 3, 8, dtype=torch.float64)
    at_targets = TransformationLoss(8, 8, margin=None).double()
    assert float(at_targets(text.clone(), text)) == 0.0
    gaps = (text[:, :, None] - text[:, None]).abs().mean(-1)
    fixed = TransformationLoss(8, 8, margin=float(gaps.max()) + 0.5).double()
    assert float(fixed(text.clone(), text)) > 0.4


def test_printed_form_is_unbounded_below_for_three_levels() -> None:
    """W P^1 = -W P^3 = s u, W P^2 = 0: the loss falls as -2 s |u|_1 (the module's notes)."""
    loss = TransformationLoss(2, 2, margin=None, form="printed")
    text = torch.zeros(1, 3, 2)
    direction = torch.tensor([1.0, 0.0])
    values = []
    for scale in (1.0, 10.0, 100.0):
        prompts = torch.stack([scale * direction, 0 * direction, -scale * direction])[None]
        values.append(float(loss(prompts, text)))
    assert values == pytest.approx([-2.0, -20.0, -200.0])


def test_form_options_are_checked() -> None:
    with pytest.raises(ValueError, match="form must be one of"):
        TransformationLoss(4, 4, form="literal")
    with pytest.raises(ValueError, match="margin applies to form='stabilised' only"):
        TransformationLoss(4, 4, margin=1.0, form="printed")
