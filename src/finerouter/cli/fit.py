"""`finerouter fit`: train a FineRouter on routing data and save the artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from finerouter.cli._common import RAY_HELP, cli_errors, console, ray_engine


def fit(
    data: Path = typer.Option(..., "--data", help="Routing data (Parquet, CSV or JSONL; canonical, long or RouterBench layout), or a gateway request-log folder (decisions joined with feedback)."),
    out: Path = typer.Option(..., "--out", help="Directory to write the router artifact to: a new or empty folder, or a previous router artifact (replaced atomically)."),
    prices: Path | None = typer.Option(None, "--prices", help="CSV model,input_usd_per_mtok,output_usd_per_mtok."),
    encoder: str | None = typer.Option(None, "--encoder", help="sentence-transformers model name or path (default: packaged all-MiniLM-L6-v2)."),
    truncation: str | None = typer.Option(None, "--truncation", help="Which tokens of a prompt longer than the encoder's window it reads: head, tail or head_tail (default: the encoder's default)."),
    cache_dir: Path | None = typer.Option(Path(".finerouter_cache"), "--cache-dir", help="Embedding cache directory."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of stage 2 in the final score."),
    seed: int = typer.Option(0, "--seed"),
    task_labels: str = typer.Option(
        "auto", "--task-labels",
        help="auto (refine the data's coarse 'task' labels, or route by a prior predicted from them, only where that routes held-out data better), refine, or ignore (the paper).",
    ),
    ensemble_size: str = typer.Option(
        "auto", "--ensemble-size",
        help="Fits averaged (seeds seed, seed+1, ...): auto (3 on at most 2,000 unique prompts, else 1) or a number; 1 fits fastest.",
    ),
    rescale: bool = typer.Option(False, "--rescale", help="Min-max rescale each model's scores into [0, 1]."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow reading RouterBench's .pkl (unpickling runs code: only for files you trust)."),
    describe_url: str | None = typer.Option(None, "--describe-url", help="OpenAI-compatible base URL for LLM task descriptions (default: the prompt is its own description)."),
    describe_model: str | None = typer.Option(None, "--describe-model", help="Model name for --describe-url."),
    describe_key_env: str = typer.Option("OPENAI_API_KEY", "--describe-key-env", help="Environment variable holding the API key."),
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not a previous router artifact (deletes what it holds)."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
) -> None:
    """Train Stage 1 (task discovery + classifier) and Stage 2 (quality estimator); save the router."""
    from finerouter.data.readers import read_routing_data
    from finerouter.encoders import get_encoder, reads_head
    from finerouter.routing.router import FineRouter, check_save_destination

    err_console = console()
    with cli_errors():
        if task_labels not in _TASK_LABELS:
            raise typer.BadParameter(f"--task-labels must be auto, refine or ignore, got {task_labels!r}")
        if ensemble_size != "auto" and not (ensemble_size.isdigit() and int(ensemble_size) >= 1):
            raise typer.BadParameter(f"--ensemble-size must be auto or a positive integer, got {ensemble_size!r}")
        check_save_destination(out, force=force)  # before fitting: a refusal costs no fit
        engine = ray_engine(ray)
        if data.is_dir():  # the gateway's request log: only the answering model's score is observed
            from finerouter.data.request_log import read_request_log

            dataset = read_request_log(data)
        else:
            dataset = read_routing_data(data, rescale=rescale, allow_pickle=allow_pickle)
        err_console.print(f"[bold]data[/]: {dataset}")
        describer = None
        if describe_url:
            from finerouter.describe import OpenAIDescriber

            if not describe_model:
                raise typer.BadParameter("--describe-model is required with --describe-url")
            describer = OpenAIDescriber(
                describe_url, describe_model, api_key_env=describe_key_env,
                cache_dir=None if cache_dir is None else cache_dir / "descriptions", engine=engine,
            )
        if truncation is not None:
            encoder = get_encoder(encoder, truncation=truncation)
        router = FineRouter(
            encoder=encoder, describer=describer, alpha=alpha, prices=prices, cache_dir=cache_dir, seed=seed,
            refine_task_labels=_TASK_LABELS[task_labels], label_prior=task_labels != "ignore", engine=engine,
            ensemble_size=ensemble_size if ensemble_size == "auto" else int(ensemble_size),
        )
        with err_console.status("fitting FineRouter (embeddings, discovery, classifier, quality estimator)..."):
            router.fit(dataset)
        router.save(out, force=force)
        summary = router.fit_summary_
        err_console.print(
            f"[green]saved[/] {out}: {summary['n_tasks']} tasks"
            f"{' refining the task labels' if summary['refined_task_labels'] else ''}, "
            f"{summary['share_in_tasks']:.0%} of prompts in a task, "
            f"{summary['mean_candidates']:.2f} candidates per task of {summary['n_models']} models, "
            f"costs: {router.cost_model_.kind}, {summary['ensemble']['size']} fit(s) averaged (stage-1 priors: "
            f"{', '.join(str(m['assignment']) for m in summary['ensemble']['mixing'])}), "
            f"{_neighbour_note(router.settings_.get('neighbours'), 1.0 - summary['share_in_tasks'])}"
            f"fit {summary['seconds']['total']:.1f}s"
        )
        if truncation is None and not reads_head(router.encoder_):  # "auto" chose head and tail
            err_console.print("many training prompts open with the same text (a system prompt or examples): the "
                              "encoder reads the start and the end of long prompts (--truncation to choose)")


def _neighbour_note(offered: bool, others_share: float) -> str:
    """What ``fit`` says about the neighbour source: offered to the mixing, and as its default mix where discovery
    left most prompts in no task (:func:`finerouter.routing.regime.weak_tasks`)."""
    from finerouter.routing.regime import weak_tasks

    if not offered:
        return ""
    if weak_tasks(others_share):
        return f"neighbour source offered as the default mix ({others_share:.0%} of prompts in no task), "
    return "neighbour source offered, "


_TASK_LABELS = {"auto": "auto", "refine": True, "ignore": False}
