"""Configurations as data: plain mappings, YAML files, command-line overrides, differences.

A configuration (a tree of :class:`~reidkit.recipes.config.Section` dataclasses) becomes a
plain mapping with :func:`to_plain` and comes back with :func:`from_plain`, which checks every
key and every value against the type hints and the sections' checks, so that a wrong key, a
wrong type or a value out of range is a :class:`~reidkit.recipes.config.ConfigError` naming
the key. On top of this:

* YAML files (:func:`save_config`, :func:`read_config_file`, :func:`load_config`): the
  recipe's name under ``recipe``, optionally a ``preset`` whose fields the file replaces, and
  the fields, section by section::

      recipe: clip_reid
      preset: paper          # optional: only the fields below differ from the preset
      image_stage:
        lr: 5.0e-06

* overrides by dotted key (:func:`apply_overrides`), with values given as text and read by the
  field's type hint (:func:`parse_text`): ``"5e-6"`` for a ``float``, ``"256,128"`` or
  ``"[256, 128]"`` for a ``tuple[int, int]``, ``"none"`` for ``None``, ``"true"`` for a
  ``bool``. Keys match case-insensitively, so yacs-style ``IMAGE_STAGE.LR`` names
  ``image_stage.lr``; a key may also reach into a mapping field (``clip.name.vision_cfg.layers``
  when ``clip.name`` is an open_clip config);
* :func:`config_differences`: the fields in which two configurations differ, by key.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from reidkit.recipes.config import (
    ConfigError,
    check_value,
    describe_hint,
    field_hints,
    union_members,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")

RECIPE_KEY = "recipe"
PRESET_KEY = "preset"
RESERVED_KEYS = (RECIPE_KEY, PRESET_KEY)
"""Top-level keys of a configuration file that are not fields of the configuration."""

NULL_WORDS = ("none", "null", "~")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_INTEGER = re.compile(r"[+-]?\d+")
_NONE_TYPE = type(None)


# --- plain mappings ------------------------------------------------------------------------


def to_plain(config: Any) -> dict[str, Any]:
    """``config`` as nested dicts of plain values, tuples as lists (what YAML and JSON hold)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a configuration dataclass, got {type(config).__name__}")
    plain: dict[str, Any] = _plain_value(dataclasses.asdict(config))
    return plain


def _plain_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(item) for item in value]
    return value


def from_plain(config_type: type[ConfigT], data: Any, *, path: str = "") -> ConfigT:
    """The configuration of type ``config_type`` that the plain mapping ``data`` describes.

    Every key must name a field; every field without a default must be given. Leaves are
    checked against their type hints (a number written as ``5e-6``, which YAML reads as a
    string, is read as a number where the hint is a ``float``), then the sections' checks run.

    Args:
        config_type: the configuration's dataclass.
        data: a mapping of its fields (sections as mappings).
        path: dotted key of ``data`` in a larger configuration (for the messages).

    Raises:
        ConfigError: an unknown or missing key, a value of the wrong type or out of range; the
            message names the key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(path or config_type.__name__, f"must be a mapping, got {data!r}")
    hints = field_hints(config_type)
    unknown = [key for key in data if key not in hints]
    if unknown:
        key = _join(path, str(unknown[0]))
        raise ConfigError(
            key, f"names no field: {config_type.__name__} has the fields {list(hints)}"
        )
    fields = {field.name: field for field in dataclasses.fields(config_type)}
    values: dict[str, Any] = {}
    for name, hint in hints.items():
        key = _join(path, name)
        if name not in data:
            field = fields[name]
            has_default = (field.default, field.default_factory) != (MISSING, MISSING)
            if not has_default:
                raise ConfigError(key, f"is missing (expected {describe_hint(hint)})")
            continue
        value = data[name]
        section = _section_type(hint)
        if section is not None and isinstance(value, Mapping):
            values[name] = from_plain(section, value, path=key)
        else:
            values[name] = check_value(key, _numbers_from_text(value, hint), hint)
    try:
        return config_type(**values)
    except ConfigError as error:
        raise error.at(path) from None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _section_type(hint: Any) -> type | None:
    """The dataclass of a section's hint, or ``None`` for a leaf."""
    return hint if dataclasses.is_dataclass(hint) and isinstance(hint, type) else None


def _numbers_from_text(value: Any, hint: Any) -> Any:
    """``value`` with the strings that YAML did not read as numbers (``5e-6``) read as ``float``
    where ``hint`` expects one and no string."""
    members = union_members(hint)
    if isinstance(value, str) and float in members and str not in members:
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        for member in members:
            if typing.get_origin(member) is tuple:
                args = typing.get_args(member)
                items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
                if len(items) == len(value):
                    return [_numbers_from_text(item, arg) for item, arg in zip(value, items)]
    return value


def merge_plain(
    config_type: type, base: Mapping[str, Any], update: Mapping[str, Any]
) -> dict[str, Any]:
    """``base`` with the fields of ``update`` replaced, section by section (a section given in
    ``update`` replaces only the fields it names; any other value replaces the whole field)."""
    merged = copy.deepcopy(dict(base))
    hints = field_hints(config_type)
    for name, value in update.items():
        section = _section_type(hints.get(name))
        if (
            section is not None
            and isinstance(value, Mapping)
            and isinstance(merged.get(name), dict)
        ):
            merged[name] = merge_plain(section, merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


# --- text -----------------------------------------------------------------------------------


def parse_text(key: str, text: str, hint: Any) -> Any:
    """The value of type ``hint`` that the command-line ``text`` gives.

    ``str`` takes the text as it is; ``int``, ``float`` and ``bool`` (``true``/``false``,
    ``yes``/``no``, ``on``/``off``, ``1``/``0``) read it; ``None`` is written ``none``, ``null``
    or ``~``; a tuple is written ``256,128``, ``[256, 128]`` or ``(256, 128)`` (``[]`` when
    empty); a mapping or a whole section in YAML's flow style, ``{width: 64, layers: 2}``.

    Raises:
        ConfigError: ``text`` does not give a value of the type (the message names ``key``).
    """
    try:
        return _parse(text, hint)
    except _Unparsable:
        raise ConfigError(key, f"must be {describe_hint(hint)}, got {text!r}") from None


class _Unparsable(Exception):
    """Text that does not give a value of the hint's type."""


def _parse(text: str, hint: Any) -> Any:
    members = union_members(hint)
    if len(members) > 1:
        if _NONE_TYPE in members and text.strip().lower() in NULL_WORDS:
            return None
        ordered = [m for m in members if m not in (str, _NONE_TYPE)] + [
            m for m in members if m is str
        ]
        for member in ordered:
            try:
                return _parse(text, member)
            except _Unparsable:
                continue
        raise _Unparsable
    stripped = text.strip()
    if hint is _NONE_TYPE:
        if stripped.lower() in NULL_WORDS:
            return None
        raise _Unparsable
    if hint is str:
        return text
    if hint is bool:
        word = stripped.lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise _Unparsable
    if hint is int:
        if _INTEGER.fullmatch(stripped):
            return int(stripped)
        raise _Unparsable
    if hint is float:
        try:
            return float(stripped)
        except ValueError:
            raise _Unparsable from None
    if typing.get_origin(hint) is tuple:
        return _parse_tuple(stripped, typing.get_args(hint))
    value = _yaml_value(stripped)
    if isinstance(value, Mapping) and (
        typing.get_origin(hint) is dict or hint is dict or _section_type(hint) is not None
    ):
        return value
    raise _Unparsable


def _parse_tuple(text: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(text) >= 2 and (text[0], text[-1]) in (("[", "]"), ("(", ")")):
        text = text[1:-1].strip()
    items = [item.strip() for item in text.split(",")] if text else []
    if items and not items[-1]:
        items.pop()  # a trailing comma: "4," is a one-element tuple
    if args[-1:] == (Ellipsis,):
        return tuple(_parse(item, args[0]) for item in items)
    if len(items) != len(args):
        raise _Unparsable
    return tuple(_parse(item, arg) for item, arg in zip(items, args))


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise _Unparsable from None


# --- overrides ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Override:
    """One field replaced by dotted key.

    Attributes:
        key: the field's dotted path, matched case-insensitively (``"image_stage.lr"``).
        value: the new value; a string is read by the field's type hint (:func:`parse_text`).
        source: where it was given, for the messages (``"--set"``, ``"--lr"``, a file name).
    """

    key: str
    value: Any
    source: str = ""


def parse_override_tokens(tokens: Sequence[str], source: str = "--set") -> list[Override]:
    """Overrides from command-line tokens: ``KEY=VALUE`` or yacs-style ``KEY VALUE`` pairs.

    A token holding ``=`` after a key is a pair by itself; any other token is a key whose value
    is the next token (so a value may itself hold ``=``).

    Raises:
        ConfigError: a key without a value, or an empty key.
    """
    overrides = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        key, equals, value = token.partition("=")
        if equals and re.fullmatch(r"[A-Za-z_][\w.]*", key):
            index += 1
        elif index + 1 < len(tokens):
            key, value = token, tokens[index + 1]
            index += 2
        else:
            raise ConfigError(token, f"has no value: write {token}=VALUE or {token} VALUE")
        if not key:
            raise ConfigError(repr(token), "names no key: write KEY=VALUE or KEY VALUE")
        overrides.append(Override(key, value, source))
    return overrides


def resolve_key(config_type: type, key: str, plain: Mapping[str, Any]) -> tuple[list[str], Any]:
    """The field path of ``key`` (matched case-insensitively) and its type hint.

    A key may continue into a mapping field (``clip.name.vision_cfg.layers``); its hint is then
    ``Any``.

    Raises:
        ConfigError: a part of ``key`` names no field (the message lists the fields there).
    """
    parts = key.split(".")
    resolved: list[str] = []
    section: type | None = config_type
    value: Any = plain
    hint: Any = config_type
    for depth, part in enumerate(parts):
        if section is not None:
            hints = field_hints(section)
            matches = [name for name in hints if name.lower() == part.lower()]
            if not matches:
                where = ".".join(resolved) or section.__name__
                raise ConfigError(
                    key,
                    f"names no field: {where} has no field {part!r}; its fields are {list(hints)}",
                )
            name = matches[0]
            hint = hints[name]
            section = _section_type(hint)
        elif isinstance(value, Mapping):
            # Inside a mapping field: its keys, or a new key at the end of the path.
            known = [name for name in value if str(name).lower() == part.lower()]
            if not known and depth < len(parts) - 1:
                raise ConfigError(
                    key, f"names no entry: {'.'.join(resolved)} has the keys {list(value)}"
                )
            name = known[0] if known else part
            hint = Any
        else:
            raise ConfigError(
                key, f"names no field: {'.'.join(resolved)} is a value, not a section"
            )
        resolved.append(name)
        value = value.get(name) if isinstance(value, Mapping) else None
    return resolved, hint


def apply_overrides(config: ConfigT, overrides: Iterable[Override]) -> ConfigT:
    """``config`` with every override applied, then checked once as a whole.

    The overrides are applied in order to the plain form of ``config`` and the result is built
    with :func:`from_plain`, so values that only fit together (fewer epochs and a shorter
    warm-up) may be given in any order.

    Raises:
        ConfigError: an unknown key, a value that does not parse or fails a check; the message
            names the key and where the value came from.
    """
    config_type = type(config)
    plain = to_plain(config)
    sources: dict[str, str] = {}
    for override in overrides:
        try:
            path, hint = resolve_key(config_type, override.key, plain)
            key = ".".join(path)
            value = override.value
            if isinstance(value, str):
                value = _yaml_value(value) if hint is Any else parse_text(key, value, hint)
                if hint is Any and isinstance(value, str):
                    value = _numbers_from_text(value, float | str)
        except (ConfigError, _Unparsable) as error:
            if isinstance(error, _Unparsable):
                error = ConfigError(override.key, f"is not YAML: {override.value!r}")
            given = f" (given by {override.source})" if override.source else ""
            raise ConfigError(error.key, error.problem + given) from None
        target = plain
        for part in path[:-1]:
            target = target[part]
        section = _section_type(hint)
        if section is not None and isinstance(value, Mapping):
            value = merge_plain(section, target[path[-1]], value)
        target[path[-1]] = _plain_value(value)
        sources[key] = override.source
    try:
        return from_plain(config_type, plain)
    except ConfigError as error:
        note = _given_by(error.key, sources)
        if note:
            raise ConfigError(error.key, f"{error.problem} ({note})") from None
        raise


def _given_by(key: str, sources: Mapping[str, str]) -> str:
    """Which override set ``key``, the section holding it, or a field beside it."""
    for candidate, source in sources.items():
        related = candidate.startswith(f"{key}.") or key.startswith(f"{candidate}.")
        if source and (candidate == key or related):
            return f"given by {source}"
    section = key.rpartition(".")[0]
    for candidate, source in sources.items():
        if source and candidate.rpartition(".")[0] == section:
            return f"{candidate} given by {source}"
    return ""


# --- differences ----------------------------------------------------------------------------


def flatten(plain: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"image_stage.lr": 5e-06, ...}``: every leaf of a plain mapping by dotted key."""
    flat: dict[str, Any] = {}
    for name, value in plain.items():
        key = _join(prefix, str(name))
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, key))
        else:
            flat[key] = value
    return flat


def config_differences(old: Any, new: Any) -> list[str]:
    """The fields in which ``new`` differs from ``old``, as ``"key: old -> new"`` lines.

    Args:
        old, new: configurations, or their plain mappings.
    """
    before = flatten(old if isinstance(old, Mapping) else to_plain(old))
    after = flatten(new if isinstance(new, Mapping) else to_plain(new))
    missing = object()
    lines = []
    for key in [*before, *(key for key in after if key not in before)]:
        a, b = before.get(key, missing), after.get(key, missing)
        if a != b:
            shown = ["(absent)" if value is missing else repr(value) for value in (a, b)]
            lines.append(f"{key}: {shown[0]} -> {shown[1]}")
    return lines


# --- YAML files -----------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """YAML with lists of scalars in flow style (``image_size: [256, 128]``)."""


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    scalars = all(not isinstance(item, (list, dict)) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=scalars)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(data: Mapping[str, Any], header: str = "") -> str:
    """``data`` as YAML in its own key order, after ``header`` written as comment lines."""
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.dump(
        _plain_value(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return comments + body


def config_to_yaml(recipe: str, config: Any, header: str = "") -> str:
    """The YAML text of ``config`` of the recipe ``recipe`` (every field)."""
    return dump_yaml({RECIPE_KEY: recipe, **to_plain(config)}, header)


def save_config(path: str | Path, recipe: str, config: Any, header: str = "") -> Path:
    """Write ``config`` of the recipe ``recipe`` to the YAML file ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(recipe, config, header), encoding="utf-8")
    return path


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """What a configuration file holds.

    Attributes:
        path: the file.
        recipe: the recipe it names (``None`` when it names none).
        preset: the preset whose fields it replaces (``None``: the file gives every field).
        fields: the fields it gives, as a plain mapping.
    """

    path: Path
    recipe: str | None
    preset: str | None
    fields: dict[str, Any]


def read_config_file(path: str | Path) -> ConfigFile:
    """Read a YAML configuration file (see the module docstring).

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: the file is not YAML, or not a mapping, or ``recipe``/``preset`` are not
            names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(str(path), f"is not a YAML file: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(str(path), f"must hold a mapping of fields, got {type(data).__name__}")
    fields = {str(key): value for key, value in data.items()}
    names = {}
    for key in RESERVED_KEYS:
        value = fields.pop(key, None)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key}", f"must be a name, got {value!r}")
        names[key] = value
    return ConfigFile(path, names[RECIPE_KEY], names[PRESET_KEY], fields)


def load_config(path: str | Path) -> tuple[str, Any]:
    """The recipe's name and the configuration of a YAML file, e.g. one of ``configs/``.

    A file that names a ``preset`` replaces the preset's fields with its own; a file without
    one must give every field.

    Raises:
        FileNotFoundError, ConfigError: as :func:`read_config_file`, or the file names no
            recipe, or an unknown one or preset, or its fields do not check.
    """
    from reidkit.recipes.registry import RECIPES

    file = read_config_file(path)
    if file.recipe is None:
        raise ConfigError(str(file.path), f"names no recipe: add '{RECIPE_KEY}: <name>'")
    if file.recipe not in RECIPES:
        raise ConfigError(
            f"{file.path}: {RECIPE_KEY}", f"must be one of {sorted(RECIPES)}, got {file.recipe!r}"
        )
    recipe = RECIPES[file.recipe]
    return recipe.name, config_from_file(recipe.config_type, recipe.presets, file)


def config_from_file(
    config_type: type[ConfigT],
    presets: Mapping[str, Any],
    file: ConfigFile,
    preset: str | None = None,
) -> ConfigT:
    """The configuration of ``file``: its fields over its preset (or over ``preset`` when the
    file names none), or its fields alone.

    Raises:
        ConfigError: an unknown preset, a preset that disagrees with the file's, or fields that
            do not check (the message names the key and the file).
    """
    if file.preset is not None and preset is not None and file.preset != preset:
        raise ConfigError(
            f"{file.path}: {PRESET_KEY}",
            f"is {file.preset!r}, but the preset {preset!r} was asked for; give one of them",
        )
    base_name = file.preset if file.preset is not None else preset
    if base_name is not None and base_name not in presets:
        raise ConfigError(f"{PRESET_KEY}", f"must be one of {sorted(presets)}, got {base_name!r}")
    plain = file.fields
    if base_name is not None:
        plain = merge_plain(config_type, to_plain(presets[base_name]), file.fields)
    try:
        return from_plain(config_type, plain)
    except ConfigError as error:
        raise ConfigError(error.key, f"{error.problem} (in {file.path})") from None
