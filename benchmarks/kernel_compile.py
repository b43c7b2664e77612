"""Every Triton kernel variant compiled ahead of time for sm_80 and sm_90a, without a GPU.

Compiles each variant the launchers of :mod:`reidkit.kernels` can launch (the settings of
:mod:`reidkit.kernels.launch`, times dtypes and gradient modes) for A100 (sm_80) and
H100/H200 (sm_90a) with Triton and its ``ptxas``, and records per variant the registers per
thread, the bytes of spill stores and loads, the shared memory and the occupancy that follows
(programs per SM and the share of the SM's warps they fill). ``tests/kernels/test_compile.py``
asserts the same reports (:func:`reidkit.kernels.aot.compile_reports`).

Writes ``results/kernel_compile.csv`` and ``.json`` in the shared result schema (one row per
variant, architecture and metric) and prints the table with a summary per kernel.

Run: ``python benchmarks/kernel_compile.py`` (a few minutes on two cores; ``--workers N``).
"""

from __future__ import annotations

import argparse
import sys

import triton
from harness import BenchmarkRow, save_results

from reidkit.kernels.aot import CompileReport, compile_reports, format_table

METRICS = ("registers", "spill_stores", "spill_loads", "shared_bytes", "programs_per_sm")


def result_rows(reports: list[CompileReport]) -> list[BenchmarkRow]:
    """The reports in the shared schema: backend ``triton-aot``, the architecture as device."""
    rows = []
    for report in reports:
        note = "; ".join(filter(None, [f"w{report.num_warps}", report.serves, report.error]))
        values = {metric: float(getattr(report, metric)) for metric in METRICS}
        values["occupancy"] = report.occupancy
        values["compiled"] = 0.0 if report.error else 1.0
        for metric, value in values.items():
            rows.append(
                BenchmarkRow(
                    report.kernel, report.setting, "triton-aot", report.arch, metric, value, note
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--name", default="kernel_compile", help="results file stem")
    args = parser.parse_args()
    reports = compile_reports(args.workers)
    print(format_table(reports))
    command = "python benchmarks/kernel_compile.py " + " ".join(sys.argv[1:])
    details = {"triton": triton.__version__, "targets": "sm_80 (A100), sm_90a (H100, H200)"}
    csv_path, json_path = save_results(
        args.name, result_rows(reports), command=command.strip(), details=details
    )
    print(f"wrote {csv_path}, {json_path}")
    bad = [r for r in reports if r.violations()]
    if bad:
        for report in bad:
            print(f"{report.kernel} {report.setting} {report.arch}: {report.violations()}")
        raise SystemExit(f"{len(bad)} of {len(reports)} variants fail the limits")


if __name__ == "__main__":
    main()
