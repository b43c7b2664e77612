"""A folder of images to a JSON file of pseudo captions: the selections of a CLIP whose scores
the test decides, and the command line with a tiny random CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from reidkit.pseudotext import (
    SYNTHETIC_TEMPLATES,
    find_images,
    generate_pseudo_texts,
    read_pseudo_texts,
    synthetic_vocabulary,
)
from reidkit.pseudotext.__main__ import main
from reidkit.recipes import TINY_CLIP

VOCABULARY = synthetic_vocabulary()
PROMPTS, OWNERS = VOCABULARY.prompts()


def _prompt_index(name: str, phrase: str | None) -> int:
    attribute = VOCABULARY.names.index(name)
    for index, owner in enumerate(OWNERS):
        if owner.attribute == attribute and (
            (phrase is None and owner.phrase is None)
            or (
                owner.phrase is not None
                and VOCABULARY.attributes[attribute].phrases[owner.phrase] == phrase
            )
        ):
            return index
    raise AssertionError((name, phrase))


RED = {a.name: a.phrases[0] for a in VOCABULARY.attributes} | {"hat": None, "bag": "backpack"}
BLUE = {a.name: a.phrases[-1] for a in VOCABULARY.attributes} | {"bag": None, "hat": "purple"}
BLUE["hair_colour"] = None


class ScriptedCLIP(nn.Module):
    """Prompts are one-hot; a reddish image points at the prompts of ``RED``, a bluish one at
    those of ``BLUE``: CLIP's answer is fixed by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(4.0))  # exp(4) = 55
        self.visual = nn.Module()
        self.visual.image_size = (32, 16)

    @staticmethod
    def tokenize(prompts: list[str]) -> torch.Tensor:
        return torch.tensor([PROMPTS.index(prompt) for prompt in prompts])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(ids, len(PROMPTS)).float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.zeros(images.shape[0], len(PROMPTS))
        for row, image in enumerate(images):
            chosen = RED if image[0].mean() > image[2].mean() else BLUE
            for name, phrase in chosen.items():
                features[row, _prompt_index(name, phrase)] = 1.0
        return features


def _write_images(folder: Path) -> None:
    (folder / "cam1").mkdir(parents=True)
    Image.new("RGB", (16, 32), (220, 10, 10)).save(folder / "cam1" / "b.jpg")
    Image.new("RGB", (16, 32), (10, 10, 220)).save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")


def test_the_selected_phrases_and_captions_reach_the_json_file(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    model = ScriptedCLIP()
    entries = generate_pseudo_texts(
        tmp_path / "images",
        tmp_path / "out.json",
        model,
        model.tokenize,
        VOCABULARY,
        SYNTHETIC_TEMPLATES,
        captions_per_image=2,
    )
    assert json.loads((tmp_path / "out.json").read_text()) == entries
    assert [entry["file_path"] for entry in entries] == ["a.png", "cam1/b.jpg"]
    assert entries[0]["attributes"] == BLUE and entries[1]["attributes"] == RED
    for entry in entries:
        assert len(entry["captions"]) == 2 and len(set(entry["captions"])) == 2
    # every template states the lower garment: a skirt (blue), trousers or pants (red)
    assert all("skirt" in caption for caption in entries[0]["captions"])
    assert all("trousers" in c or "pants" in c for c in entries[1]["captions"])


def test_the_command_writes_reproducible_captions_with_a_tiny_clip(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "images")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CLIP))
    arguments = [str(tmp_path / "images"), "--clip", str(config), "--pretrained", "none"]
    arguments += ["--device", "cpu", "--seed", "5"]
    torch.manual_seed(0)
    main([*arguments, "--output", str(tmp_path / "first.json")])
    torch.manual_seed(0)
    main([*arguments, "--output", str(tmp_path / "second.json")])
    assert "wrote 2 images' captions" in capsys.readouterr().out
    first = json.loads((tmp_path / "first.json").read_text())
    assert first == json.loads((tmp_path / "second.json").read_text())
    assert {entry["file_path"] for entry in first} == {"a.png", "cam1/b.jpg"}
    required = [a.name for a in VOCABULARY.attributes if a.required]
    assert all(entry["attributes"][name] is not None for entry in first for name in required)


def test_a_folder_without_images_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no"):
        find_images(tmp_path)


def test_a_written_file_reads_back_as_pretraining_data(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    model = ScriptedCLIP()
    entries = generate_pseudo_texts(
        tmp_path / "images",
        tmp_path / "out.json",
        model,
        model.tokenize,
        VOCABULARY,
        SYNTHETIC_TEMPLATES,
    )
    records, labels, names = read_pseudo_texts(tmp_path / "out.json", tmp_path / "images")
    assert [r.path for r in records] == [str(tmp_path / "images" / e["file_path"]) for e in entries]
    assert [r.captions for r in records] == [tuple(e["captions"]) for e in entries]
    assert [r.pid for r in records] == [0, 1] and {r.camid for r in records} == {-1}
    selected = [{f"{k}={v}" for k, v in e["attributes"].items() if v} for e in entries]
    assert names == sorted(selected[0] | selected[1])
    for row, chosen in zip(labels, selected, strict=True):
        assert {name for name, on in zip(names, row, strict=True) if on} == chosen
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"entry 0: image .*a\.png does not exist"):
        read_pseudo_texts(tmp_path / "out.json", tmp_path / "images")
    (tmp_path / "bad.json").write_text('[{"file_path": "x.jpg"}]')
    with pytest.raises(ValueError, match="entry 0 must have 'file_path', 'captions'"):
        read_pseudo_texts(tmp_path / "bad.json", tmp_path / "images")
