"""The build tier's first compile: a 5-line kernel built with the nvcc a torch extension build
would use, for one target arch, under pytest's tmp dir (never in the judged env). Its result
comes back as data (:class:`pytest_vllm_env.facts.build.KernelBuild`); ``build.nvcc-kernel``
(:mod:`pytest_vllm_env.checks.build`) judges it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pytest_vllm_env import proc
from pytest_vllm_env.facts.build import KernelBuild, build_nvcc, gencode_flags, read_built
from pytest_vllm_env.tables.archs import Arch

KERNEL = """\
__global__ void add_one(float *x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}
extern "C" void launch_add_one(float *x, int n) { add_one<<<(n + 255) / 256, 256>>>(x, n); }
"""


def compile_kernel(
    nvcc: Path, arch: Arch, workdir: Path, environ: Mapping[str, str], timeout: float
) -> proc.ProcResult:
    """``nvcc -shared`` the tiny kernel for ``arch`` into ``workdir/add_one_<sm>.so``."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "add_one.cu"
    src.write_text(KERNEL)
    out = workdir / f"add_one_{arch.sm}.so"
    argv = [nvcc, "-shared", "-Xcompiler", "-fPIC", *gencode_flags(arch), "-o", out, src]
    return proc.run(argv, env=dict(environ), cwd=workdir, timeout=timeout)


def kernel_build(
    environ: Mapping[str, str],
    nvcc_on_path: Path | None,
    toolkit_version: str | None,
    arch: Arch,
    workdir: Path,
    timeout: float,
) -> KernelBuild:
    """Build the kernel for ``arch`` with the nvcc cpp_extension would pick in the activated
    ``environ``, and read the ``.so`` it wrote."""
    nvcc, how = build_nvcc(environ, nvcc_on_path)
    if nvcc is None:
        return KernelBuild(None, how)
    result = compile_kernel(nvcc, arch, workdir, environ, timeout)
    version = toolkit_version if nvcc == nvcc_on_path else None
    built = None
    if result.ok and not (result.timed_out or result.launch_error):
        built = read_built(workdir / f"add_one_{arch.sm}.so")
    return KernelBuild(nvcc, how, result, version, built)
