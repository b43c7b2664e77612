"""Test-wide settings: Triton's interpreter on CPU-only machines and hypothesis profiles."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton runs on the CPU only in its interpreter, which must be chosen before
    # ``triton`` is imported anywhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def fresh_deprecations(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test sees the deprecations as a new process would: none has warned yet."""
    from reidkit import _deprecation

    monkeypatch.setattr(_deprecation, "_warned", set())
