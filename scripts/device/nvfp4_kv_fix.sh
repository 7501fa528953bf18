#!/usr/bin/env bash
# checkpoint.attention-backend's fix for an NVFP4-KV ModelOpt export on Hopper without
# FlashInfer (vLLM 0.26.0 refused both at model construction: "No valid attention backend
# found ... kv_cache_dtype=nvfp4"): the rule says `--kv-cache-dtype fp8` (FLASH_ATTN with FA3
# takes an fp8_e4m3 cache on sm 9.x) and `--kv-cache-dtype bfloat16` (every backend) each give a
# backend. Settles whether each then LOADS and answers right: the checkpoint's NVFP4 k/v scales
# under an FP8 cache, and ignored under a BF16 one. Each load in its own process, greedy, the
# counting prompt of vllm_env_expect.json; one JSON line per load.
#   OUT=/somewhere bash scripts/device/nvfp4_kv_fix.sh   (after the vLLM stage)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VLLM_ENABLE_V1_MULTIPROCESSING=0
export VLLM_USE_FLASHINFER_SAMPLER=0
PY=${PY:-/opt/torch/.venv/bin/python}
mkdir -p $OUT/kvfix
one() {  # name kv: one load in its own process (three at a time, 0.2 of the GPU each)
    local name=$1 kv=$2 M=$PWD/fixtures/modelopt_export/algos/$1
    timeout 300 $PY - "$M" "$kv" > $OUT/kvfix/$name.$kv.out 2> $OUT/kvfix/$name.$kv.err <<'PY'
import json, sys
m, kv = sys.argv[1], sys.argv[2]
expect = json.load(open(f"{m}/vllm_env_expect.json"))
rec = {"model": m.rsplit("/", 1)[1], "kv_cache_dtype": kv}
try:
    from vllm import LLM, SamplingParams
    llm = LLM(model=m, quantization="modelopt", skip_tokenizer_init=True, enforce_eager=True,
              gpu_memory_utilization=0.2, max_model_len=256, kv_cache_dtype=kv)
    out = llm.generate([{"prompt_token_ids": expect["prompt_token_ids"]}],
                       SamplingParams(temperature=0, max_tokens=10, detokenize=False))
    got = list(out[0].outputs[0].token_ids)
    rec.update(outcome="works" if got == expect["expected_token_ids"] else "wrong", got=got,
               expected=expect["expected_token_ids"])
except Exception as exc:  # the refusal is the datum
    rec.update(outcome="refuses", exception=f"{type(exc).__name__}: {str(exc)[:400]}")
print(json.dumps(rec))
PY
    echo "== $name $kv rc=$?"; tail -1 $OUT/kvfix/$name.$kv.out
    grep -h "attention backend" $OUT/kvfix/$name.$kv.out $OUT/kvfix/$name.$kv.err | sort -u | head -2
}
export -f one; export PY OUT
for name in fp8-default+nvfp4-kv nvfp4-default+nvfp4-kv; do
  for kv in auto fp8 bfloat16; do echo "$name $kv"; done
done | xargs -P 3 -L1 bash -c 'one "$0" "$1"'
