"""`finerouter serve`: run the OpenAI-compatible routing gateway with a saved router."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from finerouter.cli._common import cli_errors

logger = logging.getLogger(__name__)


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
    torch_threads: int = typer.Option(
        0, "--torch-threads", min=0, help="Threads for the encoder's forward pass (0: torch's default, one per core)."
    ),
) -> None:
    """Serve POST /v1/chat/completions (model "finerouter" routes), /v1/route, /v1/models, /healthz, /metrics.

    The upstreams file, the key variables it names and the router's models are all checked before the server
    starts; any mismatch stops it with a message naming the file, model and variable.
    """
    with cli_errors():
        import uvicorn

        from finerouter.routing.router import FineRouter
        from finerouter.serving.app import create_app
        from finerouter.serving.config import load_auth_tokens, load_gateway_config

        if torch_threads:
            # On a box shared with the upstreams or other services, fewer encoder threads than cores avoids
            # threads spinning against each other (a single prompt's forward pass gains little from many).
            import torch

            torch.set_num_threads(torch_threads)
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
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
