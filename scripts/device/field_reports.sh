#!/usr/bin/env bash
# Issue 22 field test (docs/field-reports.md): what only a GPU settles about the cases of
# fixtures/field_reports.py. The CPU runs of the real vLLM 0.26.0 / 0.33.0 loaders settled every
# refusal and every parameter left unset (fixtures/field_reports.json); this measures what the
# model then computes, and the cases the CPU cannot build:
# - the "wrong" cases (index-lists-absent-scale, nvfp4-missing-input-scale,
#   nvfp4-layer-left-bf16) and every "loads" case, next to the unmodified export each came
#   from: tokens, first-token logprobs (finite?), through probes/vllm_generate.py, one load a
#   process, the case's quantization= passed;
# - the tensor-parallel cases (fp8-block-*, w4a16-tp-group) at the case's size, where the
#   machine has that many GPUs (nvidia-h100-x2 for tp 2, -x4 for tp 4, -x8 for tp 8): vLLM
#   must refuse at build with the message the case quotes (TP_ONLY=1 runs just those);
# - gpt-oss MXFP4 (mxfp4-on-ampere / -sm75) cannot be settled on an H100/H200 (sm 9.0): it
#   needs an A100 (8.0: loads, Marlin) and a T4 (7.5: refused) - not lent here.
#
# Run after the three staging calls of ../shared/gpu/README.md (vLLM in /tmp/site), from the
# repository root:  bash scripts/device/field_reports.sh
# Writes $OUT/field_reports_gpu.jsonl (one JSON object a load) and field_reports_gpu.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?OUT must name the folder that comes back}
PY=${PY:-/opt/torch/.venv/bin/python}
SITE=${SITE:-/tmp/site}
if [ ! -d $SITE/vllm ]; then
  echo "vLLM is not staged in $SITE: run the three calls of ../shared/gpu/README.md first" | tee $OUT/field_reports_gpu.log
  exit 2
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
W=/tmp/fieldreports
rm -rf $W && $PY -m fixtures.field_reports $W >/dev/null || exit 3
$PY - $W <<'EOF'  # the unmodified bases, for the comparison
import sys
from pathlib import Path
from fixtures import checkpoints, field_reports
w = Path(sys.argv[1])
checkpoints.llama("NVFP4").write(w / "base-modelopt-nvfp4")
field_reports.copy_of(field_reports.QUANT / "ct-nvfp4", w / "base-ct-nvfp4")
field_reports.copy_of(field_reports.QUANT / "hf-fp8-block", w / "base-hf-fp8-block")
EOF
GPUS=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
J=$OUT/field_reports_gpu.jsonl; : > $J
one() {  # NAME [QUANTIZATION]
  local line
  line=$(VLLM_ENV_PROBE_GPU_UTIL=0.2 timeout -k 10 240 $PY pytest_vllm_env/probes/vllm_generate.py $W/$1 ${2:-} 2>>$OUT/field_reports_gpu.log | grep '^{' | tail -1)
  echo "{\"case\": \"$1\", \"tp\": 1, \"probe\": ${line:-null}}" >> $J
  echo "$1: ${line:0:300}"
}
tp() {  # NAME SIZE
  if [ "$GPUS" -lt "$2" ]; then echo "$1: needs $2 GPUs, $GPUS here (skipped)"; return; fi
  local msg
  msg=$(timeout -k 10 300 $PY - $W/$1 $2 2>&1 <<'EOF' | tail -3 | tr '\n' ' ' | tr '"' "'"
import sys
from vllm import LLM
try:
    LLM(model=sys.argv[1], tensor_parallel_size=int(sys.argv[2]), gpu_memory_utilization=0.2, enforce_eager=True)
    print("LOADED")
except Exception as exc:
    print(f"REFUSED {type(exc).__name__}: {exc}"[:600])
EOF
)
  echo "{\"case\": \"$1\", \"tp\": $2, \"result\": \"$msg\"}" >> $J
  echo "$1 tp $2: ${msg:0:300}"
}
tp fp8-block-tp-moe-gate-up 4
tp fp8-block-tp16-down-proj 2
tp fp8-block-sub-block-shard 8
tp w4a16-tp-group 2
tp fp8-block-tp1-works 2  # expected refused too at 2 (192 a rank): the case itself is tp 1
[ -n "${TP_ONLY:-}" ] && exit 0
for c in base-hf-fp8-block index-lists-absent-scale fp8-block-tp1-works base-ct-nvfp4 \
         nvfp4-missing-input-scale base-modelopt-nvfp4 nvfp4-layer-left-bf16 \
         modelopt-fp8-tied-embeddings w4a16-asym-on-current-vllm; do
  one $c
done
one modelopt-fp4-legacy-quantization-arg modelopt
