"""The on-disk embedding cache: nothing is embedded twice, shards are atomic, big caches open fast."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from finerouter.encoders import CachedEncoder, get_encoder
from finerouter.errors import EncoderError, ParameterError


class CountingEncoder:
    """A tiny deterministic Encoder: each text maps to a fixed unit vector; counts what it is asked to embed."""

    def __init__(self, name: str = "counting|d=16", dim: int = 16, fail_on_call: int | None = None) -> None:
        self.name = name
        self.dim = dim
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    @property
    def n_texts(self) -> int:
        return sum(len(c) for c in self.calls)

    def encode(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256((self.name + t).encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


def _shards(cache: CachedEncoder) -> list[Path]:
    return sorted(cache.directory.glob("shard-*.safetensors"))


def test_rerun_embeds_nothing_twice(tmp_path):
    inner = CountingEncoder()
    cache = CachedEncoder(inner, tmp_path)
    texts = [f"prompt number {i}" for i in range(20)]
    first = cache.encode(texts)
    assert inner.n_texts == 20
    np.testing.assert_array_equal(first, CountingEncoder().encode(texts))

    again = cache.encode(texts[::-1])
    assert inner.n_texts == 20, "cached texts were embedded again"
    np.testing.assert_array_equal(again, first[::-1])

    more = texts[:5] + ["a new one", "another new one"]
    out = cache.encode(more)
    assert inner.calls[-1] == ["a new one", "another new one"]
    assert inner.n_texts == 22
    np.testing.assert_array_equal(out[:5], first[:5])
    assert (cache.n_hits, cache.n_misses) == (20 + 5, 22)


def test_cache_persists_across_instances_and_processes(tmp_path):
    texts = ["alpha", "beta", "gamma", "alpha"]
    first = CachedEncoder(CountingEncoder(), tmp_path).encode(texts)
    inner = CountingEncoder()
    second = CachedEncoder(inner, tmp_path)
    np.testing.assert_array_equal(second.encode(texts), first)
    assert inner.calls == []
    assert len(second) == 3 and "beta" in second and "delta" not in second

    # A separate process reads the same cache; its encoder refuses to embed anything.
    code = (
        "import sys, numpy as np\n"
        "from finerouter.encoders import CachedEncoder\n"
        "class Refuse:\n"
        "    name = 'counting|d=16'\n"
        "    dim = 16\n"
        "    def encode(self, texts):\n"
        "        raise SystemExit('cache miss for %r' % (texts,))\n"
        "emb = CachedEncoder(Refuse(), sys.argv[1]).encode(['gamma', 'alpha'])\n"
        "sys.stdout.write(' '.join(repr(float(x)) for x in emb.ravel()))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    got = np.array([float(x) for x in res.stdout.split()], dtype=np.float32).reshape(2, 16)
    np.testing.assert_array_equal(got, first[[2, 0]])


def test_duplicates_within_a_call_are_embedded_once(tmp_path):
    inner = CountingEncoder()
    out = CachedEncoder(inner, tmp_path).encode(["x", "y", "x", "x", "y"])
    assert inner.calls == [["x", "y"]]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    assert not np.array_equal(out[0], out[1])


def test_interrupted_run_keeps_finished_shards_and_resumes(tmp_path):
    texts = [f"t{i}" for i in range(25)]
    inner = CountingEncoder(fail_on_call=3)
    cache = CachedEncoder(inner, tmp_path, shard_size=10)
    with pytest.raises(KeyboardInterrupt):
        cache.encode(texts)
    assert len(_shards(cache)) == 2
    assert not [p for p in cache.directory.iterdir() if p.name.endswith(".tmp")]

    resumed = CountingEncoder()
    out = CachedEncoder(resumed, tmp_path, shard_size=10).encode(texts)
    assert resumed.calls == [texts[20:]], "only the unfinished chunk should be embedded"
    np.testing.assert_array_equal(out, CountingEncoder().encode(texts))


def test_encoders_with_different_names_do_not_share_vectors(tmp_path):
    a, b = CountingEncoder("enc-a"), CountingEncoder("enc-b")
    va = CachedEncoder(a, tmp_path).encode(["same text"])
    vb = CachedEncoder(b, tmp_path).encode(["same text"])
    assert len(b.calls) == 1
    assert not np.array_equal(va, vb)
    assert len({p.name for p in tmp_path.iterdir()}) == 2


def test_metadata_of_another_encoder_is_refused(tmp_path):
    cache = CachedEncoder(CountingEncoder("enc-a"), tmp_path)
    cache.encode(["x"])
    (cache.directory / "encoder.json").write_text('{"name": "someone-else", "dim": 16}')
    with pytest.raises(EncoderError, match="belongs to encoder 'someone-else'"):
        CachedEncoder(CountingEncoder("enc-a"), tmp_path).encode(["y"])


def test_corrupt_shard_and_stray_temp_files_are_ignored(tmp_path, caplog):
    cache = CachedEncoder(CountingEncoder(), tmp_path, shard_size=2)
    cache.encode(["a", "b", "c", "d"])
    shards = _shards(cache)
    assert len(shards) == 2
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])  # damaged outside our atomic writes
    (cache.directory / ".shard-x.safetensors.123.tmp").write_bytes(b"partial")

    inner = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="finerouter.encoders.cache"):
        out = CachedEncoder(inner, tmp_path).encode(["a", "b", "c", "d"])
    assert "Ignoring unreadable embedding cache shard" in caplog.text
    assert sorted(t for call in inner.calls for t in call) == ["a", "b"]
    np.testing.assert_array_equal(out, CountingEncoder().encode(["a", "b", "c", "d"]))


def test_compact_merges_shards_without_changing_vectors(tmp_path):
    cache = CachedEncoder(CountingEncoder(), tmp_path, shard_size=3)
    texts = [f"s{i}" for i in range(10)]
    before = cache.encode(texts)
    assert len(_shards(cache)) == 4
    assert cache.compact() == 10
    assert len(_shards(cache)) == 1
    inner = CountingEncoder()
    np.testing.assert_array_equal(CachedEncoder(inner, tmp_path).encode(texts), before)
    assert inner.calls == []
    np.testing.assert_array_equal(cache.encode(texts), before)  # the compacting instance still works


def test_concurrent_writers_and_readers_agree(tmp_path):
    texts = [f"c{i}" for i in range(200)]
    expected = CountingEncoder().encode(texts)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            order = np.random.default_rng(seed).permutation(len(texts))
            cache = CachedEncoder(CountingEncoder(), tmp_path, shard_size=7)
            for chunk in np.array_split(order, 5):
                got = cache.encode([texts[i] for i in chunk])
                np.testing.assert_array_equal(got, expected[chunk])
            results.append(cache.encode(texts))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_bad_inner_output_and_bad_input_raise(tmp_path):
    class Broken(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(list(texts)) + 1, self.dim), dtype=np.float32)

    with pytest.raises(EncoderError, match="returned embeddings of shape"):
        CachedEncoder(Broken(), tmp_path).encode(["a"])
    cache = CachedEncoder(CountingEncoder(), tmp_path)
    with pytest.raises(ParameterError, match="not a single str"):
        cache.encode("a single string")
    with pytest.raises(ParameterError, match=r"texts\[1\] must be a str"):
        cache.encode(["ok", 3])
    with pytest.raises(ParameterError, match="'shard_size' parameter of CachedEncoder"):
        CachedEncoder(CountingEncoder(), tmp_path, shard_size=0)
    with pytest.raises(EncoderError, match="needs an Encoder"):
        CachedEncoder(object(), tmp_path)
    assert cache.encode([]).shape == (0, 16)


def test_get_encoder_wraps_in_cache(tmp_path):
    inner = CountingEncoder()
    enc = get_encoder(inner, cache_dir=tmp_path)
    assert isinstance(enc, CachedEncoder) and enc.encoder is inner
    assert enc.name == inner.name and enc.dim == inner.dim
    assert get_encoder(enc, cache_dir=tmp_path) is enc


def test_300k_cached_vectors_open_fast(tmp_path):
    n, d = 300_000, 32
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"prompt {i}" for i in range(n)]
    lookup = {t: i for i, t in enumerate(texts)}

    class TableEncoder:
        name, dim = "table|d=32", d
        calls = 0

        def encode(self, batch):
            TableEncoder.calls += 1
            return vectors[[lookup[t] for t in batch]]

    CachedEncoder(TableEncoder(), tmp_path, shard_size=50_000).encode(texts)
    assert TableEncoder.calls == 6

    start = time.perf_counter()
    cache = CachedEncoder(TableEncoder(), tmp_path)
    pick = rng.choice(n, size=1000, replace=False)
    got = cache.encode([texts[i] for i in pick])
    elapsed = time.perf_counter() - start
    assert TableEncoder.calls == 6
    np.testing.assert_array_equal(got, vectors[pick])
    assert len(cache) == n
    assert elapsed < 5.0, f"opening a 300K-vector cache took {elapsed:.2f}s"


@pytest.mark.slow
def test_real_minilm_cache_round_trip(minilm, tmp_path):
    texts = ["Write a SQL query that counts orders per customer.", "Who painted the Mona Lisa?", ""]
    direct = minilm.encode(texts)
    cache = CachedEncoder(minilm, tmp_path)
    assert cache.name == minilm.name and cache.dim == 384
    np.testing.assert_array_equal(cache.encode(texts), direct)
    reopened = CachedEncoder(minilm, tmp_path)
    np.testing.assert_array_equal(reopened.encode(texts[::-1]), direct[::-1])
    assert (reopened.n_hits, reopened.n_misses) == (3, 0)
    assert cache.fingerprint() == minilm.fingerprint()
    meta = (cache.directory / "encoder.json").read_text()
    assert minilm.name in meta and "site-packages" not in meta
