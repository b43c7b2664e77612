"""Entropic optimal transport: batched Sinkhorn with implicit gradients, in plain torch.

:class:`SinkhornOptions` holds the solver's settings; :func:`sinkhorn`, :class:`SinkhornOT` and
:func:`pairwise_ot_distance` solve with them. The Triton kernels of :mod:`reidkit.kernels`
accelerate the same computations on CUDA.
"""

from reidkit.ot.diagnostics import grad_fallback_count
from reidkit.ot.options import SinkhornOptions
from reidkit.ot.pairwise import pairwise_ot_distance
from reidkit.ot.sinkhorn import SinkhornOT, SinkhornResult, sinkhorn

__all__ = [
    "SinkhornOT",
    "SinkhornOptions",
    "SinkhornResult",
    "grad_fallback_count",
    "pairwise_ot_distance",
    "sinkhorn",
]
