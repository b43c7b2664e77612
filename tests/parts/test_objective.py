"""AAformer's heads and losses (eq. 6-8) against a float64 per-sample reference."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.parts import AAformerLoss


def _smoothed_cross_entropy(logits: torch.Tensor, label: int, epsilon: float) -> float:
    log_prob = [x - math.log(sum(math.exp(z) for z in logits.tolist())) for x in logits.tolist()]
    return -(1 - epsilon) * log_prob[label] - epsilon * sum(log_prob) / len(log_prob)


def _batch_hard_triplet(features: torch.Tensor, labels: list[int], margin: float) -> float:
    losses = []
    for i in range(len(labels)):
        distance = [float((features[i] - features[j]).norm()) for j in range(len(labels))]
        positives = [distance[j] for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        negatives = [distance[j] for j in range(len(labels)) if labels[j] != labels[i]]
        losses.append(max(0.0, max(positives) - min(negatives) + margin))
    return sum(losses) / len(losses)


def _reference(loss: AAformerLoss, tokens: torch.Tensor, labels: list[int]) -> tuple[float, ...]:
    id_terms = []
    for index, neck in enumerate(loss.necks):
        feature = tokens[:, index]
        mean, var = feature.mean(0), feature.var(0, unbiased=False)
        normalised = (feature - mean) / torch.sqrt(var + neck.bn.eps) * neck.bn.weight
        logits = normalised @ neck.classifier.weight.T
        id_terms.append(
            sum(_smoothed_cross_entropy(logits[b], labels[b], 0.1) for b in range(len(labels)))
            / len(labels)
        )
    id_loss = sum(id_terms) / len(id_terms)  # eq. 6
    triplet = _batch_hard_triplet(tokens[:, 0], labels, 0.3)
    if tokens.shape[1] > 1:
        parts = _batch_hard_triplet(tokens[:, 1:].flatten(1), labels, 0.3)
        triplet = (triplet + parts) / 2  # eq. 7
    return id_loss + triplet, id_loss, triplet  # eq. 8


@pytest.mark.parametrize("num_tokens", [1, 3, 6])
def test_matches_reference(num_tokens: int) -> None:
    torch.manual_seed(0)
    loss = AAformerLoss(4, num_tokens, num_classes=5).double().train()
    for neck in loss.necks:  # non-trivial BN scales and classifiers
        torch.nn.init.uniform_(neck.bn.weight, 0.5, 1.5)
        torch.nn.init.normal_(neck.classifier.weight)
    labels = [0, 0, 1, 1, 3, 3, 4, 4]
    tokens = torch.randn(8, num_tokens, 4, dtype=torch.float64)
    output = loss(tokens, torch.tensor(labels))
    expected = _reference(loss, tokens, labels)
    for value, reference in zip(output, expected):
        assert value.item() == pytest.approx(reference, rel=1e-10, abs=1e-12)


def test_heads_are_not_shared_and_all_learn() -> None:
    loss = AAformerLoss(4, 3, num_classes=5)
    weights = {id(neck.classifier.weight) for neck in loss.necks}
    assert len(weights) == 3
    tokens = torch.randn(8, 3, 4, requires_grad=True)
    loss(tokens, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).loss.backward()
    assert all(neck.classifier.weight.grad.abs().sum() > 0 for neck in loss.necks)
    assert (tokens.grad.abs().sum(dim=(0, 2)) > 0).all()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_tokens"):
        AAformerLoss(4, 0, num_classes=5)
    loss = AAformerLoss(4, 3, num_classes=5)
    with pytest.raises(ValueError, match="tokens must have shape"):
        loss(torch.randn(8, 2, 4), torch.zeros(8, dtype=torch.long))
