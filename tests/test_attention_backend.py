# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""``checkpoint.attention-backend``: the attention backend the env's vLLM selects for the
checkpoint's KV-cache dtype and head size on each target GPU (vllm/platforms/cuda.py
``get_attn_backend_cls``).

The failing case is real: vLLM 0.26.0 on an H100 without FlashInfer refused both ModelOpt
NVFP4-KV exports at model construction ("No valid attention backend found ... Reasons:
{FLASH_ATTN: [kv_cache_dtype not supported], FLASHINFER: [ImportError], ...}";
fixtures/modelopt_export/algos_truth-0.26.0.json), and served the FP8-KV one with FLASH_ATTN.
The fixture envs carry stand-ins written from the facts read from the real wheels
(fixtures/attention_standin.py); the integration tier re-reads the wheels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixtures import attention_standin
from fixtures.envs import EnvBuilder
from fixtures.vllm_standin import install_vllm
from pytest_vllm_env.checks.attention_backend import attention_backend, select
from pytest_vllm_env.tables.archs import parse_arch

ALGOS = Path(__file__).resolve().parents[1] / "fixtures" / "modelopt_export" / "algos"
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
CID = "checkpoint.attention-backend"
NVFP4_KV = "fp8-default+nvfp4-kv"
FA3 = "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"
FA2 = "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"


def make_env(b: EnvBuilder, version: str = "0.26.0", *, flashinfer: bool = False,
             fa: tuple[str, ...] = (FA3,)) -> Path:  # fmt: skip
    """A Pixi env with vLLM ``version``'s attention-selection files (stand-ins of the real
    ones), its FA libraries ``fa`` and, with ``flashinfer``, the FlashInfer package."""
    extra = attention_standin.files(version)
    extra.update({lib: "" for lib in fa})
    install_vllm(b, version, extra=extra)
    if flashinfer:
        b.dist("flashinfer-python", "0.6.1", files={"flashinfer/__init__.py": ""})
    return b.prefix


def run(pytester: pytest.Pytester, prefix: Path, ckpt: Path, *args: str) -> dict:
    out = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE, "-k", "test_attention_backend", f"--vllm-env={prefix}",
        f"--modelopt-checkpoint={ckpt}", f"--vllm-env-report={out}", *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str(), result.stdout.str()[-3000:]
    (f,) = [c for c in json.loads(out.read_text())["checks"] if c["id"] == CID]
    return f


def export(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "ckpts" / name
    shutil.copytree(ALGOS / name, dst)
    return dst


# -- the suite, as users run it ---------------------------------------------------------------
def test_nvfp4_kv_without_a_backend_fails_with_the_fix(pytester, env_builder, tmp_path):
    """What the H100 did (vLLM 0.26.0, no FlashInfer): no backend takes kv_cache_dtype=nvfp4."""
    f = run(pytester, make_env(env_builder), export(tmp_path, NVFP4_KV), "--cuda-arch=9.0")
    assert f["outcome"] == "failed", f
    assert (
        "vLLM 0.26.0 finds no attention backend for kv_cache_dtype=nvfp4 (from config.json's "
        "quantization_config kv_cache_scheme='NVFP4'), head size 64: 'ValueError: No valid "
        "attention backend found' at model construction; sm 9.0: {FLASH_ATTN: kv_cache_dtype "
        "not supported; FLASHINFER: ImportError (flashinfer not installed); TRITON_ATTN: "
        "kv_cache_dtype not supported; FLEX_ATTENTION: kv_cache_dtype not supported; "
        "TURBOQUANT: kv_cache_dtype not supported}"
    ) in f["summary"]
    assert f["fix"].startswith(
        'launch with --kv-cache-dtype fp8 (`vllm serve ... --kv-cache-dtype fp8`, LLM(kv_cache_dtype="fp8")): sm 9.0 then has a backend for it'
    ), f["fix"]
    assert "re-export without nvfp4 KV-cache quantization" in f["fix"]
    # FlashInfer 0.26.0 takes nvfp4 only on sm 10.x: installing it is no fix on Hopper
    assert "flashinfer" not in f["fix"]


def test_the_fix_applied_passes(pytester, env_builder, tmp_path):
    """--kv-cache-dtype fp8 in the launch arguments: FLASH_ATTN (FA3) takes it on sm 9.0."""
    f = run(
        pytester, make_env(env_builder), export(tmp_path, NVFP4_KV), "--cuda-arch=9.0",
        "--vllm-serve-args=vllm serve m --kv-cache-dtype fp8",
    )  # fmt: skip
    assert f["outcome"] == "passed", f
    assert f["evidence"]["backend"] == {"9.0": "FLASH_ATTN"}
    assert f["evidence"]["kv_cache_dtype"] == "fp8 (from --kv-cache-dtype in --vllm-serve-args)"


def test_fp8_kv_export_passes_on_hopper(pytester, env_builder, tmp_path):
    """The FP8-KV export loaded and answered right on the H100 (FLASH_ATTN, FA3)."""
    f = run(
        pytester, make_env(env_builder), export(tmp_path, "fp8-default+fp8-kv"), "--cuda-arch=9.0"
    )
    assert f["outcome"] == "passed" and f["evidence"]["backend"] == {"9.0": "FLASH_ATTN"}, f


def test_flashinfer_install_is_the_fix_on_blackwell(pytester, env_builder, tmp_path):
    """sm 10.0: FlashInfer is the one backend of 0.26.0 that takes nvfp4 there (if its TRT-LLM
    check agrees at run time): the fix installs it in the env's own language."""
    f = run(pytester, make_env(env_builder), export(tmp_path, NVFP4_KV), "--cuda-arch=10.0")
    assert f["outcome"] == "failed", f
    assert (
        "then FLASHINFER on sm 10.0 (if its run-time check agrees) takes kv_cache_dtype=nvfp4"
        in f["fix"]
    )
    assert "flashinfer-python" in f["fix"] and "pixi" in f["fix"], f["fix"]


def test_flashinfer_installed_on_blackwell_warns(pytester, env_builder, tmp_path):
    """With FlashInfer there, sm 10.0 depends on supports_trtllm_attention() at run time: a
    warning, never a failure."""
    prefix = make_env(env_builder, flashinfer=True)
    f = run(pytester, prefix, export(tmp_path, NVFP4_KV), "--cuda-arch=10.0")
    assert f["outcome"] == "warning", f
    assert "sm 10.0: FLASHINFER may take it" in f["summary"]


def test_0_33_flashinfer_takes_nvfp4_on_hopper(pytester, env_builder, tmp_path):
    """0.33.0's FlashInfer backend takes nvfp4 on sm 8.x/9.x/12.x (_nvfp4_kv_on_fa2): the same
    rule read from that release's source passes it where FlashInfer is installed, and names the
    install where it is not."""
    ckpt = export(tmp_path, NVFP4_KV)
    f = run(pytester, make_env(env_builder, "0.33.0", flashinfer=True), ckpt, "--cuda-arch=9.0")
    assert f["outcome"] == "passed" and f["evidence"]["backend"] == {"9.0": "FLASHINFER"}, f


def test_0_33_without_flashinfer_names_the_install(pytester, env_builder, tmp_path):
    ckpt = export(tmp_path, NVFP4_KV)
    f = run(pytester, make_env(env_builder, "0.33.0"), ckpt, "--cuda-arch=9.0")
    assert f["outcome"] == "failed", f
    assert "flashinfer-python" in f["fix"] and "then FLASHINFER on sm 9.0 takes" in f["fix"]


# -- the rule on instances it was not written from ------------------------------------------------
def _cfg(head_dim: int, kv: object = None) -> dict:
    q = {"quant_method": "modelopt", "quant_algo": "FP8"}
    if kv is not None:
        q["kv_cache_scheme"] = kv
    return {"head_dim": head_dim, "hidden_size": 4 * head_dim, "num_attention_heads": 4,
            "quantization_config": q}  # fmt: skip


@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_fp8_kv_with_a_head_size_no_backend_takes(version):
    """Head size 20 with an FP8 KV cache: FLASH_ATTN needs a multiple of 8, TRITON_ATTN at
    least 32, FLEX_ATTENTION takes no FP8 cache, FlashInfer 64/128/256/512: none on any arch."""
    facts = attention_standin.recorded(version)
    fp8 = {"dynamic": False, "num_bits": 8, "type": "float"}
    f = attention_backend(
        _cfg(20, fp8), None, facts, [parse_arch("9.0")], "m", version, fa_libs=(2, 3)
    )
    assert f.outcome == "failed", f
    assert "FLASH_ATTN: head_size not supported" in f.summary
    assert "TRITON_ATTN: head_size not supported" in f.summary
    # the same head size with a BF16 cache: FLEX_ATTENTION takes any head size
    ok = attention_backend(_cfg(20), None, facts, [parse_arch("9.0")], "m", version, fa_libs=(2, 3))
    assert ok.outcome == "passed" and ok.evidence["backend"] == {"9.0": "FLEX_ATTENTION"}, ok


def test_fp8_kv_under_forced_fa2_moves_to_triton():
    """0.26.0's FLASH_ATTN takes an FP8 cache only under FA3 on sm 9.x (get_flash_attn_version()
    == 3): forced FA2, the next in line serves it (FlashInfer, or TRITON_ATTN without it)."""
    facts = attention_standin.recorded("0.26.0")
    arch, no_fi = parse_arch("9.0"), frozenset({"flashinfer"})
    assert select(facts, arch, "fp8_e4m3", 128, 3, frozenset())[0] == "FLASH_ATTN"
    assert select(facts, arch, "fp8_e4m3", 128, 2, frozenset())[0] == "FLASHINFER"
    assert select(facts, arch, "fp8_e4m3", 128, 2, no_fi)[0] == "TRITON_ATTN"
    assert select(facts, parse_arch("8.0"), "fp8_e4m3", 128, 2, frozenset())[0] == "FLASHINFER"
    assert select(facts, parse_arch("8.0"), "fp8_e4m3", 128, 2, no_fi)[0] == "TRITON_ATTN"


def test_kv_dtype_follows_vllm():
    """resolve_kv_cache_dtype_string: an explicit --kv-cache-dtype wins; 'auto' takes the
    checkpoint's (string through MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP, or the dict form);
    an unknown one falls back to auto."""
    from pytest_vllm_env.checks.attention_backend import kv_cache_dtype

    kv_map = attention_standin.recorded("0.26.0").kv_map
    assert kv_cache_dtype(_cfg(64, "NVFP4"), None, None, "", kv_map).dtype == "nvfp4"
    assert kv_cache_dtype(_cfg(64, "NVFP4"), None, "auto", "X", kv_map).dtype == "nvfp4"
    assert kv_cache_dtype(_cfg(64, "NVFP4"), None, "bfloat16", "X", kv_map).dtype == "bfloat16"
    assert kv_cache_dtype(_cfg(64, "FP8"), None, None, "", kv_map).dtype == "fp8_e4m3"
    assert (
        kv_cache_dtype(_cfg(64, {"num_bits": 4, "type": "float"}), None, None, "", kv_map).dtype
        == "nvfp4"
    )
    assert kv_cache_dtype(_cfg(64, "INT4"), None, None, "", kv_map).dtype == "auto"
    hf = {
        "producer": {"name": "modelopt"},
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"},
    }
    assert kv_cache_dtype({"head_dim": 64}, hf, None, "", kv_map).dtype == "fp8_e4m3"


# -- the reader, on the real wheels -----------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_recorded_facts_equal_a_fresh_read_of_the_wheel(version):
    from fixtures import downloads
    from pytest_vllm_env.readers import vllm_attn_backends

    root = downloads.unpacked(f"vllm=={version}")

    def load(rel: str) -> str | None:
        p = root / rel
        return p.read_text() if p.is_file() else None

    got = vllm_attn_backends.read(load).to_json()
    assert got == attention_standin.recorded(version).to_json()


@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_stand_ins_read_back_as_the_recorded_facts(version):
    from pytest_vllm_env.readers import vllm_attn_backends

    files = attention_standin.files(version)
    got = vllm_attn_backends.read(files.get).to_json()
    want = attention_standin.recorded(version).to_json()
    for b in (*got["backends"].values(), *want["backends"].values()):
        b["imports"] = [m for m in b["imports"] if m not in attention_standin.ALWAYS]
    assert got == want


KV_FIX = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/measured/nvfp4_kv_fix-0.26.0.json").read_text()
)["loads"]


@pytest.mark.parametrize(
    "load", KV_FIX, ids=[f"{r['model']}-{r['kv_cache_dtype']}" for r in KV_FIX]
)
def test_the_fix_as_the_h100_ran_it(pytester, env_builder, tmp_path, load):
    """Each load of the H100 run (Round 14: both NVFP4-KV exports, kv_cache_dtype auto / fp8
    / bfloat16, vLLM 0.26.0 without FlashInfer): refused loads fail, the ones that loaded and
    gave the known answer pass, with the backend vLLM logged."""
    args = ["--cuda-arch=9.0"]
    if load["kv_cache_dtype"] != "auto":
        args.append(f"--vllm-serve-args=vllm serve m --kv-cache-dtype {load['kv_cache_dtype']}")
    f = run(pytester, make_env(env_builder), export(tmp_path, load["model"]), *args)
    if load["outcome"] == "refuses":
        assert f["outcome"] == "failed", f
        assert "No valid attention backend found" in f["summary"]
    else:
        assert load["got"] == load["expected"]
        assert f["outcome"] == "passed", f
        assert f["evidence"]["backend"] == {"9.0": load["backend"]}
