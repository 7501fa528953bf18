"""Device experiment: load a tiny Qwen2.5-VL checkpoint in vLLM and generate, text-only or
with one image. Usage: python vl_generate.py MODEL QUANT(or '') MODE(text|image). Prints JSON."""

import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
model, quant, mode = sys.argv[1], sys.argv[2] or None, sys.argv[3]
out = {"model": model, "mode": mode}
t0 = time.monotonic()
try:
    from vllm import LLM, SamplingParams

    kw = dict(
        model=model,
        quantization=quant,
        enforce_eager=True,
        gpu_memory_utilization=0.25,
        max_model_len=512,
    )
    if mode == "text":
        kw.update(skip_tokenizer_init=True, limit_mm_per_prompt={"image": 0, "video": 0})
    else:
        kw.update(limit_mm_per_prompt={"image": 1, "video": 0})
    llm = LLM(**kw)
    qc = getattr(llm.llm_engine.vllm_config, "quant_config", None)
    out["quant_config"] = type(qc).__name__ if qc is not None else None
    params = SamplingParams(temperature=0, max_tokens=8, detokenize=False, ignore_eos=True)
    if mode == "text":
        prompt = {"prompt_token_ids": [1, 15, 27, 99, 3]}
    else:
        import numpy as np
        from PIL import Image

        img = Image.fromarray((np.random.RandomState(0).rand(56, 56, 3) * 255).astype("uint8"))
        prompt = {
            "prompt": "<|im_start|> t10 <|vision_start|><|image_pad|><|vision_end|> t11 t12",
            "multi_modal_data": {"image": img},
        }
    res = llm.generate([prompt], params)
    out["tokens"] = list(res[0].outputs[0].token_ids)
    out["prompt_len"] = len(res[0].prompt_token_ids or [])
except Exception as exc:
    import traceback

    out["exception"] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    out["where"] = traceback.format_exc()[-1500:]
out["seconds"] = round(time.monotonic() - t0, 1)
print(json.dumps(out), flush=True)
