"""Numpy inference of the quality estimator: every adapter evaluated from stacked weights, no torch.

The general first layers are one ``(d, m * h)`` matrix (the model half ``v_M W1_m + b1`` folded into one
``(m, h)`` bias), the task first layers one ``(d, A, h)`` array, so a task's contiguous adapters ``[lo, hi)`` are
the strided ``(d, k * h)`` matrix ``task_w1[:, lo:hi].reshape(d, -1)`` (no copy). A single prompt costs one
``(d,) x (d, m * h)`` product plus one product over the adapters of its task; a batch of many tasks is grouped
into (chunk of one task's rows, adapter) units evaluated with batched products. There is no Python loop over
tasks.
"""

from __future__ import annotations

import math

import numpy as np

from finerouter.quality.layout import AdapterLayout

GENERAL_BLOCK_ROWS = 2048  # rows per block of the general adapters (bounds memory at rows * m * h floats)
UNIT_BLOCK_BYTES = 64 << 20  # gathered task first-layer weights per block of units
FEW_CANDIDATES = 2  # a single prompt whose task has at most this many candidates takes the fused path
_ONE_ROW = np.zeros(1, dtype=np.int64)


class StackedAdapters:
    """The fitted adapters, laid out for numpy inference.

    Args:
        general: the general adapters: ``model_embeddings`` (m, q), ``w1_prompt`` (d, m, h), ``w1_model``
            (m, q, h), ``b1`` (m, h), ``w2`` (m, h), ``b2`` (m,).
        task: the task adapters, model half folded into ``b1``: ``w1`` (A, d, h), ``b1`` (A, h), ``w2`` (A, h),
            ``b2`` (A,).
        layout: where each task adapter lives (:class:`~finerouter.quality.layout.AdapterLayout`).
    """

    def __init__(self, general: dict[str, np.ndarray], task: dict[str, np.ndarray], layout: AdapterLayout) -> None:
        f32 = np.float32
        self.layout = layout
        self.general = {k: np.ascontiguousarray(v, dtype=f32) for k, v in general.items()}
        d, m, h = self.general["w1_prompt"].shape
        self.general_w1 = self.general["w1_prompt"].reshape(d, m * h)  # (d, m * h)
        self.general_b1 = np.ascontiguousarray(
            np.einsum("mq,mqh->mh", self.general["model_embeddings"], self.general["w1_model"]) + self.general["b1"],
            dtype=f32,
        )  # (m, h): v_M W1_m + b1, folded
        self.general_w2 = self.general["w2"]  # (m, h)
        self.general_b2 = self.general["b2"]  # (m,)
        self.task_w1 = np.ascontiguousarray(np.asarray(task["w1"], dtype=f32).transpose(1, 0, 2))  # (d, A, h)
        self.task_b1 = np.ascontiguousarray(task["b1"], dtype=f32)  # (A, h)
        self.task_w2 = np.ascontiguousarray(task["w2"], dtype=f32)  # (A, h)
        self.task_b2 = np.ascontiguousarray(task["b2"], dtype=f32)  # (A,)

    @classmethod
    def general_only(cls, general: dict[str, np.ndarray]) -> StackedAdapters:
        """The general adapters alone (no task adapter), for :meth:`predict_general`."""
        d, m, h = np.shape(general["w1_prompt"])
        f32 = np.float32
        task = {"w1": np.zeros((0, d, h), f32), "b1": np.zeros((0, h), f32), "w2": np.zeros((0, h), f32),
                "b2": np.zeros(0, f32)}  # fmt: skip
        return cls(general, task, AdapterLayout.build([], m))

    def general_block(self, x: np.ndarray, first: int, stop: int) -> np.ndarray:
        """General adapters of models ``first..stop-1``: (r, d) -> (r, stop - first), from a column block of the
        stacked first layer."""
        h = self.general_b1.shape[1]
        hidden = (x @ self.general_w1[:, first * h : stop * h]).reshape(x.shape[0], stop - first, h)
        hidden += self.general_b1[first:stop]
        np.maximum(hidden, 0.0, out=hidden)
        return np.einsum("rkh,kh->rk", hidden, self.general_w2[first:stop]) + self.general_b2[first:stop]

    def predict_general(self, emb: np.ndarray) -> np.ndarray:
        """General adapters only: checked (n, d) float32 embeddings -> (n, m) float32 scores."""
        n = emb.shape[0]
        m = self.general_b1.shape[0]
        out = np.empty((n, m), dtype=np.float32)
        for start in range(0, n, GENERAL_BLOCK_ROWS):
            x = emb[start : start + GENERAL_BLOCK_ROWS]
            out[start : start + x.shape[0]] = self.general_block(x, 0, m)
        return out

    def _predict_one_fused(self, emb: np.ndarray, task: int) -> np.ndarray:
        """One prompt of ``task`` with few candidates: every general adapter in one product, then the task's.

        It also computes the candidates' general columns (then overwritten), in exchange for two products instead
        of one per run of non-candidate models: fewer, larger numpy calls.
        """
        task_w1 = self.task_w1
        d, h = task_w1.shape[0], task_w1.shape[2]
        m = self.general_b1.shape[0]
        lo, hi = int(self.layout.task_offsets[task]), int(self.layout.task_offsets[task + 1])
        hidden = (emb @ self.general_w1).reshape(m, h)
        hidden += self.general_b1
        np.maximum(hidden, 0.0, out=hidden)
        out = np.einsum("kh,kh->k", hidden, self.general_w2) + self.general_b2
        task_hidden = (emb @ task_w1[:, lo:hi, :].reshape(d, (hi - lo) * h)).reshape(hi - lo, h)
        task_hidden += self.task_b1[lo:hi]
        np.maximum(task_hidden, 0.0, out=task_hidden)
        out[self.layout.slot_model[lo:hi]] = (
            np.einsum("kh,kh->k", task_hidden, self.task_w2[lo:hi]) + self.task_b2[lo:hi]
        )
        return out[None, :]

    def predict(self, emb: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """Task adapters for each prompt's task candidates, general adapters elsewhere.

        Args:
            emb: checked (n, d) float32 embeddings.
            labels: checked (n,) int64 task ids, -1 = Others (general adapters only); None = all Others.

        Returns:
            (n, m) float32 predicted scores.
        """
        layout = self.layout
        if labels is None or layout.n_slots == 0:
            return self.predict_general(emb)
        task_w1, task_b1, task_w2, task_b2 = self.task_w1, self.task_b1, self.task_w2, self.task_b2
        d, h = task_w1.shape[0], task_w1.shape[2]
        if labels.shape[0] == 1:
            # The single-prompt fast path: general adapters for the non-candidate models only (the candidates'
            # columns come from the task adapters), so the weights read stay ~ m adapters, not m + k.
            task = int(labels[0])
            if task < 0 or layout.task_sizes[task] == 0:
                return self.predict_general(emb)
            if layout.task_sizes[task] <= FEW_CANDIDATES:
                return self._predict_one_fused(emb, task)
            out = np.empty((1, self.general_b1.shape[0]), dtype=np.float32)
            for first, stop in layout.general_runs[task]:
                out[:, first:stop] = self.general_block(emb, first, stop)
            rows, tasks = _ONE_ROW, labels
        else:
            out = self.predict_general(emb)
            rows = np.flatnonzero(labels >= 0)
            rows = rows[layout.task_sizes[labels[rows]] > 0]
            tasks = labels[rows]
        if rows.size == 0:
            return out
        if tasks.size == 1 or np.all(tasks == tasks[0]):
            # One task (e.g. a single prompt): its adapters are contiguous, one product over a strided view.
            lo, hi = int(layout.task_offsets[tasks[0]]), int(layout.task_offsets[tasks[0] + 1])
            hidden = (emb[rows] @ task_w1[:, lo:hi, :].reshape(d, (hi - lo) * h)).reshape(rows.size, hi - lo, h)
            hidden += task_b1[lo:hi]
            np.maximum(hidden, 0.0, out=hidden)
            pred = np.einsum("rkh,kh->rk", hidden, task_w2[lo:hi]) + task_b2[lo:hi]  # (r, k)
            out[rows[:, None], layout.slot_model[None, lo:hi]] = pred
            return out
        # Many tasks: group rows into (chunk of one task's rows, adapter) units and use batched products.
        # Chunk length ~ rows per task present (at most 64), so that padding stays small.
        chunk = int(min(64, max(1, math.ceil(rows.size / np.unique(tasks).size))))
        unit_rows, unit_slots = layout.units(rows, labels, chunk, None)
        step = max(1, UNIT_BLOCK_BYTES // (4 * d * h))
        for start in range(0, unit_slots.size, step):
            block_rows, block_slots = unit_rows[start : start + step], unit_slots[start : start + step]
            valid = block_rows >= 0
            x = emb[np.maximum(block_rows, 0)]  # (U, c, d)
            hidden = np.matmul(x, task_w1[:, block_slots, :].transpose(1, 0, 2))  # (U, c, h)
            hidden += task_b1[block_slots][:, None, :]
            np.maximum(hidden, 0.0, out=hidden)
            pred = np.matmul(hidden, task_w2[block_slots][:, :, None])[..., 0] + task_b2[block_slots][:, None]
            cols = np.broadcast_to(layout.slot_model[block_slots][:, None], block_rows.shape)
            out[block_rows[valid], cols[valid]] = pred[valid]
        return out


__all__ = ["FEW_CANDIDATES", "GENERAL_BLOCK_ROWS", "UNIT_BLOCK_BYTES", "StackedAdapters"]
