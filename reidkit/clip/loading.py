"""Building an open_clip CLIP model for person ReID, from a tag, a local file or random weights.

:func:`load_clip` builds the model at the resolution it was trained at, loads its weights, and
only then re-grids the vision tower for person crops (:mod:`reidkit.clip.resize`), so released
checkpoints load unchanged. Local checkpoints are read offline and checked key by key before
anything is copied. A pretrained tag's file is taken from the local caches when it is there and
downloaded only when it is not (:func:`reidkit.downloads.open_clip_weights`): without a
connection, a tag that is not cached fails at once with a message that says how to pass a local
file.
"""

from __future__ import annotations

import copy
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias, cast

import open_clip
import torch
from open_clip.model import convert_to_custom_text_state_dict
from open_clip.tokenizer import HFTokenizer
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip.resize import INTERPOLATION_MODES, resize_visual_grid
from reidkit.downloads import missing_file_error, open_clip_weights

PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")
_LOW_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Entries that OpenAI's TorchScript releases keep beside the weights.
_ARCHIVE_METADATA = ("input_resolution", "context_length", "vocab_size")
_REPORTED_KEYS = 5

Tokenizer: TypeAlias = open_clip.SimpleTokenizer | HFTokenizer
CLIPModel: TypeAlias = open_clip.CLIP | open_clip.CustomTextCLIP
"""What :func:`load_clip` builds (open_clip's models carry no type information)."""


def load_clip(
    name: str | Mapping[str, Any] = "ViT-B-16",
    pretrained: str | Path | None = None,
    image_size: int | tuple[int, int] | None = (256, 128),
    stride: int | tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    interpolation: str = "bilinear",
) -> tuple[CLIPModel, Tokenizer]:
    """Build an open_clip CLIP model and its tokenizer, re-gridded for person images.

    Args:
        name: an open_clip model name (``"ViT-B-16"``, ``"ViT-B-16-quickgelu"``, ...) or a model
            config mapping with the keys open_clip's model configs have (``embed_dim``,
            ``vision_cfg``, ``text_cfg`` and optionally ``quick_gelu``, ``custom_text``), e.g. for
            small or custom models.
        pretrained: ``None`` for random weights; an open_clip pretrained tag for ``name`` such as
            ``"openai"`` (from the local cache, else downloaded); or the path of a local
            checkpoint, read offline: a state dict (``torch.save`` or ``.safetensors``), a
            training checkpoint holding one under ``"state_dict"``, or an OpenAI TorchScript
            release (which sets ``quick_gelu`` unless the config sets it). A checkpoint may be
            saved at the model's original resolution or at the re-gridded one.
        image_size: input ``(H, W)`` of the vision tower (an int means square); ``None`` keeps the
            configured size.
        stride: patch stride for overlapping patches (CLIP-ReID uses 12 with 16x16 patches);
            ``None`` keeps non-overlapping patches.
        device: where the model is moved at the end; ``None`` leaves it on the CPU.
        precision: one of ``"fp32"``, ``"fp16"``, ``"bf16"`` (weights in low precision, layer
            norms in float32, as open_clip does) or ``"pure_fp16"``, ``"pure_bf16"``.
        interpolation: how the positional embedding is resized to the new grid,
            ``"bilinear"`` (as CLIP-ReID does) or ``"bicubic"``.

    Returns:
        ``(model, tokenizer)``: the open_clip ``CLIP`` (or ``CustomTextCLIP``) and the tokenizer
        that matches its text tower.

    Raises:
        FileNotFoundError: ``pretrained`` is neither a known tag nor an existing file, or a
            tag's weights are not cached and their host cannot be reached
            (:class:`reidkit.downloads.WeightsUnavailableError`).
        ValueError: unknown ``name``, bad ``precision``, a checkpoint whose keys or shapes do not
            match the model, or resizing asked of a non-ViT vision tower.
    """
    checks.check_choice("precision", precision, PRECISIONS)
    checks.check_choice("interpolation", interpolation, INTERPOLATION_MODES)

    def regrid(model: nn.Module) -> None:
        if image_size is not None or stride is not None:
            visual: Any = model.visual  # open_clip's vision tower
            size = visual.image_size if image_size is None else image_size
            resize_visual_grid(visual, size, stride, interpolation)

    if (
        isinstance(name, str)
        and isinstance(pretrained, str)
        and _is_pretrained_tag(name, pretrained)
    ):
        model = _load_pretrained_tag(name, pretrained, precision)
        regrid(model)
    else:
        if pretrained is not None and not Path(pretrained).is_file():
            named = isinstance(name, str)
            raise missing_file_error(
                str(pretrained),
                f"pretrained of the CLIP model {name!r}"
                if named
                else "pretrained of a CLIP model given by its config (weight tags need a name)",
                open_clip.list_pretrained_tags_by_model(name) if named else (),
            )
        model = _build_offline(_model_config(name), pretrained, precision, regrid)
    if device is not None:
        model.to(device)
    context_length: int = cast(Any, model).context_length
    return model, clip_tokenizer(name, context_length)


def _build_offline(
    config: dict[str, Any],
    pretrained: str | Path | None,
    precision: str,
    regrid: Callable[[nn.Module], None],
) -> nn.Module:
    """Random or local weights: build in float32, load, re-grid, then cast."""
    path = None if pretrained is None else Path(pretrained)
    state_dict: dict[str, Tensor] = {}
    if path is not None:
        state_dict, from_archive = _read_checkpoint(path)
        if from_archive:
            config.setdefault("quick_gelu", True)
    model = _instantiate(config, precision)
    if path is not None:
        _load_at_matching_resolution(model, state_dict, path, regrid)
    regrid(model)
    _cast_to_precision(model, precision)
    return model


def _is_pretrained_tag(name: str, pretrained: str) -> bool:
    if Path(pretrained).is_file():
        return False
    return pretrained in open_clip.list_pretrained_tags_by_model(name)


def _load_pretrained_tag(name: str, tag: str, precision: str) -> nn.Module:
    """open_clip's model with the weights of ``tag``, read from a file on disk."""
    tag_config = open_clip.get_pretrained_cfg(name, tag)
    model: nn.Module = open_clip.create_model(
        name,
        pretrained=str(open_clip_weights(name, tag)),
        precision=precision,
        force_quick_gelu=bool(tag_config.get("quick_gelu", False)),
    )
    return model


def _model_config(name: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(name, Mapping):
        config = copy.deepcopy(dict(name))
        missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
        if missing:
            raise ValueError(f"name as a model config must have the keys {missing}")
        return config
    known: dict[str, Any] | None = open_clip.get_model_config(name)
    if known is None:
        raise ValueError(f"name must be an open_clip model name or a config mapping, got {name!r}")
    return known


def _instantiate(config: dict[str, Any], precision: str) -> nn.Module:
    if "multimodal_cfg" in config:
        raise ValueError("name: CoCa models (with a multimodal_cfg) are not supported")
    custom_text = config.pop("custom_text", False) or "hf_model_name" in config["text_cfg"]
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        model: nn.Module = model_class(**config, cast_dtype=open_clip.get_cast_dtype(precision))
    except TypeError as error:
        raise ValueError(f"name: open_clip does not understand the model config: {error}") from None
    return model


def _cast_to_precision(model: nn.Module, precision: str) -> None:
    if precision in _LOW_PRECISION:
        open_clip.convert_weights_to_lp(model, dtype=_LOW_PRECISION[precision])
    elif precision.startswith("pure_"):
        model.to(_LOW_PRECISION[precision.removeprefix("pure_")])


def _read_checkpoint(path: Path) -> tuple[dict[str, Tensor], bool]:
    """Return the checkpoint's state dict and whether it came from a TorchScript archive."""
    from_archive = _is_torchscript_archive(path)
    state_dict: Any  # whatever the file holds, checked below
    try:
        if path.suffix == ".safetensors":
            state_dict = load_safetensors(path.read_bytes())
        elif from_archive:
            # torch.jit.load is not annotated in torch.
            archive = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            state_dict = archive.state_dict()
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, SafetensorError) as error:
        raise ValueError(
            f"pretrained checkpoint {str(path)!r} is not a readable PyTorch checkpoint: {error}"
        ) from error
    if from_archive:
        for key in _ARCHIVE_METADATA:
            state_dict.pop(key, None)
    elif isinstance(state_dict, Mapping) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(f"pretrained checkpoint {str(path)!r} holds no state dict")
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return dict(state_dict), from_archive


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.endswith("/constants.pkl") for entry in archive.namelist())


def _load_at_matching_resolution(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    path: Path,
    regrid: Callable[[nn.Module], None],
) -> None:
    """Load ``state_dict`` at the original resolution, or re-grid first if it was saved so."""
    if isinstance(model, open_clip.CustomTextCLIP):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    key = "visual.positional_embedding"
    saved = state_dict.get(key)
    if saved is not None and saved.shape != model.state_dict()[key].shape:
        regrid(model)
    problems = _state_dict_mismatches(model, state_dict)
    if problems:
        listed = "; ".join(problems[:_REPORTED_KEYS])
        if len(problems) > _REPORTED_KEYS:
            listed += f"; and {len(problems) - _REPORTED_KEYS} more"
        raise ValueError(f"pretrained checkpoint {str(path)!r} does not match the model: {listed}")
    model.load_state_dict(state_dict)


def _state_dict_mismatches(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    expected = model.state_dict()
    problems = [f"missing {key}" for key in expected if key not in state_dict]
    problems += [f"unexpected {key}" for key in state_dict if key not in expected]
    problems += [
        f"{key} has shape {tuple(state_dict[key].shape)}, expected {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    return problems


def clip_tokenizer(name: str | Mapping[str, Any], context_length: int) -> Tokenizer:
    """The tokenizer of the CLIP model ``name`` (as :func:`load_clip` takes it), padding or
    cutting to ``context_length`` tokens (the text tower's positions), without the model."""
    if isinstance(name, str):
        return open_clip.get_tokenizer(name, context_length=context_length)
    hf_name = name["text_cfg"].get("hf_tokenizer_name")
    if hf_name:
        return HFTokenizer(hf_name, context_length=context_length)
    return open_clip.SimpleTokenizer(context_length=context_length)
