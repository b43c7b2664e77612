"""The shared command-line options and the epoch overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidkit.engine import build_arg_parser, stage_epochs


def test_defaults_and_overrides() -> None:
    parser = build_arg_parser("demo", presets=("tiny", "paper"), default_output_dir="runs/demo")
    args = parser.parse_args([])
    assert args.data_root is None and args.preset == "tiny" and args.resume is None
    assert args.output_dir == Path("runs/demo") and args.eval_every == 0 and not args.amp
    args = parser.parse_args(
        ["--preset", "paper", "--resume", "--epochs", "stage1=3", "stage2=1", "--seed", "5"]
    )
    assert args.resume == "auto" and args.preset == "paper" and args.seed == 5
    assert stage_epochs({"stage1": 120, "stage2": 60}, args.epochs) == {"stage1": 3, "stage2": 1}
    args = parser.parse_args(["--epochs", "2", "--resume", "runs/x/last.pt"])
    assert args.resume == "runs/x/last.pt"
    assert stage_epochs({"stage1": 120, "stage2": 60}, args.epochs) == {"stage1": 2, "stage2": 2}


def test_bad_values() -> None:
    parser = build_arg_parser("demo")
    for argv in (["--epochs", "stage1=x"], ["--eval-every", "-1"], ["--preset", "huge"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    with pytest.raises(ValueError, match="stage3"):
        stage_epochs({"stage1": 1}, [("stage3", 2)])
