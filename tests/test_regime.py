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


def test_a_small_fit_uses_and_records_the_small_data_settings(data, tmp_path):
    train, test = data
    router = FineRouter(encoder=FakeEncoder(), seed=0, **{**FAST_SETTINGS, **AUTO}).fit(train)
    expected = {name: v[0] for name, v in regime.AUTO_VALUES.items()}
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
    assert router.settings_ == {"ensemble_size": 1, "stage1_assignment": "hard", "cv_folds": 3}
    assert members_of(router) == [] and router.fit_summary_["mixing"]["folds"] == 3


@pytest.mark.parametrize("name, value", [("ensemble_size", "many"), ("stage1_assignment", "sometimes"),
                                         ("stacking", "auto"), ("neighbours", "auto")])  # fmt: skip
def test_other_values_than_auto_are_refused(name, value, data):
    with pytest.raises(ParameterError, match=name):
        FineRouter(encoder=FakeEncoder(), **{name: value}).fit(data[0])
