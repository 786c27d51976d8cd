"""Baseline routers: the shared interface, the registry, and that each router learns planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.baselines import FINEROUTER_VARIANTS, ROUTERS, available_routers, make_router
from finerouter.baselines.base import Router, best_model_labels, select_models
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import DataError, NotFittedError, ParameterError
from finerouter.evaluation.metrics import mean_quality

N_CLUSTERS, N_MODELS, DIM = 6, 4, 16


def planted(n: int, seed: int) -> tuple[RoutingDataset, np.ndarray, np.ndarray]:
    """Prompts in 6 well-separated clusters; in cluster c, model c % 4 scores ~0.85 and the others ~0.35.

    Coarse tasks pair up clusters ("domain0" = clusters 0-1...), so a router that only sees the coarse label
    cannot tell which model is best within a domain. Model j costs (j + 1) / 1000 per prompt. 3% of scores NaN.
    """
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(size=(N_CLUSTERS, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cluster = rng.integers(0, N_CLUSTERS, n)
    x = centers[cluster] + 0.25 * rng.normal(size=(n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    best = cluster % N_MODELS
    scores = np.clip(0.35 + 0.1 * rng.normal(size=(n, N_MODELS)), 0, 1)
    scores[np.arange(n), best] = np.clip(0.85 + 0.1 * rng.normal(size=n), 0, 1)
    scores[rng.random((n, N_MODELS)) < 0.03] = np.nan
    costs = np.tile((np.arange(N_MODELS) + 1) / 1000.0, (n, 1))
    data = RoutingDataset(
        prompts=[f"s{seed} prompt {i}" for i in range(n)],
        models=[f"model{j}" for j in range(N_MODELS)],
        scores=scores,
        costs=costs,
        tasks=[f"domain{c // 2}" for c in cluster],
        name="planted",
    )
    return data, x.astype(np.float32), best


@pytest.fixture(scope="module")
def split():
    train, x_train, _ = planted(900, seed=1)
    test, x_test, best = planted(300, seed=2)
    return train, x_train, test, x_test, best


@pytest.fixture(scope="module")
def random_quality(split):
    train, x_train, test, x_test, _ = split
    choice = make_router("random", seed=0).fit(train, x_train).route(x_test)
    return mean_quality(test.scores, choice)


LEARNED = ["knn", "mlp_classifier", "mlp_regressor", "matrix_factorization", "routerdc", "ipr"]


def test_registry_lists_every_router_once():
    names = available_routers()
    assert names == list(ROUTERS) and len(set(names)) == len(names)
    for expected in ("oracle", "best_single", "random", "knn", "coarse_task", "finerouter", *FINEROUTER_VARIANTS):
        assert expected in names
    for name in names:
        router = make_router(name, seed=3)
        assert isinstance(router, Router)
        assert router.name == name


def test_unknown_router_and_bad_parameters_are_clear_errors(split):
    train, x_train, *_ = split
    with pytest.raises(ParameterError, match="Unknown router 'nope'"):
        make_router("nope")
    with pytest.raises(ParameterError, match=r"The 'k' parameter of KNNRouter must be an int in \[1, inf\)\. Got 0\."):
        make_router("knn", k=0).fit(train, x_train)
    with pytest.raises(ParameterError, match="'loss' parameter of MatrixFactorizationRouter"):
        make_router("matrix_factorization", loss="hinge").fit(train, x_train)
    with pytest.raises(DataError, match="embeddings have 3 rows for 900 prompts"):
        make_router("knn").fit(train, x_train[:3])
    bad = x_train.copy()
    bad[5, 0] = np.nan
    with pytest.raises(ParameterError, match="row 5"):
        make_router("mlp_regressor").fit(train, bad)
    with pytest.raises(NotFittedError):
        make_router("knn").route(x_train)


def test_oracle_picks_the_best_observed_model_and_the_cheapest_among_ties(split):
    train, x_train, test, x_test, _ = split
    oracle = make_router("oracle").fit(train, x_train)
    choice = oracle.route(x_test, data=test)
    assert mean_quality(test.scores, choice) == pytest.approx(float(np.mean(test.oracle_scores())))
    tied = RoutingDataset(["a", "b"], ["x", "y", "z"], np.array([[1.0, 1.0, 0.0], [0.0, np.nan, 0.5]]),
                          costs=np.array([[3.0, 1.0, 0.1], [1.0, 1.0, 1.0]]))
    assert oracle.fit(tied, np.eye(2, dtype=np.float32)).route(np.eye(2), data=tied).tolist() == [1, 2]
    with pytest.raises(ParameterError, match="needs the test dataset"):
        oracle.route(np.eye(2))
    with pytest.raises(DataError, match="16 features, the router was fitted on 2"):
        oracle.route(x_test, data=test)


def test_best_single_is_chosen_on_training_data(split):
    train, x_train, _, x_test, _ = split
    router = make_router("best_single").fit(train, x_train)
    expected = int(np.nanargmax(np.nanmean(train.scores, axis=0)))
    assert router.route(x_test).tolist() == [expected] * len(x_test)
    assert not router.is_score_based


def test_random_is_seeded_and_uniform(split):
    train, x_train, _, x_test, _ = split
    a = make_router("random", seed=7).fit(train, x_train).route(x_test)
    b = make_router("random", seed=7).fit(train, x_train).route(x_test)
    c = make_router("random", seed=8).fit(train, x_train).route(x_test)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    shares = np.bincount(a, minlength=N_MODELS) / len(a)
    assert shares.min() > 0.15


@pytest.mark.parametrize("name", LEARNED)
def test_learned_router_recovers_planted_best_models(name, split, random_quality):
    train, x_train, test, x_test, best = split
    router = make_router(name, seed=0).fit(train, x_train)
    scores = router.predict_scores(x_test)
    assert scores.shape == (len(x_test), N_MODELS) and np.isfinite(scores).all()
    choice = router.route(x_test)
    quality = mean_quality(test.scores, choice)
    best_single = make_router("best_single").fit(train, x_train).route(x_test)
    assert quality > random_quality + 0.25
    assert quality > mean_quality(test.scores, best_single) + 0.2
    assert np.mean(choice == best) > 0.8  # the planted best model of the prompt's cluster


def test_matrix_factorization_mse_loss_also_learns(split, random_quality):
    train, x_train, test, x_test, best = split
    router = make_router("matrix_factorization", loss="mse", seed=0).fit(train, x_train)
    assert np.mean(router.route(x_test) == best) > 0.8


def test_routerdc_with_task_groups_learns(split):
    train, x_train, test, x_test, best = split
    router = make_router("routerdc", groups="task", seed=0).fit(train, x_train)
    assert np.mean(router.route(x_test) == best) > 0.8


def test_coarse_task_uses_the_given_label_and_fine_routers_beat_it(split, random_quality):
    train, x_train, test, x_test, best = split
    coarse = make_router("coarse_task").fit(train, x_train)
    assert coarse.uses_test_labels
    q_coarse = mean_quality(test.scores, coarse.route(x_test, data=test))
    q_knn = mean_quality(test.scores, make_router("knn").fit(train, x_train).route(x_test))
    assert random_quality + 0.05 < q_coarse < q_knn - 0.1  # a domain holds 2 clusters with different best models
    with pytest.raises(ParameterError, match="task labels"):
        coarse.predict_scores(x_test)
    no_tasks = RoutingDataset(train.prompts, train.models, train.scores)
    with pytest.raises(DataError, match="needs task labels"):
        make_router("coarse_task").fit(no_tasks, x_train)


def test_knn_tunes_k_on_a_dev_part_of_training_data(split):
    train, x_train, *_ = split
    router = make_router("knn", k_grid=(1, 5, 40), seed=0).fit(train, x_train)
    assert set(router.dev_quality_) == {1, 5, 40}
    assert router.k_ == max(router.dev_quality_, key=lambda k: (router.dev_quality_[k], -k))
    fixed = make_router("knn", k=7).fit(train, x_train)
    assert fixed.k_ == 7 and fixed.dev_quality_ is None
    # the cost-aware kNN baseline routes on the raw neighbour means: expected scores on the score scale
    x_test = split[3]
    np.testing.assert_allclose(fixed.predict_expected(x_test), fixed.predict_scores(x_test))
    assert make_router("mlp_classifier").predict_expected(x_test) is None  # class probabilities are not scores


def test_torch_routers_are_reproducible_and_leave_global_state_alone(split):
    import torch

    train, x_train, _, x_test, _ = split
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    a = make_router("ipr", seed=5, epochs=3).fit(train, x_train).predict_scores(x_test)
    assert torch.equal(torch.rand(3), expected_next)  # fitting did not consume the global generator
    assert torch.get_num_threads() == threads
    b = make_router("ipr", seed=5, epochs=3).fit(train, x_train).predict_scores(x_test)
    np.testing.assert_allclose(a, b)
    with pytest.raises(DataError, match="features"):
        make_router("ipr", epochs=1).fit(train, x_train).predict_scores(x_test[:, :4])


def test_tolerance_trades_quality_for_cost(split):
    train, x_train, test, x_test, _ = split
    router = make_router("mlp_regressor", seed=0).fit(train, x_train)
    costs = test.costs
    previous = np.inf
    for tol in (0.0, 0.2, 0.5, 1.0):
        cost = float(costs[np.arange(len(x_test)), router.route(x_test, tolerance=tol, costs=costs)].mean())
        assert cost <= previous + 1e-12
        previous = cost
    assert router.route(x_test, tolerance=1.0, costs=costs).tolist() == [0] * len(x_test)  # all eligible: cheapest
    with pytest.raises(ParameterError, match="tolerance"):
        router.route(x_test, tolerance=1.5)


def test_select_models_rule():
    prior = np.array([0.1, 0.9, 0.5])
    scores = np.array([[0.7, 0.7, 0.1], [np.nan, 0.2, 0.3], [0.4, 0.4, 0.4]])
    # no costs: exact ties go to the higher prior; NaN is never chosen
    assert select_models(scores, None, 0.0, prior).tolist() == [1, 2, 1]
    costs = np.array([[1.0, 2.0, 0.5]] * 3)
    # with costs: the cheapest among ties; tolerance 1 makes every scored model eligible
    assert select_models(scores, costs, 0.0, prior).tolist() == [0, 2, 2]
    assert select_models(scores, costs, 1.0, prior).tolist() == [2, 2, 2]


def test_best_model_labels_breaks_ties_by_prior():
    prior = np.array([0.2, 0.8, 0.5])
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [np.nan, np.nan, np.nan], [0.3, np.nan, 0.9]])
    assert best_model_labels(scores, prior).tolist() == [1, 1, 1, 2]


class _PlantedEncoder:
    """An Encoder whose vectors are the planted embeddings (FineRouter embeds its task descriptions, which are
    training prompts when no describer is given)."""

    name = "planted-lookup"
    dim = DIM

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.table = dict(zip(texts, vectors))

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


@pytest.mark.slow  # five FineRouter fits (each with internal cross-validation)
def test_finerouter_variants_share_one_fit_and_route_by_their_stage(split, random_quality):
    from finerouter.baselines.finerouter_variants import share_fits

    train, x_train, test, x_test, _ = split
    encoder = _PlantedEncoder(train.prompts + test.prompts, np.vstack([x_train, x_test]))
    small = {"classifier": {"epochs": 8}, "quality": {"epochs_general": 8, "epochs_task": 5}}
    routers = [make_router(name, seed=0, encoder=encoder, **small) for name in FINEROUTER_VARIANTS]
    share_fits(routers)
    for r in routers:
        r.fit(train, x_train)
    by_name = {r.name: r for r in routers}
    fitted = by_name["finerouter"].router_
    own_fits = ("label_free", "refined", "paper_mixing", "with_neighbours", "with_stacking", "with_pruning",
                "with_ensemble", "soft_prior", "soft_ensemble", "single_fit")
    shared = [r for r in routers if r.name not in own_fits]
    assert all(r.router_ is fitted for r in shared)  # one FineRouter fit for the four variants
    assert fitted.refine_task_labels == "auto"
    for name, mode in (("label_free", False), ("refined", True)):  # each a fit of its own
        other = by_name[name].router_
        assert other is not fitted and other.refine_task_labels is mode
        assert other.fit_summary_["refined_task_labels"] is (mode and train.tasks is not None)
        np.testing.assert_allclose(by_name[name].predict_scores(x_test), other.score_embeddings(x_test).final)
    paper = by_name["paper_mixing"].router_  # the paper's Eq. 5: a fit of its own, no cross-validation
    assert paper is not fitted and paper.mixing_.method == "fixed" and paper.stage1_shrinkage is False
    np.testing.assert_allclose(by_name["paper_mixing"].predict_scores(x_test), paper.score_embeddings(x_test).final)
    with_neighbours = by_name["with_neighbours"].router_  # a fit of its own, the neighbour source offered
    assert with_neighbours is not fitted and with_neighbours.neighbours is True and fitted.neighbours == "auto"
    assert (with_neighbours.neighbour_embeddings_ is not None) == with_neighbours.mixing_.uses_neighbours
    with_stacking = by_name["with_stacking"].router_  # a fit of its own, the stacked mix as the default candidate
    assert with_stacking is not fitted and with_stacking.stacking is True and fitted.stacking is False
    assert "stack:stage2+stage1" in with_stacking.mixing_.oof_quality
    np.testing.assert_allclose(by_name["with_stacking"].predict_scores(x_test),
                               with_stacking.score_embeddings(x_test).final)
    pruning = by_name["with_pruning"].router_  # a fit of its own, Stage 2 pruned; the other quality settings kept
    assert pruning is not fitted and pruning.quality == {**small["quality"], "prune_coverage": 0.8}
    assert fitted.quality_.prune_coverage is None and fitted.fit_summary_["stage2_pruned"] == []
    np.testing.assert_allclose(by_name["with_pruning"].predict_scores(x_test), pruning.score_embeddings(x_test).final)
    ensemble = by_name["with_ensemble"].router_  # a fit of its own: three seeds
    assert ensemble is not fitted and [m.seed for m in ensemble.members_] == [1, 2]
    assert ensemble.settings_["stage1_assignment"] == "hard"
    np.testing.assert_allclose(by_name["with_ensemble"].predict_scores(x_test), ensemble.score_embeddings(x_test).final)
    soft = by_name["soft_prior"].router_
    assert soft is not fitted and soft.stage1_assignment == "soft" and soft.members_ == []
    assert fitted.stage1_assignment == "auto" and fitted.settings_["stage1_assignment"] == "cv"  # small data
    assert fitted.settings_["ensemble_size"] == 3 and len(fitted.members_) == 2
    single = by_name["single_fit"].router_  # the default before the small-data settings: one fit, hard assignment
    assert single.settings_["ensemble_size"] == 1 and single.settings_["stage1_assignment"] == "hard"
    assert single.members_ == [] and paper.members_ == []
    np.testing.assert_allclose(by_name["single_fit"].predict_scores(x_test), single.score_embeddings(x_test).final)
    np.testing.assert_allclose(by_name["soft_prior"].predict_scores(x_test), soft.score_embeddings(x_test).final)
    both = by_name["soft_ensemble"].router_
    assert both.stage1_assignment == "soft" and all(m.stage1_assignment == "soft" for m in both.members_)
    assert by_name["finerouter"].kind == "finerouter" and by_name["stage2_only"].kind == "ablation"
    scores = fitted.score_embeddings(x_test)
    np.testing.assert_allclose(by_name["finerouter"].predict_scores(x_test), scores.final)
    np.testing.assert_allclose(by_name["stage2_only"].predict_scores(x_test), scores.stage2)
    # expected scores for cost-aware routing: the full router's calibrated ones; none for the stage ablations
    np.testing.assert_allclose(by_name["finerouter"].predict_expected(x_test), scores.expected)
    assert by_name["stage2_only"].predict_expected(x_test) is None
    assert by_name["stage1_classifier"].predict_expected(x_test) is None
    catalog = fitted.catalog_
    top = np.array([train.models.index(t.fused_ranking[0]) for t in catalog.tasks])
    fine = by_name["stage1_classifier"].route(x_test)
    assigned = scores.task >= 0
    assert (fine[assigned] == top[scores.task[assigned]]).all()  # Fine CLS: the task's top candidate
    centers = catalog.centers() / np.linalg.norm(catalog.centers(), axis=1, keepdims=True)
    nearest = np.argmax(x_test @ centers.T, axis=1)
    emb_choice = by_name["stage1_embedding"].route(x_test)
    assert (emb_choice == top[nearest]).all()  # Embedding: the nearest centre's top candidate
    assert mean_quality(test.scores, emb_choice) > random_quality + 0.1
