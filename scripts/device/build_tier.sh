#!/usr/bin/env bash
# Run on the device machine from the project copy (no vLLM stage needed): wraps the device's
# torch venv as a target env (CUDA_HOME=/usr/local/cuda, as a system toolkit) and runs the
# build tier (real nvcc + torch cpp_extension builds per arch, run on the GPU) and the real
# CMake probe. Usage: OUT=/somewhere bash scripts/device/build_tier.sh [ARCH...]
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
R=$PWD; export PYTHONPATH=$R
E=/tmp/benv; rm -rf $E
printf '#!/bin/sh\nexec %s "$@"\n' "$PY" > /tmp/pywrap-build; chmod +x /tmp/pywrap-build
$PY -c 'from pathlib import Path; from fixtures.envs import EnvBuilder; b = EnvBuilder(Path("/tmp"), "benv", bare=True); b.python("3.12.3", executable="/tmp/pywrap-build")'
SP=$E/lib/python3.12/site-packages; mkdir -p "$SP"
for d in /opt/torch/.venv/lib/python3.12/site-packages/*; do ln -sfn "$d" "$SP/"; done
export CUDA_HOME=/usr/local/cuda
which ninja nvcc cmake; nvcc --version | tail -1
ARCHS=(); for a in "${@:-9.0 12.0}"; do for x in $a; do ARCHS+=(--cuda-arch="$x"); done; done
cd $E && timeout 560 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
  --vllm-conformance -m build -rA --vllm-env="$E" "${ARCHS[@]}" \
  --vllm-env-report="$OUT/report_build.json" > "$OUT/pytest_build.log" 2>&1
echo "pytest rc=$?"; tail -3 "$OUT/pytest_build.log"
$PY -c 'import json,sys; [print(c["outcome"], c["id"], c["summary"][:400]) for c in json.load(open(sys.argv[1]))["checks"]]' "$OUT/report_build.json"
