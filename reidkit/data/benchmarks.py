"""Market-1501, DukeMTMC-reID, Occluded-Duke, CUHK03-NP: folder data sets with fixed protocols."""

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


CUHK03_BOXES = ("labeled", "detected")
"""The two kinds of CUHK03 bounding boxes: drawn by hand, or found by the DPM detector."""


class CUHK03NP(ImageFolderReID):
    """CUHK03 (Li et al., CVPR 2014) under the new protocol (Zhong et al., CVPR 2017).

    767 train and 700 test identities seen by the two cameras of a camera pair, as distributed
    in the ``cuhk03-np`` release: one Market-1501 layout per kind of bounding box::

        root/cuhk03-np/labeled/bounding_box_train/0001_c1_1.png
        root/cuhk03-np/labeled/query/...
        root/cuhk03-np/labeled/bounding_box_test/...
        root/cuhk03-np/detected/...   (same three folders)

    ``root`` is the ``cuhk03-np`` folder or its parent. File names ``PPPP_cC_N.png`` give the
    pid ``PPPP`` and the camera ``C`` (1 or 2, read as ``camid = C - 1``), parsed as
    :class:`Market1501`'s. The protocol has no junk and no distractor pid: every image is kept.
    The release counts 7,368 / 1,400 / 5,328 train / query / gallery images for ``labeled`` and
    7,365 / 1,400 / 5,332 for ``detected``.

    Args:
        root: data set folder.
        boxes: ``"labeled"`` (hand-drawn boxes) or ``"detected"`` (DPM detections).

    Raises:
        ValueError: ``boxes`` is neither, or a file name or split is malformed (see
            :class:`ImageFolderReID`).
        FileNotFoundError: the root or a split folder of ``boxes`` is missing.
    """

    folder_names = ("cuhk03-np", "CUHK03-NP", "cuhk03_np")

    def __init__(self, root: str | Path, boxes: str = "labeled") -> None:
        if boxes not in CUHK03_BOXES:
            raise ValueError(f"boxes={boxes!r}; expected one of {list(CUHK03_BOXES)}")
        self.boxes = boxes
        super().__init__(
            root,
            MARKET_STYLE_PATTERN,
            train_dir=f"{boxes}/bounding_box_train",
            query_dir=f"{boxes}/query",
            gallery_dir=f"{boxes}/bounding_box_test",
            first_camid=1,
            num_cameras=2,
            junk_pids=(),
            distractor_pids=(),
        )
