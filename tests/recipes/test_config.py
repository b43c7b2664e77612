"""The recipes' configurations: plain values, dotted-path access, type and range checks that
name the field, epochs, runtime."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest

from reidkit.engine import to_jsonable
from reidkit.recipes import RECIPES, Runtime, get_field, replace_field
from reidkit.recipes.config import (
    ClipConfig,
    ConfigError,
    DataConfig,
    ImageStageConfig,
    PromptStageConfig,
    Section,
)
from reidkit.recipes.mmpl import LevelsConfig

PLAIN = (int, float, str, bool, type(None))
PRESETS = [(name, preset) for name in RECIPES for preset in RECIPES[name].presets]


def _check_plain(value: object, where: str) -> None:
    if dataclasses.is_dataclass(value):
        assert isinstance(value, Section), f"{where} is not checked when built (no Section)"
        hints = typing.get_type_hints(type(value))  # every annotation resolves
        for field in dataclasses.fields(value):
            assert field.name in hints, f"{where}.{field.name} has no type hint"
            _check_plain(getattr(value, field.name), f"{where}.{field.name}")
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        assert all(isinstance(key, str) for key in value), where
        for key, item in value.items():
            _check_plain(item, f"{where}.{key}")
    else:
        assert isinstance(value, PLAIN), f"{where} is a {type(value).__name__}"


@pytest.mark.parametrize(("recipe", "preset"), PRESETS)
def test_every_preset_is_a_tree_of_plain_values(recipe: str, preset: str) -> None:
    config = RECIPES[recipe].presets[preset]
    assert isinstance(config, RECIPES[recipe].config_type)
    _check_plain(config, f"{recipe}:{preset}")
    # what the report stores is JSON, and holds every field
    stored = json.loads(json.dumps(to_jsonable(config)))
    assert stored == json.loads(json.dumps(dataclasses.asdict(config)))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_has_a_paper_and_a_tiny_preset_and_finds_its_epochs(recipe: str) -> None:
    entry = RECIPES[recipe]
    assert {"paper", "tiny"} <= set(entry.presets)
    for config in entry.presets.values():
        epochs = entry.stage_epochs(config)
        assert epochs and all(isinstance(count, int) and count > 0 for count in epochs.values())
        for path in (entry.weights_field, entry.image_size_field, *entry.loss_weights.values()):
            get_field(config, path)  # the path exists
        for stage in epochs:
            for name in ("lr", "warmup_epochs"):
                assert get_field(config, entry.stage_field(config, stage, name)) is not None
        # shortened to the fewest epochs longer than every warm-up (a per-step warm-up may
        # last a fraction of an epoch): still valid
        longest = max(
            get_field(config, entry.stage_field(config, stage, "warmup_epochs")) for stage in epochs
        )
        shortest = math.floor(longest) + 1
        shortened = entry.with_epochs(config, [(None, shortest)])
        assert set(entry.stage_epochs(shortened).values()) == {shortest}
        assert entry.stage_epochs(config) == epochs  # the preset itself is unchanged


def test_with_epochs_sets_one_stage_and_names_unknown_ones() -> None:
    entry = RECIPES["mmpl"]
    config = entry.with_epochs(entry.presets["tiny"], [("image_encoder", 3)])
    assert entry.stage_epochs(config) == {"prompts": 10, "image_encoder": 3}
    assert config.image_stage.epochs == 3 and config.prompt_stage.epochs == 10
    with pytest.raises(ValueError, match="'stage3'"):
        entry.with_epochs(config, [("stage3", 2)])
    # fewer epochs than the warm-up is refused, naming the field
    with pytest.raises(ConfigError, match=r"image_stage\.warmup_epochs must be < epochs \(2\)"):
        entry.with_epochs(config, [("image_encoder", 2)])


def test_replace_field_replaces_a_nested_field_only() -> None:
    config = RECIPES["clip_reid"].presets["tiny"]
    changed = replace_field(config, "image_stage.lr", 5e-6)
    assert changed.image_stage.lr == 5e-6 and config.image_stage.lr == 1e-3
    assert changed.image_stage.milestones == config.image_stage.milestones
    assert changed.prompt_stage is config.prompt_stage
    assert get_field(changed, "image_stage.lr") == 5e-6


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("optim.lr", "optim.lr names no field: CLIPReIDConfig has no field 'optim'"),
        ("image_stage.rate", "image_stage.rate names no field: image_stage has no field 'rate'"),
        ("image_stage.lr.value", "image_stage.lr has no field 'value'"),
    ],
)
def test_unknown_paths_name_the_missing_field(path: str, message: str) -> None:
    config = RECIPES["clip_reid"].presets["tiny"]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        replace_field(config, path, 1)
    with pytest.raises(ValueError, match="its fields are"):
        get_field(config, path)


def test_replacing_reruns_the_checks_of_the_section() -> None:
    config = RECIPES["clip_reid"].presets["tiny"]
    with pytest.raises(
        ConfigError, match=r"^data\.batch_size \(30\) must be a multiple of num_instances \(4\)"
    ):
        replace_field(config, "data.batch_size", 30)
    with pytest.raises(ConfigError, match=r"DataConfig\.num_instances must be an integer >= 1"):
        DataConfig("synthetic", None, 32, 0)


# A field of every kind of check, with a value out of range and the message naming it.
OUT_OF_RANGE = [
    ("clip_reid", "clip.image_size", (0, 64), r"clip\.image_size must be \(H, W\) with H, W >= 1"),
    ("clip_reid", "clip.stride", 0, r"clip\.stride must be None or an integer >= 1, got 0"),
    ("clip_reid", "clip.pixel_std", (0.5, 0.0, 0.5), r"clip\.pixel_std must hold numbers > 0"),
    ("clip_reid", "data.dataset", "", r"data\.dataset must name a data set"),
    ("clip_reid", "data.num_instances", 0, r"data\.num_instances must be an integer >= 1"),
    ("clip_reid", "data.filename_pattern", "(", r"data\.filename_pattern is read by the dataset"),
    ("clip_reid", "prompt.template", "A person.", r"prompt\.template must contain '\{\}'"),
    ("clip_reid", "prompt.n_ctx", 0, r"prompt\.n_ctx must be an integer >= 1"),
    ("clip_reid", "prompt_stage.epochs", 0, r"prompt_stage\.epochs must be an integer >= 1"),
    ("clip_reid", "prompt_stage.lr", -1.0, r"prompt_stage\.lr must be a finite number > 0"),
    ("clip_reid", "prompt_stage.lr", float("nan"), r"prompt_stage\.lr must be a finite number"),
    (
        "clip_reid",
        "prompt_stage.warmup_lr",
        1.0,
        r"prompt_stage\.warmup_lr must be in \(0, 0\.005\]",
    ),
    ("clip_reid", "prompt_stage.min_lr", -1e-6, r"prompt_stage\.min_lr must be in \[0, 0\.005\]"),
    (
        "clip_reid",
        "prompt_stage.weight_decay",
        -1.0,
        r"prompt_stage\.weight_decay must be a finite",
    ),
    (
        "clip_reid",
        "image_stage.warmup_factor",
        1.5,
        r"image_stage\.warmup_factor must be in \(0, 1\]",
    ),
    (
        "clip_reid",
        "image_stage.milestones",
        (5, 3),
        r"image_stage\.milestones must hold increasing",
    ),
    (
        "clip_reid",
        "image_stage.bias_lr_factor",
        0.0,
        r"image_stage\.bias_lr_factor must be a finite",
    ),
    ("clip_reid", "loss.id_weight", -0.5, r"loss\.id_weight must be a finite number >= 0"),
    ("clip_reid", "loss.label_smoothing", 1.0, r"loss\.label_smoothing must be in \[0, 1\)"),
    ("clip_reid", "loss.triplet_margin", 0.0, r"loss\.triplet_margin must be a finite number > 0"),
    ("mmpl", "levels.selected", (3, 10, 40), r"levels\.selected \(3, 10, 40\) must not exceed"),
    ("mmpl", "levels.n_ctx", (4, 0, 8), r"levels\.n_ctx must hold integers >= 1"),
    ("mmpl", "agent.episodes", 0, r"agent\.episodes must be an integer >= 1"),
    ("mmpl", "alignment.stop_rule", "never", r"alignment\.stop_rule must be one of"),
    ("mmpl", "alignment.epsilon", 0.0, r"alignment\.epsilon must be a finite number > 0"),
    ("mmpl", "beta", -0.1, r"^beta must be a finite number >= 0"),
    ("mmpl", "visual_prompts.conv_stride", 0, r"visual_prompts\.conv_stride must be an integer"),
    ("aaformer", "backbone.name", "resnet50", r"backbone\.name must be tiny, timm:<name>"),
    ("aaformer", "optimizer.name", "lamb", r"optimizer\.name must be one of \('sgd', 'adamw'\)"),
    ("aaformer", "optimizer.momentum", 1.0, r"optimizer\.momentum must be in \[0, 1\)"),
    ("aaformer", "optimizer.warmup_epochs", 8, r"optimizer\.warmup_epochs must be < epochs \(8\)"),
    ("aaformer", "part_groups", (2, 0), r"^part_groups must hold integers >= 1"),
    ("aaformer", "assignment", "greedy", r"^assignment must be one of"),
    ("aaformer", "part_maps", -1, r"^part_maps must be an integer >= 0"),
    ("pcl_clip", "mode", "semi", r"^mode must be one of \('supervised', 'unsupervised'\)"),
    ("pcl_clip", "memory.momentum", 1.5, r"memory\.momentum must be in \[0, 1\]"),
    ("pcl_clip", "memory.update_rule", "best", r"memory\.update_rule must be one of"),
    ("pcl_clip", "clustering.k1", 0, r"clustering\.k1 must be an integer >= 1"),
    ("pcl_clip", "optimizer.milestones", (30, 30), r"optimizer\.milestones must hold increasing"),
]


@pytest.mark.parametrize(("recipe", "path", "value", "message"), OUT_OF_RANGE)
def test_a_value_out_of_range_is_refused_naming_the_field(
    recipe: str, path: str, value: object, message: str
) -> None:
    config = RECIPES[recipe].presets["tiny"]
    with pytest.raises(ConfigError, match=message) as error:
        replace_field(config, path, value)
    assert error.value.key == path


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("prompt_stage.epochs", 2.5, r"prompt_stage\.epochs must be an integer, got 2\.5"),
        ("prompt_stage.epochs", True, r"prompt_stage\.epochs must be an integer, got True"),
        ("prompt_stage.lr", "fast", r"prompt_stage\.lr must be a number, got 'fast'"),
        ("clip.image_size", (128,), r"clip\.image_size must be a pair of integers"),
        ("clip.pretrained", 3, r"clip\.pretrained must be a string, or null, got 3"),
        ("data", 3, r"^data must be a DataConfig mapping, got 3"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(
    path: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        replace_field(RECIPES["clip_reid"].presets["tiny"], path, value)


def test_sections_normalise_ints_to_floats_and_lists_to_tuples() -> None:
    stage = ImageStageConfig(
        epochs=3,
        lr=1,
        weight_decay=0,
        bias_lr_factor=2,
        warmup_epochs=0,
        warmup_factor=1,
        milestones=[1, 2],  # type: ignore[arg-type]
    )
    assert isinstance(stage.lr, float) and stage.milestones == (1, 2)
    clip = ClipConfig(name="ViT-B-16", pretrained=None, image_size=[256, 128])  # type: ignore[arg-type]
    assert clip.image_size == (256, 128)
    with pytest.raises(ConfigError, match=r"PromptStageConfig\.warmup_epochs must be < epochs"):
        PromptStageConfig(
            epochs=1, lr=1e-3, weight_decay=0, warmup_epochs=1, warmup_lr=1e-4, min_lr=0
        )


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (((4, 6), (4, 16, 32), (3, 10, 20)), "one value per level"),
        (((), (), ()), "one value per level"),
        (((4,), (4,), (5,)), "must not exceed patch_counts"),
    ],
)
def test_levels_must_agree(levels: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LevelsConfig(*levels)


def test_runtime_checks_and_subfolders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Runtime\.num_workers must be an integer >= 0"):
        Runtime(num_workers=-1)
    with pytest.raises(ValueError, match=r"Runtime\.seed must be an integer, got True"):
        Runtime(seed=True)
    with pytest.raises(ValueError, match=r"Runtime\.overwrite and resume exclude each other"):
        Runtime(resume="auto", overwrite=True)
    runtime = Runtime(output_dir=str(tmp_path), resume="auto", seed=3)
    fresh = runtime.in_subfolder("baseline")
    assert fresh.output_path == tmp_path / "baseline" and fresh.resume is None
    assert fresh.seed == 3
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "train.log").touch()  # a run stopped before its first checkpoint
    assert runtime.in_subfolder("baseline").resume == "auto"
    # a run that does not resume does not resume its sub-run either
    assert dataclasses.replace(runtime, resume=None).in_subfolder("baseline").resume is None
