"""The README tells the truth: its Python example runs as written, and its results tables match bench/results."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_starts_with_the_two_setup_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block[0].startswith("bash install.sh && .venv/bin/finerouter demo")
    assert block[1].startswith("bash install.sh && .venv/bin/python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash install.sh && .venv/bin/finerouter demo" in ci
    assert "bash install.sh && .venv/bin/python -m pytest" in ci


@pytest.mark.slow
def test_quick_start_example_runs_as_written(tmp_path, monkeypatch):
    example = _python_blocks(README.read_text(encoding="utf-8"))[0]
    assert "FineRouter" in example and "route" in example
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})
    assert (tmp_path / "my_router" / "manifest.json").is_file()


def test_results_block_matches_bench_results():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "bench" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = README.read_text(encoding="utf-8")
    block = text.split(mod.START, 1)[1].split(mod.END, 1)[0]
    assert block.strip() == mod.render().strip(), "README results differ: run bench/readme_tables.py --write"
