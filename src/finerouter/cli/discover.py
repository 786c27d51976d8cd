"""`finerouter discover`: run stage-1 task discovery on routing data and write the task catalog."""

from __future__ import annotations

from pathlib import Path

import typer

from finerouter.cli._common import RAY_HELP, cli_errors, console, prepare_out_folder, ray_engine

_ENCODE_CHUNK = 256
OUTPUTS = ("catalog.json", "catalog.safetensors", "tasks.md", "assignments.csv")


def discover(
    data: Path = typer.Option(..., "--data", help="Routing data (Parquet, CSV or JSONL; canonical, long or RouterBench layout)."),
    out: Path = typer.Option(..., "--out", help="Directory for catalog.json, catalog.safetensors, tasks.md and assignments.csv."),
    prices: Path | None = typer.Option(None, "--prices", help="CSV model,input_usd_per_mtok,output_usd_per_mtok (estimates per-prompt costs)."),
    encoder: str | None = typer.Option(None, "--encoder", help="sentence-transformers model name or path (default: packaged all-MiniLM-L6-v2)."),
    cache_dir: Path | None = typer.Option(Path(".finerouter_cache"), "--cache-dir", help="Embedding cache directory."),
    k: int = typer.Option(5, "--k", help="Nearest neighbours per node in the prompt graph."),
    tau: float = typer.Option(0.4, "--tau", help="Drop graph edges whose (chance-corrected) RBO is below this."),
    iterations: int = typer.Option(3, "--iterations", help="Leiden rounds in all (prompts, then cluster summaries)."),
    resolution: float = typer.Option(1.0, "--resolution", help="Leiden resolution (1 = modularity; higher = smaller tasks)."),
    min_task_size: int = typer.Option(5, "--min-task-size", help="Smaller communities go to 'Others'."),
    delta: float = typer.Option(0.8, "--delta", help="Candidate coverage threshold."),
    knn: str = typer.Option("auto", "--knn", help="auto, exact or hnsw."),
    seed: int = typer.Option(0, "--seed"),
    refine_task_labels: bool = typer.Option(
        True, "--refine-task-labels/--label-free",
        help="Refine the data's coarse 'task' labels when present (default: no task spans two labels), or ignore them (the paper).",
    ),
    rescale: bool = typer.Option(False, "--rescale", help="Min-max rescale each model's scores into [0, 1]."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output files in --out even if they are not from an earlier run."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
) -> None:
    """Discover fine-grained task types (kNN graph + RBO + iterated Leiden) and write the task catalog."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from finerouter._io import atomic_write_text
    from finerouter.data.readers import read_routing_data
    from finerouter.describe import PromptDescriber
    from finerouter.discovery import TaskDiscovery
    from finerouter.encoders import for_corpus, get_encoder

    err_console = console()
    with cli_errors():
        discovery = TaskDiscovery(
            k=k, tau=tau, iterations=iterations, resolution=resolution, min_task_size=min_task_size,
            delta=delta, knn=knn, seed=seed,
        )
        discovery._validate_params()  # fail on bad options before loading data or the encoder
        prepare_out_folder(out, OUTPUTS, previous=_is_catalog_folder, force=force, command="discover")
        engine = ray_engine(ray)
        discovery.set_params(engine=engine)
        dataset = read_routing_data(data, prices=prices, rescale=rescale)
        err_console.print(f"[bold]data[/]: {dataset}")
        descriptions = PromptDescriber().describe(dataset.prompts)
        text_encoder = for_corpus(get_encoder(encoder, cache_dir=cache_dir), descriptions)  # as FineRouter.fit reads
        chunks = []
        with Progress(
            TextColumn("embedding descriptions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True,
        ) as bar:
            task = bar.add_task("embed", total=len(descriptions))
            if engine is not None:  # the texts the cache lacks, on the cluster (progress: texts sent there)
                from finerouter.engines.embedding import embed_texts

                chunks.append(embed_texts(text_encoder, descriptions, engine,
                                          progress=lambda done, total: bar.update(task, completed=done, total=total)))
            for start in range(0, len(descriptions) if engine is None else 0, _ENCODE_CHUNK):
                batch = descriptions[start : start + _ENCODE_CHUNK]
                chunks.append(text_encoder.encode(batch))
                bar.advance(task, len(batch))
        embeddings = np.concatenate(chunks).astype(np.float32, copy=False)
        with err_console.status("discovering tasks (kNN graph, RBO, Leiden)..."):
            groups = dataset.tasks if refine_task_labels else None
            discovery.fit(
                embeddings, dataset.scores, model_names=dataset.models, prompts=dataset.prompts,
                descriptions=descriptions, groups=groups,
            )
        catalog = discovery.catalog_
        catalog.info["refined_task_labels"] = groups is not None
        catalog.info["data"] = str(data)
        catalog.info["encoder"] = text_encoder.name
        catalog.save(out)
        atomic_write_text(out / "tasks.md", catalog.to_markdown())
        labels = discovery.labels_
        lines = ["id,task"] + [f"{_csv_field(i)},{int(t)}" for i, t in zip(dataset.ids or [], labels)]
        atomic_write_text(out / "assignments.csv", "\n".join(lines) + "\n")

    n_models = len(catalog.model_names)
    mean_cand = f"{catalog.mean_candidates:.2f}" if catalog.n_tasks else "n/a"
    levels = " -> ".join(str(s["communities"]) for s in discovery.level_stats_)
    refined = f" (refining {len(set(dataset.tasks or []))} task labels)" if catalog.info["refined_task_labels"] else ""
    typer.echo(f"tasks: {catalog.n_tasks}{refined}")
    in_tasks = catalog.n_prompts - catalog.others.size
    typer.echo(f"share of prompts in a task: {catalog.share_in_tasks:.1%} ({in_tasks} of {catalog.n_prompts})")
    typer.echo(f"mean candidates per task: {mean_cand} of {n_models} models")
    typer.echo(f"communities per Leiden round: {levels}; {discovery.timings_['total']:.1f}s")
    typer.echo(f"wrote {out / 'catalog.json'}, {out / 'tasks.md'}, {out / 'assignments.csv'}")


def _is_catalog_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a task catalog (an earlier ``finerouter discover`` run's output)."""
    import json

    from finerouter.discovery.catalog import FORMAT

    try:
        doc = json.loads((folder / "catalog.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def _csv_field(value: str) -> str:
    """``value`` as one CSV field (quoted when it holds a comma, quote or newline)."""
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value
