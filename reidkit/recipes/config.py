"""The sections that the recipes' configurations share, their checks, and dotted-path access.

A recipe's configuration (``CLIPReIDConfig``, ``MMPLConfig``, ...) is a frozen dataclass of
sections, each a frozen dataclass of plain values: ``int``, ``float``, ``str``, ``bool``,
``None``, tuples of these, and a ``dict`` for a CLIP model given by its open_clip config
(:data:`TINY_CLIP`). Everything that defines the experiment is in it; what does not (where
the output goes, the device, the seed, the data-loading processes) is in :class:`Runtime`.

Every section derives from :class:`Section`: building one checks each field against its type
hint (an ``int`` where a ``float`` is expected becomes a ``float``, a list where a tuple is
expected a tuple) and then the section's own ranges (:meth:`Section.check`), so a value that
comes from Python, from a YAML file (:mod:`reidkit.recipes.serialization`) or from the command
line goes through the same checks. A failed check is a :class:`ConfigError` that names the
field by its dotted path from the configuration's root (``"image_stage.lr must be > 0, got
-1.0"``).

Fields are addressed by dotted paths, ``"image_stage.lr"``: :func:`get_field` reads one and
:func:`replace_field` returns the configuration with one replaced (the nested
:func:`dataclasses.replace`). A preset is a configuration; a smaller preset is often the
larger one with a few fields replaced.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from reidkit import checks
from reidkit.engine.run_folder import holds_run

ConfigT = TypeVar("ConfigT")

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
"""An open_clip model config small enough for a CPU: a ViT of width 64 on 16x16 patches with 2
blocks, and a 2-layer text transformer of width 64 (random weights; the tiny presets)."""


class ConfigError(ValueError):
    """A configuration value of the wrong type or out of its range, or a key that names no field.

    Args:
        key: the field's dotted path (``"image_stage.lr"``); a section built on its own names
            the field after its class (``"ImageStageConfig.lr"``).
        problem: what is wrong, e.g. ``"must be > 0, got -1.0"``.

    Attributes:
        key, problem: as given; ``str(error)`` is ``"<key> <problem>"``.
        field: the key relative to the section that raised it (``"lr"``).
    """

    def __init__(self, key: str, problem: str, *, field: str | None = None) -> None:
        super().__init__(f"{key} {problem}")
        self.key = key
        self.problem = problem
        self.field = key if field is None else field

    def at(self, path: str) -> ConfigError:
        """The same error for the section at dotted ``path`` of a larger configuration."""
        key = f"{path}.{self.field}" if path else self.field
        return ConfigError(key, self.problem, field=key)


_NONE_TYPE = type(None)


@functools.cache
def field_hints(section_type: type) -> dict[str, Any]:
    """The resolved type hint of every field of the dataclass ``section_type``."""
    hints = typing.get_type_hints(section_type)
    return {field.name: hints[field.name] for field in dataclasses.fields(section_type)}


def describe_hint(hint: Any) -> str:
    """A type hint in words: ``tuple[int, int] | None`` as ``"a pair of integers, or null"``."""
    if hint is _NONE_TYPE:
        return "null"
    if len(union_members(hint)) > 1:
        return ", or ".join(describe_hint(member) for member in union_members(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a {hint.__name__} mapping"
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            counts = {2: "a pair", 3: "a triple"}
            return f"{counts.get(len(args), f'a list of {len(args)}')} of {_plural(args[0])}"
        return f"a list ({', '.join(describe_hint(arg) for arg in args)})"
    if origin is dict or hint is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(
        hint, describe_hint(hint)
    )


def union_members(hint: Any) -> tuple[Any, ...]:
    """The members of a union hint (``int | None``: ``(int, NoneType)``), else ``(hint,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` and normalised (an ``int`` for a ``float``
    becomes a ``float``, a list for a tuple a tuple).

    Raises:
        ConfigError: ``value`` does not have the type (the message names ``key`` and what was
            expected).
    """
    try:
        return _normalise(value, hint)
    except _Mismatch:
        raise ConfigError(key, f"must be {describe_hint(hint)}, got {value!r}") from None


class _Mismatch(Exception):
    """A value that does not have the type of its hint."""


def _normalise(value: Any, hint: Any) -> Any:
    if hint is Any:
        return value
    if len(union_members(hint)) > 1:
        for member in union_members(hint):
            try:
                return _normalise(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is _NONE_TYPE:
        if value is None:
            return None
        raise _Mismatch
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise _Mismatch
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_normalise(item, args[0]) for item in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_normalise(item, arg) for item, arg in zip(value, args))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise _Mismatch
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if checks.is_integer(value):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"configuration fields cannot have the type {hint!r}")


class Section:
    """Base of the configuration sections (frozen dataclasses): checked when built.

    Building a section checks every field against its type hint (:func:`check_value`), then
    runs :meth:`check`, where a section states the ranges of its fields with :meth:`require`
    and :meth:`fail`. Both raise :class:`ConfigError` naming the field.
    """

    def __post_init__(self) -> None:
        # A class is hashable; mypy checks the instances' generated __hash__ instead.
        for name, hint in field_hints(type(self)).items():  # type: ignore[arg-type]
            try:
                value = check_value(name, getattr(self, name), hint)
            except ConfigError as error:
                raise self._error(name, error.problem) from None
            object.__setattr__(self, name, value)
        self.check()

    def check(self) -> None:
        """The ranges of the section's fields (nothing by default)."""

    def require(self, name: str, check: Callable[..., None], *args: Any, **options: Any) -> None:
        """Run a :mod:`reidkit.checks` function on the field ``name``, e.g.
        ``self.require("lr", checks.check_number, above=0)``."""
        try:
            check(name, getattr(self, name), *args, **options)
        except ValueError as error:
            raise self._error(name, str(error).removeprefix(name).strip()) from None

    def fail(self, name: str, problem: str) -> None:
        """Raise the :class:`ConfigError` of field ``name`` with ``problem``."""
        raise self._error(name, problem)

    def _error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{type(self).__name__}.{name}", problem, field=name)


def positive_integers(section: Section, *names: str) -> None:
    """Every field of ``names`` is an integer >= 1."""
    for name in names:
        section.require(name, checks.check_integer, 1)


def non_negative_numbers(section: Section, *names: str) -> None:
    """Every field of ``names`` is a finite number >= 0 (a loss weight, a weight decay)."""
    for name in names:
        section.require(name, checks.check_number, at_least=0, finite=True)


def positive_numbers(section: Section, *names: str) -> None:
    """Every field of ``names`` is a finite number > 0 (a learning rate, a temperature)."""
    for name in names:
        section.require(name, checks.check_number, above=0, finite=True)


def check_increasing(section: Section, name: str) -> None:
    """The field ``name`` holds strictly increasing integers >= 0 (milestones)."""
    values = getattr(section, name)
    if any(value < 0 for value in values) or any(b <= a for a, b in itertools.pairwise(values)):
        section.fail(name, f"must hold increasing integers >= 0, got {values!r}")


def check_warmup(section: Section, warmup_epochs: int, epochs: int) -> None:
    """The field ``warmup_epochs`` is >= 0 and less than ``epochs``: a warm-up as long as the
    stage would never reach the stage's learning rate."""
    section.require("warmup_epochs", checks.check_integer, 0)
    if warmup_epochs >= epochs:
        section.fail(
            "warmup_epochs",
            f"must be < epochs ({epochs}), got {warmup_epochs}: the warm-up would last the "
            "whole stage",
        )


@dataclasses.dataclass(frozen=True)
class ClipConfig(Section):
    """The CLIP model and the input it expects.

    Attributes:
        name: an open_clip model name (``"ViT-B-16"``) or an open_clip model config
            (:data:`TINY_CLIP`).
        pretrained: an open_clip weight tag (``"openai"``), a local checkpoint path, or
            ``None`` for random weights.
        image_size: input ``(H, W)``; the positional embedding is resized to it.
        stride: patch stride (``None``: the patch size, no overlap).
        pixel_mean: normalisation of the images; ``None``: CLIP's statistics.
        pixel_std: as ``pixel_mean``.
    """

    name: str | dict[str, Any]
    pretrained: str | None
    image_size: tuple[int, int]
    stride: int | None = None
    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None

    def check(self) -> None:
        if not self.name:
            self.fail("name", "must name an open_clip model or give its config, got nothing")
        check_image_size(self, "image_size")
        self.require("stride", checks.check_integer, 1, optional=True)
        if self.pixel_std is not None and min(self.pixel_std) <= 0:
            self.fail("pixel_std", f"must hold numbers > 0, got {self.pixel_std!r}")


def check_image_size(section: Section, name: str) -> None:
    """The field ``name`` is an ``(H, W)`` pair of integers >= 1."""
    size = getattr(section, name)
    if min(size) < 1:
        section.fail(name, f"must be (H, W) with H, W >= 1, got {size!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """The data set and the ``P x K`` training batches.

    Attributes:
        dataset: a name of :func:`reidkit.data.build_dataset` (``"synthetic"``,
            ``"market1501"``, ...).
        root: the data set folder; ``None`` for the built-in data (a data set that is read
            from a folder needs one).
        batch_size: images per training batch, ``P x K``.
        num_instances: ``K``, images per identity in a batch.
        filename_pattern: for ``dataset="image_folder"``: the regular expression that reads
            the person id and the camera number from a file name (named groups ``pid`` and
            ``camid``); ``None``: Market-1501's names.
    """

    dataset: str
    root: str | None
    batch_size: int
    num_instances: int
    filename_pattern: str | None = None

    def check(self) -> None:
        if not self.dataset:
            self.fail("dataset", "must name a data set, got an empty string")
        positive_integers(self, "batch_size", "num_instances")
        if self.batch_size % self.num_instances:
            self.fail(
                "batch_size",
                f"({self.batch_size}) must be a multiple of num_instances ({self.num_instances})",
            )
        if self.filename_pattern is not None:
            if self.dataset.lower().replace("-", "_") != IMAGE_FOLDER:
                self.fail(
                    "filename_pattern",
                    f"is read by the dataset {IMAGE_FOLDER!r} only, not by {self.dataset!r}",
                )
            try:
                re.compile(self.filename_pattern)
            except re.error as error:
                self.fail("filename_pattern", f"is not a regular expression ({error})")


IMAGE_FOLDER = "image_folder"
"""The data set read from any folder of train, query and gallery images (named by
``filename_pattern``)."""


@dataclasses.dataclass(frozen=True)
class PromptConfig(Section):
    """CLIP-ReID's ID-specific prompt: ``template`` with ``n_ctx`` learnable tokens.

    Attributes:
        template: the sentence, ``{}`` marking the learnable tokens.
        n_ctx: learnable tokens per identity.
    """

    template: str
    n_ctx: int

    def check(self) -> None:
        if self.template.count("{}") != 1:
            self.fail("template", f"must contain '{{}}' exactly once, got {self.template!r}")
        positive_integers(self, "n_ctx")


@dataclasses.dataclass(frozen=True)
class PromptStageConfig(Section):
    """Stage 1 of the prompt-learning pipelines: Adam, linear warm-up, then cosine decay.

    Attributes:
        epochs: epochs of the stage.
        lr: the learning rate after the warm-up.
        weight_decay: Adam's weight decay.
        warmup_epochs: epochs of linear warm-up from ``warmup_lr`` (fewer than ``epochs``).
        warmup_lr: the learning rate of the first epoch (at most ``lr``).
        min_lr: the learning rate the cosine ends at (at most ``lr``).
    """

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_lr: float
    min_lr: float

    def check(self) -> None:
        positive_integers(self, "epochs")
        positive_numbers(self, "lr")
        non_negative_numbers(self, "weight_decay")
        check_warmup(self, self.warmup_epochs, self.epochs)
        self.require("warmup_lr", checks.check_number, above=0, at_most=self.lr)
        self.require("min_lr", checks.check_number, at_least=0, at_most=self.lr)


@dataclasses.dataclass(frozen=True)
class ImageStageConfig(Section):
    """Stage 2 of the prompt-learning pipelines: Adam, linear warm-up, then steps.

    Attributes:
        epochs: epochs of the stage.
        lr: the learning rate of the weights after the warm-up.
        weight_decay: Adam's weight decay.
        bias_lr_factor: the biases learn at ``lr * bias_lr_factor``.
        warmup_epochs: epochs of linear warm-up (fewer than ``epochs``).
        warmup_factor: the first epoch runs at ``lr * warmup_factor``, in ``(0, 1]``.
        milestones: epochs after which the learning rate is multiplied by 0.1.
    """

    epochs: int
    lr: float
    weight_decay: float
    bias_lr_factor: float
    warmup_epochs: int
    warmup_factor: float
    milestones: tuple[int, ...]

    def check(self) -> None:
        positive_integers(self, "epochs")
        positive_numbers(self, "lr", "bias_lr_factor")
        non_negative_numbers(self, "weight_decay")
        check_warmup(self, self.warmup_epochs, self.epochs)
        self.require("warmup_factor", checks.check_number, above=0, at_most=1)
        check_increasing(self, "milestones")


@dataclasses.dataclass(frozen=True)
class CLIPReIDLossConfig(Section):
    """Weights and settings of :class:`reidkit.losses.CLIPReIDLoss` (CLIP-ReID eq. 6).

    Attributes:
        id_weight: weight of the ID losses, summed over the two BNNecks.
        triplet_weight: weight of the triplet losses, summed over the three features.
        image_to_text_weight: weight of the image-to-text cross-entropy.
        triplet_margin: margin of the batch-hard triplet loss.
        label_smoothing: label smoothing of the ID loss and of the image-to-text loss, in
            ``[0, 1)``.
    """

    id_weight: float
    triplet_weight: float
    image_to_text_weight: float
    triplet_margin: float
    label_smoothing: float

    def check(self) -> None:
        non_negative_numbers(self, "id_weight", "triplet_weight", "image_to_text_weight")
        positive_numbers(self, "triplet_margin")
        self.require("label_smoothing", checks.check_number, at_least=0, below=1)


@dataclasses.dataclass(frozen=True)
class Runtime(Section):
    """How a recipe runs, apart from the experiment it runs.

    Attributes:
        output_dir: the run folder: ``train.log``, ``report.json``, ``config.yaml``, the
            checkpoints and the model's weights.
        resume: ``None``, ``"auto"`` (``<output_dir>/last.pt``), a folder or a checkpoint file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: base random seed (the model's initial weights, sampling, augmentation).
        num_workers: data-loading processes.
        eval_every: evaluate every this many epochs (0: after a stage's last epoch only).
        amp: mixed precision (autocast).
        overwrite: start afresh in a folder that holds another run, deleting that run's files;
            without it (and without ``resume``) such a folder is refused.
        progress: draw progress bars (on rank 0, on a terminal; see
            :func:`reidkit.engine.progress_bar`); ``TQDM_DISABLE=1`` turns them off too.
        tensorboard: write the scalars for TensorBoard to ``<output_dir>/tensorboard`` when the
            ``tensorboard`` package is installed.
        sync_bn: under ``torchrun``, BatchNorm layers normalise with the statistics of the
            global batch, gathered from every process (see
            :func:`reidkit.distributed.convert_sync_batchnorm`), instead of each process's own.
    """

    output_dir: str = "runs/reidkit"
    resume: str | None = None
    device: str = "auto"
    seed: int = 0
    num_workers: int = 2
    eval_every: int = 0
    amp: bool = False
    overwrite: bool = False
    progress: bool = True
    tensorboard: bool = True
    sync_bn: bool = False

    def check(self) -> None:
        for name in ("seed", "num_workers", "eval_every"):
            self.require(name, checks.check_integer, 0)
        if self.resume is not None and self.overwrite:
            self.fail("overwrite", "and resume exclude each other: continue the run or replace it")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    def in_subfolder(self, name: str) -> Runtime:
        """The same runtime writing to ``<output_dir>/<name>``, resuming the run there if this
        runtime resumes and one was started there."""
        folder = self.output_path / name
        resume = "auto" if self.resume is not None and holds_run(folder) else None
        return dataclasses.replace(self, output_dir=str(folder), resume=resume)


def get_field(config: Any, path: str) -> Any:
    """The field of ``config`` at the dotted ``path``, e.g. ``"image_stage.lr"``.

    Raises:
        ConfigError: a part of ``path`` names no field (the message names it and the fields).
    """
    value = config
    for depth, name in enumerate(path.split(".")):
        fields = field_names(value)
        if name not in fields:
            where = ".".join(path.split(".")[:depth]) or type(config).__name__
            raise ConfigError(
                path, f"names no field: {where} has no field {name!r}; its fields are {fields}"
            )
        value = getattr(value, name)
    return value


def replace_field(config: ConfigT, path: str, value: Any) -> ConfigT:
    """``config`` with the field at the dotted ``path`` replaced by ``value``.

    The sections on the way are replaced with :func:`dataclasses.replace`, so their checks
    run again.

    Raises:
        ConfigError: as :func:`get_field`, or the new value fails a check (the message names
            the field by its path).
    """
    get_field(config, path)  # every part of the path names a field
    head, _, rest = path.partition(".")
    try:
        if rest:
            value = replace_field(getattr(config, head), rest, value)
        return dataclasses.replace(config, **{head: value})  # type: ignore[type-var]
    except ConfigError as error:
        raise error.at(head if rest else "") from None


def field_names(value: Any) -> list[str]:
    """The field names of a dataclass instance (``[]`` for anything else)."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return []
    return [field.name for field in dataclasses.fields(value)]
