"""Where a router, once a model was added, would choose it on the new prompts: judged cross-fitted, so that no
prompt is judged by a column learned from its own score (finerouter.routing.onboarding_mixing.new_model_picks and
cross_fitted_choices). A FakeEncoder router on synthetic data that routes (cross-validated mixing), fitted once."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.dataset import RoutingDataset
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.routing.onboarding import assign_tasks, new_columns
from finerouter.routing.onboarding_data import MIN_PROMPTS, new_model_scores
from finerouter.routing.onboarding_mixing import (RESUME_FOLDS, cross_fit_folds, cross_fitted_choices,
                                                 new_model_picks)
from finerouter.routing.scoring import score
from finerouter.testing import FAST_SETTINGS, FakeEncoder


@pytest.fixture(scope="module")
def routing():
    """``(router, train)``: a router whose cross-validation chose to route."""
    train, _ = make_synthetic_routing_data(300, n_models=4, seed=0).split(0.25, seed=0)
    router = FineRouter(encoder=FakeEncoder(), seed=0, mixing="cv", stage1_assignment="hard",
                        **FAST_SETTINGS).fit(train)  # fmt: skip
    assert router.mixing_.method == "cv"
    return router, train


def added_with(router, train, column, rows):
    """``(added router, its new-model scores, the prompts' embeddings and tasks)``: ``column`` on ``rows``."""
    data = RoutingDataset(train.prompts, train.models + ["new"], np.column_stack([train.scores, column])).subset(rows)
    added = router.add_model("new", data, cost=1.0)
    new = new_model_scores(data, "new", router.models_)
    emb = np.ascontiguousarray(router.encoder_.encode(new.prompts), dtype=np.float32)
    return added, new, emb, assign_tasks(router, emb)


def in_sample_picks(router, added, emb):
    """Where ``added``, routing by ``router``'s mixing alone, chooses the new model, its columns learned from every
    new prompt."""
    trial = copy.copy(added)
    trial.mixing_, trial.members_ = router.mixing_, []
    return np.argmax(score(trial, emb).final, axis=1) == len(router.models_)


def test_a_prompt_is_never_judged_by_its_own_score(routing):
    # In-sample, the new model is chosen where its own scores happened to be high, and the prompts where it is not
    # chosen are those where they happened to be low: its lead there, which decides whether the router falls back
    # to it, is underestimated (RouterBench subset, seed 2: GPT-4 added back to a router fitted without it stayed
    # routed on 12% of the test prompts, 0.0087 below the refit that fell back to it).
    router, train = routing
    rows = np.arange(120)
    behind = np.clip(np.asarray(train.scores)[:, int(np.argmax(router.global_prior_))] - 0.05, 0, 1)  # behind the best
    added, new, emb, tasks = added_with(router, train, behind, rows)
    judged = np.arange(new.scores.size)
    chosen, without = cross_fitted_choices(router, added, new, emb, tasks, 0, router.mixing_, judged)
    assert without.min() >= 0 and without.max() < len(router.models_)
    assert new_model_picks(router, added, new, emb, tasks, 0) is None  # it does not lead: no fallback to weigh
    # the new model made perfect on one fold's prompts: what the other folds learn changes, never how those prompts
    # are judged (in-sample, they now choose it)
    fold = cross_fit_folds(judged.size, 0) == 0  # the folds of seed 0, as judged above
    column = behind.copy()
    column[rows[fold]] = 1.0
    other, new2, _, _ = added_with(router, train, column, rows)
    again, again_without = cross_fitted_choices(router, other, new2, emb, tasks, 0, router.mixing_, judged)
    assert np.array_equal(again[fold], chosen[fold]) and np.array_equal(again_without[fold], without[fold])
    in_sample = in_sample_picks(router, other, emb)
    assert in_sample[fold].mean() > again[fold].mean() + 0.2
    assert other.global_prior_[-1] > router.global_prior_.max()  # now it leads: its picks are the cross-fitted ones
    assert np.array_equal(new_model_picks(router, other, new2, emb, tasks, 0), again)


def test_too_few_prompts_to_cross_fit_are_judged_in_sample(routing):
    router, train = routing
    rows = np.arange(RESUME_FOLDS * MIN_PROMPTS - 1)
    column = np.clip(np.asarray(train.scores)[:, 0] + 0.3, 0, 1)  # far ahead of every model: it leads, so is judged
    added, new, emb, tasks = added_with(router, train, column, rows)
    _, stage1, global_prior, _ = new_columns(router, new, emb, tasks)  # the columns from every prompt
    assert global_prior[-1] > router.global_prior_.max()
    assert np.array_equal(added.stage1_, stage1) and np.array_equal(added.global_prior_, global_prior)
    assert np.array_equal(new_model_picks(router, added, new, emb, tasks, 0), in_sample_picks(router, added, emb))
