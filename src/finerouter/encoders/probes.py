"""Encoder fingerprints: a short hash that tells whether two encoders embed text the same way.

A fitted router stores the fingerprint of the encoder it was trained with; at load it recomputes the
fingerprint of the encoder it is given and warns (or refuses) when they differ, since routing on vectors
from another model silently gives nonsense.

The hash is taken over the cosine similarities between the embeddings of a few fixed probe sentences,
rounded to two decimals. Cosines are a property of the model, not of the machine: they do not move by more
than ~1e-6 between CPUs, BLAS builds or GPUs in float32, so the rounded values (and the hash) are the same
everywhere, while any other model changes at least one of the 28 cosines by far more than 0.01.
For a comparison with an explicit tolerance, use :func:`probe_embeddings` and :func:`probe_distance`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from finerouter.encoders.base import Encoder, l2_normalise
from finerouter.errors import EncoderError

PROBE_SENTENCES: tuple[str, ...] = (
    "Write a Python function that returns the n-th Fibonacci number.",
    "What is the capital city of Australia?",
    "Solve for x: 3x + 7 = 22.",
    "Translate 'good morning, how are you?' into French.",
    "Summarise the main causes of the First World War in three sentences.",
    "Which of the following is a prime number? (A) 21 (B) 27 (C) 29 (D) 33",
    "Write a short poem about the sea at night.",
    "Explain how a transformer neural network uses self-attention.",
)
"""Fixed probe sentences (covering code, facts, maths, translation, writing) used for fingerprints."""


def probe_embeddings(encoder: Encoder) -> np.ndarray:
    """Embeddings of :data:`PROBE_SENTENCES`: float32 ``(8, dim)``, rows of unit norm."""
    emb = np.asarray(encoder.encode(list(PROBE_SENTENCES)), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(PROBE_SENTENCES):
        raise EncoderError(
            f"Encoder {encoder.name!r} returned shape {emb.shape} for {len(PROBE_SENTENCES)} probe sentences."
        )
    return l2_normalise(emb)


def probe_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between the probe cosine matrices of two encoders (0 = identical).

    Args:
        a, b: probe embeddings ``(8, d_a)`` and ``(8, d_b)``; the widths may differ (the cosine matrices
            are ``(8, 8)`` either way).
    """
    ga = np.asarray(a, dtype=np.float64) @ np.asarray(a, dtype=np.float64).T
    gb = np.asarray(b, dtype=np.float64) @ np.asarray(b, dtype=np.float64).T
    if ga.shape != gb.shape:
        raise EncoderError(f"Probe matrices differ in shape: {ga.shape} vs {gb.shape}.")
    return float(np.max(np.abs(ga - gb)))


def probe_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between corresponding probe embeddings of two encoders of the same width (1 = the
    same vectors). Unlike :func:`probe_distance`, it sees a rotation of the embedding space, which keeps every
    cosine between probes but breaks a model trained on the original coordinates."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise EncoderError(f"Probe embeddings differ in shape: {a.shape} vs {b.shape}.")
    return float(np.min(np.sum(a * b, axis=1)))


def fingerprint_from_probes(emb: np.ndarray) -> str:
    """The 16-hex-digit fingerprint of probe embeddings ``(8, dim)`` (see the module docstring)."""
    emb = np.asarray(emb, dtype=np.float64)
    gram = emb @ emb.T
    iu = np.triu_indices(gram.shape[0], k=1)
    # Round half away from zero on a 0.01 grid; "+ 0.0" turns -0.0 into 0.0 so the text is canonical.
    cosines = [round(float(v), 2) + 0.0 for v in gram[iu]]
    payload = json.dumps({"dim": int(emb.shape[1]), "cosines": cosines}, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def fingerprint(encoder: Encoder) -> str:
    """A short, machine-independent hash of how ``encoder`` embeds the fixed probe sentences."""
    return fingerprint_from_probes(probe_embeddings(encoder))


__all__ = [
    "PROBE_SENTENCES",
    "fingerprint",
    "fingerprint_from_probes",
    "probe_agreement",
    "probe_distance",
    "probe_embeddings",
]
