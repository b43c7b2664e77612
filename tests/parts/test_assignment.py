"""Patch-to-[PART] assignment (AAformer eq. 3-5) against POT and brute-force references."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from reidkit.distances import EuclideanDistance
from reidkit.ot import SinkhornOptions
from reidkit.parts import assign_patches, assignment_mask
from reidkit.parts.assignment import ASSIGNMENT_OPTIONS, fixed_part_mask


def _biased_problem(seed: int, batch: int = 6, parts: int = 5, patches: int = 60, dim: int = 16):
    """Queries and keys where every key leans towards [PART] 0 (nearest neighbour collapses)."""
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(batch, parts, dim, generator=generator)
    keys = torch.randn(batch, patches, dim, generator=generator) + 1.5 * queries[:, :1]
    return queries, keys


def _counts(assignment: torch.Tensor, num_parts: int) -> torch.Tensor:
    return F.one_hot(assignment, num_parts).sum(dim=-2)


def _pot_assignment(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """POT's log-domain Sinkhorn on the (patches x parts) cost; argmax over parts per patch.

    POT updates the column potentials first, so the transposed problem runs the same half-steps
    in the same order as reidkit's row-then-column iterations on the (parts x patches) cost.
    """
    num_parts, num_patches = scores.shape
    plan = ot.bregman.sinkhorn_log(
        np.full(num_patches, 1.0 / num_patches),
        np.full(num_parts, 1.0 / num_parts),
        -scores.T,
        reg=epsilon,
        numItermax=iterations,
        stopThr=0.0,
        warn=False,
    )
    return plan.argmax(axis=1)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("seed", range(4))
def test_sinkhorn_assignment_matches_pot(seed: int, similarity: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(3, 5, 8, generator=generator, dtype=torch.float64)
    keys = torch.randn(3, 40, 8, generator=generator, dtype=torch.float64)
    assignment = assign_patches(queries, keys, (5,), similarity=similarity)
    for image in range(3):
        q, k = queries[image].numpy(), keys[image].numpy()
        if similarity == "cosine":
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            k = k / np.linalg.norm(k, axis=1, keepdims=True)
        expected = _pot_assignment(q @ k.T, epsilon=0.05, iterations=3)
        np.testing.assert_array_equal(assignment[image, 0].numpy(), expected)


@pytest.mark.parametrize("seed", range(2))
def test_a_distance_object_scores_by_its_negative(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(3, 5, 8, generator=generator, dtype=torch.float64)
    keys = torch.randn(3, 40, 8, generator=generator, dtype=torch.float64)
    options = dataclasses.replace(ASSIGNMENT_OPTIONS, epsilon=1.0)
    distance = EuclideanDistance(squared=True)
    assignment = assign_patches(queries, keys, (5,), similarity=distance, options=options)
    for image in range(3):
        q, k = queries[image].numpy(), keys[image].numpy()
        squared = ((q[:, None, :] - k[None, :, :]) ** 2).sum(axis=-1)  # (parts, patches)
        expected = _pot_assignment(-squared, epsilon=1.0, iterations=3)
        np.testing.assert_array_equal(assignment[image, 0].numpy(), expected)


def test_float32_assignment_agrees_with_pot() -> None:
    queries, keys = _biased_problem(seed=7)
    assignment = assign_patches(queries, keys, (5,))
    agreement = []
    for image in range(queries.shape[0]):
        q = F.normalize(queries[image].double(), dim=-1).numpy()
        k = F.normalize(keys[image].double(), dim=-1).numpy()
        expected = _pot_assignment(q @ k.T, epsilon=0.05, iterations=3)
        agreement.append(np.mean(assignment[image, 0].numpy() == expected))
    assert min(agreement) >= 0.95


def test_part_groups_solve_independent_problems() -> None:
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(2, 4, 5, 8, generator=generator, dtype=torch.float64)
    keys = torch.randn(2, 4, 30, 8, generator=generator, dtype=torch.float64)
    assignment = assign_patches(queries, keys, (2, 3))
    assert assignment.shape == (2, 4, 2, 30)
    first = assign_patches(queries[..., :2, :], keys, (2,))
    second = assign_patches(queries[..., 2:, :], keys, (3,))
    torch.testing.assert_close(assignment[..., 0, :], first[..., 0, :], rtol=0, atol=0)
    torch.testing.assert_close(assignment[..., 1, :], second[..., 0, :] + 2, rtol=0, atol=0)


def test_equal_partition_where_nearest_neighbour_collapses() -> None:
    queries, keys = _biased_problem(seed=1)
    num_parts, num_patches = queries.shape[1], keys.shape[1]
    nearest = _counts(assign_patches(queries, keys, (5,), method="nearest")[:, 0], num_parts)
    balanced = _counts(assign_patches(queries, keys, (5,))[:, 0], num_parts)
    fifty = dataclasses.replace(ASSIGNMENT_OPTIONS, max_iter=50)
    converged = _counts(assign_patches(queries, keys, (5,), options=fifty)[:, 0], num_parts)
    share = num_patches / num_parts
    # Nearest neighbour gives most patches of every image to the favoured [PART] 0.
    assert (nearest[:, 0] >= 0.8 * num_patches).all()
    # Three iterations already give every [PART] a fair share, and converged ones about N / P.
    assert (balanced >= 0.3 * share).all() and (balanced <= 2.0 * share).all()
    assert (converged >= 0.6 * share).all() and (converged <= 1.4 * share).all()


def test_nearest_is_the_argmax_of_the_scores() -> None:
    queries, keys = _biased_problem(seed=2, batch=2, patches=10)
    assignment = assign_patches(queries, keys, (2, 3), method="nearest", similarity="dot")
    for image in range(2):
        for patch in range(10):
            scores = [float(queries[image, p] @ keys[image, patch]) for p in range(5)]
            assert assignment[image, 0, patch] == int(np.argmax(scores[:2]))
            assert assignment[image, 1, patch] == 2 + int(np.argmax(scores[2:]))


def test_assignment_is_detached() -> None:
    queries, keys = _biased_problem(seed=4, batch=1)
    queries.requires_grad_(True)
    assert not assign_patches(queries, keys, (5,)).requires_grad


def test_assignment_mask_matches_loop() -> None:
    assignment = torch.tensor([[[0, 1, 1, 0], [2, 4, 3, 2]]])  # groups (2, 3), N = 4
    mask = assignment_mask(assignment, 5)
    expected = torch.zeros(1, 5, 4, dtype=torch.bool)
    for group in range(2):
        for patch in range(4):
            expected[0, assignment[0, group, patch], patch] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"part_groups": (2, 0)}, "part_groups"),
        ({"part_groups": 3}, "part_groups"),
        ({"method": "kmeans"}, "method"),
        ({"similarity": "l2"}, "similarity"),
        ({"epsilon": 0.0}, "epsilon"),  # the deprecated keywords are checked as fields
        ({"iterations": 0}, "max_iter"),
        ({"queries": torch.randn(2, 4, 8)}, "part_queries"),
        ({"keys": torch.randn(2, 10, 7)}, "patch_keys"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    queries = kwargs.pop("queries", torch.randn(2, 5, 8))
    keys = kwargs.pop("keys", torch.randn(2, 10, 8))
    part_groups = kwargs.pop("part_groups", (2, 3))
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assign_patches(queries, keys, part_groups, **kwargs)


def test_options_must_be_sinkhorn_options_and_keywords_must_have_existed() -> None:
    queries, keys = torch.randn(2, 5, 8), torch.randn(2, 10, 8)
    with pytest.raises(TypeError, match=r"options must be a reidkit\.SinkhornOptions, got float"):
        assign_patches(queries, keys, (5,), options=0.05)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_iter'"):
        assign_patches(queries, keys, (5,), max_iter=3)  # it was called iterations


def test_the_former_keywords_set_the_options_and_warn(fresh_deprecations: None) -> None:
    queries, keys = torch.randn(2, 5, 8), torch.randn(2, 40, 8)
    options = SinkhornOptions(epsilon=0.2, max_iter=7, tol=None, grad="envelope", backend="torch")
    expected = assign_patches(queries, keys, (5,), options=options)
    message = (
        "the keyword arguments epsilon, iterations, backend of reidkit.parts.assign_patches are "
        "deprecated and will be removed in the next release; use options=" + repr(options)
    )
    with pytest.warns(DeprecationWarning) as records:
        old = assign_patches(queries, keys, (5,), epsilon=0.2, iterations=7, backend="torch")
    assert [str(record.message) for record in records] == [message]
    assert records[0].filename == __file__
    assert torch.equal(old, expected)


def _stripe_of_row_reference(row: int, rows: int, stripes: int) -> int:
    """Stripe of ``row``: the one whose band [s h / S, (s + 1) h / S) holds the row's top."""
    return next(s for s in range(stripes) if s * rows <= row * stripes < (s + 1) * rows)


@pytest.mark.parametrize("grid", [(4, 2), (8, 4), (7, 3), (16, 8)])
@pytest.mark.parametrize("part_groups", [(2, 3), (6,), (1, 4), (3, 4)])
@pytest.mark.parametrize("method", ["stripes", "mgn"])
def test_fixed_partitions_match_a_loop_over_the_grid(method, part_groups, grid) -> None:
    rows, columns = grid
    stripes_needed = [size - (method == "mgn") for size in part_groups]
    if max(stripes_needed) > rows:
        with pytest.raises(ValueError, match="more than the"):
            fixed_part_mask(method, part_groups, grid)
        return
    mask = fixed_part_mask(method, part_groups, grid)
    assert mask.shape == (sum(part_groups), rows * columns) and mask.dtype == torch.bool
    part = 0
    for size in part_groups:
        if method == "mgn":  # the branch's global [PART] sees every patch
            assert bool(mask[part].all())
            part, size = part + 1, size - 1
        for patch in range(rows * columns):
            row = patch // columns
            for stripe in range(size):
                inside = _stripe_of_row_reference(row, rows, size) == stripe
                assert bool(mask[part + stripe, patch]) == inside
        part += size


def test_pcb_stripes_are_horizontal_bands_of_equal_height() -> None:
    mask = fixed_part_mask("stripes", (6,), (12, 4)).reshape(6, 12, 4)
    for stripe in range(6):
        expected = torch.zeros(12, 4, dtype=torch.bool)
        expected[2 * stripe : 2 * stripe + 2] = True
        assert torch.equal(mask[stripe], expected)


def test_fixed_partition_rejects_unknown_methods() -> None:
    with pytest.raises(ValueError, match="method"):
        fixed_part_mask("sinkhorn", (2,), (4, 2))
    with pytest.raises(ValueError, match="method"):
        assign_patches(torch.randn(2, 4), torch.randn(5, 4), (2,), method="stripes")
