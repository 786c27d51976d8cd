"""The gateway's opt-in request log: routing decisions and client feedback, as JSON lines in a local folder.

Turned on by ``gateway: {request_log_dir: DIR}`` in the upstreams file. Each routed request answered with a 2xx
appends a ``decision`` record; each ``POST /v1/feedback`` appends a ``feedback`` record. Files are
``requests-YYYY-MM-DD.jsonl`` (UTC days); files older than ``request_log_retention_days`` are deleted when the
log opens and whenever the day changes. With ``request_log_prompts: hash`` only the SHA-256 of each prompt is
kept (its text is not stored anywhere), which also means the log cannot be trained on without the texts.

Records (one JSON object a line; the format is documented in docs/data.md)::

    {"kind": "decision", "id": "frq-...", "response_id": "chatcmpl-...", "time": 1767225600.0,
     "prompt": "...", "prompt_sha256": "...", "model": "<answering model>", "routed_model": "<router's choice>",
     "models": [...], "cost_usd": 0.0001, "task_id": 3, "key": "anonymous"}
    {"kind": "feedback", "id": "frq-... or chatcmpl-...", "score": 0.8, "time": ..., "key": "anonymous"}

Each line is written and flushed to the operating system at once (a crash of the gateway loses nothing written;
a power loss can lose the last lines, which the reader tolerates as a torn last line). The writer is called on
the event loop; a line costs microseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOG_FILE = re.compile(r"requests-(\d{4}-\d{2}-\d{2})\.jsonl\Z")
PROMPT_MODES = ("text", "hash")


def log_file_name(day: str) -> str:
    """The file of one UTC day (``YYYY-MM-DD``)."""
    return f"requests-{day}.jsonl"


class RequestLog:
    """Appends decision and feedback records to a folder (see the module docstring).

    Args:
        directory: the log folder (created).
        retention_days: files of days older than this are deleted.
        prompts: ``"text"`` (store the prompt) or ``"hash"`` (store only its SHA-256).
        clock: wall-clock seconds (injectable for tests).
        remember: how many recent request ids are kept in memory to tell feedback on a known request apart.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retention_days: float = 30.0,
        prompts: str = "text",
        clock: Callable[[], float] = time.time,
        remember: int = 100_000,
    ) -> None:
        self.directory = Path(directory)
        self.retention_days = float(retention_days)
        self.prompts = prompts
        self.clock = clock
        self.remember = remember
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._day: str | None = None
        self._fh: Any = None
        self.directory.mkdir(parents=True, exist_ok=True)

    def _day_of(self, t: float) -> str:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d")

    def prune(self) -> list[Path]:
        """Delete the files older than the retention limit; returns them."""
        cutoff = self._day_of(self.clock() - self.retention_days * 86400.0)
        removed = []
        for path in sorted(self.directory.iterdir()):
            match = LOG_FILE.match(path.name)
            if match and match.group(1) < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            logger.info("request log: deleted %d file(s) past the %g-day retention", len(removed), self.retention_days)
        return removed

    def _write(self, record: dict[str, Any]) -> None:
        t = record["time"]
        day = self._day_of(t)
        if day != self._day:
            self.close()
            self._day = day
            self.prune()
            self._fh = open(self.directory / log_file_name(day), "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def log_decision(
        self,
        *,
        request_id: str,
        response_id: str | None,
        prompt: str,
        model: str,
        routed_model: str,
        models: Sequence[str],
        cost_usd: float | None,
        task_id: int | None,
        key: str,
    ) -> None:
        """Record one routed request that was answered by ``model``."""
        cost = None if cost_usd is None or not math.isfinite(cost_usd) else float(cost_usd)
        self._write({
            "kind": "decision", "id": request_id, "response_id": response_id, "time": self.clock(),
            "prompt": prompt if self.prompts == "text" else None,
            "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
            "model": model, "routed_model": routed_model, "models": list(models), "cost_usd": cost,
            "task_id": task_id, "key": key,
        })
        for rid in (request_id, response_id):
            if rid:
                self._recent[rid] = None
        while len(self._recent) > self.remember:
            self._recent.popitem(last=False)

    def knows(self, request_id: str) -> bool:
        """Whether ``request_id`` is one of the recent requests this process logged."""
        return request_id in self._recent

    def log_feedback(self, request_id: str, score: float, key: str) -> None:
        """Record a client's score in [0, 1] for the request (or upstream response) ``request_id``."""
        self._write({"kind": "feedback", "id": request_id, "score": float(score), "time": self.clock(), "key": key})

    def close(self) -> None:
        """Close the current file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def request_log_of(state: Any) -> RequestLog | None:
    """The gateway's request log (opened on first use from its settings), or None when logging is off."""
    settings = state.settings
    directory = getattr(settings, "request_log_dir", None)
    if not directory:
        return None
    log = state.__dict__.get("_request_log")
    if log is None:
        log = RequestLog(
            directory, retention_days=settings.request_log_retention_days, prompts=settings.request_log_prompts
        )
        state.__dict__["_request_log"] = log
    return log


__all__ = ["LOG_FILE", "PROMPT_MODES", "RequestLog", "log_file_name", "request_log_of"]


def log_routed_answer(state: Any, decision: Any, forwarded: Any, prompt: str, key: str) -> str | None:
    """Log a routed request the gateway answered; returns its request id (None when logging is off).

    The request id (``frq-`` and 32 hex digits) goes back to the client in ``x-finerouter-request-id``; the
    upstream's own completion ``id`` (non-streamed answers) is logged too, so feedback may name either.
    """
    log = request_log_of(state)
    if log is None:
        return None
    import uuid

    request_id = f"frq-{uuid.uuid4().hex}"
    response_id = None
    content = forwarded.answer.content
    if content is not None:
        try:
            parsed = json.loads(content)
            response_id = parsed.get("id") if isinstance(parsed, dict) and isinstance(parsed.get("id"), str) else None
        except ValueError:
            response_id = None
    model = forwarded.model
    models = list(decision.models)
    cost = decision.costs[models.index(model)] if model in models and decision.costs is not None else None
    try:
        log.log_decision(
            request_id=request_id, response_id=response_id, prompt=prompt, model=model, routed_model=decision.model,
            models=models, cost_usd=None if cost is None else float(cost), task_id=decision.task_id, key=key,
        )
    except OSError as exc:  # a full disk must not fail the client's answer
        logger.error("request log: cannot write to %s (%s); this request is not logged", log.directory, exc)
        return None
    return request_id


__all__ += ["log_routed_answer"]
