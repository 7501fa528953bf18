#!/usr/bin/env bash
# Issue 22, fused MoE experts over tensor-parallel ranks (fixtures/moe_tp.py; the per-rank
# model is pytest_vllm_env/facts/tp_shares.py). The CPU runs of the real vLLM 0.26.0 / 0.33.0
# loaders (python scripts/loader_truth_cpu.py --corpus moe -> fixtures/loader_truth/moe_tp.json)
# settle every FP8-block case on both releases and the grouped-int4 (WNA16) cases on 0.26.0;
# vLLM 0.33.0 picks its WNA16 MoE kernel before create_weights' group check and finds none on
# the CPU ("No WNA16 MoE backend supports the deployment configuration"), so the ct-w4a16-*
# variants on 0.33.0 are a GPU's to settle (the model predicts: inter 256 at tp 2 loads, 384
# at tp 2 refused, "... per tensor-parallel partition (192) to be divisible by group_size
# (128)", as 0.26.0 did). This loads each variant with its tensor_parallel_size in the staged
# vLLM (whatever $SITE holds: stage 0.33.0 there for the WNA16 cases), where the machine has
# that many GPUs: run it on nvidia-h100-x4 (tp 4 cases) or -x2 (tp 2 only).
#
# From the repository root, after staging vLLM in $SITE (../shared/gpu/README.md):
#   bash scripts/device/moe_tp.sh            # every variant
#   ONLY="ct-w4a16-g128-inter256-tp2 ct-w4a16-g128-inter384-tp2" bash scripts/device/moe_tp.sh
# Writes $OUT/moe_tp_gpu.jsonl (one JSON object a load: variant, tp, the vLLM version,
# LOADED or REFUSED <type>: <message>) and $OUT/moe_tp_gpu.log. Each load is its own process
# (at most 300 s); the FP8 ones JIT their kernels on the first load.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?OUT must name the folder that comes back}
PY=${PY:-/opt/torch/.venv/bin/python}
SITE=${SITE:-/tmp/site}
if [ ! -d $SITE/vllm ]; then
  echo "vLLM is not staged in $SITE: stage it first (../shared/gpu/README.md)" | tee $OUT/moe_tp_gpu.log
  exit 2
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export VLLM_USE_FLASHINFER_SAMPLER=0
W=/tmp/moetp
rm -rf $W && mkdir -p $W
NAMES=${ONLY:-$($PY -c "from fixtures import moe_tp; print(' '.join(moe_tp.VARIANTS))")}
GPUS=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
J=$OUT/moe_tp_gpu.jsonl; : > $J
for n in $NAMES; do
  size=$($PY -c "from fixtures import moe_tp; from pathlib import Path; v = moe_tp.VARIANTS['$n']; moe_tp.make('$n', Path('$W/$n')); print(v.tp)")
  if [ "$GPUS" -lt "$size" ]; then echo "$n: needs $size GPUs, $GPUS here (skipped)"; continue; fi
  msg=$(timeout -k 10 300 $PY - $W/$n $size 2>>$OUT/moe_tp_gpu.log <<'EOF' | tail -1 | tr '"' "'"
import sys
import vllm
from vllm import LLM
try:
    LLM(model=sys.argv[1], tensor_parallel_size=int(sys.argv[2]), gpu_memory_utilization=0.2,
        enforce_eager=True, max_model_len=256, skip_tokenizer_init=True)
    print(f"{vllm.__version__} LOADED")
except Exception as exc:
    print(f"{vllm.__version__} REFUSED {type(exc).__name__}: {exc}".replace("\n", " ")[:600])
EOF
)
  echo "{\"variant\": \"$n\", \"tp\": $size, \"result\": \"$msg\"}" >> $J
  echo "$n tp $size: ${msg:0:300}"
done
