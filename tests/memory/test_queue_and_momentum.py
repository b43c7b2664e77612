"""The key queue against a Python deque, the momentum encoder against its update written out
in float64, and the queue on two gloo processes."""

from __future__ import annotations

import re
from collections import deque

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from reidkit import distributed
from reidkit.memory import FeatureQueue, MomentumEncoder
from tests.gloo import join_group, run_on_ranks


def _held_oldest_first(queue: FeatureQueue) -> torch.Tensor:
    held = len(queue)
    slots = (int(queue.pointer) - held + torch.arange(held)) % queue.size
    return queue.features[slots]


@given(
    size=st.integers(1, 7),
    batches=st.lists(st.integers(1, 10), min_size=1, max_size=6),
)
def test_the_queue_holds_the_last_keys_in_order(size: int, batches: list[int]) -> None:
    queue = FeatureQueue(size, 3, gather_distributed=False).double()
    reference: deque[torch.Tensor] = deque(maxlen=size)
    counter = 0
    for rows in batches:
        keys = torch.arange(counter, counter + rows, dtype=torch.float64)[:, None].repeat(1, 3)
        counter += rows
        queue.enqueue(keys)
        reference.extend(keys)
        assert len(queue) == len(reference) == min(counter, size)
        torch.testing.assert_close(_held_oldest_first(queue), torch.stack(list(reference)))
        # keys() holds the same rows, in slot order
        held = sorted(queue.keys()[:, 0].tolist())
        assert held == sorted(float(row[0]) for row in reference)


def test_the_queue_is_saved_and_restored_and_rejects_bad_keys() -> None:
    queue = FeatureQueue(4, 2, gather_distributed=False)
    queue.enqueue(torch.randn(3, 2))
    restored = FeatureQueue(4, 2, gather_distributed=False)
    restored.load_state_dict(queue.state_dict())
    assert set(queue.state_dict()) == {"features", "pointer", "count"}
    torch.testing.assert_close(restored.keys(), queue.keys())
    assert int(restored.pointer) == 3 and len(restored) == 3
    with pytest.raises(ValueError, match=re.escape("keys must have shape (B, 2), got (3, 5)")):
        queue.enqueue(torch.randn(3, 5))
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        FeatureQueue(0, 2)
    keys = torch.randn(2, 2, requires_grad=True)
    queue.enqueue(keys)
    assert not queue.features.requires_grad


def test_the_momentum_copy_follows_the_exponential_average() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    momentum = MomentumEncoder(online, momentum=0.9)
    expected = {name: p.detach().clone() for name, p in online.named_parameters()}
    for _ in range(3):
        with torch.no_grad():
            for p in online.parameters():
                p.add_(torch.randn_like(p))
        online(torch.randn(5, 3, dtype=torch.float64))  # moves the running statistics
        momentum.update(online)
        for name, p in online.named_parameters():
            expected[name] = 0.9 * expected[name] + 0.1 * p.detach()
    for name, p in momentum.module.named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-12, atol=1e-12)
        assert not p.requires_grad
    for (name, buffer), (_, theirs) in zip(
        momentum.module.named_buffers(), online.named_buffers(), strict=True
    ):
        assert torch.equal(buffer, theirs), name
    output = momentum(torch.randn(5, 3, dtype=torch.float64))
    assert not output.requires_grad
    assert "module.0.weight" in momentum.state_dict()


def test_momentum_zero_copies_and_one_freezes() -> None:
    online = nn.Linear(2, 2)
    copying, frozen = MomentumEncoder(online, 0.0), MomentumEncoder(online, 1.0)
    start = online.weight.detach().clone()
    with torch.no_grad():
        online.weight.mul_(3.0)
    copying.update(online)
    frozen.update(online)
    assert torch.equal(copying.module.weight, online.weight)
    assert torch.equal(frozen.module.weight, start)


def test_the_momentum_update_needs_the_same_module() -> None:
    momentum = MomentumEncoder(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="online must have the parameters"):
        momentum.update(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="momentum must be in"):
        MomentumEncoder(nn.Linear(2, 2), 1.5)


def _queue_worker(rank: int, port: int) -> None:
    join_group(rank, port, timeout=30.0)
    try:
        queue = FeatureQueue(5, 2).double()
        reference = FeatureQueue(5, 2, gather_distributed=False).double()
        for step, rows in enumerate((2, 1, 3)):
            # every rank's keys: rank r's rows hold (step, r, i)
            parts = [
                torch.tensor([[step * 10 + r, i] for i in range(rows + r)], dtype=torch.float64)
                for r in range(2)
            ]
            queue.enqueue(parts[rank])
            reference.enqueue(torch.cat(parts))  # rank 0's rows first
            torch.testing.assert_close(queue.features, reference.features)
            assert int(queue.pointer) == int(reference.pointer)
            assert int(queue.count) == int(reference.count)
        wide = torch.randn(2, 2 + rank)
        with pytest.raises(
            ValueError,
            match=re.escape("keys must have shape (B, 2), got (2, 3) (raised on rank 1 of 2)"),
        ):
            queue.enqueue(wide)
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_two_ranks_hold_the_queue_of_their_keys_in_rank_order() -> None:
    run_on_ranks(_queue_worker, join_timeout=90.0)
