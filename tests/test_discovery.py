"""TaskDiscovery end to end: planted-structure recovery, invariants of the catalog, parameters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from finerouter.data.synthetic import make_synthetic_embeddings, make_synthetic_routing_data, synthetic_truth
from finerouter.discovery import TaskDiscovery, rank_models, rank_order
from finerouter.errors import DataError, NotFittedError, ParameterError


@pytest.fixture(scope="module")
def planted():
    data = make_synthetic_routing_data(n_prompts=1200, seed=0)
    dom, sub = synthetic_truth(data)
    emb = make_synthetic_embeddings(dom, sub, dim=128, seed=0)
    return data, dom, sub, emb


@pytest.fixture(scope="module")
def fitted(planted):
    data, _, _, emb = planted
    return TaskDiscovery().fit(emb, data.scores, model_names=data.models, prompts=data.prompts)


def test_recovers_planted_subtasks(planted, fitted):
    data, dom, sub, _ = planted
    labels = fitted.labels_
    inside = labels >= 0
    ari = adjusted_rand_score(sub[inside], labels[inside])
    assert inside.mean() >= 0.9
    assert ari >= 0.8
    assert fitted.catalog_.n_tasks > len(set(dom.tolist()))  # finer than the coarse domains
    # the coarse domains alone would score far lower against the planted sub-tasks
    assert adjusted_rand_score(sub, dom) < 0.5
    assert fitted.catalog_.mean_candidates < data.n_models


def test_labels_and_catalog_agree(fitted):
    cat = fitted.catalog_
    labels = fitted.labels_
    assert labels.dtype == np.int64 and labels.shape == (1200,)
    assert np.array_equal(cat.labels(), labels)
    assert set(np.unique(labels)) <= set(range(-1, cat.n_tasks))
    assert [t.id for t in cat.tasks] == list(range(cat.n_tasks))
    sizes = [t.size for t in cat.tasks]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) >= 5
    assert sum(sizes) + cat.others.size == 1200
    assert np.array_equal(cat.others.members, np.where(labels < 0)[0])


def test_task_fields_are_computed_from_members(planted, fitted):
    data, _, _, emb = planted
    cat = fitted.catalog_
    tie = np.nanmean(data.scores, axis=0)
    ranks = rank_models(data.scores, tie)
    best = rank_order(data.scores, tie)[:, 0]
    for t in cat.tasks:
        mem = t.members
        # centre: median-pooled, unit norm
        c = np.median(emb[mem], axis=0)
        assert np.allclose(t.center, c / np.linalg.norm(c), atol=1e-5)
        # fused ranking: by mean reciprocal rank with epsilon 60
        mrr = (1.0 / (ranks[mem] + 60.0)).mean(axis=0)
        assert [data.models[j] for j in np.argsort(-mrr, kind="stable")] == t.fused_ranking
        # candidates: the shortest prefix covering >= 80% of the members' best models
        share = [np.isin(best[mem], [data.models.index(x) for x in t.fused_ranking[:i]]).mean() for i in range(1, 9)]
        n_cand = len(t.candidates)
        assert t.candidates == t.fused_ranking[:n_cand]
        assert share[n_cand - 1] >= 0.8 and (n_cand == 1 or share[n_cand - 2] < 0.8)
        assert t.coverage == pytest.approx(share[n_cand - 1])
        # stage-1 prior: the members' median score per model
        assert np.allclose([t.median_scores[mn] for mn in data.models], np.median(data.scores[mem], axis=0))
        # examples: the members closest to the centre; description: the most central one, one line
        sims = emb[mem] @ t.center
        central = [data.prompts[i] for i in mem[np.argsort(-sims, kind="stable")][:3]]
        assert t.examples == central
        assert t.description == " ".join(central[0].split())


def test_levels_only_merge(fitted):
    levels = fitted.level_labels_
    assert 1 <= len(levels) <= 3
    for fine, coarse in itertools.pairwise(levels):
        # every community of a round lies inside exactly one community of the next round
        pairs = np.unique(np.stack([fine, coarse]), axis=1)
        assert np.unique(pairs[0]).size == pairs.shape[1]
    stats = fitted.level_stats_
    assert stats[0]["nodes"] == 1200 and stats[0]["knn"] == "exact"
    assert all(s["kept_edges"] <= s["candidate_edges"] for s in stats)


def test_deterministic_for_a_seed(planted, fitted):
    data, _, _, emb = planted
    again = TaskDiscovery().fit(emb, data.scores, model_names=data.models)
    assert np.array_equal(again.labels_, fitted.labels_)
    assert again.catalog_.tasks[0].examples == []  # no prompts given
    assert again.catalog_.tasks[0].description == "Task 0"


def test_members_propagate_through_summary_levels(rng):
    # two far-apart blobs, each split in two halves whose text is identical within a half but which share
    # the same model preferences: level 1 cannot connect the halves (no kNN edge), level 2 merges them.
    d = 16
    centres = rng.standard_normal((4, d))
    centres[1] = centres[0] + 0.3 * rng.standard_normal(d)
    centres[3] = centres[2] + 0.3 * rng.standard_normal(d)
    group = np.repeat(np.arange(4), 30)
    emb = centres[group] + 1e-3 * rng.standard_normal((120, d))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    scores = np.where(group[:, None] < 2, [0.9, 0.5, 0.1, 0.2], [0.1, 0.2, 0.5, 0.9]) + 0.01 * rng.random((120, 4))
    fit1 = TaskDiscovery(iterations=1, k=5).fit(emb, scores, model_names=list("abcd"))
    fit3 = TaskDiscovery(iterations=3, k=5).fit(emb, scores, model_names=list("abcd"))
    assert fit1.catalog_.n_tasks >= 4
    assert fit3.catalog_.n_tasks == 2
    assert adjusted_rand_score(group // 2, fit3.labels_) == 1.0
    assert fit3.catalog_.tasks[0].candidates in (["a"], ["d"])


def test_small_communities_go_to_others(planted):
    data, _, _, emb = planted
    disc = TaskDiscovery(min_task_size=10_000).fit(emb[:200], data.scores[:200], model_names=data.models)
    cat = disc.catalog_
    assert cat.n_tasks == 0 and (disc.labels_ == -1).all()
    assert cat.others.size == 200
    # Others' prior is the median over its prompts, here all of them
    assert np.allclose(cat.median_matrix()[0], np.median(data.scores[:200], axis=0))
    assert cat.centers().shape == (0, 128)


def test_nan_scores_are_handled(planted):
    data, _, _, emb = planted
    scores = data.scores[:300].copy()
    scores[:, 0] = np.nan
    scores[::2, 1] = np.nan
    disc = TaskDiscovery().fit(emb[:300], scores, model_names=data.models)
    cat = disc.catalog_
    med = cat.median_matrix()
    assert np.isnan(med[:, 0]).all()  # a model never observed has no prior anywhere
    assert not np.isnan(med[:, 1:]).any()  # partly observed: NaN-aware medians, never NaN
    for t in cat.tasks:
        assert t.fused_ranking[-1] == data.models[0]  # never observed: ranks last everywhere
        assert t.median_scores[data.models[1]] == pytest.approx(np.nanmedian(scores[t.members, 1]))


@pytest.mark.parametrize(
    ("params", "msg"),
    [
        ({"k": 1}, "The 'k' parameter of TaskDiscovery must be an int in [2, inf). Got 1."),
        ({"tau": 1.5}, "The 'tau' parameter of TaskDiscovery must be a float in [0, 1]. Got 1.5."),
        ({"iterations": 0}, "The 'iterations' parameter of TaskDiscovery must be an int in [1, inf). Got 0."),
        ({"resolution": 0.0}, "The 'resolution' parameter of TaskDiscovery must be a float in (0, inf). Got 0.0."),
        ({"delta": 0.0}, "The 'delta' parameter of TaskDiscovery must be a float in (0, 1]. Got 0.0."),
        ({"knn": "ivf"}, "The 'knn' parameter of TaskDiscovery must be one of {'auto', 'exact', 'hnsw'}. Got 'ivf'."),
        ({"rbo_p": 1.0}, "The 'rbo_p' parameter of TaskDiscovery must be a float in (0, 1). Got 1.0."),
    ],
)
def test_parameter_validation(params, msg):
    disc = TaskDiscovery(**params)
    assert disc.get_params()[next(iter(params))] == next(iter(params.values()))  # __init__ only stores
    with pytest.raises(ParameterError) as err:
        disc.fit(np.eye(3, dtype=np.float32), np.zeros((3, 2)), model_names=["a", "b"])
    assert str(err.value) == msg


def test_input_validation():
    emb = np.eye(4, dtype=np.float32)
    with pytest.raises(DataError, match="L2-normalised; row 0 has norm 2"):
        TaskDiscovery().fit(2 * emb, np.zeros((4, 2)), model_names=["a", "b"])
    with pytest.raises(DataError, match="scores have shape"):
        TaskDiscovery().fit(emb, np.zeros((3, 2)), model_names=["a", "b"])
    with pytest.raises(DataError, match="3 model names for 2 score columns"):
        TaskDiscovery().fit(emb, np.zeros((4, 2)), model_names=["a", "b", "c"])
    with pytest.raises(DataError, match="3 prompts for 4 embeddings"):
        TaskDiscovery().fit(emb, np.zeros((4, 2)), model_names=["a", "b"], prompts=["x"] * 3)
    with pytest.raises(NotFittedError):
        _ = TaskDiscovery().n_tasks_


@pytest.mark.slow
def test_recovers_planted_subtasks_with_the_real_encoder(minilm):
    data = make_synthetic_routing_data(n_prompts=360, seed=0)
    _, sub = synthetic_truth(data)
    emb = minilm.encode(data.prompts)
    disc = TaskDiscovery().fit(emb, data.scores, model_names=data.models, prompts=data.prompts)
    inside = disc.labels_ >= 0
    ari = adjusted_rand_score(sub[inside], disc.labels_[inside])
    print(f"MiniLM synthetic: tasks={disc.catalog_.n_tasks} assigned={inside.mean():.3f} ari={ari:.3f}")
    assert inside.mean() >= 0.8
    assert ari >= 0.8
    assert disc.catalog_.n_tasks > len(set(data.tasks))


@pytest.mark.slow
def test_dcrouter_end_to_end(shared_data, cached_minilm):
    from finerouter.data.readers import read_routing_data

    data = read_routing_data(shared_data("dcrouter"))
    emb = cached_minilm.encode(data.prompts)
    disc = TaskDiscovery().fit(emb, data.scores, model_names=data.models, prompts=data.prompts)
    cat = disc.catalog_
    print(
        f"dcrouter: tasks={cat.n_tasks} share_in_tasks={cat.share_in_tasks:.3f} "
        f"mean_candidates={cat.mean_candidates:.2f} of {data.n_models}; levels={disc.level_stats_}"
    )
    assert cat.n_tasks > len(set(data.tasks))  # more than the 14 source benchmarks
    assert cat.mean_candidates < data.n_models
    assert 0.3 < cat.share_in_tasks <= 1.0


def test_stops_when_a_round_merges_nothing(rng):
    from itertools import islice, permutations

    emb = rng.standard_normal((40, 8))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    levels = np.linspace(0.9, 0.1, 6)
    orders = list(islice(permutations(range(6)), 0, 720, 18))  # 40 distinct rankings
    scores = np.zeros((40, 6))
    for i, order in enumerate(orders):
        scores[i, list(order)] = levels
    disc = TaskDiscovery(tau=1.0).fit(emb, scores, model_names=list("abcdef"))
    # tau = 1 keeps only identical rankings: no edge, nothing merges, so round 2 is skipped
    assert len(disc.level_labels_) == 1
    assert disc.level_stats_[0]["kept_edges"] == 0 and disc.level_stats_[0]["communities"] == 40
    assert (disc.labels_ == -1).all() and disc.catalog_.others.size == 40


# --------------------------------------------------------------------------- coarse groups (refining labels)
def test_groups_are_refined_never_crossed(planted):
    data, dom, sub, emb = planted
    disc = TaskDiscovery().fit(emb, data.scores, model_names=data.models, groups=data.tasks)
    labels = disc.labels_
    inside = labels >= 0
    for t in range(disc.catalog_.n_tasks):
        assert len(set(dom[labels == t].tolist())) == 1  # every task lies inside one coarse group
    assert adjusted_rand_score(sub[inside], labels[inside]) >= 0.8
    assert disc.catalog_.n_tasks > len(set(data.tasks))
    # round statistics are sums over the groups (all groups reach round 1)
    first = disc.level_stats_[0]
    assert first["groups"] == len(set(data.tasks)) and first["nodes"] == 1200
    assert first["communities"] == len(np.unique(disc.level_labels_[0]))
    for level_labels in disc.level_labels_:
        for c in np.unique(level_labels):
            assert len(set(dom[level_labels == c].tolist())) == 1


def test_a_groups_leftovers_form_one_task(rng):
    # group "a": two clean sub-tasks; group "b": 12 prompts with scattered embeddings and rankings, which
    # Leiden cannot gather into communities of 5 -- pooled, they become b's own task instead of Others.
    d, m = 16, 4
    centres = rng.standard_normal((2, d))
    a_lab = np.repeat([0, 1], 30)
    emb_a = centres[a_lab] + 1e-3 * rng.standard_normal((60, d))
    scores_a = np.where(a_lab[:, None] == 0, [0.9, 0.5, 0.1, 0.2], [0.1, 0.2, 0.5, 0.9])
    emb_b = rng.standard_normal((12, d))
    scores_b = np.array([rng.permutation(m) for _ in range(12)], dtype=float) / m
    emb = np.vstack([emb_a, emb_b])
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    scores = np.vstack([scores_a, scores_b])
    groups = ["a"] * 60 + ["b"] * 12
    free = TaskDiscovery(tau=0.9).fit(emb, scores, model_names=list("wxyz"))
    grouped = TaskDiscovery(tau=0.9).fit(emb, scores, model_names=list("wxyz"), groups=groups)
    assert (free.labels_[60:] == -1).all()  # label-free: b's prompts are Others
    assert grouped.catalog_.n_tasks == 3
    assert len(set(grouped.labels_[60:].tolist())) == 1 and grouped.labels_[60] >= 0
    assert adjusted_rand_score(a_lab, grouped.labels_[:60]) == 1.0
    # a group too small to pool into a task still goes to Others
    tiny = TaskDiscovery(tau=0.9).fit(emb[:63], scores[:63], model_names=list("wxyz"), groups=groups[:63])
    assert (tiny.labels_[60:] == -1).all() and tiny.catalog_.n_tasks == 2


def test_one_group_is_the_label_free_discovery(planted):
    data, _, _, emb = planted
    free = TaskDiscovery().fit(emb[:400], data.scores[:400], model_names=data.models)
    one = TaskDiscovery().fit(emb[:400], data.scores[:400], model_names=data.models, groups=["all"] * 400)
    for a, b in zip(free.level_labels_, one.level_labels_):
        assert adjusted_rand_score(a, b) == 1.0
    kept = free.labels_ >= 0
    assert np.array_equal(free.labels_[kept], one.labels_[kept])  # the same tasks; leftovers pooled or not


def test_bad_groups_are_named():
    emb = np.eye(4, dtype=np.float32)
    with pytest.raises(DataError, match="3 group labels for 4 prompts"):
        TaskDiscovery().fit(emb, np.zeros((4, 2)), model_names=["a", "b"], groups=["x"] * 3)
    with pytest.raises(DataError, match="groups, row 2: missing group label"):
        TaskDiscovery().fit(emb, np.zeros((4, 2)), model_names=["a", "b"], groups=["x", "y", None, "x"])
    with pytest.raises(DataError, match="groups must be a sequence"):
        TaskDiscovery().fit(emb, np.zeros((4, 2)), model_names=["a", "b"], groups="xxxx")
