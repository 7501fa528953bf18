"""The verdicts on the real CMake probe (:mod:`pytest_vllm_env.runners.cmake_probe`):
``nvtx.cmake-probe`` (what the real CMake did about NVTX), ``cmake.torch-probe`` (torch's
config loaded as vLLM does, or where it stopped) and ``cmake.prediction-agrees`` (the static
predictions, ``cmake.torch-config`` and ``nvtx.cmake-target``, against the real run).

Pure: the run's output arrives as a :class:`pytest_vllm_env.readers.cmake_output.ProbeResult`.
"""

from __future__ import annotations

from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.find_cudatoolkit import Prediction
from pytest_vllm_env.facts.torch_config import ConfigPrediction
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.cmake_output import STAGES, ProbeResult


def compare_config(pred: ConfigPrediction, probe: ProbeResult) -> tuple[str, str]:
    """``("agree" | "differ" | "not-comparable", why)``: outcome and cause of the prediction
    against the real CMake run of the vLLM-like project."""
    predicted = (
        f"stops at {pred.stop.signature}"
        if pred.stop
        else (
            "generates with " + ", ".join(b.signature for b in pred.generate)
            if pred.generate
            else "configures and generates"
        )
    )
    real = (
        f"stops at {probe.stop}"
        if probe.stop
        else (
            "generates with " + ", ".join(probe.generate)
            if probe.generate
            else "configures and generates"
        )
    )
    detail = f"predicted: {predicted}; CMake: {real}"
    pred_stage = (
        STAGES.index(pred.stop.signature)
        if pred.stop and pred.stop.signature in STAGES
        else len(STAGES)
    )
    if probe.stop == "compiler-id" and pred_stage > STAGES.index("compiler-id"):
        return "not-comparable", (
            f"{detail}. CMake could not compile with nvcc in enable_language(CUDA), which the "
            "prediction assumes works (build.nvcc-kernel compiles for real)"
        )
    if not pred.complete and not pred.stop:
        return "not-comparable", f"{detail}. Not predicted: {'; '.join(pred.not_modelled)}"
    if pred.stop or probe.stop:
        same = bool(pred.stop and probe.stop == pred.stop.signature)
        return ("agree" if same else "differ"), detail
    same = sorted(b.signature for b in pred.generate) == sorted(probe.generate)
    nvtx = _nvtoolsext_differs(pred, probe)
    if nvtx:
        return "differ", f"{detail}; {nvtx}"
    return ("agree" if same else "differ"), detail


def _nvtoolsext_differs(pred: ConfigPrediction, probe: ProbeResult) -> str:
    """Whether FindCUDAToolkit made ``CUDA::nvToolsExt`` as predicted (which module runs is
    the prediction's to get right: torch's bundled copy, not CMake's own), once the real
    find_package(Torch) got far enough to print the targets."""
    if not probe.torch_found or pred.cudatoolkit is None:
        return ""
    want = "CUDA::nvToolsExt" in pred.targets
    got = "CUDA::nvToolsExt" in probe.targets
    if want == got:
        return ""
    return (
        f"CUDA::nvToolsExt: predicted {'made' if want else 'not made'} by "
        f"{pred.cudatoolkit.module}, CMake {'made' if got else 'did not make'} it"
    )


def agree(pred: Prediction, probe: ProbeResult) -> list[str]:
    """Where the prediction and the real CMake disagree (empty when they agree)."""
    diffs = []
    if pred.found != probe.found:
        diffs.append(f"found: predicted {pred.found}, cmake {probe.found}")
    if pred.found and probe.found:
        want, got = pred.target_names, probe.target_names
        if want != got:
            diffs.append(f"targets: predicted {sorted(want)}, cmake {sorted(got)}")
    predicted_error = bool(pred.torch_error)
    real_error = any("nvToolsExt" in e for e in probe.errors)
    if predicted_error != real_error:
        diffs.append(f"torch NVTX error: predicted {predicted_error}, cmake {real_error}")
    return diffs


def probe_finding(env: PixiEnv, probe: ProbeResult, pred: Prediction | None) -> Finding:
    """``nvtx.cmake-probe``: what the real CMake did about NVTX. In a vLLM-like run that
    stopped before torch's NVTX part, NVTX was not reached: skipped, naming the stop
    (``cmake.torch-probe`` reports it)."""
    check = "nvtx.cmake-probe"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    evidence = {
        "cmake": probe.cmake,
        "targets": sorted(probe.targets),
        "torch_targets": probe.torch_targets,
        "errors": probe.errors,
    }
    if probe.mode == "vllm":
        nvtx = [g for g in probe.generate if "nvToolsExt" in g or "LIBNVTOOLSEXT" in g]
        if probe.stop == "nvtoolsext-fatal":
            nvtx = ["nvtoolsext-fatal"]
        if nvtx:
            return failed(
                check,
                f"{probe.cmake}: torch's CMake needs NVTX and CMake has none: "
                + "; ".join(_describe(n) for n in nvtx),
                "see nvtx.cmake-target for the change",
                **evidence,
            )
        if probe.stop:
            return skipped(
                check,
                f"CMake stopped before torch's NVTX part ({_describe(probe.stop)}): see "
                "cmake.torch-probe",
                **evidence,
            )
        return passed(
            check, f"{probe.cmake}: torch's CMake found all the NVTX it links", **evidence
        )
    diffs = agree(pred, probe) if pred else []
    if diffs:
        evidence["prediction_differs"] = diffs
    if not probe.ok or not probe.found:
        what = "; ".join(probe.errors) or "CUDAToolkit not found"
        return failed(
            check,
            f"{probe.cmake} failed to configure the probe: {what}",
            "see nvtx.cmake-target and cuda.cmake-components for the package to add",
            **evidence,
        )
    return passed(
        check,
        f"{probe.cmake} found CUDA {probe.version}: {', '.join(sorted(probe.targets))}",
        **evidence,
    )


DESCRIBE = {
    "cmake-minimum": "cmake_minimum_required refused this CMake",
    "caffe2-cuda": "Caffe2Config.cmake: Your installed Caffe2 version uses CUDA but I cannot "
    "find the CUDA libraries",
    "compiler-id": "enable_language(CUDA) could not compile with nvcc",
    "cudatoolkit": "Could NOT find CUDAToolkit",
    "nvtoolsext-fatal": "Failed to find nvToolsExt",
}


def _describe(signature: str) -> str:
    if signature in DESCRIBE:
        return DESCRIBE[signature]
    kind, _, what = signature.partition(":")
    if kind == "link":
        return f"{what} linked but the target was not found"
    if kind == "notfound":
        return f"{what} is NOTFOUND"
    if kind == "property":
        return f'get_target_property() called with non-existent target "{what}"'
    return what or signature


def torch_probe_finding(probe: ProbeResult) -> Finding:
    """``cmake.torch-probe``: the real CMake loaded torch's config as vLLM does and generated
    (or where it stopped)."""
    check = "cmake.torch-probe"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    if probe.mode != "vllm":
        return skipped(check, "no torch TorchConfig.cmake in the env: nothing to load")
    evidence = {"cmake": probe.cmake, "errors": probe.errors, "output_tail": probe.output[-1500:]}
    if probe.stop:
        return failed(
            check,
            f"{probe.cmake} stopped in torch's CMake config: {_describe(probe.stop)}",
            "see cmake.torch-config for the change",
            **evidence,
        )
    if probe.generate:
        return failed(
            check,
            f"{probe.cmake} configured torch's CMake but generation failed: "
            + "; ".join(_describe(g) for g in probe.generate),
            "see cmake.torch-config for the change",
            **evidence,
        )
    return passed(check, f"{probe.cmake} loaded torch's CMake and linked like vLLM", **evidence)


def agreement_finding(
    pred: ConfigPrediction | None, nvtx_pred: Prediction | None, probe: ProbeResult
) -> Finding:
    """``cmake.prediction-agrees``: the static predictions (``cmake.torch-config``,
    ``nvtx.cmake-target``) and the real CMake agree in outcome and cause. A disagreement is a
    defect of the prediction, not of the env: a warning that says which to trust (the probe)."""
    check = "cmake.prediction-agrees"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    if probe.mode == "vllm":
        if pred is None:
            return skipped(check, "no prediction of torch's CMake config to compare")
        verdict, why = compare_config(pred, probe)
        if verdict == "not-comparable":
            return skipped(check, why)
        if verdict == "agree":
            return passed(check, f"prediction and {probe.cmake} agree: {why}")
        return warning(
            check,
            f"prediction and {probe.cmake} disagree ({why}); trust the real CMake "
            "(cmake.torch-probe)",
            "report this env to pytest-vllm-env with both verdicts: the static prediction "
            "missed a rule of torch's CMake files",
            probe_errors=probe.errors,
        )
    if nvtx_pred is None:
        return skipped(check, "no prediction to compare (no cmake version)")
    diffs = agree(nvtx_pred, probe)
    if diffs:
        return warning(
            check,
            f"prediction and {probe.cmake} disagree: {'; '.join(diffs)}; trust the real CMake "
            "(nvtx.cmake-probe)",
            "report this env to pytest-vllm-env with both verdicts",
        )
    return passed(check, f"prediction and {probe.cmake} agree on FindCUDAToolkit and NVTX")
