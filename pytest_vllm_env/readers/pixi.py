"""Pixi manifests: find one, read it, and say which activation variables an env gets.

A manifest is ``pixi.toml`` or a ``pyproject.toml`` with ``[tool.pixi.*]`` tables. An env
named ``NAME`` lives in ``<manifest dir>/.pixi/envs/NAME`` and is made of features: the
``default`` feature (unless ``no-default-feature = true``) plus the ones listed under
``[environments]``. Its activation variables are the ``activation.env`` tables of those
features, the ``linux-64`` target tables included, in feature order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files

PLATFORM = "linux-64"


class ManifestError(Exception):
    """The manifest cannot be read or parsed; the message names the file and why."""


@dataclass(frozen=True)
class Manifest:
    """A parsed Pixi manifest: the ``tool.pixi`` part of pyproject.toml, or pixi.toml."""

    path: Path
    data: Mapping[str, Any] = field(repr=False)
    # the file's text as read, so that a fix can name a line (readers/manifest_lines.py)
    # without reading the file again
    text: str = field(default="", repr=False, compare=False)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def kind(self) -> str:
        return "pyproject" if self.path.name == "pyproject.toml" else "pixi"

    def table_prefix(self) -> str:
        """How a table is spelled in this file, for fix hints (``tool.pixi.`` or nothing)."""
        return "tool.pixi." if self.kind == "pyproject" else ""

    @property
    def workspace_name(self) -> str:
        for key in ("workspace", "project"):
            table = self.data.get(key)
            if isinstance(table, Mapping) and isinstance(table.get("name"), str):
                return table["name"]
        return self.root.name

    def environments(self) -> dict[str, list[str]]:
        """Env name -> the features it is made of, ``default`` feature included where it is."""
        envs: dict[str, list[str]] = {"default": ["default"]}
        declared = self.data.get("environments", {})
        if not isinstance(declared, Mapping):
            return envs
        for name, spec in declared.items():
            if isinstance(spec, list):
                features, no_default = [str(f) for f in spec], False
            elif isinstance(spec, Mapping):
                features = [str(f) for f in spec.get("features", [])]
                no_default = bool(spec.get("no-default-feature", False))
            else:
                continue
            envs[str(name)] = features if no_default else ["default", *features]
        return envs

    def env_prefix(self, name: str) -> Path:
        return self.root / ".pixi" / "envs" / name

    def feature_table(self, feature: str) -> Mapping[str, Any]:
        if feature == "default":
            return self.data
        table = self.data.get("feature", {})
        found = table.get(feature) if isinstance(table, Mapping) else None
        return found if isinstance(found, Mapping) else {}

    def activation_env(self, env_name: str) -> list[tuple[str, str, str]]:
        """``(variable, raw value, where it is set)`` for an env, in the order Pixi applies them."""
        result: list[tuple[str, str, str]] = []
        prefix = self.table_prefix()
        for feature in self.environments().get(env_name, ["default"]):
            table = self.feature_table(feature)
            head = prefix if feature == "default" else f"{prefix}feature.{feature}."
            places = [(table.get("activation"), f"[{head}activation.env]")]
            target = table.get("target", {})
            if isinstance(target, Mapping) and isinstance(target.get(PLATFORM), Mapping):
                where = f"[{head}target.{PLATFORM}.activation.env]"
                places.append((target[PLATFORM].get("activation"), where))
            for activation, where in places:
                env = activation.get("env") if isinstance(activation, Mapping) else None
                if isinstance(env, Mapping):
                    result.extend((str(k), str(v), where) for k, v in env.items())
        return result

    def activation_scripts(self, env_name: str) -> list[Path]:
        scripts: list[Path] = []
        for feature in self.environments().get(env_name, ["default"]):
            activation = self.feature_table(feature).get("activation")
            if isinstance(activation, Mapping):
                scripts.extend(self.root / str(s) for s in activation.get("scripts", []))
        return scripts

    def activation_table_for(self, env_name: str) -> str:
        """Where a fix should add an ``activation.env`` line for this env."""
        features = [f for f in self.environments().get(env_name, ["default"]) if f != "default"]
        if features and env_name != "default":
            return f"[{self.table_prefix()}feature.{features[-1]}.activation.env]"
        return f"[{self.table_prefix()}activation.env]"


def load_manifest(path: Path) -> Manifest:
    """Parse a pixi.toml or a pyproject.toml with ``[tool.pixi]``; raise ManifestError."""
    try:
        raw = files.read_bytes(path, files.CONFIG)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8", errors="replace")
        data = files.loads_toml(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError, or nesting too deep
        raise ManifestError(f"{path} is not valid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        pixi = tool.get("pixi") if isinstance(tool, Mapping) else None
        if not isinstance(pixi, Mapping):
            raise ManifestError(f"{path} has no [tool.pixi] tables")
        data = pixi
    return Manifest(path, data, text)


def is_pixi_pyproject(path: Path) -> bool:
    try:
        text = files.read_text(path, files.CONFIG)
    except OSError:
        return False
    return "[tool.pixi" in text


_NO_FILE = ("missing", "a dangling symlink", "a directory")


def find_manifest(start: Path, *, upward: bool = True) -> Path | None:
    """Search upward from ``start`` for pixi.toml, or a pyproject.toml with Pixi tables;
    ``upward=False``: in ``start`` only."""
    try:
        here = start.resolve()
    except (OSError, RuntimeError):
        return None
    for directory in (here, *here.parents) if upward else (here,):
        candidate = directory / "pixi.toml"
        if candidate.is_file() or files.describe(candidate) not in _NO_FILE:
            return candidate  # a FIFO or device there is named when read, not passed over
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and is_pixi_pyproject(candidate):
            return candidate
    return None
