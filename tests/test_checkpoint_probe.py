"""checkpoint.load-probe: the probe's answer (the env's own vLLM on the CPU) judged, and held
against the static plan; the probe's JSON here has the shape ``probes/vllm_load_weights.py``
prints (the integration tier runs the real probe in real vLLM 0.26.0 / 0.33.0 venvs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import loader_variants
from pytest_vllm_env.checks.checkpoint_probe import agrees
from pytest_vllm_env.facts.vllm_load_plan import plan
from pytest_vllm_env.facts.vllm_quant_decision import decide
from pytest_vllm_env.facts.vllm_tp import split
from pytest_vllm_env.readers.checkpoint import read_checkpoint
from pytest_vllm_env.readers.shard_index import read_layout, read_samples
from tests.test_loader_truth import FACTS


def static(tmp_path: Path, name: str):
    folder = loader_variants.make(name, tmp_path / name)
    f = FACTS["0.26.0"]
    ck = read_checkpoint(name, folder)
    d = decide(ck.config, ck.hf_quant_config, None, f.loader, f.modelopt)
    p = plan(
        read_layout(folder),
        ck.config,
        d,
        f.models["LlamaForCausalLM"],
        f.loader,
        f.kv,
        f.modelopt,
        read_samples,
    )
    return p, split(p, 1)


def probe_json(p, unset=(), refused=None, extra_param=None) -> dict:
    params = {n: {"shape": [1], "dtype": "x"} for n in p.params}
    if extra_param:
        params[extra_param] = {"shape": [1], "dtype": "x"}
    rank = {"params": params, "routed": [], "written": {n: "all" for n in params}}
    for n in unset:
        rank["written"][n] = "none"
    if refused:
        rank["refused"] = refused
    return {"ok": True, "vllm": "0.26.0", "mode": "load", "config": {}, "ranks": {"0": rank}}


def test_not_asked_for_skips(tmp_path):
    p, s = static(tmp_path, "good")
    assert agrees(p, s, None, None, "good").outcome == "skipped"


def test_probe_and_plan_agreeing_pass(tmp_path):
    p, s = static(tmp_path, "good")
    found = agrees(p, s, probe_json(p), None, "good")
    assert found.outcome == "passed" and "the static plan agrees" in found.summary


def test_a_parameter_the_probe_left_unset_fails_and_agrees_with_the_plan(tmp_path):
    p, s = static(tmp_path, "norm-missing")
    name = "model.layers.1.post_attention_layernorm.weight"
    found = agrees(p, s, probe_json(p, unset=[name]), None, "norm-missing")
    assert found.outcome == "failed" and found.evidence["vllm_effect"] == "wrong"
    assert name in found.summary and not found.evidence["differences"]


def test_a_refusal_the_plan_did_not_predict_is_named_as_a_difference(tmp_path):
    p, s = static(tmp_path, "good")
    refused = {
        "type": "ValueError",
        "message": "boom",
        "file": "vllm/x.py",
        "line": 1,
        "tensor": "t",
    }
    found = agrees(p, s, probe_json(p, refused=refused), None, "good")
    assert found.outcome == "failed" and found.evidence["vllm_effect"] == "refuses"
    assert "vLLM refused it and the static plan did not" in found.summary


def test_a_parameter_only_vllm_builds_is_a_warning_saying_to_trust_the_probe(tmp_path):
    p, s = static(tmp_path, "good")
    found = agrees(p, s, probe_json(p, extra_param="model.extra.weight"), None, "good")
    assert found.outcome in ("failed", "warning")  # unset: it is not routed either
    assert "vLLM builds model.extra.weight, static does not expect it" in found.summary


@pytest.mark.parametrize("problem", ["`python` did not finish within 900 s and was killed"])
def test_a_probe_that_did_not_complete_is_an_error(tmp_path, problem):
    p, s = static(tmp_path, "good")
    found = agrees(p, s, None, problem, "good", "tail")
    assert found.outcome == "error" and problem in found.summary


# -- through the plugin: --vllm-load-probe runs the env's Python on probes/vllm_load_weights.py
def _env_whose_python_prints(env_builder, tmp_path: Path, data: dict):
    """A stand-in vLLM 0.26.0 env whose ``python`` ignores the probe script and prints
    ``data`` as the real probe prints its answer (its last line, JSON)."""
    from fixtures import loader_standin
    from fixtures.vllm_standin import install_vllm

    install_vllm(env_builder, "0.26.0", extra=loader_standin.files("0.26.0"))
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(data))
    fake = tmp_path / "fakepy"
    fake.write_text(f"#!/bin/sh\necho 'probe noise'\ncat '{answer}'\n")
    fake.chmod(0o755)
    python = env_builder.prefix / "bin" / "python3"
    python.unlink()
    python.symlink_to(fake)
    return env_builder


def _run_probe(pytester, env, folder: Path):
    from tests.test_checkpoint_load import run

    return run(pytester, env, folder, "--vllm-load-probe=load", "-k", "load_probe")


def test_plugin_probe_agreeing_with_the_plan_passes(pytester, env_builder, tmp_path):
    p, _ = static(tmp_path, "good")
    env = _env_whose_python_prints(env_builder, tmp_path, probe_json(p))
    result, checks = _run_probe(pytester, env, tmp_path / "good")
    assert checks["checkpoint.load-probe"]["outcome"] == "passed", checks
    assert "builds the model and loads it on the CPU" in checks["checkpoint.load-probe"]["summary"]
    result.assert_outcomes(passed=1)


def test_plugin_probe_leaving_a_norm_unset_fails(pytester, env_builder, tmp_path):
    # what vLLM 0.26.0 did with norm-missing on the CPU (fixtures/loader_truth): loaded, the
    # norm left at its initial value
    p, _ = static(tmp_path, "norm-missing")
    name = "model.layers.1.post_attention_layernorm.weight"
    env = _env_whose_python_prints(env_builder, tmp_path, probe_json(p, unset=[name]))
    result, checks = _run_probe(pytester, env, tmp_path / "norm-missing")
    found = checks["checkpoint.load-probe"]
    assert found["outcome"] == "failed", checks
    assert f"loads it and leaves 1 parameter(s) unset: {name}" in found["summary"]
    result.stdout.fnmatch_lines(["*fix: add the missing tensors*"])
