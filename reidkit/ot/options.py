"""The settings of the Sinkhorn solver, in one object: :class:`SinkhornOptions`.

Every component that solves transport problems takes a :class:`SinkhornOptions`, validated once
when it is built: :class:`~reidkit.SinkhornOT` holds one, and
:class:`~reidkit.PatchToTokenAlignment`, :func:`~reidkit.parts.assign_patches`,
:class:`~reidkit.PartTokenAttention` and :class:`~reidkit.AAformer` take one as ``options=``.
The entry points of :mod:`reidkit.ot` (:func:`~reidkit.sinkhorn`, :class:`~reidkit.SinkhornOT`
and :func:`~reidkit.pairwise_ot_distance`) also take the fields as keywords, a shorthand that
builds the object (or overrides fields of a given one): ``sinkhorn(cost, epsilon=0.1)``.

The options are plain data: ``dataclasses.asdict(options)`` is a dict of numbers, strings and
``None`` that ``SinkhornOptions(**that_dict)`` turns back into equal options, so a
configuration file can hold them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from reidkit import checks
from reidkit._deprecation import warn_deprecated_arguments

GradMode = Literal["implicit", "envelope", "unrolled"]
Backend = Literal["auto", "torch", "triton"]
StopRule = Literal["marginal", "update"]
OnNonconvergence = Literal["ignore", "warn", "raise"]

GRAD_MODES: tuple[str, ...] = ("implicit", "envelope", "unrolled")
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
STOP_RULES: tuple[str, ...] = ("marginal", "update")
NONCONVERGENCE_ACTIONS: tuple[str, ...] = ("ignore", "warn", "raise")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkhornOptions:
    """How to solve entropic OT problems (MMPL eq. 14-17): every setting of the solver.

    Validated when built: a bad value raises :class:`ValueError` naming the field. Frozen:
    derive variants with :func:`dataclasses.replace` (which validates again).

    Attributes:
        epsilon: entropic regularisation, MMPL's lambda and POT's ``reg`` (> 0; a Python or
            NumPy scalar or a 0-d tensor, stored as a float).
        max_iter: iteration cap (>= 1). One iteration updates the rows, then the columns.
        tol: stopping threshold per problem; ``None`` runs exactly ``max_iter`` iterations (as
            AAformer's 3 iterations).
        stop_rule: ``"marginal"`` (the L1 error of the row marginals is at most ``tol``) or
            ``"update"`` (MMPL sec. 4.2: the mean change of the row scaling in one iteration is
            at most ``tol``); see :func:`reidkit.sinkhorn`.
        grad: ``"implicit"`` (exact gradient of the returned plan, memory independent of
            ``max_iter``), ``"envelope"`` (the plan held constant) or ``"unrolled"`` (autograd
            through the iterations).
        backend: ``"auto"`` (the fused Triton kernels on CUDA tensors of a supported shape),
            ``"torch"`` or ``"triton"``.
        on_nonconvergence: what a problem that stops at ``max_iter`` with its stop rule unmet
            causes: ``"warn"`` (one :class:`RuntimeWarning` per call site), ``"raise"`` or
            ``"ignore"``.
        check_every: iterations between the host's looks at the convergence flags (>= 1); the
            results do not depend on it.

    Example:
        >>> options = SinkhornOptions(epsilon=0.1, tol=0.05, stop_rule="update")
        >>> dataclasses.replace(options, max_iter=100).max_iter
        100
    """

    epsilon: float
    max_iter: int = 50
    tol: float | None = 1e-3
    stop_rule: StopRule = "marginal"
    grad: GradMode = "implicit"
    backend: Backend = "auto"
    on_nonconvergence: OnNonconvergence = "warn"
    check_every: int = 10

    def __post_init__(self) -> None:
        converted = {
            "epsilon": checks.as_float("epsilon", self.epsilon, above=0, finite=True),
            "max_iter": checks.as_int("max_iter", self.max_iter, 1),
            "tol": checks.as_float("tol", self.tol, at_least=0, optional=True),
            "check_every": checks.as_int("check_every", self.check_every, 1),
        }
        for name, value in converted.items():
            object.__setattr__(self, name, value)
        checks.check_choice("stop_rule", self.stop_rule, STOP_RULES)
        checks.check_choice("grad", self.grad, GRAD_MODES)
        checks.check_choice("backend", self.backend, BACKENDS)
        checks.check_choice("on_nonconvergence", self.on_nonconvergence, NONCONVERGENCE_ACTIONS)


FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(SinkhornOptions))
"""The names of the settings, as the keywords of the :mod:`reidkit.ot` entry points."""


def options_from_keywords(
    caller: str, options: SinkhornOptions | None, keywords: Mapping[str, Any]
) -> SinkhornOptions:
    """The options of an entry point of :mod:`reidkit.ot` called with ``options`` and keywords.

    The keywords are fields of :class:`SinkhornOptions`; they build the options, or override
    the fields of ``options`` when both are given.

    Args:
        caller: the entry point, named in the messages.
        options: the ``options=`` argument, or ``None``.
        keywords: the solver keywords given.

    Raises:
        TypeError: for a keyword that is not a field, or without ``epsilon`` and ``options``.
        ValueError: for a bad value (from :class:`SinkhornOptions`).
    """
    check_options(options, optional=True)
    unknown = sorted(set(keywords) - set(FIELDS))
    if unknown:
        raise TypeError(
            f"{caller} got an unexpected keyword argument {unknown[0]!r}; its solver settings "
            f"are the fields of SinkhornOptions: {', '.join(FIELDS)}"
        )
    if options is not None:
        return dataclasses.replace(options, **keywords) if keywords else options
    if "epsilon" not in keywords:
        raise TypeError(f"{caller} needs epsilon= (or options=SinkhornOptions(epsilon=...))")
    return SinkhornOptions(**keywords)


def consumer_options(
    owner: str,
    options: SinkhornOptions,
    deprecated: Mapping[str, Any],
    old_keywords: Mapping[str, str],
) -> SinkhornOptions:
    """The options of an OT consumer, with the solver keywords it took before applied.

    The old keywords still work for one release: each sets a field of the options, and a
    :class:`DeprecationWarning` names the options to pass instead (once per consumer and
    process).

    Args:
        owner: the consumer (``"reidkit.PatchToTokenAlignment"``), named in the messages.
        options: its ``options=`` argument (or its default).
        deprecated: the old keywords given, by their old names.
        old_keywords: every old keyword the consumer took -> the field it sets.

    Raises:
        TypeError: for a keyword the consumer never took, or options that are not a
            :class:`SinkhornOptions`.
    """
    check_options(options)
    if not deprecated:
        return options
    unknown = sorted(set(deprecated) - set(old_keywords))
    if unknown:
        raise TypeError(f"{owner} got an unexpected keyword argument {unknown[0]!r}")
    resolved = dataclasses.replace(
        options, **{old_keywords[name]: value for name, value in deprecated.items()}
    )
    warn_deprecated_arguments(owner, list(deprecated), f"options={resolved!r}")
    return resolved


def check_options(options: object, *, optional: bool = False) -> None:
    """Raise :class:`TypeError` unless ``options`` is a :class:`SinkhornOptions`."""
    if optional and options is None:
        return
    if not isinstance(options, SinkhornOptions):
        raise TypeError(
            f"options must be a reidkit.SinkhornOptions{' or None' if optional else ''}, got "
            f"{type(options).__name__}"
        )
