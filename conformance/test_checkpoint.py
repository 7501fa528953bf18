"""Checkpoints as the env's vLLM loads them, and the launch arguments that change the load
(issue 22): every --modelopt-checkpoint, under --tensor-parallel-size / --vllm-quantization /
--vllm-serve-args."""

import pytest

from pytest_vllm_env.checks import checkpoint_load as c
from pytest_vllm_env.checks import launch
from pytest_vllm_env.checks.checkpoint_probe import agrees

pytestmark = pytest.mark.toolchain


def _judge(load, verdict, check_id, judge):
    verdict(load.judged(check_id, judge))


@pytest.mark.vllm_check("checkpoint.shards")
def test_shards(checkpoint_load, verdict):
    _judge(checkpoint_load, verdict, "checkpoint.shards", lambda x: c.shards(x.plan, x.label))


@pytest.mark.vllm_check("checkpoint.quant-config-source")
def test_quant_config_source(checkpoint_load, verdict):
    _judge(
        checkpoint_load,
        verdict,
        "checkpoint.quant-config-source",
        lambda x: c.quant_config_source(x.plan.decision, x.label, x.vllm),
    )


@pytest.mark.vllm_check("checkpoint.parameters")
def test_parameters(checkpoint_load, verdict):
    _judge(
        checkpoint_load,
        verdict,
        "checkpoint.parameters",
        lambda x: c.parameters(x.plan, x.label, x.vllm, x.samples, x.scales),
    )


@pytest.mark.vllm_check("launch.quantization")
def test_quantization(checkpoint_load, verdict):
    _judge(
        checkpoint_load,
        verdict,
        "launch.quantization",
        lambda x: launch.quantization(x.plan.decision, x.label, x.vllm, x.launch.q_from),
    )


@pytest.mark.vllm_check("launch.tensor-parallel")
def test_tensor_parallel(checkpoint_load, verdict):
    _judge(
        checkpoint_load,
        verdict,
        "launch.tensor-parallel",
        lambda x: launch.tensor_parallel(x.split, x.label, x.vllm, x.launch.tp_from, x.best_tp),
    )


@pytest.mark.vllm_check("checkpoint.load-probe")
def test_load_probe(checkpoint_load, checkpoint_load_probe, verdict):
    probe = checkpoint_load_probe
    verdict(
        agrees(
            checkpoint_load.plan,
            checkpoint_load.split,
            probe.data if probe is not None else None,
            probe.problem if probe is not None else None,
            checkpoint_load.label,
            probe.output_tail if probe is not None else "",
        )
    )


@pytest.mark.vllm_check("checkpoint.attention-backend")
def test_attention_backend(attention_backend_finding, verdict):
    verdict(attention_backend_finding)
