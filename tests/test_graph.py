"""kNN search (exact and HNSW), recall, and the filtered, weighted, undirected prompt graph."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.discovery import build_graph, knn_recall, knn_search, rank_biased_overlap, rank_models
from finerouter.discovery.graph import resolve_knn_method
from finerouter.discovery.rbo import chance_corrected_rbo
from finerouter.encoders.base import l2_normalise
from finerouter.errors import DataError, ParameterError


def _clustered(rng: np.random.Generator, n: int = 600, d: int = 32, c: int = 6) -> np.ndarray:
    centres = rng.standard_normal((c, d))
    return l2_normalise(centres[rng.integers(0, c, n)] + 0.5 * rng.standard_normal((n, d)))


def _brute_force(x: np.ndarray, k: int) -> np.ndarray:
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def test_exact_knn_matches_brute_force_and_excludes_self(rng):
    x = _clustered(rng, n=300)
    idx, sim = knn_search(x, 5, method="exact")
    assert idx.shape == (300, 5) and sim.shape == (300, 5)
    assert not (idx == np.arange(300)[:, None]).any()
    want = _brute_force(x, 5)
    # compare as sets (floating ties could reorder equal similarities)
    assert all(set(a) == set(b) for a, b in zip(idx.tolist(), want.tolist()))
    assert np.allclose(sim, np.take_along_axis(x @ x.T, idx, axis=1), atol=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # best first


def test_duplicate_rows_still_exclude_self():
    x = l2_normalise(np.ones((6, 4)))  # all identical: self may not come first
    idx, _ = knn_search(x, 3, method="exact")
    assert idx.shape == (6, 3)
    assert not (idx == np.arange(6)[:, None]).any()


def test_k_is_capped_by_the_number_of_nodes(rng):
    x = _clustered(rng, n=4)
    idx, _ = knn_search(x, 10, method="exact")
    assert idx.shape == (4, 3)
    assert all(sorted(row) == sorted(set(range(4)) - {i}) for i, row in enumerate(idx.tolist()))


def test_hnsw_recall_is_high_and_seeded(rng):
    x = _clustered(rng, n=3000, d=48, c=20)
    idx_a, _ = knn_search(x, 5, method="hnsw", seed=3)
    idx_b, _ = knn_search(x, 5, method="hnsw", seed=3)
    assert (idx_a == idx_b).all()
    assert knn_recall(x, idx_a, sample=500) >= 0.9


def test_recall_grades_neighbour_lists(rng):
    x = _clustered(rng, n=400)
    exact, _ = knn_search(x, 5, method="exact")
    assert knn_recall(x, exact, sample=400) == pytest.approx(1.0)
    wrong = (exact + 1) % 400
    random = np.array([rng.choice(400, 5, replace=False) for _ in range(400)])
    assert knn_recall(x, random, sample=400) < 0.2
    half = exact.copy()
    half[:, 2:] = -1
    assert knn_recall(x, half, sample=400) == pytest.approx(0.4)
    assert knn_recall(x, wrong, sample=400) < 1.0


def test_auto_switches_to_hnsw_for_large_n():
    assert resolve_knn_method(100, "auto") == "exact"
    assert resolve_knn_method(10**6, "auto") == "hnsw"
    assert resolve_knn_method(10, "hnsw") == "hnsw"
    with pytest.raises(ParameterError, match="The 'knn' parameter of knn_search must be one of"):
        resolve_knn_method(10, "ivf")


def _graph_inputs(rng: np.random.Generator, n: int = 200, m: int = 6):
    x = _clustered(rng, n=n)
    scores = rng.random((n, m))
    return x, scores, rank_models(scores)


def test_graph_is_undirected_deduped_and_filtered(rng):
    x, _, ranks = _graph_inputs(rng)
    g = build_graph(x, ranks, k=5, tau=0.3)
    assert (g.u < g.v).all()
    keys = g.u * g.n_nodes + g.v
    assert np.unique(keys).size == keys.size
    # every kept edge is a kNN pair in at least one direction
    idx, _ = knn_search(x, 5, method="exact")
    pairs = {(i, j) for i in range(len(x)) for j in idx[i]}
    assert all((a, b) in pairs or (b, a) in pairs for a, b in zip(g.u.tolist(), g.v.tolist()))
    # number of undirected candidates = distinct unordered kNN pairs
    assert g.n_candidates == len({(min(a, b), max(a, b)) for a, b in pairs})
    # the filter: stored RBO is the chance-corrected RBO of the endpoints, and all kept are >= tau
    want = chance_corrected_rbo(rank_biased_overlap(ranks[g.u], ranks[g.v]), ranks.shape[1])
    assert np.allclose(g.rbo, want)
    assert (g.rbo >= 0.3).all()
    assert 0 < g.n_edges < g.n_candidates


def test_weights_are_geometric_mean_of_min_max_over_candidates(rng):
    x, _, ranks = _graph_inputs(rng, n=120)
    every = build_graph(x, ranks, k=4, tau=0.0)  # tau 0 keeps every candidate
    assert every.n_edges == every.n_candidates
    cos_n = (every.cosine - every.cosine.min()) / (every.cosine.max() - every.cosine.min())
    rbo_n = (every.rbo - every.rbo.min()) / (every.rbo.max() - every.rbo.min())
    assert np.allclose(every.weight, np.sqrt(cos_n * rbo_n))
    assert np.allclose(every.cosine, np.sum(x[every.u] * x[every.v], axis=1), atol=1e-5)
    # filtering does not change the surviving edges' weights (min-max is over the candidates)
    some = build_graph(x, ranks, k=4, tau=0.5)
    lookup = dict(zip((every.u * 1000 + every.v).tolist(), every.weight.tolist()))
    assert np.allclose(some.weight, [lookup[key] for key in (some.u * 1000 + some.v).tolist()])
    assert ((some.weight >= 0) & (some.weight <= 1)).all()


def test_tau_one_keeps_only_identical_rankings(rng):
    x, _, ranks = _graph_inputs(rng, n=150, m=3)
    g = build_graph(x, ranks, k=5, tau=1.0)
    assert (ranks[g.u] == ranks[g.v]).all()
    raw = build_graph(x, ranks, k=5, tau=0.4, rbo_adjust="none")
    assert raw.n_edges == raw.n_candidates  # raw RBO of 3-model rankings is never below 0.855


def test_bad_inputs(rng):
    x, _, ranks = _graph_inputs(rng, n=20)
    with pytest.raises(DataError, match="ranks must have shape"):
        build_graph(x, ranks[:5])
    with pytest.raises(DataError, match="row 3: not finite"):
        bad = x.copy()
        bad[3, 0] = np.nan
        knn_search(bad, 3)
    with pytest.raises(ParameterError, match="The 'tau' parameter of build_graph must be a float in"):
        build_graph(x, ranks, tau=1.5)
