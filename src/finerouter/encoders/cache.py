"""An on-disk embedding cache: a text is embedded once per encoder, ever.

Layout under ``cache_dir``: one folder ``<sha256(encoder name)[:16]>/`` per encoder, holding ``encoder.json``
(``{"name": ..., "dim": ...}``) and the shard files of :mod:`finerouter.encoders.shard_store`.

Each shard is self-describing and written atomically (temporary file, fsync, rename), so the set of shard
files *is* the index: no shared index file to corrupt or race on. A run that is interrupted keeps every shard
it finished; concurrent readers and writers (threads or processes) only ever see whole shards.

Resources stay bounded whatever the traffic (a gateway writes one small shard per routing batch with new
prompts):

- **No file stays open.** Opening a cache reads the ``keys`` of each shard into memory; vectors are read
  when asked for, through a descriptor and a memory map that live only for that call.
- **Few shards.** When there are more than ``max_shards``, shards of similar size are merged into one
  (size-tiered: eight or more shards of one size tier at a time, so a merge lands in a higher tier and each
  vector is rewritten only O(log n) times); a fit writes big shards and never triggers it.

Nothing in the cache's files is fatal. A shard that cannot be read as a whole shard (truncated, a garbage
header, sizes that do not match, vectors that are not finite unit rows) is logged, deleted and its texts
embedded again; an unreadable ``encoder.json`` is rewritten; a cache whose width disagrees with the encoder
is rebuilt; a shard that cannot be written (full disk, read-only folder) is logged and the vectors are still
returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._io import atomic_write_json
from finerouter._validation import check_int
from finerouter.encoders.base import Encoder, l2_normalise
from finerouter.encoders.sentence_transformer import check_texts
from finerouter.encoders.shard_store import (
    KEY_BYTES,
    MERGE_FACTOR,
    DamagedShard,
    NoLongerIndexed,
    ShardStore,
    merge_plan,
)
from finerouter.errors import EncoderError

logger = logging.getLogger(__name__)


def is_encoder(obj: object) -> bool:
    """Whether ``obj`` implements :class:`Encoder`, checked without evaluating properties.

    ``isinstance(obj, Encoder)`` would read ``obj.dim``, which loads the model of a lazy encoder.
    """
    import inspect

    missing = object()
    return all(inspect.getattr_static(obj, a, missing) is not missing for a in ("name", "dim")) and callable(
        getattr(obj, "encode", None)
    )


class CachedEncoder:
    """Wrap an :class:`~finerouter.encoders.base.Encoder` with an on-disk embedding cache.

    Texts already in the cache (same encoder ``name``, same SHA-256 of the text) are read back; the others
    are embedded by the wrapped encoder in chunks of ``shard_size`` texts, each chunk saved as one shard as
    soon as it is done. Duplicate texts within a call are embedded once. No file descriptor stays open
    between calls, and the number of shard files stays at most about ``max_shards`` (see the module
    docstring); a damaged cache is repaired, never fatal.

    Args:
        encoder: the encoder to wrap; its ``name`` keys the cache, so it must change whenever its vectors do.
        cache_dir: the cache folder (created if needed); several encoders can share it.
        shard_size: texts embedded and saved per shard.
        max_shards: more shards than this are merged (size-tiered, a few at a time).

    Attributes:
        n_hits, n_misses: texts served from the cache / embedded by the wrapped encoder, summed over calls.
    """

    def __init__(
        self,
        encoder: Encoder,
        cache_dir: str | os.PathLike[str],
        *,
        shard_size: int = 8192,
        max_shards: int = 64,
    ) -> None:
        if not is_encoder(encoder):
            raise EncoderError(
                f"CachedEncoder needs an Encoder (with name, dim, encode). Got {type(encoder).__name__}."
            )
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.shard_size = check_int(shard_size, "shard_size", type(self).__name__, low=1)
        self.max_shards = check_int(max_shards, "max_shards", type(self).__name__, low=MERGE_FACTOR)
        self.n_hits = 0
        self.n_misses = 0
        self._lock = threading.RLock()
        self._dim: int | None = None
        self._write_failed = False
        self._store = ShardStore(self.directory, lambda: self.dim)

    # -- protocol ---------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The wrapped encoder's name (the cache returns exactly its vectors)."""
        return self.encoder.name

    @property
    def dim(self) -> int:
        if self._dim is None:
            meta = self._read_meta()
            self._dim = int(meta["dim"]) if meta else int(self.encoder.dim)
        return self._dim

    def fingerprint(self) -> str:
        """The wrapped encoder's fingerprint (computed by the wrapped encoder, never from the cache)."""
        own_fingerprint = getattr(self.encoder, "fingerprint", None)
        if callable(own_fingerprint):
            return str(own_fingerprint())
        from finerouter.encoders.probes import fingerprint

        return fingerprint(self.encoder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder!r}, cache_dir={str(self.cache_dir)!r})"

    def for_corpus(self, texts: Sequence[str]) -> CachedEncoder:
        """The cache over the wrapped encoder's :func:`~finerouter.encoders.for_corpus` choice (itself if that
        is the wrapped encoder)."""
        from finerouter.encoders import for_corpus

        inner = for_corpus(self.encoder, texts)
        if inner is self.encoder:
            return self
        return type(self)(inner, self.cache_dir, shard_size=self.shard_size, max_shards=self.max_shards)

    @property
    def directory(self) -> Path:
        """This encoder's folder inside ``cache_dir``."""
        return self.cache_dir / hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:16]

    @property
    def n_shards(self) -> int:
        """Shard files indexed (including those written by other processes, as of the last call)."""
        return len(self._store.shards)

    def __len__(self) -> int:
        """Number of cached vectors for this encoder (including shards written by other processes)."""
        with self._lock:
            self._store.refresh()
            return len(self._store.index)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        with self._lock:
            self._store.refresh()
            return hashlib.sha256(text.encode("utf-8")).digest() in self._store.index

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (from the cache where possible): float32 ``(len(texts), dim)``, unit rows."""
        texts = check_texts(texts, type(self).__name__)
        digests = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        with self._lock:
            fresh: dict[bytes, np.ndarray] = {}  # vectors embedded by this call
            for _ in range(8):  # each retry follows a shard found damaged (then deleted) or removed elsewhere
                self._store.refresh()
                missing: dict[bytes, str] = {}
                for d, t in zip(digests, texts):
                    if d not in self._store.index and d not in fresh and d not in missing:
                        missing[d] = t
                if missing:
                    logger.info(
                        "Embedding cache %s: %d of %d texts cached, embedding %d",
                        self.directory,
                        len(texts) - sum(1 for d in digests if d in missing),
                        len(texts),
                        len(missing),
                    )
                fresh.update(self._embed_missing(missing))
                if not texts:
                    return np.zeros((0, self.dim), dtype=np.float32)
                try:
                    out = self._store.collect_vectors(digests, fresh)
                except DamagedShard as exc:
                    self._store.drop_damaged(exc.shard_id, exc.reason)
                    continue
                except NoLongerIndexed:
                    continue
                except FileNotFoundError:  # merged or cleared by another process meanwhile: index again
                    self._store.reset()
                    continue
                except OSError as exc:  # e.g. no file descriptor left: the cache must not fail the call
                    logger.warning("Embedding cache %s unreadable (%s); embedding directly", self.directory, exc)
                    out = self._as_unit_rows(np.asarray(self.encoder.encode(texts)), len(texts))
                break
            else:  # pragma: no cover - needs a cache damaged anew between every retry
                logger.warning(
                    "Embedding cache %s keeps failing; embedding %d texts directly", self.directory, len(texts)
                )
                out = self._as_unit_rows(np.asarray(self.encoder.encode(texts)), len(texts))
            self.n_hits += sum(1 for d in digests if d not in fresh)
            self.n_misses += len(fresh)
            if len(self._store.shards) > self.max_shards:
                self._store.compact_some(self.max_shards)
            return out

    # -- vectors embedded elsewhere -----------------------------------------------------------------------
    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not in the cache (as of now, shards of other processes included), in
        first-seen order: what an engine embedding elsewhere still has to compute."""
        texts = check_texts(texts, type(self).__name__)
        with self._lock:
            self._store.refresh()
            index = self._store.index
            return [t for t in dict.fromkeys(texts) if hashlib.sha256(t.encode("utf-8")).digest() not in index]

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Save ``vectors: (len(texts), dim)``, the wrapped encoder's embeddings of ``texts`` computed elsewhere
        (another process, a Ray worker), as one shard; they must come from an encoder of the same ``name``."""
        texts = check_texts(texts, type(self).__name__)
        if not texts:
            return
        emb = self._as_unit_rows(np.asarray(vectors), len(texts))
        with self._lock:
            self._check_width(int(emb.shape[1]))
            keys = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in texts)
            self._save_shard(np.frombuffer(keys, dtype=np.uint8).reshape(len(texts), KEY_BYTES), emb)
            self.n_misses += len(texts)

    # -- maintenance ------------------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge every shard into one (atomically; old shards removed afterwards). Returns the vector count.

        Other processes reading the old shards notice they are gone on their next call and index the merged
        one instead.
        """
        store = self._store
        with self._lock, store.compaction_lock(blocking=True):
            store.refresh()
            if len(store.shards) > 1:
                store.merge(sorted(store.shards))
            return len(store.index)

    def clear(self) -> None:
        """Delete every cached vector of this encoder."""
        with self._lock:
            self._store.clear()

    # -- internals: index -------------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any] | None:
        """This folder's ``encoder.json``; None when absent or damaged (it is rewritten on the next write)."""
        path = self.directory / "encoder.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("Embedding cache metadata %s is unreadable (%s); it will be rewritten", path, exc)
            return None
        if not isinstance(meta, dict) or not isinstance(meta.get("dim"), int) or meta["dim"] < 1:
            logger.warning("Embedding cache metadata %s is damaged (%r); it will be rewritten", path, meta)
            return None
        if meta.get("name") != self.name:
            raise EncoderError(
                f"Embedding cache folder {self.directory} belongs to encoder {meta.get('name')!r}, not {self.name!r}."
            )
        return meta

    def _ensure_meta(self) -> None:
        meta = self._read_meta()
        if meta is None or meta["dim"] != self.dim:
            atomic_write_json(self.directory / "encoder.json", {"name": self.name, "dim": int(self.dim)})

    def _as_unit_rows(self, emb: np.ndarray, n: int) -> np.ndarray:
        """The wrapped encoder's ``(n, dim)`` output as float32 unit rows; EncoderError if its shape or values
        are wrong."""
        if emb.ndim != 2 or emb.shape[0] != n or not np.isfinite(emb).all():
            raise EncoderError(f"Encoder {self.name!r} returned embeddings of shape {emb.shape} for {n} texts.")
        emb = emb.astype(np.float32, copy=False)
        norms = np.linalg.norm(emb, axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-4):  # the protocol promises unit rows; keep exact bits if so
            emb = l2_normalise(emb)
        return emb

    def _embed_missing(self, missing: dict[bytes, str]) -> dict[bytes, np.ndarray]:
        """Embed ``missing`` ({digest: text}) in chunks, saving each chunk as a shard; returns the vectors."""
        fresh: dict[bytes, np.ndarray] = {}
        if not missing:
            return fresh
        items = list(missing.items())
        for start in range(0, len(items), self.shard_size):
            chunk = items[start : start + self.shard_size]
            emb = self._as_unit_rows(np.asarray(self.encoder.encode([t for _, t in chunk])), len(chunk))
            self._check_width(int(emb.shape[1]))
            for (d, _), row in zip(chunk, emb):
                fresh[d] = row
            keys = np.frombuffer(b"".join(d for d, _ in chunk), dtype=np.uint8).reshape(len(chunk), KEY_BYTES)
            self._save_shard(keys, emb)
        return fresh

    def _check_width(self, width: int) -> None:
        """Accept the wrapped encoder's width; a cache folder of another width is rebuilt."""
        if self._dim is None:
            self._dim = width
        if width == self._dim:
            return
        if width != int(self.encoder.dim):
            raise EncoderError(f"Encoder {self.name!r} returned width {width} but says its dim is {self.encoder.dim}.")
        logger.warning(
            "Embedding cache %s holds vectors of width %d, but encoder %r gives %d; rebuilding it",
            self.directory,
            self._dim,
            self.name,
            width,
        )
        self.clear()
        self._dim = width

    def _save_shard(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard and index it; a failed write is logged (the vectors are served all the same)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._ensure_meta()
            path = self._store.write_shard(keys, vectors)
        except OSError as exc:
            if not self._write_failed:
                logger.warning(
                    "Could not write to the embedding cache %s (%s); new vectors are not cached", self.directory, exc
                )
            self._write_failed = True
            return
        self._write_failed = False
        self._store.add_shard(path, self.dim)



def unwrap_encoder(encoder: Any) -> Any:
    """The encoder behind a :class:`CachedEncoder` (``encoder`` itself otherwise)."""
    return encoder.encoder if isinstance(encoder, CachedEncoder) else encoder


__all__ = ["CachedEncoder", "is_encoder", "merge_plan", "unwrap_encoder"]
