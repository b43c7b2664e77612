"""MSMT17 (Wei et al., CVPR 2018), read from its list files."""

from __future__ import annotations

from pathlib import Path

from reidkit.data.splits import ReIDRecord, ReIDSplits

MSMT17_NUM_CAMERAS = 15


def parse_msmt17_list(list_file: Path, image_dir: Path) -> list[ReIDRecord]:
    """Read an MSMT17 list file.

    Each line is ``<pid-folder>/<pid>_<index>_<camera>_<date><time>_<frame>_<n>.jpg <pid>``,
    e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``, relative to ``image_dir``. The pid
    comes from the second column and the camera (1-15) from the third ``_`` field of the file
    name; ``camid = camera - 1``.

    Raises:
        FileNotFoundError: ``list_file`` is missing.
        ValueError: a malformed line, a camera out of range, or an empty list.
    """
    if not list_file.is_file():
        raise FileNotFoundError(f"expected the MSMT17 list file {list_file}, found none")
    records: list[ReIDRecord] = []
    for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        name_fields = Path(fields[0]).name.split("_")
        if len(fields) != 2 or len(name_fields) < 3 or not fields[1].isdigit():
            raise ValueError(
                f"{list_file}:{line_number}: {line!r} is not '<relative/path>_<index>_<camera>_"
                "..._.jpg <pid>'"
            )
        if not name_fields[2].isdigit() or not 1 <= int(name_fields[2]) <= MSMT17_NUM_CAMERAS:
            raise ValueError(
                f"{list_file}:{line_number}: camera field {name_fields[2]!r} of {fields[0]} is "
                f"not a number in [1, {MSMT17_NUM_CAMERAS}]"
            )
        records.append((str(image_dir / fields[0]), int(fields[1]), int(name_fields[2]) - 1))
    if not records:
        raise ValueError(f"MSMT17 list file {list_file} lists no image")
    return records


class MSMT17(ReIDSplits):
    """MSMT17: 15 cameras, 1,041 train and 3,060 test identities, defined by list files.

    Layout (V1 or V2)::

        root/MSMT17_V1/train/0000/0000_000_01_0303morning_0015_0.jpg
        root/MSMT17_V1/test/...
        root/MSMT17_V1/list_train.txt, list_val.txt, list_query.txt, list_gallery.txt

    ``root`` may also be the ``MSMT17_V*`` folder itself. ``list_train.txt`` and
    ``list_val.txt`` index ``train/``; ``list_query.txt`` and ``list_gallery.txt`` index
    ``test/``. By default the validation images join the train split, as in TransReID and
    CLIP-ReID; train pids are then relabelled to ``0..C-1``.

    Args:
        root: data set folder.
        include_val: add the ``list_val.txt`` images to the train split.

    Raises:
        FileNotFoundError: the root or a list file is missing.
        ValueError: a malformed list line or an empty list.
    """

    folder_names = ("MSMT17_V2", "MSMT17_V1", "MSMT17")

    def __init__(self, root: str | Path, include_val: bool = True) -> None:
        self.root = self._locate_root(root, "list_train.txt")
        train = parse_msmt17_list(self.root / "list_train.txt", self.root / "train")
        if include_val:
            train += parse_msmt17_list(self.root / "list_val.txt", self.root / "train")
        self._set_splits(
            train=train,
            query=parse_msmt17_list(self.root / "list_query.txt", self.root / "test"),
            gallery=parse_msmt17_list(self.root / "list_gallery.txt", self.root / "test"),
        )
