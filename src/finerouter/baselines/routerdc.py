"""A RouterDC-style router (Chen et al., NeurIPS 2024): dual contrastive learning on frozen prompt embeddings.

RouterDC fine-tunes a text encoder ``E`` and learns one embedding ``k_M`` per model; a prompt goes to the model
whose embedding is most similar (cosine) to ``E(x)``. Two losses train them:

* sample–LLM: for each of the prompt's top-``top_k`` models (skipped when it scored 0), a softmax over the
  similarities to it and to the prompt's ``last_k`` worst models pulls ``E(x)`` towards the positive
  (negatives that scored as well as the positive are left out: they would contradict it);
* sample–sample: for each prompt, a softmax over its similarity to one random prompt of the same group and
  ``n_negatives`` prompts of other groups, where groups are k-means clusters of the training embeddings (the
  RouterDC "cluster" loss) or the dataset's coarse task labels.

Here ``E`` is a small MLP over frozen sentence embeddings instead of a fine-tuned mDeBERTa (CPU-fast).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finerouter._validation import check_choice, check_float, check_int
from finerouter.baselines._torch import TorchRouter
from finerouter.data.dataset import RoutingDataset


def _routerdc_module(d: int, m: int, hidden: int, dim: int) -> Any:
    import torch
    from torch import nn

    class DualContrastive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, dim))
            self.models = nn.Parameter(torch.randn(m, dim) * 0.78)  # RouterDC's init

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = nn.functional.normalize(self.encoder(x), dim=-1)
            k = nn.functional.normalize(self.models, dim=-1)
            return h @ k.T, h  # cosine similarities (n, m), normalised hidden states (n, dim)

    return DualContrastive()


class RouterDCRouter(TorchRouter):
    """Dual-contrastive router on frozen embeddings.

    Args:
        dim: size of the shared prompt/model space.
        top_k, last_k: positives and negatives per prompt in the sample–LLM loss.
        temperature: similarities are divided by it before each softmax.
        sample_weight: weight of the sample–sample loss (0 disables it).
        groups: ``"kmeans"`` (clusters of training embeddings) or ``"task"`` (the coarse task labels).
        n_clusters: clusters for ``"kmeans"``.
        n_negatives: other-group prompts per prompt in the sample–sample loss (RouterDC's ``H``).
        other args: see :class:`finerouter.baselines._torch.TorchRouter`.
    """

    name = "routerdc"

    def __init__(self, hidden: int = 256, dim: int = 128, top_k: int = 3, last_k: int = 3,
                 temperature: float = 0.2, sample_weight: float = 1.0, groups: str = "kmeans",
                 n_clusters: int = 10, n_negatives: int = 3, epochs: int = 40, lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 1e-4, patience: int = 5, dev_fraction: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(hidden, epochs, lr, batch_size, weight_decay, patience, dev_fraction, seed)
        self.dim = dim
        self.top_k = top_k
        self.last_k = last_k
        self.temperature = temperature
        self.sample_weight = sample_weight
        self.groups = groups
        self.n_clusters = n_clusters
        self.n_negatives = n_negatives

    def _validate(self) -> None:
        super()._validate()
        owner = "RouterDCRouter"
        check_int(self.dim, "dim", owner, low=1)
        check_int(self.top_k, "top_k", owner, low=1)
        check_int(self.last_k, "last_k", owner, low=1)
        check_float(self.temperature, "temperature", owner, low=0.0, closed="neither")
        check_float(self.sample_weight, "sample_weight", owner, low=0.0)
        check_choice(self.groups, "groups", owner, ("kmeans", "task"))
        check_int(self.n_clusters, "n_clusters", owner, low=2)
        check_int(self.n_negatives, "n_negatives", owner, low=1)

    def _prepare(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> None:
        import torch

        scores = train.scores[fit_idx]
        m = scores.shape[1]
        top_k, last_k = min(self.top_k, m - 1), min(self.last_k, m - 1)
        observed = np.isfinite(scores)
        # positives: best first (ties -> higher prior); negatives: worst first (ties -> lower prior)
        tiebreak = 1e-9 * np.argsort(np.argsort(self.prior_))[None, :]
        hi = np.where(observed, scores + tiebreak, -np.inf)
        lo = np.where(observed, scores + tiebreak, np.inf)
        pos = np.argsort(-hi, axis=1, kind="stable")[:, :top_k]
        neg = np.argsort(lo, axis=1, kind="stable")[:, :last_k]
        pos_score = np.take_along_axis(np.where(observed, scores, -np.inf), pos, axis=1)
        neg_score = np.take_along_axis(np.where(observed, scores, np.inf), neg, axis=1)
        pos_ok = pos_score > 0  # RouterDC: skip a positive that did not do well
        neg_ok = neg_score[:, None, :] < pos_score[:, :, None]  # (n, top_k, last_k)
        self._pos = torch.from_numpy(pos)
        self._neg = torch.from_numpy(neg)
        self._pos_ok = torch.from_numpy(pos_ok)
        self._neg_ok = torch.from_numpy(neg_ok)
        self._group = torch.from_numpy(self._group_ids(train, emb, fit_idx))

    def _group_ids(self, train: RoutingDataset, emb: np.ndarray, fit_idx: np.ndarray) -> np.ndarray:
        if self.groups == "task" and train.tasks is not None:
            labels = [train.tasks[i] for i in fit_idx]
            names = {t: g for g, t in enumerate(sorted(set(labels)))}
            return np.array([names[t] for t in labels], dtype=np.int64)
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        k = min(self.n_clusters, len(fit_idx))
        with threadpool_limits(1):  # small problem: threads only add overhead
            km = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(emb[fit_idx])
        return km.labels_.astype(np.int64)

    def _build(self, d: int, m: int) -> Any:
        return _routerdc_module(d, m, self.hidden, self.dim)

    def _batch_loss(self, module: Any, idx: Any) -> Any:
        import torch

        sim, h = module(self._x[idx])
        logits = sim / self.temperature
        pos, neg = self._pos[idx], self._neg[idx]
        pos_ok, neg_ok = self._pos_ok[idx], self._neg_ok[idx]
        pos_logit = torch.gather(logits, 1, pos)  # (b, top_k)
        neg_logit = torch.gather(logits, 1, neg)  # (b, last_k)
        neg_logit = torch.where(neg_ok, neg_logit[:, None, :], torch.full_like(neg_ok, -1e9, dtype=logits.dtype))
        both = torch.cat([pos_logit[:, :, None], neg_logit], dim=2)  # (b, top_k, 1 + last_k)
        nll = -(both.log_softmax(dim=2)[:, :, 0])
        usable = pos_ok & neg_ok.any(dim=2)
        loss = (nll * usable).sum() / usable.sum().clamp_min(1)
        if self.sample_weight > 0:
            loss = loss + self.sample_weight * self._sample_loss(h, self._group[idx])
        return loss

    def _sample_loss(self, h: Any, group: Any) -> Any:
        """InfoNCE over one same-group prompt and ``n_negatives`` other-group prompts of the batch."""
        import torch

        b = h.shape[0]
        same = group[:, None] == group[None, :]
        other = ~same
        has = other.sum(dim=1) >= self.n_negatives
        if not bool(has.any()):
            return h.sum() * 0.0
        rand = torch.rand(b, b)
        pos = torch.where(same, rand, torch.full_like(rand, -1.0)).argmax(dim=1)  # a random same-group prompt
        neg = torch.where(other, rand, torch.full_like(rand, -1.0)).topk(self.n_negatives, dim=1).indices
        sim = (h @ h.T) / self.temperature
        cand = torch.cat([pos[:, None], neg], dim=1)
        logits = torch.gather(sim, 1, cand)
        nll = -logits.log_softmax(dim=1)[:, 0]
        return nll[has].mean()

    def _scores(self, module: Any, x: Any) -> Any:
        return module(x)[0]
