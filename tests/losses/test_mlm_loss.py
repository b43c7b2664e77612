"""MaskedLanguageModelingLoss against UniPT eq. 2 written out in float64."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.losses import MaskedLanguageModelingLoss


def test_loss_is_the_mean_negative_log_likelihood_of_the_masked_tokens() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3, 1])
    values = logits.detach()
    per_token = []
    for s in range(5):
        normaliser = sum(math.exp(float(values[s, v])) for v in range(7))
        per_token.append(-(float(values[s, targets[s]]) - math.log(normaliser)))
    loss = MaskedLanguageModelingLoss()(logits, targets)
    assert loss.item() == pytest.approx(sum(per_token) / 5, rel=1e-12)
    # eq. 2 as printed: the sum over one sentence's masked positions
    sentence = MaskedLanguageModelingLoss(reduction="sum")(logits[:2], targets[:2])
    assert sentence.item() == pytest.approx(per_token[0] + per_token[1], rel=1e-12)
    loss.backward()
    probabilities = torch.softmax(logits.detach(), dim=1)
    expected = (probabilities - torch.nn.functional.one_hot(targets, 7)) / 5
    torch.testing.assert_close(logits.grad, expected)


def test_no_masked_token_gives_zero_attached_to_the_graph() -> None:
    logits = torch.zeros(0, 7, requires_grad=True)
    loss = MaskedLanguageModelingLoss()(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad


def test_targets_outside_the_vocabulary_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"targets must be token ids in \[0, 7\)"):
        MaskedLanguageModelingLoss()(torch.randn(2, 7), torch.tensor([1, -100]))
