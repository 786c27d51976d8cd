"""read_routing_data: every layout and file type, duplicates, prices, and one test per error."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest

from finerouter.data import Prices, RoutingDataset, read_routing_data
from finerouter.data.layouts import (
    BUILTIN_LAYOUTS,
    Layout,
    ParsedTable,
    get_layout,
    layout_names,
    register_layout,
    unregister_layout,
)
from finerouter.data.layouts.columns import column_texts
from finerouter.data.readers import detect_layout
from finerouter.errors import DataError, ParameterError

NAN = math.nan


def _save(frame: pd.DataFrame, path) -> None:
    name = str(path)
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    elif name.endswith(".csv.gz"):
        frame.to_csv(path, index=False, compression="gzip")
    elif name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".jsonl.gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(frame.to_json(orient="records", lines=True))
    elif name.endswith(".jsonl"):
        path.write_text(frame.to_json(orient="records", lines=True), encoding="utf-8")
    else:  # pragma: no cover - test helper misuse
        raise AssertionError(name)


def _wide(**extra) -> pd.DataFrame:
    cols = {
        "id": ["q0", "q1", "q2"],
        "prompt": ["What is 2+2?", "Write a haiku about rain.", "def f(x): return x  # explain"],
        "task": ["math", "poetry", "code"],
        "split": ["train", "test", "train"],
        "score::a": [1.0, 0.25, NAN],
        "score::b": [0.0, 0.75, 1.0],
        "cost::a": [0.001, 0.002, NAN],
        "cost::b": [0.01, 0.02, 0.03],
    }
    cols.update(extra)
    return pd.DataFrame(cols)


def _write(tmp_path, frame: pd.DataFrame, name: str = "data.csv"):
    path = tmp_path / name
    _save(frame, path)
    return path


def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_routing_data(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    return message


# ---------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz"])
def test_wide_layout_every_file_type(tmp_path, suffix):
    path = _write(tmp_path, _wide(extra_col=["x", "y", "z"]), "routing" + suffix)
    ds = read_routing_data(path)
    assert isinstance(ds, RoutingDataset)
    assert ds.name == "routing" and ds.source == str(path)
    assert ds.models == ["a", "b"]
    assert ds.prompts[2] == "def f(x): return x  # explain"
    np.testing.assert_array_equal(ds.scores, [[1.0, 0.0], [0.25, 0.75], [NAN, 1.0]])
    np.testing.assert_allclose(ds.costs, [[0.001, 0.01], [0.002, 0.02], [NAN, 0.03]])
    assert ds.tasks == ["math", "poetry", "code"] and ds.ids == ["q0", "q1", "q2"]
    assert ds.meta["split"] == ["train", "test", "train"]
    assert ds.meta["layout"] == "wide" and ds.meta["merged_duplicates"] == 0
    assert ds.meta["cost_source"] == "data"


def test_wide_layout_minimal_and_numeric_looking_text_kept_as_text(tmp_path):
    frame = pd.DataFrame({"prompt": ["12", "NA", "0042"], "score::x": [1, 0, 1], "score::y": [0, 0, 1]})
    ds = read_routing_data(_write(tmp_path, frame, "min.csv"), name="mini")
    assert ds.prompts == ["12", "NA", "0042"]
    assert ds.costs is None and ds.tasks is None and ds.ids == ["0", "1", "2"]
    assert ds.name == "mini" and "split" not in ds.meta and ds.meta["cost_source"] is None


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_dataset_write_then_read_round_trip(tmp_path, suffix):
    original = RoutingDataset(
        prompts=["p one", "p two", "p three"],
        models=["m1", "m2", "m3"],
        scores=np.array([[0.5, NAN, 1.0], [0.0, 0.2, 0.1], [1.0, 1.0, NAN]]),
        costs=np.array([[1e-4, 2e-4, NAN], [1e-4, 2e-4, 3e-4], [1e-4, 2e-4, 3e-4]]),
        tasks=["t1", "t2", "t1"],
        ids=["a", "b", "c"],
    )
    path = tmp_path / f"ds{suffix}"
    original.write(path)
    back = read_routing_data(path)
    assert back.prompts == original.prompts and back.models == original.models
    assert back.tasks == original.tasks and back.ids == original.ids
    np.testing.assert_array_equal(back.scores, original.scores)
    np.testing.assert_allclose(back.costs, original.costs)


def test_long_layout_pivots_and_leaves_unobserved_pairs_nan(tmp_path):
    frame = pd.DataFrame(
        {
            "id": ["p1", "p1", "p2", "p2", "p3"],
            "prompt": ["alpha", "alpha", "beta", "beta", "gamma"],
            "model": ["m2", "m1", "m1", "m3", "m2"],
            "score": [0.5, 1.0, 0.0, 0.25, 1.0],
            "cost": [0.2, 0.1, 0.1, 0.3, 0.2],
            "task": ["x", "x", "y", "y", "x"],
        }
    )
    ds = read_routing_data(_write(tmp_path, frame, "long.parquet"))
    assert ds.meta["layout"] == "long"
    assert ds.models == ["m2", "m1", "m3"]  # first appearance
    assert ds.prompts == ["alpha", "beta", "gamma"] and ds.ids == ["p1", "p2", "p3"]
    assert ds.tasks == ["x", "y", "x"]
    np.testing.assert_array_equal(ds.scores, [[0.5, 1.0, NAN], [NAN, 0.0, 0.25], [1.0, NAN, NAN]])
    np.testing.assert_allclose(ds.costs, [[0.2, 0.1, NAN], [NAN, 0.1, 0.3], [0.2, NAN, NAN]])


def test_json_array_and_column_dict(tmp_path):
    records = [{"prompt": "p", "model": "a", "score": 1}, {"prompt": "p", "model": "b", "score": 0}]
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(records), encoding="utf-8")
    ds = read_routing_data(array, layout="long")
    np.testing.assert_array_equal(ds.scores, [[1.0, 0.0]])
    columns = tmp_path / "cols.json"
    columns.write_text(json.dumps({"prompt": ["x", "y"], "score::a": [0, 1], "score::b": [1, None]}), encoding="utf-8")
    ds = read_routing_data(columns)
    np.testing.assert_array_equal(ds.scores, [[0.0, 1.0], [1.0, NAN]])


def test_llmrouter_routing_rows(tmp_path):
    rows = []
    for q, task, perf in [("Q1?", "gsm8k", (1.0, 0.0)), ("Q2?", "mmlu", (0.0, 1.0))]:
        for model, p, cost in zip(["llama3-chatqa-1.5-8b", "qwen2.5-7b-instruct"], perf, [1e-5, 2e-5], strict=True):
            rows.append(
                {"task_name": task, "query": q, "ground_truth": "4", "metric": "GSM8K", "choices": None,
                 "model_name": model, "response": "The answer is 4.", "input_tokens": 12, "output_tokens": 4,
                 "performance": p, "cost": cost, "embedding_id": 0, "user_id": None}
            )
    path = tmp_path / "default_routing_train_data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    ds = read_routing_data(path)
    assert ds.meta["layout"] == "long"
    assert ds.models == ["llama3-chatqa-1.5-8b", "qwen2.5-7b-instruct"]
    assert ds.prompts == ["Q1?", "Q2?"] and ds.tasks == ["gsm8k", "mmlu"]
    np.testing.assert_array_equal(ds.scores, [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(ds.costs, [[1e-5, 2e-5], [1e-5, 2e-5]])


def _routerbench_frame() -> pd.DataFrame:
    models = ["gpt-4-1106-preview", "mistralai/mistral-7b-chat", "claude-v2"]
    frame = pd.DataFrame(
        {
            "Unnamed: 0": [20693, 20696, 7],
            "sample_id": ["mbpp.dev.1", "mbpp.dev.101", "mbpp.dev.1"],
            "prompt": [
                str(["Example: 1+1=2", "Question: 2+2=?"]),
                str(["Write a function to find the perimeter of a pentagon."]),
                "A plain prompt, not a list",
            ],
            "eval_name": ["mbpp", "mbpp", "arc-challenge"],
            models[0]: [1.0, 0.0, 1.0],
            models[1]: [0.0, NAN, 1.0],
            models[2]: [1.0, 1.0, 0.0],
        }
    )
    for m in models:
        frame[f"{m}|model_response"] = ["['an answer']"] * 3
    frame[f"{models[0]}|total_cost"] = [0.0109, 0.012, 0.011]
    frame[f"{models[1]}|total_cost"] = [8.2e-5, 9e-5, 7e-5]
    frame["oracle_model_to_route_to"] = [models[1], models[2], models[1]]
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_routerbench_layout(tmp_path, suffix):
    path = _write(tmp_path, _routerbench_frame(), "mbpp_test" + suffix)
    ds = read_routing_data(path)
    assert ds.meta["layout"] == "routerbench"
    assert ds.models == ["gpt-4-1106-preview", "mistralai/mistral-7b-chat", "claude-v2"]
    assert ds.prompts[0] == "Example: 1+1=2\n\nQuestion: 2+2=?"
    assert ds.prompts[1] == "Write a function to find the perimeter of a pentagon."
    assert ds.prompts[2] == "A plain prompt, not a list"
    assert ds.tasks == ["mbpp", "mbpp", "arc-challenge"]
    assert ds.ids == ["mbpp.dev.1", "mbpp.dev.101", "mbpp.dev.1#2"]  # a repeated sample_id on another prompt
    np.testing.assert_array_equal(ds.scores, [[1.0, 0.0, 1.0], [0.0, NAN, 1.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(ds.costs[:, :2], [[0.0109, 8.2e-5], [0.012, 9e-5], [0.011, 7e-5]])
    assert np.isnan(ds.costs[:, 2]).all()  # claude-v2 has no cost column


def test_routerbench_pickle_needs_opt_in(tmp_path):
    path = tmp_path / "routerbench_0shot.pkl"
    _routerbench_frame().to_pickle(path)
    message = _error(path)
    assert "allow_pickle=True" in message and "runs arbitrary code" in message
    ds = read_routing_data(path, allow_pickle=True)
    assert ds.meta["layout"] == "routerbench" and ds.n_prompts == 3 and ds.n_models == 3


def test_explicit_layout_and_detection():
    assert detect_layout(["prompt", "score::a", "score::b"]) == "wide"
    assert detect_layout(["prompt", "model", "score"]) == "long"
    assert detect_layout(["query", "model_name", "performance"]) == "long"
    assert detect_layout(["prompt", "eval_name", "a", "b"]) == "routerbench"
    assert detect_layout(["prompt", "a", "a|total_cost"]) == "routerbench"
    with pytest.raises(DataError, match="cannot tell the data layout"):
        detect_layout(["prompt", "a", "b"], "f.csv")


def test_explicit_routerbench_layout_without_markers(tmp_path):
    frame = pd.DataFrame({"prompt": ["p", "q"], "m1": [1.0, 0.0], "m2": [0.0, 1.0]})
    path = _write(tmp_path, frame, "rb.csv")
    _error(path)  # auto cannot tell
    ds = read_routing_data(path, layout="routerbench")
    assert ds.models == ["m1", "m2"]


# ---------------------------------------------------------------------------------------------- duplicates
def _dup_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["r0", "r1", "r2", "r3"],
            "prompt": ["same", "other", "same", "same"],
            "task": ["t1", "t2", "t9", "t1"],
            "score::a": [1.0, 0.5, 0.0, NAN],
            "score::b": [NAN, 0.5, NAN, NAN],
            "score::c": [0.2, 0.1, 0.4, 0.6],
            "cost::a": [1.0, 2.0, 3.0, 5.0],
            "cost::b": [NAN, 1.0, 4.0, NAN],
            "cost::c": [1.0, 1.0, 1.0, 1.0],
        }
    )


def test_duplicates_merge_averages_ignoring_nan(tmp_path, caplog):
    path = _write(tmp_path, _dup_frame(), "dups.csv")
    with caplog.at_level("INFO", logger="finerouter.data.readers"):
        ds = read_routing_data(path)
    assert "merged 2 rows" in caplog.text
    assert ds.prompts == ["same", "other"] and ds.ids == ["r0", "r1"] and ds.tasks == ["t1", "t2"]
    assert ds.meta["merged_duplicates"] == 2 and ds.meta["rows_read"] == 4
    np.testing.assert_allclose(ds.scores, [[0.5, NAN, 0.4], [0.5, 0.5, 0.1]])
    np.testing.assert_allclose(ds.costs, [[3.0, 4.0, 1.0], [2.0, 1.0, 1.0]])


def test_duplicates_error_lists_rows(tmp_path):
    message = _error(_write(tmp_path, _dup_frame(), "dups.csv"), duplicates="error")
    assert "rows [0, 2, 3]" in message and "'same'" in message and "duplicates='merge'" in message


def test_long_layout_duplicate_pairs(tmp_path):
    frame = pd.DataFrame(
        {"prompt": ["p", "p", "p", "q"], "model": ["a", "b", "a", "b"], "score": [1.0, 0.0, 0.0, 1.0]}
    )
    path = _write(tmp_path, frame, "long.csv")
    ds = read_routing_data(path)
    assert ds.meta["merged_duplicates"] == 1
    np.testing.assert_array_equal(ds.scores, [[0.5, 0.0], [NAN, 1.0]])
    message = _error(path, duplicates="error")
    assert "rows [0, 2]" in message and "model 'a'" in message


# ---------------------------------------------------------------------------------------------- prices
def test_prices_fill_costs_where_data_has_none(tmp_path):
    prices_path = tmp_path / "prices.csv"
    prices_path.write_text("model,input_usd_per_mtok,output_usd_per_mtok\na,1,2\nb,10,20\n", encoding="utf-8")
    frame = _wide().drop(columns=["cost::a", "cost::b"])
    path = _write(tmp_path, frame, "nocost.parquet")
    ds = read_routing_data(path, prices=prices_path)
    assert ds.meta["cost_source"] == "prices"
    expected = Prices.read(prices_path).estimate_costs(ds.prompts, ds.models)
    np.testing.assert_allclose(ds.costs, expected)
    assert np.isfinite(ds.costs).all()
    # The first prompt has 12 characters: 3 input tokens, 256 output tokens.
    assert ds.costs[0, 1] == pytest.approx((3 * 10 + 256 * 20) / 1e6)


def test_prices_fill_only_missing_costs_and_leave_unpriced_models_unknown(tmp_path):
    prices = Prices({"a": (1.0, 1.0)}, output_tokens=0)
    ds = read_routing_data(_write(tmp_path, _wide(), "w.csv"), prices=prices)
    assert ds.meta["cost_source"] == "data+prices"
    assert ds.costs[0, 0] == pytest.approx(0.001)  # observed cost kept
    assert ds.costs[2, 0] == pytest.approx(prices.estimate_costs([ds.prompts[2]], ["a"])[0, 0])
    frame = _wide().drop(columns=["cost::a", "cost::b"])
    ds = read_routing_data(_write(tmp_path, frame, "w2.csv"), prices=prices)
    assert np.isfinite(ds.costs[:, 0]).all() and np.isnan(ds.costs[:, 1]).all()
    with pytest.raises(ParameterError, match="'prices'"):
        read_routing_data(_write(tmp_path, frame, "w3.csv"), prices=3.5)


# ---------------------------------------------------------------------------------------------- rescale
def test_rescale_min_max_per_model(tmp_path):
    frame = pd.DataFrame(
        {"prompt": ["p", "q", "r"], "score::a": [2.0, 4.0, 6.0], "score::b": [-1.0, 0.0, NAN], "score::c": [7, 7, 7]}
    )
    path = _write(tmp_path, frame, "raw.csv")
    message = _error(path)
    assert "column 'score::a', row 0" in message and "outside [0, 1]" in message and "rescale=True" in message
    ds = read_routing_data(path, rescale=True)
    np.testing.assert_allclose(ds.scores, [[0.0, 0.0, 0.5], [0.5, 1.0, 0.5], [1.0, NAN, 0.5]])
    assert ds.meta["rescaled"] == {"a": [2.0, 6.0], "b": [-1.0, 0.0], "c": [7.0, 7.0]}


def test_negative_score_is_out_of_range_in_long_layout(tmp_path):
    frame = pd.DataFrame({"prompt": ["p", "p", "q"], "model": ["a", "b", "b"], "score": [0.5, 1.0, -0.25]})
    message = _error(_write(tmp_path, frame, "long.csv"))
    assert "column 'score' (model 'b'), row 2: score -0.25 is outside [0, 1]" in message


# ---------------------------------------------------------------------------------------------- errors
def test_error_no_prompt_column(tmp_path):
    frame = pd.DataFrame({"text": ["p", "q"], "score::a": [1, 0], "score::b": [0, 1]})
    message = _error(_write(tmp_path, frame))
    assert "no prompt column" in message and "'prompt'" in message and "text" in message


def test_error_fewer_than_two_models(tmp_path):
    frame = pd.DataFrame({"prompt": ["p", "q"], "score::a": [1, 0]})
    assert "at least 2 models, found 1 ['a']" in _error(_write(tmp_path, frame))
    long = pd.DataFrame({"prompt": ["p", "q"], "model": ["a", "a"], "score": [1, 0]})
    assert "at least 2 models" in _error(_write(tmp_path, long, "long.csv"))


def test_error_non_numeric_score_names_column_and_row(tmp_path):
    frame = _wide()
    frame["score::b"] = ["0", "1", "excellent"]
    message = _error(_write(tmp_path, frame))
    assert "column 'score::b'" in message and "row 2: 'excellent'" in message and "not numbers" in message


def test_error_non_numeric_cost_in_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "p", "score::a": 1, "score::b": 0, "cost::a": 0.1},
        {"prompt": "q", "score::a": 0, "score::b": 1, "cost::a": "cheap"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    message = _error(path)
    assert "column 'cost::a'" in message and "row 1: 'cheap'" in message


def test_error_infinite_score(tmp_path):
    frame = pd.DataFrame({"prompt": ["p", "q"], "score::a": ["inf", "0"], "score::b": ["0", "1"]})
    assert "column 'score::a', row 0" in _error(_write(tmp_path, frame))


@pytest.mark.parametrize("bad", ["", "   "])
def test_error_empty_prompt(tmp_path, bad):
    frame = _wide()
    frame.loc[1, "prompt"] = bad
    message = _error(_write(tmp_path, frame, "e.jsonl"))
    assert "column 'prompt', row 1" in message and ("empty prompt" in message or "missing prompt" in message)


def test_error_missing_prompt_in_parquet(tmp_path):
    frame = _wide()
    frame["prompt"] = ["a", None, "c"]
    assert "column 'prompt', row 1: missing prompt" in _error(_write(tmp_path, frame, "m.parquet"))


def test_error_model_without_scores(tmp_path):
    frame = _wide()
    frame["score::a"] = [NAN, NAN, NAN]
    message = _error(_write(tmp_path, frame, "x.parquet"))
    assert "column 'score::a'" in message and "model 'a' has no scores" in message
    long = pd.DataFrame({"prompt": ["p", "q", "p"], "model": ["a", "b", "b"], "score": [NAN, 1.0, 0.0]})
    message = _error(_write(tmp_path, long, "long.csv"))
    assert "'score' (model 'a')" in message and "no scores" in message


def test_error_negative_cost_and_orphan_cost_column(tmp_path):
    frame = _wide()
    frame["cost::b"] = [0.1, -0.5, 0.1]
    assert "column 'cost::b', row 1: negative cost -0.5" in _error(_write(tmp_path, frame))
    frame = _wide()
    frame["cost::zzz"] = [0.1, 0.1, 0.1]
    assert "['cost::zzz'] have no matching" in _error(_write(tmp_path, frame, "o.csv"))


def test_error_id_reused_for_another_prompt(tmp_path):
    frame = _wide()
    frame["id"] = ["q0", "q1", "q0"]
    assert "column 'id', row 2: id 'q0' is already used by row 0" in _error(_write(tmp_path, frame))


def test_error_long_layout_missing_model_name(tmp_path):
    frame = pd.DataFrame({"prompt": ["p", "q"], "model": ["a", ""], "score": [1, 0]})
    assert "column 'model', row 1" in _error(_write(tmp_path, frame))


def test_error_files(tmp_path):
    assert "file not found" in _error(tmp_path / "missing.parquet")
    weird = tmp_path / "data.xlsx"
    weird.write_text("x", encoding="utf-8")
    assert "unknown file type" in _error(weird)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p"}\n{not json\n', encoding="utf-8")
    assert "line 2: invalid JSON" in _error(broken)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert "empty" in _error(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("prompt,score::a,score::b\n", encoding="utf-8")
    assert "no data rows" in _error(header_only)
    nolayout = _write(tmp_path, pd.DataFrame({"prompt": ["p"], "answer": ["x"]}), "n.csv")
    assert "cannot tell the data layout" in _error(nolayout)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_error_duplicate_csv_columns_name_the_column(tmp_path, suffix):
    """pandas renames a repeated header to 'X.1'; a second 'score::a' must not become a model 'a.1'."""
    cases = {
        "score::a": "prompt,score::a,score::b,score::a\nhi,1,0,0.5\nho,0,1,0.5\n",
        "prompt": "prompt,score::a,score::b,prompt\nhi,1,0,other\nho,0,1,other\n",
        "task": "prompt,task,score::a,score::b, task\nhi,x,1,0,y\nho,x,0,1,y\n",  # equal once stripped
    }
    for column, text in cases.items():
        path = tmp_path / f"dup-{column.strip(':')}{suffix}"
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
        message = _error(path)
        assert f"column {column!r} appears more than once" in message, message
    ok = tmp_path / "ok.csv"  # an unnamed column twice (an index) is not a duplicate name
    ok.write_text(",,prompt,score::a,score::b\n0,0,hi,1,0\n1,1,ho,0,1\n", encoding="utf-8")
    assert read_routing_data(ok).models == ["a", "b"]


def test_error_duplicate_parquet_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    arrays = [pa.array(["hi", "ho"]), pa.array([1.0, 0.0]), pa.array([0.0, 1.0]), pa.array([0.5, 0.5])]
    pq.write_table(pa.Table.from_arrays(arrays, names=["prompt", "score::a", "score::b", "score::a"]), path)
    assert "column 'score::a' appears more than once" in _error(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json"])
def test_error_duplicate_json_keys_name_the_key_and_line(tmp_path, suffix):
    rows = ['{"prompt": "hi", "score::a": 1, "score::b": 0}', '{"prompt": "ho", "score::a": 0, "score::b": 1, "prompt": "x"}']
    path = tmp_path / f"dup{suffix}"
    text = ("[" + ",\n".join(rows) + "]") if suffix == ".json" else "\n\n".join(rows) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    message = _error(path)
    assert "duplicate key 'prompt'" in message, message
    assert ("row 1" in message) and (suffix == ".json" or "line 3" in message)
    path = tmp_path / f"dupscore{suffix}"
    rows[0] = '{"prompt": "hi", "score::a": 1, "score::b": 0, "score::a": 0.5}'
    text = ("[" + ",".join(rows[:1]) + "]") if suffix == ".json" else rows[0] + "\n"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    assert "duplicate key 'score::a'" in _error(path)


def test_bad_parameters():
    with pytest.raises(ParameterError, match="The 'layout' parameter of read_routing_data must be one of"):
        read_routing_data("x.csv", layout="tall")
    with pytest.raises(ParameterError, match="'duplicates'"):
        read_routing_data("x.csv", duplicates="keep")
    with pytest.raises(ParameterError, match="'rescale'"):
        read_routing_data("x.csv", rescale="yes")


def test_dataset_read_delegates(tmp_path):
    ds = RoutingDataset.read(_write(tmp_path, _dup_frame(), "d.csv"), duplicates="merge")
    assert ds.n_prompts == 2


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_real_dcrouter(shared_data, prices_csv):
    path = shared_data("dcrouter")
    raw = pd.read_parquet(path)
    ds = read_routing_data(path, prices=prices_csv)
    # SOURCE.md: 6,108 rows (5,608 train + 500 test), 119 test prompts repeat train ones -> 5,989 unique.
    assert ds.meta["rows_read"] == 6108 and ds.n_prompts == 5989 and ds.meta["merged_duplicates"] == 119
    assert ds.n_models == 9 and len(set(ds.tasks)) == 14
    assert len(ds.meta["split"]) == 5989
    assert ds.meta["cost_source"] == "prices" and np.isfinite(ds.costs).all() and (ds.costs > 0).all()
    np.testing.assert_allclose(ds.costs, Prices.read(prices_csv).estimate_costs(ds.prompts, ds.models))
    # A non-duplicated prompt keeps its raw scores.
    row = raw.iloc[5]
    i = ds.ids.index(row["id"])
    np.testing.assert_array_equal(ds.scores[i], [row[f"score::{m}"] for m in ds.models])
    assert read_routing_data(path).costs is None


@pytest.mark.slow
def test_real_routerdc(shared_data):
    ds = read_routing_data(shared_data("routerdc"))
    # SOURCE.md: 20,600 rows, 35 duplicated question strings.
    assert ds.meta["rows_read"] == 20600 and ds.n_prompts == 20600 - 35
    assert ds.n_models == 7 and ds.costs is None and len(set(ds.tasks)) == 10
    assert set(ds.meta["split"]) == {"train", "test", "eval_only"}


@pytest.mark.slow
def test_real_routerbench_subset(shared_data):
    ds = read_routing_data(shared_data("routerbench_subset"))
    # SOURCE.md: 3,178 rows, 11 models, 154 NaN score cells over 28 rows, real per-query cost.
    assert ds.meta["rows_read"] == 3178 and ds.n_prompts == 3178 - ds.meta["merged_duplicates"]
    assert ds.n_models == 11 and len(set(ds.tasks)) == 3
    assert int(np.isnan(ds.scores).sum()) == 154 and int(np.isnan(ds.scores).any(axis=1).sum()) == 28
    assert ds.costs is not None and np.isfinite(ds.costs).all() and ds.meta["cost_source"] == "data"


# ---------------------------------------------------------------------------------------------- layout registry
def test_registry_lists_builtin_layouts_in_detection_order():
    assert layout_names()[:3] == ("wide", "long", "routerbench")
    assert tuple(layout.name for layout in BUILTIN_LAYOUTS) == ("wide", "long", "routerbench")
    for layout in BUILTIN_LAYOUTS:
        assert get_layout(layout.name) is layout
    with pytest.raises(ParameterError, match="already registered"):
        register_layout(BUILTIN_LAYOUTS[0])
    with pytest.raises(ParameterError, match="other than 'auto'"):
        register_layout(Layout("auto", lambda columns: False, lambda frame, where: None, "nothing"))
    with pytest.raises(ParameterError, match="registered layout"):
        get_layout("no-such-layout")


def _parse_nested(frame: pd.DataFrame, where: str) -> ParsedTable:
    """A peer-style layout: ``{"question": ..., "results": {"<model>": score, ...}}`` per row."""
    prompts = column_texts(frame["question"], "question", where, required=True, what="prompt")
    models = list(dict.fromkeys(model for results in frame["results"] for model in results))
    index = {model: j for j, model in enumerate(models)}
    cells = [
        (i, index[model], float(score))
        for i, results in enumerate(frame["results"])
        for model, score in results.items()
    ]
    return ParsedTable(
        where=where, layout="nested", prompts=prompts, models=models,
        row=np.array([c[0] for c in cells], dtype=np.int64),
        model=np.array([c[1] for c in cells], dtype=np.int64),
        score=np.array([c[2] for c in cells], dtype=np.float64),
        cost=None,
        score_label=[f"'results' (model {m!r})" for m in models],
        cost_label=[f"'results' (model {m!r})" for m in models],
        cell_per_row=True,
    )


NESTED = Layout(
    name="nested",
    detect=lambda columns: "question" in columns and "results" in columns,
    parse=_parse_nested,
    expected_columns="'question'/'results' columns (nested)",
)


@pytest.fixture
def nested_layout():
    register_layout(NESTED)
    try:
        yield NESTED
    finally:
        if "nested" in layout_names():
            unregister_layout("nested")


def _write_nested(tmp_path, rows: list[dict]) -> object:
    path = tmp_path / "nested.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_registered_layout_is_detected_and_read(tmp_path, nested_layout):
    rows = [
        {"question": "What is 2+2?", "results": {"a": 1.0, "b": 0.0}},
        {"question": "Name a prime.", "results": {"b": 1.0}},
        {"question": "What is 2+2?", "results": {"a": 0.5}},
    ]
    path = _write_nested(tmp_path, rows)
    assert layout_names()[-1] == "nested"
    ds = read_routing_data(path)  # auto: none of the built-in layouts accepts these columns
    assert ds.meta["layout"] == "nested" and ds.meta["merged_duplicates"] == 1
    assert ds.prompts == ["What is 2+2?", "Name a prime."] and ds.models == ["a", "b"]
    np.testing.assert_allclose(ds.scores, [[0.75, 0.0], [NAN, 1.0]])
    assert read_routing_data(path, layout="nested").meta["layout"] == "nested"
    # The shared checks apply to a registered layout as to the built-in ones.
    bad = _write_nested(tmp_path, [{"question": "q", "results": {"a": 1.0, "b": 1.5}}])
    message = _error(bad)
    assert "column 'results' (model 'b'), row 0: score 1.5 is outside [0, 1]" in message
    with pytest.raises(DataError, match="'question'/'results' columns \\(nested\\)"):
        detect_layout(["x", "y"], "f.csv")


def test_unregistered_layout_is_no_longer_accepted(tmp_path, nested_layout):
    path = _write_nested(tmp_path, [{"question": "q", "results": {"a": 1.0, "b": 0.0}}])
    assert unregister_layout("nested") is NESTED
    assert "nested" not in layout_names()
    _error(path)  # auto: no layout fits any more
    with pytest.raises(ParameterError, match="layout"):
        read_routing_data(path, layout="nested")


def test_layout_with_inconsistent_table_is_a_data_error(tmp_path):
    def parse_short_scores(frame: pd.DataFrame, where: str) -> ParsedTable:
        table = _parse_nested(frame, where)
        table.score = table.score[:-1]
        return table

    register_layout(Layout("short", NESTED.detect, parse_short_scores, "'question'/'results' columns (short)"))
    try:
        path = _write_nested(tmp_path, [{"question": "q", "results": {"a": 1.0, "b": 0.0}}])
        message = _error(path)
        assert "layout 'short' produced an inconsistent table" in message
    finally:
        unregister_layout("short")
