"""Batch-hard triplet loss against a loop over every (anchor, positive, negative)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.distances import DotProductSimilarity, EuclideanDistance
from reidkit.losses import TripletLoss


def reference_distance(x, y, metric):
    """Distance, or for ``"dot"`` the similarity, of two rows, in float64."""
    squared = sum((a - b) ** 2 for a, b in zip(x, y))
    if metric == "euclidean":
        return math.sqrt(squared)
    if metric == "sqeuclidean":
        return squared
    dot = sum(a * b for a, b in zip(x, y))
    if metric == "dot":
        return dot
    return 1.0 - dot / (math.sqrt(sum(a * a for a in x)) * math.sqrt(sum(b * b for b in y)))


def reference_triplet(features, labels, margin, metric):
    """Per anchor: the largest loss over all its triplets (= the hardest pair), or None."""
    rows, labels = features.tolist(), labels.tolist()
    losses = []
    for i, anchor in enumerate(rows):
        worst = None
        for j, positive in enumerate(rows):
            if j == i or labels[j] != labels[i]:
                continue
            for k, negative in enumerate(rows):
                if labels[k] == labels[i]:
                    continue
                positive_value = reference_distance(anchor, positive, metric)
                negative_value = reference_distance(anchor, negative, metric)
                # A similarity is larger for closer rows: the gap runs the other way.
                gap = (
                    negative_value - positive_value
                    if metric == "dot"
                    else positive_value - negative_value
                )
                loss = math.log1p(math.exp(gap)) if margin is None else max(0.0, gap + margin)
                worst = loss if worst is None else max(worst, loss)
        losses.append(worst)
    return losses


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "sqeuclidean", "dot"])
@pytest.mark.parametrize("margin", [0.3, None])
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=9),
    seed=st.integers(0, 2**16),
)
def test_matches_the_loop_for_any_number_of_images_per_id(metric, margin, labels, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(labels), 3, dtype=torch.float64, generator=generator)
    labels = torch.tensor(labels)
    reference = reference_triplet(features, labels, margin, metric)
    per_anchor = TripletLoss(margin, metric, reduction="none")(features, labels)
    for value, expected in zip(per_anchor.tolist(), reference):
        assert value == pytest.approx(0.0 if expected is None else expected, abs=1e-9)
    kept = [value for value in reference if value is not None]
    mean = TripletLoss(margin, metric)(features, labels)
    assert mean.item() == pytest.approx(sum(kept) / len(kept) if kept else 0.0, abs=1e-9)


def test_distance_objects_equal_their_names() -> None:
    features = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for name, distance in (
        ("euclidean", EuclideanDistance(min_squared=1e-12)),
        ("sqeuclidean", EuclideanDistance(squared=True)),
        ("dot", DotProductSimilarity()),
    ):
        torch.testing.assert_close(
            TripletLoss(distance=distance)(features, labels),
            TripletLoss(distance=name)(features, labels),
        )
    assert TripletLoss().distance == EuclideanDistance(min_squared=1e-12)


def test_hardest_positive_is_the_farthest_and_hardest_negative_the_closest() -> None:
    features = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.5], [0.0, 4.0]], dtype=torch.float64
    )
    labels = torch.tensor([0, 0, 0, 1, 1])
    d_pos, d_neg, valid = TripletLoss().hardest(features, labels)
    assert valid.all()
    # anchor 0: farthest positive is sample 2 (3.0), closest negative sample 3 (0.5)
    assert d_pos[0].item() == pytest.approx(3.0)
    assert d_neg[0].item() == pytest.approx(0.5)


def test_no_valid_anchor_gives_zero_with_a_graph() -> None:
    features = torch.randn(3, 4, requires_grad=True)
    loss = TripletLoss()(features, torch.tensor([5, 5, 5]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(features.grad == 0)


def test_identical_features_keep_finite_gradients() -> None:
    features = torch.ones(4, 3, requires_grad=True)
    TripletLoss()(features, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(features.grad).all()


def test_normalize_makes_the_loss_scale_invariant() -> None:
    features = torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = TripletLoss(normalize=True)
    torch.testing.assert_close(loss(features, labels), loss(7.0 * features, labels))


def test_bad_options_and_input() -> None:
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=0.0)
    with pytest.raises(ValueError, match="distance"):
        TripletLoss(distance="manhattan")
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(torch.randn(3, 2), torch.tensor([0, 1]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_gives_zero_with_a_graph(reduction) -> None:
    features = torch.randn(0, 4, requires_grad=True)
    loss = TripletLoss(reduction=reduction)(features, torch.zeros(0, dtype=torch.long))
    assert loss.shape == ((0,) if reduction == "none" else ())
    assert loss.sum().item() == 0.0
    loss.sum().backward()
    assert features.grad is not None and features.grad.shape == (0, 4)
