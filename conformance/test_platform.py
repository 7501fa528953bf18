"""glibc floors: do the binaries' symbol versions fit this machine and the manifest's promise,
and can the installer take vLLM's wheel under the env's glibc floor?"""

from pathlib import Path

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import coverage_arch, platform_floor
from pytest_vllm_env.facts import linkage
from pytest_vllm_env.facts.binaries import torch_root
from pytest_vllm_env.facts.lock_env import lock_present, locked_pypi
from pytest_vllm_env.facts.platform import host_glibc

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("platform.glibc")
def test_glibc_versions(vllm_env, extension_paths, library_resolver, verdict):
    root = torch_root(vllm_env)
    torch_libs = sorted((root / "lib").glob("lib*.so")) if root and (root / "lib").is_dir() else []
    binaries = [p for p in torch_libs if p.name.startswith(("libtorch", "libc10"))]
    binaries += list(extension_paths)
    if not binaries:
        verdict(F.skipped("platform.glibc", f"no torch library or extension in {vllm_env.prefix}"))
        return
    needs, providers = [], {}
    for path in binaries:
        link = linkage.link(path, library_resolver, symbols=False)
        if link.error:
            continue  # abi.* report unreadable files
        defs = {}
        for lib, where in link.provider.items():
            elf = linkage.elf_of(where) if where else None
            if elf is not None and elf.version_defs:  # unversioned providers are not checked
                defs[lib] = elf.version_defs
                providers[lib] = str(where)
        needs.append(platform_floor.version_needs(coverage_arch.label_of(path), link, defs))
    floor = platform_floor.pixi_floor(vllm_env.manifest, vllm_env.name)
    libc = linkage.elf_of(Path(providers["libc.so.6"])) if "libc.so.6" in providers else None
    host = (libc and platform_floor.glibc_defined(libc.version_defs)) or host_glibc()
    verdict(platform_floor.glibc(needs, host, floor, providers))


@pytest.mark.vllm_check("platform.wheel-tag")
def test_vllm_wheel_fits_the_glibc_floor(vllm_env, cuda_toolkit, verdict):
    manifest = vllm_env.manifest
    floor = platform_floor.pixi_floor(manifest, vllm_env.name)
    locked = None
    lock = manifest.root / "pixi.lock" if manifest else None
    if lock is not None and lock_present(lock):
        locked = locked_pypi(lock, vllm_env.name or "default", "vllm")
    version, where = platform_floor.wanted_vllm(manifest, vllm_env.name)
    verdict(
        platform_floor.wheel_tag(
            floor,
            host_glibc(),
            version,
            where,
            locked,
            bool(cuda_toolkit.nvcc_in_env),
        )
    )
