"""``source.*``: a vLLM source tree (``--vllm-source``) judged before its build: what the next
``pip install -e .`` will really hand CMake, against what the tree and its build dir hold
(read by :mod:`pytest_vllm_env.readers.source_tree`, as facts by
:mod:`pytest_vllm_env.facts.source_tree`; ``cmake.vllm-floor`` is in :mod:`.cmake_floor`).

What decides (vLLM ``setup.py`` and ``CMakeLists.txt``, 0.4.1 to 0.33.0 read from the PyPI
sdists):

- The Python: ``setup.py`` passes ``-DVLLM_PYTHON_EXECUTABLE={sys.executable}``, the
  interpreter running the build; ``CMakeLists.txt`` reads only that CMake variable, never
  ``$ENV{VLLM_PYTHON_EXECUTABLE}``, so the environment variable has no effect.
- The compiler: from 0.9.0 ``setup.py`` passes ``-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc``
  (``CUDA_HOME`` as ``torch.utils.cpp_extension`` finds it: ``$CUDA_HOME``, ``$CUDA_PATH``,
  the dir above ``nvcc`` on ``PATH``, then ``/usr/local/cuda``); the generator is ``Ninja`` when
  ``ninja`` runs, else CMake's default (``Unix Makefiles``).
- The build dir ``build/temp.linux-x86_64-<python>`` is reused. Measured with CMake 4.1.2:
  passing a ``-DCMAKE_<LANG>_COMPILER`` that differs from the cached one makes CMake say "You
  have changed variables that require your cache to be deleted ... Configure will be re-run",
  and that re-run drops every other ``-D`` of the command line: vLLM's CMakeLists then stops
  with "Please set VLLM_PYTHON_EXECUTABLE to the path of the desired python version before
  running cmake configure" (the seed write-up's F1.4). A compiler given only by the
  environment (``CC``, ``CUDACXX``) is ignored once cached: the old one keeps being used.
  Another generator is refused ("Does not match the generator used previously"), and a
  cached ``Torch_DIR`` that still holds a ``TorchConfig.cmake`` is used as is.

torch's C++ API (F1.12): vLLM's kernels name torch scalar types (``at::Float8_e8m0fnu``, added
in torch 2.7; ``c10::Float4_e2m1fn_x2``, 2.8); a torch whose ``c10/core/ScalarType.h`` lacks one
fails the build with "enum c10::ScalarType has no member". ``use_existing_torch.py`` removes the
torch pins from the tree, so the pins alone cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from pytest_vllm_env.checks.abi_fixes import NO_ENV, torch_package
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.source_tree import TORCH_SCALAR_TYPES, KernelTypes, NextBuild, SourceTree
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning


def readable(tree: SourceTree) -> Finding | None:
    """``source.tree``: an error finding when ``--vllm-source`` is not a directory."""
    if tree.is_dir:
        return None
    return error(
        "source.tree", f"--vllm-source {tree.path} is not a directory", "pass a vLLM checkout"
    )


def cmake_cache(build: NextBuild) -> list[Finding]:
    """``source.cmake-cache``: the tree's build dir will not derail the next configure."""
    check = "source.cmake-cache"
    tree = build.tree
    if not build.caches:
        return [passed(check, f"no CMakeCache.txt under {tree}/build: a fresh configure")]
    generator, cuda_home, next_nvcc = build.generator, build.cuda_home, build.nvcc
    findings = []
    for cache in build.caches:
        e = cache.entries
        build_dir = cache.path.parent
        fix = f"delete the stale build dir before building again: `rm -rf {build_dir}`"
        problems: list[tuple[str, str]] = []  # (level, text)
        home = e.get("CMAKE_HOME_DIRECTORY")
        if cache.home_elsewhere:
            problems.append(
                (
                    "failed",
                    f'it was made for the source dir {home}, not {tree}: CMake refuses ("does '
                    'not match the source ... used to generate cache")',
                )
            )
        cached_gen = e.get("CMAKE_GENERATOR")
        if cached_gen and cached_gen != generator:
            problems.append(
                (
                    "failed",
                    f"it was generated with {cached_gen}, the next build uses {generator} (ninja "
                    f"{'is' if generator == 'Ninja' else 'is not'} on the activated PATH): CMake "
                    f'refuses ("Does not match the generator used previously: {cached_gen}")',
                )
            )
        cached_nvcc = e.get("CMAKE_CUDA_COMPILER")
        if cached_nvcc and next_nvcc and build.passes_nvcc and not cache.nvcc_same:
            problems.append(
                (
                    "failed",
                    f"it caches CMAKE_CUDA_COMPILER={cached_nvcc} while setup.py will pass "
                    f"{next_nvcc} (CUDA_HOME={cuda_home}): CMake deletes the cache and re-runs "
                    "configure without setup.py's other -D options, and vLLM stops with "
                    '"Please set VLLM_PYTHON_EXECUTABLE to the path of the desired python '
                    'version before running cmake configure"',
                )
            )
        elif cached_nvcc and not build.passes_nvcc and next_nvcc and not cache.nvcc_same:
            gone = cache.nvcc_gone
            problems.append(
                (
                    "failed" if gone else "warning",
                    f"it caches CMAKE_CUDA_COMPILER={cached_nvcc}; this setup.py passes none, so "
                    + (
                        "CMake keeps the cached one, which no longer exists"
                        if gone
                        else f"CMake keeps using it, not the env's {next_nvcc}"
                    ),
                )
            )
        if cache.other_torch:
            problems.append(
                (
                    "failed",
                    f"it caches Torch_DIR={e.get('Torch_DIR')}, another torch than the env's "
                    f"({build.torch_config_dir}); find_package(Torch) keeps a cached dir that "
                    "still holds TorchConfig.cmake, so the extension is built against that torch",
                )
            )
        python = e.get("VLLM_PYTHON_EXECUTABLE")
        note = {"cache": str(cache.path)}
        if python:
            note["cached_python"] = python
        if not problems:
            findings.append(passed(check, f"{cache.path} matches the next build", **note))
            continue
        level = "failed" if any(p[0] == "failed" for p in problems) else "warning"
        make = failed if level == "failed" else warning
        findings.append(
            make(check, f"{cache.path}: " + "; ".join(p[1] for p in problems), fix, **note)
        )
    return findings


def torch_api(
    tree: Path,
    types: KernelTypes,
    prefix: Path,
    *,
    env: PixiEnv | None = None,
    pins: Sequence[tuple[str, str]] = (),
) -> Finding:
    """``source.torch-api``: every torch scalar type vLLM's kernels name exists in the env's
    torch (F1.12: ``at::Float8_e8m0fnu`` against torch 2.6). ``pins``: the tree's torch
    requirements (``(where, "torch==2.9.0")``, :class:`pytest_vllm_env.readers.vllm_build.
    SourceTree`), the torch the fix installs, in ``env``'s language."""
    check = "source.torch-api"
    if not types.has_csrc:
        return skipped(check, f"{tree} has no csrc/: not a vLLM source tree")
    names = types.defined
    if names is None and types.error:  # there and unreadable: nvcc's #include fails on it
        return error(check, f"torch's {TORCH_SCALAR_TYPES} cannot be read: {types.error}",
                     "reinstall torch (its files are damaged)")  # fmt: skip
    if names is None:
        return skipped(check, f"no torch headers ({TORCH_SCALAR_TYPES}) in {prefix}")
    torch_version = types.torch_version
    used = types.uses
    missing = {n: w for n, w in sorted(used.items()) if n not in names}
    if not used:
        return passed(check, f"{tree}/csrc names no newer torch scalar types")
    if missing:
        first = next(iter(missing.items()))
        return failed(
            check,
            f"vLLM's kernels use {', '.join(f'{n} ({w})' for n, w in missing.items())}, which "
            f"torch {torch_version}'s c10/core/ScalarType.h does not define: nvcc will stop with "
            f'"enum c10::ScalarType has no member {first[0]}"',
            fixes.otherwise(
                _install_pinned_torch(env or NO_ENV, pins),
                f"check out the vLLM tag made for torch {torch_version}",
                ", or ",
            ),
            missing=missing,
        )
    return passed(
        check, f"torch {torch_version} defines every scalar type vLLM's kernels use ({len(used)})"
    )


def _install_pinned_torch(env: PixiEnv, pins: Sequence[tuple[str, str]]) -> str:
    """The torch the tree pins (an exact pin first), in the env's language; without a pin
    (``use_existing_torch.py`` removed them), where to add the one its tag was made for."""
    reqs: list[tuple[str, Requirement]] = []
    for where, line in pins:
        try:
            reqs.append((where, Requirement(line)))
        except InvalidRequirement:
            continue
    exact = [(w, r) for w, r in reqs if any(s.operator == "==" for s in r.specifier)]
    chosen = (exact or reqs or [None])[0]
    if chosen is None:
        return (
            "install the torch this vLLM tag pins (its requirements/cuda.txt or pyproject "
            f"[build-system]) in {fixes.deps_place(env, pypi=True)}"
        )
    where, req = chosen
    return f"install the torch the tree pins ({where}: {req}): " + fixes.pin(
        env, torch_package(env, str(req.specifier))
    )
