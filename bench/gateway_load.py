"""Load test of the gateway: 100 concurrent clients against `finerouter serve` in front of fake upstreams.

Everything runs on loopback, in separate processes: echoing chat-completions upstreams
(``python -m finerouter.testing.upstreams``), the gateway (``finerouter serve``, a real FineRouter with
the packaged MiniLM encoder), and this load generator (asyncio + httpx). Four runs:

1. direct: the clients call the upstreams themselves (the baseline);
2. named: the clients send each request to the gateway naming its model (proxying only, no routing):
   the gateway's own overhead;
3. gateway: the clients send ``model: "finerouter"`` to the gateway;
4. gateway + failure: the same, and a third of the way in, the upstream the router picks most starts
   answering 500; fallback along each decision's ranking (and the cooldown) must hide it from clients.

Each client loops: send one chat request, wait for the answer, think for a random (exponential) time.
Clients start at random times over one mean think time; the measured window (``--duration``) begins after
that ramp, so arrivals are steady in it. Failed requests count whenever they happen.
Printed per run: throughput, client latency p50/p99, the routing decision's p50/p99 (the gateway's
``x-finerouter-routing-ms`` header: queueing for the encoder included), the latency the gateway adds over
calling the upstream directly (gateway latency minus routing time, against the direct run), failed client
requests, the gateway's RSS at start / middle / end of the run, and the machine's 1-minute load average at the
window's start and end (other jobs on the machine show up in every latency figure).

    .venv/bin/python bench/gateway_load.py                       # fit a small router on synthetic data
    .venv/bin/python bench/gateway_load.py --router DIR          # or use a saved router
    .venv/bin/python bench/gateway_load.py --clients 100 --duration 20 --think-ms 5000 --upstream-delay-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _gateway import add_router_options, pct, prompts as make_prompts, router_for, start_fake_upstreams, start_gateway
from _gateway import status_mib, stop, warm_up

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RunStats:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    routing_ms: list[float] = field(default_factory=list)
    upstream_ms: list[float] = field(default_factory=list)
    models: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    rss_mib: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0  # the gateway process's CPU over the run
    load_avg: list[float] = field(default_factory=list)  # the machine's 1-minute load average, window start / end
    mean_batch: float = 0.0  # prompts per routing call
    extra: list = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


async def _drive(
    name: str,
    targets: list[tuple[str, str]],
    prompts: list[str],
    *,
    clients: int,
    duration: float,
    think_s: float,
    gateway_pid: int | None,
    health_url: str | None = None,
    on_third=None,
) -> RunStats:
    """``targets``: (url, model) pairs the clients cycle through."""
    import httpx

    stats = RunStats(name)
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    rng = random.Random(0)
    ramp = think_s  # clients start at random times over one think time: arrivals are steady from then on
    t_start = time.perf_counter()
    window = (t_start + ramp, t_start + ramp + duration)
    marks: dict[str, object] = {}

    async def client(i: int, http: httpx.AsyncClient) -> None:
        k = i
        await asyncio.sleep(rng.random() * ramp)
        while time.perf_counter() < window[1]:
            url, model = targets[k % len(targets)]
            body = {"model": model, "messages": [{"role": "user", "content": prompts[k % len(prompts)]}]}
            k += clients
            t0 = time.perf_counter()
            measured = t0 >= window[0]
            try:
                r = await http.post(url, json=body)
                dt = time.perf_counter() - t0
                if r.status_code != 200:  # every failure counts, in the window or not
                    stats.errors[f"HTTP {r.status_code}"] = stats.errors.get(f"HTTP {r.status_code}", 0) + 1
                elif measured:
                    stats.latencies.append(dt)
                    h = r.headers
                    if "x-finerouter-model" in h:  # through the gateway (named models are not routed: 0 ms)
                        stats.routing_ms.append(float(h.get("x-finerouter-routing-ms", 0.0)))
                        stats.upstream_ms.append(float(h["x-finerouter-upstream-ms"]))
                        m = h["x-finerouter-model"]
                        stats.models[m] = stats.models.get(m, 0) + 1
                        stats.fallbacks += "x-finerouter-fallback-from" in h
                        stats.extra.append((h.get("x-finerouter-attempts"), h.get("x-finerouter-fallback-from"),
                                            round(t0 - window[0], 2)))
            except httpx.HTTPError as exc:
                stats.errors[type(exc).__name__] = stats.errors.get(type(exc).__name__, 0) + 1
            think = rng.expovariate(1.0 / think_s) if think_s > 0 else 0.0
            # Past the window's end there is nothing left to measure: stop instead of finishing the think time
            # (the longest of 100 exponential pauses would add about five think times to every run).
            await asyncio.sleep(max(0.0, min(think, window[1] - time.perf_counter())))

    async def monitor(http: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
        stats.load_avg.append(os.getloadavg()[0])
        if gateway_pid is not None:
            stats.rss_mib.append(status_mib(gateway_pid, "VmRSS"))
            marks["cpu0"] = _cpu_s(gateway_pid)
        if health_url:
            marks["health0"] = (await http.get(health_url)).json()
        await asyncio.sleep(duration / 3)
        if on_third is not None:
            await on_third()
        await asyncio.sleep(duration / 6)
        if gateway_pid is not None:
            stats.rss_mib.append(status_mib(gateway_pid, "VmRSS"))
        await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
        stats.load_avg.append(os.getloadavg()[0])
        if gateway_pid is not None:
            stats.rss_mib.append(status_mib(gateway_pid, "VmRSS"))
            stats.cpu_s = _cpu_s(gateway_pid) - marks["cpu0"]
        if health_url:
            h0, h1 = marks["health0"], (await http.get(health_url)).json()
            batches = h1["routing_batches"] - h0["routing_batches"]
            stats.mean_batch = (h1["routed"] - h0["routed"]) / batches if batches else 0.0

    async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as http:
        await asyncio.gather(monitor(http), *(client(i, http) for i in range(clients)))
    stats.seconds = duration
    return stats


def _report(s: RunStats, direct: RunStats | None) -> dict:
    lat_ms = [x * 1e3 for x in s.latencies]
    row = {
        "run": s.name,
        "requests_ok": len(s.latencies),
        "failed": s.n_errors,
        "errors": s.errors,
        "throughput_rps": round(len(s.latencies) / s.seconds, 1),
        "latency_p50_ms": round(pct(lat_ms, 50), 2),
        "latency_p99_ms": round(pct(lat_ms, 99), 2),
        "load_avg_start_end": [round(x, 2) for x in s.load_avg],
    }
    if s.routing_ms:
        beyond = [lat - r for lat, r in zip(lat_ms, s.routing_ms, strict=True)]
        d_ms = [x * 1e3 for x in direct.latencies] if direct else []
        own = [lat - r - u for lat, r, u in zip(lat_ms, s.routing_ms, s.upstream_ms, strict=True)]
        if os.environ.get("GWLOAD_DEBUG"):
            worst = sorted(zip(own, lat_ms, s.routing_ms, s.upstream_ms, s.extra), reverse=True)[:8]
            print("worst (own, latency, routing, upstream) ms:", [(*(round(x) for x in w[:4]), w[4]) for w in worst])
        row.update(
            routing_p50_ms=round(pct(s.routing_ms, 50), 2),
            routing_p99_ms=round(pct(s.routing_ms, 99), 2),
            added_beyond_routing_p50_ms=round(pct(beyond, 50) - pct(d_ms, 50), 2),
            added_beyond_routing_p99_ms=round(pct(beyond, 99) - pct(d_ms, 99), 2),
            gateway_own_p50_ms=round(pct(own, 50), 2),
            gateway_cpu_ms_per_request=round(s.cpu_s * 1e3 / max(len(s.latencies), 1), 2),
            mean_routing_batch=round(s.mean_batch, 1),
            fallbacks=s.fallbacks,
            models=dict(sorted(s.models.items())),
            rss_mib_start_mid_end=[round(x, 1) for x in s.rss_mib],
        )
    return row


def _print(row: dict) -> None:
    print(f"\n== {row['run']} ==")
    for k, v in row.items():
        if k != "run":
            print(f"  {k:32s} {v}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per gateway run")
    ap.add_argument("--direct-duration", type=float, default=10.0, help="seconds of the direct baseline run")
    ap.add_argument("--think-ms", type=float, default=5000.0, help="mean pause between a client's requests")
    ap.add_argument("--upstream-delay-ms", type=float, default=200.0, help="simulated model latency")
    ap.add_argument("--threads", type=int, default=1,
                    help="the gateway's compute threads (1: the load generator and upstreams share the cores)")
    ap.add_argument("--route-nice", type=int, default=10, help="gateway.route_thread_nice (Linux): routing yields the CPU to the event loop")
    ap.add_argument("--switch-interval-ms", default="default",
                    help="gateway.route_switch_interval_ms: a number, 'none' (Python's 5 ms) or 'default' (the gateway's)")
    ap.add_argument("--json-out", type=Path, default=None)
    add_router_options(ap)
    args = ap.parse_args()
    think_s = args.think_ms / 1000.0

    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="finerouter-gwload-"))
    try:
        router_dir, models = router_for(args, work)
        prompts = make_prompts(2000)

        urls = start_fake_upstreams(models, args.upstream_delay_ms, procs)
        cfg = {"upstreams": {m: {"base_url": u, "timeout_s": 10} for m, u in urls.items()},
               "gateway": {"cooldown_s": 5.0, "max_attempts": 3, "route_thread_nice": args.route_nice}}
        if args.switch_interval_ms != "default":
            cfg["gateway"]["route_switch_interval_ms"] = (
                None if args.switch_interval_ms == "none" else float(args.switch_interval_ms))
        gw, base, t = start_gateway(router_dir, cfg, work, procs, threads=args.threads, log_level="warning")
        import httpx

        print(f"gateway up in {time.perf_counter() - t:.1f} s; {args.clients} clients, think {args.think_ms:.0f} ms "
              f"(exponential), upstream delay {args.upstream_delay_ms:.0f} ms, gateway threads {args.threads}, "
              f"route_thread_nice {args.route_nice}, switch interval {args.switch_interval_ms}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
              flush=True)

        # Warm-up: a few routed requests (first encoder calls, connection pools).
        warm_up(base, prompts[:20])

        direct_targets = [(u + "/chat/completions", m) for m, u in urls.items()]
        direct = asyncio.run(_drive("direct to upstreams", direct_targets, prompts, clients=args.clients,
                                    duration=args.direct_duration, think_s=think_s, gateway_pid=None))
        rows = [_report(direct, None)]
        _print(rows[-1])

        named_targets = [(base + "/v1/chat/completions", m) for m in urls]
        named = asyncio.run(_drive("through the gateway, models named (proxy only, no routing)", named_targets, prompts,
                                   clients=args.clients, duration=args.direct_duration, think_s=think_s,
                                   gateway_pid=gw.pid))
        rows.append(_report(named, direct))
        _print(rows[-1])

        gw_targets = [(base + "/v1/chat/completions", "finerouter")]
        run = asyncio.run(_drive("through the gateway", gw_targets, prompts, clients=args.clients,
                                 duration=args.duration, think_s=think_s, gateway_pid=gw.pid,
                                 health_url=base + "/healthz"))
        rows.append(_report(run, direct))
        _print(rows[-1])

        victim = max(run.models, key=run.models.get)

        async def fail_victim() -> None:
            async with httpx.AsyncClient(trust_env=False) as c:
                await c.post(urls[victim] + "/_control", json={"fail": 500})
            print(f"  ... {victim} now answers 500", flush=True)

        failing = asyncio.run(_drive(f"through the gateway, {victim} failing from t={args.duration / 3:.0f}s",
                                     gw_targets, prompts, clients=args.clients, duration=args.duration,
                                     think_s=think_s, gateway_pid=gw.pid, health_url=base + "/healthz",
                                     on_third=fail_victim))
        rows.append(_report(failing, direct))
        _print(rows[-1])
        metrics = httpx.get(base + "/metrics", trust_env=False).text
        fb = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("finerouter_fallbacks_total"))
        print(f"\n  gateway /metrics: finerouter_fallbacks_total = {fb:.0f}; load average now {os.getloadavg()[0]:.1f}")
        if args.json_out:
            args.json_out.write_text(json.dumps(rows, indent=2))
    finally:
        stop(procs, 10)


if __name__ == "__main__":
    main()
