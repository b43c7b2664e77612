"""Deprecated home of the kernels: they moved to one module per family (see
:mod:`reidkit.kernels`). The old names still resolve here, with a :class:`DeprecationWarning`,
for one release."""

from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "sinkhorn_potentials": "reidkit.kernels.cost_tile",
    "pairwise_potentials": "reidkit.kernels.pairwise_forward",
    "pairwise_feature_grads": "reidkit.kernels.pairwise_backward",
}


def __getattr__(name: str) -> object:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"reidkit.kernels.sinkhorn_kernels.{name} moved to {_MOVED[name]}.{name}; the old path "
        "will be removed in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(_MOVED[name]), name)
