"""Saved models: a run's description and weights rebuild the module that gives the same
features, without the training code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reidkit
from reidkit.engine import save_weights
from reidkit.models import (
    AAformerReID,
    CLIPReIDModel,
    InferenceModel,
    ModelSpec,
    PCLCLIPModel,
    build_vit,
    load_model,
    read_spec,
)
from reidkit.parts import AAformer, AAformerLoss
from reidkit.recipes import aaformer, clip_reid, mmpl, pcl_clip
from reidkit.recipes.common import build_clip, clip_model_spec

NUM_CLASSES = 6


def _save(model: nn.Module, spec: dict, folder: Path, weights: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(spec))
    save_weights(model, folder / weights)
    return folder


def _settle(model: nn.Module, image_size: tuple[int, int]) -> nn.Module:
    """Move the BatchNorm statistics off their defaults, so that loading them matters."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, *image_size))
    return model.eval()


def _clip_reid(prompts: int) -> tuple[nn.Module, dict]:
    config = mmpl.PRESETS["tiny"] if prompts else clip_reid.PRESETS["tiny"]
    model = CLIPReIDModel(build_clip(config.clip, torch.device("cpu")), NUM_CLASSES, prompts, 4)
    spec = clip_model_spec(
        "clip_reid",
        "mmpl" if prompts else "clip_reid",
        config.clip,
        config.data,
        NUM_CLASSES,
        num_visual_prompts=prompts,
        prompt_conv_stride=4,
    )
    return model, spec


def _pcl_clip(id_classifier: str | None = "concatenated") -> tuple[nn.Module, dict]:
    """PCL-CLIP's model; ``id_classifier=None``: the two necks, described as before the
    field (a model.json without it)."""
    config = pcl_clip.PRESETS["tiny"]
    clip_model = build_clip(config.clip, torch.device("cpu"), frozen=False)
    model = PCLCLIPModel(clip_model, NUM_CLASSES, id_classifier or "per_neck")
    described = {} if id_classifier is None else {"id_classifier": id_classifier}
    spec = clip_model_spec(
        "pcl_clip", "pcl_clip", config.clip, config.data, NUM_CLASSES, normalize=True, **described
    )
    return model, spec


def _aaformer() -> tuple[nn.Module, dict]:
    config = aaformer.PRESETS["tiny"]
    vit, mean, std = build_vit("tiny", None, config.backbone.image_size)
    transformer = AAformer(vit, config.part_groups)
    heads = AAformerLoss(transformer.output_dim, 1 + transformer.num_parts, NUM_CLASSES)
    model = AAformerReID(transformer, heads)
    return model, aaformer.model_spec(config, mean, std, NUM_CLASSES)


BUILDERS = {
    "clip_reid": lambda: _clip_reid(0),
    "mmpl": lambda: _clip_reid(3),
    "pcl_clip": _pcl_clip,
    "pcl_clip_per_neck": lambda: _pcl_clip("per_neck"),
    "pcl_clip_described_before_the_field": lambda: _pcl_clip(None),
    "aaformer": _aaformer,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_saved_model_gives_the_features_of_the_model_it_was_saved_from(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model, spec = BUILDERS[name]()
    image_size = tuple(spec["image_size"])
    _settle(model, image_size)
    folder = _save(model, spec, tmp_path)
    loaded = load_model(folder)
    assert isinstance(loaded, InferenceModel) and not loaded.training
    assert loaded.spec == read_spec(folder) == ModelSpec.from_json(spec)
    images = torch.randn(5, 3, *image_size)
    with torch.no_grad():
        expected = model(images)
        if spec["normalize"]:
            expected = F.normalize(expected, dim=1)
        torch.testing.assert_close(loaded(images), expected, rtol=0, atol=0)
    assert loaded.spec.metric == ("euclidean" if name == "aaformer" else "cosine")


def test_the_best_weights_and_the_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, spec = _clip_reid(0)
    folder = _save(model, spec, tmp_path / "run", weights="best_model.safetensors")
    assert isinstance(load_model(folder, weights="best"), InferenceModel)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors does not exist: the run did"):
        load_model(folder)
    with pytest.raises(ValueError, match="weights must be one of"):
        load_model(folder, weights="last")
    with pytest.raises(FileNotFoundError, match=r"holds no model\.json"):
        load_model(tmp_path)
    other, _ = _aaformer()
    save_weights(other, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not fit the model of model\.json: missing \["):
        load_model(folder)
    (folder / "model.json").write_text(json.dumps({**spec, "format": 0}))
    with pytest.raises(ValueError, match="is not a reidkit model description"):
        load_model(folder)
    with pytest.raises(ValueError, match="metric must be one of"):
        ModelSpec.from_json({**spec, "metric": "hamming"})


def test_loading_needs_neither_the_recipes_nor_the_training_code(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, spec = _clip_reid(0)
    folder = _save(model, spec, tmp_path / "run")
    code = (
        "import sys, torch, reidkit\n"
        f"model = reidkit.load_model({str(folder)!r})\n"
        "print(tuple(model(torch.zeros(1, 3, *model.spec.image_size)).shape))\n"
        "print('reidkit.recipes' in sys.modules)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    shape, imported = completed.stdout.strip().splitlines()
    assert shape == "(1, 128)" and imported == "False"
    assert reidkit.load_model is load_model
