"""Text encoders: the `Encoder` protocol, the sentence-transformers encoder and the on-disk embedding cache.

``get_encoder()`` gives the default, the packaged all-MiniLM-L6-v2 (offline); ``get_encoder(cache_dir=...)``
wraps it in a :class:`CachedEncoder` so no text is embedded twice. Importing this package imports neither
torch nor sentence-transformers; the model loads on the first ``encode``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from finerouter.encoders.base import Encoder, l2_normalise
from finerouter.encoders.cache import CachedEncoder, is_encoder, unwrap_encoder
from finerouter.encoders.finetune import EncoderFineTuner
from finerouter.encoders.probes import fingerprint, probe_distance, probe_embeddings
from finerouter.encoders.sentence_transformer import DEFAULT_MODEL_ID, SentenceTransformerEncoder
from finerouter.errors import ParameterError


def get_encoder(
    spec: str | os.PathLike[str] | Encoder | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> Encoder:
    """Build an encoder from a spec.

    Args:
        spec: ``None`` for the packaged all-MiniLM-L6-v2; a sentence-transformers model id or local folder;
            or an object that already implements :class:`Encoder` (returned as is, or wrapped in the cache).
        cache_dir: when given, the encoder is wrapped in a :class:`CachedEncoder` over this folder.
        **kw: passed to :class:`SentenceTransformerEncoder` (``max_seq_length``, ``batch_size``, ``device``,
            ``precision``...).

    Returns:
        An :class:`Encoder`.
    """
    if spec is None or isinstance(spec, (str, os.PathLike)):
        encoder: Encoder = SentenceTransformerEncoder(spec, **kw)
    elif is_encoder(spec):
        if kw:
            raise ParameterError(
                f"get_encoder: keyword arguments {sorted(kw)} only apply to a model name or path, not to an "
                f"{type(spec).__name__} instance."
            )
        encoder = spec
    else:
        raise ParameterError(
            "The 'spec' parameter of get_encoder must be None, a model name or path, or an Encoder. "
            f"Got {type(spec).__name__}."
        )
    if cache_dir is not None and not isinstance(encoder, CachedEncoder):
        encoder = CachedEncoder(encoder, cache_dir)
    return encoder


def for_corpus(encoder: Encoder, texts: Sequence[str]) -> Encoder:
    """The encoder to embed the corpus ``texts`` (and prompts like them) with: ``encoder.for_corpus(texts)`` where
    it has one (:meth:`SentenceTransformerEncoder.for_corpus`: with ``truncation="auto"``, a copy that reads the
    head and tail of long texts when many of them share their first tokens), else ``encoder``."""
    choose = getattr(encoder, "for_corpus", None)
    return encoder if choose is None else choose(texts)


def reads_head(encoder: Encoder) -> bool:
    """Whether ``encoder`` (or the encoder a cache wraps) reads a long text's first tokens only: its
    ``resolved_truncation`` is ``"head"`` (an unresolved ``"auto"`` included), or it has none (an encoder of
    your own)."""
    return getattr(unwrap_encoder(encoder), "resolved_truncation", "head") == "head"


__all__ = [
    "DEFAULT_MODEL_ID",
    "CachedEncoder",
    "Encoder",
    "EncoderFineTuner",
    "SentenceTransformerEncoder",
    "fingerprint",
    "for_corpus",
    "get_encoder",
    "is_encoder",
    "l2_normalise",
    "probe_distance",
    "probe_embeddings",
    "reads_head",
    "unwrap_encoder",
]
