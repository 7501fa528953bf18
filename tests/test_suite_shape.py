"""The bundled suite's own shape: every conformance test is one check with a tier and an id,
and every fixture the plugin offers says what it is in ``pytest --fixtures``."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

TIERS = {"toolchain", "gpu", "build"}
CHECK_ID = re.compile(r"^[a-z0-9]+\.[a-z0-9-]+$")


@pytest.fixture
def suite_items(pytester: pytest.Pytester) -> list[pytest.Item]:
    items, _ = pytester.inline_genitems("--vllm-conformance", "-p", "no:cacheprovider")
    assert items, "the bundled suite collected nothing"
    return items


def test_every_conformance_test_has_a_tier(suite_items):
    untiered = [i.nodeid for i in suite_items if not TIERS & {m.name for m in i.iter_markers()}]
    assert not untiered, f"add @pytest.mark.toolchain/gpu/build to: {untiered}"


def test_every_conformance_test_has_one_stable_check_id(suite_items):
    ids = {}
    for item in suite_items:
        marks = list(item.iter_markers("vllm_check"))
        assert len(marks) == 1, f"{item.nodeid}: needs exactly one @pytest.mark.vllm_check(id)"
        check = marks[0].args[0] if marks[0].args else ""
        assert CHECK_ID.match(check), f"{item.nodeid}: check id {check!r} is not area.name"
        ids[item.nodeid.split("[")[0]] = check
    # one id per test function (parametrized copies of a test share it)
    repeated = [c for c, n in Counter(ids.values()).items() if n > 1]
    assert not repeated, f"check ids used by two tests: {repeated}"


def test_every_fixture_has_a_docstring(pytester: pytest.Pytester):
    out = pytester.runpytest("--fixtures", "-p", "no:cacheprovider").stdout.str()
    sections = re.split(r"^-+ fixtures defined from (\S+) -+$", out, flags=re.M)
    ours = {
        name: body
        for name, body in zip(sections[1::2], sections[2::2], strict=False)
        if name.startswith("pytest_vllm_env")
    }
    assert {"pytest_vllm_env.plugins.session", "pytest_vllm_env.plugins.cuda"} <= set(ours), out
    undocumented = [
        f"{name}: {fixture}"
        for name, body in ours.items()
        for fixture in re.findall(r"^(\w+)\b.*\n\s+no docstring available", body, re.M)
    ]
    assert not undocumented, undocumented


# -- check ids named in the docs exist ------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
# file names that read like ids (`cuda.cmake`, `build.md`), never check ids
FILE_SUFFIXES = {
    "md", "py", "sh", "cmake", "h", "hpp", "c", "cu", "cpp", "txt", "json", "toml", "yaml",
    "yml", "lock", "cfg", "ini", "so", "log", "whl", "html", "in",
}  # fmt: skip


def suite_check_ids() -> set[str]:
    """The ids of the bundled suite's tests (``@pytest.mark.vllm_check``), read from source."""
    ids = set()
    for path in (ROOT / "conformance").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "vllm_check"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                ids.add(node.args[0].value)
    return ids


def emitted_check_ids(areas: set[str]) -> set[str]:
    """Every id a finding of the suite can carry: the tests' ids, the ids written as string
    constants in the package (a test gives findings of several ids: ``buildlog.oom`` under
    ``buildlog.clean``), and ``wheel.<what>`` for each ``abi.*``/``arch.*`` id (checks/wheels.py
    runs those checks on each wheel member, renamed so)."""
    shape = re.compile(rf"(?:{'|'.join(sorted(areas))})\.[a-z0-9]+(?:-[a-z0-9]+)*")
    ids = suite_check_ids()
    for path in (ROOT / "pytest_vllm_env").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if shape.fullmatch(node.value):
                    ids.add(node.value)
    ids |= {
        "wheel." + i.split(".", 1)[1] for i in suite_check_ids() if i.startswith(("abi.", "arch."))
    }
    return ids


def python_names() -> set[str]:
    """Every name the package's code defines or reads as an attribute: ``nvtx.predict``
    and ``env.prefix`` in a docstring name code, not a check."""
    names: set[str] = set()
    for path in (ROOT / "pytest_vllm_env").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def id_mentions(line: str, areas: set[str], code: set[str]) -> list[str]:
    """The check ids one line of docs or source names: an ``area.what-with-dashes`` anywhere
    (no Python name has a dash), or an ``area.what`` quoted as ids are (```abi.needed```,
    ``[abi.needed]``, ``"abi.needed"``) that names no file and no Python name in ``code``.
    ``checks.cuda.read``, ``plugins/cuda.py``, ``abi.torch_root()`` are no ids."""
    alt = "|".join(sorted(areas))
    token = re.compile(
        rf"(?P<open>[`\[\"']?)(?<![\w./-])(?P<id>(?:{alt})\.[a-z0-9]+(?:-[a-z0-9]+)*)"
        rf"(?![\w(/-]|\.[A-Za-z0-9])(?P<close>[`\]\"']?)"
    )
    found = []
    for m in token.finditer(line):
        what = m["id"].split(".", 1)[1]
        quoted = bool(m["open"]) and bool(m["close"])
        if "-" in what or (quoted and what not in FILE_SUFFIXES and what not in code):
            found.append(m["id"])
    return found


def mentioned_check_ids(areas: set[str]) -> list[tuple[str, str]]:
    """``(where, id)`` for each check id the README, docs, fixture READMEs, docstrings and
    comments name (:func:`id_mentions`)."""
    code = python_names()
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "fixtures").rglob("*.md")]
    for folder in ("pytest_vllm_env", "conformance", "fixtures", "benchmarks", "scripts"):
        files += (ROOT / folder).rglob("*.py")
    return [
        (f"{path.relative_to(ROOT)}:{n}", ident)
        for path in sorted(set(files))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for ident in id_mentions(line, areas, code)
    ]


def test_check_ids_named_in_docs_exist():
    # Seen: findings.py's docstring named `abi.symbols-resolve`, an id renamed long before
    # (now `abi.symbols`): a reader grepping for it found nothing.
    areas = {i.split(".", 1)[0] for i in suite_check_ids()}
    known = emitted_check_ids(areas)
    mentioned = mentioned_check_ids(areas)
    assert len(mentioned) > 100, mentioned  # the docs name ids all over: the reader sees them
    stale = [f"{where}: {ident}" for where, ident in mentioned if ident not in known]
    assert not stale, "check ids that no check has:\n" + "\n".join(stale)


def test_the_id_reader_tells_ids_from_code_and_files():
    line = (
        "the `abi.symbols-resolve` check, [cuda.gone], `abi.needed`; not `cuda.h`, "
        "`abi.torch_root()`, `nvtx.predict`, checks.cuda.read, plugins/cuda.py, cuda.nvcc"
    )
    found = id_mentions(line, {"abi", "cuda", "nvtx"}, {"predict"})
    assert found == ["abi.symbols-resolve", "cuda.gone", "abi.needed"]
