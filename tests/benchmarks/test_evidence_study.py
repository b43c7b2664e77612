"""The evidence study's script: its statistics, its probes and the schema of what it writes."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "evidence_study.py"


@pytest.fixture(scope="module")
def study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("evidence_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence_study"] = module
    spec.loader.exec_module(module)
    return module


def _dirs(tmp_path: Path) -> list[str]:
    return ["--runs-dir", str(tmp_path / "runs"), "--output-dir", str(tmp_path)]


def test_comparison_is_the_difference_of_means_in_standard_errors(study: ModuleType) -> None:
    a = {"runs": [{"mAP": v} for v in (0.30, 0.32, 0.34)]}
    b = {"runs": [{"mAP": v} for v in (0.20, 0.21, 0.25)]}
    result = study.compare(a, b, "mAP")
    stderr = math.sqrt(0.02**2 / 3 + statistics.variance([0.20, 0.21, 0.25]) / 3)
    assert result["delta"] == pytest.approx(0.32 - 0.22)
    assert result["stderr"] == pytest.approx(stderr)
    assert result["beyond_noise"] is (2 * stderr < 0.10)
    single = study.compare({"runs": [{"mAP": 0.3}]}, b, "mAP")
    assert single["stderr"] is None and single["beyond_noise"] is None


def test_chance_rank1_matches_the_expected_share_of_true_matches(study: ModuleType) -> None:
    # A random ranking puts a true match first with probability R / G' per query (R true
    # matches among the G' gallery items left after removing same-camera matches).
    from reidkit.data import build_dataset

    dataset = build_dataset(study.DATASET, None)
    shares = []
    for _, pid, camid in dataset.query:
        kept = [(p, c) for _, p, c in dataset.gallery if not (p == pid and c == camid)]
        matches = sum(p == pid for p, _ in kept)
        if matches:
            shares.append(matches / len(kept))
    chance = study.chance_level(draws=400, seed=1)
    assert chance["R1"] == pytest.approx(np.mean(shares), abs=0.01)
    assert 0 < chance["R1"] <= chance["mAP"] < 0.2


def test_agent_probe_scores_overlap_with_the_best_selection(study: ModuleType) -> None:
    from reidkit.selection import InformationSelectorAgent

    torch.manual_seed(0)
    agent = InformationSelectorAgent(8, 6, 2, hidden_size=4, episodes=2).train()
    features, scores = torch.randn(5, 6, 8), torch.rand(5, 6)
    records: dict[str, list[float]] = {}
    original = InformationSelectorAgent.forward
    with study.record_agent_overlap(records):
        output = agent(features, scores)
    assert InformationSelectorAgent.forward is original
    best = scores.topk(2, dim=1).indices
    expected = np.mean(
        [len(set(o.tolist()) & set(b.tolist())) / 2 for o, b in zip(output.indices, best)]
    )
    assert records == {"level_0": [pytest.approx(expected)]}
    agent(features, scores)  # outside the probe: not recorded
    assert len(records["level_0"]) == 1


def test_quick_study_of_the_untrained_baseline_writes_the_schema(
    study: ModuleType, tmp_path: Path
) -> None:
    study.main(
        ["--quick", "--variants", "pcl_clip_untrained", "aaformer_stripes", *_dirs(tmp_path)]
    )
    result = json.loads((tmp_path / "evidence_quick.json").read_text())
    assert result["quick"] and result["seeds"] == [0] and result["dataset"] == study.DATASET
    assert set(result) >= {"command", "machine", "chance", "variants", "comparisons", "skipped"}
    entry = result["variants"]["pcl_clip_untrained"]
    assert entry["mAP"]["std"] is None and 0 <= entry["mAP"]["mean"] <= 1
    assert entry["runs"][0]["R1"] == entry["R1"]["mean"]
    margin = entry["vs_chance"]["mAP"]["margin"]
    assert margin == pytest.approx(entry["mAP"]["mean"] - result["chance"]["mAP"])
    from reidkit.recipes import aaformer

    assert ("aaformer_stripes" in result["skipped"]) is ("stripes" not in aaformer.ASSIGNMENTS)
    csv_lines = (tmp_path / "evidence_quick.csv").read_text().splitlines()
    assert csv_lines[0].startswith("variant,method,seeds,mAP_mean")
    assert len(csv_lines) == 1 + len(result["variants"])
    assert (tmp_path / "evidence_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_study_trains_and_records_the_diagnostics(study: ModuleType, tmp_path: Path) -> None:
    variants = ["mmpl", "pcl_clip_unsupervised"]
    study.main(["--quick", "--variants", *variants, *_dirs(tmp_path)])
    result = json.loads((tmp_path / "evidence_quick.json").read_text())
    mmpl = result["variants"]["mmpl"]
    # K times the labels' entropy: ln 32 per level for balanced identities, less otherwise
    assert 0.95 * 3 * math.log(32) <= mmpl["ot_loss_chance"]["mean"] <= 3 * math.log(32) + 1e-9
    assert mmpl["agent_overlap_random"] == pytest.approx([3 / 4, 10 / 16, 20 / 32])
    assert all(0 <= value <= 1 for value in mmpl["agent_overlap"])
    ari = result["variants"]["pcl_clip_unsupervised"]["pseudo_label_ari"]
    assert len(ari) == 1 and -1 <= ari[0] <= 1
    # A second call reads the finished runs back instead of training them again.
    study.main(["--quick", "--variants", "mmpl", *_dirs(tmp_path), "--name", "again"])
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["variants"]["mmpl"]["runs"] == mmpl["runs"]


def test_mmpl_diagnostics_prefer_the_recipes_own_measurement(study: ModuleType) -> None:
    from reidkit.recipes import mmpl

    config = mmpl.PRESETS["tiny"]
    report = {
        "stages": {"prompts": {"epochs": [{"otce": 10.0}, {"otce": 9.0}]}},
        "results": {},
    }
    probes = {"agent_overlap": {f"level_{k}": [0.0, 0.0, 1.0, 1.0] for k in range(3)}}
    measured = study.mmpl_diagnostics(report, probes, config, 32)
    assert measured["ot_loss"] == 9.0 and measured["ot_loss_chance"] == 3 * math.log(32)
    assert measured["agent_overlap"] == [1.0, 1.0, 1.0]  # the last of two epochs
    assert measured["agent_overlap_random"] == [3 / 4, 10 / 16, 20 / 32]
    levels = [{"otce": 3.0, "otce_chance": 3.4, "overlap": 0.8, "random_overlap": 0.75}] * 3
    report["results"]["stage1_diagnostics"] = {"levels": levels, "otce": 9.5, "otce_chance": 10.2}
    reported = study.mmpl_diagnostics(report, probes, config, 32)
    assert reported == {
        "ot_loss": 9.5,
        "ot_loss_chance": 10.2,
        "agent_overlap": [0.8] * 3,
        "agent_overlap_random": [0.75] * 3,
    }
