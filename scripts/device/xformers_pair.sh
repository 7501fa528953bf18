#!/usr/bin/env bash
# Issue 23 item 5: the xformers fallback, proven on the H100 against torch 2.11.0+cu130 (the
# device's only torch). .xf (made here, git-ignored, 6 MB) holds three things to judge:
#   pypi/   PyPI's xformers 0.0.35 (cpp_lib.json: torch 2.10.0+cu128; _C.so on torch's stable C
#           ABI (aoti_torch_*), NEEDED libcudart.so.12, no RUNPATH)
#   built/  xformers 0.0.35 built from its sdist here against torch 2.11.0+cu130 with nvcc 13.0,
#           TORCH_CUDA_ARCH_LIST=9.0 (links torch's own CUTLASS attention: 13 objects, 1.4 MB)
#   nvidia_cuda_runtime_cu12-*.whl   libcudart.so.12, for the third pairing
# and site/: the vLLM 0.10.1.1 files xformers.decision reads (its Qwen2.5-VL vision tower picks
# XFORMERS on sm 9.0 without flash_attn, so decision, torch-pin and attention all run).
# Each pairing is a target env = the device's torch venv + that xformers (+ those vLLM files);
# the suite's xformers checks and xformers' own import are recorded side by side.
# Usage: OUT=/somewhere bash scripts/device/xformers_pair.sh
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
R=$PWD; export PYTHONPATH=$R
$PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/cu12 .xf/nvidia_cuda_runtime_cu12-*.whl
CU12=$(dirname "$(find /tmp/cu12 -name 'libcudart.so.12*' | head -1)")
run() {  # label wheel-dir extra-LD_LIBRARY_PATH [held: nvidia-cuda-runtime-cu12 in site-packages]
  local label=$1 whl=$2 ld=$3 held=${4:-} E=/tmp/xenv-$1 S=/tmp/xsite-$1
  rm -rf "$E" "$S"
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$S" .xf/$whl/xformers-*.whl || return
  printf '#!/bin/sh\nPYTHONPATH=%s LD_LIBRARY_PATH=%s exec %s "$@"\n' "$S" "$ld" "$PY" > /tmp/pywrap-$label
  chmod +x /tmp/pywrap-$label
  $PY -c "from pathlib import Path; from fixtures.envs import EnvBuilder; EnvBuilder(Path('/tmp'), 'xenv-$label', bare=True).python('3.12.3', executable='/tmp/pywrap-$label')"
  local SP=$E/lib/python3.12/site-packages; mkdir -p "$SP"
  for d in /opt/torch/.venv/lib/python3.12/site-packages/* "$S"/* "$R"/.xf/site/*; do ln -sfn "$d" "$SP/"; done
  if [ -n "$ld" ]; then  # also where the suite reads the env's activation (round 11a: the wrapper only)
    mkdir -p "$E/etc/conda/env_vars.d"
    printf '{"LD_LIBRARY_PATH": "%s"}\n' "$ld" > "$E/etc/conda/env_vars.d/cu12.json"
  fi
  if [ -n "$held" ]; then  # the runtime wheel installed, its dir not on the path
    rm -f "$SP/nvidia"; mkdir -p "$SP/nvidia"
    for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/* /tmp/cu12/nvidia/*; do ln -sfn "$d" "$SP/nvidia/"; done
  fi
  echo "== $label (LD_LIBRARY_PATH=${ld:-unset})"
  /tmp/pywrap-$label - <<'PYEOF' 2>&1 | grep -v "^  warnings.warn" | tail -4
import torch, xformers, xformers.ops as xops
from xformers import _cpp_lib
print("xformers", xformers.__version__, "torch", torch.__version__, "cpp load:", _cpp_lib._cpp_library_load_exception or "ok")
q = torch.randn(1, 64, 16, 80, device="cuda", dtype=torch.bfloat16)
try:
    o = xops.memory_efficient_attention_forward(q, q, q)
    ref = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, q, q))).transpose(1, 2)
    print("memory_efficient_attention_forward max abs diff vs SDPA:", (o - ref).abs().max().item())
except Exception as exc:
    print("memory_efficient_attention_forward:", type(exc).__name__, str(exc).splitlines()[0])
PYEOF
  (cd "$E" && timeout 300 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
    --vllm-conformance -m "toolchain or gpu" -k "test_xformers.py or test_abi.py" -rA --vllm-env="$E" \
    --cuda-arch=9.0 --vllm-env-report="$OUT/xf_$label.json" > "$OUT/xf_$label.log" 2>&1)
  $PY -c 'import json,sys; [print(" ", c["outcome"], c["id"], c["summary"][:300], "| fix:", (c.get("fix") or "")[:200]) for c in json.load(open(sys.argv[1]))["checks"]]' "$OUT/xf_$label.json"
}
run pypi pypi ""
run pypi-cu12 pypi "$CU12"
run pypi-held pypi "" held   # expected: does not load; abi.cudart's fix is the LD_LIBRARY_PATH line alone
run built built ""
