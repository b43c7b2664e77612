"""Rank-list grid: the ranking shown and the PNG written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidkit import save_rank_grid
from reidkit.eval.visualize import ranked_gallery


def test_ranked_gallery_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    distmat = rng.integers(0, 4, (5, 12)).astype(np.float32)  # ties
    q_pids, g_pids = rng.integers(0, 3, 5), rng.integers(0, 3, 12)
    q_cams, g_cams = rng.integers(0, 2, 5), rng.integers(0, 2, 12)
    order, correct = ranked_gallery(distmat, q_pids, g_pids, q_cams, g_cams, range(5), topk=20)
    assert order.shape == (5, 12)
    for q in range(5):
        ranking = [
            j
            for j in np.argsort(distmat[q], kind="stable")
            if not (g_pids[j] == q_pids[q] and g_cams[j] == q_cams[q])
        ]
        padded = ranking + [-1] * (12 - len(ranking))
        assert order[q].tolist() == padded
        assert correct[q].tolist() == [j >= 0 and g_pids[j] == q_pids[q] for j in padded]
    names = np.array(["z", "y", "x"])  # string ids rank as the integers they rename
    named = ranked_gallery(
        distmat, names[q_pids], names[g_pids], names[q_cams], names[g_cams], range(5), 20
    )
    assert named[0].tolist() == order.tolist() and named[1].tolist() == correct.tolist()


def _solid_images(folder: Path, count: int, prefix: str) -> list[str]:
    paths = []
    for i in range(count):
        path = folder / f"{prefix}_{i}.png"
        Image.new("RGB", (16, 32), (40 * i % 255, 90, 160)).save(path)
        paths.append(str(path))
    return paths


def test_save_rank_grid_writes_png_with_green_and_red_borders(tmp_path: Path) -> None:
    query_paths = _solid_images(tmp_path, 2, "q")
    gallery_paths = _solid_images(tmp_path, 6, "g")
    q_pids, g_pids = np.array([0, 1]), np.array([0, 1, 2, 0, 1, 2])
    distmat = np.arange(12, dtype=np.float32).reshape(2, 6)  # each query: g0 (id 0) first
    out = save_rank_grid(
        distmat,
        query_paths,
        gallery_paths,
        q_pids,
        g_pids,
        [0, 0],
        [1] * 6,
        tmp_path / "figures" / "ranks.png",
        topk=4,
    )
    assert out.exists()
    with Image.open(out) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    green = (np.abs(pixels - [0x2C, 0xA0, 0x2C]).sum(1) < 30).sum()
    red = (np.abs(pixels - [0xD6, 0x27, 0x28]).sum(1) < 30).sum()
    assert green > 50 and red > 50


def test_save_rank_grid_checks_path_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="query_paths and gallery_paths"):
        save_rank_grid(
            np.zeros((2, 3)),
            ["a"],
            ["b"] * 3,
            [0, 1],
            [0, 1, 2],
            [0, 0],
            [1, 1, 1],
            tmp_path / "x.png",
        )
