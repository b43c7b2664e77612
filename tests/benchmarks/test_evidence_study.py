"""The evidence study's script: its statistics, its probes and the schema of what it writes."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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


def _runs(values: tuple[float, ...], seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    return {"runs": [{"seed": seed, "mAP": value} for seed, value in zip(seeds, values)]}


def test_paired_comparison_tests_the_per_seed_differences(study: ModuleType) -> None:
    a, b = (0.30, 0.32, 0.37), (0.20, 0.21, 0.25)
    result = study.compare(_runs(a), _runs(b), "mAP")
    differences = [x - y for x, y in zip(a, b)]  # 0.10, 0.11, 0.12
    stderr = statistics.stdev(differences) / math.sqrt(3)
    assert result["paired"] is True
    assert result["delta"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert result["stderr"] == pytest.approx(stderr)
    assert result["dof"] == 2
    assert result["ci_halfwidth"] == pytest.approx(4.302652729749462 * stderr)  # t(0.975, 2)
    assert result["beyond_noise"] is True  # 0.11 against a half-width of 0.043
    # The same values in another seed order: the differences vary, the means do not.
    shuffled = study.compare(_runs(a), _runs((0.25, 0.20, 0.21)), "mAP")
    assert shuffled["delta"] == pytest.approx(result["delta"])
    assert shuffled["beyond_noise"] is False  # differences 0.05, 0.12, 0.16


def test_unpaired_comparison_is_welch(study: ModuleType) -> None:
    a, b = (0.30, 0.32, 0.34), (0.20, 0.21, 0.25, 0.22)
    result = study.compare(_runs(a), _runs(b, (5, 6, 7, 8)), "mAP")
    share_a, share_b = statistics.variance(a) / 3, statistics.variance(b) / 4
    dof = (share_a + share_b) ** 2 / (share_a**2 / 2 + share_b**2 / 3)
    assert result["paired"] is False
    assert result["stderr"] == pytest.approx(math.sqrt(share_a + share_b))
    assert result["dof"] == pytest.approx(dof)
    assert result["beyond_noise"] is True
    single = study.compare(_runs((0.3,)), _runs(b), "mAP")
    assert single["stderr"] is None and single["beyond_noise"] is None
    constant = study.compare(_runs((0.3, 0.3)), _runs((0.2, 0.2)), "mAP")
    assert constant["delta"] == pytest.approx(0.1) and constant["beyond_noise"] is None


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


def test_train_partitions_follow_the_train_split(study: ModuleType) -> None:
    from reidkit.data import build_dataset

    dataset = build_dataset(study.DATASET, None)
    partitions = study.train_partitions()
    assert partitions["cameras"] == [camid for _, _, camid in dataset.train]
    size = dataset.config.members_per_group
    groups: dict[int, set[int]] = {}
    for (_, pid, _), group in zip(dataset.train, partitions["groups"], strict=True):
        groups.setdefault(group, set()).add(pid)
    # 32 train identities in look-alike groups of 4: each identity in one group
    assert sorted(pid for members in groups.values() for pid in members) == list(range(32))
    assert all(len(members) == size for members in groups.values())


def test_pseudo_label_probe_scores_against_identities_and_partitions(
    study: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.metrics import adjusted_rand_score

    from reidkit.recipes import pcl_clip

    class Labeller:  # stands in for an EpochBatches whose clustering merges look-alikes
        config = type("Config", (), {"mode": "unsupervised"})()
        epoch = 0

    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    cameras = [0, 1, 0, 1, 0, 1, 0, 1]
    clusters = torch.tensor([0, 0, 0, 0, 1, 1, 1, -1])  # the groups, one outlier
    monkeypatch.setattr(
        pcl_clip.EpochBatches, "pseudo_labels", lambda self, features, pids: clusters
    )
    records: list[dict[str, float]] = []
    partitions = {"groups": groups, "cameras": cameras, "other_split": [0, 1]}
    with study.record_pseudo_label_ari(records, partitions):
        labels = pcl_clip.EpochBatches.pseudo_labels(Labeller(), torch.zeros(8, 2), pids)
    assert torch.equal(labels, clusters)
    singled = [0, 0, 0, 0, 1, 1, 1, 2]  # the outlier as a cluster of its own
    (record,) = records
    assert record["ari"] == pytest.approx(adjusted_rand_score(pids.tolist(), singled))
    assert record["ari_groups"] == pytest.approx(adjusted_rand_score(groups, singled))
    assert record["ari_cameras"] == pytest.approx(adjusted_rand_score(cameras, singled))
    assert "ari_other_split" not in record  # not one label per labelled image
    assert record["ari_groups"] > 0.5 > record["ari"] and record["ari_cameras"] < 0.1
    assert record["outliers"] == 1 and record["clusters"] == 2


def test_position_share_of_stripes_columns_and_one_part(study: ModuleType) -> None:
    grid_h, grid_w = 8, 4
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    columns = torch.arange(grid_w).repeat(grid_h)
    stripes = torch.stack([rows < 4, rows >= 4])  # two horizontal stripes
    halves = torch.stack([columns < 2, columns >= 2])  # two vertical halves
    whole = torch.ones(1, grid_h * grid_w, dtype=torch.bool)
    variance_rows = statistics.pvariance(range(8))  # 5.25
    within_stripe = statistics.pvariance(range(4))  # 1.25, both stripes
    share = study.position_share(stripes, (grid_h, grid_w))
    assert share["row"] == pytest.approx(1 - within_stripe / variance_rows)
    assert share["row"] == pytest.approx(1 - 1 / 2**2, abs=0.02)
    assert share["column"] == pytest.approx(0.0, abs=1e-12)
    share = study.position_share(halves, (grid_h, grid_w))
    assert share["row"] == pytest.approx(0.0, abs=1e-12)
    assert share["column"] == pytest.approx(1 - 0.25 / statistics.pvariance(range(4)))
    # Groups side by side ((B, heads, P, N) with the groups along P): the mean of the groups.
    both = torch.cat([stripes, whole])[None, None]
    assert study.position_share(both, (grid_h, grid_w))["row"] == pytest.approx(
        (1 - within_stripe / variance_rows) / 2
    )
    # A random partition tells almost nothing of the position.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (64, grid_h * grid_w), generator=generator)
    random_sets = torch.stack([labels == part for part in range(3)], dim=1)
    assert study.position_share(random_sets, (grid_h, grid_w))["row"] < 0.15
