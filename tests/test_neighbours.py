"""The neighbour source's ridge half: the fit, its leave-one-out penalty choice, and the averaged local estimate."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.routing.neighbours import (
    RidgeFit,
    choose_ridge,
    fit_ridge,
    local_estimates,
    neighbour_means,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_ridge_fit_is_least_squares_with_an_unpenalised_intercept_and_unobserved_scores_pull_nowhere(rng):
    x = _unit(rng.normal(size=(50, 6)))
    y = rng.random((50, 3))
    fit = fit_ridge(x, y, 2.0)
    # the normal equations of min |y - b - x w|^2 + 2 |w|^2, solved directly with the intercept column unpenalised
    design = np.column_stack([np.ones(50), x])
    penalty = 2.0 * np.eye(7)
    penalty[0, 0] = 0.0
    want = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    np.testing.assert_allclose(fit.predict(x), design @ want, atol=1e-10)
    # a score not observed counts as its model's mean; a model never observed predicts NaN
    missing = y.copy()
    missing[:10, 0] = np.nan
    missing[:, 2] = np.nan
    filled = missing.copy()
    filled[:10, 0] = np.nanmean(missing[:, 0])
    np.testing.assert_allclose(fit_ridge(x, missing, 2.0).predict(x)[:, 0], fit_ridge(x, filled, 2.0).predict(x)[:, 0])
    assert np.isnan(fit_ridge(x, missing, 2.0).predict(x)[:, 2]).all()
    # a huge penalty shrinks every prediction to the model's mean score: the best single model's ranking
    flat = fit_ridge(x, y, 1e9).predict(x)
    np.testing.assert_allclose(flat, np.broadcast_to(y.mean(axis=0), flat.shape), atol=1e-6)


def _brute_force_penalty(x: np.ndarray, y: np.ndarray, grid: tuple[float, ...]) -> float:
    """The penalty whose fits without each prompt route it best, by refitting once per prompt."""
    n = len(x)
    best, best_q = None, -np.inf
    for penalty in sorted(grid):
        picks = []
        for i in range(n):
            rest = np.delete(np.arange(n), i)
            picks.append(int(np.argmax(fit_ridge(x[rest], y[rest], penalty).predict(x[i : i + 1])[0])))
        q = y[np.arange(n), picks].mean()
        if q >= best_q:
            best, best_q = penalty, q
    return best


@pytest.mark.parametrize("signal", [0.0, 0.3, 3.0])
def test_the_penalty_is_the_one_whose_leave_one_out_fits_route_best(rng, signal):
    x = _unit(rng.normal(size=(40, 5)))
    y = signal * (x[:, :3] @ rng.normal(size=(3, 4))) + rng.normal(0, 0.3, (40, 4))
    grid = (0.01, 0.1, 1.0, 10.0, 100.0)
    assert choose_ridge(x, y, grid) == _brute_force_penalty(x, y, grid)


def test_the_penalty_follows_the_signal_and_ties_take_the_smoother_fit(rng):
    x = _unit(rng.normal(size=(400, 8)))
    direction = rng.normal(size=8)
    # model 1 beats model 0 exactly where the prompt leans one way: a weak penalty finds it
    lean = x @ direction
    clean = np.column_stack([0.5 - 0.3 * lean, 0.5 + 0.3 * lean])
    assert choose_ridge(x, clean + rng.normal(0, 0.02, clean.shape)) <= 10.0
    # scores unrelated to the prompt: the leave-one-out quality cannot beat the smoothest fit's by much
    noise = rng.random((400, 2))
    noise[:, 0] += 0.2  # model 0 is the best single model
    assert choose_ridge(x, noise) >= 100.0
    # a model that is best everywhere: every penalty routes alike, and the tie takes the largest
    assert choose_ridge(x, np.column_stack([np.ones(400), np.zeros(400)])) == 1000.0
    assert choose_ridge(x[:2], noise[:2]) is None and choose_ridge(x, noise, grid=()) is None


def test_the_penalty_is_chosen_on_a_sample_beyond_the_cap(rng, monkeypatch):
    import finerouter.routing.neighbours as neighbours

    x = _unit(rng.normal(size=(300, 6)))
    y = rng.random((300, 3))
    monkeypatch.setattr(neighbours, "RIDGE_CHOICE_PROMPTS", 100)
    sample = np.sort(np.random.default_rng(4).choice(300, size=100, replace=False))
    assert neighbours.choose_ridge(x, y, seed=4) == choose_ridge(x[sample], y[sample], seed=4)


def test_the_local_estimate_averages_the_neighbour_means_and_the_ridge(rng):
    reference = _unit(rng.normal(size=(80, 6))).astype(np.float32)
    scores = rng.random((80, 3))
    scores[:, 2] = np.nan  # never scored: the ridge cannot predict it, the neighbour mean (NaN) stays
    queries = _unit(rng.normal(size=(7, 6))).astype(np.float32)
    ridge = fit_ridge(reference, scores, 3.0)
    means = neighbour_means(queries, reference, scores, 9)
    got = local_estimates(queries, reference, scores, 9, ridge)
    np.testing.assert_allclose(got[:, :2], 0.5 * (means[:, :2] + ridge.predict(queries)[:, :2]))
    assert np.isnan(got[:, 2]).all()
    np.testing.assert_array_equal(local_estimates(queries, reference, scores, 9, None), means)
    assert isinstance(ridge, RidgeFit) and ridge.penalty == 3.0
