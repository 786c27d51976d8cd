"""Which training prompts a task's stage-1 prior averages over (finerouter.routing.fitting.routed_tasks,
prior_rows): each prompt's cross-fitted routed task, not the task discovery put it in by its model ranking."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from finerouter import FineRouter
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.routing import fitting
from finerouter.routing.shrinkage import shrink_task_means
from finerouter.testing import FAST_SETTINGS, FakeEncoder


def _two_regions(n_per: int = 40, moved: int = 6, seed: int = 0):
    """Prompts in two well-separated regions of the embedding space, discovered as tasks 0 and 1, except that
    ``moved`` prompts of region 0 were put in task 1 (as if their rankings had pulled them there)."""
    rng = np.random.default_rng(seed)
    d = 8
    centres = np.eye(d, dtype=np.float32)[:2] * 3.0
    emb = np.vstack([c + 0.3 * rng.standard_normal((n_per, d)) for c in centres])
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    labels = np.r_[np.zeros(n_per), np.ones(n_per)].astype(np.int64)
    labels[:moved] = 1
    discovery = SimpleNamespace(labels_=labels, catalog_=SimpleNamespace(n_tasks=2))
    task_emb = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
    return emb, discovery, task_emb, moved


def test_a_prompt_counts_toward_the_task_its_text_is_routed_to():
    emb, discovery, task_emb, moved = _two_regions()
    router = FineRouter(encoder=FakeEncoder(), seed=0, classifier={"epochs": 30})
    rows = fitting.routed_tasks(router, emb, discovery, task_emb)
    assert rows.shape == discovery.labels_.shape and rows.dtype == np.int64
    # the prompts whose ranking put them in task 1 read like task 0: each fold's classifier, fitted without them,
    # sends them where their text belongs
    assert np.all(rows[:moved] == 0)
    assert np.mean(rows[moved:] == discovery.labels_[moved:]) >= 0.9
    # the paper's statistics (mixing="paper") keep the members
    paper = FineRouter(encoder=FakeEncoder(), seed=0, mixing="paper")
    np.testing.assert_array_equal(fitting.prior_rows(paper, emb, discovery, task_emb), discovery.labels_)
    np.testing.assert_array_equal(fitting.prior_rows(router, emb, discovery, task_emb), rows)


def test_the_members_prior_overstates_the_model_that_pulled_prompts_in_and_the_routed_one_does_not():
    emb, discovery, task_emb, moved = _two_regions()
    n = len(emb)
    scores = np.full((n, 2), 0.5)
    scores[:moved] = [[0.0, 1.0]]  # model 1 won the prompts that its wins pulled into task 1
    router = FineRouter(encoder=FakeEncoder(), seed=0, classifier={"epochs": 30})
    members = shrink_task_means(scores, discovery.labels_, 2)
    routed = shrink_task_means(scores, fitting.routed_tasks(router, emb, discovery, task_emb), 2)
    # on the prompts routed to task 1 (region 1) both models score 0.5; over its members model 1 looks better (the
    # routed prior differs only by the shrinkage toward each model's overall mean)
    assert members[1, 1] - members[1, 0] > 0.1
    assert abs(routed[1, 1] - routed[1, 0]) < 0.02


def test_without_tasks_or_with_too_few_prompts_each_prompt_keeps_its_discovered_task():
    emb, discovery, task_emb, _ = _two_regions(n_per=4, moved=1)
    router = FineRouter(encoder=FakeEncoder(), seed=0)
    np.testing.assert_array_equal(fitting.routed_tasks(router, emb, discovery, task_emb), discovery.labels_)
    none = SimpleNamespace(labels_=np.full(len(emb), -1, dtype=np.int64), catalog_=SimpleNamespace(n_tasks=0))
    np.testing.assert_array_equal(fitting.routed_tasks(router, emb, none, None), none.labels_)


@pytest.fixture(scope="module")
def fitted():
    data = make_synthetic_routing_data(240, n_models=4, seed=5)
    return FineRouter(encoder=FakeEncoder(), seed=0, **FAST_SETTINGS).fit(data), data


def test_a_fitted_router_keeps_the_prior_over_its_routed_tasks(fitted):
    router, data = fitted
    emb = router.encoder_.encode(data.prompts)
    rows = fitting.routed_tasks(router, emb, router.discovery_, router.classifier_.task_text_embeddings_)
    np.testing.assert_allclose(router.stage1_, shrink_task_means(np.asarray(data.scores, dtype=np.float64), rows,
                                                                 router.catalog_.n_tasks), atol=1e-12)  # fmt: skip
    assert router.fit_summary_["seconds"]["stage1_prior"] >= 0.0
