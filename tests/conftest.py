"""Shared fixtures.

Tests that need ../shared/data skip when it is absent, except under CI=true where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"required shared data missing under CI: {path}")
        pytest.skip(f"shared data not found: {path} (set FINEROUTER_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """Callable: name -> Path of a shared dataset (skips, or fails under CI, when absent)."""
    from finerouter.data.locate import dataset_path

    return lambda name: _require(dataset_path(name))


@pytest.fixture(scope="session")
def prices_csv() -> Path:
    from finerouter.data.locate import shared_data_dir

    return _require(shared_data_dir() / "dcrouter" / "prices.csv")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def minilm():
    """The real default encoder (packaged all-MiniLM-L6-v2), loaded once per session."""
    from finerouter.encoders.sentence_transformer import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


@pytest.fixture(scope="session")
def embedding_cache_dir() -> Path:
    """A persistent embedding cache inside the checkout (git-ignored), shared by every test in the run, so the
    real datasets are embedded once per machine."""
    path = Path(__file__).resolve().parents[1] / ".finerouter_cache" / "tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def cached_minilm(minilm, embedding_cache_dir):
    """The real MiniLM behind the on-disk embedding cache."""
    from finerouter.encoders import CachedEncoder

    return CachedEncoder(minilm, embedding_cache_dir)
