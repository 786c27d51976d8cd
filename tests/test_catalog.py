"""TaskCatalog: matrices, JSON + safetensors round trip, tamper detection, markdown cards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter.discovery import Task, TaskCatalog
from finerouter.discovery.catalog import OthersGroup, one_line
from finerouter.errors import ArtifactError

MODELS = ["m-a", "m-b", "m-c"]


def _catalog(with_nan: bool = False, empty_others: bool = False) -> TaskCatalog:
    t0 = Task(
        id=0, size=3, members=np.array([0, 2, 5]), center=np.array([1.0, 0.0], dtype=np.float32),
        fused_ranking=["m-b", "m-a", "m-c"], candidates=["m-b"],
        median_scores={"m-a": 0.5, "m-b": 0.9, "m-c": float("nan") if with_nan else 0.1},
        examples=["What is 2+2?", "Add 3 and 4 | quickly"], description="Add small numbers", coverage=1.0,
    )
    t1 = Task(
        id=1, size=2, members=np.array([1, 3]), center=np.array([0.0, 1.0], dtype=np.float32),
        fused_ranking=["m-c", "m-a", "m-b"], candidates=["m-c", "m-a"],
        median_scores={"m-a": 0.4, "m-b": 0.2, "m-c": 0.7}, examples=["Write a haiku"],
        description="Write short poems", coverage=0.8,
    )
    members = np.zeros(0, dtype=np.int64) if empty_others else np.array([4])
    others = OthersGroup(size=members.size, members=members, median_scores={"m-a": 0.3, "m-b": 0.3, "m-c": 0.3})
    return TaskCatalog(MODELS, [t0, t1], others, dim=2, n_prompts=5 + members.size, info={"params": {"k": 5}})


def test_matrices():
    cat = _catalog()
    assert cat.n_tasks == 2
    assert cat.centers().shape == (2, 2) and cat.centers().dtype == np.float32
    med = cat.median_matrix()
    assert med.shape == (3, 3)
    assert med[0].tolist() == [0.5, 0.9, 0.1] and med[2].tolist() == [0.3, 0.3, 0.3]  # last row: Others
    assert cat.candidate_mask().tolist() == [[False, True, False], [True, False, True]]
    assert cat.labels().tolist() == [0, 1, 0, 1, -1, 0]
    assert cat.share_in_tasks == pytest.approx(5 / 6)
    assert cat.mean_candidates == 1.5


def test_round_trip(tmp_path):
    cat = _catalog(with_nan=True)
    cat.save(tmp_path / "cat")
    files = sorted(p.name for p in (tmp_path / "cat").iterdir())
    assert files == ["catalog.json", "catalog.safetensors"]  # no temporary leftovers, no pickle
    back = TaskCatalog.load(tmp_path / "cat")
    assert back.model_names == MODELS and back.n_tasks == 2 and back.dim == 2 and back.n_prompts == 6
    assert np.array_equal(back.centers(), cat.centers())
    assert np.array_equal(back.median_matrix(), cat.median_matrix(), equal_nan=True)
    for a, b in zip(cat.tasks, back.tasks):
        assert np.array_equal(a.members, b.members) and b.members.dtype == np.int64
        assert (a.fused_ranking, a.candidates, a.examples, a.description, a.coverage) == (
            b.fused_ranking, b.candidates, b.examples, b.description, b.coverage
        )
    assert np.array_equal(back.others.members, [4]) and back.others.size == 1
    assert back.info == {"params": {"k": 5}}
    doc = json.loads((tmp_path / "cat" / "catalog.json").read_text())
    assert doc["tasks"][0]["median_scores"]["m-c"] is None  # NaN is written as null
    assert {"id", "size", "candidates", "median_scores", "description"} <= set(doc["tasks"][0])
    assert doc["others"]["size"] == 1


def test_save_overwrites_in_place(tmp_path):
    _catalog().save(tmp_path)
    cat = _catalog()
    cat.tasks[0].description = "changed"
    cat.save(tmp_path)
    assert TaskCatalog.load(tmp_path).tasks[0].description == "changed"


def test_tampering_and_missing_files(tmp_path):
    _catalog().save(tmp_path)
    arrays = tmp_path / "catalog.safetensors"
    raw = bytearray(arrays.read_bytes())
    raw[-1] ^= 0xFF
    arrays.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="SHA-256"):
        TaskCatalog.load(tmp_path)
    arrays.unlink()
    with pytest.raises(ArtifactError, match="missing task catalog file"):
        TaskCatalog.load(tmp_path)


def test_bad_json(tmp_path):
    _catalog().save(tmp_path)
    path = tmp_path / "catalog.json"
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        TaskCatalog.load(tmp_path)
    _catalog().save(tmp_path)
    doc = json.loads(path.read_text())
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="newer than this FineRouter reads"):
        TaskCatalog.load(tmp_path)
    doc["format_version"] = 1
    doc["tasks"][0]["candidates"] = ["not-a-model"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"tasks\[0\]: candidates or fused_ranking name unknown models"):
        TaskCatalog.load(tmp_path)
    doc["tasks"][0]["candidates"] = ["m-b"]
    doc["tasks"][0]["size"] = 7
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="id/size do not match"):
        TaskCatalog.load(tmp_path)


def test_markdown_cards():
    md = _catalog().to_markdown()
    assert md.startswith("# Discovered tasks")
    assert "## Task 0: Add small numbers" in md and "## Task 1: Write short poems" in md
    assert "**Candidates** (1 of 3, covering 100%" in md and "`m-c`, `m-a`" in md
    assert "> Add 3 and 4 \\| quickly" in md  # table-breaking characters escaped
    assert "| `m-b` | 0.900 | yes |" in md
    assert "## Others" in md and "1 prompts in no task." in md
    empty = _catalog(empty_others=True).to_markdown()
    assert "empty: its scores are the medians over all prompts" in empty


def test_task_ids_must_be_ordered():
    cat = _catalog()
    with pytest.raises(ArtifactError, match="task ids must be 0..T-1"):
        TaskCatalog(MODELS, list(reversed(cat.tasks)), cat.others, dim=2, n_prompts=6)


def test_one_line():
    assert one_line("a\n\n b\tc  ") == "a b c"
    assert one_line("x" * 200, max_chars=10) == "x" * 9 + "…"
