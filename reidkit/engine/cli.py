"""The command-line options of a training run, and per-stage values such as ``--epochs``.

:func:`add_run_arguments` adds the options of how a run runs (a group ``run``)::

    --output-dir PATH     the run folder
    --resume [PATH]       resume from a checkpoint file or folder; alone: <output-dir>/last.pt
    --overwrite           replace the run that the folder holds (its files are deleted)
    --eval-every N        evaluate every N epochs (0: after each stage only)
    --device DEVICE       auto, cpu, cuda or cuda:N
    --seed N              base random seed
    --num-workers N       data-loading processes
    --amp                 mixed precision
    --sync-bn             BatchNorm statistics of the global batch under torchrun
    --no-progress         no progress bars (TQDM_DISABLE=1 does the same)
    --no-tensorboard      no TensorBoard scalars

:func:`build_arg_parser` adds to them the data and preset options of a script that builds its
own model (``reidkit train`` and the examples build theirs with
:mod:`reidkit.recipes.arguments`). Per-stage options take ``STAGE=VALUE`` or a value for every
stage (:func:`stage_value`, :func:`stage_epochs`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

ValueT = TypeVar("ValueT")


def stage_value(
    text: str,
    read: Callable[[str], ValueT] = int,  # type: ignore[assignment]  # python/mypy#3737
    what: str = "N",
) -> tuple[str | None, ValueT]:
    """``"prompts=3"`` as ``("prompts", 3)``, ``"3"`` as ``(None, 3)`` (every stage).

    Raises:
        argparse.ArgumentTypeError: the text is neither form (the message shows both).
    """
    name, _, value = text.rpartition("=")
    if name and not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected STAGE={what} or {what}, got {text!r}")
    try:
        return (name or None), read(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STAGE={what} or {what}, got {text!r}") from None


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def add_run_arguments(
    parser: argparse.ArgumentParser, default_output_dir: str | Path
) -> argparse._ArgumentGroup:
    """Add the ``run`` options (see the module docstring) to ``parser``; returns the group."""
    run = parser.add_argument_group("run")
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path(default_output_dir),
        metavar="PATH",
        help=f"the run folder: log, report, configuration, checkpoints ({default_output_dir})",
    )
    resume = run.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH",
        help="continue the run of --output-dir (alone), or from a checkpoint file or folder",
    )
    resume.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that --output-dir holds (its files are deleted)",
    )
    run.add_argument(
        "--eval-every",
        type=_non_negative,
        default=0,
        metavar="N",
        help="evaluate every N epochs (0: after each stage only)",
    )
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--seed", type=_non_negative, default=0, metavar="N", help="base random seed")
    run.add_argument(
        "--num-workers", type=_non_negative, default=2, metavar="N", help="data-loading processes"
    )
    run.add_argument("--amp", action="store_true", help="mixed precision (autocast)")
    run.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun, BatchNorm normalises with the statistics of the global batch",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bars (or TQDM_DISABLE=1)"
    )
    run.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="do not write TensorBoard scalars (written when tensorboard is installed)",
    )
    return run


def build_arg_parser(
    description: str,
    *,
    presets: Sequence[str] = ("tiny", "paper"),
    default_output_dir: str | Path = "runs/example",
) -> argparse.ArgumentParser:
    """A parser with the ``run`` options, ``--data-root``, ``--dataset``, ``--preset`` and
    ``--epochs STAGE=N ...``, for a script that assembles its own training.

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
    parser.add_argument(
        "--preset", choices=list(presets), default=presets[0], help="hyper-parameter preset"
    )
    parser.add_argument(
        "--epochs",
        type=stage_value,
        nargs="+",
        default=[],
        metavar="STAGE=N",
        help="override the epochs of a stage (N alone: every stage)",
    )
    add_run_arguments(parser, default_output_dir)
    return parser


def stage_epochs(
    defaults: Mapping[str, int], overrides: Sequence[tuple[str | None, int]]
) -> dict[str, int]:
    """The epochs of every stage: the preset's ``defaults`` with ``--epochs`` applied.

    Args:
        defaults: ``{stage: epochs}`` of the preset.
        overrides: the parsed ``--epochs`` values, ``(stage, n)`` or ``(None, n)`` for all.

    Raises:
        ValueError: an override names a stage not in ``defaults``, or a count below 0.
    """
    epochs = dict(defaults)
    for stage, count in overrides:
        if count < 0:
            raise ValueError(f"--epochs must be >= 0, got {count}")
        if stage is None:
            epochs = dict.fromkeys(epochs, count)
        elif stage not in epochs:
            raise ValueError(f"--epochs names stage {stage!r}; the stages are {list(epochs)}")
        else:
            epochs[stage] = count
    return epochs
