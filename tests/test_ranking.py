"""Per-prompt model ranks and the documented tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.discovery import rank_models, rank_order
from finerouter.discovery.ranking import best_models, model_priority, order_to_ranks
from finerouter.errors import DataError

nan = np.nan


def _naive_ranks(scores: np.ndarray, tie: np.ndarray) -> np.ndarray:
    n, m = scores.shape
    out = np.zeros((n, m), dtype=np.int64)
    for i in range(n):
        row = scores[i]
        order = sorted(range(m), key=lambda j, row=row: (np.isnan(row[j]), -np.nan_to_num(row[j]), -tie[j], j))
        for r, j in enumerate(order):
            out[i, j] = r + 1
    return out


def test_higher_score_ranks_first_one_based():
    s = np.array([[0.2, 0.9, 0.5]])
    assert rank_models(s).tolist() == [[3, 1, 2]]
    assert rank_order(s).tolist() == [[1, 2, 0]]


def test_ties_broken_by_given_mean_then_index():
    s = np.array([[1.0, 1.0, 0.0, 1.0]])
    # models 0, 1, 3 tie at 1.0; model 1 has the highest mean; 0 and 3 tie on mean -> lower index first
    tie = np.array([0.5, 0.9, 0.7, 0.5])
    assert rank_models(s, tie_break=tie).tolist() == [[2, 1, 4, 3]]


def test_default_tie_break_is_the_column_mean():
    # model 2 has the best mean (2/3), model 0 the worst (1/3); on row 0 all three tie at 1.0
    s = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    s[2, 2] = 0.0
    s = np.vstack([s, [[0.0, 0.0, 1.0]]])  # means: 0.25, 0.5, 0.75
    assert rank_models(s)[0].tolist() == [3, 2, 1]
    assert model_priority(s).tolist() == [2, 1, 0]


def test_nan_ranks_last_even_for_the_best_mean_model():
    s = np.array([[nan, 0.0, 0.5], [1.0, nan, nan]])
    tie = np.array([0.9, 0.1, 0.5])
    r = rank_models(s, tie_break=tie)
    assert r[0].tolist() == [3, 2, 1]
    # among the two NaNs of row 1, the better mean (model 2) comes first
    assert r[1].tolist() == [1, 3, 2]


def test_nan_tie_break_value_counts_as_lowest():
    s = np.array([[1.0, 1.0]])
    assert rank_models(s, tie_break=np.array([nan, 0.0])).tolist() == [[2, 1]]


def test_rows_are_permutations_and_match_a_naive_sort(rng):
    s = rng.integers(0, 3, size=(300, 7)).astype(float) / 2  # many ties
    s[rng.random(s.shape) < 0.1] = nan
    tie = rng.random(7)
    r = rank_models(s, tie_break=tie)
    assert (np.sort(r, axis=1) == np.arange(1, 8)).all()
    assert (r == _naive_ranks(s, tie)).all()


def test_best_models_and_order_inverse(rng):
    s = rng.random((50, 5))
    order = rank_order(s)
    assert (best_models(s) == s.argmax(axis=1)).all()
    ranks = order_to_ranks(order)
    assert (np.take_along_axis(ranks, order, axis=1) == np.arange(1, 6)).all()


def test_bad_input():
    with pytest.raises(DataError, match="2-D"):
        rank_models(np.zeros(3))
    with pytest.raises(DataError, match="infinite"):
        rank_models(np.array([[0.0, np.inf]]))
    with pytest.raises(DataError, match="tie_break"):
        rank_models(np.zeros((2, 3)), tie_break=np.zeros(2))
