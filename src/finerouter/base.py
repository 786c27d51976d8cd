"""The contract every FineRouter component shares (task discovery, task classifier, quality estimator, encoders,
describers, and :class:`~finerouter.FineRouter` itself), after scikit-learn's ``BaseEstimator`` and
sentence-transformers' modules.

- ``__init__`` only stores its parameters, each under its own name; :meth:`Component.get_params` reads them from
  the signature, so a new parameter is one line in ``__init__`` (and one in ``_parameter_constraints``).
- :meth:`Component.set_params` sets parameters, nested ones with ``"classifier__threshold"`` keys; an unknown
  name is a :class:`~finerouter.errors.ParameterError` that lists the valid ones.
- ``_parameter_constraints`` declares the valid values of each parameter; :meth:`Component._validate_params`
  checks them all in one place (:func:`finerouter._validation.validate_parameter_constraints`), so one shared
  test can feed every component invalid values.
- A fitted component saves itself into a folder of its own (``config.json`` with its class, parameters and
  fitted state, ``arrays.safetensors`` for its arrays) and loads back from it, never through pickle: it
  implements :meth:`Component.to_state` and :meth:`Component.from_state`.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from finerouter._validation import Constraint, validate_parameter_constraints
from finerouter.errors import ArtifactError, ParameterError

CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.safetensors"


@functools.cache
def init_param_names(cls: type) -> tuple[str, ...]:
    """The names of ``cls.__init__``'s parameters (positional-or-keyword and keyword-only), in order."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(
        p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


class Component:
    """Base class of FineRouter's components: parameters, validation, and (for fitted ones) save / load."""

    #: Per constructor parameter, the constraints one of which a valid value satisfies.
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (in the constructor's order); ``deep`` adds each nested component's
        parameters as ``"<name>__<param>"``."""
        out: dict[str, Any] = {}
        for name in init_param_names(type(self)):
            value = getattr(self, name)
            out[name] = value
            if deep and isinstance(value, Component):
                out.update({f"{name}__{k}": v for k, v in value.get_params(deep=True).items()})
        return out

    def set_params(self, **params: Any) -> Component:
        """Set parameters (``"quality__epochs_general"`` reaches a nested component); returns self.

        Raises:
            ParameterError: a name that is not a parameter (of this component, or of the nested one named).
        """
        valid = init_param_names(type(self))
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ParameterError(
                    f"Invalid parameter {name!r} for {type(self).__name__}. Valid parameters are: {list(valid)}."
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            inner = getattr(self, name)
            if not isinstance(inner, Component):
                raise ParameterError(
                    f"The '{name}' parameter of {type(self).__name__} is not a component "
                    f"({type(inner).__name__}); cannot set {sorted(sub_params)} on it."
                )
            inner.set_params(**sub_params)
        return self

    def clone(self, **overrides: Any) -> Component:
        """A new, unfitted component with the same parameters (nested components cloned too), ``overrides``
        applied (same keys as :meth:`set_params`)."""
        params = {
            k: (v.clone() if isinstance(v, Component) else v) for k, v in self.get_params(deep=False).items()
        }
        return type(self)(**params).set_params(**overrides)

    def _validate_params(self) -> None:
        """Check every parameter against ``_parameter_constraints``; ParameterError naming the first bad one."""
        validate_parameter_constraints(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)

    def __repr__(self) -> str:
        try:
            defaults = {
                name: p.default
                for name, p in inspect.signature(type(self).__init__).parameters.items()
                if p.default is not inspect.Parameter.empty
            }
            params = self.get_params(deep=False)
        except AttributeError:  # a subclass that has not stored its parameters yet
            return f"{type(self).__name__}()"
        changed = []
        for k, v in params.items():
            try:
                same = k in defaults and bool(defaults[k] == v)
            except Exception:  # array-likes, objects without a boolean ==
                same = False
            if not same:
                changed.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)``: a JSON-able description (parameters included) and the arrays of a fitted
        component, from which :meth:`from_state` rebuilds it exactly."""
        raise NotImplementedError(f"{type(self).__name__} has no saved state")

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Component:
        """The component that :meth:`to_state` described."""
        raise NotImplementedError(f"{cls.__name__} cannot be rebuilt from a saved state")

    def save(self, path: str | Path) -> Path:
        """Write this fitted component into the folder ``path``: ``config.json`` (its class and
        :meth:`to_state` config) and ``arrays.safetensors``, each atomically. Returns ``path``."""
        from finerouter._io import atomic_write_json, save_arrays

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state, arrays = self.to_state()
        save_arrays(path / ARRAYS_FILE, arrays)
        atomic_write_json(path / CONFIG_FILE, {"class": type(self).__name__, "state": state})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Component:
        """Read a component written by :meth:`save`; ArtifactError naming the folder when it cannot."""
        from finerouter._io import load_arrays

        path = Path(path)
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path / CONFIG_FILE}: cannot read the {cls.__name__} config ({exc})") from exc
        found = config.get("class") if isinstance(config, dict) else None
        if found != cls.__name__:
            raise ArtifactError(f"{path / CONFIG_FILE}: holds a {found!r}, not a {cls.__name__}")
        try:
            arrays = load_arrays(path / ARRAYS_FILE)
        except ArtifactError:
            raise
        except Exception as exc:  # a missing or corrupt arrays file
            raise ArtifactError(f"{path / ARRAYS_FILE}: cannot read the {cls.__name__} arrays ({exc})") from exc
        return cls.from_state(config.get("state", {}), arrays)


__all__ = ["ARRAYS_FILE", "CONFIG_FILE", "Component", "init_param_names"]
