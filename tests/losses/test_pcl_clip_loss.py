"""PCLCLIPLoss (PCL-CLIP Table 1) against its terms written as float64 loops."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.losses import PCLCLIPLoss

TAU, SMOOTHING, MARGIN = 0.05, 0.1, 0.3


def _pcl(features, labels, centroids) -> float:
    """Eq. 4 per sample: cross-entropy of cos(f_i, K_j) / tau against the sample's class."""
    total = 0.0
    for f, y in zip(features.tolist(), labels.tolist()):
        norm_f = math.sqrt(sum(v * v for v in f))
        logits = []
        for centroid in centroids.tolist():
            norm_c = math.sqrt(sum(v * v for v in centroid))
            logits.append(sum(a * b for a, b in zip(f, centroid)) / (norm_f * norm_c) / TAU)
        log_sum = math.log(sum(math.exp(z) for z in logits))
        total += log_sum - logits[y]
    return total / len(labels)


def _smoothed_cross_entropy(logits, labels) -> float:
    total = 0.0
    classes = logits.shape[1]
    for row, y in zip(logits.tolist(), labels.tolist()):
        log_sum = math.log(sum(math.exp(z) for z in row))
        log_probs = [z - log_sum for z in row]
        target = [SMOOTHING / classes + (1 - SMOOTHING) * (c == y) for c in range(classes)]
        total -= sum(t * p for t, p in zip(target, log_probs))
    return total / len(labels)


def _batch_hard_triplet(embeddings, labels) -> float:
    rows, ids = embeddings.tolist(), labels.tolist()

    def distance(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))

    total = 0.0
    for i, anchor in enumerate(rows):
        positive = max(distance(anchor, rows[j]) for j in range(len(rows)) if ids[j] == ids[i])
        negative = min(distance(anchor, rows[j]) for j in range(len(rows)) if ids[j] != ids[i])
        total += max(0.0, positive - negative + MARGIN)
    return total / len(rows)


def _batch(seed: int, classifiers: int):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    features = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    embeddings = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    centroids = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    logits = [
        torch.randn(6, 3, generator=generator, dtype=torch.float64) for _ in range(classifiers)
    ]
    return features, embeddings, logits, labels, centroids


# Table 1's rows without prompts, then the released weighting.
WEIGHTS = [(0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1), (1, 0.25, 0)]


@pytest.mark.parametrize(("pcl_weight", "id_weight", "triplet_weight"), WEIGHTS)
@pytest.mark.parametrize("classifiers", [1, 2])
def test_weighted_terms_match_float64_loops(pcl_weight, id_weight, triplet_weight, classifiers):
    features, embeddings, logits, labels, centroids = _batch(classifiers, classifiers)
    criterion = PCLCLIPLoss(
        pcl_weight,
        id_weight,
        triplet_weight,
        temperature=TAU,
        label_smoothing=SMOOTHING,
        triplet_margin=MARGIN,
    )
    output = criterion(features, embeddings, logits, labels, centroids)
    expected_terms = {
        "pcl": _pcl(features, labels, centroids),
        "id": sum(_smoothed_cross_entropy(z, labels) for z in logits),
        "triplet": _batch_hard_triplet(embeddings, labels),
    }
    weights = {"pcl": pcl_weight, "id": id_weight, "triplet": triplet_weight}
    kept = [name for name in expected_terms if weights[name] > 0]
    assert sorted(output.terms) == sorted(kept)
    for name in kept:
        assert output.terms[name].item() == pytest.approx(expected_terms[name], rel=1e-10)
    expected = sum(weights[name] * expected_terms[name] for name in kept)
    assert output.loss.item() == pytest.approx(expected, rel=1e-10)


def test_two_classifiers_double_the_id_weight_of_one_on_equal_logits() -> None:
    features, embeddings, (logits,), labels, centroids = _batch(3, 1)
    criterion = PCLCLIPLoss(1.0, 0.25, 0.0)
    one = criterion(features, embeddings, [logits], labels, centroids)
    two = criterion(features, embeddings, [logits, logits], labels, centroids)
    assert two.terms["id"].item() == pytest.approx(2 * one.terms["id"].item(), rel=1e-12)


def test_gradients_reach_features_embeddings_and_logits_only_through_their_terms() -> None:
    features, embeddings, logits, labels, centroids = _batch(4, 1)
    for tensor in (features, embeddings, *logits, centroids):
        tensor.requires_grad_(True)
    PCLCLIPLoss(1.0, 0.0, 1.0)(features, embeddings, logits, labels, centroids).loss.backward()
    assert features.grad.abs().sum() > 0 and embeddings.grad.abs().sum() > 0
    assert logits[0].grad is None and centroids.grad is None  # centroids are constants


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pcl_weight": -1.0}, "pcl_weight must be"),
        ({"triplet_weight": float("nan")}, "triplet_weight must be"),
        ({"pcl_weight": 0.0, "id_weight": 0.0}, "must not all be 0"),
    ],
)
def test_bad_weights_raise(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        PCLCLIPLoss(**kwargs)


def test_id_weight_needs_logits() -> None:
    features, embeddings, _, labels, centroids = _batch(5, 1)
    with pytest.raises(ValueError, match="logits must hold"):
        PCLCLIPLoss()(features, embeddings, [], labels, centroids)
