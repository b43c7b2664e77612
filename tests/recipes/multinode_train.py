"""``python -m tests.recipes.multinode_train RECIPE OUTPUT_DIR``, under ``torchrun``: a recipe's
tiny preset, one epoch per stage without warm-up, through ``recipe.train`` (the entry point of
the text-to-image recipes in ``tests/recipes/test_multinode.py``)."""

from __future__ import annotations

import sys

from reidkit.distributed import cleanup_distributed
from reidkit.recipes import Runtime, get_recipe, replace_field
from reidkit.recipes.config import ConfigError


def main(name: str, output_dir: str) -> None:
    recipe = get_recipe(name)
    config = recipe.with_epochs(recipe.presets["tiny"], [(None, 1)])
    for stage in recipe.epoch_fields(config):
        try:
            config = replace_field(config, recipe.stage_field(config, stage, "warmup_epochs"), 0)
        except ConfigError:  # a stage that warms up by another field
            continue
    runtime = Runtime(
        output_dir=output_dir,
        device="cpu",
        num_workers=0,
        seed=3,
        progress=False,
        tensorboard=False,
    )
    try:
        recipe.train(config, runtime)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
