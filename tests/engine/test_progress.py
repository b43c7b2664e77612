"""Progress bars: drawn on a terminal one at a time, off on request, never reading a random
generator; TensorBoard scalars; the data set's summary in the log and the report."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch
from torch import nn

from reidkit.engine import Trainer, TrainingRun, progress_bar, set_progress_enabled
from reidkit.engine.progress import progress_enabled
from reidkit.engine.tensorboard import tensorboard_available


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _bars_on(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    set_progress_enabled(True)
    yield
    set_progress_enabled(True)


def _terminal(monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    """stderr as a terminal (as in an interactive run); set in the test's body, since pytest
    installs its own capture again after the fixtures."""
    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_a_nested_bar_is_not_drawn_so_no_escape_code_moves_the_cursor(monkeypatch) -> None:
    terminal = _terminal(monkeypatch)
    for _ in progress_bar(range(3), desc="outer"):
        assert list(progress_bar(range(4), desc="inner")) == [0, 1, 2, 3]
    output = terminal.getvalue()
    assert "outer" in output and "inner" not in output
    assert "\x1b[" not in output  # tqdm moves the cursor with ESC [ A for a second bar
    assert "0/3" in output  # counts as integers


@pytest.mark.parametrize("switch", ["flag", "environment"])
def test_bars_can_be_turned_off(monkeypatch, switch: str) -> None:
    terminal = _terminal(monkeypatch)
    if switch == "flag":
        set_progress_enabled(False)  # --no-progress
    else:
        monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_enabled()
    assert list(progress_bar(range(3), desc="quiet")) == [0, 1, 2]
    assert terminal.getvalue() == ""


def test_no_bar_is_drawn_when_stderr_is_not_a_terminal(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert list(progress_bar(range(3), desc="log file")) == [0, 1, 2]
    assert stream.getvalue() == ""


def _train(seed: int) -> tuple[dict, dict]:
    """Two epochs with dropout and shuffled batches: every step draws random numbers."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    trainer = Trainer(torch.optim.SGD(model.parameters(), lr=0.1))
    data = torch.utils.data.TensorDataset(torch.randn(24, 4), torch.randn(24, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)

    def step(batch):
        inputs, targets = batch
        return {"loss": ((model(inputs) - targets) ** 2).mean(), "noise": torch.rand(())}

    metrics = [trainer.run_epoch(loader, step, desc=f"epoch {epoch}") for epoch in range(2)]
    return {"metrics": metrics, "next": torch.rand(3).tolist()}, model.state_dict()


def test_training_gives_the_same_numbers_with_and_without_bars(monkeypatch) -> None:
    terminal = _terminal(monkeypatch)
    shown, shown_weights = _train(seed=5)
    assert "epoch 1" in terminal.getvalue()  # the bars were drawn
    set_progress_enabled(False)
    hidden, hidden_weights = _train(seed=5)
    assert shown == hidden
    for name, tensor in shown_weights.items():
        assert torch.equal(tensor, hidden_weights[name]), name


# tensorboard is an optional extra (also in dev); without it there are no event files to read
@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_scalars_reach_tensorboard_and_the_data_set_the_report(tmp_path, caplog) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = TrainingRun(tmp_path / "run", stages=["prompts"])
    weight = nn.Parameter(torch.ones(1))
    trainer = Trainer({"prompts": torch.optim.SGD([weight], lr=0.5)})
    run.fit(
        "prompts",
        trainer,
        [torch.ones(1)] * 2,
        lambda x: (weight * x).sum(),
        epochs=2,
        evaluate=lambda: {"mAP": 0.25},
    )
    splits = {"train": {"identities": 3, "images": 12, "cameras": 2}}
    run.describe_data("synthetic", splits, {"mAP": 0.125, "skipped_queries": 1})
    run.finish()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("prompts/loss")]
    assert losses == [(1, 0.75), (2, -0.25)]  # w before each step: 1, 0.5, 0, -0.5
    assert [e.value for e in events.Scalars("prompts/lr")] == [0.5, 0.5]
    assert [e.value for e in events.Scalars("prompts/eval/mAP")] == [0.25]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"] == {
        "name": "synthetic",
        "splits": splits,
        "chance": {"mAP": 0.125, "skipped_queries": 1},
    }
