"""A router that fell back to its best single model routes again when an added model makes routing pay
(finerouter.routing.onboarding_mixing.resumed_mixing). A FakeEncoder router on synthetic data, fitted once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finerouter import FineRouter
from finerouter.cli.main import app
from finerouter.data.dataset import RoutingDataset
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.routing.onboarding import assign_tasks
from finerouter.routing.onboarding_mixing import RESUME_FOLDS, task_weighted_mean
from finerouter.testing import FAST_SETTINGS, FakeEncoder


def dominated(data):
    """``data`` with its first model made the best on every prompt: routing among its models cannot gain."""
    scores = np.asarray(data.scores, dtype=np.float64).copy()
    scores[:, 0] = np.clip(np.nanmax(scores, axis=1) + 0.15, 0, 1)
    return RoutingDataset(data.prompts, data.models, scores, ids=data.ids, tasks=data.tasks)


@pytest.fixture(scope="module")
def fallen():
    """``(router, train, test, target task)``: a cross-validated router that fell back to its best single model."""
    data = make_synthetic_routing_data(300, n_models=4, seed=0)
    train, test = (dominated(part) for part in data.split(0.25, seed=0))
    router = FineRouter(encoder=FakeEncoder(), seed=0, mixing="cv", stage1_assignment="hard",
                        **FAST_SETTINGS).fit(train)  # fmt: skip
    tasks = assign_tasks(router, router.encoder_.encode(train.prompts))
    return router, train, test, Counter(tasks.tolist()).most_common(1)[0][0]


def with_column(router, train, name, column, rows=150):
    data = RoutingDataset(train.prompts, train.models + [name], np.column_stack([train.scores, column]))
    return router.add_model(name, data.subset(np.arange(rows)), cost=1.0)


def test_a_router_that_fell_back_routes_again_when_an_added_specialist_makes_routing_pay(fallen, tmp_path):
    # routerdc: zephyr added to fits that had fallen back was picked on 0% of the test prompts; the refit's fits,
    # which saw it, all routed and picked it on 68%.
    router, train, test, target = fallen
    assert router.mixing_.method == "fallback" and router.mixing_.gain <= 0
    tasks = assign_tasks(router, router.encoder_.encode(train.prompts))
    best = np.asarray(train.scores)[:, 0]
    specialist = np.where(tasks == target, 1.0, np.clip(best - 0.5, 0, 1))  # ahead on one task, far behind elsewhere
    added = with_column(router, train, "specialist", specialist)
    assert added.global_prior_[-1] < router.global_prior_.max()  # it does not lead overall: no fallback to it
    why = added.fit_summary_["model_changes"][-1]["fallback_reweighed"]
    assert why["routes_again"] and why["routing_gain"] + why["added_gain"] > 0 and why["added_gain"] > 0
    assert 0 < why["picked_prompts"] < why["new_prompts"] <= 150
    assert added.mixing_.method == "cv" and added.mixing_.weights == {
        s: router.mixing_.estimate_weights.get(s, 0.0) for s in added.mixing_.weights}  # fmt: skip
    test_tasks = assign_tasks(router, router.encoder_.encode(test.prompts))
    chosen = np.array([d.model for d in added.route(test.prompts)])
    assert np.mean(chosen[test_tasks == target] == "specialist") >= 0.8
    assert np.mean(chosen[test_tasks != target] == "specialist") <= 0.05
    assert router.mixing_.method == "fallback"  # the original is left as it was
    # saved and loaded it routes alike; retiring the model restores the fallback
    loaded = FineRouter.load(added.save(tmp_path / "added"))
    assert loaded.mixing_ == added.mixing_
    retired = loaded.remove_model("specialist")
    assert retired.mixing_ == router.mixing_
    assert retired.fit_summary_["model_changes"][-1] == {"removed": "specialist", "restored_mixing": "fallback"}
    assert {d.model for d in retired.route(test.prompts)} == {train.models[0]}


def test_a_model_routing_would_not_gain_from_leaves_the_fallback(fallen):
    router, train, _, _ = fallen
    best = np.asarray(train.scores)[:, 0]
    noise = np.random.default_rng(3).uniform(0, 1, best.size)
    for name, column in (("behind", np.clip(best - 0.2, 0, 1)), ("noise", noise)):
        added = with_column(router, train, name, column)
        assert added.mixing_ is router.mixing_, name
        assert not added.fit_summary_["model_changes"][-1]["fallback_reweighed"]["routes_again"]


def test_too_few_prompts_with_the_other_models_scores_leave_the_fallback(fallen):
    # the added gain is a difference from the other models' scores on the same prompts: without them, no evidence
    router, train, test, target = fallen
    tasks = assign_tasks(router, router.encoder_.encode(train.prompts))
    specialist = np.where(tasks == target, 1.0, 0.0)
    scores = np.column_stack([train.scores, specialist])
    scores[RESUME_FOLDS * 10 - 1 :, :-1] = np.nan  # only RESUME_FOLDS * MIN_PROMPTS - 1 prompts carry them
    data = RoutingDataset(train.prompts, train.models + ["specialist"], scores).subset(np.arange(150))
    added = router.add_model("specialist", data, cost=1.0)
    assert added.mixing_ is router.mixing_


def test_the_added_gain_is_weighted_by_the_tasks_training_shares(fallen):
    router, _, _, _ = fallen
    sizes = np.asarray(router.fit_summary_["task_shares"])  # the training prompts as the classifier routes them
    tasks = np.repeat(np.arange(router.catalog_.n_tasks), 10)  # every task sampled alike, Others never
    values = tasks.astype(float)
    mean, se = task_weighted_mean(values, tasks, router)
    share = sizes[:-1] / sizes[:-1].sum()  # Others has no sampled prompt: the weights renormalise over the tasks
    assert mean == pytest.approx(float(share @ np.arange(router.catalog_.n_tasks)))
    assert se > 0


def test_the_add_model_command_says_which_fits_route_again(fallen, tmp_path):
    router, train, _, target = fallen
    tasks = assign_tasks(router, router.encoder_.encode(train.prompts))
    specialist = np.where(tasks == target, 1.0, np.clip(np.asarray(train.scores)[:, 0] - 0.5, 0, 1))
    scores = np.asarray(train.scores)
    table = {"prompt": train.prompts, **{f"score::{m}": scores[:, j] for j, m in enumerate(train.models)},
             "score::specialist": specialist}  # fmt: skip
    pd.DataFrame(table).iloc[:150].to_csv(tmp_path / "specialist.csv", index=False)
    router.save(tmp_path / "router")
    res = CliRunner().invoke(app, ["add-model", "--router", str(tmp_path / "router"), "--data",
                                   str(tmp_path / "specialist.csv"), "--model", "specialist", "--cost", "0.001",
                                   "--out", str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "1 of 1 fits had fallen back to the best single model and route again with specialist" in said
    assert FineRouter.load(tmp_path / "out").mixing_.method == "cv"
    res = CliRunner().invoke(app, ["add-model", "--router", str(tmp_path / "out"), "--remove", "specialist",
                                   "--out", str(tmp_path / "back")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "1 of 1 fits return to the mixing they had before specialist was added" in " ".join(res.output.split())
    assert FineRouter.load(tmp_path / "back").mixing_ == router.mixing_  # the fallback, as fitted
