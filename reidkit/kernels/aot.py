"""Ahead-of-time compilation of every kernel variant for real GPUs, on a machine without one.

Triton compiles for a target without a device:
``triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", 90,
32))`` lowers a kernel to PTX and assembles a cubin with the ``ptxas`` shipped with Triton,
whose ``-v`` log reports the registers per thread, the bytes of spill stores and loads and the
static shared memory; Triton's metadata adds the shared memory it allocates dynamically. This
catches what the interpreter hides: register spills, shared memory beyond the chip, shapes
``tl.dot`` cannot lower, lowering failures.

:func:`kernel_variants` lists every variant the launchers can launch (the settings of
:mod:`reidkit.kernels.launch` times the dtypes and gradient modes of each family), and
:func:`compile_reports` compiles each for every architecture of :data:`ARCHITECTURES` and
returns a :class:`CompileReport` per pair, with the occupancy that follows from the resources.
``benchmarks/kernel_compile.py`` writes the table; ``tests/kernels/test_compile.py`` asserts it.

Triton's interpreter (``TRITON_INTERPRET=1``) replaces the compiler in a process that imported
Triton with it, so :func:`compile_reports` compiles in a child process started without it,
which spreads the work over worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from reidkit.kernels import launch

THREADS_PER_WARP = 32
REGISTER_UNIT = 256  # registers are allocated to a warp in units of 256
SHARED_UNIT = 128  # bytes


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The per-SM resources that bound a compiled kernel (CUDA programming guide, table of
    technical specifications per compute capability)."""

    name: str  # the ptxas target
    capability: int
    gpus: str
    shared_per_sm: int  # bytes
    max_shared_per_program: int  # bytes, with the opt-in for dynamic shared memory
    reserved_shared_per_program: int = 1024  # bytes the system keeps per program (sm_80+)
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    max_warps_per_sm: int = 64
    max_programs_per_sm: int = 32

    def occupancy(self, registers: int, shared: int, num_warps: int) -> tuple[int, float]:
        """Programs per SM and the fraction of the SM's warps they fill."""
        warp_registers = math.ceil(registers * THREADS_PER_WARP / REGISTER_UNIT) * REGISTER_UNIT
        by_registers = self.registers_per_sm // max(warp_registers, REGISTER_UNIT) // num_warps
        program_shared = shared + self.reserved_shared_per_program
        by_shared = self.shared_per_sm // (math.ceil(program_shared / SHARED_UNIT) * SHARED_UNIT)
        by_warps = self.max_warps_per_sm // num_warps
        programs = min(by_registers, by_shared, by_warps, self.max_programs_per_sm)
        return programs, programs * num_warps / self.max_warps_per_sm


ARCHITECTURES = (
    Architecture("sm_80", 80, "A100", shared_per_sm=167936, max_shared_per_program=166912),
    Architecture("sm_90a", 90, "H100, H200", shared_per_sm=233472, max_shared_per_program=232448),
)

# The shapes of the papers, annotated in the table where a setting serves them.
NAMED_SHAPES = {
    "MMPL 10x4": (10, 4),
    "MMPL 40x6": (40, 6),
    "MMPL 80x8": (80, 8),
    "AAformer 5x128": (5, 128),
}


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """Resources of one kernel variant compiled for one architecture.

    ``error`` holds the compiler's message when the compilation failed (the other numbers are
    then 0). ``shared_bytes`` is Triton's dynamic shared memory plus the static one of ptxas.
    """

    kernel: str
    setting: str
    arch: str
    num_warps: int
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    shared_bytes: int = 0
    programs_per_sm: int = 0
    occupancy: float = 0.0
    serves: str = ""
    seconds: float = 0.0
    error: str = ""

    def violations(self) -> list[str]:
        """What is wrong with this variant on its architecture (empty when nothing is)."""
        arch = next(a for a in ARCHITECTURES if a.name == self.arch)
        found = []
        if self.error:
            return [f"does not compile: {self.error}"]
        if self.spill_stores or self.spill_loads:
            found.append(f"spills {self.spill_stores} B stored, {self.spill_loads} B loaded")
        if self.registers > arch.max_registers_per_thread:
            found.append(f"{self.registers} registers > {arch.max_registers_per_thread}")
        if self.shared_bytes > arch.max_shared_per_program:
            found.append(f"{self.shared_bytes} B shared > {arch.max_shared_per_program}")
        if self.programs_per_sm < 1:
            found.append("no program fits on an SM")
        return found


def kernel_variants() -> list[launch.KernelVariant]:
    """Every variant of every kernel that the launchers of :mod:`reidkit.kernels` can launch."""
    from reidkit.kernels import cost_tile, pairwise_backward, pairwise_forward

    return [
        *cost_tile.compile_variants(),
        *pairwise_forward.compile_variants(),
        *pairwise_backward.compile_variants(),
    ]


def serves(variant: launch.KernelVariant) -> str:
    """The named shapes whose launch setting is the variant's."""
    names = []
    for name, (m, n) in NAMED_SHAPES.items():
        chosen: launch.CostTileLaunch | launch.PairwiseLaunch | None
        if isinstance(variant.launch, launch.CostTileLaunch):
            fits = launch.cost_tile_fits(m, n)
            chosen = launch.cost_tile_launch(m, n) if fits else None
        elif launch.pairwise_fits(m, n):
            chosen = launch.pairwise_launch(m, n, backward="backward" in variant.name)
        else:
            chosen = None
        if chosen == variant.launch:
            names.append(name)
    return ", ".join(names)


_REGISTERS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STATIC_SHARED = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> tuple[int, int, int, int]:
    """Registers per thread, bytes of spill stores and loads, and static shared memory from
    the ``ptxas -v`` log of one kernel."""
    registers = _REGISTERS.findall(log)
    if not registers:
        raise ValueError(f"no register count in the ptxas log: {log[:300]!r}")
    spills = [(int(stores), int(loads)) for stores, loads in _SPILLS.findall(log)]
    return (
        max(int(value) for value in registers),
        max((stores for stores, _ in spills), default=0),
        max((loads for _, loads in spills), default=0),
        sum(int(value) for value in _STATIC_SHARED.findall(log)),
    )


def _ptxas_path() -> Path:
    import triton

    try:
        return Path(triton.knobs.nvidia.ptxas.path)
    except AttributeError:  # Triton before its knobs module
        return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


def _ptxas_log(ptx: str, arch: Architecture) -> str:
    """``ptxas -v`` of ``ptx``, when Triton did not print its own (an older Triton)."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        command = [str(_ptxas_path()), "-v", f"--gpu-name={arch.name}", str(source)]
        command += ["-o", str(source.with_suffix(".cubin"))]
        return subprocess.run(command, capture_output=True, text=True, check=True).stderr


def check_signature(variant: launch.KernelVariant) -> None:
    """Raise unless the variant declares a type for every runtime parameter of its kernel and
    a value for every compile-time one, and its kernel exempts every integer parameter from
    value specialisation (works on interpreted kernels too)."""
    kernel = variant.kernel
    parameters = list(inspect.signature(kernel.fn).parameters.values())
    names = [parameter.name for parameter in parameters]
    constexprs = {p.name for p in parameters if "constexpr" in str(p.annotation)}
    if set(variant.signature) != set(names) - constexprs or set(variant.constexprs) != constexprs:
        raise ValueError(
            f"{variant.name}: the declared signature {sorted(variant.signature)} and constexprs "
            f"{sorted(variant.constexprs)} do not match the kernel's parameters {names}"
        )
    options = getattr(kernel, "kwargs", None) or {}  # an interpreted kernel's jit options
    exempt = getattr(kernel, "do_not_specialize", None) or options.get("do_not_specialize", ())
    exempt = {names[item] if isinstance(item, int) else item for item in exempt}
    integers = {name for name, kind in variant.signature.items() if kind.startswith("i")}
    if not integers <= exempt:
        raise ValueError(
            f"{variant.name}: integer parameters {sorted(integers - exempt)} are not in the "
            "kernel's do_not_specialize: the JIT would compile other variants than these"
        )


def compile_variant(variant: launch.KernelVariant, arch: Architecture) -> CompileReport:
    """Compile ``variant`` for ``arch`` in this process (Triton must not be interpreted here)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = variant.kernel
    check_signature(variant)
    signature = {name: variant.signature.get(name, "constexpr") for name in kernel.arg_names}
    # Every pointer is 16-byte aligned (reidkit.kernels.launch.aligned); integers are never
    # specialised (do_not_specialize): the attributes the JIT derives at run time.
    attrs = {
        (index,): [["tt.divisibility", launch.POINTER_ALIGNMENT]]
        for index, name in enumerate(kernel.arg_names)
        if signature[name].startswith("*")
    }
    report = CompileReport(variant.name, variant.setting, arch.name, variant.num_warps)
    report = dataclasses.replace(report, serves=serves(variant))
    start = time.perf_counter()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # TRITON_DUMP_PTXAS_LOG prints ptxas' log
            compiled = triton.compile(
                ASTSource(kernel, signature, variant.constexprs, attrs),
                target=GPUTarget("cuda", arch.capability, THREADS_PER_WARP),
                options={"num_warps": variant.num_warps, "num_stages": variant.num_stages},
            )
    except Exception as error:  # a lowering or ptxas failure is a result, reported as such
        message = " ".join(str(error).split())[:500]
        return dataclasses.replace(report, error=f"{type(error).__name__}: {message}")
    log = printed.getvalue()
    if not _REGISTERS.search(log):
        log = _ptxas_log(compiled.asm["ptx"], arch)
    registers, spill_stores, spill_loads, static_shared = parse_ptxas_log(log)
    shared = compiled.metadata.shared + static_shared
    programs, occupancy = arch.occupancy(registers, shared, variant.num_warps)
    return dataclasses.replace(
        report,
        registers=registers,
        spill_stores=spill_stores,
        spill_loads=spill_loads,
        shared_bytes=shared,
        programs_per_sm=programs,
        occupancy=occupancy,
        seconds=time.perf_counter() - start,
    )


def architecture(capability: int) -> Architecture:
    """The entry of :data:`ARCHITECTURES` for a compute capability such as 80 or 90."""
    for arch in ARCHITECTURES:
        if arch.capability == capability:
            return arch
    known = [arch.capability for arch in ARCHITECTURES]
    raise ValueError(f"capability must be one of {known}, got {capability!r}")


def _compile_job(job: tuple[int, int]) -> CompileReport:
    variant_index, capability = job
    return compile_variant(kernel_variants()[variant_index], architecture(capability))


def _compile_here(
    workers: int, capabilities: Sequence[int], variants: Sequence[int]
) -> list[CompileReport]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("the ahead-of-time compilation needs Triton without its interpreter")
    jobs = [(variant, capability) for capability in capabilities for variant in variants]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_compile_job, jobs, chunksize=1))


def compile_reports(
    workers: int | None = None,
    capabilities: Sequence[int] | None = None,
    variants: Sequence[int] | None = None,
) -> list[CompileReport]:
    """Compile every variant of :func:`kernel_variants` for every architecture.

    Runs in a child process without Triton's interpreter (whatever this process imported),
    with ``workers`` processes (default: one per CPU core).

    Args:
        workers: compiling processes.
        capabilities: compute capabilities to compile for (default: all of
            :data:`ARCHITECTURES`).
        variants: indices into :func:`kernel_variants` (default: all).

    Returns:
        One :class:`CompileReport` per (architecture, variant), in that order.
    """
    workers = workers or os.cpu_count() or 1
    capabilities = [architecture(c).capability for c in capabilities or []] or [
        arch.capability for arch in ARCHITECTURES
    ]
    variants = list(range(len(kernel_variants()))) if variants is None else list(variants)
    environment = dict(os.environ)
    environment.pop("TRITON_INTERPRET", None)
    environment["TRITON_ALWAYS_COMPILE"] = "1"  # ptxas runs, and prints its log, every time
    environment["TRITON_DUMP_PTXAS_LOG"] = "1"
    # The child imports this very reidkit, wherever it was imported from.
    package_root = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, [environment.get("PYTHONPATH")])]
    )
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "reports.json"
        command = [sys.executable, "-m", "reidkit.kernels.aot", "--workers", str(workers)]
        command += ["--capabilities", ",".join(map(str, capabilities))]
        command += ["--variants", ",".join(map(str, variants))]
        subprocess.run([*command, "--output", str(output)], env=environment, check=True)
        return [CompileReport(**row) for row in json.loads(output.read_text())]


def format_table(reports: Sequence[CompileReport]) -> str:
    """The reports as an aligned text table, followed by a summary per kernel and arch."""
    header: tuple[str, ...] = (
        "kernel",
        "setting",
        "arch",
        "regs",
        "spill st/ld",
        "shared B",
        "prog/SM",
        "occ.",
    )
    header += ("serves", "error")
    rows: list[tuple[str, ...]] = [header]
    for r in reports:
        spills = f"{r.spill_stores}/{r.spill_loads}"
        rows.append(
            (
                *(r.kernel, r.setting, r.arch, str(r.registers), spills, str(r.shared_bytes)),
                *(str(r.programs_per_sm), f"{r.occupancy:.0%}", r.serves, r.error[:60]),
            )
        )
    lines = _aligned(rows)
    lines += ["", *_aligned(summary_rows(reports))]
    return "\n".join(lines)


def summary_rows(reports: Sequence[CompileReport]) -> list[tuple[str, ...]]:
    """Per kernel and arch: variants, failures, max registers, max spills, min occupancy."""
    rows: list[tuple[str, ...]] = [
        ("kernel", "arch", "variants", "failed", "max regs", "max spill B", "min occ.")
    ]
    groups: dict[tuple[str, str], list[CompileReport]] = {}
    for report in reports:
        groups.setdefault((report.kernel, report.arch), []).append(report)
    for (kernel, arch), group in groups.items():
        built = [r for r in group if not r.error]
        registers = max((r.registers for r in built), default=0)
        spills = max((max(r.spill_stores, r.spill_loads) for r in built), default=0)
        occupancy = min((r.occupancy for r in built), default=0.0)
        failed = len(group) - len(built)
        counts = (str(len(group)), str(failed), str(registers), str(spills))
        rows.append((kernel, arch, *counts, f"{occupancy:.0%}"))
    return rows


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description="compile every kernel variant (child process)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--capabilities", required=True, help="e.g. 80,90")
    parser.add_argument("--variants", required=True, help="indices into kernel_variants()")
    parser.add_argument("--output", type=Path, required=True, help="JSON file of the reports")
    args = parser.parse_args()
    capabilities = [int(value) for value in args.capabilities.split(",")]
    variants = [int(value) for value in args.variants.split(",") if value]
    reports = _compile_here(args.workers, capabilities, variants)
    args.output.write_text(json.dumps([dataclasses.asdict(r) for r in reports]))


if __name__ == "__main__":
    main()
