"""What the text-to-image recipes (UniPT, VAL-PAT) share: data, CLIP, fine-tuning, evaluation.

* configuration sections: :class:`TextDataConfig` (the text-to-image data set with its
  ground-truth captions), :class:`PseudoTextConfig` (the pre-training images with pseudo
  texts) and :class:`FinetuneStageConfig` (supervised text-to-image fine-tuning, UniPT
  sec. 4.2);
* :func:`build_text_clip`: the CLIP model and its tokenizer, checked against the text length;
* :func:`build_text_data`: the data set, tokenisation, transforms and retrieval protocol;
* :func:`read_pretraining_data`: the pre-training images, pseudo captions and attribute labels;
* :func:`run_finetune_stage`: UniPT's ``L_id + L_rk`` (eq. 7 with ``γ = 0``) on any pair of
  encoders, Adam with per-module learning rates;
* :func:`t2i_evaluation` and :func:`record_initial_evaluation`: retrieval metrics of the
  current model, and those of the untrained model in the report (``results["initial"]``).

CLIP's text tower has 77 positions; UniPT's BERT reads 100 tokens (sec. 5.2). A text length
above the tower's context fails at :func:`build_text_clip`; the captions longer than the text
length are cut by the tokenizer (the end-of-text token kept last), and their number is logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from reidkit import checks
from reidkit.clip import load_clip
from reidkit.clip.loading import CLIPModel
from reidkit.data import (
    ATTRIBUTE_LABELS,
    CaptionedImage,
    SyntheticCaptionedReID,
    TextReIDSplits,
    TextToImageProtocol,
    build_test_transforms,
    build_text_dataset,
    build_train_transforms,
)
from reidkit.data.text_loaders import ImageTextDataset, count_truncated, make_image_text_loader
from reidkit.distributed import (
    broadcast_object,
    data_parallel,
    get_world_size,
    is_main_process,
    raise_on_every_rank,
)
from reidkit.engine import (
    TrainingRun,
    WarmupCosineLR,
    WarmupLinearLR,
    atomic_torch_save,
    evaluation_metrics,
    module_parameter_groups,
    move_to_device,
)
from reidkit.engine.progress import LOGGER_NAME
from reidkit.eval import RankResult, evaluate_t2i_model
from reidkit.eval.chance import chance_rank_result
from reidkit.losses import UniPTFinetuningLoss
from reidkit.losses.ranking import NEGATIVE_RULES
from reidkit.models import TextToImageModel, VALPATModel
from reidkit.pseudotext import read_pseudo_texts
from reidkit.recipes.common import check_data_root, clip_model_spec, fit_stage
from reidkit.recipes.config import (
    TINY_CLIP,
    ClipConfig,
    Runtime,
    Section,
    check_warmup,
    non_negative_numbers,
    positive_integers,
    positive_numbers,
)

PRETRAIN_STAGE = "pretrain"
FINETUNE_STAGE = "finetune"
INITIAL_RESULT = "initial"
PRETRAINED_CLIP_FILE = "pretrained_clip.pt"
BUILT_IN_TEXT_DATASETS = ("synthetic_captions",)
"""The text-to-image data that need no folder (:class:`reidkit.data.SyntheticCaptionedReID`)."""

TINY_TEXT_CLIP: dict[str, Any] = {
    **TINY_CLIP,
    "text_cfg": {**TINY_CLIP["text_cfg"], "context_length": 64},
}
""":data:`~reidkit.recipes.TINY_CLIP` with 64 text positions: the captions of the synthetic
pedestrians take up to 47 tokens, more than the 16 of the prompt recipes' tiny CLIP."""


@dataclasses.dataclass(frozen=True)
class TextDataConfig(Section):
    """The text-to-image data set and its batches.

    Attributes:
        dataset: a name of :func:`reidkit.data.build_text_dataset` (``"synthetic_captions"``,
            ``"cuhk_pedes"``, ``"icfg_pedes"``, ``"rstpreid"``).
        root: its folder; ``None``: the built-in synthetic captioned pedestrians.
        batch_size: pairs per fine-tuning batch, over all processes.
        text_length: tokens per caption, start and end of text included (at most the
            tower's context length: 77 for CLIP).
    """

    dataset: str
    root: str | None
    batch_size: int
    text_length: int

    def check(self) -> None:
        if not self.dataset:
            self.fail("dataset", "must name a data set, got an empty string")
        positive_integers(self, "batch_size")
        # the start and the end of text, and at least one word between them
        self.require("text_length", checks.check_integer, 3)


@dataclasses.dataclass(frozen=True)
class PseudoTextConfig(Section):
    """The pre-training images and their pseudo texts.

    Attributes:
        captions: a JSON file written by :func:`reidkit.pseudotext.generate_pseudo_texts`
            (e.g. LUPerson images captioned by CLIP); ``None``: the pseudo captions of the
            built-in synthetic pedestrians (:meth:`reidkit.data.SyntheticCaptionedReID
            .pseudo_records`), whose attributes are corrupted like CLIP's errors.
        images: the folder the JSON's paths are relative to (with ``captions``).
        synthetic_seed: the seed of the synthetic pedestrians drawn for pre-training (another
            seed than the evaluation data's draws other people).
        synthetic_ids: their number of identities (the labels are not used).
        corruption_probability: the chance that a synthetic pseudo text gets an attribute
            wrong, in ``[0, 1]``.
    """

    captions: str | None
    images: str | None
    synthetic_seed: int
    synthetic_ids: int
    corruption_probability: float

    def check(self) -> None:
        if (self.captions is None) != (self.images is None):
            self.fail(
                "captions",
                "and images go together: give both (a JSON file and its image folder) or "
                f"neither, got captions={self.captions!r} and images={self.images!r}",
            )
        self.require("synthetic_seed", checks.check_integer, 0)
        positive_integers(self, "synthetic_ids")
        self.require("corruption_probability", checks.check_number, at_least=0, at_most=1)


@dataclasses.dataclass(frozen=True)
class FinetuneStageConfig(Section):
    """Supervised text-to-image fine-tuning (UniPT sec. 4.2): ``L_id + L_rk``, Adam.

    Attributes:
        epochs: epochs of the stage.
        lr: the learning rate of the visual encoder and of the heads.
        text_lr: the learning rate of the pre-trained text encoder.
        weight_decay: Adam's weight decay.
        warmup_epochs: epochs of linear warm-up (from 0.1 of the rates; fewer than
            ``epochs``), then a cosine to 0.
        margin: ``α`` of the ranking loss (eq. 5).
        negatives: ``"semi-hard"`` (eq. 5) or ``"hardest"``.
        label_smoothing: of the identification loss (eq. 4), in ``[0, 1)``.
        unified_weight: ``γ`` of eq. 7; must be 0, since LGUR's PGU module is not part of
            reidkit (see :mod:`reidkit.losses.unipt`).
    """

    epochs: int
    lr: float
    text_lr: float
    weight_decay: float
    warmup_epochs: int
    margin: float
    negatives: str
    label_smoothing: float
    unified_weight: float = 0.0

    def check(self) -> None:
        positive_integers(self, "epochs")
        positive_numbers(self, "lr", "text_lr", "margin")
        non_negative_numbers(self, "weight_decay")
        check_warmup(self, self.warmup_epochs, self.epochs)
        self.require("negatives", checks.check_choice, NEGATIVE_RULES)
        self.require("label_smoothing", checks.check_number, at_least=0, below=1)
        if self.unified_weight != 0:
            self.fail(
                "unified_weight",
                "(γ of UniPT eq. 7) must be 0: L_pgu needs LGUR's prototype-based granularity "
                f"unification, which reidkit does not have; got {self.unified_weight!r}",
            )


def check_text_data(config: Any) -> None:
    """Raise unless the text-to-image data set of ``config.data`` is built in or has its
    folder (:attr:`reidkit.recipes.Recipe.check_data` of UniPT and VAL-PAT).

    Raises:
        ConfigError: ``data.root`` is ``None`` for a data set read from a folder.
    """
    check_data_root(config.data, BUILT_IN_TEXT_DATASETS)


def text_model_spec(
    architecture: str,
    recipe: str,
    config: Any,
    num_classes: int,
    **arguments: Any,
) -> dict[str, Any]:
    """The ``model.json`` mapping of the fine-tuned :class:`~reidkit.models.TextToImageModel`
    of a UniPT or VAL-PAT run (``architecture``, see :func:`reidkit.load_model`); its
    ``arguments`` hold the text length and the encoders' other ``arguments``."""
    return clip_model_spec(
        architecture,
        recipe,
        config.clip,
        config.data,
        num_classes,
        text_length=config.data.text_length,
        **arguments,
    )


def check_pretraining_epochs(section: Section, warmup_epochs: float, epochs: int) -> None:
    """The fields ``epochs`` (>= 0; 0 skips the pre-training stage) and ``warmup_epochs``
    (>= 0, and fewer than ``epochs`` when the stage runs) of a pre-training stage."""
    section.require("epochs", checks.check_integer, 0)
    section.require("warmup_epochs", checks.check_number, at_least=0, finite=True)
    if epochs > 0 and warmup_epochs >= epochs:
        section.fail(
            "warmup_epochs",
            f"must be < epochs ({epochs}), got {warmup_epochs}: the warm-up would last the "
            "whole stage",
        )


def build_text_clip(
    clip: ClipConfig, text_length: int, device: torch.device
) -> tuple[CLIPModel, Any]:
    """The CLIP model of ``clip`` (trainable) on ``device`` and its tokenizer.

    Raises:
        ValueError: ``text_length`` exceeds the text tower's positions.
    """
    clip_model, tokenizer = load_clip(
        clip.name, clip.pretrained, image_size=clip.image_size, stride=clip.stride, device=device
    )
    positions = int(clip_model.positional_embedding.shape[0])
    if text_length > positions:
        raise ValueError(
            f"text_length must be at most the {positions} positions of CLIP's text tower, got "
            f"{text_length} (UniPT's BERT reads 100 tokens; CLIP's towers read 77: longer "
            "captions are cut)"
        )
    return clip_model, tokenizer


@dataclasses.dataclass
class TextData:
    """A text-to-image data set with what training and evaluation need.

    Attributes:
        dataset: the splits.
        tokenizer: the CLIP tokenizer.
        tokenize: texts to ``(T, text_length)`` token ids.
        train_transform: random horizontal flip (UniPT sec. 5.2), resize and normalisation.
        test_transform: resize and normalisation.
        protocol: the test split's retrieval protocol.
    """

    dataset: TextReIDSplits
    tokenizer: Any
    tokenize: Callable[[Any], Tensor]
    train_transform: Callable[[Any], Tensor]
    test_transform: Callable[[Any], Tensor]
    protocol: TextToImageProtocol


def build_text_data(clip: ClipConfig, data: TextDataConfig, tokenizer: Any) -> TextData:
    """The data set of ``data`` with tokenisation at ``data.text_length`` and the transforms
    at ``clip``'s image size and normalisation; logs how many captions are cut."""
    dataset = build_text_dataset(data.dataset, data.root)
    normalization: dict[str, Any] = {"mean": clip.pixel_mean, "std": clip.pixel_std}
    train_transform = build_train_transforms(
        clip.image_size, padding=0, erasing_probability=0.0, **normalization
    )
    test_transform = build_test_transforms(clip.image_size, **normalization)
    captions = [caption for record in dataset.train for caption in record.captions]
    if hasattr(tokenizer, "encode"):
        cut = count_truncated(captions, tokenizer, data.text_length)
        logging.getLogger(LOGGER_NAME).info(
            "%d of %d training captions exceed %d tokens and are cut",
            cut,
            len(captions),
            data.text_length,
        )
    return TextData(
        dataset=dataset,
        tokenizer=tokenizer,
        tokenize=partial(tokenizer, context_length=data.text_length),
        train_transform=train_transform,
        test_transform=test_transform,
        protocol=dataset.protocol("test"),
    )


@dataclasses.dataclass
class PretrainingData:
    """Images with pseudo captions and attribute labels (mined, hence noisy).

    Attributes:
        records: the images and their pseudo captions (pids are not identities).
        attribute_labels: ``(N, M)`` 0/1 labels of the mined attributes.
        attribute_names: the ``M`` columns, ``"attribute=value"``.
    """

    records: list[CaptionedImage]
    attribute_labels: np.ndarray
    attribute_names: list[str]


SYNTHETIC_ATTRIBUTE_NAMES = [f"{name}={value}" for name, value in ATTRIBUTE_LABELS]
"""The attribute columns of the synthetic pedestrians' labels."""


def read_pretraining_data(pseudo: PseudoTextConfig) -> PretrainingData:
    """The pre-training images of ``pseudo``: a pseudo-text JSON file or synthetic ones."""
    if pseudo.captions is not None and pseudo.images is not None:
        records, labels, names = read_pseudo_texts(pseudo.captions, pseudo.images)
        return PretrainingData(records, labels, names)
    synthetic = SyntheticCaptionedReID(
        seed=pseudo.synthetic_seed,
        num_train_ids=pseudo.synthetic_ids,
        corruption_probability=pseudo.corruption_probability,
    )
    return PretrainingData(
        synthetic.pseudo_records("train"),
        synthetic.attribute_labels("train", pseudo=True),
        SYNTHETIC_ATTRIBUTE_NAMES,
    )


def split_batch(batch_size: int, name: str) -> int:
    """This process's share of a batch of ``batch_size`` over every process."""
    share, remainder = divmod(batch_size, get_world_size())
    if remainder or share == 0:
        raise ValueError(
            f"{name} ({batch_size}) must be a multiple of the {get_world_size()} processes"
        )
    return share


def describe_text_data(run: TrainingRun, name: str, data: TextData) -> None:
    """Log and record the splits of ``data`` (identities, images and captions) and the chance
    level of its text-to-image evaluation: every caption ranks the test gallery at random
    (:func:`reidkit.eval.chance_rank_result` without cameras: ``m`` matching images among
    ``n``)."""
    splits: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        records: list[CaptionedImage] = getattr(data.dataset, split)
        if records:
            splits[split] = {
                "identities": len({record.pid for record in records}),
                "images": len(records),
                "captions": sum(len(record.captions) for record in records),
            }
    chance = chance_rank_result(
        [query.pid for query in data.protocol.queries],
        [pid for _, pid, _ in data.protocol.gallery],
    )
    run.describe_data(name, splits, chance)


def t2i_evaluation(
    model: TextToImageModel | VALPATModel,
    data: TextData,
    device: torch.device,
    num_workers: int = 0,
) -> Callable[[], RankResult]:
    """A function that evaluates the test split's text-to-image retrieval of ``model`` (with
    ``encode_image`` and ``encode_text``); rank 0 only, no collectives."""

    def evaluate() -> RankResult:
        model.eval()
        return evaluate_t2i_model(
            model.encode_image,
            model.encode_text,
            data.protocol,
            data.test_transform,
            data.tokenize,
            device,
            num_workers=num_workers,
        )

    return evaluate


def record_initial_evaluation(
    run: TrainingRun, evaluate: Callable[[], Any], name: str = INITIAL_RESULT
) -> dict[str, float]:
    """Evaluate the model before any training (rank 0) into ``results[name]``, unless a
    resumed report already holds it; call it before :meth:`TrainingRun.track` restores the
    trained weights."""
    results = run.report.data["results"]
    if name not in results:
        metrics: dict[str, float] = {}
        with raise_on_every_rank():  # an error of rank 0's evaluation ends every rank
            if is_main_process():
                metrics = evaluation_metrics(evaluate())
        run.report.set_result(name, broadcast_object(metrics))
        run.logger.info("%s (untrained) evaluation: %s", name, results[name])
    return dict(results[name])


def save_pretrained_clip(clip_model: nn.Module, output_dir: Path) -> Path:
    """Write the CLIP model's weights to ``output_dir/pretrained_clip.pt`` (rank 0), a file
    :func:`reidkit.load_clip` reads as ``pretrained`` for a model of the same config."""
    path = output_dir / PRETRAINED_CLIP_FILE
    if is_main_process():
        state = {key: value.detach().cpu() for key, value in clip_model.state_dict().items()}
        atomic_torch_save(state, path)
    return path


def make_text_loader(
    dataset: ImageTextDataset,
    batch_size: int,
    field: str,
    runtime: Runtime,
    device: torch.device,
) -> DataLoader[dict[str, Any]]:
    """This process's shuffling loader of ``dataset``: the global batch ``batch_size`` (the
    configuration's ``field``, named by the error when it does not split) over the processes."""
    return make_image_text_loader(
        dataset,
        split_batch(batch_size, field),
        seed=runtime.seed,
        num_workers=runtime.num_workers,
        pin_memory=device.type == "cuda",
    )


def fit_pretraining(
    run: TrainingRun,
    objective: nn.Module,
    loader: DataLoader[dict[str, Any]],
    step: Callable[[Mapping[str, Any]], dict[str, Tensor]],
    stage: Any,
    *,
    runtime: Runtime,
    device: torch.device,
    evaluate: Callable[[], Any],
    lr_factor: float | None = None,
) -> dict[str, float]:
    """Stage ``"pretrain"`` of UniPT and VAL-PAT: AdamW on ``objective``'s trainable
    parameters at ``stage.lr`` (``stage.weight_decay``), a linear warm-up over
    ``stage.warmup_epochs`` of ``stage.epochs`` and a linear decay, per step
    (:class:`~reidkit.engine.WarmupLinearLR`: from 1 % of the rate to 0, or from and to
    ``lr_factor`` times it); the metrics of ``evaluate``."""
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=stage.weight_decay)
    total, warmup = WarmupLinearLR.steps_for(
        stage.epochs, len(loader), stage.warmup_epochs / stage.epochs
    )
    if lr_factor is None:
        scheduler = WarmupLinearLR(optimizer, total, warmup)
    else:
        scheduler = WarmupLinearLR(optimizer, total, warmup, lr_factor, final_factor=lr_factor)
    return fit_stage(
        run,
        PRETRAIN_STAGE,
        [optimizer],
        [scheduler],
        loader,
        step,
        epochs=stage.epochs,
        runtime=runtime,
        device=device,
        evaluate=evaluate,
    )


def run_finetune_stage(
    run: TrainingRun,
    model: TextToImageModel,
    data: TextData,
    data_config: TextDataConfig,
    stage: FinetuneStageConfig,
    *,
    runtime: Runtime,
    device: torch.device,
    evaluate: Callable[[], Any],
) -> dict[str, float]:
    """UniPT's supervised fine-tuning (``"finetune"``): ``L_id + L_rk`` on every (image,
    ground-truth caption) pair, Adam at ``text_lr`` for ``model.text_encoder`` and ``lr`` for
    the rest, linear warm-up and cosine; the metrics of its evaluation."""
    criterion = UniPTFinetuningLoss(stage.margin, stage.negatives, 0.0, stage.label_smoothing)
    dataset = ImageTextDataset(data.dataset.train, data.train_transform, data.tokenize)
    loader = make_text_loader(dataset, data_config.batch_size, "data.batch_size", runtime, device)
    network = data_parallel(model)

    def step(batch: Mapping[str, Any]) -> dict[str, Tensor]:
        model.train()
        batch = move_to_device(batch, device)
        output = network(batch["images"], batch["tokens"])
        loss, terms = criterion(
            output.image_embeddings,
            output.text_embeddings,
            output.image_logits,
            output.text_logits,
            batch["pid"],
        )
        return {"loss": loss, **terms}

    groups = module_parameter_groups(model, {"text_encoder": stage.text_lr}, default_lr=stage.lr)
    optimizer = torch.optim.Adam(groups, weight_decay=stage.weight_decay)
    scheduler = WarmupCosineLR(
        optimizer,
        stage.epochs,
        warmup_epochs=stage.warmup_epochs,
        warmup_start_factor=0.1,
    )
    return fit_stage(
        run,
        FINETUNE_STAGE,
        [optimizer],
        [scheduler],
        loader,
        step,
        epochs=stage.epochs,
        runtime=runtime,
        device=device,
        evaluate=evaluate,
    )
