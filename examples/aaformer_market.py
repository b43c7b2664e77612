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

    # table IV's fixed partitions: PCB's six stripes, MGN's branches (global, 2 and 3 stripes)
    python examples/aaformer_market.py --assignment stripes --part-groups 6
    python examples/aaformer_market.py --assignment mgn --part-groups 3,4

    # CUHK03-NP labeled boxes (tables IV-V), eq. 3's raw scores as in the paper preset
    python examples/aaformer_market.py --preset paper-cuhk03 --data-root /data/cuhk03-np

    # continue an interrupted run from its last completed epoch (its config.yaml)
    python examples/aaformer_market.py --output-dir runs/aaformer_market --resume
"""

from __future__ import annotations

from reidkit.recipes import aaformer, arguments


def main() -> None:
    parser = arguments.train_parser(
        aaformer.RECIPE,
        description="AAformer on Market-1501",
        default_output_dir="runs/aaformer_market",
    )
    model = parser.add_argument_group("model")
    for flag, key, text in (
        ("--backbone", "backbone.name", "tiny, timm:<name> or open_clip:<name>"),
        ("--part-groups", "part_groups", "[PART] granularities, e.g. 2,3; [] for none"),
        ("--assignment", "assignment", f"one of {', '.join(aaformer.ASSIGNMENTS)}"),
        ("--similarity", "similarity", "the assignment's scores: dot (eq. 3) or cosine"),
        ("--maps", "part_maps", "query images drawn in part_maps.png"),
    ):
        arguments.field_option(parser, flag, key, group=model, help=f"{text} (preset's)")
    arguments.train_from_command_line(aaformer.RECIPE, parser)


if __name__ == "__main__":
    main()
