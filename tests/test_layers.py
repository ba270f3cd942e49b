"""The architecture of DESIGN.md ("Layers"), enforced.

* The import-linter contracts of ``[tool.importlinter]`` in pyproject.toml: the four layers
  (finer inside the protocol core), the core never importing storage or the services, the
  public view never importing member-side modules, and no cycles between sibling modules.
* No import cycle among the modules of ``mlspy.group``, nor anywhere in ``mlspy``: the strongly
  connected components of the module-level import graph all have size 1. Every import counts —
  at top level, inside functions, and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = "mlspy"
GROUP = "mlspy.group"

# The contracts of pyproject.toml this file stands for; dropping one is a change of design.
CONTRACT_IDS = {
    "layers",
    "core-is-sans-io",
    "group-layers",
    "public-view-has-no-member-state",
    "tree-layers",
    "no-cycles",
}

Edges = Mapping[str, set[str]]
MAX_SHOWN = 6  # imports shown per pair of modules (or packages) in a cycle report


# --- import-linter contracts -------------------------------------------------------------------


def test_contracts_are_configured() -> None:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    assert config["root_package"] == PACKAGE
    # Imports under `if TYPE_CHECKING:` tie modules together too; they must be checked.
    assert config.get("exclude_type_checking_imports", False) in (False, "false", "False")
    assert {c["id"] for c in config["contracts"]} >= CONTRACT_IDS


def test_import_contracts() -> None:
    # In a subprocess: the import-linter CLI reconfigures logging (disabling existing loggers)
    # and sys.path for the whole interpreter, which the rest of the session must not inherit.
    # It reads the pyproject.toml of its working directory.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--no-logo",
        ],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"import contracts broken (pyproject.toml):\n{report}"


# --- grimp: strongly connected components ------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """Every import of mlspy: top level, inside functions and under TYPE_CHECKING."""
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=False, cache_dir=None)


@pytest.fixture(scope="module")
def runtime_graph() -> grimp.ImportGraph:
    """The same without TYPE_CHECKING imports, to label those in reports."""
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True, cache_dir=None)


def restricted_edges(graph: grimp.ImportGraph, modules: Iterable[str]) -> dict[str, set[str]]:
    nodes = set(modules)
    return {m: {i for i in graph.find_modules_directly_imported_by(m) if i in nodes} for m in nodes}


def _reachable(edges: Edges, start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def strongly_connected_components(edges: Edges) -> list[list[str]]:
    """The SCCs of a directed graph, each sorted, largest first (fine for a few hundred nodes)."""
    reach = {node: _reachable(edges, node) for node in edges}
    done: set[str] = set()
    components = []
    for node in sorted(edges):
        if node in done:
            continue
        component = sorted(other for other in reach[node] if node in reach[other])
        done.update(component)
        components.append(component)
    return sorted(components, key=lambda c: (-len(c), c))


def _shortest_cycle(edges: Edges, component: list[str]) -> list[str]:
    """A shortest cycle through the first member of a component, as a path a -> ... -> a."""
    start = component[0]
    inside = set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if nxt in inside and nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start]


def _source_file(module: str) -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # the top-level package: imports nothing
    assert spec is not None and spec.submodule_search_locations
    base = Path(next(iter(spec.submodule_search_locations)))
    parts = module.split(".")[1:]
    as_module = base.joinpath(*parts).with_suffix(".py")
    return as_module if parts and as_module.exists() else base.joinpath(*parts, "__init__.py")


def _describe_import(
    graph: grimp.ImportGraph, runtime: grimp.ImportGraph, importer: str, imported: str
) -> list[str]:
    path = _source_file(importer)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    lines = path.read_text().splitlines()
    runtime_lines = {
        d["line_number"] for d in runtime.get_import_details(importer=importer, imported=imported)
    }
    out = []
    for detail in graph.get_import_details(importer=importer, imported=imported):
        number = detail["line_number"]
        if number not in runtime_lines:
            kind = "TYPE_CHECKING"
        elif lines[number - 1][:1].isspace():
            kind = "inside a function or block"
        else:
            kind = "top level"
        out.append(
            f"      {importer} -> {imported}  {shown}:{number}  [{kind}]  "
            f"{detail['line_contents'].strip()}"
        )
    return out


def _package_of(module: str) -> str:
    """The child of mlspy that holds a module: mlspy.group.state -> mlspy.group."""
    return ".".join(module.split(".")[:2])


def cycle_report(
    graph: grimp.ImportGraph,
    runtime: grimp.ImportGraph,
    modules: Iterable[str],
    squash: Callable[[str], str] = lambda module: module,
) -> str:
    """'' if the modules' import graph is acyclic, else every cycle with its imports.

    With ``squash``, modules are first merged into the units it maps them to (packages).
    """
    modules = set(modules)
    module_edges = restricted_edges(graph, modules)
    edges: dict[str, set[str]] = {squash(m): set() for m in modules}
    for importer, imported_modules in module_edges.items():
        for imported in imported_modules:
            if squash(importer) != squash(imported):
                edges[squash(importer)].add(squash(imported))
    out = []
    for component in strongly_connected_components(edges):
        if len(component) == 1:
            continue
        members = set(component)
        out.append(f"cycle among {len(component)}: {', '.join(component)}")
        out.append(f"  e.g. {' -> '.join(_shortest_cycle(edges, component))}")
        out.append("  imports inside the cycle, fewest first (the likeliest ones to remove):")
        by_pair: dict[tuple[str, str], list[str]] = {}
        for importer in sorted(modules):
            for imported in sorted(module_edges[importer]):
                unit, target = squash(importer), squash(imported)
                if unit in members and target in members and target in edges[unit]:
                    lines = _describe_import(graph, runtime, importer, imported)
                    by_pair.setdefault((unit, target), []).extend(lines)
        for (unit, target), lines in sorted(by_pair.items(), key=lambda i: (len(i[1]), i[0])):
            out.append(
                f"  {unit} -> {target} ({len(lines)} import{'s' if len(lines) != 1 else ''})"
            )
            out.extend(lines[:MAX_SHOWN])
            if len(lines) > MAX_SHOWN:
                out.append(f"    ... and {len(lines) - MAX_SHOWN} more")
    return "\n".join(out)


def test_scc_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert strongly_connected_components(edges) == [["a", "b", "c"], ["d"], ["e"]]
    assert _shortest_cycle(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycles_in_group(
    graph: grimp.ImportGraph, runtime_graph: grimp.ImportGraph
) -> None:
    modules = {GROUP} | graph.find_descendants(GROUP)
    assert len(modules) > 5, sorted(modules)
    report = cycle_report(graph, runtime_graph, modules)
    if report:
        print(report)
    assert not report, f"import cycles in {GROUP}:\n{report}"


def test_no_import_cycles_in_mlspy(
    graph: grimp.ImportGraph, runtime_graph: grimp.ImportGraph
) -> None:
    report = cycle_report(graph, runtime_graph, graph.modules)
    if report:
        print(report)
    assert not report, f"import cycles in {PACKAGE}:\n{report}"


def test_no_import_cycles_between_mlspy_packages(
    graph: grimp.ImportGraph, runtime_graph: grimp.ImportGraph
) -> None:
    """Each child of mlspy taken as one unit (mlspy.group.* -> mlspy.group): a DAG."""
    report = cycle_report(graph, runtime_graph, graph.modules, squash=_package_of)
    if report:
        print(report)
    assert not report, f"import cycles between the packages of {PACKAGE}:\n{report}"


# --- Functions a person can hold in their head (mlspy.group) -----------------------------------

MAX_COMPLEXITY = 15  # radon's cyclomatic complexity
MAX_LINES = 80  # signature, docstring and body


def test_group_functions_are_short_and_simple() -> None:
    """No function in ``mlspy.group`` above complexity 15 or about 80 lines (the engine is
    split into one step per RFC rule family, as OpenMLS has one ``validate_*`` per family)."""
    from radon.complexity import cc_visit

    group_dir = Path(__file__).resolve().parents[1] / "src" / "mlspy" / "group"
    too_complex, too_long, seen = [], [], 0
    for path in sorted(group_dir.glob("*.py")):
        blocks = cc_visit(path.read_text(encoding="utf-8"))
        functions = [b for b in blocks if not hasattr(b, "methods")]
        functions += [m for b in blocks for m in getattr(b, "methods", [])]
        seen += len(functions)
        for block in functions:
            where = f"{path.name}:{block.lineno} {block.fullname}"
            if block.complexity > MAX_COMPLEXITY:
                too_complex.append(f"{where} (complexity {block.complexity})")
            if block.endline - block.lineno + 1 > MAX_LINES:
                too_long.append(f"{where} ({block.endline - block.lineno + 1} lines)")
    assert seen > 200  # the engine's functions and methods were all looked at
    assert not too_complex, too_complex
    assert not too_long, too_long
