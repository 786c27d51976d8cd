"""Execution engines: where embedding, discovery's kNN search, evaluation and LLM calls run.

:class:`LocalEngine` is this process (the default, FineRouter's single-process behaviour); :class:`RayEngine`
runs the same work on a Ray cluster (``pip install finerouter[ray]``; Ray is imported only when it connects).
``FineRouter(engine=...)`` and the CLI's ``--ray ADDRESS`` choose one; an engine is never saved with a router.
"""

from __future__ import annotations

from finerouter.engines.base import Engine, LocalEngine, resolve_engine
from finerouter.engines.embedding import embed_texts
from finerouter.engines.ray_engine import RayEngine

__all__ = ["Engine", "LocalEngine", "RayEngine", "embed_texts", "resolve_engine"]
