#!/usr/bin/env bash
# Issue 12, modelopt.gdn-prefill-backend on real vLLM: the committed ModelOpt FP8 export of a
# tiny Qwen3.5 (fixtures/modelopt_export/qwen35vl-kv-fp8: 3 Gated-DeltaNet layers, 1 full)
# loaded by the product's probe on this GPU (sm 9.0: vLLM 0.26.0 picks FlashInfer for the
# GDN prefill), once as is and once with additional_config {"gdn_prefill_backend": "triton"}
# (VLLM_ENV_PROBE_ADDITIONAL_CONFIG), printing what decides it: vLLM's "Using ... GDN prefill
# kernel" line, the exception and the frame that raised it, the tokens. Then the toolchain
# verdict and gpu.prediction-agrees for both. With FI_WHEELS=DIR (a folder holding the
# flashinfer-python 0.6.14 wheel and whatever of its dependencies the stage lacks), a third
# load with it installed under /tmp/fi, and the suite on the env with it (FI_ONLY=1: only that).
#   OUT=/somewhere bash scripts/device/gdn_prefill.sh   (after the vLLM stage)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
M=$PWD/fixtures/modelopt_export/qwen35vl-kv-fp8
TRITON='{"gdn_prefill_backend": "triton"}'
mkdir -p $OUT/gdn
$PY -c 'import importlib.util as u; print("flashinfer importable:", u.find_spec("flashinfer") is not None)'
probe() {  # tag, then env assignments for the probe
  local tag=$1; shift
  env "$@" timeout 200 $PY pytest_vllm_env/probes/vllm_generate.py $M modelopt \
    > $OUT/gdn/$tag.json 2> $OUT/gdn/$tag.err
  echo "== $tag rc=$?"
  grep -h -o "Using [A-Za-z/]* GDN prefill kernel[^\"]*\|GDN prefill backend '[a-z]*' is selected[^\"]*" \
    $OUT/gdn/$tag.err $OUT/gdn/$tag.json | sort -u | head -3
  $PY - $OUT/gdn/$tag.json <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception as e:
    r = {"exception": f"no result: {e}"}
print({k: r.get(k) for k in ("additional_config", "tokens", "exception", "exception_frame", "load_seconds")})
PY
}
[ -z "${FI_ONLY:-}" ] && probe as-is VLLM_ENV_PROBE_GPU_UTIL=0.2
[ -z "${FI_ONLY:-}" ] && probe triton VLLM_ENV_PROBE_GPU_UTIL=0.2 VLLM_ENV_PROBE_ADDITIONAL_CONFIG="$TRITON"
if [ -n "${FI_WHEELS:-}" ]; then
  # every wheel there, without resolving (torch and the stage's packages are already there)
  # nvidia-cutlass-dsl puts `cutlass` on sys.path through a .pth file, which Python reads only
  # in a site dir, not on PYTHONPATH (without this, flashinfer's SM90 GDN kernel is "unavailable")
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/fi "$FI_WHEELS"/*.whl \
    && echo "import site; site.addsitedir('/tmp/fi')" > /tmp/fi/sitecustomize.py \
    && probe flashinfer VLLM_ENV_PROBE_GPU_UTIL=0.2 PYTHONPATH=/tmp/fi:/tmp/site:$PWD
fi
# the suite's own verdicts on the same env: the static prediction, the real load, agreement
suite() {  # tag, extra pytest arguments
  local tag=$1; shift
  echo "== suite $tag"
  # from outside the checkout, as a user runs it; -p: the plugin is not installed there
  (mkdir -p /tmp/run && cd /tmp/run && timeout 240 $PY -m pytest --noconftest -p pytest_vllm_env.plugin \
    --vllm-conformance -p no:cacheprovider -q -rA \
    -k "test_kernels or vllm_generate or prediction_agrees" --vllm-env=$E \
    --modelopt-checkpoint=$M --cuda-arch=9.0 --vllm-env-report=$OUT/gdn/report-$tag.json "$@" 2>&1) \
    | grep -E "^\[(modelopt.gdn|gpu.vllm-generate|gpu.prediction)|^(PASSED|FAILED|SKIPPED|WARNED)|passed|failed" \
    | cut -c1-600
}
[ -z "${FI_ONLY:-}" ] && suite as-is
[ -z "${FI_ONLY:-}" ] && suite triton "--vllm-additional-config=$TRITON"
if [ -d /tmp/fi/flashinfer ]; then  # the target env with flashinfer: the check reads it from there
  SP=$E/lib/python3.12/site-packages
  for d in /tmp/fi/*; do ln -sf "$d" "$SP/"; done
  printf '#!/bin/sh\nPYTHONPATH=/tmp/fi:/tmp/site exec %s "$@"\n' "$PY" > /tmp/pywrap
  PYTHONPATH=/tmp/fi:$PYTHONPATH suite flashinfer
fi
