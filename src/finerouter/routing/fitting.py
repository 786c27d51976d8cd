"""Fitting FineRouter's parts on a set of training rows: discovery, the task classifier, the quality estimator and
the stage-1 / global priors (:func:`fit_parts`); the automatic choice of refining the data's task labels
(:func:`choose_refinement`); and the cross-validated mixing weights and calibration (:func:`cross_validate_mixing`).

Each function takes the :class:`~finerouter.routing.router.FineRouter` whose parameters it follows; the router's
``make_component(name)`` gives a fresh, unfitted copy of each component with the seed resolved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.routing.assignment import choose_assignment, effective_quality, soft_stage1, unchosen
from finerouter.routing.holes import robust_truth
from finerouter.routing.label_prior import LabelPrior, out_of_fold_label_prior, usable_labels
from finerouter.routing.mixing import (
    CANDIDATE_MIXES,
    NEIGHBOUR_MIXES,
    NEIGHBOURS_ALONE,
    Calibration,
    MixingChoice,
    choose_weights,
    fold_ids,
    raw_mix,
    resolve_cv_folds,
    shrink_task_means,
)

from finerouter.routing.neighbours import choose_k, neighbour_means

logger = logging.getLogger(__name__)


@dataclass
class FittedParts:
    """Both stages fitted on one set of rows (the full training data, or one cross-validation fold's rest).

    Attributes:
        stage1: ``(T+1, m)`` the stage-1 prior (row ``T``: Others); global_prior: ``(m,)`` each model's mean score;
        train_tasks: ``(n,)`` the classifier's task per training row (-1: Others); candidates: per task, the
        indices of its candidate models; seconds: wall time per step.
    """

    discovery: Any
    classifier: Any
    quality: Any
    stage1: np.ndarray
    global_prior: np.ndarray
    train_tasks: np.ndarray
    candidates: list[list[int]]
    seconds: dict[str, float]


@dataclass
class OutOfFold:
    """The mixing cross-validation's out-of-fold scores on the training prompts (each from a router fitted
    without the prompt's fold): what the mixing weights and the calibration were chosen on. ``(n, m)`` each;
    ``neighbours`` is None unless the router computes that source; ``fold`` ``(n,)``."""

    stage2: np.ndarray
    stage1: np.ndarray
    global_prior: np.ndarray
    neighbours: np.ndarray | None
    truth: np.ndarray
    fold: np.ndarray


def stage1_matrix(catalog: Any, scores: np.ndarray, labels: np.ndarray, statistic: str) -> np.ndarray:
    """``(T+1, m)`` stage-1 prior: each task's median (or mean) score per model; row ``T`` is Others.

    Others (prompts in no task) uses its own prompts, or every prompt when it is empty. A model with no score in a
    group falls back to its statistic over all prompts (as the catalog's medians do); NaN only for a model never
    scored at all (normalised to 0 at routing).
    """
    from finerouter.discovery.ranking import nanmean_columns

    if statistic == "median":
        return np.asarray(catalog.median_matrix(), dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n_tasks = catalog.n_tasks
    others = labels < 0
    groups = [labels == t for t in range(n_tasks)] + [others if others.any() else np.ones_like(others)]
    out = np.full((n_tasks + 1, scores.shape[1]), np.nan)
    overall = nanmean_columns(scores)
    for row, members in enumerate(groups):
        out[row] = nanmean_columns(scores[members])
    return np.where(np.isnan(out), overall[None, :], out)


#: Folds of the cross-fitted task assignment of the training prompts that the stage-1 prior is taken over.
PRIOR_FOLDS = 5


def routed_tasks(router: Any, embeddings: np.ndarray, discovery: Any, task_embeddings: np.ndarray | None) -> np.ndarray:
    """``(n,)`` each training prompt's task as routing would give it: the task classifier's prediction, cross-fitted
    in :data:`PRIOR_FOLDS` folds (a classifier fitted on the other folds' task labels assigns each fold), -1 for
    Others. What the stage-1 prior averages over (:func:`prior_rows`).

    Discovery forms its tasks from the prompts' model rankings, so the models that rank first on a task's member
    prompts do better there than on the prompts the classifier, reading the prompt alone, sends to that task at
    routing: a prior over the members overstates each task's leading models (measured in docs/models.md). Each
    prompt's task here depends on its text only, as at routing. A fold that cannot be fitted keeps its prompts'
    discovered tasks."""
    labels = np.asarray(discovery.labels_, dtype=np.int64)
    n = labels.size
    if task_embeddings is None or discovery.catalog_.n_tasks == 0 or n < 2 * PRIOR_FOLDS:
        return labels.copy()
    fold = np.random.default_rng(router.seed + 7727).permutation(n) % PRIOR_FOLDS
    out = labels.copy()
    for f in range(PRIOR_FOLDS):
        held, rest = fold == f, fold != f
        if not (labels[rest] >= 0).any():
            continue
        classifier = router.make_component("classifier").fit(embeddings[rest], labels[rest], task_embeddings)
        out[held] = classifier.predict(embeddings[held])[0]
    return out


def prior_rows(router: Any, embeddings: np.ndarray, discovery: Any, task_embeddings: np.ndarray | None) -> np.ndarray:
    """``(n,)`` the task each training prompt counts toward in the stage-1 prior: the cross-fitted routed task
    (:func:`routed_tasks`), or with ``mixing="paper"`` the task discovery put it in, as the paper's task medians."""
    if router.mixing == "paper":
        return np.asarray(discovery.labels_)
    return routed_tasks(router, embeddings, discovery, task_embeddings)


def stage1_prior(router: Any, catalog: Any, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(T+1, m)`` the stage-1 prior of ``catalog`` (shrunk task means by default; see ``stage1_shrinkage``)."""
    if router.stage1_statistic == "mean" and router.stage1_shrinkage:
        # a model unscored in a task already takes its overall mean there (NaN only if never scored)
        return shrink_task_means(scores, labels, catalog.n_tasks)
    return stage1_matrix(catalog, scores, labels, router.stage1_statistic)


def discover(
    router: Any, desc_emb: np.ndarray, scores: np.ndarray, models: list[str], prompts: list[str],
    descriptions: list[str], groups: list[str] | None,
) -> Any:
    """A :class:`~finerouter.discovery.TaskDiscovery` with the router's settings, fitted on these rows."""
    return router.make_component("discovery").fit(
        desc_emb, scores, model_names=models, prompts=prompts, descriptions=descriptions, groups=groups
    )


def fit_classifier(router: Any, encoder: Any, embeddings: np.ndarray, discovery: Any) -> Any:
    """The task classifier for ``discovery``'s tasks (None without tasks); task texts embedded by ``encoder``.
    The task texts' embeddings are the classifier's ``task_text_embeddings_``."""
    catalog = discovery.catalog_
    if catalog.n_tasks == 0:
        return None
    task_embeddings = np.asarray(encoder.encode(task_texts(router, encoder, catalog)), dtype=np.float32)
    classifier = router.make_component("classifier").fit(embeddings, discovery.labels_, task_embeddings)
    classifier.task_text_embeddings_ = task_embeddings
    return classifier


def task_texts(router: Any, encoder: Any, catalog: Any) -> list[str]:
    """What the classifier embeds for each task: its description. Offline (no describer) that is the task's most
    central prompt cut to 160 characters; where the encoder reads the ends of long prompts (a corpus whose prompts
    share a preamble: ``truncation="auto"``) those characters are the preamble, the same for every task of one
    benchmark, so there the central prompt is embedded whole and the encoder cuts it as it cuts prompts."""
    from finerouter.encoders import reads_head

    if router.describer is None and not reads_head(encoder):
        return [task.examples[0] if task.examples else task.description for task in catalog.tasks]
    return [task.description for task in catalog.tasks]


def fit_parts(
    router: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, scores: np.ndarray, models: list[str],
    prompts: list[str], descriptions: list[str], groups: list[str] | None, *, summarize: bool = False,
) -> FittedParts:
    """Discovery, the task classifier, the quality estimator and the priors, fitted on these rows.

    ``summarize``: let the router's describer name each task (when it can), as the final fit does.
    """
    from finerouter.discovery.ranking import nanmean_columns

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    discovery = discover(router, desc_emb, scores, models, prompts, descriptions, groups)
    catalog = discovery.catalog_
    describer = router.describer
    if summarize and describer is not None and hasattr(describer, "summarize"):
        for task in catalog.tasks:
            task.description = describer.summarize(task.examples)
    seconds["discovery"] = time.perf_counter() - t
    t = time.perf_counter()
    classifier = fit_classifier(router, encoder, embeddings, discovery)
    if classifier is not None:
        train_tasks, _ = classifier.predict(embeddings)
    else:
        train_tasks = np.full(len(prompts), -1, dtype=np.int64)
    seconds["classifier"] = time.perf_counter() - t
    t = time.perf_counter()
    index = {name: j for j, name in enumerate(models)}
    candidates = [[index[c] for c in task.candidates] for task in catalog.tasks]
    quality = router.make_component("quality").fit(embeddings, scores, train_tasks, candidates)
    seconds["quality"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = prior_rows(router, embeddings, discovery, getattr(classifier, "task_text_embeddings_", None))
    stage1 = stage1_prior(router, catalog, scores, rows)
    seconds["stage1_prior"] = time.perf_counter() - t
    global_prior = nanmean_columns(np.asarray(scores, dtype=np.float64))
    return FittedParts(discovery, classifier, quality, stage1, global_prior, train_tasks, candidates, seconds)


def routed_shares(tasks: np.ndarray, n_tasks: int) -> list[float]:
    """``T + 1`` shares: of prompts the classifier assigned tasks ``tasks`` (-1: Others), each task's (last: Others)."""
    group = np.where(np.asarray(tasks) >= 0, tasks, n_tasks)
    counts = np.bincount(group, minlength=n_tasks + 1).astype(np.float64)
    return (counts / max(counts.sum(), 1.0)).tolist()


def fit_summary(
    dataset: Any, parts: FittedParts, refined: bool, label_choice: dict[str, Any], mixing: MixingChoice,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The router's ``fit_summary_``: the data's size, the tasks found, the label and mixing choices, timings."""
    labels = parts.discovery.labels_
    return {
        "n_prompts": dataset.n_prompts,
        "n_models": dataset.n_models,
        "n_tasks": parts.discovery.catalog_.n_tasks,
        "refined_task_labels": refined,
        "task_label_choice": label_choice,
        "share_in_tasks": float(np.mean(labels >= 0)),
        "mean_candidates": float(np.mean([len(c) for c in parts.candidates])) if parts.candidates else 0.0,
        "share_assigned_by_classifier": float(np.mean(parts.train_tasks >= 0)),
        # each task's share of the training prompts as the classifier routes them (last: Others): the traffic's mix
        "task_shares": routed_shares(parts.train_tasks, parts.discovery.catalog_.n_tasks),
        # the models Stage 2 leaves out (QualityEstimator(prune_coverage=...)), at their mean training score
        "stage2_pruned": [dataset.models[j] for j in sorted(getattr(parts.quality, "pruned_", {}))],
        "mixing": mixing.to_dict(),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }


def choose_refinement(
    router: Any, dataset: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, descriptions: list[str]
) -> tuple[bool, dict[str, float]]:
    """``refine_task_labels="auto"``: refine the labels only if that routes a dev part better.

    The training rows are split 80/20 by unique prompt, stratified by label (seeded). On the 80% part, the
    label-free and the refined discovery are each fitted with their task classifier; each routes the dev
    prompts by its stage-1 prior alone (the assigned task's statistic per model; the better model overall
    on exact ties), and the mean true score of the picked model (a missing score: the model's mean on the 80% part,
    corrected on the prompt's observed scores, :func:`~finerouter.routing.holes.robust_truth`) is compared.
    Refining must do strictly better; ties keep the paper's label-free discovery. With too few rows to carve
    a dev part (no dev row, or under 10 fit rows) nothing is measured and the labels are refined. Stage 2 is
    not fitted here, and the classifiers see the catalogs' own task texts (no describer summaries, which would
    call an LLM).
    """
    from finerouter.data.dataset import split_indices
    from finerouter.discovery.ranking import nanmean_columns

    fit_i, dev_i = split_indices(dataset.prompts, dataset.tasks, 0.2, router.seed + 7919)
    if dev_i.size == 0 or fit_i.size < 10:
        return True, {}
    scores = np.asarray(dataset.scores, dtype=np.float64)
    means = nanmean_columns(scores[fit_i])
    tie = 1e-9 * np.nan_to_num(means, nan=-1.0)
    dev_truth = robust_truth(scores[dev_i], means)
    prompts = [dataset.prompts[i] for i in fit_i]
    desc = [descriptions[i] for i in fit_i]
    quality: dict[str, float] = {}
    for name, groups in (("label_free", None), ("refined", [dataset.tasks[i] for i in fit_i])):
        disc = discover(router, desc_emb[fit_i], scores[fit_i], dataset.models, prompts, desc, groups)
        clf = fit_classifier(router, encoder, embeddings[fit_i], disc)
        counted = prior_rows(router, embeddings[fit_i], disc, getattr(clf, "task_text_embeddings_", None))
        prior = stage1_prior(router, disc.catalog_, scores[fit_i], counted)
        n_tasks = disc.catalog_.n_tasks
        task = clf.predict(embeddings[dev_i])[0] if clf is not None else np.full(dev_i.size, -1)
        rows = np.where(task >= 0, task, n_tasks)
        pick = np.argmax(np.nan_to_num(prior[rows], nan=-1.0) + tie, axis=1)
        quality[name] = float(dev_truth[np.arange(dev_i.size), pick].mean())
    refine = quality["refined"] > quality["label_free"]
    logger.info(
        "task labels: stage-1 routing quality on a dev part of the training data, label-free %.4f, refined "
        "%.4f -> %s", quality["label_free"], quality["refined"], "refine" if refine else "label-free",
    )
    return refine, quality


def label_names(router: Any, dataset: Any) -> list[str]:
    """The labels of ``dataset`` the label prior would use (:mod:`finerouter.routing.label_prior`); empty when the
    router does not offer it (``label_prior=False``, or a ``stage1_assignment`` of ``"hard"`` or ``"soft"`` asked
    for by name rather than ``"auto"`` or ``"cv"``) or the data has fewer than two usable labels."""
    offered = getattr(router, "label_prior", False) and router.stage1_assignment in ("auto", "cv")
    return usable_labels(dataset.tasks) if offered else []


def final_label_prior(router: Any, dataset: Any, embeddings: np.ndarray, mixing: MixingChoice) -> LabelPrior | None:
    """The label prior fitted on all the training data when the mixing cross-validation chose it, else None."""
    if mixing.assignment != "label":
        return None
    return LabelPrior.fit(embeddings, dataset.tasks, np.asarray(dataset.scores, dtype=np.float64), router.seed)


def task_label_groups(router: Any, dataset: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray,
                      descriptions: list[str]) -> tuple[list[str] | None, dict[str, Any]]:
    """``(groups, label_choice)``: the coarse labels discovery refines (None: label-free) as ``refine_task_labels``
    asks (``"auto"``: :func:`choose_refinement`), and the record of that choice for ``fit_summary_``."""
    label_choice: dict[str, Any] = {"mode": router.refine_task_labels}
    if dataset.tasks is None or router.refine_task_labels is False:
        refine = False
    elif router.refine_task_labels is True:
        refine = True
    else:
        refine, dev_quality = choose_refinement(router, dataset, encoder, embeddings, desc_emb, descriptions)
        label_choice["dev_quality"] = dev_quality
    return (dataset.tasks if refine else None), label_choice


def fixed_mixing(router: Any) -> tuple[MixingChoice, Calibration]:
    """``mixing="paper"``: the paper's Eq. 5 with the router's ``alpha``, no calibration, and the stage-1 assignment
    asked for (``"cv"``, with no cross-validation to choose, is the paper's hard prior)."""
    from finerouter.routing.regime import setting

    choice = MixingChoice.fixed(router.alpha, 1.0 - router.alpha, 0.0)
    choice.assignment = unchosen(setting(router, "stage1_assignment"))
    return choice, Calibration.identity()


def cross_validate_mixing(
    router: Any, dataset: Any, encoder: Any, embeddings: np.ndarray, desc_emb: np.ndarray, descriptions: list[str],
    groups: list[str] | None, neighbours_first: bool = False,
) -> tuple[MixingChoice, Calibration]:
    """``mixing="cv"``: out-of-fold stage-1, stage-2 and global scores on the training data, then the weights.

    Each of ``cv_folds`` folds (by unique prompt, stratified by the data's task labels when present) is held
    out in turn; both stages are refitted on the other folds (with the same label decision, the catalogs' own
    task texts) and score the held-out prompts. :func:`finerouter.routing.mixing.choose_weights` picks the
    weights from these scores (with ``neighbours``, also among mixes that weigh each model's mean score on the
    prompt's nearest training prompts of the other folds); an isotonic calibration of the mixed estimate is fitted
    on the same scores. The default mix, kept unless another routes the held-out folds better by a standard error,
    is the paper's Eq. 5, or with ``neighbours_first`` (discovery found no task structure:
    :func:`finerouter.routing.regime.weak_tasks`) the neighbour source alone.

    The stage-1 prior is computed out of fold as the router's ``stage1_assignment`` asks: hard, soft, or with
    ``"cv"`` both, each getting its own weights; the one that routes the held-out folds better (cross-fitted) is kept
    (:func:`finerouter.routing.assignment.choose_assignment`) and is ``MixingChoice.assignment``.
    """
    from finerouter.evaluation.metrics import expected_calibration_error
    from finerouter.routing.regime import setting

    scores = np.asarray(dataset.scores, dtype=np.float64)
    n, m = scores.shape
    folds = resolve_cv_folds(router.cv_folds, len(set(dataset.prompts)))
    fold = fold_ids(dataset.prompts, dataset.tasks, folds, router.seed + 104729)
    requested = setting(router, "stage1_assignment")
    wanted = {"hard": ("hard",), "soft": ("soft",)}.get(requested, ("hard", "soft"))
    if label_names(router, dataset):  # the data's own labels: one more stage-1 candidate (label_prior)
        wanted += ("label",)
    stage1s = {name: np.full((n, m), np.nan) for name in wanted}
    stage2 = np.full((n, m), np.nan)
    global_prior = np.full((n, m), np.nan)
    neighbours = np.full((n, m), np.nan) if setting(router, "neighbours") else None
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        rest = np.flatnonzero(fold != f)
        if held.size == 0 or rest.size < 10:
            continue
        logger.info("mixing cross-validation: fold %d/%d (%d held out)", f + 1, folds, held.size)
        parts = fit_parts(
            router, encoder, embeddings[rest], desc_emb[rest], scores[rest], dataset.models,
            [dataset.prompts[i] for i in rest], [descriptions[i] for i in rest],
            None if groups is None else [groups[i] for i in rest],
        )
        emb = embeddings[held]
        if parts.classifier is not None:
            task, _ = parts.classifier._predict_checked(emb)
        else:
            task = np.full(held.size, -1, dtype=np.int64)
        rows = np.where(task >= 0, task, parts.discovery.catalog_.n_tasks)
        for name, stage1 in stage1s.items():  # without a classifier (no task) the soft prior is the hard one
            stage1[held] = soft_stage1(parts.classifier, emb, parts.stage1, parts.global_prior) \
                if name == "soft" and parts.classifier is not None else parts.stage1[rows]
        if "label" in stage1s:  # a fold without usable labels keeps the hard prior there
            held_labels = out_of_fold_label_prior(embeddings, dataset.tasks, scores, rest, held, router.seed)
            stage1s["label"][held] = parts.stage1[rows] if held_labels is None else held_labels
        stage2[held] = parts.quality._predict(emb, task)
        global_prior[held] = parts.global_prior[None, :]
        if neighbours is not None:
            k = choose_k(embeddings[rest], scores[rest])  # on the other folds only, as at fit on all prompts
            neighbours[held] = neighbour_means(emb, embeddings[rest], scores[rest], k)
    done = np.isfinite(global_prior).any(axis=1)
    if not done.any():  # no fold could be fitted: no evidence that routing helps
        logger.info("mixing: too few prompts for cross-validation; routing like the best single model")
        return MixingChoice({"stage2": 0.0, "stage1": 0.0, "global": 1.0, "neighbours": 0.0}, "fallback",
                            assignment=unchosen(requested)), Calibration.identity()
    alpha = float(router.alpha)
    candidates = ((alpha, 1.0 - alpha, 0.0),) + tuple(c for c in CANDIDATE_MIXES[1:] if c != (alpha, 1 - alpha, 0))
    held_neighbours = None
    if neighbours is not None:  # the neighbour source alone leads where Stage 1 found no task (docs/models.md)
        rest = tuple(c for c in NEIGHBOUR_MIXES if c != NEIGHBOURS_ALONE)
        candidates = (NEIGHBOURS_ALONE, *candidates, *rest) if neighbours_first else candidates + NEIGHBOUR_MIXES
        held_neighbours = neighbours[done]
    stacks: tuple[tuple[str, ...], ...] = ()
    if router.stacking:  # the stack is the default; with the neighbour source, the stack that reads it too
        stacks = (("stage2", "stage1"),) if neighbours is None else (("stage2", "stage1", "neighbours"),)
    choices = {
        name: choose_weights(
            stage2[done], stage1[done], global_prior[done], scores[done], fold[done], candidates=candidates,
            neighbours=held_neighbours, stacks=stacks, stack_first=True,
        )
        for name, stage1 in stage1s.items()
    }
    assignment = choose_assignment(choices)
    choice, stage1 = choices[assignment], stage1s[assignment]
    choice.folds, choice.assignment = folds, assignment
    if choice.uses_neighbours:  # its number of neighbours, chosen on every training prompt as each fold's was
        choice.neighbour_k = choose_k(embeddings, scores)
    if len(choices) > 1:
        choice.assignment_quality = {name: effective_quality(c) for name, c in choices.items()}
        logger.info("stage-1 assignment: out-of-fold routing quality %s -> %s",
                    {k: round(v, 4) for k, v in choice.assignment_quality.items()}, assignment)
    router.out_of_fold_ = OutOfFold(
        stage2[done], stage1[done], global_prior[done], held_neighbours, scores[done], fold[done]
    )
    raw = raw_mix(choice.estimate_vector(), stage2[done], stage1[done], global_prior[done], held_neighbours)
    calibration = Calibration.fit(raw, scores[done])
    choice.calibration_error = {
        "raw": expected_calibration_error(raw, scores[done]),
        "calibrated": expected_calibration_error(calibration(raw), scores[done]),
    }
    return choice, calibration


__all__ = [
    "PRIOR_FOLDS",
    "FittedParts",
    "choose_refinement",
    "cross_validate_mixing",
    "discover",
    "fit_classifier",
    "fit_parts",
    "final_label_prior",
    "fit_summary",
    "fixed_mixing",
    "label_names",
    "prior_rows",
    "routed_shares",
    "routed_tasks",
    "stage1_matrix",
    "stage1_prior",
    "task_label_groups",
    "task_texts",
]
