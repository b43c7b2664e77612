"""Evaluating a saved run on a data set: the metrics of its features, skipped queries, the
rank-list figure, another data set than the one it trained on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reidkit.data import build_test_transforms
from reidkit.eval import evaluate_rank
from reidkit.recipes.config import ConfigError
from reidkit.recipes.evaluate import evaluate_run
from tests.models.test_saved import BUILDERS, _save, _settle

PATTERN = r"^id(?P<pid>\d+)-cam(?P<camid>\d+)-"


def _saved_run(folder: Path, name: str = "clip_reid") -> Path:
    torch.manual_seed(0)
    model, spec = BUILDERS[name]()
    _settle(model, tuple(spec["image_size"]))
    return _save(model, spec, folder)


def _image_folder(root: Path) -> Path:
    """Query ids 1-3 on camera 1; the gallery has ids 1 and 2 on camera 2, id 3 on camera 1
    only (so query 3 has no valid match), and id 4, a distractor."""
    rng = np.random.default_rng(0)
    splits = {
        "bounding_box_train": [(5, 1), (5, 2), (6, 1), (6, 2)],
        "query": [(1, 1), (2, 1), (3, 1)],
        "bounding_box_test": [(1, 2), (1, 2), (2, 2), (3, 1), (4, 2), (4, 1)],
    }
    for split, items in splits.items():
        (root / split).mkdir(parents=True)
        for index, (pid, camera) in enumerate(items):
            pixels = rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"id{pid}-cam{camera}-{index}.png")
    return root


def _expected(run: Path, root: Path) -> tuple:
    """Features, distances and rank metrics computed here, apart from evaluate_run."""
    import reidkit

    model = reidkit.load_model(run)
    spec = model.spec
    transform = build_test_transforms(spec.image_size, mean=spec.pixel_mean, std=spec.pixel_std)

    def encode(split: str) -> tuple[torch.Tensor, list[int], list[int]]:
        paths = sorted((root / split).iterdir())
        images = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])
        pids = [int(path.name.split("-")[0][2:]) for path in paths]
        cameras = [int(path.name.split("-")[1][3:]) - 1 for path in paths]
        with torch.no_grad():
            return model(images), pids, cameras

    query, q_pids, q_cams = encode("query")
    gallery, g_pids, g_cams = encode("bounding_box_test")
    distances = 1 - F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).T
    return evaluate_rank(distances, q_pids, g_pids, q_cams, g_cams)


def test_metrics_of_a_run_on_an_image_folder(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    root = _image_folder(tmp_path / "data")
    evaluation = evaluate_run(
        run, "image_folder", root, filename_pattern=PATTERN, rank_grid=True, num_workers=0
    )
    metrics = evaluation.metrics
    expected = _expected(run, root)
    assert metrics["mAP"] == pytest.approx(expected.mAP, abs=1e-6)
    assert metrics["R1"] == pytest.approx(float(expected.cmc[0]), abs=1e-6)
    assert metrics["num_query"] == 3 and metrics["num_gallery"] == 6
    assert (metrics["scored_queries"], metrics["skipped_queries"]) == (2, 1)
    assert metrics["trained_on"] == "synthetic" and metrics["cross_domain"] is True
    assert evaluation.folder == run / "eval" / "image_folder"
    assert json.loads((evaluation.folder / "metrics.json").read_text()) == metrics
    grid = evaluation.folder / metrics["rank_grid"]
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 skipped" in evaluation.summary()

    reranked = evaluate_run(
        run, "image_folder", root, filename_pattern=PATTERN, rerank=True, num_workers=0
    )
    assert reranked.folder.name == "image_folder_rerank" and reranked.metrics["rerank"] is True


def test_the_data_set_needs_its_folder(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^data\.root is needed: .* --data-root"):
        evaluate_run(run, "dukemtmcreid", None)
    with pytest.raises(FileNotFoundError):
        evaluate_run(run, "market1501", tmp_path / "nowhere")


# the real Market-1501 images may not be copied into the project; .ci/run sets the path
@pytest.mark.skipif(
    not os.environ.get("REIDKIT_MARKET_ROOT"), reason="needs REIDKIT_MARKET_ROOT (real images)"
)
def test_a_run_on_the_built_in_data_evaluated_on_market1501(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run", "pcl_clip")
    evaluation = evaluate_run(
        run, "market1501", os.environ["REIDKIT_MARKET_ROOT"], num_workers=0, rank_grid=True
    )
    metrics = evaluation.metrics
    assert metrics["cross_domain"] is True and metrics["num_query"] > 0
    assert (
        0 <= metrics["mAP"] <= 1
        and metrics["scored_queries"] + metrics["skipped_queries"] == metrics["num_query"]
    )
