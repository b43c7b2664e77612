"""QueueInfoNCELoss against VAL-PAT eq. 1 written out in float64."""

from __future__ import annotations

import pytest
import torch

from reidkit.losses import QueueInfoNCELoss


def reference_infonce(queries, keys, queue, tau):
    """Eq. 1 one query at a time, on L2-normalised rows."""
    losses = []
    for i in range(queries.shape[0]):
        q = queries[i] / queries[i].norm()
        k = keys[i] / keys[i].norm()
        positive = torch.exp(torch.dot(q, k) / tau)
        negatives = sum(
            (torch.exp(torch.dot(q, row / row.norm()) / tau) for row in queue),
            torch.zeros((), dtype=queries.dtype),
        )
        losses.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(losses)


def _features(seed: int, *shapes: tuple[int, int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) for shape in shapes]


@pytest.mark.parametrize("queue_size", [0, 1, 7])
def test_loss_and_query_gradient_match_eq_1(queue_size: int) -> None:
    queries, keys, queue = _features(0, (5, 4), (5, 4), (queue_size, 4))
    queries.requires_grad_()
    loss = QueueInfoNCELoss(0.07)(queries, keys, queue)
    reference = reference_infonce(queries, keys, queue, 0.07).mean()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(
        torch.autograd.grad(loss, queries)[0], torch.autograd.grad(reference, queries)[0]
    )
    if queue_size == 0:
        assert loss.item() == 0.0  # the positive alone


def test_keys_and_queue_get_no_gradient_and_the_learned_temperature_does() -> None:
    queries, keys, queue = _features(1, (3, 4), (3, 4), (6, 4))
    keys.requires_grad_()
    loss_fn = QueueInfoNCELoss(0.07, learnable_temperature=True).double()
    loss = loss_fn(queries, keys, queue)
    loss.backward()
    assert keys.grad is None
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    reference = reference_infonce(queries, keys.detach(), queue, 1 / scale).mean()
    torch.testing.assert_close(loss.detach(), reference.detach())
    (scale_grad,) = torch.autograd.grad(reference, scale)
    torch.testing.assert_close(loss_fn.temperature.log_scale.grad, scale_grad * (1 / 0.07))


def test_the_learned_scale_stops_at_its_cap() -> None:
    loss_fn = QueueInfoNCELoss(0.07, learnable_temperature=True)
    with torch.no_grad():
        loss_fn.temperature.log_scale.fill_(10.0)
    assert loss_fn.temperature.value() == pytest.approx(0.01)
    queries, keys, queue = (t.float() for t in _features(2, (3, 4), (3, 4), (2, 4)))
    loss_fn(queries, keys, queue).backward()
    assert loss_fn.temperature.log_scale.grad.item() == 0.0


def test_bad_input_names_the_argument() -> None:
    queries, keys, queue = _features(3, (3, 4), (3, 4), (2, 5))
    with pytest.raises(ValueError, match="queue must have the queries' width 4"):
        QueueInfoNCELoss()(queries, keys, queue)
    with pytest.raises(ValueError, match="keys must have the queries' shape"):
        QueueInfoNCELoss()(queries, keys[:2], queue[:, :4])
    with pytest.raises(ValueError, match="temperature must be >= 1 / max_scale"):
        QueueInfoNCELoss(0.001)
