"""Train and test transforms against the formulas they implement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data import (
    CLIP_MEAN,
    CLIP_STD,
    build_contrastive_transforms,
    build_test_transforms,
    build_train_transforms,
)


def _image(height: int = 32, width: int = 16) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _normalised(image: Image.Image) -> torch.Tensor:
    """(pixel / 255 - mean) / std in float64, channels first."""
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    result = (pixels - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    return torch.from_numpy(result).permute(2, 0, 1)


def test_test_transform_is_resize_then_clip_normalisation() -> None:
    image = _image(40, 20)
    output = build_test_transforms((32, 16))(image)
    assert output.shape == (3, 32, 16) and output.dtype == torch.float32
    expected = _normalised(image.resize((16, 32), Image.Resampling.BICUBIC))
    torch.testing.assert_close(output.double(), expected, atol=1e-5, rtol=0)


def test_train_transform_without_randomness_is_a_flip_of_the_test_transform() -> None:
    image = _image()
    train = build_train_transforms((32, 16), flip_probability=1.0, padding=0, erasing_probability=0)
    expected = build_test_transforms((32, 16))(image).flip(-1)
    torch.testing.assert_close(train(image), expected)


def test_pad_and_crop_is_a_shifted_window_of_the_padded_image() -> None:
    image, padding = _image(), 3
    train = build_train_transforms(
        (32, 16), flip_probability=0.0, padding=padding, erasing_probability=0
    )
    padded = np.pad(np.asarray(image), ((padding, padding), (padding, padding), (0, 0)))
    windows = {
        (dy, dx): _normalised(Image.fromarray(padded[dy : dy + 32, dx : dx + 16])).float()
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
    }
    torch.manual_seed(0)
    offsets = set()
    for _ in range(20):
        output = train(image)
        matches = [o for o, window in windows.items() if torch.allclose(output, window, atol=1e-5)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_random_erasing_replaces_one_rectangle() -> None:
    image = _image()
    erase = build_train_transforms((32, 16), flip_probability=0, padding=0, erasing_probability=1)
    torch.manual_seed(0)
    changed = (erase(image) != build_test_transforms((32, 16))(image)).any(0)
    rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
    assert changed.any()
    box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.float().mean() > 0.9  # random values may coincide with a few originals


def test_default_size_is_256_by_128() -> None:
    assert build_train_transforms()(_image()).shape == (3, 256, 128)
    assert build_test_transforms()(_image()).shape == (3, 256, 128)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(size=(256,)), "size="),
        (dict(size=(0, 128)), "size="),
        (dict(flip_probability=1.5), "flip_probability=1.5"),
        (dict(erasing_probability=-0.1), "erasing_probability=-0.1"),
        (dict(padding=-1), "padding=-1"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_train_transforms(**kwargs)


def test_contrastive_views_differ_and_keep_the_size() -> None:
    transform = build_contrastive_transforms((32, 16))
    image = _image(64, 32)
    torch.manual_seed(0)
    first, second = transform(image), transform(image)
    assert first.shape == second.shape == (3, 32, 16)
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match="min_scale"):
        build_contrastive_transforms((32, 16), min_scale=0.0)
