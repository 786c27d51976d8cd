"""The components a :class:`~finerouter.routing.router.FineRouter` is built from, and how a router parameter (None,
a dict of parameters, or an instance) becomes a fresh component."""

from __future__ import annotations

import importlib
from typing import Any

from finerouter.base import Component
from finerouter.errors import ParameterError

#: The components a router is built from: parameter name -> (module, class, defaults that differ from the class's).
COMPONENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "discovery": ("finerouter.discovery.discovery", "TaskDiscovery", {}),
    "classifier": ("finerouter.classify.bilinear", "TaskClassifier", {"threshold": 0.0}),
    "quality": ("finerouter.quality.estimator", "QualityEstimator", {}),
}


def component_class(name: str) -> type:
    """The class of the component ``name`` (imported on first use)."""
    module, cls_name, _ = COMPONENTS[name]
    return getattr(importlib.import_module(module), cls_name)


def build_component(name: str, value: Any, seed: int | None, engine: Any = None) -> Component:
    """A fresh, unfitted component ``name`` from the router parameter ``value``.

    None: the class with the router's defaults (:data:`COMPONENTS`); a dict: the same with these parameters set
    (an unknown key is a ParameterError); an instance: a clone of it (never fitted in place). A component whose
    ``seed`` is None takes ``seed`` (the router's); an explicit seed is kept. Likewise a component with an
    ``engine`` parameter left None takes ``engine`` (the router's; :func:`finerouter.engines.resolve_engine`).
    """
    cls = component_class(name)
    if isinstance(value, Component) and not isinstance(value, cls):
        raise ParameterError(
            f"The '{name}' parameter of FineRouter must be a {cls.__name__}, a dict of its parameters or None. "
            f"Got a {type(value).__name__}."
        )
    if isinstance(value, cls):
        component = value.clone()
    else:
        component = cls(**COMPONENTS[name][2])
        if value is not None:
            component.set_params(**value)
    if seed is not None and getattr(component, "seed", 0) is None:
        component.set_params(seed=seed)
    if engine is not None and getattr(component, "engine", 0) is None:
        from finerouter.engines.base import resolve_engine

        component.set_params(engine=resolve_engine(engine))
    return component


__all__ = ["COMPONENTS", "build_component", "component_class"]
