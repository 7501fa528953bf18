#!/usr/bin/env bash
# Issue 22: settles on the GPU what quant.kernel-arch says when a triton_kernels other than the
# copy vLLM vendors is importable (facts/triton_kernels_copy.py, tests/test_triton_kernels_copy.py).
# vLLM (utils/import_utils.py:import_triton_kernels) takes a top-level triton_kernels on the
# path before vllm/third_party/triton_kernels; measured on the CPU only so far: with the PyPI
# triton-kernels 0.1.0 (Kernelize AI's project) it imports that one and _swizzle_mxfp4 raises
# ModuleNotFoundError. This run loads gpt-oss MXFP4 (hidden 256 x intermediate 256, which the
# vendored copy serves on sm 9.0: formats_truth-0.26.0-hidden256.json) three ways:
#   vendored   no separate copy (expected: loads, TRITON)
#   kernelize  TK_WHEEL (the PyPI triton-kernels 0.1.0 wheel) on PYTHONPATH (expected: the load
#              fails with ModuleNotFoundError: No module named 'triton_kernels.matmul_ogs_details')
#   tree       TK_TREE, a triton-lang/triton python/triton_kernels folder, when given (a 3.8
#              tree on 0.26.0: the same ModuleNotFoundError; the suite says which)
# and runs the suite's quant.kernel-arch on an env that mirrors each (the stand-in vLLM of
# fixtures/quant_standin.py with the same triton_kernels installed), so the two can be compared.
#
# Before the call, here: pip download --no-deps -d .gpu_tk triton-kernels==0.1.0 (11 kB; keep
# .gpu_tk out of git: .git/info/exclude) and carry [".gpu_tk"] with the vLLM stage's third call:
#   bash .gpu_c/install.sh && TK_WHEEL=$(ls .gpu_tk/*.whl) bash scripts/device/triton_kernels_copy.sh
# About 2-3 minutes. Writes $OUT/triton_kernels_copy.json (per case: loaded, generated, the MoE
# backend vLLM logged, the triton_kernels file vLLM imported, the exception, the suite's
# verdict) and $OUT/triton_kernels_copy_logs.tar.gz.
set -uo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
: "${TK_WHEEL:?set TK_WHEEL to the triton-kernels 0.1.0 wheel}"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# no FlashInfer in the stage: its sampler import kills the engine core otherwise
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ENABLE_V1_MULTIPROCESSING=0
source scripts/device/target_env.sh
W=/tmp/tk_copy; rm -rf $W; mkdir -p $W/logs $W/kernelize
$PY -m pip install -q --no-deps --target $W/kernelize "$TK_WHEEL"
D=$W/gpt-oss-mxfp4
$PY -c "from pathlib import Path; from fixtures.quant_standin import gpt_oss_shaped as g; g(Path('$D'), 256, 256)"
CASES="vendored kernelize"
[ -n "${TK_TREE:-}" ] && CASES="$CASES tree"
for c in $CASES; do
  extra=""
  [ "$c" = kernelize ] && extra=$W/kernelize
  [ "$c" = tree ] && extra=$(dirname "$TK_TREE/triton_kernels")
  # $PY itself, not $E/bin/python: that wrapper sets PYTHONPATH=/tmp/site, which dropped the
  # copy under test (round 14's first try imported vllm/third_party's in both cases)
  PYTHONPATH=${extra:+$extra:}/tmp/site timeout 300 $PY - "$D" > $W/logs/$c.json 2> $W/logs/$c.err <<'PY'
import json, sys
out = {"loaded": False, "generated": False, "exception": None, "triton_kernels": None}
try:
    from vllm.utils.import_utils import has_triton_kernels
    out["has_triton_kernels"] = has_triton_kernels()
    import triton_kernels
    out["triton_kernels"] = triton_kernels.__file__
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], skip_tokenizer_init=True, enforce_eager=True,
              gpu_memory_utilization=0.2, max_model_len=256,
              kv_cache_memory_bytes=256 * 1024 * 1024)
    out["loaded"] = True
    r = llm.generate([{"prompt_token_ids": [1, 2, 3, 4]}],
                     SamplingParams(temperature=0, max_tokens=4, detokenize=False))
    out["generated"] = bool(r[0].outputs[0].token_ids)
except BaseException as exc:  # noqa: BLE001 - the record is the point
    out["exception"] = f"{type(exc).__name__}: {exc}"[:2000]
print(json.dumps(out))
PY
  echo "$c rc=$?"
done
$PY - $W $D "$TK_WHEEL" "${TK_TREE:-}" $OUT/triton_kernels_copy.json <<'PY'
import json, re, sys, zipfile
from pathlib import Path
import pytest
from fixtures.envs import EnvBuilder
from fixtures.quant_standin import install_vllm_quant

work, ckpt, whl, tree, dest = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
with zipfile.ZipFile(whl) as zf:
    kernelize = {n: zf.read(n) for n in zf.namelist() if n.startswith("triton_kernels/")}
copies = {"vendored": None, "kernelize": kernelize}
if tree:
    root = Path(tree)
    copies["tree"] = {f"triton_kernels/{p.relative_to(root / 'triton_kernels')}": p.read_bytes()
                      for p in (root / "triton_kernels").rglob("*.py")}
out = {}
for case, files in copies.items():
    log = work / "logs" / f"{case}.json"
    lines = log.read_text().strip().splitlines() if log.exists() else []
    rec = json.loads(lines[-1]) if lines else {"exception": "no record"}
    err = (work / "logs" / f"{case}.err").read_text(errors="replace") if (work / "logs" / f"{case}.err").exists() else ""
    rec["moe_backend_logged"] = sorted(set(re.findall(r"Using (\w+) backend", err)))
    env = EnvBuilder(work / f"env-{case}")
    install_vllm_quant(env, "0.26.0")
    if files:
        env.dist("triton-kernels", "0.1.0" if case == "kernelize" else "1.0.0", files=files)
    report = work / f"report-{case}.json"
    pytest.main(["-p", "pytest_vllm_env.plugin", "--vllm-conformance", "-q", "-p", "no:randomly", "-m", "toolchain", "-k", "kernel_arch",
                 f"--vllm-env={env.prefix}", f"--vllm-checkpoint={ckpt}", "--cuda-arch=9.0",
                 f"--vllm-env-report={report}"])
    checks = json.loads(report.read_text())["checks"] if report.exists() else []
    rec["suite"] = [{k: c[k] for k in ("id", "outcome", "summary")} for c in checks]
    out[case] = rec
Path(dest).write_text(json.dumps(out, indent=1))
PY
tar -czf $OUT/triton_kernels_copy_logs.tar.gz -C $W logs
