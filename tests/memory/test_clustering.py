"""cluster_pseudo_labels recovers planted identities and drops outliers (PCL-CLIP sec. 4.2)."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from reidkit.memory import cluster_pseudo_labels


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
