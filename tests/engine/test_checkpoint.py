"""Checkpoint files: atomic and durable writes, safe and checked loading, exact resumes."""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reidkit.data import build_train_transforms, make_feature_loader, make_train_loader
from reidkit.engine import (
    CheckpointError,
    CheckpointManager,
    RunReport,
    Trainer,
    TrainingRun,
    TrainingState,
    WarmupMultiStepLR,
    atomic_torch_save,
    atomic_write_text,
    capture_rng_state,
    read_checkpoint,
    resolve_resume_path,
    restore_rng_state,
    seed_everything,
)
from tests.engine.helpers import assert_same_final_state

# ----------------------------------------------------------------------------------------------
# Writing


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


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX notions")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_are_created_with_the_umask(tmp_path, umask) -> None:
    previous = os.umask(umask)
    try:
        manager = CheckpointManager(tmp_path, stages=["only"])
        manager.track("model", nn.Linear(2, 2))
        manager.save(TrainingState("only", 1, True))
        RunReport(tmp_path / "report.json").save()
        atomic_write_text("x", tmp_path / "note.txt")
    finally:
        os.umask(previous)
    for name in ("last.pt", "only_final.pt", "report.json", "note.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="folders cannot be opened here")
def test_the_folder_is_flushed_after_the_rename(tmp_path, monkeypatch) -> None:
    events: list[str] = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(descriptor: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"
        events.append(f"fsync {kind}")
        fsync(descriptor)

    def logged_replace(source, destination) -> None:
        events.append("replace")
        replace(source, destination)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    atomic_torch_save({"epoch": 1}, tmp_path / "last.pt")
    assert events == ["fsync file", "replace", "fsync folder"]


def test_stale_temporaries_are_removed_when_a_run_starts(tmp_path) -> None:
    stale = [
        ".last.pt.k3j9x_2a.tmp",  # a save killed by SIGKILL
        ".last.pt.0f1e2d3c.tmp",
        ".report.json.a1b2c3d4.tmp",
        ".first_final.pt.5e6f7a8b.tmp",
        ".first_final.pt.tmp",  # the name earlier versions used for the stage copy
    ]
    kept = ["last.pt", ".other.pt.a1b2c3d4.tmp", "last.pt.tmp", ".last.pt.backup", "notes.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".last.pt.folder.tmp").mkdir()
    # what a starting run builds (a new TrainingRun would refuse the folder: it holds last.pt)
    CheckpointManager(tmp_path, stages=["first", "second"])
    RunReport(tmp_path / "report.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, ".last.pt.folder.tmp"])


def test_save_refuses_state_that_would_need_code_to_load(tmp_path) -> None:
    class WithArray(nn.Module):
        def get_extra_state(self) -> Any:
            return {"mean": np.zeros(2)}

        def set_extra_state(self, state: Any) -> None:
            pass

    manager = CheckpointManager(tmp_path, stages=["only"])
    manager.track("stats", WithArray())
    with pytest.raises(ValueError, match=r"state of 'stats'.*_extra_state.*'mean'.*numpy\.ndarray"):
        manager.save(TrainingState("only", 1, False))
    with pytest.raises(ValueError, match="extra must hold only what JSON can hold"):
        CheckpointManager(tmp_path, stages=["only"]).save(
            TrainingState("only", 1, False), extra={"path": Path("x")}
        )
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Reading


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path) -> None:
    seed_everything(3)
    atomic_torch_save(capture_rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))  # noqa: NPY002
    torch.rand(10), random.random(), np.random.rand()  # noqa: NPY002
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))  # noqa: NPY002
    assert first[:3] == second[:3]
    assert torch.equal(first[3], second[3])


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    planted = tmp_path / "run" / "last.pt"
    planted.parent.mkdir()
    torch.save({"format": 2, "objects": Payload()}, planted)
    with pytest.raises(CheckpointError, match=f"checkpoint {planted} was refused.*could run code"):
        TrainingRun(tmp_path / "run", stages=["only"], resume="auto")
    assert not marker.exists()


def _format_1_checkpoint(path: Path) -> None:
    """What reidkit wrote before format 2: NumPy's random state as NumPy objects."""
    torch.save({"format": 1, "rng": [{"numpy": np.random.get_state()}]}, path)  # noqa: NPY002


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "cannot be read: it is empty"),
        (None, "cannot be read: it is truncated or not a torch.save file"),
        (b'{"stage": "only"}\n', "cannot be read: it is truncated or not a torch.save file"),
        (bytes(range(256)), "cannot be read: it is truncated or not a torch.save file"),
        ("zip", "cannot be read: it is truncated or not a torch.save file"),
        ("list", "holds no format number"),
        ("format 1", r"was refused.*numpy"),
        ("format 3", "has format 3, not 2"),
        ("no objects", r"lacks the entries \['objects'\]"),
    ],
)
def test_an_unreadable_checkpoint_names_the_file(tmp_path, content, reason) -> None:
    path = tmp_path / "last.pt"
    if content is None:
        manager = CheckpointManager(tmp_path, stages=["only"])
        manager.track("model", nn.Linear(16, 16))
        manager.save(TrainingState("only", 1, False))
        path.write_bytes(path.read_bytes()[:-200])
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a checkpoint")
    elif content == "list":
        torch.save([1, 2], path)
    elif content == "format 1":
        _format_1_checkpoint(path)
    elif content == "format 3":
        torch.save({"format": 3}, path)
    elif content == "no objects":
        manager = CheckpointManager(tmp_path, stages=["only"])
        manager.save(TrainingState("only", 1, False))
        payload = torch.load(path, weights_only=True)
        del payload["objects"]
        torch.save(payload, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} {reason}") as caught:
        CheckpointManager(tmp_path, stages=["only"]).load(path)
    assert "expected a reidkit checkpoint (format 2)" in str(caught.value)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _parameters(module: nn.Module) -> list[torch.Tensor]:
    return [value.clone() for value in module.state_dict().values()]


@pytest.mark.parametrize("defect", ["missing object", "wrong shape", "missing key", "rng"])
def test_a_failed_load_leaves_every_tracked_object_as_it_was(tmp_path, defect) -> None:
    writer = CheckpointManager(tmp_path, stages=["only"])
    writer.track("model", _model())
    writer.track("head", nn.Linear(2, 5))
    writer.save(TrainingState("only", 1, False))
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    if defect == "missing object":
        del payload["objects"]["head"]
        reason = r"holds no state for the tracked objects \['head'\]"
    elif defect == "wrong shape":
        payload["objects"]["head"]["weight"] = torch.zeros(6, 2)
        reason = r"does not fit the module tracked as 'head': weight has shape \(6, 2\)"
    elif defect == "missing key":
        del payload["objects"]["head"]["bias"]
        reason = r"does not fit the module tracked as 'head': missing entries \['bias'\]"
    else:
        payload["rng"][0]["numpy"]["position"] = 10_000
        reason = "has an invalid random state for rank 0"
    torch.save(payload, tmp_path / "last.pt")

    reader = CheckpointManager(tmp_path, stages=["only"])
    model, head = reader.track("model", _model()), reader.track("head", nn.Linear(2, 5))
    before = _parameters(model) + _parameters(head)
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'last.pt'} {reason}"):
        reader.load(tmp_path / "last.pt")
    after = _parameters(model) + _parameters(head)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert reader.resumed_from is None


def test_objects_tracked_after_loading_are_restored(tmp_path) -> None:
    saved = nn.Linear(2, 2)
    manager = CheckpointManager(tmp_path, stages=["one", "two"])
    manager.track("late", saved)
    manager.save(TrainingState("two", 1, False), extra={"note": (7, "x")})
    loader = CheckpointManager(tmp_path, stages=["one", "two"])
    state = loader.load(tmp_path / "last.pt")
    assert state == TrainingState("two", 1, False)
    assert loader.extra == {"note": [7, "x"]}
    assert loader.stage_completed("one") and not loader.stage_completed("two")
    late = loader.track("late", nn.Linear(2, 2))
    torch.testing.assert_close(late.weight, saved.weight, rtol=0, atol=0)
    fresh = nn.Linear(2, 2)
    weight = fresh.weight.clone()
    loader.track("new", fresh)  # no state in the checkpoint: left as it is
    assert torch.equal(fresh.weight, weight)
    other = CheckpointManager(tmp_path, stages=["one", "two"])
    other.load(tmp_path / "last.pt")
    wide = nn.Linear(3, 2)
    weight = wide.weight.clone()
    with pytest.raises(CheckpointError, match=r"does not fit the module tracked as 'late'"):
        other.track("late", wide)
    assert torch.equal(wide.weight, weight)
    with pytest.raises(ValueError, match="completed before"):
        loader.resume_epoch("one")


@pytest.mark.parametrize("asks_stage_completed", [True, False])
def test_the_generators_come_back_once_after_a_finished_stage(
    tmp_path, asks_stage_completed
) -> None:
    torch.manual_seed(5)
    CheckpointManager(tmp_path, stages=["one", "two"]).save(TrainingState("one", 3, True))
    expected = torch.rand(4)
    manager = CheckpointManager(tmp_path, stages=["one", "two"])
    manager.load(tmp_path / "last.pt")
    torch.manual_seed(7)
    if asks_stage_completed:  # where the stage would run: the generators come back here
        assert manager.stage_completed("one")
        assert torch.equal(torch.rand(4), expected)
        drawn_since = torch.get_rng_state()
        assert manager.stage_completed("one")  # once only: not again here,
        assert manager.resume_epoch("two") == 0  # nor here
        assert torch.equal(torch.get_rng_state(), drawn_since)
    else:  # a pipeline that never asks gets them back when the next stage starts
        assert manager.resume_epoch("two") == 0
        assert torch.equal(torch.rand(4), expected)


def test_resolve_resume_path(tmp_path) -> None:
    assert resolve_resume_path(None, tmp_path) is None
    assert resolve_resume_path("auto", tmp_path) is None
    (tmp_path / "last.pt").write_bytes(b"")
    assert resolve_resume_path("auto", tmp_path) == tmp_path / "last.pt"
    assert resolve_resume_path(tmp_path, "elsewhere") == tmp_path / "last.pt"
    with pytest.raises(ValueError, match="resume"):
        resolve_resume_path(tmp_path / "missing.pt", tmp_path)


def test_bad_stage_names(tmp_path) -> None:
    with pytest.raises(ValueError, match="stages"):
        CheckpointManager(tmp_path, stages=["a", "a"])
    manager = CheckpointManager(tmp_path, stages=["a"])
    with pytest.raises(ValueError, match="stage must be one of"):
        manager.save(TrainingState("b", 1, False))
    with pytest.raises(ValueError, match="state_dict"):
        manager.track("x", object())
    manager.save(TrainingState("a", 1, False))
    with pytest.raises(CheckpointError, match=r"was written in stage 'a', not one of \['b'\]"):
        CheckpointManager(tmp_path, stages=["b"]).load(tmp_path / "last.pt")


# ----------------------------------------------------------------------------------------------
# Resuming: a run interrupted anywhere and resumed equals the uninterrupted run, tensor by tensor.


class _Interrupt(Exception):
    pass


IDENTITIES, IMAGES_PER_IDENTITY, IMAGE_SIZE = 8, 4, (16, 8)


@pytest.fixture(scope="module")
def image_records(tmp_path_factory) -> list[tuple[str, int, int]]:
    """Small random images of 8 identities, 4 each, as ``(path, pid, camid)`` records."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    records = []
    for pid in range(IDENTITIES):
        for index in range(IMAGES_PER_IDENTITY):
            pixels = rng.integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
            path = folder / f"{pid}_{index}.png"
            Image.fromarray(pixels).save(path)
            records.append((str(path), pid, index % 2))
    return records


def _train(
    output_dir: Path,
    records: list[tuple[str, int, int]],
    *,
    resume: str | None = None,
    seed: int = 0,
    num_workers: int = 0,
    interrupt_after_stage: str | None = None,
    interrupt_at_step: int | None = None,
) -> dict[str, int]:
    """Two stages with randomness everywhere; returns the steps each stage ran.

    ``seed`` seeds the global generators only (the data's seed is part of the configuration).

    ``first``: a shuffled feature loader (torch's global generator), dropout. ``second``: P x K
    image batches with random flips, crops and erasing, in ``num_workers`` loader processes,
    and dropout. Both: Adam, a warm-up schedule, clipping and an evaluation whose metric
    depends on every parameter. The interruption happens right after the named stage has
    finished (its final checkpoint written) or at a step of the second stage.
    """
    seed_everything(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMAGE_SIZE[0] * IMAGE_SIZE[1], 8))
    head = nn.Linear(8, IDENTITIES)
    run = TrainingRun(
        output_dir, stages=["first", "second"], config={"seed": seed}, resume=resume, eval_every=1
    )
    run.track("model", model)
    run.track("head", head)
    seed_everything(seed + 1)
    generator = torch.Generator().manual_seed(99)
    probe = torch.randn(5, 3, *IMAGE_SIZE, generator=generator)
    calls = {"first": 0, "second": 0}

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            return {"probe": float(head(model(probe)).square().mean())}

    def trainer_for(parameters) -> Trainer:
        optimizer = torch.optim.Adam(parameters, lr=0.01)
        scheduler = WarmupMultiStepLR(optimizer, milestones=(2,), warmup_epochs=1)
        return Trainer(optimizer, scheduler, grad_clip_norm=5.0)

    if not run.stage_completed("first"):
        features = torch.randn(24, 8, generator=generator)
        batches = make_feature_loader(features, torch.arange(24) % IDENTITIES, batch_size=6)

        def first_step(batch):
            calls["first"] += 1
            x, y = batch
            return F.cross_entropy(head(F.dropout(x, 0.3, training=True)), y)

        run.fit("first", trainer_for(head.parameters()), batches, first_step, epochs=2)
    if interrupt_after_stage == "first":
        raise _Interrupt
    loader = make_train_loader(
        records,
        build_train_transforms(IMAGE_SIZE, padding=2, mean=(0.5,) * 3, std=(0.5,) * 3),
        batch_size=8,
        num_instances=4,
        num_workers=num_workers,
        seed=7,
    )

    def second_step(batch):
        calls["second"] += 1
        if calls["second"] == interrupt_at_step:
            raise _Interrupt
        images, pids = batch[:2]
        return F.cross_entropy(head(F.dropout(model(images), 0.2, training=True)), pids)

    parameters = [*model.parameters(), *head.parameters()]
    run.fit("second", trainer_for(parameters), loader, second_step, epochs=3, evaluate=evaluate)
    run.finish({"probe": evaluate()})
    return calls


def _assert_same_final_state(reference: Path, resumed: Path) -> None:
    # model and head (4), Adam's moments and steps (3 x 4), the random generators (3)
    assert assert_same_final_state(reference, resumed) == 4 + 3 * 4 + 3


def test_train_batches_depend_on_the_epoch_but_not_on_the_loader_workers(image_records) -> None:
    def epochs(num_workers: int) -> list[torch.Tensor]:
        loader = make_train_loader(
            image_records,
            build_train_transforms(IMAGE_SIZE, padding=2),
            batch_size=8,
            num_instances=4,
            num_workers=num_workers,
            seed=3,
        )
        images = []
        for epoch in (0, 1, 0):
            loader.sampler.set_epoch(epoch)
            images.append(torch.cat([batch[0] for batch in loader]))
        return images

    torch.manual_seed(0)
    before = torch.get_rng_state()
    alone = epochs(0)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generators are untouched
    assert torch.equal(alone[0], alone[2]) and not torch.equal(alone[0], alone[1])
    for other in (epochs(1), epochs(2)):
        assert all(torch.equal(a, b) for a, b in zip(alone, other, strict=True))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, image_records) -> Path:
    """The output folder of the uninterrupted run (no loader workers)."""
    output_dir = tmp_path_factory.mktemp("straight")
    _train(output_dir, image_records)
    return output_dir


def test_resume_right_after_a_stage_s_final_checkpoint(tmp_path, image_records, straight) -> None:
    with pytest.raises(_Interrupt):
        _train(tmp_path / "killed", image_records, interrupt_after_stage="first")
    assert read_checkpoint(tmp_path / "killed" / "last.pt")["stage_finished"]
    # Another seed: whatever the resumed run draws must come from the checkpoint.
    calls = _train(tmp_path / "killed", image_records, resume="auto", seed=12345)
    assert calls == {"first": 0, "second": 3 * 4}
    _assert_same_final_state(straight, tmp_path / "killed")
    assert (tmp_path / "killed" / "first_final.pt").is_file()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_in_the_middle_of_a_stage_with_loader_workers(
    tmp_path, image_records, straight, num_workers
) -> None:
    # 4 batches per epoch: the interruption hits the second epoch of the second stage.
    with pytest.raises(_Interrupt):
        _train(tmp_path / "killed", image_records, num_workers=num_workers, interrupt_at_step=6)
    state = read_checkpoint(tmp_path / "killed" / "last.pt")
    assert (state["stage"], state["epoch"], state["stage_finished"]) == ("second", 1, False)
    calls = _train(
        tmp_path / "killed", image_records, resume="auto", seed=12345, num_workers=num_workers
    )
    assert calls == {"first": 0, "second": 2 * 4}
    _assert_same_final_state(straight, tmp_path / "killed")
    report = json.loads((tmp_path / "killed" / "report.json").read_text())
    assert report["resumes"][0]["stage"] == "second" and report["resumes"][0]["epoch"] == 1
    assert [e["epoch"] for e in report["stages"]["second"]["epochs"]] == [1, 2, 3]


def test_resume_after_the_last_stage_runs_nothing(tmp_path, image_records, straight) -> None:
    shutil.copytree(straight, tmp_path / "run")
    calls = _train(tmp_path / "run", image_records, resume=str(tmp_path / "run" / "last.pt"))
    assert calls == {"first": 0, "second": 0}
    _assert_same_final_state(straight, tmp_path / "run")
