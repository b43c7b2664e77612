"""End-to-end run of examples/aaformer_market.py on the synthetic data (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "aaformer_market.py"


def _run(output_dir: Path, *options: str) -> dict:
    command = [sys.executable, str(SCRIPT), "--output-dir", str(output_dir), "--device", "cpu"]
    command += ["--num-workers", "0", "--dataset", "synthetic", *options]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((output_dir / "report.json").read_text())


@pytest.mark.slow
def test_tiny_run_reports_metrics_and_part_maps_and_resumes(tmp_path: Path) -> None:
    options = ["--epochs", "1", "--maps", "2", "--set", "optimizer.warmup_epochs=0"]
    report = _run(tmp_path, *options)
    stage = report["stages"]["aaformer"]
    assert [entry["epoch"] for entry in stage["epochs"]] == [1]
    assert all(math.isfinite(stage["epochs"][0][key]) for key in ("loss", "id", "triplet"))
    metrics = report["results"]["aaformer"]
    assert 0 <= metrics["mAP"] <= 1 and 0 <= metrics["R1"] <= metrics["R5"] <= metrics["R10"] <= 1
    assert report["config"]["recipe"] == "aaformer"
    assert report["config"]["experiment"]["part_groups"] == [2, 3]
    counts = report["results"]["patches_per_part"]
    assert len(counts) == 5 and math.isclose(sum(counts[:2]), sum(counts[2:]))  # both groups
    assert Path(report["results"]["part_maps"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "last.pt").is_file()

    # Resuming a finished run restores it from last.pt, skips the completed stage and keeps
    # its history and final metrics.
    resumed = _run(tmp_path, *options, "--resume")
    assert [entry["epoch"] for entry in resumed["stages"]["aaformer"]["epochs"]] == [1]
    assert resumed["resumes"][0]["stage"] == "aaformer" and resumed["resumes"][0]["epoch"] == 1
    assert resumed["results"]["aaformer"] == metrics
