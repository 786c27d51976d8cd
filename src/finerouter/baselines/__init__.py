"""The routers FineRouter is compared with, one module each, behind one interface and ONE registry.

``ROUTERS`` maps a router's name to a factory ``factory(seed=0, encoder=None, prices=None, **params) -> Router``
(``encoder``/``prices`` matter only to the FineRouter variants). Use :func:`make_router` to build one by name.
Importing this package is cheap: torch and the FineRouter stack load inside ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finerouter.baselines.base import Router
from finerouter.errors import ParameterError


def _simple(cls_path: str, seeded: bool = True) -> Callable[..., Router]:
    module_name, cls_name = cls_path.rsplit(".", 1)

    def factory(seed: int = 0, encoder: Any = None, prices: Any = None, **params: Any) -> Router:
        import importlib

        cls = getattr(importlib.import_module(f"finerouter.baselines.{module_name}"), cls_name)
        return cls(seed=seed, **params) if seeded else cls(**params)

    factory.__doc__ = f"Build a :class:`finerouter.baselines.{cls_path}`."
    return factory


def _variant(variant: str) -> Callable[..., Router]:
    def factory(seed: int = 0, encoder: Any = None, prices: Any = None, **params: Any) -> Router:
        from finerouter.baselines.finerouter_variants import FineRouterVariant

        return FineRouterVariant(variant, seed=seed, encoder=encoder, prices=prices, **params)

    factory.__doc__ = f"Build the FineRouter variant {variant!r}."
    return factory


#: name -> factory. Reference points first, then baselines, then FineRouter's ablations and FineRouter.
ROUTERS: dict[str, Callable[..., Router]] = {
    "oracle": _simple("oracle.OracleRouter", seeded=False),
    "best_single": _simple("best_single.BestSingleRouter", seeded=False),
    "random": _simple("random_router.RandomRouter"),
    "knn": _simple("knn.KNNRouter"),
    "mlp_classifier": _simple("mlp_classifier.MLPClassifierRouter"),
    "mlp_regressor": _simple("mlp_regressor.MLPRegressorRouter"),
    "matrix_factorization": _simple("matrix_factorization.MatrixFactorizationRouter"),
    "routerdc": _simple("routerdc.RouterDCRouter"),
    "ipr": _simple("ipr.IPRRouter"),
    "coarse_task": _simple("coarse_task.CoarseTaskRouter", seeded=False),
    "stage1_embedding": _variant("stage1_embedding"),
    "stage1_classifier": _variant("stage1_classifier"),
    "stage2_only": _variant("stage2_only"),
    "label_free": _variant("label_free"),
    "refined": _variant("refined"),
    "paper_mixing": _variant("paper_mixing"),
    "with_neighbours": _variant("with_neighbours"),
    "with_stacking": _variant("with_stacking"),
    "with_pruning": _variant("with_pruning"),
    "with_ensemble": _variant("with_ensemble"),
    "soft_prior": _variant("soft_prior"),
    "soft_ensemble": _variant("soft_ensemble"),
    "single_fit": _variant("single_fit"),
    "finerouter": _variant("finerouter"),
}

#: Routers that wrap FineRouter (need its stack: discovery, classifier, quality estimator).
FINEROUTER_VARIANTS = (
    "stage1_embedding", "stage1_classifier", "stage2_only", "label_free", "refined", "paper_mixing", "with_neighbours",
    "with_stacking", "with_pruning", "with_ensemble", "soft_prior", "soft_ensemble", "single_fit", "finerouter",
)


def available_routers() -> list[str]:
    """Every registered router name, in report order."""
    return list(ROUTERS)


def make_router(name: str, *, seed: int = 0, encoder: Any = None, prices: Any = None, **params: Any) -> Router:
    """Build the router registered as ``name`` with the given seed and hyper-parameters."""
    if name not in ROUTERS:
        shown = ", ".join(repr(n) for n in ROUTERS)
        raise ParameterError(f"Unknown router {name!r}; known routers: {shown}.")
    return ROUTERS[name](seed=seed, encoder=encoder, prices=prices, **params)


__all__ = ["FINEROUTER_VARIANTS", "ROUTERS", "Router", "available_routers", "make_router"]
