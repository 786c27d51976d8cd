"""Data layouts: one module per layout, each a :class:`Layout` (detector + parser) held in one registry.

Built in, in detection order: ``"wide"`` (:mod:`.wide`, FineRouter's ``score::<model>`` columns), ``"long"``
(:mod:`.long`, one row per (prompt, model); LLMRouter's rows too) and ``"routerbench"`` (:mod:`.routerbench`).
To read another layout, write a module that builds a :class:`Layout` whose parser returns a
:class:`ParsedTable` and pass it to :func:`register_layout`; ``read_routing_data`` then detects it (after the
built-in layouts) and accepts its name as ``layout=``.
"""

from __future__ import annotations

from finerouter.data.layouts.long import LONG
from finerouter.data.layouts.registry import (
    AUTO,
    Layout,
    detect_layout,
    get_layout,
    layout_names,
    register_layout,
    unregister_layout,
)
from finerouter.data.layouts.routerbench import ROUTERBENCH
from finerouter.data.layouts.wide import WIDE
from finerouter.data.table import ParsedTable

BUILTIN_LAYOUTS: tuple[Layout, ...] = (WIDE, LONG, ROUTERBENCH)

for builtin_layout in BUILTIN_LAYOUTS:
    register_layout(builtin_layout, replace=True)  # replace: a module reload registers them again
del builtin_layout

__all__ = [
    "AUTO",
    "BUILTIN_LAYOUTS",
    "Layout",
    "ParsedTable",
    "detect_layout",
    "get_layout",
    "layout_names",
    "register_layout",
    "unregister_layout",
]
