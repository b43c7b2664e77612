"""Selection without the agent: the best patches by pooled class-token attention."""

from __future__ import annotations

import pytest
import torch

from reidkit.clip import CLIPImageEncoder
from reidkit.selection import HierarchicalPatchPartition, top_indices
from tests.clip.tiny_models import tiny_clip


def test_pooled_class_token_attention_selects_patches() -> None:
    model, _ = tiny_clip()
    encoder = CLIPImageEncoder(model, return_layers=(-2,)).eval()
    with torch.no_grad():
        weights = encoder.class_token_attention(encoder(torch.randn(3, 3, 64, 32)))
    pooled = HierarchicalPatchPartition((4, 2), (4,)).pool(weights, 0)[..., 0]
    selected = top_indices(pooled, 2)
    assert selected.shape == (3, 2)
    expected = pooled.argsort(dim=1, descending=True)[:, :2].sort(dim=1).values
    torch.testing.assert_close(selected, expected)


def test_top_indices_are_sorted_best_patches() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8], [0.7, 0.0, 0.2, 0.1]])
    assert top_indices(scores, 2).tolist() == [[1, 3], [0, 2]]
    with pytest.raises(ValueError, match="count"):
        top_indices(scores, 5)
