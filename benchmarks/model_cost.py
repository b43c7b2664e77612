"""Parameters and FLOPs of every pipeline's model at the papers' size (MMPL table 6).

Each recipe's ``paper`` preset gives the architecture; the model is built with random weights
(no download) by the same builder that rebuilds a trained run (:func:`reidkit.models.
build_model` of the run's ``model.json``), and one image at the preset's input size goes
through its retrieval forward (eval mode) under :class:`torch.utils.flop_counter.
FlopCounterMode`, which counts a multiply-add as two FLOPs (matrix products, attention and
convolutions; normalisations, softmax and activations are not counted, as is usual). The
training-only parts (prompt learners, selector agents, the text tower) are not in the inference
model and not counted; the parameters are the inference model's, the ID classifiers for
Market-1501's 751 identities included. ::

    python benchmarks/model_cost.py      # prints the table, writes results/model_cost.{csv,json}
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from harness import RESULTS_DIR, describe_machine
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from reidkit.data import CLIP_MEAN, CLIP_STD
from reidkit.models import ModelSpec, build_model
from reidkit.recipes import aaformer, clip_reid, mmpl, pcl_clip
from reidkit.recipes.common import clip_model_spec

MARKET_IDENTITIES = 751


def _cpu_attention_flops(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """``Q K^T`` and ``A V`` of the CPU's fused attention, which the counter has no formula for."""
    return sdpa_flop_count(query, key, value)  # the counter passes shapes


# The counter's own formulas cover the CUDA attention kernels; the CPU's is added here.
CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def paper_specs(num_classes: int = MARKET_IDENTITIES) -> dict[str, dict[str, Any]]:
    """``{pipeline: model.json mapping}`` of every image-retrieval pipeline's paper preset."""
    baseline, ours = clip_reid.PRESETS["paper"], mmpl.PRESETS["paper"]
    visual = ours.visual_prompts
    pcl = pcl_clip.PRESETS["paper"]
    aligned = aaformer.PRESETS["paper"]
    return {
        "CLIP-ReID": clip_model_spec(
            "clip_reid", "clip_reid", baseline.clip, baseline.data, num_classes
        ),
        "MMPL": clip_model_spec(
            "clip_reid",
            "mmpl",
            ours.clip,
            ours.data,
            num_classes,
            num_visual_prompts=ours.levels.count if visual.enabled else 0,
            prompt_conv_stride=visual.conv_stride,
        ),
        "AAformer": aaformer.model_spec(aligned, CLIP_MEAN, CLIP_STD, num_classes),
        "PCL-CLIP": clip_model_spec(
            "pcl_clip", "pcl_clip", pcl.clip, pcl.data, num_classes, normalize=True
        ),
    }


def model_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """Parameters and forward FLOPs of one image for the model of ``spec``."""
    description = ModelSpec.from_json(spec)
    model = build_model(description).eval()
    height, width = description.image_size
    images = torch.zeros(1, 3, height, width)
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)
    # With gradients enabled nn.MultiheadAttention takes its composite path, whose matrix
    # products the counter sees (its fused inference kernel is opaque to it); no backward runs.
    with torch.enable_grad(), counter:
        model(images)
    return {
        "architecture": description.architecture,
        "image_size": [height, width],
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "flops": counter.get_total_flops(),
        "flops_by_operator": {
            str(name): count for name, count in counter.get_flop_counts()["Global"].items()
        },
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--pipelines", nargs="+", default=None, help="default: all")
    args = parser.parse_args(argv)
    specs = paper_specs()
    chosen = args.pipelines or list(specs)
    rows = {name: model_cost(specs[name]) for name in chosen}
    result = {
        "command": "python benchmarks/model_cost.py " + " ".join(sys.argv[1:]),
        "machine": describe_machine(),
        "identities": MARKET_IDENTITIES,
        "models": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "model_cost.json").write_text(json.dumps(result, indent=2), "utf-8")
    with (args.output_dir / "model_cost.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["pipeline", "architecture", "image_size", "parameters_M", "GFLOPs"])
        for name, row in rows.items():
            size = "x".join(map(str, row["image_size"]))
            writer.writerow(
                [
                    name,
                    row["architecture"],
                    size,
                    f"{row['parameters'] / 1e6:.2f}",
                    f"{row['flops'] / 1e9:.2f}",
                ]
            )
    print(f"{'pipeline':<10} {'input':>8} {'params (M)':>11} {'GFLOPs':>8}")
    for name, row in rows.items():
        size = "x".join(map(str, row["image_size"]))
        print(f"{name:<10} {size:>8} {row['parameters'] / 1e6:>11.2f} {row['flops'] / 1e9:>8.2f}")
    return result


if __name__ == "__main__":
    main()
