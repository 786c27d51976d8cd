"""Stage 2's pruning of models never near the best: the coverage rule, and the estimator that leaves them out."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.errors import ArtifactError, ParameterError
from finerouter.quality.estimator import QualityEstimator
from finerouter.quality.pruning import coverage_set, models_to_prune

FAST = {"model_dim": 8, "hidden": 16, "epochs_general": 3, "epochs_task": 2, "seed": 0}


def test_the_coverage_set_adds_models_by_mean_until_enough_prompts_have_their_best_reached():
    # 10 prompts: model 0 is best on 6, model 1 on 3, model 2 on 1; model 3 is never best
    scores = np.full((10, 4), 0.1)
    scores[:6, 0], scores[6:9, 1], scores[9, 2] = 0.9, 0.8, 0.7
    scores[:, 3] = 0.35  # the highest mean after model 0, and best nowhere: the rule takes it in mean order
    assert coverage_set(scores, 0.6) == [0]
    assert coverage_set(scores, 0.9) == [0, 3, 1]
    assert coverage_set(scores, 1.0) == [0, 3, 1, 2]
    # a tie reaches the best: with 0/1 scores every prompt model 1 also solves is covered by model 0
    ties = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=float)
    assert coverage_set(ties, 0.75) == [0] and coverage_set(ties, 1.0) == [0, 1]
    # only prompts where the choice matters count: with 6 more prompts every model gets wrong, model 0 alone still
    # reaches 3 of the 4 that decide anything, as before (counting them, it would reach 9 of 10 and be enough)
    hard = np.vstack([ties, np.zeros((6, 3))])
    assert coverage_set(hard, 0.8) == [0, 1] and coverage_set(np.ones((3, 3)), 0.8) == []
    # unscored entries neither reach nor count; a prompt with one scored model or none decides nothing
    sparse = np.array([[np.nan, 0.5, np.nan], [0.9, 0.1, np.nan], [0.2, 0.6, np.nan], [np.nan] * 3])
    assert coverage_set(sparse, 1.0) == [0, 1] and coverage_set(np.full((2, 2), np.nan), 0.8) == []


def test_models_never_in_any_groups_coverage_set_are_pruned_but_never_the_best_overall(rng):
    n = 200
    groups = np.repeat([0, 1, -1], [80, 80, 40])
    scores = rng.uniform(0.0, 0.2, (n, 5))
    scores[groups == 0, 0] += 0.7  # model 0 leads task 0
    scores[groups == 1, 1] += 0.7  # model 1 leads task 1
    scores[groups == -1, 2] += 0.7  # model 2 leads Others, a group like the tasks
    assert models_to_prune(scores, groups, 0.8) == [3, 4]
    # every prompt its own group: a model best on a single prompt is kept
    scores[7, 4] = 5.0
    assert models_to_prune(scores, np.arange(n), 1.0) == [3]
    # a model never scored is not pruned (no mean to stand in for it)
    unscored = np.column_stack([scores, np.full(n, np.nan)])
    assert models_to_prune(unscored, groups, 0.8) == [3, 4]  # model 5 never scored: kept
    # the best model overall stays though no group needs it
    flat = np.tile([0.5, 0.9, 0.1], (6, 1))
    flat[:, 0] = [1, 1, 1, 0, 0, 0]
    assert 1 not in models_to_prune(flat, np.zeros(6), 0.5)


def _data(rng, n=240):
    emb = rng.normal(size=(n, 12)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = np.clip(rng.normal(0.6, 0.15, (n, 5)), 0, 1)
    scores[:, 3] *= 0.2  # far behind everywhere
    scores[:, 4] *= 0.1
    return emb, scores


def test_pruned_models_are_left_out_of_training_and_predicted_at_their_mean(rng):
    emb, scores = _data(rng)
    est = QualityEstimator(prune_coverage=0.8, **FAST).fit(emb, scores)
    assert sorted(est.pruned_) == [3, 4]
    pred = est.predict(emb[:20])
    np.testing.assert_allclose(pred[:, 3], scores[:, 3].mean(), rtol=1e-6)
    np.testing.assert_allclose(pred[:, 4], scores[:, 4].mean(), rtol=1e-6)
    np.testing.assert_array_equal(est.predict_general(emb[:20])[:, 3:], pred[:, 3:])
    # their scores do not reach training: other values that leave them pruned give the kept models the same weights
    other = scores.copy()
    other[:, 3] = rng.uniform(0.0, 0.1, len(other))
    again = QualityEstimator(prune_coverage=0.8, **FAST).fit(emb, other)
    assert sorted(again.pruned_) == [3, 4]
    np.testing.assert_array_equal(again.predict(emb[:20])[:, :3], pred[:, :3])
    # without pruning (the default) every model has its adapter's estimate
    plain = QualityEstimator(**FAST).fit(emb, scores)
    assert plain.pruned_ == {} and np.ptp(plain.predict(emb[:20])[:, 3]) > 0
    with pytest.raises(ParameterError, match="prune_coverage"):
        QualityEstimator(prune_coverage=0.0, **FAST).fit(emb, scores)


def test_the_pruned_models_survive_saving_and_follow_their_columns_when_models_go(rng):
    from finerouter.quality.onboarding import rebuild_estimator

    emb, scores = _data(rng)
    est = QualityEstimator(prune_coverage=0.8, **FAST).fit(emb, scores)
    config, arrays = est.to_state()
    loaded = QualityEstimator.from_state(config, arrays)
    assert loaded.pruned_ == est.pruned_
    np.testing.assert_array_equal(loaded.predict(emb[:10]), est.predict(emb[:10]))
    # a state saved before pruning prunes nothing; a malformed entry is refused with its name
    old = {k: v for k, v in config.items() if k != "pruned"}
    assert QualityEstimator.from_state(old, arrays).pruned_ == {}
    with pytest.raises(ArtifactError, match="prunes models outside"):
        QualityEstimator.from_state({**config, "pruned": {"9": 0.1}}, arrays)
    # retiring model 0 shifts the pruned columns down; retiring pruned model 3 drops it from the list
    shifted = rebuild_estimator(est, [1, 2, 3, 4], [])
    assert shifted.pruned_ == {2: est.pruned_[3], 3: est.pruned_[4]}
    np.testing.assert_array_equal(shifted.predict(emb[:10]), est.predict(emb[:10])[:, 1:])
    assert rebuild_estimator(est, [0, 1, 2, 4], []).pruned_ == {3: est.pruned_[4]}


def test_a_router_with_pruning_routes_saves_loads_and_onboards(tmp_path):
    from finerouter.data.dataset import RoutingDataset
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    base = make_synthetic_routing_data(n_prompts=200, n_models=4, seed=5)
    weak = np.asarray(base.scores)[:, :2] * 0.1  # two models far behind everywhere
    data = RoutingDataset(prompts=list(base.prompts), models=[*base.models, "weak-a", "weak-b"],
                          scores=np.column_stack([base.scores, weak]), tasks=base.tasks)
    settings = {**FAST_SETTINGS, "quality": {**FAST_SETTINGS["quality"], "prune_coverage": 0.8}}
    router = FineRouter(encoder=FakeEncoder(), seed=0, **settings).fit(data)
    pruned = {router.models_[j] for j in router.quality_.pruned_}
    assert {"weak-a", "weak-b"} <= pruned and set(router.fit_summary_["stage2_pruned"]) == pruned
    prompts = data.prompts[:25]
    loaded = FineRouter.load(router.save(tmp_path / "r"))
    assert loaded.quality_.pruned_ == router.quality_.pruned_
    assert [d.model for d in loaded.route(prompts)] == [d.model for d in router.route(prompts)]
    # an added model is never pruned; retiring a pruned model leaves the others pruned
    part = data.subset(np.arange(60))
    new = RoutingDataset(part.prompts, [*part.models, "new"], np.column_stack([part.scores, np.asarray(part.scores)[:, 0]]))
    added = router.add_model("new", new, cost=0.001)
    assert "new" not in {added.models_[j] for j in added.quality_.pruned_}
    assert {added.models_[j] for j in added.quality_.pruned_} == pruned
    removed = router.remove_model("weak-a")
    assert {removed.models_[j] for j in removed.quality_.pruned_} == pruned - {"weak-a"}
    assert len(removed.route(prompts)) == len(prompts)
