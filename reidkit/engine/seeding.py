"""Seeding and the capture/restore of every random number generator a training run uses.

NumPy's legacy global generator is seeded and saved on purpose: it is the one that
augmentation code and libraries draw from when they are not handed a ``Generator``.
"""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch

from reidkit import checks


def seed_everything(seed: int, *, rank: int = 0, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    Args:
        seed: base seed, an integer >= 0.
        rank: added to ``seed``, so that data augmentation differs between ranks while a run
            stays reproducible (pass 0 where every rank must draw the same numbers, e.g. before
            building the model).
        deterministic: also ask torch for deterministic algorithms (slower; errors on
            operations without a deterministic implementation).

    Returns:
        The seed actually used, ``seed + rank``.
    """
    checks.check_integer("seed", seed, 0)
    value = seed + rank
    random.seed(value)
    np.random.seed(value % 2**32)  # noqa: NPY002
    torch.manual_seed(value)
    torch.cuda.manual_seed_all(value)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return value


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's, torch's CPU and every CUDA generator.

    The state holds tensors and plain Python values only (no NumPy objects), so that a
    checkpoint holding it loads with ``torch.load(..., weights_only=True)``::

        {"python": {"version": 3, "state": int64 (625,), "gauss_next": float | None},
         "numpy": {"algorithm": "MT19937", "key": int64 (624,), "position": int,
                   "has_gauss": int, "cached_gaussian": float},
         "torch": uint8 (5056,),
         "cuda": [uint8 tensor per device]}          # only where CUDA is available
    """
    version, internal, gauss_next = random.getstate()
    algorithm, key, position, has_gauss, cached_gaussian = cast(
        tuple[str, np.ndarray, int, int, float],
        np.random.get_state(),  # noqa: NPY002
    )
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "algorithm": str(algorithm),
            "key": torch.from_numpy(key.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _check_words(value: Any, where: str, length: int) -> None:
    """``value`` must be an int64 tensor of ``length`` 32-bit unsigned words."""
    if (
        not isinstance(value, torch.Tensor)
        or value.dtype != torch.int64
        or tuple(value.shape) != (length,)
        or bool(((value < 0) | (value >= 2**32)).any())
    ):
        raise ValueError(f"{where} must be an int64 tensor of {length} values in [0, 2**32)")


def check_rng_state(state: Any) -> None:
    """Raise ``ValueError`` unless ``state`` has the layout :func:`capture_rng_state` returns.

    Restoring a checked state cannot fail half-way, so a checkpoint is checked before anything
    is restored from it.
    """
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise ValueError("the random state must be a dict with the keys python, numpy and torch")
    python, numpy = state["python"], state["numpy"]
    if not isinstance(python, dict) or python.get("version") != random.Random.VERSION:
        raise ValueError(
            f"the Python random state must be a dict with version {random.Random.VERSION}"
        )
    _check_words(python.get("state"), "the Python random state", 625)
    if int(python["state"][-1]) > 624:
        raise ValueError("the Python random state's position must be <= 624")
    if not isinstance(python.get("gauss_next"), (float, type(None))):
        raise ValueError("the Python random state's gauss_next must be a float or None")
    if not isinstance(numpy, dict) or numpy.get("algorithm") != "MT19937":
        raise ValueError("the NumPy random state must be a dict with algorithm 'MT19937'")
    _check_words(numpy.get("key"), "the NumPy random state's key", 624)
    for name, kind in (("position", int), ("has_gauss", int), ("cached_gaussian", float)):
        if not isinstance(numpy.get(name), kind):
            raise ValueError(f"the NumPy random state's {name} must be a {kind.__name__}")
    if not 0 <= numpy["position"] <= 624:
        raise ValueError("the NumPy random state's position must be in [0, 624]")
    cpu, cuda = state["torch"], state.get("cuda", [])
    if not (
        isinstance(cpu, torch.Tensor)
        and cpu.dtype == torch.uint8
        and cpu.shape == torch.get_rng_state().shape
    ):
        raise ValueError("the torch random state must be a uint8 tensor of torch's state size")
    if not isinstance(cuda, list) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda
    ):
        raise ValueError("the CUDA random states must be a list of uint8 tensors")


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators from :func:`capture_rng_state`'s output (CUDA only if both have it).

    Raises:
        ValueError: ``state`` does not have that layout (nothing is restored then).
    """
    check_rng_state(state)
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    np.random.set_state(  # noqa: NPY002
        (
            numpy["algorithm"],
            numpy["key"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
