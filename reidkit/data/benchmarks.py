"""Market-1501, DukeMTMC-reID and Occluded-Duke: folder data sets with fixed protocols."""

from __future__ import annotations

from pathlib import Path

from reidkit.data.folder import MARKET_STYLE_PATTERN, ImageFolderReID


class Market1501(ImageFolderReID):
    """Market-1501 (Zheng et al., ICCV 2015): 6 cameras, 751 train and 750 test identities.

    ``root`` is the unpacked folder (or its parent) holding ``bounding_box_train/``,
    ``query/`` and ``bounding_box_test/``. File names ``PPPP_cCsS_FFFFFF_BB.jpg`` give the
    pid ``PPPP`` and the camera ``C`` (1-6, read as ``camid = C - 1``). Junk images (pid -1)
    are dropped; distractors (pid 0) stay in the gallery, where they match no query.
    """

    folder_names = ("Market-1501-v15.09.15", "Market-1501", "market1501")

    def __init__(self, root: str | Path) -> None:
        super().__init__(root, MARKET_STYLE_PATTERN, first_camid=1, num_cameras=6)


class DukeMTMCreID(ImageFolderReID):
    """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): 8 cameras, 702 + 702 identities.

    Same layout and naming as :class:`Market1501` (``0005_c2_f0046985.jpg``), cameras 1-8.
    The benchmark has no junk pid and no distractor pid: its 408 distractor identities carry
    ordinary pids and appear in the gallery only, so every image is kept.
    """

    folder_names = ("DukeMTMC-reID", "dukemtmc-reid")

    def __init__(self, root: str | Path) -> None:
        super().__init__(
            root,
            MARKET_STYLE_PATTERN,
            first_camid=1,
            num_cameras=8,
            junk_pids=(),
            distractor_pids=(),
        )


class OccludedDuke(DukeMTMCreID):
    """Occluded-Duke (Miao et al., ICCV 2019): DukeMTMC-reID re-split so that queries are occluded.

    Layout ``Occluded_Duke/{bounding_box_train, query, bounding_box_test}`` with DukeMTMC-reID
    file names and cameras 1-8, parsed as :class:`DukeMTMCreID`.
    """

    folder_names = ("Occluded_Duke", "occluded_duke")
