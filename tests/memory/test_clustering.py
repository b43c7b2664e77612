"""cluster_pseudo_labels recovers planted identities and drops outliers (PCL-CLIP sec. 4.2)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from reidkit.memory import cluster_pseudo_labels, pseudo_label_agreement


def _blobs(num_clusters: int, per_cluster: int, dim: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_clusters, dim, generator=generator))
    truth = torch.arange(num_clusters).repeat_interleave(per_cluster)
    noise = spread * torch.randn(len(truth), dim, generator=generator)
    return centres[truth] + noise, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_clusters_are_recovered(seed) -> None:
    features, truth = _blobs(num_clusters=6, per_cluster=8, dim=16, spread=0.05, seed=seed)
    order = torch.randperm(len(truth), generator=torch.Generator().manual_seed(seed))
    features, truth = features[order], truth[order]
    labels = cluster_pseudo_labels(features, eps=0.6, min_samples=4, k1=8, k2=3)
    assert labels.dtype == torch.long and labels.shape == truth.shape
    assert (labels >= 0).all()
    assert adjusted_rand_score(truth.numpy(), labels.numpy()) == pytest.approx(1.0)
    assert sorted(labels.unique().tolist()) == list(range(6))


def test_an_isolated_point_is_an_outlier() -> None:
    features, truth = _blobs(num_clusters=4, per_cluster=8, dim=16, spread=0.05, seed=2)
    # The blobs lie in the first 15 coordinates, the stray on the last axis. No query
    # expansion (k2=1): it would average the stray's neighbour set with its nearest blob's.
    features = torch.nn.functional.pad(features[:, :15], (0, 1))
    stray = 5 * torch.eye(16)[-1:]
    labels = cluster_pseudo_labels(torch.cat([features, stray]), eps=0.6, k1=8, k2=1)
    assert labels[-1] == -1
    assert adjusted_rand_score(truth.numpy(), labels[:-1].numpy()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": torch.randn(4)}, "features"),
        ({"eps": 0.0}, "eps"),
        ({"eps": 1.5}, "eps"),
        ({"min_samples": 0}, "min_samples"),
        ({"k1": 0}, "k1"),
        ({"k2": 2.5}, "k2"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, match) -> None:
    arguments = {"features": torch.randn(5, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        cluster_pseudo_labels(**arguments)


def _adjusted_rand_index_reference(a: list[int], b: list[int]) -> float:
    """Hubert and Arabie's adjusted Rand index from the contingency table, in float64."""
    pairs = lambda n: n * (n - 1) / 2  # noqa: E731
    table: dict[tuple[int, int], int] = {}
    for x, y in zip(a, b):
        table[x, y] = table.get((x, y), 0) + 1
    rows = [sum(c for (x, _), c in table.items() if x == r) for r in set(a)]
    columns = [sum(c for (_, y), c in table.items() if y == k) for k in set(b)]
    index = sum(pairs(c) for c in table.values())
    row_pairs, column_pairs = sum(map(pairs, rows)), sum(map(pairs, columns))
    expected = row_pairs * column_pairs / pairs(len(a))
    maximum = (row_pairs + column_pairs) / 2
    if maximum == expected:  # both partitions trivial alike: the index is undefined
        return math.nan
    return (index - expected) / (maximum - expected)


@given(data=st.lists(st.tuples(st.integers(-1, 4), st.integers(0, 3)), min_size=3, max_size=30))
def test_agreement_is_the_adjusted_rand_index_with_outliers_alone(data) -> None:
    labels = [label for label, _ in data]
    identities = [identity for _, identity in data]
    singletons = iter(range(100, 200))
    expected_labels = [label if label >= 0 else next(singletons) for label in labels]
    reference = _adjusted_rand_index_reference(expected_labels, identities)
    assume(math.isfinite(reference))
    value = pseudo_label_agreement(torch.tensor(labels), torch.tensor(identities))
    assert value == pytest.approx(reference, abs=1e-12)


def test_agreement_of_a_perfect_and_of_a_collapsed_clustering() -> None:
    identities = torch.tensor([0, 0, 1, 1, 2, 2])
    assert pseudo_label_agreement(torch.tensor([5, 5, 3, 3, 1, 1]), identities) == 1.0
    assert pseudo_label_agreement(torch.tensor([0, 0, 0, 0, 0, 0]), identities) == 0.0
    # Outliers are not a cluster: leaving a pair out loses their agreement.
    assert pseudo_label_agreement(torch.tensor([0, 0, 1, 1, -1, -1]), identities) < 1.0
    with pytest.raises(ValueError, match="same length"):
        pseudo_label_agreement(torch.tensor([0, 1]), identities)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        pseudo_label_agreement(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
