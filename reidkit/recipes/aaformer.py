"""AAformer (Auto-Aligned Transformer, paper 001) as a recipe.

A ViT whose attention layers become Multi-head Auto-Alignment (sec. III-B): [PART] tokens to
which every head assigns the patches by optimal transport (:class:`reidkit.AAformer`),
trained with a BNNeck and classifier per output token, label-smoothed cross-entropy over the
CLS and [PART] tokens and triplet losses on CLS and on the concatenated [PART]s (eq. 6-8,
:class:`reidkit.parts.AAformerLoss`), in one module (:class:`reidkit.models.AAformerReID`).
Retrieval uses CLS and [PART]s concatenated, with Euclidean distances. At the end, the [PART]
attention maps of a few query images are drawn to ``part_maps.png`` (Fig. 5) and the mean
number of patches each [PART] receives is reported.

Example::

    import dataclasses
    from reidkit.recipes import Runtime, aaformer

    nearest = dataclasses.replace(aaformer.PRESETS["tiny"], assignment="nearest")  # table V
    aaformer.train(nearest, Runtime(output_dir="runs/aaformer_nearest"))
    pcb = dataclasses.replace(aaformer.PRESETS["tiny"], assignment="stripes", part_groups=(6,))

The presets: ``paper`` (sec. IV-A on Market-1501, eq. 3's raw query-key scores),
``paper-cuhk03`` (the same on CUHK03-NP's labeled boxes, the CUHK03(L) columns of tables
IV-V; ``data.dataset=cuhk03_detected`` for the detected boxes) and ``tiny`` (the built-in
data, a small random ViT, cosine scores).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from reidkit import checks
from reidkit.distributed import data_parallel, is_main_process
from reidkit.engine import WarmupCosineLR, move_to_device, seed_everything
from reidkit.models import AAformerReID, ModelSpec, build_vit
from reidkit.ot import SinkhornOptions
from reidkit.parts import AAformer, AAformerLoss, save_part_assignment_maps
from reidkit.parts.assignment import (
    ASSIGNMENT_OPTIONS,
    PART_ASSIGNMENTS,
    SIMILARITIES,
    AssignmentMethod,
    Similarity,
)
from reidkit.recipes.common import (
    Recipe,
    ReIDData,
    begin,
    build_data,
    check_run,
    fit_stage,
    rank_evaluation,
    start_run,
    trained_on,
)
from reidkit.recipes.config import (
    DataConfig,
    Runtime,
    Section,
    check_image_size,
    check_warmup,
    non_negative_numbers,
    positive_integers,
    positive_numbers,
)

NAME = "aaformer"
STAGE = "aaformer"
OPTIMIZERS = ("sgd", "adamw")
ASSIGNMENTS = PART_ASSIGNMENTS
"""``sinkhorn`` (eq. 3-5), ``nearest`` (table V), ``stripes`` and ``mgn`` (table IV)."""


@dataclasses.dataclass(frozen=True)
class BackboneConfig(Section):
    """The ViT that AAformer converts.

    Attributes:
        name: ``"tiny"`` (a small random timm ViT), ``"timm:<model name>"`` or
            ``"open_clip:<model name>"`` (a CLIP image tower).
        pretrained: ``None`` (random weights), ``"default"`` (timm's default weights, or
            OpenAI's for open_clip), a timm or open_clip weight tag, or a local checkpoint
            file (see :func:`reidkit.models.build_vit`).
        image_size: input ``(H, W)``.
    """

    name: str
    pretrained: str | None
    image_size: tuple[int, int]

    def check(self) -> None:
        kind, _, model = self.name.partition(":")
        if not (self.name == "tiny" or (kind in ("timm", "open_clip") and model)):
            self.fail("name", f"must be tiny, timm:<name> or open_clip:<name>, got {self.name!r}")
        check_image_size(self, "image_size")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Section):
    """A linear warm-up, then a cosine to 0.

    Attributes:
        name: ``"sgd"`` (with momentum) or ``"adamw"``.
        epochs: epochs of the run.
        lr: the learning rate after the warm-up.
        warmup_epochs: epochs of linear warm-up from ``warmup_lr`` (fewer than ``epochs``).
        warmup_lr: the learning rate of the first epoch (at most ``lr``).
        momentum: SGD's momentum, in ``[0, 1)``.
        weight_decay: weight decay.
    """

    name: str
    epochs: int
    lr: float
    warmup_epochs: int
    warmup_lr: float
    momentum: float
    weight_decay: float

    def check(self) -> None:
        self.require("name", checks.check_choice, OPTIMIZERS)
        positive_integers(self, "epochs")
        positive_numbers(self, "lr")
        check_warmup(self, self.warmup_epochs, self.epochs)
        self.require("warmup_lr", checks.check_number, above=0, at_most=self.lr)
        self.require("momentum", checks.check_number, at_least=0, below=1)
        non_negative_numbers(self, "weight_decay")


@dataclasses.dataclass(frozen=True)
class AAformerConfig(Section):
    """The settings of an AAformer run.

    Attributes:
        backbone: the ViT and its input.
        part_groups: the [PART] granularities (Table VI), e.g. ``(2, 3)``; ``()`` for none.
        assignment: ``"sinkhorn"`` (optimal transport), ``"nearest"`` (Table V's ablation), or
            a fixed partition of the patch grid (Table IV): ``"stripes"`` (PCB's horizontal
            stripes, each group of ``g`` [PART]s takes ``g`` stripes; PCB is
            ``part_groups=(6,)``) or ``"mgn"`` (each group one MGN branch: a [PART] over the
            whole image, then ``g - 1`` stripes; MGN is ``part_groups=(3, 4)``), see
            :func:`reidkit.parts.assignment.fixed_part_mask`.
        similarity: the assignment's scores between [PART] queries and patch keys:
            ``"dot"`` (eq. 3's raw product ``Q^PT K^T``) or ``"cosine"`` (both L2-normalised
            per head, as SwAV's prototypes and features are); unused by the fixed partitions.
        epsilon: entropic regularisation of the assignment (eq. 3).
        sinkhorn_iterations: Sinkhorn iterations of the assignment, all run (eq. 5).
        data: the data set and the ``P x K`` batches; ``batch_size`` counts every process's
            images together.
        optimizer: the optimiser and its schedule.
        label_smoothing: of the ID losses.
        triplet_margin: of the triplet losses.
        part_maps: query images drawn in ``part_maps.png`` (0: none).
    """

    backbone: BackboneConfig
    part_groups: tuple[int, ...]
    assignment: str
    epsilon: float
    sinkhorn_iterations: int
    data: DataConfig
    optimizer: OptimizerConfig
    label_smoothing: float
    triplet_margin: float
    part_maps: int
    similarity: str = "cosine"  # the scores of configurations written before the field

    def check(self) -> None:
        if any(size < 1 for size in self.part_groups):
            self.fail("part_groups", f"must hold integers >= 1, got {self.part_groups}")
        self.require("assignment", checks.check_choice, ASSIGNMENTS)
        self.require("similarity", checks.check_choice, tuple(SIMILARITIES))
        self.require("label_smoothing", checks.check_number, at_least=0, below=1)
        positive_numbers(self, "triplet_margin", "epsilon")
        self.require("sinkhorn_iterations", checks.check_integer, 1)
        self.require("part_maps", checks.check_integer, 0)

    def assignment_options(self) -> SinkhornOptions:
        """The Sinkhorn settings of the assignment: AAformer's, with these fields."""
        return dataclasses.replace(
            ASSIGNMENT_OPTIONS, epsilon=self.epsilon, max_iter=self.sinkhorn_iterations
        )


PAPER = AAformerConfig(
    # Sec. IV-A: ImageNet ViT-B/16 at 256x128, [PART] granularities {2, 3} (table VI), OT on
    # eq. 3's raw query-key products with epsilon 0.05 and 3 iterations, 16 ids x 4 images, SGD
    # (momentum 0.9, weight decay 1e-4), warm-up 8e-4 -> 8e-3 in 10 epochs, cosine, 120 epochs.
    backbone=BackboneConfig(
        name="timm:vit_base_patch16_224", pretrained="default", image_size=(256, 128)
    ),
    part_groups=(2, 3),
    assignment="sinkhorn",
    similarity="dot",
    epsilon=0.05,
    sinkhorn_iterations=3,
    data=DataConfig(dataset="market1501", root=None, batch_size=64, num_instances=4),
    optimizer=OptimizerConfig(
        name="sgd",
        epochs=120,
        lr=8e-3,
        warmup_epochs=10,
        warmup_lr=8e-4,
        momentum=0.9,
        weight_decay=1e-4,
    ),
    label_smoothing=0.1,
    triplet_margin=0.3,
    part_maps=4,
)

PAPER_CUHK03 = dataclasses.replace(
    # Tables IV-V report CUHK03(L): the new protocol's labeled boxes, with sec. IV-A's settings.
    PAPER,
    data=dataclasses.replace(PAPER.data, dataset="cuhk03_labeled"),
)

TINY = dataclasses.replace(
    PAPER,
    backbone=BackboneConfig(name="tiny", pretrained=None, image_size=(128, 64)),
    # A random ViT's raw query-key products span far more than epsilon = 0.05, and three
    # Sinkhorn iterations then leave the partition far from equal: cosine scores, as SwAV's.
    similarity="cosine",
    data=DataConfig(dataset="synthetic", root=None, batch_size=32, num_instances=4),
    # A tiny random ViT learning from scratch: AdamW, which learned faster than the paper's SGD
    # here (synthetic mAP 0.12 against 0.09 after 8 epochs, one seed).
    optimizer=dataclasses.replace(
        PAPER.optimizer, name="adamw", epochs=8, lr=1e-3, warmup_epochs=2, warmup_lr=1e-4
    ),
)

PRESETS: dict[str, AAformerConfig] = {"paper": PAPER, "paper-cuhk03": PAPER_CUHK03, "tiny": TINY}


def build_optimizer(
    parameters: Any, config: OptimizerConfig
) -> tuple[torch.optim.Optimizer, WarmupCosineLR]:
    """The optimiser of ``config`` and its warm-up and cosine schedule."""
    if config.name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = WarmupCosineLR(
        optimizer,
        config.epochs,
        warmup_epochs=config.warmup_epochs,
        warmup_start_factor=config.warmup_lr / config.lr,
    )
    return optimizer, scheduler


def train(config: AAformerConfig, runtime: Runtime) -> dict[str, Any]:
    """Train, evaluate, draw the [PART] maps, write the report; ``{"aaformer": metrics, ...}``.

    The results also hold ``part_maps`` (the figure's path) and ``patches_per_part`` (the mean
    number of patches each [PART] receives in the third block) when the figure is drawn.
    """
    check_run(NAME, config, runtime)
    context = begin(runtime)
    device = context.device

    # Model: the converted ViT and one BNNeck and classifier per output token.
    backbone = config.backbone
    vit, mean, std = build_vit(backbone.name, backbone.pretrained, backbone.image_size)
    aaformer = AAformer(
        vit,
        config.part_groups,
        assignment=cast(AssignmentMethod, config.assignment),  # AAformerConfig.check checks it
        similarity=cast(Similarity, config.similarity),  # AAformerConfig.check checks it
        options=config.assignment_options(),
    )
    data = build_data(
        config.data,
        config.backbone.image_size,
        pixel_mean=mean,
        pixel_std=std,
        runtime=runtime,
        device=device,
    )
    criterion = AAformerLoss(
        aaformer.output_dim,
        1 + aaformer.num_parts,
        data.dataset.num_train_pids,
        label_smoothing=config.label_smoothing,
        margin=config.triplet_margin,
    )
    model = AAformerReID(aaformer, criterion).to(device)

    run = start_run(NAME, config, runtime, [STAGE], data)
    run.track("model", model)
    run.set_inference_model(model, model_spec(config, mean, std, data.dataset.num_train_pids))
    seed_everything(runtime.seed, rank=context.rank)  # per-rank sampling and augmentation
    network = data_parallel(model)

    def step(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        model.train()
        images, pids = move_to_device(batch[:2], device)
        terms = network(images, pids)
        return {"loss": terms.loss, "id": terms.id_loss, "triplet": terms.triplet_loss}

    optimizer, scheduler = build_optimizer(model.parameters(), config.optimizer)
    metrics = fit_stage(
        run,
        STAGE,
        [optimizer],
        [scheduler],
        cast(DataLoader[Any], data.train_loader),  # built with train_loader=True
        step,
        epochs=config.optimizer.epochs,
        runtime=runtime,
        device=device,
        evaluate=rank_evaluation(model, data, device, metric="euclidean"),  # sec. IV-A
    )
    results: dict[str, Any] = {NAME: metrics}
    if is_main_process() and config.part_maps > 0 and aaformer.num_parts:
        results.update(
            inspect_parts(aaformer, data, config.part_maps, runtime.output_path, mean, std)
        )
    run.finish(results)
    return results


def model_spec(
    config: AAformerConfig,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    num_classes: int,
) -> dict[str, Any]:
    """The ``model.json`` mapping of the trained :class:`~reidkit.models.AAformerReID`:
    features compared by Euclidean distance (sec. IV-A)."""
    backbone = config.backbone
    spec = ModelSpec(
        architecture="aaformer",
        arguments={
            "backbone": {"name": backbone.name, "image_size": backbone.image_size},
            "part_groups": config.part_groups,
            "assignment": config.assignment,
            "similarity": config.similarity,
            "num_classes": num_classes,
        },
        image_size=backbone.image_size,
        pixel_mean=mean,
        pixel_std=std,
        metric="euclidean",
        trained_on=trained_on(NAME, config.data, num_classes),
    )
    return spec.to_json()


def inspect_parts(
    aaformer: AAformer,
    data: ReIDData,
    count: int,
    output_dir: Path,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict[str, Any]:
    """Fig. 5 for the first ``count`` query images (the third block's first head), and the
    mean number of patches each [PART] receives there, over the images and heads."""
    images = next(iter(data.test_loader))[0][:count].to(aaformer.part_tokens.device)
    aaformer.eval()
    with torch.no_grad():
        aaformer(images)
    index = min(2, len(aaformer.attention_layers()) - 1)
    layer = aaformer.attention_layers()[index]
    counts = cast(Tensor, layer.last_part_mask).sum(-1).float()  # set by the forward above
    path = save_part_assignment_maps(
        images,
        aaformer.part_attention_maps(layer=index, head=0),
        output_dir / "part_maps.png",
        mean=mean,
        std=std,
    )
    return {"part_maps": str(path), "patches_per_part": counts.mean(dim=(0, 1)).tolist()}


def epoch_fields(config: AAformerConfig) -> dict[str, str]:
    """Where the stage's number of epochs lives in the configuration."""
    return {STAGE: "optimizer.epochs"}


RECIPE = Recipe(
    name=NAME,
    description="AAformer: [PART] tokens with optimal-transport patch assignment",
    config_type=AAformerConfig,
    presets=PRESETS,
    train=train,
    epoch_fields=epoch_fields,
    weights_field="backbone.pretrained",
    image_size_field="backbone.image_size",
)
