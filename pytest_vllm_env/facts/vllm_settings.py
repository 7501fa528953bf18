"""The settings an env gives vLLM, and what the env's vLLM reads.

Settings are read statically from where the env sets them: the manifest's ``activation.env``
tables (every feature of the env, ``[tool.pixi.*]`` in a pyproject), the env's
``etc/conda/env_vars.d/*.json``, the ``export VLLM_...=`` lines of its ``activate.d`` scripts
and the manifest's activation scripts (read, never run here), a venv's ``bin/activate``, and
the manifest's tasks: their ``env`` tables, inline ``VLLM_X=1 vllm serve`` assignments and the
long options they pass to ``vllm serve`` (or ``python -m vllm.entrypoints.openai.api_server``).
What vLLM reads comes from its installed source (:mod:`pytest_vllm_env.readers.vllm_settings`).
A variable outside ``environment_variables`` may still be read somewhere else in vLLM
(``os.environ.get("VLLM_...")`` in a module), so for those names the whole installed ``vllm``
package is searched for the literal once (cached).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import vllm_settings as reader
from pytest_vllm_env.readers.vllm_settings import VllmSettingsSource

Facts = Callable[[str, Callable[[], Any], list[str]], Any]
_EXPORT = re.compile(r"(?m)^\s*(?:export\s+)?(VLLM_[A-Z0-9_]+)=(\"[^\"]*\"|'[^']*'|\S*)")
_ASSIGN = re.compile(r"^(VLLM_[A-Z0-9_]+)=(.*)$")
_SERVE_MODULES = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server")
_SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Setting:
    """One setting the env gives vLLM."""

    name: str  # "VLLM_ATTENTION_BACKEND" or "--attention-backend"
    kind: str  # "env" or "flag"
    value: str
    where: str  # "[activation.env] in pixi.toml", "[tasks.serve] in pixi.toml", a script
    hard_fail: bool = False  # a `vllm serve` of the env passes --fail-on-environ-validation
    # a flag's value when it is the next token (``--attention-config '{...}'``): "" otherwise
    arg: str = ""


@dataclass
class SettingsFacts:
    """The env's vLLM settings and what its vLLM reads."""

    vllm: str
    source: VllmSettingsSource
    settings: list[Setting] = field(default_factory=list)
    # VLLM_* names outside environment_variables -> vllm files whose source names them
    referenced: dict[str, list[str]] = field(default_factory=dict)
    # vllm files the literal search found there and unreadable (a FIFO, a dangling link):
    # "path: cannot be read: why"; a name found nowhere else may be read there (issue 21)
    refs_unreadable: list[str] = field(default_factory=list)
    # the env's activation files (activate.d scripts, env_vars.d) there and unreadable, as
    # "path: cannot be read: why": what VLLM_* variables they set is unknown (issue 21)
    env_unreadable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "vllm": self.vllm,
            "source": self.source.to_json(),
            "settings": [asdict(s) for s in self.settings],
            "referenced": self.referenced,
            "refs_unreadable": self.refs_unreadable,
            "env_unreadable": self.env_unreadable,
        }


def read_source(vllm_root: Path) -> VllmSettingsSource:
    """What the vLLM installed at ``vllm_root`` (``site-packages/vllm``) reads."""
    missing: list[str] = []
    unreadable: list[str] = []

    def _text(path: Path) -> str | None:  # absent: None; there and unreadable: named too
        text, why = files.read_text_if_present(path, files.SOURCE)
        if why:
            unreadable.append(why)
        return text

    def _texts(folder: Path) -> list[str]:
        found = (_text(p) for p in (sorted(folder.rglob("*.py")) if folder.is_dir() else []))
        return [t for t in found if t is not None]

    envs = _text(vllm_root / "envs.py")
    known: frozenset[str] = frozenset()
    deprecated: dict[str, str] = {}
    validates = False
    if envs is None:
        missing.append(f"{vllm_root / 'envs.py'} is not there")
    else:
        try:
            known, deprecated, validates = reader.parse_envs(envs)
        except SyntaxError:
            missing.append(f"{vllm_root / 'envs.py'} does not parse")
        if not known:
            missing.append("no environment_variables in vllm/envs.py")
    interface = _text(vllm_root / "platforms" / "interface.py")
    validates = validates or bool(interface and reader.has_validate_environ(interface))
    options = [t for t in (_text(vllm_root / "engine" / "arg_utils.py"),) if t]
    options += _texts(vllm_root / "entrypoints")
    fields = _texts(vllm_root / "config") + [t for t in (_text(vllm_root / "config.py"),) if t]
    flags, deprecated_flags = reader.harvest_flags(options, fields)
    if not flags:
        missing.append("no `vllm serve` options found in vllm/engine/arg_utils.py")
    return VllmSettingsSource(
        known, deprecated, validates, flags, deprecated_flags, tuple(missing), tuple(unreadable)
    )


def references(vllm_root: Path, names: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """For each name, the ``vllm`` source files (third_party aside) that spell it; and the
    files there that cannot be read (a FIFO, a device, a directory or dangling link named
    ``*.py``), each "path: cannot be read: why": what they name is unknown, never "nothing"."""
    found: dict[str, list[str]] = {n: [] for n in names}
    unreadable: list[str] = []
    if not names:
        return found, unreadable
    for path in sorted(vllm_root.rglob("*.py")):
        rel = path.relative_to(vllm_root.parent).as_posix()
        if rel.startswith("vllm/third_party/") or rel == "vllm/envs.py":
            continue
        text, why = files.read_text_if_present(path, files.SOURCE)
        if why and not path.is_dir():  # a package folder named *.py is no module: skip it
            unreadable.append(why)
        if text is None:
            continue
        for name in names:
            if re.search(rf"\b{re.escape(name)}\b", text):
                found[name].append(rel)
    return found, unreadable


def read(env: PixiEnv, facts: Facts | None = None) -> SettingsFacts | None:
    """The env's settings and its vLLM's reading of them; None without vLLM."""
    dist = env.dist("vllm")
    if dist is None:
        return None
    root = dist.location / "vllm"

    def compute_source() -> dict[str, Any]:
        return read_source(root).to_json()

    deps = [str(root / "envs.py"), str(root / "engine" / "arg_utils.py")]
    data = facts("vllm-settings-source", compute_source, deps) if facts else compute_source()
    source = VllmSettingsSource.from_json(data)
    env_unreadable: list[str] = []
    settings = settings_of(env, env_unreadable)
    unknown = sorted({s.name for s in settings if s.kind == "env" and s.name not in source.known})

    def compute_refs() -> dict[str, Any]:
        found, unreadable = references(root, unknown)
        return {"found": found, "unreadable": unreadable}

    refs = (
        facts(f"vllm-settings-refs2-{'-'.join(unknown)}"[:120], compute_refs, deps)
        if facts and unknown
        else compute_refs()
    )
    return SettingsFacts(
        dist.version, source, settings, refs["found"], refs["unreadable"], env_unreadable
    )


# -- where the env sets things -------------------------------------------------------------
def settings_of(env: PixiEnv, unreadable: list[str] | None = None) -> list[Setting]:
    """Every ``VLLM_*`` variable and ``vllm serve`` option the env sets, with where;
    ``unreadable`` gets each activation file there that cannot be read ("path: cannot be
    read: why"), whose settings are then unknown."""
    out: list[Setting] = []
    unread = unreadable if unreadable is not None else []
    manifest = env.manifest
    if manifest is not None and env.name:
        for key, raw, where in manifest.activation_env(env.name):
            if key.startswith("VLLM_"):
                out.append(Setting(key, "env", raw, f"{where} in {manifest.path.name}"))
    folder = env.prefix / "etc" / "conda" / "env_vars.d"
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = files.load_json(record)
        except (OSError, ValueError) as exc:
            unread.append(_why(record, exc))
            continue
        if isinstance(data, Mapping):
            rel = record.relative_to(env.prefix).as_posix()
            out.extend(
                Setting(str(k), "env", str(v), rel)
                for k, v in data.items()
                if str(k).startswith("VLLM_")
            )
    scripts = sorted((env.prefix / "etc" / "conda" / "activate.d").glob("*.sh"))
    if not env.is_conda:
        scripts.append(env.prefix / "bin" / "activate")
    if manifest is not None and env.name:
        scripts += [s for s in manifest.activation_scripts(env.name) if s.suffix == ".sh"]
    for script in scripts:
        text, why = files.read_text_if_present(script, files.SOURCE)
        if text is None:
            unread += [why] if why else []
            continue
        where = _show(script, env)
        for match in _EXPORT.finditer(text):
            out.append(Setting(match.group(1), "env", match.group(2).strip("\"'"), where))
    if manifest is not None and env.name:
        out.extend(_task_settings(manifest, env.name))
    return _hard_fail(out)


def _why(path: Path, exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{path}: cannot be read: {exc.strerror or exc}"
    return f"{path}: cannot be read: not JSON ({exc})"


def _show(path: Path, env: PixiEnv) -> str:
    for base in (env.prefix, env.manifest_path.parent if env.manifest_path else None):
        if base is not None:
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                continue
    return str(path)


def _task_settings(manifest: Any, env_name: str) -> list[Setting]:
    out: list[Setting] = []
    prefix = manifest.table_prefix()
    for feature in manifest.environments().get(env_name, ["default"]):
        table = manifest.feature_table(feature)
        head = prefix if feature == "default" else f"{prefix}feature.{feature}."
        places = [(table.get("tasks"), f"{head}tasks")]
        target = table.get("target", {})
        if isinstance(target, Mapping) and isinstance(target.get("linux-64"), Mapping):
            places.append((target["linux-64"].get("tasks"), f"{head}target.linux-64.tasks"))
        for tasks, head_name in places:
            if not isinstance(tasks, Mapping):
                continue
            for name, task in tasks.items():
                where = f"[{head_name}.{name}] in {manifest.path.name}"
                out.extend(_one_task(task, where))
    return out


def _one_task(task: Any, where: str) -> list[Setting]:
    out: list[Setting] = []
    cmd: Any = task
    if isinstance(task, Mapping):
        cmd = task.get("cmd", "")
        env = task.get("env")
        if isinstance(env, Mapping):
            out.extend(
                Setting(str(k), "env", str(v), f"{where} env")
                for k, v in env.items()
                if str(k).startswith("VLLM_")
            )
    if isinstance(cmd, list):
        tokens = [str(t) for t in cmd]
    elif isinstance(cmd, str):
        try:
            tokens = shlex.split(cmd, comments=True)
        except ValueError:
            tokens = cmd.split()
    else:
        return out
    serving = False
    for i, token in enumerate(tokens):
        if token in _SEPARATORS:
            serving = False
            continue
        match = _ASSIGN.match(token)
        if match and not serving:
            out.append(Setting(match.group(1), "env", match.group(2), where))
            continue
        if (
            token.endswith("vllm") and tokens[i + 1 : i + 2] == ["serve"]
        ) or token in _SERVE_MODULES:
            serving = True
            continue
        if serving and token.startswith("--") and len(token) > 2:
            flag = token.split("=", 1)[0].split(".", 1)[0]
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            arg = following if "=" not in token and not following.startswith("-") else ""
            if following in _SEPARATORS:
                arg = ""
            out.append(Setting(flag.replace("_", "-"), "flag", token, where, arg=arg))
    return out


def _hard_fail(settings: list[Setting]) -> list[Setting]:
    """Mark env settings when a task of the env runs ``vllm serve --fail-on-environ-validation``."""
    strict = any(s.kind == "flag" and s.name == reader.HARD_FAIL_FLAG for s in settings)
    if not strict:
        return settings
    return [Setting(**{**asdict(s), "hard_fail": s.kind == "env"}) for s in settings]
