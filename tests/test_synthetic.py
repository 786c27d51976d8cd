"""The SYNTHETIC planted-structure generator."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.data.synthetic import (
    OUTPUT_TOKENS,
    make_synthetic_embeddings,
    make_synthetic_routing_data,
    synthetic_truth,
)
from finerouter.discovery.ranking import rank_models
from finerouter.discovery.rbo import chance_corrected_rbo, rank_biased_overlap
from finerouter.errors import DataError, ParameterError


@pytest.fixture(scope="module")
def data():
    return make_synthetic_routing_data(n_prompts=600, seed=1)


def test_shapes_labels_and_costs(data):
    assert data.n_prompts == 600 and data.n_models == 8
    assert data.scores.shape == (600, 8) and data.costs.shape == (600, 8)
    assert ((data.scores >= 0) & (data.scores <= 1)).all()
    assert sorted(set(data.tasks)) == ["history", "mathematics", "programming", "science"]
    subs = data.meta["subtask"]
    assert len(set(subs)) == 12 and len(subs) == 600
    assert all(s.split("/")[0] == t for s, t in zip(subs, data.tasks))
    assert all(i.startswith(s + "/") for i, s in zip(data.ids, subs))
    assert data.meta["synthetic"] is True
    # cost = (characters / 4 + 256 output tokens) x price per token
    prices = np.array([data.meta["prices"][m] for m in data.models])
    tokens = np.array([len(p) / 4 + OUTPUT_TOKENS for p in data.prompts])
    assert np.allclose(data.costs, tokens[:, None] * prices[None, :] / 1e6)


def test_reproducible_by_seed():
    a = make_synthetic_routing_data(n_prompts=50, seed=3)
    b = make_synthetic_routing_data(n_prompts=50, seed=3)
    c = make_synthetic_routing_data(n_prompts=50, seed=4)
    assert a.prompts == b.prompts and np.array_equal(a.scores, b.scores)
    assert a.prompts != c.prompts


def test_best_models_differ_within_a_domain_and_across_subtasks(data):
    names = data.meta["subtask_names"]
    skills = np.array(data.meta["skills"])
    assert skills.shape == (12, 8)
    best = skills.argmax(axis=1)
    for d in {n.split("/")[0] for n in names}:
        rows = [i for i, n in enumerate(names) if n.startswith(d + "/")]
        assert len(set(best[rows])) == len(rows)
    # observed per-prompt best models follow the planted profile most of the time
    code = {n: i for i, n in enumerate(names)}
    sub = np.array([code[s] for s in data.meta["subtask"]])
    agree = (data.scores.argmax(axis=1) == best[sub]).mean()
    assert agree > 0.6
    # planted rankings of different sub-tasks agree little (chance-corrected RBO well below 1)
    r = rank_models(skills)
    i, j = np.triu_indices(12, 1)
    assert np.median(chance_corrected_rbo(rank_biased_overlap(r[i], r[j]), 8)) < 0.3


def test_prompts_share_domain_openings_but_not_templates(data):
    by_sub: dict[str, set[str]] = {}
    for p, s in zip(data.prompts, data.meta["subtask"]):
        by_sub.setdefault(s, set()).add(p.split(":")[0] if ":" in p.split(".")[0] else p.split(".")[0])
    math_openings = [by_sub[s] for s in by_sub if s.startswith("mathematics/")]
    assert set.intersection(*math_openings)  # sub-tasks of a domain share openings


def test_truth_survives_subsets(data):
    _, test = data.split(test_size=0.25, seed=0)
    dom, sub = synthetic_truth(test)
    names = sorted(set(data.meta["subtask"]))
    expected = [names.index(i.rsplit("/", 1)[0]) for i in test.ids]
    assert sub.tolist() == expected
    assert dom.max() == 3
    with pytest.raises(DataError, match="not a synthetic dataset"):
        from finerouter.data.dataset import RoutingDataset

        synthetic_truth(RoutingDataset(["a", "b"], ["x", "y"], np.zeros((2, 2))))


def test_embeddings_are_clustered(data):
    dom, sub = synthetic_truth(data)
    x = make_synthetic_embeddings(dom, sub, dim=256, seed=0)
    assert x.dtype == np.float32 and x.shape == (600, 256)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    same_sub = sub[:, None] == sub[None, :]
    same_dom = (dom[:, None] == dom[None, :]) & ~same_sub
    off = ~np.eye(600, dtype=bool)
    within, domain, cross = sim[same_sub & off].mean(), sim[same_dom].mean(), sim[~same_sub & ~same_dom].mean()
    assert within > domain + 0.2 > cross + 0.4


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"n_domains": 7}, "The 'n_domains' parameter of make_synthetic_routing_data must be an int in [1, 6]"),
        ({"subtasks_per_domain": 0}, "'subtasks_per_domain' parameter"),
        ({"n_models": 1}, "The 'n_models' parameter"),
        ({"noise": -0.1}, "The 'noise' parameter"),
    ],
)
def test_parameter_errors(kw, msg):
    with pytest.raises(ParameterError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        make_synthetic_routing_data(**kw)
