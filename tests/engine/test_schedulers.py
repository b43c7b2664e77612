"""Warm-up schedules against values computed by hand from the papers' settings."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reidkit.engine import Trainer, WarmupCosineLR, WarmupLinearLR, WarmupMultiStepLR


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _rates(scheduler, optimizer, epochs: int) -> list[float]:
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_mmpl_stage_two_schedule() -> None:
    # Warm-up over 10 epochs from 5e-7 to 5e-6, then x0.1 at epochs 30 and 50 (MMPL sec. 4.2).
    optimizer = _optimizer(5e-6)
    scheduler = WarmupMultiStepLR(optimizer, milestones=(30, 50), gamma=0.1, warmup_epochs=10)
    rates = _rates(scheduler, optimizer, 60)
    assert rates[0] == pytest.approx(5e-7)
    assert rates[1] == pytest.approx(5e-7 + 4.5e-6 * 1 / 10)
    assert rates[5] == pytest.approx(2.75e-6)
    assert rates[9] == pytest.approx(5e-7 + 4.5e-6 * 9 / 10)
    assert rates[10:30] == pytest.approx([5e-6] * 20)
    assert rates[30:50] == pytest.approx([5e-7] * 20)
    assert rates[50:60] == pytest.approx([5e-8] * 10)


def test_warmup_then_cosine() -> None:
    optimizer = _optimizer(0.008)
    scheduler = WarmupCosineLR(
        optimizer, total_epochs=120, warmup_epochs=10, warmup_start_factor=0.01
    )
    rates = _rates(scheduler, optimizer, 120)
    assert rates[0] == pytest.approx(0.008 * 0.01)
    assert rates[4] == pytest.approx(0.008 * (0.01 + 0.99 * 0.4))
    assert rates[10] == pytest.approx(0.008)
    assert rates[65] == pytest.approx(0.008 * 0.5 * (1 + math.cos(math.pi * 55 / 110)))
    assert rates[119] == pytest.approx(0.008 * 0.5 * (1 + math.cos(math.pi * 109 / 110)))
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_cosine_reaches_the_final_factor() -> None:
    optimizer = _optimizer(1.0)
    scheduler = WarmupCosineLR(optimizer, total_epochs=4, warmup_epochs=0, final_factor=0.2)
    assert _rates(scheduler, optimizer, 5) == pytest.approx(
        [1.0, 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2, 0.6, 0.2 + 0.8 * (1 - 0.5**0.5) / 2, 0.2]
    )


def test_state_dict_resumes_the_schedule() -> None:
    optimizer = _optimizer(1.0)
    scheduler = WarmupMultiStepLR(optimizer, milestones=(3,), warmup_epochs=2)
    _rates(scheduler, optimizer, 4)
    state = scheduler.state_dict()
    fresh_optimizer = _optimizer(1.0)
    fresh = WarmupMultiStepLR(fresh_optimizer, milestones=(3,), warmup_epochs=2)
    fresh.load_state_dict(state)
    fresh.step()
    scheduler.step()
    assert fresh.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert fresh.get_last_lr() == pytest.approx([0.1])


def test_several_groups_keep_their_ratio() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    WarmupMultiStepLR(optimizer, milestones=(), warmup_epochs=4, warmup_start_factor=0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda o: WarmupMultiStepLR(o, milestones=(5, 3)), "milestones"),
        (lambda o: WarmupMultiStepLR(o, milestones=(3,), gamma=0.0), "gamma"),
        (lambda o: WarmupMultiStepLR(o, (3,), warmup_epochs=-1), "warmup_epochs"),
        (lambda o: WarmupMultiStepLR(o, (3,), warmup_start_factor=0.0), "warmup_start_factor"),
        (lambda o: WarmupCosineLR(o, total_epochs=10, warmup_epochs=10), "total_epochs"),
        (lambda o: WarmupCosineLR(o, total_epochs=20, final_factor=2.0), "final_factor"),
    ],
)
def test_bad_options(build, match) -> None:
    with pytest.raises(ValueError, match=match):
        build(_optimizer(1.0))


def test_valpat_warmup_then_linear_decay_per_step() -> None:
    # VAL-PAT sec. 4.1: 1e-6 -> 1e-3 in 7 epochs, then linearly back to 1e-6 (here 10 steps
    # per epoch, 20 epochs).
    optimizer = _optimizer(1e-3)
    scheduler = WarmupLinearLR(
        optimizer, total_steps=200, warmup_steps=70, warmup_start_factor=1e-3, final_factor=1e-3
    )
    assert scheduler.interval == "step"
    rates = _rates(scheduler, optimizer, 205)
    assert rates[0] == pytest.approx(1e-6)
    assert rates[35] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 35 / 70)
    assert rates[70] == pytest.approx(1e-3)
    assert rates[135] == pytest.approx(1e-3 - (1e-3 - 1e-6) * 65 / 130)
    assert rates[200:] == pytest.approx([1e-6] * 5)
    assert all(a >= b for a, b in itertools.pairwise(rates[70:]))


def test_the_warmup_covers_a_fraction_of_the_steps() -> None:
    assert WarmupLinearLR.steps_for(15, 100, 0.1) == (1500, 150)  # UniPT: 10 % of the steps
    assert WarmupLinearLR.steps_for(1, 3, 0.9) == (3, 2)  # one step of decay is left
    with pytest.raises(ValueError, match="total_steps must exceed warmup_steps=5"):
        WarmupLinearLR(_optimizer(1.0), total_steps=5, warmup_steps=5)


def test_the_trainer_steps_per_step_schedules_after_every_step_taken() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    per_step = WarmupLinearLR(optimizer, total_steps=10, warmup_steps=0)
    trainer = Trainer(optimizer, [per_step])

    def step(batch: float) -> torch.Tensor:
        return parameter.sum() * batch

    trainer.run_epoch([1.0, float("nan"), 1.0, 1.0], step)  # the NaN step is skipped
    assert per_step.last_epoch == 3
    trainer.end_epoch()  # a per-step schedule does not move at the end of an epoch
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.7)
