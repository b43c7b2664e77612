"""Verify and time everything GPU-specific in one unattended command (under 8 minutes).

On a machine with an NVIDIA GPU (H100/H200 class) that has its own PyTorch and Triton, from the
root of a reidkit checkout, with nothing installed and no network::

    python benchmarks/gpu_check.py --out gpu_check_results

reidkit is not installed: every step runs from this tree (``PYTHONPATH``). Each step runs in
its own process with a time limit; a step that fails, hangs or lacks a package is recorded as
such and the next one runs. Everything goes to the ``--out`` folder: ``summary.md`` and
``summary.json`` (status, time and reason of every step), a log and the results of each step.

Steps:

1. ``environment``: versions, the GPU, its measured copy bandwidth, which optional packages
   (pytest, hypothesis, open_clip, POT, geomloss) import.
2. ``compile``: every kernel variant the launchers can launch, compiled ahead of time for this
   GPU's architecture with this machine's Triton (:mod:`reidkit.kernels.aot`), on all cores;
   registers, spills, shared memory, occupancy. It also fills Triton's cache for the others.
3. ``correctness``: the fused kernels against the torch path in float32, float16 and bfloat16
   (distances, potentials and feature gradients of both gradient modes; the cost-tile kernel),
   at the MMPL and AAformer shapes and awkward ones.
4. ``kernel_tests``: ``pytest tests/kernels`` on CUDA (needs pytest and hypothesis).
5. ``kernel_timing``: MMPL alignment at ``B = 64, L = 751`` per level: the fused kernels
   against the torch path (eager) and ``torch.compile`` of the torch iteration, forward +
   backward, with the bounds of the traffic and FLOP model of ``docs/components/kernels.md``.
6. ``mmpl_stage1``: a full MMPL stage-1 step at the paper's size with
   ``benchmarks/bench_mmpl_step.py --size paper`` (needs open_clip: it builds a ViT-B/16 CLIP
   with random weights); without open_clip, the OT part of that step (``K = 3`` levels of
   :class:`reidkit.PatchToTokenAlignment` on random features) on both backends.
7. ``bench_sinkhorn``: ``benchmarks/bench_sinkhorn.py`` at ``L = 751`` (its CUDA rows: the fused
   kernels, the torch backends and the bandwidth bound; POT and geomloss where installed).

``--device cpu --dry-run`` runs every step at tiny sizes on the CPU (the kernels in Triton's
interpreter, within :data:`DRY_RUN_SLACK` times the time limits), which is how this script is
tested without a GPU; ``--pretend-missing`` skips steps as if packages were missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# A dry run's time limits (budget and steps) over a GPU run's: its kernels run in Triton's
# interpreter on the CPU.
DRY_RUN_SLACK = 4.0
OPTIONAL_PACKAGES = ("pytest", "hypothesis", "open_clip", "ot", "geomloss", "matplotlib")
# Nominal HBM bandwidth (GB/s) by device name, for the bandwidth bound.
NOMINAL_BANDWIDTH = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),
)
# Dense FP32 (non-tensor) FLOP/s by device name, for the compute bound of the model.
NOMINAL_FP32_FLOPS = (("H200", 67e12), ("H100 PCIe", 51e12), ("H100", 67e12), ("A100", 19.5e12))


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: its function (run in a child process), time limit and needed packages."""

    name: str
    run: Callable[[argparse.Namespace, Path], dict[str, Any]]
    seconds: float
    needs: tuple[str, ...] = ()


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # "passed", "failed", "timeout", "skipped"
    seconds: float
    reason: str = ""
    results: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the steps (they run in child processes).


def _device(args: argparse.Namespace):
    import torch

    return torch.device(args.device)


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn: Callable[[], Any], device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def _lookup(table: tuple[tuple[str, float], ...], name: str) -> float | None:
    for key, value in table:
        if key in name:
            return value
    return None


def _unit_features(seed: int, *shape: int, device, dtype=None):
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(*shape, generator=generator), dim=-1)
    return features.to(device=device, dtype=dtype or torch.float32)


def _available(args: argparse.Namespace, package: str) -> bool:
    if package in args.pretend_missing:
        return False
    return importlib.util.find_spec(package) is not None


# Runs a module (-m) or a script in a Python where the packages of argv[1] cannot be imported.
# Its sys.path starts as that of 'python -m module' (the working folder) or 'python script'
# (the script's folder).
_BLOCKING_LAUNCHER = (
    "import os, runpy, sys\n"
    "for name in filter(None, sys.argv[1].split(',')):\n"
    "    sys.modules[name] = None  # 'import name' now raises ImportError\n"
    "kind, target, sys.argv = sys.argv[2], sys.argv[3], sys.argv[3:]\n"
    "if kind == '-m':\n"
    "    sys.path.insert(0, os.getcwd())\n"
    "    runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    sys.path.insert(0, os.path.dirname(os.path.abspath(target)))\n"
    "    runpy.run_path(target, run_name='__main__')\n"
)


def _python(args: argparse.Namespace, target: str, *arguments: str, module: bool = False) -> list:
    """The command that runs ``target`` (a script, or a module with ``module=True``) with the
    packages of ``--pretend-missing`` unimportable, as on a bare machine."""
    kind = "-m" if module else "script"
    blocked = ",".join(args.pretend_missing)
    return [sys.executable, "-c", _BLOCKING_LAUNCHER, blocked, kind, target, *arguments]


# ---------------------------------------------------------------------------------------------
# Steps.


def step_environment(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "packages": {name: _available(args, name) for name in OPTIONAL_PACKAGES},
    }
    try:
        import triton

        results["triton"] = triton.__version__
    except ImportError as error:
        results["triton"] = f"missing: {error}"
    device = _device(args)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        results["gpu"] = properties.name
        results["capability"] = list(torch.cuda.get_device_capability(device))
        results["sm_count"] = properties.multi_processor_count
        results["memory_gib"] = properties.total_memory / 2**30
        results["nominal_bandwidth_gbs"] = _lookup(NOMINAL_BANDWIDTH, properties.name)
    size = (256 if args.dry_run else 2048) * 2**20  # bytes copied each way
    source = torch.empty(size // 4, device=device)
    target = torch.empty_like(source)
    seconds = _median_seconds(lambda: target.copy_(source), device, repeats=5)
    results["copy_bandwidth_gbs"] = 2 * size / seconds / 1e9  # read + write
    return results


def step_compile(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from reidkit.kernels import aot

    variants = None
    if _device(args).type == "cuda":
        major, minor = torch.cuda.get_device_capability()
        capabilities = [major * 10 + minor]
    else:  # a dry run: the variants of MMPL's largest level, for one architecture
        capabilities = [90]
        variants = [
            index
            for index, variant in enumerate(aot.kernel_variants())
            if variant.dtype == "fp32" and "MMPL 80x8" in aot.serves(variant)
        ]
    reports = aot.compile_reports(capabilities=capabilities, variants=variants)
    (out / "compile_table.txt").write_text(aot.format_table(reports) + "\n")
    (out / "compile.json").write_text(json.dumps([dataclasses.asdict(r) for r in reports]))
    bad = {f"{r.kernel} {r.setting} {r.arch}": r.violations() for r in reports if r.violations()}
    results = {"variants": len(reports), "violations": bad, "summary": aot.summary_rows(reports)}
    if bad:
        raise StepFailure(f"{len(bad)} of {len(reports)} variants fail the limits", results)
    return results


class StepFailure(Exception):
    """A step ran to the end and found a problem; ``results`` are kept."""

    def __init__(self, message: str, results: dict[str, Any]) -> None:
        super().__init__(message)
        self.results = results


def step_correctness(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from reidkit import pairwise_ot_distance, sinkhorn

    device = _device(args)
    dtypes = [torch.float32, torch.float16]
    if device.type == "cuda":  # Triton's interpreter computes bf16 wrongly
        dtypes.append(torch.bfloat16)
    d = 64 if args.dry_run else 512
    feature_shapes = [(2, 10, 3, 4), (2, 40, 3, 6), (2, 80, 3, 8), (1, 1, 2, 1), (2, 37, 2, 17)]
    if not args.dry_run:
        feature_shapes += [(2, 128, 2, 32), (1, 256, 2, 16)]
    checks, failures = [], []

    def compare(name: str, value, expected, atol: float, rtol: float) -> None:
        error = float((value.double() - expected.double()).abs().max())
        bound = atol + rtol * float(expected.double().abs().max())
        ok = bool(torch.isfinite(value).all()) and error <= bound
        checks.append({"check": name, "max_abs_err": error, "bound": bound, "ok": ok})
        if not ok:
            failures.append(name)

    for batch, m, classes, n in feature_shapes:
        for dtype in dtypes:
            for grad in ("implicit", "envelope"):
                x = _unit_features(1, batch, m, d, device=device, dtype=dtype)
                y = _unit_features(2, classes, n, d, device=device, dtype=dtype)
                options = {"epsilon": 0.1, "max_iter": 30, "tol": None, "grad": grad}
                outputs = {}
                for backend, (xb, yb) in (("triton", (x, y)), ("torch", (x.float(), y.float()))):
                    xb, yb = xb.clone().requires_grad_(), yb.clone().requires_grad_()
                    distance = pairwise_ot_distance(xb, yb, backend=backend, **options)
                    weights = torch.linspace(-1, 1, distance.numel(), device=device)
                    (distance * weights.reshape(distance.shape)).sum().backward()
                    outputs[backend] = (distance.detach(), xb.grad, yb.grad)
                atol = 1e-5 if dtype == torch.float32 else 4e-3
                label = f"pairwise {m}x{n} d{d} {str(dtype)[6:]} {grad}"
                for part, fused, reference in zip(
                    ("distance", "grad_x", "grad_y"), *outputs.values()
                ):
                    compare(f"{label} {part}", fused.float(), reference, atol, 1e-3)
    for m, n in [(10, 4), (80, 8), (5, 128), (1, 1), (64, 64), (1024, 4)]:
        generator = torch.Generator().manual_seed(m * n)
        cost = (2 * torch.rand(6, m, n, generator=generator)).to(device)
        kwargs = {"epsilon": 0.1, "max_iter": 30, "tol": None, "grad": "envelope"}
        fused = sinkhorn(cost, backend="triton", **kwargs)
        reference = sinkhorn(cost, backend="torch", **kwargs)
        compare(f"cost tile {m}x{n} plan", fused.plan, reference.plan, 1e-6, 1e-4)
        compare(f"cost tile {m}x{n} distance", fused.distance, reference.distance, 1e-5, 1e-4)
    (out / "correctness_checks.json").write_text(json.dumps(checks, indent=1))
    results = {"checks": len(checks), "failures": failures}
    if failures:
        raise StepFailure(f"{len(failures)} of {len(checks)} comparisons failed", results)
    return results


def step_kernel_tests(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    environment = dict(os.environ, HYPOTHESIS_PROFILE="ci")
    targets = ["tests/kernels"]
    if args.dry_run:  # quick ones, one of which imports the OT test helpers
        nan_test = "test_cost_kernel.py::test_a_nan_residual_never_counts_as_converged"
        targets = ["tests/kernels/test_support.py", f"tests/kernels/{nan_test}"]
    command = _python(args, "pytest", "-q", "-p", "no:cacheprovider", *targets, module=True)
    command += ["--junitxml", str(out / "kernel_tests.xml")]
    completed = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    (out / "kernel_tests.log").write_text(completed.stdout + completed.stderr)
    last = (completed.stdout.strip().splitlines() or ["no output"])[-1]
    results = {"returncode": completed.returncode, "summary": last}
    if completed.returncode != 0:
        raise StepFailure(f"pytest: {last}", results)
    return results


def _torch_iteration(neg_cost, f, g, log_a: float, log_b: float):
    """One log-domain Sinkhorn iteration on ``(P, M, N)`` -C / epsilon (potentials / epsilon)."""
    import torch

    f = log_a - torch.logsumexp(neg_cost + g[:, None, :], dim=2)
    g = log_b - torch.logsumexp(neg_cost + f[:, :, None], dim=1)
    return f, g


def _model_bounds(batch: int, classes: int, m: int, n: int, d: int, gpu: str) -> dict[str, float]:
    """Lower bounds of the traffic and FLOP model (docs/components/kernels.md), in seconds."""
    from reidkit.kernels import launch

    setting = launch.pairwise_launch(m, n)
    pairs = batch * classes
    bandwidth = (_lookup(NOMINAL_BANDWIDTH, gpu) or 3350.0) * 1e9
    flops = _lookup(NOMINAL_FP32_FLOPS, gpu) or 67e12
    cost_build = 2 * pairs * setting.block_m * setting.block_n * d  # padded, per pass
    gemms = 2 * 2 * batch * m * classes * n * d
    gradient_bytes = 3 * 4 * batch * m * classes * n  # written once, read by both GEMMs
    return {
        "forward_cost_build_s": cost_build / flops,
        "backward_cost_build_s": cost_build / flops,
        "backward_gemms_fp32_s": gemms / flops,
        "backward_gradient_traffic_s": gradient_bytes / bandwidth,
    }


LEVELS = ((10, 4), (40, 6), (80, 8))  # MMPL's (selected patches M, tokens N) at K = 3 levels
EPSILON, ITERATIONS = 0.1, 50


def _time_level(
    args: argparse.Namespace, m: int, n: int, sizes: tuple[int, int, int], step: Any
) -> list[dict[str, Any]]:
    """Forward + backward times of one MMPL level (see :func:`step_kernel_timing`)."""
    import torch

    from reidkit import pairwise_ot_distance
    from reidkit.kernels.pairwise_backward import pairwise_feature_grads
    from reidkit.kernels.pairwise_forward import pairwise_potentials

    device = _device(args)
    batch, classes, d = sizes
    repeats = 1 if args.dry_run else 3
    iterations = 3 if args.dry_run else ITERATIONS  # the interpreter is slow
    x0 = _unit_features(3, batch, m, d, device=device)
    y0 = _unit_features(4, classes, n, d, device=device)
    shape = f"B={batch} L={classes} M={m} N={n} D={d}"

    def pairwise(backend: str, grad: str, tol: float | None) -> Callable[[], None]:
        def run() -> None:
            x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
            distance = pairwise_ot_distance(
                x, y, epsilon=EPSILON, max_iter=iterations, tol=tol, grad=grad, backend=backend,
                on_nonconvergence="ignore",
            )  # fmt: skip
            distance.sum().backward()

        return run

    def compiled_envelope() -> None:
        """torch.compile of the iteration, fixed iterations, envelope gradient."""
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        cost = 1 - torch.einsum("bmd,lnd->blmn", x, y).reshape(-1, m, n)
        with torch.no_grad():
            neg_cost = cost / -EPSILON
            f = torch.zeros(cost.shape[:2], device=device)
            g = torch.zeros(cost.shape[0], n, device=device)
            for _ in range(iterations):
                f, g = step(neg_cost, f, g, -math.log(m), -math.log(n))
            plan = torch.exp(neg_cost + f[:, :, None] + g[:, None, :])
        (plan * cost).sum().backward()

    candidates = {
        f"triton implicit, {iterations} iterations": pairwise("triton", "implicit", None),
        f"triton envelope, {iterations} iterations": pairwise("triton", "envelope", None),
        f"torch implicit, {iterations} iterations": pairwise("torch", "implicit", None),
        f"torch envelope, {iterations} iterations": pairwise("torch", "envelope", None),
        "triton implicit, tol 1e-3": pairwise("triton", "implicit", 1e-3),
        "torch implicit, tol 1e-3": pairwise("torch", "implicit", 1e-3),
    }
    if step is not None:
        candidates[f"torch.compile envelope, {iterations} iterations"] = compiled_envelope
    rows = []
    for name, run in candidates.items():
        try:
            seconds = _median_seconds(run, device, repeats)
            rows.append({"shape": shape, "candidate": name, "fwd_bwd_s": seconds})
        except Exception as error:  # e.g. torch.compile unavailable: recorded, not fatal
            rows.append({"shape": shape, "candidate": name, "error": repr(error)[:300]})
    # The two halves of the fused path alone.
    with torch.no_grad():

        def forward() -> None:
            pairwise_potentials(x0, y0, None, EPSILON, iterations, None, "marginal")

        seconds = _median_seconds(forward, device, repeats)
        rows.append({"shape": shape, "candidate": "triton forward only", "fwd_s": seconds})
        _, f, g, _ = pairwise_potentials(x0, y0, None, EPSILON, iterations, None, "marginal")
        upstream = torch.ones(batch, classes, device=device)
        for grad in ("implicit", "envelope"):

            def backward(grad: str = grad) -> None:
                pairwise_feature_grads(x0, y0, f, g, upstream, EPSILON, grad)

            seconds = _median_seconds(backward, device, repeats)
            name = f"triton backward only {grad}"
            rows.append({"shape": shape, "candidate": name, "bwd_s": seconds})
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    bounds = _model_bounds(batch, classes, m, n, d, gpu)
    rows.append({"shape": shape, "candidate": "model bounds", **bounds})
    return rows


def step_kernel_timing(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    sizes = (4, 8, 64) if args.dry_run else (64, 751, 512)
    levels = LEVELS[:1] if args.dry_run else LEVELS  # the interpreter is slow
    step = torch.compile(_torch_iteration) if args.compile else None
    rows = [row for m, n in levels for row in _time_level(args, m, n, sizes, step)]
    (out / "kernel_timing.json").write_text(json.dumps(rows, indent=1))
    return {"rows": len(rows), "errors": [row for row in rows if "error" in row]}


def step_mmpl_stage1(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    full_step_failed = False
    if _available(args, "open_clip"):
        size = ["tiny", "--repeats", "1"] if args.dry_run else ["paper", "--repeats", "3"]
        command = _python(args, str(BENCHMARKS / "bench_mmpl_step.py"), "--size", *size)
        command += ["--out-dir", str(out)]
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        (out / "mmpl_stage1_full.log").write_text(completed.stdout + completed.stderr)
        full_step_failed = completed.returncode != 0
        results["full_step"] = (
            f"failed (exit {completed.returncode}): see mmpl_stage1_full.log"
            if full_step_failed
            else f"bench_mmpl_step.py --size {size[0]}: see mmpl_step_*.csv"
        )
    else:
        results["full_step"] = "skipped: open_clip is missing (it builds the CLIP model)"
    batch, classes, embed = (4, 8, 64) if args.dry_run else (64, 751, 512)
    results["ot_part"] = {
        "what": f"L_otce over K=3 levels, B={batch}, L={classes}, E={embed}, paper settings",
        "fwd_bwd_s": {
            backend: _stage1_ot_seconds(args, backend, batch, classes, embed)
            for backend in ("triton", "torch")
        },
    }
    (out / "mmpl_stage1.json").write_text(json.dumps(results, indent=1))
    if full_step_failed:
        raise StepFailure("bench_mmpl_step.py failed", results)
    return results


def _stage1_ot_seconds(
    args: argparse.Namespace, backend: str, batch: int, classes: int, embed: int
) -> float:
    """Forward + backward of MMPL's L_otce over its K = 3 levels (eq. 18-19), paper settings."""
    import torch

    from reidkit import PatchToTokenAlignment, SinkhornOptions

    device = _device(args)
    options = SinkhornOptions(
        epsilon=0.1, max_iter=50, tol=0.05, stop_rule="update", backend=backend
    )
    alignment = PatchToTokenAlignment(temperature=0.07, options=options)
    labels = torch.arange(batch, device=device) % classes
    patches = [_unit_features(5 + k, batch, m, embed, device=device) for k, (m, _) in
               enumerate(LEVELS)]  # fmt: skip
    tokens = [_unit_features(9 + k, classes, n, embed, device=device) for k, (_, n) in
              enumerate(LEVELS)]  # fmt: skip

    def ot_part() -> None:
        loss = sum(
            alignment(x.clone().requires_grad_(), y.clone().requires_grad_(), labels).loss
            for x, y in zip(patches, tokens)
        )
        loss.backward()

    return _median_seconds(ot_part, device, repeats=1 if args.dry_run else 3)


def step_bench_sinkhorn(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    command = _python(args, str(BENCHMARKS / "bench_sinkhorn.py"), "--skip-geomloss")
    command += ["--device", args.device, "--out-dir", str(out)]
    command += (
        ["--classes", "4", "--rounds", "1", "--skip-memory"]
        if args.dry_run
        else ["--classes", "751"]
    )
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        command += ["--peak-gbs", str(_lookup(NOMINAL_BANDWIDTH, name) or 3350.0)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    (out / "bench_sinkhorn.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise StepFailure("bench_sinkhorn.py failed (see bench_sinkhorn.log)", {})
    return {"results": "sinkhorn.csv, sinkhorn.json, sinkhorn_time.png"}


STEPS = (
    Step("environment", step_environment, 60),
    Step("compile", step_compile, 150),
    Step("correctness", step_correctness, 180),
    Step("kernel_tests", step_kernel_tests, 150, needs=("pytest", "hypothesis")),
    Step("kernel_timing", step_kernel_timing, 180),
    Step("mmpl_stage1", step_mmpl_stage1, 90),
    Step("bench_sinkhorn", step_bench_sinkhorn, 150, needs=("matplotlib",)),
)


# ---------------------------------------------------------------------------------------------
# Orchestration.


def _child_environment(args: argparse.Namespace) -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )
    if args.device == "cpu":
        environment["TRITON_INTERPRET"] = "1"  # the kernels run in Triton's interpreter
    return environment


def _run_step(step: Step, args: argparse.Namespace, out: Path, limit: float) -> Outcome:
    missing = [package for package in step.needs if not _available(args, package)]
    if missing:
        return Outcome(step.name, "skipped", 0.0, f"missing package(s): {', '.join(missing)}")
    if limit < 5:
        return Outcome(step.name, "skipped", 0.0, "the time budget is spent")
    folder = out / step.name
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--step", step.name]
    command += ["--out", str(folder), "--device", args.device]
    command += ["--pretend-missing", ",".join(args.pretend_missing)]
    command += ["--dry-run"] * args.dry_run + ["--no-compile"] * (not args.compile)
    start = time.perf_counter()
    with (folder / "step.log").open("w") as log:
        # Its own session: on a timeout the step and every process it started are ended.
        process = subprocess.Popen(
            command, cwd=ROOT, env=_child_environment(args), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return Outcome(step.name, "timeout", time.perf_counter() - start, f"over {limit:.0f} s")
    seconds = time.perf_counter() - start
    result_file = folder / "result.json"
    if not result_file.exists():
        tail = (folder / "step.log").read_text()[-400:]
        return Outcome(step.name, "failed", seconds, f"exit {returncode}: {tail}")
    payload = json.loads(result_file.read_text())
    return Outcome(step.name, payload["status"], seconds, payload["reason"], payload["results"])


def _child(args: argparse.Namespace) -> None:
    """Run one step in this process and write its ``result.json``."""
    for name in args.pretend_missing:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it raises ImportError
    out = Path(args.out)
    step = next(step for step in STEPS if step.name == args.step)
    status, reason, results = "passed", "", {}
    try:
        results = step.run(args, out)
    except StepFailure as failure:
        status, reason, results = "failed", str(failure), failure.results
    except Exception as error:
        status, reason = "failed", f"{type(error).__name__}: {error}"
        traceback.print_exc()
    payload = {"status": status, "reason": reason[:2000], "results": results}
    (out / "result.json").write_text(json.dumps(payload, indent=1, default=str))


def _write_summary(out: Path, args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    payload = {
        "command": " ".join(sys.argv),
        "device": args.device,
        "dry_run": args.dry_run,
        "steps": [dataclasses.asdict(outcome) for outcome in outcomes],
    }
    (out / "summary.json").write_text(json.dumps(payload, indent=1, default=str))
    lines = ["# GPU check", "", f"`{payload['command']}`", ""]
    lines += ["| step | status | seconds | reason |", "|---|---|---|---|"]
    for outcome in outcomes:
        reason = outcome.reason.replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {outcome.name} | {outcome.status} | {outcome.seconds:.1f} | {reason} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(BENCHMARKS / "results" / "gpu_check"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes: test the script")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps")
    parser.add_argument("--steps", default=",".join(step.name for step in STEPS))
    parser.add_argument("--pretend-missing", default="", help="packages to treat as missing")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out the torch.compile baseline")  # fmt: skip
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step here
    args = parser.parse_args()
    args.pretend_missing = [name for name in args.pretend_missing.split(",") if name]
    if args.step:
        _child(args)
        return
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --device cpu --dry-run to test the script")
    wanted = set(args.steps.split(","))
    slack = DRY_RUN_SLACK if args.dry_run else 1.0
    deadline = time.perf_counter() + slack * args.budget
    outcomes: list[Outcome] = []
    for step in STEPS:
        if step.name not in wanted:
            continue
        limit = min(slack * step.seconds, deadline - time.perf_counter())
        outcome = _run_step(step, args, out, limit)
        outcomes.append(outcome)
        print(f"{outcome.name:15s} {outcome.status:8s} {outcome.seconds:6.1f} s  {outcome.reason}")
        _write_summary(out, args, outcomes)  # after every step: a later crash keeps the rest
    print(f"wrote {out / 'summary.md'}")
    failed = [outcome.name for outcome in outcomes if outcome.status in ("failed", "timeout")]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
