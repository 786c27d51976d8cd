"""The evaluation harness: runner protocol and invariants, outputs (JSON, report, figures), and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter.baselines import ROUTERS
from finerouter.baselines.base import Router
from finerouter.data.dataset import RoutingDataset
from finerouter.errors import DataError, ParameterError
from finerouter.evaluation.metrics import normalised_curve_area
from finerouter.evaluation.report import render_report, write_outputs
from finerouter.evaluation.runner import clean_for_json, run_evaluation

FAST = ["oracle", "best_single", "random", "knn", "mlp_regressor", "coarse_task"]


def planted(n: int = 500, seed: int = 0, costs: bool = True) -> tuple[RoutingDataset, np.ndarray]:
    """4 clusters with best models pricey, mid, pricey, cheap (so the priciest model is the best single one);
    model j costs (j + 1) / 1000; tasks pair clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 12))
    cluster = rng.integers(0, 4, n)
    x = centers[cluster] / np.linalg.norm(centers[cluster], axis=1, keepdims=True) + 0.08 * rng.normal(size=(n, 12))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = np.full((n, 3), 0.3)
    p[np.arange(n), np.array([2, 1, 2, 0])[cluster]] = 0.9
    scores = (rng.random((n, 3)) < p).astype(float)
    scores[rng.random((n, 3)) < 0.02] = np.nan
    data = RoutingDataset(
        prompts=[f"prompt {i}" for i in range(n)],
        models=["cheap", "mid", "pricey"],
        scores=scores,
        costs=np.tile([0.001, 0.002, 0.003], (n, 1)) if costs else None,
        tasks=[f"task{c // 2}" for c in cluster],
        name="planted",
    )
    return data, x.astype(np.float32)


@pytest.fixture(scope="module")
def results():
    data, x = planted()
    return run_evaluation(data, x, routers=FAST, seeds=2, test_size=0.25, reference="knn")


def test_results_hold_every_router_and_the_reference_points(results):
    assert results["dataset"] == "planted" and results["seeds"] == [0, 1]
    assert list(results["routers"]) == FAST
    for rec in results["routers"].values():
        for key in ("quality_mean", "quality_std", "cost_mean", "per_task", "headroom_mean", "routing_distribution"):
            assert key in rec
        assert sum(rec["routing_distribution"].values()) == pytest.approx(1.0)
        assert rec["quality_mean"] == pytest.approx(np.mean(rec["per_seed"]["quality"]))
        assert rec["quality_std"] == pytest.approx(np.std(rec["per_seed"]["quality"], ddof=1))
    r = results["routers"]
    assert r["oracle"]["headroom_mean"] == pytest.approx(1.0)
    assert r["best_single"]["headroom_mean"] == pytest.approx(0.0)
    assert r["oracle"]["quality_mean"] == pytest.approx(results["oracle_quality_mean"])
    assert r["best_single"]["quality_mean"] == pytest.approx(results["best_single"]["quality_mean"])
    for name, rec in r.items():
        for q, q_oracle in zip(rec["per_seed"]["quality"], r["oracle"]["per_seed"]["quality"]):
            assert q <= q_oracle + 1e-12, name
    # planted structure: kNN closes most of the gap; the coarse label (2 clusters per task) less of it
    assert r["knn"]["headroom_mean"] > 0.6
    assert r["random"]["headroom_mean"] < r["coarse_task"]["headroom_mean"] < r["knn"]["headroom_mean"]
    assert r["oracle"]["uses_test_labels"] and r["coarse_task"]["uses_test_labels"]
    assert not r["knn"]["uses_test_labels"]


def test_single_models_and_per_task_quality(results):
    singles = results["single_models"]
    assert list(singles) == ["cheap", "mid", "pricey"]
    assert singles["pricey"]["cost_mean"] == pytest.approx(0.003)
    for rec in singles.values():
        assert set(rec["per_task"]) == {"task0", "task1"}
    per_task = results["routers"]["knn"]["per_task"]
    assert set(per_task) == {"task0", "task1"}
    assert results["routers"]["knn"]["per_task_macro_mean"] == pytest.approx(
        np.mean([v["mean"] for v in per_task.values()])
    )


def test_cost_quality_curves(results):
    r = results["routers"]
    assert "curve" not in r["oracle"] and "curve" not in r["random"]  # routers that only pick: points
    curve = r["knn"]["curve"]
    assert curve["tolerance"][0] == 0.0 and curve["tolerance"][-1] == 1.0 and len(curve["tolerance"]) == 21
    assert all(a >= b - 1e-12 for a, b in zip(curve["cost"], curve["cost"][1:]))  # more tolerance, never pricier
    assert curve["quality"][0] == pytest.approx(r["knn"]["quality_mean"])
    assert curve["cost"][-1] == pytest.approx(0.001)  # tolerance 1: the cheapest model everywhere
    assert 0.0 < r["knn"]["curve_area_mean"] <= max(curve["quality"]) + 1e-9
    axis = results["cost_axis"]
    assert (axis["low_mean"], axis["high_mean"]) == (pytest.approx(0.001), pytest.approx(0.003))
    area_of_mean_curve = normalised_curve_area(curve["cost"], curve["quality"], 0.001, 0.003)
    assert r["knn"]["curve_area_mean"] == pytest.approx(area_of_mean_curve, abs=0.05)
    frac = r["knn"]["cost_fraction_at_best_single_quality"]
    best_q, best_c = results["best_single"]["quality_mean"], results["best_single"]["cost_mean"]
    reach = [c for c, q in zip(curve["cost"], curve["quality"]) if q >= best_q - 1e-12]
    assert frac == pytest.approx(min(reach) / best_c)
    assert frac < 1.0  # kNN matches the best single model for less


def test_aiq_zero_router_and_quality_at_cost_fractions(results):
    from finerouter.evaluation import metrics

    r, singles = results["routers"], results["single_models"]
    zero = results["zero_router"]
    # the zero router is the hull of the single models; on the planted data 'mid' lies under the chord
    pts = [(singles[m]["cost_mean"], singles[m]["quality_mean"]) for m in results["models"]]
    assert zero["cost"] == metrics.nondecreasing_convex_hull(*zip(*pts))[0]
    assert zero["aiq_mean"] == pytest.approx(np.mean(zero["per_seed_aiq"]))
    for split, aiq in zip(results["splits"], zero["per_seed_aiq"]):
        assert 0.0 < aiq <= split["best_single_quality"] + 1e-12
    for name, rec in r.items():  # every router has an AIQ: on its curve, or on its one operating point
        assert rec["aiq_mean"] == pytest.approx(np.mean(rec["per_seed"]["aiq"])), name
        if "curve" in rec:
            for a, area in zip(rec["per_seed"]["aiq"], rec["per_seed"]["curve_area"]):
                assert a >= area - 1e-12, name  # the hull lies on or above the running-max curve
    # the best single model sits on the zero router's hull: its one point has the same quality at x = 1
    assert r["best_single"]["aiq_mean"] <= zero["aiq_mean"] + 1e-12
    assert r["knn"]["aiq_mean"] > zero["aiq_mean"]  # planted: kNN beats mixing single models
    # quality at half the best single model's ($0.003) cost: kNN's cheapest points qualify, pricey-only never
    best_c = results["best_single"]["cost_mean"]
    curve = r["knn"]["curve"]
    half = [q for c, q in zip(curve["cost"], curve["quality"]) if c <= 0.5 * best_c + 1e-15]
    assert r["knn"]["quality_at_50pct_best_single_cost"] == (max(half) if half else None)
    assert r["best_single"]["quality_at_50pct_best_single_cost"] is None
    assert r["best_single"]["quality_at_25pct_best_single_cost"] is None


def test_lambda_curve_for_knn_the_cost_aware_baseline(results):
    r = results["routers"]
    assert "lambda_curve" not in r["mlp_regressor"] and "lambda_curve" not in r["oracle"]  # no expected scores
    lam = r["knn"]["lambda_curve"]
    assert lam["budget_fraction"][0] == 0.0 and lam["budget_fraction"][-1] == 1.0 and len(lam["cost"]) == 21
    assert lam["cost"][0] == pytest.approx(0.001)  # the smallest budget: the cheapest model everywhere
    # the largest budget: the best raw neighbour mean, the same choice as tolerance 0 up to ties
    assert lam["quality"][-1] == pytest.approx(r["knn"]["quality_mean"], abs=0.02)
    assert all(a <= b + 1e-12 for a, b in zip(lam["cost"], lam["cost"][1:]))  # more budget, never cheaper
    for per_seed in lam["per_seed"]["cost_weight"]:
        assert per_seed[-1] == 0.0 and all(a >= b for a, b in zip(per_seed, per_seed[1:]))
    assert lam["aiq_mean"] == pytest.approx(np.mean(lam["per_seed"]["aiq"]))
    assert lam["aiq_mean"] > results["zero_router"]["aiq_mean"]


def test_lambda_curve_budgets_are_met_on_the_true_costs(results):
    from finerouter.evaluation.aggregate import budget_met

    met = results["routers"]["knn"]["lambda_curve"]["budget_met"]
    # every budget of both seeds is positive (the cheapest model costs $0.001); costs here are per model, so the
    # route-time estimates are the true costs and each batch lands at or just under its budget
    assert met["points"] == 2 * 21 and met["tolerance"] == 0.05
    assert 0.95 <= met["min_ratio"] <= met["max_ratio"] <= 1.0 + 1e-9
    assert met["within_share"] == 1.0 and met["over_share"] == 0.0
    # the summary over hand-made points: a ratio 6% over counts above, 4% under within, a zero budget not at all
    lams = [{"spend_ratio": [1.06, 0.96, None]}, {"spend_ratio": [1.0]}, {}]
    assert budget_met(lams) == {"points": 3, "tolerance": 0.05, "min_ratio": 0.96, "max_ratio": 1.06,
                                "within_share": pytest.approx(2 / 3), "over_share": pytest.approx(1 / 3)}
    assert budget_met([{}, {"spend_ratio": [None]}]) is None


def test_calibration_of_expected_scores_is_reported_for_routers_that_give_them(results):
    from finerouter.evaluation import metrics

    r = results["routers"]
    assert "calibration" not in r["mlp_regressor"] and "calibration" not in r["oracle"]  # no expected scores
    cal = r["knn"]["calibration"]
    assert len(cal["per_seed_ece"]) == 2 and cal["ece_mean"] == pytest.approx(np.mean(cal["per_seed_ece"]))
    assert 0.0 <= cal["ece_mean"] < 0.2  # neighbour means of 0/1 scores are roughly calibrated rates
    rel = cal["reliability"]
    assert len(rel["count"]) == 10 and sum(rel["count"]) > 0
    # pooled bins: the count-weighted ECE of the pooled diagram is at most the mean per-seed ECE plus pooling noise
    pooled = sum(c * abs(p - o) for p, o, c in zip(rel["predicted"], rel["observed"], rel["count"]) if c)
    assert pooled / sum(rel["count"]) <= cal["ece_mean"] + 0.05
    assert np.isnan(metrics.expected_calibration_error(np.array([0.3, 0.3]), np.array([np.nan, np.nan])))  # no pairs


def test_paired_comparison_against_the_reference(results):
    comp = results["comparisons"]
    assert comp["reference"] == "knn"
    assert set(comp["against"]) == set(FAST) - {"knn"}
    knn_q = results["routers"]["knn"]["per_seed"]["quality"]
    rnd_q = results["routers"]["random"]["per_seed"]["quality"]
    c = comp["against"]["random"]
    assert c["diff_mean"] == pytest.approx(np.mean(np.subtract(knn_q, rnd_q)))
    assert c["wins"] == 2 and c["n_seeds"] == 2


def test_results_are_strict_json(results):
    text = json.dumps(clean_for_json(results), allow_nan=False)
    knn = results["routers"]["knn"]
    assert json.loads(text)["routers"]["knn"]["quality_mean"] == pytest.approx(knn["quality_mean"])


class _Spy(Router):
    """Records which prompts it is fitted on and asked about."""

    name = "spy"
    calls: list[tuple[set[str], set[str]]] = []

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, train, embeddings):
        self._fit_common(train, embeddings)
        self.train_prompts = set(train.prompts)
        return self

    def predict_scores(self, embeddings, data=None):
        _Spy.calls.append((self.train_prompts, set(data.prompts)))
        return np.zeros((len(embeddings), len(self.models_)))


def test_routers_are_fitted_on_training_prompts_only(monkeypatch):
    data, x = planted(300)
    # duplicate prompt texts must stay on one side of every split
    prompts = list(data.prompts)
    prompts[1::10] = prompts[0::10][: len(prompts[1::10])]
    data = RoutingDataset(prompts, data.models, data.scores, data.costs, data.tasks, name="dups")
    monkeypatch.setitem(ROUTERS, "spy", lambda seed=0, encoder=None, prices=None, **kw: _Spy(seed=seed))
    _Spy.calls.clear()
    run_evaluation(data, x, routers=["spy"], seeds=3, test_size=0.2)
    assert len(_Spy.calls) == 3
    uniq = len(set(prompts))
    for train_prompts, test_prompts in _Spy.calls:
        assert not train_prompts & test_prompts
        assert train_prompts | test_prompts == set(prompts)
        assert len(test_prompts) == pytest.approx(0.2 * uniq, abs=3)
    assert _Spy.calls[0][1] != _Spy.calls[1][1]  # seeds give different splits


def test_without_costs_there_are_no_curves(tmp_path):
    data, x = planted(300, costs=False)
    res = run_evaluation(data, x, routers=["oracle", "best_single", "knn"], seeds=2)
    for rec in res["routers"].values():
        assert rec["cost_mean"] is None and "curve" not in rec
    assert res["comparisons"]["reference"] is None  # no finerouter here
    paths = write_outputs(res, tmp_path)
    assert "No costs known" in paths["report"].read_text()
    assert paths["cost_quality"].stat().st_size > 1000


def test_write_outputs_report_and_figures(results, tmp_path):
    import matplotlib.image as mpimg

    paths = write_outputs(results, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cost_quality.png", "reliability.png", "report.md", "results.json", "routing_distribution.png",
    ]
    saved = json.loads(paths["results"].read_text())
    assert {"finerouter", "best_single", "oracle"} - set(saved["routers"]) == {"finerouter"}  # not run here
    report = paths["report"].read_text()
    assert "## Table 1" in report and "## Table 2" in report and "Oracle (uses test scores)" in report
    assert "| cheap |" in report and "Coarse task label (given at test)" in report
    assert "Paired comparison" in report
    zero = saved["zero_router"]["aiq_mean"]
    assert f"Zero router (the convex hull of the single models, no prompt read): AIQ {zero:.3f}" in report
    knn = saved["routers"]["knn"]
    assert f"| kNN | {knn['aiq_mean']:.3f} ± {knn['aiq_std']:.3f} |" in report
    met = knn["lambda_curve"]["budget_met"]
    assert f"kNN {met['min_ratio']:.3f}–{met['max_ratio']:.3f}, 100% of 42 within ±5%, 0% above." in report
    assert render_report(saved) == report
    assert "## Calibration of expected scores" in report
    assert f"| kNN | {knn['calibration']['ece_mean']:.3f} ± {knn['calibration']['ece_std']:.3f} |" in report
    for key in ("cost_quality", "routing_distribution", "reliability"):
        img = mpimg.imread(paths[key])
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400


def test_runner_rejects_bad_arguments():
    data, x = planted(100)
    with pytest.raises(DataError, match="embeddings must have shape"):
        run_evaluation(data, x[:10], routers=["oracle"])
    with pytest.raises(ParameterError, match="Unknown router"):
        run_evaluation(data, x, routers=["oracle", "bogus"])
    with pytest.raises(ParameterError, match=r"The 'seeds' parameter of run_evaluation must be an int in \[1, inf\)"):
        run_evaluation(data, x, routers=["oracle"], seeds=0)
    with pytest.raises(ParameterError, match="test_size"):
        run_evaluation(data, x, routers=["oracle"], test_size=1.0)


# ---------------------------------------------------------------------------------------------- CLI


def _cli():
    import typer

    from finerouter.cli.evaluate import evaluate

    app = typer.Typer()
    app.command()(evaluate)
    return app


def test_cli_reports_bad_input_clearly(tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    res = runner.invoke(_cli(), ["--data", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error:" in res.output
    data, _ = planted(60)
    path = tmp_path / "d.parquet"
    data.write(path)
    res = runner.invoke(_cli(), ["--data", str(path), "--out", str(tmp_path / "o"), "--param", "knn=3"])
    assert res.exit_code == 2 and "ROUTER.NAME=VALUE" in res.output


def test_cli_out_keeps_the_users_files(tmp_path):
    """An --out that is a file, or a folder holding a file of an output's name not from an earlier run, is refused
    before any work (one line naming the path) and left as it was."""
    from typer.testing import CliRunner

    data, _ = planted(60)
    path = tmp_path / "d.parquet"
    data.write(path)
    file = tmp_path / "results"
    file.write_text("my file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my report")
    for out, named in ((file, "it is a file"), (mine, "'report.md'")):
        res = CliRunner().invoke(_cli(), ["--data", str(path), "--out", str(out), "--routers", "oracle", "--seeds", "1",
                                          "--cache-dir", str(tmp_path / "cache")])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: not written") and named in lines[0]
    assert file.read_text() == "my file" and (mine / "report.md").read_text() == "my report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet", "mine", "results"]


def test_evaluate_is_registered_in_the_main_cli():
    from finerouter.cli.main import app

    assert "evaluate" in [c.name for c in app.registered_commands]


@pytest.mark.slow
def test_cli_end_to_end_with_the_real_encoder_and_embedding_cache(tmp_path):
    from typer.testing import CliRunner

    from finerouter.data.synthetic import make_synthetic_routing_data

    data = make_synthetic_routing_data(n_prompts=240, n_domains=2, subtasks_per_domain=2, n_models=3, seed=0)
    path = tmp_path / "synthetic.parquet"
    data.write(path)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["--data", str(path), "--out", str(out), "--seeds", "2", "--test-size", "0.25", "--cache-dir", str(cache)]
    res = runner.invoke(_cli(), [*args, "--routers", "oracle,best_single,random,knn,coarse_task", "--param", "knn.k=5"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and "MiniLM" in saved["encoder"]
    assert [i["k"] for i in saved["routers"]["knn"]["per_seed"]["info"]] == [5, 5]
    assert saved["routers"]["knn"]["quality_mean"] > saved["routers"]["random"]["quality_mean"]
    shards = sorted(cache.rglob("shard-*.safetensors"))
    assert shards
    # adding a router reads the cached embeddings back: no new shard is written
    res = runner.invoke(_cli(), [*args, "--routers", "best_single,mlp_regressor"])
    assert res.exit_code == 0, res.output
    assert sorted(cache.rglob("shard-*.safetensors")) == shards
    assert list(json.loads((out / "results.json").read_text())["routers"]) == ["best_single", "mlp_regressor"]


def test_prices_cost_data_that_has_none(tmp_path):
    from finerouter.data.prices import Prices

    data, x = planted(200, costs=False)
    csv = tmp_path / "prices.csv"
    csv.write_text("model,input_usd_per_mtok,output_usd_per_mtok\ncheap,1,1\nmid,2,2\npricey,4,4\n")
    prices = Prices.read(csv)
    res = run_evaluation(data, x, routers=["best_single", "knn"], seeds=1, prices=csv)
    assert res["route_cost_model"] == "prices"
    singles = res["single_models"]
    expected = float(np.mean(prices.estimate_costs(data.prompts, data.models)[:, 2]))
    assert singles["pricey"]["cost_mean"] == pytest.approx(expected, rel=0.05)  # test prompts ~ all prompts
    assert singles["pricey"]["cost_mean"] == pytest.approx(4 * singles["cheap"]["cost_mean"])
    assert "curve" in res["routers"]["knn"]


def test_cli_lists_routers():
    from typer.testing import CliRunner

    res = CliRunner().invoke(_cli(), ["--list-routers"])
    assert res.exit_code == 0 and res.output.split() == list(ROUTERS)


class _LookupEncoder:
    """Encoder returning the planted vectors (FineRouter embeds task descriptions, i.e. training prompts)."""

    name = "planted-lookup"
    dim = 12

    def __init__(self, texts, vectors):
        self.table = dict(zip(texts, vectors))

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def test_finerouter_is_the_default_reference_and_its_variants_share_a_fit():
    data, x = planted(400)
    small = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 5, "epochs_task": 3}}
    res = run_evaluation(
        data, x, routers=["best_single", "oracle", "stage2_only", "finerouter"], seeds=1,
        encoder=_LookupEncoder(data.prompts, x), router_params={"finerouter": small, "stage2_only": small},
    )
    r = res["routers"]
    assert {"finerouter", "best_single", "oracle"} <= set(r)
    assert r["finerouter"]["kind"] == "finerouter" and r["stage2_only"]["kind"] == "ablation"
    assert r["finerouter"]["fit_seconds_mean"] == r["stage2_only"]["fit_seconds_mean"]  # one shared fit
    info = r["finerouter"]["per_seed"]["info"][0]
    assert info["n_tasks"] >= 1 and info["mixing"]["assignment"] in ("hard", "soft")
    assert len(info["fits"]) == 3 and info["fits"][0]["assignment"] == info["mixing"]["assignment"]  # small data
    assert res["comparisons"]["reference"] == "finerouter"
    assert set(res["comparisons"]["against"]) == {"best_single", "oracle", "stage2_only"}
    assert r["finerouter"]["quality_mean"] <= r["oracle"]["quality_mean"]
