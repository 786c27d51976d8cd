"""`finerouter suggest-prompts`: which prompts of a table to score a new model on before `add-model`, covering the
router's tasks with as few answers as possible."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from finerouter.cli._common import cli_errors, console


def suggest_prompts(
    router: Path = typer.Option(..., "--router", help="The saved router."),
    data: Path = typer.Option(..., "--data", help="The candidate prompts: a routing table (e.g. the router's training table)."),
    n: int = typer.Option(300, "--n", help="How many prompts to suggest.", min=1),
    out: Path = typer.Option(..., "--out", help="JSONL to write: one {\"prompt\", \"id\", \"task_id\"} per line, most useful first."),
    seed: int = typer.Option(0, "--seed", help="Seeds the choice inside each task."),
    cache_dir: Path | None = typer.Option(Path(".finerouter_cache"), "--cache-dir", help="Embedding cache directory."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow reading RouterBench's .pkl (unpickling runs code)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Write --n prompts of --data, stratified over the router's tasks (larger tasks and close calls first)."""
    import numpy as np

    from finerouter._io import atomic_write_bytes
    from finerouter.data.readers import read_routing_data
    from finerouter.errors import ParameterError
    from finerouter.routing.onboarding import assign_tasks
    from finerouter.routing.router import FineRouter
    from finerouter.routing.suggestions import suggest_prompts as suggest

    err_console = console()
    with cli_errors():
        if (out.exists() or out.is_symlink()) and not force:
            raise ParameterError(f"{out}: not written, it exists; choose another --out, or pass --force to overwrite it")
        loaded = FineRouter.load(router, cache_dir=cache_dir)
        table = read_routing_data(data, allow_pickle=allow_pickle)
        picked = suggest(loaded, n, table.prompts, seed=seed)
        texts = [table.prompts[i] for i in picked]
        tasks = assign_tasks(loaded, np.asarray(loaded.encoder_.encode(texts), dtype=np.float32))
        lines = [
            json.dumps({"prompt": text, "id": table.ids[i], "task_id": int(t)}, ensure_ascii=False)
            for text, i, t in zip(texts, picked, tasks)
        ]
        atomic_write_bytes(out, ("\n".join(lines) + "\n").encode("utf-8"))
        err_console.print(
            f"[green]wrote[/] {out}: {len(lines)} of {table.n_prompts} prompts over {len(set(tasks.tolist()))} tasks"
        )
