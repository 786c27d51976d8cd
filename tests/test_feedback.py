"""Feedback from production: the gateway's opt-in request log, ``POST /v1/feedback``, and training on the log
(decisions joined with feedback: only the answering model's score observed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finerouter.collect.request_log import RequestLog
from finerouter.data.request_log import read_log_prompts, read_request_log
from finerouter.errors import DataError, ParameterError
from finerouter.serving.app import create_app
from finerouter.serving.config import GatewaySettings, parse_gateway_config
from finerouter.testing import FakeUpstream, InProcessUpstreams, ManualClock


@pytest.fixture(scope="module")
def router(fake_encoder_router):
    return fake_encoder_router


def _gateway(router, log_dir: Path | None, **settings):
    from fastapi.testclient import TestClient

    hosts = InProcessUpstreams({m: FakeUpstream(m) for m in router.models_})
    config = parse_gateway_config({"upstreams": {m: {"base_url": hosts.base_url(m)} for m in router.models_}})
    if log_dir is not None:
        settings["request_log_dir"] = str(log_dir)
    app = create_app(router, config, settings=GatewaySettings(**settings), transport=hosts.transport())
    return TestClient(app, base_url="http://gateway")


def _log_records(log_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(log_dir.glob("requests-*.jsonl")) for line in path.read_text().splitlines()]


def _chat(client, text, **extra):
    return client.post("/v1/chat/completions",
                       json={"model": "finerouter", "messages": [{"role": "user", "content": text}], **extra})


def test_routed_answers_are_logged_and_feedback_is_recorded(router, tmp_path):
    log_dir = tmp_path / "log"
    with _gateway(router, log_dir) as client:
        answer = _chat(client, "Solve 3x + 7 = 22.")
        assert answer.status_code == 200
        request_id = answer.headers["x-finerouter-request-id"]
        completion_id = answer.json()["id"]
        direct = client.post("/v1/chat/completions", json={"model": router.models_[0], "messages": [{"role": "user", "content": "hi"}]})
        assert "x-finerouter-request-id" not in direct.headers  # only routed requests have a decision to log
        ok = client.post("/v1/feedback", json={"id": request_id, "score": 0.75})
        assert ok.status_code == 200 and ok.json() == {"object": "feedback", "id": request_id, "score": 0.75, "known": True}
        by_completion = client.post("/v1/feedback", json={"id": completion_id, "score": 1})
        assert by_completion.json()["known"] is True
        assert client.post("/v1/feedback", json={"id": "frq-from-before-a-restart", "score": 0.1}).json()["known"] is False
        for bad in ({"id": request_id, "score": 1.5}, {"id": request_id, "score": True}, {"id": "", "score": 0.5},
                    {"score": 0.5}, {"id": request_id, "score": "high"}):
            response = client.post("/v1/feedback", json=bad)
            assert response.status_code == 400, bad
            assert response.json()["error"]["param"] in ("id", "score")
    records = _log_records(log_dir)
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(decisions) == 1
    d = decisions[0]
    assert d["id"] == request_id and d["response_id"] == completion_id and d["prompt"] == "Solve 3x + 7 = 22."
    assert d["model"] == answer.headers["x-finerouter-model"] and d["models"] and d["routed_model"] in d["models"]
    assert [(r["id"], r["score"]) for r in records if r["kind"] == "feedback"] == [
        (request_id, 0.75), (completion_id, 1.0), ("frq-from-before-a-restart", 0.1)]


def test_feedback_is_off_without_a_request_log(router):
    with _gateway(router, None) as client:
        assert "x-finerouter-request-id" not in _chat(client, "hello").headers
        response = client.post("/v1/feedback", json={"id": "x", "score": 0.5})
        assert response.status_code == 404 and response.json()["error"]["code"] == "feedback_disabled"


def test_hashed_prompts_are_not_stored(router, tmp_path):
    import hashlib

    with _gateway(router, tmp_path, request_log_prompts="hash") as client:
        assert _chat(client, "a secret prompt").status_code == 200
    (d,) = _log_records(tmp_path)
    assert d["prompt"] is None and d["prompt_sha256"] == hashlib.sha256(b"a secret prompt").hexdigest()
    assert all("a secret prompt" not in p.read_text() for p in tmp_path.iterdir())
    with pytest.raises(DataError, match="hashed prompts only"):
        read_log_prompts(tmp_path)


def test_log_settings_are_checked():
    with pytest.raises(ParameterError, match="request_log_prompts"):
        GatewaySettings(request_log_dir="x", request_log_prompts="plain")
    with pytest.raises(ParameterError, match="request_log_retention_days"):
        GatewaySettings(request_log_retention_days=0)


def test_retention_deletes_old_days_only(tmp_path):
    clock = ManualClock(start=1_767_225_600.0)  # 2026-01-01 00:00 UTC
    log = RequestLog(tmp_path, retention_days=2, clock=clock)
    for day in range(5):
        log.log_feedback(f"id-{day}", 0.5, "anonymous")
        clock.advance(86400)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["requests-2026-01-03.jsonl", "requests-2026-01-04.jsonl", "requests-2026-01-05.jsonl"]


def _write_log(tmp_path, rows):
    log = RequestLog(tmp_path)
    for i, (prompt, model, score) in enumerate(rows):
        log.log_decision(request_id=f"frq-{i}", response_id=f"cmpl-{i}", prompt=prompt, model=model, routed_model=model,
                         models=["m1", "m2", "m3"], cost_usd=0.001 * (i + 1), task_id=None, key="anonymous")
        if score is not None:
            log.log_feedback(f"frq-{i}" if i % 2 else f"cmpl-{i}", score, "anonymous")
    log.log_feedback("frq-unknown", 1.0, "anonymous")
    log.close()


def test_the_log_reads_as_partial_labels(tmp_path):
    _write_log(tmp_path, [("p1", "m1", 0.9), ("p2", "m2", 0.2), ("p1", "m2", 0.4), ("p3", "m1", None), ("p4", "m2", 1.0)])
    with open(next(tmp_path.glob("requests-*.jsonl")), "a") as fh:
        fh.write('{"kind": "feedb')  # a torn last line is skipped
    data = read_request_log(tmp_path)
    assert data.prompts == ["p1", "p2", "p4"] and data.models == ["m1", "m2"]  # m3 never answered: left out
    expected = np.array([[0.9, 0.4], [np.nan, 0.2], [np.nan, 1.0]])
    np.testing.assert_array_equal(data.scores, expected)
    assert data.costs[0, 0] == pytest.approx(0.001) and np.isnan(data.costs[1, 0])
    assert data.meta["feedback_without_decision"] == 1 and data.meta["decisions_without_feedback"] == 1
    assert read_log_prompts(tmp_path) == ["p1", "p2", "p3", "p4"]


def test_a_log_without_enough_feedback_is_refused(tmp_path):
    _write_log(tmp_path, [("p1", "m1", 0.9), ("p2", "m1", 0.2)])
    with pytest.raises(DataError, match="only 1 model"):
        read_request_log(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no request-log files"):
        read_request_log(tmp_path / "empty")


def test_fit_on_the_gateways_own_log(router, tmp_path):
    """Serve, log, take feedback, and fit a new router on the log: only answered models' scores are observed."""
    from finerouter import FineRouter
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    truth = make_synthetic_routing_data(n_prompts=80, n_models=4, seed=1)
    with _gateway(router, tmp_path) as client:
        for i, prompt in enumerate(truth.prompts):
            # spread the traffic over every model (a named pool per request), as exploration would
            allowed = [router.models_[i % 4], router.models_[(i + 1) % 4]]
            answer = _chat(client, prompt, allowed_models=allowed)
            model = answer.headers["x-finerouter-model"]
            score = float(truth.scores[i, truth.models.index(model)])
            assert client.post("/v1/feedback", json={"id": answer.headers["x-finerouter-request-id"], "score": score}).status_code == 200
    data = read_request_log(tmp_path)
    assert len(data.prompts) == len(set(truth.prompts))  # a repeated prompt is one row
    observed = np.isfinite(data.scores)
    assert observed.any(axis=1).all() and observed.sum() <= 80 and (observed.sum(axis=1) == 1).mean() > 0.9
    fitted = FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(data)
    assert fitted.route(truth.prompts[0]).model in data.models
