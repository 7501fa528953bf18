"""Will vLLM's compiled extensions load against this torch? (read from files, no import)"""

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import abi, abi_loader, abi_source
from pytest_vllm_env.checks.build_scope import not_built
from pytest_vllm_env.facts.binaries import TORCH_SIDE, built_for, cudart_files
from pytest_vllm_env.facts.linkage import link

pytestmark = pytest.mark.toolchain


def _none(cid, vllm_env, extensions):
    if not extensions:
        return F.skipped(cid, f"no vLLM/xformers/flash-attn extension .so in {vllm_env.prefix}")
    return None


@pytest.mark.vllm_check("abi.pins")
def test_pins(vllm_env, fix_targets, verdict):
    dist = vllm_env.dist("vllm")
    if dist is None:
        verdict(F.skipped("abi.pins", f"vLLM is not installed in {vllm_env.prefix}"))
        return
    installed = {name: vllm_env.version_of(name) for name in abi.PINNED}
    verdict(abi.pins(dist.requires, installed, env=vllm_env, targets=fix_targets))


@pytest.mark.vllm_check("abi.cudart")
def test_cudart(vllm_env, extensions, torch_facts, library_resolver, fix_targets, verdict):
    toolkit = vllm_env.version_of("cuda-version")
    none = _none("abi.cudart", vllm_env, extensions)
    built = {o: built_for(vllm_env, o) for o in {e.owner for e in extensions}}
    sp = vllm_env.site_packages[0] if vllm_env.site_packages else None
    verdict(
        none
        or [
            abi.cudart(
                e,
                torch_facts,
                toolkit,
                env=vllm_env,
                built=built[e.owner],
                # where the loader finds this extension's libcudart (another major than
                # torch's works when the env provides it: round 11a)
                resolved=link(e.path, library_resolver, symbols=False).needed,
                held=cudart_files(vllm_env, e.cudart) if e.cudart else [],
                site_packages=sp,
                targets=fix_targets,
            )
            for e in extensions
        ]
    )


@pytest.mark.vllm_check("abi.symbols")
def test_symbols(vllm_env, extensions, torch_facts, fix_targets, verdict):
    none = _none("abi.symbols", vllm_env, extensions)
    built = {o: built_for(vllm_env, o) for o in {e.owner for e in extensions}}
    verdict(
        none
        or [
            abi.symbols(e, torch_facts, built[e.owner], env=vllm_env, targets=fix_targets)
            for e in extensions
        ]
    )


@pytest.mark.vllm_check("abi.needed")
def test_needed_libraries(
    vllm_env, extensions, torch_facts, library_resolver, fix_targets, verdict
):
    none = _none("abi.needed", vllm_env, extensions)
    version = vllm_env.version_of("vllm")
    built = {o: built_for(vllm_env, o) for o in {e.owner for e in extensions}}
    # torch's own closure: `import torch` loads it before any extension
    own = (
        abi_loader.torch_needed(
            library_resolver.torch_missing, torch_facts, env=vllm_env, targets=fix_targets
        )
        if torch_facts is not None
        else None
    )
    if none:
        verdict([own, none] if own is not None and own.bad else none)
        return
    sp = vllm_env.site_packages[0] if vllm_env.site_packages else None
    verdict(
        [
            abi_loader.needed(
                link(e.path, library_resolver, symbols=False),
                torch_facts,
                version,
                env=vllm_env,
                built=built[e.owner],
                targets=fix_targets,
                held=cudart_files(vllm_env, e.cudart) if e.cudart else [],
                site_packages=sp,
            )
            for e in extensions
        ]
        + ([own] if own is not None else [])
    )


@pytest.mark.vllm_check("abi.undefined")
def test_undefined_symbols(vllm_env, extensions, torch_facts, library_resolver, verdict):
    none = _none("abi.undefined", vllm_env, extensions)
    verdict(
        none
        or [
            abi_loader.undefined(
                link(e.path, library_resolver, TORCH_SIDE), torch_facts, env=vllm_env
            )
            for e in extensions
        ]
    )


@pytest.mark.vllm_check("abi.cxx11")
def test_cxx11(vllm_env, extensions, torch_facts, verdict):
    none = _none("abi.cxx11", vllm_env, extensions)
    verdict(none or [abi.cxx11(e, torch_facts, env=vllm_env) for e in extensions])


@pytest.mark.vllm_check("abi.source-torch")
def test_source_build_torch_floor(vllm_env, vllm_source, nvcc_need, vllm_built_in_env, verdict):
    if vllm_source is not None:
        verdict(
            abi_source.source_tree_torch(vllm_source, vllm_env.version_of("torch"), env=vllm_env)
        )
        return
    vllm = vllm_env.version_of("vllm")
    if vllm is None:
        verdict(F.skipped("abi.source-torch", f"vLLM is not installed in {vllm_env.prefix}"))
        return
    # the installed vLLM's wheel pins its torch (abi.pins); its sources' floor matters only
    # to a build of them
    none = not_built(
        "abi.source-torch",
        nvcc_need,
        bool(vllm_built_in_env),
        reads="compiles vLLM's sources against this torch (abi.pins judges the wheel's pin)",
    )
    if none:
        verdict(none)
        return
    verdict(abi_source.source_torch_floor(vllm, vllm_env.version_of("torch"), env=vllm_env))
