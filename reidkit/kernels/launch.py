"""Launch settings of the Triton kernels: the one place that chooses how a problem is tiled.

Every launcher of :mod:`reidkit.kernels` asks this module for its block sizes, problems per
program and warps, and nothing else chooses them. The ``*_launches()`` functions enumerate
every setting a launcher can pick over the whole range of shapes it accepts, so that
:mod:`reidkit.kernels.aot` compiles exactly these settings for real GPUs (and a test checks
that no accepted shape picks a setting outside them). The module does not import Triton.

The rules, all on fp32 register tiles:

* the Sinkhorn loop keeps about :data:`TILE_ENTRIES_PER_THREAD` cost entries per thread
  (the tile and a few temporaries of its size stay in registers for every iteration), with at
  least :data:`MIN_WARPS` warps per program (an SM holds at most 32 programs: fewer warps
  would leave it half empty) and at most :data:`MAX_WARPS`;
* the feature-level kernels build the cost over chunks of ``BLOCK_D`` features with
  ``BLOCK_M * BLOCK_D`` at most :data:`FEATURE_ENTRIES_PER_THREAD` entries per thread, and
  their backward runs twice the forward's warps (it holds several tiles at once);
* loops are not software-pipelined (``num_stages=1``): the loop over features is not the
  bottleneck, and its prefetch buffers would cost registers;
* sides are padded to powers of two (Triton's blocks), at least :data:`MIN_COST_BLOCK` for
  the cost-tile kernel and :data:`MIN_DOT_BLOCK` for the feature-level kernels (``tl.dot``).

Triton's JIT also compiles a variant per *value class* of the arguments (an integer equal to
1 or divisible by 16, a pointer aligned to 16 bytes). The kernels therefore take no strides
and exempt their integer arguments from this (``do_not_specialize``), and the launchers pass
16-byte aligned tensors (:func:`aligned`) with feature rows padded to a multiple of
:data:`FEATURE_ALIGNMENT`: one launch setting compiles to one variant, and
:class:`KernelVariant` says which.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

MAX_TILE = 4096  # entries of one problem's padded cost tile
MAX_TOKENS = 32  # columns (N) of a feature-level problem: its N x N solve runs on chip
MIN_DOT_BLOCK = 16  # tl.dot needs blocks >= 16: the feature-level kernels pad to it
MIN_COST_BLOCK = 4  # smallest side of the cost-tile kernel's blocks
PROGRAM_TILE = 1024  # cost entries per program of the cost-tile kernel (small problems packed)
MAX_PROBLEMS = 16  # problems per program of the cost-tile kernel
TILE_ENTRIES_PER_THREAD = 4
FEATURE_ENTRIES_PER_THREAD = 16
MIN_WARPS = 2
MAX_WARPS = 8
MAX_BACKWARD_WARPS = 16
MAX_BLOCK_D = 64
THREADS_PER_WARP = 32
MAX_INT32 = 2**31 - 1  # integer arguments are int32: a larger max_iter is never reached anyway
# Dtypes the feature-level kernels read (they compute in float32), with their Triton names.
TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
KERNEL_DTYPES = tuple(TRITON_TYPES)
FEATURE_ALIGNMENT = 16  # feature rows hold a multiple of 16 elements (vector loads)
POINTER_ALIGNMENT = 16  # bytes
# Feature-level backward: the per-pair cost gradients of a chunk of classes are written to one
# (B M, L_chunk N) float32 matrix of at most this many entries (256 MiB) before the two matrix
# products that form the feature gradients.
GRADIENT_CHUNK_ENTRIES = 1 << 26


def padded_block(size: int, minimum: int = 1) -> int:
    """The block a kernel uses for a side of ``size``: a power of two, at least ``minimum``.

    ``size`` may be a traced size (a 0-d tensor under ``torch.jit.trace``): it is read as an
    ``int``.
    """
    return max(minimum, 1 << (int(size) - 1).bit_length())


def _warps_for(tile: int, entries: int = TILE_ENTRIES_PER_THREAD) -> int:
    """Warps for a program that holds ``tile`` fp32 entries, about ``entries`` per thread."""
    return min(MAX_WARPS, max(MIN_WARPS, tile // (THREADS_PER_WARP * entries)))


@dataclasses.dataclass(frozen=True, order=True)
class CostTileLaunch:
    """Setting of the cost-tile kernel: ``problems`` cost tiles of ``block_m x block_n``."""

    block_m: int
    block_n: int
    problems: int
    num_warps: int
    num_stages: int = 1  # no software pipelining

    def constexprs(self) -> dict[str, int]:
        """The kernel's compile-time arguments."""
        return {"PROBLEMS": self.problems, "BLOCK_M": self.block_m, "BLOCK_N": self.block_n}

    def describe(self) -> str:
        return f"{self.problems}x({self.block_m}x{self.block_n}) w{self.num_warps}"


def cost_tile_fits(m: int, n: int) -> bool:
    """Whether an ``M x N`` problem fits the cost-tile kernel (its padded tile on chip)."""
    return padded_block(m, MIN_COST_BLOCK) * padded_block(n, MIN_COST_BLOCK) <= MAX_TILE


def cost_tile_launch(m: int, n: int) -> CostTileLaunch:
    """The setting for ``M x N`` problems (``cost_tile_fits(m, n)``): small ones are packed
    several to a program, about :data:`PROGRAM_TILE` entries, so that e.g. MMPL's ``10 x 4``
    tiles fill the lanes."""
    block_m, block_n = padded_block(m, MIN_COST_BLOCK), padded_block(n, MIN_COST_BLOCK)
    problems = min(MAX_PROBLEMS, max(1, PROGRAM_TILE // (block_m * block_n)))
    return CostTileLaunch(block_m, block_n, problems, _warps_for(problems * block_m * block_n))


@dataclasses.dataclass(frozen=True, order=True)
class PairwiseLaunch:
    """Setting of the feature-level kernels: one ``block_m x block_n`` problem per program,
    its cost built over chunks of ``block_d`` features."""

    block_m: int
    block_n: int
    block_d: int
    num_warps: int
    num_stages: int = 1  # no software pipelining

    def constexprs(self) -> dict[str, int]:
        """The kernels' compile-time arguments."""
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_D": self.block_d}

    def describe(self) -> str:
        return f"{self.block_m}x{self.block_n} d{self.block_d} w{self.num_warps}"


def pairwise_fits(m: int, n: int) -> bool:
    """Whether ``M`` patches against ``N`` tokens fit the feature-level kernels."""
    tile = padded_block(m, MIN_DOT_BLOCK) * padded_block(n, MIN_DOT_BLOCK)
    return n <= MAX_TOKENS and tile <= MAX_TILE


def pairwise_launch(m: int, n: int, backward: bool = False) -> PairwiseLaunch:
    """The setting of the feature-level forward (or backward) kernel for ``M x N`` problems
    (``pairwise_fits(m, n)``); independent of the feature size ``D``.

    The backward holds several tiles at once (cost, plan and, for the implicit gradient, the
    terms of its solve): it runs twice the forward's warps, and the largest tiles
    (:data:`MAX_TILE` entries) :data:`MAX_BACKWARD_WARPS`.
    """
    block_m, block_n = padded_block(m, MIN_DOT_BLOCK), padded_block(n, MIN_DOT_BLOCK)
    tile = block_m * block_n
    if not backward:
        num_warps = _warps_for(tile)
    elif tile < MAX_TILE:
        num_warps = _warps_for(tile, TILE_ENTRIES_PER_THREAD // 2)
    else:
        num_warps = MAX_BACKWARD_WARPS
    block_d = FEATURE_ENTRIES_PER_THREAD * num_warps * THREADS_PER_WARP // block_m
    block_d = min(MAX_BLOCK_D, max(MIN_DOT_BLOCK, block_d))
    return PairwiseLaunch(block_m, block_n, block_d, num_warps)


LaunchT = TypeVar("LaunchT", CostTileLaunch, PairwiseLaunch)


def _powers_of_two(start: int, stop: int) -> Iterator[int]:
    size = start
    while size <= stop:
        yield size
        size *= 2


def _launches(
    fits: Callable[[int, int], bool], choose: Callable[[int, int], LaunchT], start: int
) -> tuple[LaunchT, ...]:
    """Every setting ``choose`` picks on the shapes ``fits`` accepts: the settings depend on the
    padded sides only, so the padded sizes themselves cover all shapes."""
    found = {
        choose(m, n)
        for m in _powers_of_two(start, MAX_TILE)
        for n in _powers_of_two(start, MAX_TILE)
        if fits(m, n)
    }
    return tuple(sorted(found))


def cost_tile_launches() -> tuple[CostTileLaunch, ...]:
    """Every setting the cost-tile launcher can pick."""
    return _launches(cost_tile_fits, cost_tile_launch, MIN_COST_BLOCK)


def pairwise_launches(backward: bool = False) -> tuple[PairwiseLaunch, ...]:
    """Every setting the feature-level forward (or backward) launcher can pick."""
    return _launches(
        pairwise_fits, functools.partial(pairwise_launch, backward=backward), MIN_DOT_BLOCK
    )


def aligned(tensor: Tensor) -> Tensor:
    """``tensor`` contiguous and starting on a :data:`POINTER_ALIGNMENT`-byte boundary (a view
    at an odd offset is copied), as the compiled kernels assume."""
    tensor = tensor.contiguous()
    return tensor if tensor.data_ptr() % POINTER_ALIGNMENT == 0 else tensor.clone()


def padded_features(features: Tensor) -> Tensor:
    """``(..., D)`` features, aligned, with zero columns up to a multiple of
    :data:`FEATURE_ALIGNMENT` (they add exact zeros to every dot product)."""
    missing = -features.shape[-1] % FEATURE_ALIGNMENT
    if missing:
        features = torch.nn.functional.pad(features, (0, missing))
    return aligned(features)


@dataclasses.dataclass(frozen=True)
class KernelVariant:
    """One compiled form of a kernel: what the JIT compiles for one launch setting.

    Attributes:
        kernel: the ``triton.jit`` function.
        name: the kernel's name in tables.
        launch: the launch setting (:class:`CostTileLaunch` or :class:`PairwiseLaunch`).
        dtype: Triton name of the dtype the kernel reads its input in (``"fp32"``, ...).
        signature: Triton type of every runtime argument (``"*fp32"``, ``"i32"``, ...); every
            pointer is 16-byte aligned.
        constexprs: the compile-time arguments.
    """

    kernel: Any
    name: str
    launch: CostTileLaunch | PairwiseLaunch
    dtype: str
    signature: dict[str, str]
    constexprs: dict[str, Any]

    @property
    def setting(self) -> str:
        """The launch setting and the input dtype, in words."""
        return f"{self.launch.describe()} {self.dtype}"

    @property
    def num_warps(self) -> int:
        return self.launch.num_warps

    @property
    def num_stages(self) -> int:
        return self.launch.num_stages
