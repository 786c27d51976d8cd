"""Soft task assignment for the stage-1 prior (finerouter.routing.assignment, ``stage1_assignment="soft"``), and the
cross-validated choice between the soft and the hard prior (``"cv"``)."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.errors import ParameterError
from finerouter.routing.assignment import choose_assignment, effective_quality, soft_stage1, task_weights_for
from finerouter.routing.mixing import MixingChoice
from finerouter.testing import FAST_SETTINGS, FakeEncoder


@pytest.fixture(scope="module")
def data():
    return make_synthetic_routing_data(240, n_models=4, seed=5).split(0.25, seed=0)


@pytest.fixture(scope="module")
def soft(data):
    return FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="soft", **FAST_SETTINGS).fit(data[0])


def test_the_soft_prior_is_the_task_priors_weighted_by_the_classifiers_probabilities(soft, data):
    emb = soft.encoder_.encode(data[1].prompts)
    probs = soft.classifier_.predict_proba(emb).astype(np.float64)
    weights = probs / probs.sum(axis=1, keepdims=True)
    expected = weights @ soft.stage1_[: soft.catalog_.n_tasks]
    scores = soft.score_embeddings(emb)
    np.testing.assert_allclose(scores.stage1, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(task_weights_for(soft.classifier_, emb).sum(axis=1), 1.0)
    # the task a decision names is still the most likely one
    np.testing.assert_array_equal(scores.task, probs.argmax(axis=1))


def test_one_dominant_task_gives_the_hard_prior():
    class Sure:  # a classifier certain of task 1
        @staticmethod
        def _raw_scores(emb):
            return np.tile(np.array([-40.0, 40.0, -40.0], dtype=np.float32), (emb.shape[0], 1))

    stage1 = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [0.4, 0.6]])  # 3 tasks + Others
    out = soft_stage1(Sure(), np.zeros((2, 3), dtype=np.float32), stage1, np.array([0.5, 0.5]))
    np.testing.assert_allclose(out, stage1[[1, 1]], atol=1e-12)


def test_a_model_never_seen_in_a_task_takes_its_global_prior_there():
    class Even:
        @staticmethod
        def _raw_scores(emb):
            return np.zeros((emb.shape[0], 2), dtype=np.float32)

    stage1 = np.array([[np.nan, 0.2], [0.6, 0.4], [0.5, 0.5]])
    out = soft_stage1(Even(), np.zeros((1, 3), dtype=np.float32), stage1, np.array([0.8, 0.3]))
    np.testing.assert_allclose(out, [[(0.8 + 0.6) / 2, (0.2 + 0.4) / 2]])


def test_the_cross_validation_sees_soft_priors_and_the_setting_survives_saving(soft, data, tmp_path):
    oof = soft.out_of_fold_.stage1
    # hard priors take one row per task per fold; soft ones differ from prompt to prompt
    assert len(np.unique(np.round(oof, 9), axis=0)) > 3 * (soft.catalog_.n_tasks + 1)
    soft.save(tmp_path / "r")
    loaded = FineRouter.load(tmp_path / "r", encoder=FakeEncoder())
    assert loaded.stage1_assignment == "soft"
    emb = soft.encoder_.encode(data[1].prompts)
    np.testing.assert_allclose(loaded.score_embeddings(emb).final, soft.score_embeddings(emb).final, atol=1e-6)


def test_hard_assignment_reads_the_assigned_tasks_row(data):
    hard = FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="hard", **FAST_SETTINGS).fit(data[0])
    emb = hard.encoder_.encode(data[1].prompts)
    scores = hard.score_embeddings(emb)
    rows = np.where(scores.task >= 0, scores.task, hard.catalog_.n_tasks)
    np.testing.assert_array_equal(scores.stage1, hard.stage1_[rows])


def test_an_unknown_assignment_is_refused(data):
    with pytest.raises(ParameterError, match="stage1_assignment"):
        FineRouter(encoder=FakeEncoder(), stage1_assignment="fuzzy", **FAST_SETTINGS).fit(data[0])


def test_the_hot_path_computes_the_classifiers_scores_once_per_batch(soft, data, monkeypatch):
    # the task and the soft weights come from the same logits: one classifier product per batch, not two
    emb = soft.encoder_.encode(data[1].prompts)
    before = soft.score_embeddings(emb)
    classifier = soft.classifier_
    calls = []
    original = type(classifier)._raw_scores

    def counted(self, e):
        calls.append(e.shape[0])
        return original(self, e)

    monkeypatch.setattr(type(classifier), "_raw_scores", counted)
    after = soft.score_embeddings(emb)
    assert calls == [emb.shape[0]]
    np.testing.assert_array_equal(after.final, before.final)
    np.testing.assert_array_equal(after.task, before.task)


def _choice(method: str, selected: float, best_single: float) -> MixingChoice:
    weights = {"stage2": 0.5, "stage1": 0.5, "global": 0.0, "neighbours": 0.0}
    return MixingChoice(weights, method, {"selected": selected, "best_single": best_single})


def test_the_choice_compares_what_each_assignment_would_route_like_and_ties_keep_the_hard_prior():
    # a fallback stands for the best single model's quality, not for the selection it rejected
    assert effective_quality(_choice("fallback", 0.9, 0.6)) == 0.6
    assert effective_quality(_choice("cv", 0.7, 0.6)) == 0.7
    assert choose_assignment({"hard": _choice("cv", 0.70, 0.6), "soft": _choice("cv", 0.71, 0.6)}) == "soft"
    assert choose_assignment({"hard": _choice("cv", 0.70, 0.6), "soft": _choice("fallback", 0.75, 0.6)}) == "hard"
    assert choose_assignment({"hard": _choice("fallback", 0.5, 0.6), "soft": _choice("fallback", 0.5, 0.6)}) == "hard"
    assert choose_assignment({"hard": _choice("cv", 0.70, 0.6), "soft": _choice("cv", 0.70, 0.6)}) == "hard"
    assert choose_assignment({"soft": _choice("fallback", 0.5, 0.6)}) == "soft"


def test_cv_assignment_fits_both_priors_out_of_fold_keeps_the_better_and_routes_with_it(data, soft, tmp_path):
    hard = FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="hard", **FAST_SETTINGS).fit(data[0])
    cv = FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="cv", label_prior=False,
                    **FAST_SETTINGS).fit(data[0])  # the data's labels as a third prior: tests/test_label_prior.py
    mixing = cv.mixing_
    assert set(mixing.assignment_quality) == {"hard", "soft"} and mixing.assignment in ("hard", "soft")
    # each quality is what the router with that assignment alone found (same folds, same fits)
    assert mixing.assignment_quality["hard"] == pytest.approx(effective_quality(hard.mixing_))
    assert mixing.assignment_quality["soft"] == pytest.approx(effective_quality(soft.mixing_))
    assert mixing.assignment == choose_assignment({"hard": hard.mixing_, "soft": soft.mixing_})
    same = soft if mixing.assignment == "soft" else hard
    assert mixing.weights == same.mixing_.weights and hard.mixing_.assignment == "hard"
    emb = cv.encoder_.encode(data[1].prompts)
    np.testing.assert_allclose(cv.score_embeddings(emb).final, same.score_embeddings(emb).final, atol=1e-9)
    assert cv.fit_summary_["mixing"]["assignment"] == mixing.assignment
    loaded = FineRouter.load(cv.save(tmp_path / "cv"), encoder=FakeEncoder())
    assert loaded.mixing_.assignment == mixing.assignment and loaded.stage1_assignment == "cv"
    np.testing.assert_allclose(loaded.score_embeddings(emb).final, cv.score_embeddings(emb).final, atol=1e-9)


def test_each_assignment_can_win_the_choice(data, monkeypatch):
    # the choice follows the out-of-fold evidence: make each assignment's quality the higher in turn
    import finerouter.routing.fitting as fitting

    emb = FakeEncoder().encode(data[1].prompts)
    for winner in ("hard", "soft"):
        monkeypatch.setattr(fitting, "effective_quality", lambda c: 0.0)  # the recorded qualities, not the choice
        monkeypatch.setattr(fitting, "choose_assignment", lambda choices, w=winner: w)
        router = FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="cv", **FAST_SETTINGS).fit(data[0])
        assert router.mixing_.assignment == winner
        scores = router.score_embeddings(emb)
        rows = np.where(scores.task >= 0, scores.task, router.catalog_.n_tasks)
        assert np.allclose(scores.stage1, router.stage1_[rows]) == (winner == "hard")


def test_an_old_artifact_without_the_choice_routes_with_its_setting(soft):
    from finerouter.routing.assignment import assignment_of

    old = MixingChoice.from_dict({k: v for k, v in soft.mixing_.to_dict().items()
                                  if k not in ("assignment", "assignment_quality")})
    assert old.assignment is None
    soft.mixing_, kept = old, soft.mixing_
    try:
        assert assignment_of(soft) == "soft"
    finally:
        soft.mixing_ = kept


def test_paper_mixing_has_no_cross_validation_so_cv_means_the_hard_prior(data):
    router = FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="cv", mixing="paper").fit(data[0])
    assert router.mixing_.method == "fixed" and router.mixing_.assignment == "hard"
