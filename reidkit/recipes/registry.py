"""The registry of recipes: every training pipeline by name."""

from __future__ import annotations

from reidkit.recipes import aaformer, clip_reid, mmpl, pcl_clip, unipt, valpat
from reidkit.recipes.common import Recipe

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        clip_reid.RECIPE,
        mmpl.RECIPE,
        aaformer.RECIPE,
        pcl_clip.RECIPE,
        unipt.RECIPE,
        valpat.RECIPE,
    )
}
"""``{name: Recipe}``: ``clip_reid``, ``mmpl``, ``aaformer``, ``pcl_clip``, ``unipt`` and
``valpat``."""


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: no recipe has that name (the message lists them).
    """
    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]
