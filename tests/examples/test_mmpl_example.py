"""End to end: the MMPL example's tiny preset trains the baseline and MMPL in one process,
prints the table from their reports, and resumes (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidkit.data import SyntheticReID
from tests.examples.test_clip_reid_example import _random_ranking_map

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "mmpl_market.py"


def _run(arguments: list[str], cache: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "REIDKIT_CACHE": str(cache)}
    command = [sys.executable, str(SCRIPT), "--num-workers", "0", "--device", "cpu", *arguments]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_tiny_preset_runs_baseline_and_mmpl_and_resumes(tmp_path: Path) -> None:
    cache, output = tmp_path / "cache", tmp_path / "run"
    arguments = [
        "--output-dir",
        str(output),
        "--epochs",
        "prompts=3",
        "image_encoder=6",
        "--eval-every",
        "3",
    ]
    completed = _run(arguments, cache)
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = completed.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["method"])
    # the final table: the two methods, the chance row and the units line
    table = [line.split() for line in lines[start:]]
    assert [row[0] for row in table] == ["method", "CLIP-ReID", "MMPL", "chance", "R1"]

    report = json.loads((output / "report.json").read_text())
    baseline_report = json.loads((output / "clip_reid" / "report.json").read_text())
    stages = report["stages"]
    assert [e["epoch"] for e in stages["prompts"]["epochs"]] == [1, 2, 3]
    assert [e["epoch"] for e in stages["image_encoder"]["evaluations"]] == [3, 6]
    for name in ("loss", "ot_alignment", "agent", "contrastive"):
        assert all(np.isfinite(e[name]) for e in stages["prompts"]["epochs"]), name
    assert all(np.isfinite(e["transformation"]) for e in stages["image_encoder"]["epochs"])
    diagnostics = report["results"]["stage1_diagnostics"]
    assert diagnostics["otce_chance"] == pytest.approx(3 * np.log(32), rel=0.05)
    for level, (count, kept) in zip(diagnostics["levels"], [(4, 3), (16, 10), (32, 20)]):
        assert level["random_overlap"] == kept / count
        assert 0 <= level["overlap"] <= 1 and np.isfinite(level["otce"])
    experiment = report["config"]["experiment"]
    assert report["config"]["recipe"] == "mmpl"
    assert [experiment[part]["enabled"] for part in ("agent", "alignment", "visual_prompts")] == [
        True,
        True,
        True,
    ]

    # the baseline trained with the same settings and epochs, into its own run folder
    assert baseline_report["config"]["recipe"] == "clip_reid"
    for section in ("clip", "data", "prompt_stage", "image_stage", "loss"):
        assert baseline_report["config"]["experiment"][section] == experiment[section], section
    mmpl, baseline = report["results"]["mmpl"], baseline_report["results"]["clip_reid"]
    assert 0.0 <= mmpl["R1"] <= mmpl["R5"] <= mmpl["R10"] <= 1.0
    assert set(baseline) >= {"mAP", "R1"}
    assert f"{100 * baseline['R1']:.1f}" == table[1][1]
    assert f"{100 * mmpl['mAP']:.1f}" == table[2][4]
    chance = _random_ranking_map(SyntheticReID(cache))
    assert mmpl["mAP"] > 2 * chance, (mmpl, chance)

    # Resuming a finished run trains nothing and reports the same numbers, for both runs.
    resumed = _run([*arguments, "--resume"], cache)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    again = json.loads((output / "report.json").read_text())
    assert again["results"]["mmpl"] == mmpl
    assert len(again["stages"]["image_encoder"]["epochs"]) == 6
    baseline_again = json.loads((output / "clip_reid" / "report.json").read_text())
    assert baseline_again["results"]["clip_reid"] == baseline
    assert baseline_again["resumes"] and again["resumes"]


@pytest.mark.slow
def test_ablation_without_agent_and_cpl_runs(tmp_path: Path) -> None:
    output = tmp_path / "run"
    completed = _run(
        [
            "--output-dir",
            str(output),
            "--epochs",
            "2",
            "--set",
            "image_stage.warmup_epochs=1",
            "--no-agent",
            "--no-cpl",
            "--levels",
            "2",
            "--no-baseline",
        ],
        tmp_path / "cache",
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads((output / "report.json").read_text())
    experiment = report["config"]["experiment"]
    assert [experiment[part]["enabled"] for part in ("agent", "alignment", "visual_prompts")] == [
        False,
        True,
        False,
    ]
    assert experiment["levels"]["n_ctx"] == [4, 6]
    epochs = report["stages"]["prompts"]["epochs"]
    assert "agent" not in epochs[0] and np.isfinite(epochs[-1]["ot_alignment"])
    assert "transformation" not in report["stages"]["image_encoder"]["epochs"][0]
    assert not (output / "clip_reid").exists() and "CLIP-ReID" not in completed.stdout
