"""Sinkhorn forward + backward: reidkit against POT at equal gradient semantics.

Shapes (issue targets):

* MMPL patch-to-token alignment: ``B = 64`` images, ``L = 751`` classes, ``(M, N)`` in
  ``{(10, 4), (40, 6), (80, 8)}``, cost ``1 - x y^T`` of L2-normalised ``D = 512`` features,
  ``epsilon = 0.1``, at most 50 iterations, marginal tolerance ``1e-3``; the loss is the mean
  distance.
* AAformer part assignment: ``64 * 12`` problems of ``5 x 128``, exactly 3 iterations, no
  gradient.

Two pairings, each with the same gradient on both sides:

* **envelope**: the plan is a constant, ``d <T, C> / dC = T``. reidkit
  ``sinkhorn(cost, grad="envelope")`` against POT's ``ot.batch.solve_batch`` with
  ``grad="detach"`` (run under ``no_grad``) followed by ``loss_linear_batch(cost, plan)``, and
  POT's ``grad="envelope"`` mode (whose ``value_linear`` has the same gradient).
* **exact**: the gradient of ``<T*(C), C>``. reidkit ``sinkhorn(cost, grad="implicit")``
  against POT's ``grad="autodiff"`` (autograd through its iterations).

POT runs both its scaling-domain (``"sinkhorn"``) and log-domain (``"log_sinkhorn"``) solvers;
a pairing's speed-up is against the fastest POT configuration of its gradient. All
candidates of a shape run in turn, round after round (:func:`harness.time_interleaved`), and
the median is reported, so that the load of a shared machine hits all of them alike.

Accuracy against float64 solutions at ``tol = 1e-9``: ``max_abs_err`` and ``mean_abs_err``
of the distances and ``grad_rel_err`` of the gradient (max abs error over the max abs value
of the float64 gradient of the same semantics: the float64 plan for the envelope, the float64
implicit gradient for the exact pairing).

Roofline (CPU): ``roofline_fraction`` is the time the machine needs at its measured limits
(:func:`harness.cpu_rooflines`) for what any implementation must do, over the measured time.
Envelope: write the plan and the gradient (two new ``(B, M, N)`` tensors, at the first-touch
bandwidth), read the cost and read the plan back (at the stream bandwidth), and one
exponential per entry; exact: in addition read the cost again, write the gradient through a
second exponential per entry (the backward rebuilds the plan). The multiply-adds of the
iterations (``2 * n_iter`` per entry) are far from the limit and only enter through the max.

Other rows: ``reidkit-pairwise`` (:func:`reidkit.pairwise_ot_distance` from the features,
implicit gradient), ``reidkit-triton`` and the ``bandwidth-bound`` of the feature-level problem
on CUDA, and geomloss's ``SamplesLoss("sinkhorn")`` (epsilon-scaling, no tolerance) unless
``--skip-geomloss``.

POT and geomloss rows run where those libraries are installed (without POT there is no
``speedup_vs_pot`` row).

Run: ``python benchmarks/bench_sinkhorn.py`` (``--quick`` for a smaller L, ``--shapes`` for
some of the MMPL shapes, ``--out-dir`` for another results folder). On a shared machine, time
with ``--threads 1 --clock cpu``: the CPU time of one thread does not count the others' load,
while with two threads OpenMP's waiting thread spins whenever its partner is descheduled.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from harness import (
    RESULTS_DIR,
    BenchmarkRow,
    cpu_rooflines,
    describe_machine,
    median,
    peak_memory_bytes,
    plot_metric,
    print_table,
    save_results,
    saved_for_backward_bytes,
    time_interleaved,
)

from reidkit import pairwise_ot_distance, sinkhorn

EPSILON = 0.1
MAX_ITER = 50
TOL = 1e-3
MMPL_SHAPES = ((10, 4), (40, 6), (80, 8))
FEATURE_RANK = 16  # features live near a low-dimensional subspace, as trained features do
REFERENCE = {"max_iter": 2000, "tol": 1e-9}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
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
    """A backend's forward closure, the leaf it differentiates, its pairing and a note."""

    forward: Callable[[], torch.Tensor]
    leaf: torch.Tensor
    pairing: str  # "envelope", "exact" or "" (not in a pairing)
    note: str

    def forward_backward(self) -> torch.Tensor:
        self.leaf.grad = None
        distance = self.forward()
        distance.mean().backward()
        return distance.detach()


def pot_distance(cost: torch.Tensor, method: str, grad: str) -> torch.Tensor:
    """POT's ``<T, C>`` per problem of a flat ``(P, M, N)`` batch, with the gradient of ``grad``.

    ``"detach"``: the plan is solved without autograd and ``loss_linear_batch`` differentiates
    ``<T, C>`` with ``T`` constant (the envelope gradient); ``"envelope"``: POT's own mode, the
    same gradient; ``"autodiff"``: autograd through the iterations (the exact gradient).
    """
    from ot.batch import loss_linear_batch, solve_batch

    options = {"reg": EPSILON, "max_iter": MAX_ITER, "tol": TOL, "method": method}
    if grad == "detach":
        with torch.no_grad():
            plan = solve_batch(cost, grad="detach", **options).plan
        return loss_linear_batch(cost, plan)
    return solve_batch(cost, grad=grad, **options).value_linear


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


def cpu_bound_seconds(
    entries: int, mean_iterations: float, pairing: str, limits: dict[str, float]
) -> float:
    """What a dense forward + backward of ``pairing`` needs at the machine's limits, in fp32.

    See the module docstring: outputs written at the first-touch bandwidth, inputs streamed,
    exponentials and the iterations' multiply-adds at their measured rates; the max of the
    memory time and the compute time.
    """
    new_bytes = 2 * 4 * entries  # the plan and the gradient
    streamed = (2 if pairing == "envelope" else 3) * 4 * entries  # cost, plan (, cost again)
    exps = (1 if pairing == "envelope" else 2) * entries
    memory = new_bytes / (limits["first_touch_gbs"] * 1e9) + streamed / (limits["stream_gbs"] * 1e9)
    compute = exps / limits["exp_per_s"] + 2 * mean_iterations * entries / limits["fma_per_s"]
    return max(memory, compute)


def reference_solution(cost: torch.Tensor, grad: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 distances ``(P,)`` and the gradient of their mean at ``tol = 1e-9``."""
    leaf = cost.double().requires_grad_()
    distance = sinkhorn(leaf, epsilon=EPSILON, grad=grad, backend="torch", **REFERENCE).distance
    distance.mean().backward()
    return distance.detach(), leaf.grad


def _fastest(
    names: list[str], samples: dict[str, list[float]], errors: dict[str, float], own_error: float
) -> str:
    """The fastest of ``names`` (median) among those at least as accurate as a tenth of ours.

    A configuration whose error is not finite or more than 10 times reidkit's (e.g. POT's
    scaling domain where its kernel underflows) does not compete.
    """
    eligible = [
        name
        for name in names
        if math.isfinite(errors[name]) and errors[name] <= max(10 * own_error, 1e-6)
    ]
    return min(eligible, key=lambda name: median(samples[name]))


def bench_mmpl(
    m: int,
    n: int,
    num_classes: int,
    device: torch.device,
    args: argparse.Namespace,
    limits: dict[str, float] | None,
) -> list[BenchmarkRow]:
    x0, y0 = mmpl_features(64, num_classes, m, n, device)
    shape = f"B=64 L={num_classes} M={m} N={n}"
    flat_cost = cosine_cost(x0, y0).reshape(-1, m, n)
    references = {
        "envelope": reference_solution(flat_cost, "envelope"),
        "exact": reference_solution(flat_cost, "implicit"),
    }
    cost_bytes = flat_cost.numel() * 4
    dev = str(device)

    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    cost_leaf = flat_cost.clone().requires_grad_()

    def reidkit(grad: str) -> Callable[[], torch.Tensor]:
        return lambda: (
            sinkhorn(
                cost_leaf,
                epsilon=EPSILON,
                max_iter=MAX_ITER,
                tol=TOL,
                grad=grad,
                backend="torch",
                on_nonconvergence="ignore",
            ).distance
        )

    def pot(method: str, grad: str) -> Callable[[], torch.Tensor]:
        return lambda: pot_distance(cost_leaf, method, grad)

    candidates = {
        "reidkit-envelope": Candidate(reidkit("envelope"), cost_leaf, "envelope", "grad=envelope"),
        "reidkit-implicit": Candidate(reidkit("implicit"), cost_leaf, "exact", "grad=implicit"),
    }
    # POT's autodiff keeps a cost-sized tensor per operation and iteration for the backward
    # (10 to 110 times the cost): its log domain runs only where that fits in a 24 GB machine.
    fits = m * n <= 240
    for method in ("sinkhorn", "log_sinkhorn") if HAS_POT else ():
        for grad, pairing in (
            ("detach", "envelope"),
            ("envelope", "envelope"),
            ("autodiff", "exact"),
        ):
            if method == "log_sinkhorn" and grad != "detach" and not fits:
                continue
            candidates[f"pot-{method}-{grad}"] = Candidate(
                pot(method, grad), cost_leaf, pairing, f"solve_batch {method}, grad={grad}"
            )
    candidates["reidkit-pairwise"] = Candidate(
        lambda: pairwise_ot_distance(
            x, y, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL, backend="torch"
        ).reshape(-1),
        x,
        "",
        "from features, grad=implicit",
    )
    if device.type == "cuda":
        candidates["reidkit-triton"] = Candidate(
            lambda: pairwise_ot_distance(
                x, y, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL, backend="triton"
            ).reshape(-1),
            x,
            "",
            "fused kernel, grad=implicit",
        )
    if fits and HAS_GEOMLOSS and not args.skip_geomloss:
        for scaling in (0.5, 0.9):
            candidates[f"geomloss-s{scaling}"] = Candidate(
                lambda scaling=scaling: geomloss_distance(x, y, scaling).reshape(-1),
                x,
                "",
                f"epsilon-scaling {scaling}",
            )

    kernel = "mmpl-alignment"
    rows = []
    accuracy: dict[str, list[BenchmarkRow]] = {}
    for name, candidate in candidates.items():
        distances = candidate.forward_backward()
        errors = (distances.double() - references["envelope"][0]).abs()
        accuracy[name] = [
            BenchmarkRow(kernel, shape, name, dev, "max_abs_err", errors.max().item()),
            BenchmarkRow(kernel, shape, name, dev, "mean_abs_err", errors.mean().item()),
        ]
        if candidate.pairing:
            grad_ref = references[candidate.pairing][1]
            grad_error = (
                candidate.leaf.grad.double() - grad_ref
            ).abs().max() / grad_ref.abs().max()
            accuracy[name].append(
                BenchmarkRow(kernel, shape, name, dev, "grad_rel_err", grad_error.item())
            )
    samples = time_interleaved(
        {name: c.forward_backward for name, c in candidates.items()},
        device,
        rounds=args.rounds,
        warmup=0,
        clock=CLOCKS[args.clock],
    )
    mean_iterations = float(
        sinkhorn(flat_cost, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL, on_nonconvergence="ignore")
        .n_iter.double()
        .mean()
    )
    fastest_pot = {
        pairing: _fastest(
            [name for name, c in candidates.items() if c.pairing == pairing and "pot" in name],
            samples,
            {name: rows[0].value for name, rows in accuracy.items()},
            accuracy[f"reidkit-{'envelope' if pairing == 'envelope' else 'implicit'}"][0].value,
        )
        for pairing in ("envelope", "exact")
        if HAS_POT
    }
    spread = f"median of {args.rounds} interleaved runs ({args.clock} clock)"
    for name, candidate in candidates.items():
        seconds = median(samples[name])
        note = f"{candidate.note}; {spread}, {samples[name][0]:.3g}-{samples[name][-1]:.3g} s"
        measured = [BenchmarkRow(kernel, shape, name, dev, "fwd_bwd_s", seconds, note)]
        if name.startswith("reidkit") and candidate.pairing in fastest_pot:
            pot_name = fastest_pot[candidate.pairing]
            speedup = median(samples[pot_name]) / seconds
            measured.append(
                BenchmarkRow(kernel, shape, name, dev, "speedup_vs_pot", speedup, pot_name)
            )
            if limits is not None:
                bound = cpu_bound_seconds(
                    flat_cost.numel(), mean_iterations, candidate.pairing, limits
                )
                measured.append(
                    BenchmarkRow(
                        kernel,
                        shape,
                        name,
                        dev,
                        "roofline_fraction",
                        bound / seconds,
                        f"bound {bound:.3g} s",
                    )
                )
        measured += accuracy[name]
        if not args.skip_memory:
            peak = peak_memory_bytes(candidate.forward_backward, device)
            saved = saved_for_backward_bytes(candidate.forward)
            measured += [
                BenchmarkRow(kernel, shape, name, dev, "peak_mem_mb", peak / 2**20),
                BenchmarkRow(kernel, shape, name, dev, "saved_over_cost", saved / cost_bytes),
            ]
        print_table(measured)  # as it comes: a long run shows its progress
        rows += measured
    if device.type == "cuda":
        bound = bandwidth_bound_seconds(x0, y0, args.peak_gbs)
        note = f"bytes moved once at {args.peak_gbs:g} GB/s"
        rows.append(BenchmarkRow(kernel, shape, "bandwidth-bound", dev, "fwd_bwd_s", bound, note))
    return rows


def bench_aaformer(device: torch.device, rounds: int, clock: str) -> list[BenchmarkRow]:
    """Part assignment: 64*12 problems of 5 parts x 128 patches, 3 iterations, no gradient.

    reidkit is called as :func:`reidkit.parts.assign_patches` calls it; POT runs its
    log-domain and scaling-domain solvers with ``tol=0`` (no early stop). Accuracy: the plan
    against 3 iterations in float64.
    """
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64 * 12, 5, 128, generator=generator).to(device)
    shape = "768 x (5 x 128), 3 iters"
    dev = str(device)

    def reidkit_run(scores: torch.Tensor) -> torch.Tensor:
        return sinkhorn(
            -scores, epsilon=0.05, max_iter=3, tol=None, grad="envelope", backend="torch"
        ).plan

    def pot_run(method: str) -> Callable[[torch.Tensor], torch.Tensor]:
        from ot.batch import solve_batch

        return lambda scores: (
            solve_batch(-scores, reg=0.05, max_iter=3, tol=0.0, method=method, grad="detach").plan
        )

    def triton_run(scores: torch.Tensor) -> torch.Tensor:
        return sinkhorn(-scores, epsilon=0.05, max_iter=3, tol=None, backend="triton").plan

    runs = {"reidkit": reidkit_run}
    if HAS_POT:
        runs.update(
            {"pot-log_sinkhorn": pot_run("log_sinkhorn"), "pot-sinkhorn": pot_run("sinkhorn")}
        )
    if device.type == "cuda":
        runs["reidkit-triton"] = triton_run
    with torch.no_grad():
        reference = reidkit_run(scores.double())
        samples = time_interleaved(
            {name: lambda run=run: run(scores) for name, run in runs.items()},
            device,
            rounds=rounds,
            clock=CLOCKS[clock],
        )
        rows = []
        for name, run in runs.items():
            error = (run(scores).double() - reference).abs().max().item()
            seconds = median(samples[name])
            low, high = samples[name][0] * 1e3, samples[name][-1] * 1e3
            note = f"median of {rounds} interleaved runs ({clock} clock), {low:.3g}-{high:.3g} ms"
            rows += [
                BenchmarkRow("aaformer-assignment", shape, name, dev, "fwd_s", seconds, note),
                BenchmarkRow("aaformer-assignment", shape, name, dev, "max_abs_err", error),
            ]
    errors = {row.backend: row.value for row in rows if row.metric == "max_abs_err"}
    pot_names = [name for name in runs if name.startswith("pot")]
    if pot_names:
        fastest_pot = _fastest(pot_names, samples, errors, errors["reidkit"])
        speedup = median(samples[fastest_pot]) / median(samples["reidkit"])
        rows.append(
            BenchmarkRow(
                "aaformer-assignment", shape, "reidkit", dev, "speedup_vs_pot", speedup, fastest_pot
            )
        )
    return rows


def _parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"10x4,40x6"`` -> ``((10, 4), (40, 6))``."""
    try:
        shapes = tuple(tuple(int(size) for size in item.split("x")) for item in text.split(","))
    except ValueError:
        shapes = ()
    if not shapes or any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
        raise argparse.ArgumentTypeError(
            f"expected shapes as MxN,... (e.g. 10x4,40x6), got {text!r}"
        )
    return shapes  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=751, help="L, the number of classes")
    parser.add_argument("--quick", action="store_true", help="L = 64 instead of 751")
    parser.add_argument(
        "--shapes",
        type=_parse_shapes,
        default=MMPL_SHAPES,
        help="MMPL shapes as MxN,... (default: 10x4,40x6,80x8)",
    )
    parser.add_argument("--skip-aaformer", action="store_true", help="no AAformer rows")
    parser.add_argument("--skip-geomloss", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-memory rows")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of every candidate")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall clock, or the process's CPU time (with --threads 1: the time others take "
        "from this thread does not count)",
    )
    parser.add_argument("--name", default="sinkhorn", help="results file stem")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--peak-gbs", type=float, default=3350.0, help="GPU memory bandwidth (H100 SXM: 3350)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    num_classes = 64 if args.quick else args.classes
    if device.type == "cpu":
        torch.set_num_threads(args.threads)

    print(f"machine: {describe_machine()}")
    rows: list[BenchmarkRow] = []
    limits = None
    if device.type == "cpu":
        limits = cpu_rooflines(clock=CLOCKS[args.clock])
        rows += [
            BenchmarkRow("machine", "cpu", "measured", "cpu", metric, value)
            for metric, value in limits.items()
        ]
        # The machine may be shared: its load over the last minute, before and after.
        rows.append(BenchmarkRow("machine", "cpu", "start", "cpu", "load_1min", os.getloadavg()[0]))
        print_table(rows)
    for m, n in args.shapes:
        rows += bench_mmpl(m, n, num_classes, device, args, limits)
    if not args.skip_aaformer:
        rows += bench_aaformer(device, rounds=10 * args.rounds, clock=args.clock)
    if device.type == "cpu":
        rows.append(BenchmarkRow("machine", "cpu", "end", "cpu", "load_1min", os.getloadavg()[0]))
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
