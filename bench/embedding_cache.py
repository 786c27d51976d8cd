"""How fast a large embedding cache opens and serves vectors.

    .venv/bin/python bench/embedding_cache.py --n 300000 --dim 384

Fills a temporary cache with ``n`` random unit vectors (no model involved; the cache does not care where
vectors come from), then times, in a fresh CachedEncoder: opening it and fetching 1,000 random texts, and
fetching all ``n``. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from finerouter.encoders import CachedEncoder


class _TableEncoder:
    """Serves pre-made vectors by text; counts calls so the bench can check nothing is re-embedded."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.name = f"bench-table|d={vectors.shape[1]}"
        self.dim = int(vectors.shape[1])
        self._row = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return self._vectors[[self._row[t] for t in texts]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shard-size", type=int, default=8192)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"benchmark prompt number {i}" for i in range(args.n)]
    table = _TableEncoder(texts, vectors)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        CachedEncoder(table, tmp, shard_size=args.shard_size).encode(texts)
        fill = time.perf_counter() - t0
        calls = table.calls

        t0 = time.perf_counter()
        cache = CachedEncoder(table, tmp)
        pick = rng.choice(args.n, size=min(1000, args.n), replace=False)
        got = cache.encode([texts[i] for i in pick])
        open_and_1k = time.perf_counter() - t0
        assert np.array_equal(got, vectors[pick])

        t0 = time.perf_counter()
        everything = cache.encode(texts)
        all_rows = time.perf_counter() - t0
        assert np.array_equal(everything, vectors) and table.calls == calls

        t0 = time.perf_counter()
        cache.compact()
        compact = time.perf_counter() - t0
        t0 = time.perf_counter()
        CachedEncoder(table, tmp).encode([texts[i] for i in pick])
        open_compacted = time.perf_counter() - t0

    print(f"vectors={args.n} dim={args.dim} shards={-(-args.n // args.shard_size)}")
    print(f"fill (hash + write shards): {fill:.2f} s")
    print(f"open + fetch 1,000 random: {open_and_1k:.3f} s")
    print(f"fetch all {args.n:,}: {all_rows:.2f} s")
    print(f"compact to one shard: {compact:.2f} s; open compacted + fetch 1,000: {open_compacted:.3f} s")


if __name__ == "__main__":
    main()
