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

    # continue an interrupted run in whichever stage it stopped (its config.yaml)
    python examples/unipt_cuhk_pedes.py --output-dir runs/unipt_cuhk --resume

The same runs through ``reidkit train unipt [options]``; this script adds the shorthands of
the UniPT group (``--pseudo-texts`` for ``pseudo.captions``, ...).
"""

from __future__ import annotations

from reidkit.recipes import arguments, unipt


def main() -> None:
    parser = arguments.train_parser(
        unipt.RECIPE,
        description="UniPT: pre-training on pseudo texts, then text-to-image fine-tuning",
        default_output_dir="runs/unipt",
    )
    group = parser.add_argument_group("UniPT")
    for flag, key, metavar, text in (
        ("--pseudo-texts", "pseudo.captions", "FILE", "JSON of python -m reidkit.pseudotext"),
        ("--pseudo-images", "pseudo.images", "DIR", "the folder of its images"),
    ):
        arguments.field_option(
            parser, flag, key, group=group, metavar=metavar, help=f"{text} (preset's)"
        )
    arguments.field_option(
        parser,
        "--no-mlm",
        "pretrain.mlm_weight",
        group=group,
        action="store_const",
        const=0.0,
        help="beta = 0: no MLM (table 5)",
    )
    arguments.train_from_command_line(unipt.RECIPE, parser)


if __name__ == "__main__":
    main()
