#!/usr/bin/env bash
# Issue 14's calibration, phase 1, on the device machine after the vLLM stage:
#   OUT=/somewhere bash scripts/device/calibrate.sh
# 1. trains the tiny English and counting Llamas on the GPU and exports them with real
#    ModelOpt 0.47 FP8 (fixtures/trained_models.py);
# 2. builds the corpus: fixtures/variants.py applied to the English FP8 export;
# 3. runs the toolchain and gpu tiers on every variant in one session (4
#    loads share the H100: --vllm-parallel-loads=4), the BF16 original as reference.
# Writes under $OUT: train.json, train.log, corpus_a.json (the report), pytest_a.log,
# models.tgz (the trained exports, for later calls). Models stay in /tmp/models.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
M=/tmp/models; mkdir -p $M
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
t0=$(date +%s)
timeout 300 $PY -m fixtures.trained_models $M --steps ${STEPS:-1500} --count-steps ${COUNT_STEPS:-600} > $OUT/train.log 2>&1
echo "train rc=$? $(( $(date +%s) - t0 )) s"; cp $M/train.json $OUT/ 2>/dev/null; tail -c 600 $M/train.json
$PY -m fixtures.variants $M/english-fp8 $M/corpus && cp $M/corpus/variants.json $OUT/
tar -C $M -czf $OUT/models.tgz english-bf16 english-fp8 counting-bf16 counting-fp8 train.json; ls -la $OUT/models.tgz
args=(); for d in $M/corpus/*/; do args+=("--modelopt-checkpoint=${d%/}"); done
for d in english-fp8-kv english-random-fp8 english-bf16; do args+=("--modelopt-checkpoint=$M/$d"); done
t0=$(date +%s)
mkdir -p /tmp/run && cd /tmp/run && timeout ${PYTEST_TIMEOUT:-420} $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
  --vllm-conformance -m "gpu or toolchain" -k "test_modelopt.py or test_gpu.py" --vllm-parallel-loads=4 -rA \
  --vllm-env=$E --cuda-arch=9.0 --vllm-probe-timeout=300 "${args[@]}" --reference-checkpoint=$M/english-bf16 \
  --vllm-env-report=$OUT/corpus_a.json > $OUT/pytest_a.log 2>&1
echo "pytest rc=$? $(( $(date +%s) - t0 )) s"; tail -3 $OUT/pytest_a.log
cd - >/dev/null; $PY scripts/device/corpus_table.py $OUT/corpus_a.json $M/corpus/variants.json | tee $OUT/table_a.md | head -40
