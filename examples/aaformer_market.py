"""AAformer (Auto-Aligned Transformer): [PART] tokens with optimal-transport patch assignment.

A ViT whose attention layers become Multi-head Auto-Alignment (AAformer sec. III-B), trained
with a BNNeck and classifier per output token, label-smoothed cross-entropy over the CLS and
[PART] tokens and triplet losses on CLS and on the concatenated [PART]s (eq. 6-8). Retrieval
uses CLS and [PART]s concatenated, with Euclidean distances. At the end, the [PART] attention
maps of a few query images are drawn to ``part_maps.png`` (Fig. 5) and the mean number of
patches each [PART] receives is reported. The pipeline is :mod:`reidkit.recipes.aaformer`.

Examples::

    # built-in synthetic data and a tiny random ViT: a few minutes on a 2-core CPU
    python examples/aaformer_market.py

    # Market-1501 with the paper's settings (ImageNet ViT-B/16, 256x128, SGD, 120 epochs)
    torchrun --nproc_per_node=2 examples/aaformer_market.py --preset paper \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/aaformer_market

    # a CLIP image tower instead of the ImageNet ViT, and the nearest-neighbour ablation
    python examples/aaformer_market.py --preset paper --data-root ... \\
        --backbone open_clip:ViT-B-16 --pretrained openai --assignment nearest

    # continue an interrupted run from its last completed epoch
    python examples/aaformer_market.py --preset paper --data-root ... --resume
"""

from __future__ import annotations

import argparse

from reidkit.distributed import cleanup_distributed
from reidkit.engine import build_arg_parser
from reidkit.recipes import aaformer, replace_field
from reidkit.recipes.arguments import config_from_args, runtime_from_args


def parse_args() -> argparse.Namespace:
    parser = build_arg_parser("AAformer on Market-1501", default_output_dir="runs/aaformer_market")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", help="tiny, timm:<name> or open_clip:<name> (preset's)")
    model.add_argument("--pretrained", help="weights: none, default or a tag (preset's)")
    model.add_argument(
        "--part-groups",
        type=lambda text: tuple(int(size) for size in text.split(",") if size),
        help="[PART] granularities, e.g. 2,3 (preset's); an empty string for none",
    )
    model.add_argument("--assignment", choices=aaformer.ASSIGNMENTS, help="(preset's)")
    model.add_argument("--maps", type=int, help="query images drawn in part_maps.png (preset's)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = config_from_args(aaformer.RECIPE, aaformer.PRESETS[args.preset], args)
    for path, value in (
        ("backbone.name", args.backbone),
        ("part_groups", args.part_groups),
        ("assignment", args.assignment),
        ("part_maps", args.maps),
    ):
        if value is not None:
            config = replace_field(config, path, value)
    try:
        aaformer.train(config, runtime_from_args(args))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
