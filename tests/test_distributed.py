"""Two gloo processes on the CPU: gathers with gradients, and losses equal to one process.

Both ranks draw the same global batch, each takes its half, and the results are compared with
one process computing on the concatenated batch. Gradients follow DistributedDataParallel's
convention: the parameter gradients averaged over the ranks must equal the single-process ones.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from reidkit import distributed
from reidkit.engine import CheckpointManager, MetricTracker, TrainingState
from reidkit.losses import SupConLoss

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(rank: int) -> torch.Tensor:
    """Rank 0 holds 2 rows, rank 1 holds 3, with values that tell them apart."""
    return torch.arange((2 + rank) * 2, dtype=torch.float64).reshape(2 + rank, 2) + 10 * rank


def _check_gather_with_unequal_sizes(rank: int) -> None:
    local = _rows(rank).requires_grad_()
    rows = local.shape[0]
    gathered = distributed.all_gather_with_grad(local)
    torch.testing.assert_close(gathered.detach(), torch.cat([_rows(0), _rows(1)]))
    weights = [torch.arange(10, dtype=torch.float64).reshape(5, 2) * (r + 1) for r in range(2)]
    (gathered * weights[rank]).sum().backward()
    start = 0 if rank == 0 else 2
    summed = sum(w[start : start + rows] for w in weights)
    torch.testing.assert_close(local.grad, summed)
    labels = distributed.all_gather(torch.full((rows,), rank))
    assert labels.tolist() == [0, 0, 1, 1, 1]


def _check_supcon_equals_one_process(rank: int, normalize: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 3, 0])
    torch.manual_seed(1)
    image_head = nn.Linear(5, 4).double()
    text_head = nn.Linear(5, 4).double()
    loss_fn = SupConLoss(normalize=normalize, temperature=0.5)

    def objective(x, y, supcon):
        images, texts = image_head(x), text_head(x.flip(1))
        return supcon(images, texts, y) + supcon(texts, images, y)

    local = slice(4 * rank, 4 * rank + 4)
    loss = objective(inputs[local], labels[local], loss_fn)
    loss.backward()
    parameters = [*image_head.parameters(), *text_head.parameters()]
    averaged = [distributed.all_reduce_mean(p.grad) for p in parameters]
    mean_loss = distributed.all_reduce_mean(loss.detach())

    for p in parameters:
        p.grad = None
    single = SupConLoss(normalize=normalize, temperature=0.5, gather_distributed=False)
    reference = objective(inputs, labels, single)
    reference.backward()
    torch.testing.assert_close(mean_loss, reference.detach())
    for grad, p in zip(averaged, parameters):
        torch.testing.assert_close(grad, p.grad)


def _check_checkpoint_keeps_every_rank_generator(rank: int, directory: str) -> None:
    torch.manual_seed(100 + rank)
    manager = CheckpointManager(directory, stages=["only"])
    manager.track("layer", nn.Linear(2, 2))
    manager.save(TrainingState("only", 1, False))
    expected = torch.rand(4)
    resumed = CheckpointManager(directory, stages=["only"])
    resumed.load(os.path.join(directory, "last.pt"))
    torch.manual_seed(7)
    assert resumed.resume_epoch("only") == 1
    torch.testing.assert_close(torch.rand(4), expected)


def _worker(rank: int, port: int, directory: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    context = distributed.init_distributed("cpu")
    try:
        assert context.backend == "gloo" and context.world_size == WORLD_SIZE
        assert distributed.get_rank() == rank and distributed.is_main_process() == (rank == 0)
        assert distributed.broadcast_object({"from": rank}) == {"from": 0}
        assert distributed.all_gather_object(rank) == [0, 1]
        tracker = MetricTracker()
        tracker.update({"loss": float(rank)})
        assert tracker.averages(across_ranks=True) == {"loss": 0.5}
        _check_gather_with_unequal_sizes(rank)
        _check_supcon_equals_one_process(rank, normalize=False)
        _check_supcon_equals_one_process(rank, normalize=True)
        _check_checkpoint_keeps_every_rank_generator(rank, directory)
        wrapped = distributed.data_parallel(nn.Linear(2, 2))
        assert isinstance(wrapped, nn.parallel.DistributedDataParallel)
        assert isinstance(distributed.unwrap_model(wrapped), nn.Linear)
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_two_gloo_processes_match_one_process(tmp_path) -> None:
    if not dist.is_available():
        # Some torch builds (e.g. macOS wheels without gloo) ship no torch.distributed.
        pytest.skip("torch.distributed is not available")
    # fork skips re-importing torch in each child (seconds on a busy 2-core machine); the
    # children use one thread, so no OpenMP pool inherited from the parent is ever entered.
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _worker,
        args=(_free_port(), str(tmp_path)),
        nprocs=WORLD_SIZE,
        start_method=start_method,
    )


def test_single_process_helpers_are_identities() -> None:
    tensor = torch.randn(3, 2)
    assert distributed.all_gather_with_grad(tensor) is tensor
    assert distributed.all_gather(tensor) is tensor
    assert distributed.all_reduce_mean(tensor) is tensor
    assert distributed.get_world_size() == 1 and distributed.is_main_process()
    assert distributed.broadcast_object("x") == "x"
    layer = nn.Linear(2, 2)
    assert distributed.unwrap_model(layer) is layer
    assert distributed.data_parallel(layer) is layer
    with pytest.raises(ValueError, match="tensor"):
        distributed.all_gather_with_grad(torch.tensor(1.0))


def test_init_without_torchrun_is_a_single_process(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = distributed.init_distributed("cpu")
    assert (context.rank, context.world_size, context.backend) == (0, 1, None)
    assert context.device == torch.device("cpu") and context.is_main_process
    with pytest.raises(ValueError, match="device"):
        distributed.init_distributed("tpu")
