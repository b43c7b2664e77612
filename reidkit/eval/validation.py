"""Identity and camera ids of the evaluation entry points: checks and encoding.

Evaluation accepts identity or camera ids that are integers, strings or other hashable objects
(matrices go through :func:`reidkit.checks.as_matrix`). Every check raises :class:`ValueError`
naming the argument and the expected shape, so a label vector of the wrong length fails at the
call instead of producing a plausible but wrong score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reidkit import checks
from reidkit._deprecation import moved_names
from reidkit.checks import ArrayLike

IdArray = Tensor | np.ndarray
"""Ids after :func:`as_ids`: an int64 tensor, or a numpy array of strings, bytes or objects."""

_ID_KINDS = {"U": "string", "S": "bytes", "O": "object"}  # numpy dtype kinds of non-integer ids


def as_ids(name: str, values: ArrayLike, length: int) -> IdArray:
    """``values`` as a ``(length,)`` vector of identity or camera ids.

    Integer ids become an int64 tensor (on the device they are on); strings, bytes and other
    hashable objects stay a numpy array, to be encoded by :func:`as_paired_labels`.
    """
    if isinstance(values, (list, tuple)):
        values = np.asarray(values)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        values = torch.from_numpy(np.ascontiguousarray(values))
    if not isinstance(values, (Tensor, np.ndarray)):
        raise ValueError(
            f"{name} must be a numpy array, a torch tensor or a list of ids, "
            f"got {type(values).__name__}"
        )
    if values.ndim != 1 or values.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got shape {tuple(values.shape)}")
    if isinstance(values, Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer or string ids, got dtype {values.dtype}")
        return values.detach().to(torch.int64)
    if values.dtype.kind not in _ID_KINDS:
        raise ValueError(f"{name} must hold integer or string ids, got dtype {values.dtype}")
    return values


def id_kind(ids: IdArray) -> str:
    """``"integer"``, ``"string"``, ``"bytes"`` or ``"object"``: what :func:`as_ids` returned."""
    return "integer" if isinstance(ids, Tensor) else _ID_KINDS[ids.dtype.kind]


def as_paired_labels(
    names: tuple[str, str],
    query: ArrayLike,
    gallery: ArrayLike,
    lengths: tuple[int, int],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Query and gallery ids as int64 ``(Q,)`` and ``(G,)`` tensors on ``device``.

    Integer ids are kept as they are. Other ids (strings such as ``"0001"`` read from a file
    list, bytes, or hashable objects in a numpy object array) are replaced by one code per
    distinct id, shared by query and gallery (:func:`numpy.unique` of their union, a dictionary
    for objects), so two codes are equal exactly when the ids are: the metrics do not change.

    Args:
        names: the arguments' names, for the error messages.
        query, gallery: ``(Q,)`` and ``(G,)`` ids of one kind (integers, strings, bytes), or
            any hashable objects on either side.
        lengths: ``(Q, G)``.

    Raises:
        ValueError: a wrong shape or dtype, integers on one side and strings on the other
            (no id could ever match), or unhashable objects.
    """
    ids = [
        as_ids(name, values, length)
        for name, values, length in zip(names, (query, gallery), lengths)
    ]
    query_ids, gallery_ids = ids
    if isinstance(query_ids, Tensor) and isinstance(gallery_ids, Tensor):  # integers on both sides
        return query_ids.to(device), gallery_ids.to(device)
    kinds = [id_kind(i) for i in ids]
    if "object" not in kinds and kinds[0] != kinds[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must hold ids of one kind, got {kinds[0]} ids and "
            f"{kinds[1]} ids (no query id could equal a gallery id)"
        )
    arrays = [i.cpu().numpy() if isinstance(i, Tensor) else i for i in ids]
    union = np.concatenate(arrays if "object" not in kinds else [a.astype(object) for a in arrays])
    if union.dtype == object:
        codes: dict[object, int] = {}
        try:
            encoded = np.fromiter(
                (codes.setdefault(i, len(codes)) for i in union), dtype=np.int64, count=len(union)
            )
        except TypeError as error:
            raise ValueError(f"{names[0]} and {names[1]} must hold hashable ids: {error}") from None
    else:
        encoded = np.unique(union, return_inverse=True)[1].reshape(-1)
    encoded_tensor = torch.from_numpy(encoded.astype(np.int64)).to(device)
    return encoded_tensor[: lengths[0]], encoded_tensor[lengths[0] :]


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    """The former ``check_positive_int``: an integer ``>= minimum`` (1 by default)."""
    checks.check_integer(name, value, minimum)


def _check_metric(metric: str) -> None:
    """The former ``check_metric``: one of the evaluation's distance names."""
    checks.check_choice("metric", metric, ("cosine", "euclidean", "sqeuclidean"))


__getattr__ = moved_names(
    __name__,
    {
        "as_matrix": "reidkit.checks.as_matrix",
        "check_finite": "reidkit.checks.check_finite",
        "is_finite": "reidkit.checks.is_finite",
        "check_positive_int": (_check_positive_int, "reidkit.checks.check_integer"),
        "check_metric": (_check_metric, "reidkit.distances.get_distance"),
        "METRICS": (("cosine", "euclidean", "sqeuclidean"), "reidkit.distances.DISTANCE_NAMES"),
    },
)
