"""Pairwise geometry between two sets of rows, shared by losses, evaluation, re-ranking and OT.

A :class:`Distance` maps ``x`` ``(N, D)`` and ``y`` ``(M, D)`` to an ``(N, M)`` matrix with
:meth:`Distance.pairwise` (leading dimensions broadcast: ``(B, 1, M, D)`` and ``(1, L, N, D)``
give the ``(B, L, M, N)`` costs of every image's patches against every class's tokens);
:attr:`Distance.is_inverted` says whether larger values mean closer rows (a similarity) or
farther ones (a distance):

==============================  ==========================================  ============
class                           value                                       is_inverted
==============================  ==========================================  ============
:class:`CosineDistance`         ``1 - cos(x_i, y_j)``, in ``[0, 2]``        ``False``
:class:`EuclideanDistance`      ``||x_i - y_j||`` (or its square)           ``False``
:class:`DotProductSimilarity`   ``x_i . y_j`` (the cosine when normalised)  ``True``
==============================  ==========================================  ============

Wherever a component takes a ``distance=`` (or ``metric=``) it takes such an object or one of
the names of :data:`DISTANCE_NAMES` (:func:`get_distance`). The objects are frozen dataclasses:
they compare equal by value and print their settings. The optimal-transport costs are distances
too: :func:`reidkit.pairwise_ot_distance` takes one as its ground cost, and
:func:`reidkit.parts.assign_patches` a similarity as its scores.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from reidkit import checks


class Distance(ABC):
    """Base class of the pairwise geometries.

    A geometry is a per-row :meth:`prepare` step (the L2 normalisation of the cosine, or of
    ``normalize_embeddings``; nothing otherwise) followed by :meth:`compute` on the prepared
    rows; :meth:`pairwise` checks the shapes and runs both. Subclasses write :meth:`compute`
    and, if they normalise, set :attr:`normalizes`. A caller that evaluates the same rows many
    times (the optimal-transport costs, chunk by chunk) prepares them once.
    """

    is_inverted: ClassVar[bool] = False
    """``True`` when larger values mean closer rows (a similarity)."""

    @property
    def normalizes(self) -> bool:
        """Whether :meth:`prepare` L2-normalises the rows."""
        return False

    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        """``(..., N, M)`` values between the rows of ``x`` ``(..., N, D)`` and ``y``
        ``(..., M, D)``.

        The leading dimensions broadcast as in :func:`torch.matmul`, without copying either
        input to the broadcast shape: ``x`` ``(B, 1, M, D)`` and ``y`` ``(1, L, N, D)`` give
        ``(B, L, M, N)``. Computed in the inputs' dtype and differentiable in both.
        """
        if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
            raise ValueError(
                f"x and y must have shapes (..., N, D) and (..., M, D), got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        try:
            # torch.broadcast_shapes is not annotated in torch.
            torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])  # type: ignore[no-untyped-call]
        except RuntimeError as error:
            raise ValueError(
                f"x and y must have broadcastable leading dimensions, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            ) from error
        return self.compute(self.prepare(x), self.prepare(y))

    __call__ = pairwise

    def prepare(self, rows: Tensor) -> Tensor:
        """The rows ``(..., D)`` as :meth:`compute` takes them: L2-normalised if
        :attr:`normalizes`, unchanged otherwise."""
        return F.normalize(rows, dim=-1) if self.normalizes else rows

    @abstractmethod
    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        """:meth:`pairwise` of prepared rows whose shapes are checked."""


@dataclasses.dataclass(frozen=True)
class CosineDistance(Distance):
    """``1 - cos(x_i, y_j)``, in ``[0, 2]``: 0 for rows pointing the same way.

    :meth:`compute` of prepared (unit) rows is ``1 - x_i . y_j``.
    """

    @property
    def normalizes(self) -> bool:
        return True

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        return 1 - _inner(x, y)


@dataclasses.dataclass(frozen=True)
class EuclideanDistance(Distance):
    """``||x_i - y_j||``, or its square, from ``|x_i|^2 + |y_j|^2 - 2 x_i . y_j``.

    The expansion needs one matrix product instead of an ``(N, M, D)`` difference; its
    round-off can make the square slightly negative, so it is clamped at ``min_squared``
    before the root.

    Args:
        squared: return ``||x_i - y_j||^2`` instead of the distance.
        min_squared: floor of the square, ``>= 0``. The root's gradient is infinite where two
            rows coincide: a loss that differentiates the distance uses a small floor (1e-12)
            so that it stays finite.
        normalize_embeddings: L2-normalise the rows first (``||x - y||^2 = 2 - 2 cos``).

    Without autograd (evaluation) a two-dimensional ``(N, M)`` result is built in place in one
    buffer.
    """

    squared: bool = False
    min_squared: float = 0.0
    normalize_embeddings: bool = False

    def __post_init__(self) -> None:
        checks.check_number("min_squared", self.min_squared, at_least=0, finite=True)

    @property
    def normalizes(self) -> bool:
        return self.normalize_embeddings

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        norms = x.square().sum(-1)[..., :, None] + y.square().sum(-1)[..., None, :]
        grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
        if grad or x.dim() != 2 or y.dim() != 2:
            # 2 x_i . y_j as (2 x_i) . y_j: the rounding of the gradients the losses were
            # measured with
            squared = (norms - _inner(2.0 * x, y)).clamp_min(self.min_squared)
            return squared if self.squared else squared.sqrt()
        squared = norms.addmm_(x, y.transpose(0, 1), alpha=-2).clamp_(min=self.min_squared)
        return squared if self.squared else squared.sqrt_()


@dataclasses.dataclass(frozen=True)
class DotProductSimilarity(Distance):
    """``x_i . y_j``, larger for closer rows; the cosine similarity with normalised rows.

    Args:
        normalize_embeddings: L2-normalise the rows first (cosine similarity, in ``[-1, 1]``).
    """

    is_inverted: ClassVar[bool] = True
    normalize_embeddings: bool = False

    @property
    def normalizes(self) -> bool:
        return self.normalize_embeddings

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        return _inner(x, y)


def _inner(x: Tensor, y: Tensor) -> Tensor:
    """Inner products ``(..., N, M)`` of the rows of ``x`` ``(..., N, D)`` and ``y (..., M, D)``.

    With equal leading dimensions, a matrix product; otherwise ``einsum``, which broadcasts
    them without expanding either input (``matmul`` would copy a ``(B, 1, M, D)`` input ``L``
    times to ``(B, L, M, D)``).
    """
    if x.shape[:-2] == y.shape[:-2]:
        return x @ y.transpose(-1, -2)
    return torch.einsum("...nd,...md->...nm", x, y)


DISTANCE_NAMES: dict[str, Callable[[], Distance]] = {
    "cosine": CosineDistance,
    "euclidean": EuclideanDistance,
    "sqeuclidean": lambda: EuclideanDistance(squared=True),
    "dot": DotProductSimilarity,
}
"""The names :func:`get_distance` accepts, and what each stands for (default settings)."""


def get_distance(distance: str | Distance, name: str = "distance") -> Distance:
    """``distance`` itself, or the :class:`Distance` of that name (:data:`DISTANCE_NAMES`).

    Args:
        distance: a :class:`Distance`, or ``"cosine"``, ``"euclidean"``, ``"sqeuclidean"`` or
            ``"dot"``.
        name: the argument's name, for the error message.
    """
    if isinstance(distance, Distance):
        return distance
    if not isinstance(distance, str) or distance not in DISTANCE_NAMES:
        raise ValueError(
            f"{name} must be a reidkit.distances.Distance or one of "
            f"{tuple(DISTANCE_NAMES)}, got {distance!r}"
        )
    return DISTANCE_NAMES[distance]()


def similarity_logits(
    anchors: Tensor,
    targets: Tensor,
    *,
    normalize: bool,
    temperature: float = 1.0,
    logit_scale: Tensor | float | None = None,
) -> Tensor:
    """Logits ``s(a_i, t_j) * scale`` of every anchor against every target.

    Args:
        anchors: ``(N, D)``.
        targets: ``(M, D)``.
        normalize: L2-normalise both sides first (``s`` is the cosine similarity, as printed
            in CLIP-ReID eq. 2-5); otherwise ``s`` is the plain dot product (CLIP-ReID's
            reference code, with ``temperature = 1``).
        temperature: divides the similarities when ``logit_scale`` is ``None``.
        logit_scale: multiplies the similarities instead (e.g. CLIP's ``logit_scale.exp()``,
            which may be a learnable tensor).

    Returns:
        ``(N, M)`` logits.
    """
    checks.check_scale("logit_scale", logit_scale)
    similarity = DotProductSimilarity(normalize_embeddings=normalize).pairwise(anchors, targets)
    if logit_scale is not None:
        return similarity * logit_scale
    return similarity / temperature
