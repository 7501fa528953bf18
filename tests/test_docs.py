"""The README's Layout section and the fixture READMEs match the tree (issue 20).

Seen: the Layout section placed ``rootdir.py``, ``settings`` and ``fixes.py`` where they had
not been for a while, and ``fixtures/modelopt_export/README.md`` described 2 of its 6
exports. Each test below fails when a file is added or moved without its line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_vllm_env"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _names(text: str) -> set[str]:
    """Every name written in backticks, and its last path part (`plugins/session.py` also
    names `session.py`; `fleet/` names `fleet`)."""
    names = set()
    for quoted in re.findall(r"`([^`]+)`", text):
        names.add(quoted)
        names.add(quoted.rstrip("/").rsplit("/", 1)[-1])
    return names


def test_readme_layout_names_every_part_of_the_tree():
    layout = _section((ROOT / "README.md").read_text(encoding="utf-8"), "Layout")
    named = _names(layout)
    wanted = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    wanted |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    wanted |= {p.name for p in (PACKAGE / "plugins").glob("*.py") if p.name != "__init__.py"}
    wanted |= {"conformance/", "fixtures/", "tests/", "benchmarks/", "docs/", "scripts/"}
    missing = sorted(
        w
        for w in wanted
        if w not in named and w.removesuffix(".py") not in named and w.rstrip("/") not in named
    )
    assert not missing, f"README.md's Layout section does not name: {missing}"


def _tree() -> set[str]:
    """Every file and folder of the repo as a relative path (folders with a ``/``)."""
    skip = {".venv", ".git", "__pycache__", "build", "dist"}
    out = set()
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if skip & set(rel.parts) or rel.parts[0].endswith(".egg-info"):
            continue
        out.add(rel.as_posix() + ("/" if path.is_dir() else ""))
    return out


def test_readme_layout_names_nothing_that_is_gone():
    layout = _section((ROOT / "README.md").read_text(encoding="utf-8"), "Layout")
    tree = _tree()
    gone = [
        quoted
        for quoted in re.findall(r"`([^`]+)`", layout)
        if re.fullmatch(r"[\w./-]+(?:\.py|/)", quoted)  # a file or folder name
        and not any(t == quoted or t.endswith("/" + quoted) for t in tree)
    ]
    assert not gone, f"README.md's Layout section names what the tree lacks: {gone}"


def test_the_fixtures_readme_lists_every_fixture():
    named = _names((ROOT / "fixtures" / "README.md").read_text(encoding="utf-8"))
    here = {p.name for p in (ROOT / "fixtures").glob("*.py") if p.name != "__init__.py"}
    here |= {
        p.name + "/"
        for p in (ROOT / "fixtures").iterdir()
        if p.is_dir() and p.name != "__pycache__"
    }
    missing = sorted(h for h in here if h not in named)
    assert not missing, f"fixtures/README.md does not describe: {missing}"


def test_the_build_logs_readme_describes_every_log():
    folder = ROOT / "fixtures" / "buildlogs"
    named = _names((folder / "README.md").read_text(encoding="utf-8"))
    missing = sorted(p.name for p in folder.glob("*.log") if p.name not in named)
    assert not missing, f"fixtures/buildlogs/README.md does not describe: {missing}"
