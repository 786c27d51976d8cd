"""The label prior (finerouter.routing.label_prior): the training data's coarse labels, predicted from the prompt,
as a stage-1 candidate of the mixing cross-validation; routing with it, saving it, adding and removing models."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.dataset import RoutingDataset
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.errors import DataError
from finerouter.routing.assignment import choose_assignment
from finerouter.routing.label_prior import (
    MIN_LABEL_PROMPTS,
    LabelPrior,
    given_or_predicted,
    new_label_column,
    usable_labels,
)
from finerouter.routing.mixing import MixingChoice
from finerouter.routing.shrinkage import shrink_task_means
from finerouter.testing import FAST_SETTINGS, FakeEncoder


def clusters(n_per: int = 40, d: int = 8, seed: int = 0):
    """Three well separated label clusters; model j is best (0.9) on label j, 0.2 elsewhere."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, d) * 4.0
    labels = np.repeat(["a", "b", "c"], n_per)
    emb = (centres[np.repeat(np.arange(3), n_per)] + rng.normal(0, 0.3, (3 * n_per, d))).astype(np.float32)
    scores = np.full((3 * n_per, 3), 0.2)
    scores[np.arange(3 * n_per), np.repeat(np.arange(3), n_per)] = 0.9
    return emb, list(labels), scores


def test_the_prior_is_the_label_probabilities_times_each_labels_shrunk_means():
    emb, labels, scores = clusters()
    prior = LabelPrior.fit(emb, labels, scores)
    assert prior.labels == ["a", "b", "c"] and prior.coef.shape == (3, emb.shape[1])
    weights = prior.weights(emb)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (np.array(prior.labels)[prior.predict(emb)] == np.array(labels)).mean() == 1.0
    y = np.repeat(np.arange(3), 40)
    np.testing.assert_allclose(prior.means, shrink_task_means(scores, y, 3)[:3])
    np.testing.assert_allclose(prior.prior(emb), weights @ prior.means)
    # each label's best model is best under its prior
    assert (prior.prior(emb).argmax(axis=1) == y).all()


def test_two_labels_give_the_binary_models_probabilities():
    emb, labels, scores = clusters()
    two = np.array(labels) != "c"
    prior = LabelPrior.fit(emb[two], list(np.array(labels)[two]), scores[two])
    assert prior.coef.shape == (2, emb.shape[1]) and prior.intercept.shape == (2,)
    from sklearn.linear_model import LogisticRegression

    from finerouter.routing.label_prior import LABEL_C

    ref = LogisticRegression(C=LABEL_C, max_iter=1000, random_state=0).fit(emb[two], np.array(labels)[two])
    np.testing.assert_allclose(prior.weights(emb[two]), ref.predict_proba(emb[two]), atol=1e-4)
    assert prior.prior(emb[two]).shape == (int(two.sum()), 3)


def test_labels_need_two_classes_of_enough_prompts():
    assert usable_labels(None) == []
    assert usable_labels(["a"] * 50) == []
    few = ["a"] * 20 + ["b"] * 20 + ["rare"] * (MIN_LABEL_PROMPTS - 1)
    assert usable_labels(few) == ["a", "b"]
    emb, _, scores = clusters()
    assert LabelPrior.fit(emb, ["a"] * len(emb), scores) is None


def test_a_column_added_and_removed_and_the_arrays_checked():
    emb, labels, scores = clusters()
    prior = LabelPrior.fit(emb, labels, scores)
    # a new model as good as the best on label "c" only, scored with the others on the same prompts
    new = np.where(np.array(labels) == "c", 0.95, 0.1)
    column = new_label_column(prior, new, scores, emb, min_prompts=10)
    assert column.shape == (3,) and column.argmax() == 2
    wider = prior.with_column(column)
    assert wider.means.shape == (3, 4) and wider.prior(emb[-1:]).argmax() == 3
    np.testing.assert_array_equal(wider.without(3).means, prior.means)
    back = LabelPrior.from_arrays(prior.labels, prior.to_arrays())
    np.testing.assert_array_equal(back.prior(emb), prior.prior(emb))
    with pytest.raises(DataError, match="do not fit"):
        LabelPrior.from_arrays(["a", "b"], prior.to_arrays())
    with pytest.raises(DataError, match="needs 3 values"):
        prior.with_column(np.zeros(2))


def test_an_added_models_label_column_reads_the_datas_own_labels_where_it_has_them():
    emb, labels, scores = clusters()
    prior = LabelPrior.fit(emb, labels, scores)
    rng = np.random.default_rng(1)
    # 300 prompts whose embeddings say little of their label (one cluster's centre plus noise): the classifier's
    # guesses are mostly one label, but the data knows each prompt's own
    n = 300
    own = rng.choice(["a", "b", "c"], n)
    noisy = (np.eye(3, emb.shape[1])[0] * 4.0 + rng.normal(0, 0.3, (n, emb.shape[1]))).astype(np.float32)
    others = rng.uniform(0.3, 0.7, (n, 3))
    new = others.mean(axis=1) + np.where(own == "c", 0.3, -0.1)  # 0.4 better on "c" than elsewhere
    given = new_label_column(prior, new, others, noisy, 10, labels=list(own))
    shift = given - prior.means.mean(axis=1)
    np.testing.assert_allclose(shift, [-0.1, -0.1, 0.3], atol=1e-6)  # a constant difference per label: not shrunk
    guessed = new_label_column(prior, new, others, noisy, 10)
    assert guessed[2] - guessed[0] < 0.2  # from guessed labels the lead on "c" is blurred
    # a label the prior does not know, or none, is the classifier's guess
    idx = given_or_predicted(prior, noisy[:3], ["c", "zzz", None])
    assert idx[0] == 2 and list(idx[1:]) == list(prior.predict(noisy[1:3]))
    with pytest.raises(DataError, match="2 labels for 3 prompts"):
        given_or_predicted(prior, noisy[:3], ["a", "b"])


def _choice(selected: float) -> MixingChoice:
    return MixingChoice({"stage2": 0.5, "stage1": 0.5, "global": 0.0, "neighbours": 0.0}, "cv",
                        {"selected": selected, "best_single": 0.5})


def test_the_label_prior_is_kept_only_when_it_routes_the_held_out_folds_strictly_better():
    assert choose_assignment({"hard": _choice(0.70), "soft": _choice(0.71), "label": _choice(0.72)}) == "label"
    assert choose_assignment({"hard": _choice(0.70), "soft": _choice(0.71), "label": _choice(0.71)}) == "soft"
    assert choose_assignment({"hard": _choice(0.70), "label": _choice(0.70)}) == "hard"


def test_to_overturn_a_fallback_the_label_prior_must_win_by_a_standard_error():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 400).astype(float)

    def choice(scores, method="fallback"):
        c = _choice(float(scores.mean()))
        c.method, c.oof_quality["best_single"] = method, float(scores.mean())
        c.effective_scores = scores
        return c

    noisy = base.copy()
    noisy[rng.choice(400, 8, replace=False)] = 1.0  # a few more right answers, many more changed ones
    flip = rng.choice(np.flatnonzero(base == 1), 30, replace=False)
    noisy[flip] = 0.0
    noisy[rng.choice(np.flatnonzero(base == 0), 34, replace=False)] = 1.0
    assert noisy.mean() > base.mean()
    diff = noisy - base
    assert diff.mean() < diff.std(ddof=1) / np.sqrt(400)  # higher, but within a standard error
    assert choose_assignment({"hard": choice(base), "label": choice(noisy, "cv")}) == "hard"
    clear = base.copy()
    clear[np.flatnonzero(base == 0)[:40]] = 1.0
    assert choose_assignment({"hard": choice(base), "label": choice(clear, "cv")}) == "label"
    # where the task priors route, the better routing wins without a margin
    assert choose_assignment({"hard": choice(base, "cv"), "label": choice(noisy, "cv")}) == "label"


@pytest.fixture(scope="module")
def data():
    return make_synthetic_routing_data(240, n_models=4, seed=5).split(0.25, seed=0)


@pytest.fixture(scope="module")
def labelled(data):
    """A router whose cross-validation is made to keep the label prior (the choice itself is tested above)."""
    import finerouter.routing.fitting as fitting

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fitting, "choose_assignment", lambda choices: "label")
        return FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="cv", **FAST_SETTINGS).fit(data[0])


def test_the_cross_validation_offers_the_label_prior_only_where_the_data_has_labels(data, labelled):
    assert set(labelled.mixing_.assignment_quality) == {"hard", "soft", "label"}
    unlabelled = RoutingDataset(data[0].prompts, data[0].models, data[0].scores, ids=data[0].ids)
    for router in (
        FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="cv", **FAST_SETTINGS).fit(unlabelled),
        FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="cv", label_prior=False, **FAST_SETTINGS).fit(data[0]),
        FineRouter(encoder=FakeEncoder(), seed=0, stage1_assignment="hard", **FAST_SETTINGS).fit(data[0]),
    ):
        assert "label" not in (router.mixing_.assignment_quality or {}) and router.label_prior_ is None


def test_a_router_that_kept_the_label_prior_routes_with_it_and_saves_it(data, labelled, tmp_path):
    assert labelled.mixing_.assignment == "label" and labelled.label_prior_ is not None
    assert labelled.label_prior_.labels == sorted(set(data[0].tasks))
    emb = labelled.encoder_.encode(data[1].prompts)
    scores = labelled.score_embeddings(emb)
    np.testing.assert_allclose(scores.stage1, labelled.label_prior_.prior(emb))
    loaded = FineRouter.load(labelled.save(tmp_path / "r"), encoder=FakeEncoder())
    again = loaded.score_embeddings(emb)
    np.testing.assert_array_equal(again.final, scores.final)
    np.testing.assert_array_equal(again.expected, scores.expected)
    np.testing.assert_array_equal(loaded.label_prior_.means, labelled.label_prior_.means)


def test_adding_and_removing_a_model_keeps_the_label_prior_in_step(data, labelled):
    train, test = data
    star = np.where(np.array(train.tasks) == train.tasks[0], 0.99, 0.02)
    table = RoutingDataset(train.prompts, train.models + ["star"], np.column_stack([train.scores, star]),
                           ids=train.ids)  # fmt: skip
    added = labelled.add_model("star", table.subset(np.arange(120)), cost=0.001)
    assert added.label_prior_.means.shape == (len(labelled.label_prior_.labels), 5)
    j = added.label_prior_.labels.index(train.tasks[0])
    assert added.label_prior_.means[j].argmax() == 4  # the new model leads its label's prior
    removed = added.remove_model("star")
    np.testing.assert_allclose(removed.label_prior_.means, labelled.label_prior_.means)
    emb = removed.encoder_.encode(test.prompts)
    np.testing.assert_allclose(removed.score_embeddings(emb).stage1, labelled.score_embeddings(emb).stage1)
