"""The common shape of every ReID data set: train, query and gallery lists of records.

A record is a ``(path, pid, camid)`` tuple: the image file, the person identity and the
0-based camera index. Train identities are relabelled to ``0..C-1`` so that they index a
classifier directly; query and gallery keep the original identities, which only need to be
compared with each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

ReIDRecord = tuple[str, int, int]
"""One image: ``(path, pid, camid)``, with ``camid`` 0-based."""

RecordT = TypeVar("RecordT", bound=tuple[Any, ...])


def relabel_identities(records: Sequence[RecordT]) -> list[RecordT]:
    """Map the identities of ``records`` to ``0..C-1`` in increasing order of the original pid.

    Args:
        records: tuples whose second field is the pid: ``(path, pid, camid)`` records or the
            named tuples of the text data (:class:`~reidkit.data.CaptionedImage`).

    Returns:
        The same records, in the same order and of the same type, with ``pid`` replaced by its
        rank among the distinct pids.
    """
    label_of = {pid: label for label, pid in enumerate(sorted({record[1] for record in records}))}
    return [_with_pid(record, label_of[record[1]]) for record in records]


def _with_pid(record: RecordT, pid: int) -> RecordT:
    """``record`` with its second field replaced by ``pid`` (named tuples keep their type)."""
    if hasattr(record, "_replace"):
        return cast(RecordT, record._replace(pid=pid))
    return cast(RecordT, (record[0], pid, *record[2:]))


def locate_dataset_root(
    root: str | Path, marker: str, folder_names: Sequence[str], owner: str
) -> Path:
    """Find a data set folder: ``root`` itself or its child named in ``folder_names``.

    Args:
        root: folder given by the user.
        marker: relative path that exists in the data set folder (a split folder or an
            annotation file).
        folder_names: names of the folder a download unpacks to, looked up under ``root``
            when ``root / marker`` does not exist.
        owner: data set name for the error message.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{owner} root {root} does not exist; expected a folder holding {marker!r}"
            + (f" or one of {list(folder_names)}" if folder_names else "")
        )
    if not (root / marker).exists():
        for name in folder_names:
            if (root / name / marker).exists():
                return root / name
    return root


class ReIDSplits:
    """Train, query and gallery records of one data set.

    Attributes:
        train: ``(path, pid, camid)`` records with pids relabelled to ``0..num_train_pids-1``.
        query: query records with their original pids.
        gallery: gallery records with their original pids (distractors included where the
            protocol keeps them).
    """

    train: list[ReIDRecord]
    query: list[ReIDRecord]
    gallery: list[ReIDRecord]

    folder_names: tuple[str, ...] = ()
    """Names of the folder a download unpacks to, looked up under the given root."""

    def _locate_root(self, root: str | Path, marker: str) -> Path:
        """The data set folder: ``root`` or its child named in ``folder_names`` (see
        :func:`locate_dataset_root`)."""
        return locate_dataset_root(root, marker, self.folder_names, type(self).__name__)

    def _set_splits(
        self,
        train: Sequence[ReIDRecord],
        query: Sequence[ReIDRecord],
        gallery: Sequence[ReIDRecord],
    ) -> None:
        """Store the splits, relabelling the train identities."""
        self.train = relabel_identities(train)
        self.query = list(query)
        self.gallery = list(gallery)

    @property
    def num_train_pids(self) -> int:
        """Number of train identities (the classifier's number of classes)."""
        return len({pid for _, pid, _ in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras in the train split."""
        return len({camid for _, _, camid in self.train})

    def summary(self) -> dict[str, dict[str, int]]:
        """``{"train" | "query" | "gallery": {"identities", "images", "cameras"}}``: the
        distinct identities and cameras and the number of images of each split."""
        return {
            name: {
                "identities": len({pid for _, pid, _ in records}),
                "images": len(records),
                "cameras": len({camid for _, _, camid in records}),
            }
            for name, records in (
                ("train", self.train),
                ("query", self.query),
                ("gallery", self.gallery),
            )
        }

    def __repr__(self) -> str:
        splits = "; ".join(
            f"{name}: {counts['images']} images, {counts['identities']} ids, "
            f"{counts['cameras']} cameras"
            for name, counts in self.summary().items()
        )
        return f"{type(self).__name__}({splits})"
