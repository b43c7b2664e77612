"""The GPU check's dry run: every step of ``benchmarks/gpu_check.py`` at tiny sizes on the CPU
(the kernels in Triton's interpreter), as the script is tested without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STEPS = (
    "environment",
    "compile",
    "correctness",
    "kernel_tests",
    "kernel_timing",
    "mmpl_stage1",
    "bench_sinkhorn",
)

pytestmark = [
    pytest.mark.slow,
    # Triton (the kernels, in its interpreter here) is installed on Linux only (pyproject.toml)
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Triton runs on Linux only"),
]


def _dry_run(out: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--dry-run", "--out", str(out)]
    completed = subprocess.run(
        [*command, *options],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return completed, summary


def test_every_step_passes_and_writes_its_results(tmp_path: Path) -> None:
    completed, summary = _dry_run(tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert summary["dry_run"] is True and summary["device"] == "cpu"
    steps = {step["name"]: step for step in summary["steps"]}
    assert tuple(steps) == STEPS
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(STEPS, "passed")
    for name in STEPS:
        assert (tmp_path / name / "result.json").is_file()
    assert steps["compile"]["results"]["variants"] > 0
    assert steps["compile"]["results"]["violations"] == {}
    assert steps["correctness"]["results"]["checks"] > 0
    assert steps["correctness"]["results"]["failures"] == []
    assert steps["kernel_timing"]["results"]["errors"] == []
    assert (tmp_path / "summary.md").read_text().count("passed") >= len(STEPS)


def test_missing_packages_skip_what_needs_them(tmp_path: Path) -> None:
    completed, summary = _dry_run(
        tmp_path,
        "--pretend-missing",
        "open_clip,ot,geomloss",
        "--steps",
        "environment,mmpl_stage1,bench_sinkhorn",
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    steps = {step["name"]: step for step in summary["steps"]}
    assert list(steps) == ["environment", "mmpl_stage1", "bench_sinkhorn"]
    packages = steps["environment"]["results"]["packages"]
    assert [packages[name] for name in ("open_clip", "ot", "geomloss")] == [False] * 3
    assert steps["bench_sinkhorn"]["status"] == "passed"  # without its POT and geomloss rows
    stage1 = steps["mmpl_stage1"]
    assert stage1["status"] == "passed"
    assert stage1["results"]["full_step"].startswith("skipped: open_clip is missing")
    assert "ot_part" in stage1["results"]
