# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""Real vLLM wheels (opt-in, --run-integration): the Gated-DeltaNet prefill rule read from
each release's own files matches docs/modelopt.md, and the conformance check on an env
holding real vLLM 0.26.0 files fails the real Qwen3.5 export on sm 9.0 exactly as the H100
load did, and passes it once the real flashinfer-python 0.6.14 (vLLM's pin) is there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.envs import EnvBuilder
from fixtures.wheels import members
from pytest_vllm_env.checks import gdn_prefill as G
from pytest_vllm_env.readers import vllm_gdn as R
from pytest_vllm_env.tables.archs import parse_arch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
QWEN35 = REPO / "fixtures" / "modelopt_export" / "qwen35vl-kv-fp8"
VERSIONS = ("0.10.1.1", "0.12.0", "0.26.0")
EXPECTED_KIND = {"0.10.1.1": "no-gdn", "0.12.0": "fla-only", "0.26.0": "resolver"}


def _wanted(name: str) -> bool:
    return (
        (name.startswith(R.MODELS_DIR + "/") and name.endswith(".py"))
        or name in (R.GDN_LAYER_PY, R.ARG_UTILS_PY)
        or (name.endswith(".dist-info/METADATA") and name.startswith("vllm-"))
    )


@pytest.fixture(scope="session")
def vllm_trees() -> dict[str, Path]:
    """Each vLLM wheel's model files, GDN layer, engine args and METADATA (cached)."""
    return {v: members(downloads.wheel(f"vllm=={v}"), _wanted) for v in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
def test_real_rule(vllm_trees, version):
    rule = R.read_gdn_tree(vllm_trees[version])
    assert rule.kind == EXPECTED_KIND[version], rule
    if version == "0.12.0":
        assert rule.architectures == ("Qwen3NextForCausalLM", "Qwen3NextMTP")
        assert G.decide(rule, parse_arch("9.0"), 128, "12.9", None).backend == "triton"


def test_real_026_rule_is_the_built_in_one(vllm_trees):
    rule = R.read_gdn_tree(vllm_trees["0.26.0"])
    built_in = R.VLLM_0_26
    assert rule.flashinfer_import == f"{R.GDN_LAYER_PY}:174"  # where the H100 load died
    assert (rule.config_key, rule.default_request, rule.flashinfer_requests) == (
        "gdn_prefill_backend",
        "auto",
        ("flashinfer", "auto"),
    )
    assert (rule.exact, rule.family, rule.family_head_k_dim, rule.family_min_cuda) == (
        (90,),
        100,
        128,
        13,
    )
    assert rule.cutedsl and rule.cli_flag == "--gdn-prefill-backend"
    assert rule.engine_arg == "gdn_prefill_backend"
    assert rule.architectures == built_in.architectures
    assert "Qwen3_5ForConditionalGeneration" in rule.architectures
    meta = next(vllm_trees["0.26.0"].glob("vllm-*.dist-info/METADATA")).read_text()
    requires = [
        ln.split(": ", 1)[1] for ln in meta.splitlines() if ln.startswith("Requires-Dist: ")
    ]
    assert G.requirement_pin(requires) == "==0.6.14"


@pytest.fixture(scope="session")
def flashinfer_tree() -> Path:
    """The real flashinfer-python 0.6.14 wheel's dist-info, gdn_prefill module and sm 9.x CuTe
    DSL kernel."""
    whl = downloads.wheel("flashinfer-python==0.6.14")
    return members(
        whl,
        lambda n: (
            n in ("flashinfer/gdn_prefill.py", "flashinfer/__init__.py", G.SM90_DSL_PY)
            or n.startswith("flashinfer_python-0.6.14.dist-info/")
        ),
    )


@pytest.fixture(scope="session")
def cutlass_tree() -> Path:
    """The real nvidia-cutlass-dsl 4.6.0 wheel's dist-info (vLLM 0.26.0's pin)."""
    whl = downloads.wheel("nvidia-cutlass-dsl==4.6.0")
    return members(whl, lambda n: n.startswith("nvidia_cutlass_dsl-4.6.0.dist-info/"))


def _real_env(builder: EnvBuilder, tree: Path, *extra: Path) -> None:
    builder.python("3.12")
    meta = next(tree.glob("vllm-*.dist-info/METADATA")).read_text()
    requires = [
        ln.split(": ", 1)[1] for ln in meta.splitlines() if ln.startswith("Requires-Dist: ")
    ]
    builder.dist("vllm", "0.26.0", requires=requires)
    shutil.copytree(tree / "vllm", builder.site_packages / "vllm", dirs_exist_ok=True)
    builder.dist("torch", "2.11.0", files={"torch/version.py": "cuda: str | None = '13.0'\n"})
    for folder in extra:
        for item in folder.iterdir():
            shutil.copytree(item, builder.site_packages / item.name, dirs_exist_ok=True)


@pytest.mark.parametrize("installed", ["nothing", "flashinfer", "flashinfer+cutlass"])
def test_real_026_files_judge_the_real_export(
    pytester, env_builder, vllm_trees, flashinfer_tree, cutlass_tree, installed
):
    trees = {"nothing": [], "flashinfer": [flashinfer_tree]}
    trees["flashinfer+cutlass"] = [flashinfer_tree, cutlass_tree]
    _real_env(env_builder, vllm_trees["0.26.0"], *trees[installed])
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "toolchain",
        "-k",
        "test_kernels",
        f"--vllm-env={env_builder.prefix}",
        f"--modelopt-checkpoint={QWEN35}",
        "--cuda-arch=9.0",
        f"--vllm-env-report={report}",
    )
    found = json.loads(report.read_text())["checks"][0]
    if installed == "flashinfer+cutlass":
        result.assert_outcomes(passed=1)
        assert "flashinfer-python 0.6.14 is installed" in found["summary"]
    elif (
        installed == "flashinfer"
    ):  # what the H100 did: "SM90 GDN prefill DSL kernel is unavailable"
        result.assert_outcomes(failed=1)
        assert G.SM90_DSL_ERROR in found["summary"]
        assert "nvidia-cutlass-dsl[cu13]==4.6.0" in found["fix"]
    else:
        result.assert_outcomes(failed=1)
        assert (
            "(raised at vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:174)"
            in found["summary"]
        )
        assert found["fix"].startswith('add `flashinfer-python = "==0.6.14"`')
