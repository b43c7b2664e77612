"""compare_reports, its formats and plot, and ``reidkit compare``: one table from run reports."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from reidkit.cli import main
from reidkit.recipes import compare_reports
from reidkit.recipes.compare import plot_comparison


def _write_report(folder: Path, results: dict, stages: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    path = folder / "report.json"
    path.write_text(json.dumps({"config": {}, "stages": stages or {}, "results": results}))
    return folder


def _metrics(r1: float, mean_ap: float) -> dict:
    return {"mAP": mean_ap, "mINP": mean_ap / 2, "R1": r1, "R5": 0.5, "R10": 0.75}


def test_a_row_per_rank_result_in_the_order_of_the_runs(tmp_path: Path) -> None:
    baseline = _write_report(tmp_path / "clip_reid", {"clip_reid": _metrics(0.105, 0.115)})
    mmpl = _write_report(tmp_path / "run", {"mmpl": _metrics(0.137, 0.137)})
    aaformer = _write_report(
        tmp_path / "aa",
        {"aaformer": {"mAP": 0.2, "R1": 0.3}, "part_maps": "x.png", "patches_per_part": [1, 2]},
    )
    table = compare_reports([baseline, mmpl / "report.json", aaformer])
    assert [row.method for row in table.rows] == ["CLIP-ReID", "MMPL", "AAformer"]
    assert [row.result for row in table.rows] == ["clip_reid", "mmpl", "aaformer"]
    assert table.rows[0].metrics["R1"] == 0.105 and table.rows[1].report == mmpl / "report.json"
    assert table.columns == ("R1", "R5", "R10", "mAP", "mINP")
    lines = str(table).splitlines()
    assert lines[0].split() == ["method", "R1", "R5", "R10", "mAP", "mINP"]
    assert lines[1].split() == ["CLIP-ReID", "10.5", "50.0", "75.0", "11.5", "5.8"]
    assert lines[3].split() == ["AAformer", "30.0", "-", "-", "20.0", "-"]


def test_one_method_in_several_runs_is_told_apart_by_the_folder(tmp_path: Path) -> None:
    runs = [
        _write_report(tmp_path / f"seed_{seed}", {"mmpl": _metrics(0.1 * seed, 0.1)})
        for seed in (1, 2)
    ]
    table = compare_reports(runs)
    assert [row.method for row in table.rows] == ["MMPL (seed_1)", "MMPL (seed_2)"]


def test_missing_and_malformed_reports_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no report at"):
        compare_reports([tmp_path / "nowhere"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON report"):
        compare_reports([tmp_path / "bad.json"])
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="has no 'results' mapping"):
        compare_reports([tmp_path / "list.json"])
    empty = _write_report(tmp_path / "empty", {"part_maps": "x.png"})
    with pytest.raises(ValueError, match="holds a rank result"):
        compare_reports([empty])
    with pytest.raises(ValueError, match="non-empty sequence"):
        compare_reports(str(empty))  # type: ignore[arg-type]


def test_markdown_and_csv_hold_the_same_cells(tmp_path: Path) -> None:
    runs = [
        _write_report(tmp_path / "a", {"clip_reid": _metrics(0.105, 0.115)}),
        _write_report(tmp_path / "b", {"aaformer": {"mAP": 0.2, "R1": 0.3}}),
    ]
    table = compare_reports(runs)
    markdown = table.format("markdown").splitlines()
    assert markdown[0] == "| method | R1 | R5 | R10 | mAP | mINP |"
    assert markdown[1] == "| --- | ---: | ---: | ---: | ---: | ---: |"
    assert markdown[3] == "| AAformer | 30.0 | - | - | 20.0 | - |"
    rows = list(csv.reader(io.StringIO(table.format("csv"))))
    assert rows[1] == ["CLIP-ReID", "10.5", "50.0", "75.0", "11.5", "5.8"]
    with pytest.raises(ValueError, match="style must be one of"):
        table.format("latex")


def test_the_curve_counts_epochs_over_the_stages(tmp_path: Path) -> None:
    stages = {
        "prompts": {"epochs": [{"epoch": 1}, {"epoch": 2}], "evaluations": []},
        "image_encoder": {
            "epochs": [{"epoch": e} for e in (1, 2, 3)],
            "evaluations": [{"epoch": 2, "mAP": 0.1}, {"epoch": 3, "mAP": 0.2}],
        },
    }
    run = _write_report(tmp_path / "run", {"mmpl": _metrics(0.3, 0.2)}, stages)
    (row,) = compare_reports([run]).rows
    assert row.curve == ((4, 0.1), (5, 0.2))
    path = plot_comparison(compare_reports([run]), tmp_path / "plots" / "compare.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _write_report(tmp_path / "run", {"clip_reid": _metrics(0.25, 0.5)})
    assert main(["compare", str(run), "--plot", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["CLIP-ReID", "25.0"]
    assert (tmp_path / "c.png").is_file()
    assert main(["compare", str(tmp_path / "missing")]) == 1
    assert "no report at" in capsys.readouterr().err


def test_the_chance_level_of_a_split_is_one_row_with_units_and_skipped_queries(
    tmp_path: Path,
) -> None:
    chance = {**_metrics(0.02, 0.01), "skipped_queries": 3}
    folders = []
    for name, mean_ap in (("a", 0.2), ("b", 0.3)):
        folder = _write_report(
            tmp_path / name, {"clip_reid": {**_metrics(0.1, mean_ap), "skipped_queries": 3}}
        )
        report = json.loads((folder / "report.json").read_text())
        report["data"] = {"name": "synthetic", "splits": {}, "chance": chance}
        (folder / "report.json").write_text(json.dumps(report))
        folders.append(folder)
    table = compare_reports(folders)
    assert [row.method for row in table.rows] == [
        "CLIP-ReID (a)",
        "CLIP-ReID (b)",
        "chance (random ranking)",
    ]
    lines = str(table).splitlines()
    assert lines[0].split() == ["method", "R1", "R5", "R10", "mAP", "mINP", "skipped"]
    assert lines[3].split() == [
        "chance",
        "(random",
        "ranking)",
        "2.0",
        "50.0",
        "75.0",
        "1.0",
        "0.5",
        "3",
    ]
    assert "in %" in lines[-1] and "skipped" in lines[-1]
