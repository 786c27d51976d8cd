"""The package's shape: no import cycle between modules, modules of one idea (bounded size), production code
separate from the test helpers of finerouter.testing, and docstrings without measured figures."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "finerouter"
#: A module larger than this holds more than one idea (the redesign's "~450 lines", with a little slack).
MAX_MODULE_LINES = 480


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _top_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The finerouter modules ``path`` imports when it is itself imported (imports inside functions excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        for sub in [node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node):
            if isinstance(sub, ast.Import):
                names = [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - sub.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in sub.names]
            else:
                continue
            found.update(n for n in names if n in modules and n != this)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_between_modules():
    modules = _modules()
    # a package's __init__ importing its own submodules is how packages re-export; only module-to-module edges
    # (and __init__ reached from outside its package) can form a real cycle
    graph = {}
    for name, path in modules.items():
        edges = _top_level_imports(path, modules)
        if path.name == "__init__.py":
            edges = {e for e in edges if not e.startswith(name + ".")}
        graph[name] = edges
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_hold_one_idea(name):
    lines = len(_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines: split it (one idea per module)"


def test_serving_holds_only_production_code():
    serving = {p.stem for p in (SRC / "serving").rglob("*.py")}
    assert not serving & {"fake_upstream", "upstreams", "servers", "clock", "encoders"}
    imports_helpers = re.compile(r"^\s*(from finerouter\.testing|import finerouter\.testing)", re.MULTILINE)
    for path in (SRC / "serving").rglob("*.py"):
        assert not imports_helpers.search(path.read_text(encoding="utf-8")), f"{path} imports the test helpers"


_MEASURED = re.compile(
    r"\b(?![1-5]\d\ds\b)\d+(\.\d+)?\s*(ms|µs|us|seconds|s|MB|GB|MiB|GiB)\b(?! ?[=(])|\d+(\.\d+)?\s*x (faster|slower)"
)  # HTTP statuses in the plural ("429s") are not durations


def test_docstrings_state_contracts_not_measurements():
    """Benchmark figures live in docs/ with their command; a docstring that quotes a timing or a memory size is
    flagged (constants such as defaults are written as code: ``timeout_s=60``)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for match in _MEASURED.finditer(doc):
                    offenders.append(f"{path.relative_to(SRC)}: {getattr(node, 'name', 'module')}: {match.group(0)!r}")
    assert not offenders, "measured figures in docstrings:\n" + "\n".join(offenders)
