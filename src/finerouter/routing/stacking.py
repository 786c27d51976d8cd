"""A shrinkage mix of the score sources on the score scale, its weights fitted on out-of-fold data (stacking).

The paper's Eq. 5 mixes min-max normalised sources. With a large pool that normalisation ties the mix to the spread
of the whole pool: when most models are far behind, the few strong ones sit within a few hundredths of each other
on every normalised source, so a noisy stage-2 estimate decides between them as loudly as a clean one. The
stacked mix works on the score scale instead, as a shrinkage estimator of each model's score on the prompt:

    estimate[p, m] = g[m] + sum_s beta_s * (source_s[p, m] - g[m])

where ``g`` is each model's mean training score (the global prior) and ``beta_s >= 0`` says how far to trust each
source's deviation from it. The betas are fitted by non-negative least squares on the out-of-fold scores of the
router's own cross-validation, after removing each prompt's mean over models from both sides: what a prompt's
difficulty moves for every model alike does not change which model is best, and would otherwise dominate the fit.
A source whose deviations carry no information about which model does better gets ``beta = 0`` (routing by the
global prior: the best single model); a noisy one is shrunk toward it. In weight form (the
:data:`finerouter.routing.mixing.SOURCES` order) it is ``(beta_2, beta_1, 1 - sum(beta), beta_n)`` applied to the
raw sources (:func:`finerouter.routing.mixing.raw_mix`).
"""

from __future__ import annotations

import numpy as np

from finerouter.errors import ParameterError

#: Position of each stackable source in the ``(stage2, stage1, global, neighbours)`` weight vector.
_POSITION = {"stage2": 0, "stage1": 1, "neighbours": 3}


def _row_centred(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` minus each row's mean over ``mask``; entries outside ``mask`` are 0."""
    filled = np.where(mask, values, 0.0)
    counts = mask.sum(axis=1, keepdims=True)
    means = filled.sum(axis=1, keepdims=True) / np.maximum(counts, 1)
    return np.where(mask, filled - means, 0.0)


def fit_stack(
    sources: dict[str, np.ndarray], global_prior: np.ndarray, truth: np.ndarray
) -> np.ndarray:
    """``(4,)`` raw-scale mixing weights: non-negative least squares of the truth's deviations from the global prior
    on each source's deviations, per prompt centred (see the module docstring).

    Args:
        sources: ``{"stage2" | "stage1" | "neighbours": (n, m)}`` out-of-fold estimates (NaN = the global prior).
        global_prior: ``(m,)`` or ``(n, m)`` each model's mean training score (per fold).
        truth: ``(n, m)`` true scores (NaN = not evaluated; left out of the fit).

    Returns the weights in ``(stage2, stage1, global, neighbours)`` order; the global weight is ``1 - sum(beta)``.
    With no usable pair (no prompt with two observed models) every beta is 0: the global prior alone.
    """
    from scipy.optimize import nnls

    unknown = sorted(set(sources) - set(_POSITION))
    if unknown:
        raise ParameterError(f"fit_stack: unknown source(s) {unknown}; expected some of {sorted(_POSITION)}")
    truth = np.asarray(truth, dtype=np.float64)
    g = np.broadcast_to(np.asarray(global_prior, dtype=np.float64), truth.shape)
    mask = np.isfinite(truth) & np.isfinite(g)
    mask &= mask.sum(axis=1, keepdims=True) >= 2  # a prompt with one observed model says nothing about ranking
    weights = np.zeros(4)
    weights[2] = 1.0
    names = list(sources)
    if not mask.any() or not names:
        return weights
    target = _row_centred(truth - np.where(mask, g, 0.0), mask)[mask]
    design = np.stack(
        [_row_centred(np.where(np.isfinite(sources[s]), sources[s], g) - g, mask)[mask] for s in names], axis=1
    )
    scale = np.sqrt((design**2).mean(axis=0))
    usable = scale > 1e-12
    beta = np.zeros(len(names))
    if usable.any():
        fitted, _ = nnls(design[:, usable] / scale[usable], target)
        beta[usable] = fitted / scale[usable]
    for name, b in zip(names, beta):
        weights[_POSITION[name]] = float(b)
    weights[2] = 1.0 - float(beta.sum())
    return weights


__all__ = ["fit_stack"]
