"""MMPL fig. 9 from two trained runs: the rollout maps and the selected patches (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_figure_of_two_quick_runs(tmp_path: Path) -> None:
    study, figure = _load("evidence_study"), _load("cam_figure")
    runs = tmp_path / "runs"
    study.main(["--quick", "--variants", "clip_reid", "mmpl", "--runs-dir", str(runs),
                "--output-dir", str(tmp_path)])  # fmt: skip
    mmpl_run, baseline_run = (
        runs / "quick" / "mmpl" / "seed0",
        runs / "quick" / "clip_reid" / "seed0",
    )
    images, _, _ = figure.query_images(mmpl_run, 2)
    maps = figure.rollout_maps(mmpl_run, images)
    assert maps.shape == (2, 8, 4) and bool((maps > 0).all()) and float(maps.sum()) < 2
    selections = figure.selected_patches(mmpl_run, images)
    assert [grid for _, grid in selections] == [(4, 1), (8, 2), (8, 4)]
    for (mask, _), kept in zip(selections, (3, 10, 20)):
        torch.testing.assert_close(mask.sum(1), torch.full((2,), float(kept)))
    path = figure.main(["--mmpl", str(mmpl_run), "--baseline", str(baseline_run), "--images",
                        "2", "--output", str(tmp_path / "cam.png")])  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
