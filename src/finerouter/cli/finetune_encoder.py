"""`finerouter finetune-encoder`: fine-tune the prompt encoder on routing scores (the paper's Stage-2 phase 1) and
write a sentence-transformers folder that `finerouter fit --encoder DIR` uses."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from finerouter.cli._common import cli_errors, console


def finetune_encoder(
    data: Path = typer.Option(..., "--data", help="Routing data (Parquet, CSV or JSONL; any layout `fit` reads)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the fine-tuned encoder to: new, empty, or an earlier fine-tuned encoder (replaced). Its checkpoint lives in <out>.checkpoint while training."),
    base: str | None = typer.Option(None, "--base", help="sentence-transformers model name or folder to start from (default: packaged all-MiniLM-L6-v2)."),
    epochs: int = typer.Option(3, "--epochs", help="Passes over the data with the encoder trained (at most; early stopping on a dev part)."),
    lr: float = typer.Option(2e-5, "--lr", help="The encoder's peak learning rate."),
    batch_size: int = typer.Option(32, "--batch-size"),
    max_seq_length: int = typer.Option(128, "--max-seq-length", help="Tokens per prompt while training."),
    dev_fraction: float = typer.Option(0.1, "--dev-fraction", help="Share of the prompts held out for early stopping (0: none)."),
    patience: int = typer.Option(1, "--patience", help="Stop after this many epochs without a lower dev MSE."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps or auto."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads on the CPU (default: min(4, cores))."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the code a --base model ships (e.g. Stella): only for models you trust."),
    truncation: str | None = typer.Option(None, "--truncation", help="Which tokens of a long prompt the encoder reads: head, tail or head_tail (default: the encoder's default)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last finished epoch (same options and data)."),
    rescale: bool = typer.Option(False, "--rescale", help="Min-max rescale each model's scores into [0, 1]."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow reading RouterBench's .pkl (unpickling runs code: only for files you trust)."),
) -> None:
    """Fine-tune the encoder so its embeddings predict each model's score (MSE on the observed scores); write the
    best epoch's encoder to --out."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from finerouter.data.readers import read_routing_data
    from finerouter.encoders.finetune import EncoderFineTuner

    err_console = console()
    with cli_errors():
        tuner = EncoderFineTuner(
            base=base, epochs=epochs, lr=lr, batch_size=batch_size, max_seq_length=max_seq_length,
            dev_fraction=dev_fraction, patience=patience, seed=seed, device=device, threads=threads,
            trust_remote_code=trust_remote_code, truncation=truncation,
        )
        tuner._validate_params()  # fail on bad options before reading the data
        dataset = read_routing_data(data, rescale=rescale, allow_pickle=allow_pickle)
        err_console.print(f"[bold]data[/]: {dataset}")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            encoder = tuner.fit(dataset, out, resume=resume, progress=progress)
        for row in tuner.history_:
            err_console.print(f"epoch {row['epoch']}: train MSE {row['train_mse']:.5f}, dev MSE {_mse(row['dev_mse'])}")
        err_console.print(
            f"[green]saved[/] {out}: epoch {tuner.best_epoch_} of {len(tuner.history_)}, dev MSE "
            f"{_mse(tuner.best_dev_mse_)} (frozen encoder {_mse(tuner.baseline_dev_mse_)}), {tuner.n_fit_} fit / "
            f"{tuner.n_dev_} dev prompts; encoder {encoder.name!r}"
        )
        err_console.print(f"use it: finerouter fit --data {data} --encoder {out} --out ROUTER")


def _mse(value: float | None) -> str:
    """A dev MSE for the console: five decimals, or "n/a" without a dev part."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.5f}"
