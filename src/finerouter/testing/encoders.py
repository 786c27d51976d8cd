"""A deterministic encoder for tests: hashed bag-of-words embeddings, no model to load.

:class:`FakeEncoder` implements :class:`finerouter.encoders.base.Encoder`. Each lower-cased word (a run of
letters, digits or underscores) adds a signed unit to one of ``dim`` coordinates chosen by a stable hash of the
word (BLAKE2b, so the vectors are the same in every process and on every machine, unlike Python's salted
``hash``); the row is then scaled to unit L2 norm. Texts sharing words therefore point the same way, which is
enough structure for task discovery, classification and routing to behave as they do on real embeddings of
templated prompts, in milliseconds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from finerouter._validation import check_int
from finerouter.encoders.base import l2_normalise

_WORD = re.compile(r"\w+")


def _bucket(token: str, dim: int) -> tuple[int, float]:
    """The coordinate and sign ``token`` adds to."""
    digest = int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return (digest >> 1) % dim, 1.0 if digest & 1 else -1.0


class FakeEncoder:
    """Hashed bag-of-words embeddings: float32 ``(n, dim)`` rows of unit L2 norm, the same for the same text.

    A text without any word (empty, punctuation only) is hashed as one token, its stripped self, so it too
    gets a unit vector.

    Args:
        dim: the embedding width.

    Attributes:
        name: ``"fake-hashed-bow-<dim>"``; two FakeEncoders with the same ``dim`` give the same vectors.
        dim: the embedding width.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = check_int(dim, "dim", "FakeEncoder", low=2)
        self.name = f"fake-hashed-bow-{self.dim}"
        self._cache: dict[str, tuple[int, float]] = {}

    def __repr__(self) -> str:
        return f"FakeEncoder(dim={self.dim})"

    def config(self) -> dict[str, int]:
        """JSON-able settings from which :meth:`from_config` rebuilds it (so a router saves it with itself)."""
        return {"dim": self.dim}

    @classmethod
    def from_config(cls, config: dict[str, int]) -> FakeEncoder:
        """The encoder :meth:`config` described."""
        return cls(**config)

    def _token(self, token: str) -> tuple[int, float]:
        hit = self._cache.get(token)
        if hit is None:
            hit = self._cache[token] = _bucket(token, self.dim)
        return hit

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: returns float32 ``(len(texts), dim)``, each row of unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("FakeEncoder.encode takes a sequence of texts, not one string.")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = _WORD.findall(text.lower()) or [text.strip()]
            for token in tokens:
                j, sign = self._token(token)
                out[i, j] += sign
        # A text whose words cancel out exactly still needs a direction: its first word's.
        for i in np.flatnonzero(~out.any(axis=1)):
            tokens = _WORD.findall(texts[i].lower()) or [texts[i].strip()]
            j, sign = self._token(tokens[0])
            out[i, j] = sign
        return l2_normalise(out)


__all__ = ["FakeEncoder"]
