"""Compare runs: one table of rank metrics from their ``report.json`` files.

:func:`compare_reports` reads the reports of several runs (a run folder or the report itself)
and returns a :class:`ComparisonTable` with a row for every rank result in their ``results``
(a mapping with ``mAP`` and ``R1``, as :meth:`reidkit.engine.TrainingRun.finish` stores
them): ``str(table)`` is the printed table, values in percent. From a shell::

    python -m reidkit.recipes.compare runs/mmpl_market/clip_reid runs/mmpl_market

    method         R1      R5     R10     mAP    mINP
    CLIP-ReID    10.5    28.4    47.4    11.5     5.4
    MMPL         13.7    33.7    49.5    13.7     6.4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reidkit.engine.run import REPORT_FILE

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
"""The columns, in order, where any row has them."""

METHOD_NAMES = {
    "clip_reid": "CLIP-ReID",
    "mmpl": "MMPL",
    "aaformer": "AAformer",
    "pcl_clip_supervised": "PCL-CLIP",
    "pcl_clip_unsupervised": "PCL-CLIP (unsup.)",
    "unipt": "UniPT",
    "valpat": "VAL-PAT",
}
"""How the results of the recipes are named in the table (other keys appear as they are)."""


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One rank result of one run.

    Attributes:
        method: the name in the table.
        result: its key in the report's ``results``.
        report: the report it comes from.
        metrics: the rank metrics in ``[0, 1]`` (``mAP``, ``R1``, and what else it holds).
    """

    method: str
    result: str
    report: Path
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class ComparisonTable:
    """Rank results of several runs; ``str(table)`` is the table, in percent."""

    rows: tuple[ComparisonRow, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The metrics of :data:`METRICS` that some row has."""
        return tuple(name for name in METRICS if any(name in row.metrics for row in self.rows))

    def __str__(self) -> str:
        width = max([len("method"), *(len(row.method) for row in self.rows)]) + 2
        lines = ["method".ljust(width) + "".join(f"{name:>8}" for name in self.columns)]
        for row in self.rows:
            cells = [
                f"{100 * row.metrics[name]:>8.1f}" if name in row.metrics else f"{'-':>8}"
                for name in self.columns
            ]
            lines.append(row.method.ljust(width) + "".join(cells))
        return "\n".join(lines)


def read_report(path: str | Path) -> dict[str, Any]:
    """The report of a run folder, or the report file ``path`` itself.

    Raises:
        FileNotFoundError: no report there.
        ValueError: the file is not a JSON report with ``results``.
    """
    path = Path(path)
    file = path / REPORT_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no report at {file} (give a run folder or its {REPORT_FILE})")
    try:
        report = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not a JSON report: {error}") from error
    if not isinstance(report, Mapping) or not isinstance(report.get("results"), Mapping):
        raise ValueError(f"{file} has no 'results' mapping; is it a reidkit report?")
    return dict(report)


def _is_rank_result(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(value.get(name), (int, float)) for name in ("mAP", "R1")
    )


def compare_reports(paths: Sequence[str | Path]) -> ComparisonTable:
    """The rank results of the runs at ``paths`` (run folders or report files), in order.

    A result that appears in several reports under one name is told apart by its run folder,
    e.g. ``MMPL (seed_1)``.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_report`; ``ValueError`` also when no
            report holds a rank result.
    """
    if isinstance(paths, (str, Path)) or not paths:
        raise ValueError(f"paths must be a non-empty sequence of run folders, got {paths!r}")
    rows = []
    for path in paths:
        report = read_report(path)
        file = Path(path) / REPORT_FILE if Path(path).is_dir() else Path(path)
        for key, value in report["results"].items():
            if _is_rank_result(value):
                metrics = {name: float(metric) for name, metric in value.items()}
                rows.append(ComparisonRow(METHOD_NAMES.get(key, key), key, file, metrics))
    if not rows:
        raise ValueError(f"no report in {[str(p) for p in paths]} holds a rank result")
    counts = Counter(row.method for row in rows)
    rows = [
        dataclasses.replace(row, method=f"{row.method} ({row.report.parent.name})")
        if counts[row.method] > 1
        else row
        for row in rows
    ]
    return ComparisonTable(tuple(rows))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reidkit.recipes.compare RUN_DIR...``: print the table of the runs."""
    parser = argparse.ArgumentParser(
        prog="python -m reidkit.recipes.compare",
        description="One table of the rank metrics (percent) of several runs.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or report.json files")
    args = parser.parse_args(argv)
    try:
        table = compare_reports(args.runs)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
