"""The label prior: a stage-1 prior read from the training data's own coarse task labels, where it has them.

Many routing tables carry a coarse label per prompt (the benchmark it came from, an application's category). The
paper routes by the tasks discovery finds and uses such labels only as a baseline (Coarse CLS); where discovery's
tasks cut across the labels, or a few hundred prompts make its tasks noisy, a classifier that predicts the label
from the prompt's embedding can be the better prior (measured in docs/models.md). So where the training data has
labels, the router also offers

    label(x) = sum_l p(l | x) * prior_l,

a multinomial logistic regression on the prompt embedding (``p(l | x)``) times each label's mean score per model,
shrunk toward the model's overall mean by the label's size (:func:`~finerouter.routing.shrinkage.shrink_task_means`),
as one more stage-1 candidate of the mixing cross-validation (``FineRouter(label_prior=True)``, the default): it is
computed out of fold from the same folds, gets its own mixing weights, and is kept only when its cross-fitted routing
quality is higher than the task priors' (:func:`~finerouter.routing.assignment.choose_assignment`; ties keep the
tasks). Routing reads only the prompt: the label is never a routing input. Data without labels (or with fewer
than two labels of :data:`MIN_LABEL_PROMPTS` prompts) routes exactly as without this prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finerouter.errors import DataError
from finerouter.routing.shrinkage import paired_shift, shrink_task_means

#: A label needs at least this many training prompts to be one of the prior's classes.
MIN_LABEL_PROMPTS = 5
#: Inverse L2 strength of the label classifier (on unit-norm sentence embeddings).
LABEL_C = 10.0


def usable_labels(labels: Sequence[str] | None) -> list[str]:
    """The labels with at least :data:`MIN_LABEL_PROMPTS` prompts, sorted; empty when fewer than two are."""
    if labels is None:
        return []
    names, counts = np.unique(np.asarray(list(labels), dtype=object).astype(str), return_counts=True)
    kept = [str(n) for n, c in zip(names, counts) if c >= MIN_LABEL_PROMPTS and str(n) != ""]
    return kept if len(kept) >= 2 else []


@dataclass
class LabelPrior:
    """A fitted label prior. ``labels`` ``(L,)``; ``coef`` ``(L, d)`` and ``intercept`` ``(L,)`` the multinomial
    logistic regression; ``means`` ``(L, m)`` each label's shrunk mean score per model."""

    labels: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    means: np.ndarray

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: Sequence[str], scores: np.ndarray, seed: int = 0) -> LabelPrior | None:
        """Fit on ``(n, d)`` embeddings, their ``(n,)`` labels and ``(n, m)`` scores; None without usable labels.
        Prompts whose label is too rare to be a class are left out of the classifier and the means."""
        from sklearn.linear_model import LogisticRegression

        names = usable_labels(labels)
        if not names:
            return None
        index = {n: i for i, n in enumerate(names)}
        y = np.array([index.get(str(v), -1) for v in labels])
        keep = y >= 0
        clf = LogisticRegression(C=LABEL_C, max_iter=1000, random_state=seed)
        clf.fit(np.asarray(embeddings, dtype=np.float64)[keep], y[keep])
        means = shrink_task_means(np.asarray(scores, dtype=np.float64)[keep], y[keep], len(names))[: len(names)]
        overall = np.nan_to_num(np.nanmean(means, axis=0), nan=0.0)  # a model never scored: 0, as at routing
        means = np.where(np.isfinite(means), means, overall[None, :])
        coef, intercept = clf.coef_, clf.intercept_
        if len(names) == 2:  # sklearn's binary model is one logit for class 1: softmax over (0, z) is its sigmoid
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
        return cls(names, coef.astype(np.float32), intercept.astype(np.float32), means)

    def weights(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, L)`` the classifier's label probabilities."""
        logits = np.asarray(embeddings, dtype=np.float32) @ self.coef.T + self.intercept[None, :]
        logits = logits.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def prior(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, m)`` the label prior of each prompt: label means weighted by the label probabilities."""
        return self.weights(embeddings) @ self.means

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n,)`` the most likely label's index per prompt."""
        return np.argmax(self.weights(embeddings), axis=1)

    # -------------------------------------------------------------------------- models added and removed
    def with_column(self, column: np.ndarray) -> LabelPrior:
        """A copy with one more model whose per-label prior is ``column`` ``(L,)``."""
        column = np.asarray(column, dtype=np.float64).reshape(-1)
        if column.shape != (len(self.labels),):
            raise DataError(f"a label-prior column needs {len(self.labels)} values, got {column.shape}")
        return LabelPrior(list(self.labels), self.coef, self.intercept, np.column_stack([self.means, column]))

    def without(self, j: int) -> LabelPrior:
        """A copy without model ``j``."""
        return LabelPrior(list(self.labels), self.coef, self.intercept, np.delete(self.means, j, axis=1))

    # -------------------------------------------------------------------------- artifact
    def to_arrays(self, prefix: str = "label_") -> dict[str, np.ndarray]:
        """The arrays an artifact stores (the labels go into the manifest)."""
        return {f"{prefix}coef": self.coef, f"{prefix}intercept": self.intercept, f"{prefix}means": self.means}

    @classmethod
    def from_arrays(cls, labels: Sequence[str], arrays: dict[str, Any], prefix: str = "label_") -> LabelPrior:
        """The prior an artifact stored (:meth:`to_arrays`), checked for consistent shapes."""
        try:
            coef = np.asarray(arrays[f"{prefix}coef"], dtype=np.float32)
            intercept = np.asarray(arrays[f"{prefix}intercept"], dtype=np.float32)
            means = np.asarray(arrays[f"{prefix}means"], dtype=np.float64)
        except KeyError as exc:
            raise DataError(f"the label prior's array {exc.args[0]!r} is missing") from None
        n = len(labels)
        if coef.ndim != 2 or coef.shape[0] != n or intercept.shape != (n,) or means.ndim != 2 or means.shape[0] != n:
            raise DataError(
                f"the label prior's arrays do not fit its {n} labels: coef {coef.shape}, intercept {intercept.shape}, "
                f"means {means.shape}"
            )
        return cls([str(v) for v in labels], coef, intercept, means)


def given_or_predicted(prior: LabelPrior, embeddings: np.ndarray, labels: Sequence[str | None] | None) -> np.ndarray:
    """``(n,)`` each prompt's label index: its own label where ``labels`` names one of the prior's, else the
    classifier's most likely one."""
    predicted = prior.predict(embeddings)
    if labels is None:
        return predicted
    if len(labels) != len(predicted):
        raise DataError(f"{len(labels)} labels for {len(predicted)} prompts")
    index = {n: i for i, n in enumerate(prior.labels)}
    given = np.array([index.get(str(v), -1) if v is not None else -1 for v in labels], dtype=np.int64)
    return np.where(given >= 0, given, predicted)


def out_of_fold_label_prior(
    embeddings: np.ndarray, labels: Sequence[str], scores: np.ndarray, rest: np.ndarray, held: np.ndarray, seed: int
) -> np.ndarray | None:
    """The label prior of the ``held`` rows fitted on the ``rest`` rows (None when those have no usable labels)."""
    prior = LabelPrior.fit(embeddings[rest], [labels[i] for i in rest], scores[rest], seed)
    return None if prior is None else prior.prior(embeddings[held])


def new_label_column(prior: LabelPrior, scores: np.ndarray, others: np.ndarray, embeddings: np.ndarray,
                     min_prompts: int, labels: Sequence[str | None] | None = None) -> np.ndarray:
    """``(L,)`` an added model's label prior from its ``(n,)`` scores on prompts with ``(n, d)`` embeddings.

    As for its task priors (:func:`finerouter.routing.onboarding.new_prior_column`): with at least ``min_prompts``
    prompts that carry every other model's score (``others`` ``(n, m)``), the fitted models' mean label prior plus
    the new model's shrunk mean difference from them on the same prompts per label; else its own per-label means,
    shrunk toward its overall mean. A prompt's label is its own where ``labels`` gives one the prior knows (the
    fitted models' means were taken over the true labels too), else the classifier's most likely label: a predicted
    label is wrong on a share of prompts, which blurs the new model's per-label differences toward its average."""
    labels = given_or_predicted(prior, embeddings, labels)
    n_labels = len(prior.labels)
    shift = paired_shift(scores, others, labels, n_labels, min_prompts)
    if shift is not None:
        return np.clip(prior.means.mean(axis=1) + shift[:n_labels], 0.0, 1.0)
    return shrink_task_means(np.asarray(scores, dtype=np.float64)[:, None], labels, n_labels)[:n_labels, 0]


__all__ = [
    "LABEL_C", "MIN_LABEL_PROMPTS", "LabelPrior", "given_or_predicted", "new_label_column", "out_of_fold_label_prior",
    "usable_labels",
]
