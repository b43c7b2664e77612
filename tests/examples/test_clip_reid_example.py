"""End to end: the CLIP-ReID example's tiny preset trains both stages and writes its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidkit.data import SyntheticReID
from reidkit.eval import evaluate_rank

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "clip_reid_market.py"


def _random_ranking_map(dataset: SyntheticReID, draws: int = 20) -> float:
    """Mean mAP of uniformly random distances on the data set's query and gallery."""
    q_pids, q_cams = (
        np.array([r[1] for r in dataset.query]),
        np.array([r[2] for r in dataset.query]),
    )
    g_pids = np.array([r[1] for r in dataset.gallery])
    g_cams = np.array([r[2] for r in dataset.gallery])
    rng = np.random.default_rng(0)
    return float(
        np.mean(
            [
                evaluate_rank(
                    rng.random((len(q_pids), len(g_pids))), q_pids, g_pids, q_cams, g_cams
                ).mAP
                for _ in range(draws)
            ]
        )
    )


@pytest.mark.slow
def test_tiny_preset_trains_both_stages_and_beats_random_ranking(tmp_path: Path) -> None:
    cache, output = tmp_path / "cache", tmp_path / "run"
    environment = {**os.environ, "REIDKIT_CACHE": str(cache)}
    command = [
        sys.executable,
        str(SCRIPT),
        "--output-dir",
        str(output),
        "--epochs",
        "prompts=2",
        "image_encoder=3",
        "--eval-every",
        "2",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    report = json.loads((output / "report.json").read_text())
    stages = report["stages"]
    assert [epoch["epoch"] for epoch in stages["prompts"]["epochs"]] == [1, 2]
    assert [epoch["epoch"] for epoch in stages["image_encoder"]["epochs"]] == [1, 2, 3]
    assert [e["epoch"] for e in stages["image_encoder"]["evaluations"]] == [2, 3]
    assert all(np.isfinite(e["loss"]) for stage in stages.values() for e in stage["epochs"])

    result = report["results"]["clip_reid"]
    assert 0.0 <= result["R1"] <= result["R5"] <= result["R10"] <= 1.0
    chance = _random_ranking_map(SyntheticReID(cache))
    assert result["mAP"] > 1.5 * chance, (result, chance)
    assert (output / "last.pt").is_file() and (output / "image_encoder_final.pt").is_file()
