"""VAL-PAT (Bao et al., 2023): pedestrian pre-training with vision, attribute and language
supervision, then transfer, as a recipe.

Stage ``"pretrain"`` (sec. 3): images with pseudo texts and mined (noisy) attribute labels
train :class:`reidkit.models.VALPATModel` with ``L_I + β (L_I2T + L_T2I) + γ ((1 - α) L_A^H +
α L_A^S)`` (eq. 1-5, :class:`reidkit.losses.VALPATLoss`): MoCo-style self-supervised contrast
of two strongly augmented views against a queue, image-text contrast against the other
modality's momentum keys and queue, and the weighted multi-attribute loss with hard labels and
with the momentum classifier's soft labels of the paired text (image) for the image (text).
AdamW, a warm-up from ``1e-6`` to ``1e-3`` and a linear decay back (per step).

Transfer (sec. 4.2), evaluated after pre-training:

* person ReID: the query encoder's joint embedding of the ReID data set's query and gallery
  images, ranked by cosine distance (:func:`reidkit.evaluate_model`, the protocol of the other
  ReID recipes), without ReID fine-tuning; ``pretrained_clip.pt`` holds the pre-trained CLIP
  weights, which :func:`reidkit.load_clip` reads as ``pretrained`` to fine-tune a ReID model
  of the same CLIP config with the other recipes;
* pedestrian attribute recognition: the attribute classifier on the test images against their
  true labels, mA, accuracy, precision, recall, F1 (:func:`reidkit.eval.evaluate_attributes`),
  where the evaluation data has attribute labels (the synthetic pedestrians);
* text-to-image retrieval, zero-shot, then after stage ``"finetune"``: the same supervised
  fine-tuning as UniPT's (``L_id + L_rk``; VAL-PAT fine-tunes NAFS, which reidkit does not have).

The report's results hold ``valpat`` (fine-tuned retrieval), ``valpat_pretrained``,
``valpat_reid``, ``valpat_attributes`` (after pre-training), and ``initial``, ``initial_reid``,
``initial_attributes`` (the untrained model, same seed). ``--epochs pretrain=0`` is the "no
pre-training" baseline.

Example::

    from reidkit.recipes import Runtime, valpat

    results = valpat.train(valpat.PRESETS["tiny"], Runtime(output_dir="runs/valpat"))
    results["valpat_reid"]["mAP"], results["valpat_attributes"]["mA"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.data import (
    SYNTHETIC_DATASETS,
    SyntheticCaptionedReID,
    build_contrastive_transforms,
    build_dataset,
    make_test_loader,
)
from reidkit.data.text_loaders import ImageTextDataset
from reidkit.distributed import data_parallel
from reidkit.engine import (
    TrainingRun,
    evaluation_metrics,
    move_to_device,
    seed_everything,
)
from reidkit.eval import evaluate_attributes, evaluate_model
from reidkit.losses import ObjectiveOutput, VALPATLoss, attribute_imbalance_weights
from reidkit.models import TextToImageModel, VALPATModel
from reidkit.recipes.common import (
    TEXT_DEFAULT_DATASET,
    Recipe,
    begin,
    check_run,
    start_run,
)
from reidkit.recipes.config import (
    ClipConfig,
    ConfigError,
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
    SYNTHETIC_ATTRIBUTE_NAMES,
    TINY_TEXT_CLIP,
    FinetuneStageConfig,
    PretrainingData,
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

NAME = "valpat"
STAGES = (PRETRAIN_STAGE, FINETUNE_STAGE)
REID_PREFIX = "reid_"
ATTRIBUTE_METRICS = ("mA", "accuracy", "precision", "recall", "F1")
RANK_METRICS = ("R1", "R5", "R10", "mAP", "mINP")


@dataclasses.dataclass(frozen=True)
class ReIDTransferConfig(Section):
    """The ReID data set the pre-trained image encoder is evaluated on.

    Attributes:
        dataset: a name of :func:`reidkit.data.build_dataset` (``"synthetic"``,
            ``"dukemtmcreid"``, ``"msmt17"``, ...); ``None``: no ReID evaluation.
        root: its folder; ``None``: the built-in synthetic data.
    """

    dataset: str | None
    root: str | None

    def check(self) -> None:
        if self.dataset == "":
            self.fail("dataset", "must name a data set or be null, got an empty string")
        if self.dataset is None and self.root is not None:
            self.fail("root", f"needs a dataset to read, got {self.root!r} without one")


@dataclasses.dataclass(frozen=True)
class VALPATStageConfig(Section):
    """VAL-PAT's pre-training (sec. 4.1).

    Attributes:
        epochs: epochs over the pseudo-text images (0: no pre-training).
        batch_size: images per batch, over all processes.
        lr: the peak learning rate (``1e-3``).
        start_lr: the rate of the first step and of the last (``1e-6``; at most ``lr``).
        warmup_epochs: epochs of linear warm-up to ``lr`` (7), per step (a fraction of an
            epoch is fine; fewer than ``epochs``), then linear decay.
        weight_decay: AdamW's (0.1).
        queue_size: ``K`` (65536).
        momentum: ``m`` of the key encoders (MoCo's 0.999), in ``[0, 1]``.
        ssl_dim: width of the self-supervised features (MoCo v2: 128).
        ssl_temperature: ``τ`` (0.07).
        cross_modal_temperature: the start of the learned ``τ'`` (0.07).
        soft_weight: ``α`` (0.2), in ``[0, 1]``.
        cross_modal_weight: ``β`` (0.5).
        attribute_weight: ``γ`` (0.01).
        imbalance_weights: weigh the attributes by their frequency (eq. 3's ``w_j``).
    """

    epochs: int
    batch_size: int
    lr: float
    start_lr: float
    warmup_epochs: float
    weight_decay: float
    queue_size: int
    momentum: float
    ssl_dim: int
    ssl_temperature: float
    cross_modal_temperature: float
    soft_weight: float
    cross_modal_weight: float
    attribute_weight: float
    imbalance_weights: bool

    def check(self) -> None:
        check_pretraining_epochs(self, self.warmup_epochs, self.epochs)
        positive_integers(self, "batch_size", "queue_size", "ssl_dim")
        positive_numbers(self, "lr", "ssl_temperature", "cross_modal_temperature")
        self.require("start_lr", checks.check_number, above=0, at_most=self.lr)
        non_negative_numbers(self, "weight_decay", "cross_modal_weight", "attribute_weight")
        self.require("momentum", checks.check_number, at_least=0, at_most=1)
        self.require("soft_weight", checks.check_number, at_least=0, at_most=1)


@dataclasses.dataclass(frozen=True)
class VALPATConfig(Section):
    """The settings of a VAL-PAT run.

    Attributes:
        clip: the CLIP model whose towers are the encoders, and its input.
        data: the text-to-image data set (fine-tuning, retrieval and attribute evaluation).
        pseudo: the pre-training images with pseudo texts and mined attributes.
        reid: the ReID data set of the transfer evaluation.
        pretrain: stage 1.
        finetune: stage 2 (text-to-image).
    """

    clip: ClipConfig
    data: TextDataConfig
    pseudo: PseudoTextConfig
    reid: ReIDTransferConfig
    pretrain: VALPATStageConfig
    finetune: FinetuneStageConfig


PAPER = VALPATConfig(
    # Sec. 4.1, with a CLIP ViT-B/16 (both towers) trained from random weights as the paper
    # trains its ResNet-50 and CLIP-like text transformer; 256x128 person images.
    clip=ClipConfig(name="ViT-B-16", pretrained=None, image_size=(256, 128)),
    data=TextDataConfig(dataset="cuhk_pedes", root=None, batch_size=64, text_length=77),
    pseudo=PseudoTextConfig(
        captions=None, images=None, synthetic_seed=1, synthetic_ids=64, corruption_probability=0.2
    ),
    reid=ReIDTransferConfig(dataset="dukemtmcreid", root=None),
    pretrain=VALPATStageConfig(
        epochs=140,
        batch_size=2048,
        lr=1e-3,
        start_lr=1e-6,
        warmup_epochs=7,
        weight_decay=0.1,
        queue_size=65536,
        momentum=0.999,
        ssl_dim=128,
        ssl_temperature=0.07,
        cross_modal_temperature=0.07,
        soft_weight=0.2,
        cross_modal_weight=0.5,
        attribute_weight=0.01,
        imbalance_weights=True,
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
    clip=ClipConfig(name=TINY_TEXT_CLIP, pretrained=None, image_size=(128, 64)),
    data=TextDataConfig(dataset="synthetic_captions", root=None, batch_size=32, text_length=64),
    reid=ReIDTransferConfig(dataset="synthetic", root=None),
    pretrain=dataclasses.replace(
        PAPER.pretrain,
        epochs=6,
        batch_size=32,
        warmup_epochs=0.3,  # 5 % of the steps, as the paper's 7 of 140 epochs
        weight_decay=1e-4,
        queue_size=256,
        momentum=0.99,
    ),
    # Fine-tuning at the paper's rates: faster ones undo what pre-training taught the tiny
    # model (see the pipeline's page).
    finetune=dataclasses.replace(PAPER.finetune, epochs=6, warmup_epochs=1),
)

PRESETS: dict[str, VALPATConfig] = {"paper": PAPER, "tiny": TINY}


class PretrainingObjective(nn.Module):
    """VAL-PAT's model and its loss (with a learned ``τ'``) in one module, so that one
    ``DistributedDataParallel`` averages the gradients of both."""

    def __init__(self, model: VALPATModel, criterion: VALPATLoss) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: Mapping[str, Any]) -> ObjectiveOutput:
        """``L`` of eq. 5 for a batch of :func:`make_image_text_loader` with three views
        (two strong, one weak) and attribute labels."""
        first, second, weak = batch["images"]
        features = self.model((first, second), weak, batch["tokens"], batch["attributes"])
        return cast(ObjectiveOutput, self.criterion(features))


def check_data(config: VALPATConfig) -> None:
    """Raise unless the text-to-image data set and the ReID data set of the transfer are built
    in or have their folders (checked before anything is built).

    Raises:
        ConfigError: ``data.root`` or ``reid.root`` is needed and is ``None``.
    """
    check_text_data(config)
    reid = config.reid
    if reid.dataset is not None and reid.root is None and reid.dataset not in SYNTHETIC_DATASETS:
        raise ConfigError(
            "reid.root",
            f"is needed: the ReID data set {reid.dataset!r} is read from its folder; give it "
            f"(reid.root, --reid-root of the example), evaluate the transfer on the built-in "
            f"data (reid.dataset {SYNTHETIC_DATASETS[0]}), or on none (reid.dataset null)",
        )


def build_criterion(stage: VALPATStageConfig, pretraining: PretrainingData) -> VALPATLoss:
    """:class:`~reidkit.losses.VALPATLoss` with the stage's weights and, if asked, the
    attributes' imbalance weights from the pre-training labels."""
    weights: tuple[Tensor | None, Tensor | None] = (None, None)
    if stage.imbalance_weights:
        weights = attribute_imbalance_weights(torch.as_tensor(pretraining.attribute_labels))
    return VALPATLoss(
        soft_weight=stage.soft_weight,
        cross_modal_weight=stage.cross_modal_weight,
        attribute_weight=stage.attribute_weight,
        ssl_temperature=stage.ssl_temperature,
        cross_modal_temperature=stage.cross_modal_temperature,
        positive_weights=weights[0],
        negative_weights=weights[1],
    )


def transfer_evaluation(
    model: VALPATModel,
    data: TextData,
    config: VALPATConfig,
    attribute_names: list[str],
    device: torch.device,
    num_workers: int,
) -> Callable[[], dict[str, float]]:
    """A function that evaluates ``model`` on the three transfer tasks (rank 0 only):
    text-to-image metrics (``R1``, ``mAP``, ...), ReID metrics (``reid_R1``, ...) and
    attribute metrics (``mA``, ``accuracy``, ...) where the data allow them."""
    t2i = t2i_evaluation(model, data, device, num_workers)
    reid_loader, num_query = None, 0
    if config.reid.dataset is not None:
        reid = build_dataset(config.reid.dataset, config.reid.root)
        reid_loader = make_test_loader(
            reid.query, reid.gallery, data.test_transform, num_workers=num_workers
        )
        num_query = len(reid.query)
    attribute_labels = None
    if isinstance(data.dataset, SyntheticCaptionedReID) and (
        attribute_names == SYNTHETIC_ATTRIBUTE_NAMES
    ):
        attribute_labels = data.dataset.attribute_labels("test")
    attribute_images = [(path, pid, camid) for path, pid, camid, _ in data.dataset.test]

    def evaluate() -> dict[str, float]:
        metrics = evaluation_metrics(t2i())
        if reid_loader is not None:
            reid_result = evaluate_model(model.encode_image, reid_loader, num_query, device=device)
            reid_metrics = evaluation_metrics(reid_result)
            metrics.update({REID_PREFIX + name: value for name, value in reid_metrics.items()})
        if attribute_labels is not None:
            loader = make_test_loader(attribute_images, [], data.test_transform)
            model.eval()
            with torch.no_grad():
                scores = torch.cat(
                    [
                        torch.sigmoid(model.attribute_logits(images.to(device))).cpu()
                        for images, *_ in loader
                    ]
                )
            metrics.update(evaluate_attributes(scores, attribute_labels).as_dict())
        return metrics

    return evaluate


def split_results(
    metrics: Mapping[str, float], t2i: str, reid: str, attributes: str
) -> dict[str, dict[str, float]]:
    """The flat metrics of :func:`transfer_evaluation` as three results: ``{t2i: R1, ...,
    reid: R1, ..., attributes: mA, ...}``, those the evaluation measured."""
    results = {
        t2i: {name: value for name, value in metrics.items() if name in RANK_METRICS},
        reid: {
            name[len(REID_PREFIX) :]: value
            for name, value in metrics.items()
            if name.startswith(REID_PREFIX)
        },
        attributes: {name: value for name, value in metrics.items() if name in ATTRIBUTE_METRICS},
    }
    return {name: value for name, value in results.items() if value}


def train(config: VALPATConfig, runtime: Runtime) -> dict[str, Any]:
    """Pre-train, evaluate the transfer, fine-tune for retrieval, write the report; the
    results described in the module docstring.

    Resumes from ``runtime.resume`` at whichever stage and epoch the checkpoint was written.
    """
    check_run(NAME, config, runtime)
    check_data(config)
    context = begin(runtime)
    device = context.device
    clip_model, tokenizer = build_text_clip(config.clip, config.data.text_length, device)
    data = build_text_data(config.clip, config.data, tokenizer)
    pretraining = read_pretraining_data(config.pseudo)
    stage = config.pretrain
    valpat = VALPATModel(
        clip_model,
        num_attributes=len(pretraining.attribute_names),
        queue_size=stage.queue_size,
        momentum=stage.momentum,
        ssl_dim=stage.ssl_dim,
    )
    objective = PretrainingObjective(valpat, build_criterion(stage, pretraining))
    finetuning = TextToImageModel(
        valpat.image_encoder,
        valpat.text_encoder,
        clip_model.visual.output_dim,
        data.dataset.num_train_pids,
    )
    model = nn.ModuleDict({"pretraining": objective, "finetuning": finetuning}).to(device)

    run = start_run(NAME, config, runtime, STAGES)
    describe_text_data(run, config.data.dataset, data)
    spec = text_model_spec(NAME, NAME, config, data.dataset.num_train_pids, ssl_dim=stage.ssl_dim)
    run.set_inference_model(finetuning, spec)
    evaluate = transfer_evaluation(
        valpat, data, config, pretraining.attribute_names, device, runtime.num_workers
    )
    initial = record_initial_evaluation(run, evaluate)
    results: dict[str, Any] = split_results(
        initial, INITIAL_RESULT, f"{INITIAL_RESULT}_reid", f"{INITIAL_RESULT}_attributes"
    )
    run.track("model", model)
    seed_everything(runtime.seed, rank=context.rank)  # per-rank sampling and augmentation

    if stage.epochs > 0 and not run.stage_completed(PRETRAIN_STAGE):
        run_pretrain_stage(
            run,
            objective,
            pretraining,
            data,
            config,
            runtime=runtime,
            device=device,
            evaluate=evaluate,
        )
        save_pretrained_clip(clip_model, runtime.output_path)
    pretrained = run.report.last_evaluation(PRETRAIN_STAGE)
    results.update(
        split_results(pretrained, f"{NAME}_pretrained", f"{NAME}_reid", f"{NAME}_attributes")
    )
    valpat.image_encoder.ssl_head.requires_grad_(False)  # unused by text-to-image fine-tuning
    results[NAME] = run_finetune_stage(
        run,
        finetuning,
        data,
        config.data,
        config.finetune,
        runtime=runtime,
        device=device,
        evaluate=t2i_evaluation(finetuning, data, device, runtime.num_workers),
    )
    run.finish(results)
    return results


def run_pretrain_stage(
    run: TrainingRun,
    objective: PretrainingObjective,
    pretraining: PretrainingData,
    data: TextData,
    config: VALPATConfig,
    *,
    runtime: Runtime,
    device: torch.device,
    evaluate: Callable[[], Any],
) -> dict[str, float]:
    """Stage ``"pretrain"``: eq. 5 on the pseudo-text images (two strong views, a flipped
    view, one caption drawn per image and epoch, the mined attributes); the metrics of the
    transfer evaluation."""
    stage = config.pretrain
    strong = build_contrastive_transforms(
        config.clip.image_size, mean=config.clip.pixel_mean, std=config.clip.pixel_std
    )
    dataset = ImageTextDataset(
        pretraining.records,
        (strong, strong, data.train_transform),
        data.tokenize,
        captions="random",
        attribute_labels=pretraining.attribute_labels,
    )
    loader = make_text_loader(dataset, stage.batch_size, "pretrain.batch_size", runtime, device)
    network = data_parallel(objective)

    def step(batch: Mapping[str, Any]) -> dict[str, Tensor]:
        objective.train()
        loss, terms = network(move_to_device(batch, device))
        return {"loss": loss, **terms}

    return fit_pretraining(
        run,
        objective,
        loader,
        step,
        stage,
        runtime=runtime,
        device=device,
        evaluate=evaluate,
        lr_factor=stage.start_lr / stage.lr,  # sec. 4.1: 1e-6 -> 1e-3 -> 1e-6
    )


def epoch_fields(config: VALPATConfig) -> dict[str, str]:
    """Where each stage's number of epochs lives in the configuration."""
    return {PRETRAIN_STAGE: "pretrain.epochs", FINETUNE_STAGE: "finetune.epochs"}


RECIPE = Recipe(
    name=NAME,
    description="VAL-PAT: vision, attribute and language pre-training, then transfer",
    config_type=VALPATConfig,
    presets=PRESETS,
    train=train,
    epoch_fields=epoch_fields,
    weights_field="clip.pretrained",
    check_data=check_data,
    built_in_datasets=BUILT_IN_TEXT_DATASETS,
    default_dataset=TEXT_DEFAULT_DATASET,
)
