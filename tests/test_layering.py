"""The package flows one way: vocabulary -> readers -> facts -> checks -> runners -> plugins and
the suite -> plugin.py and the CLI (issue 20; docs/architecture.md).

The import graph is built from the source with ``ast`` (function-local and ``TYPE_CHECKING``
imports count: a cycle held shut by a local import is still a cycle), so no module is
imported to judge the layout. Every module must sit on a floor, import only from its own floor
or those below, take part in no cycle, and, in ``checks/``, touch no file, process or
environment variable: checks are facts in, findings out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_vllm_env"
SUITE = ROOT / "conformance"  # installs as pytest_vllm_env.suite

# The floors, lowest first. A module's floor is its folder's; top-level modules are named.
FLOORS = ("vocabulary", "readers", "facts", "checks", "runners", "plugins", "entry")
FOLDER_FLOOR = {
    "tables": "vocabulary",
    "readers": "readers",
    "facts": "facts",
    "checks": "checks",
    "runners": "runners",
    "plugins": "plugins",
    "suite": "plugins",
    "fleet": "entry",
}
MODULE_FLOOR = {
    "pytest_vllm_env": "vocabulary",  # the package's __init__: a version string
    "pytest_vllm_env.findings": "vocabulary",
    "pytest_vllm_env.defaults": "vocabulary",
    "pytest_vllm_env.cache": "vocabulary",
    "pytest_vllm_env.proc": "vocabulary",
    "pytest_vllm_env.files": "vocabulary",
    "pytest_vllm_env.text": "vocabulary",
    "pytest_vllm_env.plugin": "entry",
    "pytest_vllm_env.cli": "entry",
    "pytest_vllm_env.__main__": "entry",
}
# Calls a check may not make: each reads a file, a directory, the environment or runs a tool.
IO_NAMES = {"open", "input", "print", "exec", "eval", "__import__"}
IO_MODULES = {
    "os",
    "subprocess",
    "shutil",
    "glob",
    "tempfile",
    "zipfile",
    "tarfile",
    "socket",
    "sysconfig",
    "platform",
    "importlib",
    "io",
    "mmap",
    "ctypes",
    "pathlib",
}
# (names that are also common str/re methods, such as replace and group, are left out: a check
# has no reason to rename files, and os.walk is caught through the os import)
IO_ATTRS = {
    "exists",
    "is_file",
    "is_dir",
    "is_symlink",
    "is_fifo",
    "is_socket",
    "is_block_device",
    "is_char_device",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "open",
    "stat",
    "lstat",
    "iterdir",
    "glob",
    "rglob",
    "resolve",
    "readlink",
    "samefile",
    "mkdir",
    "unlink",
    "rmdir",
    "touch",
    "symlink_to",
    "chmod",
    "expanduser",
    "absolute",
    "cwd",
    "home",
}
# The package's own doors to the outside: a check that imports one reads or runs something.
IO_OWN = {"pytest_vllm_env.proc", "pytest_vllm_env.files", "pytest_vllm_env.cache"}
MAX_CHECK_LINES = 500

# What the layout still owes (issue 20). Each entry is a finding of this test that is known and
# being removed; an entry that no longer happens must go too, so that this list only shrinks.
KNOWN: set[str] = set()


def _module_name(path: Path) -> str:
    if path.is_relative_to(SUITE):
        rel = ("pytest_vllm_env", "suite", *path.relative_to(SUITE).with_suffix("").parts)
    else:
        rel = ("pytest_vllm_env", *path.relative_to(PACKAGE).with_suffix("").parts)
    parts = rel[:-1] if rel[-1] == "__init__" else rel
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    files = [p for p in PACKAGE.rglob("*.py") if "probes" not in p.relative_to(PACKAGE).parts]
    files += list(SUITE.rglob("*.py"))
    return {_module_name(p): p for p in sorted(files) if "__pycache__" not in p.parts}


def floor_of(module: str) -> str | None:
    """The floor a module sits on, or None where it sits on none."""
    if module in MODULE_FLOOR:
        return MODULE_FLOOR[module]
    parts = module.split(".")
    return FOLDER_FLOOR.get(parts[1]) if len(parts) >= 2 else None


def _tree(module: str) -> ast.Module:
    return ast.parse(modules()[module].read_text(encoding="utf-8"))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    path = modules()[module]
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The package's modules this module imports, wherever the import statement stands."""
    known = modules()
    found: set[str] = set()
    for node in ast.walk(_tree(module)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            # "from pkg import mod" names a module; "from mod import thing" names its module
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("pytest_vllm_env") and name != module and name in known:
                found.add(name)
    # a package's __init__ holds a docstring: importing a module through it is no edge to it
    return {m for m in found if modules()[m].name != "__init__.py"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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


def _io_calls(tree: ast.Module) -> Iterator[str]:
    io_aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in IO_MODULES:
                    io_aliases[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in IO_MODULES and node.module != "pathlib":
                for a in node.names:
                    io_aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and (f.id in IO_NAMES or f.id in io_aliases):
                yield f"{f.id}() at line {node.lineno}"
            elif isinstance(f, ast.Attribute) and f.attr in IO_ATTRS:
                yield f".{f.attr}() at line {node.lineno}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in io_aliases and io_aliases[node.value.id] != "pathlib":
                yield f"{node.value.id}.{node.attr} at line {node.lineno}"


def findings() -> set[str]:
    """Every way the package breaks its floors today, one line each."""
    out: set[str] = set()
    graph = {m: imports_of(m) for m in modules()}
    rank = {f: i for i, f in enumerate(FLOORS)}
    for module, targets in graph.items():
        floor = floor_of(module)
        if floor is None:
            out.add(f"no floor: {module}")
            continue
        for target in sorted(targets):
            other = floor_of(target)
            if other is not None and rank[other] > rank[floor]:
                out.add(f"climbs: {module} ({floor}) -> {target} ({other})")
    for comp in _cycles(graph):
        out.update(f"in a cycle: {m}" for m in comp)
    for module, path in modules().items():
        if floor_of(module) != "checks":
            continue
        calls = sorted(set(_io_calls(_tree(module))), key=lambda s: int(s.rsplit(" ", 1)[1]))
        calls += sorted(f"imports {m}" for m in graph[module] & IO_OWN)
        if calls:
            out.add(f"io in checks: {module}")
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_CHECK_LINES:
            out.add(f"too long: {module}: over {MAX_CHECK_LINES} lines")
    return {line.replace("pytest_vllm_env.", "") for line in out}


def test_the_graph_sees_local_and_type_checking_imports(tmp_path):
    """The reader of imports is itself right: a function-local import is an edge."""
    graph = {m: imports_of(m) for m in modules()}
    # plugins load the fact library in fixtures, by function-local imports
    assert "pytest_vllm_env.facts.toolkit" in graph["pytest_vllm_env.plugins.cuda"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_io_rule_catches_reads():
    """The I/O rule is itself right: it sees Path, os and subprocess use, not pure code."""
    src = (
        "import os, subprocess as sp\nfrom os.path import isfile\n"
        "def f(p):\n    return p.read_text(), os.environ, sp.run(['x']), isfile(p), open(p)\n"
        "def g(p):\n    return p.name, p / 'x', str(p).startswith('/')\n"
    )
    calls = sorted(_io_calls(ast.parse(src)))
    assert calls == [
        ".read_text() at line 4",
        "isfile() at line 4",
        "open() at line 4",
        "os.environ at line 4",
        "sp.run at line 4",
    ], calls


def test_package_flows_one_way():
    """No climbing import, no cycle, no module off the floors, no I/O in checks/, no check
    module over 500 lines, beyond what KNOWN still owes; and KNOWN holds nothing that is gone."""
    now = findings()
    new = sorted(now - KNOWN)
    gone = sorted(KNOWN - now)
    assert not new, (
        "the layout broke (docs/architecture.md says where each part goes):\n" + "\n".join(new)
    )
    assert not gone, "fixed, so take these out of KNOWN in tests/test_layering.py:\n" + "\n".join(
        gone
    )


def test_probes_import_nothing_of_the_package():
    """Probes run under the target env's Python, where this package is not installed."""
    for path in (PACKAGE / "probes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("pytest_vllm_env"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("pytest_vllm_env") for a in node.names), path


@pytest.mark.parametrize("floor", FLOORS)
def test_every_floor_has_modules(floor):
    assert any(floor_of(m) == floor for m in modules()), floor
