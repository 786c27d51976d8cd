"""`TaskCatalog`: the discovered task types, their candidate models and stage-1 score priors.

Saved as two files in a folder, never pickle, each written atomically:

- ``catalog.json``: model names, per task ``id``, ``size``, ``candidates``, ``median_scores``, ``description``,
  ``fused_ranking``, ``examples``, ``coverage``; the ``others`` entry; the discovery parameters and stats; the
  SHA-256 of the arrays file (checked on load).
- ``catalog.safetensors``: ``centers (T, d) float32``, ``members`` (all tasks' member row indices, int64,
  concatenated) with ``member_offsets (T+1,)``, and ``others_members``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._io import atomic_write_json, load_arrays, save_arrays, sha256_file
from finerouter._version import __version__
from finerouter.errors import ArtifactError

logger = logging.getLogger(__name__)

FORMAT = "finerouter.task_catalog"
FORMAT_VERSION = 1
JSON_NAME = "catalog.json"
ARRAYS_NAME = "catalog.safetensors"


def one_line(text: str, max_chars: int = 160) -> str:
    """``text`` with all whitespace runs collapsed to one space, cut to ``max_chars`` with an ellipsis."""
    s = re.sub(r"\s+", " ", str(text)).strip()
    if len(s) > max_chars:
        s = s[: max_chars - 1].rstrip() + "…"
    return s


@dataclass(eq=False)
class Task:
    """One discovered task type.

    Attributes:
        id: ``0..T-1`` (tasks are numbered by decreasing size).
        size: number of training prompts in the task.
        members: ``(size,)`` int64 training row indices.
        center: ``(d,)`` float32 median-pooled, L2-normalised embedding of the members.
        fused_ranking: all model names, best first by mean reciprocal rank over the members.
        candidates: the adaptive candidate set (a prefix of ``fused_ranking``).
        median_scores: model name -> median observed score over the members (the stage-1 prior).
        examples: a few member prompts closest to the centre.
        description: one line saying what the task is.
        coverage: share of members whose rank-1 model is among the candidates.
    """

    id: int
    size: int
    members: np.ndarray
    center: np.ndarray
    fused_ranking: list[str]
    candidates: list[str]
    median_scores: dict[str, float]
    examples: list[str] = field(default_factory=list)
    description: str = ""
    coverage: float = float("nan")


@dataclass(eq=False)
class OthersGroup:
    """Prompts in no task ("Others").

    Attributes:
        size: number of such training prompts.
        members: ``(size,)`` int64 training row indices.
        median_scores: model name -> median score over these prompts, or over all prompts when there are none.
    """

    size: int
    members: np.ndarray
    median_scores: dict[str, float]


def _float_or_none(x: float) -> float | None:
    """``x`` as a float, None for NaN (strict JSON has no NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def _scores_to_json(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: _float_or_none(v) for k, v in scores.items()}


def _scores_from_json(raw: Any, models: Sequence[str], where: str) -> dict[str, float]:
    if not isinstance(raw, dict) or set(raw) != set(models):
        raise ArtifactError(f"{where}: 'median_scores' must map every model name to a number")
    out: dict[str, float] = {}
    for m in models:
        v = raw[m]
        if v is None:
            out[m] = float("nan")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[m] = float(v)
        else:
            raise ArtifactError(f"{where}: median score of {m!r} is not a number: {v!r}")
    return out


class TaskCatalog:
    """The task types found by :class:`finerouter.discovery.TaskDiscovery`.

    Attributes:
        model_names: the ``m`` models, in the column order of every matrix below.
        tasks: the tasks, ``tasks[i].id == i``.
        others: the "Others" group.
        dim: embedding width ``d``.
        n_prompts: number of training prompts the catalog was built from.
        info: discovery parameters and statistics (JSON-serialisable).
    """

    def __init__(
        self,
        model_names: Sequence[str],
        tasks: Sequence[Task],
        others: OthersGroup,
        *,
        dim: int,
        n_prompts: int,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.model_names = [str(m) for m in model_names]
        self.tasks = list(tasks)
        self.others = others
        self.dim = int(dim)
        self.n_prompts = int(n_prompts)
        self.info = dict(info or {})
        for i, t in enumerate(self.tasks):
            if t.id != i:
                raise ArtifactError(f"task ids must be 0..T-1 in order; position {i} holds task {t.id}")

    def __repr__(self) -> str:
        return (
            f"TaskCatalog(n_tasks={self.n_tasks}, models={len(self.model_names)}, "
            f"prompts={self.n_prompts}, others={self.others.size})"
        )

    # ------------------------------------------------------------------ views
    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def share_in_tasks(self) -> float:
        """Share of training prompts that belong to a task (not Others)."""
        return 0.0 if self.n_prompts == 0 else 1.0 - self.others.size / self.n_prompts

    @property
    def mean_candidates(self) -> float:
        """Mean number of candidate models per task (NaN with no task)."""
        return float(np.mean([len(t.candidates) for t in self.tasks])) if self.tasks else float("nan")

    def centers(self) -> np.ndarray:
        """``(T, d)`` float32 task centres."""
        if not self.tasks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([np.asarray(t.center, dtype=np.float32) for t in self.tasks])

    def median_matrix(self) -> np.ndarray:
        """``(T+1, m)`` float64 median score of each model per task; row ``T`` is Others."""
        rows = [t.median_scores for t in self.tasks] + [self.others.median_scores]
        return np.array([[r[m] for m in self.model_names] for r in rows], dtype=np.float64)

    def candidate_mask(self) -> np.ndarray:
        """``(T, m)`` bool: ``mask[t, j]`` is True iff model ``j`` is a candidate of task ``t``."""
        mask = np.zeros((self.n_tasks, len(self.model_names)), dtype=bool)
        index = {m: j for j, m in enumerate(self.model_names)}
        for t in self.tasks:
            mask[t.id, [index[c] for c in t.candidates]] = True
        return mask

    def labels(self) -> np.ndarray:
        """``(n_prompts,)`` int64 task of every training prompt (-1 = Others)."""
        out = np.full(self.n_prompts, -1, dtype=np.int64)
        for t in self.tasks:
            out[t.members] = t.id
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """The JSON part of the catalog (member indices and centres live in the arrays file)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "finerouter_version": __version__,
            "model_names": list(self.model_names),
            "dim": self.dim,
            "n_prompts": self.n_prompts,
            "n_tasks": self.n_tasks,
            "share_in_tasks": self.share_in_tasks,
            "mean_candidates": _float_or_none(self.mean_candidates),
            "tasks": [
                {
                    "id": t.id,
                    "size": int(t.size),
                    "description": t.description,
                    "candidates": list(t.candidates),
                    "coverage": _float_or_none(t.coverage),
                    "fused_ranking": list(t.fused_ranking),
                    "median_scores": _scores_to_json(t.median_scores),
                    "examples": list(t.examples),
                }
                for t in self.tasks
            ],
            "others": {"size": int(self.others.size), "median_scores": _scores_to_json(self.others.median_scores)},
            "info": self.info,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``catalog.safetensors`` then ``catalog.json`` (with the arrays' SHA-256) into folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        sizes = np.array([t.members.size for t in self.tasks], dtype=np.int64)
        offsets = np.zeros(self.n_tasks + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        members = (
            np.concatenate([np.asarray(t.members, dtype=np.int64) for t in self.tasks])
            if self.tasks
            else np.zeros(0, dtype=np.int64)
        )
        arrays = {
            "centers": self.centers(),
            "members": members,
            "member_offsets": offsets,
            "others_members": np.asarray(self.others.members, dtype=np.int64),
        }
        save_arrays(folder / ARRAYS_NAME, arrays)
        doc = self.to_dict()
        doc["arrays"] = {"file": ARRAYS_NAME, "sha256": sha256_file(folder / ARRAYS_NAME)}
        atomic_write_json(folder / JSON_NAME, doc)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TaskCatalog:
        """Read a catalog folder written by :meth:`save`; raises ArtifactError if it is missing or altered."""
        folder = Path(path)
        json_path, arrays_path = folder / JSON_NAME, folder / ARRAYS_NAME
        for p in (json_path, arrays_path):
            if not p.is_file():
                raise ArtifactError(f"{p}: missing task catalog file")
        try:
            doc = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{json_path}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ArtifactError(f"{json_path}: not a FineRouter task catalog (format {doc.get('format')!r})")
        if int(doc.get("format_version", -1)) > FORMAT_VERSION:
            raise ArtifactError(
                f"{json_path}: catalog format {doc.get('format_version')} is newer than this FineRouter reads "
                f"({FORMAT_VERSION}); upgrade finerouter"
            )
        if doc.get("finerouter_version") != __version__:
            logger.warning(
                "%s was written by finerouter %s; this is %s", json_path, doc.get("finerouter_version"), __version__
            )
        expected = (doc.get("arrays") or {}).get("sha256")
        actual = sha256_file(arrays_path)
        if expected != actual:
            raise ArtifactError(
                f"{arrays_path}: SHA-256 {actual[:12]}… does not match catalog.json ({str(expected)[:12]}…)"
            )
        try:
            arrays = load_arrays(arrays_path)
            models = [str(m) for m in doc["model_names"]]
            dim = int(doc["dim"])
            n_prompts = int(doc["n_prompts"])
            raw_tasks = doc["tasks"]
            raw_others = doc["others"]
            centers = arrays["centers"]
            members = arrays["members"]
            offsets = arrays["member_offsets"]
            others_members = arrays["others_members"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{folder}: task catalog is missing a field ({exc})") from exc
        t = len(raw_tasks)
        if centers.shape != (t, dim) or offsets.shape != (t + 1,) or int(offsets[-1]) != members.size:
            raise ArtifactError(
                f"{arrays_path}: arrays do not match catalog.json ({t} tasks, dim {dim}; centers {centers.shape}, "
                f"offsets {offsets.shape}, members {members.shape})"
            )
        tasks: list[Task] = []
        for i, raw_task in enumerate(raw_tasks):
            where = f"{json_path}: tasks[{i}]"
            try:
                mem = members[offsets[i] : offsets[i + 1]].astype(np.int64)
                if int(raw_task["size"]) != mem.size or int(raw_task["id"]) != i:
                    raise ArtifactError(f"{where}: id/size do not match the arrays file")
                cand = [str(c) for c in raw_task["candidates"]]
                ranking = [str(c) for c in raw_task["fused_ranking"]]
                if sorted(ranking) != sorted(models) or not set(cand) <= set(models):
                    raise ArtifactError(f"{where}: candidates or fused_ranking name unknown models")
                cov = raw_task.get("coverage")
                tasks.append(
                    Task(
                        id=i,
                        size=int(raw_task["size"]),
                        members=mem,
                        center=centers[i].astype(np.float32),
                        fused_ranking=ranking,
                        candidates=cand,
                        median_scores=_scores_from_json(raw_task["median_scores"], models, where),
                        examples=[str(e) for e in raw_task.get("examples", [])],
                        description=str(raw_task.get("description", "")),
                        coverage=float("nan") if cov is None else float(cov),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ArtifactError(f"{where}: malformed task entry ({exc})") from exc
        try:
            others = OthersGroup(
                size=int(raw_others["size"]),
                members=others_members.astype(np.int64),
                median_scores=_scores_from_json(raw_others["median_scores"], models, f"{json_path}: others"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{json_path}: malformed 'others' entry ({exc})") from exc
        if others.size != others.members.size:
            raise ArtifactError(f"{json_path}: others size {others.size} != {others.members.size} members in arrays")
        return cls(models, tasks, others, dim=dim, n_prompts=n_prompts, info=doc.get("info") or {})

    # ------------------------------------------------------------------ report
    def to_markdown(self, max_examples: int = 3) -> str:
        """Readable task cards (``tasks.md``): what each task is, examples, which models win it."""
        m = len(self.model_names)
        lines = [
            "# Discovered tasks",
            "",
            f"{self.n_tasks} tasks over {self.n_prompts} training prompts; "
            f"{self.share_in_tasks:.1%} are in a task, {self.others.size} in Others. "
            + (
                f"Mean candidates per task: {self.mean_candidates:.2f} of {m} models."
                if self.tasks
                else f"{m} models."
            ),
            "",
        ]
        for t in self.tasks:
            lines += [
                f"## Task {t.id}: {_escape_markdown(one_line(t.description, 120)) or '(no description)'}",
                "",
                f"- **Prompts:** {t.size} ({t.size / max(self.n_prompts, 1):.1%} of training)",
                (
                    f"- **Candidates** ({len(t.candidates)} of {m}, covering {t.coverage:.0%} of the task's "
                    f"best models): {', '.join(f'`{c}`' for c in t.candidates)}"
                ),
                f"- **Fused ranking:** {' > '.join(f'`{c}`' for c in t.fused_ranking)}",
                "",
            ]
            if t.examples:
                lines.append("**Examples**")
                lines.append("")
                for ex in t.examples[:max_examples]:
                    lines.append(f"> {_escape_markdown(one_line(ex, 200))}")
                    lines.append(">")
                lines.pop()
                lines.append("")
            lines += _score_table(t.median_scores, t.fused_ranking, set(t.candidates))
        lines += [
            "## Others",
            "",
            f"{self.others.size} prompts in no task"
            + (" (empty: its scores are the medians over all prompts)." if self.others.size == 0 else "."),
            "",
        ]
        order = sorted(self.model_names, key=lambda k: -np.nan_to_num(self.others.median_scores[k], nan=-1.0))
        lines += _score_table(self.others.median_scores, order, set())
        return "\n".join(lines).rstrip() + "\n"


def _escape_markdown(s: str) -> str:
    """``s`` safe inside a Markdown table cell or quote (pipes and angle brackets escaped)."""
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _score_table(scores: dict[str, float], order: Sequence[str], candidates: set[str]) -> list[str]:
    """Markdown lines of a model / median score / candidate table, models in ``order``."""
    out = ["| model | median score | candidate |", "|---|---:|:---:|"]
    for name in order:
        v = scores[name]
        shown = "n/a" if math.isnan(v) else f"{v:.3f}"
        out.append(f"| `{name}` | {shown} | {'yes' if name in candidates else ''} |")
    out.append("")
    return out
