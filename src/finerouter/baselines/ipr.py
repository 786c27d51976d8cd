"""An IPR-style router (Feng et al., EMNLP 2025 Industry): per-model quality adapters, no tasks.

IPR encodes the prompt, embeds each candidate model, and predicts the model's quality with a small adapter per
model; a tolerance then trades quality for cost. Here the prompt encoder is a trainable projection over frozen
sentence embeddings; each model ``M`` has an embedding ``u_M`` and a 2-layer MLP adapter reading
``[proj(e_p); u_M]`` and outputting ``σ(quality)``, trained with MSE on the observed scores. It is FineRouter's
stage 2 without the task-specific heads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter._validation import check_int
from finerouter.baselines._torch import TorchRouter, masked_mse
from finerouter.baselines.base import fill_missing
from finerouter.data.dataset import RoutingDataset


def _ipr_module(d: int, m: int, hidden: int, model_dim: int, adapter: int) -> Any:
    import torch
    from torch import nn

    class QualityAdapters(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Sequential(nn.Linear(d, hidden), nn.GELU())
            self.models = nn.Parameter(torch.randn(m, model_dim) * 0.1)
            fan_in = hidden + model_dim
            self.w1 = nn.Parameter(torch.randn(m, fan_in, adapter) / fan_in**0.5)
            self.b1 = nn.Parameter(torch.zeros(m, adapter))
            self.w2 = nn.Parameter(torch.randn(m, adapter) / adapter**0.5)
            self.b2 = nn.Parameter(torch.zeros(m))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = self.proj(x)  # (n, hidden)
            # [p; u_M] @ W1_M = p @ W1_M[:hidden] + u_M @ W1_M[hidden:]
            hp = torch.einsum("nh,mha->nma", p, self.w1[:, :hidden, :])
            hu = torch.einsum("me,mea->ma", self.models, self.w1[:, hidden:, :])
            a = torch.relu(hp + hu[None] + self.b1[None])  # (n, m, adapter)
            return torch.einsum("nma,ma->nm", a, self.w2) + self.b2  # logits (n, m)

    return QualityAdapters()


class IPRRouter(TorchRouter):
    """Per-model quality adapters on a shared prompt projection (no task structure).

    Args:
        model_dim: size of the model embeddings ``u_M``.
        adapter: hidden width of each model's adapter.
        other args: see :class:`finerouter.baselines._torch.TorchRouter`.
    """

    name = "ipr"

    def __init__(self, hidden: int = 256, model_dim: int = 64, adapter: int = 128, epochs: int = 40,
                 lr: float = 1e-3, batch_size: int = 128, weight_decay: float = 1e-5, patience: int = 5,
                 dev_fraction: float = 0.1, seed: int = 0) -> None:
        super().__init__(hidden, epochs, lr, batch_size, weight_decay, patience, dev_fraction, seed)
        self.model_dim = model_dim
        self.adapter = adapter

    def _validate(self) -> None:
        super()._validate()
        check_int(self.model_dim, "model_dim", "IPRRouter", low=1)
        check_int(self.adapter, "adapter", "IPRRouter", low=1)

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        target, mask = fill_missing(train.scores[fit_idx], self.prior_)
        self._y = torch.from_numpy(target.astype(np.float32))
        self._mask = torch.from_numpy(mask.astype(np.float32))

    def _build(self, d: int, m: int) -> Any:
        return _ipr_module(d, m, self.hidden, self.model_dim, self.adapter)

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        return masked_mse(module(self._x[idx]).sigmoid(), self._y[idx], self._mask[idx])

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x).sigmoid()
