"""CLIP-ReID (Li et al., AAAI 2023): the two-stage baseline on Market-1501 or the built-in data.

Stage 1 ("prompts") learns one set of prompt tokens per identity against image features
computed once by the frozen image encoder, with ``L_i2t + L_t2i`` (CLIP-ReID eq. 2-4); both
CLIP towers stay frozen. Stage 2 ("image_encoder") computes every identity's text feature
once with the learned prompts and fine-tunes the image encoder with the ID loss on two BNNecks,
the triplet loss on three features and the image-to-text cross-entropy against the cached text
features (eq. 5-6). The pipeline is :mod:`reidkit.recipes.clip_reid`; this script is
``reidkit train clip_reid`` written out, over the same command-line machinery
(:mod:`reidkit.recipes.arguments`).

Examples::

    # built-in synthetic data and a tiny random CLIP: a few minutes on a 2-core CPU
    python examples/clip_reid_market.py

    # Market-1501 with ViT-B-16 and the published hyperparameters, on 2 GPUs
    torchrun --nproc_per_node=2 examples/clip_reid_market.py --preset paper \\
        --data-root /data/Market-1501-v15.09.15 --output-dir runs/clip_reid_market

    # any field of the configuration, by its dotted key (or yacs-style KEY VALUE pairs)
    python examples/clip_reid_market.py --set image_stage.lr=1e-3 loss.id_weight 0.5

    # continue an interrupted run from its last completed epoch (its config.yaml)
    python examples/clip_reid_market.py --output-dir runs/clip_reid_market --resume
"""

from __future__ import annotations

from reidkit.recipes import arguments, clip_reid


def main() -> None:
    parser = arguments.train_parser(
        clip_reid.RECIPE,
        description="CLIP-ReID two-stage baseline",
        default_output_dir="runs/clip_reid_market",
    )
    arguments.train_from_command_line(clip_reid.RECIPE, parser)


if __name__ == "__main__":
    main()
