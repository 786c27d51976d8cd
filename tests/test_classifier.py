"""Tests of the bilinear task classifier (finerouter.classify)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter._io import load_arrays, save_arrays
from finerouter.classify import TaskClassifier, assignment_metrics, macro_f1
from finerouter.errors import ArtifactError, DataError, NotFittedError, ParameterError


def planted(n: int = 1200, d: int = 32, k: int = 8, others_share: float = 0.15, seed: int = 0):
    """``k`` tight clusters plus scattered Others prompts; task descriptions are noisy cluster centres.

    Returns (embeddings (n, d), labels (n,) with -1, description embeddings (k, d), centres (k, d)).
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    emb = centers[labels] + 0.25 * rng.standard_normal((n, d)) / np.sqrt(d) * 4
    others = rng.random(n) < others_share
    emb[others] = rng.standard_normal((int(others.sum()), d))
    labels[others] = -1
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    descriptions = centers + 0.5 * rng.standard_normal((k, d)) / np.sqrt(d)
    return emb.astype(np.float32), labels.astype(np.int64), descriptions.astype(np.float32), centers


@pytest.fixture(scope="module")
def fitted():
    emb, labels, desc, centers = planted()
    clf = TaskClassifier(seed=0).fit(emb[:1000], labels[:1000], desc)  # the defaults
    return clf, emb, labels, desc, centers


def test_recovers_planted_clusters(fitted):
    clf, emb, labels, _, _ = fitted
    metrics = clf.evaluate(emb[1000:], labels[1000:])
    assert metrics["macro_f1"] > 0.95
    assert metrics["accuracy"] > 0.92
    assert abs(metrics["assigned_share"] - np.mean(labels[1000:] >= 0)) < 0.05
    assert clf.dev_metrics_ is not None and clf.dev_metrics_["macro_f1"] > 0.9
    pred, conf = clf.predict(emb[1000:])
    assert pred.dtype == np.int64 and conf.dtype == np.float32 and pred.shape == conf.shape == (200,)
    proba = clf.predict_proba(emb[1000:])
    assert proba.shape == (200, 8) and proba.dtype == np.float32
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(conf, proba.max(axis=1))


def test_threshold_sends_far_away_prompts_to_others(fitted):
    clf, _, _, _, centers = fitted
    rng = np.random.default_rng(1)
    # directions orthogonal to every cluster centre: no task should claim them
    far = rng.standard_normal((200, centers.shape[1]))
    q, _ = np.linalg.qr(centers.T)
    far -= far @ q @ q.T
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    pred, conf = clf.predict(far.astype(np.float32))
    assert np.mean(pred == -1) > 0.9
    assert np.all(conf[pred == -1] < clf.threshold)
    # the threshold is read at predict time: 0 assigns everything, a stricter one assigns fewer prompts
    emb = planted()[0][1000:]
    shares = []
    for threshold in (0.0, 0.5, 0.99):
        clf.threshold = threshold
        shares.append(np.mean(clf.predict(emb)[0] >= 0))
    clf.threshold = 0.5
    assert shares[0] == 1.0 and shares[0] >= shares[1] >= shares[2] and shares[2] < shares[1]


def test_initialisation_from_task_descriptions():
    """With no training epoch the matcher is s * e . u_t + prior bias, u_t the normalised description embedding."""
    emb, labels, desc, _ = planted(n=400)
    clf = TaskClassifier(epochs=0).fit(emb, labels, desc)
    u = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    scale = float(clf.weight_[0, 0])
    assert scale > 0
    np.testing.assert_allclose(clf.weight_, scale * np.eye(emb.shape[1]))  # identity-like W
    np.testing.assert_allclose(clf.task_encodings_, u, atol=1e-6)
    np.testing.assert_allclose(clf.decision_function(emb), scale * emb @ u.T + clf.bias_, atol=1e-4)
    prior = np.clip(np.bincount(labels[labels >= 0], minlength=8) / len(labels), 1e-4, 0.5)
    np.testing.assert_allclose(clf.bias_, np.log(prior / (1 - prior)), rtol=1e-5)
    # the descriptions alone already point most clustered prompts to their task
    best = clf.decision_function(emb).argmax(axis=1)
    assert np.mean(best[labels >= 0] == labels[labels >= 0]) > 0.8


def test_task_encodings_of_another_width():
    emb, labels, desc, _ = planted(n=800, d=32)
    rng = np.random.default_rng(2)
    desc_wide = desc @ rng.standard_normal((32, 48)).astype(np.float32)  # (k, 48): d != d_t
    clf = TaskClassifier(epochs=40, lr=3e-3).fit(emb[:700], labels[:700], desc_wide)
    assert clf.weight_.shape == (32, 48) and clf.task_encodings_.shape == (8, 48)
    assert clf.evaluate(emb[700:], labels[700:])["macro_f1"] > 0.9


def test_state_round_trip_is_exact(tmp_path, fitted):
    clf, emb, _, _, _ = fitted
    config, arrays = clf.to_state()
    text = json.dumps(config, allow_nan=False)
    save_arrays(tmp_path / "c.safetensors", arrays)
    back = TaskClassifier.from_state(json.loads(text), load_arrays(tmp_path / "c.safetensors"))
    assert np.array_equal(back.predict_proba(emb), clf.predict_proba(emb))
    for a, b in zip(back.predict(emb), clf.predict(emb), strict=True):
        assert np.array_equal(a, b)
    assert back.get_params() == clf.get_params() and back.n_epochs_ == clf.n_epochs_
    with pytest.raises(ArtifactError, match="missing arrays: bias"):
        TaskClassifier.from_state(config, {k: v for k, v in arrays.items() if k != "bias"})
    with pytest.raises(ArtifactError, match="Not a TaskClassifier state"):
        TaskClassifier.from_state({"format": "other"}, arrays)


def test_early_stopping_and_history():
    emb, labels, desc, _ = planted(n=600)
    clf = TaskClassifier(epochs=200, lr=5e-2, patience=2, seed=1).fit(emb, labels, desc)
    assert clf.n_epochs_ == len(clf.history_)
    assert clf.n_epochs_ < 200  # a large learning rate overfits the dev split quickly
    assert clf.n_epochs_ - clf.best_epoch_ == 2
    best_dev = min(h["dev_loss"] for h in clf.history_)
    assert clf.history_[clf.best_epoch_ - 1]["dev_loss"] == best_dev


def test_deterministic_given_seed():
    emb, labels, desc, _ = planted(n=300)
    a = TaskClassifier(epochs=3, seed=5).fit(emb, labels, desc)
    b = TaskClassifier(epochs=3, seed=5).fit(emb, labels, desc)
    c = TaskClassifier(epochs=3, seed=6).fit(emb, labels, desc)
    assert np.array_equal(a.weight_, b.weight_) and np.array_equal(a.bias_, b.bias_)
    assert not np.array_equal(a.weight_, c.weight_)


def test_no_tasks_predicts_others():
    emb, _, _, _ = planted(n=50)
    clf = TaskClassifier().fit(emb, np.full(50, -1), np.zeros((0, emb.shape[1]), dtype=np.float32))
    labels, conf = clf.predict(emb)
    assert np.all(labels == -1) and np.all(conf == 0)
    assert clf.predict_proba(emb).shape == (50, 0)


def test_macro_f1_and_assignment_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, -1, -1])
    y_pred = np.array([0, 1, 1, -1, -1, 0])
    # class 0: tp=1 fp=1 fn=1 -> F1 0.5; class 1: tp=1 fp=1 fn=1 -> 0.5
    assert macro_f1(y_true, y_pred) == pytest.approx(0.5)
    # Others: tp=1 fp=1 fn=1 -> 0.5 as well
    assert macro_f1(y_true, y_pred, include_others=True) == pytest.approx(0.5)
    m = assignment_metrics(y_true, y_pred)
    assert m["assigned_share"] == pytest.approx(4 / 6)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["others_f1"] == pytest.approx(0.5)
    assert np.isnan(macro_f1(np.array([-1, -1]), np.array([-1, 0])))
    with pytest.raises(DataError):
        macro_f1(np.array([0, 1]), np.array([0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1.5}, "The 'threshold' parameter of TaskClassifier must be a float in [0, 1]. Got 1.5."),
        ({"epochs": -1}, "The 'epochs' parameter of TaskClassifier must be an int in [0, inf). Got -1."),
        ({"batch_size": 0}, "The 'batch_size' parameter of TaskClassifier must be an int in [1, inf). Got 0."),
        ({"lr": -1.0}, "The 'lr' parameter of TaskClassifier must be a float in (0, inf). Got -1.0."),
        ({"patience": 0}, "The 'patience' parameter of TaskClassifier must be an int in [1, inf). Got 0."),
    ],
)
def test_parameter_validation(kwargs, message):
    emb, labels, desc, _ = planted(n=40)
    with pytest.raises(ParameterError) as info:
        TaskClassifier(**kwargs).fit(emb, labels, desc)
    assert str(info.value) == message


def test_fine_tune_encoder_is_refused_clearly():
    emb, labels, desc, _ = planted(n=40)
    with pytest.raises(ParameterError, match="fine_tune_encoder.*GPU"):
        TaskClassifier(fine_tune_encoder=True).fit(emb, labels, desc)


def test_bad_inputs_raise_clear_errors():
    emb, labels, desc, _ = planted(n=60)
    clf = TaskClassifier(epochs=1)
    with pytest.raises(NotFittedError):
        clf.predict(emb)
    with pytest.raises(DataError, match=r"'labels' must hold task ids in \[-1, 7\] \(-1 = Others\); row 0 has 8"):
        clf.fit(emb, np.r_[8, labels[1:]], desc)
    with pytest.raises(DataError, match="'labels' must be a 1-D array of 60"):
        clf.fit(emb, labels[:10], desc)
    with pytest.raises(DataError, match="must hold integer task ids"):
        clf.fit(emb, labels + 0.5, desc)
    clf.fit(emb, labels, desc)
    with pytest.raises(DataError, match="must have 32 columns"):
        clf.predict(emb[:, :5])


def test_seed_none_is_seed_zero_bit_for_bit():
    emb, labels, desc, _ = planted(n=300)
    rng = np.random.default_rng(3)
    desc_wide = desc @ rng.standard_normal((32, 40)).astype(np.float32)  # d != d_t: the seeded initialisation
    for task_embeddings in (desc, desc_wide):
        default = TaskClassifier(epochs=4).fit(emb, labels, task_embeddings)
        zero = TaskClassifier(epochs=4, seed=0).fit(emb, labels, task_embeddings)
        assert default.seed is None and default.history_ == zero.history_
        assert np.array_equal(default.predict_proba(emb), zero.predict_proba(emb))
        assert np.array_equal(default.weight_, zero.weight_)


def test_save_and_load_a_folder(tmp_path, fitted):
    from finerouter.quality import QualityEstimator

    clf, emb, _, _, _ = fitted
    folder = clf.save(tmp_path / "classifier")
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.safetensors", "config.json"]
    back = TaskClassifier.load(folder)
    assert isinstance(back, TaskClassifier) and back.get_params() == clf.get_params()
    assert np.array_equal(back.predict_proba(emb), clf.predict_proba(emb))
    assert back.best_epoch_ == clf.best_epoch_ and back.history_ == clf.history_
    with pytest.raises(ArtifactError, match="holds a 'TaskClassifier', not a QualityEstimator"):
        QualityEstimator.load(folder)
    (folder / "arrays.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="arrays.safetensors"):
        TaskClassifier.load(folder)
    with pytest.raises(NotFittedError):
        TaskClassifier().save(tmp_path / "unfitted")
