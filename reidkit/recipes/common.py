"""What the recipes share: data, CLIP, the frozen-feature cache, the stages' optimisers, runs.

Every recipe's ``train(config, runtime)`` assembles these builders with its own model and
losses:

* :func:`build_data`: the data set, its ``P x K`` train loader and query-then-gallery test
  loader (:class:`ReIDData`);
* :func:`build_clip`: the CLIP model of a :class:`~reidkit.recipes.config.ClipConfig`, frozen;
* :func:`cache_frozen_features`: features of every image computed once by a frozen encoder,
  the input of the prompt stages of CLIP-ReID and MMPL;
* :func:`class_text_features`: every identity's text feature from learned prompts;
* :func:`prompt_stage_optimizer` and :func:`image_stage_optimizer`: Adam with the schedules of
  the two stages of the prompt-learning pipelines;
* :func:`begin`, :func:`start_run` and :func:`fit_stage`: the process group and the seed, the
  run's output folder, checkpoints and report, and one stage of epochs;
* :func:`run_image_stage`: stage 2 of CLIP-ReID and MMPL, the image encoder against fixed text
  features;
* :class:`Recipe`: what the registry knows of a pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from reidkit.clip import load_clip
from reidkit.data import (
    ReIDSplits,
    build_dataset,
    build_test_transforms,
    build_train_transforms,
    make_test_loader,
    make_train_loader,
)
from reidkit.distributed import DistributedContext, data_parallel, init_distributed
from reidkit.engine import (
    Trainer,
    TrainingRun,
    WarmupCosineLR,
    WarmupMultiStepLR,
    bias_parameter_groups,
    move_to_device,
    seed_everything,
    stage_epochs,
)
from reidkit.engine.trainer import StepFunction
from reidkit.eval import RankResult, evaluate_model
from reidkit.losses import CLIPReIDLoss
from reidkit.models import CLIPReIDModel
from reidkit.prompts import encode_class_prompts
from reidkit.recipes.config import (
    ClipConfig,
    DataConfig,
    ImageStageConfig,
    PromptStageConfig,
    Runtime,
    get_field,
    replace_field,
)

Transform = Callable[[Any], Tensor]


@dataclasses.dataclass
class ReIDData:
    """A data set with its loaders and transforms.

    Attributes:
        dataset: the train, query and gallery splits.
        train_loader: ``P x K`` batches ``(images, pids, camids, paths)`` of the train split,
            or ``None`` when not asked for.
        test_loader: the query images, then the gallery images, in order.
        train_transform: augmentation of the training images.
        test_transform: resize and normalisation of the test images.
    """

    dataset: ReIDSplits
    train_loader: DataLoader | None
    test_loader: DataLoader
    train_transform: Transform
    test_transform: Transform

    @property
    def num_query(self) -> int:
        return len(self.dataset.query)

    def feature_loader(self, num_workers: int = 0) -> DataLoader:
        """The train split in order with the test transform (for caches of its features)."""
        return make_test_loader(
            self.dataset.train, [], self.test_transform, num_workers=num_workers
        )


def build_data(
    data: DataConfig,
    image_size: tuple[int, int],
    *,
    pixel_mean: Sequence[float] | None,
    pixel_std: Sequence[float] | None,
    runtime: Runtime,
    device: torch.device,
    batch_size: int | None = None,
    train_loader: bool = True,
) -> ReIDData:
    """The data set of ``data`` with its loaders.

    Args:
        data: the data set and the batch settings.
        image_size: ``(H, W)`` of the transforms.
        pixel_mean, pixel_std: normalisation; ``None``: CLIP's statistics.
        runtime: gives the seed of the train loader and the loading processes.
        device: pins the train batches in memory for CUDA.
        batch_size: this process's ``P x K`` (default ``data.batch_size``).
        train_loader: build the train loader (``False`` when the batches are made elsewhere).
    """
    dataset = build_dataset(data.dataset, data.root)
    normalization = {"mean": pixel_mean, "std": pixel_std}
    train_transform = build_train_transforms(image_size, **normalization)
    test_transform = build_test_transforms(image_size, **normalization)
    loader = None
    if train_loader:
        loader = make_train_loader(
            dataset.train,
            train_transform,
            data.batch_size if batch_size is None else batch_size,
            data.num_instances,
            num_workers=runtime.num_workers,
            seed=runtime.seed,
            pin_memory=device.type == "cuda",
        )
    test_loader = make_test_loader(
        dataset.query, dataset.gallery, test_transform, num_workers=runtime.num_workers
    )
    return ReIDData(dataset, loader, test_loader, train_transform, test_transform)


def build_clip_data(
    clip: ClipConfig,
    data: DataConfig,
    *,
    runtime: Runtime,
    device: torch.device,
    train_loader: bool = True,
) -> ReIDData:
    """:func:`build_data` at the image size and with the normalisation of ``clip``."""
    return build_data(
        data,
        clip.image_size,
        pixel_mean=clip.pixel_mean,
        pixel_std=clip.pixel_std,
        runtime=runtime,
        device=device,
        train_loader=train_loader,
    )


def build_clip(clip: ClipConfig, device: torch.device, *, frozen: bool = True) -> nn.Module:
    """The open_clip model of ``clip`` on ``device``, re-gridded to its image size."""
    clip_model, _ = load_clip(
        clip.name, clip.pretrained, image_size=clip.image_size, stride=clip.stride, device=device
    )
    if frozen:
        clip_model.requires_grad_(False)
    return clip_model


@torch.no_grad()
def cache_frozen_features(
    encode: Callable[[Tensor], Sequence[Tensor]],
    loader: Iterable[Sequence[Any]],
    device: torch.device,
) -> tuple[Tensor, ...]:
    """Features of every image of ``loader`` computed once, without gradients, in order.

    The prompt stages of CLIP-ReID and MMPL train against a frozen image encoder, so its
    outputs are computed once and batches of them drawn at random
    (:func:`reidkit.data.make_feature_loader`).

    Args:
        encode: maps a batch of images ``(B, 3, H, W)`` to a sequence of tensors ``(B, ...)``;
            put the encoder in eval mode first.
        loader: yields batches whose first item is the images, e.g.
            :meth:`ReIDData.feature_loader`.
        device: where the images go and the features stay.

    Returns:
        One tensor ``(N, ...)`` per output of ``encode``, concatenated over the batches.
    """
    outputs: list[list[Tensor]] = []
    for images, *_ in loader:
        for index, tensor in enumerate(encode(images.to(device))):
            if index == len(outputs):
                outputs.append([])
            outputs[index].append(tensor)
    if not outputs:
        raise ValueError("loader yielded no batches")
    return tuple(torch.cat(parts) for parts in outputs)


@torch.no_grad()
def class_text_features(prompts: nn.Module, text_encoder: nn.Module) -> Tensor:
    """Every identity's sentence feature ``(L, E)`` from a prompt learner, without gradients."""
    return encode_class_prompts(prompts, text_encoder).sentence


def prompt_stage_optimizer(
    parameters: Iterable[nn.Parameter], stage: PromptStageConfig
) -> tuple[torch.optim.Optimizer, WarmupCosineLR]:
    """Adam on the prompts with a linear warm-up from ``warmup_lr``, then a cosine to
    ``min_lr`` (CLIP-ReID's stage 1)."""
    optimizer = torch.optim.Adam(parameters, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = WarmupCosineLR(
        optimizer,
        stage.epochs,
        warmup_epochs=stage.warmup_epochs,
        warmup_start_factor=stage.warmup_lr / stage.lr,
        final_factor=stage.min_lr / stage.lr,
    )
    return optimizer, scheduler


def image_stage_optimizer(
    modules: nn.Module | Iterable[nn.Module], stage: ImageStageConfig
) -> tuple[torch.optim.Optimizer, WarmupMultiStepLR]:
    """Adam on the trainable parameters of ``modules``, biases at ``bias_lr_factor`` times the
    rate, with a linear warm-up and steps of 0.1 (CLIP-ReID's stage 2)."""
    groups = bias_parameter_groups(modules, stage.lr, stage.bias_lr_factor)
    optimizer = torch.optim.Adam(groups, weight_decay=stage.weight_decay)
    scheduler = WarmupMultiStepLR(
        optimizer,
        milestones=stage.milestones,
        warmup_epochs=stage.warmup_epochs,
        warmup_start_factor=stage.warmup_factor,
    )
    return optimizer, scheduler


def rank_evaluation(
    model: nn.Module | Callable[[Tensor], Tensor],
    data: ReIDData,
    device: torch.device,
    **options: Any,
) -> Callable[[], RankResult]:
    """A function that evaluates ``model`` on the query and gallery of ``data``
    (:func:`reidkit.evaluate_model` with ``options``)."""

    def evaluate() -> RankResult:
        return evaluate_model(model, data.test_loader, data.num_query, device=device, **options)

    return evaluate


def begin(runtime: Runtime) -> DistributedContext:
    """Join ``torchrun``'s process group (if any) on ``runtime.device`` and seed every
    generator with ``runtime.seed``, so that every rank builds the same initial weights; seed
    again with the rank (``seed_everything(seed, rank=...)``) once the models are built."""
    context = init_distributed(runtime.device)
    seed_everything(runtime.seed)
    return context


def start_run(recipe: str, config: Any, runtime: Runtime, stages: Sequence[str]) -> TrainingRun:
    """The :class:`~reidkit.engine.TrainingRun` of a recipe in ``runtime.output_dir``.

    The report's ``config`` holds the recipe's name, the configuration (``experiment``) and
    the runtime.
    """
    return TrainingRun(
        runtime.output_dir,
        stages=stages,
        config={"recipe": recipe, "experiment": config, "runtime": runtime},
        resume=runtime.resume,
        eval_every=runtime.eval_every,
    )


def fit_stage(
    run: TrainingRun,
    stage: str,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[Any],
    batches: Iterable[Any],
    step: StepFunction,
    *,
    epochs: int,
    runtime: Runtime,
    device: torch.device,
    evaluate: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Train one stage of ``run`` (see :meth:`~reidkit.engine.TrainingRun.fit`); its metrics."""
    trainer = Trainer(list(optimizers), list(schedulers), amp=runtime.amp, device=device)
    return run.fit(stage, trainer, batches, step, epochs=epochs, evaluate=evaluate)


def run_image_stage(
    run: TrainingRun,
    model: CLIPReIDModel,
    criterion: CLIPReIDLoss,
    text_features: Tensor | Sequence[Tensor],
    data: ReIDData,
    stage: ImageStageConfig,
    *,
    runtime: Runtime,
    device: torch.device,
) -> dict[str, float]:
    """Stage 2 (``"image_encoder"``) of CLIP-ReID and MMPL; the metrics of its evaluation.

    The whole image encoder, the necks (and the visual prompt generator) and the parameters
    of ``criterion`` (MMPL's transformation projection) learn on the ``P x K`` batches of
    ``data`` with :func:`image_stage_optimizer`; every identity's text features, one level or
    ``K``, stay fixed.
    """
    model.image_encoder.requires_grad_(True)
    network = data_parallel(model)

    def image_step(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        model.train()
        images, pids = move_to_device(batch[:2], device)
        outputs = network(images)
        loss, terms = criterion(
            outputs.logits,
            outputs.triplet_features,
            outputs.embedding,
            pids,
            text_features,
            outputs.prompts,
        )
        return {"loss": loss, **terms}

    optimizer, scheduler = image_stage_optimizer([model, criterion], stage)
    return fit_stage(
        run,
        "image_encoder",
        [optimizer],
        [scheduler],
        data.train_loader,
        image_step,
        epochs=stage.epochs,
        runtime=runtime,
        device=device,
        evaluate=rank_evaluation(model, data, device),
    )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training pipeline as the registry (:data:`reidkit.recipes.RECIPES`) knows it.

    Attributes:
        name: the registry key, e.g. ``"mmpl"``.
        description: one line.
        config_type: the configuration's dataclass.
        presets: named configurations (at least ``"paper"`` and ``"tiny"``).
        train: ``train(config, runtime)``; returns the results stored in the report.
        epoch_fields: ``epoch_fields(config)`` maps each stage to the dotted path of its
            number of epochs in the configuration.
        weights_field: dotted path of the backbone's pretrained weights.
    """

    name: str
    description: str
    config_type: type
    presets: Mapping[str, Any]
    train: Callable[[Any, Runtime], dict[str, Any]]
    epoch_fields: Callable[[Any], dict[str, str]]
    weights_field: str

    def stage_epochs(self, config: Any) -> dict[str, int]:
        """The epochs of every stage of ``config``."""
        return {stage: get_field(config, path) for stage, path in self.epoch_fields(config).items()}

    def with_epochs(self, config: Any, overrides: Sequence[tuple[str | None, int]]) -> Any:
        """``config`` with the ``--epochs`` overrides ``(stage or None, n)`` applied (see
        :func:`reidkit.engine.stage_epochs`)."""
        epochs = stage_epochs(self.stage_epochs(config), overrides)
        for stage, path in self.epoch_fields(config).items():
            config = replace_field(config, path, epochs[stage])
        return config
