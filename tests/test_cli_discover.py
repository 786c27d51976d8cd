"""`finerouter discover` on a small synthetic file, through typer's CliRunner and the real encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from finerouter.cli.main import app
from finerouter.data.synthetic import make_synthetic_routing_data
from finerouter.discovery import TaskCatalog


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthetic.parquet"
    make_synthetic_routing_data(n_prompts=240, n_domains=2, subtasks_per_domain=3, n_models=5, seed=2).write(path)
    return path


def test_discover_writes_catalog_and_summary(data_file, tmp_path, embedding_cache_dir):
    out = tmp_path / "disc"
    res = CliRunner().invoke(
        app,
        ["discover", "--data", str(data_file), "--out", str(out), "--cache-dir", str(embedding_cache_dir),
         "--min-task-size", "8", "--seed", "1"],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "catalog.json").read_text())
    assert doc["n_tasks"] == len(doc["tasks"]) >= 3  # finer than the 2 coarse domains
    for t in doc["tasks"]:
        assert {"id", "size", "candidates", "median_scores", "description"} <= set(t)
        assert t["size"] >= 8 and 1 <= len(t["candidates"]) <= 5
        assert set(t["median_scores"]) == {f"synth-model-{j:02d}" for j in range(5)}
    assert "median_scores" in doc["others"] and "size" in doc["others"]
    assert doc["info"]["params"]["min_task_size"] == 8 and doc["info"]["params"]["seed"] == 1
    md = (out / "tasks.md").read_text()
    assert md.startswith("# Discovered tasks") and "## Task 0:" in md and "## Others" in md
    cat = TaskCatalog.load(out)
    rows = (out / "assignments.csv").read_text().splitlines()
    assert rows[0] == "id,task" and len(rows) == cat.n_prompts + 1
    assert cat.n_prompts >= 235  # 240 generated; the reader merges exact duplicate prompts
    assigned = np.array([int(r.rsplit(",", 1)[1]) for r in rows[1:]])
    assert np.array_equal(assigned, cat.labels())
    # the summary: number of tasks, share of prompts in a task, mean candidates per task of m models
    assert f"tasks: {cat.n_tasks} (refining 2 task labels)\n" in res.output
    assert doc["info"]["refined_task_labels"] is True
    assert f"share of prompts in a task: {cat.share_in_tasks:.1%}" in res.output
    assert f"mean candidates per task: {cat.mean_candidates:.2f} of 5 models" in res.output


def test_discover_label_free(data_file, tmp_path, embedding_cache_dir):
    out = tmp_path / "free"
    res = CliRunner().invoke(
        app, ["discover", "--data", str(data_file), "--out", str(out), "--cache-dir", str(embedding_cache_dir),
              "--label-free"],
    )
    assert res.exit_code == 0, res.output
    cat = TaskCatalog.load(out)
    assert cat.info["refined_task_labels"] is False
    assert f"tasks: {cat.n_tasks}\n" in res.output


def test_bad_options_and_files_fail_cleanly(data_file, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["discover", "--data", str(data_file), "--out", str(tmp_path / "o"), "--k", "1"])
    assert res.exit_code == 2
    assert "The 'k' parameter of TaskDiscovery must be an int in [2, inf). Got 1." in res.output
    res = runner.invoke(app, ["discover", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error:" in res.output
    assert not (tmp_path / "o").exists()


def test_out_keeps_the_users_files(data_file, tmp_path, embedding_cache_dir):
    runner = CliRunner()

    def discover(out, *extra):
        return runner.invoke(
            app, ["discover", "--data", str(data_file), "--out", str(out), "--cache-dir", str(embedding_cache_dir), *extra]
        )

    # a file of the user's, or a folder holding a file of an output's name, is refused before any work
    file = tmp_path / "catalog"
    file.write_text("my file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tasks.md").write_text("my task notes")
    for out, named in ((file, "it is a file"), (mine, "'tasks.md'")):
        res = discover(out)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: not written") and named in lines[0]
        assert "--force" in lines[0]
    assert file.read_text() == "my file" and (mine / "tasks.md").read_text() == "my task notes"
    # other files in --out are never touched, and an earlier run's output is overwritten
    out = tmp_path / "disc"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for _ in range(2):
        res = discover(out)
        assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["assignments.csv", "catalog.json", "catalog.safetensors", "notes.txt", "tasks.md"]
    # --force overwrites the outputs' names, and replaces a file by the folder
    assert discover(mine, "--force").exit_code == 0 and TaskCatalog.load(mine).n_tasks >= 1
    assert discover(file, "--force").exit_code == 0 and TaskCatalog.load(file).n_tasks >= 1
