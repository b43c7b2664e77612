"""Build a data set (image or text-to-image) from its name and root, as given on a command line."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from reidkit.data.benchmarks import CUHK03NP, DukeMTMCreID, Market1501, OccludedDuke
from reidkit.data.folder import ImageFolderReID
from reidkit.data.msmt17 import MSMT17
from reidkit.data.pedes import CUHKPEDES, ICFGPEDES, CaptionJSONReID, RSTPReid
from reidkit.data.splits import ReIDSplits
from reidkit.data.synthetic import SyntheticReID
from reidkit.data.synthetic_captions import SyntheticCaptionedReID
from reidkit.data.text_splits import TextReIDSplits

DATASETS: dict[str, Callable[..., ReIDSplits]] = {
    "synthetic": SyntheticReID,
    "synthetic_local_cues": partial(SyntheticReID, variant="local_cues"),
    "market1501": Market1501,
    "dukemtmcreid": DukeMTMCreID,
    "msmt17": MSMT17,
    "occluded_duke": OccludedDuke,
    "cuhk03": CUHK03NP,
    "cuhk03_labeled": partial(CUHK03NP, boxes="labeled"),
    "cuhk03_detected": partial(CUHK03NP, boxes="detected"),
    "image_folder": ImageFolderReID,
}
"""Data set constructors by name (matched case-insensitively, ``-`` read as ``_``); each is
called as ``DATASETS[name](root, **kwargs)``."""

SYNTHETIC_DATASETS = ("synthetic", "synthetic_local_cues")
"""Names of the built-in data, which need no root (a given root is their cache folder)."""


def build_dataset(
    name: str = "synthetic", root: str | Path | None = None, **kwargs: Any
) -> ReIDSplits:
    """Instantiate the data set ``name`` from ``root``.

    Without a ``root`` there is nothing to read, so the built-in :class:`SyntheticReID` is
    generated instead (with a warning when a data set other than a synthetic one was named);
    ``kwargs`` then go to it. For the synthetic names a given ``root`` is their cache folder.

    Args:
        name: a key of :data:`DATASETS`: ``synthetic``, ``synthetic_local_cues`` (its
            ``local_cues`` variant), ``market1501``, ``dukemtmcreid``, ``msmt17``,
            ``occluded_duke``, ``cuhk03`` (labeled boxes unless ``boxes="detected"``),
            ``cuhk03_labeled``, ``cuhk03_detected`` or ``image_folder``.
        root: data set folder, or ``None`` for the synthetic data.
        kwargs: further arguments of the data set class.

    Raises:
        ValueError: an unknown ``name``.
    """
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"name={name!r}; expected one of {sorted(DATASETS)}")
    if root is None:
        if key not in SYNTHETIC_DATASETS:
            warnings.warn(
                f"no data root given for {name!r}; using the built-in SyntheticReID data",
                stacklevel=2,
            )
            key = "synthetic"
        return DATASETS[key](**kwargs)
    return DATASETS[key](root, **kwargs)


TEXT_DATASETS: dict[str, Callable[..., TextReIDSplits]] = {
    "synthetic_captions": SyntheticCaptionedReID,
    "cuhk_pedes": CUHKPEDES,
    "icfg_pedes": ICFGPEDES,
    "rstpreid": RSTPReid,
    "caption_json": CaptionJSONReID,
}
"""Text-to-image data set constructors by name (matched as in :data:`DATASETS`)."""


def build_text_dataset(
    name: str = "synthetic_captions", root: str | Path | None = None, **kwargs: Any
) -> TextReIDSplits:
    """Instantiate the text-to-image data set ``name`` from ``root``.

    Without a ``root`` the built-in :class:`SyntheticCaptionedReID` is generated instead
    (with a warning when another data set was named); ``kwargs`` then go to it. For
    ``"synthetic_captions"`` a given ``root`` is its cache folder.

    Args:
        name: a key of :data:`TEXT_DATASETS`: ``synthetic_captions``, ``cuhk_pedes``,
            ``icfg_pedes``, ``rstpreid`` or ``caption_json``.
        root: data set folder, or ``None`` for the synthetic data.
        kwargs: further arguments of the data set class.

    Raises:
        ValueError: an unknown ``name``.
    """
    key = name.lower().replace("-", "_")
    if key not in TEXT_DATASETS:
        raise ValueError(f"name={name!r}; expected one of {sorted(TEXT_DATASETS)}")
    if root is None:
        if key != "synthetic_captions":
            warnings.warn(
                f"no data root given for {name!r}; using the built-in SyntheticCaptionedReID data",
                stacklevel=2,
            )
        return SyntheticCaptionedReID(**kwargs)
    return TEXT_DATASETS[key](root, **kwargs)
