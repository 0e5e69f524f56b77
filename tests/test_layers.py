"""The package's import graph: no cycle, and dependencies point one way (docs/architecture.md).

Read from the source with ``ast`` (module-level and function-level imports
alike), so an import hidden inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "collapse"

# Layer of each module, by the longest matching prefix; lower layers come first.
LAYERS = {
    "core": ["collapse.errors", "collapse.config", "collapse.seeding", "collapse.locks", "collapse.integrity",
             "collapse.filtering", "collapse.syntax", "collapse.logs", "collapse.signals", "collapse.stats"],
    "components": ["collapse.data", "collapse.lm", "collapse.metrics", "collapse.gates", "collapse.sandbox", "collapse.generator",
                   "collapse.mixing"],
    "registries": ["collapse.registries"],
    "loop": ["collapse.loop", "collapse.orchestrator", "collapse.rundir", "collapse.callbacks", "collapse.figures",
             "collapse.tracking"],
    "studies": ["collapse.experiment", "collapse.pretrain", "collapse.theory"],
    # what launching and reading both need: the sweep file, its claims, its bookkeeping, the Slurm queries
    "spec": ["collapse.sweep.spec", "collapse.sweep.state", "collapse.sweep.slurm", "collapse.claims"],
    "launch": ["collapse.sweep"],
    "read": ["collapse.sweep.load", "collapse.summary", "collapse.reporting", "collapse.findings", "collapse.browse"],
    # the package facades re-export from both sides
    "entry": ["collapse.cli", "collapse.api", "collapse"],
}
FACADES = {"collapse.sweep"}  # collapse/sweep/__init__.py: launch and load_runs under one name
ORDER = list(LAYERS)


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(("collapse",) + p.relative_to(PKG).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def layer_of(module: str) -> str:
    if module in FACADES:
        return "entry"
    best, where = -1, None
    for layer, prefixes in LAYERS.items():
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and len(pre) > best:
                best, where = len(pre), layer
    assert where is not None, f"{module} has no layer in tests/test_layers.py"
    return where


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                if t.startswith("collapse"):
                    r = resolve(t)
                    # a package's own submodules and the package itself are not edges
                    if r and r != m and not m.startswith(r + ".") and not (r == "collapse" and m.startswith("collapse.")):
                        graph[m].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_imports_point_down_the_layers():
    graph = import_graph()
    upward = []
    for m, targets in graph.items():
        for t in targets:
            lm, lt = layer_of(m), layer_of(t)
            # reading results sits beside launching, not on it: it needs only the run
            # directory reader and the sweep spec
            if ORDER.index(lt) > ORDER.index(lm) or (lm, lt) == ("read", "launch"):
                upward.append(f"{m} ({lm}) imports {t} ({lt})")
    assert upward == []


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


# Modules whose docstring or first lines say why every command's import is deferred.
DEFERRED_BY_DESIGN = {"collapse.cli", "collapse"}


def test_function_level_imports_say_what_they_defer():
    # An import inside a function is there to defer a heavy library (torch,
    # datasets, mlflow, matplotlib, ...), and says so in a comment on its line
    # or on a comment line just above its block of imports.
    unexplained = []
    for m, path in modules().items():
        if m in DEFERRED_BY_DESIGN:
            continue
        lines = path.read_text().split("\n")
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if not any(n.startswith("collapse") for n in names):
                    continue
                i = node.lineno - 1
                j = i
                while j > 0 and lines[j - 1].strip().startswith(("from ", "import ")):
                    j -= 1  # the first line of this block of imports
                said = "#" in lines[i] or any("#" in lines[k] for k in range(j, i)) or lines[j - 1].strip().startswith("#")
                if not said:
                    unexplained.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    assert unexplained == []
