"""End to end: the UniPT and VAL-PAT examples on the built-in data report every result,
write CLIP weights that load_clip reads, and a run killed in the middle of fine-tuning and
resumed ends exactly where the uninterrupted run ends (slow)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reidkit.clip import load_clip
from reidkit.engine import read_checkpoint
from reidkit.recipes.text_to_image import TINY_TEXT_CLIP
from tests.engine.helpers import assert_same_final_state

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARGUMENTS = ["--epochs", "pretrain=1", "finetune=2", "--device", "cpu", "--num-workers", "0"]


def _command(script: str, output: Path, *extra: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / script), "--output-dir", str(output), *ARGUMENTS, *extra]


def _run(script: str, output: Path, cache: Path, *extra: str) -> dict:
    completed = subprocess.run(
        _command(script, output, *extra),
        env={**os.environ, "REIDKIT_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((output / "report.json").read_text())


def _finetune_epochs(output: Path) -> int:
    try:
        report = json.loads((output / "report.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return len(report["stages"].get("finetune", {}).get("epochs", []))


def _kill_after_one_finetune_epoch(script: str, output: Path, cache: Path) -> None:
    process = subprocess.Popen(
        _command(script, output),
        env={**os.environ, "REIDKIT_CACHE": str(cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 1800
        while _finetune_epochs(output) < 1:
            assert process.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _check_rank_results(results: dict, *names: str) -> None:
    for name in names:
        metrics = results[name]
        assert all(math.isfinite(value) for value in metrics.values()), name
        assert 0 <= metrics["R1"] <= metrics["R5"] <= metrics["R10"] <= 1, name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "results"),
    [
        ("unipt_cuhk_pedes.py", ("initial", "unipt_pretrained", "unipt")),
        (
            "valpat_pretraining.py",
            ("initial", "initial_reid", "valpat_pretrained", "valpat_reid", "valpat"),
        ),
    ],
)
def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(
    tmp_path: Path, script: str, results: tuple[str, ...]
) -> None:
    cache = tmp_path / "cache"
    straight = _run(script, tmp_path / "straight", cache)
    _check_rank_results(straight["results"], *results)
    assert [e["epoch"] for e in straight["stages"]["pretrain"]["epochs"]] == [1]
    assert [e["epoch"] for e in straight["stages"]["finetune"]["epochs"]] == [1, 2]
    if script.startswith("valpat"):
        attributes = straight["results"]["valpat_attributes"]
        assert set(attributes) == {"mA", "accuracy", "precision", "recall", "F1"}
        assert 0 <= attributes["mA"] <= 1
    weights = tmp_path / "straight" / "pretrained_clip.pt"
    load_clip(TINY_TEXT_CLIP, pretrained=weights, image_size=(128, 64))  # reads back

    killed = tmp_path / "killed"
    _kill_after_one_finetune_epoch(script, killed, cache)
    state = read_checkpoint(killed / "last.pt")
    assert (state["stage"], state["epoch"], state["stage_finished"]) == ("finetune", 1, False)
    resumed = _run(script, killed, cache, "--resume")
    assert resumed["resumes"][0]["stage"] == "finetune"
    # every tensor: the model, the queues and momentum copies, Adam's states, the generators
    assert assert_same_final_state(tmp_path / "straight", killed) > 40
    assert resumed["results"] == straight["results"]
