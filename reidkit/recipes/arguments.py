"""From the examples' command-line options to a recipe's configuration and runtime.

The options every example shares (:func:`reidkit.engine.build_arg_parser`) map onto a
configuration and a :class:`~reidkit.recipes.config.Runtime`: :func:`runtime_from_args` takes
the ones that are not part of the experiment, :func:`config_from_args` applies the others
(``--data-root``, ``--dataset``, ``--pretrained``, ``--epochs``) to a preset.
"""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from reidkit.data import SYNTHETIC_DATASETS
from reidkit.recipes.common import Recipe
from reidkit.recipes.config import Runtime, replace_field

ConfigT = TypeVar("ConfigT")
DEFAULT_DATASET = "market1501"
"""The data set parser of ``--data-root`` when neither ``--dataset`` nor the preset names one
that reads a folder."""


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    """The runtime of the parsed shared options."""
    return Runtime(
        output_dir=str(args.output_dir),
        resume=None if args.resume is None else str(args.resume),
        device=args.device,
        seed=args.seed,
        num_workers=args.num_workers,
        eval_every=args.eval_every,
        amp=args.amp,
    )


def config_from_args(recipe: Recipe, config: ConfigT, args: argparse.Namespace) -> ConfigT:
    """``config`` with the data, weights and epoch options of ``args`` applied.

    * ``--data-root`` replaces ``data.root``; ``--dataset`` replaces ``data.dataset`` (with a
      root but no ``--dataset``, a preset on the built-in data reads ``market1501``);
    * ``--pretrained`` (where the example has it) replaces the recipe's ``weights_field``
      (``none``: random weights);
    * ``--epochs`` replaces the stages' epochs (see :meth:`Recipe.with_epochs`).
    """
    data: Any = config.data  # type: ignore[attr-defined]
    dataset = args.dataset
    if dataset is None and args.data_root is not None and data.dataset in SYNTHETIC_DATASETS:
        dataset = DEFAULT_DATASET
    if dataset is not None:
        config = replace_field(config, "data.dataset", dataset)
    if args.data_root is not None:
        config = replace_field(config, "data.root", str(args.data_root))
    pretrained = getattr(args, "pretrained", None)
    if pretrained is not None:
        weights = None if pretrained == "none" else str(pretrained)
        config = replace_field(config, recipe.weights_field, weights)
    return recipe.with_epochs(config, args.epochs)
