# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""``vllm.flash-attn-library``: the FlashAttention version vLLM uses on each target GPU (the one
the user forces included) against the ``_vllm_faN_C`` libraries its ``vllm_flash_attn`` holds.

Held to the H100 (fixtures/measured/fa_version-0.26.0.json, scripts/device/fa_version.sh):
vLLM 0.26.0 whose ``vllm_flash_attn`` held only ``_vllm_fa3_C`` ran FA3 by default and with
``VLLM_FLASH_ATTN_VERSION=2`` (which it does not read), and with ``attention_config=
{"flash_attn_version": 2}`` logged "Cannot use FA version 2 ... FA2 is unavailable", used
version None and crashed at the first forward ("AssertionError: FlashAttention version not
detected"). Fixture envs carry the shape of 0.26.0's ``get_flash_attn_version``
(tests/test_fa_version.py) and the attention-selection stand-ins (fixtures/attention_standin.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import attention_standin
from fixtures.envs import EnvBuilder
from fixtures.vllm_standin import install_vllm
from tests.test_fa_version import FA_UTILS_026, WHERE_026

MEASURED = Path(__file__).resolve().parents[1] / "fixtures" / "measured" / "fa_version-0.26.0.json"
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
CID = "vllm.flash-attn-library"
LIB = "vllm/vllm_flash_attn/_vllm_fa{}_C.abi3.so"


def make_env(b: EnvBuilder, libs: tuple[int, ...] = (3,), *, flashinfer: bool = False,
             version: str = "0.26.0") -> Path:  # fmt: skip
    """A Pixi env with vLLM (0.26.0's get_flash_attn_version shape and attention selection),
    the FA libraries ``libs`` in vllm_flash_attn and, with ``flashinfer``, FlashInfer."""
    import textwrap

    extra = attention_standin.files(version)
    extra[WHERE_026] = textwrap.dedent(FA_UTILS_026)
    extra.update({LIB.format(v): "" for v in libs})
    install_vllm(b, version, extra=extra)
    if flashinfer:
        b.dist("flashinfer-python", "0.6.1", files={"flashinfer/__init__.py": ""})
    return b.prefix


def finding(pytester: pytest.Pytester, prefix: Path, *args: str, arch: str = "9.0") -> dict:
    out = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE, "-k", "test_flash_attn_library", f"--vllm-env={prefix}", f"--cuda-arch={arch}",
        f"--vllm-env-report={out}", *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str(), result.stdout.str()[-3000:]
    (f,) = [c for c in json.loads(out.read_text())["checks"] if c["id"] == CID]
    return f


RUNS = json.loads(MEASURED.read_text())["runs"]


@pytest.mark.parametrize("tag", sorted(RUNS))
def test_each_measured_run(pytester, env_builder, tag):
    """Each load of the H100 run, as the user set it up there: failed exactly where vLLM
    crashed, naming the missing library and the override to drop."""
    run = RUNS[tag]
    args = []
    if run["attention_config"]:
        args.append(f"--vllm-serve-args=vllm serve m -ac '{json.dumps(run['attention_config'])}'")
    for name, value in run["env"].items():
        env_builder.manifest(f'[activation.env]\n{name} = "{value}"\n')
    f = finding(pytester, make_env(env_builder), *args)
    if run["outcome"] == "crashes":
        assert f["outcome"] == "failed", f
        assert (
            "vLLM 0.26.0: sm 9.0: FA2 (flash_attn_version=2 from -ac in --vllm-serve-args) needs "
            "_vllm_fa2_C, which " in f["summary"]
        ), f["summary"]
        assert "(it holds _vllm_fa3_C)" in f["summary"]
        assert run["exception"].rstrip(".") in f["summary"]
        assert f["fix"].startswith(
            "drop flash_attn_version=2 from -ac in --vllm-serve-args: vLLM then runs FA3 (_vllm_fa3_C) on sm 9.0; or "
        ), f["fix"]
        assert "reinstall vllm" in f["fix"] or "pixi reinstall" in f["fix"], f["fix"]
    else:
        assert f["outcome"] == "passed", f
        assert f["evidence"]["fa_version"] == {"9.0": f"FA{run['fa_version_used']} (_vllm_fa3_C)"}


def test_forced_fa2_with_its_library_passes(pytester, env_builder):
    """The same override with _vllm_fa2_C there (vLLM's PyPI wheel ships both): FA2 runs."""
    f = finding(pytester, make_env(env_builder, (2, 3)),
                "--vllm-serve-args=vllm serve m --attention-config.flash_attn_version=2")  # fmt: skip
    assert f["outcome"] == "passed", f
    assert f["evidence"]["fa_version"] == {"9.0": "FA2 (_vllm_fa2_C)"}


# -- instances the rule was not written from -------------------------------------------------------
def test_blackwell_consumer_gpu_needs_fa2_by_default(pytester, env_builder):
    """sm 12.0 runs FA2 by default (FA3 is sm 9.x only): a vllm_flash_attn with only
    _vllm_fa3_C fails there with nothing forced, and reinstalling vLLM is the fix."""
    f = finding(pytester, make_env(env_builder), arch="12.0")
    assert f["outcome"] == "failed", f
    assert "sm 12.0: FA2 needs _vllm_fa2_C" in f["summary"]
    assert f["fix"].startswith("`pixi reinstall"), f["fix"]


def test_forced_fa3_on_blackwell_falls_back(pytester, env_builder):
    """FA3 forced on sm 12.0 becomes FA2 (fa_utils' step 3: FA4 only on 9.x-11.x), whose
    library is there: passed."""
    f = finding(
        pytester, make_env(env_builder, (2, 3)),
        "--vllm-serve-args=vllm serve m --attention-config.flash_attn_version=3", arch="12.0",
    )  # fmt: skip
    assert f["outcome"] == "passed" and f["evidence"]["fa_version"] == {
        "12.0": "FA2 (_vllm_fa2_C)"
    }, f


def test_flashinfer_ahead_of_flash_attn_never_asks_the_version(pytester, env_builder):
    """sm 10.0 with FlashInfer installed: vLLM selects FLASHINFER first, the FA version is
    never asked; the same env without FlashInfer runs FLASH_ATTN, whose version there is a
    run-time probe (FA4 or FA2): neither is failed."""
    f = finding(pytester, make_env(env_builder, flashinfer=True), arch="10.0")
    assert f["outcome"] == "passed", f
    assert f["evidence"]["fa_version"] == {"10.0": "FLASHINFER (FlashAttention not used)"}


def test_no_flash_attn_folder_skips(pytester, env_builder):
    install_vllm(env_builder, "0.26.0")
    f = finding(pytester, env_builder.prefix)
    assert f["outcome"] == "skipped", f


def test_the_rule_on_0_33(pytester, env_builder):
    """0.33.0 reads the same override and picks the version the same way (its fa_utils and
    attention selection): the forced FA2 without its library fails there too."""
    prefix = make_env(env_builder, version="0.33.0")
    f = finding(
        pytester, prefix, "--vllm-serve-args=vllm serve m -ac '{\"flash_attn_version\": 2}'"
    )
    assert f["outcome"] == "failed" and f["summary"].startswith("vLLM 0.33.0: sm 9.0: FA2"), f
