"""An append-only, crash-safe JSON-lines store: the answers and judgments of ``collect`` and ``judge``.

Every record is one JSON object on one line. Records are only ever appended; a record counts as written once
its line and the newline after it have been ``fsync``'d. Writers call :meth:`JsonlStore.append` from asyncio
tasks; the lines of all the records waiting at that moment are written and synced together (group commit), so
64 requests in flight cost one ``fsync`` per batch, not one per answer, and the sync runs in a worker thread so
the event loop keeps serving the network meanwhile.

What a crash can leave: at most one torn last line (a process killed half-way through ``write``). Opening the
store drops it (the file is truncated back to its last complete line, with a warning) and the record it held
is simply not done, so it is produced again. A line that is not JSON anywhere *before* the last one is not a
torn write but damage, and is refused with a :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finerouter.errors import DataError

logger = logging.getLogger(__name__)


def read_jsonl_store(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """Every complete record of the store at ``path`` and the byte length of its complete part.

    A last line without a newline, or with one but not JSON (a torn write), is left out; the returned length
    ends before it. Missing file: ``([], 0)``.

    Raises:
        DataError: a line other than the last is not a JSON object (names the file and the line number).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records: list[dict[str, Any]] = []
    good = 0
    lines = data.split(b"\n")
    # ``lines[-1]`` is what follows the last newline: empty when the file ends cleanly, else a torn line.
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if number == len(lines) - 1 and not lines[-1]:
                break  # the last line, complete but garbled: a torn write that happened to end in a newline
            raise DataError(
                f"{path}: line {number}: not a JSON object; the store is damaged before its last line "
                "(a crash only ever tears the last one); fix or remove that line"
            ) from None
        records.append(record)
        good += len(line) + 1
    return records, good


class JsonlStore:
    """An append-only JSON-lines file with durable, batched appends (see the module docstring).

    Args:
        path: the file (created with its folder when missing).

    Use :meth:`open` (reads what is there and repairs a torn tail), :meth:`append` from coroutines, and
    :meth:`close` (or ``async with``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self.torn_bytes = 0
        self._fh: Any = None
        self._pending: list[tuple[bytes, dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def open(self) -> JsonlStore:
        """Read the existing records (into :attr:`records`), drop a torn last line, open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records, good = read_jsonl_store(self.path)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size > good:
            self.torn_bytes = size - good
            logger.warning(
                "%s: dropping a torn last line (%d bytes) left by an interrupted run; its record is redone",
                self.path, self.torn_bytes,
            )
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    async def append(self, record: dict[str, Any]) -> None:
        """Append ``record``; returns once it is on disk (written and fsync'd together with any concurrent ones)."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: the store is not open")
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())
        await asyncio.shield(future)  # a cancelled appender's record is still written (and kept in records)

    def append_now(self, record: dict[str, Any]) -> None:
        """Append ``record`` synchronously (write and fsync before returning); for code outside an event loop."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: the store is not open")
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n"
        self._write([line])
        self.records.append(record)

    def _write(self, lines: list[bytes]) -> None:
        self._fh.write(b"".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, [line for line, _, _ in batch])
            except BaseException as exc:  # an I/O error fails every record of the batch, loudly
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                raise
            for _, record, future in batch:
                self.records.append(record)
                if not future.done():
                    future.set_result(None)

    async def aclose(self) -> None:
        """Wait for pending appends, then close the file."""
        if self._flusher is not None:
            try:
                await asyncio.shield(self._flusher)
            except Exception:  # noqa: BLE001 - already given to the appenders
                pass
        self.close()

    def close(self) -> None:
        """Close the file (appends still pending are lost: use :meth:`aclose` from a coroutine)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    async def __aenter__(self) -> JsonlStore:
        return self.open() if self._fh is None else self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["JsonlStore", "read_jsonl_store"]
