"""Data sets stored as three image folders whose file names carry the person and the camera."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path

from reidkit.data.splits import ReIDRecord, ReIDSplits

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
"""File suffixes read as images (case-insensitive); any other file is ignored."""

MARKET_STYLE_PATTERN = r"^(?P<pid>-?\d+)_c(?P<camid>\d+)"
"""File names such as ``0002_c1s1_000451_01.jpg`` (Market-1501, DukeMTMC-reID)."""


def parse_image_folder(
    folder: Path,
    pattern: re.Pattern[str],
    *,
    first_camid: int,
    num_cameras: int | None,
    junk_pids: Collection[int],
    dropped_pids: Collection[int],
) -> list[ReIDRecord]:
    """Read ``(path, pid, camid)`` records from the image file names of one folder.

    Args:
        folder: folder holding the images (not searched recursively; only regular files, or
            links to them, whose suffix is in :data:`IMAGE_EXTENSIONS` are read).
        pattern: regular expression matched at the start of each file name, with named groups
            ``pid`` and ``camid``, or exactly two groups (pid first).
        first_camid: camera number written for the first camera (1 for Market-1501); it
            becomes ``camid`` 0.
        num_cameras: if given, camera numbers must lie in
            ``[first_camid, first_camid + num_cameras)``.
        junk_pids: identities of images that are dropped (junk detections).
        dropped_pids: further identities dropped from this split (e.g. distractors outside
            the gallery).

    Returns:
        Records sorted by file name, junk and dropped identities removed.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: a file name does not match ``pattern``, a pid is negative and not junk, a
            camera number is out of range, or no image is left.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"expected an image folder at {folder}, found none")
    records: list[ReIDRecord] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        match = pattern.match(path.name)
        if match is None:
            raise ValueError(
                f"image file name {path} does not match the pattern {pattern.pattern!r}, "
                "which must give a person id and a camera number"
            )
        pid, camera = (int(text) for text in _pid_and_camera(match))
        if pid in junk_pids or pid in dropped_pids:
            continue
        if pid < 0:
            raise ValueError(f"image {path} has pid {pid}; expected a pid >= 0 or a junk pid")
        if camera < first_camid or (
            num_cameras is not None and camera >= first_camid + num_cameras
        ):
            expected = (
                f">= {first_camid}"
                if num_cameras is None
                else f"in [{first_camid}, {first_camid + num_cameras - 1}]"
            )
            raise ValueError(f"image {path} has camera number {camera}; expected {expected}")
        records.append((str(path), pid, camera - first_camid))
    if not records:
        raise ValueError(
            f"split folder {folder} holds no usable image (expected files with suffix "
            f"{sorted(IMAGE_EXTENSIONS)} named by {pattern.pattern!r}, junk excluded)"
        )
    return records


class ImageFolderReID(ReIDSplits):
    """Any data set laid out as train, query and gallery folders of person crops.

    Each file name must start with the person id and the camera number, as read by
    ``pattern``. The defaults describe the Market-1501 layout::

        root/bounding_box_train/0002_c1s1_000451_01.jpg
        root/query/0001_c1s1_001051_00.jpg
        root/bounding_box_test/0000_c1s1_000151_01.jpg

    Protocol: images with a pid in ``junk_pids`` are dropped from every split; images with a
    pid in ``distractor_pids`` are kept in the gallery only (they match no query). Camera
    numbers become 0-based ``camid = number - first_camid``; train pids are relabelled to
    ``0..C-1``.

    Args:
        root: data set folder (or a folder holding one of ``self.folder_names``).
        pattern: regular expression matched at the start of each file name. It needs named
            groups ``pid`` and ``camid``, or exactly two groups read in that order.
        train_dir, query_dir, gallery_dir: split folder names under ``root``.
        first_camid: camera number of the first camera.
        num_cameras: if given, camera numbers outside the expected range are an error.
        junk_pids: identities dropped everywhere.
        distractor_pids: identities kept only in the gallery.

    Raises:
        FileNotFoundError: ``root`` or a split folder is missing.
        ValueError: a malformed file name, a camera number out of range, an empty split, or a
            ``pattern`` that is not a valid regular expression or lacks the two groups.
    """

    def __init__(
        self,
        root: str | Path,
        pattern: str = MARKET_STYLE_PATTERN,
        *,
        train_dir: str = "bounding_box_train",
        query_dir: str = "query",
        gallery_dir: str = "bounding_box_test",
        first_camid: int = 1,
        num_cameras: int | None = None,
        junk_pids: Sequence[int] = (-1,),
        distractor_pids: Sequence[int] = (0,),
    ) -> None:
        compiled = _compile_pattern(pattern)
        self.root = self._locate_root(root, train_dir)
        junk, distractors = frozenset(junk_pids), frozenset(distractor_pids)

        def parse(split_dir: str, dropped: frozenset[int]) -> list[ReIDRecord]:
            return parse_image_folder(
                self.root / split_dir,
                compiled,
                first_camid=first_camid,
                num_cameras=num_cameras,
                junk_pids=junk,
                dropped_pids=dropped,
            )

        self._set_splits(
            train=parse(train_dir, distractors),
            query=parse(query_dir, distractors),
            gallery=parse(gallery_dir, frozenset()),
        )


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` and check that it yields a person id and a camera number."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"pattern {pattern!r} is not a valid regular expression: {error}"
        ) from None
    if not ({"pid", "camid"} <= set(compiled.groupindex) or compiled.groups == 2):
        raise ValueError(
            f"pattern {pattern!r} must have named groups 'pid' and 'camid', or exactly two "
            "groups (person id first, camera number second)"
        )
    return compiled


def _pid_and_camera(match: re.Match[str]) -> tuple[str, str]:
    """The person-id and camera-number texts of a file-name match."""
    if "pid" in match.re.groupindex:
        return match.group("pid"), match.group("camid")
    return match.group(1), match.group(2)
