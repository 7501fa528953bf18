"""Run by the target env's Python: load one checkpoint in vLLM and generate greedy tokens.

Usage: python vllm_generate.py MODEL_DIR [QUANTIZATION]. Prints one JSON line.
One load per process: with VLLM_ENABLE_V1_MULTIPROCESSING=0 the GPU memory of a first
engine is not returned, so a second LLM() in the same process fails.
"""

import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
out = {"model": sys.argv[1], "quantization": None, "tokens": None}
start = time.monotonic()
try:
    import vllm
    from vllm import LLM, SamplingParams

    out["vllm"] = vllm.__version__
    quant = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    llm = LLM(
        model=sys.argv[1],
        quantization=quant,
        skip_tokenizer_init=True,
        enforce_eager=True,
        gpu_memory_utilization=0.25,
        max_model_len=256,
    )
    cfg = llm.llm_engine.vllm_config.model_config
    qc = getattr(llm.llm_engine.vllm_config, "quant_config", None)
    out["quantization"] = getattr(cfg, "quantization", None)
    out["quant_config"] = type(qc).__name__ if qc is not None else None
    params = SamplingParams(temperature=0, max_tokens=8, detokenize=False)
    res = llm.generate([{"prompt_token_ids": [1, 15, 27, 99, 3]}], params)
    out["tokens"] = list(res[0].outputs[0].token_ids)
except Exception as exc:
    out["exception"] = f"{type(exc).__name__}: {str(exc)[:800]}"
out["seconds"] = round(time.monotonic() - start, 1)
print(json.dumps(out), flush=True)
