"""FineRouter: route each prompt to the best LLM in a pool, trading quality against cost.

Implements "Scalable Prompt Routing via Fine-Grained Latent Task Discovery" (arXiv 2603.19415).
Nothing heavy is imported here: torch, sentence-transformers, faiss and fastapi load inside the functions
that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from finerouter._version import __version__
from finerouter.errors import (
    ArtifactError,
    DataError,
    FineRouterError,
    NotFittedError,
    ParameterError,
    UpstreamError,
)

_LAZY = {
    "RoutingDataset": "finerouter.data.dataset",
    "FineRouter": "finerouter.routing.router",
    "RoutingDecision": "finerouter.routing.decision",
    "TaskCatalog": "finerouter.discovery.catalog",
    "TaskDiscovery": "finerouter.discovery.discovery",
    "SentenceTransformerEncoder": "finerouter.encoders.sentence_transformer",
    "make_synthetic_routing_data": "finerouter.data.synthetic",
}

__all__ = [
    "ArtifactError",
    "DataError",
    "FineRouter",
    "FineRouterError",
    "NotFittedError",
    "ParameterError",
    "RoutingDataset",
    "RoutingDecision",
    "SentenceTransformerEncoder",
    "TaskCatalog",
    "TaskDiscovery",
    "UpstreamError",
    "__version__",
    "make_synthetic_routing_data",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finerouter' has no attribute {name!r}")
