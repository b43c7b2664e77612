"""Recipes trained in one process (slow): MMPL trains its CLIP-ReID baseline into a sub-folder
exactly as a CLIP-ReID run of its own would, and the two reports compare in one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidkit.recipes import Runtime, clip_reid, compare_reports, get_recipe, mmpl, replace_field


@pytest.mark.slow
def test_mmpl_with_its_baseline_in_one_process(tmp_path: Path) -> None:
    config = replace_field(mmpl.PRESETS["tiny"], "image_stage.warmup_epochs", 0)
    config = get_recipe("mmpl").with_epochs(config, [("prompts", 2), ("image_encoder", 1)])
    runtime = Runtime(output_dir=str(tmp_path / "mmpl"), device="cpu", num_workers=0)
    results = mmpl.train(config, runtime)
    report = json.loads((tmp_path / "mmpl" / "report.json").read_text())
    assert set(results) == {"mmpl"} and report["results"]["mmpl"] == results["mmpl"]
    assert set(report["results"]) == {"mmpl", "stage1_diagnostics"}  # also in the report

    # The baseline run, trained first in the same process, is the run clip_reid.train gives
    # alone: nothing of one run leaks into the next.
    alone = clip_reid.train(
        mmpl.baseline_config(config),
        Runtime(output_dir=str(tmp_path / "alone"), device="cpu", num_workers=0),
    )
    baseline = json.loads((tmp_path / "mmpl" / "clip_reid" / "report.json").read_text())
    assert baseline["results"] == alone
    assert baseline["config"]["experiment"]["image_stage"]["epochs"] == 1

    table = compare_reports([tmp_path / "mmpl" / "clip_reid", tmp_path / "mmpl"])
    assert [row.method for row in table.rows] == ["CLIP-ReID", "MMPL", "chance (random ranking)"]
    assert table.rows[1].metrics == results["mmpl"]
