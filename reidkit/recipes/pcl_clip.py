"""PCL-CLIP (Li and Gong, 2023): CLIP fine-tuned with a prototypical contrastive loss.

The image encoder of CLIP, with a BNNeck on its class token and one on its projection
(:class:`reidkit.models.PCLCLIPModel`), is fine-tuned with the PCL loss against a memory of
class centroids (eq. 4-5), without prompt learning. Every epoch starts by encoding the train
set and re-initialising the memory from the class means (as the released code does); within
the epoch the centroids follow the features with momentum.

``mode="supervised"`` uses the ground-truth identities and adds the ID loss of one classifier
on the concatenated feature, as released (Table 1, ``L_pcl + L_id``; ``pcl_weight``,
``id_weight`` and ``triplet_weight`` select every row without prompts, see
:class:`reidkit.losses.PCLCLIPLoss`). ``mode="unsupervised"`` (sec. 4.2) ignores them: each
epoch the train features are clustered with DBSCAN on the k-reciprocal Jaccard distance,
outliers are left out of the epoch, the memory holds the cluster centroids, the patch
projection stays frozen, and the batches spread each cluster over its cameras
(``sampler="camera_aware"``). The adjusted Rand index of each epoch's pseudo labels against
the true identities is logged and stored in the report (``results.pseudo_labels``). An epoch
whose clustering finds fewer clusters than a batch has identities trains on batches of the
clusters there are (``clustering.few_clusters="shrink"``) or not at all (``"skip"``). The
presets ``paper`` and ``tiny`` are supervised, ``paper-unsupervised`` and
``tiny-unsupervised`` not (:func:`preset`).

Example::

    from reidkit.recipes import Runtime, pcl_clip

    config = pcl_clip.preset("tiny", "unsupervised")
    pcl_clip.train(config, Runtime(output_dir="runs/pcl_clip_unsupervised"))
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any, cast

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
from reidkit.engine.progress import LOGGER_NAME
from reidkit.losses import PCLCLIPLoss
from reidkit.memory import (
    PrototypeMemory,
    cluster_pseudo_labels,
    freeze_patch_projection,
    pseudo_label_agreement,
)
from reidkit.memory.prototype import UPDATE_RULES
from reidkit.models import PCLCLIPModel
from reidkit.models.pcl_clip import ID_CLASSIFIERS
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
SAMPLERS = ("identity", "camera_aware")
FEW_CLUSTERS = ("shrink", "skip")
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
        few_clusters: what an epoch does whose clustering finds fewer clusters than the ``P``
            identities of a batch (per process): ``"shrink"`` trains on batches of every
            cluster there is, ``K`` raised so that a batch keeps (nearly) its size, and
            ``"skip"`` trains on nothing until the next clustering; with fewer than two
            clusters the epoch is always skipped (the PCL loss against one centroid is 0).
    """

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    few_clusters: str = "shrink"

    def check(self) -> None:
        positive_numbers(self, "eps")
        positive_integers(self, "min_samples", "k1", "k2")
        self.require("few_clusters", checks.check_choice, FEW_CLUSTERS)


@dataclasses.dataclass(frozen=True)
class PCLCLIPConfig(Section):
    """The settings of a PCL-CLIP run.

    Attributes:
        mode: ``"supervised"`` (ground-truth identities) or ``"unsupervised"`` (clusters).
        clip: the CLIP model and its input (the text tower is unused).
        data: the data set and the ``P x K`` batches (per process).
        optimizer: the optimiser and its schedule.
        memory: the centroid memory and the PCL loss.
        id_weight: weight of the ID loss (0: none; must be 0 without identities, in the
            unsupervised mode).
        clustering: the pseudo labels of the unsupervised mode.
        id_classifier: ``"concatenated"`` (one classifier on ``[BN(v), BN(V)]``, as
            released) or ``"per_neck"`` (one per neck, CLIP-ReID's heads, their two ID losses
            summed), see :class:`reidkit.models.PCLCLIPModel`.
        pcl_weight: weight of the PCL loss (eq. 4; 0: none, Table 1's baselines).
        triplet_weight: weight of the batch-hard triplet loss on ``[v, V]`` (Table 1's
            ``L_tri``).
        triplet_margin: its margin.
        iterations_per_epoch: the batches of an epoch, drawn from as many passes of the
            sampler as it takes (the paper's 200 in the supervised mode); ``None``: one pass.
        sampler: ``"identity"`` (each identity's ``K`` images at random) or
            ``"camera_aware"`` (spread over its cameras,
            :class:`reidkit.data.CameraAwareIdentitySampler`).
    """

    mode: str
    clip: ClipConfig
    data: DataConfig
    optimizer: OptimizerConfig
    memory: MemoryConfig
    id_weight: float
    clustering: ClusteringConfig
    # Defaults: the behaviour of configurations written before these fields.
    id_classifier: str = "per_neck"
    pcl_weight: float = 1.0
    triplet_weight: float = 0.0
    triplet_margin: float = 0.3
    iterations_per_epoch: int | None = None
    sampler: str = "identity"

    def check(self) -> None:
        self.require("mode", checks.check_choice, MODES)
        non_negative_numbers(self, "id_weight", "pcl_weight", "triplet_weight")
        if self.pcl_weight == self.id_weight == self.triplet_weight == 0:
            self.fail("pcl_weight", "id_weight and triplet_weight must not all be 0")
        if self.mode == "unsupervised" and self.id_weight > 0:
            self.fail(
                "id_weight",
                f"must be 0 in the unsupervised mode (no identities to classify), got "
                f"{self.id_weight}",
            )
        self.require("id_classifier", checks.check_choice, ID_CLASSIFIERS)
        positive_numbers(self, "triplet_margin")
        if self.iterations_per_epoch is not None:
            positive_integers(self, "iterations_per_epoch")
        self.require("sampler", checks.check_choice, SAMPLERS)


PAPER = PCLCLIPConfig(
    # Sec. 5.2: ViT-B/16, 256x128, SGD at 3.5e-4 with weight decay 5e-4, 50 epochs of 200
    # iterations; memory momentum 0.2, temperature 0.05, hardest-sample update, one ID
    # classifier on the concatenated feature and ID weight 0.25 as released.
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
    id_classifier="concatenated",
    pcl_weight=1.0,
    triplet_weight=0.0,
    iterations_per_epoch=200,
    sampler="identity",
)

PAPER_UNSUPERVISED = dataclasses.replace(
    # ClusterContrast's Market-1501 settings (Adam, 50 epochs of 200 iterations, P x K =
    # 16 x 16 with its camera-aware sampler, momentum 0.1, DBSCAN eps 0.6), as the paper
    # keeps them.
    PAPER,
    mode="unsupervised",
    data=dataclasses.replace(PAPER.data, batch_size=256, num_instances=16),
    optimizer=OptimizerConfig(
        name="adam", epochs=50, lr=3.5e-4, weight_decay=5e-4, milestones=(20, 40), warmup_epochs=0
    ),
    memory=MemoryConfig(momentum=0.1, temperature=0.05, update_rule="all"),
    id_weight=0.0,
    sampler="camera_aware",
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
    iterations_per_epoch=None,  # one pass of the sampler over the small train set
)

TINY_UNSUPERVISED = dataclasses.replace(
    PAPER_UNSUPERVISED,
    clip=TINY_CLIP_CONFIG,
    data=TINY_DATA,
    optimizer=dataclasses.replace(
        PAPER_UNSUPERVISED.optimizer, epochs=6, weight_decay=1e-4, milestones=(4,)
    ),
    clustering=ClusteringConfig(eps=0.5, min_samples=3, k1=10, k2=4),
    iterations_per_epoch=None,
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
    the ``P x K`` batches of the labelled samples: one pass of the sampler, or
    ``iterations_per_epoch`` batches from as many passes as it takes.

    In the unsupervised mode each clustering is recorded in :attr:`history`; one that finds
    fewer clusters than ``P`` per process is handled as ``clustering.few_clusters`` says, with
    a warning.

    Attributes:
        num_outliers: samples the latest clustering left out.
        agreement: the adjusted Rand index of the latest pseudo labels against the true
            identities (:func:`reidkit.memory.pseudo_label_agreement`).
        history: per clustering (epoch), ``epoch``, ``clusters``, ``outliers``,
            ``adjusted_rand_index``, ``identities_per_batch`` (``P`` of the epoch's batches, 0
            when the epoch was skipped) and ``batches`` (``"full"``, ``"shrunk"`` or
            ``"skipped"``).
    """

    def __init__(
        self,
        model: PCLCLIPModel,
        memory: PrototypeMemory,
        data: ReIDData,
        config: PCLCLIPConfig,
        runtime: Runtime,
        device: torch.device,
        world_size: int = 1,
    ) -> None:
        self.model, self.memory, self.data = model, memory, data
        self.config, self.runtime, self.device = config, runtime, device
        self.world_size = world_size
        self.feature_loader = data.feature_loader(runtime.num_workers)
        self.epoch = 0
        self.num_outliers = 0
        self.agreement = 1.0
        self.history: list[dict[str, Any]] = []

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
        return cast(Tensor, broadcast_object(labels))

    def batch_shape(self, num_clusters: int) -> tuple[int, int, str]:
        """``(P x K, K, form)`` of the epoch's batches for ``num_clusters`` labelled
        identities: the configured batches (``"full"``), fewer identities with more images
        each (``"shrunk"``), or ``(0, 0, "skipped")`` (the last two logged)."""
        batch_size = process_batch_size(self.config.data)
        num_instances = self.config.data.num_instances
        per_process = num_clusters // self.world_size
        identities = batch_size // num_instances
        if per_process >= identities:
            return batch_size, num_instances, "full"
        policy = self.config.clustering.few_clusters
        skip = policy == "skip" or per_process < 2
        logging.getLogger(LOGGER_NAME).warning(
            "[%s] epoch %d: the clustering found %d clusters, fewer than the P = %d identities "
            "of a batch on each of %d process(es); %s",
            self.config.mode,
            self.epoch + 1,
            num_clusters,
            identities,
            self.world_size,
            "the epoch trains on nothing"
            if skip
            else f"its batches hold {per_process} clusters x {batch_size // per_process} images",
        )
        if skip:
            return 0, 0, "skipped"
        num_instances = batch_size // per_process
        return per_process * num_instances, num_instances, "shrunk"

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
        num_clusters = int(labels.max()) + 1
        batch_size, num_instances, form = self.batch_shape(num_clusters)
        if self.config.mode == "unsupervised":
            self.agreement = pseudo_label_agreement(labels, pids.cpu())
            self.history.append(
                {
                    "epoch": self.epoch + 1,
                    "clusters": num_clusters,
                    "outliers": self.num_outliers,
                    "adjusted_rand_index": self.agreement,
                    "identities_per_batch": batch_size // num_instances if batch_size else 0,
                    "batches": form,
                }
            )
            logging.getLogger(LOGGER_NAME).info(
                "[unsupervised] epoch %d: %d clusters, %d outliers, adjusted Rand index %.4f",
                self.epoch + 1,
                num_clusters,
                self.num_outliers,
                self.agreement,
            )
        if not batch_size:
            return
        self.memory.initialise_from_features(features.to(self.device), labels.to(self.device))
        records = [
            (path, int(label), camid)
            for (path, _, camid), label in zip(self.data.dataset.train, labels.tolist())
            if label >= 0
        ]
        loader = make_train_loader(
            records,
            self.data.train_transform,
            batch_size,
            num_instances,
            num_workers=self.runtime.num_workers,
            seed=self.runtime.seed,
            pin_memory=self.device.type == "cuda",
            camera_aware=self.config.sampler == "camera_aware",
        )
        self.model.train()
        yield from self.batches(loader)

    def batches(self, loader: Any) -> Iterator[Any]:
        """One pass of ``loader``, or ``iterations_per_epoch`` batches from successive passes
        (pass ``r`` of epoch ``e`` samples as the sampler's epoch ``e + r * epochs``, so that
        no two passes of the run repeat a shuffle or an augmentation)."""
        limit = self.config.iterations_per_epoch
        done = passes = 0
        while passes == 0 or (limit is not None and done < limit):
            loader.sampler.set_epoch(self.epoch + passes * self.config.optimizer.epochs)
            for batch in loader:
                if done == limit:
                    return
                yield batch
                done += 1
            passes += 1


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
    """Train, evaluate, write the report; ``{"pcl_clip_<mode>": final metrics}``, and in the
    unsupervised mode ``pseudo_labels``: ``{"epochs": EpochBatches.history of this process,
    "skipped_epochs": n, "shrunk_epochs": n}``."""
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
    model = PCLCLIPModel(clip_model, num_classes, config.id_classifier).to(device)
    if mode == "unsupervised":
        for neck in (model.neck, model.neck_projected):
            if neck is not None:
                neck.classifier.requires_grad_(False)
        freeze_patch_projection(model)  # the divergence fix of sec. 4.2

    run = start_run(NAME, config, runtime, [mode], data)
    run.track("model", model)
    spec = clip_model_spec(
        "pcl_clip",
        NAME,
        config.clip,
        config.data,
        num_classes,
        normalize=True,
        id_classifier=config.id_classifier,
    )
    run.set_inference_model(model, spec)
    seed_everything(runtime.seed, rank=context.rank)  # per-rank sampling and augmentation

    memory_config = config.memory
    memory = PrototypeMemory(
        num_classes, model.feature_dim, memory_config.momentum, memory_config.update_rule
    ).to(device)
    batches = EpochBatches(model, memory, data, config, runtime, device, context.world_size)
    network = data_parallel(model)
    criterion = PCLCLIPLoss(
        pcl_weight=config.pcl_weight,
        id_weight=config.id_weight,
        triplet_weight=config.triplet_weight,
        temperature=memory_config.temperature,
        label_smoothing=ID_LABEL_SMOOTHING,
        triplet_margin=config.triplet_margin,
    )

    def step(batch: tuple[Tensor, ...]) -> dict[str, Tensor | float]:
        images, labels = move_to_device(batch[:2], device)
        outputs = network(images)
        objective = criterion(
            outputs.features, outputs.embeddings, outputs.logits, labels, memory.centroids
        )
        memory.update(outputs.features, labels)
        metrics: dict[str, Tensor | float] = {**objective.terms, "clusters": memory.num_classes}
        if mode == "unsupervised":
            metrics["outliers"] = batches.num_outliers
            metrics["ari"] = batches.agreement
        return {"loss": objective.loss, **metrics}

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
    results: dict[str, Any] = {f"{NAME}_{mode}": metrics}
    if mode == "unsupervised":
        forms = [entry["batches"] for entry in batches.history]
        results["pseudo_labels"] = {
            "epochs": batches.history,
            "skipped_epochs": forms.count("skipped"),
            "shrunk_epochs": forms.count("shrunk"),
        }
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
    loss_weights={"pcl": "pcl_weight", "id": "id_weight", "triplet": "triplet_weight"},
)
