"""An on-disk embedding cache: a text is embedded once per encoder, ever.

Layout under ``cache_dir``::

    <sha256(encoder name)[:16]>/
        encoder.json                      {"name": ..., "dim": ...}
        shard-<time>-<pid>-<rand>.safetensors   "keys" (n, 32) uint8 = sha256(text); "vectors" (n, d) float32

Each shard is self-describing and written atomically (temporary file, fsync, rename), so the set of shard
files *is* the index: no shared index file to corrupt or race on. A run that is interrupted keeps every shard
it finished; concurrent readers and writers (threads or processes) only ever see whole shards. Opening a
cache reads just the ``keys`` of each shard; vectors are memory-mapped and only the rows asked for are read,
so a cache of 300K vectors opens in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._io import atomic_write_json, save_arrays
from finerouter._validation import check_int
from finerouter.encoders.base import Encoder, l2_normalise
from finerouter.encoders.sentence_transformer import _check_texts
from finerouter.errors import EncoderError

logger = logging.getLogger(__name__)

_SHARD_GLOB = "shard-*.safetensors"
_DTYPES = {"F32": np.float32, "U8": np.uint8}


def _read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """(header dict, byte offset where the data section starts) of a safetensors file."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise EncoderError(f"Embedding cache shard {path} is truncated.")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > (100 << 20):
            raise EncoderError(f"Embedding cache shard {path} has an invalid header length {n}.")
        raw = fh.read(n)
    if len(raw) != n:
        raise EncoderError(f"Embedding cache shard {path} is truncated.")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise EncoderError(f"Embedding cache shard {path} has a corrupt header: {exc}") from exc
    return header, 8 + n


def _memmap_tensor(path: Path, header: dict[str, Any], data_start: int, name: str) -> np.ndarray:
    """Memory-map one tensor of a safetensors file, read-only, without reading its bytes."""
    info = header.get(name)
    if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
        raise EncoderError(f"Embedding cache shard {path} has no usable tensor {name!r}.")
    dtype = np.dtype(_DTYPES[info["dtype"]])
    shape = tuple(int(s) for s in info["shape"])
    begin, end = (int(o) for o in info["data_offsets"])
    if end - begin != dtype.itemsize * int(np.prod(shape)):
        raise EncoderError(f"Embedding cache shard {path}: tensor {name!r} size does not match its shape.")
    if data_start + end > path.stat().st_size:
        raise EncoderError(f"Embedding cache shard {path} is truncated.")
    if end == begin:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)


def is_encoder(obj: object) -> bool:
    """Whether ``obj`` implements :class:`Encoder`, checked without evaluating properties.

    ``isinstance(obj, Encoder)`` would read ``obj.dim``, which loads the model of a lazy encoder.
    """
    import inspect

    missing = object()
    return all(inspect.getattr_static(obj, a, missing) is not missing for a in ("name", "dim")) and callable(
        getattr(obj, "encode", None)
    )


class _Shard:
    __slots__ = ("keys", "path", "vectors")

    def __init__(self, path: Path, dim: int) -> None:
        header, start = _read_safetensors_header(path)
        self.path = path
        self.keys = _memmap_tensor(path, header, start, "keys")
        self.vectors = _memmap_tensor(path, header, start, "vectors")
        n = self.keys.shape[0]
        if self.keys.shape != (n, 32) or self.vectors.shape != (n, dim):
            raise EncoderError(
                f"Embedding cache shard {path}: shapes keys{self.keys.shape} vectors{self.vectors.shape} "
                f"do not match ({n}, 32) and ({n}, {dim})."
            )


class CachedEncoder:
    """Wrap an :class:`~finerouter.encoders.base.Encoder` with an on-disk embedding cache.

    Texts already in the cache (same encoder ``name``, same SHA-256 of the text) are read back; the others
    are embedded by the wrapped encoder in chunks of ``shard_size`` texts, each chunk saved as one shard as
    soon as it is done. Duplicate texts within a call are embedded once.

    Args:
        encoder: the encoder to wrap; its ``name`` keys the cache, so it must change whenever its vectors do.
        cache_dir: the cache folder (created if needed); several encoders can share it.
        shard_size: texts embedded and saved per shard.

    Attributes:
        n_hits, n_misses: texts served from the cache / embedded by the wrapped encoder, summed over calls.
    """

    def __init__(self, encoder: Encoder, cache_dir: str | os.PathLike[str], *, shard_size: int = 8192) -> None:
        if not is_encoder(encoder):
            raise EncoderError(
                f"CachedEncoder needs an Encoder (with name, dim, encode). Got {type(encoder).__name__}."
            )
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.shard_size = check_int(shard_size, "shard_size", type(self).__name__, low=1)
        self.n_hits = 0
        self.n_misses = 0
        self._lock = threading.RLock()
        self._shards: list[_Shard] = []
        self._seen: set[str] = set()
        self._index: dict[bytes, tuple[int, int]] = {}
        self._dim: int | None = None

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
        fp = getattr(self.encoder, "fingerprint", None)
        if callable(fp):
            return str(fp())
        from finerouter.encoders.probes import fingerprint

        return fingerprint(self.encoder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder!r}, cache_dir={str(self.cache_dir)!r})"

    @property
    def directory(self) -> Path:
        """This encoder's folder inside ``cache_dir``."""
        return self.cache_dir / hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:16]

    def __len__(self) -> int:
        """Number of cached vectors for this encoder (including shards written by other processes)."""
        with self._lock:
            self._refresh()
            return len(self._index)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        with self._lock:
            self._refresh()
            return hashlib.sha256(text.encode("utf-8")).digest() in self._index

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (from the cache where possible): float32 ``(len(texts), dim)``, unit rows."""
        texts = _check_texts(texts, type(self).__name__)
        digests = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        with self._lock:
            self._refresh()
            missing: dict[bytes, str] = {}
            for d, t in zip(digests, texts):
                if d not in self._index and d not in missing:
                    missing[d] = t
            n_cached = sum(1 for d in digests if d not in missing)
            if missing:
                logger.info(
                    "Embedding cache %s: %d of %d texts cached, embedding %d",
                    self.directory,
                    n_cached,
                    len(texts),
                    len(missing),
                )
            self._embed_missing(missing)
            self.n_hits += n_cached
            self.n_misses += len(missing)
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            return self._gather(digests)

    # -- maintenance ------------------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge every shard into one (atomically; old shards removed afterwards). Returns the vector count.

        Readers that already mapped an old shard keep working (POSIX keeps the data until unmapped); others
        pick up the merged shard on their next refresh.
        """
        with self._lock:
            self._refresh()
            if len(self._shards) <= 1:
                return len(self._index)
            digests = list(self._index)
            keys = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
            vectors = self._gather(digests)
            old = [sh.path for sh in self._shards]
            new_path = self._write_shard(keys, vectors)
            for path in old:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            self._reset()
            self._refresh()
            logger.info("Compacted %d shards into %s", len(old), new_path.name)
            return len(self._index)

    def clear(self) -> None:
        """Delete every cached vector of this encoder."""
        with self._lock:
            for path in self.directory.glob(_SHARD_GLOB):
                path.unlink(missing_ok=True)
            self._reset()

    # -- internals --------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._shards = []
        self._seen = set()
        self._index = {}

    def _read_meta(self) -> dict[str, Any] | None:
        path = self.directory / "encoder.json"
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EncoderError(f"Embedding cache metadata {path} is unreadable: {exc}") from exc
        if meta.get("name") != self.name:
            raise EncoderError(
                f"Embedding cache folder {self.directory} belongs to encoder {meta.get('name')!r}, not {self.name!r}."
            )
        return meta

    def _ensure_meta(self) -> None:
        if self._read_meta() is None:
            atomic_write_json(self.directory / "encoder.json", {"name": self.name, "dim": int(self.dim)})

    def _refresh(self) -> None:
        """Index shards that appeared since the last look (written by us or by another process)."""
        folder = self.directory
        if not folder.is_dir():
            if self._shards:
                self._reset()
            return
        new = sorted(p for p in folder.glob(_SHARD_GLOB) if p.name not in self._seen)
        if not new:
            return
        dim = self.dim
        for path in new:
            self._seen.add(path.name)
            try:
                shard = _Shard(path, dim)
            except FileNotFoundError:
                continue  # removed by a concurrent compaction; its merged successor will be indexed
            except (EncoderError, OSError, ValueError) as exc:
                logger.warning("Ignoring unreadable embedding cache shard %s: %s", path, exc)
                continue
            s = len(self._shards)
            self._shards.append(shard)
            keys = np.ascontiguousarray(shard.keys).tobytes()
            index = self._index
            for r in range(shard.keys.shape[0]):
                index.setdefault(keys[32 * r : 32 * r + 32], (s, r))

    def _embed_missing(self, missing: dict[bytes, str]) -> None:
        if not missing:
            return
        items = list(missing.items())
        self.directory.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(items), self.shard_size):
            chunk = items[start : start + self.shard_size]
            chunk_texts = [t for _, t in chunk]
            emb = np.asarray(self.encoder.encode(chunk_texts))
            if emb.ndim != 2 or emb.shape[0] != len(chunk) or not np.isfinite(emb).all():
                raise EncoderError(
                    f"Encoder {self.name!r} returned embeddings of shape {emb.shape} for {len(chunk)} texts."
                )
            if self._dim is None:
                self._dim = int(emb.shape[1])
            if emb.shape[1] != self.dim:
                raise EncoderError(
                    f"Encoder {self.name!r} returned width {emb.shape[1]}, but its cache holds width {self.dim}."
                )
            self._ensure_meta()
            keys = np.frombuffer(b"".join(d for d, _ in chunk), dtype=np.uint8).reshape(len(chunk), 32)
            emb = emb.astype(np.float32, copy=False)
            norms = np.linalg.norm(emb, axis=1)
            if np.any(np.abs(norms - 1.0) > 1e-4):  # the protocol promises unit rows; keep exact bits if so
                emb = l2_normalise(emb)
            self._write_shard(keys, emb)
            self._refresh()

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        path = self.directory / name
        save_arrays(path, {"keys": keys, "vectors": np.asarray(vectors, dtype=np.float32)})
        return path

    def _gather(self, digests: list[bytes]) -> np.ndarray:
        index = self._index
        locs = np.array([index[d] for d in digests], dtype=np.int64).reshape(len(digests), 2)
        out = np.empty((len(digests), self.dim), dtype=np.float32)
        for s in np.unique(locs[:, 0]):
            dest = np.flatnonzero(locs[:, 0] == s)
            out[dest] = self._shards[int(s)].vectors[locs[dest, 1]]
        return out


__all__ = ["CachedEncoder", "is_encoder"]
