"""The recipes' configurations: plain values, dotted-path access, checks, epochs, runtime."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from reidkit.engine import to_jsonable
from reidkit.recipes import RECIPES, Runtime, get_field, replace_field
from reidkit.recipes.config import DataConfig
from reidkit.recipes.mmpl import LevelsConfig

PLAIN = (int, float, str, bool, type(None))
PRESETS = [(name, preset) for name in RECIPES for preset in RECIPES[name].presets]


def _check_plain(value: object, where: str) -> None:
    if dataclasses.is_dataclass(value):
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
        get_field(config, entry.weights_field)  # the path exists
        shortened = entry.with_epochs(config, [(None, 1)])
        assert set(entry.stage_epochs(shortened).values()) == {1}
        assert entry.stage_epochs(config) == epochs  # the preset itself is unchanged


def test_with_epochs_sets_one_stage_and_names_unknown_ones() -> None:
    entry = RECIPES["mmpl"]
    config = entry.with_epochs(entry.presets["tiny"], [("image_encoder", 3)])
    assert entry.stage_epochs(config) == {"prompts": 10, "image_encoder": 3}
    assert config.image_stage.epochs == 3 and config.prompt_stage.epochs == 10
    with pytest.raises(ValueError, match="'stage3'"):
        entry.with_epochs(config, [("stage3", 2)])


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
        ("optim.lr", "'optim.lr': CLIPReIDConfig has no field 'optim'"),
        ("image_stage.rate", "'image_stage.rate': image_stage has no field 'rate'"),
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
    with pytest.raises(ValueError, match=r"batch_size \(30\) must be a multiple of num_instances"):
        replace_field(config, "data.batch_size", 30)
    with pytest.raises(ValueError, match=r"DataConfig\.num_instances must be an integer >= 1"):
        DataConfig("synthetic", None, 32, 0)


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
    with pytest.raises(ValueError, match=r"Runtime\.seed must be an integer >= 0"):
        Runtime(seed=True)
    runtime = Runtime(output_dir=str(tmp_path), resume="auto", seed=3)
    fresh = runtime.in_subfolder("baseline")
    assert fresh.output_path == tmp_path / "baseline" and fresh.resume is None
    assert fresh.seed == 3
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "last.pt").touch()
    assert runtime.in_subfolder("baseline").resume == "auto"
    # a run that does not resume does not resume its sub-run either
    assert dataclasses.replace(runtime, resume=None).in_subfolder("baseline").resume is None
