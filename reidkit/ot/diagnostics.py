"""The signal for problems that stopped at ``max_iter`` with their stop rule unmet.

:func:`reidkit.sinkhorn` and :func:`reidkit.pairwise_ot_distance` take
``on_nonconvergence="ignore" | "warn" | "raise"``. A warning is attributed to the first caller
outside reidkit and torch, with a text that does not depend on the data, so that Python's
warning filters show it once per call site (the ``"default"`` action) and can select it by
module or line.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch
from torch import Tensor

# Frames in these folders are skipped when a warning is attributed to its call site.
_INTERNAL_PREFIXES = (
    os.path.dirname(os.path.dirname(__file__)) + os.sep,  # reidkit/
    os.path.dirname(torch.__file__) + os.sep,  # torch/ (Module.__call__, Function.apply)
)


def report_nonconvergence(
    converged: Tensor,
    action: str,
    caller: str,
    max_iter: int,
    tol: float | None,
    stop_rule: str,
) -> None:
    """Warn or raise, as ``action`` says, if some problem did not converge.

    Args:
        converged: ``(...)`` bool flags of the problems.
        action: ``"ignore"``, ``"warn"`` (a :class:`RuntimeWarning`) or ``"raise"`` (a
            :class:`RuntimeError`).
        caller: the public function named in the message.
        max_iter, tol, stop_rule: the solver options, quoted in the message.
    """
    if action == "ignore" or converged.numel() == 0:
        return
    missed = int((~converged).sum())
    if missed == 0:
        return
    rule = f"stop_rule={stop_rule!r} with tol={tol:g}"
    advice = "raise max_iter or epsilon, or loosen tol"
    if action == "raise":
        raise RuntimeError(
            f"{caller}: {missed} of {converged.numel()} problems stopped at max_iter={max_iter} "
            f"before meeting {rule}; {advice}"
        )
    warnings.warn(
        f"{caller}: some problems stopped at max_iter={max_iter} before meeting {rule}, so "
        f"their results are not converged; {advice}, or pass on_nonconvergence='ignore'",
        RuntimeWarning,
        stacklevel=_external_stacklevel(),
    )


def _external_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside reidkit and torch, for ``warnings.warn``."""
    frame, level = sys._getframe(1), 1  # level 1: the function that calls warnings.warn
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_PREFIXES):
        frame, level = frame.f_back, level + 1
    return level
