"""Training pipelines as a library: configurations, presets, builders and ``train``.

Each pipeline is a module with a configuration dataclass, ``PRESETS`` (``"paper"`` and
``"tiny"`` at least) and ``train(config, runtime)``, which trains, evaluates and writes the run
folder (``train.log``, ``report.json``, checkpoints):

* :mod:`reidkit.recipes.clip_reid`: CLIP-ReID (:class:`~reidkit.recipes.clip_reid.CLIPReIDConfig`);
* :mod:`reidkit.recipes.mmpl`: MMPL (:class:`~reidkit.recipes.mmpl.MMPLConfig`);
* :mod:`reidkit.recipes.aaformer`: AAformer (:class:`~reidkit.recipes.aaformer.AAformerConfig`);
* :mod:`reidkit.recipes.pcl_clip`: PCL-CLIP (:class:`~reidkit.recipes.pcl_clip.PCLCLIPConfig`);
* :mod:`reidkit.recipes.unipt`: UniPT (:class:`~reidkit.recipes.unipt.UniPTConfig`);
* :mod:`reidkit.recipes.valpat`: VAL-PAT (:class:`~reidkit.recipes.valpat.VALPATConfig`).

:mod:`reidkit.recipes.config` holds the shared sections and :class:`Runtime`;
:mod:`reidkit.recipes.serialization` reads and writes configurations (YAML files, dotted-key
overrides); :mod:`reidkit.recipes.common` the builders they share; :data:`RECIPES` names them
all; :mod:`reidkit.recipes.arguments` is the training command line; :func:`evaluate_run`
evaluates a trained run on any data set; :func:`compare_reports` puts the results of several
runs in one table (``reidkit compare RUN_DIR...``). Names are imported on first use, so
``import reidkit.recipes`` is cheap::

    from reidkit.recipes import Runtime, clip_reid

    config = clip_reid.PRESETS["tiny"]
    clip_reid.train(config, Runtime(output_dir="runs/clip_reid", seed=1))
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC_NAMES: dict[str, str] = {
    "Runtime": "reidkit.recipes.config",
    "TINY_CLIP": "reidkit.recipes.config",
    "get_field": "reidkit.recipes.config",
    "replace_field": "reidkit.recipes.config",
    "Recipe": "reidkit.recipes.common",
    "RECIPES": "reidkit.recipes.registry",
    "get_recipe": "reidkit.recipes.registry",
    "compare_reports": "reidkit.recipes.compare",
    "ComparisonTable": "reidkit.recipes.compare",
    "plot_comparison": "reidkit.recipes.compare",
    "ConfigError": "reidkit.recipes.config",
    "load_config": "reidkit.recipes.serialization",
    "save_config": "reidkit.recipes.serialization",
    "apply_overrides": "reidkit.recipes.serialization",
    "Override": "reidkit.recipes.serialization",
    "evaluate_run": "reidkit.recipes.evaluate",
}
_MODULES = (
    "clip_reid",
    "mmpl",
    "aaformer",
    "pcl_clip",
    "unipt",
    "valpat",
    "text_to_image",
    "common",
    "config",
    "compare",
    "arguments",
    "registry",
    "serialization",
    "evaluate",
    "presets",
)

__all__ = [*_PUBLIC_NAMES, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"reidkit.recipes.{name}")
    module_name = _PUBLIC_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'reidkit.recipes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
