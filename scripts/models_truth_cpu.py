"""Record what the REAL vLLM loaders do with the model-family variants
(``fixtures/model_variants.py``: Qwen3-MoE, Qwen2.5-VL, and the held-out Qwen2-MoE, Mixtral,
Qwen2-VL), on this CPU machine, one release after the other (one loader process at a time).

For each release (a py3.12 venv with that vLLM, ``~/.cache/pytest-vllm-env/venvs/
vllm-<version>``, see scripts/loader_truth_cpu.py for how it is made), writes every variant to
a temporary folder and runs ``pytest_vllm_env/probes/vllm_load_weights.py --batch`` on them
(vLLM's own config code, model construction and ``DefaultModelLoader.load_weights``), then
keeps the essentials (``loader_truth_cpu.summarize``) in
``fixtures/loader_truth/models_outcomes.json``, and the static reader's view of the same
release's model files in ``fixtures/loader_truth/models-vllm-<release>.json``;
``tests/test_model_families.py`` holds the toolchain verdict against both.

Usage::

    python scripts/models_truth_cpu.py [--releases 0.26.0,0.33.0] [--only NAME,...]
    python scripts/models_truth_cpu.py --sources-only   # re-read the model files only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from loader_truth_cpu import probe_release, summarize, write_sources  # noqa: E402

from fixtures import model_variants  # noqa: E402

OUT = REPO / "fixtures" / "loader_truth" / "models_outcomes.json"
SOURCES = REPO / "fixtures" / "loader_truth" / "models-vllm-{release}.json"


def archs() -> list[str]:
    """The architectures of the bases (config.json's ``architectures[0]``)."""
    bases = sorted({v.base for v in model_variants.VARIANTS.values()})
    return [model_variants.spec(b)["config"]["architectures"][0] for b in bases]


def record_sources(release: str) -> None:
    """The static reader's facts of that release's model files for the bases' archs."""
    write_sources(release, archs(), Path(str(SOURCES).format(release=release)))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", default="0.26.0,0.33.0")
    ap.add_argument("--only", default="")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--sources-only", action="store_true")
    a = ap.parse_args(argv)
    releases = a.releases.split(",")
    for release in releases:
        record_sources(release)
    if a.sources_only:
        return 0
    names = [n for n in a.only.split(",") if n] or list(model_variants.VARIANTS)
    recorded = json.loads(OUT.read_text()) if OUT.is_file() else {"variants": {}, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="loader-truth-") as tmp:
        jobs = []
        for name in names:
            folder = model_variants.make(name, Path(tmp) / name)
            jobs.append({"name": name, "model": str(folder), "mode": "load"})
        (Path(tmp) / "jobs.json").write_text(json.dumps(jobs))
        for release in releases:
            lines, recorded["runs"][release] = probe_release(release, tmp, len(jobs), a.timeout)
            for result in lines:
                name = result["job"]["name"]
                rec = summarize(result)
                # where a checkpoint's own lm_head.weight went: its own parameter, or the
                # tied embedding's (0.26.0's Qwen3-MoE shares the Parameter: the embedding's
                # tensor, read after it, overwrites it)
                r0 = ((result.get("ranks") or {}).get("0")) or {}
                head = [x["param"] for x in r0.get("routed", []) if x["tensor"] == "lm_head.weight"]
                if head:
                    rec["head_param"] = head[0]
                recorded["variants"].setdefault(name, {})[release] = rec
    for name in names:
        recorded["variants"].setdefault(name, {})["variant"] = model_variants.describe(name)
    OUT.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
