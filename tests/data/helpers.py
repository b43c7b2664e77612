"""Small image folders for the parsing tests, and colour-histogram baselines."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path, names: Iterable[str], size: tuple[int, int] = (16, 8)) -> None:
    """Write one random RGB image of ``size`` (height, width) under each name in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)


def write_market_layout(
    root: Path,
    train: Iterable[str],
    query: Iterable[str],
    gallery: Iterable[str],
) -> Path:
    """Write a Market-1501 style folder with the given file names; return ``root``."""
    write_images(root / "bounding_box_train", train)
    write_images(root / "query", query)
    write_images(root / "bounding_box_test", gallery)
    return root


def colour_histogram(pixels: np.ndarray, bins: int = 8) -> np.ndarray:
    """Hellinger embedding (square root of the frequencies) of the bins³ RGB histogram."""
    quantised = pixels.reshape(-1, 3).astype(np.int64) // (256 // bins)
    codes = (quantised[:, 0] * bins + quantised[:, 1]) * bins + quantised[:, 2]
    histogram = np.bincount(codes, minlength=bins**3).astype(np.float64)
    return np.sqrt(histogram / histogram.sum())


def histogram_feature(path: str, stripes: int = 1) -> np.ndarray:
    """Colour histograms of ``stripes`` horizontal stripes of the crop's central region.

    The region (rows 1/10 to 19/20, the middle half of the columns) holds most of the body and
    little background; the stripe histograms are concatenated and scaled to unit norm.
    """
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width, _ = pixels.shape
    centre = pixels[height // 10 : height * 19 // 20, width // 4 : 3 * width // 4]
    edges = np.linspace(0, centre.shape[0], stripes + 1).round().astype(int)
    parts = [colour_histogram(centre[top:bottom]) for top, bottom in itertools.pairwise(edges)]
    return np.concatenate(parts) / np.sqrt(stripes)


def mean_average_precision(distance, q_pids, g_pids, q_cams, g_cams) -> float:
    """Market-1501 protocol mAP by a plain loop over queries."""
    precisions = []
    for i in range(len(q_pids)):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        ranked = g_pids[keep][np.argsort(distance[i][keep], kind="stable")] == q_pids[i]
        if ranked.any():
            hit_ranks = np.flatnonzero(ranked) + 1
            precisions.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
    return float(np.mean(precisions))


def histogram_baseline(data, stripes: int = 1, random_draws: int = 0) -> tuple[float, float]:
    """mAP of ranking ``data``'s gallery by the Euclidean distance of :func:`histogram_feature`,
    and the mean mAP of ``random_draws`` random rankings (``nan`` for none)."""
    query = np.stack([histogram_feature(path, stripes) for path, _, _ in data.query])
    gallery = np.stack([histogram_feature(path, stripes) for path, _, _ in data.gallery])
    q_pids, q_cams = (np.array(column) for column in zip(*(r[1:] for r in data.query)))
    g_pids, g_cams = (np.array(column) for column in zip(*(r[1:] for r in data.gallery)))
    distance = ((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    rng = np.random.default_rng(0)
    random = [
        mean_average_precision(rng.random(distance.shape), q_pids, g_pids, q_cams, g_cams)
        for _ in range(random_draws)
    ]
    baseline = mean_average_precision(distance, q_pids, g_pids, q_cams, g_cams)
    return baseline, float(np.mean(random)) if random else float("nan")
