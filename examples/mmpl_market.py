"""MMPL (multi-granularity multi-modal prompt learning): the two-stage pipeline on Market-1501.

Stage 1 ("prompts", hierarchical prompt learning, sec. 3.2): the frozen image encoder's patch
map is cut into ``M_c`` patches per level (:class:`reidkit.HierarchicalPatchPartition`); per
level an :class:`reidkit.InformationSelectorAgent` keeps ``M`` of them (its own Adam, active for
the first ``agent_epochs`` epochs), and the ``K`` levels of ID-specific prompts learn from the
contrastive losses and the patch-to-token OT loss (:class:`reidkit.PatchToTokenAlignment`),
combined by eq. 20. Stage 2 ("image_encoder", collaborative prompt learning, sec. 3.3): the
image encoder, with ``K`` visual prompts from :class:`reidkit.VisualPromptGenerator` appended to
its tokens, learns from ID, triplet, the image-to-text cross-entropy against the ``K`` levels of
text features and the transformation loss (eq. 24).

Examples::

    # synthetic data and a tiny random CLIP: CLIP-ReID baseline and MMPL, R1/mAP table
    python examples/mmpl_market.py

    # Market-1501 with ViT-B/16 and the paper's settings (sec. 4.2)
    python examples/mmpl_market.py --preset paper --data-root /data/Market-1501-v15.09.15 \\
        --output-dir runs/mmpl_market
    torchrun --nproc_per_node=2 examples/mmpl_market.py --preset paper --data-root ...

    # ablations (tables 3-5): no agent (class-token attention), no alignment, no CPL, K levels
    python examples/mmpl_market.py --no-agent
    python examples/mmpl_market.py --no-alignment --no-cpl --levels 2

    # continue an interrupted run at whichever stage it stopped
    python examples/mmpl_market.py --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from clip_reid_market import PRESETS as BASELINE_PRESETS
from clip_reid_market import Preset as BaselinePreset
from clip_reid_market import build_data_and_clip
from torch import Tensor
from torch.utils.data import DataLoader

from reidkit.clip import CLIPTextEncoder
from reidkit.data import (
    make_feature_loader,
    make_test_loader,
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
    TransformationLoss,
    TripletLoss,
)
from reidkit.models import CLIPReIDModel
from reidkit.prompts import MultiGranularityPromptLearner
from reidkit.selection import (
    HierarchicalPatchPartition,
    HierarchicalPromptLearning,
    InformationSelectorAgent,
    PatchToTokenAlignment,
    class_token_attention,
    encode_class_prompts,
    multi_granularity_loss,
)

STAGES = ("prompts", "image_encoder")
BASELINE_SCRIPT = Path(__file__).with_name("clip_reid_market.py")


@dataclasses.dataclass(frozen=True)
class Preset:
    """MMPL's settings on top of the CLIP-ReID preset they extend (per-level tuples: one per
    level)."""

    base: BaselinePreset  # CLIP, data, prompt schedule and stage-2 settings of CLIP-ReID
    n_ctx: tuple[int, ...]  # N_k, learnable tokens per level
    patch_counts: tuple[int, ...]  # M_c^k, candidate patches per level
    selected: tuple[int, ...]  # M^k, selected patches per level
    text_chunk_size: int  # prompts per text-encoder forward (with activation checkpointing)
    # stage 1: the agents (their own Adam, for the first agent_epochs epochs) and the OT
    agent_epochs: int
    agent_lr: float
    agent_hidden: int
    agent_episodes: int
    budget_weight: float
    epsilon: float
    ot_max_iter: int
    ot_tol: float
    ot_stop_rule: str
    ot_temperature: float
    alpha: float
    beta: float
    # stage 2: visual prompts and the transformation loss
    prompt_conv_stride: int
    transformation_weight: float
    transformation_margin: float
    compare_baseline: bool  # also run examples/clip_reid_market.py and print a table


PRESETS = {
    # Sec. 4.2: ViT-B/16 at 256x128 (16x8 patches), batch 64, K = 3 levels; prompts Adam
    # 3.5e-4 for 120 epochs; stage 2 Adam for 60 epochs, warm-up over 10 epochs from 5e-7 to
    # 5e-6, x0.1 at epochs 30 and 50: CLIP-ReID's settings.
    "paper": Preset(
        base=BASELINE_PRESETS["paper"],
        n_ctx=(4, 6, 8),
        patch_counts=(16, 64, 128),
        selected=(10, 40, 80),
        text_chunk_size=256,
        agent_epochs=50,
        agent_lr=1e-4,
        agent_hidden=256,
        agent_episodes=8,
        budget_weight=1.0,
        epsilon=0.1,
        ot_max_iter=50,
        ot_tol=0.05,
        ot_stop_rule="update",
        ot_temperature=0.07,
        alpha=1.0,
        beta=0.1,
        prompt_conv_stride=1,
        transformation_weight=1.0,
        transformation_margin=1.0,
        compare_baseline=False,
    ),
    # The baseline's tiny preset (random tiny CLIP, 8x4 patches, synthetic data).
    "tiny": Preset(
        base=BASELINE_PRESETS["tiny"],
        n_ctx=(4, 6, 8),
        patch_counts=(4, 16, 32),
        selected=(3, 10, 20),
        text_chunk_size=256,
        agent_epochs=6,
        agent_lr=1e-3,
        agent_hidden=32,
        agent_episodes=8,
        budget_weight=1.0,
        epsilon=0.1,
        ot_max_iter=50,
        ot_tol=1e-3,
        ot_stop_rule="marginal",
        ot_temperature=0.07,
        alpha=1.0,
        beta=0.1,
        prompt_conv_stride=4,  # the 3x3 convolution would otherwise outweigh the tiny ViT
        transformation_weight=1.0,
        transformation_margin=1.0,
        compare_baseline=True,
    ),
}


def build_stage1(
    prompts: MultiGranularityPromptLearner,
    text_encoder: CLIPTextEncoder,
    map_size: tuple[int, int],
    embed_dim: int,
    preset: Preset,
    use_agent: bool,
    use_alignment: bool,
) -> HierarchicalPromptLearning:
    """Stage 1 (sec. 3.2) with the preset's agents and alignment, as the ablation flags ask."""
    alignment = (
        PatchToTokenAlignment(
            temperature=preset.ot_temperature,
            epsilon=preset.epsilon,
            max_iter=preset.ot_max_iter,
            tol=preset.ot_tol,
            stop_rule=preset.ot_stop_rule,
        )
        if use_alignment
        else None
    )
    agents = (
        [
            InformationSelectorAgent(
                embed_dim,
                count,
                selected,
                hidden_size=preset.agent_hidden,
                episodes=preset.agent_episodes,
                budget_weight=preset.budget_weight,
            )
            for count, selected in zip(preset.patch_counts, preset.selected)
        ]
        if use_agent and use_alignment  # the selection only feeds the alignment
        else None
    )
    return HierarchicalPromptLearning(
        prompts,
        text_encoder,
        HierarchicalPatchPartition(map_size, preset.patch_counts),
        alignment,
        agents,
        preset.selected,
        alpha=preset.alpha,
        beta=preset.beta,
    )


@torch.no_grad()
def cache_frozen_features(
    model: CLIPReIDModel, loader: DataLoader, device: torch.device, with_attention: bool
) -> list[Tensor]:
    """Projected patch maps, global features and (optionally) class-token attention, in order."""
    model.eval()
    encoder = model.image_encoder
    last_block = encoder.visual.transformer.resblocks[-1]
    maps, embeddings, attention = [], [], []
    for images, *_ in loader:
        features = encoder(images.to(device))
        maps.append(features.projected_patches)
        embeddings.append(features.embedding)
        if with_attention:
            grid = tuple(features.patches.shape[1:3])
            attention.append(class_token_attention(last_block, features.layers[0], grid))
    return [torch.cat(maps), torch.cat(embeddings), *([torch.cat(attention)] if attention else [])]


def run_baseline(args: Any, output_dir: Path) -> dict[str, float]:
    """Run examples/clip_reid_market.py with the same data and seed; its final metrics."""
    command = [
        sys.executable,
        str(BASELINE_SCRIPT),
        "--preset",
        args.preset,
        "--output-dir",
        str(output_dir),
        "--seed",
        str(args.seed),
        "--num-workers",
        str(args.num_workers),
        "--device",
        args.device,
        "--dataset",
        args.dataset,
    ]
    if args.data_root is not None:
        command += ["--data-root", str(args.data_root)]
    if args.baseline_epochs:
        command += ["--epochs", *args.baseline_epochs]
    if (output_dir / "last.pt").exists():
        command.append("--resume")
    subprocess.run(command, check=True)
    report = json.loads((output_dir / "report.json").read_text())
    return report["results"]["clip_reid"]


def main() -> None:
    parser = build_arg_parser("MMPL two-stage pipeline", default_output_dir="runs/mmpl_market")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or local checkpoint")
    ablation = parser.add_argument_group("ablations (paper tables 3-5)")
    ablation.add_argument(
        "--no-agent", action="store_true", help="select patches by class-token attention"
    )
    ablation.add_argument(
        "--no-alignment", action="store_true", help="prompts from contrastive losses only"
    )
    ablation.add_argument(
        "--no-cpl", action="store_true", help="no visual prompts, no transformation loss"
    )
    ablation.add_argument(
        "--no-hpl", action="store_true", help="one global prompt level, no agent, no alignment"
    )
    ablation.add_argument("--levels", type=int, default=None, help="granularity levels K")
    ablation.add_argument("--n-ctx", type=int, nargs="+", help="N_k per level (preset's)")
    ablation.add_argument("--patch-counts", type=int, nargs="+", help="M_c per level (preset's)")
    ablation.add_argument("--selected", type=int, nargs="+", help="M per level (preset's)")
    baseline = parser.add_argument_group("baseline")
    baseline.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the CLIP-ReID baseline and print a table (default: the preset's)",
    )
    baseline.add_argument(
        "--baseline-epochs", nargs="+", default=[], help="--epochs for the baseline run"
    )
    args = parser.parse_args()
    preset = resolve_preset(PRESETS[args.preset], args)
    base = preset.base
    levels = len(preset.n_ctx)
    use_agent = not (args.no_agent or args.no_hpl)
    use_alignment = not (args.no_alignment or args.no_hpl)
    use_cpl = not args.no_cpl
    context = init_distributed(args.device)
    device = context.device
    seed_everything(args.seed)
    epochs = stage_epochs(
        {"prompts": base.prompt_epochs, "image_encoder": base.image_epochs}, args.epochs
    )

    # Data and the frozen CLIP towers as in the baseline; then K prompt levels, the stage-1
    # module and the stage-2 model.
    data, clip_model = build_data_and_clip(args, base, device)
    dataset, train_loader, test_loader = data.dataset, data.train_loader, data.test_loader
    num_classes = dataset.num_train_pids
    prompt_levels = MultiGranularityPromptLearner(
        num_classes, clip_model, preset.n_ctx, base.template
    ).to(device)
    text_encoder = CLIPTextEncoder(
        clip_model, checkpoint_activations=True, chunk_size=preset.text_chunk_size
    )
    map_size = tuple(clip_model.visual.grid_size)
    hierarchical = build_stage1(
        prompt_levels,
        text_encoder,
        map_size,
        clip_model.visual.output_dim,
        preset,
        use_agent,
        use_alignment,
    ).to(device)
    model = CLIPReIDModel(
        clip_model, num_classes, levels if use_cpl else 0, preset.prompt_conv_stride
    ).to(device)
    transformation = TransformationLoss(
        clip_model.visual.transformer.width,
        clip_model.visual.output_dim,
        margin=preset.transformation_margin,
    ).to(device)

    run = TrainingRun(
        args.output_dir,
        stages=STAGES,
        config={
            "args": vars(args),
            "preset": dataclasses.asdict(preset),
            "ablation": {"agent": use_agent, "alignment": use_alignment, "cpl": use_cpl},
        },
        resume=args.resume,
        eval_every=args.eval_every,
    )
    run.track("prompts", prompt_levels)  # not the stage-1 module: it holds the text tower
    if hierarchical.agents is not None:
        run.track("agents", hierarchical.agents)
    run.track("model", model)
    run.track("transformation", transformation)
    seed_everything(args.seed, rank=context.rank)

    def evaluate() -> RankResult:
        return evaluate_model(model, test_loader, len(dataset.query), device=device)

    # Stage 1: hierarchical prompt learning on features cached from the frozen image encoder.
    if not run.stage_completed("prompts"):
        train_images = make_test_loader(
            dataset.train, [], data.test_transform, num_workers=args.num_workers
        )
        cached = cache_frozen_features(model, train_images, device, hierarchical.needs_attention)
        pids = torch.tensor([pid for _, pid, _ in dataset.train], device=device)
        batches = make_feature_loader(
            *cached[:2], pids, *cached[2:], batch_size=base.batch_size, seed=args.seed
        )
        stage1 = data_parallel(hierarchical)

        def prompt_step(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
            hierarchical.train()
            return stage1(*batch)

        prompt_optimizer = torch.optim.Adam(
            prompt_levels.parameters(), lr=base.prompt_lr, weight_decay=base.prompt_weight_decay
        )
        optimizers: list[torch.optim.Optimizer] = [prompt_optimizer]
        schedulers: list[Any] = [
            WarmupCosineLR(
                prompt_optimizer,
                epochs["prompts"],
                warmup_epochs=base.prompt_warmup_epochs,
                warmup_start_factor=base.prompt_warmup_lr / base.prompt_lr,
                final_factor=base.prompt_min_lr / base.prompt_lr,
            )
        ]
        if hierarchical.agents is not None:
            agent_optimizer = torch.optim.Adam(hierarchical.agents.parameters(), lr=preset.agent_lr)
            optimizers.append(agent_optimizer)
            # The agents learn for the first agent_epochs epochs, then stay fixed.
            schedulers.append(
                torch.optim.lr_scheduler.MultiStepLR(
                    agent_optimizer, [preset.agent_epochs], gamma=0.0
                )
            )
        trainer = Trainer(optimizers, schedulers, amp=args.amp, device=device)
        run.fit("prompts", trainer, batches, prompt_step, epochs=epochs["prompts"])

    # Stage 2: collaborative prompt learning; the K levels' text features are fixed targets.
    with torch.no_grad():
        level_text = [
            encode_class_prompts(level, text_encoder).sentence for level in prompt_levels.levels
        ]
    model.image_encoder.requires_grad_(True)
    network = data_parallel(model)
    identity_loss = CrossEntropyLabelSmooth(base.label_smoothing)
    triplet_loss = TripletLoss(base.triplet_margin)
    image_to_text = ImageToTextCrossEntropy(base.label_smoothing)

    def image_step(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        model.train()
        images, pids = move_to_device(batch[:2], device)
        outputs = network(images)
        ids = sum(identity_loss(logits, pids) for logits in outputs.logits)
        triplets = sum(triplet_loss(features, pids) for features in outputs.triplet_features)
        i2t = multi_granularity_loss(image_to_text, outputs.embedding, level_text, pids)
        loss = base.id_weight * ids + base.triplet_weight * triplets + base.i2t_weight * i2t
        metrics = {"id": ids, "triplet": triplets, "i2t": i2t}
        if outputs.prompts is not None:
            targets = torch.stack([text[pids] for text in level_text], dim=1)
            metrics["tr"] = transformation(outputs.prompts, targets)
            loss = loss + preset.transformation_weight * metrics["tr"]
        return {"loss": loss, **metrics}

    groups = bias_parameter_groups([model, transformation], base.image_lr, base.bias_lr_factor)
    optimizer = torch.optim.Adam(groups, weight_decay=base.image_weight_decay)
    scheduler = WarmupMultiStepLR(
        optimizer,
        milestones=base.milestones,
        warmup_epochs=base.image_warmup_epochs,
        warmup_start_factor=base.image_warmup_factor,
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
    results: dict[str, Any] = {"mmpl": metrics}
    compare = preset.compare_baseline if args.baseline is None else args.baseline
    if compare and context.world_size == 1:
        results["clip_reid"] = run_baseline(args, Path(args.output_dir) / "clip_reid")
        print(format_table(results))
    run.finish(results)
    cleanup_distributed()


def resolve_preset(preset: Preset, args: Any) -> Preset:
    """The preset with the per-level overrides and ``--levels`` / ``--no-hpl`` applied."""
    overrides = {
        name: tuple(value)
        for name, value in (
            ("n_ctx", args.n_ctx),
            ("patch_counts", args.patch_counts),
            ("selected", args.selected),
        )
        if value
    }
    preset = dataclasses.replace(preset, **overrides)
    levels = 1 if args.no_hpl else args.levels or len(preset.n_ctx)
    if args.no_hpl:  # CLIP-ReID's single global prompt
        preset = dataclasses.replace(preset, n_ctx=(preset.base.n_ctx,))
    for name in ("n_ctx", "patch_counts", "selected"):
        if len(getattr(preset, name)) < levels:
            raise ValueError(f"--levels {levels} needs {levels} values of --{name}")
        preset = dataclasses.replace(preset, **{name: getattr(preset, name)[:levels]})
    return preset


def format_table(results: dict[str, dict[str, float]]) -> str:
    """An R1 / mAP table of the methods in ``results`` (percent)."""
    names = {"clip_reid": "CLIP-ReID", "mmpl": "MMPL"}
    rows = [f"{'method':<12}{'R1':>8}{'mAP':>8}"]
    for key in ("clip_reid", "mmpl"):
        metrics = results[key]
        rows.append(f"{names[key]:<12}{100 * metrics['R1']:>8.1f}{100 * metrics['mAP']:>8.1f}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
