#!/usr/bin/env bash
# Issue 22 item 3: the suite's own gpu tier on the formats beyond ModelOpt. Runs
# `pytest --vllm-conformance -m gpu` with each export of fixtures/quant_export/ and the
# failing variants of fixtures/quant_standin.py that the H100 settled
# (fixtures/quant_export/formats_truth-0.26.0.json) as --vllm-checkpoint, the ModelOpt
# llama-fp8 export given to both checkpoint options (one load: count the
# "loaded" lines of the log). What it settles: gpu.vllm-generate names each format's config class, and
# gpu.prediction-agrees passes wherever the quant.* verdicts and the real load agree
# (fp8-block-no-scale and fp8-static-nan-input-scale: predicted "wrong", died with a
# device-side assert; fp8-channel-scale-flat: refused for the same tensor; the exports:
# works) and warns where they do not (the report's evidence holds both sides).
#
# Run after the vLLM stage (/work/shared/gpu/README.md: .gpu_a, .gpu_b, .gpu_c), in the third
# call or a call right after it:
#   bash .gpu_c/install.sh && bash scripts/device/formats_gpu_tier.sh
# About 3-5 minutes (4 loads share the GPU; the first FP8 load JIT-compiles ~40 s).
# Writes under $OUT: formats_gpu_tier.json (the suite's report), formats_gpu_tier.log, smi.txt
set -uo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
V=/tmp/quant_variants_gpu
rm -rf $V; mkdir -p $V
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
$PY -m fixtures.quant_standin $V
R=$PWD Q=$R/fixtures/quant_export
args=()
for m in ${EXPORTS:-ct-fp8-dynamic ct-fp8-static ct-fp8-block ct-w4a16-g128 ct-w8a8-int8 ct-nvfp4 hf-fp8-block gpt-oss-mxfp4}; do
  args+=("--vllm-checkpoint=$Q/$m")
done
for v in ${VARIANTS:-fp8-block-no-scale fp8-static-nan-input-scale fp8-channel-scale-flat w4a16-o-proj-bf16 nvfp4-fp8-activations}; do
  [ -d $V/$v ] && args+=("--vllm-checkpoint=$V/$v")
done
M=$R/fixtures/modelopt_export/llama-fp8
args+=("--modelopt-checkpoint=$M" "--vllm-checkpoint=$M")
mkdir -p /tmp/run && cd /tmp/run && timeout 540 $PY -m pytest --noconftest -p pytest_vllm_env.plugin \
  -p no:cacheprovider --rootdir=/tmp/run --vllm-conformance -m gpu -rA --vllm-env=$E --cuda-arch=9.0 \
  --vllm-parallel-loads=4 --vllm-probe-timeout=300 "${args[@]}" \
  --vllm-env-report=$OUT/formats_gpu_tier.json > $OUT/formats_gpu_tier.log 2>&1
echo "gpu tier rc=$?"; tail -3 $OUT/formats_gpu_tier.log; cd $R
# one line per checkpoint: what loaded, and whether the prediction agreed
$PY - $OUT/formats_gpu_tier.json <<'PY'
import json, sys
checks = json.load(open(sys.argv[1]))["checks"]
for c in checks:
    if c["id"] in ("gpu.vllm-generate", "gpu.prediction-agrees"):
        print(f"{c['id']:24} {c['outcome']:8} {c['summary'][:220]}")
PY
