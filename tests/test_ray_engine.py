"""The Ray engine against the single-process path, on a local Ray cluster (2 CPUs) started once for the module:
identical embeddings (streamed into the cache, resumed after an interruption), identical kNN neighbours from
database shards, identical catalogs and routing decisions, an upstream limit held across the cluster (counted by
the servers), the same evaluation table, and one-line errors for a bad address or a missing Ray."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

from finerouter.discovery.graph import build_graph, knn_search
from finerouter.engines import LocalEngine, RayEngine, embed_texts
from finerouter.engines.knn import merge_shards, sharded_knn_search
from finerouter.errors import EngineError
from finerouter.testing import FAST_SETTINGS, FakeEncoder


def _ray():
    if os.environ.get("CI") == "true":  # CI installs finerouter[ray]: these tests must run there
        import ray

        return ray
    return pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    from finerouter.engines.ray_engine import runtime_env

    ray = _ray()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env(), namespace="finerouter-tests",
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def engine(ray_cluster):
    return RayEngine("local", workers=2, batch_size=32, knn_shard_rows=60, namespace="finerouter-tests")


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _texts(n: int) -> list[str]:
    return [f"prompt {i}: how do I {['sort', 'parse', 'plot', 'test'][i % 4]} item {i % 13} in python" for i in range(n)]


# ---- kNN in shards (no cluster needed for the merge itself) ---------------------------------------------------------
@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_exact_knn_equals_the_unsharded_search(shards):
    x = _unit_rows(700, 24, seed=shards)
    idx, sim = knn_search(x, 5, method="exact")
    s_idx, s_sim = sharded_knn_search(x, 5, method="exact", seed=0, n_shards=shards)
    np.testing.assert_array_equal(s_idx, idx)
    np.testing.assert_array_equal(s_sim, sim)
    ranks = np.argsort(np.random.default_rng(1).random((700, 6)), axis=1) + 1
    plain, sharded = build_graph(x, ranks, k=5, neighbours=(idx, sim)), build_graph(x, ranks, k=5, neighbours=(s_idx, s_sim))
    for field in ("u", "v", "weight", "cosine", "rbo"):
        np.testing.assert_array_equal(getattr(sharded, field), getattr(plain, field))


def test_the_merge_orders_ties_by_row_index_whatever_the_shard_order():
    a = (np.array([[7, 3, -1]]), np.array([[0.5, 0.5, -np.inf]], dtype=np.float32))
    b = (np.array([[1, 9]]), np.array([[0.9, 0.5]], dtype=np.float32))
    for parts in ([a, b], [b, a]):
        idx, sim = merge_shards(parts, 3)
        assert idx.tolist() == [[1, 3, 7]] and sim[0].tolist() == pytest.approx([0.9, 0.5, 0.5])


def test_local_engine_shards_the_search_only_when_asked():
    x = _unit_rows(300, 16, seed=3)
    plain = knn_search(x, 4, method="exact")
    for eng in (LocalEngine(), LocalEngine(knn_shard_rows=50)):
        got = eng.knn_search(x, 4, method="exact", seed=0)
        np.testing.assert_array_equal(got[0], plain[0])


# ---- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["bogus", "http://host:1", "127.0.0.1:1"])
def test_a_bad_ray_address_is_one_clear_line(address, tmp_path):
    from typer.testing import CliRunner

    from finerouter.cli.main import app

    _ray()
    result = CliRunner().invoke(app, ["fit", "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "r"),
                                      "--ray", address])
    assert result.exit_code == 2
    assert ("The Ray address must be" in result.output) or ("No Ray cluster answers at '127.0.0.1:1'" in result.output)
    assert "Traceback" not in result.output


def test_a_missing_ray_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineError, match=r"install finerouter\[ray\]"):
        RayEngine("local").connect()


# ---- embedding --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embeddings_through_ray_are_the_plain_ones(engine, tmp_path):
    from finerouter.encoders import CachedEncoder

    texts = _texts(400) + _texts(50)  # repeated texts are embedded once
    plain = FakeEncoder().encode(texts)
    cache = CachedEncoder(FakeEncoder(), tmp_path, shard_size=100)
    np.testing.assert_array_equal(embed_texts(cache, texts, engine), plain)
    assert len(cache) == 400 and cache.n_shards == 4  # streamed into the cache in shards of shard_size
    np.testing.assert_array_equal(embed_texts(FakeEncoder(), texts, engine), plain)  # without a cache


class _Interrupted(Exception):
    pass


class _Recording(RayEngine):
    """A RayEngine that remembers which texts it was asked to embed."""

    def map_batches(self, make_fn, items, *, batch_size=None):
        self.asked = list(items)
        yield from super().map_batches(make_fn, items, batch_size=batch_size)


@pytest.mark.slow
def test_an_interrupted_embedding_job_resumes_with_only_the_missing_texts(engine, tmp_path):
    from finerouter.encoders import CachedEncoder

    texts = _texts(600)

    def stop_after_first_shard(done, total):
        raise _Interrupted(done)

    with pytest.raises(_Interrupted):
        embed_texts(CachedEncoder(FakeEncoder(), tmp_path, shard_size=100), texts, engine,
                    progress=stop_after_first_shard)
    cache = CachedEncoder(FakeEncoder(), tmp_path, shard_size=100)
    saved = {t for t in texts if t in cache}
    assert 100 <= len(saved) < 600  # the shards finished before the interruption are on disk
    again = _Recording(**engine.get_params())
    out = embed_texts(cache, texts, again)
    assert len(again.asked) == 600 - len(saved) and set(again.asked) == set(texts) - saved
    np.testing.assert_array_equal(out, FakeEncoder().encode(texts))
    assert len(cache) == 600


@pytest.mark.slow
def test_real_minilm_embeddings_through_ray_match_the_plain_ones(engine, minilm):
    texts = _texts(96)
    plain = minilm.encode(texts)
    on_ray = embed_texts(minilm, texts, engine)
    # same model, other batch mates: equal up to float32 rounding of the padded batches
    np.testing.assert_allclose(on_ray, plain, atol=2e-6)
    assert np.array_equal(np.argsort(-(on_ray @ on_ray.T), axis=1)[:, :6], np.argsort(-(plain @ plain.T), axis=1)[:, :6])


# ---- discovery and routing ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_router_fitted_on_ray_has_the_same_catalog_and_decisions(engine, tmp_path):
    import json

    from finerouter import FineRouter
    from finerouter.data.synthetic import make_synthetic_routing_data

    train, test = make_synthetic_routing_data(n_prompts=300, n_models=4, seed=0).split(test_size=0.25, seed=0)
    local = FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(train)
    on_ray = FineRouter(encoder=FakeEncoder(), seed=0, engine=engine, **FAST_SETTINGS).fit(train)
    np.testing.assert_array_equal(on_ray.discovery_labels_, local.discovery_labels_)
    assert on_ray.catalog_.n_tasks == local.catalog_.n_tasks > 1
    for a, b in zip(on_ray.catalog_.tasks, local.catalog_.tasks):
        assert (a.candidates, a.description, a.members.tolist()) == (b.candidates, b.description, b.members.tolist())
    assert on_ray.mixing_.to_dict() == local.mixing_.to_dict()
    decisions = [(d.model, d.task_id) for d in on_ray.route(test.prompts, tolerance=0.05)]
    assert decisions == [(d.model, d.task_id) for d in local.route(test.prompts, tolerance=0.05)]
    on_ray.save(tmp_path / "router")
    assert "engine" not in json.loads((tmp_path / "router" / "manifest.json").read_text())["config"]
    loaded = FineRouter.load(tmp_path / "router")
    assert loaded.engine is None and loaded.discovery_.engine is None
    assert [d.model for d in loaded.route(test.prompts[:20])] == [d.model for d in local.route(test.prompts[:20])]


@pytest.mark.slow
def test_discovery_with_the_knn_in_shards_on_ray_is_the_plain_discovery(engine):
    from finerouter.discovery import TaskDiscovery

    x = _unit_rows(400, 16, seed=5)
    scores = np.random.default_rng(5).random((400, 5))
    plain = TaskDiscovery(knn="exact", seed=0).fit(x, scores, model_names=list("abcde"))
    sharded = TaskDiscovery(knn="exact", seed=0, engine=engine).fit(x, scores, model_names=list("abcde"))
    np.testing.assert_array_equal(sharded.labels_, plain.labels_)
    assert sharded.level_stats_ == plain.level_stats_


# ---- calls under a cluster-wide limit --------------------------------------------------------------------------------
@pytest.mark.slow
def test_collect_on_ray_keeps_the_upstream_limit_across_two_jobs(engine, tmp_path):
    from finerouter.collect.client import Endpoint
    from finerouter.collect.collect import Collector
    from finerouter.collect.prompts import Prompt, prompt_key
    from finerouter.testing import BackgroundServer, FakeUpstream

    upstream = FakeUpstream("alpha", delay_s=0.15)
    with BackgroundServer(upstream) as server:
        endpoints = {"alpha": Endpoint.from_url(f"{server.url}/v1", "alpha")}
        reports = {}

        def job(name: str) -> None:
            prompts = [Prompt(t, prompt_key(t)) for t in _texts(12)]
            own = RayEngine(**engine.get_params())  # each job its own engine (its own call actors), as two drivers
            collector = Collector(endpoints, tmp_path / name, concurrency=3, engine=own)
            reports[name] = asyncio.run(collector.run(prompts))

        threads = [threading.Thread(target=job, args=(n,)) for n in ("one", "two")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [reports[n].answered for n in ("one", "two")] == [12, 12]
    assert upstream.calls == 24
    assert upstream.max_in_flight == 3  # two drivers, one limit of 3 held by the cluster-wide limiter


@pytest.mark.slow
def test_judge_on_ray_gives_the_local_judgments_within_its_limit(engine, tmp_path):
    from finerouter.collect.client import Endpoint
    from finerouter.collect.collect import ANSWERS_FILE
    from finerouter.collect.judge import Judge
    from finerouter.collect.prompts import prompt_key
    from finerouter.collect.store import JsonlStore
    from finerouter.testing import BackgroundServer, FakeJudge

    async def write():
        async with JsonlStore(tmp_path / ANSWERS_FILE) as store:
            for i, text in enumerate(_texts(10)):
                for model in ("a", "b"):
                    await store.append({"prompt_key": prompt_key(text), "prompt": text, "model": model,
                                        "status": "ok", "answer": "x" * (i + len(model) * 3), "cost_usd": 0.001})

    asyncio.run(write())
    judge = FakeJudge(delay_s=0.1)
    with BackgroundServer(judge) as server:
        endpoint = Endpoint.from_url(f"{server.url}/v1", "judge")
        local = Judge(tmp_path, endpoint=endpoint, judgments=tmp_path / "local.jsonl", concurrency=2)
        asyncio.run(local.run())
        judge.max_in_flight = 0
        on_ray = Judge(tmp_path, endpoint=endpoint, judgments=tmp_path / "ray.jsonl", concurrency=2, engine=engine)
        report = asyncio.run(on_ray.run())
    assert report.judged == 20 and judge.max_in_flight == 2
    by_key = lambda j: {k: r["score"] for k, r in j.final_judgments().items()}  # noqa: E731
    assert by_key(on_ray) == by_key(local)


# ---- evaluation ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluation_on_ray_gives_the_same_table(engine):
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.evaluation.runner import run_evaluation

    data = make_synthetic_routing_data(n_prompts=240, n_models=4, seed=1)
    emb = FakeEncoder().encode(data.prompts)
    options = {"routers": ["best_single", "random", "knn", "oracle"], "seeds": 3, "encoder": FakeEncoder()}
    local = run_evaluation(data, emb, **options)
    on_ray = run_evaluation(data, emb, engine=engine, **options)

    def table(result):
        return {name: (rec["quality_mean"], rec["quality_std"], rec["cost_mean"], rec.get("curve_area_mean"),
                       rec["routing_distribution"]) for name, rec in result["routers"].items()}

    assert table(on_ray) == table(local)
    assert on_ray["seeds"] == local["seeds"] and on_ray["single_models"] == local["single_models"]


def test_the_limiter_lends_limit_permits_and_takes_back_one_never_returned():
    from finerouter.engines.ray_engine import _Limiter

    async def scenario():
        limiter = _Limiter(2, lease_s=0.3)
        first, second = await limiter.acquire(), await limiter.acquire()
        third = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        assert not third.done()  # two permits out
        await limiter.release(first)
        await asyncio.wait_for(third, 1.0)
        fourth = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        assert not fourth.done()
        await asyncio.wait_for(fourth, 2.0)  # `second` never came back: taken back after its lease
        assert second not in limiter.held

    asyncio.run(scenario())


@pytest.mark.slow
def test_descriptions_on_ray_are_the_local_ones_within_the_limit(engine, tmp_path):
    from finerouter.describe import OpenAIDescriber
    from finerouter.testing import BackgroundServer, FakeUpstream

    upstream = FakeUpstream("writer", delay_s=0.1)
    prompts = _texts(12)
    with BackgroundServer(upstream) as server:
        options = {"base_url": f"{server.url}/v1", "model": "writer", "api_key_env": None, "concurrency": 2}
        local = OpenAIDescriber(**options).describe(prompts)
        upstream.max_in_flight = 0
        described = OpenAIDescriber(**options, cache_dir=tmp_path, engine=engine)
        on_ray = described.describe(prompts)
        assert upstream.max_in_flight == 2
        calls = upstream.calls
        assert described.describe(prompts) == on_ray and upstream.calls == calls  # the driver wrote the cache
    assert on_ray == local and len(set(on_ray)) == 12


def test_ray_settings_travel_in_the_address():
    from finerouter.errors import ParameterError

    e = RayEngine.from_spec("auto?workers=4&gpus=0.5&cpus=2&batch=512&shard_rows=1000")
    assert (e.address, e.workers, e.num_gpus_per_worker, e.num_cpus_per_worker, e.batch_size, e.knn_shard_rows) == (
        "auto", 4, 0.5, 2.0, 512, 1000)
    with pytest.raises(EngineError, match="unknown setting 'gpu'"):
        RayEngine.from_spec("auto?gpu=1")
    with pytest.raises(EngineError, match="workers must be a number"):
        RayEngine.from_spec("auto?workers=many")
    with pytest.raises(ParameterError, match="The 'workers' parameter of RayEngine must be"):
        RayEngine.from_spec("auto?workers=0")
