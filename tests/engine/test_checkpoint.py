"""Atomic checkpoint files, random-generator round-trips, and resuming a two-stage run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reidkit.engine import (
    CheckpointManager,
    Trainer,
    TrainingRun,
    TrainingState,
    WarmupMultiStepLR,
    atomic_torch_save,
    capture_rng_state,
    resolve_resume_path,
    restore_rng_state,
    seed_everything,
)


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, path)

    def torn_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_state_round_trip() -> None:
    seed_everything(3)
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    torch.rand(10)
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == second[0] and first[1] == second[1]
    torch.testing.assert_close(first[2], second[2])


def test_tracked_objects_built_after_loading_are_restored(tmp_path) -> None:
    saved = nn.Linear(2, 2)
    manager = CheckpointManager(tmp_path, stages=["one", "two"])
    manager.track("late", saved)
    manager.save(TrainingState("two", 1, False), extra={"note": 7})
    loader = CheckpointManager(tmp_path, stages=["one", "two"])
    state = loader.load(tmp_path / "last.pt")
    assert state == TrainingState("two", 1, False)
    assert loader.extra == {"note": 7}
    assert loader.stage_completed("one") and not loader.stage_completed("two")
    late = loader.track("late", nn.Linear(2, 2))
    torch.testing.assert_close(late.weight, saved.weight)
    with pytest.raises(ValueError, match="completed before"):
        loader.resume_epoch("one")


def test_resolve_resume_path(tmp_path) -> None:
    assert resolve_resume_path(None, tmp_path) is None
    assert resolve_resume_path("auto", tmp_path) is None
    (tmp_path / "last.pt").write_bytes(b"")
    assert resolve_resume_path("auto", tmp_path) == tmp_path / "last.pt"
    assert resolve_resume_path(tmp_path, "elsewhere") == tmp_path / "last.pt"
    with pytest.raises(ValueError, match="resume"):
        resolve_resume_path(tmp_path / "missing.pt", tmp_path)


class _Interrupt(Exception):
    pass


def _train(output_dir, *, resume=None, crash_at_step=None, seed=0):
    """Two stages, Adam + warm-up schedule, shuffled loader and dropout: RNG everywhere."""
    seed_everything(seed)
    generator = torch.Generator().manual_seed(99)
    data = TensorDataset(torch.randn(24, 3, generator=generator), torch.arange(24) % 3)
    loader = DataLoader(data, batch_size=6, shuffle=True)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    run = TrainingRun(output_dir, stages=["first", "second"], config={"seed": seed}, resume=resume)
    run.track("model", model)
    calls = {"first": 0, "second": 0}

    def step_for(stage):
        def step(batch):
            calls[stage] += 1
            if crash_at_step is not None and calls["second"] == crash_at_step:
                raise _Interrupt
            x, y = batch
            return F.cross_entropy(F.dropout(model(x), 0.3, training=True), y)

        return step

    for stage, epochs in (("first", 2), ("second", 3)):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        scheduler = WarmupMultiStepLR(optimizer, milestones=(2,), warmup_epochs=1)
        trainer = Trainer(optimizer, scheduler, grad_clip_norm=5.0)
        run.fit(stage, trainer, loader, step_for(stage), epochs=epochs, evaluate=lambda: {"x": 1})
    run.finish({"done": True})
    return model, calls


def test_resume_in_a_later_stage_reproduces_the_uninterrupted_run(tmp_path) -> None:
    reference, _ = _train(tmp_path / "straight")
    # 4 batches per epoch: the crash hits the second epoch of the second stage.
    with pytest.raises(_Interrupt):
        _train(tmp_path / "crashed", crash_at_step=6)
    resumed, calls = _train(tmp_path / "crashed", resume="auto", seed=12345)
    assert calls == {"first": 0, "second": 2 * 4}
    for a, b in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    straight = json.loads((tmp_path / "straight" / "report.json").read_text())
    crashed = json.loads((tmp_path / "crashed" / "report.json").read_text())
    for stage in ("first", "second"):
        losses = [e["loss"] for e in straight["stages"][stage]["epochs"]]
        assert [e["loss"] for e in crashed["stages"][stage]["epochs"]] == losses
        assert [e["epoch"] for e in crashed["stages"][stage]["epochs"]] == list(
            range(1, len(losses) + 1)
        )
    assert crashed["resumes"][0]["stage"] == "second" and crashed["resumes"][0]["epoch"] == 1
    assert (tmp_path / "crashed" / "first_final.pt").is_file()
    assert (tmp_path / "crashed" / "second_final.pt").is_file()


def test_resume_after_the_last_stage_runs_nothing(tmp_path) -> None:
    _train(tmp_path)
    _, calls = _train(tmp_path, resume=tmp_path / "last.pt")
    assert calls == {"first": 0, "second": 0}


def test_bad_stage_names(tmp_path) -> None:
    with pytest.raises(ValueError, match="stages"):
        CheckpointManager(tmp_path, stages=["a", "a"])
    manager = CheckpointManager(tmp_path, stages=["a"])
    with pytest.raises(ValueError, match="stage must be one of"):
        manager.save(TrainingState("b", 1, False))
    with pytest.raises(ValueError, match="state_dict"):
        manager.track("x", object())
