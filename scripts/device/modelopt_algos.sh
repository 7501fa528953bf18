#!/usr/bin/env bash
# Issue 22 item 5: every quantization config of the real ModelOpt 0.47.0, exported from one tiny
# BF16 model, loaded by the real vLLM 0.26.0 on the GPU, and judged by the suite.
# fixtures/modelopt_algos.py says what is made and why (the recipes are read from the installed
# ModelOpt's mtq.config.choices: 39 configs, the KV-cache configs merged into FP8/NVFP4, two
# MIXED_PRECISION exports; 42 in all).
#  1. the base: the counting Llama, hidden 128 (fixtures/modelopt_export/algos/bf16/, trained
#     on the CPU by `python -m fixtures.modelopt_algos base`; without it, trained here on the GPU)
#     and its known answer (vllm_env_expect.json);
#  2. each export in its own process (EXPORT_JOBS at once, EXPORT_TIMEOUT each; on the CPU, on
#     the GPU where ModelOpt needs it), mtq.quantize with a calibration loop on counting
#     batches, export_hf_checkpoint(bf16), and ModelOpt's simulated answer of the quantized model;
#  3. each written export loaded by the product's probe (pytest_vllm_env/probes/vllm_generate.py,
#     quantization auto-detected as users load them) in its own process as soon as it is written,
#     LOADS at once, LOAD_TIMEOUT each, all loads within LOAD_BUDGET seconds of the start (a load
#     the budget cut is recorded as not settled); the BF16 base loads first, during the exports;
#  4. the suite's toolchain checks (modelopt.*, quant.*, checkpoint.*) on the same folders for
#     sm 9.0, 10.0 and 12.0 (CPU only: runs while the GPU loads);
#  5. the summary (always written): modelopt_algos.json.
#
# Run after the vLLM stage (/work/shared/gpu/README.md; ModelOpt 0.47.0 is in the stage), in a
# warm call, from the repository root:
#   bash scripts/device/modelopt_algos.sh
# Knobs: LOADS (8 at once), LOAD_BUDGET (330 s from the start), LOAD_TIMEOUT (200 s a load),
# EXPORT_JOBS (8), EXPORT_TIMEOUT (150 s), EXPORT_BUDGET (200 s), EXPORT_DEVICE (cpu,cuda),
# ONLY="recipe ..." (a subset; the names: python -m fixtures.modelopt_algos list).
# About 6-7 minutes (exports ~1.5 min on 16 cores; the first FP8 load JIT-compiles ~40 s;
# VLLM_DEEP_GEMM_WARMUP=skip keeps FP8_PB_WO's DeepGEMM from its 2-minute warmup).
# Writes under $OUT (7 files; a call returns at most 8):
#   modelopt_algos.json   commit as fixtures/modelopt_export/algos_truth-0.26.0.json:
#                         tests/test_modelopt_algos_truth.py then holds the verdicts to it
#   algos_toolchain.json  the suite's JSON report on the same folders for sm 9.0 (10.0 and
#                         12.0: in algos_logs.tar.gz; their verdicts are in modelopt_algos.json)
#   algos_exports.tar.xz  the exports and the base (~4 MB): the folders the test re-judges
#                         when committed under fixtures/modelopt_export/algos/
#   algos_logs.tar.gz     every export's and probe's log and JSON line
#   algos_toolchain.log, modelopt_algos.log, smi.txt
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT (the device tool sets it)}"
SITE=${SITE:-/tmp/site}
if [ ! -d $SITE/vllm ] || [ ! -d $SITE/modelopt ]; then
  echo "vLLM/ModelOpt not staged in $SITE: run the staging calls of ../shared/gpu/README.md first" | tee $OUT/modelopt_algos.log
  exit 2
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# PY (the device's torch venv), E (/tmp/tenv: the target env the probe and the suite run in);
# ALGOS_ENV names another target env and PROBE another probe (a dry run off the device)
if [ -n "${ALGOS_ENV:-}" ]; then E=$ALGOS_ENV PY=${PY:-/opt/torch/.venv/bin/python}; else source scripts/device/target_env.sh; fi
PROBE=${PROBE:-pytest_vllm_env/probes/vllm_generate.py}
W=${WORK:-/tmp/moalgos}; M=$W/models L=$W/logs
rm -rf $W; mkdir -p $M $L
exec > >(tee $OUT/modelopt_algos.log) 2>&1
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1 | tee $OUT/smi.txt
T0=$(date +%s)
export VLLM_ENV_PROBE_KV_BYTES=$((256 * 1024 * 1024)) VLLM_ENV_PROBE_GPU_UTIL=0.08
export VLLM_DEEP_GEMM_WARMUP=skip VLLM_USE_FLASHINFER_SAMPLER=0

# 1. the base
if [ -f fixtures/modelopt_export/algos/bf16/model.safetensors ]; then
  cp -r fixtures/modelopt_export/algos/bf16 $M/bf16
else
  timeout 180 $PY -m fixtures.modelopt_algos base $M/bf16 --device cuda --steps ${STEPS:-400} 2>&1 | tail -1
fi
[ -f $M/bf16/model.safetensors ] || { echo "no base model"; exit 3; }
cat $M/bf16/train.json 2>/dev/null | tr -d '\n '; echo

probe() {  # folder name -> $L/<name>.json (the probe's line), .err, .rc
  local n=$1
  timeout ${LOAD_TIMEOUT:-200} $E/bin/python $PROBE $M/$n > $L/$n.json 2> $L/$n.err
  local rc=$?; echo $rc > $L/$n.rc
  echo "load $n rc=$rc $(( $(date +%s) - T0 )) s: $(tail -c 300 $L/$n.json | grep -o '"quant_config": "[A-Za-z0-9]*"\|"exception": "[^"]\{0,100\}' | head -2 | tr '\n' ' ')"
}
export -f probe; export E M L T0 PROBE LOAD_TIMEOUT
probe bf16 &  # the reference, on the GPU while the CPU exports
BASE_PID=$!

# 2 + 3. exports, each loaded as soon as it is written (the exporter prints "export NAME: ok=True
# algo=..." when one is done; the FIRST ones of fixtures/modelopt_algos.py come first)
LOAD_BUDGET=${LOAD_BUDGET:-330}
# On the CPU first (as verified off the device), on the GPU where the CPU cannot (NVFP4 AWQ /
# SVDQuant: "amax must be a CUDA tensor"). CUDA_HOME names nothing so that ModelOpt's
# load_cpp_extension fails at once and takes its torch / Triton paths instead of building its
# three CUDA extensions with the device's nvcc (~40 s each, serialized behind one lock); the
# exported files are the same either way.
{ CUDA_HOME=/nonexistent/no-modelopt-build OMP_NUM_THREADS=2 timeout -k 10 ${EXPORT_BUDGET:-200} \
    $PY -m fixtures.modelopt_algos all $M/bf16 $M --jobs ${EXPORT_JOBS:-8} \
    --timeout ${EXPORT_TIMEOUT:-150} --device ${EXPORT_DEVICE:-cpu,cuda} ${ONLY:+--only $ONLY} 2>$L/exports.err
  echo "exporter rc=$? at $(( $(date +%s) - T0 )) s" >&2; touch $M/exports.done; } \
  | tee $L/exports.out \
  | while read -r word name rest; do [ "$word" = export ] && [ "${rest#ok=True}" != "$rest" ] && echo "${name%:}"; done \
  | timeout -k 10 $(( LOAD_BUDGET - ($(date +%s) - T0) )) xargs -P ${LOADS:-8} -I{} bash -c 'probe {}' &
PIPE_PID=$!

# 4. the toolchain checks once every export is written (CPU only: while the GPU loads)
while [ ! -f $M/exports.done ] && kill -0 $PIPE_PID 2>/dev/null; do sleep 2; done
echo "exports done at $(( $(date +%s) - T0 )) s: $(tail -1 $L/exports.out)"
args=()
for d in $M/*/; do
  [ -f $d/config.json ] || continue
  args+=("--modelopt-checkpoint=${d%/}" "--vllm-checkpoint=${d%/}")
done
toolchain() {  # one target arch: a finding names every target at once, so one run per arch
  local cc=$1; mkdir -p /tmp/run-$cc; cd /tmp/run-$cc
  timeout ${TOOLCHAIN_TIMEOUT:-240} $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
    -p no:randomly --rootdir=/tmp/run-$cc --vllm-conformance -m toolchain \
    -k "test_modelopt.py or test_quant.py or test_checkpoint.py" -rA --vllm-env=$E --cuda-arch=$cc \
    "${args[@]}" --vllm-env-report=$W/toolchain-$cc.json > $W/toolchain-$cc.log 2>&1
  echo "toolchain $cc rc=$? at $(( $(date +%s) - T0 )) s: $(tail -1 $W/toolchain-$cc.log)"
}
(toolchain 9.0 & toolchain 10.0 & toolchain 12.0 & wait) &
TC_PID=$!
wait $PIPE_PID; echo "loads done at $(( $(date +%s) - T0 )) s"
wait $BASE_PID 2>/dev/null
wait $TC_PID

# 5. the summary
$PY - > $W/meta.json <<'PY'
import json
meta = {}
try:
    import torch
    meta.update(gpu=torch.cuda.get_device_name(0), cc=list(torch.cuda.get_device_capability(0)))
except Exception as e:
    meta["gpu"] = f"none: {type(e).__name__}: {e}"[:200]
try:
    import vllm
    meta["vllm"] = vllm.__version__
except Exception as e:
    meta["vllm"] = f"not importable: {e}"[:200]
print(json.dumps(meta))
PY
$PY -m fixtures.modelopt_algos summarize --exports $M/exports.json --logs $L \
  --report 9.0=$W/toolchain-9.0.json --report 10.0=$W/toolchain-10.0.json \
  --report 12.0=$W/toolchain-12.0.json --meta $W/meta.json --out $OUT/modelopt_algos.json
cp $W/toolchain-9.0.json $OUT/algos_toolchain.json 2>/dev/null
cat $W/toolchain-*.log > $OUT/algos_toolchain.log 2>/dev/null
cp $W/toolchain-*.json $L/ 2>/dev/null
# xz: 4 MB where gzip gives 12 (of the 16 MiB a file may bring back)
tar -C $M --exclude=export_logs --exclude=exports.done -cf - . | xz -T4 -6 > $OUT/algos_exports.tar.xz
cp $M/exports.json $L/ 2>/dev/null; cp -r $M/export_logs $L/ 2>/dev/null
tar -C $L -czf $OUT/algos_logs.tar.gz .
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
