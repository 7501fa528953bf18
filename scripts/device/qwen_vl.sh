#!/usr/bin/env bash
# Device experiment after the vLLM stage (shared/gpu/install.sh): build the tiny Qwen2.5-VL,
# its ModelOpt FP8 export, then load each in vLLM text-only and with an image, each load in
# its own process; logs under $OUT. Usage: OUT=/somewhere bash scripts/device/qwen_vl.sh
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
M=/tmp/vlmodels; rm -rf $M; mkdir -p $M
# blake3 (vLLM's multimodal cache keys) is not in the stage: carried in .xf/wh when present
ls .xf/wh/*.whl >/dev/null 2>&1 && $PY -m pip install -q --no-index --no-deps --target /tmp/site .xf/wh/*.whl
timeout 240 $PY -m fixtures.tiny_qwen_vl $M > $OUT/vl_export.log 2>&1; echo "export rc=$?"; tail -5 $OUT/vl_export.log
for spec in "qwen-vl-bf16::text" "qwen-vl-fp8:modelopt:text" "qwen-vl-fp8:modelopt:image"; do
  IFS=: read -r name quant mode <<< "$spec"
  [ -d $M/$name ] || { echo "$name missing"; continue; }
  timeout 200 $PY scripts/device/vl_generate.py $M/$name "$quant" $mode > $OUT/vl_${name}_${mode}.log 2>&1
  echo "== $name $mode rc=$?"; grep -iE "backend|xformers|vision" $OUT/vl_${name}_${mode}.log | grep -v Warning | head -5; tail -1 $OUT/vl_${name}_${mode}.log | cut -c1-1200
done
tar -C $M -czf $OUT/qwen-vl-fp8.tgz qwen-vl-fp8; ls -la $M/qwen-vl-fp8
