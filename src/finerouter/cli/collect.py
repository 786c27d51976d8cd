"""`finerouter collect`: send prompts to the models of an upstreams file and record the answers, resumably."""

from __future__ import annotations

from pathlib import Path

import typer

from finerouter.cli._common import RAY_HELP, cli_errors, console, ray_engine, split_list


def collect(
    prompts: Path = typer.Option(..., "--prompts", help="Prompts: JSONL, CSV or Parquet with a 'prompt' column (optional 'id', 'task', 'gold'), or a gateway request-log folder."),
    upstreams: Path = typer.Option(..., "--upstreams", help="The upstreams YAML file (the same one `finerouter serve` reads)."),
    out: Path = typer.Option(..., "--out", help="Answers folder (answers.jsonl); an existing one is resumed: finished pairs are never sent again."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated models to ask (default: every upstream)."),
    sample_models: int | None = typer.Option(None, "--sample-models", help="Ask only K models per prompt, drawn per prompt with --seed."),
    max_spend: float | None = typer.Option(None, "--max-spend", help="Stop sending once this much USD would be spent (earlier runs count)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Calls in flight per upstream."),
    prices: Path | None = typer.Option(None, "--prices", help="CSV model,input_usd_per_mtok,output_usd_per_mtok (costs and the estimate)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="max_tokens sent with each request."),
    temperature: float | None = typer.Option(None, "--temperature", help="temperature sent with each request."),
    max_retries: int = typer.Option(4, "--max-retries", help="Retries per call after errors (429 waits count apart)."),
    seed: int = typer.Option(0, "--seed"),
    yes: bool = typer.Option(True, "--yes/--confirm", help="--confirm asks before sending, after printing the estimate."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP + " --concurrency then holds across the cluster."),
) -> None:
    """Send each prompt to each model (or K sampled) and append answer, latency, usage and cost to --out."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from finerouter.collect.collect import Collector
    from finerouter.collect.prompts import read_prompts
    from finerouter.serving.config import load_gateway_config

    err = console()
    with cli_errors():
        config = load_gateway_config(upstreams)
        items = read_prompts(prompts)
        collector = Collector(
            config.upstreams, out, models=split_list(models), sample_models=sample_models, seed=seed, prices=prices,
            max_spend=max_spend, concurrency=concurrency, max_tokens=max_tokens, temperature=temperature,
            max_retries=max_retries, engine=ray_engine(ray),
        )
        pending, done = collector.plan(items)
        estimate, unpriced = collector.estimate_pairs(pending)
        spent = collector.spent_so_far()
        err.print(
            f"[bold]collect[/]: {len(items)} prompts x {len(collector.models)} models: {done + len(pending)} pairs, "
            f"{done} already answered, {len(pending)} to send"
        )
        note = f" (no price for {', '.join(unpriced)}: not counted)" if unpriced else ""
        cap = "" if max_spend is None else f"; cap {max_spend:.4f} USD, {spent:.4f} spent before"
        err.print(f"[bold]estimated cost[/]: {estimate:.4f} USD{note}{cap}")
        if not pending:
            err.print("[green]nothing to send[/]")
            return
        if not yes and not typer.confirm("send them?", err=True):
            raise typer.Exit(code=1)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[spent]}"), TimeRemainingColumn(), console=err) as bar:
            task = bar.add_task("answers", total=len(pending), spent="")

            def advance(record: dict) -> None:
                bar.update(task, advance=1, spent=f"{collector._spent:.4f} USD")

            collector.on_record = advance
            try:
                report = asyncio.run(collector.run(items, pending=pending))
            except KeyboardInterrupt:
                err.print(f"[yellow]interrupted[/]: the answers so far are in {out}; run the same command to resume")
                raise typer.Exit(code=130) from None
        err.print(
            f"[green]{report.stopped}[/]: {report.answered} answered, {report.failed} failed, spent "
            f"{report.spent_usd:.4f} USD this run, {report.remaining} pair(s) left, in {report.seconds:.1f}s -> "
            f"{out / 'answers.jsonl'}"
        )
        if report.stopped == "max_spend":
            err.print("[yellow]stopped at --max-spend[/]: raise it and run the same command to go on")
