"""Quantized checkpoints of any format, header-only: will the env's vLLM build, load and run
each --vllm-checkpoint (compressed-tensors, fine-grained FP8, MXFP4, ModelOpt) on the target
GPUs? docs/quant-formats.md says what each check judges."""

import pytest

from pytest_vllm_env.checks import modelopt, quant_config, quant_kernels, quant_tensors

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("quant.config")
def test_qfmt_config(
    vllm_checkpoint,
    vllm_checkpoint_plan,
    vllm_quant_source,
    vllm_env,
    vllm_launch,
    request,
    verdict,
):
    version = vllm_env.version_of("vllm")
    modelopt_source = None
    if vllm_checkpoint_plan.producer == "modelopt":
        modelopt_source = request.getfixturevalue("vllm_modelopt_source")
    verdict(
        quant_config.quant_config(
            vllm_checkpoint,
            vllm_checkpoint_plan,
            vllm_quant_source,
            version,
            modelopt_source,
            vllm_launch.quantization,
        )
    )


@pytest.mark.vllm_check("quant.tensors-complete")
def test_qfmt_tensors(
    vllm_checkpoint,
    vllm_checkpoint_plan,
    vllm_checkpoint_scales,
    vllm_checkpoint_samples,
    vllm_launch,
    vllm_quant_source,
    request,
    verdict,
):
    judged = None
    if vllm_checkpoint_plan.producer == "modelopt":
        judged = modelopt.tensors_complete(
            vllm_checkpoint,
            vllm_checkpoint_scales[0],
            vllm_checkpoint_samples,
            request.getfixturevalue("vllm_modelopt_source"),
            request.getfixturevalue("vllm_kv_naming"),
        )
    verdict(
        quant_tensors.tensors_complete(
            vllm_checkpoint,
            vllm_checkpoint_plan,
            judged,
            vllm_launch.tensor_parallel_size,
            vllm_quant_source.moe_fp8_refine_min,
        )
    )


@pytest.mark.vllm_check("quant.scales-sane")
def test_qfmt_scales(vllm_checkpoint, vllm_checkpoint_plan, vllm_checkpoint_scales, verdict):
    values, unread = vllm_checkpoint_scales
    producer = vllm_checkpoint_plan.producer
    verdict(quant_tensors.scales_sane(vllm_checkpoint, values, unread, producer))


@pytest.mark.vllm_check("quant.min-capability")
def test_qfmt_capability(
    vllm_checkpoint, vllm_checkpoint_plan, vllm_env, cuda_archs, cuda_archs_source, request, verdict
):
    version = vllm_env.version_of("vllm")
    source = None
    if vllm_checkpoint_plan.producer == "modelopt":
        source = request.getfixturevalue("vllm_modelopt_source")
    verdict(
        quant_config.min_capability(
            vllm_checkpoint, vllm_checkpoint_plan, version, cuda_archs, cuda_archs_source, source
        )
    )


@pytest.mark.vllm_check("quant.kernel-arch")
def test_qfmt_kernel_arch(
    vllm_checkpoint,
    vllm_checkpoint_plan,
    vllm_env,
    cuda_archs,
    cuda_archs_source,
    vllm_quant_packages,
    vllm_quant_source,
    vllm_launch,
    vllm_triton_kernels,
    vllm_mp_kernel_rules,
    verdict,
):
    version = vllm_env.version_of("vllm")
    verdict(
        quant_kernels.kernel_arch(
            vllm_checkpoint,
            vllm_checkpoint_plan,
            version,
            cuda_archs,
            cuda_archs_source,
            vllm_quant_packages,
            vllm_quant_source.kernel_lists,
            tp=vllm_launch.tensor_parallel_size,
            moe_backend=vllm_launch.moe_backend,
            triton_kernels=vllm_triton_kernels,
            mp_rules=vllm_mp_kernel_rules,
        )
    )


# -- the load and launch checks of issue 22, for a checkpoint of any format ----------------------
# conformance/test_checkpoint.py runs checkpoint.shards, launch.quantization and
# launch.tensor-parallel on each --modelopt-checkpoint with its full load plan; here the same
# checks run on each --vllm-checkpoint (the files vLLM reads, the quantization= decision, the
# tensor-parallel split by each Linear's scheme), under quant.* ids (evidence.judged_as names
# the check), as a ModelOpt checkpoint given here gets the modelopt.* verdicts.


def _judge_any(load, verdict, check_id, judged_as, judge):
    from pytest_vllm_env.checks.quant_config import relabel

    def under_this_id(x):
        found = judge(x)
        assert found.id == judged_as
        return relabel(found, check_id)

    verdict(load.judged(check_id, under_this_id))


@pytest.mark.vllm_check("quant.shards")
def test_qfmt_shards(vllm_checkpoint_load, verdict):
    from pytest_vllm_env.checks import checkpoint_load as c

    _judge_any(
        vllm_checkpoint_load,
        verdict,
        "quant.shards",
        "checkpoint.shards",
        lambda x: c.shards(x.plan, x.label),
    )


@pytest.mark.vllm_check("quant.launch-quantization")
def test_qfmt_launch_quantization(vllm_checkpoint_load, verdict):
    from pytest_vllm_env.checks import launch

    _judge_any(
        vllm_checkpoint_load,
        verdict,
        "quant.launch-quantization",
        "launch.quantization",
        lambda x: launch.quantization(x.plan.decision, x.label, x.vllm, x.launch.q_from),
    )


@pytest.mark.vllm_check("quant.tensor-parallel")
def test_qfmt_tensor_parallel(vllm_checkpoint_load, vllm_checkpoint_plan, verdict):
    from pytest_vllm_env.checks import launch
    from pytest_vllm_env.findings import skipped

    if vllm_checkpoint_plan.producer == "modelopt":
        verdict(
            skipped(
                "quant.tensor-parallel",
                f"{vllm_checkpoint_load.label}: a ModelOpt checkpoint: give it as "
                "--modelopt-checkpoint, whose load plan judges its format's blocks "
                "(launch.tensor-parallel)",
            )
        )
        return
    load = vllm_checkpoint_load
    if load.split is not None and load.split.tp > 1 and not load.split.problems:
        if not load.split.checked:
            from pytest_vllm_env.findings import passed

            verdict(
                passed(
                    "quant.tensor-parallel",
                    f"{load.label}: tensor_parallel_size={load.split.tp} "
                    f"({load.launch.tp_from}) splits the heads, KV heads and vocabulary whole; "
                    "no quantized decoder Linear of the layouts judged here (Llama-family "
                    "q/k/v/o, gate/up/down): the format's own per-rank rules are not judged",
                    judged_as="launch.tensor-parallel",
                    tp=load.split.tp,
                )
            )
            return
    _judge_any(
        vllm_checkpoint_load,
        verdict,
        "quant.tensor-parallel",
        "launch.tensor-parallel",
        lambda x: launch.tensor_parallel(x.split, x.label, x.vllm, x.launch.tp_from, x.best_tp),
    )
