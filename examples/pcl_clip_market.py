"""PCL-CLIP (Li and Gong, 2023): CLIP fine-tuned with a prototypical contrastive loss.

The image encoder of CLIP, with a BNNeck on its class token and one on its projection, is
fine-tuned with the PCL loss against a memory of class centroids (eq. 4-5), without prompt
learning. Every epoch starts by encoding the train set and re-initialising the memory from the
class means (as the released code does); within the epoch the centroids follow the features
with momentum.

``--mode supervised`` uses the ground-truth identities and adds the ID loss (Table 1,
``L_pcl + L_id``). ``--mode unsupervised`` (sec. 4.2) ignores them: each epoch the train
features are clustered with DBSCAN on the k-reciprocal Jaccard distance, outliers are left out
of the epoch, the memory holds the cluster centroids, and the patch projection stays frozen.
The pipeline is :mod:`reidkit.recipes.pcl_clip`.

Examples::

    # built-in synthetic data and a tiny random CLIP: a few minutes on a 2-core CPU
    python examples/pcl_clip_market.py --mode supervised
    python examples/pcl_clip_market.py --mode unsupervised

    # Market-1501 with ViT-B-16 and the paper's settings, on 2 GPUs
    torchrun --nproc_per_node=2 examples/pcl_clip_market.py --preset paper --mode supervised \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/pcl_clip_market

    # continue an interrupted run from its last completed epoch
    python examples/pcl_clip_market.py --preset paper --data-root ... --resume
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reidkit.distributed import cleanup_distributed
from reidkit.engine import build_arg_parser
from reidkit.recipes import pcl_clip
from reidkit.recipes.arguments import config_from_args, runtime_from_args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_arg_parser(
        "PCL-CLIP: CLIP fine-tuned with a prototypical contrastive loss",
        default_output_dir="runs/pcl_clip_market",
    )
    parser.add_argument("--mode", choices=pcl_clip.MODES, default="supervised", help="labels")
    parser.add_argument(
        "--pretrained", default=None, help="open_clip tag, local CLIP checkpoint or none (preset's)"
    )
    args = parser.parse_args(argv)
    config = config_from_args(pcl_clip.RECIPE, pcl_clip.preset(args.preset, args.mode), args)
    try:
        return pcl_clip.train(config, runtime_from_args(args))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
