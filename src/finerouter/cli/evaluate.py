"""`finerouter evaluate`: compare FineRouter with baselines over repeated splits; write results, report, figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from finerouter.cli._common import RAY_HELP, cli_errors, console, prepare_out_folder, ray_engine, split_list
from finerouter.errors import ParameterError

OUTPUTS = ("results.json", "report.md", "cost_quality.png", "routing_distribution.png")


def _parse_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["knn.k=40", "finerouter.alpha=0.7"]`` -> ``{"knn": {"k": 40}, "finerouter": {"alpha": 0.7}}``.

    Values are parsed as JSON when they can be (numbers, booleans, lists, objects), else kept as strings.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        router, dot, name = key.strip().partition(".")
        if not sep or not dot or not router or not name:
            raise ParameterError(f"--param {item!r}: expected ROUTER.NAME=VALUE, e.g. knn.k=40")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(router, {})[name] = value
    return out


def _is_results_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier ``finerouter evaluate`` run's results.json."""
    try:
        doc = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and {"library_version", "routers", "seeds"} <= set(doc)


def _list_routers(value: bool) -> None:
    if value:
        from finerouter.baselines import available_routers

        typer.echo("\n".join(available_routers()))
        raise typer.Exit()


def evaluate(
    data: Path = typer.Option(..., "--data", help="Routing data (Parquet, CSV or JSONL; canonical, long or RouterBench layout)."),
    out: Path = typer.Option(..., "--out", help="Directory for results.json, report.md, cost_quality.png, routing_distribution.png."),
    prices: Path | None = typer.Option(None, "--prices", help="CSV model,input_usd_per_mtok,output_usd_per_mtok: fills missing costs and estimates route-time costs."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Number of random splits (seeds 0..N-1)."),
    test_size: float = typer.Option(0.2, "--test-size", help="Share of unique prompts held out per split."),
    routers: str | None = typer.Option(None, "--routers", help="Comma-separated routers (default: all). See --list-routers."),
    encoder: str | None = typer.Option(None, "--encoder", help="sentence-transformers model name or path (default: packaged all-MiniLM-L6-v2)."),
    cache_dir: Path | None = typer.Option(Path(".finerouter_cache"), "--cache-dir", help="Embedding cache directory (embeddings are computed once per dataset)."),
    param: list[str] | None = typer.Option(None, "--param", help="Router hyper-parameter ROUTER.NAME=VALUE (repeatable), e.g. knn.k=40."),
    reference: str = typer.Option("finerouter", "--reference", help="Router every other one is compared with, per seed."),
    tolerance_steps: int = typer.Option(21, "--tolerance-steps", min=2, help="Tolerance values swept from 0 to 1 for the cost-quality curves."),
    rescale: bool = typer.Option(False, "--rescale", help="Min-max rescale each model's scores into [0, 1]."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow reading RouterBench .pkl files (unpickling runs code from the file)."),
    list_routers: bool = typer.Option(
        False, "--list-routers", is_eager=True, callback=_list_routers, help="Print the available routers and exit."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the output files in --out even if they are not from an earlier run."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP + " Embeds there and runs every seed x router as a Ray task."),
) -> None:
    """Split by unique prompt (stratified by task) for each seed, fit every router on the training part, score it
    on the test part, and write results.json, report.md, cost_quality.png and routing_distribution.png."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from finerouter.data.readers import read_routing_data
    from finerouter.evaluation.report import write_outputs
    from finerouter.evaluation.runner import embed_dataset, run_evaluation

    err_console = console()
    with cli_errors():
        names = split_list(routers)
        router_params = _parse_params(param)
        prepare_out_folder(out, OUTPUTS, previous=_is_results_folder, force=force, command="evaluate")
        engine = ray_engine(ray)
        dataset = read_routing_data(data, prices=prices, rescale=rescale, allow_pickle=allow_pickle)
        err_console.print(f"[bold]data[/]: {dataset}")
        with err_console.status(f"embedding {dataset.n_prompts} prompts (cached in {cache_dir})..."):
            embeddings, text_encoder = embed_dataset(dataset, encoder, cache_dir, engine=engine)
        err_console.print(f"[bold]embeddings[/]: {embeddings.shape} from {text_encoder.name}")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("evaluating", total=None)

            def progress(description: str, done: int, total: int) -> None:
                bar.update(task, description=description, completed=done, total=total)

            results = run_evaluation(
                dataset,
                embeddings,
                routers=names,
                seeds=seeds,
                test_size=test_size,
                prices=prices,
                encoder=text_encoder,
                router_params=router_params,
                tolerances=np.linspace(0.0, 1.0, tolerance_steps).round(6).tolist(),
                reference=reference,
                progress=progress,
                engine=engine,
            )
        paths = write_outputs(results, out)

        table = Table(title=f"{dataset.name}: {len(results['seeds'])} seeds, test size {test_size}")
        for col in ("router", "quality", "cost / prompt", "headroom", "curve area"):
            table.add_column(col, justify="left" if col == "router" else "right")
        for name, rec in results["routers"].items():
            q = rec["quality_mean"]
            table.add_row(
                name,
                f"{q:.4f} ± {rec['quality_std'] or 0:.4f}",
                "–" if rec["cost_mean"] is None else f"${rec['cost_mean']:.6f}",
                "–" if rec["headroom_mean"] is None else f"{rec['headroom_mean']:+.2f}",
                "–" if rec.get("curve_area_mean") is None else f"{rec['curve_area_mean']:.3f}",
            )
        err_console.print(table)
        err_console.print(f"[green]wrote[/] {', '.join(str(p) for p in paths.values())}")
