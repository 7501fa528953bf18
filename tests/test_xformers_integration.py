"""Real vLLM wheels (opt-in, --run-integration): the decision read from each version's own
vision-attention files matches the per-version rule in docs/xformers.md, and our
torch -> xformers table agrees with the pins vLLM itself ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.wheels import members
from pytest_vllm_env.checks import xformers as X
from pytest_vllm_env.readers import vllm_vit as R
from pytest_vllm_env.tables.archs import parse_arch

pytestmark = pytest.mark.integration

VERSIONS = ("0.8.5", "0.10.1.1", "0.12.0", "0.26.0")
# version -> (rule, sm 9.0 without flash-attn, sm 9.0 with flash-attn, sm 7.5)
EXPECTED = {
    "0.8.5": ("fa2-or-xformers", "XFORMERS", "FLASH_ATTN", "XFORMERS"),
    "0.10.1.1": ("fa2-or-xformers", "XFORMERS", "FLASH_ATTN", "XFORMERS"),
    "0.12.0": ("fa-or-sdpa", "FLASH_ATTN", "FLASH_ATTN", "TORCH_SDPA"),
    "0.26.0": ("candidates", "FLASH_ATTN", "FLASH_ATTN", "TORCH_SDPA"),
}


def _wanted(name: str) -> bool:
    return name in R.SOURCES or (name.endswith(".dist-info/METADATA") and "/" in name)


@pytest.fixture(scope="session")
def vllm_trees() -> dict[str, Path]:
    """Each vLLM wheel's vision-attention files and METADATA, extracted once (cached)."""
    return {v: members(downloads.wheel(f"vllm=={v}"), _wanted) for v in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
def test_real_vllm_rule(vllm_trees, version):
    rule, sm90, sm90_fa, sm75 = EXPECTED[version]
    src = R.read_vit_tree(vllm_trees[version])
    assert src.rule == rule, src
    bare = X.Installed(vllm_flash_attn=True)
    with_fa = X.Installed(flash_attn="2.8.3", vllm_flash_attn=True)
    assert X.decide(src, parse_arch("9.0"), bare).backend == sm90
    assert X.decide(src, parse_arch("9.0"), with_fa).backend == sm90_fa
    assert X.decide(src, parse_arch("7.5"), bare).backend == sm75
    assert src.model_has_xformers is (rule == "fa2-or-xformers")
    # VLLM_ATTENTION_BACKEND reaches the vision tower up to 0.12, not in 0.26.
    assert src.env_var_honoured is (version != "0.26.0")


@pytest.mark.parametrize("version", ("0.8.5", "0.10.1.1"))
def test_xformers_table_agrees_with_vllm_pins(vllm_trees, version):
    meta = next(vllm_trees[version].glob("vllm-*.dist-info/METADATA")).read_text()
    pins = dict(
        line.split(": ", 1)[1].split(";")[0].strip().split("==")
        for line in meta.splitlines()
        if line.startswith(("Requires-Dist: torch==", "Requires-Dist: xformers=="))
    )
    assert X.xformers_for_torch(pins["torch"]) == pins["xformers"]


@pytest.mark.parametrize(
    ("version", "stable"), [("0.0.30", False), ("0.0.33.post1", False), ("0.0.35", True)]
)
def test_real_xformers_ops_stable_abi_or_not(version, stable):
    """What frees 0.0.35 from cpp_lib.json's exact torch (round 11a) is read from the real
    ``_C.so``: 0.0.30 and 0.0.33.post1 import torch's C++ API (181 / 183 mangled c10/at
    names, measured), 0.0.35 only ``aoti_torch_*`` (70, setup.py's ``-DTORCH_STABLE_ONLY``)."""
    from pytest_vllm_env.checks.xformers_torch import stable_abi_only
    from pytest_vllm_env.facts.binaries import extension_facts

    root = members(downloads.wheel(f"xformers=={version}"), lambda n: n == "xformers/_C.so")
    ops = extension_facts(root / "xformers" / "_C.so")
    assert not ops.error and ops.torch_symbols
    assert stable_abi_only(ops.torch_symbols) is stable
    assert ops.cudart == "12"  # PyPI's builds: CUDA 12 (what abi.cudart judges next to cu130)
