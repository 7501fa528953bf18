"""Judge what one real vLLM load of a checkpoint did (``probes/vllm_generate.py``'s output).

The gpu tier loads each ``--modelopt-checkpoint`` once (a second fresh process only with
``--vllm-fresh-process``) and asks of that one load:

- ``gpu.vllm-generate``: did it load with ModelOpt's quant config and generate, the same
  tokens twice? When it died: the exception, the frame that raised it (file:line and the
  source line of an ``assert``), and the tensor the loader held.
- ``gpu.vllm-sane``: are the first token's logprobs finite and not flat? A flat top-20 at
  -log(vocab) is what an lm_head computing zeros gives (seen on the H100: token 0 forever).
- ``gpu.vllm-perplexity``: with a tokenizer, the perplexity of a fixed plain-English
  paragraph, against a limit calibrated on trained tiny models and their broken exports.
- ``gpu.vllm-known-answer``: a prompt with a known continuation
  (``vllm_env_expect.json`` beside the weights).
- ``gpu.vllm-reference``: the BF16 original agrees (``--reference-checkpoint``).
- ``gpu.prediction-agrees``: what the toolchain tier predicted for the same checkpoint
  (refuses / wrong / works, and which tensor) against what vLLM did.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_vllm_env import defaults
from pytest_vllm_env.facts.modelopt_load import SHARD_OF
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning
from pytest_vllm_env.runners.gpu import ProbeResult

# vLLM 0.26.0: "Engine core process {name} died unexpectedly." (v1/utils.py) and
# "Worker proc %s died unexpectedly (exit code: %s), ..." (multiproc_executor.py); older
# releases printed "Engine core proc EngineCore_0 died unexpectedly, shutting down client.".
ENGINE_DIED = re.compile(r"\b(?:Engine core proc(?:ess)?|Worker proc)\b[^\n]*?died unexpectedly")
MODELOPT_CONFIGS = (
    "ModelOptFp8Config",
    "ModelOptNvFp4Config",
    "ModelOptMxFp8Config",
    "ModelOptMixedPrecisionConfig",
)
DIED_FIX = (
    "the vLLM engine died while loading/generating: the real cause is printed above that line "
    "(CUDA out of memory, no kernel for this GPU, a crash in a kernel); rerun with "
    "VLLM_ENABLE_V1_MULTIPROCESSING=0 to get the traceback in one process, and fix that cause"
)
WRONG_FIX = (
    "the checkpoint loads but its numbers are wrong: run `pytest --vllm-conformance -m "
    "toolchain --modelopt-checkpoint=DIR` (modelopt.tensors-complete and modelopt.scales-sane "
    "name the tensors), then re-export with NVIDIA ModelOpt and real calibration data"
)
# A flat first-token distribution: every top logprob within this of the others and of
# -log(vocab). Measured on the H100: an lm_head built FP8 without scales gives exactly that.
FLAT_NATS = 0.01
# Perplexity limit as a power of the vocabulary size (uniform guessing is vocab**1). See
# docs/gpu-runs.md (calibration round) for the measurements that set it.
PERPLEXITY_EXPONENT = defaults.PERPLEXITY_EXPONENT
LOGPROB_TOL = defaults.LOGPROB_TOL  # nats: FP8 vs BF16 first-token logprob (a setting)
_NAMED = re.compile(r"named '([A-Za-z0-9_.]+)'")

Effect = Literal["refuses", "wrong", "works", "fails", "unknown"]


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
    return match.group(1) if match else None


def _run_problem(cid: str, run: ProbeResult, checkpoint: str) -> Finding | None:
    """The finding for a run that did not produce tokens, or None when it did."""
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
        _fix_for_load_error(exc, where, tensor),
        exception=exc,
        raised_at=where,
        tensor=tensor,
        traceback=str(run.data.get("traceback_tail", ""))[-1200:],
    )


def shutdown_noise(runs: Sequence[ProbeResult]) -> str:
    """The engine-died line printed AFTER a run's result, if any: harmless shutdown noise
    (vLLM tears the engine process down while the client still watches it)."""
    return next((d for d in (_died(r.after) for r in runs) if d), "")


def vllm_generates(runs: Sequence[ProbeResult], checkpoint: str, modelopt: bool = True) -> Finding:
    """gpu.vllm-generate: the checkpoint loads with ModelOpt's quant config and generates the
    same greedy tokens twice in one process (and in every fresh process asked for). Reports
    load time and tokens/s; a load that dies is quoted with where it died."""
    cid = "gpu.vllm-generate"
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint given: nothing to load")
    for run in runs:
        problem = _run_problem(cid, run, checkpoint)
        if problem is not None:
            return problem
    first = runs[0].data
    if modelopt and first.get("quant_config") not in MODELOPT_CONFIGS:
        return failed(
            cid,
            f"vLLM loaded {checkpoint} with quant config {first.get('quant_config')!r}, "
            "not ModelOpt's",
            "the checkpoint lacks hf_quant_config.json / quantization_config with "
            'quant_method "modelopt": re-export it with modelopt export_hf_checkpoint',
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


def _loaded(cid: str, run: ProbeResult, checkpoint: str) -> Finding | None:
    """A skip when there is nothing to judge (gpu.vllm-generate reports why)."""
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint given: nothing to load")
    if _run_problem(cid, run, checkpoint) is not None:
        return skipped(cid, f"{checkpoint} generated nothing to judge: gpu.vllm-generate says why")
    return None


def _part(
    cid: str, run: ProbeResult, checkpoint: str, key: str, absent: str, broke: str, fix: str
) -> dict[str, Any] | Finding:
    """The probe's ``key`` section for a check, or the finding that ends the check: a skip
    when the load produced nothing or the section is absent, an error when it raised."""
    if blocked := _loaded(cid, run, checkpoint):
        return blocked
    part = run.data.get(key)
    if part is None:
        return skipped(cid, f"{checkpoint} {absent}")
    if part.get("exception"):
        return error(cid, f"{checkpoint}: {broke}: {part['exception']}", fix)
    return part


# -- correctness without a reference ----------------------------------------------------------
def vllm_sane(run: ProbeResult, checkpoint: str) -> Finding:
    """gpu.vllm-sane: the first generated token's top-20 logprobs are finite and not flat.

    The failures it exists for, all measured on the H100 with real vLLM 0.26.0: a NaN
    ``weight_scale`` (NaN logits), zero weight scales, and an lm_head vLLM built FP8 with
    its scales unset (every top logprob equals -log(vocab): token 0 forever). Two runs that
    agree do not catch any of them."""
    cid = "gpu.vllm-sane"
    if blocked := _loaded(cid, run, checkpoint):
        return blocked
    logprobs = run.data.get("first_logprobs")
    if not logprobs:
        return skipped(
            cid,
            f"the probe returned no logprobs for {checkpoint}: "
            f"{run.data.get('logprobs_exception', 'none printed')}",
        )
    values = [float(v) for v in logprobs.values()]
    evidence: dict[str, Any] = dict(first_logprobs=logprobs, tokens=run.data.get("tokens"))
    if not all(math.isfinite(v) for v in values):
        return failed(
            cid,
            f"{checkpoint}: the first token's logprobs are not finite "
            f"({sorted(values)[:3]}...): the model computes NaN/inf",
            WRONG_FIX,
            **evidence,
        )
    vocab = run.data.get("vocab_size")
    spread = max(values) - min(values)
    uniform = -math.log(vocab) if isinstance(vocab, int) and vocab > 1 else None
    if (
        len(values) > 1
        and spread < FLAT_NATS
        and (uniform is None or abs(max(values) - uniform) < 10 * FLAT_NATS)
    ):
        at = f" = -log({vocab})" if uniform is not None else ""
        return failed(
            cid,
            f"{checkpoint}: the first token's distribution is flat: its top {len(values)} "
            f"logprobs are all {max(values):.4f}{at}, so every token is equally likely (what "
            "an lm_head computing zeros gives; greedy decoding then emits token "
            f"{run.data.get('tokens', ['?'])[0]} forever)",
            WRONG_FIX + "; check that lm_head is excluded (exclude_modules) when it is BF16",
            **evidence,
        )
    return passed(
        cid,
        f"{checkpoint}: the first token's top {len(values)} logprobs are finite and spread "
        f"({max(values):.3f} to {min(values):.3f})",
        **evidence,
    )


def perplexity_limit(vocab: int, exponent: float = PERPLEXITY_EXPONENT) -> float:
    """The largest perplexity ``gpu.vllm-perplexity`` passes: ``vocab ** exponent``."""
    return float(vocab) ** exponent


def vllm_perplexity(
    run: ProbeResult, checkpoint: str, exponent: float = PERPLEXITY_EXPONENT
) -> Finding:
    """gpu.vllm-perplexity: the perplexity of a fixed plain-English paragraph (the probe's
    ``PARAGRAPH``) is below ``vocab ** exponent``. A model that guesses uniformly scores
    ``vocab``; a broken FP8 export scores near or above it; see docs/gpu-runs.md for the
    trained tiny models and broken exports that set the exponent."""
    cid = "gpu.vllm-perplexity"
    para = _part(
        cid,
        run,
        checkpoint,
        "paragraph",
        "has no tokenizer files: no text to score",
        "scoring the paragraph failed",
        "check the checkpoint's tokenizer files (tokenizer.json, tokenizer_config.json)",
    )
    if isinstance(para, Finding):
        return para
    vocab = run.data.get("vocab_size")
    ppl = para.get("perplexity")
    evidence: dict[str, Any] = dict(paragraph=para, vocab_size=vocab, exponent=exponent)
    if para.get("nonfinite") or ppl is None:
        return failed(
            cid,
            f"{checkpoint}: the paragraph's token logprobs are not finite "
            f"({para.get('nonfinite', '?')} of {para.get('tokens', '?')})",
            WRONG_FIX,
            **evidence,
        )
    if not isinstance(vocab, int) or vocab < 2:
        return skipped(cid, f"{checkpoint}: config.json has no vocab_size to scale the limit")
    limit = perplexity_limit(vocab, exponent)
    evidence["limit"] = round(limit, 1)
    if ppl > limit:
        return failed(
            cid,
            f"{checkpoint}: perplexity {ppl:.1f} on a plain-English paragraph is above "
            f"{limit:.1f} (= vocab {vocab} ** {exponent}; guessing uniformly scores {vocab})",
            WRONG_FIX,
            **evidence,
        )
    return passed(
        cid,
        f"{checkpoint}: perplexity {ppl:.1f} on a plain-English paragraph "
        f"({para.get('scored')} tokens) <= {limit:.1f} (= vocab {vocab} ** {exponent})",
        **evidence,
    )


def vllm_known_answer(run: ProbeResult, checkpoint: str) -> Finding:
    """gpu.vllm-known-answer: from ``vllm_env_expect.json``'s prompt, greedy decoding
    gives its ``expected_token_ids`` (a model trained on a task with a known answer, such as
    our counting fixtures: right or wrong without any reference)."""
    cid = "gpu.vllm-known-answer"
    known = _part(
        cid,
        run,
        checkpoint,
        "known_answer",
        "has no vllm_env_expect.json: no known answer",
        "vllm_env_expect.json could not be used",
        'write vllm_env_expect.json as {"prompt_token_ids": [...], "expected_token_ids": [...]}',
    )
    if isinstance(known, Finding):
        return known
    want, got = list(known.get("expected", [])), list(known.get("got", []))
    right = sum(1 for a, b in zip(want, got, strict=False) if a == b)
    if got != want:
        return failed(
            cid,
            f"{checkpoint}: from {known.get('prompt')} it generated {got}, the known answer "
            f"is {want} ({right} of {len(want)} right)",
            WRONG_FIX,
            **known,
        )
    return passed(
        cid,
        f"{checkpoint}: from {known.get('prompt')} it generated the known answer ({len(want)} "
        "tokens)",
        **known,
    )


def vllm_kv_scales(
    run: ProbeResult, checkpoint: str, scales: Mapping[str, Sequence[float]]
) -> Finding:
    """gpu.kv-scales-loaded: the KV-cache scales vLLM's attention layers really run with (the
    probe reads them after the load). A layer of an FP8 KV cache at exactly 1.0 runs
    uncalibrated: the checkpoint's scales never reached it (F3.9, vLLM #54623) or it had none.
    It loads and generates, at an accuracy cost: a warning. ``scales`` are the checkpoint's
    float scale values (``read_scales``)."""
    cid = "gpu.kv-scales-loaded"
    if blocked := _loaded(cid, run, checkpoint):
        return blocked
    layers = run.data.get("kv_scales")
    if not isinstance(layers, dict):
        why = run.data.get("kv_scales_exception") or "the probe did not report them"
        return skipped(cid, f"{checkpoint}: the attention layers' KV scales were not read ({why})")
    dtype = str(run.data.get("kv_cache_dtype") or "")
    if not dtype.startswith("fp8"):
        return passed(
            cid, f"{checkpoint}: the KV cache is {dtype or 'not quantized'}: no scales apply"
        )
    ckpt_kv = {
        name: values
        for name, values in scales.items()
        if name.rpartition(".")[2] in ("k_scale", "v_scale", "kv_scale")
    }
    at_one = sorted(n for n, kv in layers.items() if list(kv) == [1.0, 1.0])
    if not at_one:
        shown = ", ".join(
            f"{n} k={kv[0]:.4g} v={kv[1]:.4g}" for n, kv in sorted(layers.items())[:3]
        )
        return passed(
            cid,
            f"{checkpoint}: {len(layers)} attention layer(s) run the {dtype} KV cache with "
            f"calibrated scales ({shown})",
            layers=len(layers),
        )
    calibrated = any(v != 1.0 for values in ckpt_kv.values() for v in values)
    cause = (
        f"the checkpoint holds {len(ckpt_kv)} KV scale tensor(s) that never reached them"
        if calibrated
        else "the checkpoint holds no KV scales for them"
    )
    return warning(
        cid,
        f"{checkpoint}: {len(at_one)} of {len(layers)} attention layer(s) run the {dtype} KV "
        f"cache at scale 1.0 (uncalibrated): {', '.join(at_one[:3])}; {cause}",
        "see modelopt.tensors-complete for the names vLLM could not place; rename the KV "
        "scales as ModelOpt writes them (<layer>.self_attn.k_proj.k_scale), or calibrate the "
        "KV cache and re-export, or keep a BF16 KV cache (kv_cache_quant_algo null)",
        layers_at_one=at_one[:50],
        checkpoint_kv_scales=len(ckpt_kv),
    )


# -- reference comparison --------------------------------------------------------------------
def pair_reference(index: int, count: int, references: Sequence[str]) -> tuple[str, Finding | None]:
    """``(reference, problem)`` for the ``index``-th of ``count`` checkpoints: one
    ``--reference-checkpoint`` serves all; several pair with the checkpoints by order."""
    if not references:
        return "", None
    if len(references) == 1:
        return references[0], None
    if len(references) == count:
        return references[index], None
    return "", error(
        "gpu.vllm-reference",
        f"{len(references)} --reference-checkpoint values for {count} --modelopt-checkpoint "
        "values: cannot tell which reference belongs to which checkpoint",
        "give one --reference-checkpoint (used for all) or one per --modelopt-checkpoint, "
        "in the same order",
    )


def vllm_reference(
    run: ProbeResult,
    ref_run: ProbeResult | None,
    checkpoint: str,
    reference: str,
    tolerance: float = LOGPROB_TOL,
) -> Finding:
    """gpu.vllm-reference: the quantized checkpoint's first greedy token is the BF16
    reference's, and its logprob is within ``tolerance`` nats of the reference's."""
    cid = "gpu.vllm-reference"
    if not reference or ref_run is None:
        return skipped(cid, "no --reference-checkpoint given: nothing to compare with")
    if _run_problem(cid, run, checkpoint) is not None:
        return skipped(
            cid, f"{checkpoint} generated nothing to compare: gpu.vllm-generate says why"
        )
    for r, what in ((run, checkpoint), (ref_run, reference)):
        problem = _run_problem(cid, r, what)
        if problem is not None:
            return problem
        if not r.data.get("first_logprobs"):
            return error(
                cid,
                f"the vLLM probe returned no logprobs for {what}: "
                f"{r.data.get('logprobs_exception', 'none printed')}",
                "this vLLM's SamplingParams(logprobs=N) result has another shape: update "
                "probes/vllm_generate.py for it",
            )
    q_tok, r_tok = run.data["tokens"][0], ref_run.data["tokens"][0]
    q_lp, r_lp = run.data["first_logprobs"], ref_run.data["first_logprobs"]
    evidence = dict(
        first_token=q_tok,
        reference_first_token=r_tok,
        logprobs=q_lp,
        reference_logprobs=r_lp,
        tolerance_nats=tolerance,
    )
    if q_tok != r_tok:
        return failed(
            cid,
            f"first greedy token of {checkpoint} is {q_tok}, the BF16 reference {reference} "
            f"gives {r_tok}",
            _reference_fix(),
            **evidence,
        )
    if str(q_tok) not in q_lp or str(r_tok) not in r_lp:
        return error(
            cid,
            "the generated first token is missing from its own logprobs",
            "update probes/vllm_generate.py for this vLLM's logprobs layout",
            **evidence,
        )
    diff = abs(float(q_lp[str(q_tok)]) - float(r_lp[str(r_tok)]))
    evidence["difference_nats"] = round(diff, 4)
    if not math.isfinite(diff) or diff > tolerance:
        return failed(
            cid,
            f"first-token logprob of {checkpoint} is {float(q_lp[str(q_tok)]):.4f}, the "
            f"reference's {float(r_lp[str(r_tok)]):.4f}: |difference| {diff:.4f} > "
            f"{tolerance} nats (--vllm-logprob-tolerance)",
            _reference_fix(),
            **evidence,
        )
    return passed(
        cid,
        f"{checkpoint} agrees with the BF16 reference {reference}: first token {q_tok}, "
        f"|logprob difference| {diff:.4f} <= {tolerance} nats",
        **evidence,
    )


def _reference_fix() -> str:
    return (
        "check that --reference-checkpoint is the BF16 original this checkpoint was exported "
        "from; if it is, the FP8 export or its scales are wrong (re-export with ModelOpt and "
        "calibration data) or the FP8 kernels are (run gpu.torch-fp8); raise "
        "--vllm-logprob-tolerance only for a model where a larger drift is expected"
    )


def _fix_for_load_error(exc: str, where: str = "", tensor: str | None = None) -> str:
    if "flashinfer" in exc:
        return _flashinfer_fix(exc, where)
    if "ModelOpt currently only supports" in exc:
        return (
            "re-export the checkpoint with a quant_algo this vLLM supports (FP8 for "
            "mtq.FP8_DEFAULT_CFG), or upgrade vLLM to one that lists it"
        )
    if "No module named 'vllm'" in exc:
        return "add vllm to the env's [pypi-dependencies] and run `pixi install`"
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


def _flashinfer_fix(exc: str, where: str) -> str:
    """A missing/broken FlashInfer, by the frame that needed it: VLLM_USE_FLASHINFER_SAMPLER
    only steers the sampler; for the Gated-DeltaNet prefill (Qwen3-Next/Qwen3.5, raised at
    ``.../mamba/gdn/qwen_gdn_linear_attn.py:174`` on the H100) it changes nothing."""
    if "gdn" in where or "gdn_prefill" in exc:
        return (
            "vLLM runs this model's Gated-DeltaNet prefill on FlashInfer on this GPU: add "
            "flashinfer-python at the version vLLM's own metadata pins (pixi.toml "
            "[pypi-dependencies] / pip), or run the Triton kernel: `--gdn-prefill-backend "
            'triton` (`LLM(..., gdn_prefill_backend="triton")`; --vllm-additional-config='
            '\'{"gdn_prefill_backend": "triton"}\' for this suite\'s probe); '
            "modelopt.gdn-prefill-backend names the line for this env"
        )
    if "sample" in where:
        return (
            "vLLM's FlashInfer sampler needs flashinfer-python: set VLLM_USE_FLASHINFER_SAMPLER=0 "
            "in [activation.env] or add flashinfer-python"
        )
    return (
        "add flashinfer-python at the version vLLM's own metadata pins (pixi.toml "
        "[pypi-dependencies] / pip); the frame above names the layer that needs it"
    )


# -- prediction against reality ----------------------------------------------------------------
# What each toolchain check's failure means for the load, where the finding does not say.
CHECK_EFFECT: dict[str, Effect] = {
    "modelopt.files-readable": "refuses",
    "modelopt.quant-algo-supported": "refuses",
    "modelopt.architecture-registered": "refuses",
    "modelopt.min-capability": "refuses",
    "modelopt.shapes-match-config": "refuses",
    "modelopt.scales-sane": "wrong",
}


def predicted_effect(findings: Iterable[Finding]) -> tuple[Effect, list[str], list[str]]:
    """``(effect, check ids, tensors)`` the toolchain findings predict for a load:
    refuses > wrong > fails (a failure whose effect is not known) > works."""
    bad = [f for f in findings if f.outcome in ("failed", "error")]
    if not bad:
        return "works", [], []
    effects: list[tuple[Effect, Finding]] = []
    for f in bad:
        effect = f.evidence.get("vllm_effect") or CHECK_EFFECT.get(f.id) or "fails"
        effects.append((effect, f))
    for wanted in ("refuses", "wrong", "fails"):
        chosen = [f for e, f in effects if e == wanted]
        if chosen:
            tensors = [str(t) for f in chosen for t in f.evidence.get("tensors", [])]
            return wanted, [f.id for f in chosen], tensors  # type: ignore[return-value]
    return "fails", [f.id for f in bad], []


def observed_effect(run: ProbeResult, judged: Iterable[Finding]) -> Effect:
    """What vLLM did: refused (no tokens), wrong (a correctness check failed), works; unknown
    when the run timed out or the probe broke."""
    if run.timed_out or run.problem:
        return "unknown"
    if not run.data.get("tokens"):
        return "refuses"
    if any(f.outcome == "failed" for f in judged):
        return "wrong"
    return "works"


def _missing_module(run: ProbeResult) -> str | None:
    """The module a load died importing (``No module named 'flashinfer'``), if that was it."""
    m = re.match(
        r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'",
        str(run.data.get("exception") or ""),
    )
    return m.group(1) if m else None


# Modules a toolchain rule judges, where the load imports them: a load dying there is that
# rule's business (a disagreement when it said "works"), not only the env's.
MODULE_RULES = {"flashinfer": ("modelopt.gdn-prefill-backend", "/gdn/")}


def _judged_module(module: str, run: ProbeResult, predicted: Sequence[Finding]) -> bool:
    rule = MODULE_RULES.get(module.split(".")[0])
    if rule is None:
        return False
    cid, frame = rule
    where = str((run.data.get("exception_frame") or {}).get("file", ""))
    return frame in where and any(f.id == cid and f.outcome != "skipped" for f in predicted)


def fused(tensor: str) -> str:
    """A tensor name as vLLM's loader holds it (``q_proj`` -> ``qkv_proj``)."""
    module, _, leaf = tensor.rpartition(".")
    parent, _, last = module.rpartition(".")
    if last in SHARD_OF:
        return f"{parent}.{SHARD_OF[last]}.{leaf}"
    return tensor


def prediction_agrees(
    predicted: Sequence[Finding], run: ProbeResult, judged: Sequence[Finding], checkpoint: str
) -> Finding:
    """gpu.prediction-agrees: the toolchain tier's verdict on this checkpoint against what
    the real load did, in outcome and, for a refused load, cause (the tensor). A
    disagreement is a warning: the gpu checks report the load itself; this one tells you
    (and us) that the static judgement was wrong."""
    cid = "gpu.prediction-agrees"
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint given: nothing to compare")
    expect, checks, tensors = predicted_effect(predicted)
    seen = observed_effect(run, judged)
    evidence: dict[str, Any] = dict(
        predicted=expect, predicted_by=checks, predicted_tensors=tensors[:20], observed=seen
    )
    if seen == "unknown":
        return skipped(cid, f"{checkpoint}: the load did not complete; nothing to compare")
    missing = _missing_module(run) if seen == "refuses" else None
    if missing and expect != "refuses" and not _judged_module(missing, run, predicted):
        # a package the env lacks (flashinfer for Qwen3.5's GDN prefill, measured on the
        # H100) says nothing of the checkpoint: not a disagreement of the checkpoint rules
        return skipped(
            cid,
            f"{checkpoint}: the load died on a module the env lacks ({missing}), not on the "
            "checkpoint: nothing to compare (gpu.vllm-generate says what to install)",
        )
    real_tensor = failing_tensor(run) if seen == "refuses" else None
    if real_tensor:
        evidence["observed_tensor"] = real_tensor
    said = {
        "works": "works",
        "refuses": "vLLM refuses it",
        "wrong": "vLLM loads it but computes wrong results",
        "fails": "it fails",
    }
    did = {
        "works": "loaded it and it works",
        "refuses": "refused it",
        "wrong": "loaded it and computed wrong results",
    }
    same = expect == seen or (expect == "fails" and seen in ("refuses", "wrong"))
    if not same:
        by = f" ({', '.join(checks)})" if checks else " (every toolchain check passed)"
        return warning(
            cid,
            f"{checkpoint}: the toolchain tier predicted {said[expect]!r}{by}, but vLLM "
            f"{did[seen]}",
            "trust the gpu tier's verdict for this checkpoint; the static rules were wrong here: "
            "report it to pytest-vllm-env with this finding's evidence",
            **evidence,
        )
    if seen == "refuses" and real_tensor and tensors:
        ours = {fused(t) for t in tensors} | {fused(t).rpartition(".")[0] for t in tensors}
        theirs = fused(real_tensor)
        if theirs not in ours and theirs.rpartition(".")[0] not in ours:
            return warning(
                cid,
                f"{checkpoint}: both say vLLM refuses it, but for different tensors: the "
                f"toolchain tier blamed {', '.join(tensors[:3])}, vLLM died on {real_tensor}",
                "fix both; report the disagreement to pytest-vllm-env with this finding's evidence",
                **evidence,
            )
    cause = f" (tensor {real_tensor})" if real_tensor and seen == "refuses" else ""
    kv = kv_agreement(predicted, run) if seen != "refuses" else None
    if kv is not None:
        evidence.update(kv.evidence)
        if not kv.same:
            return warning(
                cid,
                f"{checkpoint}: the load agrees ({said[expect]!r}), but not its KV-cache "
                f"scales: {kv.text}",
                "trust gpu.kv-scales-loaded for this checkpoint (it reads what the layers run "
                "with); the KV-naming rules were wrong here: report it to pytest-vllm-env with "
                "this finding's evidence",
                **evidence,
            )
        cause += f"; {kv.text}"
    return passed(
        cid,
        f"{checkpoint}: the toolchain tier predicted {said[expect]!r} and vLLM agreed{cause}",
        **evidence,
    )


_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def _layer_key(name: str) -> str:
    """One attention layer's key on both sides: the checkpoint's block
    (``model.language_model.layers.3.self_attn``) and vLLM's module
    (``language_model.model.layers.3.self_attn.attn``) are named apart by each model class's
    mapper, but agree on the layer index."""
    m = _LAYER_INDEX.search(name)
    if not m:
        return name.removesuffix(".attn")
    # a draft (MTP) stack counts its layers from 0 again
    return ("mtp " if re.search(r"(?:^|\.)mtp\.", name) else "") + f"layer {m.group(1)}"


@dataclass(frozen=True)
class KvAgreement:
    """The KV-scale prediction (modelopt.tensors-complete) against the scales the real
    attention layers run with (the probe's ``kv_scales``)."""

    same: bool
    text: str
    evidence: dict[str, Any]


def kv_agreement(predicted: Sequence[Finding], run: ProbeResult) -> KvAgreement | None:
    """Which attention layers run an FP8 KV cache at scale 1.0: predicted from the
    checkpoint's names (``kv_uncalibrated``) and read from the loaded model. None when
    either side is silent: no FP8 KV cache, no KV prediction, the probe could not read them.
    Layers are matched by index (``_layer_key``); excluded blocks are left out."""
    layers = run.data.get("kv_scales")
    if not isinstance(layers, dict) or not str(run.data.get("kv_cache_dtype", "")).startswith(
        "fp8"
    ):
        return None
    static = next(
        (f for f in predicted if f.id == "modelopt.tensors-complete" and "kv_blocks" in f.evidence),
        None,
    )
    if static is None:
        return None
    skip = {_layer_key(b) for b in static.evidence.get("kv_unjudged", [])}
    built = {_layer_key(n) for n in layers}  # layers vLLM did not build (an MTP draft) can't count
    ours = {_layer_key(b) for b in static.evidence.get("kv_uncalibrated", [])} & built - skip
    theirs = {_layer_key(n) for n, kv in layers.items() if list(kv) == [1.0, 1.0]} - skip
    evidence = dict(predicted_kv_at_one=sorted(ours)[:50], observed_kv_at_one=sorted(theirs)[:50])
    judged = len(layers)
    if ours == theirs:
        text = (
            f"both say {len(ours)} of {judged} attention layer(s) run at KV scale 1.0"
            if ours
            else f"both say all {judged} attention layer(s) get the checkpoint's KV scales"
        )
        return KvAgreement(True, text, evidence)
    only_ours, only_theirs = sorted(ours - theirs), sorted(theirs - ours)
    parts = []
    if only_theirs:
        parts.append(
            f"vLLM runs {', '.join(only_theirs[:5])} at scale 1.0, which the toolchain tier "
            "predicted would get the checkpoint's scales"
        )
    if only_ours:
        parts.append(
            f"the toolchain tier predicted {', '.join(only_ours[:5])} at scale 1.0, but vLLM "
            "runs them with calibrated scales"
        )
    return KvAgreement(False, "; ".join(parts), evidence)
