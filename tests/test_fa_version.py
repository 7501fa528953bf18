# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""``driver.ptx-jit`` and the FlashAttention version the user forces (issue 21, "Blame where it
belongs").

On Hopper vLLM runs FA3 wherever ``_vllm_fa3_C`` loads, so FA2's PTX is never JIT-compiled
there and the check says so. A user who forces FA2 makes FA2 what runs on sm 9.x, and its PTX
or SASS for the GPU then decides: the rule ignored the override once. What overrides a vLLM
reads comes from its own ``get_flash_attn_version``: ``attention_config.flash_attn_version``
(``--attention-config``) in 0.26.0 and 0.33.0 (``vllm/v1/attention/backends/fa_utils.py``),
``VLLM_FLASH_ATTN_VERSION`` up to 0.12 (``vllm/attention/utils/fa_utils.py``). The stand-ins
below keep the shape of those functions; the reader is checked on the real files of 0.26.0
and 0.33.0 in the integration tier.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from fixtures.elf import cuda_so, nvcc
from fixtures.envs import EnvBuilder

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
FA2 = "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
FA3 = "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"
pytestmark = pytest.mark.skipif(nvcc() is None, reason="nvcc not found")

# The shape of get_flash_attn_version in 0.26.0/0.33.0: the override is the attention config.
FA_UTILS_026 = """
def get_flash_attn_version(requires_alibi: bool = False, head_size=None) -> int | None:
    from vllm.vllm_flash_attn.flash_attn_interface import is_fa_version_supported
    device_capability = current_platform.get_device_capability()
    if device_capability.major == 9 and is_fa_version_supported(3):
        fa_version = 3
    else:
        fa_version = 2
    # 2. override if passed by environment or config
    from vllm.config import get_current_vllm_config_or_none
    vllm_config = get_current_vllm_config_or_none()
    if vllm_config is not None and vllm_config.attention_config.flash_attn_version is not None:
        fa_version = vllm_config.attention_config.flash_attn_version
    return fa_version
"""
# The shape in 0.10 to 0.12: the override is the environment variable.
FA_UTILS_012 = """
def get_flash_attn_version(requires_alibi: bool = False) -> Optional[int]:
    device_capability = current_platform.get_device_capability()
    if device_capability.major == 9 and is_fa_version_supported(3):
        fa_version = 3
    else:
        fa_version = 2
    # 2. override if passed by environment
    if envs.VLLM_FLASH_ATTN_VERSION is not None:
        fa_version = envs.VLLM_FLASH_ATTN_VERSION
    return fa_version
"""
WHERE_026 = "vllm/v1/attention/backends/fa_utils.py"
WHERE_012 = "vllm/attention/utils/fa_utils.py"


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """FA2 as vLLM 0.26.0's wheel holds it (sm_80 SASS and compute_80 PTX, here ISA 9.0 from
    nvcc 13.0), FA2 also holding sm_90 SASS, and FA3 (sm_90a SASS only)."""
    d = tmp_path_factory.mktemp("fa")
    return {
        "fa2": cuda_so(
            d / "fa2.so", ["arch=compute_80,code=sm_80", "arch=compute_80,code=compute_80"]
        ),
        "fa2-sm90": cuda_so(
            d / "fa2s.so", ["arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90"]
        ),
        "fa3": cuda_so(d / "fa3.so", ["arch=compute_90a,code=sm_90a"]),
    }


def vllm_env(b: EnvBuilder, libs: dict[str, Path], *, old: bool = False, fa2: str = "fa2") -> Path:
    """A Pixi env with vLLM (0.26.0's fa_utils shape, or 0.12.0's with ``old``), its FA2 and
    FA3 libraries."""
    b.python("3.12")
    version, where, text = (
        ("0.12.0", WHERE_012, FA_UTILS_012) if old else ("0.26.0", WHERE_026, FA_UTILS_026)
    )
    b.dist("vllm", version, files={
        FA2: libs[fa2].read_bytes(), FA3: libs["fa3"].read_bytes(),
        where: textwrap.dedent(text), "vllm/__init__.py": "",
    })  # fmt: skip
    return b.prefix


def fa2_finding(
    pytester: pytest.Pytester, prefix: Path, *args: str, driver: str = "580.159.04"
) -> dict:
    out = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE, "-k", "test_ptx_jit", f"--vllm-env={prefix}", "--cuda-arch=9.0",
        f"--cuda-driver={driver}", f"--vllm-env-report={out}", *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str(), result.stdout.str()[-3000:]
    checks = json.loads(out.read_text())["checks"]
    (f,) = [c for c in checks if c["id"] == "driver.ptx-jit" and FA2 in c["summary"]]
    return f


# -- no override: FA3 runs on Hopper ---------------------------------------------------------------
def test_fa2_ptx_is_not_judged_where_fa3_runs(pytester, env_builder, libs):
    f = fa2_finding(pytester, vllm_env(env_builder, libs))
    assert f["outcome"] == "passed" and "not launched there: vLLM runs FA3" in f["summary"], f


# -- FA2 forced through the launch arguments (0.26.0: --attention-config) ---------------------------
@pytest.mark.parametrize(
    "args",
    [
        "vllm serve m --attention-config.flash_attn_version=2",
        "vllm serve m -ac '{\"flash_attn_version\": 2}'",
    ],
)
def test_fa2_forced_in_serve_args_is_judged_on_hopper(pytester, env_builder, libs, args):
    """Before: passed "not launched there" although the launch forces FA2, whose kernels then
    reach sm_90 only through compute_80 PTX: each JIT-compiled at its first launch."""
    f = fa2_finding(pytester, vllm_env(env_builder, libs), f"--vllm-serve-args={args}")
    assert f["outcome"] == "warning", f
    assert (
        "on sm_90 all modules reach the GPU only through PTX (compute_80, ISA 9.0)" in f["summary"]
    )
    flag = args.split()[3].split("=")[0]
    assert (
        f["evidence"]["flash_attn_version"]
        == f"2, from {flag} in --vllm-serve-args ({WHERE_026}:get_flash_attn_version)"
    )
    assert (
        f"(FA2 runs on Hopper: flash_attn_version=2 from {flag} in --vllm-serve-args)"
        in f["summary"]
    )
    assert (
        f"drop flash_attn_version=2 from {flag} in --vllm-serve-args: vLLM then runs FA3 there"
        in f["fix"]
    )


def test_fa2_forced_and_its_ptx_past_the_driver_fails(pytester, env_builder, libs):
    """Forced FA2 whose PTX (ISA 9.0) the driver (R575, up to ISA 8.8) cannot JIT: failed, and
    the fix names the override to drop (FA3 holds sm_90a SASS)."""
    prefix = vllm_env(env_builder, libs)
    f = fa2_finding(
        pytester,
        prefix,
        "--vllm-serve-args=--attention-config.flash_attn_version=2",
        driver="575.64.05",
    )
    assert f["outcome"] == "failed" and "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in f["summary"], f
    assert (
        "(FA2 runs on Hopper: flash_attn_version=2 from --attention-config.flash_attn_version in --vllm-serve-args)"
        in f["summary"]
    )
    assert (
        "; or drop flash_attn_version=2 from --attention-config.flash_attn_version in --vllm-serve-args: vLLM then runs FA3 there"
        in f["fix"]
    )


def test_fa2_forced_with_sm90_sass_passes(pytester, env_builder, libs):
    """FA2 forced and built with sm_90 SASS: nothing to JIT there."""
    prefix = vllm_env(env_builder, libs, fa2="fa2-sm90")
    f = fa2_finding(pytester, prefix, "--vllm-serve-args=--attention-config.flash_attn_version=2")
    assert f["outcome"] == "passed" and "SASS for sm_90" in f["summary"], f


def test_fa2_forced_in_a_pixi_task_is_judged(pytester, env_builder, libs):
    """The env's own `vllm serve` task forces FA2 (what `pixi run serve` starts)."""
    prefix = vllm_env(env_builder, libs)
    env_builder.manifest(
        '[tasks]\nserve = "vllm serve m --attention-config \'{\\"flash_attn_version\\": 2}\'"\n'
    )
    f = fa2_finding(pytester, prefix)
    assert f["outcome"] == "warning", f
    assert "[tasks.serve] in pixi.toml" in f["evidence"]["flash_attn_version"]


# -- VLLM_FLASH_ATTN_VERSION: read up to 0.12, not by 0.26.0 -----------------------------------------
def test_env_var_forces_fa2_where_this_vllm_reads_it(pytester, env_builder, libs):
    prefix = vllm_env(env_builder, libs, old=True)
    env_builder.manifest('[activation.env]\nVLLM_FLASH_ATTN_VERSION = "2"\n')
    f = fa2_finding(pytester, prefix)
    assert f["outcome"] == "warning", f
    assert f["evidence"]["flash_attn_version"].startswith(
        "2, from VLLM_FLASH_ATTN_VERSION=2 ([activation.env] in pixi.toml)"
    ), f


def test_env_var_this_vllm_does_not_read_leaves_fa3_and_says_so(pytester, env_builder, libs):
    """0.26.0 has no VLLM_FLASH_ATTN_VERSION: FA3 still runs; the FA2 verdict names the
    variable that does nothing, and the option this vLLM reads."""
    prefix = vllm_env(env_builder, libs)
    env_builder.manifest('[activation.env]\nVLLM_FLASH_ATTN_VERSION = "2"\n')
    f = fa2_finding(pytester, prefix)
    assert f["outcome"] == "passed" and "not launched there: vLLM runs FA3" in f["summary"], f
    assert (
        "not read by this vLLM: VLLM_FLASH_ATTN_VERSION=2 ([activation.env] in pixi.toml): vLLM "
        f"0.26.0 does not read it ({WHERE_026}:get_flash_attn_version reads "
        "attention_config.flash_attn_version (--attention-config.flash_attn_version=N))"
    ) in f["summary"], f


# -- the reader --------------------------------------------------------------------------------------
def test_reader_tells_the_two_overrides_apart():
    from pytest_vllm_env.readers import vllm_fa_version

    new = vllm_fa_version.parse(textwrap.dedent(FA_UTILS_026), WHERE_026)
    old = vllm_fa_version.parse(textwrap.dedent(FA_UTILS_012), WHERE_012)
    assert (new.config, new.env_var) == (True, False)
    assert (old.config, old.env_var) == (False, True)
    assert not vllm_fa_version.parse("def other(): pass\n", WHERE_026).found


@pytest.mark.integration
@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_reader_on_the_real_vllm(version):
    """The real wheels: both read attention_config.flash_attn_version, not the variable."""
    from fixtures import downloads
    from pytest_vllm_env.readers import vllm_fa_version

    root = downloads.unpacked(f"vllm=={version}")
    got = vllm_fa_version.parse((root / WHERE_026).read_text(), WHERE_026)
    assert (got.found, got.config, got.env_var) == (True, True, False), got


# -- the launch arguments' reader ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fa, where",
    [
        (
            "vllm serve m --attention-config.flash_attn_version=2",
            2,
            "--attention-config.flash_attn_version in X",
        ),
        (
            "vllm serve m --attention-config.flash_attn_version 3",
            3,
            "--attention-config.flash_attn_version in X",
        ),
        ("vllm serve m -ac '{\"flash_attn_version\": 2}' -tp 2", 2, "-ac in X"),
        ('vllm serve m --attention-config=\'{"backend": "FLASH_ATTN"}\'', None, ""),
        ("vllm serve m --attention-config.backend=FLASH_ATTN", None, ""),
        ('llm = LLM("m", attention_config={"flash_attn_version": 2})', 2, "attention_config= in X"),
        (
            'LLM("m", attention_config=AttentionConfig(flash_attn_version=2))',
            2,
            "attention_config= in X",
        ),
    ],
)
def test_serve_args_read_the_forced_fa_version(text, fa, where):
    from pytest_vllm_env.readers.serve_args import parse_text

    got = parse_text(text, "X")
    assert (got.flash_attn_version, got.fa_from) == (fa, where)


@pytest.mark.parametrize(
    "text, says",
    [
        (
            "vllm serve m --attention-config.flash_attn_version=5",
            "flash_attn_version '5' is not 2, 3 or 4",
        ),
        ("vllm serve m -ac '{flash_attn_version: 2}'", "is not JSON"),
    ],
)
def test_serve_args_with_a_bad_fa_version_is_a_usage_error(pytester, env_builder, libs, text, says):
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "test_ptx_jit",
        f"--vllm-env={vllm_env(env_builder, libs)}",
        f"--vllm-serve-args={text}",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()
