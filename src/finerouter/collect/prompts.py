"""The prompts to collect answers for: from a table (JSONL, CSV, Parquet) or from the gateway's request log.

A table needs a ``prompt`` column (``query`` is accepted too); optional columns are kept with each prompt:
``id`` (your id, carried into the judged table), ``task`` (a coarse label, for reports) and ``gold`` (a
reference answer, for ``finerouter judge --mode reference``; ``reference`` is accepted too). Repeated prompt
texts are collected once (the first row's id, task and gold are kept). A prompt is identified in the stores by
:func:`prompt_key`, a hash of its text, so the same prompt from two files is the same prompt.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from finerouter.errors import DataError

logger = logging.getLogger(__name__)

PROMPT_COLUMNS = ("prompt", "query")
GOLD_COLUMNS = ("gold", "reference")


def prompt_key(text: str) -> str:
    """The prompt's identity in the answers store: the first 24 hex digits of the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class Prompt:
    """One prompt to collect: its text, key (:func:`prompt_key`) and optional id, task and gold answer."""

    text: str
    key: str
    id: str | None = None
    task: str | None = None
    gold: str | None = None


def _cell(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    text = str(value)
    return text if text.strip() else None


def read_prompts(path: str | os.PathLike[str]) -> list[Prompt]:
    """The unique prompts of a table file, or of a gateway request-log folder (its logged prompt texts).

    Raises:
        DataError: unreadable file, no prompt column, an empty prompt (naming file, column and row), or a
            request log whose prompts were stored hashed only.
    """
    path = Path(path)
    if path.is_dir():
        from finerouter.data.request_log import read_log_prompts

        return [Prompt(text, prompt_key(text)) for text in read_log_prompts(path)]
    from finerouter.data.files import load_frame
    from finerouter.data.layouts.columns import prompt_column

    where = os.fspath(path)
    frame = load_frame(where)
    column = prompt_column(frame, where, PROMPT_COLUMNS)
    gold_column = next((c for c in GOLD_COLUMNS if c in frame.columns), None)
    seen: set[str] = set()
    prompts: list[Prompt] = []
    for row, record in enumerate(frame.to_dict("records")):
        text = record.get(column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: column {column!r}, row {row}: the prompt is empty or not text ({text!r})")
        if text in seen:
            continue
        seen.add(text)
        prompts.append(
            Prompt(text, prompt_key(text), _cell(record.get("id")), _cell(record.get("task")),
                   None if gold_column is None else _cell(record.get(gold_column)))
        )
    if len(prompts) < len(frame):
        logger.info("%s: %d repeated prompt(s) collected once", where, len(frame) - len(prompts))
    return prompts


__all__ = ["GOLD_COLUMNS", "PROMPT_COLUMNS", "Prompt", "prompt_key", "read_prompts"]
