"""Run by the target env's Python: load one checkpoint in vLLM, generate, and measure.

Usage: python vllm_generate.py MODEL_DIR [QUANTIZATION]. Prints one JSON line, flushed, as
the last thing it does on purpose: whatever vLLM prints after it is shutdown noise.

One load per process (with VLLM_ENABLE_V1_MULTIPROCESSING=0 the GPU memory of a first engine
is not returned, so a second LLM() in the same process fails). In that one load it:
- generates greedily twice from the same token ids (determinism within the process) with
  the first position's top-20 logprobs (finite? flat? what a broken lm_head gives);
- when the checkpoint has a tokenizer, scores a fixed plain-English paragraph with
  ``prompt_logprobs`` (perplexity, no reference needed);
- when MODEL_DIR holds ``vllm_env_expect.json`` (``{"prompt_token_ids": [...],
  "expected_token_ids": [...]}``), generates from that prompt: a known answer;
- reads the KV-cache scales each attention layer runs with (``kv_scales``);
- on an exception, records the frame that raised it (file:line and its source line) and the
  tensor the loader was handling when the traceback shows one.
Settings come from the environment: VLLM_ENV_PROBE_GPU_UTIL (default 0.25),
VLLM_ENV_PROBE_KV_BYTES (a fixed KV budget: no memory profiling, for loads sharing a GPU),
VLLM_ENV_PROBE_ADDITIONAL_CONFIG (a JSON object passed as ``LLM(additional_config=...)``, e.g.
``{"gdn_prefill_backend": "triton"}``: the suite sets it from --vllm-additional-config),
VLLM_ENV_PROBE_ENGINE_ARGS (a JSON object of ``LLM(...)`` keywords from the user's launch:
``kv_cache_dtype``, ``moe_backend``; the suite sets it from --vllm-serve-args).
"""

import json
import linecache
import math
import os
import sys
import time
import traceback

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
PROMPT = [1, 15, 27, 99, 3]  # token ids: no tokenizer files needed (taken modulo the vocab)
MAX_TOKENS = 16
TOP = 20
# A fixed plain-English paragraph (written for this probe; no model has seen it verbatim).
PARAGRAPH = (
    "The old harbour town wakes up slowly in winter. Before sunrise the fishing boats leave "
    "the quay, and the gulls follow them out past the lighthouse. By eight o'clock the "
    "bakery on the corner has opened its doors, and the smell of fresh bread drifts down "
    "the narrow street. Children walk to school in pairs, talking about the storm that is "
    "expected in the afternoon. At the market, farmers from the valley sell apples, cheese "
    "and eggs, and the people who live here buy what they need for the week. When the wind "
    "rises, the shopkeepers bring their signs inside and close the shutters, and the town "
    "waits quietly for the rain."
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
LOADER_NAMES = ("weight_qualname", "name", "weight_name", "param_name")
out = {"model": sys.argv[1], "quantization": None, "tokens": None}
start = time.monotonic()


def _frame_of(exc):
    """(file, line, code) of the innermost frame, and the tensor a loader frame held."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    if not frames:
        return None, None
    last = frames[-1]
    code = last.tb_frame.f_code
    where = {
        "file": code.co_filename,
        "line": last.tb_lineno,
        "function": code.co_name,
        "code": linecache.getline(code.co_filename, last.tb_lineno).strip(),
    }
    tensor = None
    for tb in reversed(frames):  # the innermost loader frame naming a checkpoint tensor
        local = tb.tb_frame.f_locals
        for key in LOADER_NAMES:
            value = local.get(key)
            if isinstance(value, str) and value.count(".") >= 1 and value[:1].isalpha():
                tensor = value
                break
        if tensor:
            break
    return where, tensor


def _kv_scales(model):
    """The KV-cache scales every attention layer runs with: {module name: [k, v]} (vLLM keeps
    them as ``_k_scale_float``/``_v_scale_float`` after loading). 1.0 where a checkpoint's
    scale never reached the layer (F3.9)."""
    found = {}
    for name, module in model.named_modules():
        k = getattr(module, "_k_scale_float", None)
        v = getattr(module, "_v_scale_float", None)
        if isinstance(k, (int, float)) and isinstance(v, (int, float)):
            found[name] = [float(k), float(v)]
    return found


def _top(logprobs_at):
    return {str(t): float(lp.logprob) for t, lp in logprobs_at.items()}


def _perplexity(llm, sampling_params_cls):
    """Mean negative log-likelihood of PARAGRAPH's tokens (after the first), from
    prompt_logprobs (the chosen token is always among them)."""
    tokenizer = llm.get_tokenizer()
    ids = list(tokenizer.encode(PARAGRAPH))[: max_len - 8]  # within max_model_len
    params = sampling_params_cls(max_tokens=1, temperature=0, prompt_logprobs=0)
    res = llm.generate([{"prompt_token_ids": ids}], params)
    per_pos = res[0].prompt_logprobs or []
    nll, n, nonfinite = 0.0, 0, 0
    for i, entry in enumerate(per_pos):
        if i == 0 or not entry:
            continue
        lp = entry.get(ids[i])
        value = float(lp.logprob) if lp is not None else float("nan")
        if not math.isfinite(value):
            nonfinite += 1
            continue
        nll -= value
        n += 1
    mean = nll / n if n else float("nan")
    return {
        "tokens": len(ids),
        "scored": n,
        "nonfinite": nonfinite,
        "mean_nll": round(mean, 4) if math.isfinite(mean) else None,
        "perplexity": round(math.exp(mean), 3) if n and mean < 700 else None,
    }


try:
    import vllm
    from vllm import LLM, SamplingParams

    out["vllm"] = vllm.__version__
    quant = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    model_dir = sys.argv[1]
    try:
        with open(os.path.join(model_dir, "config.json")) as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        config = {}
    has_tokenizer = any(os.path.isfile(os.path.join(model_dir, f)) for f in TOKENIZER_FILES)
    extra = {}
    if "vision_config" in config:
        # Prompt with token ids / text only: no image is needed to judge the weights, and
        # without a tokenizer the processor cannot be built at all (seen on the H100 with a
        # tiny Qwen2.5-VL: "'NoneType' object has no attribute 'convert_tokens_to_ids'").
        extra["limit_mm_per_prompt"] = {"image": 0, "video": 0}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    vocab = text.get("vocab_size") or config.get("vocab_size")
    if isinstance(vocab, int) and vocab > 0:
        # ids beyond a small vocab trip a device-side assert in the embedding (seen on the H100
        # with a 62-token counting model): our prompt, not the checkpoint, would be to blame
        PROMPT = [t % vocab for t in PROMPT]
    # the model's own limit when it is shorter (a tiny model with 256 positions)
    positions = text.get("max_position_embeddings") or config.get("max_position_embeddings")
    max_len = min(512, positions) if isinstance(positions, int) and positions > 16 else 512
    kv_bytes = os.environ.get("VLLM_ENV_PROBE_KV_BYTES")
    if kv_bytes:
        extra["kv_cache_memory_bytes"] = int(kv_bytes)
    engine = os.environ.get("VLLM_ENV_PROBE_ENGINE_ARGS")
    if engine:  # the user's launch: --kv-cache-dtype, --moe-backend
        extra.update(json.loads(engine))
        out["engine_args"] = json.loads(engine)
    additional = os.environ.get("VLLM_ENV_PROBE_ADDITIONAL_CONFIG")
    if additional:
        extra["additional_config"] = json.loads(additional)
        out["additional_config"] = extra["additional_config"]
    llm = LLM(
        model=model_dir,
        quantization=quant,
        skip_tokenizer_init=not has_tokenizer,
        enforce_eager=True,
        gpu_memory_utilization=float(os.environ.get("VLLM_ENV_PROBE_GPU_UTIL", "0.25")),
        max_model_len=max_len,
        **extra,
    )
    out["load_seconds"] = round(time.monotonic() - start, 2)
    vcfg = llm.llm_engine.vllm_config
    qc = getattr(vcfg, "quant_config", None)
    out["quantization"] = getattr(vcfg.model_config, "quantization", None)
    out["quant_config"] = type(qc).__name__ if qc is not None else None
    out["kv_cache_dtype"] = str(getattr(getattr(vcfg, "cache_config", None), "cache_dtype", ""))
    out["vocab_size"] = vocab
    try:  # one engine in this process (in-process V1): one answer
        out["kv_scales"] = llm.apply_model(_kv_scales)[0]
    except Exception as exc:
        out["kv_scales_exception"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    kw = dict(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True, detokenize=False)
    t0 = time.monotonic()
    try:
        res = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(**kw, logprobs=TOP))
    except Exception as exc:  # logprobs must not cost gpu.vllm-generate its tokens
        out["logprobs_exception"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        t0 = time.monotonic()
        res = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(**kw))
    gen = time.monotonic() - t0
    completion = res[0].outputs[0]
    out["tokens"] = list(completion.token_ids)
    out["generate_seconds"] = round(gen, 4)
    out["tokens_per_s"] = round(len(out["tokens"]) / gen, 1) if gen > 0 else None
    try:  # the first position's top-20: {token id: logprob}
        out["first_logprobs"] = _top(completion.logprobs[0])
    except Exception as exc:
        out["logprobs_exception"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    again = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(**kw))
    out["tokens_again"] = list(again[0].outputs[0].token_ids)
    expect_file = os.path.join(model_dir, "vllm_env_expect.json")
    if os.path.isfile(expect_file):
        try:
            with open(expect_file) as fh:
                expect = json.load(fh)
            prompt = [int(t) for t in expect["prompt_token_ids"]]
            want = [int(t) for t in expect["expected_token_ids"]]
            got = llm.generate(
                [{"prompt_token_ids": prompt}],
                SamplingParams(temperature=0, max_tokens=len(want), ignore_eos=True),
            )
            out["known_answer"] = {
                "prompt": prompt,
                "expected": want,
                "got": list(got[0].outputs[0].token_ids),
            }
        except Exception as exc:
            out["known_answer"] = {"exception": f"{type(exc).__name__}: {str(exc)[:300]}"}
    if has_tokenizer:
        try:
            out["paragraph"] = _perplexity(llm, SamplingParams)
        except Exception as exc:
            out["paragraph"] = {"exception": f"{type(exc).__name__}: {str(exc)[:300]}"}
except Exception as exc:
    out["exception"] = f"{type(exc).__name__}: {str(exc)[:800]}"
    try:
        where, tensor = _frame_of(exc)
        out["exception_frame"] = where
        out["exception_tensor"] = tensor
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        out["traceback_tail"] = "".join(lines[-6:])[-2000:]
    except Exception:  # the report must never be lost to its own decoration
        pass
out["seconds"] = round(time.monotonic() - start, 1)
print(json.dumps(out), flush=True)
# The result is out: skip vLLM's engine teardown at interpreter exit (seconds of a gpu tier
# run, measured on the H100, and the source of "Engine core ... died unexpectedly" noise).
# VLLM_ENV_PROBE_CLEAN_EXIT=1 keeps it, to see that noise for real.
if os.environ.get("VLLM_ENV_PROBE_CLEAN_EXIT") != "1":
    sys.stderr.flush()
    os._exit(0)
