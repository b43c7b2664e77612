"""Sinkhorn forward + backward: reidkit against POT and geomloss at MMPL and AAformer shapes.

Shapes (issue targets):

* MMPL patch-to-token alignment: ``B = 64`` images, ``L = 751`` classes, ``(M, N)`` in
  ``{(10, 4), (40, 6), (80, 8)}``, cost ``1 - x y^T`` of L2-normalised ``D = 512`` features,
  ``epsilon = 0.1``, at most 50 iterations, marginal tolerance ``1e-3``.
* AAformer part assignment: ``64 * 12`` problems of ``5 x 128``, exactly 3 iterations.

Backends:

* ``reidkit-dense``: :func:`reidkit.sinkhorn` on the materialised ``(B, L, M, N)`` cost,
  implicit gradients.
* ``reidkit-pairwise``: :func:`reidkit.pairwise_ot_distance` from the features (chunked over
  classes, saves only the potentials).
* ``reidkit-triton`` (CUDA only): the fused kernels of :mod:`reidkit.kernels` (the
  feature-level ones for MMPL, the cost-tile one for AAformer).
* ``pot-batch``: POT's batched solver ``ot.batch.solve_batch`` (log-domain Sinkhorn on torch
  tensors) with ``grad="autodiff"`` (the gradient of ``<T, C>``; its ``envelope`` mode only
  differentiates the regularised value).
* ``geomloss``: ``SamplesLoss("sinkhorn")`` with the cosine cost, epsilon-scaling schedule ending
  at the target epsilon (``blur``), looped over class chunks because it pairs problems one to
  one. It has no tolerance: its error against the converged solution is reported instead.

On CUDA a ``bandwidth-bound`` row gives the time the feature-level forward + backward needs just
to move the bytes it must move once (features and their gradients, distances and their upstream
gradient, the potentials written by the forward and read by the backward) at ``--peak-gbs``.

Every backend's distances are compared with a float64 reference solved to ``tol = 1e-9``:
``max_abs_err`` is reported next to the time, so speed is compared at stated accuracy.

POT and geomloss rows run where those libraries are installed.

Run: ``python benchmarks/bench_sinkhorn.py`` (``--quick`` for a smaller L, ``--skip-geomloss``,
``--out-dir`` for another results folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from harness import (
    RESULTS_DIR,
    BenchmarkRow,
    describe_machine,
    peak_memory_bytes,
    plot_metric,
    print_table,
    save_results,
    saved_for_backward_bytes,
    time_call,
)

from reidkit import pairwise_ot_distance, sinkhorn

EPSILON = 0.1
MAX_ITER = 50
TOL = 1e-3
MMPL_SHAPES = ((10, 4), (40, 6), (80, 8))
FEATURE_RANK = 16  # features live near a low-dimensional subspace, as trained features do
# Backends of other libraries run only where the library is installed.
HAS_POT = importlib.util.find_spec("ot") is not None
HAS_GEOMLOSS = importlib.util.find_spec("geomloss") is not None


def mmpl_features(
    b: int, num_classes: int, m: int, n: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch features ``(B, M, 512)`` and token features ``(L, N, 512)`` with spread cosines."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(FEATURE_RANK, 512, generator=generator)
    x = torch.randn(b, m, FEATURE_RANK, generator=generator) @ basis
    y = torch.randn(num_classes, n, FEATURE_RANK, generator=generator) @ basis
    return F.normalize(x, dim=-1).to(device), F.normalize(y, dim=-1).to(device)


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B, L, M, N)`` cost ``1 - x y^T``."""
    return 1 - torch.einsum("bmd,lnd->blmn", x, y)


class Candidate(NamedTuple):
    """A backend's forward closure, the leaves it differentiates and a note for the table."""

    forward: Callable[[], torch.Tensor]
    leaves: tuple[torch.Tensor, ...]
    note: str

    def forward_backward(self) -> torch.Tensor:
        for leaf in self.leaves:
            leaf.grad = None
        distance = self.forward()
        distance.sum().backward()
        return distance.detach()


def reference_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Float64 distances at tolerance 1e-9: the accuracy yardstick of every backend."""
    return pairwise_ot_distance(
        x.double(), y.double(), epsilon=EPSILON, max_iter=2000, tol=1e-9, backend="torch"
    )


def pot_distance(cost: torch.Tensor, method: str) -> torch.Tensor:
    from ot.batch import solve_batch

    flat = cost.reshape(-1, *cost.shape[-2:])
    result = solve_batch(
        flat, reg=EPSILON, max_iter=MAX_ITER, tol=TOL, method=method, grad="autodiff"
    )
    return result.value_linear.reshape(cost.shape[:-2])


def geomloss_distance(x: torch.Tensor, y: torch.Tensor, scaling: float) -> torch.Tensor:
    """``<T, C>`` from geomloss's potentials, looped over chunks of classes."""
    from geomloss import SamplesLoss

    solver = SamplesLoss(
        "sinkhorn",
        p=1,
        blur=EPSILON,  # geomloss's final epsilon is blur**p
        scaling=scaling,
        debias=False,
        potentials=True,
        backend="tensorized",
        cost=lambda u, v: 1 - u @ v.transpose(-1, -2),
    )
    b, m, _ = x.shape
    num_classes, n, _ = y.shape
    rows = []
    chunk = max(1, 4096 // b)
    for start in range(0, num_classes, chunk):
        y_chunk = y[start : start + chunk]
        xs = x[:, None].expand(b, len(y_chunk), *x.shape[1:]).reshape(-1, m, x.shape[-1])
        ys = y_chunk[None].expand(b, *y_chunk.shape).reshape(-1, n, y.shape[-1])
        f, g = solver(xs, ys)
        cost = 1 - xs @ ys.transpose(-1, -2)
        plan = torch.exp((f[:, :, None] + g[:, None, :] - cost) / EPSILON) / (m * n)
        rows.append((plan * cost).sum(dim=(1, 2)).reshape(b, len(y_chunk)))
    return torch.cat(rows, dim=1)


def bandwidth_bound_seconds(x: torch.Tensor, y: torch.Tensor, peak_gbs: float) -> float:
    """Seconds to move the bytes a feature-level forward + backward must move once, in fp32."""
    (b, m, _), (num_classes, n, _) = x.shape, y.shape
    features = x.numel() + y.numel()  # read by the forward, gradients written by the backward
    distances = b * num_classes  # written by the forward, upstream gradient read back
    potentials = b * num_classes * (m + n)  # written by the forward, read by the backward
    return 4 * 2 * (features + distances + potentials) / (peak_gbs * 1e9)


def bench_mmpl(
    m: int,
    n: int,
    num_classes: int,
    device: torch.device,
    skip_geomloss: bool,
    peak_gbs: float,
) -> list[BenchmarkRow]:
    x0, y0 = mmpl_features(64, num_classes, m, n, device)
    shape = f"B=64 L={num_classes} M={m} N={n}"
    reference = reference_distances(x0, y0)
    cost_bytes = 64 * num_classes * m * n * 4
    dev = str(device)

    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    cost_leaf = cosine_cost(x0, y0).requires_grad_()

    def dense(backend: str) -> Callable[[], torch.Tensor]:
        return lambda: (
            sinkhorn(
                cost_leaf, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL, backend=backend
            ).distance
        )

    def pairwise(backend: str) -> Callable[[], torch.Tensor]:
        return lambda: pairwise_ot_distance(
            x, y, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL, backend=backend
        )

    candidates = {
        "reidkit-dense": Candidate(dense("torch"), (cost_leaf,), "implicit grad w.r.t. cost"),
        "reidkit-pairwise": Candidate(pairwise("torch"), (x, y), "implicit grad w.r.t. x, y"),
    }
    # POT's log-domain autodiff and geomloss keep many cost-sized tensors for the backward
    # (100-200 times the cost): they run only where that fits in a 24 GB machine.
    fits = m * n <= 240
    pot_methods = ("sinkhorn", "log_sinkhorn") if fits else ("sinkhorn",)
    for method in pot_methods if HAS_POT else ():
        candidates[f"pot-batch-{method}"] = Candidate(
            lambda method=method: pot_distance(cost_leaf, method),
            (cost_leaf,),
            f"ot.batch.solve_batch {method}, grad=autodiff",
        )
    if device.type == "cuda":
        candidates["reidkit-triton"] = Candidate(pairwise("triton"), (x, y), "fused kernel")
    if fits and HAS_GEOMLOSS and not skip_geomloss:
        for scaling in (0.5, 0.9):
            candidates[f"geomloss-s{scaling}"] = Candidate(
                lambda scaling=scaling: geomloss_distance(x, y, scaling),
                (x, y),
                f"epsilon-scaling {scaling}",
            )

    rows = []
    for backend, candidate in candidates.items():
        distances = candidate.forward_backward()
        error = (distances.double() - reference).abs().max().item()
        seconds = time_call(candidate.forward_backward, device, repeats=3, warmup=0)
        peak = peak_memory_bytes(candidate.forward_backward, device)
        saved = saved_for_backward_bytes(candidate.forward)
        kernel = "mmpl-alignment"
        measured = [
            BenchmarkRow(kernel, shape, backend, dev, "fwd_bwd_s", seconds, candidate.note),
            BenchmarkRow(kernel, shape, backend, dev, "peak_mem_mb", peak / 2**20),
            BenchmarkRow(kernel, shape, backend, dev, "saved_over_cost", saved / cost_bytes),
            BenchmarkRow(kernel, shape, backend, dev, "max_abs_err", error),
        ]
        print_table(measured)  # as it comes: a long run shows its progress
        rows += measured
    if device.type == "cuda":
        bound = bandwidth_bound_seconds(x0, y0, peak_gbs)
        note = f"bytes moved once at {peak_gbs:g} GB/s"
        rows.append(
            BenchmarkRow("mmpl-alignment", shape, "bandwidth-bound", dev, "fwd_bwd_s", bound, note)
        )
    return rows


def bench_aaformer(device: torch.device) -> list[BenchmarkRow]:
    """Part assignment: 64*12 problems of 5 parts x 128 patches, 3 iterations, no gradient."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64 * 12, 5, 128, generator=generator).to(device)
    shape = "768 x (5 x 128), 3 iters"
    dev = str(device)

    def reidkit_run() -> torch.Tensor:
        return sinkhorn(-scores, epsilon=0.05, max_iter=3, tol=None, backend="torch").plan

    def pot_run() -> torch.Tensor:
        from ot.batch import solve_batch

        return solve_batch(
            -scores, reg=0.05, max_iter=3, tol=0.0, method="log_sinkhorn", grad="detach"
        ).plan

    def triton_run() -> torch.Tensor:
        return sinkhorn(-scores, epsilon=0.05, max_iter=3, tol=None, backend="triton").plan

    reference = reidkit_run().double()
    runs = [("reidkit-dense", reidkit_run)]
    if HAS_POT:
        runs.append(("pot-batch-log_sinkhorn", pot_run))
    if device.type == "cuda":
        runs.append(("reidkit-triton", triton_run))
    rows = []
    for backend, run in runs:
        with torch.no_grad():
            error = (run().double() - reference).abs().max().item()
            seconds = time_call(run, device, repeats=5)
            peak = peak_memory_bytes(run, device)
        rows += [
            BenchmarkRow("aaformer-assignment", shape, backend, dev, "fwd_s", seconds),
            BenchmarkRow("aaformer-assignment", shape, backend, dev, "peak_mem_mb", peak / 2**20),
            BenchmarkRow("aaformer-assignment", shape, backend, dev, "max_abs_err", error),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=751, help="L, the number of classes")
    parser.add_argument("--quick", action="store_true", help="L = 64 instead of 751")
    parser.add_argument("--skip-geomloss", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="sinkhorn", help="results file stem")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--peak-gbs", type=float, default=3350.0, help="GPU memory bandwidth (H100 SXM: 3350)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    num_classes = 64 if args.quick else args.classes

    print(f"machine: {describe_machine()}")
    rows: list[BenchmarkRow] = []
    for m, n in MMPL_SHAPES:
        rows += bench_mmpl(m, n, num_classes, device, args.skip_geomloss, args.peak_gbs)
    rows += bench_aaformer(device)
    print_table(rows)
    command = "python benchmarks/bench_sinkhorn.py " + " ".join(sys.argv[1:])
    csv_path, json_path = save_results(
        args.name, rows, command=command.strip(), out_dir=args.out_dir
    )
    plot = plot_metric(
        [r for r in rows if r.kernel == "mmpl-alignment"],
        "fwd_bwd_s",
        args.out_dir / f"{args.name}_time.png",
        title=f"Sinkhorn forward + backward ({describe_machine()})",
    )
    print(f"wrote {csv_path}, {json_path}, {plot}")


if __name__ == "__main__":
    main()
