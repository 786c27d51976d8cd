"""Data-dependent settings (finerouter.routing.regime): what ``"auto"`` resolves to on small and large training
sets, that a fit records and uses the resolved values, and that an artifact keeps them. FakeEncoder routers on
synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.errors import ParameterError
from finerouter.routing import regime
from finerouter.routing.ensemble import members_of
from finerouter.routing.mixing import NEIGHBOURS_ALONE, SOURCES
from finerouter.routing.scoring import _score_one
from finerouter.testing import FAST_SETTINGS, FakeEncoder

AUTO = {"ensemble_size": "auto", "stage1_assignment": "auto", "cv_folds": "auto"}


@pytest.fixture(scope="module")
def data():
    return make_synthetic_routing_data(200, n_models=4, seed=5).split(0.25, seed=0)


def test_auto_resolves_by_the_number_of_unique_prompts_and_explicit_values_are_kept():
    small, large = regime.SMALL_DATA_PROMPTS, regime.SMALL_DATA_PROMPTS + 1
    assert regime.is_small(small) and not regime.is_small(large)
    for name, (if_small, otherwise) in regime.AUTO_VALUES.items():
        assert regime.resolve(name, "auto", small) == if_small
        assert regime.resolve(name, "auto", large) == otherwise
    assert regime.resolve("ensemble_size", 5, small) == 5
    assert regime.resolve("stage1_assignment", "hard", small) == "hard"
    assert regime.resolve("stacking", False, small) is False
    assert FineRouter().ensemble_size == "auto" and FineRouter().stage1_assignment == "auto"  # the defaults
    router = FineRouter(**AUTO)
    assert regime.resolve_settings(router, large) == {name: v[1] for name, v in regime.AUTO_VALUES.items()}
    assert regime.setting(router, "ensemble_size") == "auto"  # not fitted: the parameter itself


def test_the_neighbour_source_is_offered_where_discovery_finds_little_task_structure():
    assert FineRouter().neighbours == "auto"
    assert regime.resolve_neighbours("auto", 0.98) is True and regime.resolve_neighbours("auto", 0.5) is True
    assert regime.resolve_neighbours("auto", 0.13) is False and regime.resolve_neighbours("auto", 0.0) is False
    assert regime.resolve_neighbours(True, 0.0) is True and regime.resolve_neighbours(False, 1.0) is False
    assert regime.weak_tasks(0.5) is True and regime.weak_tasks(0.49) is False


def test_a_fit_whose_discovery_finds_no_task_offers_the_neighbour_source(data):
    from finerouter.data.dataset import RoutingDataset

    train, _ = data
    # judge-like scores of 30 models, every answer's score drawn at random: no two prompts rank the models alike
    # enough for the ranking filter, so every prompt is in Others
    rng = np.random.default_rng(0)
    noisy = RoutingDataset(prompts=list(train.prompts), models=[f"m{j}" for j in range(30)],
                           scores=rng.beta(4, 4, (train.n_prompts, 30)), name="judge-like")
    router = FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(noisy)
    assert 1.0 - router.catalog_.share_in_tasks >= 0.5 and router.settings_["neighbours"] is True
    assert router.out_of_fold_.neighbours is not None  # the cross-validation weighed the neighbour source
    assert (router.neighbour_embeddings_ is not None) == router.mixing_.uses_neighbours
    # ... as its default mix: no task structure, so the prompt's neighbours stand in for its task
    alone = dict(zip(SOURCES, map(float, NEIGHBOURS_ALONE)))
    assert router.mixing_.default == alone and router.fit_summary_["mixing"]["default"] == alone
    off = FineRouter(encoder=FakeEncoder(), seed=0, neighbours=False, **FAST_SETTINGS).fit(noisy)
    assert off.settings_["neighbours"] is False and off.out_of_fold_.neighbours is None
    assert off.mixing_.default == {"stage2": 0.5, "stage1": 0.5, "global": 0.0, "neighbours": 0.0}  # Eq. 5
    # on the structured data most prompts are in tasks, and "auto" leaves the source out
    structured = FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(train)
    assert structured.catalog_.share_in_tasks > 0.5 and structured.settings_["neighbours"] is False
    # offered there by the user, it is a candidate, and Eq. 5 stays the default
    asked = FineRouter(encoder=FakeEncoder(), seed=0, neighbours=True, **FAST_SETTINGS).fit(train)
    assert asked.out_of_fold_.neighbours is not None and asked.mixing_.default["neighbours"] == 0.0
    assert asked.mixing_.default["stage2"] == asked.mixing_.default["stage1"] == 0.5


def test_a_small_fit_uses_and_records_the_small_data_settings(data, tmp_path):
    train, test = data
    router = FineRouter(encoder=FakeEncoder(), seed=0, **{**FAST_SETTINGS, **AUTO}).fit(train)
    expected = {name: v[0] for name, v in regime.AUTO_VALUES.items()}
    # the neighbour source: offered by "auto" where discovery left most prompts in Others
    expected["neighbours"] = 1.0 - router.catalog_.share_in_tasks >= regime.WEAK_TASKS_OTHERS_SHARE
    assert router.settings_ == expected and router.fit_summary_["settings"] == expected
    assert router.fit_summary_["ensemble"]["size"] == expected["ensemble_size"]
    assert router.fit_summary_["mixing"]["folds"] == expected["cv_folds"]
    members = members_of(router)
    assert [m.seed for m in members] == [1, 2]
    for member in members:  # each member a single fit with the same resolved settings
        assert member.settings_ == {**expected, "ensemble_size": 1} and members_of(member) == []
    # the resolved settings are the ones the fit ran with: the same router with them spelled out scores alike
    explicit = FineRouter(encoder=FakeEncoder(), seed=0, **{**FAST_SETTINGS, **expected}).fit(train)
    emb = router.encoder_.encode(test.prompts)
    np.testing.assert_allclose(router.score_embeddings(emb).final, explicit.score_embeddings(emb).final, atol=1e-9)
    # an artifact keeps them, and the loaded router scores as the fitted one (the soft prior included)
    loaded = FineRouter.load(router.save(tmp_path / "r"), encoder=FakeEncoder())
    assert loaded.settings_ == expected and loaded.ensemble_size == "auto"
    np.testing.assert_allclose(loaded.score_embeddings(emb).final, router.score_embeddings(emb).final, atol=1e-9)
    np.testing.assert_allclose(_score_one(members_of(loaded)[0], emb).stage1, _score_one(members[0], emb).stage1)


def test_a_large_fit_is_a_single_fit_with_the_paper_settings(data, monkeypatch):
    monkeypatch.setattr(regime, "SMALL_DATA_PROMPTS", 20)  # 150 prompts are "large" against this threshold
    router = FineRouter(encoder=FakeEncoder(), seed=0, **{**FAST_SETTINGS, **AUTO}).fit(data[0])
    assert router.settings_ == {"ensemble_size": 1, "stage1_assignment": "hard", "cv_folds": 3, "neighbours": False}
    assert members_of(router) == [] and router.fit_summary_["mixing"]["folds"] == 3


@pytest.mark.parametrize("name, value", [("ensemble_size", "many"), ("stage1_assignment", "sometimes"),
                                         ("stacking", "auto"), ("neighbours", "sometimes")])  # fmt: skip
def test_other_values_than_auto_are_refused(name, value, data):
    with pytest.raises(ParameterError, match=name):
        FineRouter(encoder=FakeEncoder(), **{name: value}).fit(data[0])


def test_fit_says_where_the_neighbour_source_is_offered_and_where_it_leads():
    from finerouter.cli.fit import _neighbour_note

    assert _neighbour_note(False, 0.98) == ""
    assert "default mix (98% of prompts in no task)" in _neighbour_note(True, 0.98)
    assert _neighbour_note(True, 0.1) == "neighbour source offered, "
