"""Re-gridding a CLIP ViT for person images: non-square input and overlapping patches.

CLIP's vision transformers are trained on square images (224x224 gives a 14x14 grid of 16x16
patches). Person crops are tall (256x128 is the usual ReID size), so the grid part of the
positional embedding is interpolated to the new ``h x w`` grid while the class-token row is
kept (bilinearly by default, as CLIP-ReID and TransReID do; bicubic on request). With a patch
``stride`` smaller than the patch size the patches overlap, as in CLIP-ReID: the patch
embedding becomes a convolution with the same kernel and the new stride, and the grid is
``((H - P) // S + 1, (W - P) // S + 1)``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from reidkit import checks
from reidkit._deprecation import moved_names

INTERPOLATION_MODES = ("bilinear", "bicubic")


def as_pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``value`` as ``(height, width)`` positive integers, or raise naming ``name``."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(checks.is_integer(item) and item > 0 for item in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {value!r}")
    return pair


def patch_embedding_grid(
    image_size: tuple[int, int], patch_size: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int]:
    """The token grid of a strided patch embedding: ``((H - P) // S + 1, (W - P) // S + 1)``.

    (Not to be confused with :func:`reidkit.selection.partition_grid`, which cuts a token
    grid into equal patches.)
    """
    return (
        (image_size[0] - patch_size[0]) // stride[0] + 1,
        (image_size[1] - patch_size[1]) // stride[1] + 1,
    )


def interpolate_positional_embedding(
    positional_embedding: Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    mode: str = "bilinear",
) -> Tensor:
    """Resize the grid part of a ViT positional embedding; keep the class-token row.

    A grid resized to its own size is returned unchanged (both modes interpolate at the
    original sample points).

    Args:
        positional_embedding: ``(1 + h0 * w0, width)``, class-token row first, then the grid in
            row-major order.
        old_grid: ``(h0, w0)``.
        new_grid: ``(h1, w1)``.
        mode: ``"bilinear"`` (CLIP-ReID) or ``"bicubic"``.

    Returns:
        ``(1 + h1 * w1, width)`` in the dtype of ``positional_embedding`` (the interpolation
        itself runs in float32).
    """
    checks.check_choice("mode", mode, INTERPOLATION_MODES)
    if positional_embedding.dim() != 2:
        raise ValueError(
            "positional_embedding must have shape (1 + h * w, width), got "
            f"{tuple(positional_embedding.shape)}"
        )
    tokens = positional_embedding.shape[0]
    if tokens != 1 + old_grid[0] * old_grid[1]:
        raise ValueError(
            f"positional_embedding must have 1 + {old_grid[0]} * {old_grid[1]} rows for grid "
            f"{old_grid}, got shape {tuple(positional_embedding.shape)}"
        )
    class_row, grid = positional_embedding[:1], positional_embedding[1:]
    grid = rearrange(grid.float(), "(h w) c -> 1 c h w", h=old_grid[0])
    grid = F.interpolate(grid, size=new_grid, mode=mode, align_corners=False)
    grid = rearrange(grid, "1 c h w -> (h w) c")
    return torch.cat([class_row, grid.to(positional_embedding.dtype)])


def resize_visual_grid(
    visual: nn.Module,
    image_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    interpolation: str = "bilinear",
) -> tuple[int, int]:
    """Adapt an open_clip ViT, in place, to ``image_size`` inputs and an optional patch stride.

    The patch-embedding convolution is rebuilt with ``stride`` (weights kept) when the stride
    changes, the positional embedding is interpolated to the new grid, and the tower's
    ``image_size`` and ``grid_size`` (and its preprocessing size, when it has one) are updated.

    Args:
        visual: ``clip_model.visual``; must be an open_clip ``VisionTransformer``.
        image_size: input ``(H, W)`` (an int means square).
        stride: patch stride ``S`` (int or pair) with ``1 <= S <= P``; ``None`` keeps
            non-overlapping patches (``S = P``).
        interpolation: ``"bilinear"`` (CLIP-ReID) or ``"bicubic"`` resizing of the positional
            embedding.

    Returns:
        The new grid ``(h, w)``.
    """
    if not isinstance(visual, VisionTransformer):
        raise ValueError(
            "only ViT visual towers can be resized; the model's visual tower is a "
            f"{type(visual).__name__}"
        )
    checks.check_choice("interpolation", interpolation, INTERPOLATION_MODES)
    height, width = as_pair("image_size", image_size)
    patch = tuple(visual.conv1.kernel_size)
    new_stride = patch if stride is None else as_pair("stride", stride)
    if new_stride[0] > patch[0] or new_stride[1] > patch[1]:
        raise ValueError(f"stride must be at most the patch size {patch}, got {stride!r}")
    if height < patch[0] or width < patch[1]:
        raise ValueError(f"image_size must be at least the patch size {patch}, got {image_size!r}")

    if tuple(visual.conv1.stride) != new_stride:
        visual.conv1 = _restrided_conv(visual.conv1, new_stride)
    new_grid = patch_embedding_grid((height, width), patch, new_stride)
    old_grid = tuple(visual.grid_size)
    if new_grid != old_grid:
        old = visual.positional_embedding
        with torch.no_grad():
            resized = interpolate_positional_embedding(
                old.detach(), old_grid, new_grid, interpolation
            )
        visual.positional_embedding = nn.Parameter(resized, requires_grad=old.requires_grad)
    visual.image_size = (height, width)
    visual.grid_size = new_grid
    preprocess_cfg = getattr(visual, "preprocess_cfg", None)
    if isinstance(preprocess_cfg, dict):
        preprocess_cfg["size"] = (height, width)
    return new_grid


def _restrided_conv(conv: nn.Conv2d, stride: tuple[int, int]) -> nn.Conv2d:
    """A copy of the patch-embedding ``conv`` that slides with ``stride``."""
    restrided = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=cast(tuple[int, int], conv.kernel_size),
        stride=stride,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    restrided.load_state_dict(conv.state_dict())
    restrided.requires_grad_(conv.weight.requires_grad)
    return restrided


__getattr__ = moved_names(__name__, {"patch_grid": "reidkit.clip.resize.patch_embedding_grid"})
