"""`finerouter demo`: fit on built-in synthetic data, evaluate on its held-out part, and explain a few routes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from finerouter.cli._common import cli_errors, console


def _quality_cost(scores: np.ndarray, costs: np.ndarray | None, choice: np.ndarray) -> tuple[float, float]:
    """Mean true score (unscored picks count 0) and mean cost (NaN without costs) of ``choice``."""
    rows = np.arange(len(choice))
    q = float(np.nanmean(np.nan_to_num(scores[rows, choice], nan=0.0)))
    c = float(np.nanmean(costs[rows, choice])) if costs is not None else float("nan")
    return q, c


def demo(
    n_prompts: int = typer.Option(1500, "--n-prompts", help="Synthetic prompts to generate."),
    seed: int = typer.Option(0, "--seed"),
    encoder: str | None = typer.Option(None, "--encoder", help="sentence-transformers model (default: packaged MiniLM)."),
    cache_dir: Path | None = typer.Option(Path(".finerouter_cache"), "--cache-dir"),
    out: Path | None = typer.Option(None, "--out", help="Also save the fitted router here (a new or empty folder, or a previous router artifact)."),
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not a previous router artifact (deletes what it holds)."),
) -> None:
    """Fit FineRouter on SYNTHETIC planted data, compare it with the best single model and the oracle on the
    held-out split, and route a few example prompts with their explanations."""
    from rich.table import Table

    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.policy import choose_models
    from finerouter.routing.router import FineRouter, check_save_destination

    err_console = console()
    with cli_errors():
        if out is not None:
            check_save_destination(out, force=force)  # before fitting: a refusal costs no fit
        data = make_synthetic_routing_data(n_prompts=n_prompts, seed=seed)
        train, test = data.split(test_size=0.2, seed=seed)
        err_console.print(f"[bold]synthetic data[/] (planted domains and sub-tasks): {data}; train {len(train)}, test {len(test)}")
        router = FineRouter(encoder=encoder, cache_dir=cache_dir, seed=seed)
        with err_console.status("fitting FineRouter..."):
            router.fit(train)
        summary = router.fit_summary_
        err_console.print(
            f"stage 1: {summary['n_tasks']} tasks discovered ({len(set(train.tasks or []))} coarse domains), "
            f"{summary['share_in_tasks']:.0%} of training prompts in a task, {summary['mean_candidates']:.2f} candidates per task "
            f"of {summary['n_models']} models; fit {summary['seconds']['total']:.1f}s"
        )
        test_embeddings = router.encoder_.encode(test.prompts)
        scored = router.score_embeddings(test_embeddings)
        est_costs = router.estimate_costs(test.prompts)
        true_costs = test.costs
        table = Table(title="held-out synthetic prompts: mean quality and cost per prompt")
        for col in ("router", "quality", "cost / prompt", "headroom captured"):
            table.add_column(col, justify="right" if col != "router" else "left")
        best = train.best_single_model()
        n = len(test)
        q_best, c_best = _quality_cost(test.scores, true_costs, np.full(n, best))
        q_oracle = float(np.nanmean(test.oracle_scores()))
        oracle_choice = np.nanargmax(np.where(np.isfinite(test.scores), test.scores, -np.inf), axis=1)
        _, c_oracle = _quality_cost(test.scores, true_costs, oracle_choice)
        rows: list[tuple[str, float, float]] = []
        for tol in (0.0, 0.1, 0.2):
            choice, _ = choose_models(scored.final, est_costs, tol)
            rows.append((f"FineRouter (tolerance {tol:g})", *_quality_cost(test.scores, true_costs, choice)))
        rows.append((f"best single model ({train.models[best]})", q_best, c_best))
        rng = np.random.default_rng(seed)
        rows.append(("random", *_quality_cost(test.scores, true_costs, rng.integers(0, data.n_models, n))))
        rows.append(("oracle", q_oracle, c_oracle))
        span = q_oracle - q_best
        for name, q, c in rows:
            head = (q - q_best) / span if span > 0 else float("nan")
            table.add_row(name, f"{q:.3f}", f"${c:.6f}", f"{head:+.0%}")
        err_console.print(table)
        err_console.print("[bold]example routes[/] (tolerance 0):")
        picks = np.random.default_rng(seed + 1).choice(n, size=min(3, n), replace=False)
        for decision in router.route_embeddings(test_embeddings[picks], [test.prompts[i] for i in picks]):
            top = sorted(zip(decision.models, decision.final_scores), key=lambda x: -x[1])[:3]
            err_console.print(
                f"- [italic]{decision.prompt[:90]}[/]\n  -> [bold]{decision.model}[/]  task {decision.task_id} "
                f"({decision.task_description[:70]!r}, candidates {decision.task_candidates}, confidence "
                f"{decision.classifier_confidence:.2f}); top final scores "
                + ", ".join(f"{m} {v:.2f}" for m, v in top)
            )
        if out is not None:
            router.save(out, force=force)
            err_console.print(f"[green]saved router[/] to {out}")
