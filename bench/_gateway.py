"""What the gateway benches share: a router to serve, prompts, and the processes they run on loopback (echoing
fake upstreams and ``finerouter serve``), started, waited for and stopped the same way.

Used by ``gateway_load.py`` and ``gateway_faults.py`` (run from ``bench/``, so this module is importable).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_mib(pid: int, field: str) -> float:
    """A size field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...) in MiB; NaN when absent."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def fit_router(out_dir: Path, n_prompts: int, n_models: int) -> list[str]:
    """Fit a small FineRouter (packaged MiniLM) on synthetic data, save it to ``out_dir``; its models."""
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter

    data = make_synthetic_routing_data(n_prompts=n_prompts, n_models=n_models, seed=0)
    t = time.perf_counter()
    router = FineRouter(seed=0, classifier={"epochs": 15}, quality={"epochs_general": 8, "epochs_task": 5}).fit(data)
    router.save(out_dir)
    print(f"fitted a FineRouter on {len(data)} synthetic prompts, {n_models} models, "
          f"{router.catalog_.n_tasks} tasks in {time.perf_counter() - t:.1f} s", flush=True)
    return list(router.models_)


def add_router_options(ap: argparse.ArgumentParser) -> None:
    """``--router``, ``--save-router``, ``--fit-prompts``, ``--fit-models``: the router the bench serves."""
    ap.add_argument("--router", type=Path, default=None, help="saved router directory (default: fit one)")
    ap.add_argument("--save-router", type=Path, default=None, help="keep the fitted router here")
    ap.add_argument("--fit-prompts", type=int, default=400)
    ap.add_argument("--fit-models", type=int, default=4)


def router_for(args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    """The saved router's directory and models: ``--router``, or one fitted now (into ``--save-router`` or
    ``work``)."""
    if args.router is not None:
        from finerouter.routing.router import FineRouter

        return args.router, list(FineRouter.load(args.router).models_)
    router_dir = args.save_router or work / "router"
    return router_dir, fit_router(router_dir, args.fit_prompts, args.fit_models)


def prompts(n: int) -> list[str]:
    """The distinct prompts among ``n`` synthetic ones (seed 123: not the router's training data)."""
    from finerouter.data.synthetic import make_synthetic_routing_data

    return list(dict.fromkeys(make_synthetic_routing_data(n_prompts=n, seed=123).prompts))


def start_fake_upstreams(
    models: list[str], delay_ms: float, procs: list[subprocess.Popen], stderr: IO[str] | None = None
) -> dict[str, str]:
    """Echoing upstreams for ``models`` in one process (added to ``procs``); their base URLs by model."""
    fake = subprocess.Popen(
        [sys.executable, "-m", "finerouter.testing.upstreams", "--names", ",".join(models),
         "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
    procs.append(fake)
    return json.loads(fake.stdout.readline())


def start_gateway(
    router_dir: Path,
    config: dict[str, Any],
    work: Path,
    procs: list[subprocess.Popen],
    *,
    threads: int,
    log_level: str,
    stdout: IO[str] | None = None,
    start_timeout_s: float = 300.0,
) -> tuple[subprocess.Popen, str, float]:
    """``finerouter serve`` with ``config`` (written to ``work/upstreams.yaml``), added to ``procs``, once its
    ``/healthz`` answers; returns the process, its base URL and the time ``/healthz`` was first polled."""
    import httpx

    (work / "upstreams.yaml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    gw = subprocess.Popen(
        [sys.executable, "-m", "finerouter.cli.main", "serve", "--router", str(router_dir),
         "--upstreams", str(work / "upstreams.yaml"), "--host", "127.0.0.1", "--port", str(port),
         "--log-level", log_level, "--threads", str(threads)],
        stdout=stdout, stderr=None if stdout is None else subprocess.STDOUT,
    )
    procs.append(gw)
    base = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    while True:
        if gw.poll() is not None:
            raise SystemExit(f"the gateway exited with status {gw.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t > start_timeout_s:
            raise SystemExit(f"the gateway did not start within {start_timeout_s:g} s")
        time.sleep(0.2)
    return gw, base, t


def warm_up(base: str, texts: list[str]) -> None:
    """One routed request per text (the first encoder calls, connection pools)."""
    import httpx

    for p in texts:
        httpx.post(base + "/v1/chat/completions", json={"model": "finerouter", "messages": [{"role": "user", "content": p}]},
                   timeout=60, trust_env=False)


def stop(procs: list[subprocess.Popen], wait_s: float) -> None:
    """SIGTERM the processes still running, last started first; kill those not gone within ``wait_s``."""
    import signal

    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(wait_s)
            except subprocess.TimeoutExpired:
                p.kill()
