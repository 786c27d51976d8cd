"""Fault load test of the gateway: 50 concurrent clients, 2,000 routed requests, two faulty upstreams.

Everything runs on loopback, in separate processes: echoing chat-completions upstreams
(``python -m finerouter.testing.upstreams``), the gateway (``finerouter serve``, a real FineRouter with the
packaged MiniLM encoder) and this load generator (asyncio + httpx). Before the run the bench routes its prompts
(``/v1/route``) and makes the two models the router picks most the faulty ones:

* the most picked answers HTTP 500 to half of its calls (``--fail-rate``);
* the second drops the connection half-way through every answer it gives (``close_mid_stream``): a stream
  after its first events, a plain answer after half its body.

Then ``--clients`` clients send ``--requests`` requests in all (``model: "finerouter"``, every other one
streamed), each client sending its next request as soon as the last one is answered. Every answer is checked
against what the echoing upstream must have said (``"[model] <prompt>"``, the model named by the gateway's
``x-finerouter-model`` header) and classed as:

* ok: the whole answer (a stream: every event, a ``finish_reason`` and ``[DONE]``);
* failed, and the client was told: an HTTP error, a stream ending with an error event, a dropped connection;
* **truncated, presented as success**: HTTP 200 and no error, but not the whole answer (a stream without
  ``[DONE]``, a cut text, a body that is not the answer). This must be 0.

Printed: those counts, fallbacks, latency p50/p99 of the whole answers (to the answer's last byte), the
gateway's RSS before and after the run (and its peak, VmHWM), and the gateway's own failure counters from
``/metrics``.

    .venv/bin/python bench/gateway_faults.py                      # fit a small router on synthetic data
    .venv/bin/python bench/gateway_faults.py --router DIR         # or use a saved router
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from _gateway import add_router_options, pct, prompts as make_prompts, router_for, start_fake_upstreams, start_gateway
from _gateway import status_mib, stop, warm_up

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class Outcome:
    kind: str  # ok | told | truncated_as_success
    detail: str
    seconds: float
    stream: bool
    model: str | None = None
    fallback: bool = False


def _check_stream(raw: str, expected_prefix: str, prompt: str) -> tuple[str, str]:
    """Class a streamed answer: ('ok'|'told'|'truncated_as_success', detail)."""
    events = [b[len("data: "):] for b in raw.split("\n\n") if b.startswith("data: ")]
    text, finish, done = "", None, False
    for e in events:
        if e == "[DONE]":
            done = True
            continue
        try:
            obj = json.loads(e)
        except ValueError:
            return "truncated_as_success", "an event that is not JSON"
        if "error" in obj:
            return "told", f"error event: {obj['error'].get('code')}"
        choice = obj["choices"][0]
        text += choice["delta"].get("content") or ""
        finish = choice.get("finish_reason") or finish
    if done and finish == "stop" and text == f"{expected_prefix} {prompt}":
        return "ok", "whole stream"
    if not done and finish is None:
        return "truncated_as_success", "stream ended without [DONE] or finish_reason"
    return "truncated_as_success", "stream marked complete but its text is not the whole answer"


async def _one(http, url: str, prompt: str, stream: bool) -> Outcome:
    import httpx

    body = {"model": "finerouter", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    try:
        async with http.stream("POST", url, json=body) as r:
            raw = (await r.aread()).decode("utf-8", "replace")
            dt = time.perf_counter() - t0
            model = r.headers.get("x-finerouter-model")
            fallback = "x-finerouter-fallback-from" in r.headers
            if r.status_code != 200:
                return Outcome("told", f"HTTP {r.status_code}", dt, stream, model, fallback)
            expected = f"[{model}]"
            if stream:
                kind, detail = _check_stream(raw, expected, prompt)
                return Outcome(kind, detail, dt, stream, model, fallback)
            try:
                content = json.loads(raw)["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                return Outcome("truncated_as_success", "HTTP 200 with a body that is not a completion", dt, stream, model, fallback)
            if content != f"{expected} {prompt}":
                return Outcome("truncated_as_success", "HTTP 200 with a cut answer", dt, stream, model, fallback)
            return Outcome("ok", "whole answer", dt, stream, model, fallback)
    except httpx.HTTPError as exc:
        return Outcome("told", f"client error {type(exc).__name__}", time.perf_counter() - t0, stream)


async def _drive(url: str, prompts: list[str], *, clients: int, requests: int, pid: int) -> tuple[list[Outcome], float, list[float]]:
    import httpx

    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    outcomes: list[Outcome] = []
    rss: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            outcomes.append(await _one(http, url, prompts[i % len(prompts)], stream=i % 2 == 1))

    async def sample() -> None:
        while True:
            rss.append(status_mib(pid, "VmRSS"))
            await asyncio.sleep(0.5)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=120, trust_env=False) as http:
        sampler = asyncio.ensure_future(sample())
        await asyncio.gather(*(client(http) for _ in range(clients)))
        sampler.cancel()
    return outcomes, time.perf_counter() - t0, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--fail-rate", type=float, default=0.5, help="share of calls the most picked upstream answers 500")
    ap.add_argument("--upstream-delay-ms", type=float, default=50.0, help="simulated model latency")
    ap.add_argument("--cooldown-s", type=float, default=2.0, help="gateway.cooldown_s")
    ap.add_argument("--threads", type=int, default=1, help="the gateway's compute threads")
    ap.add_argument("--json-out", type=Path, default=None)
    add_router_options(ap)
    args = ap.parse_args()

    import httpx

    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="finerouter-gwfaults-"))
    try:
        router_dir, models = router_for(args, work)
        prompts = make_prompts(1000)

        # The processes' logs (one warning per injected fault) go to files, not the terminal.
        fake_log = open(work / "upstreams.log", "w")  # noqa: SIM115 - closed with the process
        gw_log = open(work / "gateway.log", "w")  # noqa: SIM115
        urls = start_fake_upstreams(models, args.upstream_delay_ms, procs, stderr=fake_log)
        cfg = {"upstreams": {m: {"base_url": u, "timeout_s": 10} for m, u in urls.items()},
               "gateway": {"cooldown_s": args.cooldown_s, "max_attempts": 3, "route_thread_nice": 10}}
        gw, base, t = start_gateway(router_dir, cfg, work, procs, threads=args.threads, log_level="error", stdout=gw_log)

        # Which models the router picks for these prompts: the two most picked become the faulty ones.
        picks: Counter[str] = Counter()
        for i in range(0, len(prompts), 200):
            r = httpx.post(base + "/v1/route", json={"prompts": prompts[i:i + 200]}, timeout=120, trust_env=False)
            picks.update(d["model"] for d in r.json()["data"])
        failing, closing = [m for m, _ in picks.most_common()][:2]
        # Warm-up (encoder, connection pools), then the faults.
        warm_up(base, prompts[:20])
        httpx.post(urls[failing] + "/_control", json={"fail": 500, "rate": args.fail_rate}, trust_env=False)
        httpx.post(urls[closing] + "/_control", json={"fail": "close_mid_stream"}, trust_env=False)
        share = {m: round(n / sum(picks.values()), 3) for m, n in picks.most_common()}
        print(f"gateway up in {time.perf_counter() - t:.1f} s; router's first choices {share}; "
              f"{failing} answers 500 to {args.fail_rate:.0%} of calls, {closing} drops every answer half-way; "
              f"{args.clients} clients, {args.requests} requests (every other one streamed), upstream delay "
              f"{args.upstream_delay_ms:.0f} ms, cooldown {args.cooldown_s:g} s, {os.cpu_count()} CPU cores, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

        rss_before = status_mib(gw.pid, "VmRSS")
        outcomes, seconds, rss = asyncio.run(
            _drive(base + "/v1/chat/completions", prompts, clients=args.clients, requests=args.requests, pid=gw.pid))
        rss_after = status_mib(gw.pid, "VmRSS")
        peak = status_mib(gw.pid, "VmHWM")
        metrics = httpx.get(base + "/metrics", trust_env=False).text
        stats = {u: httpx.get(urls[u] + "/_stats", trust_env=False).json() for u in (failing, closing)}

        kinds = Counter(o.kind for o in outcomes)
        ok = [o.seconds * 1e3 for o in outcomes if o.kind == "ok"]
        ok_stream = [o.seconds * 1e3 for o in outcomes if o.kind == "ok" and o.stream]
        ok_plain = [o.seconds * 1e3 for o in outcomes if o.kind == "ok" and not o.stream]
        counters: dict[str, float] = {}
        for line in metrics.splitlines():
            if line.startswith(("finerouter_upstream_errors_total", "finerouter_stream_failures_total",
                                "finerouter_fallbacks_total")):
                name, value = line.rsplit(" ", 1)
                counters[name] = float(value)
        row = {
            "requests": len(outcomes),
            "seconds": round(seconds, 1),
            "throughput_rps": round(len(outcomes) / seconds, 1),
            "ok": kinds["ok"],
            "failed_client_told": kinds["told"],
            "failed_by_reason": dict(Counter(o.detail for o in outcomes if o.kind == "told")),
            "truncated_presented_as_success": kinds["truncated_as_success"],
            "truncated_details": dict(Counter(o.detail for o in outcomes if o.kind == "truncated_as_success")),
            "answered_after_fallback": sum(o.fallback for o in outcomes if o.kind == "ok"),
            "latency_ok_p50_ms": round(pct(ok, 50), 1),
            "latency_ok_p99_ms": round(pct(ok, 99), 1),
            "latency_ok_stream_p50_p99_ms": [round(pct(ok_stream, 50), 1), round(pct(ok_stream, 99), 1)],
            "latency_ok_plain_p50_p99_ms": [round(pct(ok_plain, 50), 1), round(pct(ok_plain, 99), 1)],
            "gateway_rss_mib_before_after": [round(rss_before, 1), round(rss_after, 1)],
            "gateway_rss_mib_sampled_0_25_50_75_100pct_of_run": [
                round(rss[min(len(rss) - 1, int(q * len(rss)))], 1) for q in (0, 0.25, 0.5, 0.75, 1.0)] if rss else [],
            "gateway_peak_rss_mib_vmhwm": round(peak, 1),
            "upstream_faults_injected": {u: s["faults"] for u, s in stats.items()},
            "gateway_counters": counters,
            "load_avg_end": round(os.getloadavg()[0], 2),
            "gateway_log": str(work / "gateway.log"),
        }
        print()
        for k, v in row.items():
            print(f"  {k:34s} {v}")
        sys.stdout.flush()
        if args.json_out:
            args.json_out.write_text(json.dumps(row, indent=2))
    finally:
        stop(procs, 15)


if __name__ == "__main__":
    main()
