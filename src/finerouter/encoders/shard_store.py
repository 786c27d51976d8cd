"""The on-disk shard store behind :class:`~finerouter.encoders.cache.CachedEncoder`.

Layout of one encoder's folder::

    encoder.json                      {"name": ..., "dim": ...}  (owned by CachedEncoder)
    shard-<time>-<pid>-<rand>.safetensors   "keys" (n, 32) uint8 = sha256(text); "vectors" (n, d) float32

Each shard is self-describing and written atomically (temporary file, fsync, rename), so the set of shard
files *is* the index: no shared index file to corrupt or race on. Shards are immutable once written; only
merging (size-tiered, see :func:`merge_plan`) and clearing remove them.

Contracts of :class:`ShardStore`:

- No file stays open: indexing reads the ``keys`` of each shard into memory; vectors are read through a
  descriptor and a memory map that live only for one :meth:`ShardStore.read_rows` call.
- A shard that is not a whole, valid shard (truncated, a garbage header, sizes that do not match, vectors
  that are not finite unit rows) is logged and deleted; its texts simply stop being indexed.
- Shards removed by another process (merged or cleared) are noticed and the folder is indexed afresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finerouter._io import save_arrays
from finerouter.errors import EncoderError

logger = logging.getLogger(__name__)

_SHARD_GLOB = "shard-*.safetensors"
_LOCK_NAME = ".compact.lock"
KEY_BYTES = 32
MERGE_FACTOR = 8  # shards of one size tier merged at a time (and the tier width)
_MERGE_MAX_ROWS = 1 << 16  # a merge of many small shards stops at about this many rows (bounds its memory)
_STALE_TEMP_S = 3600.0  # temporary files of interrupted writes older than this are removed when compacting
_NORM_TOLERANCE = 1e-3


class NoLongerIndexed(Exception):
    """A text indexed when the call began is no longer (the cache was rebuilt meanwhile): look again."""


class DamagedShard(Exception):
    """A shard whose content is not a whole, valid shard (internal: it is deleted and its texts re-embedded)."""

    def __init__(self, shard_id: int, reason: str) -> None:
        super().__init__(reason)
        self.shard_id = shard_id
        self.reason = reason


@dataclass(frozen=True)
class ShardFile:
    """Where one shard's tensors lie in its file (read once, when the shard is indexed)."""

    path: Path
    n: int
    size: int  # file size in bytes; shards are immutable, so another size means the file was damaged
    keys_offset: int  # absolute byte offset of "keys" (n, 32) uint8
    vectors_offset: int  # absolute byte offset of "vectors" (n, dim) float32


def read_shard(path: Path, dim: int) -> tuple[ShardFile, bytes]:
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
        for name, dtype, width in (("keys", "U8", KEY_BYTES), ("vectors", "F32", dim)):
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
    return ShardFile(path, n, size, data_start + keys_begin, data_start + vectors_begin), keys


def _take_rows(mapped: mmap.mmap, shard: ShardFile, dim: int, rows: np.ndarray) -> np.ndarray:
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
    while n >= MERGE_FACTOR:
        n //= MERGE_FACTOR
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
        if len(ids) >= MERGE_FACTOR:
            total, plan = 0, []
            for shard_id in ids:
                if len(plan) >= MERGE_FACTOR and total + sizes[shard_id] > _MERGE_MAX_ROWS:
                    break
                plan.append(shard_id)
                total += sizes[shard_id]
            return plan
    return sorted(sizes, key=lambda s: (sizes[s], s))[:MERGE_FACTOR]



class ShardStore:
    """The shards of one encoder's cache folder and the in-memory index ``{sha256(text): (shard id, row)}``.

    Not thread-safe: the owner (``CachedEncoder``) serialises calls. When a text is in several shards, the
    first shard indexed serves it.

    Args:
        directory: the encoder's folder (created by the owner before the first write).
        dim: returns the vector width; called only when a shard is read, so a lazy encoder is not loaded
            just to look at an empty folder.
    """

    def __init__(self, directory: Path, dim: Callable[[], int]) -> None:
        self.directory = directory
        self._dim = dim
        self.shards: dict[int, ShardFile] = {}
        self.index: dict[bytes, tuple[int, int]] = {}
        self._by_name: dict[str, int] = {}
        self._skipped: set[str] = set()  # shard names that could not be read nor deleted
        self._next_id = 0

    @property
    def dim(self) -> int:
        """The vector width of every shard."""
        return self._dim()

    def clear(self) -> None:
        """Delete every shard file (those that cannot be deleted are left) and forget the index."""
        for path in self.directory.glob(_SHARD_GLOB):
            with contextlib.suppress(OSError):
                path.unlink()
        self.reset()

    def reset(self) -> None:
        """Forget the index (the next refresh indexes the folder afresh)."""
        self.shards = {}
        self._by_name = {}
        self._skipped = set()
        self.index = {}

    def refresh(self) -> None:
        """Index shards that appeared since the last look (written by us or by another process)."""
        folder = self.directory
        try:
            names = {p.name for p in folder.glob(_SHARD_GLOB)}
        except OSError:
            names = set()
        if any(name not in names for name in self._by_name):
            self.reset()  # another process merged or cleared shards we had indexed: index afresh
        new = sorted(n for n in names if n not in self._by_name and n not in self._skipped)
        if not new:
            return
        dim = self.dim
        for name in new:
            self.add_shard(folder / name, dim)

    def add_shard(self, path: Path, dim: int) -> None:
        """Index the shard at ``path``; a damaged one is deleted, an unreadable one skipped (both logged)."""
        try:
            shard, keys = read_shard(path, dim)
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
        self.shards[shard_id] = shard
        self._by_name[path.name] = shard_id
        index = self.index
        for r in range(shard.n):
            index.setdefault(keys[KEY_BYTES * r : KEY_BYTES * (r + 1)], (shard_id, r))

    def _delete_damaged(self, path: Path, reason: str) -> None:
        """Log and delete a damaged shard file (remembered as skipped if it cannot be deleted)."""
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

    def drop_damaged(self, shard_id: int, reason: str) -> None:
        """Forget an indexed shard found damaged and delete its file."""
        shard = self.shards.pop(shard_id)
        self._by_name.pop(shard.path.name, None)
        self.index = {k: loc for k, loc in self.index.items() if loc[0] != shard_id}
        self._delete_damaged(shard.path, reason)

    def read_rows(self, shard_id: int, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of shard ``shard_id``'s vectors, checked to be finite unit rows.

        The file is opened and memory-mapped for this call only. Raises ``DamagedShard`` (bad content) or
        FileNotFoundError (removed by another process).
        """
        shard = self.shards[shard_id]
        dim = self.dim
        fd = os.open(shard.path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != shard.size:
                raise DamagedShard(shard_id, f"its size changed from {shard.size} bytes")
            if shard.n == 0 or len(rows) == 0:
                return np.zeros((0, dim), dtype=np.float32)
            with mmap.mmap(fd, shard.size, access=mmap.ACCESS_READ) as mapped:
                out = _take_rows(mapped, shard, dim, rows)
        except (ValueError, BufferError) as exc:
            raise DamagedShard(shard_id, f"vectors unreadable ({exc})") from exc
        finally:
            os.close(fd)
        if not _are_unit_rows(out):
            raise DamagedShard(shard_id, "vectors that are not finite unit rows")
        return out

    def collect_vectors(self, digests: list[bytes], fresh: dict[bytes, np.ndarray]) -> np.ndarray:
        """``(len(digests), dim)`` the vector of each digest: from ``fresh`` (embedded by this call) or a shard.

        Raises ``NoLongerIndexed``, ``DamagedShard`` or FileNotFoundError; the caller indexes again and retries.
        """
        out = np.empty((len(digests), self.dim), dtype=np.float32)
        wanted: dict[int, tuple[list[int], list[int]]] = {}
        for i, d in enumerate(digests):
            vec = fresh.get(d)
            if vec is not None:
                out[i] = vec
                continue
            loc = self.index.get(d)
            if loc is None:
                raise NoLongerIndexed
            shard_id, r = loc
            dest, rows = wanted.setdefault(shard_id, ([], []))
            dest.append(i)
            rows.append(r)
        for shard_id, (dest, rows) in wanted.items():
            out[dest] = self.read_rows(shard_id, np.asarray(rows, dtype=np.int64))
        return out

    def write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        """Write one shard atomically (not indexed; see :meth:`add_shard`); OSError when it cannot be written."""
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        path = self.directory / name
        save_arrays(path, {"keys": keys, "vectors": np.asarray(vectors, dtype=np.float32)})
        return path

    # -- internals: compaction --------------------------------------------------------------------------
    @contextlib.contextmanager
    def compaction_lock(self, *, blocking: bool) -> Iterator[bool]:
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

    def compact_some(self, max_shards: int) -> None:
        """Merge shards until at most ``max_shards`` remain (skipped while another process merges)."""
        with self.compaction_lock(blocking=False) as locked:
            if not locked:
                return
            self.refresh()
            self._remove_stale_temp_files()
            while len(self.shards) > max_shards:
                before = len(self.shards)
                self.merge(merge_plan({shard_id: s.n for shard_id, s in self.shards.items()}))
                if len(self.shards) >= before:  # nothing could be merged (unreadable files, full disk...)
                    return

    def merge(self, group: list[int]) -> None:
        """Merge the shards ``group`` into one new shard (damaged ones are dropped; on failure nothing is lost)."""
        keys_parts: list[bytes] = []
        vector_parts: list[np.ndarray] = []
        merged: list[int] = []
        for shard_id in group:
            shard = self.shards[shard_id]
            try:
                _, keys = read_shard(shard.path, self.dim)
                # Only the rows the index serves from this shard (a text in two shards is kept once).
                index = self.index
                rows = [
                    r for r in range(shard.n)
                    if index.get(keys[KEY_BYTES * r : KEY_BYTES * (r + 1)]) == (shard_id, r)
                ]
                vectors = self.read_rows(shard_id, np.asarray(rows, dtype=np.int64))
            except (DamagedShard, EncoderError) as exc:
                self.drop_damaged(shard_id, exc.reason if isinstance(exc, DamagedShard) else str(exc))
                continue
            except FileNotFoundError:
                self.reset()  # another process is changing the folder: index afresh, merge another time
                return
            except OSError as exc:
                logger.warning("Embedding cache compaction skipped %s: %s", shard.path, exc)
                continue
            keys_parts.extend(keys[KEY_BYTES * r : KEY_BYTES * (r + 1)] for r in rows)
            vector_parts.append(vectors)
            merged.append(shard_id)
        if not keys_parts:  # every row is served by another shard: the files only need removing
            for shard_id in merged:
                shard = self.shards.pop(shard_id)
                self._by_name.pop(shard.path.name, None)
                with contextlib.suppress(FileNotFoundError):
                    shard.path.unlink()
            return
        if len(merged) < 2:  # the others were unreadable here: nothing to merge
            return
        keys = np.frombuffer(b"".join(keys_parts), dtype=np.uint8).reshape(len(keys_parts), KEY_BYTES)
        vectors = np.concatenate(vector_parts)
        try:
            path = self.write_shard(keys, vectors)
        except OSError as exc:
            logger.warning("Could not compact the embedding cache %s: %s", self.directory, exc)
            return
        old = [self.shards.pop(shard_id) for shard_id in merged]
        for shard in old:
            self._by_name.pop(shard.path.name, None)
        self.add_shard(path, self.dim)
        new_sid = self._by_name.get(path.name)
        if new_sid is None:  # the merged shard could not be read back: index the folder afresh
            self.reset()
        else:
            for r, key in enumerate(keys_parts):
                self.index[key] = (new_sid, r)
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


__all__ = ["KEY_BYTES", "MERGE_FACTOR", "DamagedShard", "NoLongerIndexed", "ShardFile", "ShardStore", "merge_plan", "read_shard"]
