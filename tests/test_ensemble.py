"""Seed ensembles (finerouter.routing.ensemble): a router fitted with ``ensemble_size=k`` holds k - 1 members
fitted with other seeds and routes by the mean of every fit's scores; the members survive save/load, adding and
removing a model. A FakeEncoder router on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.errors import ArtifactError, ParameterError
from finerouter.routing.ensemble import members_of
from finerouter._training import single_thread_blas
from finerouter.routing.scoring import _score_one
from finerouter.testing import FAST_SETTINGS, FakeEncoder


@pytest.fixture(scope="module")
def data():
    return make_synthetic_routing_data(240, n_models=4, seed=3).split(0.25, seed=0)


@pytest.fixture(scope="module")
def single(data):
    return FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(data[0])


@pytest.fixture(scope="module")
def trio(data):
    return FineRouter(encoder=FakeEncoder(), seed=0, **{**FAST_SETTINGS, "ensemble_size": 3}).fit(data[0])


def test_each_member_is_the_router_fitted_with_the_next_seed(trio, data):
    members = members_of(trio)
    assert [m.seed for m in members] == [1, 2]
    assert trio.fit_summary_["ensemble"]["size"] == 3
    assert trio.fit_summary_["ensemble"]["seeds"] == [0, 1, 2]
    assert len(trio.fit_summary_["ensemble"]["mixing"]) == 3
    for member in members:
        assert member.models_ == trio.models_ and member.members_ == []
        assert member.cost_model_ is trio.cost_model_ and member.encoder_ is trio.encoder_
    emb = trio.encoder_.encode(data[1].prompts)
    alone = FineRouter(encoder=FakeEncoder(), seed=1, **FAST_SETTINGS).fit(data[0])
    np.testing.assert_allclose(_score_one(members[0], emb).final, _score_one(alone, emb).final, atol=1e-6)
    assert members[0].mixing_.weights == alone.mixing_.weights
    # different seeds give different fits
    own = _score_one(trio, emb)
    assert any(not np.allclose(_score_one(m, emb).stage2, own.stage2) for m in members)


def test_ensemble_scores_are_the_mean_of_every_fits_scores(trio, data):
    emb = trio.encoder_.encode(data[1].prompts)
    every = [_score_one(trio, emb)] + [_score_one(m, emb) for m in members_of(trio)]
    scores = trio.score_embeddings(emb)
    for name in ("final", "stage2", "expected"):
        np.testing.assert_allclose(getattr(scores, name), np.mean([getattr(s, name) for s in every], axis=0))
    np.testing.assert_array_equal(scores.task, every[0].task)  # the task a decision names is the router's own
    chosen = [d.model for d in trio.route(data[1].prompts)]
    assert chosen == [trio.models_[j] for j in np.argmax(scores.final, axis=1)]


def test_a_single_fit_has_no_members_and_its_own_scores(single, data):
    assert members_of(single) == []
    summary = single.fit_summary_["ensemble"]
    assert (summary["size"], summary["seeds"], summary["n_tasks"]) == (1, [0], [single.catalog_.n_tasks])
    emb = single.encoder_.encode(data[1].prompts[:20])
    # routing scores a small batch with one BLAS thread (finerouter._training.single_thread_blas); so does the
    # reference here, as a thread count can change float32 products in the last bit (the neighbour source's)
    with single_thread_blas(emb.shape[0], force=True):
        own = _score_one(single, emb).final
    np.testing.assert_array_equal(single.score_embeddings(emb).final, own)


def test_an_ensemble_round_trips_through_its_artifact(trio, data, tmp_path):
    trio.save(tmp_path / "r")
    assert (tmp_path / "r" / "members" / "2" / "quality").is_dir()
    loaded = FineRouter.load(tmp_path / "r", encoder=FakeEncoder())
    assert [m.seed for m in members_of(loaded)] == [1, 2]
    for member, saved in zip(members_of(loaded), members_of(trio)):
        assert member.mixing_.weights == saved.mixing_.weights
        np.testing.assert_array_equal(member.calibration_.y, saved.calibration_.y)
    emb = trio.encoder_.encode(data[1].prompts)
    np.testing.assert_allclose(loaded.score_embeddings(emb).final, trio.score_embeddings(emb).final, atol=1e-6)
    assert [d.model for d in loaded.route(data[1].prompts)] == [d.model for d in trio.route(data[1].prompts)]


def test_a_member_file_altered_is_refused(trio, tmp_path):
    trio.save(tmp_path / "r")
    target = tmp_path / "r" / "members" / "1" / "router.safetensors"
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match="members/1/router.safetensors"):
        FineRouter.load(tmp_path / "r", encoder=FakeEncoder())


def test_adding_and_removing_a_model_changes_every_member(trio, data):
    train = data[0]
    new = train.select_models(train.models[:3] + [train.models[3]]).subset(np.arange(60))
    smaller = trio.remove_model(train.models[3])
    assert smaller.models_ == train.models[:3]
    assert all(m.models_ == smaller.models_ and m.stage1_.shape[1] == 3 for m in members_of(smaller))
    assert len(members_of(trio)) == 2 and all(m.models_ == trio.models_ for m in members_of(trio))  # unchanged
    bigger = smaller.add_model(train.models[3], new)
    assert bigger.models_ == train.models
    for member in members_of(bigger):
        assert member.models_ == bigger.models_ and member.stage1_.shape[1] == 4
        assert member.cost_model_ is bigger.cost_model_
    emb = trio.encoder_.encode(data[1].prompts[:30])
    assert bigger.score_embeddings(emb).final.shape == (30, 4)
    assert bigger.fit_summary_["ensemble"]["size"] == 3


def test_ensemble_size_must_be_a_positive_integer(data):
    with pytest.raises(ParameterError, match="ensemble_size"):
        FineRouter(encoder=FakeEncoder(), **{**FAST_SETTINGS, "ensemble_size": 0}).fit(data[0])
