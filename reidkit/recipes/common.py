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
* :func:`check_run`, :func:`begin`, :func:`start_run` and :func:`fit_stage`: the run folder
  checked before anything is built, the process group and the seed, the run's folder,
  checkpoints, configuration file and report, and one stage of epochs;
* :func:`clip_model_spec`: the description of a trained CLIP-based model (``model.json``);
* :func:`run_image_stage`: stage 2 of CLIP-ReID and MMPL, the image encoder against fixed text
  features;
* :class:`Recipe`: what the registry knows of a pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from reidkit.clip import CLIPTextEncoder, load_clip
from reidkit.clip.loading import CLIPModel
from reidkit.data import (
    CLIP_MEAN,
    CLIP_STD,
    SYNTHETIC_DATASETS,
    ReIDSplits,
    build_dataset,
    build_test_transforms,
    build_train_transforms,
    make_test_loader,
    make_train_loader,
)
from reidkit.distributed import (
    DistributedContext,
    data_parallel,
    get_world_size,
    init_distributed,
    is_main_process,
    set_sync_batchnorm,
)
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
from reidkit.engine.progress import set_progress_enabled
from reidkit.engine.run import EveryRankEvaluation
from reidkit.engine.run_folder import CONFIG_FILE, RunFolderError, check_run_folder
from reidkit.engine.trainer import StepFunction
from reidkit.eval import RankResult, evaluate_model
from reidkit.eval.chance import chance_rank_result
from reidkit.losses import CLIPReIDLoss
from reidkit.models import CLIPReIDModel
from reidkit.prompts import encode_class_prompts
from reidkit.recipes.config import (
    ClipConfig,
    ConfigError,
    DataConfig,
    ImageStageConfig,
    PromptStageConfig,
    Runtime,
    get_field,
    replace_field,
)
from reidkit.recipes.serialization import (
    config_differences,
    config_from_file,
    read_config_file,
    save_config,
)

Transform = Callable[[Any], Tensor]

DEFAULT_DATASET = "market1501"
TEXT_DEFAULT_DATASET = "cuhk_pedes"
"""The data set parsers of ``--data-root`` for an image ReID recipe and for a text-to-image
recipe whose configuration names built-in data (see :attr:`Recipe.default_dataset`)."""


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
    train_loader: DataLoader[Any] | None
    test_loader: DataLoader[Any]
    train_transform: Transform
    test_transform: Transform

    @property
    def num_query(self) -> int:
        return len(self.dataset.query)

    def feature_loader(self, num_workers: int = 0) -> DataLoader[Any]:
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
    train_loader: bool = True,
) -> ReIDData:
    """The data set of ``data`` with its loaders.

    Args:
        data: the data set and the batch settings; ``data.batch_size`` is the global batch,
            split over the processes (:func:`process_batch_size`).
        image_size: ``(H, W)`` of the transforms.
        pixel_mean, pixel_std: normalisation; ``None``: CLIP's statistics.
        runtime: gives the seed of the train loader and the loading processes.
        device: pins the train batches in memory for CUDA.
        train_loader: build the train loader (``False`` when the batches are made elsewhere).
    """
    dataset = load_dataset(data)
    normalization: dict[str, Any] = {"mean": pixel_mean, "std": pixel_std}
    train_transform = build_train_transforms(image_size, **normalization)
    test_transform = build_test_transforms(image_size, **normalization)
    loader = None
    if train_loader:
        loader = make_train_loader(
            dataset.train,
            train_transform,
            process_batch_size(data),
            data.num_instances,
            num_workers=runtime.num_workers,
            seed=runtime.seed,
            pin_memory=device.type == "cuda",
        )
    test_loader = make_test_loader(
        dataset.query, dataset.gallery, test_transform, num_workers=runtime.num_workers
    )
    return ReIDData(dataset, loader, test_loader, train_transform, test_transform)


def process_batch_size(data: DataConfig) -> int:
    """This process's share of the global batch ``data.batch_size`` (``--batch-size``).

    Under ``torchrun`` with ``W`` processes each draws ``data.batch_size / W`` images, whole
    identities of ``data.num_instances`` images each, so the steps see the same ``P x K``
    images in all as one process would.

    Raises:
        ConfigError: ``data.batch_size`` is not a multiple of ``W * data.num_instances`` (the
            message names ``data.batch_size`` and the multiple it needs).
    """
    world_size = get_world_size()
    share, remainder = divmod(data.batch_size, world_size)
    if remainder or share % data.num_instances:
        raise ConfigError(
            "data.batch_size",
            f"({data.batch_size}, the global batch) must split into whole identities over the "
            f"{world_size} processes: a multiple of {world_size} x num_instances "
            f"({data.num_instances}) = {world_size * data.num_instances}",
        )
    return share


def check_data_root(data: Any, built_in: Sequence[str] = SYNTHETIC_DATASETS) -> None:
    """Raise unless the data section ``data`` (``dataset`` and ``root``) names a folder for a
    data set that is read from one.

    Args:
        data: a :class:`~reidkit.recipes.config.DataConfig` or a section like it.
        built_in: the names of the data that need no folder.

    Raises:
        ConfigError: ``data.root`` is ``None`` for a data set other than the built-in ones
            (the message names ``--data-root``).
    """
    if data.root is None and data.dataset.lower().replace("-", "_") not in built_in:
        raise ConfigError(
            "data.root",
            f"is needed: the data set {data.dataset!r} is read from its folder; give it with "
            f"--data-root (or data.root), or train on the built-in data with --dataset "
            f"{built_in[0]}",
        )


def check_reid_data(config: Any) -> None:
    """:func:`check_data_root` of ``config.data`` (the image ReID recipes'
    :attr:`Recipe.check_data`)."""
    check_data_root(config.data)


def load_dataset(data: DataConfig) -> ReIDSplits:
    """The splits of the data set of ``data`` (see :func:`check_data_root`)."""
    check_data_root(data)
    if data.filename_pattern is None:  # only the image_folder data set has one
        return build_dataset(data.dataset, data.root)
    return build_dataset(data.dataset, data.root, pattern=data.filename_pattern)


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


def build_clip(clip: ClipConfig, device: torch.device, *, frozen: bool = True) -> CLIPModel:
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
def class_text_features(prompts: nn.Module, text_encoder: CLIPTextEncoder) -> Tensor:
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
) -> EveryRankEvaluation:
    """An evaluation of ``model`` on the query and gallery of ``data``
    (:func:`reidkit.evaluate_model` with ``options``) that runs on every rank: under
    ``torchrun`` each extracts the features of its share of the images, gathered once. Give
    the unwrapped model."""

    def evaluate() -> RankResult:
        return evaluate_model(
            model, data.test_loader, data.num_query, device=device, distributed=True, **options
        )

    return EveryRankEvaluation(evaluate)


def begin(runtime: Runtime) -> DistributedContext:
    """Join ``torchrun``'s process group (if any) on ``runtime.device``, apply the runtime's
    switches (progress bars, synchronised BatchNorm in
    :func:`~reidkit.distributed.data_parallel`) and seed every generator with
    ``runtime.seed``, so that every rank builds the same initial weights; seed again with the
    rank (``seed_everything(seed, rank=...)``) once the models are built."""
    context = init_distributed(runtime.device)
    set_progress_enabled(runtime.progress)
    set_sync_batchnorm(runtime.sync_bn)
    seed_everything(runtime.seed)
    return context


def check_run(recipe: str, config: Any, runtime: Runtime) -> None:
    """Raise unless the run may start in ``runtime.output_dir`` as asked; changes nothing.

    Called before anything is built: a new run needs a folder without another run's files
    (or ``runtime.overwrite``); a resumed one needs a run there, of the same recipe and with
    the same configuration as its ``config.yaml``.

    Raises:
        RunFolderError: the folder refuses the run; a changed configuration is named field by
            field.
    """
    check_run_folder(runtime.output_dir, resume=runtime.resume, overwrite=runtime.overwrite)
    saved_file = runtime.output_path / CONFIG_FILE
    if runtime.resume is None or not saved_file.is_file():
        return
    saved = read_config_file(saved_file)
    if saved.recipe != recipe:
        raise RunFolderError(
            f"--resume: {runtime.output_dir} holds a {saved.recipe} run, not a {recipe} run"
        )
    try:
        previous = config_from_file(type(config), {}, saved)
    except ConfigError as error:
        raise RunFolderError(f"--resume: {saved_file} no longer reads: {error}") from None
    differences = config_differences(previous, config)
    if differences:
        raise RunFolderError(
            f"--resume: the configuration differs from the run's ({saved_file}) in "
            f"{'; '.join(differences)}. Resume with the run's own configuration (give no "
            f"configuration options, or --config {saved_file}), or start a new run"
        )


def start_run(
    recipe: str,
    config: Any,
    runtime: Runtime,
    stages: Sequence[str],
    data: ReIDData | None = None,
) -> TrainingRun:
    """The :class:`~reidkit.engine.TrainingRun` of a recipe in ``runtime.output_dir``.

    Call :func:`check_run` first, before anything is built. The run folder holds
    ``config.yaml`` (the resolved configuration) from now on. The report's ``config`` holds the
    recipe's name, the configuration (``experiment``) and the runtime. The console and
    ``train.log`` start with a header (the recipe, its stages, the processes and the global
    batch) and, given ``data``, the data set's splits and the chance level of its evaluation
    (:func:`describe_data`).
    """
    run = TrainingRun(
        runtime.output_dir,
        stages=stages,
        config={"recipe": recipe, "experiment": config, "runtime": runtime},
        resume=runtime.resume,
        eval_every=runtime.eval_every,
        overwrite=runtime.overwrite,
        tensorboard=runtime.tensorboard,
    )
    config_file = runtime.output_path / CONFIG_FILE
    if is_main_process() and not config_file.is_file():
        save_config(config_file, recipe, config, header=f"the configuration of a {recipe} run")
    batch = getattr(getattr(config, "data", None), "batch_size", None)
    run.logger.info(
        "==== %s: stages %s | %d process(es)%s | run folder %s ====",
        recipe,
        ", ".join(stages),
        get_world_size(),
        f", global batch {batch}" if batch is not None else "",
        runtime.output_dir,
    )
    if data is not None:
        describe_data(run, config.data.dataset, data)
    return run


def describe_data(run: TrainingRun, name: str, data: ReIDData) -> None:
    """Log and record the splits of ``data`` and the chance level of its query-gallery
    evaluation (:func:`reidkit.eval.chance_rank_result`, a random ranking under the
    Market-1501 protocol)."""
    query, gallery = data.dataset.query, data.dataset.gallery
    chance = chance_rank_result(
        [pid for _, pid, _ in query],
        [pid for _, pid, _ in gallery],
        [camid for _, _, camid in query],
        [camid for _, _, camid in gallery],
    )
    run.describe_data(name, data.dataset.summary(), chance)


def clip_model_spec(
    architecture: str,
    recipe: str,
    clip: ClipConfig,
    data: DataConfig,
    num_classes: int,
    *,
    normalize: bool = False,
    **arguments: Any,
) -> dict[str, Any]:
    """The ``model.json`` mapping of a model built on the CLIP of ``clip`` (see
    :class:`reidkit.models.ModelSpec`); ``arguments`` are the architecture's others."""
    from reidkit.models import ModelSpec

    spec = ModelSpec(
        architecture=architecture,
        arguments={
            "clip": {"name": clip.name, "image_size": clip.image_size, "stride": clip.stride},
            "num_classes": num_classes,
            **arguments,
        },
        image_size=clip.image_size,
        pixel_mean=CLIP_MEAN if clip.pixel_mean is None else clip.pixel_mean,
        pixel_std=CLIP_STD if clip.pixel_std is None else clip.pixel_std,
        normalize=normalize,
        trained_on=trained_on(recipe, data, num_classes),
    )
    return spec.to_json()


def trained_on(recipe: str, data: DataConfig, num_classes: int) -> dict[str, Any]:
    """Where a model's weights come from, for its ``model.json``."""
    return {"recipe": recipe, "dataset": data.dataset, "identities": num_classes}


def fit_stage(
    run: TrainingRun,
    stage: str,
    optimizers: Sequence[torch.optim.Optimizer] | Mapping[str, torch.optim.Optimizer],
    schedulers: Sequence[Any],
    batches: Iterable[Any],
    step: StepFunction,
    *,
    epochs: int,
    runtime: Runtime,
    device: torch.device,
    evaluate: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Train one stage of ``run`` (see :meth:`~reidkit.engine.TrainingRun.fit`); its metrics.

    Several ``optimizers`` are given by name, so that their learning rates are logged as
    ``lr_<name>`` (see :meth:`~reidkit.engine.Trainer.learning_rates`)."""
    if not isinstance(optimizers, Mapping):
        optimizers = list(optimizers)
    trainer = Trainer(optimizers, list(schedulers), amp=runtime.amp, device=device)
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
        cast(DataLoader[Any], data.train_loader),  # built with train_loader=True
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
            number of epochs in the configuration; the section holding it holds the stage's
            ``lr`` and ``warmup_epochs`` too (see :meth:`stage_field`).
        weights_field: dotted path of the backbone's pretrained weights.
        image_size_field: dotted path of the input ``(H, W)``.
        loss_weights: ``{name: dotted path}`` of the weights of the loss terms (the command
            line's ``--loss-weight NAME=W``).
        check_data: ``check_data(config)`` raises a :class:`ConfigError` when a data set that
            is read from a folder has none (checked before anything is built).
        built_in_datasets: the data of the recipe that need no folder; ``--data-root`` alone
            replaces them with ``default_dataset``.
        default_dataset: the data set parser of ``--data-root`` (see ``built_in_datasets``).
    """

    name: str
    description: str
    config_type: type
    presets: Mapping[str, Any]
    train: Callable[[Any, Runtime], dict[str, Any]]
    epoch_fields: Callable[[Any], dict[str, str]]
    weights_field: str
    image_size_field: str = "clip.image_size"
    loss_weights: Mapping[str, str] = dataclasses.field(default_factory=dict)
    check_data: Callable[[Any], None] = check_reid_data
    built_in_datasets: tuple[str, ...] = SYNTHETIC_DATASETS
    default_dataset: str = DEFAULT_DATASET

    def stage_field(self, config: Any, stage: str, name: str) -> str:
        """Dotted path of the field ``name`` (``"lr"``) of ``stage``'s section.

        Raises:
            ConfigError: an unknown stage, or a section without that field.
        """
        fields = self.epoch_fields(config)
        if stage not in fields:
            raise ConfigError(f"stage {stage!r}", f"is not a stage of {self.name}: {list(fields)}")
        section = fields[stage].rpartition(".")[0]
        path = f"{section}.{name}" if section else name
        get_field(config, path)
        return path

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
