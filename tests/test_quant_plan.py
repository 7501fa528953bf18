"""The scheme model (facts/quant_plan.py) and the rows of tables/quant_schemes.py against what
real vLLM code did on the CPU with the same configs (recorded by
scripts/quant_schemes_truth.py into fixtures/quant_export/schemes_truth-<version>.json: vLLM's
own ``_get_scheme_from_parts``, ``Fp8Config.from_config`` and each scheme's ``create_weights``,
kernels stubbed). Also: the stand-in-free readers on the real wheels (integration)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fixtures.quant_standin import EXPORTS
from pytest_vllm_env.facts.quant_plan import QuantPlan, _plan_ct, ct_scheme
from pytest_vllm_env.readers.vllm_quant_source import CT_PY, KERNELS_PY, QUANT_INIT_PY, parse
from pytest_vllm_env.tables.quant_kernels import FAMILIES
from pytest_vllm_env.tables.quant_schemes import scheme_row

TRUTHS = sorted(EXPORTS.glob("schemes_truth-*.json"))
TORCH_TO_SAFETENSORS = {
    "float8_e4m3fn": "F8_E4M3",
    "float32": "F32",
    "bfloat16": "BF16",
    "float16": "F16",
    "int32": "I32",
    "int64": "I64",
    "int8": "I8",
    "uint8": "U8",
}


def _truth(path: Path) -> dict:
    return json.loads(path.read_text())


def _ours(cfg: dict):
    group = next(iter(cfg["config_groups"].values()))
    return ct_scheme(
        group["weights"], group.get("input_activations"), group.get("format") or cfg.get("format")
    )


def test_truth_is_recorded():
    assert [p.name for p in TRUTHS] == ["schemes_truth-0.26.0.json", "schemes_truth-0.33.0.json"]


@pytest.mark.parametrize("path", TRUTHS, ids=lambda p: p.stem)
def test_scheme_choice_matches_vllm(path):
    """For every real export's config and the synthetic ones: the scheme class vLLM's
    ``_get_scheme_from_parts`` built is our row's (W8A16 FP8 where vLLM falls back to it), and
    where vLLM raised, we refuse too."""
    truth = _truth(path)
    for name, real in truth["schemes"].items():
        cfg = truth["configs"][name]
        if "error" in real:
            # refused in from_config (an activation format without activations for int
            # weights; actorder group/dynamic where this vLLM refuses it) or by the scheme
            # choice: either way we refuse too
            plan = QuantPlan("compressed-tensors", "compressed-tensors")
            refused = ("group", "dynamic") if "no longer supported" in real["error"] else ()
            _plan_ct(plan, cfg, {}, refused)
            got = _ours(cfg)
            assert plan.refusal or isinstance(got, str), (name, real, got)
            if "no longer supported" in real["error"]:
                assert real["error"].endswith(plan.refusal), (plan.refusal, real["error"])
            continue
        got = _ours(cfg)
        assert not isinstance(got, str), (name, got)
        row, _settings, _flags, family = got
        cls = scheme_row("compressed-tensors", row).linear_method
        if family == "fp8_weight_only":
            cls = "CompressedTensorsW8A16Fp8"
        assert cls == real["scheme"], (name, cls, real)


@pytest.mark.parametrize("path", TRUTHS, ids=lambda p: p.stem)
def test_rows_register_what_create_weights_registers(path):
    """What each scheme's real ``create_weights`` registered on a Linear [256, 512] is exactly
    our row's parameters (for the layer's flags), in a dtype the row allows and a shape the
    row accepts."""
    truth = _truth(path)
    checked = 0
    for name, real in truth["create_weights"].items():
        if "params" not in real or name.startswith("fp8:"):
            continue
        got = _ours(truth["configs"][name])
        assert not isinstance(got, str), (name, got)
        row = scheme_row("compressed-tensors", got[0])
        params = {p.name: p for p in row.params if not p.when or p.when in got[2]}
        assert set(params) == set(real["params"]), (name, set(params), real["params"])
        settings = dict(got[1])
        if settings.get("group") == -1:
            settings["group"] = 512
        for pname, (dtype, shape) in real["params"].items():
            p = params[pname]
            assert p.dtypes is None or TORCH_TO_SAFETENSORS[dtype] in p.dtypes, (name, pname)
            assert p.fits(tuple(shape), 256, 512, settings), (name, pname, shape, p.shape_text)
        checked += 1
    assert checked >= 9


@pytest.mark.parametrize("path", TRUTHS, ids=lambda p: p.stem)
def test_fp8_config_refusals_match_vllm(path, tmp_path):
    """Fp8Config.from_config's refusals are ours, word for word; its parameters our rows'."""
    from pytest_vllm_env.facts.quant_plan import QuantPlan, _plan_fp8

    truth = _truth(path)
    configs = {
        "block-dynamic": {"activation_scheme": "dynamic", "weight_block_size": [128, 128]},
        "block-static": {"activation_scheme": "static", "weight_block_size": [128, 128]},
        "block-3d": {"activation_scheme": "dynamic", "weight_block_size": [1, 128, 128]},
        "tensor-static": {"activation_scheme": "static"},
        "tensor-dynamic": {"activation_scheme": "dynamic"},
        "bad-activation": {"activation_scheme": "per-token"},
    }
    for name, cfg in configs.items():
        real = truth["create_weights"][f"fp8:{name}"]
        plan = QuantPlan("fp8", "fp8")
        _plan_fp8(plan, {"quant_method": "fp8", **cfg}, {})
        if "error" in real:
            assert plan.refusal and real["error"].endswith(plan.refusal), (name, plan.refusal)
            continue
        assert plan.refusal is None, name
        row = scheme_row("fp8", "FP8_BLOCK" if "weight_block_size" in cfg else "FP8_TENSOR")
        flags = {"static_input"} if cfg["activation_scheme"] == "static" else set()
        names = {p.name for p in row.params if not p.when or p.when in flags}
        assert names == set(real["params"]), (name, names, real["params"])


# -- the readers on the real wheels -----------------------------------------------------------
def _read(version: str, path: str) -> str:
    from fixtures.downloads import wheel

    with zipfile.ZipFile(wheel(f"vllm=={version}")) as zf:
        return zf.read(path).decode()


@pytest.mark.integration
@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_quant_source_reads_the_real_wheels(version):
    """Both releases know compressed-tensors, fp8 and mxfp4; 0.33.0 refuses actorder group and
    dynamic; the kernel lists name every kernel our tables model, in the tables' order."""
    src = parse(*(_read(version, p) for p in (QUANT_INIT_PY, CT_PY, KERNELS_PY)))
    assert src.missing == ()
    assert {"compressed-tensors", "fp8", "mxfp4", "modelopt"} <= set(src.methods)
    assert src.refused_actorders == (("group", "dynamic") if version == "0.33.0" else ())
    lists = {"fp8": "fp8", "fp8_block": "fp8_block", "int8": "int8", "wna16": "kernels"}
    for family, env_name in lists.items():
        real = src.kernel_lists[env_name]
        ours = [k.name for k in FAMILIES[version][family]]
        assert [n for n in real if n in ours] == ours, (family, real)


@pytest.mark.parametrize(
    ("version", "refused_actorders"), [("0.26.0", ()), ("0.33.0", ("group", "dynamic"))]
)
def test_verdicts_agree_with_vllms_own_loader_on_the_cpu(tmp_path, version, refused_actorders):
    """Every export and failing variant, judged by quant.config and quant.tensors-complete,
    against what vLLM's own loader (0.26.0 and 0.33.0) did with it on the CPU
    (fixtures/quant_export/loader_truth_cpu-<version>.json): refused -> we say it refuses, and
    the tensor it raised on is one we name; loaded -> we never say it refuses (a missing scale
    loads and computes garbage: wrong)."""
    from fixtures.quant_standin import VARIANTS
    from pytest_vllm_env.checks.quant_config import quant_config
    from pytest_vllm_env.checks.quant_tensors import tensors_complete
    from pytest_vllm_env.facts.quant_plan import plan
    from pytest_vllm_env.readers.checkpoint import read_checkpoint

    truth = json.loads((EXPORTS / f"loader_truth_cpu-{version}.json").read_text())
    judged = 0
    for name, real in truth["models"].items():
        if name in truth["cpu_artifacts"]:
            continue
        folder = EXPORTS / name if (EXPORTS / name).is_dir() else VARIANTS[name](tmp_path / name)
        ckpt = read_checkpoint(name, folder)
        p = plan(ckpt, refused_actorders)
        found = [quant_config(ckpt, p, None, version), tensors_complete(ckpt, p)]
        refuses = [
            f
            for f in found
            if f.outcome == "failed" and (f.evidence.get("vllm_effect") == "refuses")
        ]
        if real["loaded"]:
            assert not refuses, (name, refuses)
        else:
            assert refuses, (name, real["refused"], found)
            tensor = real["refused"].get("tensor")
            if tensor and refuses[0].id == "quant.tensors-complete":
                # the first tensor we name is the one vLLM raised on (files' name order)
                assert refuses[0].evidence["tensors"][0] == tensor, (name, tensor, refuses[0])
        judged += 1
    assert judged >= 15


def test_every_scheme_row_is_whole():
    """Each row of tables/quant_schemes.py: unique, cites its source, names both releases read
    with a config class and a capability, registers one weight parameter (MXFP4: experts,
    described apart), and has a kernel family both releases' tables hold."""
    from pytest_vllm_env.tables.quant_schemes import ROWS

    names = [(r.producer, r.name) for r in ROWS]
    assert len(names) == len(set(names))
    for row in ROWS:
        assert row.sources and row.exported_as, row.name
        assert set(row.vllm) == {"0.26.0", "0.33.0"}, row.name
        assert all(70 <= s.min_capability <= 120 for s in row.vllm.values()), row.name
        if row.producer != "mxfp4":
            assert [p.role for p in row.params].count("weight") == 1, row.name
        assert all(row.kernel_family in FAMILIES[r] for r in FAMILIES), row.name


def test_a_scheme_without_a_row_is_not_judged_as_refused():
    """MXFP4 weights through compressed-tensors (CompressedTensorsW4A4Mxfp4): vLLM builds it;
    the table has no row: quant.config skips, never fails what loads."""
    from pytest_vllm_env.checks.quant_config import quant_config
    from pytest_vllm_env.facts.quant_plan import plan
    from pytest_vllm_env.readers.checkpoint import read_checkpoint

    folder = EXPORTS / "ct-w4a16-g128"
    ckpt = read_checkpoint("mxfp4-ct", folder)
    group = next(iter(ckpt.quantization_config["config_groups"].values()))
    group["weights"] = {"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32}
    group["format"] = "mxfp4-pack-quantized"
    p = plan(ckpt)
    assert p.refusal is None and p.unmodelled == {"CompressedTensorsW4A4Mxfp4"}
    found = quant_config(ckpt, p, None, "0.26.0")
    assert found.outcome == "skipped" and "CompressedTensorsW4A4Mxfp4" in found.summary


def test_kernel_walk_follows_vllms_choosers():
    """The walk on its own: INT8 on sm 12.0 takes CUTLASS and fails, unless N or K is not a
    multiple of 16 (cutlass_scaled_mm hands those to Triton); W4A16 group 256 on sm 9.0 skips
    Machete and Marlin and lands on Triton W4A16 (a cost); block FP8 in float16 skips DeepGEMM."""
    from pytest_vllm_env.facts.quant_kernel_choice import LayerAsk, choose, kernel_list

    int8, _, _ = kernel_list("int8", "0.26.0")
    got = choose(int8, 120, LayerAsk(512, 256), set())
    assert got.kernel.name == "CutlassInt8ScaledMMLinearKernel" and "SM120" in got.failure
    assert choose(int8, 120, LayerAsk(500, 256), set()).failure is None
    assert choose(int8, 90, LayerAsk(512, 256), set()).failure is None
    wna16, _, _ = kernel_list("wna16", "0.33.0")
    g256 = LayerAsk(512, 512, {"group": 256, "bits": 4, "pack": 8})
    got = choose(wna16, 90, g256, set())
    assert got.kernel.name == "TritonW4A16LinearKernel" and got.kernel.cost
    block, _, _ = kernel_list("fp8_block", "0.26.0")
    settings = {"block_n": 128, "block_k": 128}
    fp16 = LayerAsk(576, 256, settings, act_dtype="float16")
    got = choose(block, 120, fp16, {"deep_gemm"})
    assert got.kernel.name == "CutlassFp8BlockScaledMMKernel" and "Invalid status" in got.failure
    bf16 = LayerAsk(576, 256, settings)
    assert choose(block, 120, bf16, {"deep_gemm"}).kernel.name == "DeepGemmFp8BlockScaledMMKernel"
    # the env's own order wins: a list that puts Triton first takes it
    order = {"fp8_block": ("TritonFp8BlockScaledMMKernel", "DeepGemmFp8BlockScaledMMKernel")}
    kernels, unknown, _ = kernel_list("fp8_block", "0.26.0", order)
    assert [k.name for k in kernels][0] == "TritonFp8BlockScaledMMKernel" and unknown == ()
