"""Small shared helpers for the torch-based baselines: seeding without touching global state, a training loop
with early stopping on a dev part (:class:`~finerouter._training.EarlyStopping`), batched inference, the
:class:`TorchRouter` base and the one-hidden-layer :class:`MLPRouter` base. torch is imported inside the
functions."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from finerouter._training import EarlyStopping, check_training_params
from finerouter._validation import check_int, check_is_fitted
from finerouter.baselines.base import Router, dev_split, select_models
from finerouter.data.dataset import RoutingDataset

logger = logging.getLogger(__name__)

# The smallest decrease of the dev metric that counts as an improvement for early stopping.
_MIN_DEV_IMPROVEMENT = 1e-7


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded by ``seed``; the global generator is restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, restoring the previous setting afterwards.

    These models are tiny: one thread avoids the synchronisation cost of several (and the oversubscription on
    a busy machine), which dominates steps this small.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_with_early_stopping(
    module: Any,
    batch_loss: Callable[[Any], Any],
    n_fit: int,
    dev_metric: Callable[[], float],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    patience: int,
    seed: int,
) -> dict[str, Any]:
    """Train ``module`` with AdamW on shuffled mini-batches; keep the weights with the lowest ``dev_metric``.

    Args:
        module: a ``torch.nn.Module``; its best weights are loaded back at the end.
        batch_loss: ``f(index tensor of fit rows) -> scalar loss tensor``.
        n_fit: number of fit rows (batches index ``0..n_fit-1``).
        dev_metric: evaluated after each epoch in eval mode; lower is better (e.g. dev loss, or minus dev quality).
        patience: stop after this many epochs without improvement (by more than ``1e-7``); the weights before
            training count as epoch 0, not evaluated (kept only if no epoch gives a comparable value).

    Returns:
        ``{"best_epoch", "best_dev", "epochs_run"}``.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)

    def snapshot() -> dict[str, Any]:
        return copy.deepcopy(module.state_dict())

    stopper = EarlyStopping(patience, monitor="dev_metric", min_delta=_MIN_DEV_IMPROVEMENT)
    stopper.start(None, snapshot)
    epoch = 0
    for epoch in range(1, epochs + 1):
        module.train()
        perm = torch.randperm(n_fit, generator=generator)
        for start in range(0, n_fit, batch_size):
            idx = perm[start : start + batch_size]
            loss = batch_loss(idx)
            if loss is None or not loss.requires_grad:
                continue
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        module.eval()
        with torch.no_grad():
            value = float(dev_metric())
        if stopper.update(epoch, value, snapshot):
            break
    stopper.restore(module.load_state_dict)
    module.eval()
    best_epoch, best = int(stopper.best_epoch), float(stopper.best_value)
    logger.debug("%s: best epoch %d of %d, dev %.5f", type(module).__name__, best_epoch, epoch, best)
    return {"best_epoch": best_epoch, "best_dev": best, "epochs_run": epoch}


def predict_batched(fn: Callable[[Any], Any], x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Apply ``fn`` (a torch function of a float32 batch) to ``x`` in batches, without gradients; numpy out."""
    import torch

    outs = []
    with torch.no_grad():
        for start in range(0, max(x.shape[0], 1), batch_size):
            outs.append(fn(torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))).numpy())
    return np.concatenate(outs, axis=0)


def masked_mse(pred: Any, target: Any, mask: Any) -> Any:
    """Mean squared error over the observed (``mask``) entries only."""
    diff = (pred - target) ** 2 * mask
    return diff.sum() / mask.sum().clamp_min(1.0)


class TorchRouter(Router):
    """Shared fit/predict plumbing for the small torch routers trained on frozen prompt embeddings.

    Subclasses implement :meth:`_build` (the module), :meth:`_batch_loss` and :meth:`_scores` (the ``(n, m)``
    routing scores from a batch of embeddings); the dev metric defaults to minus the dev routing quality (the
    quantity the harness measures), computed on a dev part carved from the training data.

    Common args: ``hidden``, ``epochs``, ``lr``, ``batch_size``, ``weight_decay``, ``patience``, ``dev_fraction``,
    ``seed``.
    """

    def __init__(
        self,
        hidden: int = 256,
        epochs: int = 40,
        lr: float = 1e-3,
        batch_size: int = 128,
        weight_decay: float = 1e-4,
        patience: int = 5,
        dev_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.patience = patience
        self.dev_fraction = dev_fraction
        self.seed = seed

    # -- to implement
    def _build(self, d: int, m: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch_loss(self, module: Any, idx: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _scores(self, module: Any, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        """Hook: set up the training tensors of the fit rows (targets, masks: ``self._y``...) before training."""

    def _validate(self) -> None:
        owner = type(self).__name__
        check_int(self.hidden, "hidden", owner, low=1)
        check_int(self.epochs, "epochs", owner, low=1)
        check_training_params(
            owner, lr=self.lr, batch_size=self.batch_size, weight_decay=self.weight_decay, patience=self.patience,
            dev_fraction=self.dev_fraction, dev_closed="neither", seed=self.seed,
        )

    def fit(self, train: RoutingDataset, embeddings: np.ndarray) -> TorchRouter:
        import torch

        self._validate()
        emb = self._fit_common(train, embeddings)
        fit_idx, dev_idx = dev_split(train, self.dev_fraction, self.seed)
        if len(fit_idx) == 0:
            fit_idx, dev_idx = np.arange(train.n_prompts), np.arange(0)
        dev_quality_on = dev_idx if len(dev_idx) else fit_idx
        dev_x = torch.from_numpy(emb[dev_quality_on])
        dev_truth = np.nan_to_num(train.scores[dev_quality_on], nan=0.0)
        self._x = torch.from_numpy(emb[fit_idx])
        self._prepare(train, emb, fit_idx)
        with seeded(self.seed), torch_threads(1):
            module = self._build(emb.shape[1], train.n_models)

            def dev_metric() -> float:
                pred = self._scores(module, dev_x).numpy()
                choice = select_models(pred, None, 0.0, self.prior_)
                return -float(dev_truth[np.arange(len(choice)), choice].mean())

            self.history_ = train_with_early_stopping(
                module,
                lambda idx: self._batch_loss(module, idx),
                len(fit_idx),
                dev_metric,
                epochs=self.epochs,
                lr=self.lr,
                weight_decay=self.weight_decay,
                batch_size=self.batch_size,
                patience=self.patience,
                seed=self.seed,
            )
        del self._x
        self.module_ = module
        return self

    def predict_scores(self, embeddings: np.ndarray, data: RoutingDataset | None = None) -> np.ndarray:
        check_is_fitted(self, ["module_"])
        emb = self._check_input(embeddings)
        with torch_threads(1):
            return predict_batched(lambda x: self._scores(self.module_, x), emb).astype(np.float64)


class MLPRouter(TorchRouter):
    """Base of the MLP baselines: one hidden layer on the prompt embedding, one output per model.

    ``Linear(d, hidden), ReLU, Dropout(dropout), Linear(hidden, m)``; subclasses choose the loss
    (:meth:`_batch_loss`), the targets (:meth:`_prepare`) and the output activation (:meth:`_scores`).

    Args: see :class:`TorchRouter`; ``dropout`` in [0, 1).
    """

    def __init__(self, hidden: int = 256, dropout: float = 0.1, epochs: int = 40, lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 1e-4, patience: int = 5, dev_fraction: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(hidden, epochs, lr, batch_size, weight_decay, patience, dev_fraction, seed)
        self.dropout = dropout

    def _build(self, d: int, m: int) -> Any:
        from torch import nn

        return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, m))
