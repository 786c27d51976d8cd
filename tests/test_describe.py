"""Task-description writers, the LLM one tested against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import httpx
import pytest

from finerouter.describe import DEFAULT_INSTRUCTION, Describer, OpenAIDescriber, PromptDescriber
from finerouter.errors import DescriptionError, ParameterError

SECRET = "sk-finerouter-test-7f3a9c0e51"
TOKEN = re.compile(r"item-\d+")


class ChatServer:
    """A small real HTTP server speaking the chat-completions API, with scripted failures.

    Each prompt carries a token ``item-N``; the reply is ``"Task of kind item-N."``. ``script[token]`` is a
    list of HTTP statuses to answer on successive attempts before succeeding; ``always_fail`` tokens get 500
    forever. Every request is recorded (path, headers, JSON body), and the peak number in flight is tracked.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.script: dict[str, list[int]] = {}
        self.always_fail: set[str] = set()
        self.fixed_status: int | None = None
        self.requests: list[dict] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    status, payload, headers = server.answer(self.path, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}, {}
        if self.fixed_status is not None:
            return self.fixed_status, {"error": {"message": "scripted failure"}}, {}
        user = body["messages"][-1]["content"]
        tokens = TOKEN.findall(user)
        token = tokens[0] if tokens else "none"
        with self._lock:
            planned = self.script.get(token)
            status = planned.pop(0) if planned else 200
        if token in self.always_fail:
            status = 500
        if status != 200:
            headers = {"Retry-After": "0"} if status == 429 else {}
            return status, {"error": {"message": f"scripted {status}"}}, headers
        kind = "cluster of " + " ".join(tokens) if len(tokens) > 1 else token
        content = f'"Task of kind {kind}."'  # quoted, to check the reply is cleaned
        return (
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            },
            {},
        )

    def tokens_requested(self) -> list[str]:
        return [TOKEN.findall(r["body"]["messages"][-1]["content"])[0] for r in self.requests]

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("FINEROUTER_TEST_KEY", SECRET)
    return "FINEROUTER_TEST_KEY"


def _describer(server: ChatServer, api_key: str | None, **kw) -> OpenAIDescriber:
    kw.setdefault("backoff_s", 0.01)
    return OpenAIDescriber(server.base_url, "test-model", api_key_env=api_key, **kw)


def _prompts(n: int) -> list[str]:
    return [f"Please solve exercise item-{i}: what is {i} + {i}?" for i in range(n)]


# --- PromptDescriber -----------------------------------------------------------------------------------


def test_prompt_describer_is_the_prompt():
    d = PromptDescriber()
    assert isinstance(d, Describer) and d.name == "prompt"
    prompts = ["Write a haiku about autumn.", "Solve 2x = 4."]
    assert d.describe(prompts) == prompts
    short = PromptDescriber(max_chars=20)
    assert short.name == "prompt|max_chars=20"
    out = short.describe(["The quick brown fox jumps over the lazy dog"])[0]
    assert out == "The quick brown fox" and len(out) <= 20
    assert short.summarize(["first example that is long enough", "second"]) == "first example that"
    with pytest.raises(ParameterError, match="'max_chars' parameter of PromptDescriber"):
        PromptDescriber(max_chars=0)
    with pytest.raises(ParameterError, match=r"prompts\[1\] must be a str"):
        d.describe(["ok", 5])
    with pytest.raises(ParameterError, match="not a single str"):
        d.describe("one prompt")


# --- OpenAIDescriber against a real server --------------------------------------------------------------


def test_describes_in_order_with_instruction_model_and_bearer_key(server, api_key):
    d = _describer(server, api_key)
    prompts = _prompts(6) + [_prompts(6)[2]]  # a duplicate is sent once
    out = d.describe(prompts)
    assert out == [f"Task of kind item-{i}." for i in (0, 1, 2, 3, 4, 5, 2)]
    assert (d.failures_, d.n_cached_, d.n_requests_) == (0, 0, 6)
    assert len(server.requests) == 6
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"]["model"] == "test-model" and req["body"]["temperature"] == 0.0
    system, user = req["body"]["messages"]
    assert system == {"role": "system", "content": DEFAULT_INSTRUCTION}
    assert user["role"] == "user" and TOKEN.search(user["content"])
    assert "one concise sentence" in DEFAULT_INSTRUCTION and "Do not answer" in DEFAULT_INSTRUCTION


def test_key_is_never_logged_stored_or_cached(server, api_key, tmp_path, caplog):
    server.script["item-1"] = [500]
    d = _describer(server, api_key, cache_dir=tmp_path)
    with caplog.at_level(logging.DEBUG):
        d.describe(_prompts(3))
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert "retry 1/4" in caplog.text  # logging did happen
    assert SECRET not in caplog.text
    assert SECRET not in repr(d) and SECRET not in json.dumps(vars(d), default=str)
    assert SECRET not in d.cache_path.read_text()
    server.fixed_status = 401
    with caplog.at_level(logging.DEBUG), pytest.raises(DescriptionError) as err:
        _describer(server, api_key).describe(["item-9 new"])
    assert "rejected the API key" in str(err.value) and SECRET not in str(err.value)
    assert SECRET not in caplog.text


def test_no_key_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("FINEROUTER_UNSET_KEY", raising=False)
    _describer(server, "FINEROUTER_UNSET_KEY").describe(_prompts(1))
    _describer(server, None).describe(_prompts(2))
    assert all("Authorization" not in r["headers"] for r in server.requests)


def test_concurrency_is_bounded():
    with ChatServer(delay_s=0.05) as srv:
        d = _describer(srv, None, concurrency=3)
        out = d.describe(_prompts(18))
        assert len(srv.requests) == 18 and d.failures_ == 0
        assert srv.peak == 3
        assert out[17] == "Task of kind item-17."
    with ChatServer(delay_s=0.05) as srv:
        _describer(srv, None, concurrency=1).describe(_prompts(4))
        assert srv.peak == 1


def test_retries_after_500_and_429(server):
    server.script["item-1"] = [500, 503]
    server.script["item-2"] = [429]
    d = _describer(server, None, max_retries=4)
    out = d.describe(_prompts(3))
    assert out == ["Task of kind item-0.", "Task of kind item-1.", "Task of kind item-2."]
    assert d.failures_ == 0 and d.n_requests_ == 1 + 3 + 2
    assert sorted(server.tokens_requested()) == sorted(["item-0"] + ["item-1"] * 3 + ["item-2"] * 2)


def test_backoff_grows_exponentially(server):
    server.script["item-0"] = [500, 500, 500]
    d = _describer(server, None, max_retries=3, backoff_s=0.1)
    start = time.perf_counter()
    assert d.describe(_prompts(1)) == ["Task of kind item-0."]
    elapsed = time.perf_counter() - start
    assert 0.7 <= elapsed < 5.0  # waits of ~0.1 + 0.2 + 0.4 s (plus up to 25% jitter)


def test_persistent_failure_falls_back_to_prompt_and_is_not_cached(server, tmp_path):
    server.always_fail.add("item-1")
    prompts = _prompts(3)
    d = _describer(server, None, max_retries=2, cache_dir=tmp_path)
    out = d.describe(prompts)
    assert out == ["Task of kind item-0.", prompts[1], "Task of kind item-2."]
    assert d.failures_ == 1
    assert server.tokens_requested().count("item-1") == 3  # first attempt + 2 retries
    before = len(server.requests)
    again = _describer(server, None, max_retries=0, cache_dir=tmp_path)
    again.describe(prompts)
    assert server.tokens_requested()[before:] == ["item-1"]  # only the fallback is tried again
    assert (again.n_cached_, again.failures_) == (2, 1)


def test_connection_errors_are_retried_then_fall_back(tmp_path):
    with ChatServer() as srv:
        url = srv.base_url
    # The server is gone: every attempt is a connection error.
    d = OpenAIDescriber(url, "m", api_key_env=None, max_retries=2, backoff_s=0.01, cache_dir=tmp_path)
    assert d.describe(["item-0 x", "item-1 y"]) == ["item-0 x", "item-1 y"]
    assert d.failures_ == 2 and d.n_requests_ == 6
    assert not d.cache_path.exists() or d.cache_path.read_text() == ""


def test_cache_hit_on_rerun_sends_nothing(server, tmp_path):
    prompts = _prompts(5)
    first = _describer(server, None, cache_dir=tmp_path).describe(prompts)
    n = len(server.requests)
    d = _describer(server, None, cache_dir=tmp_path)
    assert d.describe(prompts[::-1]) == first[::-1]
    assert len(server.requests) == n and d.n_cached_ == 5 and d.n_requests_ == 0
    # Another model or instruction is another cache key.
    other = OpenAIDescriber(server.base_url, "other-model", api_key_env=None, cache_dir=tmp_path)
    other.describe(prompts[:1])
    assert len(server.requests) == n + 1
    other_instruction = _describer(server, None, cache_dir=tmp_path, instruction="Name the task in one sentence.")
    other_instruction.describe(prompts[:1])
    assert len(server.requests) == n + 2


def test_resume_after_interruption(server, tmp_path):
    prompts = _prompts(12)

    class Stop(Exception):
        pass

    def stop_after_five(done: int, total: int) -> None:
        assert total == 12
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        _describer(server, None, cache_dir=tmp_path, concurrency=1).describe(prompts, progress=stop_after_five)
    assert len(server.requests) == 5
    # Simulate a crash in the middle of writing a line.
    with open(tmp_path / "descriptions.jsonl", "ab") as fh:
        fh.write(b'{"key": "abc", "descr')

    seen: list[tuple[int, int]] = []
    d = _describer(server, None, cache_dir=tmp_path, concurrency=4)
    out = d.describe(prompts, progress=lambda done, total: seen.append((done, total)))
    assert out == [f"Task of kind item-{i}." for i in range(12)]
    assert len(server.requests) == 12, "the 5 finished prompts must not be sent again"
    assert d.n_cached_ == 5 and seen[0] == (5, 12) and seen[-1] == (12, 12)
    third = _describer(server, None, cache_dir=tmp_path)
    assert third.describe(prompts) == out and len(server.requests) == 12


def test_client_errors_fall_back_without_retry_and_fatal_ones_stop(server):
    server.script["item-0"] = [400]
    d = _describer(server, None)
    assert d.describe(_prompts(2)) == [_prompts(2)[0], "Task of kind item-1."]
    assert d.failures_ == 1 and server.tokens_requested().count("item-0") == 1
    server.fixed_status = 404
    with pytest.raises(DescriptionError, match="was not found"):
        _describer(server, None).describe(["item-5"])
    bad_url = OpenAIDescriber(server.base_url.replace("/v1", "/nope"), "m", api_key_env=None)
    server.fixed_status = None
    with pytest.raises(DescriptionError, match="HTTP 404"):
        bad_url.describe(["item-1"])


def test_summarize_one_and_many(server, tmp_path):
    d = _describer(server, None, cache_dir=tmp_path)
    s = d.summarize(["Add item-1 and item-2", "Sum item-3"])
    assert s == "Task of kind cluster of item-1 item-2 item-3."
    req = server.requests[-1]["body"]["messages"]
    assert "several example prompts" in req[0]["content"] and "Example 2:" in req[1]["content"]
    many = d.summarize_many([["item-4 a", "item-5 b"], ["item-6 c"]])
    assert many == ["Task of kind cluster of item-4 item-5.", "Task of kind item-6."]
    n = len(server.requests)
    assert d.summarize(["Add item-1 and item-2", "Sum item-3"]) == s and len(server.requests) == n
    server.always_fail.add("item-7")
    fb = _describer(server, None, max_retries=0)
    assert fb.summarize(["item-7 the only example"]) == "item-7 the only example" and fb.failures_ == 1
    with pytest.raises(ParameterError, match="at least one example"):
        d.summarize([])


def test_works_inside_a_running_event_loop(server):
    async def main():
        return _describer(server, None).describe(_prompts(2))

    assert asyncio.run(main()) == ["Task of kind item-0.", "Task of kind item-1."]


def test_injected_transport_replaces_the_network():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = {"choices": [{"message": {"role": "assistant", "content": "Description: Arithmetic question."}}]}
        return httpx.Response(200, json=reply)

    d = OpenAIDescriber("http://llm.invalid/v1", "m", api_key_env=None, transport=httpx.MockTransport(handler))
    assert d.describe(["What is 2 + 2?"]) == ["Arithmetic question."]
    assert str(seen[0].url) == "http://llm.invalid/v1/chat/completions"


def test_parameter_validation():
    with pytest.raises(ParameterError, match="'base_url' parameter of OpenAIDescriber must be an http"):
        OpenAIDescriber("localhost:8000", "m")
    with pytest.raises(
        ParameterError, match=r"'concurrency' parameter of OpenAIDescriber must be an int in \[1, inf\)"
    ):
        OpenAIDescriber("http://x/v1", "m", concurrency=0)
    with pytest.raises(ParameterError, match="'model' parameter"):
        OpenAIDescriber("http://x/v1", "")
    with pytest.raises(ParameterError, match="'timeout_s'"):
        OpenAIDescriber("http://x/v1", "m", timeout_s=0)
    d = OpenAIDescriber("http://x/v1/", "gpt-x")
    assert d.base_url == "http://x/v1" and d.name.startswith("openai:gpt-x|")


def test_a_long_prompt_reaches_the_llm_with_its_start_and_its_end(server):
    from finerouter.describe.base import ELISION, truncate_middle

    preamble = "Worked example: the capital of France is Paris. " * 200  # 9,800 characters of shared examples
    prompts = [preamble + f"Now solve exercise item-{i}." for i in range(2)]
    out = _describer(server, None, max_prompt_chars=1000).describe(prompts)
    assert out == ["Task of kind item-0.", "Task of kind item-1."]  # the server read each prompt's own question
    for req in server.requests[-2:]:
        sent = req["body"]["messages"][1]["content"].removeprefix("<prompt>\n").removesuffix("\n</prompt>")
        assert len(sent) <= 1000 and ELISION in sent and sent.startswith("Worked example")
    cut = truncate_middle("a" * 50 + " middle " * 100 + "the end", 200)
    assert len(cut) <= 200 and cut.startswith("a" * 45) and cut.endswith("the end") and ELISION in cut
    assert truncate_middle("short", 200) == "short" and truncate_middle("x" * 300, None) == "x" * 300
