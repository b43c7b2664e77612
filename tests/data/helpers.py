"""Writing small image folders for the parsing tests."""

from __future__ import annotations

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
