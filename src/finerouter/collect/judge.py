"""``judge``: score the collected answers into a routing table (``score::<model>``, ``cost::<model>``).

Three modes, each mapping a verdict to a score in [0, 1]:

- ``"absolute"`` (MT-Bench / WildBench single-answer grading): an LLM judge rates each answer 1-10 and writes
  its rating as ``[[N]]``; score ``(N - 1) / 9``.
- ``"pairwise"`` (AlpacaEval-style, against ``reference_model``): the judge compares each answer with the
  reference model's answer to the same prompt and writes ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie); score 1 for a
  win, 0.5 for a tie, 0 for a loss. Which answer is shown first alternates with a hash of (prompt, model), so
  position bias averages out over the data. The reference model itself scores 0.5 (a tie with itself).
- ``"reference"``: no LLM; the answer is compared with the prompt's gold answer (the ``gold`` column of the
  prompts file): a numeric gold answer matches the last number in the answer (relative tolerance 1e-6,
  thousands separators and a GSM8K ``#### `` prefix allowed), any other gold answer matches the whole answer or
  its last line, compared case- and space-insensitively. Score 1 or 0.

Judgments are appended to a :class:`~finerouter.collect.store.JsonlStore` next to the answers
(``judgments-<mode>-<judge model>.jsonl``), so judging is resumable the same way as collecting: a judged answer
is never sent to the judge again. A reply without a verdict is asked again up to ``parse_retries`` times; if it
still has none it is recorded as ``"unparseable"``, counted in the report, and its score stays missing (never
guessed). A judge call that fails (network, 5xx after retries) is recorded as ``"error"`` and retried on the
next run.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finerouter._validation import check_choice, check_int
from finerouter.collect.client import ChatCaller, Endpoint
from finerouter.collect.collect import ANSWERS_FILE
from finerouter.collect.store import JsonlStore, read_jsonl_store
from finerouter.errors import DataError, ParameterError, UpstreamError

if TYPE_CHECKING:
    import httpx

    from finerouter.data.dataset import RoutingDataset

logger = logging.getLogger(__name__)

MODES = ("absolute", "pairwise", "reference")

ABSOLUTE_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    "you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]"
)
PAIRWISE_TEMPLATE = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Be as objective as possible. After providing your explanation, output your final "
    "verdict by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is "
    "better, and \"[[C]]\" for a tie.\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n"
    "{answer_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
    "[The End of Assistant B's Answer]"
)
SYSTEM_PROMPT = "You are a helpful assistant."

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_PAIR_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_rating(reply: str) -> float | None:
    """The last ``[[N]]`` of a judge reply as a score in [0, 1] (``(N-1)/9``); None if there is no rating in 1-10."""
    found = _RATING.findall(reply)
    if not found:
        return None
    rating = float(found[-1])
    if not 1.0 <= rating <= 10.0:
        return None
    return (rating - 1.0) / 9.0


def parse_pair_verdict(reply: str) -> str | None:
    """The last ``[[A]]``, ``[[B]]`` or ``[[C]]`` of a judge reply; None if there is none."""
    found = _PAIR_VERDICT.findall(reply)
    return found[-1] if found else None


def _normal(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def reference_match(answer: str, gold: str) -> float:
    """1.0 when ``answer`` matches the gold answer (rules in the module docstring), else 0.0."""
    gold = gold.split("####")[-1].strip()
    gold_number = _number(gold)
    if gold_number is not None:
        numbers = _NUMBER.findall(answer)
        if not numbers:
            return 0.0
        last = _number(numbers[-1])
        return float(last is not None and math.isclose(last, gold_number, rel_tol=1e-6, abs_tol=1e-9))
    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    candidates = {_normal(answer)} | ({_normal(lines[-1])} if lines else set())
    return float(_normal(gold) in candidates)


def judgments_file(mode: str, judge_model: str | None) -> str:
    """The judgments store's file name for a mode and judge model."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", judge_model or "gold")
    return f"judgments-{mode}-{label}.jsonl"


@dataclass
class JudgeReport:
    """What a judging run did; ``unparseable`` counts the answers left without a score because the judge never
    gave a verdict (all runs), ``failed`` the judge calls that failed this run (retried next run)."""

    answers: int = 0
    already_judged: int = 0
    judged: int = 0
    unparseable: int = 0
    failed: int = 0
    parse_retries: int = 0
    missing_reference: int = 0
    seconds: float = 0.0
    unparseable_examples: list[str] = field(default_factory=list)


def _answer_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_answers(answers_dir: str | Path) -> list[dict[str, Any]]:
    """The answered records of an answers folder (the last one per (prompt, model) pair).

    Raises:
        DataError: the folder has no ``answers.jsonl``, or it holds no answer.
    """
    path = Path(answers_dir) / ANSWERS_FILE
    if not path.is_file():
        raise DataError(f"{path}: no answers store here; run `finerouter collect --out {answers_dir}` first")
    records, _ = read_jsonl_store(path)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record.get("status") == "ok":
            latest[(record["prompt_key"], record["model"])] = record
    if not latest:
        raise DataError(f"{path}: holds no answer yet (only failed calls, or nothing)")
    return list(latest.values())


async def judge_answer(
    caller: ChatCaller, endpoint: Endpoint, parse_retries: int, call: tuple[list[dict[str, str]], bool, bool]
) -> dict[str, Any]:
    """One judgment: ask ``endpoint`` (again, up to ``parse_retries`` times, while the reply has no verdict) and
    return the judgment's fields (``status``, ``score``...) and ``parse_retries`` (the re-asks it took).
    ``call``: ``(messages, swapped, pairwise)``."""
    messages, swapped, pairwise = call
    reply, score, verdict = "", None, None
    attempts = retries = 0
    try:
        while attempts <= parse_retries:
            attempts += 1
            result = await caller.complete(endpoint, messages, {"temperature": 0})
            reply = result.text
            if not pairwise:
                score = parse_rating(reply)
                verdict = None if score is None else round(1 + 9 * score, 3)
            else:
                verdict = parse_pair_verdict(reply)
                if verdict is not None:
                    won = "B" if swapped else "A"
                    score = 0.5 if verdict == "C" else float(verdict == won)
            if score is not None:
                break
            retries += attempts <= parse_retries
    except UpstreamError as exc:
        return {"status": "error", "error": str(exc), "attempts": attempts, "parse_retries": retries}
    if score is None:
        return {"status": "unparseable", "reply": reply[:2000], "attempts": attempts, "parse_retries": retries}
    return {"status": "ok", "verdict": verdict, "score": score, "attempts": attempts,
            "swapped": swapped if pairwise else None, "parse_retries": retries}


async def _judge_on_worker(
    endpoint: Endpoint, parse_retries: int, options: Mapping[str, Any], call: tuple[list[dict[str, str]], bool, bool]
) -> dict[str, Any]:
    """:func:`judge_answer` where an engine runs it (a caller of its own, the default transport)."""
    async with ChatCaller(None, **options) as caller:
        return await judge_answer(caller, endpoint, parse_retries, call)


class Judge:
    """Scores the answers of an answers folder (see the module docstring).

    Args:
        answers_dir: the folder ``collect`` wrote.
        mode: ``"absolute"``, ``"pairwise"`` or ``"reference"``.
        endpoint: the judge (:meth:`Endpoint.from_url`); not needed for ``"reference"``.
        reference_model: the model every answer is compared with in ``"pairwise"`` mode.
        concurrency: judge calls in flight.
        parse_retries: how many times a reply without a verdict is asked again.
        judgments: the judgments store (default: ``answers_dir/judgments-<mode>-<judge model>.jsonl``).
        transport: the httpx transport for the judge calls (tests inject one).
        caller_options: more :class:`ChatCaller` arguments.
        on_record: called with each judgment once it is on disk.
        engine: None (the calls run here), or a distributed :class:`finerouter.engines.Engine`: the calls run on
            its workers, at most ``concurrency`` in flight across all of them (the judge's endpoint is the key of
            the limit), through the default transport with ``caller_options`` (which must then be picklable).
    """

    def __init__(
        self,
        answers_dir: str | Path,
        *,
        mode: str = "absolute",
        endpoint: Endpoint | None = None,
        reference_model: str | None = None,
        concurrency: int = 8,
        parse_retries: int = 2,
        judgments: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        caller_options: Mapping[str, Any] | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        engine: Any = None,
    ) -> None:
        owner = "Judge"
        self.mode = check_choice(mode, "mode", owner, MODES)
        if mode != "reference" and endpoint is None:
            raise ParameterError(f"The 'endpoint' parameter of {owner} is required in {mode!r} mode (the judge LLM).")
        if mode == "pairwise" and not reference_model:
            raise ParameterError(f"The 'reference_model' parameter of {owner} is required in 'pairwise' mode.")
        self.answers_dir = Path(answers_dir)
        self.endpoint = endpoint
        self.reference_model = reference_model
        self.concurrency = check_int(concurrency, "concurrency", owner, low=1)
        self.parse_retries = check_int(parse_retries, "parse_retries", owner, low=0)
        judge_model = None if endpoint is None else endpoint.model
        self.judge_model = judge_model
        self.store = JsonlStore(judgments or self.answers_dir / judgments_file(mode, judge_model))
        self.transport = transport
        self.caller_options = dict(caller_options or {})
        self.on_record = on_record
        self.engine = engine

    def _key(self, answer: Mapping[str, Any]) -> tuple[str, str, str]:
        return (answer["prompt_key"], answer["model"], _answer_hash(answer["answer"]))

    def final_judgments(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """The judgments that need no new call (``"ok"`` and ``"unparseable"``), by (prompt, model, answer hash)."""
        if not self.store.is_open:
            self.store.open()
        out = {}
        for r in self.store.records:
            if r.get("status") in ("ok", "unparseable") and r.get("reference_model") == self.reference_model:
                out[(r["prompt_key"], r["model"], r["answer_hash"])] = r
        return out

    async def run(self) -> JudgeReport:
        """Judge every answer not judged yet; returns the counts (see :class:`JudgeReport`)."""
        t0 = time.perf_counter()
        answers = load_answers(self.answers_dir)
        report = JudgeReport(answers=len(answers))
        done = self.final_judgments()
        by_pair = {(a["prompt_key"], a["model"]): a for a in answers}
        if self.mode == "pairwise" and self.reference_model not in {a["model"] for a in answers}:
            raise DataError(
                f"{self.answers_dir}: the reference model {self.reference_model!r} has no answers; models: "
                f"{sorted({a['model'] for a in answers})}"
            )
        if self.mode == "reference":
            missing = [a for a in answers if not a.get("gold")]
            if missing:
                raise DataError(
                    f"{self.answers_dir / ANSWERS_FILE}: {len(missing)} answer(s) have no gold answer (e.g. prompt "
                    f"{missing[0]['prompt'][:60]!r}); 'reference' mode needs a 'gold' column in the prompts file"
                )
        todo: deque[dict[str, Any]] = deque()
        for a in answers:
            if self._key(a) in done:
                report.already_judged += 1
            elif self.mode == "pairwise" and (a["prompt_key"], self.reference_model) not in by_pair:
                report.missing_reference += 1
            else:
                todo.append(a)
        try:
            if self.mode == "reference":
                for a in todo:
                    await self._record(a, report, status="ok", score=reference_match(a["answer"], a["gold"]))
            elif todo and getattr(self.engine, "distributed", False):
                await self._run_on_engine(self.engine, todo, by_pair, report)
            elif todo:
                async with ChatCaller(self.transport, **self.caller_options) as caller:
                    workers = [asyncio.ensure_future(self._worker(caller, todo, by_pair, report))
                               for _ in range(min(self.concurrency, len(todo)))]
                    await asyncio.gather(*workers)
        finally:
            await self.store.aclose()
        report.unparseable = sum(1 for r in self.final_judgments().values() if r["status"] == "unparseable")
        self.store.close()
        report.seconds = time.perf_counter() - t0
        return report

    async def _record(self, answer: Mapping[str, Any], report: JudgeReport, **fields: Any) -> None:
        record = {
            "prompt_key": answer["prompt_key"], "model": answer["model"], "answer_hash": _answer_hash(answer["answer"]),
            "mode": self.mode, "judge_model": self.judge_model, "reference_model": self.reference_model,
            **fields, "time": time.time(),
        }
        await self.store.append(record)
        if record["status"] == "ok":
            report.judged += 1
        elif record["status"] == "error":
            report.failed += 1
        elif len(report.unparseable_examples) < 3:
            report.unparseable_examples.append(str(record.get("reply", ""))[:200])
        if self.on_record is not None:
            self.on_record(record)

    def _messages(self, answer: Mapping[str, Any], reference: Mapping[str, Any] | None) -> tuple[list[dict[str, str]], bool]:
        """The judge prompt, and whether the judged answer is shown as B (pairwise order)."""
        if reference is None:
            text = ABSOLUTE_TEMPLATE.format(question=answer["prompt"], answer=answer["answer"])
            swapped = False
        else:
            swapped = int(hashlib.sha256(f"{answer['prompt_key']}|{answer['model']}".encode()).hexdigest(), 16) % 2 == 1
            first, second = (reference, answer) if swapped else (answer, reference)
            text = PAIRWISE_TEMPLATE.format(question=answer["prompt"], answer_a=first["answer"], answer_b=second["answer"])
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}], swapped

    async def _worker(
        self, caller: ChatCaller, todo: deque[dict[str, Any]], by_pair: Mapping[tuple[str, str], Mapping[str, Any]],
        report: JudgeReport,
    ) -> None:
        assert self.endpoint is not None
        while todo:
            answer = todo.popleft()
            call = self._call_for(answer, by_pair)
            if call is None:
                await self._record(answer, report, status="ok", verdict="self", score=0.5)
                continue
            fields = await judge_answer(caller, self.endpoint, self.parse_retries, call)
            report.parse_retries += fields.pop("parse_retries")
            await self._record(answer, report, **fields)

    def _call_for(
        self, answer: Mapping[str, Any], by_pair: Mapping[tuple[str, str], Mapping[str, Any]]
    ) -> tuple[list[dict[str, str]], bool, bool] | None:
        """``(messages, swapped, pairwise)`` of the judge call for ``answer``; None for the reference model's own
        answer in pairwise mode (a tie with itself, no call)."""
        if self.mode == "pairwise" and answer["model"] == self.reference_model:
            return None
        reference = by_pair[(answer["prompt_key"], self.reference_model)] if self.mode == "pairwise" else None
        messages, swapped = self._messages(answer, reference)
        return messages, swapped, reference is not None

    async def _run_on_engine(
        self, engine: Any, todo: deque[dict[str, Any]], by_pair: Mapping[tuple[str, str], Mapping[str, Any]],
        report: JudgeReport,
    ) -> None:
        """The judge calls as engine calls (at most ``concurrency`` in flight across the engine's workers)."""
        assert self.endpoint is not None
        items = []
        for answer in todo:
            call = self._call_for(answer, by_pair)
            if call is None:
                await self._record(answer, report, status="ok", verdict="self", score=0.5)
            else:
                items.append((answer, call))
        fn = functools.partial(_judge_on_worker, self.endpoint, self.parse_retries, self.caller_options)
        async for i, fields in engine.run_calls(fn, [call for _, call in items], key=lambda _: self.endpoint.name,
                                                limit=self.concurrency):
            report.parse_retries += fields.pop("parse_retries")
            await self._record(items[i][0], report, **fields)

    # -- the table -----------------------------------------------------------------------------------------------
    def table(self) -> RoutingDataset:
        """The judged answers as a wide routing dataset: one row per prompt, ``score::``/``cost::`` per model.

        A pair without an answer or without a score (unparseable, not judged) is NaN. Models that got no score
        at all are left out (with a warning).

        Raises:
            DataError: fewer than two models have a score.
        """
        from finerouter.data.dataset import RoutingDataset

        answers = load_answers(self.answers_dir)
        judged = self.final_judgments()
        self.store.close()
        prompt_keys: list[str] = []
        first: dict[str, Mapping[str, Any]] = {}
        models: list[str] = []
        for a in answers:
            if a["prompt_key"] not in first:
                first[a["prompt_key"]] = a
                prompt_keys.append(a["prompt_key"])
            if a["model"] not in models:
                models.append(a["model"])
        row = {k: i for i, k in enumerate(prompt_keys)}
        scores = np.full((len(prompt_keys), len(models)), np.nan)
        costs = np.full_like(scores, np.nan)
        for a in answers:
            i, j = row[a["prompt_key"]], models.index(a["model"])
            if a.get("cost_usd") is not None:
                costs[i, j] = float(a["cost_usd"])
            verdict = judged.get(self._key(a))
            if verdict is not None and verdict["status"] == "ok":
                scores[i, j] = float(verdict["score"])
        keep = np.isfinite(scores).any(axis=0)
        if not keep.all():
            logger.warning("models without any score are left out of the table: %s",
                           [m for m, k in zip(models, keep, strict=True) if not k])
        if keep.sum() < 2:
            raise DataError(
                f"{self.answers_dir}: only {int(keep.sum())} model(s) have a score; a routing table needs at least 2"
            )
        models = [m for m, k in zip(models, keep, strict=True) if k]
        scores, costs = scores[:, keep], costs[:, keep]
        scored_rows = np.isfinite(scores).any(axis=1)
        ids = [str(first[k].get("id") or k) for k in prompt_keys]
        if len(set(ids)) != len(ids):
            ids = list(prompt_keys)
        tasks = [first[k].get("task") for k in prompt_keys]
        keep_rows = np.flatnonzero(scored_rows)
        return RoutingDataset(
            prompts=[first[prompt_keys[i]]["prompt"] for i in keep_rows],
            models=models,
            scores=scores[keep_rows],
            costs=costs[keep_rows] if np.isfinite(costs).any() else None,
            tasks=None if any(t is None for t in tasks) else [str(tasks[i]) for i in keep_rows],
            ids=[ids[i] for i in keep_rows],
            name="judged",
            source=str(self.answers_dir),
            meta={"judge_mode": self.mode, "judge_model": self.judge_model, "reference_model": self.reference_model},
        )


__all__ = [
    "ABSOLUTE_TEMPLATE", "MODES", "PAIRWISE_TEMPLATE", "Judge", "JudgeReport", "judgments_file", "load_answers",
    "judge_answer", "parse_pair_verdict", "parse_rating", "reference_match",
]
