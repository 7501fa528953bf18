"""The build tier: can this env really compile CUDA code for each target arch?

Two real compiles per target arch, each checked by reading the result's ``.nv_fatbin``:

- ``build.nvcc-kernel``: a tiny kernel built with the nvcc that torch's cpp_extension would
  use (``$CUDA_HOME/bin/nvcc`` after activation, else nvcc on the activated PATH) and the
  flags cpp_extension derives from ``TORCH_CUDA_ARCH_LIST`` (``-gencode=arch=compute_XY,
  code=sm_XY``; torch 2.11 ``_get_cuda_arch_flags``). Needs no torch.
- ``build.torch-extension``: the TARGET env's Python runs ``probes/build_ext.py``, which
  builds a tiny extension with ``torch.utils.cpp_extension.load_inline`` under the env's
  activation with ``TORCH_CUDA_ARCH_LIST`` set to that arch; on a GPU of that arch it also
  loads it and runs it (``build.extension-runs``).

Everything is built under pytest's tmp dirs, never in the judged env. The compiles run in
:mod:`pytest_vllm_env.runners.nvcc_kernel` and ``probes/build_ext.py``; what they printed and
wrote comes here as data (:mod:`pytest_vllm_env.facts.build`): these functions only judge it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.build import BuiltObject, ExtensionBuild, KernelBuild
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.fatbin import describe
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_archs import ARCH_LAST_MAJOR, min_toolkit_for

if TYPE_CHECKING:
    from pytest_vllm_env.facts.env import PixiEnv

# nvcc's words for an arch it cannot build (CUDA 12.4 for sm_120; CUDA 13 for sm_70)
_MISSING_HEADER = re.compile(r"fatal error: ([\w/.+-]+\.h): No such file or directory")
# conda-forge packages that provide the headers a CUDA compile needs first
_HEADER_PACKAGE = {
    "cuda_runtime.h": "cuda-cudart-dev",
    "cuda_runtime_api.h": "cuda-cudart-dev",
    "cuda.h": "cuda-cudart-dev",
    "cuda_fp16.h": "cuda-cudart-dev",
    "nvToolsExt.h": "cuda-nvtx-dev",
}
_UNSUPPORTED = re.compile(r"Unsupported gpu architecture '([^']+)'|Value '([^']+)' is not defined")


def sass_finding(
    env: PixiEnv, cid: str, label: str, built: BuiltObject, arch: Arch, **evidence: object
) -> Finding:
    """Does the built ``.so`` hold SASS for exactly ``arch`` (what a GPU of it will run)?"""
    if built.error:
        return error(
            cid,
            f"{label}: the built {built.path.name} cannot be read: {built.error}",
            "rebuild; if it repeats, the toolchain writes broken objects: reinstall it ("
            + fixes.reinstall(env, "cuda-nvcc")
            + ")",
            **evidence,
        )
    images = built.images
    held = describe(images)
    if any(
        i.kind == "sass" and i.arch.number == arch.number and i.arch.suffix == arch.suffix
        for i in images
    ):
        return passed(
            cid,
            f"{label} for {arch.sm}: built, holds SASS {arch.sm} ({held})",
            holds=held,
            **evidence,
        )
    return failed(
        cid,
        f"{label} for {arch.sm}: built, but holds no SASS {arch.sm} ({held})",
        "something rewrites the arch flags: check NVCC_APPEND_FLAGS / NVCC_PREPEND_FLAGS, "
        f"CUDAARCHS and TORCH_CUDA_ARCH_LIST in {fixes.activation_place(env)} and the env's "
        "etc/conda/activate.d scripts",
        holds=held,
        **evidence,
    )


def _toolkit(env: PixiEnv, mm: str) -> str:
    return fixes.add(
        env,
        fixes.Package("cuda-version", f"{mm}.*"),
        fixes.Package("cuda-nvcc", f"{mm}.*"),
        verb="set",
    )


def _unsupported_fix(env: PixiEnv, arch: Arch, version: str | None, where: str) -> str:
    """The manifest line for an arch nvcc refused: too new for it, or dropped by it."""
    last = ARCH_LAST_MAJOR.get(arch.cc)
    major = int(version.split(".")[0]) if version and version[0].isdigit() else None
    if last is not None and (major is None or major > last):
        return (
            f"CUDA {last + 1} and later cannot build {arch.sm}: {_toolkit(env, str(last))}, or "
            f"drop {arch.cc} from --cuda-arch / TORCH_CUDA_ARCH_LIST"
        )
    need = min_toolkit_for(arch) or "?"
    return (
        f"{where} is CUDA {version or '?'}; {arch.sm} needs CUDA >= {need} (or newer): "
        + _toolkit(env, need)
    )


def nvcc_kernel(env: PixiEnv, build: KernelBuild, arch: Arch) -> Finding:
    """build.nvcc-kernel: the tiny kernel compiled for ``arch`` and holds its SASS."""
    cid = "build.nvcc-kernel"
    nvcc, how, result = build.nvcc, build.how, build.result
    if nvcc is None or result is None:
        return failed(
            cid,
            f"no nvcc to build with: {how} does not exist"
            if "CUDA_HOME" in how
            else "no nvcc on the activated PATH",
            fixes.add(env, fixes.Package("cuda-nvcc"))
            + "; "
            + fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}"),
        )
    cmd = " ".join(result.argv)
    if result.timed_out or result.launch_error:
        return error(
            cid,
            f"{nvcc} did not build the kernel for {arch.sm}: {result.describe()}",
            f"run the command by hand in {fixes.shell(env)}; raise --cuda-tool-timeout if it "
            "was only slow",
            command=cmd,
        )
    if not result.ok:
        text = result.output
        match = _UNSUPPORTED.search(text)
        if match:
            return failed(
                cid,
                f"{nvcc} cannot build for {arch.sm}: "
                + next(line for line in text.splitlines() if match[0] in line).strip(),
                _unsupported_fix(env, arch, build.nvcc_version, str(nvcc)),
                command=cmd,
            )
        header = _MISSING_HEADER.search(text)
        if header:
            name = header[1]
            package = _HEADER_PACKAGE.get(Path(name).name, "cuda-toolkit")
            return failed(
                cid,
                f"{nvcc} cannot build a 5-line kernel for {arch.sm}: {name} is not in the env",
                fixes.add(env, fixes.Package(package))
                + " (the nvcc package alone brings no runtime headers)",
                command=cmd,
                output=text[-1500:],
            )
        return failed(
            cid,
            f"{nvcc} failed to build a 5-line kernel for {arch.sm}: "
            + (text.splitlines()[-1] if text else f"exit {result.returncode}"),
            "the host compiler or headers are broken: "
            + fixes.add(env, fixes.Package("cxx-compiler"))
            + " (gcc <= the max your CUDA supports), and read the output in the evidence",
            command=cmd,
            output=text[-1500:],
        )
    return sass_finding(
        env,
        cid,
        f"a kernel from {nvcc} ({how})",
        build.built or BuiltObject(Path(f"add_one_{arch.sm}.so"), error="not read"),
        arch,
        command=cmd,
        seconds=round(result.seconds, 1),
    )


def torch_extension(env: PixiEnv, probe: ExtensionBuild, arch: Arch) -> Finding:
    """build.torch-extension: cpp_extension built the tiny extension for ``arch`` (the
    probe's JSON) and the ``.so`` holds SASS for it."""
    cid = "build.torch-extension"
    if probe.problem:
        return error(
            cid,
            f"the build probe did not complete for {arch.sm}: {probe.problem}",
            "raise --build-timeout if it was only slow (the first build compiles torch "
            f"headers: minutes); else run probes/build_ext.py by hand in {fixes.shell(env)}",
            output=probe.output_tail[-1500:],
        )
    d = probe.data
    if d.get("torch") is None:
        python = env.python or env.prefix / "bin" / "python"
        return skipped(cid, f"torch is not installed in the env ({python} cannot import it)")
    exc = str(d.get("exception") or "")
    if not d.get("so"):
        log = str(d.get("log") or "")
        text = exc + "\n" + log
        match = _UNSUPPORTED.search(text)
        if "Ninja is required" in exc:
            fix = fixes.add(env, fixes.Package("ninja")) + " (torch.utils.cpp_extension needs it)"
        elif match:
            fix = _unsupported_fix(env, arch, d.get("nvcc_version"), "the nvcc torch uses")
        elif "CUDA_HOME" in exc or "nvcc" in exc and "not found" in exc:
            fix = (
                fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
                + "; "
                + fixes.add(env, fixes.Package("cuda-nvcc"))
            )
        elif "Unknown CUDA arch" in exc:
            fix = (
                f"torch {d['torch']}'s cpp_extension does not know {arch.cc}: use a torch "
                "that lists it, or another --cuda-arch spelling"
            )
        else:
            fix = "read the compiler output in the evidence; fix the header or flag it names"
        # quote the line that says why (nvcc's refusal), not the ninja command before it
        why = next((ln.strip() for ln in text.splitlines() if match and match[0] in ln), "")
        return failed(
            cid,
            f"torch {d['torch']} could not build an extension for {arch.sm}: "
            + (why or (exc.splitlines()[0][:300] if exc else "no .so produced")),
            fix,
            log=log[-1500:],
        )
    return sass_finding(
        env,
        cid,
        f"a torch {d['torch']} extension",
        probe.built or BuiltObject(Path(d["so"]), error="not read"),
        arch,
        seconds=d.get("seconds"),
    )


def extension_runs(probe: ExtensionBuild, arch: Arch) -> Finding:
    """build.extension-runs: on a GPU of ``arch`` the built op gave the right numbers."""
    cid = "build.extension-runs"
    d = probe.data
    if probe.problem or not d.get("so"):
        return skipped(cid, f"no extension was built for {arch.sm} (see build.torch-extension)")
    gpu = d.get("gpu_cc")
    if not gpu:
        return skipped(cid, "no GPU visible to the target env's torch")
    if d.get("ran") is None:
        return skipped(cid, f"the visible GPU is sm {gpu}, not {arch.cc}: built, not run")
    if d.get("ran") and d.get("correct"):
        return passed(cid, f"the extension built for {arch.sm} ran on sm {gpu}: x + 1 correct")
    return failed(
        cid,
        f"the extension built for {arch.sm} did not run correctly on sm {gpu}: "
        + str(d.get("run_error") or "wrong result"),
        "a kernel image that does not run on this GPU: check the driver (`nvidia-smi`) is "
        "new enough for the env's CUDA, and that the SASS arch matches the GPU",
    )
