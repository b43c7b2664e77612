"""Fixtures shared by the data tests: one default synthetic data set per test session."""

from __future__ import annotations

import pytest

from reidkit.data import SyntheticReID


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("synthetic-cache")


@pytest.fixture(scope="session")
def synthetic(synthetic_cache) -> SyntheticReID:
    """The default SyntheticReID (about 600 images of 128×64), generated once."""
    return SyntheticReID(synthetic_cache)


@pytest.fixture(scope="session")
def synthetic_local_cues(synthetic_cache) -> SyntheticReID:
    """The default-sized SyntheticReID of the ``local_cues`` variant, generated once."""
    return SyntheticReID(synthetic_cache, variant="local_cues")
