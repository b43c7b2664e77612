"""Released weights, offline first: found in the local caches, or reported quickly as out of reach.

open_clip and timm fetch released weights from the Hugging Face Hub (or a URL) and, without a
connection, retry for about a minute before failing with a message about the Hub. Here a
weight tag is first looked up in the local caches (the Hub's, open_clip's download folder); only
when it is missing is its host asked once, with a short timeout, and a host out of reach is a
:class:`WeightsUnavailableError` that says how to pass a local checkpoint instead. The libraries
then load the file from disk, without a network call.

* :func:`open_clip_weights`: the file of an open_clip pretrained tag;
* :func:`timm_weights`: the ``timm.create_model`` arguments that load a timm model's weights
  (a tag, ``"default"`` or a local file) from disk.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HUB_HOST = "huggingface.co"
PROBE_TIMEOUT_S = 3.0
"""How long the one connection attempt to a host waits before calling it unreachable."""

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")
_LOCAL_HINT = (
    "pass the path of a local checkpoint file instead (pretrained=PATH; on the command line "
    "--pretrained PATH)"
)


class WeightsUnavailableError(FileNotFoundError):
    """Released weights that are neither on disk nor reachable; the message says what to do."""


def host_reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_local_file(value: object) -> bool:
    """Whether ``value`` is a string naming an existing file."""
    return isinstance(value, (str, os.PathLike)) and Path(value).is_file()


def looks_like_path(value: str) -> bool:
    """Whether ``value`` reads as a file path rather than a weight tag (a folder separator or a
    checkpoint suffix such as ``.pt``)."""
    return "/" in value or os.sep in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def missing_file_error(path: str, what: str, tags: Sequence[str] = ()) -> WeightsUnavailableError:
    """The error for a checkpoint path that names no file."""
    known = f"; the weight tags known for it are {sorted(tags)}" if tags else ""
    return WeightsUnavailableError(
        f"{what}: the checkpoint file {path!r} does not exist{known}; give the path of an "
        "existing file, or None for random weights"
    )


def cached_hub_file(
    repo_id: str, filenames: Sequence[str], cache_dir: str | Path | None = None
) -> Path | None:
    """The first of ``filenames`` of the Hub repository ``repo_id`` in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_file(
    repo_id: str, filenames: Sequence[str], what: str, cache_dir: str | Path | None = None
) -> Path:
    """The first of ``filenames`` of ``repo_id`` on the Hub: from the cache, else downloaded.

    Raises:
        WeightsUnavailableError: not cached and the Hub cannot be reached, or none of the files
            could be downloaded.
    """
    cached = cached_hub_file(repo_id, filenames, cache_dir)
    if cached is not None:
        return cached
    _require_host(HUB_HOST, what)
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
        except Exception as error:  # the Hub fails in many ways; each file is tried in turn
            errors.append(f"{filename}: {type(error).__name__}")
    raise WeightsUnavailableError(
        f"{what}: could not download {repo_id} from {HUB_HOST} ({'; '.join(errors)}); {_LOCAL_HINT}"
    )


def _require_host(host: str, what: str) -> None:
    if not host_reachable(host):
        raise WeightsUnavailableError(
            f"{what}: the weights are not in the local cache and {host} cannot be reached (no "
            f"connection?); download them where there is one, or {_LOCAL_HINT}"
        )


def open_clip_weights(name: str, tag: str) -> Path:
    """The checkpoint file of open_clip's pretrained ``tag`` of the model ``name``.

    Looked up in the Hub's cache (the ``.safetensors`` file first) or open_clip's download
    folder (``~/.cache/clip``), else downloaded.

    Raises:
        ValueError: ``tag`` is not a pretrained tag of ``name``.
        WeightsUnavailableError: as :func:`hub_file`.
    """
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
    from open_clip.pretrained import download_pretrained_from_url

    what = f"pretrained={tag!r} of the open_clip model {name!r}"
    config = open_clip.get_pretrained_cfg(name, tag)
    if not config:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"{what} is not a known tag (its tags are {tags}); {_LOCAL_HINT}")
    if config.get("file"):
        return Path(config["file"])
    if config.get("hf_hub"):
        repo_id, filename = os.path.split(config["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        alternatives = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
        if filename.endswith((".bin", ".pth")):
            alternatives.append(filename.rsplit(".", 1)[0] + ".safetensors")
        return hub_file(repo_id, [*alternatives, filename], what)
    url = config["url"]
    cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    if not cached.is_file():
        _require_host(urllib.parse.urlparse(url).hostname or url, what)
    return Path(download_pretrained_from_url(url))


def timm_weights(model_name: str, pretrained: str | None) -> dict[str, Any]:
    """Arguments of ``timm.create_model(model_name, pretrained=..., **arguments)`` that load
    the weights ``pretrained`` from a file on disk.

    Args:
        model_name: a timm model name without a tag, e.g. ``"vit_base_patch16_224"``.
        pretrained: ``None`` (random weights: no arguments), ``"default"`` (the model's default
            tag), a timm weight tag, or the path of a local checkpoint file.

    Raises:
        ValueError: an unknown tag.
        WeightsUnavailableError: a path that names no file, or as :func:`hub_file`.
    """
    if pretrained is None:
        return {}
    what = f"pretrained={pretrained!r} of the timm model {model_name!r}"
    if is_local_file(pretrained):
        return {"pretrained_cfg_overlay": {"file": str(pretrained)}}
    if looks_like_path(pretrained):
        raise missing_file_error(pretrained, what)
    from timm.models import get_pretrained_cfg
    from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    tagged = model_name if pretrained == "default" else f"{model_name}.{pretrained}"
    try:
        config = get_pretrained_cfg(tagged)
    except RuntimeError as error:
        raise ValueError(f"{what}: {error}; {_LOCAL_HINT}") from None
    if config is None or not (config.hf_hub_id or config.url or config.file):
        raise ValueError(f"{what}: timm knows no weights for it; {_LOCAL_HINT}")
    if config.file:
        return {"pretrained_cfg_overlay": {"file": str(config.file)}}
    if not config.hf_hub_id:
        raise ValueError(
            f"{what}: timm publishes these weights at a URL only ({config.url}); download the "
            f"file and {_LOCAL_HINT}"
        )
    filename = config.hf_hub_filename or HF_WEIGHTS_NAME
    alternatives = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
    path = hub_file(config.hf_hub_id, [*alternatives, filename], what)
    return {"pretrained_cfg_overlay": {"file": str(path)}}
