"""The import graph of kerasseg: data flows one way, no module cycles, no private names across modules.

Every module under ``kerasseg/`` (and ``cli/``, installed as ``kerasseg.cli``) is parsed with
:mod:`ast`; module-level and function-level imports both count. Layers, lowest first:
data < layers < models < training < evaluation < export < cli. ``kerasseg/__init__.py``,
``kerasseg/errors.py``, ``kerasseg/fileio.py`` and ``kerasseg/config/`` are the base: anyone may
import them. The exceptions are listed below, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path
from fixtures import REPO as _REPO

ROOT = _REPO
LAYERS = ("data", "layers", "models", "training", "evaluation", "export", "cli")
BASE = "base"

# Imports that go against the flow, each with its reason: (importer, imported module) -> reason.
_CONFIG_LAZY = "config validates names against the layers/models registries; imported lazily (inside functions)"
ALLOWED_UPWARD = {
    ("kerasseg.config.schema", "kerasseg.models.registry"): _CONFIG_LAZY,
    ("kerasseg.config.schema", "kerasseg.models.crf_head"): _CONFIG_LAZY,
    ("kerasseg.config.schema", "kerasseg.layers.preprocessing"): _CONFIG_LAZY,
    ("kerasseg.config.schema", "kerasseg.data.boxes"): _CONFIG_LAZY,
    ("kerasseg.config.schema", "kerasseg.layers.crf.layer"): _CONFIG_LAZY,
}
# Private names imported across modules: (importer, imported module, name) -> reason.
ALLOWED_PRIVATE: dict = {}

def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for kerasseg/ and cli/ (as kerasseg.cli)."""
    out = {}
    for base, prefix in ((ROOT / "kerasseg", "kerasseg"), (ROOT / "cli", "kerasseg.cli")):
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(name: str) -> str | None:
    """The longest known module that ``name`` (a dotted import target) lies in; None if not ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, list[str], int, bool]]:
    """(target module, imported names, line, inside a function) for every import of ``module`` (any depth in the file)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    lazy = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    found.append((target, [], node.lineno, id(node) in lazy))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if node.module == "__future__":
                continue
            for alias in node.names:
                sub = _resolve(f"{src}.{alias.name}")
                if sub and sub != _resolve(src) and sub.startswith(src + "."):
                    found.append((sub, [], node.lineno, id(node) in lazy))        # a submodule: from pkg import mod
                else:
                    target = _resolve(src)
                    if target:
                        found.append((target, [alias.name], node.lineno, id(node) in lazy))
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def layer(module: str) -> str:
    parts = module.split(".") + [""]
    if parts[1] == "__main__":  # only starts the CLI (python -m kerasseg): the entry point, like cli
        return "cli"
    if parts[1] in ("", "errors", "fileio", "config", "keras_private"):
        return BASE
    return parts[1]


def test_every_module_has_a_layer():
    for m in MODULES:
        assert layer(m) in LAYERS + (BASE,), m


def test_imports_follow_the_flow():
    """An import goes to the same layer, a lower one, or the base -- never up (except the allowlist)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for src, edges in GRAPH.items():
        for dst, _, line, lazy in edges:
            ls, ld = layer(src), layer(dst)
            if ld == BASE:
                continue
            if ls == BASE or rank[ld] > rank[ls]:
                why = ALLOWED_UPWARD.get((src, dst))
                if why is None or (why == _CONFIG_LAZY and not lazy):
                    bad.append(f"{MODULES[src].relative_to(ROOT)}:{line} ({ls}) imports {dst} ({ld})")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(bad))


def _cycles() -> list[list[str]]:
    """The import cycles between modules (a small iterative DFS; one cycle per back edge)."""
    graph = {m: sorted({d for d, *_ in edges if d != m}) for m, edges in GRAPH.items()}
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    found = []
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack, path = [(start, iter(graph[start]))], [start]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour[child] == GREY:
                found.append(path[path.index(child):] + [child])
            elif colour[child] == WHITE:
                colour[child] = GREY
                stack.append((child, iter(graph[child])))
                path.append(child)
    return found


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    """The DFS itself: a planted a -> b -> c -> a cycle is reported, a DAG is not."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {"a": [("b", [], 1, False)], "b": [("c", [], 1, False)], "c": [("a", [], 1, False)],
                 "d": [("a", [], 1, False)]}
        assert [sorted(c[:-1]) for c in _cycles()] == [["a", "b", "c"]]
        GRAPH = {"a": [("b", [], 1, False), ("c", [], 1, False)], "b": [("c", [], 1, False)], "c": []}
        assert _cycles() == []
    finally:
        GRAPH = saved


def test_no_private_names_across_modules():
    bad = []
    for src, edges in GRAPH.items():
        for dst, names, line, _ in edges:
            if dst == src:
                continue
            for name in names:
                if (name.startswith("_") and not name.startswith("__")
                        and (src, dst, name) not in ALLOWED_PRIVATE):
                    bad.append(f"{MODULES[src].relative_to(ROOT)}:{line} imports {dst}.{name}")
    assert not bad, "private names imported across modules:\n" + "\n".join(sorted(bad))


def test_every_allowlist_entry_is_still_needed():
    """An exception that no longer occurs is removed from the lists (they only shrink)."""
    edges = {(s, d) for s, es in GRAPH.items() for d, *_ in es}
    names = {(s, d, n) for s, es in GRAPH.items() for d, ns, *_ in es for n in ns}
    assert not set(ALLOWED_UPWARD) - edges, sorted(set(ALLOWED_UPWARD) - edges)
    assert not set(ALLOWED_PRIVATE) - names, sorted(set(ALLOWED_PRIVATE) - names)


def test_the_data_layer_does_not_loop_where_it_used_to():
    """dataset.py never imports the phantom; the readers never import their package __init__."""
    assert "kerasseg.data.phantom" not in {d for d, *_ in GRAPH["kerasseg.data.dataset"]}
    readers = [m for m in MODULES if m.startswith("kerasseg.data.readers.")]
    assert len(readers) >= 7
    for reader in readers:
        assert "kerasseg.data.readers" not in {d for d, *_ in GRAPH[reader]}, reader
