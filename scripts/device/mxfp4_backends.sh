#!/usr/bin/env bash
# Issue 22 item 3: settles what quant.kernel-arch says of gpt-oss MXFP4 experts on sm 9.x
# beyond the shape sweep (mxfp4_shapes-0.26.0.json): that --moe-backend marlin (its fix)
# serves the shapes the Triton MoE kernel cannot compile for, and that the per-rank share
# under tensor parallelism decides (intermediate 128 at TP 2 leaves 64 a rank: gate_up has
# 128 output columns, BLOCK_N 128, the same static assert).
#
# Each case: a header-true gpt-oss checkpoint (fixtures/quant_standin.py:gpt_oss_shaped, zero
# weights: the kernels compile and run on any values) loaded by real vLLM in its own process
# with LLM(moe_backend=..., tensor_parallel_size=...), one greedy generation; then the suite's
# quant.kernel-arch on the same folder with the same launch arguments (--vllm-serve-args).
#
# Run after the vLLM stage (/work/shared/gpu/README.md), in the third call or right after:
#   bash .gpu_c/install.sh && bash scripts/device/mxfp4_backends.sh
# TP cases need 2 GPUs (kind nvidia-h100-x2); on one GPU they are recorded as skipped.
# About 1-2 minutes a case on one GPU. Writes $OUT/mxfp4_backends.json (per case: shape,
# moe_backend, tp, loaded, generated, the MoE backend vLLM logged, the exception, and the
# suite's verdict) and $OUT/mxfp4_backends_logs.tar.gz.
set -uo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# the sampler imports flashinfer unless told not to; the stage has none (round 13's first try died there)
export VLLM_USE_FLASHINFER_SAMPLER=0
source scripts/device/target_env.sh
W=/tmp/mxfp4_backends; rm -rf $W; mkdir -p $W/logs
# hidden intermediate moe_backend tp
CASES=${CASES:-"128 128 marlin 1
128 128 auto 1
256 256 auto 1
256 128 auto 2
256 256 auto 2
128 128 marlin 2"}
NGPU=$(nvidia-smi -L | wc -l)
echo "$CASES" | while read -r h i b tp; do
  tag="h${h}-i${i}-${b}-tp${tp}"; d=$W/$tag
  $PY -c "from pathlib import Path; from fixtures.quant_standin import gpt_oss_shaped as g; g(Path('$d'), $h, $i)"
  if [ "$tp" -gt "$NGPU" ]; then echo "{\"skipped\": \"$NGPU GPU(s)\"}" > $W/logs/$tag.json; continue; fi
  timeout 300 $E/bin/python - "$d" "$b" "$tp" > $W/logs/$tag.json 2> $W/logs/$tag.err <<'PY'
import json, sys, traceback
out = {"loaded": False, "generated": False, "exception": None}
try:
    from vllm import LLM, SamplingParams
    kw = {} if sys.argv[2] == "auto" else {"moe_backend": sys.argv[2]}
    llm = LLM(model=sys.argv[1], skip_tokenizer_init=True, enforce_eager=True,
              gpu_memory_utilization=0.2, max_model_len=256, tensor_parallel_size=int(sys.argv[3]),
              kv_cache_memory_bytes=256 * 1024 * 1024, **kw)
    out["loaded"] = True
    r = llm.generate([{"prompt_token_ids": [1, 2, 3, 4]}],
                     SamplingParams(temperature=0, max_tokens=4, detokenize=False))
    out["generated"] = bool(r[0].outputs[0].token_ids)
except BaseException as exc:  # noqa: BLE001 - the record is the point
    out["exception"] = f"{type(exc).__name__}: {exc}"[:2000]
    out["trace_tail"] = traceback.format_exc()[-1500:]
print(json.dumps(out))
PY
  echo "$tag rc=$?"
done
$PY - $W $OUT/mxfp4_backends.json <<'PY'
import json, re, subprocess, sys
from pathlib import Path
w, dst = Path(sys.argv[1]), Path(sys.argv[2])
E = "/tmp/tenv"
cases = {}
for f in sorted((w / "logs").glob("*.json")):
    tag = f.stem
    h, i, b, tp = re.match(r"h(\d+)-i(\d+)-(\w+)-tp(\d+)", tag).groups()
    lines = [ln for ln in f.read_text(errors="replace").splitlines() if ln.startswith("{")]
    rec = json.loads(lines[-1]) if lines else {"exception": "no result line"}
    err = (w / "logs" / f"{tag}.err")
    # the engine core process logs to stdout (the .json file), the rest to stderr
    log = (err.read_text(errors="replace") if err.exists() else "") + f.read_text(errors="replace")
    rec["backend_logged"] = sorted(set(re.findall(r"Using '(\w+)' Mxfp4 MoE backend", log)))
    rec |= {"hidden": int(h), "intermediate": int(i), "moe_backend": b, "tp": int(tp)}
    if "skipped" not in rec:
        serve = f"vllm serve m --tensor-parallel-size {tp}" + ("" if b == "auto" else f" --moe-backend {b}")
        rep = w / f"{tag}-report.json"
        subprocess.run([sys.executable, "-m", "pytest", "--noconftest", "-p", "pytest_vllm_env.plugin",
                        "-p", "no:cacheprovider", f"--rootdir={w}", "--vllm-conformance", "-m", "toolchain",
                        "-k", "test_qfmt_kernel", f"--vllm-env={E}", "--cuda-arch=9.0",
                        f"--vllm-checkpoint={w / tag}", f"--vllm-serve-args={serve}",
                        f"--vllm-env-report={rep}", "-q"], cwd=w, capture_output=True, timeout=300)
        checks = json.loads(rep.read_text())["checks"] if rep.exists() else []
        k = next((c for c in checks if c["id"] == "quant.kernel-arch"), {})
        rec["suite"] = {"outcome": k.get("outcome"), "summary": k.get("summary", "")[:600]}
    cases[tag] = rec
    print(tag, {k: rec.get(k) for k in ("loaded", "generated", "backend_logged")},
          str(rec.get("exception"))[:200], rec.get("suite", {}).get("outcome"))
import torch, vllm
meta = {"vllm": vllm.__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
        "cc": list(torch.cuda.get_device_capability(0)), "gpus": torch.cuda.device_count()}
dst.write_text(json.dumps({"meta": meta, "cases": cases}, indent=1, sort_keys=True) + "\n")
PY
tar -C $W/logs -czf $OUT/mxfp4_backends_logs.tar.gz .
