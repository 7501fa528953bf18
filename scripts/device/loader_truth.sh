#!/usr/bin/env bash
# Issue 22: what only a GPU settles about the loader mutations (fixtures/loader_variants.py).
# The CPU runs of the REAL vLLM 0.26.0 / 0.33.0 loaders (scripts/loader_truth_cpu.py,
# fixtures/loader_truth/outcomes.json) settle every refusal, every parameter left unset, every
# dtype cast and which copy of a tensor loads; they cannot say what the model then computes.
# This loads every variant that loads on the CPU (39: tp 1 only) in the staged vLLM 0.26.0 on
# the GPU, each in its own process through probes/vllm_generate.py (tokens, first-token top-20
# logprobs, the English export's perplexity, the quant config vLLM chose; a variant's launch
# quantization= passed as vLLM's argument: the BF16 Qwen3 quantized online, the CPU cannot),
# then judges them against the checkpoint.* verdicts (tests/test_loader_truth_gpu.py).
#
# Run it in one device call right after the three staging calls of ../shared/gpu/README.md
# (machine still warm, /tmp/site holding vLLM), from the repository root:
#   bash scripts/device/loader_truth.sh
# or fold it into the third staging call:
#   cp .gpu_c/* /tmp/stage/ && bash .gpu_c/install.sh && bash scripts/device/loader_truth.sh
# Writes under $OUT: loader_truth_gpu.json (per variant what vLLM did on the GPU; commit it as
# fixtures/measured/loader_truth_h100.json and tests/test_loader_truth_gpu.py holds the verdicts
# against it in every run), loader_truth_gpu.log, loader_truth_judged.log (the test run on the
# device), smi.txt. Time: BUDGET_S (default 400) for the loads, PARALLEL (default 4) at once;
# the whole script stays under 8 minutes (loads are never started past the budget, and the
# JSON is rewritten after each load, so a cut run keeps what it measured). Variants the budget
# left out are listed in the JSON's not_run: ONLY="name ..." loads just those (the bases
# good, good-tied and qwen3-good are always loaded too, for the comparison).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?OUT must name the folder that comes back}
PY=${PY:-/opt/torch/.venv/bin/python}
SITE=${SITE:-/tmp/site}  # where ../shared/gpu/install.sh put vLLM
if [ ! -d $SITE/vllm ]; then
  echo "vLLM is not staged in $SITE: run the three calls of ../shared/gpu/README.md first" | tee $OUT/loader_truth_gpu.log
  exit 2
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $OUT/smi.txt
t0=$(date +%s)
timeout -k 15 $(( ${BUDGET_S:-400} + 40 )) $PY scripts/device/loader_truth_gpu.py "$OUT/loader_truth_gpu.json" \
  --budget ${BUDGET_S:-400} --parallel ${PARALLEL:-4} --work /tmp/loadertruth ${ONLY:+--only $ONLY} 2>&1 | tee $OUT/loader_truth_gpu.log
echo "loads: rc=${PIPESTATUS[0]} $(( $(date +%s) - t0 )) s"
# the judgement, here and now (CPU only, seconds): the same test that reads the committed file
VLLM_ENV_LOADER_TRUTH_GPU=$OUT/loader_truth_gpu.json timeout 120 $PY -m pytest -p no:cacheprovider -q -rfs \
  -p no:randomly tests/test_loader_truth_gpu.py > $OUT/loader_truth_judged.log 2>&1
echo "judged: rc=$? $(tail -1 $OUT/loader_truth_judged.log)"
grep -E "^WARNING" $OUT/loader_truth_gpu.log
grep -E "^FAILED|^SKIPPED.*the GPU run is" $OUT/loader_truth_judged.log | cut -c1-400 | head -60
echo "total $(( $(date +%s) - t0 )) s"
