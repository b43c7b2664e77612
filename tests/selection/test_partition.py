"""HierarchicalPatchPartition: patch grids, pooling and scores against per-patch loops."""

from __future__ import annotations

import pytest
import torch

from reidkit.selection import HierarchicalPatchPartition, partition_grid


@pytest.mark.parametrize(
    ("count", "grid"), [(16, (8, 2)), (64, (16, 4)), (128, (16, 8)), (1, (1, 1)), (8, (4, 2))]
)
def test_paper_map_grids_tile_with_squarest_patches(count: int, grid: tuple[int, int]) -> None:
    assert partition_grid((16, 8), count) == grid


def test_impossible_tiling_is_rejected() -> None:
    with pytest.raises(ValueError, match="patch_counts"):
        HierarchicalPatchPartition((16, 8), (16, 7))


def _reference_levels(patch_map, global_feature, grids):
    """Per-image, per-patch loops in float64."""
    patch_map, global_feature = patch_map.double(), global_feature.double()
    batch, height, width, _ = patch_map.shape
    levels = []
    for rows, cols in grids:
        ph, pw = height // rows, width // cols
        features = torch.zeros(batch, rows * cols, patch_map.shape[-1], dtype=torch.float64)
        scores = torch.zeros(batch, rows * cols, dtype=torch.float64)
        for b in range(batch):
            g = global_feature[b] / global_feature[b].norm()
            for r in range(rows):
                for c in range(cols):
                    block = patch_map[b, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw]
                    f = block.reshape(-1, block.shape[-1]).mean(0)
                    f = f / f.norm()
                    features[b, r * cols + c] = f
                    scores[b, r * cols + c] = 1 - (f - g).norm() / 2
        levels.append((features, scores))
    return levels


def test_pooled_features_and_scores_match_loops() -> None:
    torch.manual_seed(0)
    partition = HierarchicalPatchPartition((6, 4), (2, 6, 24))
    patch_map, global_feature = torch.randn(3, 6, 4, 5), torch.randn(3, 5)
    levels = partition(patch_map, global_feature)
    for level, (features, scores) in zip(
        levels, _reference_levels(patch_map, global_feature, partition.grids)
    ):
        torch.testing.assert_close(level.features.double(), features, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(level.scores.double(), scores, atol=1e-6, rtol=1e-5)
        assert level.scores.min() >= 0 and level.scores.max() <= 1


def test_projection_after_pooling_equals_pooling_projected_map() -> None:
    torch.manual_seed(1)
    partition = HierarchicalPatchPartition((4, 2), (4,))
    tokens, projection, anchor = torch.randn(2, 4, 2, 6), torch.randn(6, 3), torch.randn(2, 3)
    projected_first = partition(tokens @ projection, anchor)[0]
    pooled_first = partition(tokens, anchor, projection=projection)[0]
    torch.testing.assert_close(projected_first.features, pooled_first.features)
    torch.testing.assert_close(projected_first.scores, pooled_first.scores)


def test_scores_extremes_and_gradients() -> None:
    partition = HierarchicalPatchPartition((2, 1), (2,))
    direction = torch.tensor([1.0, 0.0])
    patch_map = torch.stack([direction, -direction]).reshape(1, 2, 1, 2).requires_grad_(True)
    level = partition(patch_map, direction[None] * 3)[0]
    torch.testing.assert_close(level.scores, torch.tensor([[1.0, 0.0]]))
    level.features.sum().backward()
    assert patch_map.grad is not None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 4, 3, 5), torch.randn(2, 5)), "patch_map"),
        ((torch.randn(2, 4, 2, 5), torch.randn(2, 4)), "global_feature"),
        ((torch.randn(2, 4, 2, 5), torch.randn(2, 3), torch.randn(4, 3)), "projection"),
    ],
)
def test_bad_shapes_are_rejected(args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HierarchicalPatchPartition((4, 2), (2, 8))(*args)
