"""``cmake.torch-config``: torch's installed CMake config, as a vLLM source build loads it,
gets through configure and generate; else the first error CMake will stop at (and the ones
after it), with the change that gets past each.

The real failures (F1.1, vllm#3673; seed 001): torch 2.0-2.4's TorchConfig.cmake puts a
``LIBNVTOOLSEXT`` it cannot find into ``TORCH_LIBRARIES``; torch 2.5-2.7 link
``torch::nvtoolsext`` to a ``CUDA::nvToolsExt`` no module made; a conda-forge toolkit's
headers are where torch's old FindCUDA does not look.

Pure: the walk through torch's files in CMake's order is a fact predicted beforehand
(:func:`pytest_vllm_env.facts.torch_config.predict_config`, whose docstring cites the torch,
vLLM and CMake files it models); :func:`config_finding` judges it.
"""

from __future__ import annotations

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.torch_config import VLLM_SOURCE_FIX, ConfigPrediction
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.torch_cmake import TorchCMake


def config_finding(
    env: PixiEnv,
    torch: TorchCMake | None,
    pred: ConfigPrediction | None,
    cmake_version: str | None,
) -> Finding:
    """``cmake.torch-config``: torch's CMake config, as vLLM's build loads it, gets through
    configure and generate; else the first error CMake will stop at (and the ones after it)."""
    check = "cmake.torch-config"
    if torch is None:
        return skipped(check, f"torch is not installed in {env.prefix} (or has no share/cmake)")
    if torch.config is None:
        return skipped(check, f"torch {torch.version} has no Torch/TorchConfig.cmake")
    if torch.unreadable:  # CMake's include() fails on it, and the walk would be a guess
        again = fixes.reinstall(env, "pytorch") if env.conda("pytorch") else ""
        return error(
            check,
            f"torch {torch.version}'s CMake config cannot be read: {torch.unreadable[0]}",
            "reinstall torch: " + (again or fixes.reinstall(env, "torch", pypi=True)),
        )
    if pred is None:
        return skipped(check, "no cmake on the activated PATH: no CMake version to predict for")
    evidence: dict[str, object] = {
        "torch": torch.version,
        "cmake": cmake_version,
        "legacy_FindCUDA_root": pred.legacy_root,
        "legacy_FindCUDA_include": pred.legacy_include,
        "CUDA_targets": sorted(pred.targets),
        "needed_by_torch": {k: v or "vLLM" for k, v in pred.needed.items()},
    }
    carries = torch.libnvtoolsext_in_torch_libraries or torch.nvrtc_in_torch_libraries
    if carries and pred.vllm_error:  # whether the build links what torch put there: unknown
        return error(
            check,
            f"what the vLLM source tree links cannot be read: {pred.vllm_error}",
            VLLM_SOURCE_FIX,
            **evidence,
        )
    if carries:
        # torch 2.0-2.4 put libraries found by their own searches into TORCH_LIBRARIES: they
        # matter only when the vLLM being built links it (F1.1)
        evidence["TORCH_LIBRARIES"] = (
            "linked: " if pred.torch_libraries else "not linked: "
        ) + pred.torch_libraries_why
        evidence["cmake_prefix"] = pred.cmake_prefix or "(not the env's: a PyPI or system cmake)"
    if pred.searched.get("libnvToolsExt.so (LIBNVTOOLSEXT)"):
        evidence["LIBNVTOOLSEXT_searched"] = pred.searched["libnvToolsExt.so (LIBNVTOOLSEXT)"]
    if pred.not_modelled:
        evidence["not_predicted"] = pred.not_modelled
    if pred.ok:
        return passed(
            check,
            f"torch {torch.version}'s CMake config configures and generates for a vLLM build "
            f"(CMake {cmake_version})",
            **evidence,
        )
    first = pred.blockers[0]
    rest = pred.blockers[1:]
    then = " Then: " + "; ".join(f"{b.message} ({b.cause})" for b in rest) + "." if rest else ""
    steps = list(dict.fromkeys(b.fix for b in pred.blockers))
    return failed(
        check,
        f"torch {torch.version}'s CMake config will stop a vLLM build: {first.message} "
        f"({first.cause}).{then}",
        "; then ".join(steps),
        **evidence,
    )
