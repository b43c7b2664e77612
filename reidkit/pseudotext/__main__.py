"""Command line of :func:`reidkit.pseudotext.generate_pseudo_texts`.

Examples::

    # a vocabulary and templates of your own (JSON), OpenAI's ViT-B/16
    python -m reidkit.pseudotext /data/LUPerson/images --output luperson_t.json \\
        --vocabulary unipt_vocabulary.json --templates unipt_templates.json

    # the synthetic pedestrians' vocabulary and templates
    python -m reidkit.pseudotext ~/.cache/reidkit/synthetic-reid-*/bounding_box_train \\
        --output pseudo.json --vocabulary synthetic --templates synthetic
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from reidkit.clip import load_clip
from reidkit.distributed import init_distributed
from reidkit.pseudotext.combine import SYNTHETIC_TEMPLATES
from reidkit.pseudotext.conquer import SOFTMAX_SCOPES
from reidkit.pseudotext.generate import generate_pseudo_texts
from reidkit.pseudotext.vocabulary import AttributeVocabulary, synthetic_vocabulary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reidkit.pseudotext",
        description="Write CLIP pseudo captions for a folder of person images (UniPT sec. 3.1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--vocabulary", default="synthetic", help="'synthetic' or a vocabulary JSON file"
    )
    parser.add_argument(
        "--templates",
        default="synthetic",
        help="'synthetic' or a JSON file holding a list of caption templates",
    )
    parser.add_argument(
        "--clip", default="ViT-B-16", help="open_clip model name or a model config JSON file"
    )
    parser.add_argument(
        "--pretrained", default="openai", help="open_clip weight tag or file; 'none': random"
    )
    parser.add_argument("--threshold", type=float, default=0.9, help="optional attributes")
    parser.add_argument("--scope", choices=SOFTMAX_SCOPES, default="attribute", help="softmax")
    parser.add_argument("--seed", type=int, default=0, help="template and synonym draws")
    parser.add_argument("--captions-per-image", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    vocabulary = (
        synthetic_vocabulary()
        if args.vocabulary == "synthetic"
        else AttributeVocabulary.from_json(args.vocabulary)
    )
    templates = (
        list(SYNTHETIC_TEMPLATES)
        if args.templates == "synthetic"
        else json.loads(Path(args.templates).read_text(encoding="utf-8"))
    )
    name = args.clip
    if name.endswith(".json"):
        name = json.loads(Path(name).read_text(encoding="utf-8"))
    device = init_distributed(args.device).device
    pretrained = None if args.pretrained == "none" else args.pretrained
    clip_model, tokenizer = load_clip(name, pretrained, image_size=None, device=device)
    clip_model.requires_grad_(False)
    entries = generate_pseudo_texts(
        args.images,
        args.output,
        clip_model,
        tokenizer,
        vocabulary,
        templates,
        threshold=args.threshold,
        scope=args.scope,
        seed=args.seed,
        captions_per_image=args.captions_per_image,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.num_workers,
    )
    print(f"wrote {len(entries)} images' captions to {args.output}")


if __name__ == "__main__":
    main()
