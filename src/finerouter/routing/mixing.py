"""How the router mixes its score sources, and how it learns the mix from its own training data.

A prompt's final score per model is ``w_stage2 * norm(stage2) + w_stage1 * norm(stage1) + w_global *
norm(global) + w_neighbours * norm(neighbours)``, each source min-max normalised across models per prompt as in
the paper's Eq. 5: ``stage2`` is the quality estimator's prediction, ``stage1`` the assigned task's (shrunk) mean
score, ``global`` each model's mean training score (routing by it alone is the best single model), ``neighbours``
each model's mean score on the prompt's nearest training prompts (:mod:`finerouter.routing.neighbours`). The
weights are non-negative and sum to 1; the paper's Eq. 5 is ``(alpha, 1 - alpha, 0, 0)``. Weight vectors of
three entries (older artifacts, the paper's sources) mean ``w_neighbours = 0``.

:func:`choose_weights` picks them from out-of-fold scores on the training data (internal cross-validation, see
:meth:`finerouter.routing.router.FineRouter.fit`) among a few candidate mixes. It keeps the default mix (the
paper's) unless another routes the held-out folds better by more than ``min_gain_se`` standard errors of the
paired difference. Then the selection is checked against the best single model: it is cross-fitted (each
fold's prompts get the mix chosen on the other folds only), which gives an honest per-prompt gain; unless that
gain is positive (by ``fallback_gain_se`` standard errors, 0 by default), the router falls back to the best single
model. So when its own held-out data says routing does not help, FineRouter routes like "always use the best
model" rather than below it.

:func:`~finerouter.routing.shrinkage.shrink_task_means` (re-exported here) shrinks each task's mean score per model
toward the model's overall mean in proportion to how little the task's data says (empirical Bayes).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from finerouter.errors import ParameterError
from finerouter.evaluation.metrics import expected_calibration_error
from finerouter.routing.holes import robust_truth
from finerouter.routing.shrinkage import shrink_task_means

logger = logging.getLogger(__name__)

SOURCES = ("stage2", "stage1", "global", "neighbours")


#: The candidate mixes ``(stage2, stage1, global)``: the paper's Eq. 5 first (the default), then mixes that lean
#: on one stage (the stage-1 prior alone too: where the prior is the data's own labels, Stage 2 may add only noise),
#: then on the global prior, and the best single model last.
CANDIDATE_MIXES = (
    (0.5, 0.5, 0.0),
    (0.75, 0.25, 0.0),
    (0.25, 0.75, 0.0),
    (0.0, 1.0, 0.0),
    (0.4, 0.4, 0.2),
    (0.25, 0.25, 0.5),
    (0.0, 0.0, 1.0),
)
#: The neighbour source alone: the default mix where discovery found no task structure.
NEIGHBOURS_ALONE = (0.0, 0.0, 0.0, 1.0)
#: Mixes with the neighbour source ``(stage2, stage1, global, neighbours)``, candidates when it is available.
NEIGHBOUR_MIXES = (
    (0.35, 0.3, 0.0, 0.35),
    (0.25, 0.25, 0.0, 0.5),
    (0.0, 0.25, 0.25, 0.5),
    NEIGHBOURS_ALONE,
)


def _four(weights: Any) -> np.ndarray:
    """``weights`` as a ``(4,)`` vector in :data:`SOURCES` order (a 3-vector gets ``w_neighbours = 0``)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    return np.concatenate([w, np.zeros(len(SOURCES) - w.size)]) if w.size < len(SOURCES) else w


@dataclass
class MixingChoice:
    """The weights chosen for the three score sources, and the evidence behind them.

    Attributes:
        weights: ``{"stage2": w2, "stage1": w1, "global": wg, "neighbours": wn}``, non-negative, summing to 1 (a
            missing source, as in artifacts saved before it existed, weighs 0).
        method: ``"cv"`` (chosen by internal cross-validation), ``"fallback"`` (the evidence did not show that
            routing beats the best single model, so ``global`` alone), or ``"fixed"`` (given by the user).
        oof_quality: out-of-fold routing quality (mean true score of the picked model) of the default mix, the
            chosen one, the best single model, and the cross-fitted selection (``"selected"``).
        gain: the cross-fitted selection's mean per-prompt gain over the best single model, and its standard
            error (None for ``"fixed"``).
        n_prompts: out-of-fold prompts the choice was made on.
        calibration_error: expected calibration error of the raw mix and of the calibrated estimate on the
            out-of-fold scores (the calibrated one is in-sample for the calibration map).
        estimate_weights: the mix whose raw value is calibrated into the expected scores: the best routing mix,
            even when ``weights`` fell back to the best single model (a per-prompt estimate still tells the
            cost-aware rule which prompts a cheaper model handles); None = ``weights``.
        scale: how ``weights`` mix the sources for routing: ``"normalised"`` (each source min-max normalised per
            prompt, the paper's Eq. 5 family) or ``"raw"`` (the sources on the score scale, a stacked shrinkage
            mix of :mod:`finerouter.routing.stacking`; the global weight may then be negative).
        folds: the cross-validation's number of folds (None: not cross-validated).
        assignment: the stage-1 assignment the router routes with, ``"hard"`` or ``"soft"``
            (:mod:`finerouter.routing.assignment`) or ``"label"`` (:mod:`finerouter.routing.label_prior`); None:
            an artifact saved before it was recorded, which routes with its ``stage1_assignment`` setting.
        assignment_quality: with ``stage1_assignment="cv"``, each assignment's out-of-fold routing quality (its
            cross-fitted selection's, or the best single model's where it fell back) that the choice was made on.
        replaced: when adding a model made a routing router fall back to it
            (:func:`finerouter.routing.onboarding_mixing.mixing_after_adding`), ``{"model": name, "mixing": the
            choice it replaced, as a dict}``, so that retiring that model restores the choice; else None.
        neighbour_k: the number of neighbours the neighbour source averages over
            (:func:`finerouter.routing.neighbours.choose_k` on the training data); None: not chosen (no neighbour
            source, or an artifact saved before it was), which routes with :func:`~finerouter.routing.neighbours.
            default_k`.
        default: the weights of the default mix the others had to beat by ``min_gain_se`` standard errors
            (:func:`choose_weights`' first candidate); None where no cross-validation chose (``"fixed"``, too
            few prompts) and in artifacts saved before it was recorded.
    """

    weights: dict[str, float]
    method: str
    oof_quality: dict[str, float] = field(default_factory=dict)
    gain: float | None = None
    gain_se: float | None = None
    n_prompts: int = 0
    calibration_error: dict[str, float] | None = None
    estimate_weights: dict[str, float] | None = None
    scale: str = "normalised"
    folds: int | None = None
    assignment: str | None = None
    assignment_quality: dict[str, float] | None = None
    replaced: dict[str, Any] | None = None
    neighbour_k: int | None = None
    default: dict[str, float] | None = None

    def vector(self) -> np.ndarray:
        """``(4,)`` weights in :data:`SOURCES` order."""
        return np.asarray([self.weights.get(s, 0.0) for s in SOURCES], dtype=np.float64)

    def estimate_vector(self) -> np.ndarray:
        """``(4,)`` the weights of the raw mix behind the expected scores, in :data:`SOURCES` order."""
        weights = self.estimate_weights or self.weights
        return np.asarray([weights.get(s, 0.0) for s in SOURCES], dtype=np.float64)

    @property
    def uses_neighbours(self) -> bool:
        """Whether routing or the expected scores read the neighbour source."""
        return bool(self.vector()[3] > 0 or self.estimate_vector()[3] > 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixingChoice:
        return cls(**d)

    @classmethod
    def fixed(cls, stage2: float, stage1: float, global_: float) -> MixingChoice:
        return cls({"stage2": float(stage2), "stage1": float(stage1), "global": float(global_), "neighbours": 0.0},
                   "fixed")


def mix(
    weights: np.ndarray, stage2: np.ndarray, stage1: np.ndarray, global_prior: np.ndarray,
    neighbours: np.ndarray | None = None, reference: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, m)`` final scores: ``weights`` (``(4,)``, or ``(3,)`` without neighbours) times the min-max
    normalised ``stage2`` ``(n, m)``, ``stage1`` ``(n, m)``, ``global_prior`` ``(m,)`` and ``neighbours``
    ``(n, m)`` (NaN entries normalise to 0; over the ``reference`` columns of
    :func:`~finerouter.routing.policy.minmax_rows` when given, unclipped: a caller with added models clips their
    per-prompt sources first, :func:`~finerouter.routing.policy.clip_to_reference`)."""
    from finerouter.routing.policy import minmax_rows

    w2, w1, wg, wn = (float(w) for w in _four(weights))
    out = w2 * minmax_rows(stage2, reference) + w1 * minmax_rows(stage1, reference)
    if wg:
        out += wg * minmax_rows(np.asarray(global_prior, dtype=np.float64).reshape(1, -1), reference)
    if wn:
        if neighbours is None:
            raise ParameterError("mix: the weights use the neighbour source, and no neighbour scores were given")
        out += wn * minmax_rows(neighbours, reference)
    return out


def routing_mix(
    weights: np.ndarray, scale: str, stage2: np.ndarray, stage1: np.ndarray, global_prior: np.ndarray,
    neighbours: np.ndarray | None = None, reference: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, m)`` routing scores in [0, 1] per prompt: :func:`mix` for ``scale="normalised"``; for ``"raw"`` the
    score-scale mix (:func:`raw_mix`, a stacked shrinkage estimate) min-max normalised per prompt, so that a
    ``tolerance`` means the same share of the prompt's spread under either scale (over the ``reference`` columns
    of :func:`~finerouter.routing.policy.minmax_rows` when given, unclipped as in :func:`mix`: an added model may
    then score beyond [0, 1])."""
    if scale == "normalised":
        return mix(weights, stage2, stage1, global_prior, neighbours, reference)
    if scale != "raw":
        raise ParameterError(f"routing_mix: scale must be 'normalised' or 'raw'; got {scale!r}")
    from finerouter.routing.policy import minmax_rows

    return minmax_rows(raw_mix(weights, stage2, stage1, global_prior, neighbours), reference)


def _tie_break_bonus(global_prior: np.ndarray) -> np.ndarray:
    """A tiny ``(m,)`` bonus that sends exact ties to the model with the higher global prior, then lower index."""
    m = global_prior.shape[0]
    order = np.argsort(np.argsort(np.nan_to_num(global_prior, nan=-np.inf), kind="stable"), kind="stable")
    return 1e-9 * (order + 1) / m


def _picked_models(
    grid: np.ndarray, stage2: np.ndarray, stage1: np.ndarray, global_prior: np.ndarray,
    neighbours: np.ndarray | None = None, scales: list[str] | None = None,
) -> np.ndarray:
    """``(g, n)`` the model each weight row of ``grid`` picks per prompt (exact ties: the better model overall);
    ``scales[k]`` is row ``k``'s scale (all ``"normalised"`` when None)."""
    tie = _tie_break_bonus(global_prior)
    out = np.empty((grid.shape[0], stage2.shape[0]), dtype=np.int64)
    for k, w in enumerate(grid):
        scale = "normalised" if scales is None else scales[k]
        out[k] = np.argmax(routing_mix(w, scale, stage2, stage1, global_prior, neighbours) + tie, axis=1)
    return out


def _paired_standard_error(diff: np.ndarray) -> float:
    """Standard error of the mean of paired differences ``diff`` (inf with fewer than two)."""
    return float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("inf")


def choose_weights(
    stage2: np.ndarray,
    stage1: np.ndarray,
    global_prior: np.ndarray,
    truth: np.ndarray,
    fold: np.ndarray,
    *,
    candidates: tuple[tuple[float, ...], ...] = CANDIDATE_MIXES,
    stacks: tuple[tuple[str, ...], ...] = (),
    stack_first: bool = False,
    min_gain_se: float = 1.0,
    fallback_gain_se: float = 0.0,
    neighbours: np.ndarray | None = None,
) -> MixingChoice:
    """Choose the mixing weights from out-of-fold scores.

    Args:
        stage2: ``(n, m)`` out-of-fold stage-2 predictions.
        stage1: ``(n, m)`` out-of-fold stage-1 priors (the assigned task's mean per model).
        global_prior: ``(n, m)`` each model's mean score on the training folds of the prompt's fold.
        truth: ``(n, m)`` true scores (NaN = not evaluated: a pick there counts as the model's ``global_prior``
            on the row, corrected on the row's observed entries: :func:`~finerouter.routing.holes.robust_truth`).
        fold: ``(n,)`` the fold each prompt was held out in.
        candidates: the normalised mixes to choose from (3 or 4 weights each, see :data:`SOURCES`); the first is
            the default (unless ``stack_first``), and one must be the best single model ``(0, 0, 1)``.
        stacks: stacked raw-scale mixes to choose from too, each named by the sources it stacks (e.g.
            ``("stage2", "stage1")``; :func:`finerouter.routing.stacking.fit_stack`). Each is judged cross-fitted:
            a fold's prompts are routed with weights fitted on the other folds.
        stack_first: make the first stack the default instead of ``candidates[0]``.
        min_gain_se: how many standard errors of the paired difference a mix must gain over the default to
            replace it.
        fallback_gain_se: how many standard errors the cross-fitted gain over the best single model must
            exceed for the router to route at all (0: the honest estimate of the gain must be positive; it is
            already pessimistic, each fold's router being fitted on part of the data).
        neighbours: ``(n, m)`` out-of-fold neighbour means (:func:`finerouter.routing.neighbours.neighbour_means`
            over the training folds), needed when a candidate weighs the neighbour source.
    """
    from finerouter.routing.stacking import fit_stack

    truth0 = robust_truth(truth, global_prior)
    n = truth0.shape[0]
    grid = np.stack([_four(c) for c in candidates]) if len(candidates) else np.zeros((0, len(SOURCES)))
    single_rows = np.flatnonzero((grid == [0.0, 0.0, 1.0, 0.0]).all(axis=1))
    if single_rows.size != 1:
        raise ParameterError(
            "The 'candidates' parameter of choose_weights must hold the best single model (0, 0, 1) exactly once. "
            f"Got {candidates!r}."
        )
    rows = np.arange(n)
    folds = np.unique(fold)
    picks = np.empty((grid.shape[0], n), dtype=np.int64)
    for f in folds:
        idx = np.flatnonzero(fold == f)
        picks[:, idx] = _picked_models(
            grid, stage2[idx], stage1[idx], global_prior[idx][0], None if neighbours is None else neighbours[idx]
        )
    available = {"stage2": stage2, "stage1": stage1, "neighbours": neighbours}
    stack_weights, stack_picks = [], []
    for names in stacks:
        if any(available.get(name) is None for name in names):
            raise ParameterError(f"choose_weights: the stack {names!r} needs a source that was not given")
        sources = {name: available[name] for name in names}
        stack_weights.append(fit_stack(sources, global_prior, truth))
        row = np.empty(n, dtype=np.int64)
        for f in folds:
            held, rest = fold == f, fold != f
            w = fit_stack({k: v[rest] for k, v in sources.items()}, global_prior[rest], truth[rest]) \
                if folds.size > 1 else stack_weights[-1]
            row[held] = _picked_models(
                w[None, :], stage2[held], stage1[held], global_prior[held][0],
                None if neighbours is None else neighbours[held], ["raw"],
            )[0]
        stack_picks.append(row)
    # the candidate rows: (weights, scale), the default first
    normal_rows = [(w, "normalised") for w in grid]
    stack_rows = [(w, "raw") for w in stack_weights]
    ordered = stack_rows + normal_rows if stack_first and stack_rows else normal_rows + stack_rows
    all_picks = [*stack_picks, *picks] if stack_first and stack_rows else [*picks, *stack_picks]
    single = int(single_rows[0]) + (len(stack_rows) if stack_first and stack_rows else 0)
    gained = truth0[rows[None, :], np.stack(all_picks)]  # (g, n) true score of each mix's pick

    def select(cols: np.ndarray) -> int:
        """The default mix, unless a routing mix beats it on ``cols`` by ``min_gain_se`` paired SEs."""
        q = gained[:, cols].mean(axis=1)
        routing = [k for k in range(len(ordered)) if k != single]
        best = max(routing, key=lambda k: (q[k], -k))
        if best != 0:
            diff = gained[best, cols] - gained[0, cols]
            if not diff.mean() > min_gain_se * _paired_standard_error(diff):
                best = 0
        return best

    chosen = select(rows)
    # Cross-fit the selection: each fold's prompts get the mix chosen on the other folds.
    selected = np.empty(n, dtype=np.float64)
    for f in folds:
        held = fold == f
        k = select(np.flatnonzero(~held)) if folds.size > 1 else chosen
        selected[held] = gained[k, held]
    diff = selected - gained[single]
    gain, se = float(diff.mean()), _paired_standard_error(diff)
    quality = gained.mean(axis=1)
    oof = {
        "default": float(quality[0]),
        "chosen": float(quality[chosen]),
        "best_single": float(quality[single]),
        "selected": float(selected.mean()),
    }
    for k, (names, _) in enumerate(zip(stacks, stack_rows)):
        oof["stack:" + "+".join(names)] = float(quality[k if stack_first else len(normal_rows) + k])
    chosen_weights, chosen_scale = ordered[chosen]
    if gain > fallback_gain_se * se and gain > 0:
        weights, method, scale = chosen_weights, "cv", chosen_scale
    else:
        weights, method, scale = ordered[single][0], "fallback", "normalised"
    choice = MixingChoice(
        {s: float(w) for s, w in zip(SOURCES, weights)}, method, oof, gain, se if np.isfinite(se) else None, n,
        estimate_weights={s: float(w) for s, w in zip(SOURCES, chosen_weights)}, scale=scale,
        default={s: float(w) for s, w in zip(SOURCES, ordered[0][0])},
    )
    # per prompt, the true score of what the choice routes to out of fold (not saved: a plain attribute, not a
    # field): the evidence finerouter.routing.assignment.choose_assignment weighs between stage-1 priors
    choice.effective_scores = selected if method == "cv" else gained[single]
    logger.info(
        "mixing: %s %s weights %s (out-of-fold quality %s; cross-fitted gain over best single %.4f ± %.4f)",
        method, scale, choice.weights, {k: round(v, 4) for k, v in oof.items()}, gain, se,
    )
    return choice


def resolve_cv_folds(cv_folds: int | str, n_prompts: int) -> int:
    """The number of cross-validation folds: ``cv_folds`` itself, or for ``"auto"`` 5 folds on small data (at most
    :data:`finerouter.routing.regime.SMALL_DATA_PROMPTS` unique prompts) and 3 above. Each fold's router is fitted
    on ``(k - 1) / k`` of the data, so its held-out quality understates the final router's; at a few hundred
    prompts, where the learning curve is steep and a fit takes seconds, the understatement is largest and more
    folds are cheap; at many thousands, 3 folds suffice and each extra fold costs a full fit."""
    from finerouter.routing.regime import resolve

    return int(resolve("cv_folds", cv_folds, n_prompts))


def fold_ids(prompts: list[str], tasks: list[str] | None, n_folds: int, seed: int) -> np.ndarray:
    """``(n,)`` fold of each row: ``n_folds`` folds by unique prompt, stratified by task when given."""
    rng = np.random.default_rng(seed)
    group_of: dict[str, int] = {}
    first_row: list[int] = []
    row_group = np.empty(len(prompts), dtype=np.int64)
    for i, p in enumerate(prompts):
        g = group_of.setdefault(p, len(first_row))
        if g == len(first_row):
            first_row.append(i)
        row_group[i] = g
    strata: dict[str, list[int]] = {}
    for g, row in enumerate(first_row):
        strata.setdefault(tasks[row] if tasks is not None else "", []).append(g)
    group_fold = np.empty(len(first_row), dtype=np.int64)
    offset = 0
    for key in sorted(strata):
        groups = np.asarray(strata[key])
        rng.shuffle(groups)
        group_fold[groups] = (np.arange(groups.size) + offset) % n_folds
        offset += groups.size
    return group_fold[row_group]


@dataclass
class Calibration:
    """A non-decreasing map from a raw score to the expected true score, fitted by centred isotonic regression.

    Attributes:
        breakpoints: ``(k,)`` increasing breakpoints of the raw score (``x`` is an alias).
        expected: ``(k,)`` non-decreasing expected true score at each breakpoint (``y`` is an alias); between
            breakpoints the map is linear, beyond them constant. An empty map is the identity.
    """

    breakpoints: np.ndarray
    expected: np.ndarray

    @property
    def x(self) -> np.ndarray:
        """Alias of :attr:`breakpoints` (the router's artifact stores it as ``calibration_x``)."""
        return self.breakpoints

    @property
    def y(self) -> np.ndarray:
        """Alias of :attr:`expected` (the router's artifact stores it as ``calibration_y``)."""
        return self.expected

    @classmethod
    def identity(cls) -> Calibration:
        return cls(np.zeros(0), np.zeros(0))

    @classmethod
    def fit(cls, raw: np.ndarray, truth: np.ndarray) -> Calibration:
        """Fit on paired ``raw`` predictions and ``truth`` scores (any shape; non-finite pairs are ignored) by
        centred isotonic regression: the isotonic fit's constant blocks, each placed at the mean raw value of its
        points and joined linearly (flat only beyond the first and last block's centres). A plain isotonic map is
        a step function: every raw score in a block maps to one value, so two models a block apart in raw score
        tie exactly and the cost-aware rule (``argmax expected - lambda * cost``) loses the ranking the raw
        scores had; the centred map keeps it and is calibrated as well (docs/evaluation.md)."""
        from sklearn.isotonic import IsotonicRegression

        raw = np.asarray(raw, dtype=np.float64).ravel()
        truth = np.asarray(truth, dtype=np.float64).ravel()
        ok = np.isfinite(raw) & np.isfinite(truth)
        if ok.sum() < 2 or np.ptp(raw[ok]) == 0:
            return cls.identity()
        x, y = raw[ok], truth[ok]
        fitted = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit_transform(x, y)
        order = np.argsort(x, kind="stable")
        xs, fs = x[order], fitted[order]
        starts = np.r_[0, np.flatnonzero(np.diff(fs) != 0) + 1]
        sizes = np.diff(np.r_[starts, xs.size])
        centres = np.add.reduceat(xs, starts) / sizes
        keep = np.r_[True, np.diff(centres) > 0]  # blocks whose centres coincide (ties in raw) keep the first
        return cls(centres[keep], np.asarray(fs[starts][keep], dtype=np.float64))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """The expected true score of each ``raw`` value (any shape)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.breakpoints.size == 0:
            return raw
        return np.interp(raw, self.breakpoints, self.expected)


def raw_mix(
    weights: np.ndarray, stage2: np.ndarray, stage1: np.ndarray, global_prior: np.ndarray,
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, m)`` the mix of the sources on the score scale (no normalisation): the input of the calibration.

    NaN entries of ``stage2``/``stage1``/``neighbours`` take the model's global prior.
    """
    w = _four(weights)
    g = np.broadcast_to(np.asarray(global_prior, dtype=np.float64), np.shape(stage2))
    s2 = np.where(np.isfinite(stage2), stage2, g)
    s1 = np.where(np.isfinite(stage1), stage1, g)
    out = w[0] * s2 + w[1] * s1 + w[2] * g
    if w[3]:
        if neighbours is None:
            raise ParameterError("raw_mix: the weights use the neighbour source, and no neighbour scores were given")
        out = out + w[3] * np.where(np.isfinite(neighbours), neighbours, g)
    return out


__all__ = [
    "CANDIDATE_MIXES", "Calibration", "MixingChoice", "NEIGHBOUR_MIXES", "NEIGHBOURS_ALONE", "SOURCES",
    "choose_weights", "expected_calibration_error",
    "fold_ids", "mix", "raw_mix", "resolve_cv_folds", "shrink_task_means",
]
