"""Tests of the mixture-of-experts quality estimator (finerouter.quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter._io import load_arrays, save_arrays
from finerouter.errors import DataError, NotFittedError, ParameterError
from finerouter.quality import QualityEstimator

SMALL = {"model_dim": 8, "hidden": 16}


def planted(n: int = 600, d: int = 16, m: int = 5, k: int = 4, nan_share: float = 0.2, seed: int = 0):
    """Embeddings in ``k`` clusters; in cluster ``c`` model ``c % m`` is clearly best.

    Returns (embeddings (n, d), scores (n, m) with NaN, cluster (n,), candidates per cluster).
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cluster = rng.integers(0, k, n)
    emb = centers[cluster] + 0.15 * rng.standard_normal((n, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    base = np.full((k, m), 0.3)
    base[np.arange(k), np.arange(k) % m] = 0.9
    scores = np.clip(base[cluster] + 0.05 * rng.standard_normal((n, m)), 0, 1)
    scores[rng.random((n, m)) < nan_share] = np.nan
    candidates = [[c % m, (c + 1) % m] for c in range(k)]
    return emb.astype(np.float32), scores, cluster.astype(np.int64), candidates


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    obs = ~np.isnan(truth)
    return float(np.mean((pred[obs] - truth[obs]) ** 2))


@pytest.fixture(scope="module")
def fitted():
    emb, scores, cluster, cands = planted()
    labels = cluster.copy()
    labels[::5] = -1  # a share of Others prompts
    est = QualityEstimator(epochs_general=15, epochs_task=5, batch_size=64, seed=0, **SMALL)
    est.fit(emb[:500], scores[:500], labels[:500], cands)
    return est, emb, scores, labels, cands


def test_shapes_and_attributes(fitted):
    est, emb, scores, labels, cands = fitted
    pred = est.predict(emb[500:], labels[500:])
    assert pred.shape == (100, 5) and pred.dtype == np.float32
    assert est.predict_general(emb[:3]).shape == (3, 5)
    assert est.predict(emb[:3]).shape == (3, 5)  # no labels = Others
    assert est.slot_table_.shape == (4, 5)
    assert est.n_slots_ == sum(len(c) for c in cands)
    for t, cs in enumerate(cands):
        assert sorted(np.flatnonzero(est.slot_table_[t] >= 0).tolist()) == sorted(cs)
    assert 1 <= est.n_epochs_general_ <= 15 and est.n_epochs_general_ == len(est.history_general_)


def test_learns_planted_data_better_than_mean_predictor(fitted):
    est, emb, scores, labels, _ = fitted
    train, test = scores[:500], scores[500:]
    mean_pred = np.broadcast_to(np.nanmean(train, axis=0), test.shape)
    moe = mse(est.predict(emb[500:], labels[500:]), test)
    assert moe < 0.25 * mse(mean_pred, test)
    # and it ranks the planted best model first on most held-out prompts
    _, _, cluster, _ = planted()
    best = est.predict(emb[500:], labels[500:]).argmax(axis=1)
    assert np.mean(best == cluster[500:] % 5) > 0.9


def test_others_prompts_equal_general_and_non_candidates_use_general(fitted):
    est, emb, _, labels, cands = fitted
    x = emb[500:]
    general = est.predict_general(x)
    others = np.full(len(x), -1)
    assert np.array_equal(est.predict(x, others), general)
    lab = labels[500:]
    pred = est.predict(x, lab)
    for t, cs in enumerate(cands):
        rows = np.flatnonzero(lab == t)
        non = [j for j in range(5) if j not in cs]
        assert np.array_equal(pred[np.ix_(rows, non)], general[np.ix_(rows, non)])
    # the single-prompt fast path computes only the non-candidates' general adapters: same numbers
    for i in range(0, len(x), 7):
        one = est.predict(x[i : i + 1], lab[i : i + 1])
        np.testing.assert_allclose(one, pred[i : i + 1], rtol=0, atol=1e-6)
        if lab[i] >= 0:
            non = est.slot_table_[lab[i]] < 0
            np.testing.assert_allclose(one[0, non], general[i, non], rtol=0, atol=1e-6)
    # the task adapters were trained, so at least some candidate columns differ from the general ones
    task_rows = lab >= 0
    cand_mask = est.slot_table_[lab[task_rows]] >= 0
    assert np.abs(pred[task_rows][cand_mask] - general[task_rows][cand_mask]).max() > 1e-4


def test_single_task_and_many_task_paths_agree(fitted):
    est, emb, _, labels, _ = fitted
    x, lab = emb[500:], labels[500:]
    batch = est.predict(x, lab)  # many tasks at once: grouped units
    one_by_one = np.vstack([est.predict(x[i : i + 1], lab[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-5)


@pytest.mark.parametrize("few", [0, 99])  # 0: every task prompt takes the column-run path; 99: the fused one
def test_single_prompt_paths_agree_with_batch(fitted, monkeypatch, few):
    from finerouter.quality import inference

    est, emb, _, labels, _ = fitted
    x, lab = emb[500:], labels[500:]
    batch = est.predict(x, lab)
    monkeypatch.setattr(inference, "FEW_CANDIDATES", few)
    one_by_one = np.vstack([est.predict(x[i : i + 1], lab[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-5)


def test_phase2_changes_only_task_adapters():
    emb, scores, cluster, cands = planted(n=300, seed=1)
    kw = dict(epochs_general=5, batch_size=64, seed=3, **SMALL)
    before = QualityEstimator(epochs_task=0, **kw).fit(emb, scores, cluster, cands)
    after = QualityEstimator(epochs_task=5, **kw).fit(emb, scores, cluster, cands)
    _, a0 = before.to_state()
    _, a1 = after.to_state()
    for name in a0:
        if name.startswith(("general_", "model_")):
            assert np.array_equal(a0[name], a1[name]), name
    assert not np.array_equal(a0["task_w1_prompt"], a1["task_w1_prompt"])
    assert after.n_epochs_task_ >= 1 and before.n_epochs_task_ == 0
    # untrained task adapters are copies of the general adapters: same predictions
    np.testing.assert_allclose(before.predict(emb, cluster), before.predict_general(emb), atol=1e-5)


def test_task_adapters_add_capacity_where_general_adapters_cannot():
    """Per-cluster functions of different directions: tiny general adapters cannot fit all, task adapters can."""
    rng = np.random.default_rng(5)
    n, d, m, k = 1600, 8, 3, 4
    centers = np.eye(d)[:k] * 2.0
    cluster = rng.integers(0, k, n)
    emb = centers[cluster] + rng.standard_normal((n, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    directions = rng.standard_normal((k, m, d))
    scores = 0.5 + 0.4 * np.tanh(3 * np.einsum("nd,nmd->nm", emb, directions[cluster]))
    cands = [list(range(m))] * k
    est = QualityEstimator(model_dim=4, hidden=2, epochs_general=30, epochs_task=30, lr=1e-2, batch_size=128, seed=0)
    est.fit(emb[:1200], scores[:1200], cluster[:1200], cands)
    test = scores[1200:]
    moe = mse(est.predict(emb[1200:], cluster[1200:]), test)
    general = mse(est.predict_general(emb[1200:]), test)
    assert moe < 0.7 * general
    assert est.tasks_specialised_ >= 3


def test_nan_targets_give_no_gradient():
    """A model column that is entirely NaN: its general adapter and embedding stay exactly at initialisation."""
    emb, scores, cluster, _ = planted(n=300, nan_share=0.0, seed=2)
    scores[:, 2] = np.nan
    kw = dict(batch_size=64, weight_decay=0.0, epochs_task=0, seed=4, **SMALL)
    init = QualityEstimator(epochs_general=0, **kw).fit(emb, scores)
    trained = QualityEstimator(epochs_general=6, **kw).fit(emb, scores)
    _, a0 = init.to_state()
    _, a1 = trained.to_state()
    for name in ("model_embeddings", "general_w1_prompt", "general_w1_model", "general_b1", "general_w2", "general_b2"):
        assert np.array_equal(a0[name][2], a1[name][2]), name
        assert not np.array_equal(a0[name][0], a1[name][0]), name
    assert np.all(np.isfinite(trained.predict_general(emb)))


def test_partially_observed_column_is_learned_from_observed_entries_only():
    emb, scores, cluster, _ = planted(n=600, nan_share=0.0, seed=3)
    rng = np.random.default_rng(0)
    seen = rng.random(600) < 0.3
    scores[:, 4] = np.where(seen, 0.9, np.nan)  # the hidden values would have been ~0.3: NaN must not read as 0
    est = QualityEstimator(epochs_general=10, epochs_task=0, batch_size=64, **SMALL).fit(emb, scores)
    pred = est.predict_general(emb)[:, 4]
    assert np.all(np.abs(pred - 0.9) < 0.1)


def test_state_round_trip_is_exact(tmp_path, fitted):
    est, emb, _, labels, _ = fitted
    config, arrays = est.to_state()
    text = json.dumps(config, allow_nan=False)
    save_arrays(tmp_path / "q.safetensors", arrays)
    back = QualityEstimator.from_state(json.loads(text), load_arrays(tmp_path / "q.safetensors"))
    assert np.array_equal(back.predict(emb, labels), est.predict(emb, labels))
    assert np.array_equal(back.predict_general(emb), est.predict_general(emb))
    assert back.candidates_ == est.candidates_ and back.get_params() == est.get_params()


def test_deterministic_given_seed():
    emb, scores, cluster, cands = planted(n=200, seed=4)
    kw = dict(epochs_general=3, epochs_task=2, batch_size=32, seed=7, **SMALL)
    a = QualityEstimator(**kw).fit(emb, scores, cluster, cands)
    b = QualityEstimator(**kw).fit(emb, scores, cluster, cands)
    assert np.array_equal(a.predict(emb, cluster), b.predict(emb, cluster))


def test_no_tasks_and_empty_candidates():
    emb, scores, cluster, _ = planted(n=200, seed=5)
    est = QualityEstimator(epochs_general=2, batch_size=64, **SMALL).fit(emb, scores)
    assert est.n_tasks_ == 0 and est.n_slots_ == 0
    assert np.array_equal(est.predict(emb, np.full(200, -1)), est.predict_general(emb))
    cands = [[], [1], [], [0, 2]]
    est = QualityEstimator(epochs_general=2, epochs_task=2, batch_size=64, **SMALL).fit(emb, scores, cluster, cands)
    general = est.predict_general(emb)
    pred = est.predict(emb, cluster)
    empty = np.isin(cluster, [0, 2])
    assert np.array_equal(pred[empty], general[empty])


def test_default_sizes_train_quickly():
    """The default widths (512/512) on a few hundred prompts: a smoke test of the real configuration."""
    emb, scores, cluster, cands = planted(n=400, d=384, m=11, seed=6)
    est = QualityEstimator(epochs_general=2, epochs_task=2).fit(emb, scores, cluster, cands)
    assert est.predict(emb[:1], cluster[:1]).shape == (1, 11)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": 0}, "The 'hidden' parameter of QualityEstimator must be an int in [1, inf). Got 0."),
        ({"model_dim": 2.5}, "The 'model_dim' parameter of QualityEstimator must be an int in [1, inf). Got 2.5."),
        ({"lr": 0.0}, "The 'lr' parameter of QualityEstimator must be a float in (0, inf). Got 0.0."),
        ({"epochs_task": -1}, "The 'epochs_task' parameter of QualityEstimator must be an int in [0, inf). Got -1."),
        ({"dev_fraction": 1.0}, "The 'dev_fraction' parameter of QualityEstimator must be a float in [0, 1). Got 1.0."),
        ({"patience": 0}, "The 'patience' parameter of QualityEstimator must be an int in [1, inf). Got 0."),
    ],
)
def test_parameter_validation(kwargs, message):
    emb, scores, _, _ = planted(n=50)
    with pytest.raises(ParameterError) as info:
        QualityEstimator(**kwargs).fit(emb, scores)
    assert str(info.value) == message


def test_bad_inputs_raise_clear_errors():
    emb, scores, cluster, cands = planted(n=60)
    est = QualityEstimator(epochs_general=1, epochs_task=1, **SMALL)
    with pytest.raises(NotFittedError):
        est.predict(emb)
    with pytest.raises(DataError, match="'scores' must have 60 rows"):
        est.fit(emb, scores[:10])
    with pytest.raises(DataError, match=r"candidates\[1\]' holds 9"):
        est.fit(emb, scores, cluster, [[0], [9], [1], [2]])
    with pytest.raises(DataError, match=r"'task_labels' must hold task ids in \[-1, 1\]"):
        est.fit(emb, scores, cluster, [[0], [1]])
    with pytest.raises(DataError, match="every entry is NaN"):
        est.fit(emb, np.full_like(scores, np.nan))
    bad = emb.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="row 3, column 2"):
        est.fit(bad, scores)
    est.fit(emb, scores, cluster, cands)
    with pytest.raises(DataError, match="must have 16 columns"):
        est.predict(emb[:, :5])
    with pytest.raises(DataError, match="task_labels"):
        est.predict(emb, np.full(60, 7))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="CUDA is not available"):
            QualityEstimator(device="cuda:0", epochs_general=1, **SMALL).fit(emb, scores)


@pytest.mark.parametrize("fused", [True, False])
def test_lazy_adam_matches_torch_adam_on_touched_rows_only(fused):
    import torch

    from finerouter.quality.training import LazyRowAdam

    gen = torch.Generator().manual_seed(0)
    # rows of 4096 floats take the fused-kernel path (when enabled), the small rows the vectorised one
    base = [torch.randn(6, 64, 64, generator=gen), torch.randn(6, 7, generator=gen), torch.randn(6, generator=gen)]
    params = [b.clone() for b in base]
    lazy = LazyRowAdam(params, lr=1e-2, weight_decay=1e-3, fused=fused)
    ref = [b[[1, 3]].clone().requires_grad_() for b in base]
    adam = torch.optim.Adam(ref, lr=1e-2, weight_decay=1e-3)
    for _ in range(5):
        grads = [torch.randn(2, *b.shape[1:], generator=gen) for b in base]
        lazy.step(torch.tensor([1, 3]), [g.clone() for g in grads])
        for r, g in zip(ref, grads, strict=True):
            r.grad = g.clone()
        adam.step()
    for p, r, b in zip(params, ref, base, strict=True):
        torch.testing.assert_close(p[[1, 3]], r.detach(), rtol=0, atol=1e-6)
        assert torch.equal(p[[0, 2, 4, 5]], b[[0, 2, 4, 5]])  # rows outside the step never move
    assert lazy.steps.tolist() == [0, 5, 0, 5, 0, 0]


def test_single_thread_blas_only_when_busy_and_restores(monkeypatch):
    from threadpoolctl import threadpool_info

    from finerouter import _training

    def blas_threads() -> list[int]:
        # The limit is process-wide: wait until no other thread (a gateway's routing thread left by an earlier
        # test, say) is inside a limiting block, so that "restored" is read outside every block.
        # The depth check and the read happen under the blocks' own lock, so no thread enters or leaves a block
        # between them (on a loaded machine a routing thread can, between an unlocked check and the read).
        import time

        deadline = time.monotonic() + 30.0
        while True:
            with _training._BLAS_LOCK:
                if _training._BLAS_STATE["depth"] <= own_depth[0] or time.monotonic() > deadline:
                    # numpy's own BLAS: the one inference multiplies with (scipy ships another, which may be
                    # loaded only after the first limiting block; the contract is about numpy's)
                    return [i["num_threads"] for i in threadpool_info()
                            if i["user_api"] == "blas" and "numpy" in i["filepath"]]
            time.sleep(0.01)

    own_depth = [0]

    before = blas_threads()
    assert before, "threadpoolctl did not find numpy's BLAS"
    monkeypatch.setitem(_training._LOAD_STATE, "checked", float("inf"))  # freeze the load reading
    monkeypatch.setitem(_training._LOAD_STATE, "busy", True)
    with _training.single_thread_blas():
        own_depth[0] = 1
        with _training.single_thread_blas():  # nested: still one thread
            own_depth[0] = 2
            assert set(blas_threads()) <= {1}
        own_depth[0] = 1
        assert set(blas_threads()) <= {1}
    own_depth[0] = 0
    assert blas_threads() == before
    monkeypatch.setitem(_training._LOAD_STATE, "busy", False)
    with _training.single_thread_blas():
        assert blas_threads() == before
    with _training.single_thread_blas(force=True):  # the router's small batches: one thread whatever the load
        own_depth[0] = 1
        assert set(blas_threads()) <= {1}
    own_depth[0] = 0
    assert blas_threads() == before
    with _training.single_thread_blas(_training.SMALL_BATCH + 1, force=True):  # a large batch keeps its threads
        assert blas_threads() == before


def test_seed_none_is_seed_zero_bit_for_bit():
    emb, scores, cluster, cands = planted(n=200, seed=8)
    kw = dict(epochs_general=3, epochs_task=2, batch_size=32, **SMALL)
    default = QualityEstimator(**kw).fit(emb, scores, cluster, cands)
    zero = QualityEstimator(seed=0, **kw).fit(emb, scores, cluster, cands)
    assert default.seed is None
    assert np.array_equal(default.predict(emb, cluster), zero.predict(emb, cluster))
    assert default.history_general_ == zero.history_general_ and default.history_task_ == zero.history_task_


def test_save_and_load_a_folder(tmp_path, fitted):
    from finerouter.errors import ArtifactError

    est, emb, _, labels, _ = fitted
    folder = est.save(tmp_path / "quality")
    back = QualityEstimator.load(folder)
    assert isinstance(back, QualityEstimator) and back.get_params() == est.get_params()
    assert np.array_equal(back.predict(emb, labels), est.predict(emb, labels))
    assert np.array_equal(back._predict(emb, labels), est._predict(emb, labels))  # the router's entry point
    assert back.candidates_ == est.candidates_ and back.history_task_ == est.history_task_
    (folder / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(ArtifactError, match="config.json"):
        QualityEstimator.load(folder)
    with pytest.raises(NotFittedError):
        QualityEstimator().save(tmp_path / "unfitted")


def test_early_stopping_keeps_the_best_phase_1_epoch():
    """A large learning rate overfits the dev rows quickly: phase 1 stops `patience` epochs after its best and
    keeps the best epoch's weights (its dev MSE is the best in the history)."""
    emb, scores, _, _ = planted(n=300, seed=9)
    est = QualityEstimator(epochs_general=200, epochs_task=0, lr=5e-2, patience=2, batch_size=32, seed=1, **SMALL)
    est.fit(emb, scores)
    dev = [h["dev_mse"] for h in est.history_general_]
    assert est.n_epochs_general_ == len(dev) < 200
    best_epoch = int(np.argmin(dev)) + 1
    assert est.n_epochs_general_ - best_epoch == 2
    assert est.dev_mse_general_ == min(dev)


def test_phase_one_can_early_stop_on_dev_routing_quality():
    """``stop_on="routing"`` keeps the phase-1 epoch whose top-ranked model scores best on the dev rows; epoch 0
    (the per-model mean predictor, which routes like the best single model) stays unless an epoch beats it."""
    from finerouter._training import stratified_dev_split

    emb, scores, cluster, cands = planted()
    est = QualityEstimator(epochs_general=12, epochs_task=0, batch_size=64, seed=0, stop_on="routing", **SMALL)
    est.fit(emb[:500], scores[:500], cluster[:500], cands)
    history = est.history_general_
    assert all("dev_routing_quality" in h for h in history)
    _, dev = stratified_dev_split(cluster[:500], 0.1, 0)
    y, obs = scores[dev], ~np.isnan(scores[dev])
    keep = obs.any(axis=1)
    routed = lambda pred: float(np.mean(y[keep][np.arange(keep.sum()), np.where(obs, pred, -np.inf)[keep].argmax(1)]))
    kept = routed(est.predict_general(emb[:500][dev]))
    best_epoch = max(history, key=lambda h: h["dev_routing_quality"])
    assert kept == pytest.approx(best_epoch["dev_routing_quality"], abs=1e-6)  # the best epoch's weights are kept
    assert kept > routed(np.broadcast_to(np.nanmean(scores[:500], axis=0), y.shape))  # and it beat the mean predictor
    assert np.mean(est.predict(emb[500:], cluster[500:]).argmax(axis=1) == cluster[500:] % 5) > 0.9
    # on scores the embeddings say nothing about, no epoch routes the dev rows better than the per-model means
    rng = np.random.default_rng(3)
    flat = np.where(rng.random(scores.shape) < np.array([0.2, 0.3, 0.8, 0.4, 0.5]), 1.0, 0.0)[:500]
    noise = QualityEstimator(epochs_general=12, epochs_task=0, batch_size=64, seed=0, stop_on="routing", **SMALL)
    noise.fit(emb[:500], flat, cluster[:500], cands)
    assert np.all(noise.predict(emb[500:]).argmax(axis=1) == 2)  # the best single model, everywhere
    with pytest.raises(ParameterError, match="stop_on"):
        QualityEstimator(stop_on="loss").fit(emb[:50], scores[:50])


def test_phase_two_can_early_stop_each_task_on_its_dev_routing_quality():
    """With ``stop_on="routing"`` a task keeps trained adapters only where they route its dev prompts strictly
    better than the general copy; on planted tasks the estimator still learns them."""
    emb, scores, cluster, cands = planted(n=800)
    # phase 1 kept at the per-model means (no epoch): only the task adapters can learn each task's best model
    common = dict(epochs_general=0, epochs_task=10, batch_size=64, seed=0, **SMALL)
    est = QualityEstimator(stop_on="routing", **common).fit(emb[:700], scores[:700], cluster[:700], cands)
    assert all("dev_routing_quality_mean_over_tasks" in h for h in est.history_task_)
    by_mse = QualityEstimator(**common).fit(emb[:700], scores[:700], cluster[:700], cands)
    assert all("dev_mse_mean_over_tasks" in h for h in by_mse.history_task_)
    general_best = np.argmax(np.nanmean(scores[:700], axis=0))
    routed = lambda e: float(np.mean(e.predict(emb[700:], cluster[700:]).argmax(1) == cluster[700:] % 5))
    assert est.tasks_specialised_ >= 3  # the tasks whose best model is not the overall best gained routing
    assert routed(est) > 0.9 and routed(by_mse) > 0.9
    assert np.mean(cluster[700:] % 5 == general_best) < 0.5  # the copies alone would route most prompts wrongly
    # a task whose adapters never route better than the general copy keeps the copy: columns equal to general
    frozen = QualityEstimator(stop_on="routing", **{**common, "epochs_general": 15})
    frozen.fit(emb[:700], scores[:700], cluster[:700], cands)
    kept = frozen.predict(emb[700:], cluster[700:])
    general = frozen.predict_general(emb[700:])
    same = [np.allclose(kept[cluster[700:] == t], general[cluster[700:] == t], atol=1e-5) for t in range(4)]
    assert sum(same) == 4 - frozen.tasks_specialised_
