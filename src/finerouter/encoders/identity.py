"""How a local encoder folder is named: by a content hash that does not depend on where the folder lies, so
embedding caches and router artifacts move between machines."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sample_hash(folder: Path) -> str:
    """Cheap content hash of a local model folder: small config files in full, weights sampled.

    Weight files can be gigabytes, so from each we hash its size and three 64 KiB windows (start, middle,
    end); two checkpoints fine-tuned from the same base differ in every window.
    """
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or rel.lower().startswith("readme"):
            continue
        size = path.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if path.suffix in {".json", ".txt", ".model"} and size <= (4 << 20):
            h.update(path.read_bytes())
        elif path.suffix in {".safetensors", ".bin", ".pt", ".onnx"}:
            with open(path, "rb") as fh:
                for start in (0, max(0, size // 2 - (1 << 15)), max(0, size - (1 << 16))):
                    fh.seek(start)
                    h.update(fh.read(1 << 16))
    return h.hexdigest()[:12]


__all__ = ["sample_hash"]
