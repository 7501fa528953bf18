# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The fix ``modelopt.tensors-complete`` / ``quant.tensors-complete`` give for a scale vLLM's
loader refuses follows the format in hand. Real case (the H100, vLLM 0.26.0, ModelOpt 0.47.0;
fixtures/modelopt_export/algos_truth-0.26.0.json): ``mtq.NVFP4_MLP_WEIGHT_ONLY_CFG`` writes
quant_algo W4A16_NVFP4 with group_size 32 (weight_scale ``[out, in/32]``); vLLM refused it
("start (0) + length (16) exceeds dimension size (8)"). The fix said "per-tensor FP8 scales must
be scalars ... re-export with mtq.FP8_DEFAULT_CFG": wrong advice for an NVFP4 export. The same
algorithm from ``mtq.W4A16_NVFP4_CFG`` (group_size 16) loaded and answered right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.vllm_standin import install_vllm

ALGOS = Path(__file__).resolve().parents[1] / "fixtures" / "modelopt_export" / "algos"
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")


def checks(pytester: pytest.Pytester, env_builder, name: str) -> dict[str, dict]:
    install_vllm(env_builder, "0.26.0")
    out = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE, "-k", "test_tensors_complete or test_qfmt_tensors",
        f"--vllm-env={env_builder.prefix}", f"--modelopt-checkpoint={ALGOS / name}", f"--vllm-checkpoint={ALGOS / name}",
        f"--vllm-env-report={out}",
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str(), result.stdout.str()[-3000:]
    return {c["id"]: c for c in json.loads(out.read_text())["checks"]}


def test_group_size_32_export_fails_with_the_group_size_and_the_config(pytester, env_builder):
    got = checks(pytester, env_builder, "nvfp4-mlp-weight-only")
    for cid in ("modelopt.tensors-complete", "quant.tensors-complete"):
        f = got[cid]
        assert f["outcome"] == "failed", f
        assert f["fix"].startswith(
            "vLLM's W4A16_NVFP4 loader takes one weight_scale per 16 inputs ([out_features, in_features/16]): "
            "re-export with group_size 16, not the group size this export was written with; "
            "re-export with NVIDIA ModelOpt: mtq.quantize(model, mtq.W4A16_NVFP4_CFG, forward_loop)"
        ), f["fix"]
        assert "FP8" not in f["fix"], f["fix"]


def test_the_export_from_the_named_config_passes(pytester, env_builder):
    got = checks(pytester, env_builder, "w4a16-nvfp4")
    for cid in ("modelopt.tensors-complete", "quant.tensors-complete"):
        assert got[cid]["outcome"] == "passed", got[cid]
