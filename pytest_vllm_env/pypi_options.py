"""The manifest's PyPI side, judged before any install: which index uv searches first, and
which source builds run isolated from the env's torch.

Pixi resolves ``[pypi-dependencies]`` with uv (pixi docs, ``pixi_manifest.md``, "Alternative
registries" / "No Build Isolation" / "Index Strategy"):

- ``index-url`` *replaces* PyPI; ``extra-index-urls`` are searched first, in order, and "are
  preferred over the ``index-url``". A dependency with ``index = "..."`` uses only that index.
- ``index-strategy`` defaults to ``first-index``: a package name is resolved only from the first
  index that has it. PyTorch's index (``download.pytorch.org/whl/...``) mirrors many PyPI names
  at a few versions: it hosts only ``cmake==3.25.0``, so a source build of vLLM, whose
  ``[build-system].requires`` asks ``cmake>=3.26.1`` (vLLM 0.9.2 on; ``>=3.26`` from 0.6), fails
  with "only cmake==3.25.0 is available and you require cmake>=3.26.1" (vllm#24875).
- ``no-build-isolation = ["pkg"]`` (or ``true``) builds in the env itself; "use conda
  dependencies to define the build environment ... adding torch as a PyPI dependency would be
  ineffective, as it would not yet be installed during the PyPI resolution phase".

Packages whose build needs torch (read from their PyPI sdists: ``setup.py`` imports torch):
``flash-attn`` declares no build requirements at all (no ``pyproject.toml``), so an isolated
build fails with ``No module named 'torch'`` (flash-attention#1421; seed 004 in Pixi);
``causal-conv1d`` and ``mamba-ssm`` list an unpinned ``torch``, so isolation builds them
against whatever torch the index has newest, not the env's; vLLM's source pins one torch.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .env import PixiEnv
from .findings import Finding, failed, passed, skipped, warning
from .pixi import PLATFORM

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PYPI = "https://pypi.org/simple"
PYTORCH_INDEX = re.compile(r"^https?://download\.pytorch\.org/whl\b", re.I)
# What PyTorch's index is known to hold of a vLLM build's requirements (vllm#24875).
PYTORCH_INDEX_ONLY = {"cmake": "3.25.0"}
# vLLM's [build-system] cmake floor: >=3.26 (0.6 to 0.9.1), >=3.26.1 (0.9.2 on; 0.33 read).
VLLM_BUILD_CMAKE = ">=3.26.1"
# Sdists that need torch to build: "undeclared" (isolated build fails), "unpinned" (isolated
# build uses the index's newest torch), "pinned" (vLLM: the torch its pyproject pins).
TORCH_AT_BUILD: dict[str, tuple[str, str]] = {
    "flash-attn": (
        "undeclared",
        "its setup.py imports torch but the sdist declares no build requirements "
        "(flash-attention#1421)",
    ),
    "causal-conv1d": ("unpinned", "its [build-system] asks an unpinned torch"),
    "mamba-ssm": ("unpinned", "its [build-system] asks an unpinned torch"),
    "vllm": ("pinned", "its [build-system] pins the torch of that vLLM release"),
}
SDIST_ONLY = {"flash-attn", "causal-conv1d", "mamba-ssm"}  # no wheels on PyPI (measured)


@dataclass(frozen=True)
class PypiDep:
    """One ``[pypi-dependencies]`` entry."""

    name: str
    kind: str  # "version", "git", "path", "url-wheel", "url-sdist"
    spec: str  # the version spec or the source, as written
    index: str | None
    where: str  # the table it is declared in


@dataclass
class PypiOptions:
    """The merged ``pypi-options`` and ``pypi-dependencies`` of one env's features."""

    table_prefix: str
    manifest_name: str
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    index_strategy: str | None = None
    no_build_isolation: bool | list[str] = False
    deps: dict[str, PypiDep] = field(default_factory=dict)
    conda: dict[str, str] = field(default_factory=dict)  # conda [dependencies]
    options_table: str = "[pypi-options]"

    @property
    def search_order(self) -> list[str]:
        """Indexes in the order uv asks them for a package without ``index =``."""
        return [*self.extra_index_urls, self.index_url or PYPI]

    def isolated(self, name: str) -> bool:
        if self.no_build_isolation is True:
            return False
        if isinstance(self.no_build_isolation, list):
            return canonicalize_name(name) not in {
                canonicalize_name(n) for n in self.no_build_isolation
            }
        return True


def read_options(env: PixiEnv) -> PypiOptions | None:
    """The env's merged PyPI settings from its manifest, or None without a manifest."""
    manifest = env.manifest
    if manifest is None:
        return None
    prefix = manifest.table_prefix()
    opts = PypiOptions(prefix, manifest.path.name, options_table=f"[{prefix}pypi-options]")
    features = manifest.environments().get(env.name or "default", ["default"])
    for feature in features:
        table = manifest.feature_table(feature)
        head = prefix if feature == "default" else f"{prefix}feature.{feature}."
        options = table.get("pypi-options")
        if isinstance(options, Mapping):
            if feature != "default":
                opts.options_table = f"[{head}pypi-options]"
            if isinstance(options.get("index-url"), str):
                opts.index_url = options["index-url"]
            for extra in options.get("extra-index-urls", []) or []:
                url = extra.get("url") if isinstance(extra, Mapping) else extra
                if isinstance(url, str) and url not in opts.extra_index_urls:
                    opts.extra_index_urls.append(url)
            if isinstance(options.get("index-strategy"), str):
                opts.index_strategy = options["index-strategy"]
            nbi = options.get("no-build-isolation")
            if nbi is True:
                opts.no_build_isolation = True
            elif isinstance(nbi, list) and opts.no_build_isolation is not True:
                merged = (
                    opts.no_build_isolation if isinstance(opts.no_build_isolation, list) else []
                )
                opts.no_build_isolation = merged + [str(n) for n in nbi]
        places = [(table.get("pypi-dependencies"), f"[{head}pypi-dependencies]")]
        conda = [table.get("dependencies")]
        target = table.get("target", {})
        if isinstance(target, Mapping) and isinstance(target.get(PLATFORM), Mapping):
            places.append(
                (
                    target[PLATFORM].get("pypi-dependencies"),
                    f"[{head}target.{PLATFORM}.pypi-dependencies]",
                )
            )
            conda.append(target[PLATFORM].get("dependencies"))
        for deps, where in places:
            if isinstance(deps, Mapping):
                for name, spec in deps.items():
                    dep = _dep(str(name), spec, where)
                    opts.deps[canonicalize_name(dep.name)] = dep
        for deps in conda:
            if isinstance(deps, Mapping):
                opts.conda.update({str(k): str(v) for k, v in deps.items()})
    if manifest.kind == "pyproject":
        # pyproject's own [project].dependencies are PyPI dependencies of the default feature
        for line in _project_dependencies(manifest.path):
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            kind = "version"
            if req.url:
                kind = _url_kind(req.url)
            dep = PypiDep(req.name, kind, line, None, "[project.dependencies]")
            opts.deps.setdefault(canonicalize_name(req.name), dep)
    return opts


def _project_dependencies(path: Any) -> list[str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    deps = data.get("project", {}).get("dependencies", [])
    return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []


def _dep(name: str, spec: Any, where: str) -> PypiDep:
    if isinstance(spec, str):
        return PypiDep(name, "version", spec, None, where)
    if not isinstance(spec, Mapping):
        return PypiDep(name, "version", str(spec), None, where)
    index = spec.get("index") if isinstance(spec.get("index"), str) else None
    if "git" in spec:
        return PypiDep(name, "git", str(spec["git"]), index, where)
    if "path" in spec:
        path = str(spec["path"])
        kind = "url-wheel" if path.endswith(".whl") else "path"
        return PypiDep(name, kind, path, index, where)
    if "url" in spec:
        url = str(spec["url"])
        return PypiDep(name, _url_kind(url), url, index, where)
    return PypiDep(name, "version", str(spec.get("version", "*")), index, where)


def _url_kind(url: str) -> str:
    return "url-wheel" if url.split("#")[0].split("?")[0].endswith(".whl") else "url-sdist"


def _builds_from_source(dep: PypiDep) -> bool:
    if dep.kind in ("git", "path", "url-sdist"):
        return True
    return dep.kind == "version" and canonicalize_name(dep.name) in SDIST_ONLY


# -- judgements -----------------------------------------------------------------------------
def index_order(env: PixiEnv, opts: PypiOptions | None) -> Finding:
    """``pypi.index-order``: a PyTorch index searched before PyPI with ``first-index`` hides
    newer versions of the names it mirrors; a source build's ``cmake>=3.26.1`` cannot
    resolve (vllm#24875: "only cmake==3.25.0 is available")."""
    check = "pypi.index-order"
    if opts is None:
        return skipped(check, f"no pixi.toml / pyproject.toml [tool.pixi] for {env.prefix}")
    order = opts.search_order
    strategy = opts.index_strategy or "first-index"
    torch_first = [u for u in order if PYTORCH_INDEX.match(u)]
    pypi_listed = any(u.rstrip("/").startswith(PYPI) for u in order)
    evidence = {"search_order": order, "index_strategy": strategy}
    if not torch_first:
        return passed(check, f"uv searches {', '.join(order)} ({strategy}); no PyTorch index first")
    first_pypi = next((i for i, u in enumerate(order) if u.rstrip("/").startswith(PYPI)), None)
    ahead = first_pypi is None or order.index(torch_first[0]) < first_pypi
    if not ahead:
        return passed(check, f"PyPI is searched before {torch_first[0]}", **evidence)
    builds = [
        d
        for d in opts.deps.values()
        if _builds_from_source(d) and opts.isolated(d.name) and d.index is None
    ]
    vllm_build = [d for d in builds if canonicalize_name(d.name) == "vllm"]
    pinned = "" if pypi_listed else " (and PyPI is not listed at all: index-url replaces it)"
    torch_dep = opts.deps.get("torch")
    torch_spec = torch_dep.spec if torch_dep and torch_dep.kind == "version" else "*"
    fix_index = (
        f'give torch its own index instead: `torch = {{ version = "{torch_spec}", index = '
        f'"{torch_first[0]}" }}` in [{opts.table_prefix}pypi-dependencies] and remove '
        f"{torch_first[0]} from {opts.options_table} in {opts.manifest_name}"
    )
    if vllm_build and (strategy == "first-index" or not pypi_listed):
        have = PYTORCH_INDEX_ONLY["cmake"]
        return failed(
            check,
            f"{vllm_build[0].name} is built from source ({vllm_build[0].where}) in an isolated "
            f"env whose [build-system] asks cmake{VLLM_BUILD_CMAKE}; uv takes cmake from "
            f"{torch_first[0]}, searched first with index-strategy {strategy}{pinned}, which "
            f'holds only cmake=={have}: uv will say "only cmake=={have} is available and you '
            f'require cmake{VLLM_BUILD_CMAKE}"',
            fix_index
            + f', or set `index-strategy = "unsafe-best-match"` in {opts.options_table}'
            + (f' and add "{PYPI}" to extra-index-urls' if not pypi_listed else ""),
            **evidence,
        )
    if strategy == "first-index" or not pypi_listed:
        return warning(
            check,
            f"{torch_first[0]} is searched before PyPI with index-strategy {strategy}{pinned}: "
            "every package name it mirrors (numpy, jinja2, cmake==3.25.0 ...) resolves only "
            "from it, at its versions; a source build's cmake>=3.26 will not resolve",
            fix_index,
            **evidence,
        )
    return passed(
        check,
        f"{torch_first[0]} is searched first, but index-strategy {strategy} also looks at PyPI",
        **evidence,
    )


def build_isolation(env: PixiEnv, opts: PypiOptions | None) -> list[Finding]:
    """``pypi.build-isolation``: source builds that need the env's torch get it."""
    check = "pypi.build-isolation"
    if opts is None:
        return [skipped(check, f"no pixi.toml / pyproject.toml [tool.pixi] for {env.prefix}")]
    torch_conda = next(
        (n for n in ("pytorch", "pytorch-gpu", "pytorch-cpu") if n in opts.conda), None
    )
    torch_version = env.version_of("torch")
    findings = []
    for key, dep in sorted(opts.deps.items()):
        rule = TORCH_AT_BUILD.get(key)
        if rule is None or not _builds_from_source(dep):
            continue
        how, why = rule
        nbi = f"{opts.options_table} in {opts.manifest_name}"
        if opts.isolated(dep.name):
            add = f'add `no-build-isolation = ["{dep.name}"]` to {nbi}'
            conda_torch = (
                f"and provide torch from conda ([{opts.table_prefix}dependencies] pytorch-gpu): "
                "Pixi installs conda packages before it resolves PyPI ones"
            )
            if how == "undeclared":
                findings.append(
                    failed(
                        check,
                        f"{dep.name} ({dep.where}) is built from its sdist in an isolated env "
                        f'without torch: {why}; the build fails with "ModuleNotFoundError: '
                        "No module named 'torch'\"",
                        f"{add} {conda_torch}; or install a prebuilt {dep.name} wheel with "
                        f'`{dep.name} = {{ url = "<wheel for your python, torch, CUDA and '
                        "cxx11abi from the project's release page>\" }`",
                    )
                )
            else:
                findings.append(
                    warning(
                        check,
                        f"{dep.name} ({dep.where}) is built in an isolated env: {why}, so it is "
                        f"compiled against that torch, not the env's "
                        f"{'torch ' + torch_version if torch_version else 'torch'}; its "
                        "extension then fails to load (undefined torch symbols) whenever the "
                        "two differ",
                        f"{add} {conda_torch}",
                    )
                )
            continue
        if torch_conda:
            findings.append(
                passed(check, f"{dep.name} builds without isolation against conda's {torch_conda}")
            )
            continue
        if "torch" in opts.deps:
            findings.append(
                warning(
                    check,
                    f"{dep.name} builds without isolation, but torch comes only from "
                    f"[{opts.table_prefix}pypi-dependencies]: Pixi resolves PyPI packages "
                    "before installing them, so a fresh `pixi install` builds it before torch "
                    'is there (pixi docs: "adding torch as a PyPI dependency would be '
                    'ineffective"); it works only where torch is already installed',
                    f"provide torch from conda: `pytorch-gpu` in [{opts.table_prefix}"
                    f"dependencies] of {opts.manifest_name} (and drop the PyPI torch), or "
                    f"install a prebuilt {dep.name} wheel",
                )
            )
            continue
        findings.append(
            failed(
                check,
                f"{dep.name} builds without isolation but the env declares no torch at all",
                f"add `pytorch-gpu` to [{opts.table_prefix}dependencies] in {opts.manifest_name}",
            )
        )
    if not findings:
        return [passed(check, "no PyPI dependency here builds against torch from source")]
    return findings
