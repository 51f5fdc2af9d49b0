"""The shape of the package (STYLE.md): no import circle, one door from the algebra into
running code, no function too complex to read at once, no stage class tested by name where
stages are planned and resumed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "datapipes"
#: the one lazy import from the pipe algebra into running code (datapipes/running.py)
FACADE = ("datapipes._graph", "datapipes.running")
MAX_COMPLEXITY = 20


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere (at the top or in a function),
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{module}.{alias.name}"
                out.add(full if full in modules else module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph, as a path, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (found := visit(w)) is not None:
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)) is not None:
            return found
    return None


def test_the_import_graph_has_no_circle_but_the_one_door() -> None:
    graph = import_graph()
    graph[FACADE[0]].discard(FACADE[1])
    assert _circle(graph) is None, " -> ".join(_circle(graph) or [])


def test_the_algebra_imports_no_running_code() -> None:
    graph = import_graph()
    assert graph["datapipes._graph"] == {"datapipes._seeds", FACADE[1]}
    assert "datapipes.running" in import_graph()["datapipes._graph"]


def test_a_circle_is_found() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None


def test_no_function_is_too_complex_to_read_at_once() -> None:
    radon = pytest.importorskip("radon.complexity", reason="radon is in the dev extra")
    too_complex = [
        f"{path.relative_to(PACKAGE.parent)}:{block.lineno} {block.fullname} ({block.complexity})"
        for path in sorted(PACKAGE.rglob("*.py"))
        for block in radon.cc_visit(path.read_text())
        if block.complexity > MAX_COMPLEXITY
    ]
    assert not too_complex, too_complex


CONCRETE_STAGES = ("Batch", "Take", "Skip", "Enumerate", "Interleave", "Prefetch",
                   "ParallelMap", "Collate", "ShardByRank", "FromSequence", "FromArrays",
                   "FromIterable", "Mix", "Cache", "Augment", "Sample", "Split", "Map")


RUNNING_CODE = ["plan.py", "loader.py", "running.py",
                *sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "executors").glob("*.py"))]


@pytest.mark.parametrize("module", RUNNING_CODE)
def test_the_planner_and_the_executors_ask_stages_never_test_their_class(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    tested = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance"
        and any(name in ast.unparse(node.args[1]) for name in CONCRETE_STAGES)
    ]
    assert not tested, tested


def test_a_backend_is_found_by_name_and_a_new_one_is_one_registration() -> None:
    import concurrent.futures

    import datapipes as dp
    from datapipes.executors import protocol
    from datapipes.testing import assert_matches_reference

    mine = protocol.Backend("my-threads", "datapipes.executors.pools:ThreadPool",
                            lambda n: concurrent.futures.ThreadPoolExecutor(n))
    protocol.register_backend(mine)
    try:
        pipe = dp.from_sequence(range(30)) | dp.shuffle() | dp.batch(4)
        assert_matches_reference(pipe, workers=2, backend="my-threads")
        assert list(dp.from_sequence(range(5)) | dp.parallel_map(abs, workers=2,
                                                                  backend="my-threads")) \
            == [0, 1, 2, 3, 4]
    finally:
        del protocol._BACKENDS["my-threads"]
    with pytest.raises(ValueError, match="compile: backend must be"):
        dp.from_sequence(range(3)).compile(backend="my-threads")
