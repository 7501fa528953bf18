"""Do torch's and vLLM's binaries hold kernels for the target GPU archs?"""

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import coverage_arch
from pytest_vllm_env.facts.binaries import torch_root
from pytest_vllm_env.readers import fatbin
from pytest_vllm_env.readers.elf import ElfError
from pytest_vllm_env.readers.xformers_fa3 import read_fa3_dispatch

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("arch.coverage")
def test_arch_coverage(vllm_env, extension_paths, cuda_archs, cuda_archs_source, verdict):
    root = torch_root(vllm_env)
    binaries = [root / "lib" / "libtorch_cuda.so"] if root else []
    binaries = [b for b in binaries if b.is_file()] + list(extension_paths)
    if not binaries:
        verdict(
            F.skipped("arch.coverage", f"no torch CUDA library or extension in {vllm_env.prefix}")
        )
        return
    out = []
    for path in binaries:
        label = coverage_arch.label_of(path)
        fa3 = None
        if coverage_arch.role_of(label).kind == "xformers-fa3":
            pkg = next(p for p in path.parents if p.name == "xformers")
            fa3 = read_fa3_dispatch(pkg)
        try:
            out += coverage_arch.coverage(
                label, fatbin.read_images(path), cuda_archs, fa3=fa3, env=vllm_env
            )
        except ElfError as exc:
            out += coverage_arch.coverage(label, None, cuda_archs, error=str(exc), env=vllm_env)
    verdict(out)
