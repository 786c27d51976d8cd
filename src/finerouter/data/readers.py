"""Read routing data from Parquet, CSV or JSONL in our layout or a peer's, validate it, and merge duplicates.

Three layouts are understood (``layout="auto"`` tells them apart from the column names):

* ``"wide"`` (ours, see ``../shared/data/README.md``): one row per prompt with ``prompt``, ``score::<model>``,
  optional ``cost::<model>``, ``task``, ``split`` and ``id``.
* ``"long"``: one row per (prompt, model) with ``prompt``, ``model``, ``score`` and optional ``cost``, ``task``,
  ``split``, ``id``. LLMRouter's routing rows (``query``, ``model_name``, ``performance``, ``cost``,
  ``task_name``) are read as the same layout. Pairs with no row are unobserved (NaN).
* ``"routerbench"``: RouterBench's wide table: ``prompt``, ``eval_name``, ``sample_id``, one score column named
  after each model and a ``<model>|total_cost`` column with its USD cost. ``<model>|model_response``,
  ``oracle_model_to_route_to`` and unnamed index columns are ignored. A prompt stored as a stringified list of
  parts (``"['part 1', 'part 2']"``) is joined with blank lines.

Rows are numbered from 0 in error messages, the header excluded (row 0 is the first data row).

Every column must have one name: a repeated header (CSV: pandas would silently rename the second ``score::X`` to
a model ``X.1``; Parquet can store repeats too), two names equal once stripped of spaces, or a key repeated within
one JSON row object (``json`` keeps the last silently) is a DataError naming the file and the column (and, for
JSON lines, the line and row).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._validation import check_choice
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import DataError, ParameterError

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "wide", "long", "routerbench")
DUPLICATE_POLICIES = ("merge", "error")

SCORE_PREFIX = "score::"
COST_PREFIX = "cost::"
ROUTERBENCH_COST_SUFFIX = "|total_cost"
# RouterBench columns that are not a model's score.
ROUTERBENCH_META = ("sample_id", "prompt", "eval_name", "oracle_model_to_route_to", "split", "id", "task")
# Long-layout column names and the peers' aliases accepted for them (first present wins).
LONG_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "query"),
    "model": ("model", "model_name"),
    "score": ("score", "performance"),
    "cost": ("cost",),
    "task": ("task", "task_name"),
    "id": ("id",),
    "split": ("split",),
}
_MISSING_TOKENS = ("", "nan", "na", "n/a", "null", "none")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pkl.gz", ".pickle.gz")
_SUFFIXES = (
    ".parquet", ".pq", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".json", *_PICKLE_SUFFIXES,
)
_SHOW = 5  # how many offending rows an error lists


# ---------------------------------------------------------------------------------------------- loading
def _suffix(path: str) -> str:
    low = path.lower()
    for suf in sorted(_SUFFIXES, key=len, reverse=True):
        if low.endswith(suf):
            return suf
    return Path(low).suffix


def _stem(path: str) -> str:
    name = Path(path).name
    suf = _suffix(path)
    return name[: -len(suf)] if suf and name.lower().endswith(suf) else Path(path).stem


class _JSONObject(dict):
    """A parsed JSON object that remembers the first key it held twice (plain ``json`` keeps the last silently)."""

    duplicate: str | None = None


def _json_object(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject()
    for key, value in pairs:
        if key in obj and obj.duplicate is None:
            obj.duplicate = key
        obj[key] = value
    return obj


def _duplicate_key(path: str, where: str, obj: Any) -> None:
    if isinstance(obj, _JSONObject) and obj.duplicate is not None:
        raise DataError(f"{path}: {where}duplicate key {obj.duplicate!r}: a row names each column once")


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    records: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line, object_pairs_hook=_json_object)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(rec).__name__}")
            _duplicate_key(path, f"line {line_no} (row {len(records)}): ", rec)
            records.append(rec)
    return records


def _read_json(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError:
        return _read_jsonl(path)  # a .json file holding JSON lines
    if isinstance(data, dict):  # {"column": [values...]} or {"records": [...]}
        _duplicate_key(path, "", data)
        if all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise DataError(f"{path}: the JSON columns have different lengths {sorted(lengths)}")
            keys = list(data)
            return [dict(zip(keys, vals, strict=True)) for vals in zip(*data.values(), strict=True)]
        raise DataError(f"{path}: expected a JSON array of objects (one per row) or JSON lines")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects (one per row), got {type(data).__name__}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: row {i}: expected a JSON object, got {type(rec).__name__}")
        _duplicate_key(path, f"row {i}: ", rec)
    return data


def _check_unique_columns(names: Sequence[Any], where: str) -> None:
    """DataError naming the first column name that appears twice (compared stripped; unnamed ones excepted)."""
    first: dict[str, int] = {}
    for i, raw in enumerate(names):
        name = str(raw).strip()
        if not name:
            continue  # an unnamed (index) column: pandas names each 'Unnamed: <i>'
        if name in first:
            raise DataError(
                f"{where}: column {name!r} appears more than once (columns {first[name]} and {i}, counting from "
                "0); give each column its own name"
            )
        first[name] = i


def _csv_header(path: str) -> list[str]:
    """The raw header row of a CSV file, as written (pandas would rename repeated names)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), [])


def load_frame(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Load a table as a pandas DataFrame, choosing the reader from the file name.

    ``.parquet``/``.pq``, ``.csv``/``.csv.gz`` (every cell read as text, then converted column by column so a
    bad value can be named), ``.jsonl``/``.jsonl.gz``/``.ndjson``, ``.json`` (an array of row objects) and,
    only with ``allow_pickle=True``, ``.pkl``/``.pickle`` (RouterBench ships one).
    """
    import pandas as pd

    where = os.fspath(path)
    suf = _suffix(where)
    if suf in _PICKLE_SUFFIXES and not allow_pickle:
        raise DataError(
            f"{where}: refusing to read a pickle file: unpickling runs arbitrary code stored in the file. "
            "If you trust its origin, pass allow_pickle=True, or convert it once to "
            "Parquet/CSV/JSONL."
        )
    if not os.path.exists(where):
        raise DataError(f"{where}: file not found")
    if os.path.isdir(where):
        raise DataError(f"{where}: is a folder; give the data file itself")
    try:
        if suf in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            _check_unique_columns(pq.read_schema(where).names, where)
            frame = pd.read_parquet(where)
        elif suf in (".csv", ".csv.gz"):
            _check_unique_columns(_csv_header(where), where)
            frame = pd.read_csv(where, dtype=str, keep_default_na=False, compression="infer", encoding="utf-8")
        elif suf in (".jsonl", ".jsonl.gz", ".ndjson"):
            frame = pd.DataFrame.from_records(_read_jsonl(where))
        elif suf == ".json":
            frame = pd.DataFrame.from_records(_read_json(where))
        elif suf in _PICKLE_SUFFIXES:
            frame = pd.read_pickle(where)
            if not isinstance(frame, pd.DataFrame):
                raise DataError(f"{where}: the pickle holds a {type(frame).__name__}, not a DataFrame")
        else:
            raise DataError(
                f"{where}: unknown file type {suf or '(none)'!r}; use .parquet, .csv, .csv.gz, .jsonl or .json"
            )
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: the file is empty") from None
    except (OSError, ValueError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, ImportError) as exc:
        raise DataError(f"{where}: cannot read the file ({type(exc).__name__}: {exc})") from exc
    frame = frame.reset_index(drop=True)
    _check_unique_columns(list(frame.columns), where)
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no data rows")
    return frame


# ---------------------------------------------------------------------------------------------- layouts
def detect_layout(columns: Sequence[str], where: str = "<data>") -> str:
    """``"wide"``, ``"long"`` or ``"routerbench"`` from the column names; DataError when none fits.

    ``score::<model>`` columns mean wide; a model column plus a score column (``model``/``score`` or
    LLMRouter's ``model_name``/``performance``) mean long; ``eval_name`` or ``<model>|total_cost`` columns mean
    RouterBench.
    """
    cols = [str(c) for c in columns]
    if any(c.startswith(SCORE_PREFIX) for c in cols):
        return "wide"
    if _first(cols, LONG_ALIASES["model"]) and _first(cols, LONG_ALIASES["score"]):
        return "long"
    if "eval_name" in cols or any(c.endswith(ROUTERBENCH_COST_SUFFIX) for c in cols):
        return "routerbench"
    raise DataError(
        f"{where}: cannot tell the data layout from its columns {cols[:20]}{' ...' if len(cols) > 20 else ''}. "
        "Expected 'prompt' plus 'score::<model>' columns (wide), 'prompt'/'model'/'score' columns (long; "
        "LLMRouter's 'query'/'model_name'/'performance' also work), or RouterBench's 'prompt'/'eval_name'/"
        "'<model>'/'<model>|total_cost' columns."
    )


def _first(cols: Sequence[str], names: Sequence[str]) -> str | None:
    for n in names:
        if n in cols:
            return n
    return None


@dataclass
class _Cells:
    """A parsed table before validation and merging.

    ``prompts``/``tasks``/``ids``/``split`` hold one entry per source row; each score is a cell
    ``(row[k], model[k], score[k], cost[k])``. Wide tables have ``n_rows * n_models`` cells, long ones one cell
    per row.
    """

    where: str
    layout: str
    prompts: list[str]
    models: list[str]
    row: np.ndarray
    model: np.ndarray
    score: np.ndarray
    cost: np.ndarray | None
    score_label: list[str]  # per model, the quoted column named in errors
    cost_label: list[str]
    tasks: list[str] | None = None
    ids: list[str] | None = None
    id_column: str = "id"
    split: list[str] | None = None
    cell_per_row: bool = False  # long layout: a duplicate is a repeated (prompt, model) row
    meta: dict[str, Any] = field(default_factory=dict)


def _missing_mask(series: Any) -> np.ndarray:
    text = series.astype(object).where(series.notna(), "").astype(str).str.strip().str.lower()
    return (series.isna() | text.isin(_MISSING_TOKENS)).to_numpy(dtype=bool)


def _numbers(series: Any, column: str, where: str, what: str = "value") -> np.ndarray:
    """``(n,)`` float64 from a column; missing cells become NaN, anything else non-numeric is a DataError."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(np.float64).to_numpy()
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        missing = _missing_mask(series)
        coerced = pd.to_numeric(series.astype(object).where(~missing, None), errors="coerce")
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(values) & ~missing
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(f"row {r}: {series.iloc[r]!r}" for r in rows[:_SHOW])
            raise DataError(
                f"{where}: column {column!r}: {len(rows)} {what}(s) are not numbers ({shown}"
                f"{', ...' if len(rows) > _SHOW else ''})"
            )
    inf = np.isinf(values)
    if inf.any():
        r = int(np.flatnonzero(inf)[0])
        raise DataError(f"{where}: column {column!r}, row {r}: {what} {float(values[r])!r} is not a finite number")
    return values


def _texts(series: Any, column: str, where: str, *, required: bool, what: str) -> list[str]:
    """Strings from a column; missing or blank cells raise when ``required`` (else become ``""``)."""
    values = series.astype(object).tolist()
    out: list[str] = []
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        text = "" if missing else str(v)
        if required and not text.strip():
            raise DataError(f"{where}: column {column!r}, row {i}: {'missing' if missing else 'empty'} {what}")
        out.append(text)
    return out


def _optional_labels(frame: Any, column: str | None, where: str, what: str) -> list[str] | None:
    if column is None or column not in frame.columns:
        return None
    labels = _texts(frame[column], column, where, required=False, what=what)
    blank = sum(1 for t in labels if not t.strip())
    if blank and what == "task":
        logger.info("%s: %d row(s) have no %r label; they are labelled 'unknown'", where, blank, column)
        labels = [t if t.strip() else "unknown" for t in labels]
    return labels


def _prompt_column(frame: Any, where: str, names: Sequence[str] = ("prompt",)) -> str:
    col = _first(list(frame.columns), names)
    if col is None:
        wanted = " or ".join(repr(n) for n in names)
        raise DataError(f"{where}: no prompt column: expected {wanted}; found columns {list(frame.columns)[:20]}")
    return col


def _check_model_count(models: Sequence[str], where: str, hint: str) -> None:
    if len(models) < 2:
        raise DataError(f"{where}: routing needs at least 2 models, found {len(models)} {list(models)} ({hint})")


def _wide_cells(
    frame: Any, where: str, prompts: list[str], score_cols: list[str], cost_cols: list[str | None],
    models: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    n, m = len(prompts), len(models)
    score = np.column_stack([_numbers(frame[c], c, where, "score") for c in score_cols])
    cost = None
    if any(c is not None for c in cost_cols):
        cost = np.column_stack(
            [_numbers(frame[c], c, where, "cost") if c is not None else np.full(n, np.nan) for c in cost_cols]
        )
    row = np.repeat(np.arange(n, dtype=np.int64), m)
    model = np.tile(np.arange(m, dtype=np.int64), n)
    return row, model, score.reshape(-1), None if cost is None else cost.reshape(-1)


def _parse_wide(frame: Any, where: str) -> _Cells:
    cols = list(frame.columns)
    pcol = _prompt_column(frame, where)
    prompts = _texts(frame[pcol], pcol, where, required=True, what="prompt")
    score_cols = [c for c in cols if c.startswith(SCORE_PREFIX)]
    models = [c[len(SCORE_PREFIX):].strip() for c in score_cols]
    for c, mname in zip(score_cols, models, strict=True):
        if not mname:
            raise DataError(f"{where}: column {c!r}: empty model name after 'score::'")
    if len(set(models)) != len(models):
        dup = sorted({x for x in models if models.count(x) > 1})
        raise DataError(f"{where}: duplicate score columns for model(s) {dup}")
    _check_model_count(models, where, "one 'score::<model>' column per model")
    cost_of = {c[len(COST_PREFIX):].strip(): c for c in cols if c.startswith(COST_PREFIX)}
    unknown = [c for mname, c in cost_of.items() if mname not in models]
    if unknown:
        raise DataError(f"{where}: cost column(s) {unknown} have no matching 'score::<model>' column")
    cost_cols = [cost_of.get(mname) for mname in models]
    row, model, score, cost = _wide_cells(frame, where, prompts, score_cols, cost_cols, models)
    known = {pcol, "task", "id", "split", *score_cols, *cost_of.values()}
    ignored = [c for c in cols if c not in known]
    if ignored:
        logger.debug("%s: ignoring column(s) %s", where, ignored)
    return _Cells(
        where=where, layout="wide", prompts=prompts, models=models, row=row, model=model, score=score, cost=cost,
        score_label=[repr(c) for c in score_cols],
        cost_label=[repr(c or f"cost::{mname}") for c, mname in zip(cost_cols, models, strict=True)],
        tasks=_optional_labels(frame, "task", where, "task"),
        ids=_optional_labels(frame, "id", where, "id"),
        split=_optional_labels(frame, "split", where, "split"),
    )


def _join_prompt_parts(text: str) -> str:
    """RouterBench stores a prompt as ``str(list_of_parts)``; join the parts with blank lines."""
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        return text
    try:
        parts = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(parts, (list, tuple)) and parts and all(isinstance(p, str) for p in parts):
        return "\n\n".join(parts)
    return text


def _parse_routerbench(frame: Any, where: str) -> _Cells:
    cols = list(frame.columns)
    pcol = _prompt_column(frame, where)
    raw = frame[pcol].astype(object).tolist()
    joined = [
        "\n\n".join(str(p) for p in v) if isinstance(v, (list, tuple)) else v for v in raw
    ]
    import pandas as pd

    prompts = _texts(pd.Series(joined, dtype=object), pcol, where, required=True, what="prompt")
    prompts = [_join_prompt_parts(p) for p in prompts]
    for i, p in enumerate(prompts):
        if not p.strip():
            raise DataError(f"{where}: column {pcol!r}, row {i}: empty prompt")

    def is_model(c: str) -> bool:
        return bool(c) and c not in ROUTERBENCH_META and "|" not in c and not c.startswith("Unnamed:")

    models = [c for c in cols if is_model(c)]
    _check_model_count(models, where, "RouterBench layout: one score column named after each model")
    cost_of = {c[: -len(ROUTERBENCH_COST_SUFFIX)]: c for c in cols if c.endswith(ROUTERBENCH_COST_SUFFIX)}
    unknown = [c for mname, c in cost_of.items() if mname not in models]
    if unknown:
        raise DataError(f"{where}: cost column(s) {unknown} have no matching model score column")
    cost_cols = [cost_of.get(mname) for mname in models]
    row, model, score, cost = _wide_cells(frame, where, prompts, models, cost_cols, models)
    task_col = _first(cols, ("eval_name", "task"))
    id_col = _first(cols, ("sample_id", "id"))
    return _Cells(
        where=where, layout="routerbench", prompts=prompts, models=models, row=row, model=model, score=score,
        cost=cost, score_label=[repr(c) for c in models],
        cost_label=[repr(c or f"{mname}{ROUTERBENCH_COST_SUFFIX}") for c, mname in zip(cost_cols, models, strict=True)],
        tasks=_optional_labels(frame, task_col, where, "task"),
        ids=_optional_labels(frame, id_col, where, "id"),
        id_column=id_col or "sample_id",
        split=_optional_labels(frame, "split", where, "split"),
    )


def _parse_long(frame: Any, where: str) -> _Cells:
    cols = list(frame.columns)
    names = {k: _first(cols, v) for k, v in LONG_ALIASES.items()}
    pcol = _prompt_column(frame, where, LONG_ALIASES["prompt"])
    for key in ("model", "score"):
        if names[key] is None:
            wanted = " or ".join(repr(n) for n in LONG_ALIASES[key])
            raise DataError(f"{where}: long layout needs a {wanted} column; found columns {cols[:20]}")
    mcol, scol, ccol = names["model"], names["score"], names["cost"]
    assert mcol is not None and scol is not None
    prompts = _texts(frame[pcol], pcol, where, required=True, what="prompt")
    model_names = [t.strip() for t in _texts(frame[mcol], mcol, where, required=True, what="model name")]
    models = list(dict.fromkeys(model_names))
    _check_model_count(models, where, f"long layout: distinct values of {mcol!r}")
    index = {mname: j for j, mname in enumerate(models)}
    n = len(prompts)
    return _Cells(
        where=where, layout="long", prompts=prompts, models=models,
        row=np.arange(n, dtype=np.int64),
        model=np.array([index[x] for x in model_names], dtype=np.int64),
        score=_numbers(frame[scol], scol, where, "score"),
        cost=None if ccol is None else _numbers(frame[ccol], ccol, where, "cost"),
        score_label=[f"{scol!r} (model {mname!r})" for mname in models],
        cost_label=[f"{ccol!r} (model {mname!r})" for mname in models],
        tasks=_optional_labels(frame, names["task"], where, "task"),
        ids=_optional_labels(frame, names["id"], where, "id"),
        split=_optional_labels(frame, names["split"], where, "split"),
        cell_per_row=True,
    )


_PARSERS = {"wide": _parse_wide, "long": _parse_long, "routerbench": _parse_routerbench}


# ---------------------------------------------------------------------------------------------- checks
def _check_scores(cells: _Cells, rescale: bool) -> dict[str, list[float]] | None:
    """Validate score range and coverage; with ``rescale`` min-max each model to [0, 1] (before merging)."""
    where, s = cells.where, cells.score
    m = len(cells.models)
    finite = np.isfinite(s)
    observed = np.bincount(cells.model[finite], minlength=m)
    if (observed == 0).any():
        j = int(np.flatnonzero(observed == 0)[0])
        raise DataError(
            f"{where}: column {cells.score_label[j]}: model {cells.models[j]!r} has no scores "
            "(every value is missing)"
        )
    if not rescale:
        out = finite & ((s < 0.0) | (s > 1.0))
        if out.any():
            k = int(np.flatnonzero(out)[0])
            raise DataError(
                f"{where}: column {cells.score_label[int(cells.model[k])]}, row {int(cells.row[k])}: "
                f"score {float(s[k])!r} is outside [0, 1] ({int(out.sum())} such value(s)); pass rescale=True "
                "(CLI: --rescale) to min-max rescale each model's scores to [0, 1]"
            )
        return None
    ranges: dict[str, list[float]] = {}
    new = s.copy()
    for j, mname in enumerate(cells.models):
        sel = (cells.model == j) & finite
        lo, hi = float(s[sel].min()), float(s[sel].max())
        ranges[mname] = [lo, hi]
        if hi > lo:
            new[sel] = (s[sel] - lo) / (hi - lo)
        else:
            logger.warning("%s: model %r has one constant score %g; rescaled to 0.5", where, mname, lo)
            new[sel] = 0.5
    cells.score = new
    logger.info("%s: rescaled every model's scores to [0, 1] by its own min and max", where)
    return ranges


def _check_costs(cells: _Cells) -> None:
    if cells.cost is None:
        return
    neg = np.isfinite(cells.cost) & (cells.cost < 0)
    if neg.any():
        k = int(np.flatnonzero(neg)[0])
        raise DataError(
            f"{cells.where}: column {cells.cost_label[int(cells.model[k])]}, row {int(cells.row[k])}: "
            f"negative cost {float(cells.cost[k])!r}"
        )


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def _check_ids(cells: _Cells, group: np.ndarray) -> None:
    """An id must name one prompt; RouterBench's ``sample_id`` repeats are renamed ``<id>#2``, ``<id>#3``..."""
    if cells.ids is None:
        return
    where, col = cells.where, cells.id_column
    owner: dict[str, int] = {}
    first_row: dict[str, int] = {}
    renamed = 0
    for i, x in enumerate(cells.ids):
        if not x.strip():
            raise DataError(
                f"{where}: column {col!r}, row {i}: missing id (fill it in, or drop the column to number rows)"
            )
        g = int(group[i])
        if x not in owner:
            owner[x], first_row[x] = g, i
            continue
        if owner[x] == g:
            continue
        if cells.layout != "routerbench":
            raise DataError(
                f"{where}: column {col!r}, row {i}: id {x!r} is already used by row {first_row[x]} for a "
                "different prompt"
            )
        k = 2
        while f"{x}#{k}" in owner and owner[f"{x}#{k}"] != g:
            k += 1
        new = f"{x}#{k}"
        owner.setdefault(new, g)
        first_row.setdefault(new, i)
        cells.ids[i] = new
        renamed += 1
    if renamed:
        logger.info("%s: %d repeated %r value(s) on different prompts were suffixed '#k'", where, renamed, col)


def _duplicate_error(cells: _Cells, group: np.ndarray, n_groups: int) -> None:
    where = cells.where
    if cells.cell_per_row:
        key = group[cells.row] * len(cells.models) + cells.model
        uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
        if (counts == 1).all():
            return
        dup_keys = uniq[counts > 1][np.argsort(first[counts > 1])]
        lines = []
        for kk in dup_keys[:_SHOW]:
            rows = np.flatnonzero(key == kk).tolist()
            mname = cells.models[int(kk % len(cells.models))]
            lines.append(f"rows {rows} (model {mname!r}, prompt {_preview(cells.prompts[rows[0]])})")
        raise DataError(
            f"{where}: {int((counts - 1).sum())} duplicate (prompt, model) row(s): "
            + "; ".join(lines)
            + ("; ..." if len(dup_keys) > _SHOW else "")
            + ". Pass duplicates='merge' to average them."
        )
    if n_groups == len(cells.prompts):
        return
    counts = np.bincount(group, minlength=n_groups)
    lines = []
    for g in np.flatnonzero(counts > 1)[:_SHOW]:
        rows = np.flatnonzero(group == g).tolist()
        lines.append(f"rows {rows} ({_preview(cells.prompts[rows[0]])})")
    raise DataError(
        f"{where}: {len(cells.prompts) - n_groups} row(s) repeat an earlier prompt: "
        + "; ".join(lines)
        + ("; ..." if int((counts > 1).sum()) > _SHOW else "")
        + ". Pass duplicates='merge' to average their scores."
    )


def _mean_by_key(key: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    finite = np.isfinite(values)
    sums = np.bincount(key[finite], weights=values[finite], minlength=size)
    counts = np.bincount(key[finite], minlength=size)
    out = np.full(size, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


# ---------------------------------------------------------------------------------------------- entry point
def read_routing_data(
    path: str | os.PathLike[str],
    *,
    layout: str = "auto",
    prices: Any = None,
    rescale: bool = False,
    allow_pickle: bool = False,
    duplicates: str = "merge",
    name: str | None = None,
) -> RoutingDataset:
    """Read routing data (Parquet, CSV, CSV.GZ or JSONL) into a validated :class:`RoutingDataset`.

    Args:
        path: the data file.
        layout: ``"auto"`` (detect from the columns), ``"wide"``, ``"long"`` or ``"routerbench"``.
        prices: a prices CSV path or :class:`finerouter.data.prices.Prices`; fills the cost of every
            (prompt, model) pair the data has no cost for (see :meth:`Prices.estimate_costs`).
        rescale: min-max rescale each model's scores to [0, 1] by that model's own min and max (a model with a
            single constant score gets 0.5); without it a score outside [0, 1] is an error.
        allow_pickle: allow reading ``.pkl`` files (RouterBench's); unpickling runs code from the file.
        duplicates: rows with the same prompt text (long layout: the same prompt and model) are averaged
            per model, ignoring NaN, with costs averaged too and the first task/id/split kept (``"merge"``),
            or rejected (``"error"``). The number of merged rows is ``meta["merged_duplicates"]``.
        name: dataset name (default: the file name without its extension).

    Returns:
        The dataset; ``meta`` holds ``layout``, ``rows_read``, ``merged_duplicates``, ``split`` (the source's own
        split per prompt, when present; never use it for routing), ``cost_source`` (``"data"``, ``"prices"``,
        ``"data+prices"`` or ``None``) and ``rescaled`` (per model ``[min, max]``, when ``rescale=True``).

    Raises:
        DataError: the file cannot be read, or its content is invalid; the message names the file and, where
            there is one, the column and row (rows count from 0, header excluded).
    """
    owner = "read_routing_data"
    check_choice(layout, "layout", owner, LAYOUTS)
    check_choice(duplicates, "duplicates", owner, DUPLICATE_POLICIES)
    for pname, value in (("rescale", rescale), ("allow_pickle", allow_pickle)):
        if not isinstance(value, (bool, np.bool_)):
            raise ParameterError(f"The {pname!r} parameter of {owner} must be a bool. Got {value!r}.")
    where = os.fspath(path)
    frame = load_frame(where, allow_pickle=allow_pickle)
    chosen = detect_layout(list(frame.columns), where) if layout == "auto" else layout
    cells = _PARSERS[chosen](frame, where)
    rows_read = len(cells.prompts)

    ranges = _check_scores(cells, bool(rescale))
    _check_costs(cells)

    import pandas as pd

    group, uniques = pd.factorize(pd.Series(cells.prompts, dtype=object))
    group = np.asarray(group, dtype=np.int64)
    n_groups = len(uniques)
    _check_ids(cells, group)
    if duplicates == "error":
        _duplicate_error(cells, group, n_groups)

    m = len(cells.models)
    key = group[cells.row] * m + cells.model
    size = n_groups * m
    scores = _mean_by_key(key, cells.score, size).reshape(n_groups, m)
    costs = None if cells.cost is None else _mean_by_key(key, cells.cost, size).reshape(n_groups, m)
    if cells.cell_per_row:
        merged = len(cells.row) - len(np.unique(key))
    else:
        merged = rows_read - n_groups
    first = np.full(n_groups, rows_read, dtype=np.int64)
    np.minimum.at(first, group, np.arange(rows_read, dtype=np.int64))

    def firsts(values: list[str] | None) -> list[str] | None:
        return None if values is None else [values[i] for i in first]

    if merged:
        what = "(prompt, model) rows" if cells.cell_per_row else "rows with a repeated prompt"
        logger.info("%s: merged %d %s (scores and costs averaged per model)", where, merged, what)
        if cells.tasks is not None and not cells.cell_per_row:
            first_task = [cells.tasks[i] for i in first]
            clash = sum(1 for i, g in enumerate(group) if cells.tasks[i] != first_task[g])
            if clash:
                logger.info("%s: %d merged row(s) had another task label; the first row's label is kept", where, clash)

    meta: dict[str, Any] = {"layout": chosen, "rows_read": rows_read, "merged_duplicates": int(merged)}
    split = firsts(cells.split)
    if split is not None:
        meta["split"] = split
    if ranges is not None:
        meta["rescaled"] = ranges
    meta["cost_source"] = None if costs is None else "data"

    prompts = [str(p) for p in uniques]
    if prices is not None:
        costs = _apply_prices(prices, prompts, cells.models, costs, where, meta)

    return RoutingDataset(
        prompts=prompts,
        models=list(cells.models),
        scores=scores,
        costs=costs,
        tasks=firsts(cells.tasks),
        ids=firsts(cells.ids),
        name=name if name is not None else _stem(where),
        source=where,
        meta=meta,
    )


def _apply_prices(
    prices: Any, prompts: list[str], models: list[str], costs: np.ndarray | None, where: str, meta: dict[str, Any]
) -> np.ndarray | None:
    from finerouter.data.prices import Prices

    if isinstance(prices, (str, os.PathLike)):
        prices = Prices.read(prices)
    if not isinstance(prices, Prices):
        raise ParameterError(
            f"The 'prices' parameter of read_routing_data must be a path or a Prices. Got {type(prices).__name__}."
        )
    unpriced = prices.missing(models)
    if len(unpriced) == len(models):
        logger.warning("%s: none of the models has a price in %s; costs unchanged", where, prices.source)
        return costs
    if unpriced:
        logger.warning("%s: no price for model(s) %s in %s; their cost stays unknown", where, unpriced, prices.source)
    estimate = prices.estimate_costs(prompts, models)
    if costs is None:
        meta["cost_source"] = "prices"
        return estimate
    fill = ~np.isfinite(costs) & np.isfinite(estimate)
    if fill.any():
        costs = costs.copy()
        costs[fill] = estimate[fill]
        meta["cost_source"] = "data+prices"
        logger.info("%s: %d missing cost(s) estimated from %s", where, int(fill.sum()), prices.source)
    return costs


__all__ = ["DUPLICATE_POLICIES", "LAYOUTS", "detect_layout", "load_frame", "read_routing_data"]
