#!/usr/bin/env bash
# Issue 22: what only a GPU settles about the loader mutations (fixtures/loader_variants.py).
# The CPU runs of the REAL vLLM 0.26.0 / 0.33.0 loaders (scripts/loader_truth_cpu.py,
# fixtures/loader_truth/outcomes.json) settle every refusal, every parameter left unset, every
# dtype cast and which copy of a tensor loads; they cannot say what the model then computes.
# This loads each variant that loads on the CPU with real vLLM 0.26.0 on the H100 and
# generates, through the suite's gpu tier, next to the toolchain's checkpoint.* verdicts:
#   part a: the trained English export's variants (tokenizer: perplexity, no reference needed)
#   part b: the tied tiny Llama's variants, --reference-checkpoint=good-tied (first-token
#           logprobs against the unmodified export: does vLLM use the embedding or the
#           checkpoint's own head?)
#   part c: quantization='fp8': the English export (vLLM replaces it by modelopt) and the BF16
#           Qwen3 (online FP8 quantization: the CPU cannot run it)
# Run after the vLLM stage of ../shared/gpu/README.md (three calls), in the third or right after:
#   OUT=/somewhere PARTS="a b c" bash scripts/device/loader_truth.sh
# Writes under $OUT: loader_truth_<part>.json (the suite's reports), loader_truth_<part>.log,
# loader_truth_gpu.json (per variant: what vLLM did on the GPU, what the toolchain predicted).
# Budget: about 2 minutes a part with 4 loads sharing the GPU (--vllm-parallel-loads=4).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
L=/tmp/loadertruth; rm -rf $L; mkdir -p $L
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
$PY -m fixtures.loader_variants $L > /dev/null && cp $L/variants.json $OUT/
ENGLISH="good index-tensor-unlisted index-lists-missing-tensor duplicate-identical duplicate-stale-first
  duplicate-stale-last stray-file-not-in-index untied-set-tied untied-no-head norm-f32 norm-f16 embed-f32
  fp8-weight-f32 weight-scale-bf16 fp8-weight-u8 extra-bias rotary-inv-freq norm-missing final-norm-missing
  embed-missing q-weight-missing hf-disagrees-algo hf-disagrees-exclude config-wrong-hf-right hf-only-lowercase pbwo"
TIED="tied-with-head tied-head-differs tied-set-untied tied-head-input-scale"
session() {  # part, extra args, variants...
  local part=$1 extra=$2; shift 2
  local a=(); for v in "$@"; do a+=("--modelopt-checkpoint=$L/$v"); done
  local t0=$(date +%s)
  (mkdir -p /tmp/run && cd /tmp/run && timeout ${PYTEST_TIMEOUT:-540} $PY -m pytest --noconftest -p pytest_vllm_env.plugin \
    -p no:cacheprovider --vllm-conformance -m "gpu or toolchain" -k "test_checkpoint.py or test_gpu.py" \
    --vllm-parallel-loads=4 -rA --vllm-env=$E --cuda-arch=9.0 --vllm-probe-timeout=300 $extra "${a[@]}" \
    --vllm-env-report=$OUT/loader_truth_$part.json > $OUT/loader_truth_$part.log 2>&1)
  echo "part $part: pytest rc=$? $(( $(date +%s) - t0 )) s: $(tail -1 $OUT/loader_truth_$part.log)"
}
for part in ${PARTS:-a b c}; do
  case $part in
    a) session a "" $ENGLISH ;;
    b) session b "--reference-checkpoint=$L/good-tied" $TIED ;;
    c) session c "--vllm-quantization=fp8" good qwen3-good ;;
  esac
done
$PY - $OUT <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
rows = {}
for path in sorted(glob.glob(os.path.join(out, "loader_truth_?.json"))):
    part = path[-6]
    for c in json.load(open(path))["checks"]:
        m = re.search(r"\[([^\]]+)\]$", c.get("test", ""))
        subject = m.group(1) if m else c.get("test", "")
        row = rows.setdefault(f"{part}:{subject}", {"part": part})
        ev = c.get("evidence", {})
        if c["id"].startswith(("checkpoint.", "launch.")):
            if c["outcome"] in ("failed", "error"):
                row.setdefault("predicted", []).append(f"{c['id']}: {ev.get('vllm_effect')}")
        elif c["id"].startswith("gpu."):
            row[c["id"]] = {"outcome": c["outcome"], "summary": c["summary"][-300:],
                            **{k: ev[k] for k in ("perplexity", "max_logprob_diff", "tokens", "raised_at") if k in ev}}
json.dump(rows, open(os.path.join(out, "loader_truth_gpu.json"), "w"), indent=1, sort_keys=True)
for k, r in sorted(rows.items()):
    gen = r.get("gpu.vllm-generate", {}).get("outcome")
    ppl = r.get("gpu.vllm-perplexity", {}).get("perplexity") or r.get("gpu.vllm-perplexity", {}).get("outcome")
    ref = r.get("gpu.vllm-reference", {}).get("outcome")
    print(f"{k:40s} predicted={r.get('predicted', ['works'])} generate={gen} perplexity={ppl} reference={ref}")
PY
