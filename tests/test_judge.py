"""finerouter.collect.judge: absolute, pairwise and reference judging of collected answers into the wide routing
table, against a deterministic fake judge reached in-process; resumable, unparseable replies counted."""

from __future__ import annotations

import asyncio
import math

import httpx
import numpy as np
import pytest

from finerouter.collect.client import Endpoint
from finerouter.collect.collect import Collector
from finerouter.collect.fake_judge import FakeJudge
from finerouter.collect.judge import Judge, judgments_file, parse_pair_verdict, parse_rating, reference_match
from finerouter.collect.prompts import Prompt, prompt_key
from finerouter.collect.store import read_jsonl_store
from finerouter.data.prices import Prices
from finerouter.data.readers import read_routing_data
from finerouter.errors import DataError, ParameterError
from finerouter.serving.config import parse_gateway_config
from finerouter.testing import FakeUpstream, InProcessUpstreams

MODELS = ("a", "bbbb", "cc")  # FakeUpstream answers "[name] prompt": the names set the answers' lengths
JUDGE = Endpoint.from_url("http://judge.test/v1", "fake-judge")


def _collect(tmp_path, n=12, gold=None):
    fakes = {m: FakeUpstream(m) for m in MODELS}
    hosts = InProcessUpstreams(fakes)
    upstreams = parse_gateway_config({"upstreams": {m: {"base_url": hosts.base_url(m)} for m in fakes}}).upstreams
    texts = [f"prompt number {i}" + "!" * i for i in range(n)]
    prompts = [Prompt(t, prompt_key(t), id=f"p{i}", gold=None if gold is None else gold(i)) for i, t in enumerate(texts)]
    prices = Prices({m: (1.0, 1.0) for m in MODELS})
    asyncio.run(Collector(upstreams, tmp_path, prices=prices, transport=hosts.transport()).run(prompts))
    return prompts


def _judge(tmp_path, fake, **kw):
    return Judge(tmp_path, endpoint=JUDGE, transport=httpx.ASGITransport(app=fake), **kw)


def test_parsers():
    assert parse_rating("ok. Rating: [[10]]") == 1.0 and parse_rating("[[1]]") == 0.0
    assert parse_rating("first [[3]], on reflection [[7]]") == pytest.approx(6 / 9)
    assert parse_rating("Rating: [[ 5.5 ]]") == pytest.approx(0.5)
    for bad in ("Rating: 7", "[[11]]", "[[0]]", "[7]", ""):
        assert parse_rating(bad) is None
    assert parse_pair_verdict("so [[B]]") == "B" and parse_pair_verdict("[[C]]") == "C"
    assert parse_pair_verdict("A is better") is None


def test_reference_matching():
    assert reference_match("Step 1 ... so the answer is 1,234.", "1234") == 1.0
    assert reference_match("x = 3.0", "#### 3") == 1.0
    assert reference_match("it is 12 or 13", "12") == 0.0  # the last number counts
    assert reference_match("Paris.", "paris") == 1.0
    assert reference_match("Reasoning...\nParis", "Paris") == 1.0
    assert reference_match("Not Paris at all", "Paris") == 0.0


def test_absolute_scores_map_ratings_to_unit_interval_and_load_as_routing_data(tmp_path):
    prompts = _collect(tmp_path)
    fake = FakeJudge()
    judge = _judge(tmp_path, fake)
    report = asyncio.run(judge.run())
    assert (report.answers, report.judged, report.unparseable, report.failed) == (36, 36, 0, 0)
    assert fake.calls == 36
    table = judge.table()
    table.write(tmp_path / "table.parquet")
    data = read_routing_data(tmp_path / "table.parquet")
    assert data.models == list(MODELS) and data.prompts == [p.text for p in prompts]
    for i, p in enumerate(prompts):
        for j, m in enumerate(MODELS):
            answer = f"[{m}] {p.text}"
            assert data.scores[i, j] == pytest.approx((len(answer) % 10) / 9)  # rating 1 + len % 10
            assert data.costs[i, j] > 0
    assert data.ids == [p.id for p in prompts]
    again = asyncio.run(_judge(tmp_path, fake).run())  # resumable: nothing is sent to the judge twice
    assert again.already_judged == 36 and again.judged == 0 and fake.calls == 36


def test_unparseable_replies_are_retried_then_counted_never_scored(tmp_path):
    prompts = _collect(tmp_path)
    fake = FakeJudge(garble_when="prompt number 3!!!")  # the three answers to prompt 3
    garbled = sum(1 for p in prompts if "prompt number 3!!!" in p.text) * len(MODELS)
    judge = _judge(tmp_path, fake, parse_retries=2)
    report = asyncio.run(judge.run())
    assert garbled == 3 and report.unparseable == garbled and report.judged == 36 - garbled
    assert fake.calls == 36 + 2 * garbled  # each garbled answer asked 3 times
    assert report.parse_retries == 2 * garbled
    table = judge.table()
    assert prompts[3].text not in table.prompts  # unscored, not guessed: a prompt with no score has no row
    assert len(table.prompts) == len(prompts) - 1 and np.isfinite(table.scores).all()
    records = read_jsonl_store(tmp_path / judgments_file("absolute", "fake-judge"))[0]
    bad = [r for r in records if r["status"] == "unparseable"]
    assert len(bad) == garbled and all(r["attempts"] == 3 and "Rating: good" in r["reply"] for r in bad)
    again = asyncio.run(_judge(tmp_path, fake).run())
    assert again.unparseable == garbled and again.judged == 0  # reported again, not re-asked


def test_a_verdict_on_retry_is_kept(tmp_path):
    _collect(tmp_path, n=2)
    fake = FakeJudge(garble_first=1)
    report = asyncio.run(_judge(tmp_path, fake, concurrency=1).run())
    assert report.unparseable == 0 and report.parse_retries == 1 and report.judged == 6 and fake.calls == 7


def test_pairwise_against_a_reference_model(tmp_path):
    _collect(tmp_path)
    fake = FakeJudge()  # the longer answer wins: bbbb > cc > a
    judge = _judge(tmp_path, fake, mode="pairwise", reference_model="cc")
    report = asyncio.run(judge.run())
    assert report.judged == 36 and fake.calls == 24  # the reference is not compared with itself
    table = judge.table()
    scores = dict(zip(table.models, table.scores.T, strict=True))
    assert (scores["bbbb"] == 1.0).all() and (scores["a"] == 0.0).all() and (scores["cc"] == 0.5).all()
    records = read_jsonl_store(tmp_path / judgments_file("pairwise", "fake-judge"))[0]
    swaps = {r["swapped"] for r in records if r["model"] != "cc"}
    assert swaps == {True, False}  # both presentation orders are used


def test_reference_mode_needs_no_llm_and_requires_gold(tmp_path):
    _collect(tmp_path, n=6, gold=lambda i: f"[a] prompt number {i}" + "!" * i if i % 2 == 0 else "nothing")
    judge = Judge(tmp_path, mode="reference")
    report = asyncio.run(judge.run())
    assert report.judged == 18
    table = judge.table()
    a = table.models.index("a")
    assert table.scores[:, a].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert np.nansum(np.delete(table.scores, a, axis=1)) == 0.0
    other = tmp_path / "nogold"
    _collect(other, n=2)
    with pytest.raises(DataError, match="have no gold answer"):
        asyncio.run(Judge(other, mode="reference").run())


def test_judge_arguments_are_checked(tmp_path):
    with pytest.raises(ParameterError, match="'endpoint' parameter of Judge is required"):
        Judge(tmp_path, mode="absolute")
    with pytest.raises(ParameterError, match="reference_model"):
        Judge(tmp_path, mode="pairwise", endpoint=JUDGE)
    with pytest.raises(DataError, match="no answers store here"):
        asyncio.run(Judge(tmp_path, mode="reference").run())
    assert math.isclose(parse_rating("[[4]]"), 1 / 3)
