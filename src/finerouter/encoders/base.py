"""The `Encoder` protocol: texts in, L2-normalised float32 embeddings out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Anything that embeds texts.

    Attributes:
        name: identifies the model and its settings; it keys the embedding cache and the artifact's encoder
            fingerprint, so two encoders with the same name must give the same vectors.
        dim: the embedding width ``d``.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: returns float32 ``(len(texts), dim)``, each row of unit L2 norm."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)
