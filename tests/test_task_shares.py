"""The tasks' shares of a router's traffic (finerouter.routing.onboarding_mixing.task_weights): its training prompts
as its classifier routes them, recorded at fit and kept by an artifact, each fit of an ensemble its own; what
add_model weighs new prompts by (the new model's global prior, its lead over the best fitted model) and
suggest-prompts shares its prompts by."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.dataset import RoutingDataset
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.routing.ensemble import members_of
from finerouter.routing.onboarding import assign_tasks
from finerouter.routing.onboarding_data import new_model_scores
from finerouter.routing.onboarding_mixing import (lead_over_best, record_task_shares, task_weighted_mean,
                                                 task_weights)
from finerouter.testing import FAST_SETTINGS, FakeEncoder


@pytest.fixture(scope="module")
def fitted():
    """``(router, train)``: a two-fit ensemble on synthetic data."""
    train, _ = make_synthetic_routing_data(240, n_models=4, seed=1).split(0.25, seed=1)
    router = FineRouter(encoder=FakeEncoder(), seed=0, **{**FAST_SETTINGS, "ensemble_size": 2}).fit(train)
    return router, train


def routed(fit, train):
    """Each task's share of ``train``'s prompts as ``fit``'s classifier assigns them (last: Others)."""
    tasks = assign_tasks(fit, np.ascontiguousarray(fit.encoder_.encode(train.prompts), dtype=np.float32))
    n = fit.catalog_.n_tasks
    return np.bincount(np.where(tasks >= 0, tasks, n), minlength=n + 1) / tasks.size


def test_each_fit_records_how_its_classifier_routes_the_training_prompts(fitted):
    router, train = fitted
    fits = [router, *members_of(router)]
    assert len(fits) == 2
    for fit in fits:
        np.testing.assert_allclose(task_weights(fit), routed(fit, train), atol=1e-12)
        sizes = np.array([t.size for t in fit.catalog_.tasks] + [fit.catalog_.others.size], dtype=float)
        assert len(fit.fit_summary_["task_shares"]) == sizes.size  # one per task and Others
        assert np.abs(task_weights(fit) - sizes / sizes.sum()).sum() > 0.1  # not discovery's sizes


def test_the_shares_survive_saving_and_a_router_saved_without_them_can_be_given_them(fitted, tmp_path):
    router, train = fitted
    loaded = FineRouter.load(router.save(tmp_path / "r"), encoder=FakeEncoder())
    for fit, again in zip([router, *members_of(router)], [loaded, *members_of(loaded)], strict=True):
        np.testing.assert_array_equal(task_weights(again), task_weights(fit))
    for fit in (loaded, *members_of(loaded)):  # as an artifact saved before fits recorded them
        del fit.fit_summary_["task_shares"]
    sizes = np.array([t.size for t in loaded.catalog_.tasks] + [loaded.catalog_.others.size], dtype=float)
    with pytest.warns(UserWarning, match="record_task_shares"):  # the fallback: discovery's sizes, and a warning
        np.testing.assert_allclose(task_weights(loaded), sizes / sizes.sum())
    record_task_shares(loaded, loaded.encoder_.encode(train.prompts))
    for fit, again in zip([router, *members_of(router)], [loaded, *members_of(loaded)], strict=True):
        np.testing.assert_allclose(task_weights(again), task_weights(fit), atol=1e-12)


def test_over_every_training_prompt_the_weighted_lead_is_the_plain_mean(fitted):
    # The weights are the traffic's shares over the sample's: on the training prompts themselves they are all 1,
    # whatever discovery's task sizes were, so the new model's lead over the best fitted model is its plain mean
    # difference (weighted by discovery's sizes it was not: routerdc, dolphin-2.9, 0.025 against 0.012).
    router, train = fitted
    rng = np.random.default_rng(0)
    column = np.clip(np.asarray(train.scores)[:, 0] + rng.normal(0, 0.2, train.n_prompts), 0, 1)
    data = RoutingDataset(train.prompts, train.models + ["new"], np.column_stack([train.scores, column]))
    new = new_model_scores(data, "new", router.models_)
    tasks = assign_tasks(router, np.ascontiguousarray(router.encoder_.encode(new.prompts), dtype=np.float32))
    best = int(np.nanargmax(router.global_prior_))
    lead, _ = lead_over_best(router, new, tasks)
    assert lead == pytest.approx(float(np.mean(new.scores - new.others[:, best])), abs=1e-12)
    # a sample that over-represents one task is weighed back to the traffic's mix
    values = (tasks == tasks[0]).astype(float)
    heavy = np.r_[np.flatnonzero(tasks == tasks[0]), np.flatnonzero(tasks != tasks[0])[::4]]
    assert set(tasks[heavy]) == set(tasks)  # every task of the traffic is in the sample, over-represented or not
    weighted, _ = task_weighted_mean(values[heavy], tasks[heavy], router)
    assert weighted == pytest.approx(float(np.mean(values)), abs=1e-12)
    assert float(np.mean(values)) < float(np.mean(values[heavy]))


def test_prompts_only_of_tasks_without_traffic_count_alike(fitted):
    router, _ = fitted
    shares = task_weights(router)
    empty = int(np.flatnonzero(shares == 0)[0]) if (shares == 0).any() else None
    if empty is None:  # make one: a router whose classifier routed no training prompt to task 0
        router = copy.copy(router)
        router.fit_summary_ = {**router.fit_summary_, "task_shares": [0.0, *shares[1:]]}
        empty = 0
    tasks = np.full(4, empty if empty < router.catalog_.n_tasks else -1)
    mean, se = task_weighted_mean(np.array([0.0, 1.0, 1.0, 0.0]), tasks, router)
    assert mean == pytest.approx(0.5) and np.isfinite(se)
