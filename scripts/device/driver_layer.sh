#!/usr/bin/env bash
# Issue 23, item 1 (the driver layer) against the real driver of the device machine (H100, driver
# 580.159.04, CUDA 13.0, torch 2.11.0+cu130 at /opt/torch/.venv). Needs no vLLM stage and no
# network. It settles:
#   1. the driver read three ways (NVML probe, /proc/driver/nvidia/version, the libcuda.so.1 the
#      loader takes) agree, and cuDriverGetVersion matches tables/driver.py's row for it;
#   2. PTX-only images of ISA 9.0 (nvcc 13.0) and 9.5 (nvcc 13.5; committed text, no nvcc 13.5
#      on the device) as PTX text and as PTX-only fatbins, loaded with cuModuleLoadData: the
#      result codes next to what driver.ptx-jit predicts (FACTS: 9.0 loads, 9.5 gives 222);
#   3. the suite's driver.* checks on /opt/torch/.venv: with the node's own driver (no failure
#      expected), with --cuda-driver=550.144.03 (warning for the disagreement, cu130 fails), with
#      the machine's older compat libcuda first on LD_LIBRARY_PATH (driver.compat-libcuda fails
#      with 803; cuInit measured under the same LD_LIBRARY_PATH), and with a PTX-only extension.
# Usage (device machine, project copy): OUT=/somewhere bash scripts/device/driver_layer.sh
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
FATBINARY=${FATBINARY:-$(dirname "$NVCC")/fatbinary}
COMPAT=${COMPAT:-/usr/local/cuda/compat}
OUT=${OUT:-/tmp}
R=$PWD; export PYTHONPATH=$R
D=$R/scripts/device/driver_layer
W=$(mktemp -d)
exec > >(tee "$OUT/driver_layer.txt") 2>&1

echo "== 1. the driver, three ways"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader
echo "NVML probe: $($PY pytest_vllm_env/probes/nvml_node.py)"
echo "/proc/driver/nvidia/version: $(head -1 /proc/driver/nvidia/version)"
$PY "$D/load_ptx.py"
$PY - <<'EOF'
from pytest_vllm_env.facts.driver import read_proc_driver
from pytest_vllm_env.tables import driver as T
v, why = read_proc_driver()
if v is None:
    raise SystemExit(f"no kernel driver version: {why}")
of = T.cuda_of_driver(T.parse_driver(v))
print(f"tables/driver.py: driver {v} -> CUDA {of.text} (row {of.row.release}); JIT up to ISA "
      f"{T.isa_text(T.jit_ceiling(of.cuda).isa)}")
EOF

echo "== 2. PTX-only loads (measured) and driver.ptx-jit's rule (predicted)"
cp "$D/k_isa90.ptx" "$D/k_isa95.ptx" "$W/"
if [ -x "$NVCC" ]; then
  "$NVCC" -ptx -arch=compute_90 -o "$W/k_device_nvcc.ptx" "$D/k.cu" && head -5 "$W/k_device_nvcc.ptx" | tail -1
fi
for p in "$W"/*.ptx; do
  if [ -x "$FATBINARY" ]; then
    "$FATBINARY" --create="${p%.ptx}.fatbin" --compress=false --image3=kind=ptx,sm=90,file="$p" \
      || echo "fatbinary refused $p"
  fi
done
[ -x "$FATBINARY" ] || echo "no fatbinary at $FATBINARY: PTX texts only"
for mode in EAGER LAZY; do CUDA_MODULE_LOADING=$mode $PY "$D/load_ptx.py" "$W"/*.ptx "$W"/*.fatbin 2>/dev/null; done
$PY - "$W"/*.ptx "$W"/*.fatbin <<'EOF'
import re, struct, sys
from pytest_vllm_env.facts.driver import read_proc_driver
from pytest_vllm_env.tables import driver as T
ceiling = T.jit_ceiling(T.cuda_of_driver(T.parse_driver(read_proc_driver()[0])).cuda).isa
for p in sys.argv[1:]:
    data = open(p, "rb").read()
    if p.endswith(".ptx"):
        m = re.search(rb"^\.version (\d+)\.(\d+)", data, re.M)
        isa = (int(m.group(1)), int(m.group(2)))
    else:  # fatbin: container header 16 bytes, entry header: (minor, major) at +24
        hs = struct.unpack_from("<H", data, 6)[0]
        minor, major = struct.unpack_from("<HH", data, hs + 24)
        isa = (major, minor)
    verdict = "loads" if isa <= ceiling else "222 CUDA_ERROR_UNSUPPORTED_PTX_VERSION"
    print(f"predicted {p.rsplit('/', 1)[-1]}: ISA {T.isa_text(isa)} vs {T.isa_text(ceiling)}: {verdict}")
EOF

echo "== 3. the suite's driver checks on /opt/torch/.venv"
E=/tmp/denv; rm -rf $E
printf '#!/bin/sh\nexec %s "$@"\n' "$PY" > /tmp/pywrap-driver; chmod +x /tmp/pywrap-driver
$PY -c 'from pathlib import Path; from fixtures.envs import EnvBuilder; b = EnvBuilder(Path("/tmp"), "denv", bare=True); b.python("3.12.3", executable="/tmp/pywrap-driver")'
SP=$E/lib/python3.12/site-packages; mkdir -p "$SP"
for d in /opt/torch/.venv/lib/python3.12/site-packages/*; do ln -sfn "$d" "$SP/"; done
suite() {  # name, extra pytest args
  local name=$1; shift
  (cd $E && timeout 300 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
    --vllm-conformance -k test_driver.py --vllm-env="$E" --cuda-arch=9.0 \
    --vllm-env-report="$OUT/driver_$name.json" "$@" > "$OUT/driver_$name.log" 2>&1)
  echo "-- $name (pytest rc=$?)"
  $PY -c 'import json,sys; [print(" ", c["outcome"], c["id"], c["summary"][:300]) for c in json.load(open(sys.argv[1]))["checks"]]' "$OUT/driver_$name.json"
}
suite node
suite option550 --cuda-driver=550.144.03
if [ -e "$COMPAT/libcuda.so.1" ]; then
  ls -l "$COMPAT"/libcuda.so*
  LD_LIBRARY_PATH=$COMPAT suite compat
  LD_LIBRARY_PATH=$COMPAT $PY "$D/load_ptx.py"
else
  echo "no $COMPAT/libcuda.so.1: compat case not run"
fi
if [ -x "$NVCC" ] && [ ! -e "$SP/vllm" ]; then  # a PTX-only extension in the wrapper env (never in the venv)
  "$NVCC" -shared -Xcompiler -fPIC -cudart shared -gencode arch=compute_90,code=compute_90 \
    -o "$W/ptx_only.so" "$D/k.cu"
  mkdir -p "$SP/vllm" && cp "$W/ptx_only.so" "$SP/vllm/_C.abi3.so"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.0.0\n' > /tmp/vllm-meta
  mkdir -p "$SP/vllm-0.0.0.dist-info" && cp /tmp/vllm-meta "$SP/vllm-0.0.0.dist-info/METADATA"
  suite ptx_only_ext
fi
rm -rf "$W"
