"""AttributeBCELoss and the imbalance weights against VAL-PAT eq. 3-4 written out in float64."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.losses import AttributeBCELoss, attribute_imbalance_weights


def reference_bce(logits, targets, positive_weights, negative_weights):
    """The negative log-likelihood over the attributes, one sample at a time."""
    values = []
    for i in range(logits.shape[0]):
        total = 0.0
        for j in range(logits.shape[1]):
            p = 1 / (1 + math.exp(-float(logits.detach()[i, j])))
            y = float(targets[i, j])
            total -= positive_weights[j] * y * math.log(p)
            total -= negative_weights[j] * (1 - y) * math.log(1 - p)
        values.append(total)
    return values


def test_imbalance_weights_are_exponentials_of_the_positive_share() -> None:
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.uint8)
    positive, negative = attribute_imbalance_weights(labels)
    shares = [0.75, 0.25, 0.0]
    torch.testing.assert_close(positive, torch.tensor([math.exp(1 - r) for r in shares]))
    torch.testing.assert_close(negative, torch.tensor([math.exp(r) for r in shares]))
    with pytest.raises(ValueError, match="labels must be an \\(N, M\\) tensor"):
        attribute_imbalance_weights(torch.zeros(0, 3))


@pytest.mark.parametrize("soft", [False, True])
def test_hard_and_soft_targets_match_the_written_out_loss(soft: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.rand(4, 5, generator=generator, dtype=torch.float64)
    if not soft:
        targets = (targets > 0.5).double()
    labels = (torch.rand(30, 5, generator=generator) > 0.7).float()
    positive, negative = attribute_imbalance_weights(labels)
    loss_fn = AttributeBCELoss(positive.double(), negative.double(), reduction="none")
    values = loss_fn(logits, targets)
    expected = reference_bce(logits, targets, positive.tolist(), negative.tolist())
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64))
    mean = AttributeBCELoss(positive.double(), negative.double())(logits, targets)
    assert mean.item() == pytest.approx(sum(expected) / 4, rel=1e-12)
    torch.autograd.gradcheck(
        lambda z: AttributeBCELoss(positive.double(), negative.double())(z, targets), (logits,)
    )


def test_one_weight_per_attribute_and_no_weights() -> None:
    logits = torch.randn(3, 2, dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    weights = torch.tensor([2.0, 0.5], dtype=torch.float64)
    values = AttributeBCELoss(weights, reduction="none")(logits, targets)
    torch.testing.assert_close(
        values, torch.tensor(reference_bce(logits, targets, [2.0, 0.5], [2.0, 0.5])).double()
    )
    plain = AttributeBCELoss(reduction="none")(logits, targets)
    torch.testing.assert_close(
        plain, torch.tensor(reference_bce(logits, targets, [1.0, 1.0], [1.0, 1.0])).double()
    )


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="targets must hold values in \\[0, 1\\]"):
        AttributeBCELoss()(torch.zeros(2, 2), torch.full((2, 2), 2.0))
    with pytest.raises(ValueError, match="targets must have the logits' shape"):
        AttributeBCELoss()(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="logits must have one column per weight \\(3\\)"):
        AttributeBCELoss(torch.ones(3))(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="positive_weights must be a floating \\(M,\\) tensor"):
        AttributeBCELoss(torch.ones(3, dtype=torch.long))
