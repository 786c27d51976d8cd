"""Where the shared public routing datasets live (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FINEROUTER_DATA_DIR"


def shared_data_dir() -> Path:
    """The folder holding the public datasets: ``$FINEROUTER_DATA_DIR``, else ``../shared/data`` from the
    repository root (found from this file, then from the current directory)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parents[3]
    for base in (repo, Path.cwd()):
        cand = (base / ".." / "shared" / "data").resolve()
        if cand.is_dir():
            return cand
    return (repo / ".." / "shared" / "data").resolve()


def dataset_path(name: str) -> Path:
    """Path of a named shared dataset: ``dcrouter``, ``routerdc`` or ``routerbench_subset``."""
    files = {
        "dcrouter": "dcrouter/dcrouter.parquet",
        "routerdc": "routerdc/routerdc_7models.parquet",
        "routerbench_subset": "routerbench_subset/routerbench_subset.parquet",
    }
    if name not in files:
        from finerouter.errors import ParameterError

        raise ParameterError(f"unknown shared dataset {name!r}; known: {sorted(files)}")
    return shared_data_dir() / files[name]
