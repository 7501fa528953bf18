"""What a real vLLM load computed, and against its reference (``probes/vllm_generate.py``'s
output for the load ``gpu.vllm-generate`` judged):

- ``gpu.vllm-sane``: are the first token's logprobs finite and not flat? A flat top-20 at
  -log(vocab) is what an lm_head computing zeros gives (seen on the H100: token 0 forever).
- ``gpu.vllm-perplexity``: with a tokenizer, the perplexity of a fixed plain-English
  paragraph, against a limit calibrated on trained tiny models and their broken exports.
- ``gpu.vllm-known-answer``: a prompt with a known continuation
  (``vllm_env_expect.json`` beside the weights).
- ``gpu.kv-scales-loaded``: the KV-cache scales the attention layers really run with.
- ``gpu.vllm-reference``: the BF16 original agrees (``--reference-checkpoint``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vllm_env import defaults
from pytest_vllm_env.checks.gpu_vllm_load import run_problem
from pytest_vllm_env.facts.gpu_probe import ProbeResult
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning

# the gpu tier judges --modelopt-checkpoint and --vllm-checkpoint (any format) alike
WRONG_FIX = (
    "the checkpoint loads but its numbers are wrong: run `pytest --vllm-conformance -m "
    "toolchain` with the same --modelopt-checkpoint=DIR or --vllm-checkpoint=DIR "
    "(modelopt.tensors-complete / quant.tensors-complete and the scales-sane checks name the "
    "tensors), then re-export it with the tool that quantized it (NVIDIA ModelOpt, "
    "llm-compressor) and real calibration data"
)
# A flat first-token distribution: every top logprob within this of the others and of
# -log(vocab). Measured on the H100: an lm_head built FP8 without scales gives exactly that.
FLAT_NATS = 0.01
# Perplexity limit as a power of the vocabulary size (uniform guessing is vocab**1). See
# docs/gpu-runs.md (calibration round) for the measurements that set it.
PERPLEXITY_EXPONENT = defaults.PERPLEXITY_EXPONENT
LOGPROB_TOL = defaults.LOGPROB_TOL  # nats: FP8 vs BF16 first-token logprob (a setting)


def _loaded(cid: str, run: ProbeResult, checkpoint: str) -> Finding | None:
    """A skip when there is nothing to judge (gpu.vllm-generate reports why)."""
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint or --vllm-checkpoint given: nothing to load")
    if run_problem(cid, run, checkpoint) is not None:
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
        f"{len(references)} --reference-checkpoint values for {count} checkpoints "
        "(--modelopt-checkpoint, then --vllm-checkpoint): cannot tell which reference belongs "
        "to which checkpoint",
        "give one --reference-checkpoint (used for all) or one per checkpoint, in the same "
        "order (each --modelopt-checkpoint, then each --vllm-checkpoint)",
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
    if run_problem(cid, run, checkpoint) is not None:
        return skipped(
            cid, f"{checkpoint} generated nothing to compare: gpu.vllm-generate says why"
        )
    for r, what in ((run, checkpoint), (ref_run, reference)):
        problem = run_problem(cid, r, what)
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
