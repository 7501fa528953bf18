"""A vLLM source tree (``--vllm-source``) judged before its build: what the next
``pip install -e .`` will really hand CMake, against what the tree and its build dir hold.

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

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import proc
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning

SCALAR_NAME = re.compile(
    r"\b(?:at|c10|torch)::(?:ScalarType::)?k?((?:Float8|Float4|Float6)_\w+|UInt(?:16|32|64)|Bits\w+)\b"
)
TORCH_SCALAR_TYPES = "torch/include/c10/core/ScalarType.h"


@dataclass
class CMakeCache:
    """One ``CMakeCache.txt`` of the tree's build dir."""

    path: Path
    entries: dict[str, str] = field(default_factory=dict)


def read_caches(tree: Path) -> list[CMakeCache]:
    """``build/*/CMakeCache.txt`` (setup.py's ``build_temp``) and ``build/CMakeCache.txt``."""
    caches = []
    for path in sorted([*tree.glob("build/*/CMakeCache.txt"), *tree.glob("build/CMakeCache.txt")]):
        cache = CMakeCache(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z_][\w.-]*)(?::[A-Z]+)?=(.*)$", line)
            if m and not line.startswith(("//", "#")):
                cache.entries[m.group(1)] = m.group(2)
        caches.append(cache)
    return caches


def torch_cuda_home(environ: dict[str, str]) -> str | None:
    """``torch.utils.cpp_extension._find_cuda_home()``: CUDA_HOME, CUDA_PATH, ``which nvcc``'s
    grandparent, then /usr/local/cuda when it exists."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(var):
            return environ[var]
    nvcc = proc.which("nvcc", environ.get("PATH"))
    if nvcc is not None:
        return os.path.dirname(os.path.dirname(str(nvcc)))
    return "/usr/local/cuda" if os.path.exists("/usr/local/cuda") else None


def _passes_cuda_compiler(tree: Path) -> bool:
    try:
        return "-DCMAKE_CUDA_COMPILER=" in (tree / "setup.py").read_text(errors="replace")
    except OSError:
        return False


def cmake_cache(env: PixiEnv, tree: Path, torch_config_dir: Path | None) -> list[Finding]:
    """``source.cmake-cache``: the tree's build dir will not derail the next configure."""
    check = "source.cmake-cache"
    caches = read_caches(tree)
    if not caches:
        return [passed(check, f"no CMakeCache.txt under {tree}/build: a fresh configure")]
    environ = env.environ()
    generator = "Ninja" if proc.which("ninja", environ.get("PATH")) else "Unix Makefiles"
    cuda_home = torch_cuda_home(environ)
    next_nvcc = f"{cuda_home}/bin/nvcc" if cuda_home else None
    passes_nvcc = _passes_cuda_compiler(tree)
    findings = []
    for cache in caches:
        e = cache.entries
        build_dir = cache.path.parent
        fix = f"delete the stale build dir before building again: `rm -rf {build_dir}`"
        problems: list[tuple[str, str]] = []  # (level, text)
        home = e.get("CMAKE_HOME_DIRECTORY")
        if home and os.path.realpath(home) != os.path.realpath(tree):
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
        if cached_nvcc and next_nvcc and passes_nvcc and not _same(cached_nvcc, next_nvcc):
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
        elif cached_nvcc and not passes_nvcc and next_nvcc and not _same(cached_nvcc, next_nvcc):
            gone = not os.path.exists(cached_nvcc)
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
        torch_dir = e.get("Torch_DIR")
        if (
            torch_dir
            and torch_config_dir is not None
            and (Path(torch_dir) / "TorchConfig.cmake").is_file()
            and not _same(torch_dir, str(torch_config_dir))
        ):
            problems.append(
                (
                    "failed",
                    f"it caches Torch_DIR={torch_dir}, another torch than the env's "
                    f"({torch_config_dir}); find_package(Torch) keeps a cached dir that still "
                    "holds TorchConfig.cmake, so the extension is built against that torch",
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


def _same(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b) or os.path.realpath(a) == os.path.realpath(b)


def torch_scalar_types(env: PixiEnv) -> set[str] | None:
    """The scalar type names of the env's torch (``_(c10::X, Name)`` in ScalarType.h)."""
    text = env.package_text("torch", TORCH_SCALAR_TYPES)
    if text is None:
        return None
    return set(re.findall(r"_\(\s*[\w:<>]+\s*,\s*(\w+)\s*\)", text))


def torch_api(env: PixiEnv, tree: Path) -> Finding:
    """``source.torch-api``: every torch scalar type vLLM's kernels name exists in the env's
    torch (F1.12: ``at::Float8_e8m0fnu`` against torch 2.6)."""
    check = "source.torch-api"
    csrc = tree / "csrc"
    if not csrc.is_dir():
        return skipped(check, f"{tree} has no csrc/: not a vLLM source tree")
    torch_version = env.version_of("torch")
    names = torch_scalar_types(env)
    if names is None:
        return skipped(check, f"no torch headers ({TORCH_SCALAR_TYPES}) in {env.prefix}")
    used: dict[str, str] = {}
    for path in sorted(csrc.rglob("*")):
        if path.suffix not in (".cu", ".cuh", ".cpp", ".h", ".hpp", ".cc"):
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for m in SCALAR_NAME.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            used.setdefault(m.group(1), f"{path.relative_to(tree)}:{line}")
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
            "install the torch this vLLM tag pins (its requirements/cuda.txt or pyproject "
            "[build-system]) in [pypi-dependencies] of pixi.toml, or check out the vLLM tag "
            f"made for torch {torch_version}",
            missing=missing,
        )
    return passed(
        check, f"torch {torch_version} defines every scalar type vLLM's kernels use ({len(used)})"
    )


def readable(tree: Path) -> Finding | None:
    """An error finding when ``--vllm-source`` is not a directory."""
    if tree.is_dir():
        return None
    return error("source.tree", f"--vllm-source {tree} is not a directory", "pass a vLLM checkout")


# vLLM's CMake floor: cmake_minimum_required(VERSION 3.26) from 0.6 (3.21 before), and
# find_package(Python ... Development.SABIModule), a component FindPython knows from 3.26.
VLLM_CMAKE_FLOOR = "3.26"


def cmake_floor(tree: Path | None) -> tuple[str, str]:
    """(floor, where it comes from) for the tree, or vLLM's current floor without one."""
    if tree is not None:
        try:
            text = (tree / "CMakeLists.txt").read_text(errors="replace")
        except OSError:
            text = ""
        m = re.search(r"cmake_minimum_required\(\s*VERSION\s+([\d.]+)", text)
        utils = ""
        try:
            utils = (tree / "cmake" / "utils.cmake").read_text(errors="replace")
        except OSError:
            pass
        floor = m.group(1) if m else None
        if "Development.SABIModule" in utils and (floor is None or _v(floor) < (3, 26)):
            return "3.26", f"{tree}/cmake/utils.cmake (FindPython's Development.SABIModule)"
        if floor:
            return floor, f"{tree}/CMakeLists.txt (cmake_minimum_required)"
    return VLLM_CMAKE_FLOOR, "vLLM >= 0.6's CMakeLists.txt (cmake_minimum_required, SABIModule)"


def _v(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def cmake_version_floor(
    env: PixiEnv,
    cmake: Path | None,
    cmake_version: str | None,
    tree: Path | None,
    vllm_built_in_env: str | None,
) -> Finding:
    """``cmake.vllm-floor``: the CMake a vLLM build without isolation runs meets vLLM's floor.
    ``vllm_built_in_env`` says why the env's own cmake is the one (``--vllm-source`` or the
    manifest's ``no-build-isolation``)."""
    check = "cmake.vllm-floor"
    if tree is None and vllm_built_in_env is None:
        return skipped(
            check,
            "no vLLM source build that uses the env's cmake (pass --vllm-source, or declare "
            "vllm as a git/path dependency with no-build-isolation)",
        )
    floor, where = cmake_floor(tree)
    why = vllm_built_in_env or "a --no-build-isolation build of --vllm-source"
    deps = (
        f"[{env.manifest.table_prefix()}dependencies] in {env.manifest_path.name}"
        if env.manifest and env.manifest_path
        else "[dependencies] in pixi.toml"
    )
    if cmake is None or not cmake_version:
        return failed(
            check,
            f"{why} runs `cmake` from the env, and there is none on the activated PATH",
            f'add `cmake = ">={floor}"` to {deps}',
        )
    if _v(cmake_version) < _v(floor):
        return failed(
            check,
            f"{why} runs {cmake} (CMake {cmake_version}); vLLM needs CMake >= {floor} ({where}): "
            f'CMake will say "CMake {floor} or higher is required.  You are running version '
            f'{cmake_version}"',
            f'set `cmake = ">={floor}"` in {deps}',
        )
    return passed(check, f"CMake {cmake_version} >= {floor} ({where})")
