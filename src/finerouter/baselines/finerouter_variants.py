"""FineRouter and its ablations (paper Table 2), wrapped in the harness's router interface.

All variants read one fitted :class:`finerouter.routing.router.FineRouter`; :func:`share_fits` lets variants
with the same settings share a single fit per training split.

* ``finerouter``: the full router, Eq. 5 final scores.
* ``stage2_only``: the quality estimator's predictions alone.
* ``stage1_classifier`` ("Fine CLS"): the task classifier assigns a discovered task; the prompt goes to that
  task's top candidate (the task's fused ranking); prompts assigned to "Others" use the Others medians.
* ``stage1_embedding`` ("Embedding"): the nearest task centre (cosine) assigns the task, then as above.
* ``label_free`` / ``refined``: the full router with the paper's label-free discovery (``refine_task_labels=False``)
  or always refining the data's coarse ``task`` labels (``True``); ``finerouter`` (``"auto"``) picks one of the two
  per fit on a dev part of its training data. Without labels all three are the same router.
* ``paper_mixing``: the full router with the paper's Eq. 5 (``mixing="paper"``, alpha 0.5) on unshrunk task means:
  no cross-validated mixing, no fallback to the best single model.
* ``with_neighbours``: the full router whose cross-validated mixing may also weigh the neighbour source
  (``neighbours=True``, :mod:`finerouter.routing.neighbours`).
* ``with_stacking``: the full router whose cross-validated mixing defaults to the stacked shrinkage mix
  (``stacking=True``, :mod:`finerouter.routing.stacking`).
* ``with_pruning``: the full router whose Stage 2 leaves out the models never near the best on any group of its
  training prompts (``quality={"prune_coverage": 0.8}``, :mod:`finerouter.quality.pruning`).
* ``single_fit``: the full router as one fit with hard task assignment (``ensemble_size=1``,
  ``stage1_assignment="hard"``): the default before the small-data settings (:mod:`finerouter.routing.regime`),
  and the default's own choice above :data:`~finerouter.routing.regime.SMALL_DATA_PROMPTS` prompts.
* ``with_ensemble``: a seed ensemble of three full routers with hard assignment (``ensemble_size=3``,
  :mod:`finerouter.routing.ensemble`).
* ``soft_prior``: one full router with soft task assignment for the stage-1 prior (``stage1_assignment="soft"``,
  :mod:`finerouter.routing.assignment`).
* ``soft_ensemble``: both (three fits, each with the soft prior): the small-data default before the default let the
  cross-validation choose between the soft and the hard prior (``stage1_assignment="cv"``).

Stage-1 scores for the cost–quality curve: a task's models in fused-ranking order, scored ``(m - position) /
(m - 1)`` (so tolerance walks down the task's ranking); "Others" rows use the Others median scores.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from finerouter._validation import check_choice, check_is_fitted
from finerouter.baselines.base import Router
from finerouter.data.dataset import RoutingDataset

logger = logging.getLogger(__name__)

VARIANTS = (
    "finerouter", "stage2_only", "stage1_classifier", "stage1_embedding", "label_free", "refined", "paper_mixing",
    "with_neighbours", "with_stacking", "with_pruning", "with_ensemble", "soft_prior", "soft_ensemble", "single_fit",
)
_LABEL_MODE = {"label_free": False, "refined": True}
#: ``with_pruning``'s coverage share (the paper's candidate coverage, delta).
PRUNE_COVERAGE = 0.8
#: Variants that are the full router with other settings: their final scores route.
_FULL = ("finerouter", "label_free", "refined", "paper_mixing", "with_neighbours", "with_stacking", "with_pruning",
         "with_ensemble", "soft_prior", "soft_ensemble", "single_fit")
#: ``(ensemble_size, stage1_assignment)`` of the variants that fix them (the others keep the defaults, "auto").
_FIT_SHAPE = {"paper_mixing": (1, "hard"), "single_fit": (1, "hard"), "with_ensemble": (3, "hard"),
              "soft_prior": (1, "soft"), "soft_ensemble": (3, "soft")}


class SharedFineRouter:
    """Fits a FineRouter once per (training set, embeddings) and hands the same fit to every variant."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self._key: tuple[int, int] | None = None
        self.router_: Any = None
        self.fit_seconds_: float | None = None

    def get(self, train: RoutingDataset, embeddings: np.ndarray) -> Any:
        key = (id(train), id(embeddings))
        if self._key != key or self.router_ is None:
            import time

            from finerouter.routing.router import FineRouter

            t0 = time.perf_counter()
            self.router_ = FineRouter(**self.params).fit(train, embeddings=embeddings)
            self.fit_seconds_ = time.perf_counter() - t0
            self._key = key
        return self.router_


class FineRouterVariant(Router):
    """One of :data:`VARIANTS`, over a FineRouter fitted with ``FineRouter(**params)``.

    Args:
        variant: which scores route (see the module docstring).
        seed: FineRouter's seed.
        encoder: the encoder that made the embeddings (FineRouter embeds its task descriptions with it).
        prices: prices for FineRouter's cost model (routing in the harness uses the harness's cost estimates).
        **params: other :class:`FineRouter` arguments (``alpha``, ``discovery``, ``classifier``, ``quality``...).
    """

    def __init__(self, variant: str = "finerouter", seed: int = 0, encoder: Any = None, prices: Any = None,
                 **params: Any) -> None:
        self.variant = variant
        self.seed = seed
        self.encoder = encoder
        self.prices = prices
        self.params = params
        self.shared: SharedFineRouter | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.variant

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "finerouter" if self.variant == "finerouter" else "ablation"

    def router_params(self) -> dict[str, Any]:
        params = {"encoder": self.encoder, "prices": self.prices, "seed": self.seed, **self.params}
        if self.variant in _LABEL_MODE:
            params["refine_task_labels"] = _LABEL_MODE[self.variant]
        if self.variant == "paper_mixing":  # the paper's Eq. 5 on unshrunk task means, no cross-validation, one fit
            params.update(mixing="paper", stage1_shrinkage=False)
        if self.variant == "with_neighbours":
            params["neighbours"] = True
        if self.variant == "with_stacking":
            params["stacking"] = True
        if self.variant == "with_pruning":  # Stage 2 without the models never near the best (quality/pruning.py)
            params["quality"] = {**(params.get("quality") or {}), "prune_coverage": PRUNE_COVERAGE}
        if self.variant in _FIT_SHAPE:
            params["ensemble_size"], params["stage1_assignment"] = _FIT_SHAPE[self.variant]
        return params

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> FineRouterVariant:
        check_choice(self.variant, "variant", "FineRouterVariant", VARIANTS)
        emb = self._fit_common(train, embeddings)
        shared = self.shared or SharedFineRouter(self.router_params())
        self.router_ = shared.get(train, embeddings if isinstance(embeddings, np.ndarray) else emb)
        catalog = self.router_.catalog_
        m = len(self.models_)
        self.stage1_rank_scores_ = _ranking_scores(catalog, self.models_)
        others = np.array([catalog.others.median_scores.get(name, np.nan) for name in self.models_], dtype=np.float64)
        self.others_scores_ = np.where(np.isfinite(others), others, self.prior_) + 1e-9 * _prior_order(self.prior_)
        centers = np.asarray(catalog.centers(), dtype=np.float32).reshape(-1, emb.shape[1])
        norms = np.linalg.norm(centers, axis=1, keepdims=True)
        self.centers_ = centers / np.where(norms > 0, norms, 1.0)
        logger.debug("%s: %d tasks over %d models", self.variant, catalog.n_tasks, m)
        return self

    def predict_scores(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray:
        check_is_fitted(self, ["router_"])
        emb = self._check_input(embeddings)
        if self.variant == "stage1_embedding":
            if self.centers_.shape[0] == 0:
                task = np.full(emb.shape[0], -1, dtype=np.int64)
            else:
                task = np.argmax(emb @ self.centers_.T, axis=1).astype(np.int64)
            return self._stage1(task)
        scores = self.router_.score_embeddings(emb)
        if self.variant in _FULL:
            return np.asarray(scores.final, dtype=np.float64)
        if self.variant == "stage2_only":
            return np.asarray(scores.stage2, dtype=np.float64)
        return self._stage1(np.asarray(scores.task, dtype=np.int64))

    def predict_expected(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray | None:
        """The full router's calibrated expected score per model (:attr:`RouterScores.expected`, score scale);
        None for the stage-only ablations, whose scores are not expected scores."""
        check_is_fitted(self, ["router_"])
        if self.variant not in _FULL:
            return None
        expected = self.router_.score_embeddings(self._check_input(embeddings)).expected
        return None if expected is None else np.asarray(expected, dtype=np.float64)

    def _stage1(self, task: np.ndarray) -> np.ndarray:
        out = np.empty((len(task), len(self.models_)), dtype=np.float64)
        assigned = task >= 0
        out[assigned] = self.stage1_rank_scores_[task[assigned]]
        out[~assigned] = self.others_scores_
        return out


def _prior_order(prior: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(prior, kind="stable"), kind="stable").astype(np.float64)


def _ranking_scores(catalog: Any, models: list[str]) -> np.ndarray:
    """``(T, m)``: per task, ``(m - position) / (m - 1)`` of each model in the task's fused ranking."""
    m = len(models)
    out = np.zeros((catalog.n_tasks, m), dtype=np.float64)
    for t, task in enumerate(catalog.tasks):
        ranking = list(task.fused_ranking) + [x for x in models if x not in task.fused_ranking]
        for pos, name in enumerate(ranking):
            if name in models:
                out[t, models.index(name)] = (m - pos) / max(m - 1, 1)
    return out


def share_fits(routers: list[Router]) -> None:
    """Give every :class:`FineRouterVariant` with the same settings one shared FineRouter fit."""
    holders: list[tuple[dict[str, Any], SharedFineRouter]] = []
    for r in routers:
        if not isinstance(r, FineRouterVariant):
            continue
        params = r.router_params()
        for p, holder in holders:
            if _same(p, params):
                r.shared = holder
                break
        else:
            holder = SharedFineRouter(params)
            holders.append((params, holder))
            r.shared = holder


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(a[k] is b[k] or (type(a[k]) is type(b[k]) and _eq(a[k], b[k])) for k in a)


def _eq(x: Any, y: Any) -> bool:
    try:
        return bool(x == y)
    except Exception:  # noqa: BLE001 - objects without a usable ==
        return False
