"""Two gloo processes on the CPU hold the same memory and loss as one process on the whole batch.

Both ranks draw the same global batch and each takes its half; the single-process reference
updates the memory with the concatenated batch (rank 0's rows first). Bad input on one rank
raises the same error on both, and a NaN row on one rank is skipped by both.
"""

from __future__ import annotations

import re

import pytest
import torch

from reidkit import distributed
from reidkit.losses.pcl import PCLLoss
from reidkit.memory import PrototypeMemory
from tests.gloo import join_group, run_on_ranks


def _check_update_and_loss(rank: int, update_rule: str) -> None:
    generator = torch.Generator().manual_seed(0)
    train_features = torch.randn(12, 6, generator=generator, dtype=torch.float64)
    train_labels = torch.arange(12) % 4
    inputs = torch.randn(10, 6, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 3, 0, 2, 1, 1, 3, 0])
    torch.manual_seed(1)
    head = torch.nn.Linear(6, 6).double()
    loss_fn = PCLLoss(temperature=0.2)

    # Rank 1 sees slightly different train features: initialisation follows rank 0.
    noisy = train_features + 1e-3 * rank
    memory = PrototypeMemory.from_features(noisy, train_labels, update_rule=update_rule).double()
    local = slice(5 * rank, 5 * rank + 5)
    features = head(inputs[local])
    loss = loss_fn(features, labels[local], memory.centroids)
    memory.update(features, labels[local])
    loss.backward()
    grads = [distributed.all_reduce_mean(p.grad) for p in head.parameters()]
    mean_loss = distributed.all_reduce_mean(loss.detach())

    reference = PrototypeMemory.from_features(
        train_features, train_labels, update_rule=update_rule, gather_distributed=False
    ).double()
    head.zero_grad()
    whole = head(inputs)
    reference_loss = loss_fn(whole, labels, reference.centroids)
    reference.update(whole, labels)
    reference_loss.backward()

    torch.testing.assert_close(memory.centroids, reference.centroids)
    torch.testing.assert_close(mean_loss, reference_loss.detach())
    for grad, p in zip(grads, head.parameters()):
        torch.testing.assert_close(grad, p.grad)


def _check_nonfinite_rows_are_skipped_on_every_rank(rank: int) -> None:
    generator = torch.Generator().manual_seed(2)
    train_features = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    batch = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    batch[4, 1] = float("nan")  # row 1 of rank 1's half
    labels = torch.tensor([0, 1, 1, 3, 2, 0])
    memory = PrototypeMemory.from_features(train_features, torch.arange(8) % 4).double()
    reference = PrototypeMemory.from_features(
        train_features, torch.arange(8) % 4, gather_distributed=False
    ).double()
    local = slice(3 * rank, 3 * rank + 3)
    with pytest.warns(RuntimeWarning, match="skipped feature rows holding NaN or inf"):
        memory.update(batch[local], labels[local])
    finite = torch.isfinite(batch).all(dim=1)
    reference.update(batch[finite], labels[finite])
    torch.testing.assert_close(memory.centroids, reference.centroids)
    assert memory.num_nonfinite_skipped == 1  # on both ranks: counted over the gathered batch


def _raises_on_every_rank(call, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def _check_bad_input_on_one_rank(rank: int) -> None:
    features = torch.randn(8, 3, dtype=torch.float64)
    labels = torch.arange(8) % 4
    memory = PrototypeMemory.from_features(features, labels)
    bad_labels = torch.tensor([0, 4]) if rank == 1 else torch.tensor([0, 3])
    _raises_on_every_rank(
        lambda: memory.update(torch.randn(2, 3), bad_labels),
        "labels must lie in [0, 4), got values outside (raised on rank 1 of 2)",
    )
    poisoned = features.clone()
    poisoned[3, 0] = float("nan") if rank == 1 else 0.0
    _raises_on_every_rank(
        lambda: PrototypeMemory.from_features(poisoned, labels),
        "features must be finite; rows holding NaN or inf: [3] (raised on rank 1 of 2)",
    )
    flat = features.flatten() if rank == 1 else features
    _raises_on_every_rank(
        lambda: PrototypeMemory.from_features(flat, labels),
        "features must be a (N, d) tensor, got shape (24,) and dtype torch.float64 (raised on "
        "rank 1 of 2)",
    )
    wide = torch.randn(2, 3 + rank)
    _raises_on_every_rank(
        lambda: memory.update(wide, torch.tensor([0, 1])),
        "features must be a floating (N, 3) tensor, got shape (2, 4) and dtype torch.float32 "
        "(raised on rank 1 of 2)",
    )


def _worker(rank: int, port: int) -> None:
    join_group(rank, port, timeout=30.0)  # a hang would turn into an error after 30 s
    try:
        _check_update_and_loss(rank, "all")
        _check_update_and_loss(rank, "hardest")
        _check_nonfinite_rows_are_skipped_on_every_rank(rank)
        _check_bad_input_on_one_rank(rank)
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_two_gloo_processes_match_one_process() -> None:
    run_on_ranks(_worker, join_timeout=90.0)
