"""The FineRouter exception family.

Every error the library raises on purpose derives from :class:`FineRouterError`, so callers can catch one
type. Sub-classes also derive from the matching built-in (``ValueError``, ``RuntimeError``...) so code that
already catches those keeps working.
"""

from __future__ import annotations


class FineRouterError(Exception):
    """Base class of every error raised by FineRouter on purpose."""


class DataError(FineRouterError, ValueError):
    """Routing data is malformed: the message names the file, column and row where possible."""


class ParameterError(FineRouterError, ValueError):
    """A hyper-parameter or call argument is out of its allowed range."""


class NotFittedError(FineRouterError, RuntimeError):
    """A component was used before ``fit`` was called."""


class ArtifactError(FineRouterError, RuntimeError):
    """A saved artifact is missing, altered, or from an incompatible version or encoder."""


class EncoderError(FineRouterError, RuntimeError):
    """An encoder could not be loaded or failed to embed."""


class DescriptionError(FineRouterError, RuntimeError):
    """A task-description writer failed in a way that cannot fall back to the prompt."""


class UpstreamError(FineRouterError, RuntimeError):
    """An upstream LLM endpoint failed (connection error, timeout, 429 or 5xx)."""

    def __init__(self, message: str, *, status_code: int | None = None, model: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.model = model


__all__ = [
    "ArtifactError",
    "DataError",
    "DescriptionError",
    "EncoderError",
    "FineRouterError",
    "NotFittedError",
    "ParameterError",
    "UpstreamError",
]
