"""The ``reidkit`` command: train, evaluate, compare and export runs.

::

    reidkit train RECIPE [--preset NAME | --config FILE] [options] [--set KEY=VALUE] [KEY VALUE]
    reidkit eval RUN_DIR --dataset NAME --data-root PATH [--rerank] [--save-rank-grid]
    reidkit compare RUN_DIR... [--plot FILE] [--format text|markdown|csv]
    reidkit export RUN_DIR [--format torchscript onnx]
    reidkit config RECIPE [the options of train]     # print the resolved configuration
    reidkit presets [--write DIR]                     # list the presets, or write them as YAML

``python -m reidkit`` is the same command. Each sub-command imports what it needs when it runs,
so ``reidkit compare`` reads reports without loading torch models. Errors the user can act on
(a bad option, a folder that holds another run, weights out of reach) end the command with one
line on stderr and exit status 2 (an option) or 1; Ctrl-C ends it with one line and 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the recipes are imported when a command runs, to start quickly
    from reidkit.recipes.common import Recipe

PROG = "reidkit"
Command = Callable[[argparse.ArgumentParser, argparse.Namespace], int]
"""A subcommand: runs with its parser and the parsed arguments, returns the exit code."""


def _train_command(args: argparse.Namespace) -> str:
    return f"{PROG} train --resume --output-dir {args.output_dir}"


def _resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Recipe, Any]:
    from reidkit.recipes import arguments

    recipe = arguments.resolve_recipe(parser, args)
    if args.output_dir is None:
        args.output_dir = Path("runs") / recipe.name
    config = arguments.config_from_args(parser, args, recipe)
    return recipe, config


def train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reidkit train``: resolve, check, train; prints the run's results."""
    from reidkit.recipes import arguments

    recipe, config = _resolve(parser, args)
    runtime = arguments.runtime_from_args(args)
    arguments.check_before_training(parser, recipe, config, runtime)
    results = arguments.launch(recipe, config, runtime, resume_command=_train_command(args))
    if results is not None:  # rank 0
        from reidkit.recipes.compare import compare_reports

        print(compare_reports([runtime.output_path]))
    return 0


def show_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reidkit config``: the configuration that ``train`` would use, as YAML."""
    from reidkit.recipes.serialization import config_to_yaml

    recipe, config = _resolve(parser, args)
    print(config_to_yaml(recipe.name, config), end="")
    return 0


def evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reidkit eval``: one run on one data set."""
    from reidkit.engine.progress import setup_logging
    from reidkit.recipes.evaluate import evaluate_run

    setup_logging()
    evaluation = evaluate_run(
        args.run_dir,
        args.dataset,
        args.data_root,
        filename_pattern=args.filename_pattern,
        weights=args.weights,
        rerank=args.rerank,
        rank_grid=args.save_rank_grid,
        flip=args.flip,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=_device(args.device),
        output_dir=args.output_dir,
    )
    print(evaluation.summary())
    return 0


def compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reidkit compare``: one table (and a plot) of several runs."""
    from reidkit.recipes.compare import compare_reports, plot_comparison

    try:
        table = compare_reports(args.runs)
    except ValueError as error:  # not a report, or no rank result in them
        parser.error(str(error))
    print(table.format(args.format))
    if args.plot is not None:
        print(f"plot written to {plot_comparison(table, args.plot)}", file=sys.stderr)
    return 0


def export(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reidkit export``: TorchScript and ONNX of a run's model, checked."""
    from reidkit.models import load_model
    from reidkit.models.export import export_model

    model = load_model(args.run_dir, weights=args.weights)
    folder = args.output_dir or Path(args.run_dir) / "export"
    for item in export_model(model, folder, args.format, tolerance=args.tolerance):
        print(
            f"{item.format}: {item.path} (features within {item.max_abs_difference:.1e} of the "
            "model's)"
        )
    return 0


def presets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reidkit presets``: list every recipe's presets, or write them as YAML files."""
    from reidkit.recipes.presets import preset_files, write_presets

    if args.write is not None:
        for path in write_presets(args.write):
            print(path)
        return 0
    for recipe, names in preset_files().items():
        print(f"{recipe}: {', '.join(names)}")
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if _count(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``reidkit`` and its sub-commands."""
    from reidkit import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate, compare and export CLIP-based person ReID runs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run, parser=sub)
        return sub

    from reidkit.recipes.arguments import train_parser

    train_command = command("train", train, "train a recipe into a run folder")
    train_parser(parser=train_command)
    train_command.set_defaults(output_dir=None)
    config_command = command("config", show_config, "print the configuration train would use")
    train_parser(parser=config_command)
    config_command.set_defaults(output_dir=None)

    eval_command = command("eval", evaluate, "evaluate a run's model on a data set")
    eval_command.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    eval_command.add_argument("--dataset", required=True, help="data set parser, e.g. market1501")
    eval_command.add_argument("--data-root", type=Path, metavar="PATH", help="its folder")
    eval_command.add_argument(
        "--filename-pattern", metavar="REGEX", help="for --dataset image_folder"
    )
    eval_command.add_argument(
        "--weights", choices=("final", "best"), default="final", help="which weights of the run"
    )
    eval_command.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    eval_command.add_argument(
        "--save-rank-grid", action="store_true", help="draw the top-10 of the first queries"
    )
    eval_command.add_argument("--flip", action="store_true", help="average with mirrored images")
    eval_command.add_argument("--batch-size", type=_positive, default=128, metavar="N")
    eval_command.add_argument("--num-workers", type=_count, default=2, metavar="N")
    eval_command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    eval_command.add_argument(
        "--output-dir", type=Path, metavar="PATH", help="default RUN_DIR/eval/<dataset>"
    )

    compare_command = command("compare", compare, "one table of the results of several runs")
    compare_command.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    compare_command.add_argument("--plot", type=Path, metavar="FILE", help="also draw them")
    compare_command.add_argument(
        "--format", choices=("text", "markdown", "csv"), default="text", help="of the table"
    )

    export_command = command("export", export, "write TorchScript and ONNX of a run's model")
    export_command.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export_command.add_argument(
        "--format",
        nargs="+",
        choices=("torchscript", "onnx"),
        default=["torchscript", "onnx"],
        help="formats to write",
    )
    export_command.add_argument("--weights", choices=("final", "best"), default="final")
    export_command.add_argument("--tolerance", type=float, default=1e-5, metavar="TOL")
    export_command.add_argument(
        "--output-dir", type=Path, metavar="PATH", help="default RUN_DIR/export"
    )

    presets_command = command("presets", presets, "list the presets, or write them as YAML")
    presets_command.add_argument(
        "--write", type=Path, metavar="DIR", help="write DIR/<recipe>/<preset>.yaml"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``reidkit`` with ``argv`` (default: the process's arguments); the exit status."""
    from reidkit.engine.checkpoint import CheckpointError
    from reidkit.engine.run_folder import RunFolderError
    from reidkit.models.export import ExportError
    from reidkit.recipes.config import ConfigError

    args, rest = build_parser().parse_known_args(argv)
    sub = args.parser
    if args.command in ("train", "config"):
        from reidkit.recipes.arguments import take_override_tokens

        take_override_tokens(sub, args, rest)
    elif rest:
        sub.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        run: Command = args.run
        return run(sub, args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, RunFolderError) as error:
        sub.error(str(error))  # exits with status 2
    except (FileNotFoundError, CheckpointError, ExportError) as error:
        # FileNotFoundError covers WeightsUnavailableError: weights neither on disk nor reachable
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
