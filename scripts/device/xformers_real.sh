#!/usr/bin/env bash
# Run on the device machine with .xf carried (made here: the xformers 0.0.35 wheel, and the
# few source files of the real vLLM 0.10.1.1 wheel that xformers.decision reads, under
# .xf/site). A target env = the device's torch venv + xformers + those vLLM files: vLLM
# 0.10.1.1 on sm 9.0 without flash_attn picks XFORMERS for Qwen2.5-VL's vision tower, so
# xformers.decision, xformers.torch-pin and xformers.attention (on the H100) all run.
# Usage: OUT=/somewhere bash scripts/device/xformers_real.sh
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
R=$PWD; export PYTHONPATH=$R
$PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/xsite .xf/xformers-*.whl || exit 1
E=/tmp/xenv; rm -rf $E
printf '#!/bin/sh\nPYTHONPATH=/tmp/xsite exec %s "$@"\n' "$PY" > /tmp/pywrap-xf; chmod +x /tmp/pywrap-xf
$PY -c 'from pathlib import Path; from fixtures.envs import EnvBuilder; b = EnvBuilder(Path("/tmp"), "xenv", bare=True); b.python("3.12.3", executable="/tmp/pywrap-xf")'
SP=$E/lib/python3.12/site-packages; mkdir -p "$SP"
for d in /opt/torch/.venv/lib/python3.12/site-packages/* /tmp/xsite/* $R/.xf/site/*; do ln -sfn "$d" "$SP/"; done
/tmp/pywrap-xf -c 'import xformers, torch; print("xformers", xformers.__version__, "torch", torch.__version__)'
cd $E && timeout 400 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
  --vllm-conformance -m "toolchain or gpu" -k test_xformers.py -rA --vllm-env="$E" --cuda-arch=9.0 \
  --vllm-env-report="$OUT/report_xformers.json" > "$OUT/pytest_xformers.log" 2>&1
echo "pytest rc=$?"; tail -3 "$OUT/pytest_xformers.log"
$PY -c 'import json,sys; [print(c["outcome"], c["id"], c["summary"][:500], "| fix:", c.get("fix"), json.dumps(c.get("evidence"))[:400]) for c in json.load(open(sys.argv[1]))["checks"]]' "$OUT/report_xformers.json"
