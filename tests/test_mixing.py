"""The learned score mixing and the shrunk task priors (finerouter.routing.mixing)."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.errors import ParameterError
from finerouter.routing.mixing import (
    CANDIDATE_MIXES,
    Calibration,
    MixingChoice,
    choose_weights,
    expected_calibration_error,
    fold_ids,
    mix,
    raw_mix,
    shrink_task_means,
)


def _oof(rng, n=900, m=6, signal=1.0):
    """Out-of-fold scores where stage 2 knows each prompt's best model with strength ``signal``."""
    base = np.linspace(0.4, 0.6, m)
    truth = (rng.random((n, m)) < base).astype(float)
    stage2 = base + signal * (truth - base) * 0.5 + rng.normal(0, 0.05, (n, m))
    stage1 = np.tile(base, (n, 1)) + rng.normal(0, 0.01, (n, m))
    global_prior = np.tile(base, (n, 1))
    fold = np.arange(n) % 3
    return stage2, stage1, global_prior, truth, fold


def test_choose_weights_uses_a_routing_mix_when_the_held_out_folds_show_a_gain(rng):
    choice = choose_weights(*_oof(rng, signal=1.0))
    assert choice.method == "cv" and choice.weights["global"] < 1.0
    assert choice.gain > choice.gain_se > 0
    assert choice.oof_quality["selected"] > choice.oof_quality["best_single"]
    assert abs(sum(choice.weights.values()) - 1.0) < 1e-12


def test_choose_weights_falls_back_to_the_best_single_model_without_evidence(rng):
    stage2, stage1, global_prior, truth, fold = _oof(rng, signal=0.0)
    noise = rng.normal(0, 0.2, stage2.shape)  # predictions unrelated to the truth
    choice = choose_weights(stage2 + noise, stage1 + noise, global_prior, truth, fold)
    assert choice.method == "fallback"
    assert choice.weights == {"stage2": 0.0, "stage1": 0.0, "global": 1.0, "neighbours": 0.0}


def test_choose_weights_keeps_the_default_mix_unless_another_is_clearly_better(rng):
    stage2, stage1, global_prior, truth, fold = _oof(rng, signal=1.0)
    # stage 1 as informative as stage 2: the default (0.5, 0.5, 0) routes as well as any, so it stays
    choice = choose_weights(stage2, stage2.copy(), global_prior, truth, fold)
    assert choice.method == "cv" and (choice.weights["stage2"], choice.weights["stage1"]) == (0.5, 0.5)


def test_choose_weights_routes_by_the_prior_alone_when_stage2_only_adds_noise(rng):
    # stage 1 knows each prompt's best model; stage 2 is noise: every mix that weighs it loses prompts
    stage2, stage1, global_prior, truth, fold = _oof(rng, n=3000, signal=0.3)
    noise = rng.normal(0, 1.0, stage2.shape)
    choice = choose_weights(noise, stage2, global_prior, truth, fold)
    assert choice.method == "cv"
    assert (choice.weights["stage2"], choice.weights["stage1"]) == (0.0, 1.0)
    assert (0.0, 1.0, 0.0) in CANDIDATE_MIXES


def test_choose_weights_needs_the_best_single_candidate(rng):
    with pytest.raises(ParameterError, match="'candidates' parameter of choose_weights.*best single"):
        choose_weights(*_oof(rng), candidates=((0.5, 0.5, 0.0),))


def test_mix_is_the_papers_eq5_for_alpha_weights(rng):
    from finerouter.routing.policy import combine_scores

    s2, s1 = rng.random((5, 4)), rng.random((5, 4))
    np.testing.assert_allclose(mix(np.array([0.3, 0.7, 0.0]), s2, s1, rng.random(4)), combine_scores(s2, s1, 0.3))
    # the global term ranks models by their overall mean, the same for every prompt
    only_global = mix(np.array([0.0, 0.0, 1.0]), s2, s1, np.array([0.1, 0.4, 0.2, 0.3]))
    assert (only_global.argmax(axis=1) == 1).all()


def test_mixing_choice_round_trips_through_a_dict():
    choice = MixingChoice({"stage2": 0.4, "stage1": 0.4, "global": 0.2}, "cv", {"default": 0.5}, 0.01, 0.002, 10)
    assert MixingChoice.from_dict(choice.to_dict()) == choice
    np.testing.assert_allclose(choice.vector(), [0.4, 0.4, 0.2, 0.0])  # a missing source weighs 0
    assert set(CANDIDATE_MIXES[0]) and CANDIDATE_MIXES[0] == (0.5, 0.5, 0.0)


def test_shrunk_means_move_small_groups_most(rng):
    n_big, n_small = 400, 4
    labels = np.array([0] * n_big + [1] * n_small + [2] * n_big)
    p = np.array([0.2] * n_big + [0.9] * n_small + [0.8] * n_big)
    scores = (rng.random((labels.size, 1)) < p[:, None]).astype(float)
    shrunk = shrink_task_means(scores, labels, 3)
    raw = [scores[labels == t, 0].mean() for t in range(3)]
    mu = scores[:, 0].mean()
    moved = [abs(shrunk[t, 0] - raw[t]) / max(abs(raw[t] - mu), 1e-9) for t in range(3)]
    assert moved[1] > 5 * max(moved[0], moved[2])  # the 4-prompt group is pulled toward the mean far more
    assert abs(shrunk[0, 0] - raw[0]) < 0.01 and abs(shrunk[2, 0] - raw[2]) < 0.01
    assert shrunk.shape == (4, 1)  # the Others row: every prompt when no prompt is in Others
    assert abs(shrunk[3, 0] - mu) < 1e-12


def test_shrunk_means_collapse_to_the_overall_mean_when_groups_do_not_differ(rng):
    labels = rng.integers(0, 5, 2000)
    scores = (rng.random((2000, 3)) < np.array([0.3, 0.5, 0.7])).astype(float)
    shrunk = shrink_task_means(scores, labels, 5)
    overall = scores.mean(axis=0)
    raw = np.stack([scores[labels == t].mean(axis=0) for t in range(5)])
    # the groups' differences are sampling noise: most of it is shrunk away
    assert np.abs(shrunk[:5] - overall).mean() < 0.5 * np.abs(raw - overall).mean()


def test_shrunk_means_handle_missing_scores_and_others():
    scores = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, np.nan], [0.5, np.nan]])
    labels = np.array([0, 0, -1, -1])
    shrunk = shrink_task_means(scores, labels, 1)
    assert shrunk.shape == (2, 2) and np.isnan(shrunk[:, 1]).all()  # a model never scored stays NaN
    assert np.isfinite(shrunk[:, 0]).all()


def test_fold_ids_keep_a_prompts_rows_together_and_balance_tasks():
    prompts = [f"p{i % 50}" for i in range(100)]  # every prompt twice
    tasks = ["a" if i % 50 < 30 else "b" for i in range(100)]
    fold = fold_ids(prompts, tasks, 3, seed=0)
    for p in set(prompts):
        assert len({fold[i] for i in range(100) if prompts[i] == p}) == 1
    counts = np.bincount(fold[: 50][np.array(tasks[:50]) == "a"], minlength=3)
    assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, fold_ids(prompts, tasks, 3, seed=0))


def test_calibration_maps_overconfident_scores_to_observed_rates(rng):
    raw = rng.random(5000)
    truth = (rng.random(5000) < 0.2 + 0.5 * raw).astype(float)  # the truth rises, but less steeply than raw
    cal = Calibration.fit(raw, truth)
    expected = cal(raw)
    assert np.all(np.diff(cal(np.linspace(0, 1, 50))) >= 0)  # non-decreasing
    assert expected_calibration_error(expected, truth) < 0.5 * expected_calibration_error(raw, truth)
    assert abs(cal(np.array([0.1]))[0] - 0.25) < 0.08 and abs(cal(np.array([0.9]))[0] - 0.65) < 0.08
    identity = Calibration.identity()
    np.testing.assert_array_equal(identity(raw), raw)
    assert Calibration.fit(np.ones(10), np.zeros(10)).x.size == 0  # nothing to learn from a constant score


def test_calibration_is_centred_isotonic_and_keeps_the_raw_ranking(rng):
    from sklearn.isotonic import IsotonicRegression

    raw = rng.random(4000)
    truth = (rng.random(4000) < 0.2 + 0.5 * raw).astype(float)
    cal = Calibration.fit(raw, truth)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, truth)
    # the same block values as isotonic regression, placed at each block's mean raw score
    np.testing.assert_allclose(np.sort(np.unique(cal.y)), np.sort(np.unique(iso.predict(raw))))
    inside = np.linspace(cal.x[0], cal.x[-1], 400)
    assert np.all(np.diff(cal(inside)) > 0)  # strictly increasing between the first and last block centre
    assert np.unique(iso.predict(inside)).size < 0.5 * inside.size  # where the step function ties most of them
    # two models whose raw scores differ keep their order (the cost-aware rule needs it)
    a, b = np.array([0.50]), np.array([0.52])
    assert cal(b)[0] > cal(a)[0]
    # calibrated as a whole: the mean expected score equals the mean truth within noise
    assert abs(cal(raw).mean() - truth.mean()) < 0.01


def test_raw_mix_fills_missing_sources_with_the_global_prior():
    s2 = np.array([[0.2, np.nan]])
    s1 = np.array([[np.nan, 0.6]])
    g = np.array([0.5, 0.4])
    np.testing.assert_allclose(raw_mix(np.array([0.5, 0.5, 0.0]), s2, s1, g), [[0.35, 0.5]])


def test_expected_calibration_error_by_hand():
    expected = np.array([0.05, 0.05, 0.95, 0.95])
    truth = np.array([0.0, 0.0, 1.0, 0.0])
    # bin 0: |0.05 - 0| * 0.5; bin 9: |0.95 - 0.5| * 0.5
    assert abs(expected_calibration_error(expected, truth) - (0.025 + 0.225)) < 1e-12


def test_a_fallback_keeps_the_best_routing_mix_for_the_expected_scores(rng):
    stage2, stage1, global_prior, truth, fold = _oof(rng, signal=0.0)
    noise = rng.normal(0, 0.2, stage2.shape)
    choice = choose_weights(stage2 + noise, stage1 + noise, global_prior, truth, fold)
    assert choice.method == "fallback"
    assert choice.estimate_weights is not None and choice.estimate_weights["global"] < 1.0
    assert choice.estimate_vector()[2] < 1.0 and choice.vector()[2] == 1.0
    assert MixingChoice.from_dict(choice.to_dict()) == choice


def test_neighbour_means_average_the_nearest_prompts_observed_scores(rng):
    from finerouter.routing.neighbours import default_k, neighbour_means

    reference = rng.normal(size=(60, 8)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    scores = rng.random((60, 3))
    scores[rng.random((60, 3)) < 0.2] = np.nan
    scores[:, 2] = np.nan  # a model never scored: NaN everywhere
    queries = reference[:5] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    got = neighbour_means(queries, reference, scores, k=7)
    for i, q in enumerate(queries):
        near = np.argsort(-(reference @ q), kind="stable")[:7]
        for j in range(2):
            vals = scores[near, j][np.isfinite(scores[near, j])]
            want = vals.mean() if vals.size else np.nanmean(scores[:, j])
            assert got[i, j] == pytest.approx(want)
    assert np.isnan(got[:, 2]).all()
    assert default_k(10) == 5 and default_k(100) == 5 and default_k(2500) == 25 and default_k(10**6) == 40


def test_the_number_of_neighbours_is_the_one_that_routes_the_training_prompts_best_left_one_out(rng):
    from finerouter.routing.neighbours import choose_k

    # 8 tight clusters of 60 prompts; in cluster c model c % 4 is best by 0.2 in expectation, every answer noisy:
    # many neighbours average the noise away, and a cluster holds 59 others, so the choice is 40 of the grid
    centres = rng.normal(size=(8, 16))
    cluster = np.repeat(np.arange(8), 60)
    emb = centres[cluster] + 0.05 * rng.normal(size=(480, 16))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    mean = np.full((8, 4), 0.5)
    mean[np.arange(8), np.arange(8) % 4] = 0.7
    noisy = np.clip(mean[cluster] + rng.normal(0, 0.35, (480, 4)), 0, 1)
    assert choose_k(emb, noisy, grid=(1, 5, 40, 160)) == 40
    # noiseless scores that change along one direction: a few nearest neighbours, not a wide average
    t = np.linspace(0, 1, 300)
    line = np.column_stack([np.cos(t), np.sin(t), np.zeros(300)]).astype(np.float32)
    exact = np.column_stack([np.sin(12 * t), np.cos(12 * t)])
    assert choose_k(line, exact, grid=(1, 5, 40, 160)) in (1, 5)
    # the leave-one-out evaluation never reads a prompt's own scores: a prompt's scores alone decide nothing
    lone = rng.random((300, 2))
    assert choose_k(line, lone, grid=(1,)) == 1 and choose_k(line[:2], lone[:2]) == 5  # too few prompts: default_k


def test_the_neighbour_source_is_chosen_only_with_evidence(rng):
    """A neighbour mix replaces the default only when the held-out folds show it routes better."""
    stage2, stage1, global_prior, truth, fold = _oof(rng, signal=0.0)
    # the neighbours see the truth (plus noise): a mix that reads them should win clearly
    neighbours = truth + rng.normal(0, 0.05, truth.shape)
    candidates = CANDIDATE_MIXES + ((0.25, 0.25, 0.0, 0.5), (0.0, 0.0, 0.0, 1.0))
    choice = choose_weights(stage2, stage1, global_prior, truth, fold, candidates=candidates, neighbours=neighbours)
    assert choice.method == "cv" and choice.weights["neighbours"] > 0 and choice.uses_neighbours
    # uninformative neighbours: never chosen over the default
    noise = rng.random(truth.shape)
    choice = choose_weights(*_oof(rng, signal=1.0), candidates=candidates, neighbours=noise)
    assert choice.weights["neighbours"] == 0.0
    with pytest.raises(ParameterError, match="neighbour source"):
        mix(np.array([0.0, 0.0, 0.0, 1.0]), stage2, stage1, global_prior[0])


def test_a_router_that_routes_by_the_neighbour_source_saves_loads_and_onboards(tmp_path):
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.mixing import MixingChoice
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    data = make_synthetic_routing_data(n_prompts=200, n_models=4, seed=5)
    router = FineRouter(encoder=FakeEncoder(), seed=0, neighbours=True, refine_task_labels=False, **FAST_SETTINGS)
    router.fit(data)
    assert (router.neighbour_embeddings_ is not None) == router.mixing_.uses_neighbours
    # route by the neighbour source alone: each prompt of the training data gets its neighbours' best model
    router.mixing_ = MixingChoice({"stage2": 0.0, "stage1": 0.0, "global": 0.0, "neighbours": 1.0}, "fixed")
    router.neighbour_embeddings_ = router.encoder_.encode(data.prompts)
    router.neighbour_scores_ = data.scores.astype(np.float32)
    prompts = data.prompts[:30]
    scores = router.score_embeddings(router.encoder_.encode(prompts))
    assert np.isfinite(scores.final).all() and np.isfinite(scores.expected).all()
    loaded = FineRouter.load(router.save(tmp_path / "r"))
    assert np.array_equal(loaded.neighbour_scores_, router.neighbour_scores_)
    assert [d.model for d in loaded.route(prompts)] == [d.model for d in router.route(prompts)]
    # onboarding keeps one neighbour column per model
    removed = router.remove_model(router.models_[0])
    assert removed.neighbour_scores_.shape[1] == len(removed.models_) == 3
    assert len(removed.route(prompts)) == len(prompts)


def test_cv_folds_auto_takes_more_folds_on_small_data_and_the_choice_records_them():
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.mixing import resolve_cv_folds
    from finerouter.routing.regime import SMALL_DATA_PROMPTS
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    assert resolve_cv_folds("auto", SMALL_DATA_PROMPTS) == 5
    assert resolve_cv_folds("auto", SMALL_DATA_PROMPTS + 1) == 3
    assert resolve_cv_folds(4, 10) == 4
    data = make_synthetic_routing_data(n_prompts=150, n_models=3, seed=4)
    router = FineRouter(encoder=FakeEncoder(), seed=0, cv_folds="auto", refine_task_labels=False, **FAST_SETTINGS)
    router.fit(data)
    assert router.fit_summary_["mixing"]["folds"] == 5
    assert set(np.unique(router.out_of_fold_.fold)) == set(range(5))
    with pytest.raises(ParameterError, match="cv_folds"):
        FineRouter(cv_folds="many").fit(data)


def test_paired_shift_cancels_prompt_difficulty_and_needs_complete_prompts(rng):
    from finerouter.routing.shrinkage import paired_shift

    n = 400
    labels = np.repeat([0, 1], n // 2)
    difficulty = rng.uniform(0.0, 0.8, n)  # moves every model alike
    others = np.clip(difficulty[:, None] + rng.normal(0, 0.02, (n, 3)), 0, 1)
    scores = others.mean(axis=1) + np.where(labels == 0, 0.1, -0.1)
    shift = paired_shift(scores, others, labels, 2, min_prompts=5)
    np.testing.assert_allclose(shift[:2], [0.1, -0.1], atol=0.01)
    assert abs(shift[2]) < 0.01  # no prompt in Others: every prompt, whose mean difference is 0
    others[5:] = np.nan  # five prompts scored by every other model: too few for 6, enough for 5
    assert paired_shift(scores, others, labels, 2, min_prompts=6) is None
    assert paired_shift(scores, others, labels, 2, min_prompts=5) is not None
    assert paired_shift(scores, np.empty((n, 0)), labels, 2, min_prompts=5) is None


def test_robust_truth_keeps_complete_rows_and_averages_to_the_truth_over_random_holes(rng):
    from finerouter.routing.holes import robust_truth

    truth = rng.random((4, 5))
    estimate = rng.random(5)
    assert np.array_equal(robust_truth(truth, estimate), truth)  # complete rows: the truth, bit for bit
    holed = truth.copy()
    holed[1] = np.nan  # no score at all: the estimate
    holed[2, [0, 3]] = np.nan
    out = robust_truth(holed, estimate)
    np.testing.assert_array_equal(out[[0, 3]], truth[[0, 3]])
    np.testing.assert_allclose(out[1], estimate)
    np.testing.assert_allclose(out[2, [0, 3]], estimate[[0, 3]])
    np.testing.assert_allclose(out[2, [1, 2, 4]], estimate[[1, 2, 4]] + (truth[2, [1, 2, 4]] - estimate[[1, 2, 4]]) / 0.6)
    # over random draws of which 2 of 5 models a prompt was scored on, each entry averages to its true score
    draws = []
    for _ in range(4000):
        h = np.full_like(truth, np.nan)
        for i in range(truth.shape[0]):
            j = rng.choice(5, 2, replace=False)
            h[i, j] = truth[i, j]
        draws.append(robust_truth(h, estimate))
    np.testing.assert_allclose(np.mean(draws, axis=0), truth, atol=0.03)


def test_choose_weights_routes_on_a_table_with_holes_where_the_prior_knows_a_locally_better_model(rng):
    # model 0 is the best overall (0.7 everywhere); model 1 is better on half the prompts (0.85) and poor on the
    # rest (0.2); stage 1 knows which half. Each prompt was scored on 2 of the 6 models, at random. Counted as its
    # overall mean (0.525), an unscored pick of model 1 would hide its local lead: routing would seem to gain ~nothing.
    n, m = 1500, 6
    half = np.arange(n) % 2 == 0
    rate = np.tile([0.7, 0.0, 0.4, 0.4, 0.3, 0.3], (n, 1))
    rate[:, 1] = np.where(half, 0.85, 0.2)
    truth = (rng.random((n, m)) < rate).astype(float)
    stage1 = rate + rng.normal(0, 0.01, (n, m))
    stage2 = stage1 + rng.normal(0, 0.05, (n, m))
    global_prior = np.tile(rate.mean(axis=0), (n, 1))
    fold = np.arange(n) % 3
    holed = np.full_like(truth, np.nan)
    for i in range(n):
        j = rng.choice(m, 2, replace=False)
        holed[i, j] = truth[i, j]
    complete = choose_weights(stage2, stage1, global_prior, truth, fold)
    choice = choose_weights(stage2, stage1, global_prior, holed, fold)
    assert complete.method == "cv" and choice.method == "cv"
    assert choice.gain > 0.03 and abs(choice.gain - complete.gain) < 0.04
    # the mean-filled count would not have routed: model 1's unscored picks at its overall mean lose to model 0
    mean_filled = np.where(np.isfinite(holed), holed, global_prior)
    assert choose_weights(stage2, stage1, global_prior, mean_filled, fold).gain < choice.gain / 2
