"""CLIP-ReID (Li et al., AAAI 2023): the two-stage baseline on Market-1501 or the synthetic data.

Stage 1 ("prompts") learns one set of prompt tokens per identity against image features
computed once by the frozen image encoder, with ``L_i2t + L_t2i`` (CLIP-ReID eq. 2-4); both
CLIP towers stay frozen. Stage 2 ("image_encoder") computes every identity's text feature
once with the learned prompts and fine-tunes the image encoder with the ID loss on two BNNecks,
the triplet loss on three features and the image-to-text cross-entropy against the cached text
features (eq. 5-6).

Examples::

    # built-in synthetic data and a tiny random CLIP: a few minutes on a 2-core CPU
    python examples/clip_reid_market.py

    # Market-1501 with ViT-B-16 and the published hyperparameters, on 2 GPUs
    torchrun --nproc_per_node=2 examples/clip_reid_market.py --preset paper \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/clip_reid_market

    # continue an interrupted run from its last completed epoch
    python examples/clip_reid_market.py --preset paper --data-root ... --resume
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from reidkit.clip import CLIPTextEncoder, load_clip
from reidkit.data import (
    build_dataset,
    build_test_transforms,
    build_train_transforms,
    make_feature_loader,
    make_test_loader,
    make_train_loader,
)
from reidkit.distributed import cleanup_distributed, data_parallel, init_distributed
from reidkit.engine import (
    Trainer,
    TrainingRun,
    WarmupCosineLR,
    WarmupMultiStepLR,
    bias_parameter_groups,
    build_arg_parser,
    move_to_device,
    seed_everything,
    stage_epochs,
)
from reidkit.eval import RankResult, evaluate_model
from reidkit.losses import (
    CrossEntropyLabelSmooth,
    ImageToTextCrossEntropy,
    SupConLoss,
    TripletLoss,
)
from reidkit.models import CLIPReIDModel
from reidkit.prompts import PromptLearner
from reidkit.selection import encode_class_prompts

STAGES = ("prompts", "image_encoder")

# A CLIP small enough for a CPU: ViT of width 64 on 16x16 patches, 2-layer text transformer.
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Model, data and optimisation settings of one preset."""

    clip: str | dict[str, Any]
    pretrained: str | None
    image_size: tuple[int, int]
    stride: int
    pixel_mean: tuple[float, float, float] | None  # None: CLIP's statistics
    pixel_std: tuple[float, float, float] | None
    batch_size: int
    num_instances: int
    template: str
    n_ctx: int
    # stage 1: Adam on the prompts, linear warm-up then cosine decay
    prompt_epochs: int
    prompt_lr: float
    prompt_weight_decay: float
    prompt_warmup_epochs: int
    prompt_warmup_lr: float
    prompt_min_lr: float
    # stage 2: Adam on the image encoder and heads, linear warm-up then steps
    image_epochs: int
    image_lr: float
    image_weight_decay: float
    bias_lr_factor: float
    image_warmup_epochs: int
    image_warmup_factor: float
    milestones: tuple[int, ...]
    id_weight: float
    triplet_weight: float
    i2t_weight: float
    triplet_margin: float
    label_smoothing: float


PRESETS = {
    # CLIP-ReID's configs/person/vit_clipreid.yml, without the camera embedding (SIE).
    "paper": Preset(
        clip="ViT-B-16",
        pretrained="openai",
        image_size=(256, 128),
        stride=16,
        pixel_mean=(0.5, 0.5, 0.5),
        pixel_std=(0.5, 0.5, 0.5),
        batch_size=64,
        num_instances=4,
        template="A photo of a {} person.",
        n_ctx=4,
        prompt_epochs=120,
        prompt_lr=3.5e-4,
        prompt_weight_decay=1e-4,
        prompt_warmup_epochs=5,
        prompt_warmup_lr=1e-5,
        prompt_min_lr=1e-6,
        image_epochs=60,
        image_lr=5e-6,
        image_weight_decay=1e-4,
        bias_lr_factor=2.0,
        image_warmup_epochs=10,
        image_warmup_factor=0.1,
        milestones=(30, 50),
        id_weight=0.25,
        triplet_weight=1.0,
        i2t_weight=1.0,
        triplet_margin=0.3,
        label_smoothing=0.1,
    ),
    # A random tiny CLIP on the synthetic data: learns from scratch, so larger learning rates.
    "tiny": Preset(
        clip=TINY_CLIP,
        pretrained=None,
        image_size=(128, 64),
        stride=16,
        pixel_mean=None,
        pixel_std=None,
        batch_size=32,
        num_instances=4,
        template="A photo of a {} person.",
        n_ctx=4,
        prompt_epochs=10,
        prompt_lr=5e-3,
        prompt_weight_decay=1e-4,
        prompt_warmup_epochs=1,
        prompt_warmup_lr=5e-4,
        prompt_min_lr=5e-5,
        image_epochs=12,
        image_lr=1e-3,
        image_weight_decay=1e-4,
        bias_lr_factor=2.0,
        image_warmup_epochs=2,
        image_warmup_factor=0.1,
        milestones=(9,),
        id_weight=0.25,
        triplet_weight=1.0,
        i2t_weight=1.0,
        triplet_margin=0.3,
        label_smoothing=0.1,
    ),
}


@torch.no_grad()
def encode_images(model: CLIPReIDModel, loader: DataLoader, device: torch.device) -> Tensor:
    """Projected image features ``(N, embed_dim)`` of every image of ``loader``, in order."""
    model.eval()
    features = [model.image_encoder(images.to(device)).embedding for images, *_ in loader]
    return torch.cat(features)


class Data(NamedTuple):
    """A data set with its P x K train loader, query-then-gallery test loader and test transform."""

    dataset: Any
    train_loader: DataLoader
    test_loader: DataLoader
    test_transform: Callable


def build_data_and_clip(
    args: argparse.Namespace, preset: Preset, device: torch.device
) -> tuple[Data, nn.Module]:
    """The preset's data loaders and its CLIP, frozen (shared by the CLIP-ReID and MMPL scripts)."""
    dataset = build_dataset(args.dataset, args.data_root)
    normalization = {"mean": preset.pixel_mean, "std": preset.pixel_std}  # None: CLIP's
    test_transform = build_test_transforms(preset.image_size, **normalization)
    train_loader = make_train_loader(
        dataset.train,
        build_train_transforms(preset.image_size, **normalization),
        preset.batch_size,
        preset.num_instances,
        num_workers=args.num_workers,
        seed=args.seed,
        pin_memory=device.type == "cuda",
    )
    test_loader = make_test_loader(
        dataset.query, dataset.gallery, test_transform, num_workers=args.num_workers
    )
    clip_model, _ = load_clip(
        preset.clip,
        args.pretrained or preset.pretrained,
        image_size=preset.image_size,
        stride=preset.stride,
        device=device,
    )
    clip_model.requires_grad_(False)
    return Data(dataset, train_loader, test_loader, test_transform), clip_model


def main() -> None:
    parser = build_arg_parser(
        "CLIP-ReID two-stage baseline", default_output_dir="runs/clip_reid_market"
    )
    parser.add_argument(
        "--pretrained", default=None, help="open_clip tag or local CLIP checkpoint (preset's)"
    )
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    context = init_distributed(args.device)
    device = context.device
    seed_everything(args.seed)  # the same initial weights on every rank
    epochs = stage_epochs(
        {"prompts": preset.prompt_epochs, "image_encoder": preset.image_epochs}, args.epochs
    )

    data, clip_model = build_data_and_clip(args, preset, device)
    dataset, train_loader, test_loader = data.dataset, data.train_loader, data.test_loader
    num_classes = dataset.num_train_pids
    prompt_learner = PromptLearner(num_classes, clip_model, preset.template, preset.n_ctx)
    prompt_learner.to(device)
    text_encoder = CLIPTextEncoder(clip_model, chunk_size=preset.batch_size)
    model = CLIPReIDModel(clip_model, num_classes).to(device)

    run = TrainingRun(
        args.output_dir,
        stages=STAGES,
        config={"args": vars(args), "preset": dataclasses.asdict(preset)},
        resume=args.resume,
        eval_every=args.eval_every,
    )
    run.track("prompt_learner", prompt_learner)
    run.track("model", model)
    seed_everything(args.seed, rank=context.rank)  # per-rank sampling and augmentation

    def evaluate() -> RankResult:
        return evaluate_model(model, test_loader, len(dataset.query), device=device)

    # Stage 1: prompts against image features computed once by the frozen image encoder.
    if not run.stage_completed("prompts"):
        train_images = make_test_loader(
            dataset.train, [], data.test_transform, num_workers=args.num_workers
        )
        cached_batches = make_feature_loader(
            encode_images(model, train_images, device),
            torch.tensor([pid for _, pid, _ in dataset.train], device=device),
            batch_size=preset.batch_size,
            seed=args.seed,
        )
        prompts = data_parallel(prompt_learner)
        supcon = SupConLoss()  # the reference code's dot products at temperature 1

        def prompt_step(batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
            image_features, pids = batch
            batch_prompts = prompts(pids)
            text_features = text_encoder(batch_prompts.embeddings, batch_prompts.token_ids)
            i2t = supcon(image_features, text_features.sentence, pids)
            t2i = supcon(text_features.sentence, image_features, pids)
            return {"loss": i2t + t2i, "i2t": i2t, "t2i": t2i}

        optimizer = torch.optim.Adam(
            prompt_learner.parameters(),
            lr=preset.prompt_lr,
            weight_decay=preset.prompt_weight_decay,
        )
        scheduler = WarmupCosineLR(
            optimizer,
            epochs["prompts"],
            warmup_epochs=preset.prompt_warmup_epochs,
            warmup_start_factor=preset.prompt_warmup_lr / preset.prompt_lr,
            final_factor=preset.prompt_min_lr / preset.prompt_lr,
        )
        trainer = Trainer(optimizer, scheduler, amp=args.amp, device=device)
        run.fit("prompts", trainer, cached_batches, prompt_step, epochs=epochs["prompts"])

    # Stage 2: the image encoder against the text features of the learned prompts.
    with torch.no_grad():
        text_features = encode_class_prompts(prompt_learner, text_encoder).sentence
    model.image_encoder.requires_grad_(True)
    network = data_parallel(model)
    identity_loss = CrossEntropyLabelSmooth(preset.label_smoothing)
    triplet_loss = TripletLoss(preset.triplet_margin)
    image_to_text = ImageToTextCrossEntropy(preset.label_smoothing)

    def image_step(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        model.train()
        images, pids = move_to_device(batch[:2], device)
        outputs = network(images)
        ids = sum(identity_loss(logits, pids) for logits in outputs.logits)
        triplets = sum(triplet_loss(features, pids) for features in outputs.triplet_features)
        i2t = image_to_text(outputs.embedding, text_features, pids)
        loss = preset.id_weight * ids + preset.triplet_weight * triplets + preset.i2t_weight * i2t
        return {"loss": loss, "id": ids, "triplet": triplets, "i2t": i2t}

    optimizer = torch.optim.Adam(
        bias_parameter_groups(model, preset.image_lr, preset.bias_lr_factor),
        weight_decay=preset.image_weight_decay,
    )
    scheduler = WarmupMultiStepLR(
        optimizer,
        milestones=preset.milestones,
        warmup_epochs=preset.image_warmup_epochs,
        warmup_start_factor=preset.image_warmup_factor,
    )
    trainer = Trainer(optimizer, scheduler, amp=args.amp, device=device)
    metrics = run.fit(
        "image_encoder",
        trainer,
        train_loader,
        image_step,
        epochs=epochs["image_encoder"],
        evaluate=evaluate,
    )
    run.finish({"clip_reid": metrics})
    cleanup_distributed()


if __name__ == "__main__":
    main()
