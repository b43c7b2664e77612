"""Time of one MMPL training step against one CLIP-ReID step at the same size, per stage.

* ``prompts`` (stage 1): CLIP-ReID encodes the batch's prompts and applies ``L_i2t + L_t2i``;
  MMPL (:class:`reidkit.HierarchicalPromptLearning` as ``examples/mmpl_market.py`` builds it)
  encodes all ``L``
  identities' prompts at each of the ``K`` levels (the softmax of eq. 18 runs over all of
  them), runs the agents and the patch-to-token OT, and applies eq. 20. Both start from cached
  frozen-encoder features, as the examples do.
* ``image_encoder`` (stage 2): CLIP-ReID's image encoder with two BNNecks, ID, triplet and
  ``L_i2tce``; MMPL adds the visual prompt generator, ``K`` prompt tokens in every block,
  ``L_i2tce`` against ``K`` levels and ``L_tr`` (eq. 24).

Each step is forward + backward + optimiser-free (gradients only), median of ``--repeats``.
Sizes: ``tiny`` (the examples' tiny CLIP, CPU friendly) and ``paper`` (ViT-B/16 at 256x128,
batch 64, 751 identities, random weights: timing does not depend on them).

Run: ``python benchmarks/bench_mmpl_step.py --size tiny`` (``--size paper`` on a GPU;
``--batch`` and ``--classes`` shrink it for a CPU).
"""

from __future__ import annotations

import argparse
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
    time_call,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mmpl_market import PRESETS, build_stage1

from reidkit.clip import CLIPTextEncoder, load_clip
from reidkit.losses import (
    CrossEntropyLabelSmooth,
    ImageToTextCrossEntropy,
    SupConLoss,
    TransformationLoss,
    TripletLoss,
)
from reidkit.models import CLIPReIDModel, CLIPReIDOutput
from reidkit.prompts import MultiGranularityPromptLearner, PromptLearner
from reidkit.selection import multi_granularity_loss

SIZES = {"tiny": {"classes": 32, "batch": 32}, "paper": {"classes": 751, "batch": 64}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="override the size's batch")
    parser.add_argument("--classes", type=int, default=None, help="override the identities")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = PRESETS[args.size]
    base = preset.base
    classes = args.classes or SIZES[args.size]["classes"]
    batch = args.batch or SIZES[args.size]["batch"]
    torch.manual_seed(0)
    clip_model, _ = load_clip(
        base.clip, None, image_size=base.image_size, stride=base.stride, device=device
    )
    clip_model.requires_grad_(False)
    text_encoder = CLIPTextEncoder(
        clip_model, checkpoint_activations=True, chunk_size=preset.text_chunk_size
    )
    grid = tuple(clip_model.visual.grid_size)
    embed_dim, width = clip_model.visual.output_dim, clip_model.visual.transformer.width
    pids = torch.arange(batch, device=device) % classes
    patch_map = torch.randn(batch, *grid, embed_dim, device=device)
    embedding = torch.randn(batch, embed_dim, device=device)
    images = torch.randn(batch, 3, *base.image_size, device=device)
    supcon = SupConLoss()
    identity, triplet = CrossEntropyLabelSmooth(0.1), TripletLoss(0.3)
    image_to_text = ImageToTextCrossEntropy(0.1)

    # Stage 1.
    baseline_prompts = PromptLearner(classes, clip_model, base.template, base.n_ctx).to(device)

    def baseline_prompt_step() -> None:
        prompts = baseline_prompts(pids)
        text = text_encoder(prompts.embeddings, prompts.token_ids).sentence
        (supcon(embedding, text, pids) + supcon(text, embedding, pids)).backward()

    levels = MultiGranularityPromptLearner(classes, clip_model, preset.n_ctx, base.template)
    hierarchical = build_stage1(
        levels.to(device), text_encoder, grid, embed_dim, preset, True, True
    ).to(device)

    def mmpl_prompt_step() -> None:
        hierarchical(patch_map, embedding, pids)["loss"].backward()

    # Stage 2.
    text_levels = [torch.randn(classes, embed_dim, device=device) for _ in preset.n_ctx]
    baseline_model = CLIPReIDModel(clip_model, classes).to(device).train()
    mmpl_model = (
        CLIPReIDModel(clip_model, classes, len(preset.n_ctx), preset.prompt_conv_stride)
        .to(device)
        .train()
    )
    transformation = TransformationLoss(width, embed_dim).to(device)
    clip_model.visual.requires_grad_(True)

    def reid_losses(outputs: CLIPReIDOutput, text: list[torch.Tensor]) -> torch.Tensor:
        ids = sum(identity(logits, pids) for logits in outputs.logits)
        triplets = sum(triplet(features, pids) for features in outputs.triplet_features)
        i2t = multi_granularity_loss(image_to_text, outputs.embedding, text, pids)
        return ids + triplets + i2t

    def baseline_image_step() -> None:
        reid_losses(baseline_model(images), text_levels[:1]).backward()

    def mmpl_image_step() -> None:
        outputs = mmpl_model(images)
        targets = torch.stack([text[pids] for text in text_levels], dim=1)
        loss = reid_losses(outputs, text_levels) + transformation(outputs.prompts, targets)
        loss.backward()

    rows = []
    shape = f"B={batch},L={classes},K={len(preset.n_ctx)},{base.image_size[0]}x{base.image_size[1]}"
    for stage, baseline, mmpl in (
        ("prompts", baseline_prompt_step, mmpl_prompt_step),
        ("image_encoder", baseline_image_step, mmpl_image_step),
    ):
        times = {}
        for method, step in (("clip_reid", baseline), ("mmpl", mmpl)):
            times[method] = time_call(step, device, repeats=args.repeats)
            rows.append(
                BenchmarkRow(f"{stage}_step", shape, method, device.type, "time_s", times[method])
            )
        rows.append(
            BenchmarkRow(
                f"{stage}_step",
                shape,
                "mmpl/clip_reid",
                device.type,
                "ratio",
                times["mmpl"] / times["clip_reid"],
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
