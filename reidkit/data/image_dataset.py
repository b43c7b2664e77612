"""A torch ``Dataset`` over ``(path, pid, camid)`` records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from reidkit.data.splits import ReIDRecord


class ReIDImageDataset(Dataset[tuple[Any, int, int, str]]):
    """Loads the images of a split and applies a transform.

    Args:
        records: ``(path, pid, camid)`` tuples, e.g. ``Market1501(root).train``.
        transform: applied to the RGB ``PIL.Image``; typically
            :func:`~reidkit.data.build_train_transforms` or
            :func:`~reidkit.data.build_test_transforms`, which give a ``(3, H, W)`` tensor.
            ``None`` returns the ``PIL.Image``.

    Item ``i`` is ``(image, pid, camid, path)`` of ``records[i]``.

    Raises:
        ValueError: ``records`` is empty or an entry is not ``(path, pid, camid)``.
    """

    def __init__(
        self, records: Sequence[ReIDRecord], transform: Callable[[Image.Image], Any] | None = None
    ) -> None:
        if len(records) == 0:
            raise ValueError("records is empty; expected at least one (path, pid, camid) tuple")
        for record in records:
            if len(record) != 3:
                raise ValueError(f"records entry {record!r} is not a (path, pid, camid) tuple")
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, int, int, str]:
        path, pid, camid = self.records[index]
        with Image.open(path) as file:
            image = file.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, pid, camid, path

    @property
    def pids(self) -> list[int]:
        """Person id of every item, in order."""
        return [pid for _, pid, _ in self.records]

    @property
    def camids(self) -> list[int]:
        """Camera id of every item, in order."""
        return [camid for _, _, camid in self.records]
