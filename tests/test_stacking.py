"""The stacked raw-scale shrinkage mix (finerouter.routing.stacking) and its place in choose_weights."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.errors import ParameterError
from finerouter.routing.mixing import CANDIDATE_MIXES, MixingChoice, choose_weights, raw_mix, routing_mix
from finerouter.routing.policy import minmax_rows
from finerouter.routing.stacking import fit_stack


def _planted(rng, n=1500, m=8, beta2=0.6, beta1=0.3):
    """Truth = global prior + a prompt difficulty shared by all models + beta-weighted source deviations."""
    g = np.linspace(0.3, 0.7, m)
    d2 = rng.normal(0, 0.1, (n, m))
    d1 = rng.normal(0, 0.1, (n, m))
    difficulty = rng.normal(0, 0.3, (n, 1))  # moves every model alike: must not leak into the betas
    truth = g + difficulty + beta2 * d2 + beta1 * d1 + rng.normal(0, 0.02, (n, m))
    return g + d2, g + d1, np.tile(g, (n, 1)), truth


def test_fit_stack_recovers_planted_shrinkage_weights_despite_prompt_difficulty(rng):
    stage2, stage1, g, truth = _planted(rng)
    w = fit_stack({"stage2": stage2, "stage1": stage1}, g, truth)
    assert w[0] == pytest.approx(0.6, abs=0.02) and w[1] == pytest.approx(0.3, abs=0.02)
    assert w[2] == pytest.approx(1.0 - w[0] - w[1]) and w[3] == 0.0
    # the weights reproduce the planted estimate on the raw scale: g + sum(beta * deviation)
    est = raw_mix(w, stage2, stage1, g[0])
    expected = g + w[0] * (stage2 - g) + w[1] * (stage1 - g)
    np.testing.assert_allclose(est, expected, atol=1e-12)


def test_fit_stack_gives_a_source_without_information_zero_weight(rng):
    stage2, stage1, g, truth = _planted(rng, beta1=0.0)
    noise = g + rng.normal(0, 0.1, g.shape)
    w = fit_stack({"stage2": stage2, "neighbours": noise}, g, truth)
    assert w[3] < 0.02 and w[0] == pytest.approx(0.6, abs=0.02)
    # a pure-noise source alone is shrunk (nearly) all the way to the global prior
    only_noise = fit_stack({"stage2": noise}, g, truth)
    assert only_noise[0] < 0.02 and only_noise[2] > 0.98


def test_fit_stack_skips_unobserved_scores_and_unusable_rows(rng):
    stage2, stage1, g, truth = _planted(rng)
    truth = truth.copy()
    truth[rng.random(truth.shape) < 0.3] = np.nan  # partial labels: left out of the fit
    w = fit_stack({"stage2": stage2, "stage1": stage1}, g, truth)
    assert w[0] == pytest.approx(0.6, abs=0.03)
    one_model = np.full_like(truth, np.nan)
    one_model[:, 0] = 1.0  # no prompt with two observed models: nothing to learn, the global prior alone
    np.testing.assert_array_equal(fit_stack({"stage2": stage2}, g, one_model), [0.0, 0.0, 1.0, 0.0])


def test_fit_stack_rejects_an_unknown_source(rng):
    stage2, _, g, truth = _planted(rng, n=50)
    with pytest.raises(ParameterError, match="unknown source.*'global'"):
        fit_stack({"global": stage2}, g, truth)


def _large_pool(rng, n=900, strong=3, weak=30):
    """A few strong models close together, many far behind; stage 2 knows the strong models' per-prompt order a
    little and is as noisy on the weak ones, whose normalised estimates then crowd the strong ones."""
    m = strong + weak
    g = np.concatenate([np.full(strong, 0.8), np.linspace(0.2, 0.5, weak)])
    skill = rng.normal(0, 0.1, (n, m))
    truth = np.clip(g + skill, 0, 1)
    stage2 = g + 0.5 * skill + rng.normal(0, 0.15, (n, m))
    stage1 = np.tile(g, (n, 1)) + rng.normal(0, 0.01, (n, m))
    return stage2, stage1, np.tile(g, (n, 1)), truth, np.arange(n) % 3


def test_choose_weights_takes_the_stack_when_it_routes_the_held_out_folds_better(rng):
    stage2, stage1, g, truth, fold = _large_pool(rng)
    # the normalised candidates read only the (uninformative) task prior; the stack can read stage 2
    prior_only = ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    choice = choose_weights(stage2, stage1, g, truth, fold, candidates=prior_only, stacks=(("stage2", "stage1"),))
    assert choice.method == "cv" and choice.scale == "raw"
    assert choice.oof_quality["stack:stage2+stage1"] == choice.oof_quality["chosen"]
    assert choice.oof_quality["chosen"] > choice.oof_quality["default"]
    assert 0 < choice.weights["stage2"] < 1  # stage 2 trusted, and shrunk
    expected = fit_stack({"stage2": stage2, "stage1": stage1}, g, truth)  # the weights fitted on every fold
    np.testing.assert_allclose(choice.vector(), expected)
    # without the stack on offer, the task prior routes no better than the best single model: fallback
    plain = choose_weights(stage2, stage1, g, truth, fold, candidates=prior_only)
    assert plain.method == "fallback" and plain.scale == "normalised"


def test_stack_first_makes_the_stack_the_default(rng):
    stage2, stage1, g, truth, fold = _large_pool(rng)
    choice = choose_weights(stage2, stage1, g, truth, fold, stacks=(("stage2", "stage1"),), stack_first=True)
    assert choice.oof_quality["default"] == choice.oof_quality["stack:stage2+stage1"]


def test_a_stack_needs_its_sources(rng):
    stage2, stage1, g, truth, fold = _large_pool(rng, n=90)
    with pytest.raises(ParameterError, match="needs a source"):
        choose_weights(stage2, stage1, g, truth, fold, candidates=CANDIDATE_MIXES,
                       stacks=(("stage2", "neighbours"),))


def test_routing_mix_raw_is_the_normalised_raw_estimate_and_keeps_its_argmax(rng):
    stage2, stage1, g, _, _ = _large_pool(rng, n=50)
    w = np.array([0.4, 0.2, 0.4, 0.0])
    scores = routing_mix(w, "raw", stage2, stage1, g[0])
    raw = raw_mix(w, stage2, stage1, g[0])
    np.testing.assert_array_equal(scores.argmax(axis=1), raw.argmax(axis=1))
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    with pytest.raises(ParameterError, match="scale must be"):
        routing_mix(w, "log", stage2, stage1, g[0])
    # over reference columns (a router with added models): each source normalised over them, under either scale
    ref = np.arange(stage2.shape[1] - 1)
    np.testing.assert_array_equal(routing_mix(w, "raw", stage2, stage1, g[0], reference=ref), minmax_rows(raw, ref))
    expected = 0.4 * minmax_rows(stage2, ref) + 0.2 * minmax_rows(stage1, ref) + 0.4 * minmax_rows(g[:1], ref)
    np.testing.assert_allclose(routing_mix(w, "normalised", stage2, stage1, g[0], reference=ref), expected)


def test_mixing_choice_round_trips_its_scale_and_old_dicts_default_to_normalised():
    choice = MixingChoice({"stage2": 0.5, "stage1": 0.2, "global": 0.3, "neighbours": 0.0}, "cv", scale="raw")
    assert MixingChoice.from_dict(choice.to_dict()).scale == "raw"
    old = choice.to_dict()
    del old["scale"]
    assert MixingChoice.from_dict(old).scale == "normalised"


def test_a_router_that_routes_by_a_raw_stack_uses_it_and_keeps_it_through_save_and_load(tmp_path):
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    data = make_synthetic_routing_data(n_prompts=200, n_models=4, seed=5)
    router = FineRouter(encoder=FakeEncoder(), seed=0, refine_task_labels=False, stacking=True, **FAST_SETTINGS).fit(data)
    assert router.out_of_fold_ is not None and router.out_of_fold_.truth.shape == (200, 4)
    assert "stack:stage2+stage1" in router.mixing_.oof_quality
    weights = {"stage2": 0.7, "stage1": 0.6, "global": -0.3, "neighbours": 0.0}
    router.mixing_ = MixingChoice(weights, "cv", scale="raw")
    prompts = data.prompts[:40]
    scores = router.score_embeddings(router.encoder_.encode(prompts))
    raw = raw_mix(router.mixing_.vector(), scores.stage2, scores.stage1, router.global_prior_)
    np.testing.assert_array_equal(scores.final.argmax(axis=1), raw.argmax(axis=1))
    # the normalised reading of the same weights routes differently on some prompt: the scale is really used
    router.mixing_ = MixingChoice(weights, "cv")
    normalised = router.score_embeddings(router.encoder_.encode(prompts)).final
    assert not np.allclose(normalised, scores.final)
    router.mixing_ = MixingChoice(weights, "cv", scale="raw")
    loaded = FineRouter.load(router.save(tmp_path / "r"))
    assert loaded.mixing_.scale == "raw" and loaded.out_of_fold_ is None
    assert [d.model for d in loaded.route(prompts)] == [d.model for d in router.route(prompts)]


def test_the_stack_is_offered_only_with_stacking_on():
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    data = make_synthetic_routing_data(n_prompts=150, n_models=4, seed=2)
    router = FineRouter(encoder=FakeEncoder(), seed=0, refine_task_labels=False, **FAST_SETTINGS).fit(data)
    assert not any(k.startswith("stack:") for k in router.mixing_.oof_quality)
    assert router.mixing_.scale == "normalised"
    with pytest.raises(ParameterError, match="stacking"):
        FineRouter(stacking="yes").fit(data)
