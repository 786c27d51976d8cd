"""`finerouter judge`: score collected answers with an LLM judge (or gold answers) into a routing table."""

from __future__ import annotations

from pathlib import Path

import typer

from finerouter.cli._common import RAY_HELP, cli_errors, console, ray_engine


def judge(
    answers: Path = typer.Option(..., "--answers", help="The answers folder `finerouter collect` wrote."),
    out: Path = typer.Option(..., "--out", help="The routing table to write (.parquet, .csv or .jsonl; wide layout: score::<model>, cost::<model>)."),
    mode: str = typer.Option("absolute", "--mode", help="absolute (1-10 rubric, [[N]]), pairwise (vs --reference-model, [[A]]/[[B]]/[[C]]) or reference (match the 'gold' column, no LLM)."),
    judge_url: str | None = typer.Option(None, "--judge-url", help="The judge's OpenAI-compatible base URL, e.g. http://127.0.0.1:9100/v1."),
    judge_model: str | None = typer.Option(None, "--judge-model", help="The judge's model id."),
    judge_key_env: str | None = typer.Option(None, "--judge-key-env", help="Environment variable holding the judge's API key."),
    reference_model: str | None = typer.Option(None, "--reference-model", help="pairwise: the model every answer is compared with."),
    concurrency: int = typer.Option(8, "--concurrency", help="Judge calls in flight."),
    parse_retries: int = typer.Option(2, "--parse-retries", help="Ask again this many times when a reply has no verdict."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP + " --concurrency then holds across the cluster."),
) -> None:
    """Judge every answer not judged yet (resumable), then write the scores and costs as a routing table."""
    import asyncio
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from finerouter.collect.client import Endpoint
    from finerouter.collect.judge import Judge, load_answers
    from finerouter.errors import ParameterError

    err = console()
    with cli_errors():
        endpoint = None
        if mode != "reference":
            if not judge_url or not judge_model:
                raise ParameterError(f"--judge-url and --judge-model are required with --mode {mode}")
            key = None
            if judge_key_env:
                key = os.environ.get(judge_key_env)
                if not key:
                    raise ParameterError(f"--judge-key-env: the environment variable {judge_key_env} is not set")
            endpoint = Endpoint.from_url(judge_url, judge_model, api_key=key)
        runner = Judge(answers, mode=mode, endpoint=endpoint, reference_model=reference_model,
                       concurrency=concurrency, parse_retries=parse_retries, engine=ray_engine(ray))
        total = len(load_answers(answers))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err) as bar:
            task = bar.add_task("judged", total=total)
            runner.on_record = lambda record: bar.update(task, advance=1)
            report = asyncio.run(runner.run())
        err.print(
            f"[bold]judge[/] ({mode}): {report.answers} answers, {report.already_judged} judged before, "
            f"{report.judged} now, {report.failed} failed calls (run again to retry), "
            f"{report.parse_retries} re-asked for a verdict"
        )
        if report.unparseable:
            err.print(
                f"[yellow]{report.unparseable} answer(s) left unscored[/]: the judge gave no verdict after "
                f"{parse_retries + 1} tries (their scores are missing in the table, not guessed)"
                + (f"; e.g. {report.unparseable_examples[0]!r}" if report.unparseable_examples else "")
            )
        if report.missing_reference:
            err.print(f"[yellow]{report.missing_reference} answer(s) not judged[/]: no {reference_model} answer to compare with")
        dataset = runner.table()
        dataset.write(out)
        err.print(f"[green]wrote[/] {out}: {dataset}")
