"""The gateway's endpoints, one ``APIRouter`` per concern; ``create_app`` includes them all.

- :mod:`~finerouter.serving.routes.chat`: ``POST /v1/chat/completions`` (routed or named-model requests).
- :mod:`~finerouter.serving.routes.models`: ``GET /v1/models``.
- :mod:`~finerouter.serving.routes.ops`: ``POST /v1/route`` (decisions only), ``GET /healthz``, ``GET /metrics``.
"""
