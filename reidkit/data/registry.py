"""Build a data set from its name and root, as given on a command line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from reidkit.data.benchmarks import DukeMTMCreID, Market1501, OccludedDuke
from reidkit.data.folder import ImageFolderReID
from reidkit.data.msmt17 import MSMT17
from reidkit.data.splits import ReIDSplits
from reidkit.data.synthetic import SyntheticReID

DATASETS: dict[str, type[ReIDSplits]] = {
    "synthetic": SyntheticReID,
    "market1501": Market1501,
    "dukemtmcreid": DukeMTMCreID,
    "msmt17": MSMT17,
    "occluded_duke": OccludedDuke,
    "image_folder": ImageFolderReID,
}
"""Data set classes by name (names are matched case-insensitively, ``-`` read as ``_``)."""


def build_dataset(
    name: str = "synthetic", root: str | Path | None = None, **kwargs: Any
) -> ReIDSplits:
    """Instantiate the data set ``name`` from ``root``.

    Without a ``root`` there is nothing to read, so the built-in :class:`SyntheticReID` is
    generated instead (with a warning when another data set was named); ``kwargs`` then go to
    it. For ``"synthetic"`` a given ``root`` is its cache folder.

    Args:
        name: a key of :data:`DATASETS`: ``synthetic``, ``market1501``, ``dukemtmcreid``,
            ``msmt17``, ``occluded_duke`` or ``image_folder``.
        root: data set folder, or ``None`` for the synthetic data.
        kwargs: further arguments of the data set class.

    Raises:
        ValueError: an unknown ``name``.
    """
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"name={name!r}; expected one of {sorted(DATASETS)}")
    if root is None:
        if key != "synthetic":
            warnings.warn(
                f"no data root given for {name!r}; using the built-in SyntheticReID data",
                stacklevel=2,
            )
        return SyntheticReID(**kwargs)
    return DATASETS[key](root, **kwargs)
