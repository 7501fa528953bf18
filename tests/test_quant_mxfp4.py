# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""gpt-oss MXFP4 experts on Hopper: which shapes vLLM's Triton MoE kernel (triton_kernels'
matmul_ogs, vendored in vLLM 0.26.0 and 0.33.0) compiles for, judged by quant.kernel-arch.

On sm 9.x vLLM swizzles the MXFP4 scales for Hopper with 8 warps, which needs BLOCK_N 256;
triton_kernels picks 256 only for an output of more than 128 columns, so an expert GEMM of
128 columns or fewer (down: hidden; gate_up: 2 x intermediate per rank, padded to 64) dies at
``tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0)``. Real outcomes: the tiny export
(hidden 128) died on an H200, the same at hidden 256 ran on an H100
(fixtures/quant_export/formats_truth-0.26.0*.json), and the shapes of the GPU sweep
(mxfp4_shapes-0.26.0.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.quant_standin import EXPORTS, gpt_oss_shaped, install_vllm_quant, read_tensors
from pytest_vllm_env.checks.quant_kernels import kernel_arch
from pytest_vllm_env.facts.quant_plan import plan
from pytest_vllm_env.readers.checkpoint import read_checkpoint
from pytest_vllm_env.tables.archs import parse_arch
from tests.test_quant_checks import run, verdicts
from tests.test_quant_gpu_truth import disagreements

TK = frozenset({"triton_kernels"})


def judge(folder: Path, version: str = "0.26.0", cc: str = "9.0", tp: int = 1, packages=TK):
    """quant.kernel-arch on ``folder`` for one GPU arch."""
    ckpt = read_checkpoint(folder.name, folder)
    return kernel_arch(ckpt, plan(ckpt), version, [parse_arch(cc)], "the GPU", packages, tp=tp)


def test_the_shaped_checkpoint_is_the_export_at_its_own_size(tmp_path):
    """gpt_oss_shaped at the export's size (hidden 128, intermediate 128) writes the tensor
    names, dtypes and shapes of the real export: the other sizes stand for real exports."""
    made, _ = read_tensors(gpt_oss_shaped(tmp_path / "g", 128, 128) / "model.safetensors")
    real, _ = read_tensors(EXPORTS / "gpt-oss-mxfp4" / "model.safetensors")
    shape = {k: (v["dtype"], v["shape"]) for k, v in real.items() if k != "__metadata__"}
    assert {k: (v["dtype"], v["shape"]) for k, v in made.items() if k != "__metadata__"} == shape


@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_hidden_128_fails_on_hopper_only(version):
    """The tiny export: TRITON on 9.0 does not compile (the H200 run); Blackwell takes other
    kernels (FlashInfer TRT-LLM on 10.x where FlashInfer is there, Marlin on 12.x)."""
    f = judge(EXPORTS / "gpt-oss-mxfp4", version)
    assert f.outcome == "failed" and f.evidence["vllm_effect"] == "refuses"
    assert (
        "9.0: vLLM takes TRITON (triton_kernels) for 2 layer(s), e.g. model.layers.0.mlp.experts "
        "[experts: hidden 128, intermediate 128], which fails there: triton_kernels' matmul_ogs "
        "does not compile: CompileTimeAssertionFailure at tl.static_assert(BLOCK_N % (2 * n_warps "
        "* 2 * 8) == 0) (Hopper-swizzled MXFP4 scales, 8 warps, need BLOCK_N 256; an expert GEMM "
        "with 128 (down) output columns gets BLOCK_N 128)"
    ) in f.summary
    assert f.fix.startswith("start vLLM with --moe-backend marlin")
    fi = TK | {"flashinfer"}
    assert judge(EXPORTS / "gpt-oss-mxfp4", version, "10.0", packages=fi).summary.endswith(
        "10.0: FLASHINFER_TRTLLM_MXFP4_BF16"
    )
    assert judge(EXPORTS / "gpt-oss-mxfp4", version, "12.0").summary.endswith("12.0: MARLIN")


def test_without_triton_kernels_marlin_serves_hopper():
    """A vLLM without triton_kernels (has_triton_kernels() false) falls to MARLIN on 9.0,
    which pads the experts to 256 x 128: passed."""
    f = judge(EXPORTS / "gpt-oss-mxfp4", packages=frozenset())
    assert f.outcome == "passed" and f.summary.endswith("9.0: MARLIN"), f.summary


@pytest.mark.parametrize(
    ("hidden", "intermediate", "tp", "outcome"),
    [
        (256, 256, 1, "passed"),  # ran on the H100 (formats_truth-0.26.0-hidden256.json)
        (256, 256, 2, "passed"),  # 128 per rank: gate_up 256 columns
        (256, 256, 4, "failed"),  # 64 per rank: gate_up 128 columns
        (256, 64, 1, "failed"),  # gate_up 128 columns
        (160, 256, 1, "passed"),  # 160 columns > 128: BLOCK_N 256
        (2880, 2880, 8, "passed"),  # gpt-oss-20b/120b: 360 per rank, padded to 384
    ],
)
def test_each_ranks_share_decides(tmp_path, hidden, intermediate, tp, outcome):
    f = judge(gpt_oss_shaped(tmp_path / "g", hidden, intermediate), tp=tp)
    assert f.outcome == outcome, f.summary
    if outcome == "failed":
        assert "(gate_up) output columns gets BLOCK_N 128" in f.summary
        if tp > 1:
            assert f"{intermediate // tp} per rank at tensor_parallel_size={tp}]" in f.summary


def test_the_hidden_256_run_still_agrees(tmp_path):
    """The H100 run of the exports at hidden 256 (intermediate 256): gpt-oss MXFP4 loaded and
    generated through TRITON; the rules say the same of a checkpoint of those shapes."""
    truth = json.loads((EXPORTS / "formats_truth-0.26.0-hidden256.json").read_text())
    real = truth["models"]["gpt-oss-mxfp4"]
    assert real["loaded"] and real["generated"] and real["kernels"] == ["TRITON"]
    sub = {
        "meta": {**truth["meta"], "packages": ["triton_kernels"]},
        "models": {"gpt-oss-mxfp4": real},
    }
    folder = gpt_oss_shaped(tmp_path / "gpt-oss-mxfp4", 256, 256)
    found, judged = disagreements(sub, tmp_path, {"gpt-oss-mxfp4": folder})
    assert (found, judged) == ([], 1)
    # the comparison can fail: hidden 128 held to that run (it died there) is caught twice
    small = gpt_oss_shaped(tmp_path / "small" / "gpt-oss-mxfp4", 128, 128)
    found, _ = disagreements(sub, tmp_path, {"gpt-oss-mxfp4": small})
    assert found == [
        "gpt-oss-mxfp4: loaded on the GPU, but quant.kernel-arch say(s) it refuses",
        "gpt-oss-mxfp4: vLLM took ['TRITON'] on 9.0, we name []",
    ]


SWEEP = EXPORTS / "mxfp4_shapes-0.26.0.json"
SHAPE = re.compile(r"gpt-oss-mxfp4-h(\d+)-i(\d+)$")


def sweep_cases(truth: dict) -> dict[str, tuple[int, int]]:
    """The sweep's gpt-oss checkpoints and their (hidden, intermediate), from their names
    (fixtures/quant_exports.py ``mxfp4:H:I`` -> ``gpt-oss-mxfp4-hH-iI``)."""
    out = {}
    for name in truth["models"]:
        if m := SHAPE.match(name):
            out[name] = (int(m.group(1)), int(m.group(2)))
    return out


def test_every_settled_shape_of_the_gpu_sweep_agrees(tmp_path):
    """scripts/device/formats_truth.sh SWEEP=...: real vLLM 0.26.0 on sm 9.0 loading gpt-oss
    MXFP4 at each hidden x intermediate (random weights, made by fixtures/quant_exports.py);
    the quant.* verdicts on checkpoints of the same shapes agree with every settled one:
    refused there <-> failed as refused here, loaded <-> no refusal, and the MoE kernel vLLM
    logged is the one named."""
    # recorded in round 13 (docs/gpu-runs.md): SWEEP='64x128 128x64 128x128 128x256 256x128
    # 256x256 512x512 2880x2880 256x64 192x128' bash scripts/device/formats_truth.sh on an H100
    truth = json.loads(SWEEP.read_text())
    assert truth["meta"]["cc"][0] == 9 and truth["meta"]["vllm"] == "0.26.0"
    cases = sweep_cases(truth)
    settled = {
        n: truth["models"][n] for n in cases if n not in truth["meta"].get("not_settled", {})
    }
    assert len(settled) >= 4 and any(r["loaded"] for r in settled.values())
    assert any(not r["loaded"] for r in settled.values())
    folders = {n: gpt_oss_shaped(tmp_path / n, *cases[n]) for n in settled}
    found, judged = disagreements({**truth, "models": settled}, tmp_path, folders)
    assert (found, judged) == ([], len(settled))
    # each refusal is the static assert the rule names (not another failure it happens to fail)
    for n, real in settled.items():
        if not real["loaded"]:
            assert "CompileTimeAssertionFailure" in (real["exception"] or ""), (n, real)
            # the line Triton marked (the record keeps it: the message is cut at 600 chars)
            assert real["failed_assert"] == "tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0)"
            assert "BLOCK_N % (2 * n_warps * 2 * 8)" in judge(folders[n]).summary


# -- as users run it ---------------------------------------------------------------------------
@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env with a stand-in vLLM 0.26.0 (vendoring triton_kernels, as the wheel does)."""
    install_vllm_quant(env_builder, "0.26.0")
    return env_builder


def test_tensor_parallel_size_reaches_the_verdict(pytester, env, tmp_path):
    """hidden 256 x intermediate 256 serves on sm 9.0 at TP 1; --tensor-parallel-size=4
    leaves each rank 64 of the intermediate, which the Triton kernel cannot compile for. The
    checkpoint has 8 attention heads and 4 KV heads, which TP 4 divides (the export's 2
    heads made vLLM refuse TP 4 at config time as well, a second reason): the kernel is the
    only thing that fails, and for the reason asserted."""
    folder = gpt_oss_shaped(tmp_path / "oss-256", 256, 256, heads=8, kv_heads=4)
    run(pytester, env, folder)
    assert verdicts(pytester)["quant.kernel-arch"]["outcome"] == "passed"
    pytester.path.joinpath("report.json").unlink()
    run(pytester, env, folder, extra=("--tensor-parallel-size=4",))
    found = verdicts(pytester)
    k = found["quant.kernel-arch"]
    assert k["outcome"] == "failed", k
    assert (
        "[experts: hidden 256, intermediate 256, 64 per rank at tensor_parallel_size=4], which "
        "fails there: triton_kernels' matmul_ogs does not compile: CompileTimeAssertionFailure "
        "at tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0) (Hopper-swizzled MXFP4 "
        "scales, 8 warps, need BLOCK_N 256; an expert GEMM with 128 (gate_up) output columns "
        "gets BLOCK_N 128)"
    ) in k["summary"], k
    assert "--moe-backend marlin" in k["fix"]
    assert found["quant.tensor-parallel"]["outcome"] == "passed", found["quant.tensor-parallel"]
    bad = {c: v["outcome"] for c, v in found.items() if v["outcome"] in ("failed", "error")}
    assert bad == {"quant.kernel-arch": "failed"}, bad


@pytest.mark.parametrize(
    ("text", "backend", "where"),
    [
        ("vllm serve openai/gpt-oss-20b --moe-backend Marlin", "marlin", "--moe-backend in x"),
        (
            "vllm serve m -tp 2 --moe-backend=flashinfer-trtllm",
            "flashinfer_trtllm",
            "--moe-backend in x",
        ),
        ("model: m\nmoe-backend: marlin\n", "marlin", "moe-backend in x"),
        ("llm = LLM(model='m', moe_backend='marlin')", "marlin", "moe_backend= in x"),
        ('LLM("m", kernel_config={"moe_backend": "triton"})', "triton", "moe_backend= in x"),
        ("vllm serve m -tp 2", None, ""),
    ],
)
def test_the_moe_backend_is_read_from_what_users_launch_with(text, backend, where):
    from pytest_vllm_env.readers.serve_args import parse_text

    got = parse_text(text, "x")
    assert (got.moe_backend, got.moe_from) == (backend, where)


def test_the_fix_turns_the_verdict_green(pytester, env):
    """The tiny export fails on sm 9.0 saying --moe-backend marlin; started so (read from the
    serve command) it passes; a value vLLM's MXFP4 MoE does not accept fails saying so."""
    folder = EXPORTS / "gpt-oss-mxfp4"

    def kernel_verdict(*extra: str) -> dict:
        run(pytester, env, folder, extra=extra)
        return verdicts(pytester)["quant.kernel-arch"]

    k = kernel_verdict()
    assert k["outcome"] == "failed" and "--moe-backend marlin" in k["fix"]
    k = kernel_verdict("--vllm-serve-args=vllm serve gpt-oss --moe-backend marlin")
    assert k["outcome"] == "passed" and k["summary"].endswith("9.0: MARLIN"), k
    k = kernel_verdict("--vllm-serve-args=vllm serve gpt-oss --moe-backend cutlass")
    assert k["outcome"] == "failed", k
    assert "moe_backend='cutlass' is not supported for MXFP4 MoE" in k["summary"]
    assert k["fix"].startswith("drop --moe-backend")


# -- the fix on the GPU: --moe-backend marlin (round 13) -----------------------------------------
BACKENDS = EXPORTS / "mxfp4_backends-0.26.0.json"


@pytest.mark.parametrize("tag", sorted(json.loads(BACKENDS.read_text())["cases"]))
def test_the_fix_serves_what_triton_refused_on_the_gpu(tmp_path, tag):
    """scripts/device/mxfp4_backends.sh on an H100: shapes the Triton MoE kernel refused in the
    sweep (128x128, 256x64) load and generate with ``--moe-backend marlin``, and vLLM logs
    MARLIN. quant.kernel-arch, recomputed here with that launch argument, passes them and names
    MARLIN; without it, it fails them (the sweep's outcome)."""
    real = json.loads(BACKENDS.read_text())["cases"][tag]
    assert real["loaded"] and real["generated"] and real["backend_logged"] == ["MARLIN"]
    sweep = json.loads(SWEEP.read_text())["models"]
    twin = f"gpt-oss-mxfp4-h{real['hidden']}-i{real['intermediate']}"
    assert not sweep[twin]["loaded"]  # the same shape under the default backend: refused
    folder = gpt_oss_shaped(tmp_path / tag, real["hidden"], real["intermediate"])
    ckpt = read_checkpoint(folder.name, folder)
    fixed = kernel_arch(
        ckpt, plan(ckpt), "0.26.0", [parse_arch("9.0")], "the GPU", TK,
        tp=real["tp"], moe_backend=real["moe_backend"],
    )  # fmt: skip
    assert fixed.outcome == "passed", fixed.summary
    assert "9.0: MARLIN" in fixed.summary
    assert judge(folder, tp=real["tp"]).outcome == "failed"
