"""UniPT: pre-training on pseudo texts, then text-to-image fine-tuning (CUHK-PEDES and kin).

Stage ``pretrain`` trains CLIP's two towers with UniPT's 1x1 projections and max-pooling on
images with pseudo texts (contrastive + masked language modelling, eq. 1-3); stage
``finetune`` trains them on the data set's ground-truth captions (ID + ranking, eq. 4, 5, 7);
then text-to-image retrieval (R@1/5/10, mAP, mINP). The pipeline is
:mod:`reidkit.recipes.unipt`; the pseudo texts come from ``python -m reidkit.pseudotext``.

Examples::

    # built-in captioned synthetic pedestrians and a tiny random CLIP: minutes on a 2-core CPU
    python examples/unipt_cuhk_pedes.py
    python examples/unipt_cuhk_pedes.py --epochs pretrain=0     # without pre-training

    # CUHK-PEDES with CLIP ViT-B/16 and the paper's settings, pseudo texts of LUPerson images
    python -m reidkit.pseudotext /data/LUPerson/images --output luperson_t.json \\
        --vocabulary unipt_vocabulary.json --templates unipt_templates.json
    torchrun --nproc_per_node=8 examples/unipt_cuhk_pedes.py --preset paper \\
        --data-root /data/CUHK-PEDES --pseudo-texts luperson_t.json \\
        --pseudo-images /data/LUPerson/images --output-dir runs/unipt_cuhk

    # continue an interrupted run in whichever stage it stopped
    python examples/unipt_cuhk_pedes.py --preset paper --data-root ... --resume
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from reidkit.distributed import cleanup_distributed
from reidkit.engine import build_arg_parser
from reidkit.recipes import replace_field, unipt
from reidkit.recipes.arguments import config_from_args, runtime_from_args

DEFAULT_DATASET = "cuhk_pedes"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_arg_parser(
        "UniPT: pre-training on pseudo texts, then text-to-image fine-tuning",
        default_output_dir="runs/unipt",
    )
    group = parser.add_argument_group("UniPT")
    group.add_argument("--pretrained", help="open_clip tag, CLIP checkpoint or none (preset's)")
    group.add_argument("--pseudo-texts", help="pseudo-text JSON of python -m reidkit.pseudotext")
    group.add_argument("--pseudo-images", help="the folder of the pseudo-text JSON's images")
    group.add_argument("--no-mlm", action="store_true", help="beta = 0: no MLM (table 5)")
    args = parser.parse_args(argv)
    if args.data_root is not None and args.dataset is None:
        args.dataset = DEFAULT_DATASET
    config = config_from_args(unipt.RECIPE, unipt.PRESETS[args.preset], args)
    if args.pseudo_texts is not None or args.pseudo_images is not None:
        pseudo = dataclasses.replace(
            config.pseudo, captions=args.pseudo_texts, images=args.pseudo_images
        )
        config = dataclasses.replace(config, pseudo=pseudo)
    if args.no_mlm:
        config = replace_field(config, "pretrain.mlm_weight", 0.0)
    try:
        return unipt.train(config, runtime_from_args(args))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
