"""CUHK-PEDES, ICFG-PEDES and RSTPReid parsers on small JSON files and blank images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from reidkit.data import (
    CUHKPEDES,
    ICFGPEDES,
    CaptionedImage,
    CaptionJSONReID,
    ImageCaption,
    RSTPReid,
    SyntheticCaptionedReID,
    TextQuery,
    build_text_dataset,
    caption_pairs,
)
from tests.data.helpers import write_images


def _write_release(
    folder: Path, annotation_name: str, entries: list[dict], path_key: str = "file_path"
) -> Path:
    """Blank images under ``folder/imgs`` for every entry, and the JSON list beside them."""
    for entry in entries:
        relative = Path(entry[path_key])
        write_images(folder / "imgs" / relative.parent, [relative.name])
    (folder / annotation_name).write_text(json.dumps(entries))
    return folder


CUHK_ENTRIES = [
    {
        "split": "train",
        "captions": ["A woman in a red coat.", "She wears a red coat and jeans."],
        "file_path": "CUHK01/0363004.png",
        "processed_tokens": [["a", "woman"], ["she", "wears"]],
        "id": 12,
    },
    {
        "split": "train",
        "captions": ["A man with a bag."],
        "file_path": "Market/0002_c1.jpg",
        "id": 3,
    },
    {
        "split": "train",
        "captions": ["Red coat again."],
        "file_path": "CUHK01/0363001.png",
        "id": 12,
    },
    {
        "split": "val",
        "captions": ["Val one.", "Val two."],
        "file_path": "cam_a/001.bmp",
        "id": 11004,
    },
    {"split": "test", "captions": ["T1.", "T2."], "file_path": "test_query/p1.jpg", "id": 12004},
    {"split": "test", "captions": ["T3.", "T4.", "T5."], "file_path": "cam_b/p2.jpg", "id": 12004},
    {"split": "test", "captions": ["T6."], "file_path": "CUHK03/9_1.jpg", "id": 12999},
]


def test_cuhk_pedes_splits_records_and_protocol(tmp_path: Path) -> None:
    folder = _write_release(tmp_path / "CUHK-PEDES", "reid_raw.json", CUHK_ENTRIES)
    data = CUHKPEDES(tmp_path)  # the parent of the unpacked folder
    assert data.root == folder
    images = folder / "imgs"
    assert data.train == [
        CaptionedImage(
            str(images / "CUHK01/0363004.png"), 1, -1, tuple(CUHK_ENTRIES[0]["captions"])
        ),
        CaptionedImage(str(images / "Market/0002_c1.jpg"), 0, -1, ("A man with a bag.",)),
        CaptionedImage(str(images / "CUHK01/0363001.png"), 1, -1, ("Red coat again.",)),
    ]
    assert data.num_train_pids == 2
    assert [(r.pid, r.captions) for r in data.val] == [(11004, ("Val one.", "Val two."))]
    assert [r.pid for r in data.test] == [12004, 12004, 12999]

    protocol = data.protocol("test")
    assert protocol.gallery == [(r.path, r.pid, r.camid) for r in data.test]
    assert protocol.queries == [
        TextQuery("T1.", 12004, 0),
        TextQuery("T2.", 12004, 0),
        TextQuery("T3.", 12004, 1),
        TextQuery("T4.", 12004, 1),
        TextQuery("T5.", 12004, 1),
        TextQuery("T6.", 12999, 2),
    ]
    assert protocol.captions == ["T1.", "T2.", "T3.", "T4.", "T5.", "T6."]
    np.testing.assert_array_equal(protocol.query_pids, [12004] * 5 + [12999])
    np.testing.assert_array_equal(protocol.gallery_pids, [12004, 12004, 12999])
    assert len(data.protocol("val").queries) == 2

    pairs = caption_pairs(data.train)
    assert pairs[:2] == [
        ImageCaption(str(images / "CUHK01/0363004.png"), 1, -1, "A woman in a red coat.", 0),
        ImageCaption(
            str(images / "CUHK01/0363004.png"), 1, -1, "She wears a red coat and jeans.", 0
        ),
    ]
    assert [(pair.pid, pair.image_index) for pair in pairs[2:]] == [(0, 1), (1, 2)]
    assert repr(data) == (
        "CUHKPEDES(train: 3 images, 4 captions, 2 ids; val: 1 images, 2 captions, 1 ids; "
        "test: 3 images, 6 captions, 2 ids)"
    )


def test_icfg_pedes_reads_msmt17_cameras_and_has_no_val(tmp_path: Path) -> None:
    entries = [
        {
            "id": 0,
            "file_path": "train/0000/0000_000_01_0303morning_0008_0.jpg",
            "captions": ["One caption."],
            "processed_tokens": [["one", "caption"]],
            "split": "train",
        },
        {
            "id": 3101,
            "file_path": "train/3101/3101_004_15_0303noon_0100_2.jpg",
            "captions": ["Another."],
            "split": "train",
        },
        {
            "id": 1712,
            "file_path": "test/1712/1712_023_05_0302morning_0312_1.jpg",
            "captions": ["A test caption."],
            "split": "test",
        },
    ]
    # Some copies of the release name the file with an underscore.
    folder = _write_release(tmp_path, "ICFG_PEDES.json", entries)
    data = ICFGPEDES(folder)
    assert data.annotation_file == folder / "ICFG_PEDES.json"
    assert [(r.pid, r.camid) for r in data.train] == [(0, 0), (1, 14)]
    assert [(r.pid, r.camid, r.captions) for r in data.test] == [(1712, 4, ("A test caption.",))]
    assert data.val == []
    with pytest.raises(ValueError) as raised:
        data.protocol("val")
    assert str(raised.value) == "ICFGPEDES has no val split"
    with pytest.raises(ValueError) as raised:
        data.protocol("train")
    assert str(raised.value) == "split='train'; expected 'val' or 'test'"


def test_rstpreid_reads_img_path_and_cameras(tmp_path: Path) -> None:
    entries = [
        {"id": 0, "img_path": "0000_c14_0031.jpg", "captions": ["a", "b"], "split": "train"},
        {"id": 0, "img_path": "0000_c2_0040.jpg", "captions": ["c", "d"], "split": "train"},
        {"id": 3701, "img_path": "3701_c1_0001.jpg", "captions": ["e", "f"], "split": "val"},
        {"id": 3901, "img_path": "3901_c15_0002.jpg", "captions": ["g", "h"], "split": "test"},
    ]
    folder = _write_release(tmp_path / "RSTPReid", "data_captions.json", entries, "img_path")
    data = RSTPReid(tmp_path)
    assert [(r.pid, r.camid, r.captions) for r in data.train] == [
        (0, 13, ("a", "b")),
        (0, 1, ("c", "d")),
    ]
    assert [(r.pid, r.camid) for r in data.val] == [(3701, 0)]
    assert [(r.path, r.camid) for r in data.test] == [(str(folder / "imgs/3901_c15_0002.jpg"), 14)]


def _error(tmp_path: Path, entries, **settings) -> str:
    """The message of the error that reading ``entries`` as a CUHK-PEDES file raises."""
    folder = tmp_path / "release"
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    write_images(folder / "imgs", ["a.jpg"])
    text = entries if isinstance(entries, str) else json.dumps(entries)
    (folder / "reid_raw.json").write_text(text)
    with pytest.raises((ValueError, FileNotFoundError)) as raised:
        CaptionJSONReID(folder, **settings)
    return str(raised.value)


def _entry(**changes) -> dict:
    return {"split": "train", "id": 1, "file_path": "a.jpg", "captions": ["x"], **changes}


def test_malformed_caption_files_are_named(tmp_path: Path) -> None:
    where = f"{tmp_path / 'release' / 'reid_raw.json'}: entry 1"
    assert _error(tmp_path, {"a": 1}) == (
        f"{tmp_path / 'release' / 'reid_raw.json'} holds a JSON dict; expected a list of entries "
        "with keys 'split', 'id', 'captions' and 'file_path'"
    )
    assert _error(tmp_path, "[{").startswith(
        f"{tmp_path / 'release' / 'reid_raw.json'} is not a JSON file: "
    )
    cases = [
        ([_entry(), "text"], f"{where} is a str; expected an object"),
        (
            [_entry(), {"split": "train", "file_path": "a.jpg"}],
            f"{where} lacks the key(s) ['id', 'captions']",
        ),
        (
            [_entry(), _entry(split="query")],
            f"{where} has split='query'; expected one of ['train', 'val', 'test']",
        ),
        ([_entry(), _entry(id="7")], f"{where} has id='7'; expected an integer person id"),
        ([_entry(), _entry(id=True)], f"{where} has id=True; expected an integer person id"),
        ([_entry(), _entry(file_path="")], f"{where} has file_path=''; expected a relative path"),
        (
            [_entry(), _entry(captions=[])],
            f"{where} (a.jpg) has captions=[]; expected a non-empty list of non-blank strings",
        ),
        (
            [_entry(), _entry(captions=["ok", " "])],
            f"{where} (a.jpg) has captions=['ok', ' ']; expected a non-empty list of non-blank "
            "strings",
        ),
        (
            [_entry(), _entry(file_path="b.jpg")],
            f"{where} names the image {tmp_path / 'release' / 'imgs' / 'b.jpg'}, which does not "
            "exist",
        ),
        (
            [_entry(split="test")],
            f"{tmp_path / 'release' / 'reid_raw.json'} has no entry with split 'train'",
        ),
    ]
    for entries, message in cases:
        assert _error(tmp_path, entries) == message
    camera = {"camera_pattern": r"^(?P<camid>\d)_", "num_cameras": 2}
    write_images(tmp_path / "release" / "imgs", ["3_x.jpg"])
    assert _error(tmp_path, [_entry(), _entry(file_path="3_x.jpg")], **camera) == (
        f"{tmp_path / 'release' / 'reid_raw.json'}: entry 0: file name 'a.jpg' does not match "
        "the camera pattern '^(?P<camid>\\\\d)_'"
    )


def test_camera_number_out_of_range_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "release"
    write_images(folder / "imgs", ["0001_c3_1.jpg"])
    (folder / "data_captions.json").write_text(
        json.dumps([{"split": "train", "id": 1, "img_path": "0001_c16_1.jpg", "captions": ["x"]}])
    )
    write_images(folder / "imgs", ["0001_c16_1.jpg"])
    with pytest.raises(ValueError) as raised:
        RSTPReid(folder)
    assert str(raised.value) == (
        f"{folder / 'data_captions.json'}: entry 0: image 0001_c16_1.jpg has camera number 16; "
        "expected in [1, 15]"
    )


def test_missing_release_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        CUHKPEDES(tmp_path / "nowhere")
    assert str(raised.value) == (
        f"CUHKPEDES root {tmp_path / 'nowhere'} does not exist; expected a folder holding "
        "'reid_raw.json' or one of ['CUHK-PEDES']"
    )
    with pytest.raises(FileNotFoundError) as raised:
        CUHKPEDES(tmp_path)
    assert (
        str(raised.value) == f"expected the caption file {tmp_path / 'reid_raw.json'}, found none"
    )
    (tmp_path / "reid_raw.json").write_text("[]")
    with pytest.raises(FileNotFoundError) as raised:
        CUHKPEDES(tmp_path)
    assert str(raised.value) == f"expected the image folder {tmp_path / 'imgs'}, found none"


def test_build_text_dataset(tmp_path: Path, synthetic_cache: Path, monkeypatch) -> None:
    _write_release(tmp_path / "CUHK-PEDES", "reid_raw.json", CUHK_ENTRIES)
    built = build_text_dataset("CUHK-PEDES", tmp_path)
    assert isinstance(built, CUHKPEDES) and built.train == CUHKPEDES(tmp_path).train
    with pytest.raises(ValueError, match=r"name='flickr30k'; expected one of \['caption_json', "):
        build_text_dataset("flickr30k", tmp_path)
    small = dict(num_train_ids=2, num_test_ids=2, num_distractors=0, num_junk=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        synthetic = build_text_dataset("synthetic_captions", synthetic_cache, **small)
    assert isinstance(synthetic, SyntheticCaptionedReID)
    monkeypatch.setenv("REIDKIT_CACHE", str(synthetic_cache))
    with pytest.warns(UserWarning, match="no data root given for 'rstpreid'"):
        fallback = build_text_dataset("rstpreid", **small)
    assert fallback.train == synthetic.train
