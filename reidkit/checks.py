"""Argument checks shared by the whole package.

Bad input fails at the call with a :class:`ValueError` that names the argument, says what was
expected and shows what was given (``"k1 must be an integer >= 1, got 0"``), instead of a NaN
or a shape error deep inside a computation. Every module checks its arguments through these
functions, so one kind of argument is always described in the same words.

- scalars: :func:`check_integer`, :func:`check_number`, :func:`check_choice`,
  :func:`check_scale` and the predicate :func:`is_integer`; :func:`as_int` and :func:`as_float`
  check NumPy scalars (and 0-d tensors) too and return the Python value;
- tensors: :func:`check_float_matrix`, :func:`check_labels`, :func:`check_same_width`,
  :func:`check_finite` (and :func:`is_finite`), :func:`describe`;
- array input (numpy, torch or lists): :func:`as_matrix`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, Literal, TypeGuard, cast, overload

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | list[Any]
"""What the functions that accept "numpy, torch or lists" take."""


def is_integer(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a Python ``int`` (``True`` and ``False`` are not counted)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_integer(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is an integer in ``[minimum, maximum]`` (or ``None`` if optional).

    Args:
        name: the argument's name, for the message.
        value: what was given.
        minimum, maximum: inclusive bounds; ``None`` for none.
        optional: ``None`` is accepted too.

    Raises:
        ValueError: e.g. ``"k1 must be an integer >= 1, got 0"`` or
            ``"chunk_size must be None or an integer >= 1, got 0.5"``.
    """
    if optional and value is None:
        return
    if (
        is_integer(value)
        and (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
    ):
        return
    expected = "an integer"
    if minimum is not None and maximum is not None:
        expected += f" in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected += f" >= {minimum}"
    elif maximum is not None:
        expected += f" <= {maximum}"
    raise ValueError(f"{name} must be {'None or ' if optional else ''}{expected}, got {value!r}")


def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    finite: bool = False,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is a real number within the given bounds.

    ``above``/``below`` are strict bounds, ``at_least``/``at_most`` inclusive ones; give at most
    one of each side. NaN and booleans are refused; so is infinity with ``finite``.

    Raises:
        ValueError: e.g. ``"temperature must be > 0, got 0"``, ``"epsilon must be in [0, 1),
            got 1.0"`` or ``"epsilon must be a finite number > 0, got inf"``.
    """
    if optional and value is None:
        return
    number = cast(float, value)  # compared only once known to be a numbers.Real
    valid = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(number)
        and (not finite or math.isfinite(number))
        and (above is None or number > above)
        and (at_least is None or number >= at_least)
        and (below is None or number < below)
        and (at_most is None or number <= at_most)
    )
    if valid:
        return
    low = above if above is not None else at_least
    high = below if below is not None else at_most
    if low is not None and high is not None:
        opening, closing = "(" if above is not None else "[", ")" if below is not None else "]"
        bound = f"in {opening}{low}, {high}{closing}"
    elif low is not None:
        bound = f"{'>' if above is not None else '>='} {low}"
    elif high is not None:
        bound = f"{'<' if below is not None else '<='} {high}"
    else:
        bound = ""
    expected = f"a finite number {bound}".rstrip() if finite else bound or "a number"
    raise ValueError(f"{name} must be {'None or ' if optional else ''}{expected}, got {value!r}")


def real_number(value: object) -> float | None:
    """``value`` as a Python float if it is a real number, else ``None``.

    Accepts Python and NumPy scalars and 0-d real tensors (whose value is read, so it is taken
    as a constant); ``bool`` is not a number here.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            return None
        return float(value.item())
    if isinstance(value, numbers.Real):
        return float(value)
    return None


@overload
def as_float(
    name: str,
    value: object,
    *,
    above: float | None = ...,
    at_least: float | None = ...,
    below: float | None = ...,
    at_most: float | None = ...,
    finite: bool = ...,
    optional: Literal[False] = ...,
) -> float: ...


@overload
def as_float(
    name: str,
    value: object,
    *,
    above: float | None = ...,
    at_least: float | None = ...,
    below: float | None = ...,
    at_most: float | None = ...,
    finite: bool = ...,
    optional: bool,
) -> float | None: ...


def as_float(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    finite: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a Python float, checked as :func:`check_number` checks it.

    Accepts NumPy scalars and 0-d tensors as well (:func:`real_number`), so that
    ``np.float32(0.1)`` or ``torch.tensor(0.1)`` work wherever ``0.1`` does.

    Returns:
        The float, or ``None`` for ``None`` when ``optional``.
    """
    if optional and value is None:
        return None
    number = real_number(value)
    check_number(
        name,
        value if number is None else number,
        above=above,
        at_least=at_least,
        below=below,
        at_most=at_most,
        finite=finite,
        optional=optional,
    )
    return number


def as_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int, checked as :func:`check_integer` checks it.

    Accepts NumPy integers as well (``bool`` is refused).
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    check_integer(name, value, minimum, maximum)
    return cast(int, value)


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """Raise unless ``value`` is one of ``choices``: ``"reduction must be one of (...)"``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_scale(name: str, value: Tensor | float | None) -> None:
    """``value`` must be ``None``, a finite number > 0 or a one-element floating tensor.

    A tensor's value is not read (that would synchronise with the GPU at every step). Used for
    multipliers such as CLIP's ``logit_scale.exp()``, which may be a learnable tensor.
    """
    if value is None:
        return
    if isinstance(value, Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(
                f"{name} must be a number or a one-element floating-point tensor, got a "
                f"{value.dtype} tensor of shape {tuple(value.shape)}"
            )
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{name} must be a number or a one-element floating-point tensor, got "
            f"{type(value).__name__}"
        )
    elif not 0 < value < float("inf"):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def describe(value: object) -> str:
    """``"shape (N, D) and dtype torch.float32"`` for a tensor, the type's name otherwise."""
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_float_matrix(name: str, value: object) -> None:
    """``value`` must be a floating-point ``(N, D)`` tensor."""
    if not isinstance(value, Tensor) or value.dim() != 2 or not value.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor of shape (N, D), got {describe(value)}"
        )


def check_labels(name: str, labels: object, count: int) -> None:
    """``labels`` must be an integer ``(count,)`` tensor (not boolean)."""
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (count,)
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"{name} must be an integer tensor of shape ({count},), got {describe(labels)}"
        )


def check_same_width(name: str, value: Tensor, reference_name: str, reference: Tensor) -> None:
    """``value`` ``(M, D)`` must have the width ``D`` of ``reference`` ``(N, D)``.

    ``reference_name`` is a plural noun phrase: ``"targets must have the anchors' width 4,
    got shape (3, 5)"`` for ``reference_name="anchors"``.
    """
    if value.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"{name} must have the {reference_name}' width {reference.shape[-1]}, "
            f"got shape {tuple(value.shape)}"
        )


def is_finite(values: Tensor) -> bool:
    """Whether ``values`` holds no NaN and no infinity.

    Reads the extremes only (NaN propagates through them), so no boolean copy of a large
    distance matrix is made.
    """
    if values.numel() == 0:
        return True
    return bool(torch.isfinite(torch.stack([values.amin(), values.amax()])).all())


def check_finite(name: str, values: Tensor) -> None:
    """Raise if ``values`` holds NaN or infinity: ``"features must be finite; found NaN or
    inf"``."""
    if not is_finite(values):
        raise ValueError(f"{name} must be finite; found NaN or inf")


def as_matrix(name: str, values: ArrayLike) -> Tensor:
    """``values`` as a floating ``(M, N)`` tensor without copying (numpy shares its memory).

    Accepts a torch tensor (detached), a numpy array or a (nested) list of numbers.
    Half-precision tensors are kept as they are; callers convert chunk by chunk.
    """
    tensor = _as_tensor(name, values)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (M, N), got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must hold floating-point values, got dtype {tensor.dtype}")
    return tensor


def _as_tensor(name: str, values: ArrayLike) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach()
    if isinstance(values, (list, tuple)):
        values = np.asarray(values)
    if isinstance(values, np.ndarray) and values.dtype.kind in "biufc":
        return torch.from_numpy(np.ascontiguousarray(values))
    described = f"dtype {values.dtype}" if isinstance(values, np.ndarray) else type(values).__name__
    raise ValueError(
        f"{name} must be a numpy array, a torch tensor or a list of numbers, got {described}"
    )
