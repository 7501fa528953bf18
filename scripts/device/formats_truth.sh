#!/usr/bin/env bash
# Issue 22 item 3/5: what real vLLM 0.26.0 does on the H100 with each format beyond ModelOpt.
# Loads every checkpoint of fixtures/quant_export/ (real llm-compressor 0.14.0.1 exports of a
# tiny BF16 Llama, fine-grained FP8 written to its spec, gpt-oss MXFP4, the BF16 original) and
# the failing variants of fixtures/quant_standin.py (VARIANTS: made here from the exports),
# each in its own process with the product's probe (pytest_vllm_env/probes/vllm_generate.py,
# quantization auto-detected from config.json as users load them), then runs the quant.*
# toolchain checks on the same folders for sm 9.0 and 12.0.
#
# Run after the vLLM stage (/work/shared/gpu/README.md: .gpu_a, .gpu_b, .gpu_c;
# compressed-tensors 0.17.0 is in the stage), in the third call or a call right after it:
#   bash .gpu_c/install.sh && bash scripts/device/formats_truth.sh
# About 4-6 minutes (the first FP8 load JIT-compiles ~40 s; LOADS loads share the GPU).
# The loads get LOAD_BUDGET seconds in all (default 360) so the summary is always written.
#
# Writes under $OUT (6 files: a device call returns at most 8):
#   formats_truth.json      per model: loaded? generated? first tokens, same as its BF16 /
#                           its parent export?, the kernels vLLM logged, the exception; meta
#                           (versions, GPU, the optional kernel packages importable)
#   formats_toolchain.json  the quant.* report of the suite on the same folders (9.0, 12.0)
#   formats_toolchain.log, formats_logs.tar.gz (every probe's JSON line and log), smi.txt,
#   gptoss_make.log
# The lead commits formats_truth.json as fixtures/quant_export/formats_truth-0.26.0.json;
# tests/test_quant_gpu_truth.py::test_verdicts_agree_with_vllm_on_the_gpu then holds the
# quant.* verdicts to it (skipped until the file exists).
set -uo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
V=/tmp/quant_variants L=/tmp/formats_logs
rm -rf $V $L; mkdir -p $V $L
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
$PY -m fixtures.quant_standin $V
# gpt-oss: the BF16 original is not committed (1.1 MB); remade here with its MXFP4 twin
G=/tmp/gptoss; rm -rf $G
timeout 300 $PY -m fixtures.quant_exports $G mxfp4 > $OUT/gptoss_make.log 2>&1
for m in gpt-oss-bf16 gpt-oss-mxfp4; do [ -d $G/$m ] && mv $G/$m $V/$m-device; done
# SWEEP="HIDDENxINTERMEDIATE ...": gpt-oss MXFP4 at other shapes (the MoE kernel's shape rules;
# round 13), loaded without their BF16 twins
if [ -n "${SWEEP:-}" ]; then
  S=/tmp/gptoss-sweep; rm -rf $S
  timeout 300 $PY -m fixtures.quant_exports $S $(for s in $SWEEP; do echo "mxfp4:${s/x/:}"; done) >> $OUT/gptoss_make.log 2>&1
  for d in $S/gpt-oss-mxfp4-h*; do [ -d "$d" ] && mv "$d" $V/; done; rm -rf $S
fi
export VLLM_ENV_PROBE_KV_BYTES=$((256 * 1024 * 1024)) VLLM_ENV_PROBE_GPU_UTIL=0.1
probe() {  # model dir -> $L/<name>.json/.err
  local d=$1 tag; tag=$(basename $d)
  timeout 300 $E/bin/python pytest_vllm_env/probes/vllm_generate.py $d > $L/$tag.json 2> $L/$tag.err
  echo "$tag rc=$?"
}
export -f probe; export E L
t0=$(date +%s)
# ONLY="regex": load (and judge) just the folders whose name matches it
ls -d fixtures/quant_export/*/ $V/*/ | sed 's:/$::' | grep -E "/(${ONLY:-.*})$" > /tmp/formats_list
timeout ${LOAD_BUDGET:-360} xargs -P ${LOADS:-4} -I{} bash -c 'probe {}' < /tmp/formats_list
echo "loads took $(( $(date +%s) - t0 )) s"
$PY - $L $OUT/formats_truth.json <<'PY'
import importlib.util, json, re, sys
from pathlib import Path
from fixtures.quant_standin import PARENTS
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
def result(tag):
    f = src / f"{tag}.json"
    text = f.read_text(errors="replace") if f.exists() else ""
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
        # the source line Triton marks with ^ under a compile-time assert (cut off above)
        "failed_assert": next((a.strip() for a, b in zip(str(exc).splitlines(), str(exc).splitlines()[1:])
                               if b.strip().startswith("^")), None) if exc else None,
        "raised_at": r.get("exception_frame"),
        "tensor": r.get("exception_tensor"),
        "deterministic": r.get("tokens") == r.get("tokens_again") if r.get("tokens") else None,
        "parent": PARENTS.get(tag),
    }
bf16 = out.get("llama-bf16", {}).get("tokens")
oss = out.get("gpt-oss-bf16-device", {}).get("tokens")
for tag, v in out.items():
    ref = oss if tag.startswith("gpt-oss") or tag.startswith("mxfp4") else bf16
    v["same_as_bf16"] = bool(ref) and v["tokens"] == ref
    parent = out.get(v["parent"] or "", {})
    v["same_as_parent"] = (v["tokens"] == parent["tokens"]) if parent.get("generated") and v["generated"] else None
import torch, vllm
try:
    import compressed_tensors
    ct = compressed_tensors.__version__
except Exception as e:
    ct = f"not importable: {e}"
# the optional kernel packages as plugins/quant.py names them (installed, or vendored in vLLM)
def found(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
PKGS = {"flashinfer": ["flashinfer"], "deep_gemm": ["deep_gemm", "vllm.third_party.deep_gemm"],
        "triton_kernels": ["triton_kernels", "vllm.third_party.triton_kernels"],
        "conch": ["conch"], "humming": ["humming"], "b12x": ["b12x"]}
packages = sorted(n for n, mods in PKGS.items() if any(found(m) for m in mods))
meta = {"vllm": vllm.__version__, "torch": torch.__version__, "compressed_tensors": ct,
        "gpu": torch.cuda.get_device_name(0), "cc": list(torch.cuda.get_device_capability(0)),
        "packages": packages}
dst.write_text(json.dumps({"meta": meta, "models": out}, indent=1, sort_keys=True) + "\n")
for tag, v in out.items():
    print(f"{tag}: loaded={v['loaded']} same_as_bf16={v['same_as_bf16']} same_as_parent={v['same_as_parent']} kernels={v['kernels']} exc={str(v['exception'])[:160]}")
PY
tar -C $L -czf $OUT/formats_logs.tar.gz .
R=$PWD; args=(); while read -r d; do case $d in /*) ;; *) d=$R/$d;; esac; args+=("--vllm-checkpoint=$d"); done < /tmp/formats_list
 mkdir -p /tmp/run && cd /tmp/run && timeout 180 $PY -m pytest --noconftest -p pytest_vllm_env.plugin -p no:cacheprovider \
  --rootdir=/tmp/run --vllm-conformance -m toolchain -k test_qfmt_ -rA --vllm-env=$E --cuda-arch=9.0 --cuda-arch=12.0 \
  "${args[@]}" --vllm-env-report=$OUT/formats_toolchain.json > $OUT/formats_toolchain.log 2>&1
echo "toolchain rc=$?"; tail -3 $OUT/formats_toolchain.log; cd $R
