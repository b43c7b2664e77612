"""UniPT (Shao et al., ICCV 2023): unified pre-training on pseudo texts, then text-to-image
fine-tuning, as a recipe.

Stage ``"pretrain"`` (sec. 4.1): images with pseudo texts (UniPT's LUPerson-T, written by
:mod:`reidkit.pseudotext`; on the built-in data the synthetic pedestrians' pseudo captions)
train both encoders (:class:`reidkit.models.UniPTPretrainingModel`) with
``L_pre = L_con + β L_mlm`` (eq. 1-3, :class:`reidkit.losses.UniPTPretrainingLoss`), AdamW
with a linear warm-up over the first 10 % of the steps. Its evaluation is zero-shot retrieval
on the test split.

Stage ``"finetune"`` (sec. 4.2): every (image, ground-truth caption) pair of the data set's
train split trains the same encoders with a shared identity classifier
(:class:`reidkit.models.TextToImageModel`) and ``L_id + L_rk`` (eq. 4, 5, 7 with ``γ = 0``),
Adam at ``1e-5`` for the text encoder and ``1e-4`` for the rest. Then text-to-image retrieval
on the test split (R@1/5/10, mAP, mINP).

The report's results hold ``unipt`` (after fine-tuning), ``unipt_pretrained`` (zero-shot after
pre-training) and ``initial`` (zero-shot before any training, same seed);
``pretrained_clip.pt`` holds the pre-trained CLIP weights (:func:`reidkit.load_clip` reads them
as ``pretrained``). ``--epochs pretrain=0`` is the "no pre-training" baseline.

Example::

    from reidkit.recipes import Runtime, unipt

    results = unipt.train(unipt.PRESETS["tiny"], Runtime(output_dir="runs/unipt"))
    results["unipt"]["R1"], results["initial"]["R1"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.data.text_loaders import ImageTextDataset
from reidkit.distributed import data_parallel
from reidkit.engine import TrainingRun, move_to_device, seed_everything
from reidkit.losses import ObjectiveOutput, UniPTPretrainingLoss
from reidkit.models import (
    TextToImageModel,
    UniPTImageEncoder,
    UniPTPretrainingModel,
    UniPTTextEncoder,
)
from reidkit.recipes.common import (
    TEXT_DEFAULT_DATASET,
    Recipe,
    begin,
    check_run,
    start_run,
)
from reidkit.recipes.config import (
    ClipConfig,
    Runtime,
    Section,
    non_negative_numbers,
    positive_integers,
    positive_numbers,
)
from reidkit.recipes.text_to_image import (
    BUILT_IN_TEXT_DATASETS,
    FINETUNE_STAGE,
    INITIAL_RESULT,
    PRETRAIN_STAGE,
    TINY_TEXT_CLIP,
    FinetuneStageConfig,
    PseudoTextConfig,
    TextData,
    TextDataConfig,
    build_text_clip,
    build_text_data,
    check_pretraining_epochs,
    check_text_data,
    describe_text_data,
    fit_pretraining,
    make_text_loader,
    read_pretraining_data,
    record_initial_evaluation,
    run_finetune_stage,
    save_pretrained_clip,
    t2i_evaluation,
    text_model_spec,
)

NAME = "unipt"
STAGES = (PRETRAIN_STAGE, FINETUNE_STAGE)


@dataclasses.dataclass(frozen=True)
class PretrainStageConfig(Section):
    """UniPT's pre-training (sec. 4.1, 5.2).

    Attributes:
        epochs: epochs over the pseudo-text images (0: no pre-training).
        batch_size: images per batch, over all processes.
        lr: AdamW's learning rate after the warm-up.
        weight_decay: AdamW's weight decay.
        warmup_epochs: epochs of linear warm-up, per step (a fraction of an epoch is fine;
            fewer than ``epochs``), then a linear decay to 0. The paper warms up over 10 % of
            the steps: 1.5 of its 15 epochs.
        mlm_weight: ``β`` of eq. 3 (1; 0: table 5's "w/o MLM").
        mask_probability: BERT's 15 %, in ``(0, 1]``.
        temperature: ``τ`` of the contrastive loss (1: eq. 1 as printed, the plain cosine).
        learnable_temperature: learn ``τ`` as CLIP does.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    mlm_weight: float
    mask_probability: float
    temperature: float
    learnable_temperature: bool

    def check(self) -> None:
        check_pretraining_epochs(self, self.warmup_epochs, self.epochs)
        positive_integers(self, "batch_size")
        positive_numbers(self, "lr", "temperature")
        non_negative_numbers(self, "weight_decay", "mlm_weight")
        self.require("mask_probability", checks.check_number, above=0, at_most=1)


@dataclasses.dataclass(frozen=True)
class UniPTConfig(Section):
    """The settings of a UniPT run.

    Attributes:
        clip: the CLIP model whose towers are the encoders, and its input.
        data: the text-to-image data set (fine-tuning and evaluation).
        pseudo: the pre-training images with pseudo texts.
        embed_dim: the joint embedding dimension of the 1x1 projections.
        causal_text: keep CLIP's causal text mask (``False``: bidirectional, as BERT).
        pretrain: stage 1.
        finetune: stage 2.
    """

    clip: ClipConfig
    data: TextDataConfig
    pseudo: PseudoTextConfig
    embed_dim: int
    causal_text: bool
    pretrain: PretrainStageConfig
    finetune: FinetuneStageConfig

    def check(self) -> None:
        positive_integers(self, "embed_dim")


PAPER = UniPTConfig(
    # Sec. 5.2, with CLIP's ViT-B/16 towers for the paper's ViT-B/16 and BERT: 384x128 images,
    # 77 text positions for the paper's 100 (CLIP's maximum).
    clip=ClipConfig(name="ViT-B-16", pretrained="openai", image_size=(384, 128)),
    data=TextDataConfig(dataset="cuhk_pedes", root=None, batch_size=64, text_length=77),
    pseudo=PseudoTextConfig(
        captions=None, images=None, synthetic_seed=1, synthetic_ids=64, corruption_probability=0.2
    ),
    embed_dim=768,
    causal_text=False,
    pretrain=PretrainStageConfig(
        epochs=15,
        batch_size=512,
        lr=1e-5,
        weight_decay=0.01,
        warmup_epochs=1.5,  # 10 % of the steps
        mlm_weight=1.0,
        mask_probability=0.15,
        temperature=1.0,
        learnable_temperature=False,
    ),
    finetune=FinetuneStageConfig(
        epochs=60,
        lr=1e-4,
        text_lr=1e-5,
        weight_decay=0.0,
        warmup_epochs=5,
        margin=0.2,
        negatives="semi-hard",
        label_smoothing=0.0,
    ),
)

TINY = dataclasses.replace(
    PAPER,
    # A random tiny CLIP learning from scratch on the built-in captioned pedestrians: larger
    # rates, a learned temperature (the plain cosine of eq. 1 learns slowly from scratch).
    clip=ClipConfig(name=TINY_TEXT_CLIP, pretrained=None, image_size=(128, 64)),
    data=TextDataConfig(dataset="synthetic_captions", root=None, batch_size=32, text_length=64),
    embed_dim=64,
    pretrain=dataclasses.replace(
        PAPER.pretrain,
        epochs=6,
        batch_size=32,
        warmup_epochs=0.6,  # 10 % of the steps, as the paper
        lr=1e-3,
        weight_decay=1e-4,
        temperature=0.07,
        learnable_temperature=True,
    ),
    # Fine-tuning at the paper's rates: faster ones undo what pre-training taught the tiny
    # model (see the pipeline's page).
    finetune=dataclasses.replace(PAPER.finetune, epochs=6, warmup_epochs=1),
)

PRESETS: dict[str, UniPTConfig] = {"paper": PAPER, "tiny": TINY}


def train(config: UniPTConfig, runtime: Runtime) -> dict[str, Any]:
    """Pre-train, fine-tune, evaluate, write the report; ``{"unipt": ..., "unipt_pretrained":
    ..., "initial": ...}`` (rank metrics; ``unipt_pretrained`` only when pre-training ran).

    Resumes from ``runtime.resume`` at whichever stage and epoch the checkpoint was written.
    """
    check_run(NAME, config, runtime)
    check_text_data(config)
    context = begin(runtime)
    device = context.device
    clip_model, tokenizer = build_text_clip(config.clip, config.data.text_length, device)
    data = build_text_data(config.clip, config.data, tokenizer)
    image_encoder = UniPTImageEncoder(clip_model, config.embed_dim)
    text_encoder = UniPTTextEncoder(clip_model, config.embed_dim, causal=config.causal_text)
    pretraining = UniPTPretrainingModel(
        image_encoder,
        text_encoder,
        special_ids=(tokenizer.sot_token_id, tokenizer.eot_token_id),
        mlm=config.pretrain.mlm_weight > 0,
        mask_probability=config.pretrain.mask_probability,
    )
    objective = PretrainingObjective(
        pretraining,
        UniPTPretrainingLoss(
            config.pretrain.mlm_weight,
            config.pretrain.temperature,
            config.pretrain.learnable_temperature,
        ),
    )
    finetuning = TextToImageModel(
        image_encoder, text_encoder, config.embed_dim, data.dataset.num_train_pids
    )
    model = nn.ModuleDict({"pretraining": objective, "finetuning": finetuning}).to(device)

    run = start_run(NAME, config, runtime, STAGES)
    describe_text_data(run, config.data.dataset, data)
    spec = text_model_spec(
        NAME,
        NAME,
        config,
        data.dataset.num_train_pids,
        embed_dim=config.embed_dim,
        causal_text=config.causal_text,
    )
    run.set_inference_model(finetuning, spec)
    evaluate = t2i_evaluation(finetuning, data, device, runtime.num_workers)
    results: dict[str, Any] = {INITIAL_RESULT: record_initial_evaluation(run, evaluate)}
    run.track("model", model)
    seed_everything(runtime.seed, rank=context.rank)  # per-rank sampling and augmentation

    if config.pretrain.epochs > 0 and not run.stage_completed(PRETRAIN_STAGE):
        run_pretrain_stage(
            run, objective, data, config, runtime=runtime, device=device, evaluate=evaluate
        )
        save_pretrained_clip(clip_model, runtime.output_path)
    pretrained = run.report.last_evaluation(PRETRAIN_STAGE)
    if pretrained:
        results[f"{NAME}_pretrained"] = pretrained
    results[NAME] = run_finetune_stage(
        run,
        finetuning,
        data,
        config.data,
        config.finetune,
        runtime=runtime,
        device=device,
        evaluate=evaluate,
    )
    run.finish(results)
    return results


class PretrainingObjective(nn.Module):
    """The pre-training model and its loss (with a learned temperature) in one module, so that
    one ``DistributedDataParallel`` averages the gradients of both.

    Args:
        model: :class:`~reidkit.models.UniPTPretrainingModel`.
        criterion: :class:`~reidkit.losses.UniPTPretrainingLoss`.
    """

    def __init__(self, model: UniPTPretrainingModel, criterion: UniPTPretrainingLoss) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, images: Tensor, token_ids: Tensor) -> ObjectiveOutput:
        """``L_pre`` of a batch of ``N`` images and their pseudo texts ``(N, L)``."""
        output = self.model(images, token_ids)
        return cast(
            ObjectiveOutput,
            self.criterion(
                output.image_embeddings,
                output.text_embeddings,
                output.mlm_logits,
                output.mlm_targets,
            ),
        )


def run_pretrain_stage(
    run: TrainingRun,
    objective: PretrainingObjective,
    data: TextData,
    config: UniPTConfig,
    *,
    runtime: Runtime,
    device: torch.device,
    evaluate: Callable[[], Any],
) -> dict[str, float]:
    """Stage ``"pretrain"``: ``L_con + β L_mlm`` on the pseudo-text images, one caption drawn
    per image and epoch; the metrics of its (zero-shot) evaluation."""
    stage = config.pretrain
    pretraining_data = read_pretraining_data(config.pseudo)
    dataset = ImageTextDataset(
        pretraining_data.records, data.train_transform, data.tokenize, captions="random"
    )
    loader = make_text_loader(dataset, stage.batch_size, "pretrain.batch_size", runtime, device)
    network = data_parallel(objective)

    def step(batch: Mapping[str, Any]) -> dict[str, Tensor]:
        objective.train()
        batch = move_to_device(batch, device)
        loss, terms = network(batch["images"], batch["tokens"])
        return {"loss": loss, **terms}

    return fit_pretraining(
        run, objective, loader, step, stage, runtime=runtime, device=device, evaluate=evaluate
    )


def epoch_fields(config: UniPTConfig) -> dict[str, str]:
    """Where each stage's number of epochs lives in the configuration."""
    return {PRETRAIN_STAGE: "pretrain.epochs", FINETUNE_STAGE: "finetune.epochs"}


RECIPE = Recipe(
    name=NAME,
    description="UniPT: pre-training on pseudo texts, then text-to-image fine-tuning",
    config_type=UniPTConfig,
    presets=PRESETS,
    train=train,
    epoch_fields=epoch_fields,
    weights_field="clip.pretrained",
    check_data=check_text_data,
    built_in_datasets=BUILT_IN_TEXT_DATASETS,
    default_dataset=TEXT_DEFAULT_DATASET,
)
