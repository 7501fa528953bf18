#!/usr/bin/env bash
# gpu.prediction-agrees on the KV-cache scales, on real vLLM (after the vLLM stage): the loading
# KV variants of both real ModelOpt FP8+KV exports, and the FP8 export declaring an FP8 KV cache
# without scales, through the gpu tier in one session; prints, per checkpoint, what
# modelopt.tensors-complete predicted at scale 1.0, what the layers ran with, and the verdicts
# of gpu.kv-scales-loaded and gpu.prediction-agrees.
#   OUT=/somewhere bash scripts/device/kv_agree.sh
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
K=/tmp/kvagree; rm -rf $K; mkdir -p $K
for m in llama-kv-fp8 qwen35vl-kv-fp8; do
  $PY -m fixtures.variants fixtures/modelopt_export/$m $K/$m good kv-names-attn kv-names-vllm > /dev/null
done
$PY -m fixtures.variants fixtures/modelopt_export/llama-fp8 $K/llama-fp8 kv-fp8-no-scales > /dev/null
a=(); for d in $K/*/*/; do a+=("--modelopt-checkpoint=${d%/}"); done
t0=$(date +%s)
(mkdir -p /tmp/run && cd /tmp/run && timeout 420 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
  --vllm-conformance -m "gpu or toolchain" -k "test_modelopt.py or test_gpu.py" --vllm-parallel-loads=4 -rA \
  --vllm-env=$E --cuda-arch=9.0 --vllm-probe-timeout=300 "${a[@]}" --vllm-env-report=$OUT/kv_agree.json > $OUT/kv_agree.log 2>&1)
echo "pytest rc=$? $(( $(date +%s) - t0 )) s: $(tail -1 $OUT/kv_agree.log)"
$PY - $OUT/kv_agree.json <<'PY'
import json, re, sys
checks = json.load(open(sys.argv[1]))["checks"]
rows = {}
for c in checks:
    if c["id"] in ("modelopt.tensors-complete", "gpu.kv-scales-loaded", "gpu.prediction-agrees"):
        m = re.search(r"\[([^\]]+)\]$", c.get("test", ""))
        subject = m.group(1) if m else c.get("test", "")
        rows.setdefault(subject, {})[c["id"]] = c
for subject, r in sorted(rows.items()):
    t, k, a = (r.get(i, {}) for i in ("modelopt.tensors-complete", "gpu.kv-scales-loaded", "gpu.prediction-agrees"))
    ev = a.get("evidence", {})
    print(f"{subject}\n  tensors-complete {t.get('outcome')} kv_uncalibrated={t.get('evidence', {}).get('kv_uncalibrated')}"
          f"\n  kv-scales-loaded {k.get('outcome')}: {k.get('summary', '')[-160:]}"
          f"\n  prediction-agrees {a.get('outcome')}: {a.get('summary', '')[-200:]}"
          f"\n  predicted_at_one={ev.get('predicted_kv_at_one')} observed_at_one={ev.get('observed_kv_at_one')}")
PY
