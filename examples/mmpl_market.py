"""MMPL (multi-granularity multi-modal prompt learning): the two-stage pipeline on Market-1501.

Stage 1 ("prompts", hierarchical prompt learning, sec. 3.2): the frozen image encoder's patch
map is cut into ``M_c`` patches per level; per level a selector agent keeps ``M`` of them, and
the ``K`` levels of ID-specific prompts learn from the contrastive losses and the
patch-to-token OT loss (eq. 20). Stage 2 ("image_encoder", collaborative prompt learning,
sec. 3.3): the image encoder, with ``K`` visual prompts appended to its tokens, learns from ID,
triplet, the image-to-text cross-entropy against the ``K`` levels of text features and the
transformation loss (eq. 24). The pipeline is :mod:`reidkit.recipes.mmpl`; with the baseline
(the tiny preset's default) the CLIP-ReID run of the same settings is trained first into
``<output-dir>/clip_reid`` and the two runs' reports are compared in a table.

Examples::

    # synthetic data and a tiny random CLIP: CLIP-ReID baseline and MMPL, R1/mAP table
    python examples/mmpl_market.py

    # Market-1501 with ViT-B/16 and the paper's settings (sec. 4.2)
    python examples/mmpl_market.py --preset paper --data-root /data/Market-1501-v15.09.15 \\
        --output-dir runs/mmpl_market
    torchrun --nproc_per_node=2 examples/mmpl_market.py --preset paper --data-root ...

    # ablations (tables 3-5, figs. 4-8), each row one command:
    python examples/mmpl_market.py --no-hpl --no-cpl           # table 3: baseline
    python examples/mmpl_market.py --no-cpl                    # table 3: HPL only
    python examples/mmpl_market.py --no-hpl                    # table 3: CPL only
    python examples/mmpl_market.py --no-agent --no-alignment   # table 4: neither ISA nor PTA
    python examples/mmpl_market.py --no-alignment              # table 4: ISA without PTA
    python examples/mmpl_market.py --no-agent                  # table 4: PTA, attention masks
    python examples/mmpl_market.py --levels 2                  # table 5: K = 2
    python examples/mmpl_market.py --levels 1 --n-ctx 8        # figs. 4-6: N at k = 1
    python examples/mmpl_market.py --alpha 1 --beta 0.01       # figs. 7-8: alpha / beta = 100
    python examples/mmpl_market.py --tau 0.05                  # tau of eq. 18

    # stage 2 as printed (eq. 24 unit weights, eq. 23 printed) or CLIP-ReID's weighting
    python examples/mmpl_market.py --preset tiny-paper
    python examples/mmpl_market.py --transformation printed --image-to-text-levels sum

    # stage 1 faster: other identities' prompts without gradients, refreshed every 20 steps
    python examples/mmpl_market.py --text-gradient batch --text-refresh-every 20

    # continue an interrupted run at whichever stage it stopped (its config.yaml)
    python examples/mmpl_market.py --resume
"""

from __future__ import annotations

import argparse

from reidkit.recipes import arguments, compare_reports, load_config, mmpl


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = arguments.train_parser(
        mmpl.RECIPE, description="MMPL two-stage pipeline", default_output_dir="runs/mmpl_market"
    )
    ablation = parser.add_argument_group("ablations (paper tables 3-5)")
    ablation.add_argument(
        "--no-agent",
        action="store_true",
        help="no selector agents: select by class-token attention (with alignment)",
    )
    ablation.add_argument(
        "--no-alignment",
        action="store_true",
        help="no patch-to-token OT: the agents' pooled selection in the contrastive losses, "
        "or with --no-agent the global contrastive losses only",
    )
    ablation.add_argument(
        "--no-cpl", action="store_true", help="no visual prompts, no transformation loss"
    )
    ablation.add_argument(
        "--no-hpl", action="store_true", help="one global prompt level, no agent, no alignment"
    )
    ablation.add_argument("--levels", type=int, default=None, help="granularity levels K")
    ablation.add_argument("--n-ctx", type=int, nargs="+", help="N_k per level (preset's)")
    ablation.add_argument("--patch-counts", type=int, nargs="+", help="M_c per level (preset's)")
    ablation.add_argument("--selected", type=int, nargs="+", help="M per level (preset's)")
    for flag, key, kind, text in (
        ("--alpha", "alpha", float, "alpha_k of eq. 20 (contrastive losses)"),
        ("--beta", "beta", float, "beta_k of eq. 20 (alignment loss)"),
        ("--tau", "alignment.temperature", float, "temperature tau of eq. 18"),
        (
            "--transformation-margin",
            "visual_prompts.transformation_margin",
            float,
            "hinge margin of the stabilised eq. 23 (default: from the text targets)",
        ),
        (
            "--text-refresh-every",
            "text_encoding.refresh_every",
            int,
            "with --text-gradient batch: re-encode the other identities every N steps",
        ),
    ):
        arguments.field_option(parser, flag, key, group=ablation, type=kind, help=text)
    for flag, key, choices, text in (
        (
            "--transformation",
            "visual_prompts.transformation_form",
            ("stabilised", "printed"),
            "eq. 23 bounded per coordinate, or as printed",
        ),
        (
            "--image-to-text-levels",
            "image_to_text_levels",
            ("mean", "sum"),
            "stage 2's image-to-text term over the K levels",
        ),
        (
            "--text-gradient",
            "text_encoding.gradient",
            ("all", "batch"),
            "stage 1: every identity's prompts with gradients (exact), or the batch's only",
        ),
    ):
        arguments.field_option(parser, flag, key, group=ablation, choices=choices, help=text)
    arguments.field_option(
        parser,
        "--agent-reads-scores",
        "agent.reads_scores",
        group=ablation,
        action="store_const",
        const=True,
        help="the agents' policy reads (s^f, s^e), not s^f alone (eq. 7)",
    )
    arguments.field_option(
        parser,
        "--baseline",
        "compare_baseline",
        action=argparse.BooleanOptionalAction,
        help="also train the CLIP-ReID baseline and print a table (default: the preset's)",
    )
    return parser, arguments.parse_train_args(parser)


def ablate(config: mmpl.MMPLConfig, args: argparse.Namespace) -> mmpl.MMPLConfig:
    """The levels and the ablations that the options ask for."""
    levels = None if args.no_hpl else args.levels  # --no-hpl: one level
    config = mmpl.select_levels(
        config, levels, n_ctx=args.n_ctx, patch_counts=args.patch_counts, selected=args.selected
    )
    for wanted, without in (
        (args.no_hpl, mmpl.without_hierarchy),
        (args.no_agent, mmpl.without_agent),
        (args.no_alignment, mmpl.without_alignment),
        (args.no_cpl, mmpl.without_visual_prompts),
    ):
        config = without(config) if wanted else config
    return config


def main() -> None:
    parser, args = parse_args()
    results = arguments.train_from_command_line(mmpl.RECIPE, parser, args=args, adapt=ablate)
    _, config = load_config(args.output_dir / "config.yaml")  # what the run trained
    if results is not None and config.compare_baseline:  # rank 0
        print(compare_reports([args.output_dir / mmpl.BASELINE_FOLDER, args.output_dir]))


if __name__ == "__main__":
    main()
