"""Stress settings built from real-format data (finerouter.evaluation.stress): enlarged, blended and judged pools."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.data.dataset import RoutingDataset
from finerouter.errors import ParameterError
from finerouter.evaluation.stress import blend_pool, enlarge_pool, judge_pool


def _data(rng, n=400, m=4):
    scores = (rng.random((n, m)) < np.linspace(0.3, 0.8, m)).astype(float)
    scores[rng.random((n, m)) < 0.05] = np.nan
    costs = np.tile(np.linspace(1e-4, 1e-3, m), (n, 1))
    return RoutingDataset(prompts=[f"p{i}" for i in range(n)], models=[f"m{j}" for j in range(m)], scores=scores,
                          costs=costs, tasks=[f"t{i % 3}" for i in range(n)], name="toy")


def test_enlarge_pool_keeps_the_originals_and_adds_near_and_dominated_variants(rng):
    data = _data(rng)
    big = enlarge_pool(data, n_near=2, n_dominated=1, seed=3)
    assert big.n_models == 4 * 4 and big.models[:4] == data.models
    np.testing.assert_array_equal(big.scores[:, :4], data.scores)
    means = np.nanmean(big.scores, axis=0)
    near, dom = means[4:12].reshape(2, 4), means[12:16]
    assert np.all(np.abs(near - means[:4]) < 0.08)  # near-duplicates: within a few points
    assert np.all(dom < means[:4] - 0.05)  # dominated: clearly behind
    assert np.array_equal(np.isnan(big.scores[:, 4]), np.isnan(data.scores[:, 0]))
    again = enlarge_pool(data, n_near=2, n_dominated=1, seed=3)
    np.testing.assert_array_equal(np.nan_to_num(again.scores, nan=-1), np.nan_to_num(big.scores, nan=-1))


def test_blend_pool_grows_the_pool_with_mixtures_of_two_real_models(rng):
    data = _data(rng)
    big = blend_pool(data, n_models=30, max_drop=0.6, seed=1)
    assert big.n_models == 30 and big.models[:4] == data.models and big.name == "toy+blend30"
    np.testing.assert_array_equal(big.scores[:, :4], data.scores)
    for j in range(4, 30):
        a, b = (data.models.index(x) for x in big.models[j].split("~")[0].split("+"))
        col = big.scores[:, j]
        from_a = col == data.scores[:, a]
        from_b = col == data.scores[:, b]
        dropped = col == 0
        known = np.isfinite(col)
        assert np.all((from_a | from_b | dropped)[known])  # each score is a real one of the two, or a failure
        # the cost follows the model whose score was taken
        assert np.all(np.isin(big.costs[:, j], [data.costs[0, a], data.costs[0, b]]))
    means = np.nanmean(big.scores, axis=0)
    assert means[4:].max() <= means[:4].max() + 0.05 and means[4:].min() < means[:4].min()  # a spread, behind
    with pytest.raises(ParameterError, match="n_models"):
        blend_pool(data, n_models=3)


def test_judge_pool_scores_every_answer_continuously_around_its_real_quality(rng):
    data = _data(rng, n=3000)
    big = judge_pool(data, n_models=20, max_drop=0.5, floor=0.1, concentration=8.0, seed=2)
    assert big.n_models == 20 and big.models[:4] == data.models and big.name == "toy+judge20"
    known = np.isfinite(big.scores)
    assert np.array_equal(np.isnan(big.scores[:, :4]), np.isnan(data.scores))  # unevaluated stays unevaluated
    assert np.all((big.scores[known] > 0) & (big.scores[known] < 1))  # continuous, never exactly 0 or 1
    rows = np.isfinite(big.scores).all(axis=1)
    best = big.scores[rows].max(axis=1)
    assert np.mean((big.scores[rows] == best[:, None]).sum(axis=1) > 1) == 0  # strict rankings: no ties
    # a real model's judge scores follow its real ones: mean floor + (1 - 2 floor) * real score, per answer
    for j in range(4):
        for real in (0.0, 1.0):
            sel = data.scores[:, j] == real
            assert abs(np.mean(big.scores[sel, j]) - (0.1 + 0.8 * real)) < 0.03
    # a blend sits between its two models (less its failures), and costs the weighted mean of their costs
    for j in range(4, 20):
        a, b = (data.models.index(x) for x in big.models[j].split("~")[0].split("+"))
        assert np.nanmean(big.scores[:, j]) <= max(np.nanmean(big.scores[:, a]), np.nanmean(big.scores[:, b])) + 0.03
        lo, hi = sorted((data.costs[0, a], data.costs[0, b]))
        assert lo - 1e-12 <= big.costs[0, j] <= hi + 1e-12
    assert big.tasks == data.tasks
    unlabelled = judge_pool(data, n_models=20, max_drop=0.5, drop_labels=True, seed=2)
    assert unlabelled.tasks is None
    np.testing.assert_array_equal(np.nan_to_num(unlabelled.scores, nan=-1), np.nan_to_num(big.scores, nan=-1))
    with pytest.raises(ParameterError, match="floor"):
        judge_pool(data, floor=0.6)
