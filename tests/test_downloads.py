"""Released weights offline: found in the local caches, or refused at once with what to do."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from reidkit import downloads
from reidkit.clip import load_clip
from reidkit.downloads import (
    WeightsUnavailableError,
    cached_hub_file,
    hub_file,
    open_clip_weights,
    timm_weights,
)
from reidkit.recipes.config import TINY_CLIP


def _hub_cache(root: Path, repo_id: str, filename: str) -> Path:
    """A Hugging Face cache holding one file of ``repo_id`` at revision ``main``."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"weights")
    return snapshot / filename


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """No host can be reached and the Hub's cache is empty; the hosts asked are recorded, and
    any download fails the test."""
    asked: list[str] = []
    empty = tmp_path_factory.mktemp("empty_hub_cache")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(empty))

    def unreachable(host: str, port: int = 443, timeout: float = 0) -> bool:
        asked.append(host)
        return False

    monkeypatch.setattr(downloads, "host_reachable", unreachable)
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download",
        lambda *args, **kwargs: pytest.fail("downloaded although the host is out of reach"),
    )
    return asked


def test_a_host_is_reachable_when_it_accepts_a_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert downloads.host_reachable("127.0.0.1", port, timeout=2)
    started = time.perf_counter()
    assert not downloads.host_reachable("127.0.0.1", port, timeout=2)  # closed now
    assert time.perf_counter() - started < 2


def test_a_cached_file_is_found_without_asking_the_host(tmp_path: Path, offline: list) -> None:
    cached = _hub_cache(tmp_path, "org/model", "model.safetensors")
    found = cached_hub_file(
        "org/model", ["open_clip_model.safetensors", "model.safetensors"], tmp_path
    )
    assert found == cached
    assert hub_file("org/model", ["model.safetensors"], "weights", tmp_path) == cached
    assert offline == []


def test_weights_out_of_reach_are_refused_at_once(tmp_path: Path, offline: list) -> None:
    started = time.perf_counter()
    with pytest.raises(
        WeightsUnavailableError,
        match=r"not in the local cache and huggingface\.co cannot be reached .* pass the path of "
        r"a local checkpoint file instead \(pretrained=PATH; on the command line --pretrained",
    ):
        hub_file("org/absent", ["model.safetensors"], "the weights", tmp_path)
    assert offline == ["huggingface.co"] and time.perf_counter() - started < 5


def test_an_open_clip_tag_is_looked_up_before_anything_is_downloaded(offline: list) -> None:
    with pytest.raises(
        WeightsUnavailableError, match=r"pretrained='openai' of the open_clip model"
    ):
        load_clip("ViT-B-16", "openai")
    with pytest.raises(ValueError, match=r"is not a known tag \(its tags are \["):
        open_clip_weights("ViT-B-16", "no-such-tag")


def test_a_missing_checkpoint_path_names_the_tags(tmp_path: Path) -> None:
    with pytest.raises(
        WeightsUnavailableError,
        match=r"the checkpoint file '.*missing\.pt' does not exist; the weight tags known for it "
        r"are \[.*'openai'",
    ):
        load_clip("ViT-B-16", str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt' does not exist; give the path"):
        load_clip(TINY_CLIP, str(tmp_path / "missing.pt"))


def test_a_local_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source, _ = load_clip(TINY_CLIP, None, image_size=None)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded, _ = load_clip(TINY_CLIP, str(path), image_size=None)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_timm_weights_from_a_file_a_cache_or_nowhere(tmp_path: Path, offline: list) -> None:
    assert timm_weights("vit_base_patch16_224", None) == {}
    local = tmp_path / "vit.pth"
    local.write_bytes(b"x")
    assert timm_weights("vit_base_patch16_224", str(local)) == {
        "pretrained_cfg_overlay": {"file": str(local)}
    }
    with pytest.raises(WeightsUnavailableError, match=r"the checkpoint file '.*nope\.pth' does"):
        timm_weights("vit_base_patch16_224", str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsUnavailableError, match=r"huggingface\.co cannot be reached"):
        timm_weights("vit_base_patch16_224", "default")
    with pytest.raises(ValueError, match=r"Invalid pretrained tag \(nope\)"):
        timm_weights("vit_base_patch16_224", "nope")
