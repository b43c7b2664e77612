"""The command-line options every example shares.

:func:`build_arg_parser` returns an :class:`argparse.ArgumentParser` with::

    --data-root PATH      dataset folder; omitted: the built-in synthetic data
    --dataset NAME        dataset parser for --data-root (default: the preset's)
    --preset NAME         hyper-parameter preset (default: the first of ``presets``)
    --output-dir PATH     log, checkpoints and report (default runs/<script name>)
    --resume [PATH]       resume from a checkpoint file or folder; alone: <output-dir>/last.pt
    --epochs STAGE=N ...  override a stage's number of epochs (or N for every stage)
    --eval-every N        evaluate every N epochs (0: after each stage only)
    --device DEVICE       auto, cpu, cuda or cuda:N
    --seed N              base random seed
    --num-workers N       data-loading processes
    --amp                 mixed precision

An example adds its own options to the returned parser and resolves the epoch overrides with
:func:`stage_epochs`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path


def _epoch_override(text: str) -> tuple[str | None, int]:
    name, _, count = text.rpartition("=")
    try:
        epochs = int(count)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected STAGE=N or N, got {text!r}") from error
    if epochs < 0:
        raise argparse.ArgumentTypeError(f"the number of epochs must be >= 0, got {text!r}")
    return (name or None), epochs


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_arg_parser(
    description: str,
    *,
    presets: Sequence[str] = ("tiny", "paper"),
    default_output_dir: str | Path = "runs/example",
) -> argparse.ArgumentParser:
    """The shared options of the examples (see the module docstring).

    Args:
        description: the script's help text.
        presets: the preset names the script knows; the first is the default.
        default_output_dir: ``--output-dir`` when not given.
    """
    if not presets:
        raise ValueError("presets must name at least one preset")
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="dataset folder; omitted: the built-in synthetic data",
    )
    data.add_argument(
        "--dataset", default=None, help="dataset parser for --data-root (default: the preset's)"
    )
    data.add_argument("--num-workers", type=_non_negative, default=2, help="data-loading processes")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--preset", choices=list(presets), default=presets[0], help="hyper-parameter preset"
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path(default_output_dir),
        help="log, checkpoints and report",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="checkpoint file or folder; alone: <output-dir>/last.pt",
    )
    run.add_argument(
        "--epochs",
        type=_epoch_override,
        nargs="+",
        default=[],
        metavar="STAGE=N",
        help="override the epochs of a stage (N alone: every stage)",
    )
    run.add_argument(
        "--eval-every",
        type=_non_negative,
        default=0,
        help="evaluate every N epochs (0: after each stage only)",
    )
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--seed", type=_non_negative, default=0, help="base random seed")
    run.add_argument("--amp", action="store_true", help="mixed precision (autocast)")
    return parser


def stage_epochs(
    defaults: Mapping[str, int], overrides: Sequence[tuple[str | None, int]]
) -> dict[str, int]:
    """The epochs of every stage: the preset's ``defaults`` with ``--epochs`` applied.

    Args:
        defaults: ``{stage: epochs}`` of the preset.
        overrides: the parsed ``--epochs`` values, ``(stage, n)`` or ``(None, n)`` for all.

    Raises:
        ValueError: an override names a stage not in ``defaults``.
    """
    epochs = dict(defaults)
    for stage, count in overrides:
        if stage is None:
            epochs = dict.fromkeys(epochs, count)
        elif stage not in epochs:
            raise ValueError(f"--epochs names stage {stage!r}; the stages are {list(epochs)}")
        else:
            epochs[stage] = count
    return epochs
