"""The run folder: refusing another run, replacing it, resuming only a run, the best checkpoint
and the weights-only files."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from reidkit.engine import (
    RunFolderError,
    Trainer,
    TrainingRun,
    check_run_folder,
    clear_run_folder,
    load_weights,
    read_checkpoint,
    save_weights,
)
from reidkit.engine.run_folder import holds_run, run_files


def _write(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("x")


def test_a_new_run_refuses_a_folder_that_holds_another(tmp_path: Path) -> None:
    check_run_folder(tmp_path / "missing", resume=None)  # a new folder is fine
    _write(tmp_path / "notes", "README.md", "data.csv")
    check_run_folder(tmp_path / "notes", resume=None)  # so is one without run files
    _write(tmp_path / "run", "report.json", "last.pt", "prompts_final.pt", "notes.txt")
    with pytest.raises(
        RunFolderError,
        match=r"already holds a run \(report\.json, last\.pt, prompts_final\.pt\); continue it "
        r"with --resume, replace it with --overwrite",
    ):
        check_run_folder(tmp_path / "run", resume=None)
    check_run_folder(tmp_path / "run", resume="auto")
    check_run_folder(tmp_path / "run", resume=None, overwrite=True)


def test_resume_needs_a_run_of_its_own_or_of_a_sub_run(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"--resume: .* holds no run to resume"):
        check_run_folder(tmp_path / "empty", resume="auto")
    _write(tmp_path / "parent" / "clip_reid", "train.log")  # a baseline stopped early
    assert holds_run(tmp_path / "parent") and not run_files(tmp_path / "parent")
    check_run_folder(tmp_path / "parent", resume="auto")
    check_run_folder(tmp_path / "empty", resume="runs/x/last.pt")  # checked when read


def test_overwriting_deletes_the_run_files_and_what_was_derived_from_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, "config.yaml", "train.log", "report.json", "last.pt", "best.pt", "model.json")
    _write(run, "model.safetensors", "best_model.safetensors", "stage_final.pt", "mine.txt")
    _write(run / "eval" / "market1501", "metrics.json")
    _write(run / "export", "model.onnx")
    _write(run / "clip_reid", "report.json")  # a sub-run is a run of its own
    removed = clear_run_folder(run)
    assert len(removed) == 11
    assert sorted(path.name for path in run.iterdir()) == ["clip_reid", "mine.txt"]


def _trainer(model: nn.Module) -> Trainer:
    return Trainer(torch.optim.SGD(model.parameters(), lr=0.1))


def _step(model: nn.Module):
    def step(batch: torch.Tensor) -> torch.Tensor:
        return model(batch).square().mean()

    return step


def test_a_training_run_refuses_then_replaces_a_folder(tmp_path: Path) -> None:
    run = TrainingRun(tmp_path, stages=["only"], config={"try": 1})
    run.logger.info("first run")
    run.finish()
    with pytest.raises(RunFolderError, match="already holds a run"):
        TrainingRun(tmp_path, stages=["only"])
    replaced = TrainingRun(tmp_path, stages=["only"], config={"try": 2}, overwrite=True)
    replaced.finish()
    assert "first run" not in (tmp_path / "train.log").read_text()  # not appended to
    assert json.loads((tmp_path / "report.json").read_text())["config"] == {"try": 2}


def test_the_best_evaluation_keeps_its_checkpoint_and_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    batches = [torch.randn(4, 3) for _ in range(2)]
    scores = iter([0.2, 0.5, 0.3, 0.5])  # a tie does not replace the best
    states = {}

    def evaluate() -> dict[str, float]:
        states[len(states) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"mAP": next(scores), "R1": 0.0}

    run = TrainingRun(tmp_path, stages=["only"], eval_every=1)
    run.track("model", model)
    run.set_inference_model(model, {"architecture": "linear"})
    run.fit("only", _trainer(model), batches, _step(model), epochs=4, evaluate=evaluate)
    run.finish()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["best"] == {
        "stage": "only",
        "epoch": 2,
        "metric": "mAP",
        "metrics": {"mAP": 0.5, "R1": 0.0},
        "checkpoint": "best.pt",
        "weights": "best_model.safetensors",
    }
    best = read_checkpoint(tmp_path / "best.pt")
    assert (best["stage"], best["epoch"]) == ("only", 2)
    for key, value in load_weights(tmp_path / "best_model.safetensors").items():
        torch.testing.assert_close(value, states[2][key], rtol=0, atol=0)
        torch.testing.assert_close(best["objects"]["model"][key], states[2][key], rtol=0, atol=0)
    final = load_weights(tmp_path / "model.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=0)
    assert json.loads((tmp_path / "model.json").read_text()) == {"architecture": "linear"}


def test_the_best_survives_a_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    batches = [torch.randn(4, 3)]

    def run_until(scores: list[float], crash_at: int | None, resume: str | None) -> TrainingRun:
        model = nn.Linear(3, 2)
        run = TrainingRun(tmp_path, stages=["only"], eval_every=1, resume=resume)
        run.track("model", model)
        values = iter(scores)

        def evaluate() -> dict[str, float]:
            value = next(values)
            if value == crash_at:
                raise KeyboardInterrupt
            return {"mAP": value}

        with contextlib.suppress(KeyboardInterrupt):  # a run stopped in an evaluation
            run.fit("only", _trainer(model), batches, _step(model), epochs=4, evaluate=evaluate)
        return run

    run_until([0.4, 0.6, -1.0], crash_at=-1.0, resume=None)  # stopped in epoch 3
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    resumed = run_until([0.5, 0.55], crash_at=None, resume="auto")
    assert resumed.report.best["epoch"] == 2 and resumed.report.best["metrics"]["mAP"] == 0.6
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_weights_files_hold_the_state_dict_and_tied_tensors_once_each(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"what": "test"})
    loaded = load_weights(path)
    assert set(loaded) == set(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    (tmp_path / "bad.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        load_weights(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")
