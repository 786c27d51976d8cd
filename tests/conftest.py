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


@pytest.fixture(scope="session")
def gateway_router(minilm):
    """A real FineRouter with the packaged MiniLM, fitted once per session on small planted synthetic data (4
    models, per-prompt costs): the router the gateway tests serve. Tests must not change it."""
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    fast = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2}}
    return FineRouter(encoder=minilm, seed=0, **fast).fit(data)


@pytest.fixture(scope="session")
def fake_encoder_router():
    """A FineRouter on the deterministic :class:`finerouter.testing.FakeEncoder` (no model to load), fitted once
    per session with ``FAST_SETTINGS`` on the same planted synthetic data as ``gateway_router`` (4 models,
    per-prompt costs): for tests of what surrounds the router (the gateway), which need real routing decisions
    but not real embeddings. Tests must not change it."""
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    return FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(data)


@pytest.fixture
def serve_process():
    """Start a real ``finerouter serve`` process on a free loopback port: ``serve_process(args, env)`` returns
    ``(process, base_url)`` once its ``/healthz`` answers (stdout and stderr merged into ``process.stdout``).
    The test stops it (and reads its output); one still running at teardown is killed."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    started: list[subprocess.Popen] = []

    def start(args: list[str], env: dict[str, str], timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "finerouter.cli.main", "serve", *args, "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "finerouter serve did not come up"
            time.sleep(0.2)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
