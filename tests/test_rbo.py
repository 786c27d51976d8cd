"""Rank-biased overlap against hand-computed values and a direct set-based implementation."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.discovery import rank_biased_overlap
from finerouter.discovery.ranking import order_to_ranks
from finerouter.discovery.rbo import chance_corrected_rbo, expected_rbo, overlap_at_depth, rbo_floor
from finerouter.errors import DataError, ParameterError


def _ranks(*orders: list[int]) -> np.ndarray:
    return order_to_ranks(np.array(orders))


def _rbo_by_definition(s: list[int], t: list[int], p: float) -> float:
    """Webber et al. eq. 32 with explicit prefix sets."""
    k = len(s)
    agreement = [len(set(s[:d]) & set(t[:d])) / d for d in range(1, k + 1)]
    tail = sum(a * p**d for d, a in zip(range(1, k + 1), agreement))
    return agreement[-1] * p**k + (1 - p) / p * tail


def test_identical_rankings_score_one():
    a = _ranks([2, 0, 1, 3], [0, 1, 2, 3])
    assert np.allclose(rank_biased_overlap(a, a), 1.0)


def test_swap_of_the_top_two_of_three():
    # S = A B C, T = B A C, p = 0.9: X_1 = 0, X_2 = 2, X_3 = 3
    # RBO = (3/3) 0.9^3 + (0.1/0.9) (0/1 * 0.9 + 2/2 * 0.81 + 3/3 * 0.729)
    #     = 0.729 + 0.1111... * 1.539 = 0.729 + 0.171 = 0.900
    value = rank_biased_overlap(_ranks([0, 1, 2]), _ranks([1, 0, 2]), p=0.9)
    assert value.shape == (1,)
    assert value[0] == pytest.approx(0.900, abs=1e-12)


def test_reversed_three():
    # S = A B C, T = C B A: X_1 = 0, X_2 = 1, X_3 = 3
    # RBO = 0.729 + (1/9) (0 + 1/2 * 0.81 + 1 * 0.729) = 0.729 + 1.134 / 9 = 0.729 + 0.126 = 0.855
    value = rank_biased_overlap(_ranks([0, 1, 2]), _ranks([2, 1, 0]), p=0.9)[0]
    assert value == pytest.approx(0.855, abs=1e-12)
    assert rbo_floor(3, 0.9) == pytest.approx(0.855, abs=1e-12)


def test_swap_in_the_middle_of_four_at_p_half():
    # S = A B C D, T = A C B D, p = 0.5: X = (1, 1, 3, 4), A_d = (1, 1/2, 1, 1)
    # RBO = 1 * 0.5^4 + (0.5/0.5) (1 * 0.5 + 0.5 * 0.25 + 1 * 0.125 + 1 * 0.0625)
    #     = 0.0625 + 0.8125 = 0.875
    value = rank_biased_overlap(_ranks([0, 1, 2, 3]), _ranks([0, 2, 1, 3]), p=0.5)[0]
    assert value == pytest.approx(0.875, abs=1e-12)


def test_top_weighted():
    base = _ranks([0, 1, 2, 3, 4, 5])
    swap_top = _ranks([1, 0, 2, 3, 4, 5])
    swap_bottom = _ranks([0, 1, 2, 3, 5, 4])
    assert rank_biased_overlap(base, swap_bottom)[0] > rank_biased_overlap(base, swap_top)[0]


def test_vectorised_matches_definition_and_is_symmetric(rng):
    m, e = 9, 400
    orders_a = np.array([rng.permutation(m) for _ in range(e)])
    orders_b = np.array([rng.permutation(m) for _ in range(e)])
    a, b = order_to_ranks(orders_a), order_to_ranks(orders_b)
    got = rank_biased_overlap(a, b, p=0.8)
    want = [_rbo_by_definition(list(x), list(y), 0.8) for x, y in zip(orders_a, orders_b)]
    assert np.allclose(got, want, atol=1e-12)
    assert np.allclose(got, rank_biased_overlap(b, a, p=0.8))
    assert ((got >= rbo_floor(m, 0.8) - 1e-12) & (got <= 1.0)).all()


def test_overlap_at_depth_counts_common_prefix_items():
    a = _ranks([0, 1, 2, 3])
    b = _ranks([1, 3, 0, 2])
    # prefixes: {0}/{1} -> 0; {0,1}/{1,3} -> 1; {0,1,2}/{1,3,0} -> 2; all -> 4
    assert overlap_at_depth(a, b).tolist() == [[0, 1, 2, 4]]


def test_floor_of_nine_models():
    a = _ranks(list(range(9)))
    rev = _ranks(list(range(8, -1, -1)))
    assert rank_biased_overlap(a, rev)[0] == pytest.approx(0.553, abs=5e-4)
    assert rbo_floor(9, 0.9) == pytest.approx(rank_biased_overlap(a, rev)[0])


def test_expected_rbo_of_random_rankings():
    # m = 3, p = 0.9: E[X_d / d] = d / 3, so E = 0.729 + (1/9) (1/3 * 0.9 + 2/3 * 0.81 + 3/3 * 0.729)
    #                                          = 0.729 + (0.3 + 0.54 + 0.729) / 9 = 0.729 + 0.17433 = 0.90333
    assert expected_rbo(3, 0.9) == pytest.approx(0.729 + 1.569 / 9, abs=1e-12)
    # and it is the mean over all 6 x 6 pairs of permutations of 3 items
    from itertools import permutations

    perms = [list(p) for p in permutations(range(3))]
    a = _ranks(*[p for p in perms for _ in perms])
    b = _ranks(*[q for _ in perms for q in perms])
    assert rank_biased_overlap(a, b).mean() == pytest.approx(expected_rbo(3, 0.9), abs=1e-12)


def test_expected_rbo_matches_simulation(rng):
    m = 9
    a = order_to_ranks(np.array([rng.permutation(m) for _ in range(20000)]))
    b = order_to_ranks(np.array([rng.permutation(m) for _ in range(20000)]))
    assert rank_biased_overlap(a, b).mean() == pytest.approx(expected_rbo(m), abs=3e-3)


def test_chance_correction_maps_chance_to_zero_and_identity_to_one():
    e = expected_rbo(9)
    out = chance_corrected_rbo(np.array([1.0, e, 0.553, (1 + e) / 2]), 9)
    assert np.allclose(out, [1.0, 0.0, 0.0, 0.5])


def test_empty_and_errors():
    assert rank_biased_overlap(np.zeros((0, 3), dtype=int), np.zeros((0, 3), dtype=int)).shape == (0,)
    with pytest.raises(DataError, match="shape"):
        rank_biased_overlap(_ranks([0, 1, 2]), _ranks([0, 1, 2, 3]))
    with pytest.raises(DataError, match="row 0: not a full ranking"):
        rank_biased_overlap(np.array([[1, 1, 2]]), _ranks([0, 1, 2]))
    with pytest.raises(ParameterError, match="The 'p' parameter of rank_biased_overlap must be a float in"):
        rank_biased_overlap(_ranks([0, 1]), _ranks([1, 0]), p=1.0)
