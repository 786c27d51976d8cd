"""The pieces of encoder fine-tuning that hold state: the score head, the masked MSE, the per-epoch checkpoint and
the output folder (:mod:`finerouter.encoders.finetune` runs the training).

The **score head** predicts every model's quality from a prompt embedding: one 2-layer MLP per model (stacked
``(m, d, h)`` weights, so all models run in one ``einsum``), or one linear map per model when ``hidden == 0``. It
exists to give the encoder a routing signal; the router later trains its own Stage 2 on the fine-tuned vectors.

The **checkpoint** (a folder beside the output, ``<out>.checkpoint``) is what a killed run resumes from:

```
<out>.checkpoint/state.json             epoch, global step, seed, settings, data hash, dev history
<out>.checkpoint/model/                 the encoder after that epoch (sentence-transformers folder, safetensors)
<out>.checkpoint/head.safetensors       the score head after that epoch
<out>.checkpoint/optimizer.pt           AdamW's state: tensors and numbers only, read with weights_only=True
<out>.checkpoint/best/                  the best epoch's model/ and head.safetensors, when it is not the last one
```

The whole folder is written beside itself and renamed into place (:func:`finerouter._io.atomic_directory`), so a
kill at any moment leaves the previous epoch's checkpoint or the new one, never a mixture. No pickle: weights are
safetensors, the optimizer file is loaded with ``torch.load(weights_only=True)``, which unpickles tensors and
plain containers only.

The **output folder** is the best epoch's ``model/`` plus ``finetune.json`` (the base encoder, the parameters, the
data's hash, the dev history; no timings, so the same run gives the same folder), written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finerouter._io import atomic_directory, atomic_write_json
from finerouter._training import json_safe
from finerouter.errors import ArtifactError, ParameterError

if TYPE_CHECKING:
    from finerouter.data.dataset import RoutingDataset

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".checkpoint"
STATE_FILE = "state.json"
HEAD_FILE = "head.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
MODEL_DIR = "model"
BEST_DIR = "best"
STATE_FORMAT = 1
RECORD_FILE = "finetune.json"
"""Written into the output folder: the base encoder, the parameters, the data's hash and the dev history."""


def checkpoint_dir(out_dir: Path) -> Path:
    """Where the run writing ``out_dir`` keeps its checkpoint: the sibling ``<out_dir>.checkpoint``."""
    return out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX)


def remove_stale_temporaries(final: Path) -> None:
    """Delete the temporary folders an interrupted atomic write of ``final`` left beside it (``.<name>.*.tmp`` and
    ``.<name>.*.old``); only this run writes ``final``, so they are garbage."""
    if not final.parent.is_dir():
        return
    for path in final.parent.glob(f".{final.name}.*"):
        if path.suffix in (".tmp", ".old"):
            logger.info("removing %s, left by an interrupted write", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------- the head
def init_head(dim: int, n_models: int, hidden: int, mean_scores: np.ndarray, seed: int) -> dict[str, Any]:
    """Fresh head parameters (torch tensors with ``requires_grad``): output biases start at each model's mean
    score ``mean_scores: (m,)``, so the first steps fit the variation around it rather than the level."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    bias = torch.as_tensor(np.nan_to_num(mean_scores, nan=0.5), dtype=torch.float32)
    if hidden:
        params = {
            "w1": torch.randn(n_models, dim, hidden, generator=gen) / dim**0.5,
            "b1": torch.zeros(n_models, hidden),
            "w2": torch.randn(n_models, hidden, generator=gen) * (0.1 / hidden**0.5),
            "b2": bias,
        }
    else:
        params = {"w": torch.randn(n_models, dim, generator=gen) * (0.1 / dim**0.5), "b": bias}
    return {k: v.contiguous().requires_grad_(True) for k, v in params.items()}


def head_forward(head: dict[str, Any], emb: Any) -> Any:
    """Predicted scores ``(b, m)`` from unit-norm embeddings ``emb: (b, d)``."""
    import torch

    if "w1" in head:
        hid = torch.relu(torch.einsum("bd,mdh->bmh", emb, head["w1"]) + head["b1"])
        return torch.einsum("bmh,mh->bm", hid, head["w2"]) + head["b2"]
    return emb @ head["w"].T + head["b"]


def observed_mse(pred: Any, target: Any, observed: Any) -> Any:
    """Mean squared error over the observed entries only: ``target`` ``(b, m)`` holds 0 where ``observed`` is
    False, and those entries give neither loss nor gradient. An all-unobserved batch gives 0."""
    import torch

    diff = torch.where(observed, pred - target, torch.zeros_like(pred))
    return diff.pow(2).sum() / observed.sum().clamp(min=1)


def head_state(head: dict[str, Any]) -> dict[str, Any]:
    """Detached CPU copies of the head's tensors (for saving, or for keeping the best epoch in memory)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in head.items()}


def load_head(path: Path, device: Any) -> dict[str, Any]:
    """Head tensors from a safetensors file, on ``device``, trainable."""
    from safetensors.torch import load_file

    return {k: v.to(device).requires_grad_(True) for k, v in load_file(str(path)).items()}


# ------------------------------------------------------------------------------------------------- checkpoints
def write_checkpoint(ckpt: Path, *, state: dict[str, Any], st: Any, head: dict[str, Any], optimizer: Any) -> None:
    """Replace the checkpoint folder ``ckpt`` atomically by one holding this epoch's ``state``, encoder ``st``,
    ``head`` and ``optimizer``, plus the best epoch's weights when ``state["best_epoch"]`` is an earlier epoch.

    An earlier best epoch's files come from the checkpoint being replaced, which holds them (it was written when
    that epoch was the best or later), as hard links where the file system allows: their content never changes.
    """
    import torch
    from safetensors.torch import save_file

    previous = read_state(ckpt) if (ckpt / STATE_FILE).is_file() else None
    with atomic_directory(ckpt) as tmp:
        st.save(str(tmp / MODEL_DIR), create_model_card=False)
        save_file(head_state(head), str(tmp / HEAD_FILE))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        if state["best_epoch"] != state["epoch"]:
            if previous is None or previous["best_epoch"] != state["best_epoch"]:
                raise ArtifactError(f"{ckpt}: the weights of best epoch {state['best_epoch']} are not in it")
            source = best_folder(ckpt, previous)
            link_tree(source / MODEL_DIR, tmp / BEST_DIR / MODEL_DIR)
            link_tree(source / HEAD_FILE, tmp / BEST_DIR / HEAD_FILE)
        _fsync_tree(tmp)
        atomic_write_json(tmp / STATE_FILE, json_safe(state))


def read_state(ckpt: Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder; ArtifactError naming the file when it is unreadable."""
    path = ckpt / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the fine-tuning checkpoint state ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ArtifactError(f"{path}: not a fine-tuning checkpoint of format {STATE_FORMAT}")
    return state


def best_folder(ckpt: Path, state: dict[str, Any]) -> Path:
    """The folder (holding ``model/`` and ``head.safetensors``) of the checkpoint's best epoch."""
    return ckpt if state["best_epoch"] == state["epoch"] else ckpt / BEST_DIR


def load_optimizer_state(path: Path) -> dict[str, Any]:
    """AdamW's saved state dict, read without unpickling anything but tensors and plain containers."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot read the optimizer state ({exc})") from exc


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) the file ``src``, or every file under the folder ``src``, to
    ``dst``, keeping the layout. Used for files that are never modified once written."""
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for path in files:
        target = dst if path == src else dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


# --------------------------------------------------------------------------------------------- output folder
def write_output(out_dir: Path, ckpt: Path, state: dict[str, Any], dataset: RoutingDataset) -> dict[str, Any]:
    """Write the best epoch's encoder and the run's record to ``out_dir`` atomically, then drop the checkpoint."""
    from finerouter import __version__

    keep = ("epoch", "train_mse", "dev_mse")
    record = {
        "format": 1, "finerouter_version": __version__, "settings": state["settings"],
        "data": {"hash": state["data"], "n_prompts": dataset.n_prompts, "n_fit": state["n_fit"],
                 "n_dev": state["n_dev"], "models": list(dataset.models)},
        "baseline_dev_mse": state["baseline_dev_mse"], "best_epoch": state["best_epoch"],
        "best_dev_mse": state["best_dev_mse"], "epochs_run": state["epoch"], "stopped_early": state["stopped"],
        "history": [{k: h[k] for k in keep} for h in state["history"]],
    }  # fmt: skip
    record = json_safe(record)
    if state["n_dev"] and state["best_epoch"] == 0:
        logger.warning("fine-tuning did not lower the dev MSE of the frozen encoder (%.5f): %s holds the base "
                       "encoder's weights", state["baseline_dev_mse"], out_dir)
    with atomic_directory(out_dir) as tmp:
        link_tree(best_folder(ckpt, state) / MODEL_DIR, tmp)
        atomic_write_json(tmp / RECORD_FILE, record)
    shutil.rmtree(ckpt, ignore_errors=True)
    return {**record, "history": json_safe(state["history"])}  # with the timings, for this process


def read_record(out_dir: Path) -> dict[str, Any] | None:
    """The record of an earlier output in ``out_dir`` (None when there is none or it is unreadable)."""
    try:
        record = json.loads((out_dir / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == 1 else None


def check_out_dir(out_dir: Path) -> None:
    """Refuse (ParameterError) an ``out_dir`` that is a file, or a folder holding anything but an earlier output."""
    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        raise ParameterError(f"{out_dir}: is a file; the fine-tuned encoder is written as a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / RECORD_FILE).is_file():
        raise ParameterError(
            f"{out_dir}: holds files that are not a fine-tuned encoder (no {RECORD_FILE}); choose a new or empty "
            "folder (an earlier fine-tuned encoder there would be replaced)"
        )


def check_same_run(state: dict[str, Any], settings: dict[str, Any], data_hash: str, ckpt: Path) -> None:
    """Refuse to resume a checkpoint written with other parameters, another base encoder or other data."""
    if state.get("data") != data_hash:
        raise ParameterError(f"{ckpt}: the checkpoint was written for other training data; cannot resume on this data")
    saved = state.get("settings", {})
    diffs = [f"{k}={saved.get(k)!r} there, {v!r} here" for k, v in settings.items() if saved.get(k) != v]
    if diffs:
        raise ParameterError(f"{ckpt}: the checkpoint was written with other settings ({'; '.join(diffs)}); "
                             "resume with the same ones, or delete the checkpoint to start again")


def data_hash(dataset: RoutingDataset) -> str:
    """SHA-256 of the prompts, model names and scores (NaN positions included)."""
    h = hashlib.sha256()
    for text in (*dataset.models, "\0", *dataset.prompts):
        h.update(text.encode("utf-8") + b"\0")
    h.update(np.ascontiguousarray(np.nan_to_num(dataset.scores, nan=-1.0), dtype=np.float64).tobytes())
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk before the folder is renamed into place."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


__all__ = [
    "CHECKPOINT_SUFFIX",
    "RECORD_FILE",
    "best_folder",
    "check_out_dir",
    "check_same_run",
    "checkpoint_dir",
    "data_hash",
    "head_forward",
    "init_head",
    "link_tree",
    "load_head",
    "load_optimizer_state",
    "observed_mse",
    "read_record",
    "read_state",
    "remove_stale_temporaries",
    "write_checkpoint",
    "write_output",
]
