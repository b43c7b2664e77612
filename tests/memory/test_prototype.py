"""PrototypeMemory against plain per-sample loops in float64 (PCL-CLIP eq. 5)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.losses.pcl import PCLLoss
from reidkit.memory import PrototypeMemory


def _unit(row: torch.Tensor) -> torch.Tensor:
    return row / row.norm()


def _mean_centroids(features: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    rows = []
    for c in range(classes):
        members = [_unit(features[i]) for i in range(len(labels)) if labels[i] == c]
        rows.append(_unit(torch.stack(members).mean(0)))
    return torch.stack(rows)


def _loop_update(centroids, features, labels, momentum):
    """Eq. 5 sample by sample, renormalising after each step."""
    centroids = centroids.clone()
    for f, y in zip(features, labels.tolist()):
        centroids[y] = _unit(momentum * centroids[y] + (1 - momentum) * _unit(f))
    return centroids


def _loop_hardest_update(centroids, features, labels, momentum):
    """Per class, the first sample of least cosine similarity to the old centroid updates it."""
    centroids = centroids.clone()
    for y in dict.fromkeys(labels.tolist()):
        members = [i for i in range(len(labels)) if labels[i] == y]
        similarities = [float(_unit(features[i]) @ centroids[y]) for i in members]
        hardest = members[similarities.index(min(similarities))]
        centroids[y] = _unit(momentum * centroids[y] + (1 - momentum) * _unit(features[hardest]))
    return centroids


def _random_memory(classes: int, dim: int, seed: int, **kwargs) -> PrototypeMemory:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(3 * classes, dim, generator=generator, dtype=torch.float64)
    labels = torch.arange(3 * classes) % classes
    return PrototypeMemory.from_features(features, labels, **kwargs).double()


def test_initial_centroids_are_normalised_class_means_ignoring_outliers() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(11, 5, generator=generator, dtype=torch.float64) * 3
    labels = torch.tensor([2, 0, 1, -1, 2, 0, 0, 1, -1, 2, 1])
    memory = PrototypeMemory.from_features(features, labels)
    assert memory.num_classes == 3 and memory.dim == 5
    expected = _mean_centroids(features, labels, 3)
    torch.testing.assert_close(memory.centroids.double(), expected, rtol=1e-6, atol=1e-6)


def test_reinitialisation_resizes_to_the_new_number_of_clusters() -> None:
    memory = _random_memory(4, 6, seed=1)
    features = torch.randn(7, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 1, -1, 0])
    memory.initialise_from_features(features, labels)
    assert memory.centroids.shape == (2, 6)
    torch.testing.assert_close(memory.centroids, _mean_centroids(features, labels, 2))


@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    momentum=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_momentum_update_equals_the_per_sample_loop(labels, momentum, seed) -> None:
    memory = _random_memory(4, 5, seed=seed, momentum=momentum)
    generator = torch.Generator().manual_seed(seed + 1)
    features = torch.randn(len(labels), 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor(labels)
    expected = _loop_update(memory.centroids, features, labels, momentum)
    memory.update(features, labels)
    torch.testing.assert_close(memory.centroids, expected)


@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_hardest_update_equals_the_per_class_loop(labels, seed) -> None:
    memory = _random_memory(4, 5, seed=seed, momentum=0.3, update_rule="hardest")
    generator = torch.Generator().manual_seed(seed + 1)
    features = torch.randn(len(labels), 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor(labels)
    expected = _loop_hardest_update(memory.centroids, features, labels, 0.3)
    memory.update(features, labels)
    torch.testing.assert_close(memory.centroids, expected)


def test_centroids_stay_unit_and_untouched_classes_stay_put() -> None:
    memory = _random_memory(5, 8, seed=2)
    before = memory.centroids.clone()
    memory.update(torch.randn(6, 8, dtype=torch.float64), torch.tensor([1, 3, 1, 1, 3, 3]))
    torch.testing.assert_close(memory.centroids.norm(dim=1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(memory.centroids[[0, 2, 4]], before[[0, 2, 4]], rtol=0, atol=0)
    assert not torch.allclose(memory.centroids[[1, 3]], before[[1, 3]])


def test_no_gradient_flows_into_the_memory() -> None:
    memory = _random_memory(4, 6, seed=3)
    head = torch.nn.Linear(6, 6).double()
    inputs = torch.randn(8, 6, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    frozen = memory.centroids.clone()

    features = head(inputs)
    loss = PCLLoss(temperature=0.1)(features, labels, memory.centroids)
    memory.update(features, labels)
    loss.backward()

    assert list(memory.parameters()) == []
    assert not memory.centroids.requires_grad and memory.centroids.grad_fn is None
    # The gradient is that of the loss against constant centroids taken before the update.
    grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    PCLLoss(temperature=0.1)(head(inputs), labels, frozen).backward()
    for grad, p in zip(grads, head.parameters()):
        torch.testing.assert_close(grad, p.grad)


def test_state_dict_round_trips_across_sizes() -> None:
    source = _random_memory(5, 4, seed=4, momentum=0.7, update_rule="hardest")
    source.update(torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 4, 4]))
    target = PrototypeMemory(2, 4).double()
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.centroids, source.centroids, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="centroids"):
        PrototypeMemory(5, 3).load_state_dict(source.float().state_dict())


def test_from_loader_encodes_every_batch() -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(10, 1, 2, 3, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, -1])
    cameras = torch.zeros(10, dtype=torch.long)
    loader = [(images[i : i + 4], labels[i : i + 4], cameras[i : i + 4]) for i in range(0, 10, 4)]

    def encode(batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1) * 2

    memory = PrototypeMemory.from_loader(encode, loader, momentum=0.5)
    expected = _mean_centroids(images.flatten(1).double(), labels, 3)
    torch.testing.assert_close(memory.centroids.double(), expected, rtol=1e-6, atol=1e-6)
    assert memory.momentum == 0.5


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: PrototypeMemory(0, 4), "num_classes"),
        (lambda: PrototypeMemory(3, 4, momentum=1.5), "momentum"),
        (lambda: PrototypeMemory(3, 4, update_rule="mean"), "update_rule"),
        (lambda: PrototypeMemory(3, 4).update(torch.randn(2, 5), torch.tensor([0, 1])), "(N, 4)"),
        (
            lambda: PrototypeMemory(3, 4).update(torch.randn(2, 4), torch.tensor([0.0, 1.0])),
            "labels",
        ),
        (
            lambda: PrototypeMemory(3, 4).update(torch.randn(2, 4), torch.tensor([0, 3])),
            r"\[0, 3\)",
        ),
        (
            lambda: PrototypeMemory.from_features(torch.randn(3, 4), torch.tensor([0, 2, 2])),
            "classes without one: \\[1\\]",
        ),
        (
            lambda: PrototypeMemory.from_features(torch.randn(2, 4), torch.tensor([-1, -1])),
            "num_classes",
        ),
    ],
)
def test_bad_arguments_raise_value_errors(build, match) -> None:
    with pytest.raises(ValueError, match=match):
        build()


_SKIP_WARNING = (
    "PrototypeMemory.update skipped feature rows holding NaN or inf; their centroids keep their "
    "value (see num_nonfinite_skipped)"
)


@pytest.mark.parametrize("update_rule", ["all", "hardest"])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([None, "nan", "inf", "-inf"])),
        min_size=1,
        max_size=12,
    ),
    seed=st.integers(0, 2**16),
)
def test_nonfinite_rows_are_skipped_and_counted(update_rule, rows, seed) -> None:
    memory = _random_memory(4, 5, seed=seed, momentum=0.3, update_rule=update_rule)
    generator = torch.Generator().manual_seed(seed + 1)
    features = torch.randn(len(rows), 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([label for label, _ in rows])
    poisoned = torch.tensor([bad is not None for _, bad in rows])
    for i, (_, bad) in enumerate(rows):
        if bad is not None:
            features[i, i % 5] = float(bad)
    loop = _loop_update if update_rule == "all" else _loop_hardest_update
    expected = loop(memory.centroids, features[~poisoned], labels[~poisoned], 0.3)
    if poisoned.any():
        with pytest.warns(RuntimeWarning, match=re.escape(_SKIP_WARNING)):
            memory.update(features, labels)
    else:
        memory.update(features, labels)
    torch.testing.assert_close(memory.centroids, expected)
    assert memory.num_nonfinite_skipped == int(poisoned.sum())


def test_skipped_rows_accumulate_until_reset() -> None:
    memory = _random_memory(2, 3, seed=0)
    nan_row = torch.tensor([[float("nan"), 0.0, 1.0], [1.0, 0.0, 0.0]])
    with pytest.warns(RuntimeWarning):
        memory.update(nan_row, torch.tensor([0, 1]))
        memory.update(nan_row, torch.tensor([1, 1]))
    assert memory.num_nonfinite_skipped == 2 and torch.isfinite(memory.centroids).all()
    memory.num_nonfinite_skipped = 0  # e.g. at the start of an epoch
    memory.update(torch.ones(1, 3), torch.tensor([0]))
    assert memory.num_nonfinite_skipped == 0


def test_initialising_from_nonfinite_features_names_the_rows() -> None:
    features = torch.randn(8, 4)
    features[[2, 5], 1] = torch.tensor([float("nan"), float("inf")])
    with pytest.raises(
        ValueError, match=re.escape("features must be finite; rows holding NaN or inf: [2, 5]")
    ):
        PrototypeMemory.from_features(features, torch.arange(8) % 3)
