"""Weights-only files: a module's ``state_dict`` in the safetensors format.

A run folder keeps, beside its training checkpoints, the weights of the model it trained and
nothing else (``model.safetensors``, and ``best_model.safetensors`` for the best evaluation):
no optimiser state, no pickled objects, readable by any safetensors reader. The description
of the model that the weights fit (``model.json``) is written by the recipe and read by
:func:`reidkit.load_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from reidkit.distributed import unwrap_model
from reidkit.engine.atomic import atomic_write_bytes

MODEL_WEIGHTS = "model.safetensors"
"""The weights of the model at the end of the run."""

BEST_WEIGHTS = "best_model.safetensors"
"""The weights of the model at its best evaluation."""


def save_weights(
    module: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the ``state_dict`` of ``module`` (unwrapped from DDP) to ``path`` atomically.

    Tensors that share memory (tied weights) are stored once each under their own key.

    Args:
        module: the model.
        path: the ``.safetensors`` file.
        metadata: strings stored in the file's header.

    Returns:
        ``path``.
    """
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, tensor in unwrap_model(module).state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return atomic_write_bytes(save_safetensors(tensors, metadata=dict(metadata or {})), path)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The tensors of a weights file, by key, on ``device``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        tensors = load_safetensors(path.read_bytes())
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"weights file {path} is not a safetensors file: {error}") from None
    return {key: tensor.to(device) for key, tensor in tensors.items()}
