"""Helpers shared by the CLI sub-commands: error reporting and the console."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer

from finerouter.errors import FineRouterError


def console():  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn FineRouter errors into a one-line message and exit status 2 (no traceback)."""
    try:
        yield
    except FineRouterError as exc:
        logging.getLogger("finerouter.cli").debug("error", exc_info=True)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    except FileNotFoundError as exc:
        typer.echo(f"error: file not found: {exc.filename or exc}", err=True)
        raise typer.Exit(code=2) from exc


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None
