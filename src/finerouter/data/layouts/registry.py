"""The registry of data layouts: name -> (detector, parser), consulted by ``read_routing_data``.

A layout is a :class:`Layout`: a name, a ``detect(columns)`` predicate on the column names, a
``parse(frame, where)`` function returning a :class:`~finerouter.data.table.ParsedTable`, and a phrase naming
the columns it expects (used when no layout fits). Adding a data layout is one module that builds a
:class:`Layout` and passes it to :func:`register_layout`; the checks, merging of repeated prompts and prices then
apply to it as to the built-in ones.

Detection (``layout="auto"``) asks each layout in registration order and takes the first that accepts the
columns; the built-in layouts are registered first, so a new layout never changes how existing data is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finerouter.data.table import ParsedTable
from finerouter.errors import DataError, ParameterError

AUTO = "auto"  # the layout argument that asks for detection; no layout may take this name


@dataclass(frozen=True)
class Layout:
    """One data layout the reader understands.

    Attributes:
        name: the value of ``read_routing_data(layout=...)`` that selects it, stored in ``meta["layout"]``.
        detect: ``detect(columns) -> bool``, whether column names (stripped strings) are in this layout. Must
            not raise; only consulted for ``layout="auto"``.
        parse: ``parse(frame, where) -> ParsedTable`` from the loaded pandas DataFrame; ``where`` is the file,
            to be named first in every DataError.
        expected_columns: a phrase naming the columns the layout expects, listed in the error raised when no
            layout fits, e.g. ``"'prompt' plus 'score::<model>' columns (wide)"``.
    """

    name: str
    detect: Callable[[Sequence[str]], bool]
    parse: Callable[[Any, str], ParsedTable]
    expected_columns: str


_LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout, *, replace: bool = False) -> Layout:
    """Add ``layout`` to the registry (after those registered before it) and return it.

    Raises:
        ParameterError: ``layout`` is not a :class:`Layout`, its name is empty or ``"auto"``, its ``detect`` or
            ``parse`` is not callable, or the name is taken and ``replace`` is false (with ``replace`` the old
            layout is replaced in its place in the detection order).
    """
    owner = "register_layout"
    if not isinstance(layout, Layout):
        raise ParameterError(f"The 'layout' parameter of {owner} must be a Layout. Got {type(layout).__name__}.")
    if not isinstance(layout.name, str) or not layout.name.strip() or layout.name == AUTO:
        raise ParameterError(
            f"The 'layout' parameter of {owner} must have a non-empty name other than {AUTO!r}. Got {layout.name!r}."
        )
    for attribute in ("detect", "parse"):
        if not callable(getattr(layout, attribute)):
            raise ParameterError(f"The 'layout' parameter of {owner} must have a callable {attribute!r}.")
    if layout.name in _LAYOUTS and not replace:
        raise ParameterError(
            f"The 'layout' parameter of {owner} names {layout.name!r}, which is already registered; pass "
            "replace=True to replace it."
        )
    _LAYOUTS[layout.name] = layout
    return layout


def unregister_layout(name: str) -> Layout:
    """Remove the layout called ``name`` from the registry and return it; ParameterError if there is none."""
    try:
        return _LAYOUTS.pop(name)
    except KeyError:
        raise ParameterError(
            f"The 'name' parameter of unregister_layout must be a registered layout {layout_names()}. Got {name!r}."
        ) from None


def layout_names() -> tuple[str, ...]:
    """The registered layout names, in detection order."""
    return tuple(_LAYOUTS)


def get_layout(name: str) -> Layout:
    """The layout registered as ``name``; ParameterError if there is none."""
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise ParameterError(
            f"The 'name' parameter of get_layout must be a registered layout {layout_names()}. Got {name!r}."
        ) from None


def detect_layout(columns: Sequence[str], where: str = "<data>") -> str:
    """The name of the first registered layout whose ``detect`` accepts ``columns``.

    Raises:
        DataError: no layout accepts them; the message lists the columns and what each layout expects.
    """
    names = [str(c) for c in columns]
    for layout in _LAYOUTS.values():
        if layout.detect(names):
            return layout.name
    hints = [layout.expected_columns for layout in _LAYOUTS.values()]
    if not hints:
        expected = "a registered layout, but none is registered"
    elif len(hints) == 1:
        expected = hints[0]
    else:
        expected = ", ".join(hints[:-1]) + ", or " + hints[-1]
    raise DataError(
        f"{where}: cannot tell the data layout from its columns {names[:20]}{' ...' if len(names) > 20 else ''}. "
        f"Expected {expected}."
    )


__all__ = ["AUTO", "Layout", "detect_layout", "get_layout", "layout_names", "register_layout", "unregister_layout"]
