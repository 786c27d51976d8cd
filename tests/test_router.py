"""The FineRouter facade: fit, route, tolerance policy, save/load, tampering, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter import FineRouter, RoutingDecision
from finerouter.errors import ArtifactError, NotFittedError, ParameterError

FAST = {"classifier": {"epochs": 15}, "quality": {"epochs_general": 8, "epochs_task": 5}}


@pytest.fixture(scope="module")
def synthetic_split():
    from finerouter.data.synthetic import make_synthetic_routing_data

    data = make_synthetic_routing_data(n_prompts=600, seed=3)
    return data.split(test_size=0.25, seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic_split, cached_minilm):
    train, _ = synthetic_split
    return FineRouter(encoder=cached_minilm, seed=0, **FAST).fit(train)


def test_route_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        FineRouter().route("hello")


def test_bad_alpha_is_a_clear_parameter_error(synthetic_split):
    with pytest.raises(ParameterError, match=r"The 'alpha' parameter of FineRouter must be a float in \[0, 1\]"):
        FineRouter(alpha=1.5).fit(synthetic_split[0])


def test_bad_stage1_statistic_is_a_clear_parameter_error(synthetic_split):
    with pytest.raises(ParameterError, match="stage1_statistic"):
        FineRouter(stage1_statistic="mode").fit(synthetic_split[0])


def test_stage1_prior_is_each_tasks_shrunk_mean_and_every_prompt_gets_a_task(fitted, synthetic_split):
    train, test = synthetic_split
    labels = fitted.discovery_labels_
    overall = np.nanmean(train.scores, axis=0)
    for t in range(fitted.catalog_.n_tasks):
        mean = np.nanmean(train.scores[labels == t], axis=0)
        # Shrunk toward the overall mean: between the two, never beyond either.
        lo, hi = np.minimum(mean, overall), np.maximum(mean, overall)
        assert np.all(fitted.stage1_[t] >= lo - 1e-12) and np.all(fitted.stage1_[t] <= hi + 1e-12)
    # The router's classifier threshold defaults to 0: held-out prompts all get their most likely task.
    scores = fitted.score_embeddings(fitted.encoder_.encode(test.prompts[:50]))
    assert fitted.classifier_.threshold == 0.0 and (scores.task >= 0).all()


@pytest.mark.slow  # several real fits (each with internal cross-validation)
def test_refining_the_task_labels_is_chosen_on_a_dev_part(fitted, synthetic_split, cached_minilm):
    train, _ = synthetic_split
    choice = fitted.fit_summary_["task_label_choice"]
    assert fitted.refine_task_labels == "auto" and choice["mode"] == "auto"
    dev = choice["dev_quality"]
    assert set(dev) == {"label_free", "refined"} and all(0.0 <= q <= 1.0 for q in dev.values())
    assert fitted.fit_summary_["refined_task_labels"] is (dev["refined"] > dev["label_free"])
    # labels that say nothing (random, ~8 prompts each): their remainders are random mixes, so refining
    # routes the dev part worse and "auto" keeps the label-free discovery
    rng = np.random.default_rng(0)
    noisy = type(train)(prompts=train.prompts, models=train.models, scores=train.scores,
                        tasks=[f"label-{i}" for i in rng.integers(0, 56, train.n_prompts)])
    router = FineRouter(encoder=cached_minilm, seed=0, **FAST).fit(noisy)
    dev = router.fit_summary_["task_label_choice"]["dev_quality"]
    assert dev["refined"] < dev["label_free"] and router.fit_summary_["refined_task_labels"] is False


@pytest.mark.slow  # several real fits (each with internal cross-validation)
def test_refined_tasks_never_span_two_labels(synthetic_split, cached_minilm):
    train, _ = synthetic_split
    router = FineRouter(encoder=cached_minilm, seed=0, refine_task_labels=True, **FAST).fit(train)
    assert router.fit_summary_["refined_task_labels"] is True
    assert "dev_quality" not in router.fit_summary_["task_label_choice"]  # no choice to make
    labels, domains = router.discovery_labels_, np.asarray(train.tasks)
    for t in range(router.catalog_.n_tasks):
        assert len(set(domains[labels == t])) == 1
    unlabelled = type(train)(prompts=train.prompts, models=train.models, scores=train.scores, tasks=None)
    router = FineRouter(encoder=cached_minilm, seed=0, refine_task_labels=True, **FAST).fit(unlabelled)
    assert router.fit_summary_["refined_task_labels"] is False  # nothing to refine: the paper's discovery
    with pytest.raises(ParameterError, match="'refine_task_labels' parameter of FineRouter must be a bool or one of {'auto'}"):
        FineRouter(refine_task_labels="yes").fit(train)


def test_stage1_mean_falls_back_to_the_models_overall_mean():
    from finerouter.routing.fitting import stage1_matrix as _stage1_matrix

    class _Catalog:
        n_tasks = 2

    nan = np.nan
    scores = np.array([[1.0, nan, nan], [0.0, nan, nan], [1.0, 0.5, nan], [0.0, 1.0, nan], [1.0, 0.0, nan]])
    labels = np.array([0, 0, 1, 1, -1])
    prior = _stage1_matrix(_Catalog(), scores, labels, "mean")
    # task 0 never saw model 1: it gets model 1's mean over all prompts (0.5), not NaN (which ranks it last)
    np.testing.assert_allclose(prior[0, :2], [0.5, 0.5])
    np.testing.assert_allclose(prior[1, :2], [0.5, 0.75])
    np.testing.assert_allclose(prior[2, :2], [1.0, 0.0])  # Others: its own prompts
    assert np.isnan(prior[:, 2]).all()  # a model never scored anywhere stays NaN


@pytest.mark.slow  # several real fits (each with internal cross-validation)
def test_stage1_median_is_the_papers_prior(synthetic_split, cached_minilm):
    train, _ = synthetic_split
    router = FineRouter(encoder=cached_minilm, seed=0, stage1_statistic="median", **FAST).fit(train)
    np.testing.assert_allclose(router.stage1_, router.catalog_.median_matrix())


def test_route_single_and_batch(fitted, synthetic_split):
    _, test = synthetic_split
    d = fitted.route(test.prompts[0])
    assert isinstance(d, RoutingDecision)
    assert d.model in fitted.models_ and d.ranking[0] == d.model
    assert sorted(d.ranking) == sorted(fitted.models_)
    assert len(d.final_scores) == len(fitted.models_)
    json.dumps(d.to_dict())  # JSON-serialisable
    if d.task_id is not None:
        assert d.task_candidates == fitted.catalog_.tasks[d.task_id].candidates
    batch = fitted.route(test.prompts[:5])
    assert [b.prompt for b in batch] == test.prompts[:5]
    assert batch[0].model == d.model


@pytest.mark.parametrize("n", [1, 3, 40])  # below and above the one-BLAS-thread batch size
def test_scores_are_the_components_combined(fitted, synthetic_split, n):
    """The routing hot path (components called past their checks) equals composing the public parts: each fit's
    classifier, estimator, task priors (soft or hard, as each fit's cross-validation chose) and mix, averaged over the
    fits of the default small-data ensemble."""
    from finerouter.routing.assignment import soft_stage1
    from finerouter.routing.ensemble import members_of
    from finerouter.routing.mixing import mix
    from finerouter.routing.neighbours import neighbour_means

    _, test = synthetic_split
    emb = fitted.encoder_.encode(test.prompts[:n])
    scores = fitted.score_embeddings(emb)
    fits = [fitted, *members_of(fitted)]
    assert len(fits) == fitted.settings_["ensemble_size"] == 3 and fitted.settings_["stage1_assignment"] == "cv"
    finals, stage2s = [], []
    for fit in fits:
        task, conf = fit.classifier_.predict(emb)
        stage2 = fit.quality_.predict(emb, task)
        rows = np.where(task >= 0, task, fit.catalog_.n_tasks)
        stage1 = soft_stage1(fit.classifier_, emb, fit.stage1_, fit.global_prior_) \
            if fit.mixing_.assignment == "soft" else fit.stage1_[rows]
        if fit is fitted:
            np.testing.assert_array_equal(scores.task, task)  # the task a decision names is the router's own
            np.testing.assert_allclose(scores.confidence, conf)
        neighbours = None
        if fit.neighbour_embeddings_ is not None:
            neighbours = neighbour_means(emb, fit.neighbour_embeddings_, fit.neighbour_scores_, fit.mixing_.neighbour_k)
        finals.append(mix(fit.mixing_.vector(), stage2, stage1, fit.global_prior_, neighbours))
        stage2s.append(stage2)
    np.testing.assert_allclose(scores.stage2, np.mean(stage2s, axis=0), atol=1e-6)
    np.testing.assert_allclose(scores.final, np.mean(finals, axis=0), atol=1e-9)
    decisions = fitted.route_embeddings(emb, test.prompts[:n])
    assert [d.model for d in decisions] == [fitted.models_[j] for j in scores.final.argmax(axis=1)]


def test_higher_tolerance_never_raises_expected_cost(fitted, synthetic_split):
    _, test = synthetic_split
    prev = np.inf
    for tol in (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0):
        cost = np.mean([d.cost for d in fitted.route(test.prompts[:60], tolerance=tol)])
        assert cost <= prev + 1e-15
        prev = cost
    cheapest = min(fitted.route(test.prompts[0], tolerance=1.0).costs)
    assert fitted.route(test.prompts[0], tolerance=1.0).cost == cheapest


def test_allowed_models_respected(fitted, synthetic_split):
    _, test = synthetic_split
    allowed = fitted.models_[2:4]
    for d in fitted.route(test.prompts[:20], allowed_models=allowed):
        assert d.model in allowed and set(d.ranking) == set(allowed)
    with pytest.raises(ParameterError, match="unknown model"):
        fitted.route("x", allowed_models=["no-such-model"])


def test_router_beats_best_single_on_planted_data(fitted, synthetic_split):
    train, test = synthetic_split
    emb = fitted.encoder_.encode(test.prompts)
    choice = np.argmax(fitted.score_embeddings(emb).final, axis=1)
    routed = test.scores[np.arange(len(test)), choice].mean()
    single = test.scores[:, train.best_single_model()].mean()
    assert routed > single


def test_save_load_identical_decisions(fitted, synthetic_split, tmp_path, cached_minilm):
    _, test = synthetic_split
    fitted.save(tmp_path / "r")
    assert (tmp_path / "r" / "manifest.json").is_file()
    loaded = FineRouter.load(tmp_path / "r", encoder=cached_minilm)
    assert loaded.stage1_statistic == fitted.stage1_statistic == "mean"
    assert loaded.refine_task_labels == fitted.refine_task_labels == "auto"
    for tol in (0.0, 0.3):
        a = [d.to_dict() for d in fitted.route(test.prompts[:30], tolerance=tol)]
        b = [d.to_dict() for d in loaded.route(test.prompts[:30], tolerance=tol)]
        assert a == b
    assert loaded.mixing_ == fitted.mixing_
    emb = fitted.encoder_.encode(test.prompts[:30])
    np.testing.assert_array_equal(loaded.score_embeddings(emb).expected, fitted.score_embeddings(emb).expected)
    assert not list(tmp_path.glob(".r.*")), "temporary directories left behind"


def test_mixing_is_chosen_by_cross_validation_and_expected_scores_are_calibrated(fitted, synthetic_split):
    _, test = synthetic_split
    summary = fitted.fit_summary_["mixing"]
    assert summary["method"] in ("cv", "fallback") and summary["n_prompts"] == fitted.fit_summary_["n_prompts"]
    assert abs(sum(summary["weights"].values()) - 1.0) < 1e-12
    # the calibration is fitted on out-of-fold data; in-sample on it, it cannot be worse calibrated than the raw mix
    assert summary["calibration_error"]["calibrated"] <= summary["calibration_error"]["raw"] + 1e-9
    scores = fitted.score_embeddings(fitted.encoder_.encode(test.prompts[:80]))
    assert scores.expected.shape == scores.final.shape
    assert np.all((scores.expected >= 0) & (scores.expected <= 1))
    # calibrated estimates are on the score scale: their mean over prompts tracks the models' true means
    truth = np.nan_to_num(test.scores[:80])
    assert abs(scores.expected.mean() - truth.mean()) < 0.1


def test_tampered_or_missing_files_refused(fitted, tmp_path, cached_minilm):
    path = fitted.save(tmp_path / "r")
    target = path / "quality" / "arrays.safetensors"
    blob = bytearray(target.read_bytes())
    blob[-1] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="altered"):
        FineRouter.load(path, encoder=cached_minilm)
    path = fitted.save(tmp_path / "r2")
    (path / "quality" / "config.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        FineRouter.load(path, encoder=cached_minilm)
    with pytest.raises(ArtifactError, match="manifest"):
        FineRouter.load(tmp_path / "nowhere", encoder=cached_minilm)


def _load_error(path, encoder) -> str:
    with pytest.raises(ArtifactError) as info:
        FineRouter.load(path, encoder=encoder)
    return str(info.value)


def test_the_manifests_content_is_covered_by_the_integrity_check(fitted, tmp_path, cached_minilm):
    path = fitted.save(tmp_path / "r")
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    a, b = manifest["models"][:2]
    manifest["models"][:2] = [b, a]  # would silently swap every decision between the two models
    manifest_file.write_text(json.dumps(manifest, indent=2))
    error = _load_error(path, cached_minilm)
    assert "manifest.json" in error and "altered" in error
    manifest["models"][:2] = [a, b]
    manifest_file.write_text(json.dumps(manifest, indent=4))  # the content is checked, not the formatting
    FineRouter.load(path, encoder=cached_minilm)
    del manifest["manifest_sha256"]
    manifest_file.write_text(json.dumps(manifest))
    assert "manifest.json was altered" in _load_error(path, cached_minilm)


def test_added_or_unlisted_files_are_refused(fitted, tmp_path, cached_minilm):
    path = fitted.save(tmp_path / "r")
    (path / "discovery" / "catalog" / "extra.safetensors").write_bytes(b"\0" * 8)
    assert "discovery/catalog/extra.safetensors is not part of the artifact" in _load_error(path, cached_minilm)
    path = fitted.save(tmp_path / "r2")
    (path / "router.safetensors").unlink()
    assert "router.safetensors listed in the manifest is missing" in _load_error(path, cached_minilm)


def test_format_1_artifacts_load_with_a_warning(fitted, synthetic_split, tmp_path, cached_minilm):
    """Artifacts saved before the manifest carried its own digest still load, with a warning to re-save them."""
    _, test = synthetic_split
    path = fitted.save(tmp_path / "old")
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["manifest_sha256"]
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.warns(UserWarning, match="format 1.*save it again"):
        loaded = FineRouter.load(path, encoder=cached_minilm)
    assert [d.model for d in loaded.route(test.prompts[:10])] == [d.model for d in fitted.route(test.prompts[:10])]
    loaded.save(path)  # a format-1 artifact is a router artifact: re-saving replaces it, now checked
    assert json.loads((path / "manifest.json").read_text())["format_version"] == 3
    manifest["format_version"] = 4
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert "format version 4 is not supported" in _load_error(path, cached_minilm)


def _listing(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_save_replaces_only_a_previous_router_artifact(fitted, tmp_path, cached_minilm):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    file = tmp_path / "router.bin"
    file.write_text("my data")
    for target in (mine, file):
        with pytest.raises(ArtifactError, match="not replaced") as info:
            fitted.save(target)
        assert str(info.value).startswith(f"{target}: ") and "\n" not in str(info.value)
    assert (mine / "notes.txt").read_text() == "keep me" and file.read_text() == "my data"
    assert _listing(tmp_path) == ["mine", "mine/notes.txt", "router.bin"]  # nothing renamed aside or left over
    # a previous router artifact, and an empty folder, are replaced
    artifact = fitted.save(tmp_path / "r")
    fitted.save(artifact)
    (tmp_path / "empty").mkdir()
    fitted.save(tmp_path / "empty")
    FineRouter.load(tmp_path / "empty", encoder=cached_minilm)
    # an artifact folder the user added a file to is no longer only an artifact
    (artifact / "README.txt").write_text("my notes on this router")
    with pytest.raises(ArtifactError, match="README.txt"):
        fitted.save(artifact)
    assert (artifact / "README.txt").read_text() == "my notes on this router"
    # force replaces anything, leaving nothing aside
    fitted.save(mine, force=True)
    fitted.save(file, force=True)
    for target in (mine, file):
        FineRouter.load(target, encoder=cached_minilm)
    assert not (mine / "notes.txt").exists() and file.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "r", "router.bin"]


class _RotatedEncoder:
    """A genuinely different encoder of the same width: MiniLM followed by a fixed rotation."""

    def __init__(self, inner):
        self.inner = inner
        self.name = "rotated-minilm"
        self.dim = inner.dim
        q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(inner.dim, inner.dim)))
        self.q = q.astype(np.float32)

    def encode(self, texts):
        return self.inner.encode(texts) @ self.q


def test_different_encoder_refused_at_load(fitted, tmp_path, cached_minilm):
    path = fitted.save(tmp_path / "r")
    with pytest.raises(ArtifactError, match="encoder mismatch"):
        FineRouter.load(path, encoder=_RotatedEncoder(cached_minilm))


@pytest.mark.slow  # several real fits (each with internal cross-validation)
def test_cli_fit_and_route(tmp_path, synthetic_split, embedding_cache_dir):
    from typer.testing import CliRunner

    from finerouter.cli.main import app

    train, test = synthetic_split
    data = tmp_path / "train.parquet"
    train.write(data)
    runner = CliRunner()
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "old.txt").write_text("not a router")
    res = runner.invoke(
        app,
        ["fit", "--data", str(data), "--out", str(tmp_path / "router"), "--cache-dir", str(embedding_cache_dir), "--force"],
    )
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "router" / "old.txt").exists()  # --force: replaced whatever the folder held
    manifest = json.loads((tmp_path / "router" / "manifest.json").read_text())
    assert manifest["config"]["refine_task_labels"] == "auto"
    assert manifest["config"]["ensemble_size"] == "auto"
    assert manifest["fit_summary"]["settings"]["ensemble_size"] == 3  # small data
    said = " ".join(res.output.split())  # the console may wrap the line
    chosen = [m["assignment"] for m in manifest["fit_summary"]["ensemble"]["mixing"]]
    assert manifest["config"]["label_prior"] is True
    assert set(chosen) <= {"hard", "soft", "label"} and f"3 fit(s) averaged (stage-1 priors: {', '.join(chosen)})" in said
    assert ("refining the task labels" in res.output) is manifest["fit_summary"]["refined_task_labels"]
    others = 1.0 - manifest["fit_summary"]["share_in_tasks"]  # the structured data: most prompts in tasks
    assert others < 0.5 and "neighbour source" not in said
    res = runner.invoke(app, ["route", "--router", str(tmp_path / "router"), test.prompts[0]])
    assert res.exit_code == 0, res.output
    decision = json.loads(res.stdout)
    assert decision["model"] in train.models and "task_id" in decision
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in test.prompts[:7]))
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["route", "--router", str(tmp_path / "router"), "--input", str(inp), "--output", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == test.prompts[:7]
    assert all({"prompt", "model", "task_id"} <= set(r) for r in rows)
    res = runner.invoke(app, ["fit", "--data", str(data), "--out", str(tmp_path / "plain"), "--cache-dir",
                              str(embedding_cache_dir), "--task-labels", "ignore", "--ensemble-size", "1"])
    assert res.exit_code == 0, res.output  # ignore: the paper, no labels read anywhere (nor the label prior)
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert manifest["config"]["refine_task_labels"] is False and manifest["config"]["label_prior"] is False
    assert manifest["label_prior_labels"] is None
    res = runner.invoke(app, ["fit", "--data", str(data), "--out", str(tmp_path / "r2"), "--task-labels", "maybe"])
    assert res.exit_code == 2 and "--task-labels must be auto, refine or ignore" in res.output
    res = runner.invoke(app, ["fit", "--data", str(data), "--out", str(tmp_path / "r2"), "--ensemble-size", "0"])
    assert res.exit_code == 2 and "--ensemble-size must be auto or a positive integer" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    res = runner.invoke(app, ["route", "--router", str(tmp_path / "router"), "--input", str(bad), "--output", str(out)])
    assert res.exit_code == 2 and "line 2" in res.output


def test_cli_fit_and_demo_refuse_an_out_that_is_not_a_router_artifact(tmp_path, synthetic_split, embedding_cache_dir):
    from typer.testing import CliRunner

    from finerouter.cli.main import app

    data = tmp_path / "train.parquet"
    synthetic_split[0].write(data)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    file = tmp_path / "router.json"
    file.write_text("{}")
    for out in (mine, file):
        fit = ["fit", "--data", str(data)]
        demo = ["demo", "--n-prompts", "100"]
        for command in (fit, demo):
            res = CliRunner().invoke(app, [*command, "--out", str(out), "--cache-dir", str(embedding_cache_dir)])
            assert res.exit_code == 2, res.output
            lines = res.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {out}: not replaced") and "--force" in lines[0]
    assert (mine / "thesis.tex").read_text() == "years of work" and file.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "router.json", "train.parquet"]


def test_too_few_prompts_for_cross_validation_route_like_the_best_single_model(synthetic_split, cached_minilm):
    train, test = synthetic_split
    tiny = train.subset(list(range(12)))  # 3 folds of 4: every fold's rest is under 10 prompts
    router = FineRouter(encoder=cached_minilm, seed=0, **FAST).fit(tiny)
    assert router.mixing_.method == "fallback" and router.mixing_.weights["global"] == 1.0
    best = int(np.nanargmax(np.nanmean(tiny.scores, axis=0)))
    assert {d.model for d in router.route(test.prompts[:20])} == {router.models_[best]}


def test_a_table_with_holes_is_routed_and_its_choices_count_unscored_picks_on_the_score_scale(synthetic_split,
                                                                                               cached_minilm):
    # 3 scores kept per training prompt, drawn at random (as collect --sample-models 3 does): the fit's out-of-fold
    # qualities stay on the score scale (an unscored pick counted 0 had put them near 3/m of it), and the router
    # routes its complete test prompts at least as well as the best single model of the holed table
    from finerouter.evaluation.metrics import mean_quality

    train, test = synthetic_split
    rng = np.random.default_rng(0)
    holed = train.subset(np.arange(train.n_prompts))
    keep = np.zeros(holed.scores.shape, dtype=bool)
    for i in range(keep.shape[0]):
        keep[i, rng.choice(keep.shape[1], 3, replace=False)] = True
    holed.scores[~keep] = np.nan
    router = FineRouter(encoder=cached_minilm, seed=0, ensemble_size=1, **FAST).fit(holed)
    means = np.nanmean(holed.scores, axis=0)
    assert abs(router.mixing_.oof_quality["best_single"] - means.max()) < 0.1
    picks = router.route(test.prompts)
    routed = mean_quality(test.scores, np.array([test.models.index(d.model) for d in picks]))
    assert routed >= mean_quality(test.scores, np.full(test.n_prompts, int(np.argmax(means)))) - 0.005
