"""SupConLoss against a per-anchor loop of CLIP-ReID eq. 2-3 in float64."""

from __future__ import annotations

import math
import re

import pytest
import torch

from reidkit.losses import SupConLoss


def reference_supcon(anchors, targets, anchor_labels, target_labels, *, normalize, scale):
    """Eq. 2-3 written out: one anchor at a time, one positive at a time."""
    losses, valid = [], []
    for i in range(anchors.shape[0]):
        a = anchors[i] / anchors[i].norm() if normalize else anchors[i]
        similarities = []
        for m in range(targets.shape[0]):
            t = targets[m] / targets[m].norm() if normalize else targets[m]
            similarities.append(torch.dot(a, t) * scale)
        log_denominator = torch.logsumexp(torch.stack(similarities), dim=0)
        positives = [p for p in range(targets.shape[0]) if target_labels[p] == anchor_labels[i]]
        if not positives:
            losses.append(anchors.new_zeros(()))
            valid.append(False)
            continue
        total = sum(similarities[p] - log_denominator for p in positives)
        losses.append(-total / len(positives))
        valid.append(True)
    return torch.stack(losses), torch.tensor(valid)


def _features(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(
    ("normalize", "temperature", "logit_scale"),
    [(False, 1.0, None), (True, 0.07, None), (True, 1.0, 14.3), (False, 2.5, None)],
)
def test_loss_and_gradients_match_the_loop(normalize, temperature, logit_scale) -> None:
    anchors = _features(6, 5, 0).requires_grad_()
    targets = _features(7, 5, 1).requires_grad_()
    anchor_labels = torch.tensor([0, 1, 1, 2, 3, 0])
    target_labels = torch.tensor([1, 0, 2, 1, 0, 4, 3])
    loss = SupConLoss(normalize=normalize, temperature=temperature)(
        anchors, targets, anchor_labels, target_labels, logit_scale=logit_scale
    )
    scale = logit_scale if logit_scale is not None else 1.0 / temperature
    ref_losses, _ = reference_supcon(
        anchors, targets, anchor_labels, target_labels, normalize=normalize, scale=scale
    )
    reference = ref_losses.mean()
    torch.testing.assert_close(loss, reference)
    grads = torch.autograd.grad(loss, (anchors, targets))
    ref_grads = torch.autograd.grad(reference, (anchors, targets))
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad)


def test_i2t_and_t2i_on_a_paired_batch() -> None:
    images, texts = _features(8, 4, 2), _features(8, 4, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    supcon = SupConLoss()
    for anchors, targets in ((images, texts), (texts, images)):
        ref_losses, _ = reference_supcon(
            anchors, targets, labels, labels, normalize=False, scale=1.0
        )
        torch.testing.assert_close(supcon(anchors, targets, labels), ref_losses.mean())


def test_anchors_without_a_positive_are_left_out() -> None:
    anchors, targets = _features(4, 3, 4), _features(3, 3, 5)
    anchor_labels = torch.tensor([0, 7, 1, 8])
    target_labels = torch.tensor([0, 1, 1])
    per_anchor = SupConLoss(reduction="none")(anchors, targets, anchor_labels, target_labels)
    ref_losses, valid = reference_supcon(
        anchors, targets, anchor_labels, target_labels, normalize=False, scale=1.0
    )
    assert valid.tolist() == [True, False, True, False]
    torch.testing.assert_close(per_anchor, ref_losses)
    mean = SupConLoss()(anchors, targets, anchor_labels, target_labels)
    torch.testing.assert_close(mean, ref_losses[valid].mean())
    total = SupConLoss(reduction="sum")(anchors, targets, anchor_labels, target_labels)
    torch.testing.assert_close(total, ref_losses.sum())


def test_no_positive_anywhere_gives_zero_with_a_graph() -> None:
    anchors = _features(2, 3, 6).requires_grad_()
    loss = SupConLoss()(anchors, _features(2, 3, 7), torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(anchors.grad == 0)


def test_one_positive_among_uniform_targets_costs_log_m() -> None:
    anchors = torch.zeros(1, 3, dtype=torch.float64)
    targets = torch.randn(5, 3, dtype=torch.float64)
    loss = SupConLoss()(anchors, targets, torch.tensor([2]), torch.tensor([0, 1, 2, 3, 4]))
    assert loss.item() == pytest.approx(math.log(5))


@pytest.mark.parametrize(
    ("anchors", "targets", "anchor_labels", "target_labels", "match"),
    [
        (torch.randn(3), torch.randn(3, 4), torch.zeros(3, dtype=torch.long), None, "anchors"),
        (torch.randn(3, 4), torch.randn(3, 5), torch.zeros(3, dtype=torch.long), None, "width"),
        (torch.randn(3, 4), torch.randn(3, 4), torch.zeros(2, dtype=torch.long), None, "anchor_"),
        (torch.randn(3, 4), torch.randn(2, 4), torch.zeros(3, dtype=torch.long), None, "target_"),
        (torch.randn(3, 4), torch.randn(3, 4), torch.zeros(3), None, "integer"),
    ],
)
def test_bad_input_names_the_argument(anchors, targets, anchor_labels, target_labels, match):
    with pytest.raises(ValueError, match=match):
        SupConLoss()(anchors, targets, anchor_labels, target_labels)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        SupConLoss(reduction="max")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"anchor_labels": torch.zeros(3)},
            "anchor_labels must be an integer tensor of shape (3,), got shape (3,) and dtype "
            "torch.float32",
        ),
        (
            {"targets": torch.randn(3, 4, dtype=torch.float64).int()},
            "targets must be a floating-point tensor of shape (N, D), got shape (3, 4) and dtype "
            "torch.int32",
        ),
        (
            {"logit_scale": torch.ones(2)},
            "logit_scale must be a number or a one-element floating-point tensor, got a "
            "torch.float32 tensor of shape (2,)",
        ),
        ({"logit_scale": -1.0}, "logit_scale must be finite and > 0, got -1.0"),
        ({"logit_scale": float("nan")}, "logit_scale must be finite and > 0, got nan"),
    ],
)
def test_bad_input_messages_state_what_was_expected(arguments, message) -> None:
    call = {
        "anchors": torch.randn(3, 4),
        "targets": torch.randn(3, 4),
        "anchor_labels": torch.zeros(3, dtype=torch.long),
    } | arguments
    with pytest.raises(ValueError, match=re.escape(message)):
        SupConLoss(normalize=True)(**call)
