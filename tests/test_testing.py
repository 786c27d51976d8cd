"""finerouter.testing: the fake encoder, the fast fit settings and the manual clock do what tests rely on."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from finerouter.encoders.base import Encoder
from finerouter.errors import ParameterError
from finerouter.testing import FAST_SETTINGS, FakeEncoder, ManualClock

TEXTS = ["Solve the algebra equation 3x + 7 = 22.", "Solve this algebra equation: 5x - 2 = 13.",
         "Bake a chocolate cake for six people.", "", "?!"]


def test_fake_encoder_is_an_encoder_of_unit_rows():
    encoder = FakeEncoder(dim=32)
    assert isinstance(encoder, Encoder) and encoder.dim == 32 and encoder.name == "fake-hashed-bow-32"
    x = encoder.encode(TEXTS)
    assert x.shape == (len(TEXTS), 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)  # texts without words too
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(TypeError, match="sequence of texts"):
        encoder.encode("one string")
    with pytest.raises(ParameterError, match="'dim' parameter of FakeEncoder"):
        FakeEncoder(dim=1)


def test_fake_encoder_puts_texts_that_share_words_close():
    x = FakeEncoder().encode(TEXTS[:3])
    assert x[0] @ x[1] > 0.5 > abs(x[0] @ x[2])
    assert np.array_equal(x, FakeEncoder().encode(TEXTS[:3]))  # two instances with one name: the same vectors


def test_fake_encoder_vectors_do_not_depend_on_the_process():
    """The hash is stable (unlike Python's salted ``hash``): another interpreter with another hash seed gives the
    same vectors, so a cache or an artifact keyed by the encoder's name stays valid."""
    code = "import sys; from finerouter.testing.encoders import FakeEncoder; sys.stdout.write(FakeEncoder().encode(sys.argv[1:]).tobytes().hex())"
    out = subprocess.run([sys.executable, "-c", code, *TEXTS[:3]], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert bytes.fromhex(out) == FakeEncoder().encode(TEXTS[:3]).tobytes()


def test_fast_settings_fit_a_router_that_follows_the_planted_tasks():
    """FineRouter(encoder=FakeEncoder(), **FAST_SETTINGS) fits in seconds and, on held-out prompts of the same
    planted tasks, picks better models than the best single model does."""
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter

    data = make_synthetic_routing_data(n_prompts=240, n_models=4, seed=0)
    order = np.random.default_rng(0).permutation(len(data.prompts))
    train, test = data.subset(np.sort(order[:120])), data.subset(np.sort(order[120:]))
    router = FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(train)
    chosen = [router.models_.index(d.model) for d in router.route(list(test.prompts))]
    routed = test.scores[np.arange(len(chosen)), chosen].mean()
    assert routed > test.scores.mean(axis=0).max()


def test_manual_clock_moves_only_forward_when_told():
    clock = ManualClock(5.0)
    assert clock() == clock() == 5.0
    assert clock.advance(2.5) == 7.5 == clock()
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
