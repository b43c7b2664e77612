"""CLIP-ReID (Li et al., AAAI 2023): the two-stage baseline on Market-1501 or the built-in data.

Stage 1 ("prompts") learns one set of prompt tokens per identity against image features
computed once by the frozen image encoder, with ``L_i2t + L_t2i`` (CLIP-ReID eq. 2-4); both
CLIP towers stay frozen. Stage 2 ("image_encoder") computes every identity's text feature
once with the learned prompts and fine-tunes the image encoder with the ID loss on two BNNecks,
the triplet loss on three features and the image-to-text cross-entropy against the cached text
features (eq. 5-6). The pipeline is :mod:`reidkit.recipes.clip_reid`; this script maps the
command line onto its configuration and runtime.

Examples::

    # built-in synthetic data and a tiny random CLIP: a few minutes on a 2-core CPU
    python examples/clip_reid_market.py

    # Market-1501 with ViT-B-16 and the published hyperparameters, on 2 GPUs
    torchrun --nproc_per_node=2 examples/clip_reid_market.py --preset paper \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/clip_reid_market

    # continue an interrupted run from its last completed epoch
    python examples/clip_reid_market.py --preset paper --data-root ... --resume
"""

from __future__ import annotations

from reidkit.distributed import cleanup_distributed
from reidkit.engine import build_arg_parser
from reidkit.recipes import clip_reid
from reidkit.recipes.arguments import config_from_args, runtime_from_args


def main() -> None:
    parser = build_arg_parser(
        "CLIP-ReID two-stage baseline", default_output_dir="runs/clip_reid_market"
    )
    parser.add_argument(
        "--pretrained", default=None, help="open_clip tag, local CLIP checkpoint or none (preset's)"
    )
    args = parser.parse_args()
    config = config_from_args(clip_reid.RECIPE, clip_reid.PRESETS[args.preset], args)
    try:
        clip_reid.train(config, runtime_from_args(args))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
