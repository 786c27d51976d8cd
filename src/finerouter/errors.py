"""The FineRouter exception family.

Every error the library raises on purpose derives from :class:`FineRouterError`, so callers can catch one
type. Sub-classes also derive from the matching built-in (``ValueError``, ``RuntimeError``...) so code that
already catches those keeps working. One type per kind of problem:

* :class:`DataError`: the routing data -- a data file or table (the message names file, column, row), or an
  array of data passed to a function (scores, embeddings, costs, labels, choices) of the wrong shape, length
  or values.
* :class:`ParameterError`: a hyper-parameter, option or argument out of range, of the wrong type, or an
  unknown name ("The 'k' parameter of TaskDiscovery must be an int in [2, inf). Got 1.").
* :class:`NotFittedError`: a component used before ``fit``.
* :class:`ArtifactError`: a saved artifact (router folder, task catalog, component state) missing, altered,
  malformed, or from an incompatible version or encoder; also a save that would overwrite what is not one.
* :class:`EncoderError`: an encoder could not be loaded, or returned unusable embeddings.
* :class:`DescriptionError`: a task-description writer failed and cannot fall back to the prompt.
* :class:`UpstreamError`: an upstream LLM endpoint failed (connection, timeout, 429, 5xx).
* :class:`EngineError`: an execution engine cannot run: Ray is not installed (``pip install finerouter[ray]``),
  or its cluster address is malformed or unreachable.
* ``finerouter.serving.errors.ConfigError``: the gateway cannot start (its upstreams file, an environment
  variable or a token file is wrong); defined with the gateway, in the same family.

Errors that are not about the caller's input stay built-in: ``NotImplementedError`` for an abstract method,
``ImportError`` for a missing optional dependency, and internal consistency checks.
"""

from __future__ import annotations


class FineRouterError(Exception):
    """Base class of every error raised by FineRouter on purpose."""


class DataError(FineRouterError, ValueError):
    """Routing data is malformed (a file, a table or a data array): the message names the file, column and row
    where possible."""


class ParameterError(FineRouterError, ValueError):
    """A hyper-parameter, option or call argument is out of its allowed range or of the wrong type."""


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


class EngineError(FineRouterError, RuntimeError):
    """An execution engine cannot run (Ray missing, or its cluster address malformed or unreachable)."""


__all__ = [
    "ArtifactError",
    "DataError",
    "DescriptionError",
    "EncoderError",
    "EngineError",
    "FineRouterError",
    "NotFittedError",
    "ParameterError",
    "UpstreamError",
]
