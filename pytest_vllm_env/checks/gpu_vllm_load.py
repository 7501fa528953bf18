"""``gpu.vllm-generate``: what one real vLLM load of a checkpoint did
(``probes/vllm_generate.py``'s output): did it load with ModelOpt's quant config and generate,
the same tokens twice? When it died: the exception, the frame that raised it (file:line and the
source line of an ``assert``), the tensor the loader held, and the fix for that cause.

The gpu tier loads each ``--modelopt-checkpoint`` once (a second fresh process only with
``--vllm-fresh-process``); :mod:`pytest_vllm_env.checks.gpu_vllm_output` judges what that load
computed, :mod:`pytest_vllm_env.checks.gpu_prediction` holds it against the toolchain tier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pytest_vllm_env.checks.abi_fixes import NO_ENV
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv, requirement_of
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.gpu_probe import ProbeResult
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.tables.quant_formats import vllm_config_classes
from pytest_vllm_env.tables.quant_schemes import ROWS as SCHEME_ROWS

# vLLM 0.26.0: "Engine core process {name} died unexpectedly." (v1/utils.py) and
# "Worker proc %s died unexpectedly (exit code: %s), ..." (multiproc_executor.py); older
# releases printed "Engine core proc EngineCore_0 died unexpectedly, shutting down client.".
ENGINE_DIED = re.compile(r"\b(?:Engine core proc(?:ess)?|Worker proc)\b[^\n]*?died unexpectedly")
# The config classes that load ModelOpt checkpoints, in every vLLM release the format table
# has read (ModelOptFp8Config, ModelOptNvFp4Config, ModelOptMxFp8Config, ...)
MODELOPT_CONFIGS = vllm_config_classes("modelopt")
DIED_FIX = (
    "the vLLM engine died while loading/generating: the real cause is printed above that line "
    "(CUDA out of memory, no kernel for this GPU, a crash in a kernel); rerun with "
    "VLLM_ENABLE_V1_MULTIPROCESSING=0 to get the traceback in one process, and fix that cause"
)
_NAMED = re.compile(r"named '([A-Za-z0-9_.]+)'")


def _died(text: str) -> str:
    match = ENGINE_DIED.search(text)
    if not match:
        return ""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else len(text)].strip()[:300]


def raised_at(run: ProbeResult) -> str:
    """``vllm/model_executor/parameter.py:309 (assert ...)``: where the load died, as the
    probe recorded it, shortened to the path inside the package."""
    frame = run.data.get("exception_frame") or {}
    if not frame.get("file"):
        return ""
    path = str(frame["file"])
    # the package-relative part: the LAST /vllm/, /torch/... (a venv may live in /opt/torch)
    cut = max(path.rfind(root) for root in ("/vllm/", "/torch/", "/transformers/"))
    if cut >= 0:
        path = path[cut + 1 :]
    code = f" ({frame['code']})" if frame.get("code") else ""
    return f"{path}:{frame.get('line')}{code}"


def failing_tensor(run: ProbeResult) -> str | None:
    """The checkpoint tensor the load died on: the loader frame's name, else the one the
    message names ("There is no module or parameter named 'lm_head.input_scale'")."""
    tensor = run.data.get("exception_tensor")
    if tensor:
        return str(tensor)
    match = _NAMED.search(str(run.data.get("exception", "")))
    return match[1] if match else None


def run_problem(
    cid: str, run: ProbeResult, checkpoint: str, env: PixiEnv | None = None
) -> Finding | None:
    """The finding for a run that did not produce tokens, or None when it did (its fix
    written for ``env``)."""
    if run.timed_out:
        return error(
            cid,
            f"loading/generating with {checkpoint} did not finish within {run.timeout:.0f} s "
            "(--vllm-probe-timeout) and the probe process group was killed",
            "raise --vllm-probe-timeout if it was only slow (the first FP8 load JIT-compiles "
            "kernels); otherwise run the load by hand with VLLM_LOGGING_LEVEL=DEBUG to see "
            "where it hangs",
            output=run.output_tail[-800:],
        )
    died = _died(run.before)
    if died:
        return failed(
            cid,
            f"the vLLM engine died before {checkpoint} produced tokens: {died}",
            DIED_FIX,
            output=run.output_tail[-800:],
        )
    if run.problem:
        return error(
            cid,
            f"the vLLM probe did not complete: {run.problem}",
            "run the load by hand with the env's python and VLLM_LOGGING_LEVEL=DEBUG",
            output=run.output_tail[-800:],
        )
    if run.data.get("tokens"):
        return None
    exc = str(run.data.get("exception", "")) or "no tokens"
    where, tensor = raised_at(run), failing_tensor(run)
    text = exc
    if where:
        text += f"; raised at {where}"
    if tensor:
        text += f" while loading {tensor}"
    return failed(
        cid,
        f"vLLM could not load/generate with {checkpoint}: {text}",
        _fix_for_load_error(exc, where, tensor, env or NO_ENV),
        exception=exc,
        raised_at=where,
        tensor=tensor,
        traceback=str(run.data.get("traceback_tail", ""))[-1200:],
    )


def shutdown_noise(runs: Sequence[ProbeResult]) -> str:
    """The engine-died line printed AFTER a run's result, if any: harmless shutdown noise
    (vLLM tears the engine process down while the client still watches it)."""
    return next((d for d in (_died(r.after) for r in runs) if d), "")


def config_classes(producer: str | None) -> frozenset[str]:
    """The vLLM config classes that load a checkpoint of ``producer`` (the quant plan's:
    ``modelopt``, ``compressed-tensors``, ``fp8``, ``mxfp4``), in every release the format
    tables have read (``CompressedTensorsConfig``, ``Fp8Config``, ``Mxfp4Config``, ...);
    empty for a producer no table knows (then any class is taken)."""
    if not producer:
        return frozenset()
    if producer.startswith("modelopt"):
        return MODELOPT_CONFIGS
    return frozenset(
        s.config_class for f in SCHEME_ROWS if f.producer == producer for s in f.vllm.values()
    )


_PRODUCER_NAME = {"modelopt": "ModelOpt", "fp8": "fine-grained FP8", "mxfp4": "MXFP4"}


def vllm_generates(
    runs: Sequence[ProbeResult],
    checkpoint: str,
    producer: str | bool | None = True,
    *,
    env: PixiEnv | None = None,
) -> Finding:
    """gpu.vllm-generate: the checkpoint loads with its format's quant config (``producer``:
    the quant plan's producer; True: ModelOpt, the ``--modelopt-checkpoint`` tests; None or
    False: not checked) and generates the same greedy tokens twice in one process (and in
    every fresh process asked for). Reports load time and tokens/s; a load that dies is
    quoted with where it died."""
    cid = "gpu.vllm-generate"
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint given: nothing to load")
    for run in runs:
        problem = run_problem(cid, run, checkpoint, env)
        if problem is not None:
            return problem
    first = runs[0].data
    fmt = "modelopt" if producer is True else (producer or None)
    wanted = config_classes(fmt)
    if wanted and first.get("quant_config") not in wanted:
        name = _PRODUCER_NAME.get(str(fmt).split("_")[0], str(fmt))
        if name == "ModelOpt":
            fix = (
                "the checkpoint lacks hf_quant_config.json / quantization_config with "
                'quant_method "modelopt": re-export it with modelopt export_hf_checkpoint'
            )
        else:  # vLLM took another method than config.json's quantization_config names
            fix = (
                f"load it with config.json's own method (no --quantization, or --quantization "
                f"{fmt}); quant.config says which file and method vLLM reads"
            )
        return failed(
            cid,
            f"vLLM loaded {checkpoint} with quant config {first.get('quant_config')!r}, "
            f"not {name}'s ({', '.join(sorted(wanted))})"
            if name != "ModelOpt"
            else f"vLLM loaded {checkpoint} with quant config {first.get('quant_config')!r}, "
            "not ModelOpt's",
            fix,
        )
    sequences = [tuple(r.data["tokens"]) for r in runs]
    sequences += [tuple(r.data["tokens_again"]) for r in runs if r.data.get("tokens_again")]
    if len(set(sequences)) != 1:
        return failed(
            cid,
            f"greedy generation differs between runs of the same prompt: {sequences}",
            "nondeterministic kernels on this GPU: check the FP8 kernels for its arch "
            "(TORCH_CUDA_ARCH_LIST of the vLLM build) and the driver",
        )
    loads = [r.data.get("load_seconds") for r in runs]
    rates = [r.data.get("tokens_per_s") for r in runs]
    evidence: dict[str, Any] = dict(
        tokens=list(sequences[0]),
        load_seconds=loads,
        process_seconds=[round(r.seconds, 1) for r in runs],
        tokens_per_s=rates,
        kv_cache_dtype=first.get("kv_cache_dtype"),
    )
    noise = shutdown_noise(runs)
    if noise:
        evidence["exit"] = f"harmless shutdown noise after the result: {noise}"
    where = f"in {len(runs)} fresh processes" if len(runs) > 1 else "twice in one process"
    return passed(
        cid,
        f"vLLM {first.get('vllm')} loaded {checkpoint} ({first.get('quant_config')}) and "
        f"generated the same {len(sequences[0])} greedy tokens {where}; "
        f"load {_join(loads, 's')}, {_join(rates, ' tokens/s')}"
        + ("; engine-died line after the result ignored (shutdown noise)" if noise else ""),
        **evidence,
    )


def _join(values: Sequence[Any], unit: str) -> str:
    return " / ".join(f"{v}{unit}" if v is not None else "?" for v in values)


def _fix_for_load_error(
    exc: str, where: str = "", tensor: str | None = None, env: PixiEnv = NO_ENV
) -> str:
    if "flashinfer" in exc:
        return _flashinfer_fix(exc, where, env)
    if "ModelOpt currently only supports" in exc:
        return (
            "re-export the checkpoint with a quant_algo this vLLM supports (FP8 for "
            "mtq.FP8_DEFAULT_CFG), or upgrade vLLM to one that lists it"
        )
    if "No module named 'vllm'" in exc:
        return "install vLLM in the env: " + fixes.add(env, Package("vllm", pypi=True))
    if "Free memory on device" in exc:
        return "free the GPU (another process holds memory) or lower gpu_memory_utilization"
    if "Detected some but not all shards" in exc:
        return (
            "name every shard of the fused layer (q_proj, k_proj, v_proj; gate_proj, up_proj) in "
            "exclude_modules/ignore, or none of them"
        )
    if "no module or parameter named" in exc.lower():
        return (
            f"the checkpoint holds {tensor or 'a tensor'} for a module vLLM builds without it "
            "(an excluded module's scales): drop those tensors or stop excluding the module; "
            "modelopt.tensors-complete names every such tensor"
        )
    if "parameter.py" in where and "assert" in where:
        return (
            f"{tensor or 'a checkpoint tensor'} has a shape vLLM's loader does not accept "
            "(per-tensor FP8 scales must be [] or [1]): re-export it; modelopt.tensors-complete "
            "names every such tensor"
        )
    if tensor:
        return (
            f"vLLM failed while loading {tensor}: fix or re-export that tensor; run the "
            "toolchain tier (modelopt.*) on the checkpoint for the full list"
        )
    return "read the traceback in the evidence; fix the env or the checkpoint it names"


def _flashinfer(env: PixiEnv) -> str:
    """flashinfer-python at the version the env's vLLM asks in its metadata (Requires-Dist),
    in the env's language."""
    dist = env.dist("vllm")
    req = requirement_of(dist.requires, ("flashinfer-python",)) if dist is not None else None
    spec = str(req.specifier) if req is not None else ""
    return fixes.add(env, Package("flashinfer-python", spec, pypi=True))


def _flashinfer_fix(exc: str, where: str, env: PixiEnv = NO_ENV) -> str:
    """A missing/broken FlashInfer, by the frame that needed it: VLLM_USE_FLASHINFER_SAMPLER
    only steers the sampler; for the Gated-DeltaNet prefill (Qwen3-Next/Qwen3.5, raised at
    ``.../mamba/gdn/qwen_gdn_linear_attn.py:174`` on the H100) it changes nothing."""
    if "gdn" in where or "gdn_prefill" in exc:
        return (
            "vLLM runs this model's Gated-DeltaNet prefill on FlashInfer on this GPU: add "
            "flashinfer-python at the version vLLM's own metadata pins ("
            + _flashinfer(env)
            + "), or run the Triton kernel: `--gdn-prefill-backend "
            'triton` (`LLM(..., gdn_prefill_backend="triton")`; --vllm-additional-config='
            '\'{"gdn_prefill_backend": "triton"}\' for this suite\'s probe); '
            "modelopt.gdn-prefill-backend names the line for this env"
        )
    if "sample" in where:
        return fixes.otherwise(
            "vLLM's FlashInfer sampler needs flashinfer-python: "
            + fixes.set_var(env, "VLLM_USE_FLASHINFER_SAMPLER", "0"),
            "add flashinfer-python: " + _flashinfer(env),
            " or ",
        )
    return (
        "add flashinfer-python at the version vLLM's own metadata pins: "
        + _flashinfer(env)
        + "; the frame above names the layer that needs it"
    )
