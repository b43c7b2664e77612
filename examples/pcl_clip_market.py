"""PCL-CLIP (Li and Gong, 2023): CLIP fine-tuned with a prototypical contrastive loss.

The image encoder of CLIP, with a BNNeck on its class token and one on its projection, is
fine-tuned with the PCL loss against a memory of class centroids (eq. 4-5), without prompt
learning. Every epoch starts by encoding the train set and re-initialising the memory from the
class means (as the released code does); within the epoch the centroids follow the features
with momentum.

``--mode supervised`` uses the ground-truth identities and adds the ID loss of one classifier
on the concatenated feature, as released (Table 1, ``L_pcl + L_id``). ``--mode unsupervised``
(sec. 4.2) ignores them: each epoch the train features are clustered with DBSCAN on the
k-reciprocal Jaccard distance, outliers are left out of the epoch, the memory holds the
cluster centroids, the patch projection stays frozen and the batches spread each cluster over
its cameras; the adjusted Rand index of the pseudo labels is logged every epoch. The pipeline
is :mod:`reidkit.recipes.pcl_clip`.

Examples::

    # built-in synthetic data and a tiny random CLIP: a few minutes on a 2-core CPU
    python examples/pcl_clip_market.py --mode supervised
    python examples/pcl_clip_market.py --mode unsupervised

    # Market-1501 with ViT-B-16 and the paper's settings, on 2 GPUs
    torchrun --nproc_per_node=2 examples/pcl_clip_market.py --preset paper --mode supervised \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/pcl_clip_market

    # Table 1's rows: the weights of L_pcl, L_id and L_tri (here PCL-CLIP5), and CLIP-ReID's
    # two ID classifiers instead of the released one
    python examples/pcl_clip_market.py --loss-weight pcl=1 id=1 triplet=1
    python examples/pcl_clip_market.py --id-classifier per_neck

    # the paper's 200 iterations per epoch; the camera-aware sampler in the supervised mode
    python examples/pcl_clip_market.py --iterations-per-epoch 200 --sampler camera_aware

    # continue an interrupted run from its last completed epoch (its config.yaml)
    python examples/pcl_clip_market.py --output-dir runs/pcl_clip_market --resume
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reidkit.recipes import arguments, pcl_clip


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    parser = arguments.train_parser(
        pcl_clip.RECIPE,
        description="PCL-CLIP: CLIP fine-tuned with a prototypical contrastive loss",
        default_output_dir="runs/pcl_clip_market",
    )
    parser.add_argument(
        "--mode", choices=pcl_clip.MODES, help="labels: start from the preset of this mode"
    )
    options = parser.add_argument_group("PCL-CLIP")
    for flag, key, text in (
        ("--id-classifier", "id_classifier", "concatenated (released) or per_neck"),
        ("--iterations-per-epoch", "iterations_per_epoch", "batches per epoch; null: one pass"),
        ("--sampler", "sampler", "identity or camera_aware"),
        ("--few-clusters", "clustering.few_clusters", "shrink or skip"),
    ):
        arguments.field_option(parser, flag, key, group=options, help=f"{text} (preset's)")
    args = arguments.parse_train_args(parser, argv)
    if args.mode is not None:  # --mode unsupervised --preset tiny: the preset tiny-unsupervised
        args.preset = pcl_clip.preset_name(args.preset or arguments.DEFAULT_PRESET, args.mode)
    return arguments.train_from_command_line(pcl_clip.RECIPE, parser, args=args)


if __name__ == "__main__":
    main()
