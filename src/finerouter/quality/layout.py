"""Where the quality estimator's task adapters live in its stacked weight arrays.

Task ``t`` has one adapter per candidate model; the adapters of all tasks are stacked along one axis of ``A``
*slots*, task by task, so task ``t`` owns the contiguous slots ``[task_offsets[t], task_offsets[t + 1])``.
Training (:mod:`finerouter.quality.training`) and numpy inference (:mod:`finerouter.quality.inference`) both
read this layout; it depends on numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdapterLayout:
    """The slot layout of the task adapters for ``T`` tasks over ``m`` models.

    Attributes:
        task_offsets: (T + 1,) int64; task ``t`` owns slots ``[task_offsets[t], task_offsets[t + 1])``.
        task_sizes: (T,) int64 number of candidates (adapters) of each task.
        slot_model: (A,) int64 the model each slot's adapter scores.
        slot_task: (A,) int64 the task each slot belongs to.
        slot_table: (T, m) int64 the slot of (task, model), -1 where the model is not a candidate of the task
            (its general adapter scores it).
        general_runs: per task, the runs ``[a, b)`` of consecutive non-candidate models: a single prompt of the
            task needs only those models' general adapters (contiguous column blocks of the stacked general
            first layer).
    """

    task_offsets: np.ndarray
    task_sizes: np.ndarray
    slot_model: np.ndarray
    slot_task: np.ndarray
    slot_table: np.ndarray
    general_runs: list[list[tuple[int, int]]]

    @classmethod
    def build(cls, candidates: list[list[int]], n_models: int) -> AdapterLayout:
        """The layout of ``candidates`` (per task, its candidate model indices, in adapter order)."""
        sizes = np.array([len(c) for c in candidates], dtype=np.int64)
        offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        slot_model = np.array([c for cs in candidates for c in cs], dtype=np.int64)
        slot_task = np.repeat(np.arange(len(candidates), dtype=np.int64), sizes)
        table = np.full((len(candidates), n_models), -1, dtype=np.int64)
        if slot_model.size:
            table[slot_task, slot_model] = np.arange(slot_model.size)
        runs: list[list[tuple[int, int]]] = []
        for row in table:
            non_candidates = np.flatnonzero(row < 0)
            cuts = np.flatnonzero(np.diff(non_candidates) != 1) + 1
            runs.append([(int(r[0]), int(r[-1]) + 1) for r in np.split(non_candidates, cuts) if r.size])
        return cls(offsets, sizes, slot_model, slot_task, table, runs)

    @property
    def n_slots(self) -> int:
        """A: the number of task adapters."""
        return int(self.slot_model.size)

    def units(
        self, rows: np.ndarray, labels: np.ndarray, chunk: int, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Group the task-labelled ``rows`` into units: a chunk of at most ``chunk`` rows of one task, paired with
        one of that task's adapter slots (so each chunk appears once per candidate of its task).

        Rows labelled Others (-1) or with a task without candidates are left out. With ``rng``, rows are shuffled
        inside each task before chunking (training); without, they keep their order (inference, dev loss).

        Returns:
            unit_rows: (U, chunk) int64 row indices, -1 = padding.
            unit_slots: (U,) int64 adapter slot of each unit.
        """
        sizes = self.task_sizes
        rows = rows[(labels[rows] >= 0)]
        rows = rows[sizes[labels[rows]] > 0]
        if rows.size == 0:
            return np.zeros((0, chunk), dtype=np.int64), np.zeros(0, dtype=np.int64)
        tasks = labels[rows]
        key = rng.random(rows.size) if rng is not None else np.arange(rows.size)
        order = np.lexsort((key, tasks))
        rows, tasks = rows[order], tasks[order]
        starts = np.flatnonzero(np.r_[True, tasks[1:] != tasks[:-1]])
        run_sizes = np.diff(np.r_[starts, rows.size])
        rank = np.arange(rows.size) - np.repeat(starts, run_sizes)
        new_chunk = rank % chunk == 0
        chunk_id = np.cumsum(new_chunk) - 1
        n_chunks = int(chunk_id[-1]) + 1
        chunk_rows = np.full((n_chunks, chunk), -1, dtype=np.int64)
        chunk_rows[chunk_id, rank % chunk] = rows
        chunk_task = tasks[new_chunk]
        repeats = sizes[chunk_task]
        unit_chunk = np.repeat(np.arange(n_chunks), repeats)
        first = np.repeat(np.cumsum(repeats) - repeats, repeats)
        unit_slots = np.repeat(self.task_offsets[chunk_task], repeats) + (np.arange(unit_chunk.size) - first)
        return chunk_rows[unit_chunk], unit_slots.astype(np.int64)


__all__ = ["AdapterLayout"]
