"""An on-disk embedding cache: a text is embedded once per encoder, ever.

Layout under ``cache_dir``::

    <sha256(encoder name)[:16]>/
        encoder.json                      {"name": ..., "dim": ...}
        shard-<time>-<pid>-<rand>.safetensors   "keys" (n, 32) uint8 = sha256(text); "vectors" (n, d) float32

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

import contextlib
import hashlib
import json
import logging
import mmap
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
_LOCK_NAME = ".compact.lock"
_KEY_BYTES = 32
_MERGE_FACTOR = 8  # shards of one size tier merged at a time (and the tier width)
_MERGE_MAX_ROWS = 1 << 16  # a merge of many small shards stops at about this many rows (bounds its memory)
_STALE_TEMP_S = 3600.0  # temporary files of interrupted writes older than this are removed when compacting
_NORM_TOLERANCE = 1e-3


class _NoLongerIndexed(Exception):
    """A text indexed when the call began is no longer (the cache was rebuilt meanwhile): look again."""


class _DamagedShard(Exception):
    """A shard whose content is not a whole, valid shard (internal: it is deleted and its texts re-embedded)."""

    def __init__(self, shard_id: int, reason: str) -> None:
        super().__init__(reason)
        self.shard_id = shard_id
        self.reason = reason


@dataclass(frozen=True)
class _ShardFile:
    """Where one shard's tensors lie in its file (read once, when the shard is indexed)."""

    path: Path
    n: int
    size: int  # file size in bytes; shards are immutable, so another size means the file was damaged
    keys_offset: int  # absolute byte offset of "keys" (n, 32) uint8
    vectors_offset: int  # absolute byte offset of "vectors" (n, dim) float32


def _read_shard(path: Path, dim: int) -> tuple[_ShardFile, bytes]:
    """Validate a shard's layout and read its keys: ``(layout, n * 32 key bytes)``.

    Raises:
        EncoderError: the file is not a whole shard of width ``dim`` (names the defect).
        OSError: the file could not be read (FileNotFoundError when it vanished).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 8, 0)
        if len(head) != 8:
            raise EncoderError("truncated (no header)")
        n_header = int.from_bytes(head, "little")
        if n_header <= 1 or 8 + n_header > size or n_header > (1 << 20):
            raise EncoderError(f"invalid header length {n_header} for a file of {size} bytes")
        raw = os.pread(fd, n_header, 8)
        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise EncoderError(f"corrupt header ({exc})") from exc
        if not isinstance(header, dict):
            raise EncoderError("corrupt header (not a JSON object)")
        data_start = 8 + n_header
        spans = {}
        for name, dtype, width in (("keys", "U8", _KEY_BYTES), ("vectors", "F32", dim)):
            info = header.get(name)
            try:
                shape = [int(s) for s in info["shape"]]
                begin, end = (int(o) for o in info["data_offsets"])
                ok = info["dtype"] == dtype and len(shape) == 2 and shape[1] == width and shape[0] >= 0
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise EncoderError(f"no usable tensor {name!r} of width {width} in the header")
            itemsize = 1 if dtype == "U8" else 4
            if end - begin != itemsize * shape[0] * width or begin < 0:
                raise EncoderError(f"tensor {name!r}: its bytes do not match its shape {tuple(shape)}")
            spans[name] = (shape[0], begin, end)
        (n, keys_begin, keys_end), (n_vec, vectors_begin, vectors_end) = spans["keys"], spans["vectors"]
        if n != n_vec:
            raise EncoderError(f"{n} keys but {n_vec} vectors")
        if not (keys_end <= vectors_begin or vectors_end <= keys_begin):
            raise EncoderError("tensors overlap")
        expected_size = data_start + max(keys_end, vectors_end)
        if expected_size != size:
            raise EncoderError(f"size {size} bytes, expected {expected_size} (truncated or padded)")
        keys = os.pread(fd, keys_end - keys_begin, data_start + keys_begin)
        if len(keys) != keys_end - keys_begin:
            raise EncoderError("truncated keys")
    finally:
        os.close(fd)
    return _ShardFile(path, n, size, data_start + keys_begin, data_start + vectors_begin), keys


def _take_rows(mapped: mmap.mmap, shard: _ShardFile, dim: int, rows: np.ndarray) -> np.ndarray:
    """Copy rows ``rows`` of the shard's vectors out of its memory map (no view of the map survives)."""
    vectors = np.frombuffer(mapped, dtype="<f4", count=shard.n * dim, offset=shard.vectors_offset)
    return np.array(vectors.reshape(shard.n, dim)[rows], dtype=np.float32)


def _are_unit_rows(rows: np.ndarray) -> bool:
    """Whether every row is finite and of unit L2 norm (or all zero, as ``l2_normalise`` leaves zero rows)."""
    if not np.isfinite(rows).all():
        return False
    norms = np.linalg.norm(rows, axis=1)
    return bool(np.all((np.abs(norms - 1.0) <= _NORM_TOLERANCE) | (norms == 0.0)))


def _size_tier(n: int) -> int:
    """``floor(log_F(n))`` for the merge factor ``F`` (0 for ``n < F``)."""
    tier = 0
    while n >= _MERGE_FACTOR:
        n //= _MERGE_FACTOR
        tier += 1
    return tier


def merge_plan(sizes: dict[int, int]) -> list[int]:
    """Which shards to merge next, given ``{shard id: rows}`` (size-tiered compaction).

    The lowest size tier holding at least ``F`` (8) shards is merged, smallest first, as long as the merged
    shard stays under ``_MERGE_MAX_ROWS`` (2**16) rows (and at least ``F`` of them): the result holds ``>= F``
    times the tier's minimum size, so it lands in a higher tier and a vector is rewritten at most once per tier.
    With no such tier (only with more than ``F**9`` vectors) the ``F`` smallest shards are merged.
    """
    by_tier: dict[int, list[int]] = {}
    for shard_id, n in sizes.items():
        by_tier.setdefault(_size_tier(n), []).append(shard_id)
    for tier in sorted(by_tier):
        ids = sorted(by_tier[tier], key=lambda s: (sizes[s], s))
        if len(ids) >= _MERGE_FACTOR:
            total, plan = 0, []
            for shard_id in ids:
                if len(plan) >= _MERGE_FACTOR and total + sizes[shard_id] > _MERGE_MAX_ROWS:
                    break
                plan.append(shard_id)
                total += sizes[shard_id]
            return plan
    return sorted(sizes, key=lambda s: (sizes[s], s))[:_MERGE_FACTOR]


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
        self.max_shards = check_int(max_shards, "max_shards", type(self).__name__, low=_MERGE_FACTOR)
        self.n_hits = 0
        self.n_misses = 0
        self._lock = threading.RLock()
        self._shards: dict[int, _ShardFile] = {}
        self._by_name: dict[str, int] = {}
        self._skipped: set[str] = set()  # shard names that could not be read nor deleted
        self._index: dict[bytes, tuple[int, int]] = {}
        self._next_id = 0
        self._dim: int | None = None
        self._write_failed = False

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

    @property
    def directory(self) -> Path:
        """This encoder's folder inside ``cache_dir``."""
        return self.cache_dir / hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:16]

    @property
    def n_shards(self) -> int:
        """Shard files indexed (including those written by other processes, as of the last call)."""
        return len(self._shards)

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
            fresh: dict[bytes, np.ndarray] = {}  # vectors embedded by this call
            for _ in range(8):  # each retry follows a shard found damaged (then deleted) or removed elsewhere
                self._refresh()
                missing: dict[bytes, str] = {}
                for d, t in zip(digests, texts):
                    if d not in self._index and d not in fresh and d not in missing:
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
                    out = self._collect_vectors(digests, fresh)
                except _DamagedShard as exc:
                    self._drop_damaged(exc.shard_id, exc.reason)
                    continue
                except _NoLongerIndexed:
                    continue
                except FileNotFoundError:  # merged or cleared by another process meanwhile: index again
                    self._reset()
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
            if len(self._shards) > self.max_shards:
                self._compact_some()
            return out

    # -- maintenance ------------------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge every shard into one (atomically; old shards removed afterwards). Returns the vector count.

        Other processes reading the old shards notice they are gone on their next call and index the merged
        one instead.
        """
        with self._lock, self._compaction_lock(blocking=True):
            self._refresh()
            if len(self._shards) > 1:
                self._merge(sorted(self._shards))
            return len(self._index)

    def clear(self) -> None:
        """Delete every cached vector of this encoder."""
        with self._lock:
            for path in self.directory.glob(_SHARD_GLOB):
                with contextlib.suppress(OSError):
                    path.unlink()
            self._reset()

    # -- internals: index -------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._shards = {}
        self._by_name = {}
        self._skipped = set()
        self._index = {}

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

    def _refresh(self) -> None:
        """Index shards that appeared since the last look (written by us or by another process)."""
        folder = self.directory
        try:
            names = {p.name for p in folder.glob(_SHARD_GLOB)}
        except OSError:
            names = set()
        if any(name not in names for name in self._by_name):
            self._reset()  # another process merged or cleared shards we had indexed: index afresh
        new = sorted(n for n in names if n not in self._by_name and n not in self._skipped)
        if not new:
            return
        dim = self.dim
        for name in new:
            self._add_shard(folder / name, dim)

    def _add_shard(self, path: Path, dim: int) -> None:
        try:
            shard, keys = _read_shard(path, dim)
        except FileNotFoundError:
            return  # removed by a concurrent compaction; its merged successor will be indexed
        except EncoderError as exc:
            self._delete_damaged(path, str(exc))
            return
        except OSError as exc:  # unreadable here (permissions, not a file...): leave it alone
            logger.warning("Skipping unreadable embedding cache shard %s: %s", path, exc)
            self._skipped.add(path.name)
            return
        shard_id = self._next_id
        self._next_id += 1
        self._shards[shard_id] = shard
        self._by_name[path.name] = shard_id
        index = self._index
        for r in range(shard.n):
            index.setdefault(keys[_KEY_BYTES * r : _KEY_BYTES * (r + 1)], (shard_id, r))

    def _delete_damaged(self, path: Path, reason: str) -> None:
        logger.warning(
            "Embedding cache shard %s is damaged (%s); removing it, its texts will be embedded again", path, reason
        )
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("Could not remove damaged embedding cache shard %s: %s", path, exc)
            self._skipped.add(path.name)

    def _drop_damaged(self, shard_id: int, reason: str) -> None:
        shard = self._shards.pop(shard_id)
        self._by_name.pop(shard.path.name, None)
        self._index = {k: loc for k, loc in self._index.items() if loc[0] != shard_id}
        self._delete_damaged(shard.path, reason)

    # -- internals: reading and writing -----------------------------------------------------------------
    def _read_rows(self, shard_id: int, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of shard ``shard_id``'s vectors, checked to be finite unit rows.

        The file is opened and memory-mapped for this call only. Raises ``_DamagedShard`` (bad content) or
        FileNotFoundError (removed by another process).
        """
        shard = self._shards[shard_id]
        dim = self.dim
        fd = os.open(shard.path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != shard.size:
                raise _DamagedShard(shard_id, f"its size changed from {shard.size} bytes")
            if shard.n == 0 or len(rows) == 0:
                return np.zeros((0, dim), dtype=np.float32)
            with mmap.mmap(fd, shard.size, access=mmap.ACCESS_READ) as mapped:
                out = _take_rows(mapped, shard, dim, rows)
        except (ValueError, BufferError) as exc:
            raise _DamagedShard(shard_id, f"vectors unreadable ({exc})") from exc
        finally:
            os.close(fd)
        if not _are_unit_rows(out):
            raise _DamagedShard(shard_id, "vectors that are not finite unit rows")
        return out

    def _collect_vectors(self, digests: list[bytes], fresh: dict[bytes, np.ndarray]) -> np.ndarray:
        """``(len(digests), dim)`` the vector of each digest: from ``fresh`` (embedded by this call) or a shard.

        Raises ``_NoLongerIndexed``, ``_DamagedShard`` or FileNotFoundError; the caller indexes again and retries.
        """
        out = np.empty((len(digests), self.dim), dtype=np.float32)
        wanted: dict[int, tuple[list[int], list[int]]] = {}
        for i, d in enumerate(digests):
            vec = fresh.get(d)
            if vec is not None:
                out[i] = vec
                continue
            loc = self._index.get(d)
            if loc is None:
                raise _NoLongerIndexed
            shard_id, r = loc
            dest, rows = wanted.setdefault(shard_id, ([], []))
            dest.append(i)
            rows.append(r)
        for shard_id, (dest, rows) in wanted.items():
            out[dest] = self._read_rows(shard_id, np.asarray(rows, dtype=np.int64))
        return out

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
            keys = np.frombuffer(b"".join(d for d, _ in chunk), dtype=np.uint8).reshape(len(chunk), _KEY_BYTES)
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
            path = self._write_shard(keys, vectors)
        except OSError as exc:
            if not self._write_failed:
                logger.warning(
                    "Could not write to the embedding cache %s (%s); new vectors are not cached", self.directory, exc
                )
            self._write_failed = True
            return
        self._write_failed = False
        self._add_shard(path, self.dim)

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        path = self.directory / name
        save_arrays(path, {"keys": keys, "vectors": np.asarray(vectors, dtype=np.float32)})
        return path

    # -- internals: compaction --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _compaction_lock(self, *, blocking: bool) -> Iterator[bool]:
        """An advisory lock on the folder, so that two processes do not merge the same shards at once."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: merges may race, which costs only duplicates
            yield True
            return
        try:
            fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _compact_some(self) -> None:
        """Merge shards until at most ``max_shards`` remain (skipped while another process merges)."""
        with self._compaction_lock(blocking=False) as locked:
            if not locked:
                return
            self._refresh()
            self._remove_stale_temp_files()
            while len(self._shards) > self.max_shards:
                before = len(self._shards)
                self._merge(merge_plan({shard_id: s.n for shard_id, s in self._shards.items()}))
                if len(self._shards) >= before:  # nothing could be merged (unreadable files, full disk...)
                    return

    def _merge(self, group: list[int]) -> None:
        """Merge the shards ``group`` into one new shard (damaged ones are dropped; on failure nothing is lost)."""
        keys_parts: list[bytes] = []
        vector_parts: list[np.ndarray] = []
        merged: list[int] = []
        for shard_id in group:
            shard = self._shards[shard_id]
            try:
                _, keys = _read_shard(shard.path, self.dim)
                # Only the rows the index serves from this shard (a text in two shards is kept once).
                index = self._index
                rows = [
                    r for r in range(shard.n)
                    if index.get(keys[_KEY_BYTES * r : _KEY_BYTES * (r + 1)]) == (shard_id, r)
                ]
                vectors = self._read_rows(shard_id, np.asarray(rows, dtype=np.int64))
            except (_DamagedShard, EncoderError) as exc:
                self._drop_damaged(shard_id, exc.reason if isinstance(exc, _DamagedShard) else str(exc))
                continue
            except FileNotFoundError:
                self._reset()  # another process is changing the folder: index afresh, merge another time
                return
            except OSError as exc:
                logger.warning("Embedding cache compaction skipped %s: %s", shard.path, exc)
                continue
            keys_parts.extend(keys[_KEY_BYTES * r : _KEY_BYTES * (r + 1)] for r in rows)
            vector_parts.append(vectors)
            merged.append(shard_id)
        if not keys_parts:  # every row is served by another shard: the files only need removing
            for shard_id in merged:
                shard = self._shards.pop(shard_id)
                self._by_name.pop(shard.path.name, None)
                with contextlib.suppress(FileNotFoundError):
                    shard.path.unlink()
            return
        if len(merged) < 2:  # the others were unreadable here: nothing to merge
            return
        keys = np.frombuffer(b"".join(keys_parts), dtype=np.uint8).reshape(len(keys_parts), _KEY_BYTES)
        vectors = np.concatenate(vector_parts)
        try:
            path = self._write_shard(keys, vectors)
        except OSError as exc:
            logger.warning("Could not compact the embedding cache %s: %s", self.directory, exc)
            return
        old = [self._shards.pop(shard_id) for shard_id in merged]
        for shard in old:
            self._by_name.pop(shard.path.name, None)
        self._add_shard(path, self.dim)
        new_sid = self._by_name.get(path.name)
        if new_sid is None:  # the merged shard could not be read back: index the folder afresh
            self._reset()
        else:
            for r, key in enumerate(keys_parts):
                self._index[key] = (new_sid, r)
        for shard in old:
            with contextlib.suppress(FileNotFoundError):
                shard.path.unlink()
        logger.info("Merged %d embedding cache shards into %s (%d vectors)", len(old), path.name, len(keys_parts))

    def _remove_stale_temp_files(self) -> None:
        """Remove temporary files that interrupted writes left behind long ago."""
        now = time.time()
        for path in self.directory.glob(".shard-*.tmp"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_TEMP_S:
                    path.unlink()


__all__ = ["CachedEncoder", "is_encoder", "merge_plan"]
