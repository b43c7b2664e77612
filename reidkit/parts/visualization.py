"""Drawing the [PART] attention maps over the image (AAformer Fig. 5).

For one [PART], the patches not assigned to it are black and the assigned ones are coloured by
the [PART]'s attention weight, from blue (low) to red (high), over the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reidkit import checks


def render_part_maps(
    images: Tensor,
    maps: Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.6,
) -> np.ndarray:
    """Overlay each [PART]'s attention map on its image.

    Args:
        images: ``(B, 3, H, W)`` images, in ``[0, 1]`` or normalised with ``mean`` and ``std``.
        maps: ``(B, P, h, w)`` attention weights on the patch grid, zero on the patches not
            assigned to the [PART] (as :meth:`~reidkit.parts.AAformer.part_attention_maps`).
        mean, std: per-channel normalisation to undo, or ``None``.
        alpha: weight of the colour map over the image on the assigned patches.

    Returns:
        ``(B, 1 + P, H, W, 3)`` float RGB panels in ``[0, 1]``: the image, then one panel per
        [PART], black outside its patches and coloured by its weights (each panel scaled by its
        largest weight).
    """
    from matplotlib import colormaps

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if maps.dim() != 4 or maps.shape[0] != images.shape[0]:
        raise ValueError(
            f"maps must have shape ({images.shape[0]}, P, h, w), got {tuple(maps.shape)}"
        )
    checks.check_number("alpha", alpha, at_least=0, at_most=1)
    pictures = images.detach().float().cpu()
    if mean is not None or std is not None:
        mean_t = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
        std_t = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
        pictures = pictures * std_t + mean_t
    pixels = pictures.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    weights = F.interpolate(maps.detach().float().cpu(), size=images.shape[2:], mode="nearest")
    scale = weights.flatten(2).amax(dim=2).clamp_min(torch.finfo(torch.float32).tiny)
    heat = (weights / scale[..., None, None]).numpy()  # (B, P, H, W)
    colours = colormaps["jet"](heat)[..., :3]
    panels = alpha * colours + (1 - alpha) * pixels[:, None]
    panels = np.where((weights.numpy() > 0)[..., None], panels, 0.0)
    return np.concatenate([pixels[:, None], panels], axis=1)


def save_part_assignment_maps(
    images: Tensor,
    maps: Tensor,
    path: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.6,
) -> Path:
    """Save the [PART] maps of a batch as one PNG: a row per image, a column per [PART].

    Args:
        images, maps, mean, std, alpha: as in :func:`render_part_maps`.
        path: the PNG file to write (parent folders are created).

    Returns:
        The written path.
    """
    from matplotlib.figure import Figure  # no pyplot: the global backend is left alone

    panels = render_part_maps(images, maps, mean=mean, std=std, alpha=alpha)
    rows, columns, height, width, _ = panels.shape
    figure = Figure(figsize=(1.2 * columns * width / height + 0.2, 1.2 * rows + 0.3))
    axes = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        for column in range(columns):
            axis = axes[row, column]
            # float32 round-off may put a pixel a hair above 1, which matplotlib logs
            axis.imshow(np.clip(panels[row, column], 0.0, 1.0), interpolation="nearest")
            axis.set_axis_off()
            if row == 0:
                axis.set_title("image" if column == 0 else f"PT{column}", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path
