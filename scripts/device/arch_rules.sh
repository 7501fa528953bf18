#!/usr/bin/env bash
# Issue 12, family 1: the arch rules of pytest_vllm_env.readers.fatbin checked against the real driver
# (what ptxas cannot tell: which SASS the GPU loads). Builds one tiny kernel per -gencode set
# with the device's nvcc, launches it, and prints RUNS / NO KERNEL next to what
# fatbin.arch_coverage predicts for this GPU. On an H100 (9.0) our rules claim: no SASS of
# another major runs (sm_75/80/86/89 and sm_100/120 fail), sm_90 and sm_90a run, PTX
# compute_80 and compute_90a JIT, PTX compute_100 does not; on a Blackwell GPU the same script
# settles the `a`/`f` rules (sm_120a vs sm_120f on a 12.1 GB10).
# Usage (device machine, project copy): OUT=/somewhere bash scripts/device/arch_rules.sh
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
R=$PWD; export PYTHONPATH=$R
W=$(mktemp -d)
cat > "$W/k.cu" <<'EOF'
#include <cstdio>
__global__ void k(int *x) { *x = 42; }
int main() {
  int *d, h = 0; cudaMalloc(&d, 4); k<<<1, 1>>>(d);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost);
  printf("%s %d\n", e == cudaSuccess ? "RUNS" : cudaGetErrorString(e), h);
  return e == cudaSuccess ? 0 : 1;
}
EOF
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)
echo "GPU compute capability: $CC; nvcc: $($NVCC --version | tail -1)"
# name | gencode (SASS sm_XY, PTX compute_XY)
CASES=(
  "sass-75|arch=compute_75,code=sm_75"
  "sass-80|arch=compute_80,code=sm_80"
  "sass-86|arch=compute_86,code=sm_86"
  "sass-89|arch=compute_89,code=sm_89"
  "sass-90|arch=compute_90,code=sm_90"
  "sass-90a|arch=compute_90a,code=sm_90a"
  "sass-100|arch=compute_100,code=sm_100"
  "sass-100f|arch=compute_100f,code=sm_100f"
  "sass-120|arch=compute_120,code=sm_120"
  "sass-120a|arch=compute_120a,code=sm_120a"
  "sass-120f|arch=compute_120f,code=sm_120f"
  "ptx-80|arch=compute_80,code=compute_80"
  "ptx-90a|arch=compute_90a,code=compute_90a"
  "ptx-100|arch=compute_100,code=compute_100"
)
for c in "${CASES[@]}"; do
  name=${c%%|*}; gen=${c#*|}
  if ! $NVCC -gencode "$gen" -o "$W/$name" "$W/k.cu" 2> "$W/$name.err"; then
    echo "$name: nvcc refused ($(tail -1 "$W/$name.err"))"; continue
  fi
  real=$(timeout 60 "$W/$name" 2>&1 | head -1)
  pred=$($PY - "$W/$name" "$CC" <<'EOF'
import sys
from pytest_vllm_env import fatbin
from pytest_vllm_env.tables.archs import parse_arch
cov = fatbin.arch_coverage(fatbin.read_images(sys.argv[1]), parse_arch(sys.argv[2]))
print(("covered (JIT)" if cov.jit else "covered") if cov.covered else "not covered")
EOF
)
  echo "$name: driver says [$real]; our rule says [$pred]"
done | tee "${OUT:-/tmp}/arch_rules.txt"
