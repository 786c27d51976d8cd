"""`finerouter add-model`: add a model to a saved router from its scores on a few prompts, or retire models,
without refitting; writes a new router artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from finerouter.cli._common import cli_errors, console


def add_model(
    router: Path = typer.Option(..., "--router", help="The saved router to start from (left unchanged)."),
    out: Path = typer.Option(..., "--out", help="Where to write the new router: a new or empty folder, or a previous router artifact (replaced)."),
    model: str | None = typer.Option(None, "--model", help="The model to add (its scores are the table's column for it)."),
    data: Path | None = typer.Option(None, "--data", help="Routing table (any layout `fit` reads; one model column is enough) with the new model's scores on some prompts."),
    prices: Path | None = typer.Option(None, "--prices", help="Prices CSV with a row for the new model (when the router estimates costs)."),
    cost: float | None = typer.Option(None, "--cost", help="The new model's cost in USD per prompt, instead of --prices."),
    remove: list[str] = typer.Option([], "--remove", help="A model to retire (repeatable); done before adding --model."),
    cache_dir: Path | None = typer.Option(Path(".finerouter_cache"), "--cache-dir", help="Embedding cache directory."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the new model's training (default: the router's)."),
    train_data: Path | None = typer.Option(None, "--train-data", help="The table the router was fitted on, for a router saved before routers recorded how their classifier routes the training prompts: records those shares from it (the new prompts are weighed back to the traffic by them)."),
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not a previous router artifact (deletes what it holds)."),
) -> None:
    """Add --model from --data (its embedding, adapters, task priors and candidates learned with everything else
    frozen) and/or retire --remove models; save the result to --out."""
    from finerouter.routing.router import FineRouter, check_save_destination

    err_console = console()
    with cli_errors():
        if model is None and not remove:
            raise typer.BadParameter("nothing to do: give --model (with --data) and/or --remove")
        if model is not None and data is None:
            raise typer.BadParameter("--model needs --data, the table with its scores")
        if prices is not None and cost is not None:
            raise typer.BadParameter("give the new model's cost by --prices or by --cost, not both")
        check_save_destination(out, force=force)  # before any work: a refusal costs nothing
        current = FineRouter.load(router, cache_dir=cache_dir)
        if train_data is not None:
            from finerouter.data.readers import read_routing_data
            from finerouter.routing.onboarding_mixing import record_task_shares

            fitted_on = read_routing_data(train_data)
            record_task_shares(current, current.encoder_.encode(fitted_on.prompts))
            err_console.print(f"recorded the tasks' shares of {len(fitted_on.prompts)} training prompts")
        for name in remove:
            current = current.remove_model(name)
            err_console.print(f"[bold]removed[/] {name}")
            changes = _last_changes(current)
            restored = sum("restored_mixing" in c for c in changes)
            if restored:
                err_console.print(f"{restored} of {len(changes)} fits return to the mixing they had before {name} "
                                  "was added")
        if model is not None:
            with err_console.status(f"adding {model} (embedding its prompts, training its adapters)..."):
                current = current.add_model(model, data, cost=prices if prices is not None else cost, seed=seed)
            event = current.fit_summary_["model_changes"][-1]
            err_console.print(
                f"[bold]added[/] {model} from {event['n_prompts']} prompts: a candidate in "
                f"{event['candidate_of_tasks']} of {current.catalog_.n_tasks} tasks ({event['seconds']:.1f}s)"
            )
            changes = _last_changes(current)
            for hits, what in (
                (sum("fell_back_to_new_model" in c for c in changes), f"now route by {model} alone (it leads "
                 "routing's gain)"),
                (sum(c.get("fallback_reweighed", {}).get("routes_again", False) for c in changes),
                 f"had fallen back to the best single model and route again with {model}"),
            ):  # fmt: skip
                if hits:
                    err_console.print(f"{hits} of {len(changes)} fits {what}")
        current.save(out, force=force)
        err_console.print(f"[green]saved[/] {out}: {len(current.models_)} models")


def _last_changes(router: Any) -> list[dict[str, Any]]:
    """Each fit's record of the last model change: the router's and its ensemble members'."""
    from finerouter.routing.ensemble import members_of

    return [fit.fit_summary_["model_changes"][-1] for fit in (router, *members_of(router))]
