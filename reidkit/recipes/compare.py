"""Compare runs: one table of rank metrics from their ``report.json`` files, and a plot.

:func:`compare_reports` reads the reports of several runs (a run folder or the report itself)
and returns a :class:`ComparisonTable` with a row for every rank result in their ``results``
(a mapping with ``mAP`` and ``R1``, as :meth:`reidkit.engine.TrainingRun.finish` stores
them): ``str(table)`` is the printed table, values in percent; :meth:`ComparisonTable.format`
also writes Markdown and CSV, and :func:`plot_comparison` draws the metrics side by side with
each run's mAP over its evaluations. Under the runs' rows, the chance level of their test
split (what a random ranking scores, recorded in the report's ``data``; one row for runs on
the same split), and the queries each evaluation skipped (no true match in the gallery). From
a shell::

    reidkit compare runs/mmpl_market/clip_reid runs/mmpl_market --plot compare.png

    method                         R1      R5     R10     mAP    mINP skipped
    CLIP-ReID                    10.5    29.5    46.3    12.0     5.8       0
    MMPL                         10.5    32.6    51.6    13.4     7.0       0
    chance (random ranking)       2.2    10.6    20.1     4.6     2.9       0
    R1 to mINP in % of the scored queries; skipped: queries without a true match, not scored
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from reidkit.engine.run_folder import REPORT_FILE

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
"""The columns in percent, in order, where any row has them."""

SKIPPED = "skipped_queries"
"""The last column, a count (``skipped`` in the table), where any row has it."""

CHANCE = "chance"
CHANCE_METHOD = "chance (random ranking)"
UNITS = "R1 to mINP in % of the scored queries; skipped: queries without a true match, not scored"

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
        curve: ``(epoch, mAP)`` of every evaluation in the report, the epochs counted over
            the stages in order.
    """

    method: str
    result: str
    report: Path
    metrics: dict[str, float]
    curve: tuple[tuple[int, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class ComparisonTable:
    """Rank results of several runs; ``str(table)`` is the table, in percent."""

    rows: tuple[ComparisonRow, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The metrics of :data:`METRICS` that some row has, then :data:`SKIPPED` if any has
        it."""
        names = (*METRICS, SKIPPED)
        return tuple(name for name in names if any(name in row.metrics for row in self.rows))

    def __str__(self) -> str:
        return self.format("text")

    def cells(self) -> list[list[str]]:
        """Every row's values in percent with one decimal, the skipped queries as a count
        (``-`` where a row lacks one)."""
        return [[_cell(row.metrics.get(name), name) for name in self.columns] for row in self.rows]

    def format(self, style: str = "text") -> str:
        """The table as aligned ``"text"``, a ``"markdown"`` table or ``"csv"``, in percent."""
        if style not in TABLE_STYLES:
            raise ValueError(f"style must be one of {TABLE_STYLES}, got {style!r}")
        header = ["method", *(("skipped" if c == SKIPPED else c) for c in self.columns)]
        rows = [[row.method, *cells] for row, cells in zip(self.rows, self.cells())]
        if style == "csv":
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
            return buffer.getvalue().rstrip("\n")
        if style == "markdown":
            lines = [header, ["---", *("---:" for _ in self.columns)], *rows]
            return "\n".join("| " + " | ".join(line) + " |" for line in lines)
        width = max(len(line[0]) for line in [header, *rows]) + 2
        aligned = [
            line[0].ljust(width) + "".join(f"{cell:>8}" for cell in line[1:])
            for line in [header, *rows]
        ]
        return "\n".join([*aligned, UNITS])


def _cell(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    return str(int(value)) if name == SKIPPED else f"{100 * value:.1f}"


TABLE_STYLES = ("text", "markdown", "csv")


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
    rows: list[ComparisonRow] = []
    chances: list[ComparisonRow] = []
    for path in paths:
        report = read_report(path)
        file = Path(path) / REPORT_FILE if Path(path).is_dir() else Path(path)
        for key, value in report["results"].items():
            if _is_rank_result(value):
                metrics = {
                    name: float(metric)
                    for name, metric in value.items()
                    if isinstance(metric, (int, float))
                }
                method = METHOD_NAMES.get(key, key)
                rows.append(ComparisonRow(method, key, file, metrics, _curve(report)))
        chance = (report.get("data") or {}).get(CHANCE)
        if _is_rank_result(chance):
            chances.append(ComparisonRow(CHANCE_METHOD, CHANCE, file, dict(cast(Any, chance))))
    for row in chances:  # one row for the runs evaluated on the same split
        if all(row.metrics != other.metrics for other in rows if other.result == CHANCE):
            rows.append(row)
    if all(row.result == CHANCE for row in rows):
        raise ValueError(f"no report in {[str(p) for p in paths]} holds a rank result")
    counts = Counter(row.method for row in rows)
    rows = [
        dataclasses.replace(row, method=f"{row.method} ({row.report.parent.name})")
        if counts[row.method] > 1
        else row
        for row in rows
    ]
    return ComparisonTable(tuple(rows))


def _curve(report: Mapping[str, Any]) -> tuple[tuple[int, float], ...]:
    """``(epoch, mAP)`` of the report's evaluations, the epochs counted over its stages."""
    points = []
    offset = 0
    for stage in report.get("stages", {}).values():
        for evaluation in stage.get("evaluations", []):
            if isinstance(evaluation.get("mAP"), (int, float)):
                points.append((offset + int(evaluation["epoch"]), float(evaluation["mAP"])))
        offset += len(stage.get("epochs", []))
    return tuple(points)


def plot_comparison(table: ComparisonTable, path: str | Path) -> Path:
    """Draw ``table`` to the image ``path``: the metrics of each row as bars (percent) and,
    beside them, each row's mAP after every evaluation of its run. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [name for name in table.columns if name != SKIPPED]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(table.rows), 1)
    positions = np.arange(len(columns))
    for index, row in enumerate(table.rows):
        values = [100 * row.metrics.get(name, np.nan) for name in columns]
        bars.bar(positions + index * width, values, width, label=row.method)
        if row.curve:
            epochs, maps = zip(*row.curve)
            curves.plot(epochs, [100 * value for value in maps], marker="o", label=row.method)
    bars.set_xticks(positions + width * (len(table.rows) - 1) / 2, columns)
    bars.set_ylabel("%")
    bars.set_title("final results")
    bars.legend(fontsize=8)
    curves.set_xlabel("epoch (all stages)")
    curves.set_ylabel("mAP (%)")
    curves.set_title("mAP after each evaluation")
    if any(row.curve for row in table.rows):
        curves.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
