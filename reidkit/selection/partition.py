"""Hierarchical partition of the patch-token map into the candidate patches of MMPL (sec. 3.2).

At granularity level ``k`` the ``h x w`` patch-token map ``F`` of the image encoder is cut into
``M_c`` equal, non-overlapping rectangles ``{f_j}`` (for a 256x128 image and a 16x8 map the
paper uses ``M_c = 16, 64, 128``). Each rectangle is average-pooled and projected to the joint
image-text space; the state of patch ``j`` is ``(s_j^f, s_j^e)`` with ``s_j^f`` the pooled
feature and ``s_j^e`` its similarity to the global feature, from the Euclidean distance of the
L2-normalised features::

    s_j^e = 1 - || f_j / |f_j| - g / |g| ||_2 / 2   in [0, 1],

1 when the patch points the same way as the global feature ``g`` and 0 when it points the
opposite way (the distance of unit vectors lies in ``[0, 2]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from reidkit import checks
from reidkit._deprecation import moved_names


@dataclass
class PatchLevel:
    """The ``M_c`` candidate patches of one granularity level for a batch of ``B`` images.

    Attributes:
        features: ``(B, M_c, E)`` L2-normalised pooled patch features in the joint space (the
            states ``s_j^f``), patches in row-major order of the patch grid.
        scores: ``(B, M_c)`` similarities ``s_j^e`` in ``[0, 1]`` to the global feature.
        grid: ``(rows, cols)`` of the patch grid, ``rows * cols = M_c``.
    """

    features: Tensor
    scores: Tensor
    grid: tuple[int, int]


def partition_grid(map_size: tuple[int, int], num_patches: int) -> tuple[int, int]:
    """The ``(rows, cols)`` grid that cuts an ``h x w`` map into ``num_patches`` equal patches.

    Among the grids whose rows divide ``h`` and whose columns divide ``w``, the one with the
    squarest patches (smallest ``|log(patch_h / patch_w)|``) wins; ties go to more rows, i.e.
    horizontal stripes of the body. For a 16x8 map: 16 patches of 2x4 tokens, 64 of 1x2, 128
    of 1x1. (Not to be confused with :func:`reidkit.clip.resize.patch_embedding_grid`, the
    token grid of a ViT's patch embedding.)

    Raises:
        ValueError: if no such grid exists.
    """
    height, width = map_size
    candidates = [
        (rows, num_patches // rows)
        for rows in range(1, height + 1)
        if height % rows == 0 and num_patches % rows == 0 and width % (num_patches // rows) == 0
    ]
    if not candidates:
        raise ValueError(
            f"patch_counts: {num_patches} equal patches cannot tile a {height}x{width} map "
            "(rows must divide the height and columns the width)"
        )
    return min(
        candidates,
        key=lambda grid: (abs(math.log((height / grid[0]) / (width / grid[1]))), -grid[0]),
    )


class HierarchicalPatchPartition(nn.Module):
    """Cut a patch-token map into ``M_c`` pooled patches per level with their scores ``s^e``.

    Args:
        map_size: ``(h, w)`` of the patch-token map (16x8 for ViT-B/16 at 256x128).
        patch_counts: ``(M_c^1, ..., M_c^K)``, the number of patches of each level.

    Example:
        >>> partition = HierarchicalPatchPartition((16, 8), (16, 64, 128))
        >>> levels = partition(features.projected_patches, features.embedding)
        >>> levels[0].features.shape, levels[0].scores.shape
        (torch.Size([B, 16, 512]), torch.Size([B, 16]))
    """

    def __init__(self, map_size: tuple[int, int], patch_counts: Sequence[int]) -> None:
        super().__init__()
        if len(map_size) != 2 or not all(
            checks.is_integer(side) and side >= 1 for side in map_size
        ):
            raise ValueError(f"map_size must be two integers (h, w) >= 1, got {map_size!r}")
        if isinstance(patch_counts, int) or len(patch_counts) == 0:
            raise ValueError(
                f"patch_counts must be a non-empty sequence of integers, got {patch_counts!r}"
            )
        if not all(checks.is_integer(count) and count >= 1 for count in patch_counts):
            raise ValueError(f"patch_counts must hold integers >= 1, got {patch_counts!r}")
        self.map_size = (int(map_size[0]), int(map_size[1]))
        self.patch_counts = tuple(patch_counts)
        self.grids = tuple(partition_grid(self.map_size, count) for count in self.patch_counts)

    def pool(self, patch_map: Tensor, level: int) -> Tensor:
        """Average ``patch_map`` ``(B, h, w, C)`` over each patch of ``level``: ``(B, M_c, C)``.

        Any per-token map pools this way, e.g. class-token attention ``(B, h, w, 1)``.
        """
        self._check_map("patch_map", patch_map)
        rows, cols = self.grids[level]
        return reduce(patch_map, "b (r h) (c w) e -> b (r c) e", "mean", r=rows, c=cols)

    def forward(
        self, patch_map: Tensor, global_feature: Tensor, projection: Tensor | None = None
    ) -> list[PatchLevel]:
        """Partition, pool and score the patches of every level.

        Args:
            patch_map: ``(B, h, w, C)`` patch tokens, e.g.
                :attr:`reidkit.clip.ImageFeatures.projected_patches` (already in the joint
                space) or ``ImageFeatures.patches`` with ``projection``.
            global_feature: ``(B, E)`` global image feature ``g`` (``ImageFeatures.embedding``).
            projection: ``(C, E)`` linear map to the joint space (CLIP's ``visual.proj``),
                applied after pooling; ``None`` when ``patch_map`` is already in it. Pooling and
                a linear projection commute, so both inputs give the same patches.

        Returns:
            One :class:`PatchLevel` per level, in the order of ``patch_counts``.
        """
        self._check_map("patch_map", patch_map)
        joint_dim = patch_map.shape[-1] if projection is None else projection.shape[-1]
        if projection is not None and (
            projection.dim() != 2 or projection.shape[0] != patch_map.shape[-1]
        ):
            raise ValueError(
                f"projection must have shape ({patch_map.shape[-1]}, E), got "
                f"{tuple(projection.shape)}"
            )
        if global_feature.shape != (patch_map.shape[0], joint_dim):
            raise ValueError(
                f"global_feature must have shape ({patch_map.shape[0]}, {joint_dim}), got "
                f"{tuple(global_feature.shape)}"
            )
        anchor = F.normalize(global_feature, dim=-1)[:, None, :]
        levels = []
        for level, grid in enumerate(self.grids):
            pooled = self.pool(patch_map, level)
            if projection is not None:
                pooled = pooled @ projection
            features = F.normalize(pooled, dim=-1)
            scores = 1 - (features - anchor).norm(dim=-1) / 2
            levels.append(PatchLevel(features, scores.clamp(0.0, 1.0), grid))
        return levels

    def _check_map(self, name: str, patch_map: Tensor) -> None:
        if patch_map.dim() != 4 or tuple(patch_map.shape[1:3]) != self.map_size:
            raise ValueError(
                f"{name} must have shape (B, {self.map_size[0]}, {self.map_size[1]}, C), got "
                f"{tuple(patch_map.shape)}"
            )

    def extra_repr(self) -> str:
        return f"map_size={self.map_size}, patch_counts={self.patch_counts}, grids={self.grids}"


__getattr__ = moved_names(__name__, {"patch_grid": "reidkit.selection.partition_grid"})
