"""RouteLLM's matrix-factorisation router generalised from 2 to ``m`` models.

``score(p, M) = w^T (v_M ⊙ (W e_p)) + b_M``: the prompt embedding ``e_p`` is projected by ``W`` into the latent
space of the learned model embeddings ``v_M``; their element-wise product is read out by ``w``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter._validation import check_choice, check_int
from finerouter.baselines._torch import TorchRouter, masked_mse
from finerouter.baselines.base import fill_missing
from finerouter.data.dataset import RoutingDataset


def _mf_module(d: int, m: int, dim: int) -> Any:
    import torch
    from torch import nn

    class MatrixFactorization(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(d, dim, bias=False)  # W
            self.models = nn.Parameter(torch.randn(m, dim) * 0.1 + 1.0)  # v_M
            self.readout = nn.Linear(dim, 1, bias=False)  # w
            self.bias = nn.Parameter(torch.zeros(m))  # b_M

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = self.proj(x)  # (n, dim)
            inter = p[:, None, :] * self.models[None, :, :]  # (n, m, dim)
            return self.readout(inter).squeeze(-1) + self.bias  # (n, m)

    return MatrixFactorization()


class MatrixFactorizationRouter(TorchRouter):
    """Matrix factorisation over (prompt, model) quality, trained with a pairwise or a pointwise loss.

    Args:
        dim: latent dimension.
        loss: ``"pairwise"`` (RouteLLM's Bradley–Terry loss, ``-log σ(s_a - s_b)`` for every pair of models where
            ``a`` scored higher than ``b`` on the prompt) or ``"mse"`` (``σ(s)`` regressed on the observed scores).
        other args: see :class:`finerouter.baselines._torch.TorchRouter`.
    """

    name = "matrix_factorization"

    def __init__(self, dim: int = 128, loss: str = "pairwise", epochs: int = 40, lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 1e-5, patience: int = 5, dev_fraction: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(dim, epochs, lr, batch_size, weight_decay, patience, dev_fraction, seed)
        self.dim = dim
        self.loss = loss

    def _validate(self) -> None:
        super()._validate()
        check_int(self.dim, "dim", "MatrixFactorizationRouter", low=1)
        check_choice(self.loss, "loss", "MatrixFactorizationRouter", ("pairwise", "mse"))

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        target, mask = fill_missing(train.scores[fit_idx], self.prior_)
        self._y = torch.from_numpy(target.astype(np.float32))
        self._mask = torch.from_numpy(mask.astype(np.float32))

    def _build(self, d: int, m: int) -> Any:
        return _mf_module(d, m, self.dim)

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        from torch.nn import functional as F

        s = module(self._x[idx])
        y, mask = self._y[idx], self._mask[idx]
        if self.loss == "mse":
            return masked_mse(s.sigmoid(), y, mask)
        # pairs (a, b) with y_a > y_b, both observed
        better = (y[:, :, None] > y[:, None, :]) & (mask[:, :, None] > 0) & (mask[:, None, :] > 0)
        if not bool(better.any()):
            return None
        diff = s[:, :, None] - s[:, None, :]
        return F.softplus(-diff[better]).mean()

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x)
