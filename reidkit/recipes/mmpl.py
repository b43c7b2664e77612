"""MMPL (multi-granularity multi-modal prompt learning): the two-stage pipeline as a recipe.

Stage 1 (``"prompts"``, hierarchical prompt learning, sec. 3.2): the frozen image encoder's
patch map is cut into ``M_c`` patches per level (:class:`reidkit.HierarchicalPatchPartition`);
per level an :class:`reidkit.InformationSelectorAgent` keeps ``M`` of them (its own Adam,
active for the first ``agent.epochs`` epochs), and the ``K`` levels of ID-specific prompts
learn from the contrastive losses and the patch-to-token OT loss
(:class:`reidkit.PatchToTokenAlignment`), combined by eq. 20. Stage 2 (``"image_encoder"``,
collaborative prompt learning, sec. 3.3): the image encoder, with ``K`` visual prompts appended
to its tokens (:class:`reidkit.CLIPReIDModel` with ``num_visual_prompts=K``), learns from
:class:`reidkit.losses.CLIPReIDLoss`: ID, triplet, the image-to-text cross-entropy against the
``K`` levels of text features and the transformation loss (eq. 24).

An MMPL configuration shares CLIP-ReID's sections (CLIP, data, prompt template, both stages'
schedules, the stage-2 weights), so :func:`baseline_config` gives the CLIP-ReID run it is
compared with; with ``compare_baseline`` :func:`train` trains that run first, in
``<output_dir>/clip_reid``.

Example::

    from reidkit.recipes import Runtime, compare_reports, mmpl

    config = mmpl.without_agent(mmpl.PRESETS["tiny"])      # table 3's attention selection
    mmpl.train(config, Runtime(output_dir="runs/mmpl_no_agent"))
    print(compare_reports(["runs/mmpl_no_agent/clip_reid", "runs/mmpl_no_agent"]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from reidkit import checks
from reidkit.clip import CLIPTextEncoder
from reidkit.data import make_feature_loader
from reidkit.distributed import data_parallel
from reidkit.engine import seed_everything
from reidkit.losses import TransformationLoss
from reidkit.losses.multi_granularity import LEVEL_REDUCTIONS
from reidkit.losses.transformation import FORMS as TRANSFORMATION_FORMS
from reidkit.models import CLIPReIDModel
from reidkit.ot import SinkhornOptions
from reidkit.ot.options import STOP_RULES
from reidkit.prompts import MultiGranularityPromptLearner
from reidkit.recipes import clip_reid
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
    ClipConfig,
    CLIPReIDLossConfig,
    DataConfig,
    ImageStageConfig,
    PromptConfig,
    PromptStageConfig,
    Runtime,
    Section,
    non_negative_numbers,
    positive_integers,
    positive_numbers,
)
from reidkit.selection import (
    HierarchicalPatchPartition,
    HierarchicalPromptLearning,
    InformationSelectorAgent,
    PatchToTokenAlignment,
    stage1_diagnostics,
)
from reidkit.selection.hierarchical import TEXT_GRADIENTS

NAME = "mmpl"
STAGES = ("prompts", "image_encoder")
BASELINE_FOLDER = "clip_reid"
DIAGNOSTICS_RESULT = "stage1_diagnostics"
"""The key of :func:`reidkit.selection.stage1_diagnostics`'s values in the report's results."""


@dataclasses.dataclass(frozen=True)
class LevelsConfig(Section):
    """The ``K`` granularity levels, one value per level in each tuple.

    Attributes:
        n_ctx: ``N_k``, learnable tokens of the level-``k`` prompts.
        patch_counts: ``M_c^k``, candidate patches of level ``k``.
        selected: ``M^k``, patches kept at level ``k``.
    """

    n_ctx: tuple[int, ...]
    patch_counts: tuple[int, ...]
    selected: tuple[int, ...]

    def check(self) -> None:
        lengths = {len(self.n_ctx), len(self.patch_counts), len(self.selected)}
        if len(lengths) != 1 or not self.n_ctx:
            self.fail(
                "n_ctx",
                "must hold one value per level, as patch_counts and selected do; got "
                f"n_ctx={self.n_ctx}, patch_counts={self.patch_counts}, selected={self.selected}",
            )
        for name in ("n_ctx", "patch_counts", "selected"):
            if min(getattr(self, name)) < 1:
                self.fail(name, f"must hold integers >= 1, got {getattr(self, name)}")
        if any(kept > count for kept, count in zip(self.selected, self.patch_counts)):
            self.fail(
                "selected",
                f"{self.selected} must not exceed patch_counts {self.patch_counts} at any level",
            )

    @property
    def count(self) -> int:
        """``K``."""
        return len(self.n_ctx)


@dataclasses.dataclass(frozen=True)
class AgentConfig(Section):
    """The information selector agents (eq. 7-12); they learn with their own Adam.

    Attributes:
        enabled: select patches with the agents; ``False``: by the class token's attention in
            the last block with alignment, no selection without it (table 4's ISA).
        epochs: the agents learn for the first this many epochs of stage 1, then stay fixed.
        lr: their Adam's learning rate.
        hidden: width of the Bi-LSTM.
        episodes: ``Z`` sampled selections per image (eq. 11).
        budget_weight: ``gamma`` of the budget penalty (eq. 12).
        reads_scores: the policy reads the whole state ``(s^f, s^e)`` instead of ``s^f`` alone
            (eq. 7); see :class:`reidkit.InformationSelectorAgent`.
    """

    enabled: bool
    epochs: int
    lr: float
    hidden: int
    episodes: int
    budget_weight: float
    reads_scores: bool = False

    def check(self) -> None:
        self.require("epochs", checks.check_integer, 0)
        positive_numbers(self, "lr")
        positive_integers(self, "hidden", "episodes")
        non_negative_numbers(self, "budget_weight")


@dataclasses.dataclass(frozen=True)
class AlignmentConfig(Section):
    """The patch-to-token alignment by optimal transport (eq. 13-19).

    Attributes:
        enabled: ``False``: no patch-to-token OT (table 4's PTA); with the agents their
            selection enters the contrastive losses instead (see
            :class:`reidkit.HierarchicalPromptLearning`), without them the prompts learn from
            the contrastive losses of the global feature alone.
        temperature: ``tau`` of eq. 18 (the paper gives no value; 0.07 is CLIP's initial one).
        epsilon: entropic regularisation ``lambda`` of the Sinkhorn iterations.
        max_iter: at most this many iterations.
        tol: stop when the stop rule's error is below it.
        stop_rule: ``"marginal"`` or ``"update"`` (see :func:`reidkit.sinkhorn`).
    """

    enabled: bool
    temperature: float
    epsilon: float
    max_iter: int
    tol: float
    stop_rule: str

    def check(self) -> None:
        positive_numbers(self, "temperature", "epsilon", "tol")
        positive_integers(self, "max_iter")
        self.require("stop_rule", checks.check_choice, STOP_RULES)

    def sinkhorn_options(self) -> SinkhornOptions:
        """The Sinkhorn settings of these fields (the others keep their defaults)."""
        return SinkhornOptions(
            epsilon=self.epsilon,
            max_iter=self.max_iter,
            tol=self.tol,
            stop_rule=self.stop_rule,  # type: ignore[arg-type]  # checked by SinkhornOptions
        )


@dataclasses.dataclass(frozen=True)
class VisualPromptConfig(Section):
    """Collaborative prompt learning (sec. 3.3): visual prompts and the transformation loss.

    Attributes:
        enabled: ``False``: no visual prompts and no transformation loss (table 5).
        conv_stride: stride of the prompt generator's 3x3 convolution.
        transformation_weight: weight of ``L_tr`` in eq. 24.
        transformation_margin: hinge margin of its diversity term, per coordinate in the text
            features' units (``form="stabilised"``); ``null``: each pair's gap between its
            text targets, so that the two terms cannot pull against each other.
        transformation_form: ``"stabilised"`` (projection, per-coordinate means, hinge) or
            ``"printed"`` (eq. 23 as printed); see :class:`reidkit.losses.TransformationLoss`.
    """

    enabled: bool
    conv_stride: int
    transformation_weight: float
    transformation_margin: float | None
    transformation_form: str = "stabilised"

    def check(self) -> None:
        positive_integers(self, "conv_stride")
        non_negative_numbers(self, "transformation_weight")
        if self.transformation_margin is not None:
            non_negative_numbers(self, "transformation_margin")
        self.require("transformation_form", checks.check_choice, TRANSFORMATION_FORMS)
        if self.transformation_form == "printed" and self.transformation_margin is not None:
            self.fail(
                "transformation_margin",
                "applies to transformation_form 'stabilised' only; set it to null with "
                f"'printed', got {self.transformation_margin}",
            )


@dataclasses.dataclass(frozen=True)
class TextEncodingConfig(Section):
    """How stage 1 encodes every identity's prompts (eq. 18's softmax runs over all ``L``).

    Attributes:
        gradient: ``"all"`` (exact: every identity's prompts with gradients) or ``"batch"``
            (only the batch's identities; the others without gradients).
        refresh_every: with ``"batch"``, encode the other identities every this many steps and
            reuse them in between (1: every step, the loss stays exact).
    """

    gradient: str = "all"
    refresh_every: int = 1

    def check(self) -> None:
        self.require("gradient", checks.check_choice, TEXT_GRADIENTS)
        positive_integers(self, "refresh_every")
        if self.gradient == "all" and self.refresh_every != 1:
            self.fail(
                "refresh_every", f"applies to gradient 'batch' only, got {self.refresh_every}"
            )


@dataclasses.dataclass(frozen=True)
class MMPLConfig(Section):
    """The settings of an MMPL run.

    Attributes:
        clip: the CLIP model and its input.
        data: the data set and the ``P x K`` batches (``batch_size`` over all processes).
        prompt: the prompt template of every level; its ``n_ctx`` is CLIP-ReID's single level
            (the baseline, and the one-level ablation :func:`without_hierarchy`).
        levels: the ``K`` levels' tokens and patches.
        text_chunk_size: prompts per text-encoder forward (with activation checkpointing).
        agent: the selector agents.
        alignment: the patch-to-token alignment.
        alpha: ``alpha_k`` of eq. 20 (the contrastive losses).
        beta: ``beta_k`` of eq. 20 (the alignment loss).
        prompt_stage: stage 1's epochs and schedule (the prompts).
        image_stage: stage 2's epochs and schedule.
        loss: stage 2's ID, triplet and image-to-text weights.
        visual_prompts: the visual prompts and the transformation loss.
        compare_baseline: also train :func:`baseline_config` into ``<output_dir>/clip_reid``.
        image_to_text_levels: ``"mean"`` or ``"sum"`` of stage 2's image-to-text
            cross-entropy over the ``K`` levels.
        text_encoding: stage 1's encoding of every identity's prompts (speed options).
    """

    clip: ClipConfig
    data: DataConfig
    prompt: PromptConfig
    levels: LevelsConfig
    text_chunk_size: int
    agent: AgentConfig
    alignment: AlignmentConfig
    alpha: float
    beta: float
    prompt_stage: PromptStageConfig
    image_stage: ImageStageConfig
    loss: CLIPReIDLossConfig
    visual_prompts: VisualPromptConfig
    compare_baseline: bool
    image_to_text_levels: str = "mean"
    text_encoding: TextEncodingConfig = TextEncodingConfig()

    def check(self) -> None:
        positive_integers(self, "text_chunk_size")
        non_negative_numbers(self, "alpha", "beta")
        self.require("image_to_text_levels", checks.check_choice, LEVEL_REDUCTIONS)


PAPER = MMPLConfig(
    # Sec. 4.2: ViT-B/16 at 256x128 (16x8 patches), batch 64, K = 3 levels; CLIP-ReID's prompt
    # schedule (Adam 3.5e-4, 120 epochs) and stage 2 (Adam, 60 epochs, warm-up over 10 epochs
    # from 5e-7 to 5e-6, x0.1 at epochs 30 and 50). Stage 2 is eq. 24 with unit weights, the
    # image-to-text term summed over the levels as eq. 20 and 23 sum theirs, and eq. 23 as
    # printed. docs/pipelines/mmpl.md lists every setting with its source.
    clip=clip_reid.PAPER.clip,
    data=clip_reid.PAPER.data,
    prompt=clip_reid.PAPER.prompt,
    levels=LevelsConfig(n_ctx=(4, 6, 8), patch_counts=(16, 64, 128), selected=(10, 40, 80)),
    text_chunk_size=256,
    agent=AgentConfig(enabled=True, epochs=50, lr=1e-4, hidden=256, episodes=8, budget_weight=1.0),
    alignment=AlignmentConfig(
        enabled=True, temperature=0.07, epsilon=0.1, max_iter=50, tol=0.05, stop_rule="update"
    ),
    alpha=1.0,
    beta=0.1,
    prompt_stage=clip_reid.PAPER.prompt_stage,
    image_stage=clip_reid.PAPER.image_stage,
    loss=dataclasses.replace(
        clip_reid.PAPER.loss, id_weight=1.0, triplet_weight=1.0, image_to_text_weight=1.0
    ),
    visual_prompts=VisualPromptConfig(
        enabled=True,
        conv_stride=1,
        transformation_weight=1.0,
        transformation_margin=None,
        transformation_form="printed",
    ),
    compare_baseline=False,
    image_to_text_levels="sum",
)

PAPER_CLIPREID_WEIGHTS = dataclasses.replace(
    PAPER,
    # Stage 2 weighted as CLIP-ReID's code weights its eq. 6 (0.25 on the two necks' ID
    # losses, the image-to-text term averaged over the levels) and the bounded, per-coordinate
    # transformation loss with its margin taken from the text targets.
    loss=clip_reid.PAPER.loss,
    visual_prompts=dataclasses.replace(PAPER.visual_prompts, transformation_form="stabilised"),
    image_to_text_levels="mean",
)

TINY = dataclasses.replace(
    PAPER_CLIPREID_WEIGHTS,
    # CLIP-ReID's tiny preset (random tiny CLIP, 8x4 patches, the built-in data).
    clip=clip_reid.TINY.clip,
    data=clip_reid.TINY.data,
    prompt_stage=clip_reid.TINY.prompt_stage,
    image_stage=clip_reid.TINY.image_stage,
    levels=LevelsConfig(n_ctx=(4, 6, 8), patch_counts=(4, 16, 32), selected=(3, 10, 20)),
    # The paper's agents take about 10,000 steps (50 epochs of ~200); the tiny stage 1 has
    # 100 (10 epochs of 10), in which Adam at 1e-3 barely moves them off random.
    agent=dataclasses.replace(PAPER.agent, epochs=10, lr=1e-2, hidden=32),
    alignment=dataclasses.replace(PAPER.alignment, tol=1e-3, stop_rule="marginal"),
    # The 3x3 convolution would otherwise outweigh the tiny ViT.
    visual_prompts=dataclasses.replace(PAPER_CLIPREID_WEIGHTS.visual_prompts, conv_stride=4),
    compare_baseline=True,
)

TINY_PAPER = dataclasses.replace(
    TINY,
    # The tiny sizes with the paper's stage 2 (unit weights, levels summed, eq. 23 as printed).
    loss=PAPER.loss,
    visual_prompts=dataclasses.replace(PAPER.visual_prompts, conv_stride=4),
    image_to_text_levels=PAPER.image_to_text_levels,
)

PRESETS: dict[str, MMPLConfig] = {
    "paper": PAPER,
    "paper-clipreid-weights": PAPER_CLIPREID_WEIGHTS,
    "tiny": TINY,
    "tiny-paper": TINY_PAPER,
}


def baseline_config(config: MMPLConfig) -> clip_reid.CLIPReIDConfig:
    """The CLIP-ReID run that ``config`` extends: same CLIP, data, prompt, stages and weights."""
    return clip_reid.CLIPReIDConfig(
        clip=config.clip,
        data=config.data,
        prompt=config.prompt,
        prompt_stage=config.prompt_stage,
        image_stage=config.image_stage,
        loss=config.loss,
    )


def select_levels(
    config: MMPLConfig,
    count: int | None = None,
    *,
    n_ctx: Sequence[int] | None = None,
    patch_counts: Sequence[int] | None = None,
    selected: Sequence[int] | None = None,
) -> MMPLConfig:
    """``config`` with new per-level values, then its first ``count`` levels.

    Args:
        count: ``K``; default: the number of ``n_ctx`` values after the replacement.
        n_ctx, patch_counts, selected: replace the configuration's values when given.

    Raises:
        ValueError: a tuple has fewer than ``count`` values (the message names it).
    """
    values = {
        "n_ctx": tuple(n_ctx or config.levels.n_ctx),
        "patch_counts": tuple(patch_counts or config.levels.patch_counts),
        "selected": tuple(selected or config.levels.selected),
    }
    count = count or len(values["n_ctx"])
    for name, level_values in values.items():
        if len(level_values) < count:
            raise ValueError(f"{count} levels need {count} values of {name}, got {level_values}")
    levels = LevelsConfig(**{name: value[:count] for name, value in values.items()})
    return dataclasses.replace(config, levels=levels)


def without_hierarchy(config: MMPLConfig) -> MMPLConfig:
    """One prompt level of CLIP-ReID's ``prompt.n_ctx`` tokens, no agent, no alignment."""
    config = select_levels(config, 1, n_ctx=(config.prompt.n_ctx,))
    return without_alignment(without_agent(config))


def without_agent(config: MMPLConfig) -> MMPLConfig:
    """No selector agents (table 4, ISA x): with alignment, patches selected by the class
    token's attention; without it, no selection."""
    return dataclasses.replace(config, agent=dataclasses.replace(config.agent, enabled=False))


def without_alignment(config: MMPLConfig) -> MMPLConfig:
    """No patch-to-token OT (table 4, PTA x): with the agents, their pooled selection in the
    contrastive losses (ISA without PTA); without them, the global contrastive losses alone."""
    alignment = dataclasses.replace(config.alignment, enabled=False)
    return dataclasses.replace(config, alignment=alignment)


def without_visual_prompts(config: MMPLConfig) -> MMPLConfig:
    """No visual prompts and no transformation loss (table 5)."""
    visual = dataclasses.replace(config.visual_prompts, enabled=False)
    return dataclasses.replace(config, visual_prompts=visual)


def build_hierarchical_prompt_learning(
    config: MMPLConfig,
    prompts: MultiGranularityPromptLearner,
    text_encoder: CLIPTextEncoder,
    map_size: tuple[int, int],
    embed_dim: int,
) -> HierarchicalPromptLearning:
    """Stage 1 (sec. 3.2) with ``config``'s agents and alignment, as far as they are enabled.

    Args:
        prompts: the ``K`` prompt levels.
        text_encoder: the frozen text encoder.
        map_size: ``(h, w)`` of the image encoder's patch grid.
        embed_dim: width ``E`` of the projected patch features.
    """
    settings = config.alignment
    alignment = (
        PatchToTokenAlignment(temperature=settings.temperature, options=settings.sinkhorn_options())
        if settings.enabled
        else None
    )
    agents = None
    if config.agent.enabled:
        agents = [
            InformationSelectorAgent(
                embed_dim,
                count,
                kept,
                hidden_size=config.agent.hidden,
                episodes=config.agent.episodes,
                budget_weight=config.agent.budget_weight,
                reads_scores=config.agent.reads_scores,
            )
            for count, kept in zip(config.levels.patch_counts, config.levels.selected)
        ]
    return HierarchicalPromptLearning(
        prompts,
        text_encoder,
        HierarchicalPatchPartition(map_size, config.levels.patch_counts),
        alignment,
        agents,
        config.levels.selected,
        alpha=config.alpha,
        beta=config.beta,
        text_gradient=config.text_encoding.gradient,
        text_refresh_every=config.text_encoding.refresh_every,
    )


def build_transformation_loss(
    config: VisualPromptConfig, prompt_width: int, text_dim: int
) -> TransformationLoss:
    """Eq. 23 in the configured form, from the visual prompts' width to the text features'."""
    return TransformationLoss(
        prompt_width,
        text_dim,
        margin=config.transformation_margin,
        form=config.transformation_form,
    )


def train(config: MMPLConfig, runtime: Runtime) -> dict[str, Any]:
    """Train both stages, evaluate, write the report; ``{"mmpl": final metrics}``.

    With ``config.compare_baseline`` the CLIP-ReID run of :func:`baseline_config` is trained
    first into ``<output_dir>/clip_reid`` (resumed there when this run resumes).
    """
    check_run(NAME, config, runtime)
    if config.compare_baseline:
        clip_reid.train(baseline_config(config), runtime.in_subfolder(BASELINE_FOLDER))
    context = begin(runtime)
    device = context.device
    clip_model = build_clip(config.clip, device)  # missing weights fail before the data load
    data = build_clip_data(config.clip, config.data, runtime=runtime, device=device)
    num_classes = data.dataset.num_train_pids
    prompts = MultiGranularityPromptLearner(
        num_classes, clip_model, config.levels.n_ctx, config.prompt.template
    ).to(device)
    text_encoder = CLIPTextEncoder(
        clip_model, checkpoint_activations=True, chunk_size=config.text_chunk_size
    )
    hierarchical = build_hierarchical_prompt_learning(
        config,
        prompts,
        text_encoder,
        tuple(clip_model.visual.grid_size),
        clip_model.visual.output_dim,
    ).to(device)
    visual = config.visual_prompts
    model = CLIPReIDModel(
        clip_model, num_classes, config.levels.count if visual.enabled else 0, visual.conv_stride
    ).to(device)
    transformation = None
    if visual.enabled:
        transformation = build_transformation_loss(
            visual, clip_model.visual.transformer.width, clip_model.visual.output_dim
        ).to(device)

    run = start_run(NAME, config, runtime, STAGES, data)
    run.track("prompts", prompts)  # not the stage-1 module: it holds the text tower
    if hierarchical.agents is not None:
        run.track("agents", hierarchical.agents)
    run.track("model", model)
    if transformation is not None:
        run.track("transformation", transformation)
    spec = clip_model_spec(
        "clip_reid",
        NAME,
        config.clip,
        config.data,
        num_classes,
        num_visual_prompts=config.levels.count if visual.enabled else 0,
        prompt_conv_stride=visual.conv_stride,
    )
    run.set_inference_model(model, spec)
    seed_everything(runtime.seed, rank=context.rank)

    # Stage 1: hierarchical prompt learning on features cached from the frozen image encoder.
    if not run.stage_completed("prompts"):
        encoder = model.image_encoder

        def encode(images: Tensor) -> list[Tensor]:
            features = encoder(images)
            outputs = [features.projected_patches, features.embedding]
            if hierarchical.needs_attention:
                outputs.append(encoder.class_token_attention(features))
            return outputs

        model.eval()
        maps, embeddings, *attention = cache_frozen_features(
            encode, data.feature_loader(runtime.num_workers), device
        )
        pids = torch.tensor([pid for _, pid, _ in data.dataset.train], device=device)
        batches = make_feature_loader(
            maps,
            embeddings,
            pids,
            *attention,
            batch_size=process_batch_size(config.data),
            seed=runtime.seed,
        )
        stage1 = data_parallel(hierarchical)

        def prompt_step(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
            hierarchical.train()
            return cast(dict[str, Tensor], stage1(*batch))

        optimizer, scheduler = prompt_stage_optimizer(prompts.parameters(), config.prompt_stage)
        optimizers: dict[str, torch.optim.Optimizer] = {"prompts": optimizer}
        schedulers: list[Any] = [scheduler]
        if hierarchical.agents is not None:
            agent_optimizer = torch.optim.Adam(hierarchical.agents.parameters(), lr=config.agent.lr)
            optimizers["agents"] = agent_optimizer
            # The agents learn for the first agent.epochs epochs, then stay fixed.
            schedulers.append(
                torch.optim.lr_scheduler.MultiStepLR(
                    agent_optimizer, [config.agent.epochs], gamma=0.0
                )
            )
        fit_stage(
            run,
            "prompts",
            optimizers,
            schedulers,
            batches,
            prompt_step,
            epochs=config.prompt_stage.epochs,
            runtime=runtime,
            device=device,
        )
        # Did the parts learn? The OT loss against chance, the selection against random.
        size = config.data.batch_size
        chunks = zip(
            *(torch.split(tensor, size) for tensor in (maps, embeddings, pids, *attention))
        )
        counts = torch.bincount(pids, minlength=num_classes)
        run.report.set_result(
            DIAGNOSTICS_RESULT, stage1_diagnostics(hierarchical, chunks, num_classes, counts)
        )

    # Stage 2: collaborative prompt learning; the K levels' text features are fixed targets.
    level_text = [class_text_features(level, text_encoder) for level in prompts.levels]
    criterion = clip_reid.build_loss(
        config.loss,
        transformation=transformation,
        transformation_weight=visual.transformation_weight,
        level_reduction=config.image_to_text_levels,
    )
    metrics = run_image_stage(
        run,
        model,
        criterion,
        level_text,
        data,
        config.image_stage,
        runtime=runtime,
        device=device,
    )
    results = {NAME: metrics}
    run.finish(results)
    return results


RECIPE = Recipe(
    name=NAME,
    description="MMPL: hierarchical, then collaborative prompt learning (two stages)",
    config_type=MMPLConfig,
    presets=PRESETS,
    train=train,
    epoch_fields=clip_reid.epoch_fields,  # the same stage sections
    weights_field="clip.pretrained",
    loss_weights={
        **clip_reid.LOSS_WEIGHTS,
        "contrastive": "alpha",
        "alignment": "beta",
        "transformation": "visual_prompts.transformation_weight",
    },
)
