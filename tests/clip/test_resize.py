"""Re-gridding the vision tower: non-square grids, overlapping patches, embedding resizing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidkit.clip import interpolate_positional_embedding, resize_visual_grid
from tests.clip.tiny_models import TINY_CONFIG, tiny_clip


def _bilinear_reference(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Half-pixel-centred bilinear resize of ``(h, w, D)``, one output cell at a time."""

    def taps(index: int, old: int, new: int) -> list[tuple[int, float]]:
        source = max((index + 0.5) * old / new - 0.5, 0.0)
        low = min(int(source), old - 1)
        high = min(low + 1, old - 1)
        weight = source - low
        return [(low, 1.0 - weight), (high, weight)]

    out = torch.zeros(*size, grid.shape[-1], dtype=torch.float64)
    for row in range(size[0]):
        for col in range(size[1]):
            for r, wr in taps(row, grid.shape[0], size[0]):
                for c, wc in taps(col, grid.shape[1], size[1]):
                    out[row, col] += wr * wc * grid[r, c].double()
    return out


def test_person_size_gives_a_16_by_8_grid() -> None:
    model, _ = tiny_clip(image_size=(256, 128))
    visual = model.visual
    assert visual.grid_size == (16, 8)
    assert visual.image_size == (256, 128)
    assert visual.positional_embedding.shape == (1 + 16 * 8, 64)
    assert tuple(visual.conv1.stride) == (16, 16)
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 256, 128)).shape == (2, 32)


def test_stride_12_builds_overlapping_patches_on_a_21_by_10_grid() -> None:
    square, _ = tiny_clip(image_size=None)
    model, _ = tiny_clip(image_size=(256, 128), stride=12)
    visual = model.visual
    assert visual.grid_size == (21, 10)
    assert visual.positional_embedding.shape == (1 + 21 * 10, 64)
    assert tuple(visual.conv1.kernel_size) == (16, 16)
    assert tuple(visual.conv1.stride) == (12, 12)
    torch.testing.assert_close(visual.conv1.weight, square.visual.conv1.weight)

    # Independent reference: every 16x16 window at stride 12, flattened, times the kernel.
    images = torch.randn(2, 3, 256, 128)
    windows = F.unfold(images, kernel_size=16, stride=12)  # (B, 3 * 16 * 16, h * w)
    assert windows.shape[-1] == 21 * 10
    expected = (visual.conv1.weight.flatten(1) @ windows).view(2, 64, 21, 10)
    with torch.no_grad():
        torch.testing.assert_close(visual.conv1(images), expected, atol=1e-4, rtol=1e-4)
        assert model.encode_image(images).shape == (2, 32)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resizing_a_grid_to_its_own_size_is_the_identity(mode: str) -> None:
    embedding = torch.randn(1 + 4 * 3, 8)
    resized = interpolate_positional_embedding(embedding, (4, 3), (4, 3), mode)
    torch.testing.assert_close(resized, embedding, atol=1e-6, rtol=0)


def test_bilinear_resizing_matches_a_per_cell_reference_and_keeps_the_class_row() -> None:
    embedding = torch.randn(1 + 3 * 3, 5, dtype=torch.float64)
    resized = interpolate_positional_embedding(embedding, (3, 3), (7, 2))
    assert resized.shape == (1 + 7 * 2, 5)
    assert resized.dtype == torch.float64
    torch.testing.assert_close(resized[0], embedding[0], atol=0, rtol=0)
    expected = _bilinear_reference(embedding[1:].view(3, 3, 5), (7, 2)).view(14, 5)
    torch.testing.assert_close(resized[1:], expected, atol=1e-5, rtol=1e-5)


def test_resizing_the_tower_to_its_own_size_keeps_the_embedding() -> None:
    model, _ = tiny_clip(image_size=None)
    before = model.visual.positional_embedding.detach().clone()
    assert resize_visual_grid(model.visual, 64) == (4, 4)
    torch.testing.assert_close(model.visual.positional_embedding, before, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": (256, 128), "stride": 17}, "stride"),
        ({"image_size": (8, 128)}, "image_size"),
        ({"image_size": (256, 0)}, "image_size"),
        ({"image_size": (256, 128), "interpolation": "nearest"}, "interpolation"),
    ],
)
def test_bad_grid_arguments_name_themselves(kwargs: dict, message: str) -> None:
    model, _ = tiny_clip(image_size=None)
    with pytest.raises(ValueError, match=message):
        resize_visual_grid(model.visual, **kwargs)


def test_positional_embedding_must_match_the_old_grid() -> None:
    with pytest.raises(ValueError, match="positional_embedding"):
        interpolate_positional_embedding(torch.randn(10, 4), (4, 4), (2, 2))


def test_only_vit_towers_can_be_resized() -> None:
    config = {**TINY_CONFIG, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8, "image_size": 64}}
    with pytest.raises(ValueError, match="ViT"):
        tiny_clip(config=config)
