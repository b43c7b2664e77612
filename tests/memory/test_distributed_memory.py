"""Two gloo processes on the CPU hold the same memory and loss as one process on the whole batch.

Both ranks draw the same global batch and each takes its half; the single-process reference
updates the memory with the concatenated batch (rank 0's rows first).
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reidkit import distributed
from reidkit.losses.pcl import PCLLoss
from reidkit.memory import PrototypeMemory

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _worker(rank: int, port: int) -> None:
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    distributed.init_distributed("cpu")
    try:
        _check_update_and_loss(rank, "all")
        _check_update_and_loss(rank, "hardest")
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_two_gloo_processes_match_one_process() -> None:
    if not dist.is_available():
        # Some torch builds (e.g. macOS wheels without gloo) ship no torch.distributed.
        pytest.skip("torch.distributed is not available")
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD_SIZE, join=True)
