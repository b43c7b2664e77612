"""CLIP-ReID (Li et al., AAAI 2023): the two-stage baseline as a recipe.

Stage 1 (``"prompts"``) learns one set of prompt tokens per identity against image features
computed once by the frozen image encoder, with ``L_i2t + L_t2i`` (eq. 2-4); both CLIP towers
stay frozen. Stage 2 (``"image_encoder"``) computes every identity's text feature once with the
learned prompts and fine-tunes the image encoder with :class:`reidkit.losses.CLIPReIDLoss`: the
ID loss on two BNNecks, the triplet loss on three features and the image-to-text
cross-entropy against the text features (eq. 5-6).

Example::

    from reidkit.recipes import Runtime, clip_reid

    results = clip_reid.train(clip_reid.PRESETS["tiny"], Runtime(output_dir="runs/clip_reid"))
    results["clip_reid"]["mAP"]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from reidkit.clip import CLIPTextEncoder
from reidkit.data import make_feature_loader
from reidkit.distributed import data_parallel
from reidkit.engine import seed_everything
from reidkit.losses import CLIPReIDLoss, SupConLoss
from reidkit.models import CLIPReIDModel
from reidkit.prompts import PromptLearner
from reidkit.recipes.common import (
    Recipe,
    begin,
    build_clip,
    build_clip_data,
    cache_frozen_features,
    check_run,
    class_text_features,
    clip_model_spec,
    fit_stage,
    process_batch_size,
    prompt_stage_optimizer,
    run_image_stage,
    start_run,
)
from reidkit.recipes.config import (
    TINY_CLIP,
    ClipConfig,
    CLIPReIDLossConfig,
    DataConfig,
    ImageStageConfig,
    PromptConfig,
    PromptStageConfig,
    Runtime,
    Section,
)

NAME = "clip_reid"
STAGES = ("prompts", "image_encoder")


@dataclasses.dataclass(frozen=True)
class CLIPReIDConfig(Section):
    """The settings of a CLIP-ReID run.

    Attributes:
        clip: the CLIP model and its input.
        data: the data set and the ``P x K`` batches (``batch_size`` over all processes).
        prompt: the prompt template and its learnable tokens per identity.
        prompt_stage: stage 1's epochs and schedule.
        image_stage: stage 2's epochs and schedule.
        loss: stage 2's loss weights (:class:`reidkit.losses.CLIPReIDLoss`).
    """

    clip: ClipConfig
    data: DataConfig
    prompt: PromptConfig
    prompt_stage: PromptStageConfig
    image_stage: ImageStageConfig
    loss: CLIPReIDLossConfig


PAPER = CLIPReIDConfig(
    # CLIP-ReID's configs/person/vit_clipreid.yml, without the camera embedding (SIE).
    clip=ClipConfig(
        name="ViT-B-16",
        pretrained="openai",
        image_size=(256, 128),
        stride=16,
        pixel_mean=(0.5, 0.5, 0.5),
        pixel_std=(0.5, 0.5, 0.5),
    ),
    data=DataConfig(dataset="market1501", root=None, batch_size=64, num_instances=4),
    prompt=PromptConfig(template="A photo of a {} person.", n_ctx=4),
    prompt_stage=PromptStageConfig(
        epochs=120, lr=3.5e-4, weight_decay=1e-4, warmup_epochs=5, warmup_lr=1e-5, min_lr=1e-6
    ),
    image_stage=ImageStageConfig(
        epochs=60,
        lr=5e-6,
        weight_decay=1e-4,
        bias_lr_factor=2.0,
        warmup_epochs=10,
        warmup_factor=0.1,
        milestones=(30, 50),
    ),
    loss=CLIPReIDLossConfig(
        id_weight=0.25,
        triplet_weight=1.0,
        image_to_text_weight=1.0,
        triplet_margin=0.3,
        label_smoothing=0.1,
    ),
)

TINY = dataclasses.replace(
    PAPER,
    # A random tiny CLIP on the built-in data: it learns from scratch, so larger learning rates.
    clip=ClipConfig(name=TINY_CLIP, pretrained=None, image_size=(128, 64), stride=16),
    data=DataConfig(dataset="synthetic", root=None, batch_size=32, num_instances=4),
    prompt_stage=PromptStageConfig(
        epochs=10, lr=5e-3, weight_decay=1e-4, warmup_epochs=1, warmup_lr=5e-4, min_lr=5e-5
    ),
    image_stage=dataclasses.replace(
        PAPER.image_stage, epochs=12, lr=1e-3, warmup_epochs=2, milestones=(9,)
    ),
)

PRESETS: dict[str, CLIPReIDConfig] = {"paper": PAPER, "tiny": TINY}


def build_loss(config: CLIPReIDLossConfig, **extra: Any) -> CLIPReIDLoss:
    """Stage 2's :class:`~reidkit.losses.CLIPReIDLoss` with ``config``'s weights (``extra``:
    the transformation loss and its weight, for MMPL)."""
    return CLIPReIDLoss(
        id_weight=config.id_weight,
        triplet_weight=config.triplet_weight,
        image_to_text_weight=config.image_to_text_weight,
        label_smoothing=config.label_smoothing,
        triplet_margin=config.triplet_margin,
        **extra,
    )


def train(config: CLIPReIDConfig, runtime: Runtime) -> dict[str, Any]:
    """Train both stages, evaluate, write the report; ``{"clip_reid": final metrics}``.

    Resumes from ``runtime.resume`` at whichever stage and epoch the checkpoint was written.
    """
    check_run(NAME, config, runtime)
    context = begin(runtime)
    device = context.device
    clip_model = build_clip(config.clip, device)  # missing weights fail before the data load
    data = build_clip_data(config.clip, config.data, runtime=runtime, device=device)
    num_classes = data.dataset.num_train_pids
    prompts = PromptLearner(num_classes, clip_model, config.prompt.template, config.prompt.n_ctx)
    prompts.to(device)
    text_encoder = CLIPTextEncoder(clip_model, chunk_size=config.data.batch_size)
    model = CLIPReIDModel(clip_model, num_classes).to(device)

    run = start_run(NAME, config, runtime, STAGES, data)
    run.track("prompt_learner", prompts)
    run.track("model", model)
    spec = clip_model_spec("clip_reid", NAME, config.clip, config.data, num_classes)
    run.set_inference_model(model, spec)
    seed_everything(runtime.seed, rank=context.rank)  # per-rank sampling and augmentation

    # Stage 1: prompts against image features computed once by the frozen image encoder.
    if not run.stage_completed("prompts"):
        model.eval()
        (image_features,) = cache_frozen_features(
            lambda images: (model.image_encoder(images).embedding,),
            data.feature_loader(runtime.num_workers),
            device,
        )
        pids = torch.tensor([pid for _, pid, _ in data.dataset.train], device=device)
        batches = make_feature_loader(
            image_features, pids, batch_size=process_batch_size(config.data), seed=runtime.seed
        )
        network = data_parallel(prompts)
        supcon = SupConLoss()  # the reference code's dot products at temperature 1

        def prompt_step(batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
            image_features, pids = batch
            batch_prompts = network(pids)
            text = text_encoder(batch_prompts.embeddings, batch_prompts.token_ids).sentence
            image_to_text = supcon(image_features, text, pids)
            text_to_image = supcon(text, image_features, pids)
            return {
                "loss": image_to_text + text_to_image,
                "image_to_text": image_to_text,
                "text_to_image": text_to_image,
            }

        optimizer, scheduler = prompt_stage_optimizer(prompts.parameters(), config.prompt_stage)
        fit_stage(
            run,
            "prompts",
            [optimizer],
            [scheduler],
            batches,
            prompt_step,
            epochs=config.prompt_stage.epochs,
            runtime=runtime,
            device=device,
        )

    # Stage 2: the image encoder against the text features of the learned prompts.
    text_features = class_text_features(prompts, text_encoder)
    criterion = build_loss(config.loss)
    metrics = run_image_stage(
        run,
        model,
        criterion,
        text_features,
        data,
        config.image_stage,
        runtime=runtime,
        device=device,
    )
    results = {NAME: metrics}
    run.finish(results)
    return results


LOSS_WEIGHTS = {
    "id": "loss.id_weight",
    "triplet": "loss.triplet_weight",
    "image_to_text": "loss.image_to_text_weight",
}
"""The weights of stage 2's loss terms (eq. 6), by the name ``--loss-weight`` gives them."""


def epoch_fields(config: Any) -> dict[str, str]:
    """Where each stage's number of epochs lives in the configuration (CLIP-ReID's and
    MMPL's)."""
    return {"prompts": "prompt_stage.epochs", "image_encoder": "image_stage.epochs"}


RECIPE = Recipe(
    name=NAME,
    description="CLIP-ReID: prompts per identity, then the image encoder (two stages)",
    config_type=CLIPReIDConfig,
    presets=PRESETS,
    train=train,
    epoch_fields=epoch_fields,
    weights_field="clip.pretrained",
    loss_weights=LOSS_WEIGHTS,
)
