"""`finerouter serve`: run the OpenAI-compatible routing gateway with a saved router."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from finerouter.cli._common import cli_errors

logger = logging.getLogger(__name__)


def _limit_threads(n: int) -> None:
    """Cap every native thread pool routing uses at ``n`` threads.

    On a machine shared with the upstreams or other services, idle OpenMP / BLAS workers spin-wait and burn
    CPU the event loop needs; a routing batch gains little from more threads than free cores. The variables
    cover pools created later (torch is imported after this); threadpoolctl and torch cover those already
    loaded.
    """
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    import torch

    torch.set_num_threads(n)


def serve(
    router_dir: Path = typer.Option(..., "--router", help="Directory written by `finerouter fit`."),
    upstreams_path: Path = typer.Option(..., "--upstreams", help="Upstreams YAML (see docs/serving.md)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    auth_tokens_file: Path | None = typer.Option(
        None, "--auth-tokens-file", help="Client bearer tokens, one per line (auth is off without tokens)."
    ),
    auth_tokens_env: str | None = typer.Option(
        None, "--auth-tokens-env", help="Environment variable holding comma-separated client tokens."
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache directory."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
    shutdown_timeout: float | None = typer.Option(
        None,
        "--shutdown-timeout",
        min=0.0,
        help="Seconds open requests and streams may go on after SIGTERM / Ctrl-C; streams still open then end "
        "with an error event (default: the upstreams file's gateway.shutdown_timeout_s, 10).",
    ),
    threads: int = typer.Option(
        0,
        "--threads",
        min=0,
        help="Native compute threads for routing (torch, OpenMP, BLAS); 0: the libraries' default, one per core.",
    ),
) -> None:
    """Serve POST /v1/chat/completions (model "finerouter" routes), /v1/route, /v1/models, /healthz, /metrics.

    The upstreams file, the key variables it names and the router's models are all checked before the server
    starts; any mismatch stops it with a message naming the file, model and variable. On SIGTERM or Ctrl-C the
    server stops accepting connections and exits within the shutdown timeout (plus a second to end streams).
    """
    with cli_errors():
        from finerouter.routing.router import FineRouter
        from finerouter.serving.app import create_app
        from finerouter.serving.config import load_auth_tokens, load_gateway_config
        from finerouter.serving.server import make_server

        if threads:
            _limit_threads(threads)
        if not logger.isEnabledFor(logging.DEBUG):
            # httpx logs every upstream call at INFO; per-request lines belong in --access-log, not here.
            logging.getLogger("httpx").setLevel(logging.WARNING)
        config = load_gateway_config(upstreams_path)
        tokens = load_auth_tokens(auth_tokens_file, auth_tokens_env)
        router = FineRouter.load(router_dir, cache_dir=cache_dir)
        config.check_covers(router.models_)
        router.route("Warm-up prompt: load the encoder before the first request.")
        app = create_app(router, config, auth_tokens=tokens)
        logger.info("serving %d models on http://%s:%d (auth %s)", len(router.models_), host, port, "on" if tokens else "off")
        server = make_server(
            app,
            shutdown_timeout_s=config.settings.shutdown_timeout_s if shutdown_timeout is None else shutdown_timeout,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
        )
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises the signal it stopped on
            pass
        if not server.started:
            raise typer.Exit(code=3)  # uvicorn has said why (e.g. the port is taken)
