#!/usr/bin/env bash
# triton.ptxas on the device (H100, sm_90): what the real Triton of the device's torch does with
# its bundled ptxas and with TRITON_PTXAS_PATH, next to the suite's verdict on the same env.
# Run in one device call from the project root (no vLLM stage needed: torch's own Triton):
#     bash scripts/device/triton_ptxas.sh
# Settles: (1) the bundled ptxas assembles sm_90a and a kernel runs (triton.ptxas passed);
# (2) an override naming a missing file is passed over, the kernel still runs (the warning:
# "the setting does nothing"); (3) an override naming a ptxas that refuses the target makes
# the first kernel fail with "ptxas fatal : Value 'sm_90a' is not defined" (triton.ptxas
# failed names it), as triton-lang/triton#8539 reads. Logs under $OUT.
set -u
PY=${PY:-/opt/torch/.venv/bin/python}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
KERNEL='
import os, tempfile, torch, triton, triton.language as tl
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp())
@triton.jit
def add(x, y, o, n, B: tl.constexpr):
    i = tl.program_id(0) * B + tl.arange(0, B); m = i < n
    tl.store(o + i, tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)
x = torch.ones(1000, device="cuda"); o = torch.empty_like(x)
add[(4,)](x, x, o, 1000, B=256); torch.cuda.synchronize()
print("triton", triton.__version__, "kernel ok:", bool((o == 2).all()))
'
run() {  # name, extra environment
  local name=$1; shift
  # @triton.jit reads its function's source: the kernel must live in a file, not in `-c`
  printf '%s\n' "$KERNEL" > /tmp/triton_kernel.py
  env "$@" TRITON_CACHE_DIR=$(mktemp -d) $PY /tmp/triton_kernel.py > "$OUT/$name.log" 2>&1
  echo "$name: exit $? $(grep -E 'kernel ok|ptxas fatal|Error' "$OUT/$name.log" | head -2)"
}
run bundled
run missing_override TRITON_PTXAS_PATH=/opt/nowhere/ptxas
printf '#!/bin/sh\ncase "$*" in *--version*) echo "Cuda compilation tools, release 12.4, V12.4.131";;\n*) echo "ptxas fatal   : Value '"'"'sm_90a'"'"' is not defined for option '"'"'gpu-name'"'"'" >&2; exit 255;; esac\n' > /tmp/refusing-ptxas
chmod +x /tmp/refusing-ptxas
run refusing_override TRITON_PTXAS_PATH=/tmp/refusing-ptxas
# the suite's verdict on the same interpreter's env (static, from files)
# the plugin is not installed in the device's venv: load it from this checkout, outside the
# project's own conftest (which wants the test extras)
ROOT=$PWD; ENVP=$($PY -c 'import sys; print(sys.prefix)')
(mkdir -p /tmp/run && cd /tmp/run && PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$ROOT $PY -m pytest --noconftest \
  -p pytest_vllm_env.plugin -p no:cacheprovider --vllm-conformance -k test_triton_ptxas \
  --vllm-env="$ENVP" --cuda-arch=9.0 -q -rA 2>&1) | grep -E '^\[triton|passed|failed|ERROR|rror' > "$OUT/verdict.log"
cat "$OUT/verdict.log"
