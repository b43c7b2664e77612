"""The sections that the recipes' configurations share, and how to change one field of them.

A recipe's configuration (``CLIPReIDConfig``, ``MMPLConfig``, ...) is a frozen dataclass of
sections, each a frozen dataclass of plain values: ``int``, ``float``, ``str``, ``bool``,
``None``, tuples of these, and a ``dict`` for a CLIP model given by its open_clip config
(:data:`TINY_CLIP`). Everything that defines the experiment is in it; what does not (where
the output goes, the device, the seed, the data-loading processes) is in :class:`Runtime`.

Fields are addressed by dotted paths, ``"image_stage.lr"``: :func:`get_field` reads one and
:func:`replace_field` returns the configuration with one replaced (the nested
:func:`dataclasses.replace`). A preset is a configuration; a smaller preset is often the
larger one with a few fields replaced.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
"""An open_clip model config small enough for a CPU: a ViT of width 64 on 16x16 patches with 2
blocks, and a 2-layer text transformer of width 64 (random weights; the tiny presets)."""


def _check_positive_ints(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            owner_name = type(owner).__name__
            raise ValueError(f"{owner_name}.{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
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


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data set and the ``P x K`` training batches.

    Attributes:
        dataset: a name of :func:`reidkit.data.build_dataset` (``"synthetic"``,
            ``"market1501"``, ...).
        root: the data set folder; ``None``: the built-in synthetic data.
        batch_size: images per training batch, ``P x K``.
        num_instances: ``K``, images per identity in a batch.
    """

    dataset: str
    root: str | None
    batch_size: int
    num_instances: int

    def __post_init__(self) -> None:
        _check_positive_ints(self, "batch_size", "num_instances")
        if self.batch_size % self.num_instances:
            raise ValueError(
                f"DataConfig.batch_size ({self.batch_size}) must be a multiple of "
                f"num_instances ({self.num_instances})"
            )


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """CLIP-ReID's ID-specific prompt: ``template`` with ``n_ctx`` learnable tokens.

    Attributes:
        template: the sentence, ``{}`` marking the learnable tokens.
        n_ctx: learnable tokens per identity.
    """

    template: str
    n_ctx: int


@dataclasses.dataclass(frozen=True)
class PromptStageConfig:
    """Stage 1 of the prompt-learning pipelines: Adam, linear warm-up, then cosine decay.

    Attributes:
        epochs: epochs of the stage.
        lr: the learning rate after the warm-up.
        weight_decay: Adam's weight decay.
        warmup_epochs: epochs of linear warm-up from ``warmup_lr``.
        warmup_lr: the learning rate of the first epoch.
        min_lr: the learning rate the cosine ends at.
    """

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_lr: float
    min_lr: float


@dataclasses.dataclass(frozen=True)
class ImageStageConfig:
    """Stage 2 of the prompt-learning pipelines: Adam, linear warm-up, then steps.

    Attributes:
        epochs: epochs of the stage.
        lr: the learning rate of the weights after the warm-up.
        weight_decay: Adam's weight decay.
        bias_lr_factor: the biases learn at ``lr * bias_lr_factor``.
        warmup_epochs: epochs of linear warm-up.
        warmup_factor: the first epoch runs at ``lr * warmup_factor``.
        milestones: epochs after which the learning rate is multiplied by 0.1.
    """

    epochs: int
    lr: float
    weight_decay: float
    bias_lr_factor: float
    warmup_epochs: int
    warmup_factor: float
    milestones: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class CLIPReIDLossConfig:
    """Weights and settings of :class:`reidkit.losses.CLIPReIDLoss` (CLIP-ReID eq. 6).

    Attributes:
        id_weight: weight of the ID losses, summed over the two BNNecks.
        triplet_weight: weight of the triplet losses, summed over the three features.
        image_to_text_weight: weight of the image-to-text cross-entropy.
        triplet_margin: margin of the batch-hard triplet loss.
        label_smoothing: label smoothing of the ID loss and of the image-to-text loss.
    """

    id_weight: float
    triplet_weight: float
    image_to_text_weight: float
    triplet_margin: float
    label_smoothing: float


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How a recipe runs, apart from the experiment it runs.

    Attributes:
        output_dir: folder of ``train.log``, ``report.json`` and the checkpoints.
        resume: ``None``, ``"auto"`` (``<output_dir>/last.pt``), a folder or a checkpoint file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: base random seed (the model's initial weights, sampling, augmentation).
        num_workers: data-loading processes.
        eval_every: evaluate every this many epochs (0: after a stage's last epoch only).
        amp: mixed precision (autocast).
    """

    output_dir: str = "runs/reidkit"
    resume: str | None = None
    device: str = "auto"
    seed: int = 0
    num_workers: int = 2
    eval_every: int = 0
    amp: bool = False

    def __post_init__(self) -> None:
        for name in ("seed", "num_workers", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Runtime.{name} must be an integer >= 0, got {value!r}")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    def in_subfolder(self, name: str) -> Runtime:
        """The same runtime writing to ``<output_dir>/<name>``, resuming there if it can."""
        folder = self.output_path / name
        resume = "auto" if self.resume is not None and (folder / "last.pt").exists() else None
        return dataclasses.replace(self, output_dir=str(folder), resume=resume)


def get_field(config: Any, path: str) -> Any:
    """The field of ``config`` at the dotted ``path``, e.g. ``"image_stage.lr"``.

    Raises:
        ValueError: a part of ``path`` names no field (the message names it and the fields).
    """
    value = config
    for depth, name in enumerate(path.split(".")):
        fields = _field_names(value)
        if name not in fields:
            where = ".".join(path.split(".")[:depth]) or type(config).__name__
            raise ValueError(f"{path!r}: {where} has no field {name!r}; its fields are {fields}")
        value = getattr(value, name)
    return value


def replace_field(config: ConfigT, path: str, value: Any) -> ConfigT:
    """``config`` with the field at the dotted ``path`` replaced by ``value``.

    The sections on the way are replaced with :func:`dataclasses.replace`, so their
    ``__post_init__`` checks run again.

    Raises:
        ValueError: as :func:`get_field`.
    """
    get_field(config, path)  # every part of the path names a field
    head, _, rest = path.partition(".")
    if rest:
        value = replace_field(getattr(config, head), rest, value)
    return dataclasses.replace(config, **{head: value})  # type: ignore[type-var]


def _field_names(value: Any) -> list[str]:
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return []
    return [field.name for field in dataclasses.fields(value)]
