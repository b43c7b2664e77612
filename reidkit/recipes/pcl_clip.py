"""PCL-CLIP (Li and Gong, 2023): CLIP fine-tuned with a prototypical contrastive loss.

The image encoder of CLIP, with a BNNeck on its class token and one on its projection
(:class:`reidkit.models.PCLCLIPModel`), is fine-tuned with the PCL loss against a memory of
class centroids (eq. 4-5), without prompt learning. Every epoch starts by encoding the train
set and re-initialising the memory from the class means (as the released code does); within
the epoch the centroids follow the features with momentum.

``mode="supervised"`` uses the ground-truth identities and adds the ID loss (Table 1,
``L_pcl + L_id``). ``mode="unsupervised"`` (sec. 4.2) ignores them: each epoch the train
features are clustered with DBSCAN on the k-reciprocal Jaccard distance, outliers are left
out of the epoch, the memory holds the cluster centroids, and the patch projection stays
frozen. The presets ``paper`` and ``tiny`` are supervised, ``paper-unsupervised`` and
``tiny-unsupervised`` not (:func:`preset`).

Example::

    from reidkit.recipes import Runtime, pcl_clip

    config = pcl_clip.preset("tiny", "unsupervised")
    pcl_clip.train(config, Runtime(output_dir="runs/pcl_clip_unsupervised"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.data import make_train_loader
from reidkit.distributed import (
    broadcast_object,
    data_parallel,
    is_main_process,
    raise_on_every_rank,
)
from reidkit.engine import WarmupMultiStepLR, move_to_device, seed_everything
from reidkit.losses import CrossEntropyLabelSmooth, PCLLoss
from reidkit.memory import PrototypeMemory, cluster_pseudo_labels, freeze_patch_projection
from reidkit.memory.prototype import UPDATE_RULES
from reidkit.models import PCLCLIPModel
from reidkit.recipes.common import (
    Recipe,
    ReIDData,
    begin,
    build_clip,
    build_clip_data,
    check_run,
    clip_model_spec,
    fit_stage,
    process_batch_size,
    rank_evaluation,
    start_run,
)
from reidkit.recipes.config import (
    TINY_CLIP,
    ClipConfig,
    DataConfig,
    Runtime,
    Section,
    check_increasing,
    check_warmup,
    non_negative_numbers,
    positive_integers,
    positive_numbers,
)
from reidkit.retrieval import extract_features

NAME = "pcl_clip"
MODES = ("supervised", "unsupervised")
OPTIMIZERS = ("sgd", "adam")
SGD_MOMENTUM = 0.9
ID_LABEL_SMOOTHING = 0.1


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Section):
    """The optimiser and its warm-up and steps of 0.1.

    Attributes:
        name: ``"sgd"`` (momentum 0.9) or ``"adam"``.
        epochs: epochs of the run.
        lr: the learning rate after the warm-up.
        weight_decay: weight decay.
        milestones: epochs after which the learning rate is multiplied by 0.1.
        warmup_epochs: epochs of linear warm-up.
    """

    name: str
    epochs: int
    lr: float
    weight_decay: float
    milestones: tuple[int, ...]
    warmup_epochs: int

    def check(self) -> None:
        self.require("name", checks.check_choice, OPTIMIZERS)
        positive_integers(self, "epochs")
        positive_numbers(self, "lr")
        non_negative_numbers(self, "weight_decay")
        check_increasing(self, "milestones")
        check_warmup(self, self.warmup_epochs, self.epochs)


@dataclasses.dataclass(frozen=True)
class MemoryConfig(Section):
    """The centroid memory (:class:`reidkit.PrototypeMemory`) and the PCL loss.

    Attributes:
        momentum: ``mu`` of eq. 5.
        temperature: ``tau`` of eq. 4.
        update_rule: ``"all"`` (eq. 5 per sample) or ``"hardest"`` (per class in the batch,
            its hardest sample, as released).
    """

    momentum: float
    temperature: float
    update_rule: str

    def check(self) -> None:
        self.require("momentum", checks.check_number, at_least=0, at_most=1)
        positive_numbers(self, "temperature")
        self.require("update_rule", checks.check_choice, UPDATE_RULES)


@dataclasses.dataclass(frozen=True)
class ClusteringConfig(Section):
    """DBSCAN on the k-reciprocal Jaccard distance (unsupervised mode only).

    Attributes:
        eps: DBSCAN's radius on the Jaccard distance.
        min_samples: DBSCAN's core-point size.
        k1: neighbours of the k-reciprocal sets.
        k2: neighbours of the local query expansion.
    """

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6

    def check(self) -> None:
        positive_numbers(self, "eps")
        positive_integers(self, "min_samples", "k1", "k2")


@dataclasses.dataclass(frozen=True)
class PCLCLIPConfig(Section):
    """The settings of a PCL-CLIP run.

    Attributes:
        mode: ``"supervised"`` (ground-truth identities) or ``"unsupervised"`` (clusters).
        clip: the CLIP model and its input (the text tower is unused).
        data: the data set and the ``P x K`` batches (per process).
        optimizer: the optimiser and its schedule.
        memory: the centroid memory and the PCL loss.
        id_weight: weight of the ID losses on the two necks (0: none).
        clustering: the pseudo labels of the unsupervised mode.
    """

    mode: str
    clip: ClipConfig
    data: DataConfig
    optimizer: OptimizerConfig
    memory: MemoryConfig
    id_weight: float
    clustering: ClusteringConfig

    def check(self) -> None:
        self.require("mode", checks.check_choice, MODES)
        non_negative_numbers(self, "id_weight")


PAPER = PCLCLIPConfig(
    # Sec. 5.2: ViT-B/16, 256x128, SGD at 3.5e-4 with weight decay 5e-4, 50 epochs; memory
    # momentum 0.2, temperature 0.05, hardest-sample update and ID weight 0.25 as released.
    mode="supervised",
    clip=ClipConfig(
        name="ViT-B-16",
        pretrained="openai",
        image_size=(256, 128),
        pixel_mean=(0.5, 0.5, 0.5),
        pixel_std=(0.5, 0.5, 0.5),
    ),
    data=DataConfig(dataset="market1501", root=None, batch_size=64, num_instances=4),
    optimizer=OptimizerConfig(
        name="sgd", epochs=50, lr=3.5e-4, weight_decay=5e-4, milestones=(30, 50), warmup_epochs=10
    ),
    memory=MemoryConfig(momentum=0.2, temperature=0.05, update_rule="hardest"),
    id_weight=0.25,
    clustering=ClusteringConfig(),
)

PAPER_UNSUPERVISED = dataclasses.replace(
    # ClusterContrast's settings (Adam, 50 epochs, P x K = 16 x 16, momentum 0.1), as the paper
    # keeps them.
    PAPER,
    mode="unsupervised",
    data=dataclasses.replace(PAPER.data, batch_size=256, num_instances=16),
    optimizer=OptimizerConfig(
        name="adam", epochs=50, lr=3.5e-4, weight_decay=5e-4, milestones=(20, 40), warmup_epochs=0
    ),
    memory=MemoryConfig(momentum=0.1, temperature=0.05, update_rule="all"),
    id_weight=0.0,
)

# A random tiny CLIP on the built-in data: it learns from scratch, so larger learning rates.
# Its text tower is unused, so it has one layer of width 32.
TINY_CLIP_CONFIG = ClipConfig(
    name={**TINY_CLIP, "text_cfg": {**TINY_CLIP["text_cfg"], "width": 32, "heads": 2, "layers": 1}},
    pretrained=None,
    image_size=(128, 64),
)
TINY_DATA = DataConfig(dataset="synthetic", root=None, batch_size=32, num_instances=4)

TINY = dataclasses.replace(
    PAPER,
    clip=TINY_CLIP_CONFIG,
    data=TINY_DATA,
    optimizer=OptimizerConfig(
        name="adam", epochs=8, lr=5e-4, weight_decay=1e-4, milestones=(6,), warmup_epochs=1
    ),
)

TINY_UNSUPERVISED = dataclasses.replace(
    PAPER_UNSUPERVISED,
    clip=TINY_CLIP_CONFIG,
    data=TINY_DATA,
    optimizer=dataclasses.replace(
        PAPER_UNSUPERVISED.optimizer, epochs=6, weight_decay=1e-4, milestones=(4,)
    ),
    clustering=ClusteringConfig(eps=0.5, min_samples=3, k1=10, k2=4),
)

PRESETS: dict[str, PCLCLIPConfig] = {
    "paper": PAPER,
    "tiny": TINY,
    "paper-unsupervised": PAPER_UNSUPERVISED,
    "tiny-unsupervised": TINY_UNSUPERVISED,
}


def preset_name(name: str, mode: str = "supervised") -> str:
    """The key in :data:`PRESETS` of the preset ``name`` (``"paper"`` or ``"tiny"``) of
    ``mode``: ``"tiny"`` or ``"tiny-unsupervised"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    key = name.removesuffix("-unsupervised") if mode == "supervised" else name
    key = key if mode == "supervised" or key.endswith("-unsupervised") else f"{key}-unsupervised"
    if key not in PRESETS:
        raise ValueError(f"name must be one of ('paper', 'tiny'), got {name!r}")
    return key


def preset(name: str, mode: str = "supervised") -> PCLCLIPConfig:
    """The preset ``name`` (``"paper"`` or ``"tiny"``) of ``mode``."""
    return PRESETS[preset_name(name, mode)]


class EpochBatches:
    """The training batches of each epoch, after refreshing the memory from the current model.

    Iterating encodes the whole train set, labels it (ground truth, or the clusters computed on
    rank 0 and shared with every rank), re-initialises the memory from the labels and yields
    the ``P x K`` batches of the labelled samples.

    Attributes:
        num_outliers: samples the latest clustering left out.
    """

    def __init__(
        self,
        model: PCLCLIPModel,
        memory: PrototypeMemory,
        data: ReIDData,
        config: PCLCLIPConfig,
        runtime: Runtime,
        device: torch.device,
    ) -> None:
        self.model, self.memory, self.data = model, memory, data
        self.config, self.runtime, self.device = config, runtime, device
        self.feature_loader = data.feature_loader(runtime.num_workers)
        self.epoch = 0
        self.num_outliers = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pseudo_labels(self, features: Tensor, pids: Tensor) -> Tensor:
        """The ground-truth identities, or the clusters of ``features`` (``-1``: outlier)."""
        if self.config.mode == "supervised":
            return pids
        labels = None
        with raise_on_every_rank():  # an error of rank 0's clustering ends every rank
            if is_main_process():
                clustering = self.config.clustering
                labels = cluster_pseudo_labels(
                    features,
                    eps=clustering.eps,
                    min_samples=clustering.min_samples,
                    k1=clustering.k1,
                    k2=clustering.k2,
                ).cpu()
        return broadcast_object(labels)

    def __iter__(self) -> Iterator[Any]:
        self.model.eval()
        features, pids, _, _ = extract_features(
            self.model, self.feature_loader, flip=False, device=self.device, desc="train features"
        )
        labels = self.pseudo_labels(features, pids)
        kept = labels >= 0
        self.num_outliers = int((~kept).sum())
        if int(kept.sum()) == 0:
            raise ValueError("clustering left every sample an outlier; raise eps or lower k1")
        self.memory.initialise_from_features(features.to(self.device), labels.to(self.device))
        records = [
            (path, int(label), camid)
            for (path, _, camid), label in zip(self.data.dataset.train, labels.tolist())
            if label >= 0
        ]
        loader = make_train_loader(
            records,
            self.data.train_transform,
            process_batch_size(self.config.data),
            self.config.data.num_instances,
            num_workers=self.runtime.num_workers,
            seed=self.runtime.seed,
            pin_memory=self.device.type == "cuda",
        )
        loader.sampler.set_epoch(self.epoch)
        self.model.train()
        yield from loader


def build_optimizer(
    model: nn.Module, config: OptimizerConfig
) -> tuple[torch.optim.Optimizer, WarmupMultiStepLR]:
    """The optimiser of ``config`` on ``model``'s trainable parameters, and its schedule."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=SGD_MOMENTUM, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = WarmupMultiStepLR(
        optimizer, milestones=config.milestones, warmup_epochs=config.warmup_epochs
    )
    return optimizer, scheduler


def train(config: PCLCLIPConfig, runtime: Runtime) -> dict[str, Any]:
    """Train, evaluate, write the report; ``{"pcl_clip_<mode>": final metrics}``."""
    mode = config.mode
    check_run(NAME, config, runtime)
    context = begin(runtime)
    process_batch_size(config.data)  # a global batch that does not split fails before the build
    device = context.device
    clip_model = build_clip(config.clip, device, frozen=False)  # weights before the data load
    data = build_clip_data(  # EpochBatches builds each epoch's train loader
        config.clip, config.data, runtime=runtime, device=device, train_loader=False
    )
    # Unsupervised: no identities; the classifiers of the necks stay unused and frozen.
    num_classes = data.dataset.num_train_pids if mode == "supervised" else 1
    model = PCLCLIPModel(clip_model, num_classes).to(device)
    if mode == "unsupervised":
        model.neck.classifier.requires_grad_(False)
        model.neck_projected.classifier.requires_grad_(False)
        freeze_patch_projection(model)  # the divergence fix of sec. 4.2

    run = start_run(NAME, config, runtime, [mode], data)
    run.track("model", model)
    spec = clip_model_spec("pcl_clip", NAME, config.clip, config.data, num_classes, normalize=True)
    run.set_inference_model(model, spec)
    seed_everything(runtime.seed, rank=context.rank)  # per-rank sampling and augmentation

    memory_config = config.memory
    memory = PrototypeMemory(
        num_classes, model.feature_dim, memory_config.momentum, memory_config.update_rule
    ).to(device)
    batches = EpochBatches(model, memory, data, config, runtime, device)
    network = data_parallel(model)
    pcl = PCLLoss(memory_config.temperature)
    identity_loss = CrossEntropyLabelSmooth(ID_LABEL_SMOOTHING)

    def step(batch: tuple[Tensor, ...]) -> dict[str, Tensor | float]:
        images, labels = move_to_device(batch[:2], device)
        outputs = network(images)
        pcl_loss = pcl(outputs.features, labels, memory.centroids)
        memory.update(outputs.features, labels)
        metrics: dict[str, Tensor | float] = {"pcl": pcl_loss, "clusters": memory.num_classes}
        loss = pcl_loss
        if config.id_weight > 0:
            ids = sum(identity_loss(logits, labels) for logits in outputs.logits)
            loss = loss + config.id_weight * ids
            metrics["id"] = ids
        if mode == "unsupervised":
            metrics["outliers"] = batches.num_outliers
        return {"loss": loss, **metrics}

    optimizer, scheduler = build_optimizer(model, config.optimizer)
    metrics = fit_stage(
        run,
        mode,
        [optimizer],
        [scheduler],
        batches,
        step,
        epochs=config.optimizer.epochs,
        runtime=runtime,
        device=device,
        evaluate=rank_evaluation(model, data, device, normalize=True),
    )
    results = {f"{NAME}_{mode}": metrics}
    run.finish(results)
    return results


def epoch_fields(config: PCLCLIPConfig) -> dict[str, str]:
    """Where the stage's number of epochs lives in the configuration (the stage is the mode)."""
    return {config.mode: "optimizer.epochs"}


RECIPE = Recipe(
    name=NAME,
    description="PCL-CLIP: CLIP's image encoder with a prototypical contrastive loss",
    config_type=PCLCLIPConfig,
    presets=PRESETS,
    train=train,
    epoch_fields=epoch_fields,
    weights_field="clip.pretrained",
    loss_weights={"id": "id_weight"},
)
