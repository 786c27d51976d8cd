"""Fine-tune a sentence-transformers encoder on routing scores: the paper's Stage-2 phase 1, on CPU or GPU.

The paper (§3.2, Appendix B) trains its prompt encoder together with the model embeddings and the general quality
adapters, with the MSE on each model's quality score. :class:`EncoderFineTuner` does this for any
sentence-transformers model (default: the packaged all-MiniLM-L6-v2): the transformer, its mean pooling and L2
normalisation give the prompt embedding, a small score head (:mod:`finerouter.encoders.finetune_state`) predicts
every model's score from it, and the MSE over the observed scores (NaN = not evaluated: no loss, no gradient)
trains both. The result is an ordinary sentence-transformers folder, used as ``SentenceTransformerEncoder(
model=folder)``, ``FineRouter(encoder=folder)`` or ``finerouter fit --encoder folder``; the router then fits its
own Stage 2 on the new vectors (the head is only the training signal and is not kept).

Training, after a dev part is set aside (``dev_fraction`` of the unique prompts, stratified by task):

0. the head alone, on the frozen encoder's embeddings (``head_epochs`` passes, best dev epoch kept); its dev MSE is
   the frozen encoder's baseline, and this state is epoch 0;
1. ``epochs`` passes over the encoder and the head together: AdamW (``lr`` for the encoder, ``head_lr`` for the
   head), the learning rates rising linearly over the first tenth of the steps and then falling linearly to
   zero, gradients clipped to norm 1;
2. after every pass: the dev MSE and a checkpoint; training stops after ``patience`` passes without a better dev
   MSE, and the output holds the best epoch's encoder (the base encoder itself when no pass beats epoch 0).

Every random draw (the dev split, head initialisation, shuffling, dropout) derives from the seed and the epoch
number, so a run resumed from its checkpoint ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from finerouter._training import TRAINING_PARAMETER_CONSTRAINTS, import_torch, resolve_device, resolved_seed
from finerouter._validation import BOOLEAN, Constraint, InstanceOf, Interval, NonEmptyString, NoneValue, Options
from finerouter.base import Component
from finerouter.data.dataset import RoutingDataset, split_indices
from finerouter.encoders import finetune_state as ckpt_io
from finerouter.encoders.finetune_state import RECORD_FILE
from finerouter.encoders.sentence_transformer import DEFAULT_TRUNCATION, TRUNCATIONS, SentenceTransformerEncoder
from finerouter.errors import DataError, ParameterError

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as training advances (``phase`` e.g. ``"epoch 2/3"``, counted in steps)."""

_WARMUP_FRACTION = 0.1
_MAX_GRAD_NORM = 1.0
_MIN_IMPROVEMENT = 1e-9


class EncoderFineTuner(Component):
    """Fine-tune a sentence-transformers encoder so that its prompt embeddings predict each model's score.

    Args:
        base: the model to start from: ``None`` (the packaged all-MiniLM-L6-v2), a model id or a local folder.
        epochs: passes over the fit part with the encoder trained (at most; see ``patience``).
        lr: the encoder's peak learning rate.
        head_lr: the score head's peak learning rate (also its rate when trained alone on frozen embeddings).
        head_hidden: hidden width of each model's 2-layer head; 0 gives one linear map per model.
        head_epochs: passes of the head alone on the frozen encoder's embeddings before the encoder trains.
        batch_size: prompts per step.
        max_seq_length: tokens per prompt while training (longer prompts are truncated).
        weight_decay: AdamW's decoupled weight decay.
        dev_fraction: share of the unique prompts held out for early stopping; 0 trains all epochs, no dev.
        patience: stop after this many epochs without a lower dev MSE.
        seed: seed of every random draw (None: 0).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (CUDA when available).
        threads: torch threads while training on the CPU (None: ``min(4, os.cpu_count())``); restored afterwards.
        trust_remote_code: passed to sentence-transformers for models that ship their own code (e.g. Stella);
            the returned encoder gets it too.
        truncation: which tokens of a long prompt the encoder reads, while training and after
            (:class:`SentenceTransformerEncoder`'s option; None: its default).

    After :meth:`fit`: ``encoder_`` (the fine-tuned :class:`SentenceTransformerEncoder`), ``history_`` (per epoch:
    ``epoch``, ``train_mse``, ``dev_mse``, ``seconds``, ``prompts_per_second``), ``baseline_dev_mse_`` (the frozen
    encoder's, epoch 0), ``best_epoch_``, ``best_dev_mse_``, ``seed_``, ``n_fit_``, ``n_dev_`` and
    ``resumed_from_epoch_`` (None for a fresh run).
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "base": [NoneValue(), InstanceOf(str, os.PathLike, description="a model name or path")],
        "epochs": [Interval("int", 1, None)],
        "lr": TRAINING_PARAMETER_CONSTRAINTS["lr"],
        "head_lr": [Interval("float", 0.0, None, closed="neither")],
        "head_hidden": [Interval("int", 0, None)],
        "head_epochs": [Interval("int", 0, None)],
        "batch_size": TRAINING_PARAMETER_CONSTRAINTS["batch_size"],
        "max_seq_length": [Interval("int", 1, None)],
        "weight_decay": TRAINING_PARAMETER_CONSTRAINTS["weight_decay"],
        "dev_fraction": TRAINING_PARAMETER_CONSTRAINTS["dev_fraction"],
        "patience": TRAINING_PARAMETER_CONSTRAINTS["patience"],
        "seed": TRAINING_PARAMETER_CONSTRAINTS["seed"],
        "device": [NonEmptyString()],
        "threads": [NoneValue(), Interval("int", 1, None)],
        "trust_remote_code": [BOOLEAN],
        "truncation": [NoneValue(), Options(*TRUNCATIONS)],
    }

    def __init__(
        self,
        base: str | os.PathLike[str] | None = None,
        epochs: int = 3,
        lr: float = 2e-5,
        head_lr: float = 1e-3,
        head_hidden: int = 256,
        head_epochs: int = 20,
        batch_size: int = 32,
        max_seq_length: int = 128,
        weight_decay: float = 0.01,
        dev_fraction: float = 0.1,
        patience: int = 1,
        seed: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
        trust_remote_code: bool = False,
        truncation: str | None = None,
    ) -> None:
        self.base = base
        self.epochs = epochs
        self.lr = lr
        self.head_lr = head_lr
        self.head_hidden = head_hidden
        self.head_epochs = head_epochs
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.weight_decay = weight_decay
        self.dev_fraction = dev_fraction
        self.patience = patience
        self.seed = seed
        self.device = device
        self.threads = threads
        self.trust_remote_code = trust_remote_code
        self.truncation = truncation

    # ------------------------------------------------------------------------------------------------ fit
    def fit(
        self, dataset: RoutingDataset, out_dir: str | os.PathLike[str], *, resume: bool = False,
        progress: Progress | None = None,
    ) -> SentenceTransformerEncoder:
        """Fine-tune on ``dataset`` (scores ``(n, m)``, NaN = unobserved) and write the encoder to ``out_dir``.

        ``out_dir`` is written once, atomically, at the end; while training, a checkpoint after every epoch lives
        in ``<out_dir>.checkpoint`` (removed at the end). ``out_dir`` must be new, empty, or an earlier output of
        this class (replaced).

        Args:
            resume: continue the run whose checkpoint is beside ``out_dir`` from its last finished epoch (it must
                have the same parameters, base encoder and data); with a finished output and no checkpoint, the
                output is returned as it is. Without ``resume``, an existing checkpoint is refused, so a forgotten
                flag never throws finished epochs away.
            progress: see :data:`Progress`.

        Returns:
            The fine-tuned encoder, ``SentenceTransformerEncoder(model=out_dir)`` (also ``self.encoder_``).

        Raises:
            ParameterError: bad parameters, an unusable ``out_dir``, or a checkpoint of another run.
            DataError: fewer than two prompts with an observed score.
        """
        self._validate_params()
        if not isinstance(dataset, RoutingDataset):
            raise ParameterError(f"EncoderFineTuner.fit expects a RoutingDataset. Got {type(dataset).__name__}.")
        out_dir = Path(out_dir)
        ckpt = ckpt_io.checkpoint_dir(out_dir)
        base = SentenceTransformerEncoder(self.base, max_seq_length=self.max_seq_length,
                                          truncation=DEFAULT_TRUNCATION if self.truncation is None else self.truncation)
        base = base.for_corpus(dataset.prompts)  # "auto": the head, unless the prompts share their first tokens
        settings = self._settings(base.name, base.resolved_truncation)
        data_hash = ckpt_io.data_hash(dataset)
        ckpt_io.remove_stale_temporaries(ckpt)
        ckpt_io.remove_stale_temporaries(out_dir)
        state = None
        self.resumed_from_epoch_: int | None = None
        if ckpt.exists():
            found = ckpt_io.read_state(ckpt)
            if not resume:
                raise ParameterError(
                    f"{ckpt}: holds the checkpoint of an unfinished fine-tuning run (epoch {found['epoch']} of "
                    f"{found['settings']['epochs']}); pass resume=True (--resume) to continue it, or delete it to "
                    "start again"
                )
            ckpt_io.check_same_run(found, settings, data_hash, ckpt)
            state = found
        else:
            record = ckpt_io.read_record(out_dir)
            if resume and record is not None and record["settings"] == settings and record["data"]["hash"] == data_hash:
                logger.info("%s: already fine-tuned with these parameters and data; nothing to resume", out_dir)
                return self._finish(out_dir, record)
            if resume:
                logger.info("%s: no checkpoint to resume; starting from the base encoder", ckpt)
        ckpt_io.check_out_dir(out_dir)
        with _torch_threads(self.threads):
            record = self._train(dataset, out_dir, ckpt, state, settings, data_hash, progress or _no_progress)
        return self._finish(out_dir, record)

    def _settings(self, base_name: str, truncation: str) -> dict[str, Any]:
        """The parameters that shape the result (not where it runs), with the base named by its identity and the
        truncation the prompts are read with."""
        params = self.get_params(deep=False)
        params = {k: v for k, v in params.items() if k not in ("base", "device", "threads", "trust_remote_code")}
        return {"base": base_name, **params, "seed": resolved_seed(self.seed), "truncation": truncation}

    def _finish(self, out_dir: Path, record: dict[str, Any]) -> SentenceTransformerEncoder:
        """Set the fitted attributes from the output's record; the encoder loads lazily from ``out_dir``."""
        self.history_ = record["history"]
        self.baseline_dev_mse_ = _nan_if_none(record["baseline_dev_mse"])
        self.best_epoch_ = int(record["best_epoch"])
        self.best_dev_mse_ = _nan_if_none(record["best_dev_mse"])
        self.seed_ = int(record["settings"]["seed"])
        self.n_fit_, self.n_dev_ = int(record["data"]["n_fit"]), int(record["data"]["n_dev"])
        self.encoder_ = SentenceTransformerEncoder(model=out_dir, trust_remote_code=self.trust_remote_code,
                                                   truncation=record["settings"].get("truncation", "head"))
        return self.encoder_

    # ------------------------------------------------------------------------------------------- training
    def _train(
        self, dataset: RoutingDataset, out_dir: Path, ckpt: Path, state: dict[str, Any] | None,
        settings: dict[str, Any], data_hash: str, progress: Progress,
    ) -> dict[str, Any]:
        """Train from the base (``state`` None) or from the checkpoint's state; write the output; its record."""
        encoder = SentenceTransformerEncoder(self.base, max_seq_length=self.max_seq_length, device=self.device,
                                             trust_remote_code=self.trust_remote_code,
                                             truncation=settings["truncation"])
        device = resolve_device(encoder.resolved_device, type(self).__name__)
        seed = settings["seed"]
        fit_rows, dev_rows = self._split(dataset, seed)
        job = _Job(
            texts=encoder.window_texts(dataset.prompts), scores=dataset.scores, fit_rows=fit_rows, dev_rows=dev_rows,
            device=device, batch_size=self.batch_size, progress=progress,
        )
        if state is None:
            st = encoder._load()
            head, baseline = self._warm_head(st, job, seed)
            state = {
                "format": ckpt_io.STATE_FORMAT, "settings": settings, "data": data_hash, "epoch": 0, "step": 0,
                "best_epoch": 0, "best_dev_mse": baseline, "baseline_dev_mse": baseline, "stopped": False,
                "n_fit": len(fit_rows), "n_dev": len(dev_rows), "history": [],
            }
            optimizer = self._optimizer(st, head)
            ckpt_io.write_checkpoint(ckpt, state=state, st=st, head=head, optimizer=optimizer)
            logger.info("epoch 0 (frozen encoder, head only): dev MSE %s, %d fit / %d dev prompts",
                        _fmt(baseline), len(fit_rows), len(dev_rows))
        else:
            st = SentenceTransformerEncoder(ckpt / ckpt_io.MODEL_DIR, max_seq_length=self.max_seq_length,
                                            device=self.device, trust_remote_code=self.trust_remote_code)._load()
            head = ckpt_io.load_head(ckpt / ckpt_io.HEAD_FILE, device)
            optimizer = self._optimizer(st, head)
            optimizer.load_state_dict(ckpt_io.load_optimizer_state(ckpt / ckpt_io.OPTIMIZER_FILE))
            self.resumed_from_epoch_ = int(state["epoch"])
            logger.info("resuming %s after epoch %d of %d", ckpt, state["epoch"], self.epochs)
        steps = math.ceil(len(fit_rows) / self.batch_size)
        while state["epoch"] < self.epochs and not state["stopped"]:
            epoch = state["epoch"] + 1
            t0 = time.perf_counter()
            train_mse, state["step"] = self._train_epoch(st, head, optimizer, job, seed, epoch, state["step"],
                                                         steps * self.epochs)
            seconds = time.perf_counter() - t0
            dev_mse = job.dev_mse(st, head)
            if not dev_rows.size or dev_mse < state["best_dev_mse"] - _MIN_IMPROVEMENT:
                state["best_epoch"], state["best_dev_mse"] = epoch, dev_mse
            state["epoch"] = epoch
            stale = epoch - state["best_epoch"] >= self.patience
            state["stopped"] = bool(dev_rows.size) and stale and epoch < self.epochs
            state["history"].append({"epoch": epoch, "train_mse": train_mse, "dev_mse": dev_mse,
                                     "seconds": seconds, "prompts_per_second": len(fit_rows) / seconds})
            ckpt_io.write_checkpoint(ckpt, state=state, st=st, head=head, optimizer=optimizer)
            logger.info("epoch %d/%d: train MSE %.5f, dev MSE %s (frozen encoder %s), %.1f prompts/s%s",
                        epoch, self.epochs, train_mse, _fmt(dev_mse), _fmt(state["baseline_dev_mse"]),
                        len(fit_rows) / seconds,
                        ", stopping early" if state["stopped"] else "")
        return ckpt_io.write_output(out_dir, ckpt, state, dataset)

    def _split(self, dataset: RoutingDataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(fit rows, dev rows)``: prompts without any observed score are left out, the rest split by unique
        prompt (stratified by task when the data has tasks)."""
        usable = np.flatnonzero(np.isfinite(dataset.scores).any(axis=1))
        if usable.size < 2:
            raise DataError(f"{dataset.source}: fine-tuning needs at least 2 prompts with an observed score, found "
                            f"{usable.size}")
        if usable.size < dataset.n_prompts:
            logger.info("%d prompts without any observed score are left out", dataset.n_prompts - usable.size)
        if self.dev_fraction == 0:
            return usable, usable[:0]
        prompts = [dataset.prompts[i] for i in usable]
        tasks = None if dataset.tasks is None else [dataset.tasks[i] for i in usable]
        fit_i, dev_i = split_indices(prompts, tasks, self.dev_fraction, seed)
        if not dev_i.size:
            logger.warning("the dev part is empty (too few prompts): training all %d epochs without early stopping",
                           self.epochs)
        return usable[fit_i], usable[dev_i]

    def _optimizer(self, st: Any, head: dict[str, Any]) -> Any:
        """AdamW over the encoder (``lr``) and the head (``head_lr``), in a fixed group order (resume relies on it)."""
        torch = import_torch()
        groups = [
            {"params": [p for p in st.parameters() if p.requires_grad], "lr": self.lr, "base_lr": self.lr},
            {"params": [head[k] for k in sorted(head)], "lr": self.head_lr, "base_lr": self.head_lr},
        ]
        return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)

    def _warm_head(self, st: Any, job: _Job, seed: int) -> tuple[dict[str, Any], float]:
        """Epoch 0: the head trained alone on the frozen encoder's embeddings; ``(head, its best dev MSE)``."""
        torch = import_torch()
        job.progress("embedding (frozen encoder)", 0, 1)
        e_fit, e_dev = job.embed(st, job.fit_rows), job.embed(st, job.dev_rows)
        job.progress("embedding (frozen encoder)", 1, 1)
        block = job.scores[job.fit_rows]
        seen = np.isfinite(block).sum(axis=0)
        means = np.where(seen > 0, np.nansum(block, axis=0) / np.maximum(seen, 1), 0.5)
        head = {k: v.to(job.device).detach().requires_grad_(True) for k, v in
                ckpt_io.init_head(e_fit.shape[1], job.scores.shape[1], self.head_hidden, means, seed).items()}
        optimizer = torch.optim.AdamW(list(head.values()), lr=self.head_lr, weight_decay=self.weight_decay)
        best_mse, best = job.head_mse(head, e_dev, job.dev_rows), ckpt_io.head_state(head)
        n = len(job.fit_rows)
        for k in range(self.head_epochs):
            order = np.random.default_rng([seed, 0, k]).permutation(n)
            for start in range(0, n, self.batch_size):
                take = order[start : start + self.batch_size]
                target, observed = job.targets(job.fit_rows[take])
                emb = e_fit[torch.as_tensor(take, device=job.device)]
                loss = ckpt_io.observed_mse(ckpt_io.head_forward(head, emb), target, observed)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            mse = job.head_mse(head, e_dev, job.dev_rows)
            if not job.dev_rows.size or mse < best_mse - _MIN_IMPROVEMENT:
                best_mse, best = mse, ckpt_io.head_state(head)
            job.progress("head on the frozen encoder", k + 1, self.head_epochs)
        with torch.no_grad():
            for name, value in best.items():
                head[name].copy_(value.to(job.device))
        return head, best_mse

    def _train_epoch(
        self, st: Any, head: dict[str, Any], optimizer: Any, job: _Job, seed: int, epoch: int, step: int, total: int
    ) -> tuple[float, int]:
        """One pass over the fit part with the encoder trained; ``(train MSE over observed scores, step)``."""
        torch = import_torch()
        n = len(job.fit_rows)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        warmup = max(1, round(_WARMUP_FRACTION * total))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        sq_sum, count, n_steps = 0.0, 0, math.ceil(n / self.batch_size)
        st.train()
        devices = [job.device] if job.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))  # dropout
            for b in range(n_steps):
                rows = job.fit_rows[order[b * self.batch_size : (b + 1) * self.batch_size]]
                pred = ckpt_io.head_forward(head, job.forward(st, rows))
                target, observed = job.targets(rows)
                loss = ckpt_io.observed_mse(pred, target, observed)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
                factor = (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                optimizer.step()
                step += 1
                k = int(observed.sum())
                sq_sum, count = sq_sum + float(loss.detach()) * k, count + k
                job.progress(f"epoch {epoch}/{self.epochs}", b + 1, n_steps)
        st.eval()
        return sq_sum / max(count, 1), step


class _Job:
    """The data of one run on its device: texts, scores, the fit and dev rows, and the batched forward passes."""

    def __init__(self, *, texts: list[str], scores: np.ndarray, fit_rows: np.ndarray, dev_rows: np.ndarray,
                 device: Any, batch_size: int, progress: Progress) -> None:
        self.texts, self.scores, self.fit_rows, self.dev_rows = texts, scores, fit_rows, dev_rows
        self.device, self.batch_size, self.progress = device, batch_size, progress

    def targets(self, rows: np.ndarray) -> tuple[Any, Any]:
        """``(scores with 0 where unobserved, observed mask)`` of ``rows``, each ``(len(rows), m)`` on the device."""
        torch = import_torch()
        block = self.scores[rows]
        observed = np.isfinite(block)
        target = torch.as_tensor(np.where(observed, block, 0.0), dtype=torch.float32, device=self.device)
        return target, torch.as_tensor(observed, device=self.device)

    def forward(self, st: Any, rows: np.ndarray) -> Any:
        """Unit-norm embeddings ``(len(rows), d)`` of ``rows``, with gradients (the training forward pass)."""
        torch = import_torch()
        texts = [self.texts[i] for i in rows]
        features = st.preprocess(texts) if hasattr(st, "preprocess") else st.tokenize(texts)
        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
        return torch.nn.functional.normalize(st(features)["sentence_embedding"], dim=-1)

    def embed(self, st: Any, rows: np.ndarray) -> Any:
        """Unit-norm embeddings ``(len(rows), d)`` of ``rows`` in eval mode, without gradients."""
        torch = import_torch()
        st.eval()
        if not len(rows):
            return torch.zeros((0, st.get_sentence_embedding_dimension()), device=self.device)
        with torch.inference_mode():
            out = st.encode([self.texts[i] for i in rows], batch_size=self.batch_size, convert_to_tensor=True,
                            normalize_embeddings=True, show_progress_bar=False)
        return out.to(self.device, torch.float32).clone()

    def head_mse(self, head: dict[str, Any], emb: Any, rows: np.ndarray) -> float:
        """MSE of the head's predictions over the observed scores of ``rows`` (NaN without rows)."""
        torch = import_torch()
        if not len(rows):
            return float("nan")
        target, observed = self.targets(rows)
        with torch.no_grad():
            return float(ckpt_io.observed_mse(ckpt_io.head_forward(head, emb), target, observed))

    def dev_mse(self, st: Any, head: dict[str, Any]) -> float:
        """The dev MSE of encoder ``st`` and ``head`` (NaN without a dev part)."""
        return self.head_mse(head, self.embed(st, self.dev_rows), self.dev_rows)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with a bounded number of torch threads (None: ``min(4, cpu count)``), restored afterwards."""
    torch = import_torch()
    before = torch.get_num_threads()
    torch.set_num_threads(threads or min(4, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _no_progress(phase: str, done: int, total: int) -> None:
    """The default progress callback: nothing (the epochs are logged)."""


def _nan_if_none(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _fmt(value: Any) -> str:
    """A dev MSE for the log: five decimals, or "n/a" without a dev part."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.5f}"


__all__ = ["RECORD_FILE", "EncoderFineTuner", "Progress"]
