"""``nvtx.cmake-target``: NVTX as a vLLM build's CMake will see it, so that the seed-001
failure is reported in seconds::

    The link interface of target "torch::nvtoolsext" contains: CUDA::nvToolsExt
    but the target was not found.

Pure: what FindCUDAToolkit and torch's ``cuda.cmake`` will do is a fact predicted beforehand
(:mod:`pytest_vllm_env.facts.find_cudatoolkit`, whose docstring cites the CMake and torch
files it models), and with torch's TorchConfig.cmake, ``cmake.torch-config``'s walk
(:mod:`pytest_vllm_env.facts.torch_config`) decides, in the same words and with the same fixes
(:func:`pytest_vllm_env.facts.find_cudatoolkit.nvtoolsext_fix`), so the two never disagree.
"""

from __future__ import annotations

from pathlib import Path

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.find_cudatoolkit import Prediction, nvtoolsext_cause, nvtoolsext_fix
from pytest_vllm_env.facts.toolkit import TARGETS, ToolkitFacts
from pytest_vllm_env.facts.torch_config import VLLM_SOURCE_FIX, ConfigPrediction
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.torch_cmake import TorchCudaCmake

LIBNVTOOLSEXT = "notfound:LIBNVTOOLSEXT"  # torch 2.0-2.4's TorchConfig.cmake (F1.1)


def cmake_target(
    env: PixiEnv,
    t: ToolkitFacts,
    pred: Prediction | None,
    cmake: str,
    torch_cmake: TorchCudaCmake | None = None,
    config: ConfigPrediction | None = None,
) -> Finding:
    """NVTX as a vLLM build's CMake will see it. Nothing in a vLLM build asks for NVTX but
    torch's CMake (vLLM's own CMakeLists names none, 0.4 to 0.33), so without torch, or with a
    torch whose CMake links no NVTX (2.8 on), this passes. With torch's TorchConfig.cmake,
    ``config`` (``cmake.torch-config``'s walk) decides: its NVTX errors are this check's,
    in the same words and with the same fixes, so the two never disagree; the rest of it
    (an earlier stop) is named, not judged here."""
    check = "nvtx.cmake-target"
    if torch_cmake is not None and torch_cmake.error:  # CMake's include() would fail on it
        return error(
            check,
            f"torch's cuda.cmake {torch_cmake.error}",
            _reinstall_torch(env),
            path=str(torch_cmake.path),
        )
    if config is not None and config.torch_unreadable:
        # TorchConfig.cmake & co. hold torch 2.0-2.4's LIBNVTOOLSEXT: the walk past an
        # unreadable one is a guess (cmake.torch-config says the same, in these words)
        return error(
            check,
            f"torch {config.torch_version}'s CMake config cannot be read: "
            f"{config.torch_unreadable[0]}",
            _reinstall_torch(env),
        )
    if pred is None:
        where = "no cmake on the activated PATH" if cmake == "None" else f"{cmake} does not run"
        return skipped(check, f"{where}: no CMake version to predict FindCUDAToolkit for")
    if config is not None and config.cudatoolkit is not None:
        pred = config.cudatoolkit  # the module run with the -D presets the build passes
    evidence: dict[str, object] = {
        "cmake": pred.cmake_version,
        "module": pred.module,
        "nvcc": pred.nvcc,
        "toolkit_root": pred.root,
        "include_dirs": pred.include_dirs,
        "targets": sorted(pred.targets),
        "searched_libnvToolsExt.so": pred.searched.get("libnvToolsExt.so", []),
    }
    if "nvToolsExt.h" in pred.searched:
        evidence["searched_nvToolsExt.h"] = pred.searched["nvToolsExt.h"]
    elsewhere = t.nvtx_outside
    if elsewhere:
        evidence["nvtx_outside_toolkit"] = elsewhere
    if config is not None:
        if config.cudatoolkit is None:  # torch 2.0: NVTX only through TorchConfig's lib64 search
            evidence["module"] = "none: torch's cuda.cmake runs no find_package(CUDAToolkit)"
            evidence["targets"] = []
        return _config_target(check, env, pred, config, evidence)
    if not pred.found:
        return failed(
            check,
            f"{pred.module} will fail: {pred.why_not_found}",
            _not_found_fix(env, t, pred),
            **evidence,
        )
    evidence["nvtx_headers"] = list(pred.nvtx_headers)
    if pred.torch_error:
        return failed(
            check,
            f"torch's cuda.cmake needs CUDA::nvToolsExt, which {pred.module} will not create: "
            f"{nvtoolsext_cause(t, pred, elsewhere)}. CMake will say: {pred.torch_error}",
            nvtoolsext_fix(env, t, pred),
            **evidence,
        )
    if "CUDA::nvToolsExt" in pred.targets:
        return passed(
            check,
            f"CUDA::nvToolsExt -> {pred.targets['CUDA::nvToolsExt']}"
            + (", CUDA::nvtx3" if "CUDA::nvtx3" in pred.targets else ""),
            **evidence,
        )
    if "CUDA::nvtx3" in pred.targets and any("nvtx3" in h for h in evidence["nvtx_headers"]):
        return passed(check, "CUDA::nvtx3 (header-only) with nvtx3/ headers", **evidence)
    why = (
        "no torch in the env"
        if torch_cmake is None
        else f"torch {env.version_of('torch')}'s CMake links no NVTX"
    )
    return passed(
        check,
        f"{why}: nothing in a vLLM build asks CMake for NVTX (no CUDA::nvToolsExt is needed)",
        **evidence,
    )


def _config_target(
    check: str,
    env: PixiEnv,
    pred: Prediction,
    config: ConfigPrediction,
    evidence: dict[str, object],
) -> Finding:
    """The NVTX part of torch's CMake config as ``cmake.torch-config`` walks it: torch
    2.1-2.4's ``Failed to find nvToolsExt``, 2.5-2.7's ``torch::nvtoolsext`` link, 2.0-2.4's
    ``LIBNVTOOLSEXT`` (TorchConfig's lib64 search, F1.1)."""
    version = config.torch_version
    nvtx = config.nvtx_blockers
    if nvtx and config.vllm_error and all(b.signature == LIBNVTOOLSEXT for b in nvtx):
        # torch 2.0-2.4 put LIBNVTOOLSEXT into TORCH_LIBRARIES: it matters only when the vLLM
        # being built links that, which its unreadable CMake files do not say (F1.1)
        return error(
            check,
            f"whether torch {version}'s LIBNVTOOLSEXT (NOTFOUND here) reaches this vLLM build "
            f"is unknown: what the vLLM source tree links cannot be read: {config.vllm_error}",
            VLLM_SOURCE_FIX,
            **evidence,
        )
    if nvtx:
        earlier = config.stop if config.stop is not None and config.stop not in nvtx else None
        before = (
            f" (CMake stops before this: {earlier.message}; see cmake.torch-config)"
            if earlier
            else ""
        )
        then = " Then: " + "; ".join(f"{b.message} ({b.cause})" for b in nvtx[1:]) + "."
        return failed(
            check,
            f"torch {version}'s CMake needs NVTX this env does not give it: {nvtx[0].message} "
            f"({nvtx[0].cause}){before}.{then if len(nvtx) > 1 else ''}",
            "; then ".join(dict.fromkeys(b.fix for b in nvtx)),
            **evidence,
        )
    found = []
    if "CUDA::nvToolsExt" in config.targets and (
        "CUDA::nvToolsExt" in config.needed or pred.torch_needs_nvtoolsext
    ):
        found.append(f"CUDA::nvToolsExt -> {config.targets['CUDA::nvToolsExt']} ({pred.module})")
    if config.libnvtoolsext:
        found.append(f"LIBNVTOOLSEXT -> {config.libnvtoolsext} (TorchConfig.cmake)")
    if found:
        return passed(
            check,
            f"torch {version}'s CMake finds the NVTX it links: " + "; ".join(found),
            **evidence,
        )
    return passed(
        check,
        f"torch {version}'s CMake links no NVTX into this vLLM build (no CUDA::nvToolsExt or "
        "LIBNVTOOLSEXT is needed)",
        **evidence,
    )


def _reinstall_torch(env: PixiEnv) -> str:
    return "reinstall torch: " + (
        fixes.reinstall(env, "pytorch")
        if env.conda("pytorch")
        else fixes.reinstall(env, "torch", pypi=True)
    )


def _not_found_fix(env: PixiEnv, t: ToolkitFacts, pred: Prediction) -> str:
    mm = ".".join((pred.version or t.version or "12.8").split(".")[:2])
    if pred.nvcc is None or (pred.root and not Path(pred.root).is_relative_to(t.prefix)):
        return (
            fixes.add(env, fixes.Package("cuda-nvcc", f"{mm}.*"))
            + " so that CMake finds the env's nvcc"
        )
    if not pred.include_dirs and t.runtime_in_targets:
        return (
            f"CMake {pred.cmake_version} looks only in {pred.root}/include: "
            + fixes.add(env, fixes.Package("cmake", ">=3.28"))
            + " (it reads nvcc's include dirs), or pass "
            f"-DCUDAToolkit_INCLUDE_DIR={t.prefix}/{TARGETS}/include"
        )
    return fixes.add(env, fixes.Package("cuda-cudart-dev", f"{mm}.*"))
