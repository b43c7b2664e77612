"""The training command line: options to a recipe's configuration and runtime, checked early.

``reidkit train`` and the scripts of ``examples/`` share this machinery; a script adds its
own options and says how they change the configuration::

    parser = train_parser(mmpl.RECIPE, description="MMPL", default_output_dir="runs/mmpl")
    parser.add_argument("--no-agent", action="store_true")     # a script's own option

    def adapt(config, args):
        return mmpl.without_agent(config) if args.no_agent else config

    train_from_command_line(mmpl.RECIPE, parser, adapt=adapt)

which parses (:func:`parse_train_args`), builds the configuration (:func:`config_from_args`)
and the runtime (:func:`runtime_from_args`), checks them (:func:`check_before_training`) and
trains (:func:`launch`).

The configuration is built in one go, so that values which only fit together may come from
different places, and it is checked before any data or model is built:

1. the base: ``--config FILE`` (a YAML file, over its ``preset`` if it names one), or
   ``--preset NAME`` (default ``tiny``); resuming with neither and no other configuration
   option takes the run's own ``config.yaml``;
2. the plain options: ``--epochs [STAGE=]N``, ``--lr [STAGE=]LR``, ``--batch-size``,
   ``--image-size H W``, ``--pretrained``, ``--loss-weight NAME=W``, ``--dataset``,
   ``--data-root``, ``--filename-pattern``;
3. ``--set KEY=VALUE ...`` and yacs-style ``KEY VALUE`` pairs at the end of the command line,
   in their order (keys are the configuration's dotted paths, matched case-insensitively).

A wrong key, type or range is an error naming the key (and the option that set it); so is a
data set without its folder (``--data-root``), a folder that holds another run, and a resumed
run whose configuration changed.

An option of how a run runs (not of the experiment: ``--no-progress``, ``--sync-bn``) is a
field of :class:`~reidkit.recipes.config.Runtime`, an option of
:func:`reidkit.engine.cli.add_run_arguments` and a line of :func:`runtime_from_args`; every
command that trains gets it from there.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from reidkit.distributed import cleanup_distributed, is_main_process
from reidkit.downloads import is_local_file, looks_like_path
from reidkit.engine.checkpoint import LAST_CHECKPOINT
from reidkit.engine.cli import add_run_arguments, stage_value
from reidkit.engine.run_folder import CONFIG_FILE, RunFolderError, holds_run
from reidkit.recipes.common import DEFAULT_DATASET, TEXT_DEFAULT_DATASET, Recipe, check_run
from reidkit.recipes.config import IMAGE_FOLDER, ConfigError, Runtime, get_field
from reidkit.recipes.serialization import (
    Override,
    apply_overrides,
    config_from_file,
    parse_override_tokens,
    read_config_file,
)

DEFAULT_PRESET = "tiny"

OVERRIDE_TOKENS = "override_tokens"
"""Where the parsed namespace keeps the ``--set`` tokens and the trailing ``KEY VALUE`` pairs."""

FIELD_OPTIONS = "field_options"
"""Where the parsed namespace keeps the options of :func:`field_option`: ``(dest, key, flag)``."""

CONFIG_OPTIONS = (
    "config",
    "preset",
    "epochs",
    "lr",
    "batch_size",
    "image_size",
    "pretrained",
    "loss_weight",
    "dataset",
    "data_root",
    "filename_pattern",
)
"""Options that change the configuration (besides the overrides)."""


class _Values(argparse.Action):
    """A ``nargs="+"`` option whose values are read by ``read``; the tokens after the first one
    that does not read (a ``KEY VALUE`` pair written after the option) join the overrides."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, read: Callable[[str], Any], **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, nargs="+", **kwargs)
        self.read = read

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        for index, token in enumerate(values):
            try:
                items.append(self.read(token))
            except (argparse.ArgumentTypeError, ValueError) as error:
                if index == 0:
                    parser.error(f"argument {option_string}: {error}")
                _add_override_tokens(namespace, values[index:])
                break
        setattr(namespace, self.dest, items)


class _OverrideTokens(argparse.Action):
    """``--set KEY=VALUE ...`` (or ``KEY VALUE`` pairs): the tokens join the overrides."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        _add_override_tokens(namespace, values)


def _add_override_tokens(namespace: argparse.Namespace, tokens: Sequence[str]) -> None:
    setattr(namespace, OVERRIDE_TOKENS, [*getattr(namespace, OVERRIDE_TOKENS, []), *tokens])


def _name_value(text: str) -> tuple[str, float]:
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {text!r}")
    return name, float(value)


def train_parser(
    recipe: Recipe | None = None,
    *,
    description: str = "",
    default_output_dir: str | Path | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> argparse.ArgumentParser:
    """The training options, in the groups ``configuration``, ``common settings``, ``data``
    and ``run``.

    Args:
        recipe: the recipe of a script that trains one; ``None`` adds a ``RECIPE`` positional
            (``reidkit train``), optional when ``--config`` names the recipe.
        description: the help text of a new parser.
        default_output_dir: ``--output-dir`` when not given (default: ``runs/<recipe>``).
        parser: add the options to this parser (a sub-command's) instead of a new one.
    """
    from reidkit.recipes.registry import RECIPES

    if parser is None:
        parser = argparse.ArgumentParser(description=description)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _recipes_help([recipe] if recipe is not None else list(RECIPES.values()))
    parser.set_defaults(**{OVERRIDE_TOKENS: []})
    if recipe is None:
        parser.add_argument(
            "recipe",
            nargs="?",
            metavar="RECIPE",
            help=f"the pipeline: {', '.join(RECIPES)} (optional with a --config that names it)",
        )
    presets = sorted(recipe.presets) if recipe is not None else None
    configuration = parser.add_argument_group(
        "configuration",
        "the preset or file, then the options below, then --set and trailing KEY VALUE pairs",
    )
    configuration.add_argument(
        "--config", type=Path, metavar="FILE", help="a YAML configuration (e.g. from configs/)"
    )
    configuration.add_argument(
        "--preset",
        metavar="NAME",
        help=f"the preset to start from ({', '.join(presets) if presets else 'the recipe'}'s; "
        f"default {DEFAULT_PRESET})",
    )
    configuration.add_argument(
        "--set",
        action=_OverrideTokens,
        dest=OVERRIDE_TOKENS,
        metavar="KEY=VALUE",
        help="set fields by dotted key, e.g. --set image_stage.lr=5e-6 data.batch_size=32; "
        "trailing KEY VALUE pairs (yacs style) do the same",
    )
    common = parser.add_argument_group("common settings", "each sets fields of the configuration")
    common.add_argument(
        "--epochs",
        action=_Values,
        read=stage_value,
        metavar="[STAGE=]N",
        help="epochs of a stage, or N for every stage",
    )
    common.add_argument(
        "--lr",
        action=_Values,
        read=lambda text: stage_value(text, float, "LR"),
        metavar="[STAGE=]LR",
        help="learning rate of a stage (LR alone: of the only stage)",
    )
    common.add_argument("--batch-size", type=int, metavar="N", help="images per batch, P x K")
    common.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="input height and width"
    )
    common.add_argument(
        "--pretrained",
        metavar="TAG|PATH|none",
        help="the backbone's weights: a weight tag, a local checkpoint file, or none",
    )
    common.add_argument(
        "--loss-weight",
        action=_Values,
        read=_name_value,
        metavar="NAME=W",
        help="weights of the loss terms"
        + (f": {', '.join(recipe.loss_weights)}" if recipe is not None else ""),
    )
    data = parser.add_argument_group("data")
    default_dataset = (
        recipe.default_dataset
        if recipe is not None
        else f"{DEFAULT_DATASET} ({TEXT_DEFAULT_DATASET} for the text-to-image recipes)"
    )
    data.add_argument(
        "--dataset",
        help="data set parser (default: the configuration's; with --data-root, "
        f"{default_dataset}; {IMAGE_FOLDER} with --filename-pattern)",
    )
    data.add_argument("--data-root", type=Path, metavar="PATH", help="the data set's folder")
    data.add_argument(
        "--filename-pattern",
        metavar="REGEX",
        help=f"for --dataset {IMAGE_FOLDER}: named groups pid and camid read from file names",
    )
    name = recipe.name if recipe is not None else "<recipe>"
    add_run_arguments(parser, default_output_dir or f"runs/{name}")
    return parser


def field_option(
    parser: argparse.ArgumentParser,
    flag: str,
    key: str,
    *,
    group: argparse._ArgumentGroup | None = None,
    **options: Any,
) -> None:
    """Add the option ``flag`` that sets the configuration field ``key`` (a script's own
    shorthand, e.g. ``--backbone`` for ``backbone.name``); it is applied with the other
    options, before ``--set``. ``options`` go to ``add_argument`` (default ``None``: unset).
    """
    options.setdefault("default", None)
    action = (group or parser).add_argument(flag, **options)
    fields = [*(parser.get_default(FIELD_OPTIONS) or []), (action.dest, key, flag)]
    parser.set_defaults(**{FIELD_OPTIONS: fields})


def _recipes_help(recipes: Sequence[Recipe]) -> str:
    """For each recipe: its presets, its stages and the names of its loss weights."""
    lines = ["recipes:"]
    for recipe in recipes:
        stages = ", ".join(recipe.epoch_fields(recipe.presets[DEFAULT_PRESET]))
        lines.append(f"  {recipe.name}: {recipe.description}")
        lines.append(f"    presets: {', '.join(recipe.presets)}; stages: {stages}")
        if recipe.loss_weights:
            lines.append(f"    --loss-weight names: {', '.join(recipe.loss_weights)}")
    lines.append("every field: reidkit config RECIPE [--preset NAME] prints them as YAML")
    return "\n".join(lines)


def parse_train_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv``, taking the tokens that no option reads as ``KEY VALUE`` overrides.

    Exits with the parser's usage when a token that starts with ``--`` is no option.
    """
    args, rest = parser.parse_known_args(argv)
    return take_override_tokens(parser, args, rest)


def take_override_tokens(
    parser: argparse.ArgumentParser, args: argparse.Namespace, rest: Sequence[str]
) -> argparse.Namespace:
    """Add the tokens ``rest`` that argparse left over to the overrides of ``args``."""
    unknown = [token for token in rest if token.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _add_override_tokens(args, rest)
    return args


def _given(args: argparse.Namespace) -> bool:
    """Whether any configuration option or override was given."""
    names = [*CONFIG_OPTIONS, *(dest for dest, _, _ in getattr(args, FIELD_OPTIONS, None) or [])]
    return bool(getattr(args, OVERRIDE_TOKENS, [])) or any(
        getattr(args, name, None) not in (None, []) for name in names
    )


def resolve_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Recipe:
    """The recipe of ``reidkit train``: the ``RECIPE`` argument, or the one ``--config`` or
    (when resuming) the run's ``config.yaml`` names. A ``RECIPE`` that is no recipe while
    another source names one is read as the first override token."""
    from reidkit.recipes.registry import RECIPES

    named = args.recipe
    file = _recipe_file(args)
    file_recipe = None
    if file is not None:
        file_recipe = _read_file(parser, file).recipe
    if named is not None and named not in RECIPES and file_recipe is not None:
        # reidkit train --config FILE KEY VALUE: the first token is a key, not a recipe
        setattr(args, OVERRIDE_TOKENS, [named, *getattr(args, OVERRIDE_TOKENS)])
        named = None
    name = named or file_recipe
    if name is None:
        parser.error(f"name the recipe: one of {', '.join(RECIPES)} (or give --config FILE)")
    if name not in RECIPES:
        parser.error(f"unknown recipe {name!r}; the recipes are {', '.join(RECIPES)}")
    if file_recipe is not None and file_recipe != name:
        parser.error(f"{file} configures the recipe {file_recipe!r}, not {name!r}")
    return RECIPES[name]


def _recipe_file(args: argparse.Namespace) -> Path | None:
    config: Path | None = args.config
    if config is not None:
        return config
    if args.resume is None or args.output_dir is None:
        return None
    run_config = Path(args.output_dir) / CONFIG_FILE
    return run_config if run_config.is_file() else None


def _read_file(parser: argparse.ArgumentParser, path: Path) -> Any:
    try:
        return read_config_file(path)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(f"--config: {error}")


def config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, recipe: Recipe
) -> Any:
    """The configuration that the options of ``args`` give for ``recipe`` (see the module
    docstring); a bad value exits through ``parser.error`` with the key named."""
    try:
        return _config(parser, args, recipe)
    except ConfigError as error:
        parser.error(str(error))


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace, recipe: Recipe) -> Any:
    if args.preset is not None and args.preset not in recipe.presets:
        raise ConfigError(
            "--preset", f"must be one of {sorted(recipe.presets)}, got {args.preset!r}"
        )
    run_config = Path(args.output_dir) / CONFIG_FILE
    config: Any  # of the recipe's configuration type
    if args.config is not None:
        config = config_from_file(
            recipe.config_type, recipe.presets, _read_file(parser, args.config), args.preset
        )
    elif args.resume is not None and not _given(args) and run_config.is_file():
        config = config_from_file(recipe.config_type, {}, _read_file(parser, run_config))
    else:
        config = recipe.presets[args.preset or DEFAULT_PRESET]
    overrides = [*_option_overrides(args, recipe, config)]
    overrides += parse_override_tokens(getattr(args, OVERRIDE_TOKENS, []))
    return apply_overrides(config, overrides)


def _option_overrides(args: argparse.Namespace, recipe: Recipe, config: Any) -> Iterator[Override]:
    """The overrides of the plain options, in a fixed order."""
    stages = list(recipe.epoch_fields(config))
    for stage, count in args.epochs or []:
        for name in [stage] if stage is not None else stages:
            yield Override(recipe.stage_field(config, name, "epochs"), count, "--epochs")
    for stage, rate in args.lr or []:
        if stage is None and len(stages) > 1:
            raise ConfigError(
                "--lr",
                f"must name a stage: {recipe.name} has the stages {stages} (--lr {stages[-1]}="
                f"{rate:g})",
            )
        yield Override(recipe.stage_field(config, stage or stages[0], "lr"), rate, "--lr")
    if args.batch_size is not None:
        yield Override("data.batch_size", args.batch_size, "--batch-size")
    if args.image_size is not None:
        yield Override(recipe.image_size_field, tuple(args.image_size), "--image-size")
    if args.pretrained is not None:
        yield Override(recipe.weights_field, args.pretrained, "--pretrained")
    for name, weight in args.loss_weight or []:
        if name not in recipe.loss_weights:
            raise ConfigError(
                f"--loss-weight {name}",
                f"names no loss term of {recipe.name}; its terms are {list(recipe.loss_weights)}",
            )
        yield Override(recipe.loss_weights[name], weight, "--loss-weight")
    dataset = args.dataset
    if dataset is None and args.filename_pattern is not None:
        dataset = IMAGE_FOLDER
    built_in = config.data.dataset in recipe.built_in_datasets
    if dataset is None and args.data_root is not None and built_in:
        dataset = recipe.default_dataset
    if dataset is not None:
        yield Override("data.dataset", dataset, "--dataset")
    if args.data_root is not None:
        yield Override("data.root", str(args.data_root), "--data-root")
    if args.filename_pattern is not None:
        yield Override("data.filename_pattern", args.filename_pattern, "--filename-pattern")
    for dest, key, flag in getattr(args, FIELD_OPTIONS, None) or []:
        value = getattr(args, dest)
        if value is not None:
            yield Override(key, value, flag)


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    """The runtime of the parsed ``run`` options."""
    return Runtime(
        output_dir=str(args.output_dir),
        resume=None if args.resume is None else str(args.resume),
        device=args.device,
        seed=args.seed,
        num_workers=args.num_workers,
        eval_every=args.eval_every,
        amp=args.amp,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        tensorboard=not args.no_tensorboard,
        sync_bn=args.sync_bn,
    )


def check_before_training(
    parser: argparse.ArgumentParser, recipe: Recipe, config: Any, runtime: Runtime
) -> None:
    """What can be checked before data and model are built, as parser errors: the data set's
    folder, a checkpoint path that names no file, the run folder (see
    :func:`~reidkit.recipes.common.check_run`)."""
    try:
        recipe.check_data(config)
        weights = get_field(config, recipe.weights_field)
        if isinstance(weights, str) and looks_like_path(weights) and not is_local_file(weights):
            raise ConfigError(
                recipe.weights_field,
                f"names no file: {weights!r} (--pretrained takes a weight tag, the path of a "
                "local checkpoint file, or none)",
            )
        check_run(recipe.name, config, runtime)
    except (ConfigError, RunFolderError) as error:
        parser.error(str(error))


def train_from_command_line(
    recipe: Recipe,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    args: argparse.Namespace | None = None,
    adapt: Callable[[Any, argparse.Namespace], Any] | None = None,
) -> dict[str, Any] | None:
    """Parse ``argv`` with ``parser`` (from :func:`train_parser`), build and check the
    configuration and the runtime, and train ``recipe``; its results on rank 0 (``None`` on the
    other ranks).

    Args:
        args: ``argv`` already parsed with :func:`parse_train_args`.
        adapt: ``adapt(config, args)`` applies a script's own options to the configuration.
    """
    if args is None:
        args = parse_train_args(parser, argv)
    config = config_from_args(parser, args, recipe)
    if adapt is not None:
        try:
            config = adapt(config, args)
        except ConfigError as error:
            parser.error(str(error))
    runtime = runtime_from_args(args)
    check_before_training(parser, recipe, config, runtime)
    command = f"python {sys.argv[0]} --resume --output-dir {runtime.output_dir}"
    return launch(recipe, config, runtime, resume_command=command)


def launch(
    recipe: Recipe, config: Any, runtime: Runtime, *, resume_command: str
) -> dict[str, Any] | None:
    """Train, then leave the process group; on Ctrl-C, one line that says where the last
    checkpoint is and how to resume (``resume_command``), and exit status 130.

    Returns:
        The results of ``recipe.train`` on rank 0; ``None`` on the other ranks.
    """
    try:
        results = recipe.train(config, runtime)
        return results if is_main_process() else None  # before the process group is left
    except KeyboardInterrupt:
        if is_main_process():
            print(interrupted_message(runtime, resume_command), file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        cleanup_distributed()


def interrupted_message(runtime: Runtime, resume_command: str) -> str:
    """``interrupted: the last checkpoint is runs/x/last.pt (stage prompts, 3 epochs done);
    resume with: reidkit train --resume --output-dir runs/x``."""
    checkpoints = [
        path
        for folder in (runtime.output_path, *_subfolders(runtime.output_path))
        if (path := folder / LAST_CHECKPOINT).is_file()
    ]
    if not checkpoints:
        if holds_run(runtime.output_path):
            return (
                f"interrupted before the first checkpoint of {runtime.output_dir}; resume with: "
                f"{resume_command} (it starts from the first epoch)"
            )
        return f"interrupted before the run wrote anything to {runtime.output_dir}"
    latest = max(checkpoints, key=lambda path: path.stat().st_mtime)
    return (
        f"interrupted: the last checkpoint is {latest}{_position(latest)}; resume with: "
        f"{resume_command}"
    )


def _subfolders(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []


def _position(path: Path) -> str:
    """`` (stage prompts, 3 epochs done)`` from a checkpoint's header, or ``""``."""
    with contextlib.suppress(Exception):  # a description only: the path says enough alone
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return f" (stage {payload['stage']}, {payload['epoch']} epochs done)"
    return ""
