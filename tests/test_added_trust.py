"""An added model's stage-2 estimate is shrunk toward its stage-1 prior by its share of the data
(finerouter.routing.scoring.added_trust): its adapters are learned from a few hundred prompts, the fitted models'
from the whole training set. A FakeEncoder router on synthetic data."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.dataset import RoutingDataset
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.routing.policy import clip_to_reference, minmax_rows
from finerouter.routing.scoring import added_trust, reference_models, score
from finerouter.testing import FAST_SETTINGS, FakeEncoder


@pytest.fixture(scope="module")
def routers():
    """``(router, added, test)``: Eq. 5 with the hard prior, then a model added from 120 of its training prompts."""
    data = make_synthetic_routing_data(300, n_models=4, seed=0)
    train, test = data.split(0.25, seed=0)
    router = FineRouter(encoder=FakeEncoder(), seed=0, mixing="paper", stage1_assignment="hard",
                        **FAST_SETTINGS).fit(train)  # fmt: skip
    new = np.clip(train.scores[:, 0] + np.random.default_rng(3).normal(0.05, 0.2, train.n_prompts), 0, 1)
    table = RoutingDataset(train.prompts, train.models + ["new"], np.column_stack([train.scores, new]))
    return router, router.add_model("new", table.subset(np.arange(120)), cost=0.001), test


def with_provenance(router, n_prompts):
    out = copy.copy(router)
    out.provenance_ = {**router.provenance_, "new": {"added": n_prompts}}
    return out


def test_the_trust_is_the_added_models_share_of_the_data(routers):
    router, added, _ = routers
    n_fit = router.fit_summary_["n_prompts"]
    assert added_trust(router) == {}  # a router as fitted: nothing shrunk
    assert added_trust(added) == {len(router.models_): pytest.approx(120 / n_fit)}
    assert added_trust(with_provenance(added, 10 * n_fit)) == {len(router.models_): 1.0}  # at most 1
    assert added_trust(added.remove_model("new")) == {}


def test_the_added_models_routing_score_reads_its_prior_in_proportion(routers):
    router, added, test = routers
    emb = added.encoder_.encode(test.prompts)
    j, lam = len(router.models_), 120 / router.fit_summary_["n_prompts"]
    w2, w1, wg, wn = added.mixing_.vector()
    assert w2 > 0 and w1 > 0 and wg == wn == 0
    ref = reference_models(added)
    got = score(added, emb)
    n2 = minmax_rows(clip_to_reference(got.stage2, ref), ref)
    n1 = minmax_rows(got.stage1, ref)
    np.testing.assert_allclose(got.final[:, j], w2 * (lam * n2[:, j] + (1 - lam) * n1[:, j]) + w1 * n1[:, j],
                               atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(got.final[:, :j], w2 * n2[:, :j] + w1 * n1[:, :j], atol=1e-9)
    # trusted fully (as many prompts as the fit had), its stage-2 estimate counts at the fitted models' weight
    full = score(with_provenance(added, router.fit_summary_["n_prompts"]), emb)
    np.testing.assert_allclose(full.final[:, j], w2 * n2[:, j] + w1 * n1[:, j], atol=1e-9)
    np.testing.assert_allclose(full.final[:, :j], got.final[:, :j], atol=0)
    # the expected scores (the raw mix, calibrated) read the same shrunk estimate; the fitted models' are unchanged
    np.testing.assert_allclose(full.expected[:, :j], got.expected[:, :j], atol=0)
    assert not np.allclose(full.expected[:, j], got.expected[:, j])


def test_a_loaded_ensembles_fits_trust_an_added_model_alike(routers, tmp_path):
    # Each fit of an ensemble judges the new model with the same trust (add_model's fallback judgement scores one fit
    # at a time); a saved member keeps only what add_model reads, and its training data's size is the router's.
    router, _, test = routers
    data = make_synthetic_routing_data(300, n_models=4, seed=0).split(0.25, seed=0)[0]
    settings = {**FAST_SETTINGS, "ensemble_size": 2}
    pair = FineRouter(encoder=FakeEncoder(), seed=0, mixing="paper", stage1_assignment="hard", **settings).fit(data)
    new = np.clip(data.scores[:, 1] + 0.1, 0, 1)
    added = pair.add_model("new", RoutingDataset(data.prompts, data.models + ["new"],
                                                 np.column_stack([data.scores, new])).subset(np.arange(120)), cost=0.001)
    added.save(tmp_path / "pair")
    loaded = FineRouter.load(tmp_path / "pair", encoder=FakeEncoder())
    expected = {len(router.models_): pytest.approx(120 / data.n_prompts)}
    assert added_trust(added) == expected and added_trust(loaded) == expected
    assert [added_trust(m) for m in loaded.members_] == [expected]
    emb = loaded.encoder_.encode(test.prompts)
    np.testing.assert_allclose(score(loaded, emb).final, score(added, emb).final, atol=1e-5)
