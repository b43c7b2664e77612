"""Two gloo processes on the CPU: gathers with gradients, and losses equal to one process.

Both ranks draw the same global batch, each takes its half, and the results are compared with
one process computing on the concatenated batch. Gradients follow DistributedDataParallel's
convention: the parameter gradients averaged over the ranks must equal the single-process ones.
"""

from __future__ import annotations

import datetime
import os
import re
from multiprocessing.synchronize import Event

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from reidkit import distributed
from reidkit.engine import CheckpointManager, MetricTracker, TrainingState
from reidkit.losses import SupConLoss
from tests.gloo import WORLD_SIZE, join_group, run_on_ranks


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
    context = join_group(rank, port)
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
    run_on_ranks(_worker, str(tmp_path))


def _raises_on_every_rank(call, message: str, kind: type[Exception] = ValueError) -> None:
    """``call`` raises ``kind`` with exactly ``message`` here, and the ranks stay in step."""
    with pytest.raises(kind, match=f"^{re.escape(message)}$"):
        call()
    assert distributed.all_gather_object("next") == ["next"] * WORLD_SIZE


def _supcon_inputs(rank: int, **bad_on_rank_1) -> dict:
    inputs = {
        "anchors": torch.randn(3, 4),
        "targets": torch.randn(3, 4),
        "anchor_labels": torch.tensor([0, 1, 1]),
    }
    return inputs | (bad_on_rank_1 if rank == 1 else {})


def _check_bad_input_on_one_rank(rank: int) -> None:
    gather = distributed.all_gather
    _raises_on_every_rank(
        lambda: gather(torch.zeros(2) if rank == 0 else [1, 2]),
        "tensor must be a torch.Tensor with at least one dimension (B, ...), got list (raised "
        "on rank 1 of 2)",
    )
    _raises_on_every_rank(
        lambda: distributed.all_gather_with_grad(torch.randn(2, 4 + rank, requires_grad=True)),
        "tensor must have the same trailing shape and dtype on every rank, got (4,) "
        "torch.float32 on rank 0, (5,) torch.float32 on rank 1",
    )
    _raises_on_every_rank(
        lambda: gather(torch.zeros(3, dtype=torch.int64 if rank == 0 else torch.int32)),
        "tensor must have the same trailing shape and dtype on every rank, got () torch.int64 "
        "on rank 0, () torch.int32 on rank 1",
    )
    _raises_on_every_rank(
        lambda: distributed.all_reduce_mean(torch.ones(2 + rank, dtype=torch.float64)),
        "tensor must have the same shape and dtype on every rank, got (2,) torch.float64 on "
        "rank 0, (3,) torch.float64 on rank 1",
    )
    _raises_on_every_rank(
        lambda: distributed.all_reduce_mean(torch.ones(()) if rank == 0 else 1.0),
        "tensor must be a torch.Tensor, got float (raised on rank 1 of 2)",
    )
    supcon = SupConLoss()
    _raises_on_every_rank(
        lambda: supcon(**_supcon_inputs(rank, targets=torch.randn(3, 5))),
        "targets must have the anchors' width 4, got shape (3, 5) (raised on rank 1 of 2)",
    )
    _raises_on_every_rank(
        lambda: supcon(**_supcon_inputs(rank, anchor_labels=torch.zeros(3))),
        "anchor_labels must be an integer tensor of shape (3,), got shape (3,) and dtype "
        "torch.float32 (raised on rank 1 of 2)",
    )
    # Both ranks fail, differently: every rank raises the lowest rank's error.
    scale = -1.0 if rank == 0 else 1.0
    _raises_on_every_rank(
        lambda: supcon(**_supcon_inputs(rank, anchor_labels=torch.zeros(3)), logit_scale=scale),
        "logit_scale must be finite and > 0, got -1.0 (raised on rank 0 of 2)",
    )

    def failing_block(error: Exception) -> None:
        with distributed.raise_on_every_rank():
            if rank == 1:
                raise error

    _raises_on_every_rank(
        lambda: failing_block(TypeError("labels must be a tensor")),
        "labels must be a tensor (raised on rank 1 of 2)",
        TypeError,
    )
    _raises_on_every_rank(
        lambda: failing_block(KeyError("x")), "KeyError: 'x' (raised on rank 1 of 2)", RuntimeError
    )
    with distributed.raise_on_every_rank(enabled=False):  # no collective: rank 1 alone may run it
        pass
    # The checks cost no change of result on good input.
    loss = supcon(**_supcon_inputs(rank))
    assert torch.isfinite(loss)


def _bad_input_worker(rank: int, port: int) -> None:
    join_group(rank, port, timeout=30.0)  # a hang would turn into an error after 30 s
    try:
        _check_bad_input_on_one_rank(rank)
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_bad_input_on_one_rank_raises_the_same_error_on_every_rank() -> None:
    run_on_ranks(_bad_input_worker, join_timeout=90.0)


def _timeout_worker(rank: int, port: int, rank_0_done: Event) -> None:
    join_group(rank, port, timeout=3.0)
    try:
        if rank == 0:
            with pytest.raises(RuntimeError):  # rank 1 never joins this all_reduce
                distributed.all_reduce_mean(torch.ones(1))
            rank_0_done.set()
        else:
            assert rank_0_done.wait(timeout=60.0)
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_a_collective_that_one_rank_skips_fails_after_the_timeout() -> None:
    # Without init_distributed's timeout, rank 0 would wait for 30 minutes: the join fails.
    run_on_ranks(_timeout_worker, mp.Event(), join_timeout=60.0)


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
    with pytest.raises(ValueError, match=r"^tensor must be a torch\.Tensor, got list$"):
        distributed.all_reduce_mean([1.0])


def test_raise_on_every_rank_lets_errors_pass_in_one_process() -> None:
    error = ValueError("features must be finite")
    with pytest.raises(ValueError) as raised, distributed.raise_on_every_rank():
        raise error
    assert raised.value is error


@pytest.mark.parametrize("timeout", [0, -5.0, float("inf"), float("nan"), "60", True])
def test_init_rejects_a_bad_timeout(monkeypatch, timeout) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    message = f"timeout must be a datetime.timedelta or a number of seconds > 0, got {timeout!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        distributed.init_distributed("cpu", timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be"):
        distributed.init_distributed("cpu", timeout=datetime.timedelta(0))
    assert distributed.init_distributed("cpu", timeout=datetime.timedelta(seconds=5)).rank == 0


def test_init_without_torchrun_is_a_single_process(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = distributed.init_distributed("cpu")
    assert (context.rank, context.world_size, context.backend) == (0, 1, None)
    assert context.device == torch.device("cpu") and context.is_main_process
    with pytest.raises(ValueError, match="device"):
        distributed.init_distributed("tpu")
