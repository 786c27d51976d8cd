"""Helpers shared by the CLI sub-commands: error reporting and the console."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import typer

from finerouter.errors import FineRouterError, ParameterError

logger = logging.getLogger(__name__)


def console():  # noqa: ANN201 - rich is imported lazily
    """A rich console on stderr (stdout stays for the command's machine-readable output)."""
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


RAY_HELP = (
    "Run on Ray (needs finerouter\\[ray]): 'local' starts a cluster in this process, 'auto' joins the one in "
    "RAY_ADDRESS, or HOST:PORT / ray://HOST:PORT; settings may follow, e.g. 'auto?workers=4&gpus=1' "
    "(docs/scale.md)."
)


def ray_engine(address: str | None):  # noqa: ANN201 - the engine module is imported lazily
    """The :class:`~finerouter.engines.RayEngine` of a ``--ray ADDRESS`` option, connected now so that a bad
    address or a missing Ray fails before any work (EngineError); None without the option."""
    if address is None:
        return None
    from finerouter.engines.ray_engine import RayEngine

    engine = RayEngine.from_spec(address)
    engine.connect()
    return engine


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def prepare_out_folder(
    out: Path, outputs: Sequence[str], *, previous: Callable[[Path], bool], force: bool, command: str
) -> None:
    """Check that writing ``outputs`` into folder ``out`` loses none of the user's files (before any work).

    The command writes only the files named in ``outputs`` and never deletes anything else in ``out``. It may
    overwrite them when ``out`` holds an earlier run's output (``previous(out)``); otherwise an existing file of
    one of those names, or an ``out`` that is itself a file, raises ParameterError (one line naming the path),
    unless ``force``: then those files are overwritten and a file at ``out`` is deleted.
    """
    hint = "choose another --out, or pass --force to overwrite it"
    if (out.exists() or out.is_symlink()) and not out.is_dir():  # a file, or a dangling link
        if not force:
            raise ParameterError(f"{out}: not written, it is a file and --out must be a folder; {hint}")
        logger.warning("deleting the file %s to write a folder there: forced", out)
        out.unlink()
        return
    clashes = [name for name in outputs if (out / name).exists() or (out / name).is_symlink()]
    if clashes and not force and not previous(out):
        raise ParameterError(
            f"{out}: not written, it holds {clashes[0]!r}, which is not from an earlier `finerouter {command}` "
            f"run; {hint} (files {', '.join(outputs)}; nothing else in the folder is touched)"
        )
