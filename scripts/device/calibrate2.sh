#!/usr/bin/env bash
# Issue 14's calibration, phase 2 (right after calibrate.sh, same warm machine; or with
# .calib/models.tgz carried after a fresh stage):
#   OUT=/somewhere bash scripts/device/calibrate2.sh
# 1. the counting model's export and broken variants of it, with its BF16 original as
#    reference: gpu.vllm-known-answer against reality (corpus_b.json);
# 2. the committed TIED export (fixtures/modelopt_export/llama-fp8) and its lm_head
#    variants: the tied-embedding rules (corpus_c.json);
# 3. benchmarks/gpu_tier.py, from a directory outside the repo as a user runs it: the gpu
#    tier against one plain vLLM load + generate (bench.json, bench.report.json).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
M=/tmp/models; mkdir -p $M
# the models of calibrate.sh on this machine, else a carried .calib/models.tgz, else the
# committed step-counting export (no BF16 reference then)
[ -d $M/counting-fp8 ] || { [ -f .calib/models.tgz ] && tar -C $M -xzf .calib/models.tgz; } \
  || cp -r fixtures/modelopt_export/counting-fp8 $M/
[ -d $M/english-fp8 ] || cp -r fixtures/modelopt_export/english-fp8 $M/
$PY -m fixtures.variants $M/counting-fp8 $M/counting good input-scale-missing-alone bf16-dequantized zero-weight-scales scale-shape-out > /dev/null
$PY -m fixtures.variants fixtures/modelopt_export/llama-fp8 $M/tied good lm-head-not-excluded lm-head-input-scale > /dev/null
run() {  # name, reference (or ""), checkpoint dirs...
  local name=$1 ref=$2; shift 2; local a=(); for d in "$@"; do a+=("--modelopt-checkpoint=$d"); done
  [ -n "$ref" ] && a+=("--reference-checkpoint=$ref")
  local t0=$(date +%s)
  (mkdir -p /tmp/run && cd /tmp/run && timeout 240 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
    --vllm-conformance -m "gpu or toolchain" -k "test_modelopt.py or test_gpu.py" --vllm-parallel-loads=4 -rA \
    --vllm-env=$E --cuda-arch=9.0 --vllm-probe-timeout=200 "${a[@]}" --vllm-env-report=$OUT/corpus_$name.json > $OUT/pytest_$name.log 2>&1)
  echo "pytest $name rc=$? $(( $(date +%s) - t0 )) s: $(tail -1 $OUT/pytest_$name.log)"
  $PY scripts/device/corpus_table.py $OUT/corpus_$name.json $M/${name}_variants.json > $OUT/table_$name.md; cat $OUT/table_$name.md
}
cp $M/counting/variants.json $M/b_variants.json; cp $M/tied/variants.json $M/c_variants.json
G=${PARTS:-b c bench}  # which parts to run (PARTS="b" for the counting model alone; not GROUPS: bash owns that name)
[[ " $G " == *" b "* ]] && run b "$([ -d $M/counting-bf16 ] && echo $M/counting-bf16)" $M/counting/good $M/counting/input-scale-missing-alone $M/counting/bf16-dequantized $M/counting/zero-weight-scales $M/counting/scale-shape-out
[[ " $G " == *" c "* ]] && run c "" $M/tied/good $M/tied/lm-head-not-excluded $M/tied/lm-head-input-scale
[[ " $G " == *" bench "* ]] || exit 0
R=$PWD; (mkdir -p /tmp/run && cd /tmp/run && $PY $R/benchmarks/gpu_tier.py $M/english-fp8 --vllm-env=$E --python=$E/bin/python --plugin --rounds ${ROUNDS:-2} --json $OUT/bench.json)
