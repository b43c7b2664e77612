"""End to end: the CLIP-ReID example killed with SIGKILL and resumed ends exactly where the
uninterrupted run ends, for a kill right after a stage and one in the middle of a stage with
loader workers (slow)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reidkit.engine import read_checkpoint
from tests.engine.helpers import assert_same_final_state

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "clip_reid_market.py"
ARGUMENTS = ["--epochs", "prompts=2", "image_encoder=3", "--device", "cpu"]


def _command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--output-dir", str(output), *ARGUMENTS, *extra]


def _environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "REIDKIT_CACHE": str(cache)}


def _run(output: Path, cache: Path, *extra: str) -> None:
    completed = subprocess.run(
        _command(output, *extra),
        env=_environment(cache),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]


def _kill_when(output: Path, cache: Path, due: Callable[[Path], bool], *extra: str) -> None:
    """Start the run and SIGKILL it, loader workers included, as soon as ``due(output)``."""
    process = subprocess.Popen(
        _command(output, *extra),
        env=_environment(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 900
        while not due(output):
            assert process.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _report_epochs(output: Path, stage: str) -> int:
    try:
        report = json.loads((output / "report.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return len(report["stages"].get(stage, {}).get("epochs", []))


@pytest.mark.slow
def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _run(tmp_path / "straight", cache, "--num-workers", "0")
    kill_points: dict[str, tuple[Callable[[Path], bool], tuple[str, int, bool], str]] = {
        # right after the final checkpoint of the prompt stage
        "after_prompts": (
            lambda out: (out / "prompts_final.pt").exists(),
            ("prompts", 2, True),
            "0",
        ),
        # in the second epoch of the image-encoder stage, with 2 loader workers: the batches
        # do not depend on the number of workers, so the reference stays the same
        "mid_image_encoder": (
            lambda out: _report_epochs(out, "image_encoder") >= 1,
            ("image_encoder", 1, False),
            "2",
        ),
    }
    for name, (due, written_at, workers) in kill_points.items():
        output = tmp_path / name
        _kill_when(output, cache, due, "--num-workers", workers)
        state = read_checkpoint(output / "last.pt")
        assert (state["stage"], state["epoch"], state["stage_finished"]) == written_at, name
        _run(output, cache, "--num-workers", workers, "--resume")
        # every tensor: the prompts, the model, Adam's states, the random generators
        assert assert_same_final_state(tmp_path / "straight", output) > 40, name
