"""Where a dependency is declared in a Pixi manifest (file, line, table), so that a fix can
name the line to change: ``pixi.toml:14: torch = { version = "==2.6.0", index = ... }``.

TOML parsers drop line numbers, so the manifest's text is scanned: table headers
(``[feature.cuda.pypi-dependencies]``, ``[tool.pixi.dependencies]``) set the current table,
and ``name = ...`` lines inside the env's dependency tables are the declarations. PyPI
packages may also be declared in pyproject.toml's ``[project] dependencies = [...]``.
A declaration this scan cannot see (a dotted key, an inline table) leaves only the table
name in the fix; the verdict is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from pytest_vllm_env.readers.pixi import PLATFORM, Manifest

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*["']?([A-Za-z0-9_.\-]+)["']?\s*=""")
_REQ_NAME = re.compile(r"""^\s*["']([A-Za-z0-9_.\-]+)""")


@dataclass(frozen=True)
class Declaration:
    """One dependency line."""

    path: Path
    line: int
    text: str
    table: str  # "[feature.cuda.pypi-dependencies]"

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line} `{self.text}`"


class ManifestLines:
    """The dependency tables of one env in one manifest, and the lines in them."""

    def __init__(self, manifest: Manifest | None, env_name: str | None) -> None:
        self.manifest = manifest
        self.env_name = env_name or "default"
        # the text the manifest was parsed from: nothing is read here, so checks may ask
        self._lines: list[str] = manifest.text.splitlines() if manifest is not None else []

    @property
    def file(self) -> str:
        return self.manifest.path.name if self.manifest else "pixi.toml"

    def _features(self) -> list[str]:
        if self.manifest is None:
            return ["default"]
        return self.manifest.environments().get(self.env_name, ["default"])

    def tables(self, kind: str) -> list[str]:
        """The env's tables of ``kind`` ("dependencies" or "pypi-dependencies"), as headers
        spelled in this manifest, default feature first."""
        prefix = self.manifest.table_prefix() if self.manifest else ""
        out = []
        for feature in self._features():
            head = prefix if feature == "default" else f"{prefix}feature.{feature}."
            out += [f"{head}{kind}", f"{head}target.{PLATFORM}.{kind}"]
        return out

    def find(self, name: str, kind: str) -> Declaration | None:
        """The line declaring ``name`` in the env's ``kind`` tables (the last feature that
        declares it wins, as in Pixi), or in ``[project] dependencies`` for PyPI packages."""
        wanted = set(self.tables(kind))
        key = canonicalize_name(name) if kind == "pypi-dependencies" else name
        found: Declaration | None = None
        table = ""
        in_project_deps = False
        for number, raw in enumerate(self._lines, 1):
            header = _HEADER.match(raw)
            if header and not raw.lstrip().startswith("[["):
                table = header.group(1).replace(" ", "")
                in_project_deps = False
                continue
            if kind == "pypi-dependencies" and table == "project":
                if re.match(r"^\s*dependencies\s*=", raw):
                    in_project_deps = True
                if in_project_deps:
                    for match in re.finditer(r"""["']([A-Za-z0-9_.\-]+)[^"']*["']""", raw):
                        if canonicalize_name(match.group(1)) == key:
                            found = Declaration(
                                self.manifest.path, number, raw.strip(), "[project] dependencies"
                            )
                    if "]" in raw.split("#", 1)[0]:
                        in_project_deps = False
                continue
            if table not in wanted:
                continue
            match = _KEY.match(raw)
            if not match:
                continue
            declared = match.group(1)
            same = (
                canonicalize_name(declared) == key
                if kind == "pypi-dependencies"
                else declared == key
            )
            if same and self.manifest is not None:
                found = Declaration(self.manifest.path, number, raw.strip(), f"[{table}]")
        return found

    def add_table(self, kind: str) -> str:
        """Where a new ``kind`` line for this env goes: its last feature's table."""
        features = [f for f in self._features() if f != "default"]
        prefix = self.manifest.table_prefix() if self.manifest else ""
        if features and self.env_name != "default":
            return f"[{prefix}feature.{features[-1]}.{kind}]"
        return f"[{prefix}{kind}]"

    def where(self, name: str, kind: str) -> str:
        """``pixi.toml:14 `torch = ...``` when declared, else ``[pypi-dependencies] in
        pixi.toml`` (the table to add it to)."""
        found = self.find(name, kind)
        return str(found) if found else f"{self.add_table(kind)} in {self.file}"

    def change(self, name: str, kind: str, new: str) -> str:
        """A fix: replace the declaring line with ``new``, or add ``new`` to the right table."""
        found = self.find(name, kind)
        if found:
            where = f"in {found.path.name} line {found.line} ({found.table})"
            return f"{where}, replace `{found.text}` with `{new}`"
        return f"add `{new}` to {self.add_table(kind)} in {self.file}"
