#!/usr/bin/env bash
# Device run on a machine with 2 GPUs, after the vLLM stage (shared/gpu/README.md): the whole
# gpu tier once per GPU, the two GPUs as two "nodes", then one merged fleet view.
#   Ray mode (Ray importable, or its pieces from scripts/device/stage_ray.sh in /tmp/stage):
#     a local Ray cluster with one node per GPU (scripts/device/fleet_local_ray.py) and
#     `pytest-vllm-env fleet` on it: one task per node, pinned, holding that node's GPU.
#   Process mode (no Ray): two pytest processes, CUDA_VISIBLE_DEVICES=0 and =1, at once; then
#     `pytest-vllm-env merge`.
# Usage: OUT=/somewhere bash scripts/device/fleet_2gpu.sh      (MODE=processes forces that mode)
# Writes under $OUT: smi.txt, versions.txt, export.log, reports/*.json (process mode) or
# fleet/reports/*.json (Ray mode), fleet.json, fleet.html, merge.txt, per-node logs.
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
W=${WORK:-/tmp}  # scratch: the target env, the models
R=$PWD
export PYTHONPATH=/tmp/site:$R
mkdir -p "$OUT"
nvidia-smi --query-gpu=index,name,compute_cap,uuid,driver_version --format=csv,noheader | tee "$OUT/smi.txt"
[ "$(wc -l < "$OUT/smi.txt")" -ge 2 ] || { echo "needs 2 GPUs"; exit 1; }
if ls /tmp/stage/ray.part.* > /dev/null 2>&1 && ! $PY -c 'import ray' 2> /dev/null; then
  cat /tmp/stage/ray.part.* > /tmp/stage/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
  wheels=(/tmp/stage/ray-2.60.0-*.whl)
  # Ray's deps the device venv lacks (install only those: the others stay the venv's)
  for mod in click:click jsonschema:jsonschema jsonschema_specifications:jsonschema_specifications \
    referencing:referencing rpds:rpds_py attrs:attrs msgpack:msgpack google.protobuf:protobuf \
    yaml:pyyaml requests:requests filelock:filelock; do
    $PY -c "import ${mod%%:*}" 2> /dev/null || wheels+=(/tmp/stage/${mod#*:}-*.whl)
  done
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}"
  echo "ray install rc=$? (${#wheels[@]} wheels)"
fi
MODE=${MODE:-$($PY -c 'import ray; print("ray")' 2> /dev/null || echo processes)}
$PY -c 'import modelopt, vllm, torch; print("modelopt", modelopt.__version__, "vllm", vllm.__version__, "torch", torch.__version__)' 2>&1 | tail -1 | tee "$OUT/versions.txt"
[ "$MODE" = ray ] && $PY -c 'import ray; print("ray", ray.__version__)'
M=$W/fleet_models; mkdir -p $M
$PY -m fixtures.tiny_models $M > "$OUT/export.log" 2>&1; echo "export rc=$?"; tail -2 "$OUT/export.log"
# The target env, as fixtures/modelopt_export/make.sh builds it: a prefix whose python runs
# the device venv with the vLLM stage, its site-packages linked to both.
E=$W/tenv; rm -rf $E
printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec %s "$@"\n' "$PY" > $W/pywrap; chmod +x $W/pywrap
$PY -c 'import sys; from pathlib import Path; from fixtures.envs import EnvBuilder; b = EnvBuilder(Path(sys.argv[1]), "tenv", bare=True); b.python("3.12.3", executable=sys.argv[2]); b.manifest()' "$W" "$W/pywrap"
SP=$E/lib/python3.12/site-packages; mkdir -p "$SP"
for d in /opt/torch/.venv/lib/python3.12/site-packages/* /tmp/site/*; do ln -sf "$d" "$SP/"; done
# -p loads the plugin from this copy where it is not installed (the device); twice would be an error
PLUGIN=(-p pytest_vllm_env.plugin)
$PY -c 'import importlib.metadata as m, sys; sys.exit(not any(e.value == "pytest_vllm_env.plugin" for e in m.entry_points(group="pytest11")))' && PLUGIN=()
ARGS=(--noconftest "${PLUGIN[@]}" -p no:cacheprovider --vllm-conformance -m gpu -rA
  --vllm-env="$E" --cuda-arch=9.0
  --modelopt-checkpoint="$M/llama-fp8" --reference-checkpoint="$M/llama-bf16")
start=$(date +%s)
if [ "$MODE" = ray ]; then
  cd $E && timeout 580 $PY "$R/scripts/device/fleet_local_ray.py" --gpus 0,1 --out "$OUT/fleet" \
    --python "$PY" --chdir $E --timeout 540 -- "${ARGS[@]}" > "$OUT/merge.txt" 2> "$OUT/fleet_stderr.log"
  rc=$?
  cp "$OUT/fleet/fleet.json" "$OUT/fleet/fleet.html" "$OUT/" 2> /dev/null
  reports=$OUT/fleet/reports
else
  host=$(hostname -s)
  for g in 0 1; do
    (mkdir -p $W/run$g && cd $W/run$g && CUDA_VISIBLE_DEVICES=$g PYTEST_VLLM_ENV_NODE_NAME=$host-gpu$g timeout 560 $PY -m pytest \
      "${ARGS[@]}" --vllm-env-report="$OUT/reports/%N.json" > "$OUT/pytest_gpu$g.log" 2>&1
     echo "gpu$g pytest rc=$?"; tail -1 "$OUT/pytest_gpu$g.log") &
  done
  wait
  cd "$R" && $PY -m pytest_vllm_env merge "$OUT/reports" --json="$OUT/fleet.json" \
    --html="$OUT/fleet.html" > "$OUT/merge.txt"
  rc=$?
  reports=$OUT/reports
fi
echo "mode=$MODE merge rc=$rc wall=$(( $(date +%s) - start )) s"
cat "$OUT/merge.txt"
# what decides it: each node's identity, and every check's outcome on each node
$PY - "$reports" "$OUT/fleet.json" <<'PY'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    n = json.load(open(p))["node"]
    gpus = "; ".join(f"{g['index']} {g['name']} cc {g['compute_capability']} {g['uuid']}" for g in n["gpus"])
    print(f"node {n['name']}: CUDA_VISIBLE_DEVICES={n['cuda_visible_devices']!r} source={n['source']} "
          f"driver={n['driver_version']} cuda={n['cuda_driver_version']} gpus=[{gpus}] absent={n['absent']}")
fleet = json.load(open(sys.argv[2]))
for c in fleet["cells"]:
    print(f"  {c['node']:>14} {c['outcome']:8} {c['id']} {c.get('summary', '')[:160]}")
PY

# issue 14's speed goal on this machine too (GPU 0): the gpu tier against one plain load
if [ -n "${BENCH:-}" ]; then
  (mkdir -p $W/bench && cd $W/bench && CUDA_VISIBLE_DEVICES=0 $PY "$R/benchmarks/gpu_tier.py" "$M/llama-fp8" \
    --vllm-env="$E" --python="$E/bin/python" $([ ${#PLUGIN[@]} -gt 0 ] && echo --plugin) --rounds "$BENCH" --json "$OUT/bench.json")
fi
