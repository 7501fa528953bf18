#!/usr/bin/env bash
# Issue 21, driver.ptx-jit's FA2 role rule: which FlashAttention library vLLM 0.26.0 runs on this
# Hopper GPU (sm 9.0) by default, with --attention-config.flash_attn_version=2 (as
# LLM(attention_config={"flash_attn_version": 2})), and with VLLM_FLASH_ATTN_VERSION=2 (which
# 0.26.0's get_flash_attn_version no longer reads). Each load runs in its own process with the
# engine in-process; after one greedy generation the process lists the vllm_flash_attn
# libraries mapped into it (/proc/self/maps) and the FA version vLLM's attention layers hold.
# Settles: default -> _vllm_fa3_C only used (FA2's PTX idle on Hopper, as the rule says);
# forced 2 -> FA2 (its kernels launch on sm_90: its PTX/SASS coverage matters); the variable
# -> FA3 still (the suite says "not read by this vLLM").
#   OUT=/somewhere bash scripts/device/fa_version.sh   (after the vLLM stage)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VLLM_ENABLE_V1_MULTIPROCESSING=0
export VLLM_USE_FLASHINFER_SAMPLER=0
PY=${PY:-/opt/torch/.venv/bin/python}
M=$PWD/fixtures/modelopt_export/llama-fp8
mkdir -p $OUT/fa
load() {  # tag, attention_config JSON ("" for none), then env assignments
  local tag=$1 ac=$2; shift 2
  env "$@" FA_AC="$ac" timeout 300 $PY - "$M" > $OUT/fa/$tag.out 2> $OUT/fa/$tag.err <<'PY'
import json, os, sys
from vllm import LLM, SamplingParams
ac = os.environ.get("FA_AC") or None
kw = {"attention_config": json.loads(ac)} if ac else {}
llm = LLM(model=sys.argv[1], quantization="modelopt", skip_tokenizer_init=True,
          enforce_eager=True, gpu_memory_utilization=0.25, max_model_len=256, **kw)
out = llm.generate([{"prompt_token_ids": [1, 2, 3, 4]}],
                   SamplingParams(temperature=0, max_tokens=4, detokenize=False))
maps = {line.split()[-1] for line in open("/proc/self/maps") if "vllm_flash_attn" in line}
versions = set()
try:  # the FA version each attention layer's impl holds (FlashAttentionImpl)
    runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner
    for layer in runner.model.modules():
        impl = getattr(layer, "impl", None)
        if impl is not None and hasattr(impl, "vllm_flash_attn_version"):
            versions.add(impl.vllm_flash_attn_version)
except Exception as exc:  # the path differs between releases: the maps still say it
    versions.add(f"unknown: {type(exc).__name__}")
print(json.dumps({"maps": sorted(os.path.basename(m) for m in maps),
                  "impl_fa_versions": sorted(map(str, versions)),
                  "tokens": out[0].outputs[0].token_ids}))
PY
  echo "== $tag rc=$?"; tail -1 $OUT/fa/$tag.out; grep -h -i "flash.attn\|FA version" $OUT/fa/$tag.err | sort -u | head -5
}
load default ""
load forced2 '{"flash_attn_version": 2}'
load envvar2 "" VLLM_FLASH_ATTN_VERSION=2
