"""The prompt graph: k nearest neighbours on embeddings, filtered and weighted by ranking similarity.

Construction (paper Sect. 3.1.1, "Graph Construction"):

1. **Candidate edges.** Each node's ``k`` nearest neighbours by cosine similarity (inner product of
   L2-normalised embeddings), itself excluded. ``knn="exact"`` uses a faiss ``IndexFlatIP`` (brute force);
   ``knn="hnsw"`` a faiss HNSW graph (approximate, level assignment seeded); ``knn="auto"`` picks exact up
   to :data:`EXACT_KNN_MAX_N` nodes and HNSW above. The directed kNN pairs are made undirected and deduped:
   ``(i, j)`` and ``(j, i)`` become one edge with the larger of the two cosines.
2. **Ranking filter.** Each candidate edge gets the rank-biased overlap (extrapolated, full rankings) of its
   two nodes' model rankings, by default corrected for chance (``rbo_adjust="chance"``,
   :func:`finerouter.discovery.rbo.chance_corrected_rbo`: identical rankings 1, no more agreement than two
   random rankings 0); edges with ``RBO < tau`` are dropped. Raw RBO (``rbo_adjust="none"``) of any two
   full rankings of up to 11 models is above 0.48 at ``p = 0.9`` (:func:`finerouter.discovery.rbo.rbo_floor`),
   so ``tau = 0.4`` would drop nothing.
3. **Weights.** Cosine and RBO are each min-max normalised over the *candidate* edges of step 1 (so the
   scale does not depend on which edges the filter removed; a constant column normalises to 1), and an
   edge's weight is the geometric mean ``sqrt(cos_norm * rbo_norm)`` of the two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from finerouter._validation import check_choice, check_float, check_int
from finerouter.discovery.rbo import chance_corrected_rbo, extrapolated_rbo
from finerouter.errors import DataError

logger = logging.getLogger(__name__)

#: ``knn="auto"`` searches exactly up to this many nodes, with HNSW above.
EXACT_KNN_MAX_N = 20_000
#: HNSW settings: links per node, construction beam and search beam (search beam at least ``2 k``).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 48


@dataclass
class Edges:
    """An undirected weighted graph as parallel arrays (each edge once, ``u < v``).

    Attributes:
        n_nodes: number of nodes.
        u, v: ``(e,)`` int64 endpoints.
        weight: ``(e,)`` float64 weight in ``[0, 1]``.
        cosine: ``(e,)`` float64 raw cosine similarity.
        rbo: ``(e,)`` float64 RBO of the endpoints' rankings (chance-corrected unless built with
            ``rbo_adjust="none"``).
        n_candidates: number of undirected kNN edges before the RBO filter.
    """

    n_nodes: int
    u: np.ndarray
    v: np.ndarray
    weight: np.ndarray
    cosine: np.ndarray
    rbo: np.ndarray
    n_candidates: int

    @property
    def n_edges(self) -> int:
        return int(self.u.size)


def _import_faiss():  # noqa: ANN202 - faiss is imported lazily
    """The faiss module, imported on first use (importing the package stays cheap)."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("task discovery needs faiss: pip install faiss-cpu") from exc
    return faiss


def _check_embeddings(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, d)`` array; DataError naming the first non-finite row."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"embeddings must be a 2-D (n, d) array, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        r = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise DataError(f"embeddings, row {r}: not finite")
    return x


def resolve_knn_method(n: int, knn: str) -> str:
    """``"exact"`` or ``"hnsw"`` for ``n`` nodes under ``knn`` in ``{"auto", "exact", "hnsw"}``."""
    check_choice(knn, "knn", "knn_search", ("auto", "exact", "hnsw"))
    if knn == "auto":
        return "exact" if n <= EXACT_KNN_MAX_N else "hnsw"
    return knn


def _drop_self(idx: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``(n, k+1)`` results, drop each row's own index (or its last hit when self is absent)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    # keep only the first self hit; rows without one drop their last column instead
    first_self = is_self & (np.cumsum(is_self, axis=1) == 1)
    no_self = ~first_self.any(axis=1)
    first_self[no_self, -1] = True
    keep = ~first_self
    return idx[keep].reshape(n, k), sim[keep].reshape(n, k)


def knn_search(
    embeddings: np.ndarray, k: int, *, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every row by inner product (cosine for unit rows), self excluded.

    Args:
        embeddings: ``(n, d)`` float32, L2-normalised rows.
        k: neighbours per node; capped at ``n - 1``.
        method: ``"auto"``, ``"exact"`` (faiss IndexFlatIP) or ``"hnsw"`` (faiss IndexHNSWFlat).
        seed: seeds HNSW's level assignment.

    Returns:
        ``(indices (n, k') int64, similarities (n, k') float32)`` with ``k' = min(k, n - 1)``, best first;
        a missing neighbour (HNSW can return fewer than asked) is ``-1`` with similarity ``-inf``.
    """
    x = _check_embeddings(embeddings)
    n, d = x.shape
    k = check_int(k, "k", "knn_search", low=1)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    faiss = _import_faiss()
    how = resolve_knn_method(n, method)
    if how == "exact":
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.rng = faiss.RandomGenerator(int(seed))
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * (k + 1))
    index.add(x)
    sim, idx = index.search(x, k + 1)
    idx = idx.astype(np.int64, copy=False)
    sim = np.where(idx < 0, -np.inf, sim).astype(np.float32, copy=False)
    return _drop_self(idx, sim, k)


def knn_recall(
    embeddings: np.ndarray, indices: np.ndarray, *, sample: int = 1000, seed: int = 0
) -> float:
    """Recall@k of approximate neighbours against exact search, on a random sample of query rows.

    Args:
        embeddings: ``(n, d)`` the searched vectors (L2-normalised).
        indices: ``(n, k)`` the neighbours to grade (self excluded, ``-1`` = missing).
        sample: number of query rows to check (all rows when ``n`` is smaller).
        seed: picks the sample.

    Returns:
        The share of the exact ``k`` neighbours (self excluded) found in ``indices``, over the sample.
    """
    x = _check_embeddings(embeddings)
    indices = np.asarray(indices, dtype=np.int64)
    n = x.shape[0]
    k = indices.shape[1]
    if k == 0 or n < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    exact = _exact_neighbours_of(x, rows, k)
    found = (exact[:, :, None] == indices[rows][:, None, :]).any(axis=2)
    return float(found.mean())


def _exact_neighbours_of(x: np.ndarray, rows: np.ndarray, k: int, block: int = 32768) -> np.ndarray:
    """``(len(rows), k)`` exact top-``k`` inner-product neighbours of ``x[rows]`` in ``x``, self excluded.

    Brute force in blocks of ``block`` database rows with numpy's BLAS matrix product, keeping a running
    top-``k`` -- memory ``O(len(rows) * block)``.
    """
    q = x[rows]
    best_sim = np.full((rows.size, 0), -np.inf, dtype=np.float32)
    best_idx = np.zeros((rows.size, 0), dtype=np.int64)
    for lo in range(0, x.shape[0], block):
        sims = q @ x[lo : lo + block].T
        cols = np.arange(lo, lo + sims.shape[1])
        sims[rows[:, None] == cols[None, :]] = -np.inf  # never the query itself
        take = min(k, sims.shape[1])
        part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        best_sim = np.concatenate([best_sim, np.take_along_axis(sims, part, axis=1)], axis=1)
        best_idx = np.concatenate([best_idx, cols[part]], axis=1)
        if best_sim.shape[1] > k:
            keep = np.argpartition(-best_sim, k - 1, axis=1)[:, :k]
            best_sim = np.take_along_axis(best_sim, keep, axis=1)
            best_idx = np.take_along_axis(best_idx, keep, axis=1)
    return best_idx


def _minmax_scale(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to ``[0, 1]`` as float64; a constant ``x`` scales to all ones."""
    if x.size == 0:
        return x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return np.ones_like(x, dtype=np.float64)
    return (x.astype(np.float64) - lo) / (hi - lo)


def build_graph(
    embeddings: np.ndarray,
    ranks: np.ndarray,
    *,
    k: int = 5,
    tau: float = 0.4,
    rbo_p: float = 0.9,
    knn: str = "auto",
    seed: int = 0,
    rbo_adjust: str = "chance",
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> Edges:
    """Build the filtered, weighted, undirected kNN graph of the module docstring.

    Args:
        embeddings: ``(n, d)`` L2-normalised node embeddings.
        ranks: ``(n, m)`` 1-based model ranks per node (see :func:`finerouter.discovery.rank_models`).
        k: neighbours per node (capped at ``n - 1``).
        tau: RBO threshold; edges below it are dropped.
        rbo_p: RBO persistence.
        knn: ``"auto"``, ``"exact"`` or ``"hnsw"``.
        seed: seeds the HNSW index.
        rbo_adjust: ``"chance"`` (chance-corrected RBO) or ``"none"`` (raw RBO) for the filter and weights.
        neighbours: precomputed ``knn_search`` result ``(indices, similarities)`` to reuse.

    Returns:
        :class:`Edges`, each undirected edge once with ``u < v``.
    """
    k = check_int(k, "k", "build_graph", low=1)
    tau = check_float(tau, "tau", "build_graph", low=0.0, high=1.0)
    rbo_p = check_float(rbo_p, "rbo_p", "build_graph", low=0.0, high=1.0, closed="neither")
    check_choice(rbo_adjust, "rbo_adjust", "build_graph", ("chance", "none"))
    x = _check_embeddings(embeddings)
    ranks = np.asarray(ranks, dtype=np.int64)
    n = x.shape[0]
    if ranks.ndim != 2 or ranks.shape[0] != n:
        raise DataError(f"ranks must have shape ({n}, m), got {ranks.shape}")
    idx, sim = neighbours if neighbours is not None else knn_search(x, k, method=knn, seed=seed)
    src = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    dst = idx.ravel()
    cos = sim.ravel().astype(np.float64)
    ok = dst >= 0
    src, dst, cos = src[ok], dst[ok], cos[ok]
    u = np.minimum(src, dst)
    v = np.maximum(src, dst)
    key = u * n + v
    # dedupe (i, j)/(j, i): sort by key then by cosine descending, keep the first of each key
    order = np.lexsort((-cos, key))
    key, u, v, cos = key[order], u[order], v[order], cos[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    u, v, cos = u[first], v[first], cos[first]
    n_candidates = int(u.size)
    rbo = extrapolated_rbo(ranks[u], ranks[v], rbo_p) if n_candidates else np.zeros(0)
    if rbo_adjust == "chance":
        rbo = chance_corrected_rbo(rbo, ranks.shape[1], rbo_p)
    cos_n = _minmax_scale(cos)
    rbo_n = _minmax_scale(rbo)
    keep = rbo >= tau - 1e-12
    weight = np.sqrt(cos_n * rbo_n)
    edges = Edges(
        n_nodes=n,
        u=u[keep],
        v=v[keep],
        weight=weight[keep],
        cosine=cos[keep],
        rbo=rbo[keep],
        n_candidates=n_candidates,
    )
    logger.debug(
        "graph: %d nodes, %d candidate edges, %d kept (RBO >= %.2f)", n, n_candidates, edges.n_edges, tau
    )
    return edges
