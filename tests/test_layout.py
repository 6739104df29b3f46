"""The code's layout: no import cycle between liteconv's packages or between its modules,
counting the imports inside functions too (they hide cycles, they do not remove them)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "liteconv"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the liteconv modules it imports anywhere in its body (``from P import M``
    counts as importing the module P.M when M is one, else P)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if not node.module.startswith("liteconv"):
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
        deps.discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = _imports(_modules())
    assert len(graph) > 80 and graph["liteconv.pipeline.train"]  # the walk found the code
    assert _cycles(graph) == []


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, deps in _imports(_modules()).items():
        mine = _package(module)
        graph.setdefault(mine, set()).update(_package(d) for d in deps if _package(d) != mine)
    assert {"device", "pipeline", "export", "bench", "emulate", "deploy"} <= set(graph)
    assert _cycles(graph) == []


def test_the_product_never_imports_the_studies():
    """``liteconv.studies`` (the result tables) sits above the product: only the
    ``study`` command and the studies themselves import it."""
    graph = _imports(_modules())
    users = sorted(m for m, deps in graph.items()
                   if any(_package(d) == "studies" for d in deps)
                   and _package(m) != "studies")  # fmt: skip
    assert users == ["liteconv.cli.study"]


def test_every_cache_default_comes_from_one_root_that_liteconv_cache_moves():
    """One place names the cache folders; ``LITECONV_CACHE`` moves them all (here: the
    ``bench --emulate-cache`` default a user sees in ``--help``)."""
    import os
    import subprocess
    import sys

    literal = [str(p.relative_to(SRC)) for p in ROOT.rglob("*.py")
               if p.name != "caches.py" and '".cache' in "\n".join(
                   line for line in p.read_text().splitlines() if ">>>" not in line)]  # fmt: skip
    assert literal == []
    code = "from liteconv.cli import cli; cli(['bench', '--help'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "LITECONV_CACHE": "/lc"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[default: /lc/emulate]" in " ".join(out.stdout.split())
