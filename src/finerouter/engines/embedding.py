"""Embedding through an engine, streamed into the embedding cache.

:func:`embed_texts` is what a router, the evaluation and the CLI call to embed many texts. Without an engine, or
with the :class:`~finerouter.engines.base.LocalEngine`, it is ``encoder.encode(texts)``, unchanged. With a
distributed engine, the texts the cache lacks are embedded by the engine's workers, each rebuilding the encoder
from :func:`encoder_factory` (its ``config()`` when it has one); finished batches come back as they finish and
are saved to the cache in shards of the cache's ``shard_size``. A job killed half-way keeps every shard it
saved, and the next run embeds only the rest. The vectors returned are then read from the cache, so they are
the vectors a later plain run reads too.

A sentence-transformers encoder's vectors depend, in the last bits of float32, on which texts share its
padded batches; the engine's batches differ from the plain path's, so the two agree to float32 rounding
(about 1e-7), not bit for bit. Encoders that embed each text alone (such as
:class:`finerouter.testing.FakeEncoder`) give identical vectors.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _rebuild(module: str, qualname: str, config: dict[str, Any]) -> Any:
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls.from_config(config)


def _as_is(encoder: Any) -> Any:
    return encoder


def _encode_fn(build: Callable[[], Any]) -> Callable[[list[str]], np.ndarray]:
    return build().encode


def encoder_builder(encoder: Any) -> Callable[[], Any]:
    """A picklable function that builds ``encoder`` where it is called (a worker): from its class and
    ``config()`` when it has ``from_config`` (a model then loads in the worker, not on the driver), else the
    object itself, shipped as it is."""
    config = getattr(encoder, "config", None)
    from_config = getattr(type(encoder), "from_config", None)
    if callable(config) and callable(from_config):
        cls = type(encoder)
        return functools.partial(_rebuild, cls.__module__, cls.__qualname__, config())
    return functools.partial(_as_is, encoder)


def encoder_factory(encoder: Any) -> Callable[[], Callable[[list[str]], np.ndarray]]:
    """A picklable ``make_fn`` for :meth:`~finerouter.engines.base.Engine.map_batches`: builds ``encoder``
    (:func:`encoder_builder`) once per worker and returns its ``encode``."""
    return functools.partial(_encode_fn, encoder_builder(encoder))


def embed_texts(
    encoder: Any,
    texts: Sequence[str],
    engine: Any = None,
    *,
    progress: Callable[[int, int], object] | None = None,
) -> np.ndarray:
    """``(len(texts), dim)`` float32 unit rows of ``texts`` by ``encoder``, computed by ``engine``.

    Args:
        encoder: an Encoder, usually a :class:`~finerouter.encoders.CachedEncoder` (then only the texts it lacks
            are sent to the engine, and each finished shard is saved as soon as it is complete).
        engine: None or a local engine (``encoder.encode(texts)``), or a distributed
            :class:`~finerouter.engines.base.Engine` (or a Ray address: :func:`~finerouter.engines.resolve_engine`).
        progress: called with ``(texts done, texts to embed)`` after each shard is saved (or, without a cache,
            each batch); an exception it raises stops the job, keeping what was saved.
    """
    from finerouter.encoders.cache import CachedEncoder
    from finerouter.engines.base import resolve_engine

    engine = None if engine is None else resolve_engine(engine)
    if engine is None or not getattr(engine, "distributed", False):
        return encoder.encode(texts)
    texts = list(texts)
    cache = encoder if isinstance(encoder, CachedEncoder) else None
    inner = cache.encoder if cache is not None else encoder
    todo = cache.missing(texts) if cache is not None else list(dict.fromkeys(texts))
    logger.info("embedding %d of %d texts on %s", len(todo), len(texts), type(engine).__name__)
    done: dict[str, np.ndarray] = {}
    pending_texts: list[str] = []
    pending_rows: list[np.ndarray] = []
    flush_at = cache.shard_size if cache is not None else 1
    n_done = 0

    def flush() -> None:
        nonlocal n_done
        if cache is not None:
            cache.put(pending_texts, np.concatenate(pending_rows))
        n_done += len(pending_texts)
        pending_texts.clear()
        pending_rows.clear()
        if progress is not None:
            progress(n_done, len(todo))

    for index, vectors in engine.map_batches(encoder_factory(inner), todo, batch_size=getattr(engine, "batch_size", 256)):
        vectors = np.asarray(vectors, dtype=np.float32)
        batch = [todo[i] for i in index]
        if cache is None:
            done.update(zip(batch, vectors))
        pending_texts.extend(batch)
        pending_rows.append(vectors)
        if len(pending_texts) >= flush_at:
            flush()
    if pending_texts:
        flush()
    if cache is not None:
        return cache.encode(texts)
    if not texts:
        return np.zeros((0, int(inner.dim)), dtype=np.float32)
    from finerouter.encoders.base import l2_normalise

    out = np.stack([done[t] for t in texts]).astype(np.float32, copy=False)
    norms = np.linalg.norm(out, axis=1)
    return out if np.all(np.abs(norms - 1.0) <= 1e-4) else l2_normalise(out)


__all__ = ["embed_texts", "encoder_builder", "encoder_factory"]
