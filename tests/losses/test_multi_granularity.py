"""multi_granularity_loss against per-level cross-entropies written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import ImageToTextCrossEntropy, multi_granularity_loss


def test_multi_granularity_loss_averages_per_level_cross_entropies() -> None:
    torch.manual_seed(0)
    image = torch.randn(4, 5, requires_grad=True)
    levels = [torch.randn(7, 5) for _ in range(3)]
    labels = torch.tensor([0, 6, 3, 3])
    loss = multi_granularity_loss(
        lambda v, t, y: F.cross_entropy(v @ t.T, y), image, levels, labels
    )
    expected = (
        sum(
            -sum(torch.log_softmax(image[b] @ text.T, dim=0)[labels[b]] for b in range(4)) / 4
            for text in levels
        )
        / 3
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert image.grad is not None
    with pytest.raises(ValueError, match="level_text_features"):
        multi_granularity_loss(ImageToTextCrossEntropy(), image, [torch.randn(7, 4)], labels)


def test_multi_granularity_loss_with_image_to_text_cross_entropy() -> None:
    torch.manual_seed(1)
    image, levels = torch.randn(3, 4), [torch.randn(5, 4), torch.randn(5, 4)]
    labels = torch.tensor([4, 0, 1])
    criterion = ImageToTextCrossEntropy(epsilon=0.1)
    expected = (criterion(image, levels[0], labels) + criterion(image, levels[1], labels)) / 2
    torch.testing.assert_close(multi_granularity_loss(criterion, image, levels, labels), expected)


def test_summed_levels_are_the_sum_of_the_per_level_cross_entropies() -> None:
    torch.manual_seed(2)
    image = torch.randn(4, 5, dtype=torch.float64)
    levels = [torch.randn(6, 5, dtype=torch.float64) for _ in range(3)]
    labels = torch.tensor([0, 5, 2, 2])
    expected = sum(
        -sum(torch.log_softmax(image[b] @ text.T, dim=0)[labels[b]] for b in range(4)) / 4
        for text in levels
    )
    loss = multi_granularity_loss(
        lambda v, t, y: F.cross_entropy(v @ t.T, y), image, levels, labels, reduction="sum"
    )
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="reduction must be one of"):
        multi_granularity_loss(F.cross_entropy, image, levels, labels, reduction="max")
