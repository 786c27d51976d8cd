"""The on-disk embedding cache: nothing is embedded twice, shards are atomic, big caches open fast."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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


def _rewrite_header(path: Path, edit) -> None:
    """Rewrite a shard's safetensors header with ``edit(header)`` applied (data bytes kept as they are)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def _vectors_span(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    begin, end = json.loads(raw[8 : 8 + n])["vectors"]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def _damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    n_header = int.from_bytes(raw[:8], "little")
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage_file":
        path.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif how == "garbage_header":
        path.write_bytes(raw[:8] + b"\xff" * n_header + raw[8 + n_header :])
    elif how == "huge_header_length":
        path.write_bytes((1 << 60).to_bytes(8, "little") + raw[8:])
    elif how == "shape_does_not_match_bytes":
        _rewrite_header(path, lambda h: h["vectors"].__setitem__("shape", [h["vectors"]["shape"][0], 17]))
    elif how == "fewer_vectors_than_keys":
        def edit(h):
            rows, dim = h["vectors"]["shape"]
            begin, end = h["vectors"]["data_offsets"]
            h["vectors"]["shape"] = [rows - 1, dim]
            h["vectors"]["data_offsets"] = [begin, end - 4 * dim]

        _rewrite_header(path, edit)
        path.write_bytes(path.read_bytes()[: -4 * 16])
    elif how == "trailing_bytes":
        path.write_bytes(raw + b"\0" * 64)
    elif how in ("nan_vectors", "scaled_vectors"):
        begin, end = _vectors_span(path)
        vectors = np.frombuffer(raw[begin:end], dtype=np.float32).copy()
        vectors[:] = np.nan if how == "nan_vectors" else vectors * 3.0
        path.write_bytes(raw[:begin] + vectors.tobytes() + raw[end:])
    else:  # pragma: no cover
        raise AssertionError(how)


DAMAGE = [
    "truncated",
    "empty",
    "garbage_file",
    "garbage_header",
    "huge_header_length",
    "shape_does_not_match_bytes",
    "fewer_vectors_than_keys",
    "trailing_bytes",
    "nan_vectors",
    "scaled_vectors",
]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_shard_is_detected_removed_and_rebuilt(tmp_path, caplog, how):
    texts = ["a", "b", "c", "d"]
    cache = CachedEncoder(CountingEncoder(), tmp_path, shard_size=2)
    cache.encode(texts)
    shards = _shards(cache)
    assert len(shards) == 2
    _damage(shards[0], how)  # damaged outside our atomic writes
    (cache.directory / ".shard-x.safetensors.123.tmp").write_bytes(b"partial")  # an interrupted write

    inner = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="finerouter.encoders.cache"):
        out = CachedEncoder(inner, tmp_path).encode(texts)
    np.testing.assert_array_equal(out, CountingEncoder().encode(texts))
    assert sorted(t for call in inner.calls for t in call) == ["a", "b"]  # only the damaged shard's texts
    assert f"{shards[0].name} is damaged" in caplog.text
    assert not shards[0].exists()
    again = CountingEncoder()  # rebuilt: a fresh reader embeds nothing and warns no more
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="finerouter.encoders.cache"):
        np.testing.assert_array_equal(CachedEncoder(again, tmp_path).encode(texts), out)
    assert again.calls == [] and caplog.text == ""
    # The instance that had indexed the shard before it was damaged notices too.
    if how in ("nan_vectors", "scaled_vectors", "truncated", "trailing_bytes"):
        cache2 = CachedEncoder(CountingEncoder(), tmp_path, shard_size=2)
        cache2.encode(texts)
        victim = next(p for p in _shards(cache2))
        _damage(victim, how)
        np.testing.assert_array_equal(cache2.encode(texts), out)


@pytest.mark.parametrize(
    "meta", ["{not json", "", "[]", '{"name": "counting|d=16"}', '{"name": "counting|d=16", "dim": 32}']
)
def test_damaged_metadata_is_rewritten(tmp_path, caplog, meta):
    texts = ["a", "b", "c"]
    cache = CachedEncoder(CountingEncoder(), tmp_path)
    expected = cache.encode(texts)
    (cache.directory / "encoder.json").write_text(meta)
    with caplog.at_level(logging.WARNING, logger="finerouter.encoders.cache"):
        out = CachedEncoder(CountingEncoder(), tmp_path).encode(texts + ["d"])
    np.testing.assert_array_equal(out[:3], expected)
    assert "embedding cache" in caplog.text.lower()
    assert json.loads((cache.directory / "encoder.json").read_text()) == {"name": "counting|d=16", "dim": 16}
    inner = CountingEncoder()
    np.testing.assert_array_equal(CachedEncoder(inner, tmp_path).encode(texts + ["d"]), out)
    assert inner.calls == []


def test_an_unwritable_cache_still_serves_vectors(tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    inner = CountingEncoder()
    cache = CachedEncoder(inner, blocked)
    with caplog.at_level(logging.WARNING, logger="finerouter.encoders.cache"):
        out = cache.encode(["a", "b"])
        np.testing.assert_array_equal(cache.encode(["b", "a"]), out[::-1])
    np.testing.assert_array_equal(out, CountingEncoder().encode(["a", "b"]))
    assert "Could not write to the embedding cache" in caplog.text
    assert caplog.text.count("Could not write") == 1  # said once, not at every call


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")


@needs_proc
def test_open_files_and_shards_stay_bounded_under_many_small_batches(tmp_path):
    # A gateway writes one small shard per routing batch with new prompts.
    texts = [f"distinct prompt {i}" for i in range(3000)]
    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(1, 4, size=len(texts)))
    batches = np.split(np.arange(len(texts)), cuts[cuts < len(texts)])
    cache = CachedEncoder(CountingEncoder(), tmp_path)
    cache.encode(texts[:1])
    before = _open_fds()
    most_shards = 0
    for batch in batches:
        cache.encode([texts[i] for i in batch] + texts[: 1 + int(batch[0]) % 3])  # new prompts plus a few hits
        most_shards = max(most_shards, len(_shards(cache)))
    assert _open_fds() - before <= 2, "the cache keeps file descriptors open"
    assert most_shards <= cache.max_shards + 1 and cache.n_shards <= cache.max_shards
    expected = CountingEncoder().encode(texts)
    inner = CountingEncoder()
    reopened = CachedEncoder(inner, tmp_path)
    np.testing.assert_array_equal(reopened.encode(texts), expected)
    np.testing.assert_array_equal(cache.encode(texts[::-1]), expected[::-1])
    assert inner.calls == [] and len(reopened) == len(texts)


def test_merge_plan_merges_a_tier_of_similar_shards():
    from finerouter.encoders.cache import merge_plan

    sizes = {i: 1 for i in range(10)} | {10 + i: 100 for i in range(8)} | {20: 50_000}
    assert sorted(merge_plan(sizes)) == list(range(10))
    sizes = {i: 8 + i for i in range(9)} | {20: 3, 21: 5}  # tier 0 holds only two: tier 1 is merged
    assert sorted(merge_plan(sizes)) == list(range(9))
    # Rows are rewritten once per tier at most: a long run of one-text shards stays cheap.
    sizes, next_id, rewritten = {}, 0, 0
    for _ in range(20_000):
        sizes[next_id] = 1
        next_id += 1
        while len(sizes) > 64:
            plan = merge_plan(sizes)
            merged = sum(sizes.pop(s) for s in plan)
            rewritten += merged
            sizes[next_id] = merged
            next_id += 1
    assert len(sizes) <= 64 and sum(sizes.values()) == 20_000
    assert rewritten <= 20_000 * 6  # log_8(20,000) < 5 tiers


@needs_proc
def test_restart_on_a_cache_of_thousands_of_shards_under_a_low_fd_limit(tmp_path):
    # What an older version left behind after a busy day: one shard per routing batch.
    from safetensors.numpy import save_file

    n = 1500
    texts = [f"p{i}" for i in range(n)]
    vectors = CountingEncoder().encode(texts)
    cache = CachedEncoder(CountingEncoder(), tmp_path)
    cache.encode(texts[:1])
    for i in range(1, n):
        key = np.frombuffer(hashlib.sha256(texts[i].encode()).digest(), dtype=np.uint8).reshape(1, 32)
        path = cache.directory / f"shard-{i:020d}-1-x.safetensors"
        save_file({"keys": key, "vectors": vectors[i : i + 1]}, str(path))
    code = (
        "import os, resource, sys, numpy as np\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))\n"
        "from finerouter.encoders import CachedEncoder\n"
        "class Refuse:\n"
        "    name = 'counting|d=16'\n"
        "    dim = 16\n"
        "    def encode(self, texts):\n"
        "        raise SystemExit('cache miss for %d texts' % len(texts))\n"
        "cache = CachedEncoder(Refuse(), sys.argv[1])\n"
        f"texts = ['p%d' % i for i in range({n})]\n"
        "emb = cache.encode(texts)\n"
        "np.save(sys.argv[2], emb)\n"
        "print(cache.n_shards, len(os.listdir('/proc/self/fd')))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), vectors)
    n_shards, n_fds = (int(x) for x in res.stdout.split())
    assert n_shards <= 64 and len(_shards(cache)) <= 64 and n_fds < 20


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


def _run_in_threads(work, n: int = 4) -> None:
    """Run ``work(i)`` for ``i`` in ``range(n)``, each in its own thread, all at once; fail with what any raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_concurrent_writers_and_readers_agree(tmp_path):
    texts = [f"c{i}" for i in range(200)]
    expected = CountingEncoder().encode(texts)
    results: list[np.ndarray] = []

    def work(seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(texts))
        cache = CachedEncoder(CountingEncoder(), tmp_path, shard_size=7)
        for chunk in np.array_split(order, 5):
            got = cache.encode([texts[i] for i in chunk])
            np.testing.assert_array_equal(got, expected[chunk])
        results.append(cache.encode(texts))

    _run_in_threads(work)
    assert len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_concurrent_instances_merging_shards_agree(tmp_path):
    # Separate instances (as separate gateway processes would be) write small shards and merge them at once.
    texts = [f"m{i}" for i in range(600)]
    expected = CountingEncoder().encode(texts)
    caches = [CachedEncoder(CountingEncoder(), tmp_path, shard_size=2, max_shards=8) for _ in range(4)]

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(150):
            pick = rng.choice(len(texts), size=int(rng.integers(1, 5)), replace=False)
            np.testing.assert_array_equal(caches[seed].encode([texts[i] for i in pick]), expected[pick])

    _run_in_threads(work)
    inner = CountingEncoder()
    final = CachedEncoder(inner, tmp_path, max_shards=8)
    cached = [t for t in texts if t in final]
    np.testing.assert_array_equal(final.encode(cached + ["one more"]), CountingEncoder().encode(cached + ["one more"]))
    assert inner.calls == [["one more"]] and len(_shards(final)) <= 8


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
    with pytest.raises(ParameterError, match=r"'max_shards' parameter of CachedEncoder must be an int in \[8, inf\)"):
        CachedEncoder(CountingEncoder(), tmp_path, max_shards=2)
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


@pytest.mark.slow
@needs_proc
def test_gateway_with_a_cache_dir_keeps_open_files_bounded(cached_minilm, minilm, tmp_path):
    # `finerouter serve --cache-dir`: every routing batch with new prompts writes a shard.
    import httpx

    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.serving.app import create_app
    from finerouter.serving.config import parse_gateway_config
    from finerouter.testing import BackgroundServer

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    fast = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2}}
    saved = FineRouter(encoder=cached_minilm, seed=0, **fast).fit(data).save(tmp_path / "router")
    router = FineRouter.load(saved, encoder=minilm, cache_dir=tmp_path / "cache")
    config = parse_gateway_config(
        {"upstreams": {m: {"base_url": "http://127.0.0.1:9/v1"} for m in router.models_}}, source="test"
    )
    server = BackgroundServer(create_app(router, config)).start()
    prompts = [f"Question {i}: what is {i} plus {i * 7 % 13}, and why?" for i in range(600)]
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            def route(batch):
                r = client.post("/v1/route", json={"prompts": batch})
                assert r.status_code == 200, r.text
                return [d["model"] for d in r.json()["data"]]

            route(prompts[:3])
            before = _open_fds()
            routed = []
            for i in range(3, len(prompts), 3):
                routed += route(prompts[i : i + 3])
            after = _open_fds()
            assert route(prompts[3:11]) == routed[:8]  # served from the cache, same decisions
    finally:
        server.stop()
    assert after - before <= 4, f"{after - before} more open files after routing {len(prompts)} prompts"
    cache = router.encoder_
    assert len(_shards(cache)) <= cache.max_shards and all(p in cache for p in prompts)
