"""`finerouter route`: route one prompt, or a JSONL file of prompts, with a saved router."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from finerouter.cli._common import cli_errors, console, split_list
from finerouter.errors import DataError


def _read_prompts(path: Path) -> list[str]:
    """The ``prompt`` field of each non-blank line of a JSONL file; DataError naming the file and line."""
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
                raise DataError(f"{path}: line {lineno}: expected an object with a non-empty string 'prompt' field")
            prompts.append(obj["prompt"])
    if not prompts:
        raise DataError(f"{path}: no prompts found")
    return prompts


def route(
    text: str | None = typer.Argument(None, help="The prompt to route (omit with --input)."),
    router_dir: Path = typer.Option(..., "--router", help="Directory written by `finerouter fit`."),
    tolerance: float = typer.Option(0.0, "--tolerance", help="0 = best quality; higher trades quality for cost."),
    allowed_models: str | None = typer.Option(None, "--allowed-models", help="Comma-separated models to route among."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="Skip models estimated to cost more (USD)."),
    cost_weight: float | None = typer.Option(
        None, "--cost-weight", help="Lambda >= 0 (quality points per USD): argmax expected score - lambda * cost."
    ),
    budget_per_1k: float | None = typer.Option(
        None, "--budget-per-1k", help="USD per 1,000 prompts: lambda solved so the prompts' expected spend meets it "
        "(over the whole --input file)."
    ),
    input_path: Path | None = typer.Option(None, "--input", help="JSONL with a 'prompt' field per line."),
    output_path: Path | None = typer.Option(None, "--output", help="JSONL of decisions, in input order."),
    batch_size: int = typer.Option(256, "--batch-size"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache directory."),
) -> None:
    """Print the routing decision for TEXT as JSON, or route --input to --output (one decision per line).

    With --budget-per-1k the budget holds for all the prompts of --input together, so they are routed in one
    batch (--batch-size is ignored); for one TEXT it is that prompt's spend times 1,000.
    """
    from finerouter._io import atomic_write_text
    from finerouter.routing.router import FineRouter

    with cli_errors():
        if (text is None) == (input_path is None):
            raise typer.BadParameter("give either TEXT or --input (not both)")
        if input_path is not None and output_path is None:
            raise typer.BadParameter("--input needs --output")
        if cost_weight is not None and budget_per_1k is not None:
            raise typer.BadParameter("give either --cost-weight or --budget-per-1k (not both)")
        router = FineRouter.load(router_dir, cache_dir=cache_dir)
        allowed = split_list(allowed_models)
        options = {"tolerance": tolerance, "allowed_models": allowed, "max_cost": max_cost,
                   "cost_weight": cost_weight, "budget_per_1k": budget_per_1k}
        if text is not None:
            decision = router.route(text, **options)
            sys.stdout.write(json.dumps(decision.to_dict(), indent=2) + "\n")
            return
        from rich.progress import Progress

        prompts = _read_prompts(input_path)
        if budget_per_1k is not None:
            batch_size = len(prompts)  # the budget is for the whole file
        lines: list[str] = []
        with Progress(console=console(), transient=True) as progress:
            bar = progress.add_task("routing", total=len(prompts))
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                for decision in router.route(chunk, **options):
                    lines.append(json.dumps(decision.to_dict(), ensure_ascii=False))
                progress.advance(bar, len(chunk))
        atomic_write_text(output_path, "\n".join(lines) + "\n")
        console().print(f"routed {len(prompts)} prompts -> {output_path}")
