"""Seeding and the capture/restore of every random number generator a training run uses.

NumPy's legacy global generator is seeded and saved on purpose: it is the one that
augmentation code and libraries draw from when they are not handed a ``Generator``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


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
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
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
    """The states of Python's, NumPy's, torch's CPU and every CUDA generator (picklable)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators from :func:`capture_rng_state`'s output (CUDA only if both have it)."""
    missing = {"python", "numpy", "torch"} - set(state)
    if missing:
        raise ValueError(f"state must hold the keys python, numpy and torch; missing {missing}")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
