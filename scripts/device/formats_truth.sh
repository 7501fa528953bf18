#!/usr/bin/env bash
# Issue 22 item 3/5: what real vLLM 0.26.0 does on the H100 with each format beyond ModelOpt.
# Loads every checkpoint of fixtures/quant_export/ (real llm-compressor 0.14.0.1 exports of a
# tiny BF16 Llama, fine-grained FP8 written to its spec, the BF16 original) and the failing
# variants of fixtures/quant_standin.py (VARIANTS: made here from the exports), each in its own
# process with the product's probe (pytest_vllm_env/probes/vllm_generate.py, quantization
# auto-detected from config.json as users load them), then runs the quant.* toolchain checks
# on the same folders for sm 9.0 and 12.0. Run after the vLLM stage (/work/shared/gpu/README.md:
# .gpu_a, .gpu_b, .gpu_c; compressed-tensors 0.17.0 is in the stage), in the third call:
#   OUT=/somewhere bash scripts/device/formats_truth.sh
# Writes under $OUT: formats/<model>.json/.err (probe line and log), formats_truth.json
# (per model: loaded? generated? first tokens, same as BF16?, the kernels vLLM logged, the
# exception), formats_toolchain.json (the quant.* report), smi.txt. About 3-5 minutes.
# The lead commits formats_truth.json as fixtures/quant_export/formats_truth-0.26.0.json.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
V=/tmp/quant_variants; mkdir -p $V $OUT/formats
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
$PY -m fixtures.quant_standin $V
# gpt-oss: the BF16 original is not committed (1.1 MB); remade here with its MXFP4 twin
G=/tmp/gptoss; timeout 300 $PY -m fixtures.quant_exports $G mxfp4 > $OUT/gptoss_make.log 2>&1
for m in gpt-oss-bf16 gpt-oss-mxfp4; do [ -d $G/$m ] && mv $G/$m $V/$m-device; done
export VLLM_ENV_PROBE_KV_BYTES=$((256 * 1024 * 1024)) VLLM_ENV_PROBE_GPU_UTIL=0.1
probe() {  # model dir -> $OUT/formats/<name>.json/.err
  local d=$1 tag; tag=$(basename $d)
  timeout 300 $E/bin/python pytest_vllm_env/probes/vllm_generate.py $d > $OUT/formats/$tag.json 2> $OUT/formats/$tag.err
  echo "$tag rc=$?"
}
export -f probe; export E OUT
t0=$(date +%s)
ls -d fixtures/quant_export/*/ $V/*/ | sed 's:/$::' | xargs -P ${LOADS:-4} -I{} bash -c 'probe {}'
echo "loads took $(( $(date +%s) - t0 )) s"
$PY - $OUT/formats $OUT/formats_truth.json <<'PY'
import json, re, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
def result(tag):
    text = (src / f"{tag}.json").read_text(errors="replace") if (src / f"{tag}.json").exists() else ""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}
# "Selected CutlassFP8ScaledMMLinearKernel for ...", "Using MacheteLinearKernel for
# CompressedTensorsWNA16", "Using MarlinNvFp4LinearKernel for NVFP4 GEMM", "Using 'MARLIN'
# Mxfp4 MoE backend."
KERNEL = re.compile(r"(?:Using|Selected) '?([A-Za-z0-9_]+)'? (?:for [A-Z]|Mxfp4 MoE)")
out = {}
for err in sorted(src.glob("*.err")):
    tag = err.stem
    r = result(tag)
    log = err.read_text(errors="replace") + (src / f"{tag}.json").read_text(errors="replace")
    exc = r.get("exception")
    out[tag] = {
        "loaded": r.get("tokens") is not None and not exc,
        "generated": bool(r.get("tokens")),
        "tokens": (r.get("tokens") or [])[:8],
        "quantization": r.get("quantization"),
        "quant_config": r.get("quant_config"),
        "kernels": sorted(set(KERNEL.findall(log))),
        "exception": str(exc)[:600] if exc else None,
        "raised_at": r.get("exception_frame"),
        "tensor": r.get("exception_tensor"),
        "deterministic": r.get("tokens") == r.get("tokens_again") if r.get("tokens") else None,
    }
bf16 = out.get("llama-bf16", {}).get("tokens")
oss = out.get("gpt-oss-bf16-device", {}).get("tokens")
for tag, v in out.items():
    ref = oss if tag.startswith("gpt-oss") else bf16
    v["same_as_bf16"] = bool(ref) and v["tokens"] == ref
import torch, vllm
try:
    import compressed_tensors
    ct = compressed_tensors.__version__
except Exception as e:
    ct = f"not importable: {e}"
meta = {"vllm": vllm.__version__, "torch": torch.__version__, "compressed_tensors": ct,
        "gpu": torch.cuda.get_device_name(0), "cc": list(torch.cuda.get_device_capability(0))}
dst.write_text(json.dumps({"meta": meta, "models": out}, indent=1, sort_keys=True) + "\n")
for tag, v in out.items():
    print(f"{tag}: loaded={v['loaded']} same_as_bf16={v['same_as_bf16']} kernels={v['kernels']} exc={str(v['exception'])[:160]}")
PY
args=(); for d in fixtures/quant_export/*/ $V/*/; do args+=("--vllm-checkpoint=${d%/}"); done
mkdir -p /tmp/run && cd /tmp/run && timeout 300 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
  --vllm-conformance -m toolchain -k test_quant.py -rA --vllm-env=$E --cuda-arch=9.0 --cuda-arch=12.0 \
  "${args[@]}" --vllm-env-report=$OUT/formats_toolchain.json > $OUT/formats_toolchain.log 2>&1
echo "toolchain rc=$?"; tail -3 $OUT/formats_toolchain.log
