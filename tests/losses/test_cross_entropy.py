"""Label-smoothed cross-entropy and the image-to-text cross-entropy against explicit sums."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import CrossEntropyLabelSmooth, ImageToTextCrossEntropy


def reference_smoothed_ce(logits, labels, epsilon):
    """``-sum_c q_c log p_c`` with ``q_c = (1 - eps)[c = y] + eps / C``, one sample at a time."""
    classes = logits.shape[1]
    losses = []
    for row, label in zip(logits.tolist(), labels.tolist()):
        log_norm = math.log(sum(math.exp(z) for z in row))
        loss = 0.0
        for c, z in enumerate(row):
            q = (1 - epsilon) * (c == label) + epsilon / classes
            loss -= q * (z - log_norm)
        losses.append(loss)
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_label_smoothing_matches_the_sum(epsilon) -> None:
    logits = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 6, 3, 3, 1])
    per_sample = CrossEntropyLabelSmooth(epsilon, reduction="none")(logits, labels)
    reference = reference_smoothed_ce(logits, labels, epsilon)
    torch.testing.assert_close(per_sample, reference)
    mean = CrossEntropyLabelSmooth(epsilon, num_classes=7)(logits, labels)
    torch.testing.assert_close(mean, reference.mean())


def test_no_smoothing_is_the_ordinary_cross_entropy() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([2, 0, 1, 1])
    ours = CrossEntropyLabelSmooth(0.0)(logits, labels)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels))


def test_gradient_is_softmax_minus_smoothed_target() -> None:
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 3, 0])
    CrossEntropyLabelSmooth(0.2, reduction="sum")(logits, labels).backward()
    target = torch.full((3, 4), 0.2 / 4, dtype=torch.float64)
    target[torch.arange(3), labels] += 0.8
    torch.testing.assert_close(logits.grad, torch.softmax(logits.detach(), 1) - target)


@pytest.mark.parametrize("normalize", [False, True])
def test_image_to_text_cross_entropy_is_eq_5(normalize) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    texts = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    labels = torch.tensor([0, 4, 4, 2, 1, 3])
    scale = 10.0 if normalize else 1.0
    logits = torch.tensor(
        [
            [
                scale
                * (torch.dot(v / v.norm(), t / t.norm()) if normalize else torch.dot(v, t)).item()
                for t in texts
            ]
            for v in images
        ],
        dtype=torch.float64,
    )
    loss = ImageToTextCrossEntropy(0.1, normalize=normalize)(
        images, texts, labels, logit_scale=scale if normalize else None
    )
    torch.testing.assert_close(loss, reference_smoothed_ce(logits, labels, 0.1).mean())


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        CrossEntropyLabelSmooth(num_classes=3)(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        CrossEntropyLabelSmooth()(torch.randn(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLabelSmooth(epsilon=1.0)
    with pytest.raises(ValueError, match="text_features"):
        ImageToTextCrossEntropy()(torch.randn(2, 4), torch.randn(3, 5), torch.tensor([0, 1]))
