"""What a pick is worth when the router chooses among its own rules on a table with holes.

Fit-time choices (the mixing weights, the stage-1 assignment, the fallback to the best single model, whether to
refine the data's task labels) score each candidate rule by the true score of the model it picks on held-out
training prompts. A table need not be complete: ``finerouter collect --sample-models K`` scores K models per
prompt, and a gateway request log only the model that answered. There a pick is often of a model the prompt was not
scored on, and how it is counted decides the choice:

* as 0 (the evaluation's convention for a test prompt), every rule is scored mostly on whether its picks happen
  to be the scored ones, so the out-of-fold qualities are a fraction of the true ones and their differences noise;
* as the model's mean score (a direct estimate), every rule that picks a model where it is *locally* better looks
  worse, being credited only with the model's average, and the choice leans to the best single model.

:func:`robust_truth` is the doubly robust estimate: the model's mean plus the prompt's observed residual over the
share of the prompt's models that were observed, which averages to the true score when which models a prompt was
scored on is random (as ``--sample-models`` draws them). A complete row is its truth exactly, so on complete tables
every choice is as before. Measured (``bench/sparse_tables.py``, docs/models.md "Tables with holes"): fitted on
dcrouter with 2 of its 9 models scored per training prompt, the router routes its complete test split at 0.630 over
5 seeds (the best single model 0.622, never below it), where counting unscored picks as 0 it routed 0.622, below the
best single model on 2 seeds.
"""

from __future__ import annotations

import numpy as np


def robust_truth(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """``(n, m)``: each entry of ``truth`` (``(n, m)``, NaN = not scored) as a doubly robust value. With ``e`` the
    ``estimate`` (``(n, m)`` or ``(m,)``: the model's mean score where the choice was learned; NaN counts 0) and
    ``p`` the share of the row's models that were scored: ``e + (t - e) / p`` where scored, ``e`` where not. A
    complete row is returned as it is; a row with no score is ``e``."""
    truth = np.asarray(truth, dtype=np.float64)
    seen = np.isfinite(truth)
    e = np.nan_to_num(np.broadcast_to(np.asarray(estimate, dtype=np.float64), truth.shape), nan=0.0)
    share = seen.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        robust = np.where(seen, e + (np.where(seen, truth, 0.0) - e) / np.maximum(share, 1e-12), e)
    return np.where(seen.all(axis=1, keepdims=True), truth, robust)


__all__ = ["robust_truth"]
