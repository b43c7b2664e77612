"""CrossModalRankingLoss against UniPT eq. 5 written out one pair at a time in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.distances import EuclideanDistance
from reidkit.losses import CrossModalRankingLoss


def _negative(similarities: list[float], positive: float, rule: str) -> float:
    """The negative eq. 5 uses among ``similarities`` (those of the anchor's negatives)."""
    if rule == "hardest":
        return max(similarities)
    below = [s for s in similarities if s < positive]
    return max(below) if below else min(similarities)


def reference_ranking(images, texts, labels, margin, rule, similarity):
    values, valid = [], []
    n = images.shape[0]
    for i in range(n):
        negatives = [j for j in range(n) if labels[j] != labels[i]]
        if not negatives:
            values.append(0.0)
            valid.append(False)
            continue
        total = 0.0
        for anchor, others in ((images[i], texts), (texts[i], images)):
            positive = similarity(anchor, others[i])
            negative = _negative([similarity(anchor, others[j]) for j in negatives], positive, rule)
            total += max(margin - positive + negative, 0.0)
        values.append(total)
        valid.append(True)
    return values, valid


def cosine(a, b) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


@given(
    n=st.integers(1, 7),
    identities=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    rule=st.sampled_from(["semi-hard", "hardest"]),
)
def test_values_match_eq_5(n: int, identities: int, seed: int, rule: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    texts = images + torch.randn(n, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(identities, (n,), generator=generator)
    values = CrossModalRankingLoss(0.2, rule, reduction="none")(images, texts, labels)
    expected, valid = reference_ranking(images, texts, labels, 0.2, rule, cosine)
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64))
    mean = CrossModalRankingLoss(0.2, rule)(images, texts, labels)
    chosen = [v for v, ok in zip(expected, valid) if ok]
    assert mean.item() == pytest.approx(sum(chosen) / max(len(chosen), 1), abs=1e-12)


def test_gradients_flow_through_the_chosen_pairs() -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    loss_fn = CrossModalRankingLoss(0.5, "hardest")
    torch.autograd.gradcheck(lambda a, b: loss_fn(a, b, labels), (images, texts))


def test_same_identity_items_are_never_negatives_and_a_distance_is_negated() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    texts = torch.tensor([[1.0, 0.1], [0.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    alone = torch.tensor([0, 0, 0])
    assert CrossModalRankingLoss()(images, texts, alone).item() == 0.0  # no negative at all
    distance = EuclideanDistance()
    values = CrossModalRankingLoss(1.0, "hardest", distance=distance, reduction="none")(
        images, texts, torch.tensor([0, 1, 2])
    )
    expected, _ = reference_ranking(
        images,
        texts,
        [0, 1, 2],
        1.0,
        "hardest",
        lambda a, b: -float((a - b).norm()),
    )
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64))


def test_bad_settings_and_input_name_the_argument() -> None:
    with pytest.raises(ValueError, match="negatives must be one of"):
        CrossModalRankingLoss(negatives="easy")
    with pytest.raises(ValueError, match="margin must be"):
        CrossModalRankingLoss(margin=0)
    with pytest.raises(ValueError, match="labels must be an integer tensor of shape \\(2,\\)"):
        CrossModalRankingLoss()(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0]))
