"""RoutingDataset: validation, views, subset, and the split by unique prompt stratified by task."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from finerouter.data import RoutingDataset, split_indices
from finerouter.errors import DataError, ParameterError

NAN = math.nan


def _make(n: int = 3, m: int = 2, **kwargs) -> RoutingDataset:
    args = dict(
        prompts=[f"prompt {i}" for i in range(n)],
        models=[f"m{j}" for j in range(m)],
        scores=np.tile(np.linspace(0, 1, m), (n, 1)),
        source="fixture.parquet",
    )
    args.update(kwargs)
    return RoutingDataset(**args)


def _grouped(rng: np.random.Generator, n_unique: int = 120, n_tasks: int = 4) -> RoutingDataset:
    """Prompts with repeats (some up to 3 times), each with a task label."""
    prompts, tasks = [], []
    for g in range(n_unique):
        for _ in range(1 + (g % 3 == 0) + (g % 7 == 0)):
            prompts.append(f"question {g}")
            tasks.append(f"task{g % n_tasks}")
    order = rng.permutation(len(prompts))
    prompts = [prompts[i] for i in order]
    tasks = [tasks[i] for i in order]
    return RoutingDataset(
        prompts=prompts, models=["a", "b", "c"], scores=rng.random((len(prompts), 3)), tasks=tasks,
        ids=[f"r{i}" for i in range(len(prompts))],
    )


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(models=["only"], scores=np.zeros((3, 1))), "at least 2 models, found 1"),
        (dict(models=["a", "a"]), "duplicate model names ['a']"),
        (dict(scores=np.zeros((2, 2))), "scores have shape (2, 2), expected (3, 2)"),
        (dict(scores=[["x", 0.0]] * 3), "scores are not numeric"),
        (dict(scores=np.array([[0.0, 1.0], [0.0, 1.5], [0.0, 1.0]])), "column 'score::m1', row 1: score 1.5"),
        (dict(scores=np.array([[0.0, 1.0], [0.0, 1.0], [-0.1, 1.0]])), "column 'score::m0', row 2"),
        (dict(prompts=["a", "  ", "c"]), "column 'prompt', row 1: empty prompt"),
        (dict(scores=np.array([[NAN, 1.0], [NAN, 0.0], [NAN, 1.0]])), "no scores at all: ['m0']"),
        (dict(costs=np.zeros((3, 3))), "costs have shape (3, 3), expected (3, 2)"),
        (dict(costs=np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0]])), "column 'cost::m1', row 1: negative cost"),
        (dict(tasks=["t"]), "1 task labels for 3 prompts"),
        (dict(ids=["a", "b"]), "2 ids for 3 prompts"),
        (dict(ids=["a", "b", "a"]), "column 'id', row 2: duplicate id 'a'"),
    ],
)
def test_validation_errors_name_source_column_row(kwargs, needle):
    with pytest.raises(DataError) as info:
        _make(**kwargs)
    assert needle in str(info.value)
    assert "fixture.parquet" in str(info.value)


def test_infinite_score_rejected():
    scores = np.array([[0.0, 1.0], [np.inf, 0.0], [0.5, 0.5]])
    with pytest.raises(DataError, match="outside \\[0, 1\\]|infinite"):
        _make(scores=scores)


def test_defaults_and_conversions():
    ds = _make(prompts=["a", "b", "c"], models=("x", "y"), tasks=[1, 2, 1], costs=[[0, 1], [2, 3], [4, 5]])
    assert ds.ids == ["0", "1", "2"] and ds.tasks == ["1", "2", "1"] and ds.models == ["x", "y"]
    assert ds.scores.dtype == np.float64 and ds.costs.dtype == np.float64
    assert len(ds) == 3 and ds.n_models == 2
    assert "costs" in repr(ds) and "2 tasks" in repr(ds)


def test_means_best_model_and_oracle_ignore_nan():
    scores = np.array([[1.0, NAN, 0.2], [0.0, 0.9, NAN], [NAN, 0.7, 0.1]])
    ds = _make(models=["a", "b", "c"], scores=scores)
    np.testing.assert_allclose(ds.model_means(), [0.5, 0.8, 0.15])
    assert ds.best_single_model() == 1
    np.testing.assert_allclose(ds.oracle_scores(), [1.0, 0.9, 0.7])


# ---------------------------------------------------------------------------------------------- subset / views
def test_subset_keeps_order_and_copies():
    ds = _make(n=4, costs=np.ones((4, 2)), tasks=["a", "b", "c", "d"], ids=["i0", "i1", "i2", "i3"], meta={"k": 1})
    sub = ds.subset([3, 1])
    assert sub.prompts == ["prompt 3", "prompt 1"] and sub.tasks == ["d", "b"] and sub.ids == ["i3", "i1"]
    assert sub.meta == {"k": 1} and sub.source == ds.source
    sub.scores[0, 0] = 0.123
    sub.costs[0, 0] = 9.0
    sub.meta["k"] = 2
    assert ds.scores[3, 0] == 0.0 and ds.costs[3, 0] == 1.0 and ds.meta["k"] == 1
    assert ds.subset(np.array([], dtype=int)).n_prompts == 0


def test_select_models():
    ds = _make(m=3, costs=np.arange(9.0).reshape(3, 3))
    sel = ds.select_models(["m2", "m0"])
    assert sel.models == ["m2", "m0"]
    np.testing.assert_array_equal(sel.scores, ds.scores[:, [2, 0]])
    np.testing.assert_array_equal(sel.costs, ds.costs[:, [2, 0]])
    with pytest.raises(DataError, match="unknown model"):
        ds.select_models(["m0", "zzz"])


def test_to_frame_canonical_columns():
    ds = _make(costs=np.ones((3, 2)), tasks=["t", "t", "u"])
    cols = list(ds.to_frame().columns)
    assert cols == ["id", "prompt", "task", "score::m0", "score::m1", "cost::m0", "cost::m1"]


# ---------------------------------------------------------------------------------------------- split
def test_split_by_unique_prompt_has_no_leakage_and_covers_every_row(rng):
    ds = _grouped(rng)
    train, test = ds.split(test_size=0.25, seed=3)
    assert not set(train.prompts) & set(test.prompts)
    assert sorted(train.ids + test.ids) == sorted(ds.ids)
    assert train.n_prompts + test.n_prompts == ds.n_prompts
    # every row of a repeated prompt lands on the same side
    side = {p: "train" for p in train.prompts} | {p: "test" for p in test.prompts}
    for p in set(ds.prompts):
        assert p in side
    n_test_groups = len(set(test.prompts))
    assert n_test_groups == pytest.approx(0.25 * len(set(ds.prompts)), abs=4)


def test_split_is_stratified_by_task(rng):
    ds = _grouped(rng, n_unique=200, n_tasks=4)
    _, test = ds.split(test_size=0.2, seed=0)
    groups_per_task = Counter(t for p, t in dict(zip(test.prompts, test.tasks, strict=True)).items())
    # 50 unique prompts per task -> round(0.2 * 50) = 10 test prompts in each task
    assert groups_per_task == {"task0": 10, "task1": 10, "task2": 10, "task3": 10}


def test_small_strata_keep_at_least_one_on_each_side():
    prompts = ["a1", "a2", "b1", "b2", "b3", "c1"]
    tasks = ["A", "A", "B", "B", "B", "C"]
    train, test = split_indices(prompts, tasks, 0.01, seed=0)
    test_tasks = sorted(tasks[i] for i in test)
    assert test_tasks == ["A", "B"]  # each stratum with >= 2 prompts gives one; a singleton stays in train
    assert 5 in train


def test_split_is_deterministic_by_seed(rng):
    ds = _grouped(rng)
    a_train, a_test = ds.split(0.3, seed=7)
    b_train, b_test = ds.split(0.3, seed=7)
    assert a_test.ids == b_test.ids and a_train.ids == b_train.ids
    c_train, c_test = ds.split(0.3, seed=8)
    assert c_test.ids != a_test.ids


def test_split_without_tasks_and_row_order_preserved():
    ds = _make(n=10)
    train, test = ds.split(0.3, seed=1)
    assert test.n_prompts == 3 and train.n_prompts == 7
    assert train.ids == sorted(train.ids, key=int) and test.ids == sorted(test.ids, key=int)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2, "0.2"])
def test_split_rejects_bad_test_size(bad):
    with pytest.raises(ParameterError, match="The 'test_size' parameter of RoutingDataset.split must be a float"):
        _make().split(test_size=bad)


def test_split_rejects_bad_seed():
    with pytest.raises(ParameterError, match="The 'seed' parameter of RoutingDataset.split must be an int"):
        _make().split(0.5, seed=-1)
