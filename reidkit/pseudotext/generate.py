"""Pseudo texts for a folder of images: divide, conquer and combine in one call (UniPT sec. 3.1).

:func:`generate_pseudo_texts` scores every image of a folder against the prompts of a
vocabulary with a frozen CLIP (:func:`~reidkit.pseudotext.conquer.score_prompts`), selects a
phrase per attribute (:func:`~reidkit.pseudotext.conquer.select_phrases`), writes captions
from templates (:class:`~reidkit.pseudotext.combine.PseudoTextComposer`) and saves them to a
JSON list, one entry per image::

    [{"file_path": "part1/0001.jpg",                 # relative to the folder
      "captions": ["A man in a blue shirt ..."],
      "attributes": {"gender": "man", "bag": null, ...}}, ...]

``python -m reidkit.pseudotext`` is its command line; :func:`read_pseudo_texts` reads such a file
back as pre-training data (captioned images and attribute labels).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from reidkit.data import CaptionedImage, ReIDImageDataset, build_test_transforms
from reidkit.engine import atomic_write_text
from reidkit.pseudotext.combine import PseudoTextComposer
from reidkit.pseudotext.conquer import score_prompts, select_phrases
from reidkit.pseudotext.vocabulary import AttributeVocabulary

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
"""The file suffixes :func:`find_images` collects (any case)."""


def find_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted by path.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
    images = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise ValueError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} file")
    return images


def generate_pseudo_texts(
    image_folder: str | Path,
    output: str | Path,
    clip_model: nn.Module,
    tokenize: Callable[[Sequence[str]], Tensor],
    vocabulary: AttributeVocabulary,
    templates: Sequence[str],
    *,
    threshold: float = 0.9,
    scope: str = "attribute",
    seed: int = 0,
    captions_per_image: int = 1,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """Write pseudo captions of every image of ``image_folder`` to the JSON file ``output``.

    Args:
        image_folder: the images (searched recursively, :func:`find_images`).
        output: the JSON file to write (atomically).
        clip_model: a frozen open_clip CLIP; images are resized to its input size and
            normalised with CLIP's statistics.
        tokenize: its tokenizer.
        vocabulary: attributes, phrases, prompts and synonyms.
        templates: caption templates (:mod:`reidkit.pseudotext.combine`).
        threshold: of the optional attributes (0.9).
        scope: their softmax, ``"attribute"`` or ``"all"`` (:mod:`reidkit.pseudotext.conquer`).
        seed: of the template and synonym draws; with the image's relative path it fixes its
            captions.
        captions_per_image: captions per image.
        batch_size: images per CLIP batch.
        device: where CLIP runs.
        num_workers: image-loading processes.

    Returns:
        The entries written.
    """
    folder = Path(image_folder)
    paths = find_images(folder)
    composer = PseudoTextComposer(vocabulary, templates, seed)
    image_size = tuple(getattr(clip_model.visual, "image_size", (224, 224)))
    loader = DataLoader(
        ReIDImageDataset([(str(path), 0, 0) for path in paths], build_test_transforms(image_size)),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    logits = score_prompts(clip_model, tokenize, loader, vocabulary, device)
    entries = []
    for path, selection in zip(paths, select_phrases(logits, vocabulary, threshold, scope)):
        key = path.relative_to(folder).as_posix()
        entries.append(
            {
                "file_path": key,
                "captions": list(composer.compose(selection, key, captions_per_image)),
                "attributes": selection,
            }
        )
    atomic_write_text(json.dumps(entries, indent=1), output)
    return entries


def read_pseudo_texts(
    path: str | Path, image_folder: str | Path
) -> tuple[list[CaptionedImage], np.ndarray, list[str]]:
    """The images, captions and attribute labels of a file written by
    :func:`generate_pseudo_texts`.

    Args:
        path: the JSON file.
        image_folder: the folder its ``file_path`` entries are relative to.

    Returns:
        ``(records, labels, names)``: one :class:`~reidkit.data.CaptionedImage` per entry (its
        index as ``pid``, camera ``-1``: pseudo texts name no identity); ``(N, M)`` uint8
        labels, 1 where the image's attribute took the phrase of the column; the ``M``
        columns ``"attribute=phrase"``, every selected (attribute, phrase) pair, sorted.

    Raises:
        FileNotFoundError: the file or an image is missing.
        ValueError: an entry without ``file_path``, captions or attributes.
    """
    path, folder = Path(path), Path(image_folder)
    if not path.is_file():
        raise FileNotFoundError(f"pseudo-text file {path} does not exist")
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path} must hold a non-empty JSON list of entries")
    records, selections = [], []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"file_path", "captions", "attributes"} <= set(entry):
            raise ValueError(
                f"{path} entry {index} must have 'file_path', 'captions' and 'attributes'"
            )
        image = folder / entry["file_path"]
        if not image.is_file():
            raise FileNotFoundError(f"{path} entry {index}: image {image} does not exist")
        if not entry["captions"]:
            raise ValueError(f"{path} entry {index} has no caption")
        records.append(CaptionedImage(str(image), index, -1, tuple(entry["captions"])))
        selections.append(
            {f"{name}={phrase}" for name, phrase in entry["attributes"].items() if phrase}
        )
    names = sorted(set().union(*selections))
    labels = np.array([[name in chosen for name in names] for chosen in selections], np.uint8)
    return records, labels.reshape(len(records), len(names)), names
