"""VAL-PAT: vision, attribute and language pre-training, then transfer to ReID, attribute
recognition and text-to-image retrieval.

Stage ``pretrain`` trains CLIP's towers, an attribute classifier, their momentum copies and
three key queues on images with pseudo texts and mined attributes (eq. 1-5); the transfer is
evaluated on a ReID data set, on attribute recognition and on zero-shot retrieval; stage
``finetune`` trains the encoders on the ground-truth captions for retrieval. The pipeline is
:mod:`reidkit.recipes.valpat`.

Examples::

    # built-in synthetic pedestrians and a tiny random CLIP: minutes on a 2-core CPU
    python examples/valpat_pretraining.py
    python examples/valpat_pretraining.py --epochs pretrain=0   # without pre-training

    # the paper's settings from scratch on LUPerson with pseudo texts, transfer to
    # DukeMTMC-reID and CUHK-PEDES
    torchrun --nproc_per_node=8 examples/valpat_pretraining.py --preset paper \\
        --pseudo-texts luperson_ta.json --pseudo-images /data/LUPerson/images \\
        --data-root /data/CUHK-PEDES --reid-root /data/DukeMTMC-reID --output-dir runs/valpat
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from reidkit.distributed import cleanup_distributed
from reidkit.engine import build_arg_parser
from reidkit.recipes import replace_field, valpat
from reidkit.recipes.arguments import config_from_args, runtime_from_args

DEFAULT_DATASET = "cuhk_pedes"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_arg_parser(
        "VAL-PAT: multimodal pedestrian pre-training and its transfer",
        default_output_dir="runs/valpat",
    )
    group = parser.add_argument_group("VAL-PAT")
    group.add_argument("--pretrained", help="open_clip tag, CLIP checkpoint or none (preset's)")
    group.add_argument("--pseudo-texts", help="pseudo-text JSON of python -m reidkit.pseudotext")
    group.add_argument("--pseudo-images", help="the folder of the pseudo-text JSON's images")
    group.add_argument("--reid-dataset", help="ReID data set of the transfer (preset's)")
    group.add_argument("--reid-root", help="its folder (preset's)")
    group.add_argument("--no-soft", action="store_true", help="alpha = 0: hard labels only")
    args = parser.parse_args(argv)
    if args.data_root is not None and args.dataset is None:
        args.dataset = DEFAULT_DATASET
    config = config_from_args(valpat.RECIPE, valpat.PRESETS[args.preset], args)
    overrides = {
        "reid.dataset": args.reid_dataset,
        "reid.root": args.reid_root,
        "pretrain.soft_weight": 0.0 if args.no_soft else None,
    }
    for path, value in overrides.items():
        if value is not None:
            config = replace_field(config, path, value)
    if args.pseudo_texts is not None or args.pseudo_images is not None:
        pseudo = dataclasses.replace(
            config.pseudo, captions=args.pseudo_texts, images=args.pseudo_images
        )
        config = dataclasses.replace(config, pseudo=pseudo)
    try:
        return valpat.train(config, runtime_from_args(args))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
