"""SyntheticCaptionedReID: synthetic pedestrians with captions, attribute labels, pseudo texts.

Text-to-image data that needs no download. The images are those of
:class:`~reidkit.data.SyntheticReID`; the captions are written from the attributes each person
was drawn with into a CUHK-PEDES style JSON file beside them, which the CUHK-PEDES parser reads
back, so the synthetic and the real text data go through the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.data.attributes import (
    ATTRIBUTE_LABELS,
    corrupt_attributes,
    pedestrian_attributes,
)
from reidkit.data.attributes import attribute_labels as multi_hot
from reidkit.data.captions import SENTENCES, compose_captions
from reidkit.data.folder import MARKET_STYLE_PATTERN
from reidkit.data.pedes import parse_caption_annotations
from reidkit.data.synthetic import SyntheticReID, synthetic_identity
from reidkit.data.text_splits import CaptionedImage, TextReIDSplits

CAPTION_VERSION = 1
"""Bumped whenever the captions or their corruption change, so that old files are not reused."""


class SyntheticCaptionedReID(TextReIDSplits):
    """:class:`~reidkit.data.SyntheticReID`'s pedestrians, each image with ground-truth captions,
    multi-hot attribute labels and noisy pseudo captions.

    Splits: ``train`` holds the synthetic train images (pids relabelled to ``0..C-1``),
    ``test`` the query and gallery images of the test identities (distractors and junk left
    out, since no caption describes them), ``val`` is empty. ``camid`` is read from the
    Market-style file names.

    Ground truth: each image gets ``captions_per_image`` captions written by
    :func:`~reidkit.data.captions.compose_captions` from the attributes the person was drawn
    with (:func:`~reidkit.data.attributes.pedestrian_attributes`), each from a different
    template, with synonyms. The attributes are the same for every image of a person; which
    template and words describe them changes from image to image.

    Pseudo texts stand in for the attribute prompts a frozen CLIP scores (UniPT's conquer
    stage) and for the captions mined from such texts (VAL-PAT): for every image, each visible
    attribute is replaced with probability ``corruption_probability`` by another of its values
    (:func:`~reidkit.data.attributes.corrupt_attributes`) and ``captions_per_image`` captions
    are written from the result.

    Everything is deterministic in ``seed`` and the other arguments. The annotations are
    written once to ``captions-<hash>.json`` in the image folder (a CUHK-PEDES style list of
    ``{"split", "id", "file_path", "captions"}`` entries, plus ``attributes``,
    ``pseudo_attributes`` and ``pseudo_captions``) and reused afterwards.

    Args:
        root: cache folder (see :class:`~reidkit.data.SyntheticReID`).
        captions_per_image: ground-truth (and pseudo) captions per image, 1 to 4.
        corruption_probability: chance that a pseudo text gets an attribute wrong.
        synthetic_kwargs: arguments of :class:`~reidkit.data.SyntheticReID` (``seed``,
            ``num_train_ids``, ...); its ``default`` variant only, since the captions do not
            describe local cues.

    Raises:
        ValueError: an argument outside its range.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        captions_per_image: int = 2,
        corruption_probability: float = 0.2,
        **synthetic_kwargs: Any,
    ) -> None:
        if not 1 <= captions_per_image <= len(SENTENCES):
            raise ValueError(
                f"captions_per_image={captions_per_image!r}; expected an integer in "
                f"[1, {len(SENTENCES)}]"
            )
        if not 0.0 <= corruption_probability <= 1.0:
            raise ValueError(
                f"corruption_probability={corruption_probability!r}; expected a number in [0, 1]"
            )
        if synthetic_kwargs.get("variant", "default") != "default":
            raise ValueError(
                f"variant={synthetic_kwargs['variant']!r}; expected 'default' (the captions do "
                "not describe local cues)"
            )
        self.images = SyntheticReID(root, **synthetic_kwargs)
        self.root = self.images.root
        self.captions_per_image = captions_per_image
        self.corruption_probability = corruption_probability
        settings = json.dumps(
            {
                "version": CAPTION_VERSION,
                "captions_per_image": captions_per_image,
                "corruption_probability": corruption_probability,
            },
            sort_keys=True,
        )
        key = hashlib.sha256(settings.encode()).hexdigest()[:12]
        self.annotation_file = self.root / f"captions-{key}.json"
        if not self.annotation_file.is_file():
            _write_atomically(self.annotation_file, self._annotations())
        splits = parse_caption_annotations(
            self.annotation_file,
            self.root,
            camera_pattern=MARKET_STYLE_PATTERN,
            num_cameras=self.images.config.num_cameras,
        )
        self._set_splits(**splits)
        self._entries: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
        for entry in json.loads(self.annotation_file.read_text(encoding="utf-8")):
            self._entries[entry["split"]].append(entry)

    def _annotations(self) -> list[dict[str, Any]]:
        """One annotation entry per captioned image: train images, then test queries and gallery."""
        config = self.images.config
        images = [("train", path) for path, _, _ in self.images.train]
        images += [
            ("test", path) for path, pid, _ in self.images.query + self.images.gallery if pid
        ]
        attributes_of: dict[int, dict[str, str | None]] = {}
        entries = []
        for index, (split, path) in enumerate(images):
            pid = int(Path(path).name.split("_")[0])
            if pid not in attributes_of:
                attributes_of[pid] = pedestrian_attributes(synthetic_identity(config, pid))
            attributes = attributes_of[pid]
            noise = np.random.default_rng([config.seed, 9, index])
            pseudo = corrupt_attributes(attributes, self.corruption_probability, noise)
            entries.append(
                {
                    "split": split,
                    "id": pid,
                    "file_path": str(Path(path).relative_to(self.root)),
                    "captions": list(
                        compose_captions(
                            attributes,
                            self.captions_per_image,
                            np.random.default_rng([config.seed, 8, index]),
                        )
                    ),
                    "attributes": attributes,
                    "pseudo_attributes": pseudo,
                    "pseudo_captions": list(
                        compose_captions(pseudo, self.captions_per_image, noise)
                    ),
                }
            )
        return entries

    def attribute_values(self, split: str, pseudo: bool = False) -> list[dict[str, str | None]]:
        """The attribute values of every image of ``split``, aligned with its records.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            pseudo: the corrupted values of the pseudo texts instead of the drawn ones.
        """
        key = "pseudo_attributes" if pseudo else "attributes"
        return [entry[key] for entry in self._split_entries(split)]

    def attribute_labels(self, split: str, pseudo: bool = False) -> np.ndarray:
        """``(N, len(ATTRIBUTE_LABELS))`` uint8 multi-hot labels of the images of ``split``.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            pseudo: labels of the pseudo texts' attributes instead of the drawn ones.
        """
        labels = [multi_hot(values) for values in self.attribute_values(split, pseudo)]
        if not labels:
            return np.zeros((0, len(ATTRIBUTE_LABELS)), dtype=np.uint8)
        return np.stack(labels)

    def pseudo_records(self, split: str) -> list[CaptionedImage]:
        """The records of ``split`` with their pseudo captions in place of the true ones."""
        records = self._split_entries(split)
        return [
            record._replace(captions=tuple(entry["pseudo_captions"]))
            for record, entry in zip(getattr(self, split), records, strict=True)
        ]

    def _split_entries(self, split: str) -> list[dict[str, Any]]:
        if split not in self._entries:
            raise ValueError(f"split={split!r}; expected one of {list(self._entries)}")
        return self._entries[split]


def _write_atomically(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write ``entries`` as JSON to a private file, then rename it to ``path``."""
    staging = path.parent / f".{path.name}.{os.getpid()}.tmp"
    staging.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    staging.replace(path)
