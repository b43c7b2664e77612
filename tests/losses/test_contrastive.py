"""ImageTextContrastiveLoss against UniPT eq. 1 written out in float64, and on two gloo
processes against one process on the whole batch."""

from __future__ import annotations

import math
import re

import pytest
import torch

from reidkit import distributed
from reidkit.losses import ImageTextContrastiveLoss, SupConLoss
from tests.gloo import join_group, run_on_ranks


def reference_contrastive(images, texts, scale):
    """Eq. 1 one pair at a time: -log softmax of the cosine similarities times ``scale``."""
    n = images.shape[0]

    def cos(a, b):
        return torch.dot(a, b) / (a.norm() * b.norm())

    losses = []
    for i in range(n):
        i2t = [cos(images[i], texts[j]) * scale for j in range(n)]
        t2i = [cos(texts[i], images[j]) * scale for j in range(n)]
        l_i2t = -(i2t[i] - torch.logsumexp(torch.stack(i2t), 0))
        l_t2i = -(t2i[i] - torch.logsumexp(torch.stack(t2i), 0))
        losses.append((l_i2t + l_t2i) / 2)
    return torch.stack(losses)


def _pairs(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, d, generator=generator, dtype=torch.float64)
    texts = images + 0.7 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return images.requires_grad_(), texts.requires_grad_()


@pytest.mark.parametrize("temperature", [1.0, 0.07])
def test_loss_and_gradients_match_eq_1(temperature: float) -> None:
    images, texts = _pairs(6, 5, 0)
    loss = ImageTextContrastiveLoss(temperature)(images, texts)
    reference = reference_contrastive(images, texts, 1.0 / temperature).mean()
    torch.testing.assert_close(loss, reference)
    for grad, expected in zip(
        torch.autograd.grad(loss, (images, texts)),
        torch.autograd.grad(reference, (images, texts)),
    ):
        torch.testing.assert_close(grad, expected)


def test_the_learned_temperature_starts_at_its_value_and_gets_the_gradient() -> None:
    images, texts = _pairs(5, 4, 1)
    loss_fn = ImageTextContrastiveLoss(0.07, learnable_temperature=True).double()
    log_scale = loss_fn.temperature.log_scale
    assert log_scale.item() == pytest.approx(math.log(1 / 0.07))
    loss = loss_fn(images, texts)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    reference = reference_contrastive(images, texts, scale).mean()
    torch.testing.assert_close(loss, reference)
    (grad,) = torch.autograd.grad(loss, log_scale)
    (scale_grad,) = torch.autograd.grad(reference, scale)
    torch.testing.assert_close(grad, scale_grad * scale.detach())  # d/d log s = s d/ds
    assert set(dict(loss_fn.named_parameters())) == {"temperature.log_scale"}


def test_per_pair_values_and_bad_input() -> None:
    images, texts = _pairs(4, 3, 2)
    values = ImageTextContrastiveLoss(reduction="none")(images, texts)
    torch.testing.assert_close(values, reference_contrastive(images, texts, 1.0))
    with pytest.raises(ValueError, match=re.escape("text_features must have the image_features'")):
        ImageTextContrastiveLoss()(images, texts[:3])
    with pytest.raises(ValueError, match="temperature must be"):
        ImageTextContrastiveLoss(0.0)


def _contrastive_worker(rank: int, port: int) -> None:
    join_group(rank, port, timeout=30.0)
    try:
        torch.manual_seed(0)
        encoder = torch.nn.Linear(4, 3).double()
        generator = torch.Generator().manual_seed(1)
        inputs = torch.randn(8, 4, generator=generator, dtype=torch.float64)
        texts = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        loss_fn = ImageTextContrastiveLoss(0.5, learnable_temperature=True).double()
        local = slice(4 * rank, 4 * rank + 4)
        loss = loss_fn(encoder(inputs[local]), texts[local])
        loss.backward()
        parameters = [*encoder.parameters(), *loss_fn.parameters()]
        grads = [distributed.all_reduce_mean(p.grad) for p in parameters]
        mean_loss = distributed.all_reduce_mean(loss.detach())

        for p in parameters:
            p.grad = None
        whole = ImageTextContrastiveLoss(0.5, learnable_temperature=True, gather_distributed=False)
        whole = whole.double()
        reference = whole(encoder(inputs), texts)
        reference.backward()
        torch.testing.assert_close(mean_loss, reference.detach())
        expected = [*(p.grad for p in encoder.parameters()), whole.temperature.log_scale.grad]
        for grad, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(grad, want)

        # SupConLoss with arange labels repeats the labels on every rank: the n-th pair of the
        # other rank counts as a positive too, and the loss is no longer eq. 1.
        arange = torch.arange(4)
        supcon = SupConLoss(normalize=True, temperature=0.5)
        features = encoder(inputs[local]).detach()
        wrong = (
            supcon(features, texts[local], arange) + supcon(texts[local], features, arange)
        ) / 2
        assert abs(distributed.all_reduce_mean(wrong).item() - reference.item()) > 1e-3

        # bad input on one rank is an error on both, before the gathers
        with pytest.raises(ValueError, match=r"\(raised on rank 1 of 2\)$"):
            loss_fn(torch.randn(3, 3 + rank).double(), torch.randn(3, 3).double())
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_two_ranks_give_the_loss_and_gradients_of_the_whole_batch() -> None:
    run_on_ranks(_contrastive_worker, join_timeout=90.0)
