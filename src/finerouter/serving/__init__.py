"""The OpenAI-compatible routing gateway (``finerouter serve``).

``create_app(router, upstreams)`` builds the FastAPI app; nothing heavy is imported until it is called.
Test helpers (an echoing fake upstream, a loopback server in a thread) live in :mod:`finerouter.testing`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_app": "finerouter.serving.app",
    "GatewayConfig": "finerouter.serving.config",
    "GatewaySettings": "finerouter.serving.config",
    "Upstream": "finerouter.serving.config",
    "load_gateway_config": "finerouter.serving.config",
    "load_auth_tokens": "finerouter.serving.config",
    "ConfigError": "finerouter.serving.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finerouter.serving' has no attribute {name!r}")
