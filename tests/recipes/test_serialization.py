"""Configurations as data: YAML round trips, overrides read by type, errors that name the key."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from reidkit.recipes import RECIPES, replace_field
from reidkit.recipes.config import ConfigError, field_hints, union_members
from reidkit.recipes.serialization import (
    NULL_WORDS,
    Override,
    apply_overrides,
    config_differences,
    config_to_yaml,
    from_plain,
    load_config,
    parse_override_tokens,
    parse_text,
    read_config_file,
    save_config,
    to_plain,
)

PRESETS = [(name, preset) for name in RECIPES for preset in RECIPES[name].presets]
NONE_TYPE = type(None)


def _leaves(config_type: type, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf field of a configuration type: ``(dotted path, type hint)``."""
    leaves = []
    for name, hint in field_hints(config_type).items():
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            leaves += _leaves(hint, f"{path}.")
        elif not any(typing.get_origin(m) is dict for m in union_members(hint)):
            leaves.append((path, hint))  # a CLIP given by its open_clip config stays as it is
    return leaves


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12)
SCALARS = {
    int: st.integers(-3, 400),
    float: st.one_of(
        st.floats(1e-9, 1e4), st.sampled_from([0.0, 1.0, 5e-6, 0.1, 2.5e-7]), st.floats(-1, 0)
    ),
    bool: st.booleans(),
    str: st.one_of(TEXT, st.sampled_from(["null", "true", "1e-3", "a: b", "{}", " x", "~"])),
}


def _values(hint: Any) -> st.SearchStrategy:
    members = union_members(hint)
    if len(members) > 1:
        return st.one_of([_values(member) for member in members])
    if hint is NONE_TYPE:
        return st.none()
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args[-1:] == (Ellipsis,):
            return st.lists(_values(args[0]), max_size=4).map(tuple)
        return st.tuples(*(_values(arg) for arg in args))
    return SCALARS[hint]


def _as_text(value: Any) -> str:
    """How a user writes ``value`` on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_as_text(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@st.composite
def _changed_preset(draw: st.DrawFn) -> tuple[str, Any, str, Any]:
    """A preset with one leaf replaced by a random value of its type that passes the checks."""
    recipe, preset = draw(st.sampled_from(PRESETS))
    config = RECIPES[recipe].presets[preset]
    path, hint = draw(st.sampled_from(_leaves(type(config))))
    value = draw(_values(hint))
    try:
        changed = replace_field(config, path, value)
    except ConfigError:
        assume(False)
    return recipe, changed, path, hint


@given(_changed_preset())
def test_yaml_gives_back_the_configuration_it_was_written_from(case: tuple) -> None:
    recipe, config, _, _ = case
    data = yaml.safe_load(config_to_yaml(recipe, config, header="a comment\nover two lines"))
    assert data.pop("recipe") == recipe
    assert from_plain(type(config), data) == config


@given(_changed_preset())
def test_the_command_line_text_of_a_value_reads_back_as_the_value(case: tuple) -> None:
    _, config, path, hint = case
    value = _field(config, path)
    if isinstance(value, str) and NONE_TYPE in union_members(hint):
        assume(value.strip().lower() not in NULL_WORDS)  # "none" is None for such a field
    if isinstance(value, str) and (str,) != union_members(hint):
        assume(value == value.strip())
    if isinstance(value, tuple) and any(isinstance(item, str) for item in value):
        assume(all("," not in item and item == item.strip() for item in value))
    parsed = parse_text(path, _as_text(value), hint)
    assert parsed == value and type(parsed) is type(value)
    assert apply_overrides(config, [Override(path, _as_text(value), "--set")]) == config


def _field(config: Any, path: str) -> Any:
    for name in path.split("."):
        config = getattr(config, name)
    return config


@pytest.mark.parametrize(("recipe", "preset"), PRESETS)
def test_every_preset_survives_a_file(recipe: str, preset: str, tmp_path: Path) -> None:
    config = RECIPES[recipe].presets[preset]
    path = save_config(tmp_path / "nested" / "config.yaml", recipe, config, header="x")
    assert load_config(path) == (recipe, config)
    file = read_config_file(path)
    assert (file.recipe, file.preset) == (recipe, None)


def test_a_file_that_names_a_preset_gives_only_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text("recipe: clip_reid\npreset: paper\nimage_stage:\n  lr: 5e-6\n  epochs: 40\n")
    name, config = load_config(path)
    paper = RECIPES["clip_reid"].presets["paper"]
    assert name == "clip_reid"
    assert config_differences(paper, config) == ["image_stage.epochs: 60 -> 40"]
    assert isinstance(config.image_stage.lr, float)  # "5e-6" is a string to YAML


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("recipe: clip_reid\n", r"^clip is missing \(expected a ClipConfig mapping\)"),
        ("recipe: clip_reid\npreset: paper\noptim: {lr: 1}\n", r"^optim names no field"),
        ("recipe: clip_reid\npreset: paper\ndata: {batch_size: 30}\n", r"^data\.batch_size \(30\)"),
        ("recipe: clip_reid\npreset: paper\nloss: {id_weight: high}\n", r"^loss\.id_weight must"),
        ("recipe: clip_reid\npreset: huge\n", r"preset must be one of \['paper', 'tiny'\]"),
        ("recipe: fastreid\n", r"recipe must be one of"),
        ("preset: paper\n", r"names no recipe: add 'recipe: <name>'"),
        ("- 1\n- 2\n", r"must hold a mapping of fields"),
        ("recipe: [clip_reid\n", r"is not a YAML file"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_override_tokens_take_both_forms() -> None:
    tokens = ["image_stage.lr=5e-6", "DATA.BATCH_SIZE", "32", "prompt.template", "a=b {}"]
    overrides = parse_override_tokens(tokens)
    assert [(o.key, o.value) for o in overrides] == [
        ("image_stage.lr", "5e-6"),
        ("DATA.BATCH_SIZE", "32"),
        ("prompt.template", "a=b {}"),
    ]
    with pytest.raises(ConfigError, match=r"^loss\.id_weight has no value"):
        parse_override_tokens(["loss.id_weight"])


def test_overrides_are_read_by_the_fields_types() -> None:
    config = RECIPES["mmpl"].presets["tiny"]
    tokens = [
        "image_stage.lr", "1E-4",
        "IMAGE_STAGE.MILESTONES", "(5, 8)",
        "clip.image_size=64,32",
        "clip.pixel_mean=[0.5, 0.5, 0.5]",
        "clip.stride=none",
        "agent.enabled=off",
        "levels.n_ctx=2,3,4",
        "clip.name.vision_cfg.layers=3",
        "prompt.template=A {} walking.",
    ]  # fmt: skip
    changed = apply_overrides(config, parse_override_tokens(tokens))
    assert changed.image_stage.lr == 1e-4 and changed.image_stage.milestones == (5, 8)
    assert changed.clip.image_size == (64, 32) and changed.clip.pixel_mean == (0.5, 0.5, 0.5)
    assert changed.clip.stride is None and changed.agent.enabled is False
    assert changed.levels.n_ctx == (2, 3, 4) and changed.clip.name["vision_cfg"]["layers"] == 3
    assert changed.prompt.template == "A {} walking."
    assert config.clip.name["vision_cfg"]["layers"] == 2  # the preset is unchanged


def test_values_that_only_fit_together_may_come_in_any_order() -> None:
    config = RECIPES["clip_reid"].presets["tiny"]
    tokens = ["image_stage.epochs=1", "image_stage.warmup_epochs=0"]
    for order in (tokens, tokens[::-1]):
        changed = apply_overrides(config, parse_override_tokens(order))
        assert (changed.image_stage.epochs, changed.image_stage.warmup_epochs) == (1, 0)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["optim.lr=1"], r"^optim\.lr names no field: CLIPReIDConfig has no field 'optim'"),
        (["image_stage.rate=1"], r"image_stage has no field 'rate'; its fields are \['epochs'"),
        (["image_stage.lr=fast"], r"^image_stage\.lr must be a number, got 'fast' \(given by"),
        (["image_stage.epochs=2.0"], r"^image_stage\.epochs must be an integer, got '2\.0'"),
        (["clip.image_size=256"], r"^clip\.image_size must be a pair of integers, got '256'"),
        (["clip.image_size=256,x"], r"^clip\.image_size must be a pair of integers"),
        (["image_stage.lr=-1"], r"^image_stage\.lr must be a finite number > 0, got -1\.0 \(given"),
        (
            ["image_stage.epochs=1"],
            r"image_stage\.warmup_epochs must be < epochs \(1\), got 2.*"
            r"\(image_stage\.epochs given by --set\)",
        ),
        (["loss=3"], r"^loss must be a CLIPReIDLossConfig mapping, got '3'"),
        (["clip.name.vision_cfg.depth.x=1"], r"names no entry: clip\.name\.vision_cfg has"),
        (["data.root.x=1"], r"names no field: data\.root is a value, not a section"),
    ],
)
def test_bad_overrides_are_refused_naming_the_key(tokens: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RECIPES["clip_reid"].presets["tiny"], parse_override_tokens(tokens))


def test_a_section_may_be_given_as_a_mapping_and_keeps_its_other_fields() -> None:
    config = RECIPES["clip_reid"].presets["tiny"]
    changed = apply_overrides(config, parse_override_tokens(["loss={id_weight: 0.5}"]))
    assert changed.loss == dataclasses.replace(config.loss, id_weight=0.5)


def test_differences_are_named_field_by_field() -> None:
    paper = RECIPES["clip_reid"].presets["paper"]
    tiny = RECIPES["clip_reid"].presets["tiny"]
    lines = config_differences(paper, tiny)
    assert "data.dataset: 'market1501' -> 'synthetic'" in lines
    assert "clip.name: 'ViT-B-16' -> {'embed_dim': 64" not in lines  # mappings by their keys
    assert any(line.startswith("clip.name.embed_dim: (absent) -> 64") for line in lines)
    assert config_differences(paper, paper) == []
    assert config_differences(to_plain(paper), to_plain(tiny)) == lines  # plain mappings alike
