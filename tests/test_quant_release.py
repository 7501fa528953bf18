# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""Where the env's own vLLM source does not answer a quantization question (a stand-in or
unreadable file, a release between or after the ones read), the verdict rests on the
recorded facts of the env's release when it is one read (0.26.0, 0.33.0), else on an
assumption the verdict names, never on the silent union of both releases
(facts/quant_release.py, issue 22)."""

from __future__ import annotations

import pytest

from fixtures import checkpoints as ckpts
from fixtures import loader_standin
from fixtures.envs import EnvBuilder
from fixtures.quant_standin import EXPORTS
from fixtures.vllm_standin import ALGOS_0_26, install_vllm, modelopt_text
from pytest_vllm_env.checks.quant_config import min_capability
from pytest_vllm_env.checks.quant_kernels import kernel_arch
from pytest_vllm_env.facts.modelopt_mixed import LINEAR_0_26, LINEAR_0_33, SERVED
from pytest_vllm_env.facts.quant_plan import plan
from pytest_vllm_env.facts.quant_release import exact_release, mixed_served
from pytest_vllm_env.facts.vllm_quant_decision import decide
from pytest_vllm_env.readers.checkpoint import read_checkpoint
from pytest_vllm_env.tables.archs import parse_arch
from tests.test_modelopt_mixed import run


@pytest.mark.parametrize(
    ("version", "release"),
    [
        ("0.26.0", "0.26.0"),
        ("0.33.0+cu130", "0.33.0"),
        ("0.30.1", None),
        ("0.34.0", None),
        (None, None),
    ],
)
def test_exact_release(version, release):
    assert exact_release(version) == release


def test_the_served_set_is_the_envs_then_its_releases_then_an_assumption():
    """Read from the env's modelopt.py: that; not read but vLLM 0.26.0 or 0.33.0: that
    release's recorded set (exact); another release: the union, and the assumption said."""
    assert mixed_served(("FP8",), "0.30.0").algos == ("FP8",)
    assert mixed_served(("FP8",), "0.30.0").assumed == ""
    assert mixed_served(None, "0.26.0+cu129") == mixed_served(None, "0.26.0")
    assert mixed_served(None, "0.26.0").algos == LINEAR_0_26
    assert mixed_served(None, "0.33.0").algos == LINEAR_0_33
    assert not mixed_served(None, "0.33.0").assumed
    between = mixed_served(None, "0.30.0")
    assert between.algos == SERVED
    assert between.assumed.startswith(
        "vLLM 0.30.0's ModelOptMixedPrecisionConfig.get_quant_method could not be read from its modelopt.py, "
        "so a layer is taken as served when 0.26.0 or 0.33.0 serves it"
    )
    assert "0.26.0 lacks FP8_PER_CHANNEL_PER_TOKEN/FP8_PB_WO" in between.assumed
    assert "install vllm==0.26.0 or vllm==0.33.0" in between.assumed


MIXED = {
    "quantization_config": {
        "quant_method": "modelopt",
        "quant_algo": "MIXED_PRECISION",
        "quantized_layers": {"m.q_proj": {"quant_algo": "FP8_PB_WO"}},
    }
}


def test_the_decision_follows_the_envs_release_where_its_source_is_unread():
    """The failing case the union hid: vLLM 0.26.0 has no Linear method for FP8_PB_WO
    (its get_quant_method's == chain), so the layer is built unquantized; before, the
    union of 0.26.0's and 0.33.0's sets called it served."""
    d26 = decide(MIXED, None, None, None, None, "0.26.0")
    assert "FP8_PB_WO" not in d26.served and not d26.served_assumed
    d33 = decide(MIXED, None, None, None, None, "0.33.0")
    assert "FP8_PB_WO" in d33.served and not d33.served_assumed
    d30 = decide(MIXED, None, None, None, None, "0.30.0")
    assert "FP8_PB_WO" in d30.served and "vLLM 0.30.0's" in d30.served_assumed


# -- as users run it -------------------------------------------------------------------------
def make_env(env_builder: EnvBuilder, release: str) -> EnvBuilder:
    """A stand-in vLLM ``release`` whose modelopt.py has no ModelOptMixedPrecisionConfig to
    read (the served set then comes from the record, or is assumed)."""
    text = modelopt_text(ALGOS_0_26, release=release)
    cut = text.find("class ModelOptMixedPrecisionConfig")  # the stand-in has it; drop it here
    text = text[:cut] if cut >= 0 else text
    install_vllm(env_builder, release, modelopt=text, extra=loader_standin.files(release))
    return env_builder


def _pb_wo(ckpt_dir):
    """mixed_llama's FP8 attention and an FP8_PB_WO MLP: FP8 weights and a weight scale, no
    input scale (weight-only), as vllm_load_plan.FORMATS has that algorithm's parameters."""
    builder = ckpts.mixed_llama("FP8_PB_WO")
    for key in [k for k in builder.tensors if ".mlp." in k and k.endswith(".input_scale")]:
        del builder.tensors[key]
    return builder.write(ckpt_dir)


@pytest.mark.parametrize("release", ["0.26.0", "0.30.0", "0.33.0"])
def test_a_layer_only_some_releases_serve(pytester, env_builder, tmp_path, release):
    env = make_env(env_builder, release)
    _, checks = run(pytester, env, _pb_wo(tmp_path / "mixed"))
    params = checks["checkpoint.parameters"]
    kernels = checks["quant.kernel-arch"]
    if release == "0.26.0":
        # the record of 0.26.0: no Linear method for FP8_PB_WO, built unquantized
        assert params["outcome"] == "failed", params
        assert "'FP8_PB_WO'" in params["summary"]
        assert "vLLM 0.26.0 serves FP8/NVFP4/W4A16_NVFP4/MXFP8" in params["summary"]
    elif release == "0.33.0":
        assert "assumed" not in params["summary"] + kernels["summary"]
    else:
        assert params["outcome"] != "failed", params
        assert (
            "vLLM 0.30.0's ModelOptMixedPrecisionConfig.get_quant_method could not be read"
            in (params["summary"])
        )
        assert "vLLM 0.30.0's ModelOptMixedPrecisionConfig" in kernels["summary"]
        assert "assumed: vLLM 0.30.0 picks kernels as 0.26.0 does" in kernels["summary"]


def _pc_pt(ckpt_dir):
    """mixed_llama's FP8 attention and an FP8_PER_CHANNEL_PER_TOKEN MLP as that algorithm's
    row holds it: FP8 weights, a per-channel float32 weight scale ([out]), no input scale
    (activations are quantized per token at run time)."""
    builder = ckpts.mixed_llama("FP8_PER_CHANNEL_PER_TOKEN")
    for key in [k for k in builder.tensors if ".mlp." in k]:
        if key.endswith(".input_scale"):
            del builder.tensors[key]
        elif key.endswith(".weight_scale"):
            out = builder.tensors[key.removesuffix("_scale")][1][0]
            builder.tensors[key] = ("F32", [out], ckpts.f32(*[0.002] * out))
    return builder.write(ckpt_dir)


@pytest.mark.parametrize("release", ["0.26.0", "0.30.0", "0.33.0"])
def test_tensors_complete_follows_the_envs_release(pytester, env_builder, tmp_path, release):
    """modelopt.tensors-complete where the env's modelopt.py does not say which per-layer
    algorithms ModelOptMixedPrecisionConfig serves: vLLM 0.26.0 (its record: FP8, NVFP4,
    W4A16_NVFP4, MXFP8) has no Linear method for FP8_PER_CHANNEL_PER_TOKEN, builds those MLP
    layers unquantized and has no parameter for their weight_scale (failed; before: the
    union of both releases called the layer served, passed); 0.33.0 serves it (passed); a
    release not read passes on the union, saying what it assumed."""
    env = make_env(env_builder, release)
    _, checks = run(pytester, env, _pc_pt(tmp_path / "mixed"))
    t = checks["modelopt.tensors-complete"]
    if release == "0.26.0":
        assert t["outcome"] == "failed", t
        assert (
            "model.layers.0.mlp.down_proj: quantized_layers gives it 'FP8_PER_CHANNEL_PER_TOKEN', "
            "which ModelOptMixedPrecisionConfig has no method for, so vLLM builds it unquantized "
            "and says 'There is no module or parameter named model.layers.0.mlp.down_proj.weight_scale'"
        ) in t["summary"], t
        assert t["fix"].startswith(
            "quantize those layers with an algorithm vLLM serves per layer (FP8, NVFP4, "
            "W4A16_NVFP4, MXFP8)"
        ), t
    elif release == "0.33.0":
        assert t["outcome"] == "passed" and "assumed" not in t["summary"], t
        assert "FP8_PER_CHANNEL_PER_TOKEN: 6" in t["summary"], t
    else:
        assert t["outcome"] == "passed", t
        assert (
            "vLLM 0.30.0's ModelOptMixedPrecisionConfig.get_quant_method could not be read from "
            "its modelopt.py, so a layer is taken as served when 0.26.0 or 0.33.0 serves it"
        ) in t["summary"], t


# -- kernel tables on a release not read ---------------------------------------------------------
def _int8(version: str, cc: str = "10.0"):
    folder = EXPORTS / "ct-w8a8-int8"
    ckpt = read_checkpoint(folder.name, folder)
    return ckpt, plan(ckpt), version, [parse_arch(cc)]


def test_a_kernel_refusal_on_a_release_not_read_is_a_warning_that_says_why():
    """INT8 W8A8 on sm 10.0: CUTLASS has no int8 GEMM there in 0.26.0 and 0.33.0 (failed);
    vLLM 0.30.0 was never read: the same refusal, as a warning naming the assumption and
    how to make it exact."""
    ckpt, p, _, archs = _int8("0.26.0")
    exact = kernel_arch(ckpt, p, "0.26.0", archs, "x", frozenset())
    assert exact.outcome == "failed" and "assumed" not in exact.summary
    assert kernel_arch(ckpt, p, "0.33.0+cu130", archs, "x", frozenset()).outcome == "failed"
    f = kernel_arch(ckpt, p, "0.30.0", archs, "x", frozenset())
    assert f.outcome == "warning", f.summary
    assert "Int8 not supported on SM100" in f.summary
    assert (
        "assumed: vLLM 0.30.0 picks kernels as 0.26.0 does (the tables were read from the 0.26.0 "
        "and 0.33.0 wheels only, and compiled kernels' arch support is not in Python source); "
        "pin vllm==0.26.0 or vllm==0.33.0 for an exact verdict"
    ) in f.summary
    assert f.evidence["assumed"]
    later = kernel_arch(ckpt, p, "0.34.0", archs, "x", frozenset())
    assert later.outcome == "warning" and "as 0.33.0 does" in later.summary


def test_a_pass_on_a_release_not_read_says_what_it_assumed():
    ckpt, p, _, _ = _int8("0.30.0")
    f = kernel_arch(ckpt, p, "0.30.0", [parse_arch("9.0")], "x", frozenset())
    assert f.outcome == "passed" and "assumed: vLLM 0.30.0 picks kernels" in f.summary
    assert (
        "assumed"
        not in kernel_arch(ckpt, p, "0.26.0", [parse_arch("9.0")], "x", frozenset()).summary
    )


def test_min_capability_on_a_release_not_read():
    """The INT8 scheme needs 7.5: on sm 7.0 0.26.0 refuses it (failed); 0.30.0's rows are
    assumed to be 0.26.0's: a warning saying so."""
    ckpt, p, _, _ = _int8("0.26.0")
    exact = min_capability(ckpt, p, "0.26.0", [parse_arch("7.0")], "x")
    assert exact.outcome == "failed", exact.summary
    f = min_capability(ckpt, p, "0.30.0", [parse_arch("7.0")], "x")
    assert (
        f.outcome == "warning"
        and "assumed: vLLM 0.30.0 needs the capabilities as 0.26.0 does" in f.summary
    )


def test_quant_config_where_quantization_methods_are_unread():
    """QuantizationMethods unread: vLLM 0.26.0's recorded list still refuses a method it
    does not have (before, nothing was said and the check skipped); a release not read
    passes a method the suite knows, saying it assumed vLLM knows it."""
    from pytest_vllm_env.checks.quant_config import quant_config
    from pytest_vllm_env.facts.quant_plan import QuantPlan
    from pytest_vllm_env.readers.vllm_quant_source import QuantSource

    folder = EXPORTS / "ct-fp8-dynamic"
    ckpt = read_checkpoint(folder.name, folder)
    unread = QuantSource(
        missing=("vllm/model_executor/layers/quantization/__init__.py has no QuantizationMethods",)
    )
    f = quant_config(ckpt, QuantPlan("hqq", None), unread, "0.26.0")
    assert (
        f.outcome == "failed"
        and "quant_method 'hqq' is not a quantization method vLLM 0.26.0 knows" in f.summary
    )
    f = quant_config(ckpt, plan(ckpt), unread, "0.30.0")
    assert f.outcome == "passed", f.summary
    assert f.summary.endswith(
        "; assumed: vLLM 0.30.0 knows 'compressed-tensors' (its QuantizationMethods could not be "
        "read: vllm/model_executor/layers/quantization/__init__.py has no QuantizationMethods)"
    )
    assert "assumed" not in quant_config(ckpt, plan(ckpt), unread, "0.26.0").summary
