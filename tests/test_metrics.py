"""Evaluation metrics on small hand-made cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finerouter.errors import DataError
from finerouter.evaluation import metrics

SCORES = np.array(
    [
        [1.0, 0.0, 0.5],
        [0.0, 1.0, np.nan],
        [0.2, 0.4, 0.9],
        [1.0, 1.0, 0.0],
    ]
)
COSTS = np.array([[1.0, 2.0, 4.0]] * 4)


def test_quality_counts_unscored_choice_as_zero():
    choice = np.array([0, 2, 2, 1])  # row 1 picks an unscored model
    assert metrics.chosen_scores(SCORES, choice).tolist() == [1.0, 0.0, 0.9, 1.0]
    assert metrics.mean_quality(SCORES, choice) == pytest.approx(2.9 / 4)
    assert metrics.unscored_share(SCORES, choice) == pytest.approx(0.25)


def test_mean_cost_and_unknown_costs():
    choice = np.array([0, 1, 2, 2])
    assert metrics.mean_cost(COSTS, choice) == pytest.approx((1 + 2 + 4 + 4) / 4)
    assert metrics.mean_cost(None, choice) is None
    costs = COSTS.copy()
    costs[3, 2] = np.nan
    assert metrics.mean_cost(costs, choice) == pytest.approx((1 + 2 + 4) / 3)


def test_per_task_quality():
    choice = np.array([0, 1, 0, 2])
    per = metrics.per_task_quality(SCORES, choice, ["a", "a", "b", "b"])
    assert per == {"a": pytest.approx(1.0), "b": pytest.approx(0.1)}


def test_headroom_is_one_for_oracle_zero_for_best_single():
    oracle_choice = np.array([0, 1, 2, 0])
    q_oracle = metrics.mean_quality(SCORES, oracle_choice)
    best = int(np.nanargmax(np.nanmean(SCORES, axis=0)))
    q_best = metrics.mean_quality(SCORES, np.full(4, best))
    assert metrics.headroom_captured(q_oracle, q_best, q_oracle) == pytest.approx(1.0)
    assert metrics.headroom_captured(q_best, q_best, q_oracle) == pytest.approx(0.0)
    assert metrics.headroom_captured(0.5 * (q_best + q_oracle), q_best, q_oracle) == pytest.approx(0.5)
    assert metrics.headroom_captured(q_best - 0.1, q_best, q_oracle) < 0
    assert metrics.headroom_captured(0.7, 0.7, 0.7) is None  # no gap to close


def test_routing_distribution_sums_to_one_and_lists_every_model():
    dist = metrics.routing_distribution(np.array([0, 0, 2, 0]), ["a", "b", "c"])
    assert dist == {"a": 0.75, "b": 0.0, "c": 0.25}


def test_bad_choice_is_rejected():
    with pytest.raises(DataError, match="model indices"):
        metrics.mean_quality(SCORES, np.array([0, 1, 3, 0]))
    with pytest.raises(DataError, match="shape"):
        metrics.mean_quality(SCORES, np.array([0, 1]))


@pytest.mark.parametrize(
    ("costs", "qualities", "low", "high", "area"),
    [
        ([0.0, 1.0], [0.0, 1.0], 0.0, 1.0, 0.5),  # the diagonal
        ([0.0, 10.0], [0.0, 1.0], 0.0, 10.0, 0.5),  # same after normalising the cost axis
        ([0.5], [0.8], 0.0, 1.0, 0.4),  # 0 left of the only point, flat to the right
        ([0.0], [0.8], 0.0, 1.0, 0.8),  # reaches 0.8 at the cheapest cost: area 0.8
        ([0.25, 0.75], [0.2, 0.6], 0.0, 1.0, 0.5 * 0.4 + 0.25 * 0.6),
        ([0.0, 0.5, 1.0], [0.5, 0.3, 0.9], 0.0, 1.0, 0.25 + 0.35),  # running max: the dip is ignored
        ([-1.0, 0.0, 1.0], [0.2, 0.4, 0.4], 0.0, 1.0, 0.4),  # cheaper than the cheapest model: clipped to [0, 1]
        ([1.0, 0.0, 0.5], [1.0, 0.0, 0.5], 0.0, 1.0, 0.5),  # order of points does not matter
        ([2.0], [0.9], 0.0, 1.0, 0.0),  # never operates within the axis
    ],
)
def test_curve_area_on_known_curves(costs, qualities, low, high, area):
    assert metrics.normalised_curve_area(costs, qualities, low, high) == pytest.approx(area)


def test_curve_area_undefined_without_a_cost_range():
    assert metrics.normalised_curve_area([1.0], [0.5], 1.0, 1.0) is None
    assert metrics.normalised_curve_area([float("nan")], [0.5], 0.0, 1.0) is None


def test_cost_fraction_at_best_single_quality():
    costs, quals = [1.0, 2.0, 3.0, 4.0], [0.5, 0.7, 0.8, 0.9]
    assert metrics.cost_fraction_at_quality(costs, quals, 0.7, reference_cost=4.0) == pytest.approx(0.5)
    assert metrics.cost_fraction_at_quality(costs, quals, 0.75, reference_cost=4.0) == pytest.approx(0.75)
    assert metrics.cost_fraction_at_quality(costs, quals, 0.95, reference_cost=4.0) is None


def test_cost_quality_curve_sweeps_the_chooser():
    scores = np.array([[1.0, 0.0], [0.0, 1.0]])
    costs = np.array([[1.0, 3.0], [1.0, 3.0]])

    def choose(tol: float) -> np.ndarray:
        return np.array([0, 1]) if tol < 0.5 else np.array([0, 0])

    curve = metrics.cost_quality_curve(choose, scores, costs, [0.0, 1.0])
    assert curve == {"tolerance": [0.0, 1.0], "cost": [2.0, 1.0], "quality": [1.0, 0.5]}


def test_mean_std_uses_sample_std_and_skips_missing():
    assert metrics.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert metrics.mean_std([2.0, None]) == (2.0, 0.0)
    assert metrics.mean_std([None]) == (None, None)


def test_paired_comparison():
    ref = [0.70, 0.72, 0.71, 0.69, 0.73]
    other = [0.60, 0.65, 0.62, 0.61, 0.66]
    c = metrics.paired_comparison(ref, other)
    assert c["diff_mean"] == pytest.approx(np.mean(np.subtract(ref, other)))
    assert (c["wins"], c["losses"], c["ties"]) == (5, 0, 0)
    assert c["ttest_p"] < 0.001
    assert c["sign_test_p"] == pytest.approx(2 * 0.5**5)
    same = metrics.paired_comparison(ref, ref)
    assert same["ties"] == 5 and same["ttest_p"] is None and same["sign_test_p"] is None
    mixed = metrics.paired_comparison([0.5, 0.6], [0.6, 0.5])
    assert (mixed["wins"], mixed["losses"]) == (1, 1) and mixed["ttest_p"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("costs", "qualities", "aiq"),
    [
        ([0.0, 0.5, 1.0], [0.0, 0.8, 1.0], 0.5 * 0.4 + 0.5 * 0.9),  # concave already: the hull is the curve
        ([0.0, 0.5, 1.0], [0.0, 0.2, 1.0], 0.5),  # a point under the chord is mixed away: the diagonal
        ([0.0, 0.5, 1.0], [0.5, 0.9, 0.6], 0.5 * 0.7 + 0.5 * 0.9),  # cut at the best point, flat after it
        ([0.5], [0.8], 0.4),  # 0 left of the only point, as the curve area
        ([1.0, 0.0, 0.5], [1.0, 0.0, 0.8], 0.5 * 0.4 + 0.5 * 0.9),  # order of points does not matter
        ([-1.0, 1.0], [0.2, 0.6], 0.5 * (0.4 + 0.6)),  # cheaper than the cheapest model: the hull at x=0 is 0.4
    ],
)
def test_aiq_on_known_hulls(costs, qualities, aiq):
    assert metrics.aiq(costs, qualities, 0.0, 1.0) == pytest.approx(aiq)


def test_nondecreasing_convex_hull_vertices():
    hc, hq = metrics.nondecreasing_convex_hull([0.0, 0.2, 0.5, 0.5, 1.0, 0.8], [0.1, 0.2, 0.9, 0.3, 0.95, 0.4])
    assert hc == [0.0, 0.5, 1.0] and hq == [0.1, 0.9, 0.95]
    assert metrics.nondecreasing_convex_hull([float("nan")], [0.5]) == ([], [])
    assert metrics.aiq([float("nan")], [0.5], 0.0, 1.0) is None
    assert metrics.aiq([0.5], [0.5], 1.0, 1.0) is None


def test_zero_router_is_the_hull_of_single_models():
    # cheapest 0.5 at $1, middle 0.7 at $2 (above the chord), best 0.9 at $4; x = 0, 1/3, 1
    curve = metrics.zero_router_curve([1.0, 2.0, 4.0], [0.5, 0.7, 0.9])
    assert curve == {"cost": [1.0, 2.0, 4.0], "quality": [0.5, 0.7, 0.9]}
    assert metrics.aiq(curve["cost"], curve["quality"], 1.0, 4.0) == pytest.approx(0.6 / 3 + 0.8 * 2 / 3)
    # a dominated model (pricier and worse than the cheapest) is not on the hull: the chord 0.5 -> 0.9
    dominated = metrics.zero_router_curve([1.0, 2.0, 4.0], [0.5, 0.4, 0.9])
    assert dominated["cost"] == [1.0, 4.0]
    assert metrics.aiq(dominated["cost"], dominated["quality"], 1.0, 4.0) == pytest.approx(0.7)


def test_aiq_is_at_least_the_running_max_area(rng):
    for _ in range(50):
        c, q = rng.random(8), rng.random(8)
        assert metrics.aiq(c, q, 0.0, 1.0) >= metrics.normalised_curve_area(c, q, 0.0, 1.0) - 1e-12
        assert metrics.aiq(c, q, 0.0, 1.0) <= q.max() + 1e-12


def test_quality_at_fraction_of_best_single_cost():
    costs, quals = [1.0, 2.0, 3.0, 4.0], [0.5, 0.7, 0.8, 0.9]
    assert metrics.quality_at_cost(costs, quals, 0.5 * 4.0) == pytest.approx(0.7)
    assert metrics.quality_at_cost(costs, quals, 0.25 * 4.0) == pytest.approx(0.5)
    assert metrics.quality_at_cost(costs, quals, 0.9) is None  # no point that cheap
    assert metrics.quality_at_cost([1.0, 2.0], [0.8, 0.6], 2.0) == pytest.approx(0.8)  # best, not the last


def test_reliability_bins_and_expected_calibration_error_by_hand():
    expected = np.array([0.05, 0.05, 0.95, 0.95, np.nan, 0.5])
    truth = np.array([0.0, 0.0, 1.0, 0.0, 1.0, np.nan])  # the last two pairs are ignored
    rel = metrics.reliability_bins(expected, truth, n_bins=10)
    assert rel["count"] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert rel["predicted"][0] == pytest.approx(0.05) and rel["observed"][9] == pytest.approx(0.5)
    # bin 0: |0.05 - 0| * 2/4; bin 9: |0.95 - 0.5| * 2/4
    assert metrics.expected_calibration_error(expected, truth) == pytest.approx(0.025 + 0.225)
    assert metrics.expected_calibration_error(np.array([1.0]), np.array([1.0])) == 0.0  # 1.0 falls in the last bin
    assert np.isnan(metrics.expected_calibration_error(np.array([np.nan]), np.array([1.0])))
    with pytest.raises(DataError, match="same size"):
        metrics.reliability_bins(np.zeros(3), np.zeros(4))
