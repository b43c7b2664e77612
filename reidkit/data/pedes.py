"""CUHK-PEDES, ICFG-PEDES and RSTPReid: text-to-image ReID data sets described by one JSON file.

Each release holds an image folder and a JSON list with one entry per image::

    {"split": "train", "id": 1, "file_path": "CUHK01/0363004.png",
     "captions": ["A pedestrian with dark hair is wearing ...", "The person has ..."], ...}

(RSTPReid names the image ``img_path``.) :func:`parse_caption_annotations` reads such a file
into :class:`~reidkit.data.CaptionedImage` records by split; :class:`CaptionJSONReID` is any
data set laid out this way, and the three benchmarks fix its settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidkit import checks
from reidkit.data.splits import locate_dataset_root
from reidkit.data.text_splits import TEXT_SPLITS, CaptionedImage, TextReIDSplits


def parse_caption_annotations(
    annotation_file: Path,
    image_dir: Path,
    *,
    path_key: str = "file_path",
    camera_pattern: str | None = None,
    first_camid: int = 1,
    num_cameras: int | None = None,
) -> dict[str, list[CaptionedImage]]:
    """Read a caption JSON file into records grouped by split.

    Args:
        annotation_file: JSON list of entries with keys ``split`` (one of ``train``, ``val``,
            ``test``), ``id`` (an integer person id), ``captions`` (a non-empty list of
            strings) and ``path_key`` (the image path relative to ``image_dir``); other keys
            are ignored.
        image_dir: folder the image paths are relative to.
        path_key: key of the image path.
        camera_pattern: regular expression matched at the start of the image's file name,
            with a group ``camid`` giving the camera number; ``None``: no camera (``camid``
            -1).
        first_camid: camera number of the first camera (it becomes ``camid`` 0).
        num_cameras: if given, camera numbers must lie in
            ``[first_camid, first_camid + num_cameras)``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in file order (a split the file
        does not use is empty).

    Raises:
        FileNotFoundError: the annotation file, the image folder or an image is missing.
        ValueError: the file is not a JSON list, or an entry lacks a key, has a key of the
            wrong type, an unknown split, no caption, or a file name the camera pattern does
            not read (the message names the file and the entry).
    """
    if not annotation_file.is_file():
        raise FileNotFoundError(f"expected the caption file {annotation_file}, found none")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"expected the image folder {image_dir}, found none")
    try:
        entries = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotation_file} is not a JSON file: {error}") from None
    if not isinstance(entries, list):
        raise ValueError(
            f"{annotation_file} holds a JSON {type(entries).__name__}; expected a list of "
            "entries with keys 'split', 'id', 'captions' and "
            f"{path_key!r}"
        )
    camera = re.compile(camera_pattern) if camera_pattern is not None else None
    splits: dict[str, list[CaptionedImage]] = {name: [] for name in TEXT_SPLITS}
    for index, entry in enumerate(entries):
        where = f"{annotation_file}: entry {index}"
        relative_path, split, pid, captions = _read_entry(entry, where, path_key)
        path = image_dir / relative_path
        if not path.is_file():
            raise FileNotFoundError(f"{where} names the image {path}, which does not exist")
        camid = -1
        if camera is not None:
            camid = _camera_index(camera, path, where, first_camid, num_cameras)
        splits[split].append(CaptionedImage(str(path), pid, camid, captions))
    return splits


def _read_entry(entry: Any, where: str, path_key: str) -> tuple[str, str, int, tuple[str, ...]]:
    """Validate one annotation entry; return its image path, split, pid and captions."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is a {type(entry).__name__}; expected an object")
    missing = [key for key in ("split", "id", "captions", path_key) if key not in entry]
    if missing:
        raise ValueError(f"{where} lacks the key(s) {missing}")
    relative_path, split, pid, captions = (
        entry[path_key],
        entry["split"],
        entry["id"],
        entry["captions"],
    )
    if not isinstance(relative_path, str) or not relative_path:
        raise ValueError(f"{where} has {path_key}={relative_path!r}; expected a relative path")
    if split not in TEXT_SPLITS:
        raise ValueError(f"{where} has split={split!r}; expected one of {list(TEXT_SPLITS)}")
    if not checks.is_integer(pid):
        raise ValueError(f"{where} has id={pid!r}; expected an integer person id")
    if (
        not isinstance(captions, list)
        or not captions
        or not all(isinstance(text, str) and text.strip() for text in captions)
    ):
        raise ValueError(
            f"{where} ({relative_path}) has captions={captions!r}; expected a non-empty list "
            "of non-blank strings"
        )
    return relative_path, split, pid, tuple(captions)


def _camera_index(
    pattern: re.Pattern[str], path: Path, where: str, first_camid: int, num_cameras: int | None
) -> int:
    """0-based camera of ``path`` read from its file name by ``pattern``."""
    match = pattern.match(path.name)
    if match is None:
        raise ValueError(
            f"{where}: file name {path.name!r} does not match the camera pattern "
            f"{pattern.pattern!r}"
        )
    number = int(match.group("camid"))
    last = None if num_cameras is None else first_camid + num_cameras - 1
    if number < first_camid or (last is not None and number > last):
        expected = f">= {first_camid}" if last is None else f"in [{first_camid}, {last}]"
        raise ValueError(
            f"{where}: image {path.name} has camera number {number}; expected {expected}"
        )
    return number - first_camid


class CaptionJSONReID(TextReIDSplits):
    """Any text-to-image data set described by one caption JSON file and an image folder.

    Layout (defaults are CUHK-PEDES')::

        root/reid_raw.json
        root/imgs/<file_path of each entry>

    Args:
        root: data set folder (or a folder holding one of ``self.folder_names``).
        annotation_files: names of the caption file under ``root``; the first that exists is
            read.
        image_dir: image folder under ``root``.
        path_key, camera_pattern, first_camid, num_cameras: see
            :func:`parse_caption_annotations`.

    Raises:
        FileNotFoundError: the root, the caption file, the image folder or an image is missing.
        ValueError: a malformed caption file (see :func:`parse_caption_annotations`), or no
            train image.
    """

    def __init__(
        self,
        root: str | Path,
        annotation_files: Sequence[str] = ("reid_raw.json",),
        *,
        image_dir: str = "imgs",
        path_key: str = "file_path",
        camera_pattern: str | None = None,
        first_camid: int = 1,
        num_cameras: int | None = None,
    ) -> None:
        owner = type(self).__name__
        self.root = locate_dataset_root(root, annotation_files[0], self.folder_names, owner)
        present = [name for name in annotation_files if (self.root / name).is_file()]
        self.annotation_file = self.root / (present[0] if present else annotation_files[0])
        splits = parse_caption_annotations(
            self.annotation_file,
            self.root / image_dir,
            path_key=path_key,
            camera_pattern=camera_pattern,
            first_camid=first_camid,
            num_cameras=num_cameras,
        )
        if not splits["train"]:
            raise ValueError(f"{self.annotation_file} has no entry with split 'train'")
        self._set_splits(**splits)


class CUHKPEDES(CaptionJSONReID):
    """CUHK-PEDES (Li et al., CVPR 2017): 13,003 identities, 40,206 images, 80,412 captions.

    Layout ``CUHK-PEDES/reid_raw.json`` and ``CUHK-PEDES/imgs/<file_path>`` (images gathered
    from CUHK01, CUHK03, Market-1501, SSM and VIPeR, e.g. ``CUHK01/0363004.png``). Splits:
    11,003 train, 1,000 val and 1,000 test identities (34,054 / 3,078 / 3,074 images), about
    two captions per image. The sources' cameras are not comparable, so ``camid`` is -1.
    """

    folder_names = ("CUHK-PEDES",)

    def __init__(self, root: str | Path) -> None:
        super().__init__(root, ("reid_raw.json",))


MSMT17_STYLE_CAMERA = r"^\d+_\d+_(?P<camid>\d+)_"
"""File names such as ``1712_023_05_0302morning_0312_1.jpg``: the third field is the camera."""


class ICFGPEDES(CaptionJSONReID):
    """ICFG-PEDES (Ding et al., 2021): MSMT17 images, one caption each, no val split.

    Layout ``ICFG-PEDES/ICFG-PEDES.json`` (some copies name it ``ICFG_PEDES.json``) and
    ``ICFG-PEDES/imgs/<file_path>`` with MSMT17 names (``test/1712/1712_023_05_0302morning_
    0312_1.jpg``), whose third field is the camera (1-15, ``camid = camera - 1``). Splits:
    3,102 train and 1,000 test identities (34,674 / 19,848 images).
    """

    folder_names = ("ICFG-PEDES", "ICFG_PEDES")

    def __init__(self, root: str | Path) -> None:
        super().__init__(
            root,
            ("ICFG-PEDES.json", "ICFG_PEDES.json"),
            camera_pattern=MSMT17_STYLE_CAMERA,
            num_cameras=15,
        )


class RSTPReid(CaptionJSONReID):
    """RSTPReid (Zhu et al., ACM MM 2021): MSMT17 images of 4,101 identities, two captions each.

    Layout ``RSTPReid/data_captions.json`` (image key ``img_path``) and ``RSTPReid/imgs/``
    with names such as ``0000_c14_0031.jpg`` (camera 1-15, ``camid = camera - 1``). Splits:
    3,701 train, 200 val and 200 test identities, five images each.
    """

    folder_names = ("RSTPReid",)

    def __init__(self, root: str | Path) -> None:
        super().__init__(
            root,
            ("data_captions.json",),
            path_key="img_path",
            camera_pattern=r"^\d+_c(?P<camid>\d+)_",
            num_cameras=15,
        )
