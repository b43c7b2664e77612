"""Auto-Alignment: assigning patch keys to [PART] prototypes (AAformer eq. 3-5).

For every image and attention head, the [PART] queries ``Q^PT`` ``(P, d)`` are prototypes and
the patch keys ``K`` ``(N, d)`` are clustered around them. The soft assignment is the entropic
optimal-transport plan with equal-partition marginals (eq. 3-4),

    Y* = argmax_{Y 1_N = 1_P / P,  Y^T 1_P = 1_N / N}  Tr(Y^T Q^PT K^T) + epsilon H(Y),

computed by a fixed number of Sinkhorn iterations (eq. 5) on the cost ``-S`` with scores
``S = Q^PT K^T``, and is rounded to a hard assignment by giving each patch to the [PART] with the
largest plan entry in its column (``argmax_p Y*_pn``; the column marginals are exact after every
iteration, the row marginals only approximately so). The nearest-neighbour alternative
(Table V) gives each patch to the [PART] with the largest score ``S_pn``, without the balance
constraint.

By default the scores are cosine similarities (queries and keys L2-normalised per head), as in
the fast Sinkhorn-Knopp variant of SwAV that the paper follows: with raw inner products, whose
range is far larger than ``epsilon = 0.05``, three iterations leave the partition far from
equal. ``similarity="dot"`` uses the raw inner products of eq. 3. Any
:class:`reidkit.distances.Distance` may give the scores: a similarity (``is_inverted``) as they
are, a distance as its negative.

[PART] groups (Table VI) partition the patches independently: with ``part_groups=(2, 3)`` the
first two [PART]s split all patches into two sets and the last three split them into three.

The fixed partitions of Table IV ("+PCB PT", "+MGN PT") replace the assignment by masks of the
patch grid that do not depend on the image (:func:`fixed_part_mask`): ``"stripes"`` cuts the
grid of every group into horizontal stripes as PCB does, ``"mgn"`` reads every group as one of
MGN's branches (a [PART] over the whole image, then the stripes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from reidkit import checks
from reidkit.distances import Distance, DotProductSimilarity
from reidkit.ot import sinkhorn
from reidkit.ot.options import SinkhornOptions, consumer_options

AssignmentMethod = Literal["sinkhorn", "nearest"]
PartAssignment = Literal["sinkhorn", "nearest", "stripes", "mgn"]
Similarity = Literal["cosine", "dot"]
ASSIGNMENT_METHODS: tuple[str, ...] = ("sinkhorn", "nearest")
"""The assignments computed from the [PART] queries and the patch keys (eq. 3-5, Table V)."""
FIXED_PARTITIONS: tuple[str, ...] = ("stripes", "mgn")
"""The fixed partitions of the patch grid of Table IV (:func:`fixed_part_mask`)."""
PART_ASSIGNMENTS: tuple[str, ...] = ASSIGNMENT_METHODS + FIXED_PARTITIONS
"""Every ``assignment=`` of :class:`~reidkit.parts.PartTokenAttention` and
:class:`~reidkit.AAformer`."""
SIMILARITIES: Mapping[str, Distance] = {
    "cosine": DotProductSimilarity(normalize_embeddings=True),
    "dot": DotProductSimilarity(),
}
"""The names ``similarity=`` accepts: the cosine similarity and the raw inner product."""

ASSIGNMENT_OPTIONS = SinkhornOptions(epsilon=0.05, max_iter=3, tol=None, grad="envelope")
"""AAformer's Sinkhorn settings (sec. IV-A): ``epsilon = 0.05``, exactly 3 iterations; the
assignment is computed without gradient."""

# The solver keywords taken before ``options`` (assign_patches; PartTokenAttention and AAformer
# took the same with ``sinkhorn_`` names) and the fields they set.
OLD_KEYWORDS = {"epsilon": "epsilon", "iterations": "max_iter", "backend": "backend"}
OLD_LAYER_KEYWORDS = {
    "epsilon": "epsilon",
    "sinkhorn_iterations": "max_iter",
    "sinkhorn_backend": "backend",
}


def check_part_groups(part_groups: Sequence[int]) -> tuple[int, ...]:
    """Validate ``part_groups`` (a sequence of positive [PART] counts, possibly empty)."""
    if isinstance(part_groups, int) or not all(
        checks.is_integer(size) and size >= 1 for size in part_groups
    ):
        raise ValueError(
            f"part_groups must be a sequence of integers >= 1 (e.g. (2, 3)), got {part_groups!r}"
        )
    return tuple(part_groups)


def check_assignment(
    method: str, similarity: str | Distance, methods: Sequence[str] = ASSIGNMENT_METHODS
) -> Distance:
    """Validate ``method`` (one of ``methods``) and return the
    :class:`~reidkit.distances.Distance` of ``similarity``.

    Raises:
        ValueError: for an unknown method or similarity.
    """
    checks.check_choice("method", method, tuple(methods))
    if isinstance(similarity, Distance):
        return similarity
    if not isinstance(similarity, str) or similarity not in SIMILARITIES:
        raise ValueError(
            f"similarity must be a reidkit.distances.Distance or one of {tuple(SIMILARITIES)}, "
            f"got {similarity!r}"
        )
    return SIMILARITIES[similarity]


def assign_patches(
    part_queries: Tensor,
    patch_keys: Tensor,
    part_groups: Sequence[int],
    *,
    method: AssignmentMethod = "sinkhorn",
    similarity: Similarity | Distance = "cosine",
    options: SinkhornOptions = ASSIGNMENT_OPTIONS,
    **deprecated: Any,
) -> Tensor:
    """Hard assignment of every patch to one [PART] of each group (AAformer eq. 3-5).

    The assignment is a constant of the network: it is computed without gradient, in float32
    (float64 inputs stay float64).

    Args:
        part_queries: ``(..., P, d)`` [PART] queries ``Q^PT`` with ``P = sum(part_groups)``.
        patch_keys: ``(..., N, d)`` patch keys ``K`` (same leading dimensions).
        part_groups: sizes of the [PART] groups, e.g. ``(2, 3)``; each group solves its own
            assignment.
        method: ``"sinkhorn"`` (equal-partition optimal transport, eq. 3-5) or ``"nearest"``
            (nearest prototype, Table V).
        similarity: scores ``S`` between queries and keys: ``"cosine"`` (L2-normalised),
            ``"dot"`` (raw inner products, eq. 3) or a :class:`~reidkit.distances.Distance` (a
            distance enters as its negative).
        options: the Sinkhorn settings of eq. 3-5, a :class:`~reidkit.ot.SinkhornOptions`;
            default :data:`ASSIGNMENT_OPTIONS` (the paper's ``epsilon = 0.05``, 3 iterations, all
            run: ``tol=None``).
        **deprecated: ``epsilon``, ``iterations`` (the field ``max_iter``) and ``backend`` as
            keywords, as before ``options`` (deprecated: they set those fields and warn once).

    Returns:
        ``(..., G, N)`` int64: for group ``g`` and patch ``n`` the global index in ``[0, P)`` of
        the [PART] that receives the patch (indices of group ``g`` start at
        ``sum(part_groups[:g])``).
    """
    groups = check_part_groups(part_groups)
    scoring = check_assignment(method, similarity)
    options = consumer_options("reidkit.parts.assign_patches", options, deprecated, OLD_KEYWORDS)
    if part_queries.dim() < 2 or part_queries.shape[-2] != sum(groups):
        raise ValueError(
            f"part_queries must have shape (..., P={sum(groups)}, d) for part_groups {groups}, "
            f"got {tuple(part_queries.shape)}"
        )
    if (
        patch_keys.dim() != part_queries.dim()
        or patch_keys.shape[:-2] != part_queries.shape[:-2]
        or patch_keys.shape[-1] != part_queries.shape[-1]
        or patch_keys.shape[-2] < 1
    ):
        raise ValueError(
            f"patch_keys must have shape {(*part_queries.shape[:-2], 'N', part_queries.shape[-1])}"
            f" with N >= 1, got {tuple(patch_keys.shape)}"
        )
    with torch.no_grad():
        dtype = torch.float64 if part_queries.dtype == torch.float64 else torch.float32
        values = scoring.pairwise(part_queries.to(dtype), patch_keys.to(dtype))  # (..., P, N)
        scores = values if scoring.is_inverted else -values
        assignments = []
        for start, scores_group in zip(
            _group_starts(groups), torch.split(scores, list(groups), dim=-2)
        ):
            if method == "sinkhorn":
                scores_group = sinkhorn(-scores_group, options=options).plan
            assignments.append(scores_group.argmax(dim=-2) + start)
        if not assignments:
            return scores.new_zeros((*scores.shape[:-2], 0, scores.shape[-1]), dtype=torch.long)
        return torch.stack(assignments, dim=-2)


def assignment_mask(assignment: Tensor, num_parts: int) -> Tensor:
    """One-hot form of a hard assignment: which patches each [PART] attends to (``Phi_p``).

    Args:
        assignment: ``(..., G, N)`` global [PART] indices from :func:`assign_patches`.
        num_parts: ``P``, the total number of [PART]s.

    Returns:
        ``(..., P, N)`` bool, ``True`` where patch ``n`` belongs to ``Phi_p``.
    """
    parts = torch.arange(num_parts, device=assignment.device)
    return (assignment[..., :, None, :] == parts[:, None]).any(dim=-3)


def fixed_part_mask(method: str, part_groups: Sequence[int], grid_size: tuple[int, int]) -> Tensor:
    """The fixed partitions of Table IV: which patches each [PART] attends to, ``Phi_p``.

    The patch grid of ``h`` rows is cut into horizontal stripes of equal height (row ``r`` of
    ``s`` stripes goes to stripe ``floor(r s / h)``), top to bottom, group by group:

    - ``"stripes"`` (PCB): the ``g`` [PART]s of a group take ``g`` stripes. PCB's partition is
      ``part_groups=(6,)``; ``(2, 3)`` gives the stripes of MGN's two part branches.
    - ``"mgn"`` (MGN): a group is one MGN branch. Its first [PART] attends to the whole image
      (the branch's global feature) and the other ``g - 1`` take ``g - 1`` stripes, so the
      [PART]s of a group overlap. MGN's branches (global, 2 and 3 stripes, the global branch
      being the class token) are ``part_groups=(3, 4)``; a group of one is a second global
      feature.

    Args:
        method: ``"stripes"`` or ``"mgn"``.
        part_groups: the [PART] group sizes, e.g. ``(6,)`` or ``(3, 4)``.
        grid_size: ``(h, w)`` patch grid, the patches numbered row by row.

    Returns:
        ``(P, h w)`` bool, ``True`` where patch ``n`` belongs to ``Phi_p``.

    Raises:
        ValueError: an unknown method, or a group with more stripes than the grid has rows.
    """
    checks.check_choice("method", method, FIXED_PARTITIONS)
    groups = check_part_groups(part_groups)
    rows, columns = grid_size
    masks = []
    for size in groups:
        whole = method == "mgn"
        stripes = size - 1 if whole else size
        if stripes > rows:
            raise ValueError(
                f"part_groups {groups}: a group of {size} [PART]s needs {stripes} horizontal "
                f"stripes ({method!r}), more than the {rows} rows of the patch grid"
            )
        if whole:
            masks.append(torch.ones(1, rows * columns, dtype=torch.bool))
        if stripes:
            stripe_of_row = torch.arange(rows) * stripes // rows  # (h,)
            stripe = stripe_of_row.repeat_interleave(columns)  # (h w,)
            masks.append(stripe == torch.arange(stripes)[:, None])
    if not masks:
        return torch.zeros(0, rows * columns, dtype=torch.bool)
    return torch.cat(masks)


def _group_starts(groups: tuple[int, ...]) -> list[int]:
    starts, total = [], 0
    for size in groups:
        starts.append(total)
        total += size
    return starts
