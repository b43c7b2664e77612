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

    # continue an interrupted run in whichever stage it stopped (its config.yaml)
    python examples/valpat_pretraining.py --output-dir runs/valpat --resume

The same runs through ``reidkit train valpat [options]``; this script adds the shorthands of
the VAL-PAT group (``--reid-root`` for ``reid.root``, ...).
"""

from __future__ import annotations

from reidkit.recipes import arguments, valpat


def main() -> None:
    parser = arguments.train_parser(
        valpat.RECIPE,
        description="VAL-PAT: multimodal pedestrian pre-training and its transfer",
        default_output_dir="runs/valpat",
    )
    group = parser.add_argument_group("VAL-PAT")
    for flag, key, metavar, text in (
        ("--pseudo-texts", "pseudo.captions", "FILE", "JSON of python -m reidkit.pseudotext"),
        ("--pseudo-images", "pseudo.images", "DIR", "the folder of its images"),
        ("--reid-dataset", "reid.dataset", "NAME", "ReID data set of the transfer, or none"),
        ("--reid-root", "reid.root", "DIR", "its folder"),
    ):
        arguments.field_option(
            parser, flag, key, group=group, metavar=metavar, help=f"{text} (preset's)"
        )
    arguments.field_option(
        parser,
        "--no-soft",
        "pretrain.soft_weight",
        group=group,
        action="store_const",
        const=0.0,
        help="alpha = 0: hard labels only (table 8)",
    )
    arguments.train_from_command_line(valpat.RECIPE, parser)


if __name__ == "__main__":
    main()
