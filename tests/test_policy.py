import numpy as np
import pytest

from finerouter.routing.policy import choose_models, combine_scores, minmax_rows


def test_minmax_rows_basic_and_constant_rows():
    x = np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0], [np.nan, 0.0, 2.0]])
    out = minmax_rows(x)
    np.testing.assert_allclose(out[0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(out[1], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[2], [0.0, 0.0, 1.0])


def test_combine_scores_is_eq5():
    s2 = np.array([[0.2, 0.4, 0.3]])
    s1 = np.array([[1.0, 0.0, 0.5]])
    out = combine_scores(s2, s1, 0.5)
    np.testing.assert_allclose(out, 0.5 * np.array([[0, 1, 0.5]]) + 0.5 * np.array([[1, 0, 0.5]]))
    np.testing.assert_allclose(combine_scores(s2, s1, 1.0), [[0.0, 1.0, 0.5]])


def test_tolerance_zero_picks_best_and_breaks_ties_by_cost():
    final = np.array([[0.9, 1.0, 1.0], [0.1, 0.2, 0.3]])
    costs = np.array([[1.0, 3.0, 2.0], [1.0, 1.0, 1.0]])
    choice, over = choose_models(final, costs, 0.0)
    assert choice.tolist() == [2, 2]
    assert not over.any()


def test_tolerance_picks_cheapest_within_tolerance():
    final = np.array([[1.0, 0.85, 0.7, 0.0]])
    costs = np.array([[10.0, 5.0, 1.0, 0.1]])
    assert choose_models(final, costs, 0.1)[0][0] == 0
    assert choose_models(final, costs, 0.2)[0][0] == 1
    assert choose_models(final, costs, 0.3)[0][0] == 2
    assert choose_models(final, costs, 1.0)[0][0] == 3


def test_higher_tolerance_never_raises_cost(rng):
    final = rng.random((300, 7))
    costs = rng.random((300, 7))
    prev = None
    for tol in np.linspace(0, 1, 21):
        choice, _ = choose_models(final, costs, float(tol))
        c = costs[np.arange(300), choice]
        if prev is not None:
            assert np.all(c <= prev + 1e-15)
        prev = c


def test_allowed_models_and_max_cost():
    final = np.array([[1.0, 0.9, 0.1]])
    costs = np.array([[5.0, 2.0, 1.0]])
    allowed = np.array([False, True, True])
    assert choose_models(final, costs, 0.0, allowed)[0][0] == 1
    choice, over = choose_models(final, costs, 0.0, None, max_cost=3.0)
    assert choice[0] == 1 and not over[0]
    choice, over = choose_models(final, costs, 0.0, allowed, max_cost=0.5)
    assert choice[0] == 2 and over[0]


def test_unknown_costs_fall_back_to_best_score():
    final = np.array([[0.5, 0.9]])
    assert choose_models(final, None, 0.5)[0][0] == 1
    costs = np.array([[np.nan, np.nan]])
    assert choose_models(final, costs, 0.5)[0][0] == 1


@pytest.mark.parametrize("tol", [0.0, 0.3])
def test_nan_final_never_chosen(tol):
    final = np.array([[np.nan, 0.2, 0.1]])
    costs = np.array([[0.0, 1.0, 2.0]])
    assert choose_models(final, costs, tol)[0][0] in (1, 2)


def test_minmax_rows_over_reference_columns():
    from finerouter.routing.policy import minmax_rows

    x = np.array([[0.2, 0.6, 0.0, np.nan], [0.5, 0.5, 0.9, 0.1]])
    out = minmax_rows(x, reference=np.array([0, 1]))
    # row 0: the reference spans [0.2, 0.6]; the others are placed on that scale, unclipped; NaN maps to 0
    np.testing.assert_allclose(out[0], [0.0, 1.0, -0.5, 0.0])
    np.testing.assert_allclose(minmax_rows(np.array([[0.2, 0.6, 0.4, 0.9, 0.0]]), reference=[0, 1]),
                               [[0.0, 1.0, 0.5, 1.75, -0.5]])
    # row 1: the reference is constant, so the row is normalised over every column
    np.testing.assert_allclose(out[1], minmax_rows(x[1:])[0])
    np.testing.assert_array_equal(minmax_rows(x, reference=np.arange(4)), minmax_rows(x))


def test_clip_to_reference_clips_the_other_columns_to_each_rows_reference_range():
    from finerouter.routing.policy import clip_to_reference, minmax_rows

    x = np.array([[0.2, 0.6, 0.9, 0.0], [0.5, np.nan, np.nan, 0.7], [np.nan, np.nan, 0.3, np.nan]])
    out = clip_to_reference(x, np.array([0, 1]))
    np.testing.assert_allclose(out[0], [0.2, 0.6, 0.6, 0.2])
    np.testing.assert_allclose(out[1], [0.5, np.nan, np.nan, 0.5])  # NaN stays NaN; one finite reference entry
    np.testing.assert_allclose(out[2], x[2])  # no finite reference entry: unchanged
    assert clip_to_reference(x, None) is x
    # clipped first, the other columns normalise into [0, 1]: at best they tie the reference's best
    y = np.array([[0.2, 0.6, 0.4, 0.9, 0.0], [0.1, 0.3, 0.5, -1.0, 0.2]])
    np.testing.assert_allclose(minmax_rows(clip_to_reference(y, [0, 1]), [0, 1]),
                               np.clip(minmax_rows(y, [0, 1]), 0.0, 1.0))
