"""``pypi.index-order`` and ``pypi.build-isolation``: the manifest's PyPI side, judged before
any install: which index uv searches first, and which source builds run isolated from the env's
torch.

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

Packages whose build needs torch (read from their PyPI sdists: ``setup.py`` imports torch;
none has a wheel on PyPI): ``flash-attn`` (every release read), ``torch-scatter``,
``torch-sparse``, ``torch-cluster``, ``causal-conv1d`` < 1.5.1 and ``mamba-ssm`` 2.2.2 declare no
build requirements at all (no ``pyproject.toml``), and ``mamba-ssm`` >= 2.3.2 leaves torch out
of ``[build-system]`` on purpose, so an isolated build fails with ``No module named 'torch'``
(flash-attention#1421; seed 004 in Pixi); ``causal-conv1d`` >= 1.5.1 and ``mamba-ssm``
2.2.3 .. 2.3.1 list an unpinned ``torch``, so isolation builds them against whatever torch the
index has newest, not the env's; vLLM's source pins one torch.

A venv has no manifest: its project's ``requirements*.txt``, ``pyproject.toml`` and
``uv.lock`` (:mod:`pytest_vllm_env.readers.venv_project`) say the same for pip and uv (F5.1). A
requirements file cannot turn isolation off (pip and uv stop on ``--no-build-isolation`` in
one); pip's own configuration can (pip.conf, ``PIP_NO_BUILD_ISOLATION``, read inverted:
:mod:`pytest_vllm_env.readers.pip_config`), and so can uv's (``uv.toml`` / ``[tool.uv]``
``no-build-isolation(-package)`` and ``extra-build-dependencies``, ``UV_NO_BUILD_ISOLATION``:
:mod:`pytest_vllm_env.readers.uv_config`). Pixi reads only its ``[pypi-options]``.
Requirements whose marker is false for the env's Python and platform are not judged. What the
settings are comes from :mod:`pytest_vllm_env.facts.pypi`; a venv's project is judged in
:mod:`.pypi_venv`.
"""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

from pytest_vllm_env.checks.pypi_venv import venv_build_isolation
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.pypi import PYPI, PypiOptions, builds_from_source
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.tables.sdist_torch import torch_rule

PYTORCH_INDEX = re.compile(r"^https?://download\.pytorch\.org/whl\b", re.I)
# What PyTorch's index is known to hold of a vLLM build's requirements (vllm#24875).
PYTORCH_INDEX_ONLY = {"cmake": "3.25.0"}
# vLLM's [build-system] cmake floor: >=3.26 (0.6 to 0.9.1), >=3.26.1 (0.9.2 on; 0.33 read).
VLLM_BUILD_CMAKE = ">=3.26.1"


def index_order(env: PixiEnv, opts: PypiOptions | None) -> Finding:
    """``pypi.index-order``: a PyTorch index searched before PyPI with ``first-index`` hides
    newer versions of the names it mirrors; a source build's ``cmake>=3.26.1`` cannot
    resolve (vllm#24875: "only cmake==3.25.0 is available")."""
    check = "pypi.index-order"
    if opts is None:
        return skipped(check, f"no pixi.toml / pyproject.toml [tool.pixi] for {env.prefix}")
    if opts.tool != "pixi":
        return skipped(
            check, f"judged for Pixi manifests; {env.prefix} is installed with {opts.tool}"
        )
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
        if builds_from_source(d) and opts.isolated(d.name) and d.index is None
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
        return [
            skipped(
                check,
                f"no pixi.toml / pyproject.toml [tool.pixi] for {env.prefix}, and no project "
                "files (pyproject.toml, requirements*.txt, uv.lock) beside it: pass "
                "--vllm-project=PATH for a venv",
            )
        ]
    if opts.tool != "pixi":
        return venv_build_isolation(env, opts)
    findings = _pixi_build_isolation(env, opts)
    if opts.companion is not None:
        # --vllm-project for a Pixi env: `pixi run pip install -r ...` into it
        findings += venv_build_isolation(env, opts.companion)
    return findings


def _pixi_build_isolation(env: PixiEnv, opts: PypiOptions) -> list[Finding]:
    check = "pypi.build-isolation"
    torch_conda = next(
        (n for n in ("pytorch", "pytorch-gpu", "pytorch-cpu") if n in opts.conda), None
    )
    torch_version = env.version_of("torch")
    findings = []
    for key, dep in sorted(opts.deps.items()):
        rule = torch_rule(key, dep.spec if dep.kind == "version" else "")
        if rule is None or not builds_from_source(dep):
            continue
        how, why = rule
        nbi = f"{opts.options_table} in {opts.manifest_name}"
        isolation = opts.isolation(dep)
        if isolation.isolated:
            # F5.2: a PIP_/UV_NO_BUILD_ISOLATION someone set hoping pixi reads it: it does not
            ignored = "".join(f"; {n}" for n in isolation.notes)
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
                        f"No module named 'torch'\"{ignored}",
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
                        f"two differ{ignored}",
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
