#!/usr/bin/env bash
# Issue 22 items 2-3: which mixed-precision kernel real vLLM 0.26.0 takes on the H100 (sm 9.0)
# for layers whose shape leaves Machete's tile (the rank's in % 64, out % 128), and whether
# what it then takes runs: the things quant.kernel-arch predicts from the env's source
# (facts/quant_kernel_ranks.py, tables/quant_kernels.py) that only a GPU shows. TP 1 only
# (one-GPU machines): at TP 1 the rank's share is the whole layer, so these are the same
# rules the per-rank verdicts apply at TP 2/4 (held on the CPU against the real chooser of
# both wheels: fixtures/loader_truth/kernel_choice-*.json).
#
# Cases (made here from fixtures/quant_export/ct-w4a16-g128 by fixtures/field_reports.resized):
#   w4a16-g128          the export itself: Machete for every layer (control)
#   w4a16-marlin-pad    hidden 512, 8 heads x 80, 1 kv head: qkv N=800 (800 % 128: Machete
#                       refuses; 800 % 64: Marlin zero-pads it to 832, marlin_padded_nk):
#                       predicted passed, Machete + Marlin, vLLM warns about the padding
#   w4a16-actorder-pad  the same with act-order (0.26.0): Marlin's strict act-order check
#                       refuses N=800, Exllama (BF16), Triton (act-order) and Humming
#                       (act-order) too: predicted failed, "Failed to find a kernel"
#   w4a16-g16           group 16 (fixtures/quant_standin.py): no kernel but Humming takes it;
#                       predicted failed without humming-kernels, passed (Humming) with it
# Each is loaded in its own process by pytest_vllm_env/probes/vllm_generate.py (as users load
# them), then quant.kernel-arch runs on the same folders for --cuda-arch=9.0 against the
# staged env (its packages decide Humming).
#
# Run after the vLLM stage (/work/shared/gpu/README.md: .gpu_a, .gpu_b, .gpu_c), in the third
# call or one right after it:
#   bash .gpu_c/install.sh && bash scripts/device/kernel_ranks.sh
# About 3-4 minutes. humming-kernels (a dependency of the vLLM wheels: humming-kernels[cu13]
# ==0.1.10 for 0.26.0, with cuda-bindings, jinja2, pyelftools, nvidia-cuda-nvcc/-cccl/-nvrtc)
# is not in the --no-deps stage; stage it too to settle the Humming cases (the summary says
# whether `import humming` worked).
#
# Writes under $OUT: kernel_ranks.json (per case: loaded, generated, the kernels vLLM logged
# ("Using MarlinLinearKernel for CompressedTensorsWNA16"), whether it logged Marlin's padding
# warning, the exception; the suite's verdict, kernels and summary; agree), kernel_ranks.log
# (the suite's output), kernel_ranks_logs.tar.gz (every probe's output), smi.txt.
# The lead commits kernel_ranks.json as fixtures/loader_truth/kernel_ranks-h100.json.
set -uo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
source scripts/device/target_env.sh
V=/tmp/kernel_ranks L=/tmp/kernel_ranks_logs
rm -rf $V $L; mkdir -p $V $L
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
$PY - $V <<'PY'
import json, shutil, sys
from pathlib import Path
from fixtures.field_reports import Shape, resized
from fixtures.quant_standin import EXPORTS, VARIANTS, _add_g_idx, group_weights
V = Path(sys.argv[1])
shutil.copytree(EXPORTS / "ct-w4a16-g128", V / "w4a16-g128")
pad = Shape(512, 8, 80, 1, 1408)
resized("ct-w4a16-g128", "ct-w4a16-g128", pad, V / "w4a16-marlin-pad")
f = resized("ct-w4a16-g128", "ct-w4a16-g128", pad, V / "w4a16-actorder-pad")
cfg = json.loads((f / "config.json").read_text())
group_weights(cfg).update(actorder="group")
(f / "config.json").write_text(json.dumps(cfg, indent=2))
_add_g_idx(f)
VARIANTS["w4a16-g16"](V / "w4a16-g16")
print(sorted(p.name for p in V.iterdir()))
PY
export VLLM_ENV_PROBE_KV_BYTES=$((256 * 1024 * 1024)) VLLM_ENV_PROBE_GPU_UTIL=0.2
t0=$(date +%s)
for d in $V/*/; do
  tag=$(basename $d)
  timeout 240 $E/bin/python pytest_vllm_env/probes/vllm_generate.py $d > $L/$tag.json 2> $L/$tag.err
  echo "$tag rc=$? ($(( $(date +%s) - t0 )) s)"
done
args=(); for d in $V/*/; do args+=("--vllm-checkpoint=${d%/}"); done
R=$PWD; mkdir -p /tmp/run && cd /tmp/run && timeout 180 $PY -m pytest --noconftest -p pytest_vllm_env.plugin \
  -p no:cacheprovider --rootdir=/tmp/run --vllm-conformance -m toolchain -k test_qfmt_kernel_arch -rA \
  --vllm-env=$E --cuda-arch=9.0 "${args[@]}" --vllm-env-report=$OUT/kernel_ranks_toolchain.json \
  > $OUT/kernel_ranks.log 2>&1
echo "toolchain rc=$?"; cd $R
$PY - $L $OUT/kernel_ranks_toolchain.json $OUT/kernel_ranks.json <<'PY'
import importlib.util, json, re, sys
from pathlib import Path
logs, report, dst = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
KERNEL = re.compile(r"Using ([A-Za-z0-9_]+) for CompressedTensorsWNA16")
PAD = "Marlin requires thread-tile padding"
def last_json(text):
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}
verdicts = {}
if report.exists():
    for c in json.loads(report.read_text()).get("checks", []):
        if c.get("id") == "quant.kernel-arch":
            label = c.get("summary", "").split(":", 1)[0]
            verdicts[label] = c
out = {}
for err in sorted(logs.glob("*.err")):
    tag = err.stem
    text = err.read_text(errors="replace") + (logs / f"{tag}.json").read_text(errors="replace")
    r = last_json((logs / f"{tag}.json").read_text(errors="replace"))
    exc = r.get("exception")
    v = verdicts.get(tag, {})
    predicted = sorted((v.get("evidence") or {}).get("kernels", {}).get("9.0", []))
    logged = sorted(set(KERNEL.findall(text)))
    loaded = r.get("tokens") is not None and not exc
    out[tag] = {
        "loaded": loaded,
        "generated": bool(r.get("tokens")),
        "kernels_logged": logged,
        "marlin_padded": PAD in text,
        "exception": str(exc)[:600] if exc else None,
        "verdict": v.get("outcome"),
        "kernels_predicted": predicted,
        "summary": (v.get("summary") or "")[:600],
        # passed/warning = vLLM loads it; failed = it refuses; the kernels named must be the
        # ones vLLM logged where it loads
        "agree": (v.get("outcome") in ("passed", "warning")) == loaded
        and (not loaded or predicted == logged),
    }
import torch, vllm
meta = {"vllm": vllm.__version__, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0), "cc": list(torch.cuda.get_device_capability(0)),
        "humming": importlib.util.find_spec("humming") is not None}
dst.write_text(json.dumps({"meta": meta, "models": out}, indent=1, sort_keys=True) + "\n")
for tag, v in out.items():
    print(f"{tag}: loaded={v['loaded']} logged={v['kernels_logged']} padded={v['marlin_padded']} "
          f"verdict={v['verdict']} predicted={v['kernels_predicted']} agree={v['agree']} "
          f"exc={str(v['exception'])[:200]}")
PY
tar -C $L -czf $OUT/kernel_ranks_logs.tar.gz .
