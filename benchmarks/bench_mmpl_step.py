"""Time of one MMPL training step against one CLIP-ReID step at the same size, per stage.

* ``prompts`` (stage 1): CLIP-ReID encodes the batch's prompts and applies ``L_i2t + L_t2i``;
  MMPL (:class:`reidkit.HierarchicalPromptLearning` as the recipe ``reidkit.recipes.mmpl``
  builds it) encodes all ``L``
  identities' prompts at each of the ``K`` levels (the softmax of eq. 18 runs over all of
  them), runs the agents and the patch-to-token OT, and applies eq. 20. Both start from cached
  frozen-encoder features, as the recipes do.
  The stage-1 options of :class:`reidkit.recipes.mmpl.TextEncodingConfig` are timed beside
  the exact step: ``mmpl_batch_grad`` (the other identities' prompts encoded without
  gradients at every step: the same loss) and ``mmpl_cached<n>`` (re-encoded every ``n``
  steps: the time of ``n`` consecutive steps divided by ``n``). The batch is ``P x 4``
  (``P`` identities of 4 images), as the recipes sample it. The methods are timed in turns,
  round after round, so that a busy machine slows them alike.
* ``image_encoder`` (stage 2): CLIP-ReID's image encoder with two BNNecks, ID, triplet and
  ``L_i2tce``; MMPL adds the visual prompt generator, ``K`` prompt tokens in every block,
  ``L_i2tce`` against ``K`` levels and ``L_tr`` (eq. 24).

Each step is forward + backward + optimiser-free (gradients only), median of ``--repeats``.
Sizes: ``tiny`` (the recipes' tiny CLIP, CPU friendly) and ``paper`` (ViT-B/16 at 256x128,
batch 64, 751 identities, random weights: timing does not depend on them).

Run: ``python benchmarks/bench_mmpl_step.py --size tiny`` (``--size paper`` on a GPU;
``--batch`` and ``--classes`` shrink it for a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch
from harness import (
    RESULTS_DIR,
    BenchmarkRow,
    describe_machine,
    plot_metric,
    print_table,
    save_results,
    time_interleaved,
)

from reidkit.clip import CLIPTextEncoder
from reidkit.losses import CLIPReIDLoss, SupConLoss, TransformationLoss
from reidkit.models import CLIPReIDModel, CLIPReIDOutput
from reidkit.prompts import MultiGranularityPromptLearner, PromptLearner
from reidkit.recipes.common import build_clip
from reidkit.recipes.mmpl import PRESETS, TextEncodingConfig, build_hierarchical_prompt_learning

SIZES = {"tiny": {"classes": 32, "batch": 32}, "paper": {"classes": 751, "batch": 64}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="override the size's batch")
    parser.add_argument("--classes", type=int, default=None, help="override the identities")
    parser.add_argument(
        "--refresh-every", type=int, default=10, help="n of the cached stage-1 option"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = PRESETS[args.size]
    levels = config.levels
    image_size = config.clip.image_size
    classes = args.classes or SIZES[args.size]["classes"]
    batch = args.batch or SIZES[args.size]["batch"]
    torch.manual_seed(0)
    # random weights: the time of a step does not depend on them
    clip_model = build_clip(dataclasses.replace(config.clip, pretrained=None), device)
    text_encoder = CLIPTextEncoder(
        clip_model, checkpoint_activations=True, chunk_size=config.text_chunk_size
    )
    grid = tuple(clip_model.visual.grid_size)
    embed_dim, width = clip_model.visual.output_dim, clip_model.visual.transformer.width
    pids = (torch.arange(batch, device=device) // 4) % classes  # P x K with K = 4
    patch_map = torch.randn(batch, *grid, embed_dim, device=device)
    embedding = torch.randn(batch, embed_dim, device=device)
    images = torch.randn(batch, 3, *image_size, device=device)
    supcon = SupConLoss()

    # Stage 1.
    prompt = config.prompt
    baseline_prompts = PromptLearner(classes, clip_model, prompt.template, prompt.n_ctx).to(device)

    def baseline_prompt_step() -> None:
        prompts = baseline_prompts(pids)
        text = text_encoder(prompts.embeddings, prompts.token_ids).sentence
        (supcon(embedding, text, pids) + supcon(text, embedding, pids)).backward()

    prompt_levels = MultiGranularityPromptLearner(
        classes, clip_model, levels.n_ctx, prompt.template
    ).to(device)
    hierarchical = build_hierarchical_prompt_learning(
        config, prompt_levels, text_encoder, grid, embed_dim
    ).to(device)

    def mmpl_prompt_step() -> None:
        hierarchical(patch_map, embedding, pids)["loss"].backward()

    def option_step(text_encoding: TextEncodingConfig, steps: int):
        option = build_hierarchical_prompt_learning(
            dataclasses.replace(config, text_encoding=text_encoding),
            prompt_levels,
            text_encoder,
            grid,
            embed_dim,
        ).to(device)

        def step() -> None:  # ``steps`` steps, so that a refresh every ``steps`` is amortised
            for _ in range(steps):
                option(patch_map, embedding, pids)["loss"].backward()

        return step

    refresh = args.refresh_every
    prompt_options = {
        "mmpl_batch_grad": (option_step(TextEncodingConfig("batch", 1), 1), 1),
        f"mmpl_cached{refresh}": (
            option_step(TextEncodingConfig("batch", refresh), refresh),
            refresh,
        ),
    }

    # Stage 2.
    text_levels = [torch.randn(classes, embed_dim, device=device) for _ in levels.n_ctx]
    baseline_model = CLIPReIDModel(clip_model, classes).to(device).train()
    mmpl_model = (
        CLIPReIDModel(clip_model, classes, levels.count, config.visual_prompts.conv_stride)
        .to(device)
        .train()
    )
    baseline_loss = CLIPReIDLoss(id_weight=1.0)
    mmpl_loss = CLIPReIDLoss(
        id_weight=1.0, transformation=TransformationLoss(width, embed_dim).to(device)
    )
    clip_model.visual.requires_grad_(True)

    def reid_loss(
        criterion: CLIPReIDLoss, outputs: CLIPReIDOutput, text: list[torch.Tensor]
    ) -> torch.Tensor:
        logits, triplet_features, embedding, prompts = outputs
        return criterion(logits, triplet_features, embedding, pids, text, prompts).loss

    def baseline_image_step() -> None:
        reid_loss(baseline_loss, baseline_model(images), text_levels[:1]).backward()

    def mmpl_image_step() -> None:
        reid_loss(mmpl_loss, mmpl_model(images), text_levels).backward()

    rows = []
    shape = f"B={batch},L={classes},K={levels.count},{image_size[0]}x{image_size[1]}"
    for stage, baseline, mmpl, options in (
        ("prompts", baseline_prompt_step, mmpl_prompt_step, prompt_options),
        ("image_encoder", baseline_image_step, mmpl_image_step, {}),
    ):
        steps = {"clip_reid": (baseline, 1), "mmpl": (mmpl, 1), **options}
        samples = time_interleaved(
            {method: step for method, (step, _) in steps.items()},
            device,
            rounds=args.repeats,
        )
        times = {
            method: statistics.median(samples[method]) / count
            for method, (_, count) in steps.items()
        }
        for method, seconds in times.items():
            rows.append(
                BenchmarkRow(f"{stage}_step", shape, method, device.type, "time_s", seconds)
            )
        for method in steps:
            if method != "clip_reid":
                rows.append(
                    BenchmarkRow(
                        f"{stage}_step",
                        shape,
                        f"{method}/clip_reid",
                        device.type,
                        "ratio",
                        times[method] / times["clip_reid"],
                    )
                )
    print(describe_machine())
    print_table(rows)
    name = f"mmpl_step_{args.size}_b{batch}_l{classes}"
    command = "python benchmarks/bench_mmpl_step.py " + " ".join(sys.argv[1:])
    csv_path, json_path = save_results(name, rows, command=command.strip(), out_dir=args.out_dir)
    plot = plot_metric(
        rows,
        "time_s",
        args.out_dir / f"{name}.png",
        title=f"One training step ({describe_machine()})",
    )
    print(f"wrote {csv_path}, {json_path}, {plot}")


if __name__ == "__main__":
    main()
