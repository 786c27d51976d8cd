"""finerouter.collect: the answers store, the chat caller's retries and 429 waits, and the resumable collector,
against FakeUpstreams reached in-process (no socket, no sleeps)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from finerouter.collect.client import ChatCaller, Endpoint, retry_after_seconds
from finerouter.collect.collect import ANSWERS_FILE, Collector, sampled_models
from finerouter.collect.prompts import Prompt, prompt_key, read_prompts
from finerouter.collect.store import JsonlStore, read_jsonl_store
from finerouter.data.prices import Prices
from finerouter.errors import DataError, ParameterError
from finerouter.serving.config import parse_gateway_config
from finerouter.testing import FakeUpstream, InProcessUpstreams, ManualClock

MODELS = ("alpha", "beta", "gamma")


def _prompts(n: int) -> list[Prompt]:
    texts = [f"question {i}: " + " ".join(["word"] * (i % 7)) for i in range(n)]
    return [Prompt(t, prompt_key(t)) for t in texts]


def _upstreams(**kw):
    fakes = {m: FakeUpstream(m, record=10_000, **kw) for m in MODELS}
    hosts = InProcessUpstreams(fakes)
    config = parse_gateway_config({"upstreams": {m: {"base_url": hosts.base_url(m)} for m in fakes}})
    return fakes, hosts, config.upstreams


def _sent_pairs(fakes) -> Counter:
    """(prompt text, model) -> how many requests the upstreams received for it (counted server-side)."""
    return Counter((r["body"]["messages"][-1]["content"], name) for name, f in fakes.items() for r in f.requests)


class FakeSleep:
    """An injected sleep that moves a ManualClock instead of waiting, and remembers each wait."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


# ---- the store --------------------------------------------------------------------------------------------------
def test_store_appends_durably_and_drops_only_a_torn_last_line(tmp_path):
    path = tmp_path / "s.jsonl"

    async def write(records):
        async with JsonlStore(path) as store:
            await asyncio.gather(*(store.append(r) for r in records))

    asyncio.run(write([{"i": i} for i in range(50)]))
    assert [r["i"] for r in read_jsonl_store(path)[0]] == list(range(50))  # one group commit keeps the order
    with open(path, "ab") as fh:
        fh.write(b'{"i": 50, "half')  # a process killed mid-write
    store = JsonlStore(path).open()
    assert len(store.records) == 50 and store.torn_bytes == len(b'{"i": 50, "half')
    store.append_now({"i": 51})
    store.close()
    assert [r["i"] for r in read_jsonl_store(path)[0]] == [*range(50), 51]
    text = path.read_text()
    path.write_text(text.replace('{"i":3}', "garbage", 1))
    with pytest.raises(DataError, match=r"s\.jsonl: line 4: not a JSON object"):
        JsonlStore(path).open()


# ---- the caller ---------------------------------------------------------------------------------------------------
def test_retry_after_parses_seconds_and_http_dates():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("99999") == 600.0


def test_429_waits_what_retry_after_says_and_pauses_the_whole_upstream():
    fakes, hosts, upstreams = _upstreams()
    fakes["alpha"].set_failure(429, times=2, retry_after=7)
    clock = ManualClock()
    sleep = FakeSleep(clock)

    async def go():
        async with ChatCaller(hosts.transport(), sleep=sleep, clock=clock) as caller:
            endpoint = Endpoint.from_upstream(upstreams["alpha"])
            return await caller.complete(endpoint, [{"role": "user", "content": "hi"}]), caller.waits

    result, waits = asyncio.run(go())
    assert result.text == "[alpha] hi" and result.attempts == 3
    assert waits == [("alpha", "429", 7.0), ("alpha", "429", 7.0)]
    assert sleep.waits == [7.0, 7.0] and clock() == pytest.approx(1014.0)
    assert fakes["alpha"].calls == 3


def test_5xx_is_retried_with_backoff_and_4xx_is_not():
    fakes, hosts, upstreams = _upstreams()
    fakes["alpha"].set_failure(503, times=2)
    fakes["beta"].set_failure(400)
    clock = ManualClock()
    sleep = FakeSleep(clock)

    async def go():
        async with ChatCaller(hosts.transport(), sleep=sleep, clock=clock, backoff_s=1.0) as caller:
            ok = await caller.complete(Endpoint.from_upstream(upstreams["alpha"]), [{"role": "user", "content": "x"}])
            with pytest.raises(Exception, match="beta: HTTP 400"):
                await caller.complete(Endpoint.from_upstream(upstreams["beta"]), [{"role": "user", "content": "x"}])
            return ok

    assert asyncio.run(go()).attempts == 3
    assert len(sleep.waits) == 2 and 0.5 <= sleep.waits[0] <= 1.0 and 1.0 <= sleep.waits[1] <= 2.0
    assert fakes["beta"].calls == 1


# ---- the collector ------------------------------------------------------------------------------------------------
def test_collect_records_every_pair_with_usage_latency_and_cost(tmp_path):
    fakes, hosts, upstreams = _upstreams()
    prices = Prices({"alpha": (1.0, 2.0), "beta": (3.0, 4.0)})
    prompts = _prompts(12)
    report = asyncio.run(Collector(upstreams, tmp_path, prices=prices, transport=hosts.transport(), concurrency=4).run(prompts))
    assert (report.planned, report.answered, report.failed, report.stopped) == (36, 36, 0, "done")
    assert report.unpriced_models == ["gamma"]
    records, _ = read_jsonl_store(tmp_path / ANSWERS_FILE)
    assert Counter((r["prompt"], r["model"]) for r in records) == _sent_pairs(fakes)
    assert len(records) == 36 and all(r["status"] == "ok" for r in records)
    for r in records:
        assert r["answer"] == f"[{r['model']}] {r['prompt']}"
        usage = r["usage"]
        if r["model"] == "gamma":
            assert r["cost_usd"] is None and r["cost_source"] is None
        else:
            rate_in, rate_out = prices.price(r["model"])
            assert r["cost_source"] == "prices"
            assert r["cost_usd"] == pytest.approx((usage["prompt_tokens"] * rate_in + usage["completion_tokens"] * rate_out) / 1e6)
        assert r["latency_s"] >= 0 and r["prompt_key"] == prompt_key(r["prompt"])
    assert report.spent_usd == pytest.approx(sum(r["cost_usd"] or 0 for r in records))


def test_cancelled_midway_then_resumed_sends_each_pair_exactly_once(tmp_path):
    """Kill-and-resume: the first run is cancelled after a few answers; across both runs the upstreams receive
    every (prompt, model) pair exactly once, and the store holds each pair's answer once."""
    fakes, hosts, upstreams = _upstreams(delay_s=0.002)
    prompts = _prompts(30)

    async def first_run():
        collector = Collector(upstreams, tmp_path, transport=hosts.transport(), concurrency=4)
        task = None
        seen = []

        def on_record(record):
            seen.append(record)
            if len(seen) == 20:
                task.cancel()

        collector.on_record = on_record
        task = asyncio.ensure_future(collector.run(prompts))
        with pytest.raises(asyncio.CancelledError):
            await task
        return collector

    asyncio.run(first_run())
    first = read_jsonl_store(tmp_path / ANSWERS_FILE)[0]
    assert 20 <= len(first) < 90  # stopped midway; the calls in flight when cancelled were recorded too
    assert sum(_sent_pairs(fakes).values()) == len(first)  # nothing was sent that is not on disk

    report = asyncio.run(Collector(upstreams, tmp_path, transport=hosts.transport(), concurrency=4).run(prompts))
    assert report.already_done == len(first) and report.answered == 90 - len(first)
    sent = _sent_pairs(fakes)
    assert len(sent) == 90 and set(sent.values()) == {1}
    final = read_jsonl_store(tmp_path / ANSWERS_FILE)[0]
    assert Counter((r["prompt"], r["model"]) for r in final) == sent


def test_a_crash_mid_write_loses_only_the_torn_record(tmp_path):
    fakes, hosts, upstreams = _upstreams()
    prompts = _prompts(5)
    asyncio.run(Collector(upstreams, tmp_path, transport=hosts.transport(), models=["alpha"]).run(prompts))
    path = tmp_path / ANSWERS_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last record torn
    report = asyncio.run(Collector(upstreams, tmp_path, transport=hosts.transport(), models=["alpha"]).run(prompts))
    assert report.already_done == 4 and report.answered == 1
    records = read_jsonl_store(path)[0]
    assert sorted(r["prompt"] for r in records) == sorted(p.text for p in prompts)


def test_max_spend_stops_cleanly_and_a_higher_cap_resumes(tmp_path):
    fakes, hosts, upstreams = _upstreams()
    prices = Prices({m: (1000.0, 1000.0) for m in MODELS}, output_tokens=8)
    prompts = _prompts(20)
    collector = Collector(upstreams, tmp_path, prices=prices, transport=hosts.transport(), concurrency=2)
    pending, _ = collector.plan(prompts)
    per_call = [collector.estimate(p.text, m) for p, m in pending]
    cap = sum(per_call) / 3
    report = asyncio.run(Collector(upstreams, tmp_path, prices=prices, max_spend=cap, transport=hosts.transport(),
                                   concurrency=2).run(prompts))
    assert report.stopped == "max_spend"
    assert 0 < report.answered < 60 and report.failed == 0
    assert report.spent_usd <= cap  # the answers are shorter than the estimate assumes
    assert report.spent_usd + max(per_call) > cap  # ... and it did not stop early
    records = read_jsonl_store(tmp_path / ANSWERS_FILE)[0]
    assert sum(r["cost_usd"] for r in records) == pytest.approx(report.spent_usd)
    again = asyncio.run(Collector(upstreams, tmp_path, prices=prices, max_spend=cap, transport=hosts.transport()).run(prompts))
    assert again.stopped == "max_spend" and again.sent == 0  # earlier runs' spend counts against the cap
    final = asyncio.run(Collector(upstreams, tmp_path, prices=prices, max_spend=10 * cap, transport=hosts.transport()).run(prompts))
    assert final.stopped == "done" and final.remaining == 0
    assert set(_sent_pairs(fakes).values()) == {1} and len(_sent_pairs(fakes)) == 60


def test_failed_pairs_are_recorded_and_sent_again_on_the_next_run(tmp_path):
    fakes, hosts, upstreams = _upstreams()
    fakes["beta"].set_failure(500)
    prompts = _prompts(3)
    options = {"transport": hosts.transport(), "max_retries": 1, "caller_options": {"backoff_s": 0.0}}
    report = asyncio.run(Collector(upstreams, tmp_path, **options).run(prompts))
    assert (report.answered, report.failed) == (6, 3)
    errors = [r for r in read_jsonl_store(tmp_path / ANSWERS_FILE)[0] if r["status"] == "error"]
    assert {r["model"] for r in errors} == {"beta"} and all("HTTP 500" in r["error"] for r in errors)
    fakes["beta"].set_failure(None)
    report = asyncio.run(Collector(upstreams, tmp_path, **options).run(prompts))
    assert (report.already_done, report.answered, report.failed) == (6, 3, 0)


def test_sample_models_draws_k_per_prompt_reproducibly(tmp_path):
    prompts = _prompts(40)
    draws = [sampled_models(p, MODELS, 2, seed=0) for p in prompts]
    assert all(len(d) == 2 for d in draws)
    assert draws == [sampled_models(p, MODELS, 2, seed=0) for p in prompts]
    assert len({tuple(d) for d in draws}) == 3  # every pair of models is drawn for some prompt
    assert draws != [sampled_models(p, MODELS, 2, seed=1) for p in prompts]
    fakes, hosts, upstreams = _upstreams()
    report = asyncio.run(Collector(upstreams, tmp_path, sample_models=2, transport=hosts.transport()).run(prompts))
    assert report.answered == 80
    sent = _sent_pairs(fakes)
    assert sent == Counter({(p.text, m): 1 for p, d in zip(prompts, draws, strict=True) for m in d})


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path):
    _, _, upstreams = _upstreams()
    with pytest.raises(ParameterError, match="'models' parameter of Collector must name upstreams"):
        Collector(upstreams, tmp_path, models=["nope"])
    with pytest.raises(ParameterError, match="concurrency"):
        Collector(upstreams, tmp_path, concurrency=0)


def test_read_prompts_keeps_id_task_gold_and_names_bad_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "2+2?", "id": "q1", "task": "math", "gold": "4"}, {"prompt": "2+2?"}, {"prompt": "Hi", "id": "q2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    prompts = read_prompts(path)
    assert [(p.text, p.id, p.task, p.gold) for p in prompts] == [("2+2?", "q1", "math", "4"), ("Hi", "q2", None, None)]
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "  "}) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl: column 'prompt', row 1: the prompt is empty"):
        read_prompts(path)


# ---- the README's end-to-end example ------------------------------------------------------------------------------
def _readme_example():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Train on your own traffic", 1)[1].split("\n## ", 1)[0]
    jsonl = section.split("```jsonl\n", 1)[1].split("```", 1)[0]
    yaml_text = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    commands = section.split("<!-- e2e:start -->", 1)[1].split("<!-- e2e:end -->", 1)[0]
    lines = [ln for ln in commands.split("```bash\n", 1)[1].split("```", 1)[0].splitlines() if ln.strip()]
    return jsonl, yaml_text, lines


@pytest.mark.slow
def test_readme_train_on_your_traffic_example(tmp_path, monkeypatch, serve_process):
    """The README's prompts.jsonl + upstreams.yaml -> collect -> judge -> fit -> serve, run as written against
    fake upstreams and a fake judge on loopback (only their URLs are swapped in)."""
    import os
    import shlex

    import httpx
    import yaml
    from typer.testing import CliRunner

    from finerouter.cli.main import app
    from finerouter.collect.fake_judge import FakeJudge
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.testing import BackgroundServer

    jsonl, yaml_text, lines = _readme_example()
    assert [ln.split()[1] for ln in lines] == ["collect", "judge", "fit", "serve"]
    config = yaml.safe_load(yaml_text)
    fakes = {name: FakeUpstream(name) for name in config["upstreams"]}
    servers = [BackgroundServer(f).start() for f in fakes.values()]
    judge_server = BackgroundServer(FakeJudge()).start()
    try:
        for server, name in zip(servers, fakes, strict=True):
            config["upstreams"][name]["base_url"] = f"{server.url}/v1"
        monkeypatch.chdir(tmp_path)
        (tmp_path / "upstreams.yaml").write_text(yaml.safe_dump(config))
        extra = make_synthetic_routing_data(n_prompts=60, n_models=3, seed=0).prompts
        (tmp_path / "prompts.jsonl").write_text(jsonl + "".join(json.dumps({"prompt": p}) + "\n" for p in extra))
        runner = CliRunner()
        for line in lines[:3]:
            line = line.replace("http://127.0.0.1:9100/v1", f"{judge_server.url}/v1")
            result = runner.invoke(app, shlex.split(line)[1:])
            assert result.exit_code == 0, f"{line}\n{result.output}"
        n_prompts = len({p for p in extra} | {"Solve 3x + 7 = 22.", "Write a haiku about routers."})
        assert sum(f.calls for f in fakes.values()) == 3 * n_prompts
        assert (tmp_path / "router" / "manifest.json").is_file()
        args = shlex.split(lines[3])[2:]
        port_at = args.index("--port")
        del args[port_at:port_at + 2]  # the fixture picks a free port
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc, url = serve_process(args, env)
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                          json={"model": "finerouter", "messages": [{"role": "user", "content": "Solve 2x = 10."}]})
        assert chat.status_code == 200 and chat.headers["x-finerouter-model"] in fakes
        feedback = httpx.post(f"{url}/v1/feedback", json={"id": chat.headers["x-finerouter-request-id"], "score": 1.0})
        assert feedback.status_code == 200 and feedback.json()["known"] is True
        proc.terminate()
        proc.communicate(timeout=30)
        assert any((tmp_path / "request-log").glob("requests-*.jsonl"))
    finally:
        judge_server.stop()
        for server in servers:
            server.stop()
