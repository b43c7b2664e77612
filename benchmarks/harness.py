"""Shared benchmark harness: one result schema, timing and memory helpers, CSV/JSON and plots.

Every benchmark in this folder records rows of :class:`BenchmarkRow` (kernel, shape, backend,
device, metric, value), prints them as a table and writes ``results/<name>.csv``,
``results/<name>.json`` and a plot generated from the saved rows.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import gc
import json
import multiprocessing
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class BenchmarkRow:
    """One measurement: ``value`` of ``metric`` for ``kernel`` run by ``backend`` at ``shape``."""

    kernel: str
    shape: str
    backend: str
    device: str
    metric: str
    value: float
    note: str = ""


def describe_machine() -> str:
    """A one-line description of the machine: CPU or GPU model, core count, torch version."""
    if torch.cuda.is_available():
        hardware = torch.cuda.get_device_name()
    else:
        cpu = platform.processor() or platform.machine()
        hardware = f"{cpu} CPU, {torch.get_num_threads()} threads"
    return f"{hardware}; torch {torch.__version__}"


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(
    fn: Callable[[], Any], device: torch.device | str, *, repeats: int = 5, warmup: int = 1
) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    device: torch.device | str,
    *,
    rounds: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of every ``fn`` in ``rounds`` rounds, each round running all in turn.

    On a shared machine the load drifts during a benchmark: running the candidates in turn
    exposes them to the same drift, so the medians compare and their ratios stay meaningful.
    ``clock`` is the wall clock by default; ``time.process_time`` (the CPU time of this
    process) does not count the time others take from a single thread.

    Returns:
        The sorted samples of every candidate (quote the median, ``samples[len // 2]``).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            synchronize(device)
            samples[name].append(clock() - start)
    return {name: sorted(values) for name, values in samples.items()}


def median(samples: Sequence[float]) -> float:
    """The median of sorted ``samples`` (the upper one of an even count)."""
    return samples[len(samples) // 2]


def cpu_rooflines(
    *, rounds: int = 7, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """This machine's measured CPU limits at the current torch thread count (medians).

    ``clock`` as in :func:`time_interleaved`: measure the limits with the clock of the timings
    they bound (on a loaded machine the wall clock makes them look several times lower).

    * ``stream_gbs``: STREAM triad ``a = b + s c`` on 128 MiB arrays (far beyond the caches),
      counting 3 arrays moved: the bandwidth of streaming passes over memory that exists.
    * ``first_touch_gbs``: writing a freshly allocated 128 MiB tensor, which the allocator
      maps page by page (a new ``(B, M, N)`` output costs this, not the stream bandwidth).
    * ``exp_per_s``: ``torch.exp`` into an existing 4 MiB buffer (in cache).
    * ``fma_per_s``: a 2048 x 2048 float32 matrix product, multiply-adds per second.
    """
    count = 32 << 20  # 128 MiB of float32
    b, c, a = torch.rand(count), torch.rand(count), torch.empty(count)
    small = torch.rand(1 << 20)
    small_out = torch.empty_like(small)
    left, right = torch.rand(2048, 2048), torch.rand(2048, 2048)
    samples = time_interleaved(
        {
            "stream": lambda: torch.add(b, c, alpha=0.5, out=a),
            "first_touch": lambda: torch.empty(count).fill_(1.0),
            "exp": lambda: torch.exp(small, out=small_out),
            "gemm": lambda: torch.mm(left, right),
        },
        "cpu",
        rounds=rounds,
        clock=clock,
    )
    return {
        "stream_gbs": 3 * 4 * count / median(samples["stream"]) / 1e9,
        "first_touch_gbs": 4 * count / median(samples["first_touch"]) / 1e9,
        "exp_per_s": small.numel() / median(samples["exp"]),
        "fma_per_s": 2048**3 / median(samples["gemm"]),
    }


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak memory allocated while ``fn()`` runs, above what was allocated before it.

    On CUDA this is the caching allocator's peak; on the CPU, the peak growth of the resident
    memory of a forked child process that runs ``fn`` (Linux).
    """
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return _cpu_peak_bytes(fn)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak growth of the resident memory while ``fn()`` runs, in a forked child process.

    The child starts as a copy of this process, returns the allocator's free pages to the
    system (``malloc_trim``) so that every page ``fn`` allocates is counted, and resets its
    high-water mark (``/proc/self/clear_refs``, Linux); the high-water resident size after the
    call minus the resident size before it is what ``fn`` needed at its peak. The child runs
    one intra-op thread: OpenMP thread pools do not survive a fork.
    """
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()

    def measure() -> None:
        torch.set_num_threads(1)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        start = _status_bytes("VmRSS")
        fn()
        results.put(_status_bytes("VmHWM") - start)

    child = context.Process(target=measure)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the memory measurement failed (exit code {child.exitcode})")
    return results.get()


def _status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def saved_for_backward_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of the distinct tensor storages that autograd saves while ``forward()`` runs.

    This is the memory a backward pass keeps alive between forward and backward: for a solver
    differentiated through its iterations it grows with the iteration count.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def print_table(rows: Sequence[BenchmarkRow]) -> None:
    """Print ``rows`` as an aligned text table."""
    header = ("kernel", "shape", "backend", "device", "metric", "value", "note")
    cells = [header] + [
        (r.kernel, r.shape, r.backend, r.device, r.metric, _format(r.value), r.note) for r in rows
    ]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _format(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4g}"
    return f"{value:.3e}"


def save_results(
    name: str,
    rows: Sequence[BenchmarkRow],
    *,
    command: str,
    out_dir: Path = RESULTS_DIR,
    details: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``rows`` to ``out_dir/name.csv`` and ``out_dir/name.json`` (with machine, command
    and any ``details``, such as tool versions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{name}.csv"
    json_path = out_dir / f"{name}.json"
    fields = [field.name for field in dataclasses.fields(BenchmarkRow)]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)
    payload = {
        "benchmark": name,
        "machine": describe_machine(),
        "command": command,
        **(details or {}),
        "rows": [dataclasses.asdict(row) for row in rows],
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    return csv_path, json_path


def load_results(json_path: Path) -> list[BenchmarkRow]:
    """Read the rows written by :func:`save_results`."""
    payload = json.loads(Path(json_path).read_text())
    return [BenchmarkRow(**row) for row in payload["rows"]]


def plot_metric(
    rows: Sequence[BenchmarkRow],
    metric: str,
    path: Path,
    *,
    title: str,
    log_scale: bool = True,
) -> Path:
    """Grouped bar chart of ``metric``: one group per (kernel, shape), one bar per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selected = [row for row in rows if row.metric == metric]
    groups = list(dict.fromkeys(f"{row.kernel}\n{row.shape}" for row in selected))
    backends = list(dict.fromkeys(row.backend for row in selected))
    width = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) * max(1, len(backends)) / 2), 4.0))
    for b_index, backend in enumerate(backends):
        xs, heights = [], []
        for g_index, group in enumerate(groups):
            for row in selected:
                if row.backend == backend and f"{row.kernel}\n{row.shape}" == group:
                    xs.append(g_index + b_index * width)
                    heights.append(row.value)
        ax.bar(xs, heights, width=width, label=backend)
    ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(metric)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
