"""Data set parsers: the real Market-1501 mini set, generated folders and list files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reidkit.data import (
    CUHK03NP,
    MSMT17,
    DukeMTMCreID,
    ImageFolderReID,
    Market1501,
    OccludedDuke,
    build_dataset,
    relabel_identities,
)
from tests.data.helpers import write_images, write_market_layout

MARKET_ROOT = os.environ.get("REIDKIT_MARKET_ROOT")


# The real images are research-licensed and never copied into the project: the test reads
# them where the environment says (.ci/run points it at ../shared/data/market1501-mini).
@pytest.mark.skipif(MARKET_ROOT is None, reason="REIDKIT_MARKET_ROOT is not set")
def test_market1501_mini_counts_match_an_independent_scan() -> None:
    root = Path(MARKET_ROOT)
    data = Market1501(root)
    for split, folder in (
        (data.train, "bounding_box_train"),
        (data.query, "query"),
        (data.gallery, "bounding_box_test"),
    ):
        expected = []
        for name in sorted(os.listdir(root / folder)):
            if not name.endswith(".jpg"):
                continue
            pid_text, camera_text = name.split("_")[:2]
            if int(pid_text) != -1:
                expected.append((str(root / folder / name), int(pid_text), int(camera_text[1]) - 1))
        if folder == "bounding_box_train":
            ranks = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in expected}))}
            expected = [(path, ranks[pid], camid) for path, pid, camid in expected]
        assert split == expected
    # The counts stated with the mini set: 16 + 16 identities, two images per split each.
    assert (len(data.train), len(data.query), len(data.gallery)) == (32, 32, 32)
    assert data.num_train_pids == 16
    assert data.num_train_cams == 6
    assert len({pid for _, pid, _ in data.query}) == 16
    assert {pid for _, pid, _ in data.query} == {pid for _, pid, _ in data.gallery}
    assert not {Path(p).name[:4] for p, _, _ in data.train} & {
        Path(p).name[:4] for p, _, _ in data.query
    }


def test_market_protocol_junk_distractors_and_relabelling(tmp_path: Path) -> None:
    root = write_market_layout(
        tmp_path,
        train=["0007_c2s1_000001_01.jpg", "0003_c1s1_000002_01.jpg", "0007_c6s1_000003_01.jpg"],
        query=["0005_c1s1_000004_00.jpg", "0000_c2s1_000005_00.jpg"],
        gallery=[
            "0005_c3s1_000006_01.jpg",
            "0000_c4s1_000007_02.jpg",
            "-1_c5s1_000008_03.jpg",
        ],
    )
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"ignored")
    data = Market1501(root)
    train = root / "bounding_box_train"
    assert data.train == [
        (str(train / "0003_c1s1_000002_01.jpg"), 0, 0),
        (str(train / "0007_c2s1_000001_01.jpg"), 1, 1),
        (str(train / "0007_c6s1_000003_01.jpg"), 1, 5),
    ]
    assert [(pid, camid) for _, pid, camid in data.query] == [(5, 0)]
    assert [(pid, camid) for _, pid, camid in data.gallery] == [(0, 3), (5, 2)]
    assert (data.num_train_pids, data.num_train_cams) == (2, 3)


def test_root_may_be_the_parent_of_the_unpacked_folder(tmp_path: Path) -> None:
    names = ["0001_c1s1_000001_01.jpg"]
    write_market_layout(tmp_path / "Market-1501-v15.09.15", names, names, names)
    assert Market1501(tmp_path).root == tmp_path / "Market-1501-v15.09.15"


def test_missing_root_and_missing_split_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*bounding_box_train"):
        Market1501(tmp_path / "nowhere")
    write_images(tmp_path / "bounding_box_train", ["0001_c1s1_000001_01.jpg"])
    write_images(tmp_path / "bounding_box_test", ["0001_c1s1_000001_01.jpg"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "query")):
        Market1501(tmp_path)


def test_empty_split_is_named(tmp_path: Path) -> None:
    names = ["0001_c1s1_000001_01.jpg"]
    write_market_layout(tmp_path, names, names, ["-1_c1s1_000002_01.jpg"])
    with pytest.raises(ValueError, match=r"bounding_box_test holds no usable image"):
        Market1501(tmp_path)


@pytest.mark.parametrize(
    ("bad_name", "message"),
    [
        ("person7.jpg", r"person7\.jpg does not match the pattern"),
        ("0001_s1_000001_01.jpg", r"0001_s1_000001_01\.jpg does not match"),
        ("0001_c7s1_000001_01.jpg", r"camera number 7; expected in \[1, 6\]"),
        ("0001_c0s1_000001_01.jpg", r"camera number 0; expected in \[1, 6\]"),
        ("-3_c1s1_000001_01.jpg", r"pid -3; expected a pid >= 0"),
    ],
)
def test_malformed_file_names_are_named(tmp_path: Path, bad_name: str, message: str) -> None:
    good = ["0001_c1s1_000001_01.jpg"]
    write_market_layout(tmp_path, good, good, [*good, bad_name])
    with pytest.raises(ValueError, match=message):
        Market1501(tmp_path)


def test_duke_and_occluded_duke_keep_every_pid(tmp_path: Path) -> None:
    write_market_layout(
        tmp_path / "Occluded_Duke",
        train=["0002_c8_f0000001.jpg", "0009_c1_f0000002.jpg"],
        query=["0004_c2_f0000003.jpg"],
        gallery=["0004_c7_f0000004.jpg", "0000_c3_f0000005.jpg"],
    )
    for dataset_class in (DukeMTMCreID, OccludedDuke):
        data = dataset_class(tmp_path / "Occluded_Duke")
        assert [(pid, camid) for _, pid, camid in data.train] == [(0, 7), (1, 0)]
        assert sorted(pid for _, pid, _ in data.gallery) == [0, 4]
    assert OccludedDuke(tmp_path).root == tmp_path / "Occluded_Duke"


def _write_cuhk03_np(root: Path) -> Path:
    """A cuhk03-np folder whose labeled and detected boxes differ, with the release's naming."""
    folder = root / "cuhk03-np"
    write_market_layout(
        folder / "labeled",
        train=["0003_c1_1.png", "0003_c2_6.png", "0001_c2_7.png"],
        query=["0900_c1_1.png"],
        gallery=["0900_c2_6.png", "0901_c1_2.png"],
    )
    write_market_layout(
        folder / "detected",
        train=["0005_c2_3.png", "0002_c1_1.png"],
        query=["0902_c2_1.png", "0900_c1_1.png"],
        gallery=["0902_c1_8.png", "0900_c2_7.png"],
    )
    return folder


def test_cuhk03_np_reads_the_chosen_boxes(tmp_path: Path) -> None:
    folder = _write_cuhk03_np(tmp_path)
    labeled = CUHK03NP(tmp_path)
    assert labeled.root == folder and labeled.boxes == "labeled"
    train = folder / "labeled" / "bounding_box_train"
    assert labeled.train == [
        (str(train / "0001_c2_7.png"), 0, 1),
        (str(train / "0003_c1_1.png"), 1, 0),
        (str(train / "0003_c2_6.png"), 1, 1),
    ]
    assert [(pid, camid) for _, pid, camid in labeled.query] == [(900, 0)]
    assert [(pid, camid) for _, pid, camid in labeled.gallery] == [(900, 1), (901, 0)]

    detected = CUHK03NP(folder, boxes="detected")
    assert all("/detected/" in path for path, _, _ in detected.train + detected.gallery)
    assert [(pid, camid) for _, pid, camid in detected.train] == [(0, 0), (1, 1)]
    assert [(pid, camid) for _, pid, camid in detected.query] == [(900, 0), (902, 1)]
    for name, boxes in (
        ("cuhk03", "labeled"),
        ("cuhk03_labeled", "labeled"),
        ("CUHK03-detected", "detected"),
    ):
        built = build_dataset(name, tmp_path)
        assert isinstance(built, CUHK03NP) and built.boxes == boxes
    assert build_dataset("cuhk03", tmp_path, boxes="detected").train == detected.train


def test_cuhk03_np_errors_are_named(tmp_path: Path) -> None:
    folder = _write_cuhk03_np(tmp_path)
    with pytest.raises(ValueError) as raised:
        CUHK03NP(folder, boxes="manual")
    assert str(raised.value) == "boxes='manual'; expected one of ['labeled', 'detected']"
    write_images(folder / "labeled" / "bounding_box_test", ["0900_c3_1.png"])
    with pytest.raises(
        ValueError, match=r"0900_c3_1\.png has camera number 3; expected in \[1, 2\]"
    ):
        CUHK03NP(folder)
    (folder / "detected" / "query").rename(folder / "detected" / "query-moved")
    with pytest.raises(FileNotFoundError, match=r"detected/query"):
        CUHK03NP(folder, boxes="detected")


def test_image_folder_with_a_custom_pattern(tmp_path: Path) -> None:
    write_images(tmp_path / "tr", ["p12-cam0-a.png", "p5-cam3-b.png"])
    write_images(tmp_path / "q", ["p12-cam1-c.png"])
    write_images(tmp_path / "g", ["p12-cam2-d.png", "p99-cam0-e.png"])
    (tmp_path / "tr" / "notes.txt").write_text("ignored: not an image suffix")
    data = ImageFolderReID(
        tmp_path,
        r"p(\d+)-cam(\d+)",
        train_dir="tr",
        query_dir="q",
        gallery_dir="g",
        first_camid=0,
    )
    # Files in name order (p12 before p5); pids relabelled by value (5 -> 0, 12 -> 1).
    assert [(pid, camid) for _, pid, camid in data.train] == [(1, 0), (0, 3)]
    assert [(pid, camid) for _, pid, camid in data.gallery] == [(12, 2), (99, 0)]
    with pytest.raises(ValueError, match="named groups 'pid' and 'camid'"):
        ImageFolderReID(tmp_path, r"p(\d+)", train_dir="tr", query_dir="q", gallery_dir="g")


def test_invalid_pattern_is_a_value_error_naming_it(tmp_path: Path) -> None:
    write_market_layout(tmp_path, ["0001_c1s1_000001_01.jpg"], [], [])
    pattern = r"(?P<pid>\d+_c(?P<camid>\d+)"
    try:
        re.compile(pattern)
    except re.error as error:
        reason = str(error)
    expected = f"pattern {pattern!r} is not a valid regular expression: {reason}"
    with pytest.raises(ValueError) as raised:
        ImageFolderReID(tmp_path, pattern)
    assert str(raised.value) == expected


def test_only_regular_files_are_images(tmp_path: Path) -> None:
    names = ["0001_c1s1_000001_01.jpg"]
    root = write_market_layout(tmp_path, names, names, ["0001_c2s1_000002_01.jpg"])
    # Folders whose names look like images: one that matches the naming, one that does not.
    (root / "bounding_box_test" / "0001_c3s1_000003_01.jpg").mkdir()
    (root / "bounding_box_test" / "x.jpg").mkdir()
    data = Market1501(root)
    assert data.gallery == [(str(root / "bounding_box_test" / "0001_c2s1_000002_01.jpg"), 1, 1)]


def _write_msmt17(root: Path, lists: dict[str, list[str]]) -> None:
    for name, lines in lists.items():
        (root / f"list_{name}.txt").write_text("".join(line + "\n" for line in lines))


def test_msmt17_list_files(tmp_path: Path) -> None:
    root = tmp_path / "MSMT17_V1"
    root.mkdir()
    _write_msmt17(
        root,
        {
            "train": ["0003/0003_000_01_0303morning_0015_0.jpg 3", "0001/0001_001_15_x_0_1.jpg 1"],
            "val": ["0003/0003_004_07_0303noon_0100_0.jpg 3", "0002/0002_000_02_a_0_0.jpg 2"],
            "query": ["0000/0000_000_05_0113morning_0001_0.jpg 0"],
            "gallery": ["0000/0000_001_06_0113morning_0002_0.jpg 0", ""],
        },
    )
    data = MSMT17(tmp_path)
    assert data.root == root
    assert data.train == [
        (str(root / "train/0003/0003_000_01_0303morning_0015_0.jpg"), 2, 0),
        (str(root / "train/0001/0001_001_15_x_0_1.jpg"), 0, 14),
        (str(root / "train/0003/0003_004_07_0303noon_0100_0.jpg"), 2, 6),
        (str(root / "train/0002/0002_000_02_a_0_0.jpg"), 1, 1),
    ]
    assert data.query == [(str(root / "test/0000/0000_000_05_0113morning_0001_0.jpg"), 0, 4)]
    assert [camid for _, _, camid in data.gallery] == [5]
    without_val = MSMT17(root, include_val=False)
    assert [(pid, camid) for _, pid, camid in without_val.train] == [(1, 0), (0, 14)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0001/0001_000_01_x_0_0.jpg", "is not"),
        ("0001/0001_000_16_x_0_0.jpg 1", r"camera field '16'"),
        ("0001/0001.jpg 1", "is not"),
    ],
)
def test_msmt17_malformed_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    good = ["0001/0001_000_01_x_0_0.jpg 1"]
    _write_msmt17(tmp_path, {"train": good, "val": good, "query": good, "gallery": [line]})
    with pytest.raises(ValueError, match=rf"list_gallery\.txt:1: .*{message}"):
        MSMT17(tmp_path)


def test_msmt17_missing_list_is_named(tmp_path: Path) -> None:
    good = ["0001/0001_000_01_x_0_0.jpg 1"]
    _write_msmt17(tmp_path, {"train": good, "query": good, "gallery": good})
    with pytest.raises(FileNotFoundError, match=r"list_val\.txt"):
        MSMT17(tmp_path)
    _write_msmt17(tmp_path, {"val": []})
    with pytest.raises(ValueError, match=r"list_val\.txt lists no image"):
        MSMT17(tmp_path)


def test_relabel_identities_is_order_preserving() -> None:
    records = [("a", 40, 0), ("b", 7, 1), ("c", 40, 2), ("d", 12, 0)]
    assert relabel_identities(records) == [("a", 2, 0), ("b", 0, 1), ("c", 2, 2), ("d", 1, 0)]
