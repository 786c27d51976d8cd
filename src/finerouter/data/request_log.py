"""Routing data from the gateway's request log: logged decisions joined with client feedback (partial labels).

The gateway (with ``gateway: {request_log_dir: DIR}``) writes ``requests-YYYY-MM-DD.jsonl`` files of
``decision`` and ``feedback`` records (format: docs/data.md, writer: :mod:`finerouter.collect.request_log`).
:func:`read_request_log` turns a log folder into a :class:`RoutingDataset` with one row per prompt that got
feedback, where only the answering model's score is observed: every other model's score is NaN (the data format
allows it, and the router is trained on the observed cells). Feedback names a request by the gateway's request
id or the upstream's completion id; several scores for one request, or for one prompt and model, are averaged.
The answering model's estimated cost, when the decision had one, is its cost; the other costs are NaN.

``finerouter fit --data DIR`` reads a folder this way.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from finerouter.errors import DataError

logger = logging.getLogger(__name__)

LOG_GLOB = "requests-*.jsonl"


def iter_log_records(directory: str | os.PathLike[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(file, line number, record)`` for every record of a log folder, oldest file first.

    A torn last line (an interrupted write) is skipped with a warning.

    Raises:
        DataError: the folder does not exist or has no log file, or a line before a file's last is not a JSON
            object with a ``kind`` (naming the file and line).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a folder (expected a gateway request-log folder)")
    files = sorted(directory.glob(LOG_GLOB))
    if not files:
        raise DataError(f"{directory}: no request-log files ({LOG_GLOB}); is gateway.request_log_dir set to it?")
    for path in files:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or record.get("kind") not in ("decision", "feedback"):
                    raise ValueError
            except ValueError:
                if number >= len(lines) - 1:
                    logger.warning("%s: line %d: skipping a torn last line", path, number)
                    continue
                raise DataError(f"{path}: line {number}: not a request-log record (a JSON object with a 'kind')") from None
            yield str(path), number, record


def read_log_prompts(directory: str | os.PathLike[str]) -> list[str]:
    """The unique logged prompt texts of a log folder, in order (to collect answers for them).

    Raises:
        DataError: no decision in the log stores its prompt text (the log keeps hashes only).
    """
    seen: dict[str, None] = {}
    hashed = 0
    for _, _, record in iter_log_records(directory):
        if record["kind"] == "decision":
            if isinstance(record.get("prompt"), str):
                seen.setdefault(record["prompt"], None)
            else:
                hashed += 1
    if not seen:
        raise DataError(
            f"{directory}: the log holds no prompt text ({hashed} decision(s) with hashed prompts only; "
            "set gateway.request_log_prompts: text to train on the log)"
        )
    return list(seen)


def read_request_log(directory: str | os.PathLike[str], *, name: str | None = None) -> Any:
    """A :class:`~finerouter.data.dataset.RoutingDataset` of the logged decisions that got feedback.

    Returns:
        The dataset; ``meta`` holds ``layout: "request_log"``, ``decisions``, ``feedback``,
        ``decisions_without_feedback``, ``feedback_without_decision`` and ``hashed_prompts`` (decisions with
        feedback but no prompt text, left out).

    Raises:
        DataError: as :func:`iter_log_records`; a score outside [0, 1] (naming file and line); no decision with
            both feedback and prompt text; fewer than two models with an observed score.
    """
    from finerouter.data.dataset import RoutingDataset

    decisions: dict[str, dict[str, Any]] = {}
    alias: dict[str, str] = {}
    feedback: list[tuple[str, float]] = []
    for path, number, record in iter_log_records(directory):
        if record["kind"] == "decision":
            rid = record.get("id")
            if not isinstance(rid, str) or not isinstance(record.get("model"), str):
                raise DataError(f"{path}: line {number}: a decision needs a string 'id' and 'model'")
            decisions[rid] = record
            if isinstance(record.get("response_id"), str):
                alias[record["response_id"]] = rid
        else:
            score = record.get("score")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
                raise DataError(f"{path}: line {number}: feedback score {score!r} is not a number in [0, 1]")
            feedback.append((str(record.get("id")), float(score)))
    per_request: dict[str, list[float]] = {}
    orphans = 0
    for fid, score in feedback:
        rid = fid if fid in decisions else alias.get(fid)
        if rid is None:
            orphans += 1
            continue
        per_request.setdefault(rid, []).append(score)
    models: list[str] = []
    cells: dict[tuple[str, str], list[float]] = {}
    costs: dict[tuple[str, str], float] = {}
    hashed = 0
    for rid, scores in per_request.items():
        d = decisions[rid]
        if not isinstance(d.get("prompt"), str):
            hashed += 1
            continue
        for m in [*(d.get("models") or []), d["model"]]:
            if m not in models:
                models.append(m)
        key = (d["prompt"], d["model"])
        cells.setdefault(key, []).extend(scores)
        cost = d.get("cost_usd")
        if isinstance(cost, (int, float)) and math.isfinite(cost):
            costs[key] = float(cost)
    where = os.fspath(directory)
    if not cells:
        raise DataError(
            f"{where}: no logged decision has both feedback and its prompt text ({len(decisions)} decision(s), "
            f"{len(feedback)} feedback record(s), {hashed} with hashed prompts only)"
        )
    prompts = list(dict.fromkeys(p for p, _ in cells))
    observed = [m for m in models if any(k[1] == m for k in cells)]
    if len(observed) < len(models):
        logger.info("%s: model(s) %s never answered a request with feedback; left out",
                    where, [m for m in models if m not in observed])
    if len(observed) < 2:
        raise DataError(
            f"{where}: only {len(observed)} model(s) answered requests that got feedback ({observed}); training "
            "needs scores for at least 2"
        )
    row = {p: i for i, p in enumerate(prompts)}
    score_matrix = np.full((len(prompts), len(observed)), np.nan)
    cost_matrix = np.full_like(score_matrix, np.nan)
    for (prompt, model), values in cells.items():
        score_matrix[row[prompt], observed.index(model)] = float(np.mean(values))
        if (prompt, model) in costs:
            cost_matrix[row[prompt], observed.index(model)] = costs[(prompt, model)]
    meta = {
        "layout": "request_log", "decisions": len(decisions), "feedback": len(feedback),
        "decisions_without_feedback": len(decisions) - len(per_request), "feedback_without_decision": orphans,
        "hashed_prompts": hashed,
    }
    logger.info("%s: %d prompts with feedback from %d decisions (%d feedback without a logged decision)",
                where, len(prompts), len(decisions), orphans)
    return RoutingDataset(
        prompts=prompts, models=observed, scores=score_matrix,
        costs=cost_matrix if np.isfinite(cost_matrix).any() else None,
        name=name or Path(where).name or "request_log", source=where, meta=meta,
    )


__all__ = ["LOG_GLOB", "iter_log_records", "read_log_prompts", "read_request_log"]
