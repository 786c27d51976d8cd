"""An added model's stage-2 targets: its scores less the fitted models' shared residual on the same prompts."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.quality import onboarding as qo


class _Predictions:
    """The one method :func:`paired_targets` reads from a fitted estimator: its general adapters' predictions."""

    def __init__(self, general: np.ndarray) -> None:
        self.general = general

    def predict_general(self, emb: np.ndarray) -> np.ndarray:
        assert len(emb) == len(self.general)
        return self.general


@pytest.fixture
def paired_on(monkeypatch):
    monkeypatch.setattr(qo, "PAIRED_TARGETS", True)


def test_what_every_model_shares_on_a_prompt_is_taken_out(paired_on):
    rng = np.random.default_rng(0)
    n, m = 200, 4
    predicted = rng.uniform(0.2, 0.8, size=(n, m))  # what the embedding says of the fitted models
    shared = rng.normal(0.0, 0.3, size=n)  # what it does not: the prompt is harder or easier for every model
    others = predicted + shared[:, None]
    own = rng.uniform(0.2, 0.8, size=n)  # the new model's part that differs from the others
    y = own + shared
    target = qo.paired_targets(_Predictions(predicted), np.zeros((n, 3)), y, others)
    np.testing.assert_allclose(target, own, atol=1e-12)
    assert np.var(target - own) < 1e-20 < np.var(y - own)


def test_only_the_models_scored_on_a_prompt_count_and_a_prompt_without_any_keeps_its_score(paired_on):
    predicted = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    others = np.array([[0.9, np.nan], [0.7, 0.1], [np.nan, np.nan]])
    y = np.array([1.0, 1.0, 1.0])
    target = qo.paired_targets(_Predictions(predicted), np.zeros((3, 2)), y, others)
    np.testing.assert_allclose(target, [1.0 - 0.4, 1.0 - (0.2 - 0.4) / 2, 1.0])


def test_with_the_option_off_or_no_other_model_the_targets_are_the_scores(monkeypatch):
    y = np.array([0.0, 1.0, 0.5])
    predicted = np.full((3, 2), 0.5)
    monkeypatch.setattr(qo, "PAIRED_TARGETS", False)
    np.testing.assert_array_equal(qo.paired_targets(_Predictions(predicted), np.zeros((3, 2)), y, predicted + 0.3), y)
    monkeypatch.setattr(qo, "PAIRED_TARGETS", True)
    np.testing.assert_array_equal(qo.paired_targets(_Predictions(predicted), np.zeros((3, 2)), y, np.zeros((3, 0))), y)
