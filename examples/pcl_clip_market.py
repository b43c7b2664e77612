"""PCL-CLIP (Li and Gong, 2023): CLIP fine-tuned with a prototypical contrastive loss.

The image encoder of CLIP, with a BNNeck on its class token and one on its projection, is
fine-tuned with the PCL loss against a memory of class centroids (eq. 4-5), without prompt
learning. Every epoch starts by encoding the train set and re-initialising the memory from the
class means (as the released code does); within the epoch the centroids follow the features
with momentum.

``--mode supervised`` uses the ground-truth identities and adds the ID loss (Table 1,
``L_pcl + L_id``). ``--mode unsupervised`` (sec. 4.2) ignores them: each epoch the train
features are clustered with DBSCAN on the k-reciprocal Jaccard distance, outliers are left out
of the epoch, the memory holds the cluster centroids, and the patch projection stays frozen.

Examples::

    # built-in synthetic data and a tiny random CLIP: a few minutes on a 2-core CPU
    python examples/pcl_clip_market.py --mode supervised
    python examples/pcl_clip_market.py --mode unsupervised

    # Market-1501 with ViT-B-16 and the paper's settings, on 2 GPUs
    torchrun --nproc_per_node=2 examples/pcl_clip_market.py --preset paper --mode supervised \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/pcl_clip_market

    # continue an interrupted run from its last completed epoch
    python examples/pcl_clip_market.py --preset paper --data-root ... --resume
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from reidkit.clip import CLIPImageEncoder, load_clip
from reidkit.data import (
    ReIDRecord,
    build_dataset,
    build_test_transforms,
    build_train_transforms,
    make_test_loader,
    make_train_loader,
)
from reidkit.distributed import (
    broadcast_object,
    cleanup_distributed,
    data_parallel,
    init_distributed,
    is_main_process,
    unwrap_model,
)
from reidkit.engine import (
    Trainer,
    TrainingRun,
    WarmupMultiStepLR,
    build_arg_parser,
    move_to_device,
    seed_everything,
    stage_epochs,
)
from reidkit.eval import RankResult, evaluate_model, extract_features
from reidkit.losses import BNNeck, CrossEntropyLabelSmooth
from reidkit.losses.pcl import PCLLoss
from reidkit.memory import (
    PrototypeMemory,
    cluster_pseudo_labels,
    freeze_patch_projection,
)

MODES = ("supervised", "unsupervised")

# A CLIP small enough for a CPU: ViT of width 64 on 16x16 patches (the text tower is unused).
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@dataclasses.dataclass(frozen=True)
class Training:
    """Optimisation, memory and (unsupervised) clustering settings of one mode."""

    epochs: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    weight_decay: float
    milestones: tuple[int, ...]
    warmup_epochs: int
    batch_size: int
    num_instances: int
    momentum: float  # mu of eq. 5
    temperature: float  # tau of eq. 4
    update_rule: str  # "all" (eq. 5 per sample) or "hardest"
    id_weight: float  # 0: no ID loss
    eps: float = 0.6  # DBSCAN radius on the Jaccard distance
    min_samples: int = 4
    k1: int = 30
    k2: int = 6


@dataclasses.dataclass(frozen=True)
class Preset:
    """Model and data settings, and the training settings of each mode."""

    clip: str | dict[str, Any]
    pretrained: str | None
    image_size: tuple[int, int]
    pixel_mean: tuple[float, float, float] | None  # None: CLIP's statistics
    pixel_std: tuple[float, float, float] | None
    supervised: Training
    unsupervised: Training


PRESETS = {
    # Sec. 5.2: ViT-B/16, 256x128, SGD at 3.5e-4 with weight decay 5e-4, 50 epochs; memory
    # momentum 0.2, temperature 0.05, hardest-sample update and ID weight 0.25 as released.
    # Unsupervised: ClusterContrast's settings (Adam, 50 epochs, P x K = 16 x 16, momentum 0.1).
    "paper": Preset(
        clip="ViT-B-16",
        pretrained="openai",
        image_size=(256, 128),
        pixel_mean=(0.5, 0.5, 0.5),
        pixel_std=(0.5, 0.5, 0.5),
        supervised=Training(
            epochs=50,
            optimizer="sgd",
            lr=3.5e-4,
            weight_decay=5e-4,
            milestones=(30, 50),
            warmup_epochs=10,
            batch_size=64,
            num_instances=4,
            momentum=0.2,
            temperature=0.05,
            update_rule="hardest",
            id_weight=0.25,
        ),
        unsupervised=Training(
            epochs=50,
            optimizer="adam",
            lr=3.5e-4,
            weight_decay=5e-4,
            milestones=(20, 40),
            warmup_epochs=0,
            batch_size=256,
            num_instances=16,
            momentum=0.1,
            temperature=0.05,
            update_rule="all",
            id_weight=0.0,
            eps=0.6,
            min_samples=4,
            k1=30,
            k2=6,
        ),
    ),
    # A random tiny CLIP on the synthetic data: learns from scratch, so larger learning rates.
    "tiny": Preset(
        clip=TINY_CLIP,
        pretrained=None,
        image_size=(128, 64),
        pixel_mean=None,
        pixel_std=None,
        supervised=Training(
            epochs=8,
            optimizer="adam",
            lr=5e-4,
            weight_decay=1e-4,
            milestones=(6,),
            warmup_epochs=1,
            batch_size=32,
            num_instances=4,
            momentum=0.2,
            temperature=0.05,
            update_rule="hardest",
            id_weight=0.25,
        ),
        unsupervised=Training(
            epochs=6,
            optimizer="adam",
            lr=3.5e-4,
            weight_decay=1e-4,
            milestones=(4,),
            warmup_epochs=0,
            batch_size=32,
            num_instances=4,
            momentum=0.1,
            temperature=0.05,
            update_rule="all",
            id_weight=0.0,
            eps=0.5,
            min_samples=3,
            k1=10,
            k2=4,
        ),
    ),
}


class PCLCLIPModel(nn.Module):
    """CLIP's image encoder with a BNNeck on the class token and one on its projection.

    The feature of an image is the concatenation of both necks' outputs (sec. 5.2): the PCL
    loss and the memory use it in training, and retrieval uses it L2-normalised.
    """

    def __init__(self, clip_model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.image_encoder = CLIPImageEncoder(clip_model)
        self.neck = BNNeck(clip_model.visual.transformer.width, num_classes)
        self.neck_projected = BNNeck(clip_model.visual.output_dim, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.neck.bn.num_features + self.neck_projected.bn.num_features

    def forward(self, images: Tensor) -> dict[str, Any]:
        encoded = self.image_encoder(images)
        cls, projected = self.neck(encoded.cls), self.neck_projected(encoded.embedding)
        features = torch.cat([cls.features, projected.features], dim=1)
        return {"features": features, "logits": [cls.logits, projected.logits]}


class EpochBatches:
    """The training batches of each epoch, after refreshing the memory from the current model.

    Iterating encodes the whole train set, labels it (ground truth, or the clusters computed on
    rank 0 and shared with every rank), re-initialises the memory from the labels and yields
    the ``P x K`` batches of the labelled samples.
    """

    def __init__(
        self,
        model: PCLCLIPModel,
        memory: PrototypeMemory,
        records: Sequence[ReIDRecord],
        mode: str,
        training: Training,
        preset: Preset,
        num_workers: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self.model, self.memory, self.records = model, memory, list(records)
        self.mode, self.training, self.device = mode, training, device
        self.num_workers, self.seed, self.epoch = num_workers, seed, 0
        normalization = {"mean": preset.pixel_mean, "std": preset.pixel_std}  # None: CLIP's
        self.train_transform = build_train_transforms(preset.image_size, **normalization)
        self.feature_loader = make_test_loader(
            self.records, [], build_test_transforms(preset.image_size, **normalization)
        )
        self.num_outliers = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pseudo_labels(self, features: Tensor, pids: Tensor) -> Tensor:
        if self.mode == "supervised":
            return pids
        labels = None
        if is_main_process():
            t = self.training
            labels = cluster_pseudo_labels(
                features, eps=t.eps, min_samples=t.min_samples, k1=t.k1, k2=t.k2
            ).cpu()
        return broadcast_object(labels)

    def __iter__(self) -> Iterator[Any]:
        self.model.eval()
        features, pids, _, _ = extract_features(
            lambda images: self.model(images)["features"],
            self.feature_loader,
            flip=False,
            device=self.device,
            desc="train features",
        )
        labels = self.pseudo_labels(features, pids)
        kept = labels >= 0
        self.num_outliers = int((~kept).sum())
        if int(kept.sum()) == 0:
            raise ValueError("clustering left every sample an outlier; raise eps or lower k1")
        self.memory.initialise_from_features(features.to(self.device), labels.to(self.device))
        records = [
            (path, int(label), camid)
            for (path, _, camid), label in zip(self.records, labels.tolist())
            if label >= 0
        ]
        loader = make_train_loader(
            records,
            self.train_transform,
            self.training.batch_size,
            self.training.num_instances,
            num_workers=self.num_workers,
            seed=self.seed,
            pin_memory=self.device.type == "cuda",
        )
        loader.sampler.set_epoch(self.epoch)
        self.model.train()
        yield from loader


def build_optimizer(model: nn.Module, training: Training) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=training.lr, momentum=0.9, weight_decay=training.weight_decay
        )
    return torch.optim.Adam(parameters, lr=training.lr, weight_decay=training.weight_decay)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = build_arg_parser(
        "PCL-CLIP: CLIP fine-tuned with a prototypical contrastive loss",
        default_output_dir="runs/pcl_clip_market",
    )
    parser.add_argument("--mode", choices=MODES, default="supervised", help="label source")
    parser.add_argument(
        "--pretrained", default=None, help="open_clip tag or local CLIP checkpoint (preset's)"
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    training = getattr(preset, args.mode)
    context = init_distributed(args.device)
    device = context.device
    seed_everything(args.seed)  # the same initial weights on every rank
    epochs = stage_epochs({args.mode: training.epochs}, args.epochs)[args.mode]

    dataset = build_dataset(args.dataset, args.data_root)
    normalization = {"mean": preset.pixel_mean, "std": preset.pixel_std}  # None: CLIP's
    test_loader = make_test_loader(
        dataset.query,
        dataset.gallery,
        build_test_transforms(preset.image_size, **normalization),
        num_workers=args.num_workers,
    )

    clip_model, _ = load_clip(
        preset.clip,
        args.pretrained or preset.pretrained,
        image_size=preset.image_size,
        device=device,
    )
    # Unsupervised: no identities; the classifiers of the necks stay unused and frozen.
    num_classes = dataset.num_train_pids if args.mode == "supervised" else 1
    model = PCLCLIPModel(clip_model, num_classes).to(device)
    if args.mode == "unsupervised":
        model.neck.classifier.requires_grad_(False)
        model.neck_projected.classifier.requires_grad_(False)
        freeze_patch_projection(model)  # the divergence fix of sec. 4.2

    run = TrainingRun(
        args.output_dir,
        stages=[args.mode],
        config={"args": vars(args), "preset": dataclasses.asdict(preset)},
        resume=args.resume,
        eval_every=args.eval_every,
    )
    run.track("model", model)
    seed_everything(args.seed, rank=context.rank)  # per-rank sampling and augmentation

    memory = PrototypeMemory(
        num_classes, model.feature_dim, training.momentum, training.update_rule
    ).to(device)
    batches = EpochBatches(
        model,
        memory,
        dataset.train,
        args.mode,
        training,
        preset,
        args.num_workers,
        args.seed,
        device,
    )
    network = data_parallel(model)
    pcl = PCLLoss(training.temperature)
    identity_loss = CrossEntropyLabelSmooth(0.1)

    def step(batch: tuple[Tensor, ...]) -> dict[str, Tensor | float]:
        images, labels = move_to_device(batch[:2], device)
        outputs = network(images)
        pcl_loss = pcl(outputs["features"], labels, memory.centroids)
        memory.update(outputs["features"], labels)
        metrics: dict[str, Tensor | float] = {"pcl": pcl_loss, "clusters": memory.num_classes}
        loss = pcl_loss
        if training.id_weight > 0:
            ids = sum(identity_loss(logits, labels) for logits in outputs["logits"])
            loss = loss + training.id_weight * ids
            metrics["id"] = ids
        if args.mode == "unsupervised":
            metrics["outliers"] = batches.num_outliers
        return {"loss": loss, **metrics}

    def evaluate() -> RankResult:
        evaluated = unwrap_model(network).eval()  # the training step switches back
        return evaluate_model(
            lambda images: evaluated(images)["features"],
            test_loader,
            len(dataset.query),
            normalize=True,
            device=device,
        )

    optimizer = build_optimizer(model, training)
    scheduler = WarmupMultiStepLR(
        optimizer, milestones=training.milestones, warmup_epochs=training.warmup_epochs
    )
    trainer = Trainer(optimizer, scheduler, amp=args.amp, device=device)
    metrics = run.fit(args.mode, trainer, batches, step, epochs=epochs, evaluate=evaluate)
    run.finish({f"pcl_clip_{args.mode}": metrics})
    cleanup_distributed()
    return metrics


if __name__ == "__main__":
    main()
