"""Entropic optimal transport: batched Sinkhorn with implicit gradients, in plain torch.

The Triton kernels of :mod:`reidkit.kernels` accelerate the same computations on CUDA.
"""

from reidkit.ot.pairwise import pairwise_ot_distance
from reidkit.ot.sinkhorn import SinkhornOT, SinkhornResult, sinkhorn

__all__ = ["SinkhornOT", "SinkhornResult", "pairwise_ot_distance", "sinkhorn"]
