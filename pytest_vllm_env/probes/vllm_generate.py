"""Run by the target env's Python: load one checkpoint in vLLM and generate greedy tokens.

Usage: python vllm_generate.py MODEL_DIR [QUANTIZATION]. Prints one JSON line, flushed, as
the last thing it does on purpose: whatever vLLM prints after it is shutdown noise.
One load per process: with VLLM_ENABLE_V1_MULTIPROCESSING=0 the GPU memory of a first
engine is not returned, so a second LLM() in the same process fails.
Measures the load (LLM() construction) and the generation separately: the first FP8 load
JIT-compiles kernels and would swamp a tokens/s figure.
"""

import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
PROMPT = [1, 15, 27, 99, 3]  # token ids: no tokenizer files needed
MAX_TOKENS = 16
out = {"model": sys.argv[1], "quantization": None, "tokens": None}
start = time.monotonic()
try:
    import vllm
    from vllm import LLM, SamplingParams

    out["vllm"] = vllm.__version__
    quant = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    extra = {}
    try:
        with open(os.path.join(sys.argv[1], "config.json")) as fh:
            multimodal = "vision_config" in json.load(fh)
    except (OSError, ValueError):
        multimodal = False
    if multimodal:
        # A multimodal model's processor needs the tokenizer we skip: prompt with token ids
        # only (the vision tower is still built). Seen on the H100 with a tiny Qwen2.5-VL:
        # "'NoneType' object has no attribute 'convert_tokens_to_ids'".
        extra["limit_mm_per_prompt"] = {"image": 0, "video": 0}
    llm = LLM(
        model=sys.argv[1],
        quantization=quant,
        skip_tokenizer_init=True,
        enforce_eager=True,
        gpu_memory_utilization=0.25,
        max_model_len=256,
        **extra,
    )
    out["load_seconds"] = round(time.monotonic() - start, 2)
    cfg = llm.llm_engine.vllm_config.model_config
    qc = getattr(llm.llm_engine.vllm_config, "quant_config", None)
    out["quantization"] = getattr(cfg, "quantization", None)
    out["quant_config"] = type(qc).__name__ if qc is not None else None
    kw = dict(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True, detokenize=False)
    t0 = time.monotonic()
    try:
        res = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(**kw, logprobs=5))
    except Exception as exc:  # logprobs must not cost gpu.vllm-generate its tokens
        out["logprobs_exception"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        t0 = time.monotonic()
        res = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(**kw))
    gen = time.monotonic() - t0
    completion = res[0].outputs[0]
    out["tokens"] = list(completion.token_ids)
    out["generate_seconds"] = round(gen, 4)
    out["tokens_per_s"] = round(len(out["tokens"]) / gen, 1) if gen > 0 else None
    try:  # the first position's top-5: {token id: logprob}, for the reference comparison
        first = completion.logprobs[0]
        out["first_logprobs"] = {str(t): float(lp.logprob) for t, lp in first.items()}
    except Exception as exc:
        out["logprobs_exception"] = f"{type(exc).__name__}: {str(exc)[:300]}"
except Exception as exc:
    out["exception"] = f"{type(exc).__name__}: {str(exc)[:800]}"
out["seconds"] = round(time.monotonic() - start, 1)
print(json.dumps(out), flush=True)
