#!/usr/bin/env bash
# F3.9 on real vLLM: where do a checkpoint's KV-cache scales land? For each real ModelOpt
# FP8+KV export (fixtures/modelopt_export/llama-kv-fp8, qwen35-kv-fp8: fixtures/kv_exports.py)
# and each KV-naming variant (fixtures/variants.py KV_CORPUS), the product's probe loads it
# and reads the scale every attention layer runs with (kv_scales: 1.0 = the checkpoint's
# scale never arrived), next to the checkpoint's own values and vLLM's "scaling factor 1.0"
# warning. Then the toolchain tier's verdict on the same folders, for the comparison.
#   OUT=/somewhere bash scripts/device/kv_scales.sh   (after the vLLM stage)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
K=/tmp/kv; mkdir -p $K
NAMES="good kv-names-attn kv-names-output-scale kv-names-vllm kv-names-unknown"
for m in ${KV_MODELS:-llama-kv-fp8 qwen35vl-kv-fp8}; do
  $PY -m fixtures.variants fixtures/modelopt_export/$m $K/$m $NAMES > /dev/null
done
export VLLM_ENV_PROBE_KV_BYTES=$((256 * 1024 * 1024)) VLLM_ENV_PROBE_GPU_UTIL=0.1
probe() {  # model dir -> $OUT/kv/<model>__<variant>.json/.err
  local d=$1 tag; tag=$(basename $(dirname $d))__$(basename $d)
  timeout 300 $E/bin/python pytest_vllm_env/probes/vllm_generate.py $d modelopt > $OUT/kv/$tag.json 2> $OUT/kv/$tag.err
  echo "$tag rc=$?"
}
export -f probe; export E OUT
mkdir -p $OUT/kv
t0=$(date +%s)
ls -d $K/*/*/ | sed 's:/$::' | xargs -P 4 -I{} bash -c 'probe {}'
echo "loads took $(( $(date +%s) - t0 )) s"
$PY - $K $OUT/kv <<'PY'
import json, sys
from pathlib import Path
from pytest_vllm_env.readers.safetensors_header import read_header
K, O = Path(sys.argv[1]), Path(sys.argv[2])
for d in sorted(p for p in K.glob("*/*") if p.is_dir()):
    tag = f"{d.parent.name}__{d.name}"
    names = [n for n in read_header(d / "model.safetensors").tensors if "scale" in n and ("k_" in n or "v_" in n) and "input" not in n and "weight" not in n]
    try:
        r = json.loads((O / f"{tag}.json").read_text().strip().splitlines()[-1])
    except Exception as e:
        r = {"exception": f"no result: {e}"}
    err = (O / f"{tag}.err").read_text(errors="replace") if (O / f"{tag}.err").exists() else ""
    warned = "scaling factor 1.0" in err + (O / f"{tag}.json").read_text(errors="replace") if (O / f"{tag}.json").exists() else "scaling factor 1.0" in err
    print(f"{tag}: kv_dtype={r.get('kv_cache_dtype')} scales_on_disk={names[:2]} kv_scales={r.get('kv_scales')} "
          f"warn_1.0={warned} tokens={(r.get('tokens') or [])[:4]} exception={str(r.get('exception'))[:300]}")
PY
