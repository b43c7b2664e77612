"""PCLLoss against the brute-force float64 formula of PCL-CLIP eq. 4."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.losses.pcl import PCLLoss


def _brute_force(features, labels, centroids, temperature) -> list[float]:
    losses = []
    for f, y in zip(features.tolist(), labels.tolist()):
        f_norm = math.sqrt(sum(v * v for v in f))
        logits = []
        for k in centroids.tolist():
            k_norm = math.sqrt(sum(v * v for v in k))
            cosine = sum(a * b for a, b in zip(f, k)) / (f_norm * k_norm)
            logits.append(cosine / temperature)
        losses.append(-logits[y] + math.log(sum(math.exp(z) for z in logits)))
    return losses


@pytest.mark.parametrize(("count", "classes", "dim"), [(1, 1, 1), (7, 5, 3), (16, 33, 10)])
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_loss_equals_the_brute_force_formula(count, classes, dim, temperature) -> None:
    generator = torch.Generator().manual_seed(count + classes)
    features = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    centroids = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (count,), generator=generator)
    expected = torch.tensor(_brute_force(features, labels, centroids, temperature)).double()

    for reduction, reference in [
        ("none", expected),
        ("sum", expected.sum()),
        ("mean", expected.mean()),
    ]:
        loss = PCLLoss(temperature, reduction=reduction)(features, labels, centroids)
        torch.testing.assert_close(loss, reference)


def test_gradient_reaches_the_features_only() -> None:
    features = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    centroids = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0])
    loss_fn = PCLLoss(temperature=0.5)
    torch.autograd.gradcheck(lambda f: loss_fn(f, labels, centroids.detach()), (features,))
    loss_fn(features, labels, centroids).backward()
    assert features.grad is not None and centroids.grad is None


def test_half_features_give_a_float32_loss() -> None:
    features = torch.randn(3, 4).half()
    loss = PCLLoss()(features, torch.tensor([0, 1, 1]), torch.randn(2, 4))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: PCLLoss(temperature=0), "temperature"),
        (lambda f: PCLLoss()(f, torch.tensor([0, 1]), torch.randn(2, 5)), "width 4"),
        (lambda f: PCLLoss()(f, torch.tensor([0, 2]), torch.randn(2, 4)), r"\[0, 2\)"),
        (lambda f: PCLLoss()(f, torch.tensor([0]), torch.randn(2, 4)), r"\(2,\)"),
        (lambda f: PCLLoss()(f[0], torch.tensor([0]), torch.randn(2, 4)), "features"),
    ],
)
def test_bad_arguments_raise_value_errors(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call(torch.randn(2, 4))
