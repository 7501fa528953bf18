#!/usr/bin/env bash
# The blind round on the formats beyond ModelOpt (fixtures/format_variants.py): what only a GPU
# settles. The CPU runs of the real vLLM 0.26.0 / 0.33.0 loaders
# (fixtures/loader_truth/formats_outcomes.json) say which variants vLLM refuses and which
# parameters a load leaves unset or fills with other numbers; whether what loads computes the
# same tokens as its base export needs the kernels. This loads, one process each with the
# product's probe (pytest_vllm_env/probes/vllm_generate.py, quantization from config.json):
#
#   ct-w4a16-no-weight-shape     unsettled on the CPU: every weight_shape unset. Our verdict
#                                says works (no CUDA WNA16 kernel reads weight_shape): the
#                                tokens must equal ct-w4a16-g128's.
#   ct-w8a8-weight-as-u8         works on the CPU (the same int8 bits loaded): tokens must
#                                equal ct-w8a8-int8's.
#   ct-w4a16-channel-group-scales wrong on the CPU (down_proj's second scale column dropped):
#                                tokens must differ from ct-w4a16-g128's.
#   hf-fp8-block-64              works on the CPU (block 64, the same scales repeated): tokens
#                                must equal hf-fp8-block's (another kernel may run: DeepGEMM
#                                takes 128x128 only).
#   ct-fp8-kv-scheme-no-scales, ct-fp8-kv-scheme-with-scales, ct-fp8-targets-mlp-only-attn-bf16,
#   hf-fp8-o-proj-bf16-not-converted: works on the CPU; they must generate.
#   and the base exports they are compared with.
#
# Run after the vLLM stage (/work/shared/gpu/README.md), like scripts/device/formats_truth.sh:
#   bash scripts/device/formats_blind.sh   (LOADS=4 at a time, LOAD_BUDGET=420 s)
# Writes $OUT/formats_blind.json (per model: generated?, first tokens, same as its base?, the
# exception) and $OUT/formats_blind_logs.tar.gz.
set -uo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
V=/tmp/format_variants L=/tmp/formats_blind_logs
rm -rf $V $L; mkdir -p $V $L
NAMES="ct-w4a16-no-weight-shape ct-w8a8-weight-as-u8 ct-w4a16-channel-group-scales hf-fp8-block-64
ct-fp8-kv-scheme-no-scales ct-fp8-kv-scheme-with-scales ct-fp8-targets-mlp-only-attn-bf16
hf-fp8-o-proj-bf16-not-converted"
$PY -m fixtures.format_variants $V $NAMES
for b in ct-w4a16-g128 ct-w8a8-int8 hf-fp8-block ct-fp8-static ct-fp8-dynamic; do
  cp -r fixtures/quant_export/$b $V/base-$b
done
export VLLM_ENV_PROBE_KV_BYTES=$((256 * 1024 * 1024)) VLLM_ENV_PROBE_GPU_UTIL=0.1
probe() {  # model dir -> $L/<name>.json/.err; LOADS at a time (0.1 of the GPU each)
  local d=$1 tag; tag=$(basename $d)
  timeout 300 $E/bin/python pytest_vllm_env/probes/vllm_generate.py $d > $L/$tag.json 2> $L/$tag.err
  echo "$tag rc=$?"
}
export -f probe; export E L
t0=$(date +%s)
ls -d $V/*/ | sed 's:/$::' > /tmp/blind_list
timeout ${LOAD_BUDGET:-420} xargs -P ${LOADS:-4} -I{} bash -c 'probe {}' < /tmp/blind_list
echo "loads took $(( $(date +%s) - t0 )) s"
$PY - $L $V/variants.json $OUT/formats_blind.json <<'PY'
import json, sys
from pathlib import Path
src, variants, dst = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
def result(tag):
    f = src / f"{tag}.json"
    for line in reversed((f.read_text(errors="replace") if f.exists() else "").splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}
out = {}
for err in sorted(src.glob("*.err")):
    r = result(err.stem)
    out[err.stem] = {"generated": bool(r.get("tokens")), "tokens": (r.get("tokens") or [])[:8],
                     "exception": str(r.get("exception"))[:600] if r.get("exception") else None}
for tag, v in out.items():
    base = out.get(f"base-{variants.get(tag, {}).get('base', '')}", {})
    v["same_as_base"] = v["tokens"] == base.get("tokens") if v["generated"] and base.get("generated") else None
dst.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
for tag, v in out.items():
    print(tag, v["generated"], v["same_as_base"], (v["exception"] or "")[:160])
PY
tar -C $L -czf $OUT/formats_blind_logs.tar.gz .
