"""The common shape of text-to-image ReID data: images with their captions, and the protocol.

A :class:`CaptionedImage` is ``(path, pid, camid, captions)``: the image file, the person
identity, the 0-based camera (``-1`` where the data set gives none) and the descriptions written
for that image. Every text data set exposes ``train``, ``val`` and ``test`` lists of them
(``val`` may be empty), with train pids relabelled to ``0..C-1``.

Retrieval follows the CUHK-PEDES protocol: every caption of the split is a query, every image
of the split is in the gallery, and an image matches a caption when it shows the described
identity (:class:`TextToImageProtocol`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from reidkit.data.splits import ReIDRecord, relabel_identities

TEXT_SPLITS = ("train", "val", "test")
"""Split names of the text data sets."""


class CaptionedImage(NamedTuple):
    """One image with its captions.

    Attributes:
        path: image file.
        pid: person identity (relabelled to ``0..C-1`` in ``train``).
        camid: 0-based camera, ``-1`` where the data set gives none (CUHK-PEDES).
        captions: the image's descriptions (one or more).
    """

    path: str
    pid: int
    camid: int
    captions: tuple[str, ...]


class ImageCaption(NamedTuple):
    """One (image, caption) pair, the unit a text-to-image model trains on.

    ``image_index`` is the position of the image in the list the pair was made from, so that
    the two captions of an image can be told from captions of another image of the person.
    """

    path: str
    pid: int
    camid: int
    caption: str
    image_index: int


class TextQuery(NamedTuple):
    """A caption used as a retrieval query: its text, identity and the image it describes."""

    caption: str
    pid: int
    image_index: int


def caption_pairs(records: Sequence[CaptionedImage]) -> list[ImageCaption]:
    """One :class:`ImageCaption` per caption of every record, in record then caption order."""
    return [
        ImageCaption(record.path, record.pid, record.camid, caption, index)
        for index, record in enumerate(records)
        for caption in record.captions
    ]


@dataclass(frozen=True)
class TextToImageProtocol:
    """Text-to-image retrieval on one split: each caption a query, each image in the gallery.

    Score the ``(T, I)`` similarity of :attr:`captions` to the :attr:`gallery` images and pass
    it with :attr:`query_pids` and :attr:`gallery_pids` to :func:`reidkit.evaluate_t2i`.

    Attributes:
        queries: ``T`` captions with their identity and the index of the image they describe.
        gallery: ``I`` ``(path, pid, camid)`` records, loadable by
            :class:`~reidkit.data.ReIDImageDataset`.
    """

    queries: list[TextQuery]
    gallery: list[ReIDRecord]

    @classmethod
    def from_records(cls, records: Sequence[CaptionedImage]) -> TextToImageProtocol:
        """The protocol of a split: its images in order, then every caption of every image."""
        return cls(
            queries=[
                TextQuery(caption, record.pid, index)
                for index, record in enumerate(records)
                for caption in record.captions
            ],
            gallery=[(record.path, record.pid, record.camid) for record in records],
        )

    @property
    def captions(self) -> list[str]:
        """``T`` query texts."""
        return [query.caption for query in self.queries]

    @property
    def query_pids(self) -> np.ndarray:
        """``(T,)`` identities of the queries."""
        return np.array([query.pid for query in self.queries], dtype=np.int64)

    @property
    def gallery_pids(self) -> np.ndarray:
        """``(I,)`` identities of the gallery images."""
        return np.array([pid for _, pid, _ in self.gallery], dtype=np.int64)


class TextReIDSplits:
    """Train, val and test captioned images of one text-to-image data set.

    Attributes:
        train: records with pids relabelled to ``0..num_train_pids-1``.
        val: validation records with their original pids (empty where the data set has none).
        test: test records with their original pids.
    """

    train: list[CaptionedImage]
    val: list[CaptionedImage]
    test: list[CaptionedImage]

    folder_names: tuple[str, ...] = ()
    """Names of the folder a download unpacks to, looked up under the given root."""

    def _set_splits(
        self,
        train: Sequence[CaptionedImage],
        val: Sequence[CaptionedImage],
        test: Sequence[CaptionedImage],
    ) -> None:
        """Store the splits, relabelling the train identities."""
        self.train = relabel_identities(train)
        self.val = list(val)
        self.test = list(test)

    @property
    def num_train_pids(self) -> int:
        """Number of train identities (the identity classifier's number of classes)."""
        return len({record.pid for record in self.train})

    def protocol(self, split: str = "test") -> TextToImageProtocol:
        """The text-to-image retrieval protocol of ``split`` (``"val"`` or ``"test"``).

        Raises:
            ValueError: ``split`` is not ``"val"`` or ``"test"``, or the data set has no
                image in it.
        """
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}; expected 'val' or 'test'")
        records = getattr(self, split)
        if not records:
            raise ValueError(f"{type(self).__name__} has no {split} split")
        return TextToImageProtocol.from_records(records)

    def __repr__(self) -> str:
        def describe(records: list[CaptionedImage]) -> str:
            pids = len({record.pid for record in records})
            texts = sum(len(record.captions) for record in records)
            return f"{len(records)} images, {texts} captions, {pids} ids"

        return (
            f"{type(self).__name__}(train: {describe(self.train)}; "
            f"val: {describe(self.val)}; test: {describe(self.test)})"
        )
