"""Optimisation steps: clipping, several optimisers, AMP, step outputs, epoch averages."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from reidkit import distributed
from reidkit.engine import MetricTracker, Trainer, TrainingRun, move_to_device


def test_clipping_scales_the_gradient_to_the_maximum_norm() -> None:
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))
    trainer = Trainer(torch.optim.SGD([weight], lr=1.0), grad_clip_norm=1.0)
    trainer.optimize((weight * torch.tensor([3.0, 4.0])).sum())  # gradient (3, 4), norm 5
    torch.testing.assert_close(weight.detach(), torch.tensor([3.0 - 0.6, 4.0 - 0.8]))


def test_every_optimiser_steps_on_the_shared_loss() -> None:
    a, b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
    trainer = Trainer([torch.optim.SGD([a], lr=0.5), torch.optim.SGD([b], lr=0.25)])
    trainer.optimize(2 * a.sum() + 4 * b.sum())
    assert a.item() == pytest.approx(0.0) and b.item() == pytest.approx(0.0)
    assert trainer.learning_rates() == {"lr": 0.5, "lr_1": 0.25}
    named = Trainer({"prompts": trainer.optimizers[0], "agents": trainer.optimizers[1]})
    assert named.learning_rates() == {"lr_prompts": 0.5, "lr_agents": 0.25}


def test_run_epoch_averages_what_the_step_reports() -> None:
    weight = nn.Parameter(torch.zeros(1))
    trainer = Trainer(torch.optim.SGD([weight], lr=0.0))
    values = iter([1.0, 2.0, 6.0])

    def step(batch):
        value = next(values)
        return {"loss": weight.sum() + value, "double": 2 * value}

    metrics = trainer.run_epoch(range(3), step)
    assert metrics == pytest.approx({"loss": 3.0, "double": 6.0, "lr": 0.0, "skipped_steps": 0})


def test_a_step_with_a_nonfinite_loss_is_skipped_and_counted() -> None:
    weight = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    trainer = Trainer(optimizer)
    inputs = [torch.tensor([1.0, 2.0]), torch.tensor([float("nan"), 0.0]), torch.tensor([3.0, 1.0])]
    seen_grads = []

    def step(x):
        seen_grads.append(weight.grad)
        return (weight * x).sum()

    metrics = trainer.run_epoch(inputs, step)
    # The reference: Adam's update written out for the two finite steps (gradient = x).
    expected, m, v = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.0, 0.0
    losses = []
    for t, x in enumerate([inputs[0], inputs[2]], start=1):
        g = x.double()
        losses.append(float(expected @ g))
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        expected -= 0.1 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    torch.testing.assert_close(weight.detach().double(), expected)
    assert int(optimizer.state[weight]["step"]) == 2
    assert seen_grads[2] is None  # the skipped step left no gradient behind
    assert metrics["skipped_steps"] == 1 and trainer.skipped_steps == 1
    assert metrics["loss"] == pytest.approx(sum(losses) / 2)  # over the steps taken

    unguarded = Trainer(torch.optim.SGD([weight], lr=0.1), skip_nonfinite=False)
    unguarded.run_epoch([torch.tensor([float("inf"), 1.0])], lambda x: (weight * x).sum())
    assert unguarded.skipped_steps == 0 and not torch.isfinite(weight).all()


def test_skipped_steps_reach_the_report(tmp_path) -> None:
    weight = nn.Parameter(torch.zeros(1))
    run = TrainingRun(tmp_path, stages=["only"])
    trainer = Trainer(torch.optim.SGD([weight], lr=0.1))
    losses = iter([1.0, float("nan"), float("-inf"), 2.0, 3.0, float("nan")])
    run.fit("only", trainer, range(3), lambda _: weight.sum() + next(losses), epochs=2)
    epochs = json.loads((tmp_path / "report.json").read_text())["stages"]["only"]["epochs"]
    assert [e["skipped_steps"] for e in epochs] == [2, 1]
    # Gradient 1: each step taken lowers the weight by 0.1; skipped ones leave it.
    assert [e["loss"] for e in epochs] == pytest.approx([1.0, ((2.0 - 0.1) + (3.0 - 0.2)) / 2])
    assert weight.item() == pytest.approx(-0.3)


def test_amp_on_the_cpu_runs_in_bfloat16() -> None:
    layer = nn.Linear(4, 2)
    trainer = Trainer(torch.optim.SGD(layer.parameters(), lr=0.1), amp=True)
    seen = []

    def step(batch):
        output = layer(batch)
        seen.append(output.dtype)
        return output.float().pow(2).mean()

    trainer.run_epoch([torch.randn(3, 4)], step)
    assert seen == [torch.bfloat16]


def test_state_dict_round_trip() -> None:
    weight = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    trainer = Trainer(optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5))
    trainer.optimize(weight.pow(2).sum())
    trainer.end_epoch()
    other_weight = nn.Parameter(torch.ones(2))
    other_optimizer = torch.optim.Adam([other_weight], lr=0.1)
    other = Trainer(other_optimizer, torch.optim.lr_scheduler.StepLR(other_optimizer, 1, 0.5))
    other.load_state_dict(trainer.state_dict())
    assert other.learning_rates() == {"lr": 0.05}
    torch.testing.assert_close(
        other_optimizer.state[other_weight]["exp_avg"], optimizer.state[weight]["exp_avg"]
    )
    with pytest.raises(ValueError, match="optimisers"):
        Trainer(torch.optim.SGD([weight], lr=1.0)).load_state_dict(trainer.state_dict())


def test_bad_step_output_and_options() -> None:
    weight = nn.Parameter(torch.zeros(2))
    trainer = Trainer(torch.optim.SGD([weight], lr=1.0))
    with pytest.raises(ValueError, match="'loss'"):
        trainer.run_epoch([0], lambda batch: {"total": weight.sum()})
    with pytest.raises(ValueError, match="scalar"):
        trainer.run_epoch([0], lambda batch: weight * 2)
    with pytest.raises(ValueError, match="grad_clip_norm"):
        Trainer(torch.optim.SGD([weight], lr=1.0), grad_clip_norm=0.0)
    with pytest.raises(ValueError, match="optimizers"):
        Trainer([])


def test_metric_tracker_and_move_to_device() -> None:
    tracker = MetricTracker()
    tracker.update({"loss": torch.tensor(1.0), "acc": 0.5})
    tracker.update({"loss": torch.tensor(3.0)})
    assert tracker.averages() == {"loss": 2.0, "acc": 0.5}
    with pytest.raises(ValueError, match="scalar"):
        tracker.update({"loss": torch.ones(2)})
    batch = move_to_device((torch.ones(1), [torch.zeros(1)], {"k": torch.ones(1)}, "path"), "cpu")
    assert isinstance(batch, tuple) and batch[3] == "path" and batch[2]["k"].device.type == "cpu"


def _skip_on_every_rank(rank: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    distributed.init_distributed("cpu")
    try:
        layer = nn.Linear(2, 1, bias=False)
        network = distributed.data_parallel(layer)  # rank 0's weights on both ranks
        start = layer.weight.detach().clone()
        trainer = Trainer(torch.optim.SGD(layer.parameters(), lr=0.1))
        inputs = [
            torch.tensor([[1.0, 2.0]]),
            torch.tensor([[3.0, 4.0]]),
            torch.tensor([[5.0, 6.0]]),
        ]
        poisoned = float("nan") if rank == 1 else 1.0  # rank 1 alone sees a NaN, at step 2

        def step(x):
            scale = poisoned if x[0, 0] == 3.0 else 1.0
            return network(x).sum() * scale

        metrics = trainer.run_epoch(inputs, step)
        assert metrics["skipped_steps"] == 1 and trainer.skipped_steps == 1
        # DDP averages the gradients (x) of the two ranks: the steps on batches 1 and 3 only.
        expected = start - 0.1 * (inputs[0] + inputs[2])
        torch.testing.assert_close(layer.weight.detach(), expected)
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_every_rank_skips_a_step_whose_loss_is_not_finite_on_one() -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_skip_on_every_rank, args=(port,), nprocs=2, start_method=start_method)
