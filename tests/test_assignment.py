"""Soft task assignment for the stage-1 prior (finerouter.routing.assignment, ``stage1_assignment="soft"``)."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.errors import ParameterError
from finerouter.routing.assignment import soft_stage1, task_weights_for
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
