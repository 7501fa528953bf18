"""How long does judging an env from pixi.lock take, and which parser should read the lock?

Prints, for a 500-package lock (seed 001's packages plus filler wheels, written by
fixtures/pixi_locks.py in formats 5, 6 and 7):

- the import time of each candidate in a fresh interpreter (PyYAML with libyaml, ruamel.yaml,
  py-rattler), and the size of its installed files;
- the parse time of that lock with each (best of 5), to the same answer: the packages of
  one env on one platform;
- end to end, the number the goal (<= 0.5 s for a 500-package lock) is judged on: from
  reading pixi.lock to every ``lock.*`` verdict, in process; and the wall time of
  ``pytest --vllm-conformance -m toolchain -k test_lock`` in lock mode on that lock and on
  seed 001's 160-package one (pytest's start-up and the suite's collection are in both).

ruamel.yaml and py-rattler are optional here: install them in the venv to compare
(``pip install ruamel.yaml py-rattler``); the plugin itself uses PyYAML only.

    .venv/bin/python benchmarks/lock_parse.py [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixtures import pixi_locks  # noqa: E402

N = 500


def import_time(module: str) -> float | None:
    """Seconds to import ``module`` in a fresh interpreter (best of 3), None if missing."""
    best = None
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        value = float(done.stdout.strip())
        best = value if best is None else min(best, value)
    return best


def installed_mb(dist: str) -> float | None:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    total = 0
    for f in files:
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    return total / 1e6


def best_of(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def parse_pyyaml(path: Path) -> int:
    from pytest_vllm_env.readers.pixilock import read_lock

    return len(read_lock(path).env("default", "linux-64"))


def parse_pyyaml_pure(path: Path) -> int:
    """The fallback when PyYAML was built without libyaml: same reader, Python loader."""
    from unittest import mock

    import yaml

    from pytest_vllm_env.readers import pixilock

    with mock.patch.object(pixilock, "_Loader", yaml.BaseLoader):
        return len(pixilock.read_lock(path).env("default", "linux-64"))


def parse_ruamel(path: Path) -> int:
    from ruamel.yaml import YAML

    doc = YAML(typ="safe", pure=False).load(path.read_text())
    return len(doc["environments"]["default"]["packages"]["linux-64"])


def parse_rattler(path: Path) -> int:
    import rattler

    lock = rattler.LockFile.from_path(path)
    env = lock.environment("default")
    platform = next(p for p in env.platforms() if str(p) == "linux-64")
    return len(env.packages(platform))


def lock_checks_in_process(workspace: Path) -> float:
    """Seconds from reading pixi.lock to every lock.* verdict, in this process (best of 5):
    what lock mode adds to a run, without pytest's start-up."""
    from pytest_vllm_env.checks import lock, lock_cuda, lock_pypi
    from pytest_vllm_env.facts.env import EnvSpec
    from pytest_vllm_env.facts.lock_env import forget_locks, open_env
    from pytest_vllm_env.tables.archs import parse_arch

    manifest = workspace / "pixi.toml"
    spec = EnvSpec(workspace / ".pixi/envs/default", "default", manifest, str(manifest))
    archs = [parse_arch("12.0")]

    def judge() -> None:
        forget_locks()  # parse the lock each round: lock_env keeps one parse per file
        env = open_env(spec, platform="linux-64")
        lock.lock_file(env.locked)
        lock_cuda.torch_archs_check(env, archs, "--cuda-arch")
        lock_cuda.nvcc_archs(env, archs, "--cuda-arch")
        lock_cuda.cuda_match(env)
        lock_cuda.build_deps(env)
        lock_pypi.torch_pins(env)
        lock_pypi.wheel_tags(env)

    return best_of(judge)


def pytest_run(workspace: Path) -> float:
    """Wall seconds of ``pytest --vllm-conformance -m toolchain -k test_lock`` (best of 3)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "--vllm-conformance",
        "-m",
        "toolchain",
        "-k",
        "test_lock",
        f"--pixi-manifest={workspace / 'pixi.toml'}",
        "--vllm-env=default",
        "--cuda-arch=12.0",
    ]
    best = None
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=workspace, capture_output=True, text=True)
        value = time.perf_counter() - t
        best = value if best is None else min(best, value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict = {"packages": N, "python": sys.version.split()[0]}
    import yaml

    results["libyaml"] = bool(getattr(yaml, "__with_libyaml__", False))
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        candidates = (("yaml", "PyYAML"), ("ruamel.yaml", "ruamel.yaml"), ("rattler", "py-rattler"))
        for module, dist in candidates:
            results[f"import_s[{dist}]"] = import_time(module)
            results[f"installed_mb[{dist}]"] = installed_mb(dist)
        parsers = (
            ("PyYAML", parse_pyyaml),
            ("PyYAML without libyaml", parse_pyyaml_pure),
            ("ruamel.yaml", parse_ruamel),
            ("py-rattler", parse_rattler),
        )
        for version in (5, 6, 7):
            path = workdir / f"pixi-v{version}.lock"
            pixi_locks.big_lock(N, version).write(path)
            results[f"lock_kb[v{version}]"] = round(path.stat().st_size / 1024)
            for label, fn in parsers:
                try:
                    count = fn(path)
                except ImportError:
                    continue
                except Exception as exc:  # a parser that cannot read this version
                    results[f"parse_s[{label}, v{version}]"] = f"failed: {type(exc).__name__}"
                    continue
                results[f"parse_s[{label}, v{version}]"] = round(
                    best_of(lambda fn=fn, path=path: fn(path)), 4
                )
                results[f"packages[{label}, v{version}]"] = count
        runs = {}
        for label, n in (("500 packages", N), ("seed 001, 160 packages", 0)):
            ws = workdir / f"ws-{n}"
            ws.mkdir()
            (ws / "pixi.toml").write_text(pixi_locks.SEED_001_MANIFEST)
            builder = pixi_locks.big_lock(n, 6) if n else pixi_locks.seed_001_lock(6)
            builder.write(ws / "pixi.lock")
            results[f"lock_to_verdicts_s[{label}, in process]"] = round(
                lock_checks_in_process(ws), 4
            )
            runs[label] = pytest_run(ws)
            results[f"pytest_run_s[{label}, -k test_lock]"] = round(runs[label], 3)
        results["pytest_run_s difference (500 vs 160 packages)"] = round(
            runs["500 packages"] - runs["seed 001, 160 packages"], 3
        )
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
