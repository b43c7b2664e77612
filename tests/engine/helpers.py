"""Comparing the final state of two runs: every tensor of the last checkpoint, every metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from reidkit.engine import read_checkpoint


def assert_same(a: Any, b: Any, where: str) -> int:
    """Assert ``a == b`` recursively, tensors bit for bit; returns the number of tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
        return 1
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        return sum(assert_same(a[key], b[key], f"{where}[{key!r}]") for key in a)
    if isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        return sum(assert_same(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0


def report_metrics(output_dir: Path) -> dict[str, Any]:
    """Every number of ``report.json`` but the times."""
    report = json.loads((output_dir / "report.json").read_text())
    stages = {
        stage: {
            "epochs": [{k: v for k, v in e.items() if k != "time_s"} for e in record["epochs"]],
            "evaluations": record["evaluations"],
        }
        for stage, record in report["stages"].items()
    }
    return {"stages": stages, "results": report["results"]}


def assert_same_final_state(reference: Path, resumed: Path) -> int:
    """The last checkpoints of two runs hold the same tensors (models, optimisers, schedulers,
    random generators) and their reports the same numbers; returns the number of tensors."""
    a, b = read_checkpoint(reference / "last.pt"), read_checkpoint(resumed / "last.pt")
    for payload in (a, b):
        del payload["objects"]["report"]  # its numbers are compared below, without the times
    tensors = assert_same(a, b, "last.pt")
    assert report_metrics(reference) == report_metrics(resumed)
    return tensors
