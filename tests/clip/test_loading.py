"""load_clip: random weights, local checkpoints written here, and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from reidkit.clip import load_clip, resize_visual_grid
from tests.clip.tiny_models import TINY_CONFIG, tiny_clip


def _assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, atol=0, rtol=0, msg=key)


def test_random_weights_give_a_clip_model_and_its_tokenizer() -> None:
    model, tokenizer = tiny_clip()
    assert isinstance(model, open_clip.CLIP)
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    assert tokenizer(["a person"]).shape == (1, TINY_CONFIG["text_cfg"]["context_length"])
    assert TINY_CONFIG["vision_cfg"]["image_size"] == 64, "the config mapping must not be mutated"


def test_a_checkpoint_at_the_original_resolution_loads_then_is_regridded(tmp_path: Path) -> None:
    source, _ = tiny_clip(seed=1, image_size=None)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)

    model, _ = load_clip(TINY_CONFIG, pretrained=path, image_size=(256, 128), stride=12)

    resize_visual_grid(source.visual, (256, 128), stride=12)
    _assert_same_weights(model, source)
    assert model.visual.grid_size == (21, 10)


def test_a_regridded_training_checkpoint_loads_as_saved(tmp_path: Path) -> None:
    source, _ = tiny_clip(seed=2, image_size=(256, 128), stride=12)
    path = tmp_path / "trained.pth"
    state = {f"module.{key}": value for key, value in source.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)

    model, _ = load_clip(TINY_CONFIG, pretrained=str(path), image_size=(256, 128), stride=12)

    _assert_same_weights(model, source)
    images = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), source.encode_image(images))


def test_a_missing_file_names_the_path() -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_weights\.pt"):
        load_clip(TINY_CONFIG, pretrained="/nonexistent/no_such_weights.pt")


def test_a_checkpoint_of_another_model_lists_the_mismatches(tmp_path: Path) -> None:
    config = {**TINY_CONFIG, "text_cfg": {**TINY_CONFIG["text_cfg"], "width": 32}}
    torch.manual_seed(0)
    other, _ = load_clip(config, image_size=None)
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    expected = r"does not match the model: positional_embedding has shape \(16, 32\), expected"
    with pytest.raises(ValueError, match=expected):
        load_clip(TINY_CONFIG, pretrained=path)


def test_a_checkpoint_with_missing_keys_lists_them(tmp_path: Path) -> None:
    source, _ = tiny_clip(image_size=None)
    state = source.state_dict()
    del state["logit_scale"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing logit_scale"):
        load_clip(TINY_CONFIG, pretrained=path)


def test_a_file_that_is_no_checkpoint_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_clip(TINY_CONFIG, pretrained=path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "no-such-model"}, "name"),
        ({"name": {"embed_dim": 8}}, "vision_cfg"),
        ({"name": TINY_CONFIG, "precision": "fp8"}, "precision"),
        ({"name": TINY_CONFIG, "interpolation": "area"}, "interpolation"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_clip(**kwargs)
