"""Does xformers work in this env when vLLM uses it? ``xformers.torch-pin``: xformers' wheel
pins torch exactly and its compiled ops name the torch build they were made for; next to
another torch they fail to load. ``xformers.attention``: its attention agrees with torch SDPA
on the GPU (the probe's result)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from pytest_vllm_env.checks.gpu_device import probe_blocked
from pytest_vllm_env.checks.xformers import (
    ATTENTION_TOLERANCE,
    Decision,
    uses_xformers,
    xformers_for_torch,
)
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv, requirement_of
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.gpu_probe import ProbeResult
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped


def torch_pin(
    decisions: Sequence[Decision],
    xformers_version: str | None,
    xformers_requires: Sequence[str],
    torch_version: str | None,
    built_for: str | None = None,
    torch_cuda: str | None = None,
    vllm_requires_xformers: bool = False,
    vllm_xformers: str | None = None,
    torch_imports: Sequence[str] | None = None,
    *,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
    unreadable: Sequence[str] = (),
) -> Finding:
    """xformers.torch-pin: xformers' wheel pins torch exactly (``torch==2.7.1``), and its
    ``cpp_lib.json`` names the torch its ops were compiled against (``built_for``); next to
    another torch those ops fail to load, and xformers falls back or raises at first use.
    Judged when the vision tower uses xformers, and whenever vLLM itself requires xformers
    (vLLM <= 0.10 ran all attention on it: vLLM #2245's cu121 xformers next to cu118 torch).
    ``torch_imports``: the torch-side names ``xformers/_C.so`` imports (None: not read); only
    the stable C ABI's there (:func:`stable_abi_only`) and ``cpp_lib.json``'s build pins
    nothing beyond the release it targets (round 11a). Fixes are written for ``env`` (a Pixi
    env of unknown manifest without one) and install the xformers built for the run's target
    torch (``targets``: vLLM's pin)."""
    cid = "xformers.torch-pin"
    env = env or PixiEnv(prefix=Path(".pixi/envs/default"))
    if not uses_xformers(decisions) and not vllm_requires_xformers:
        return skipped(cid, "the vision tower does not use xformers here (xformers.decision)")
    if not xformers_version:
        return skipped(cid, "xformers is not installed (xformers.decision says what to add)")
    spec = _torch_requirement(xformers_requires)
    if spec is None:
        return skipped(cid, f"xformers {xformers_version} declares no torch requirement")
    if not torch_version:
        if targets is not None and targets.torch and spec.specifier.contains(targets.torch):
            add = targets.torch_fix(env)
        else:
            add = fixes.add(env, Package("torch", str(spec.specifier), pypi=True))
        return failed(
            cid,
            f"xformers {xformers_version} needs torch {spec.specifier} but torch is not installed",
            add,
        )
    # cpp_lib.json or torch/version.py there and unreadable (a FIFO): what the ops were built
    # for, or torch's CUDA where its version has no +cuXYZ, is unknown: named, not guessed
    needed = [w for w in unreadable if "cpp_lib.json" in w or "+" not in torch_version]
    if needed:
        owner = "xformers" if "cpp_lib.json" in needed[0] else "torch"
        return error(
            cid,
            f"xformers {xformers_version} against torch {torch_version}: {needed[0]}",
            f"reinstall {owner}: " + fixes.reinstall(env, owner, pypi=True),
        )
    public = torch_version.split("+", 1)[0]
    try:
        ok = spec.specifier.contains(Version(public), prereleases=True)
    except InvalidVersion:
        ok = False
    ev = {"xformers": xformers_version, "requires": str(spec), "torch": torch_version}
    # PyPI's default torch has no "+cu130" in its dist version: take CUDA from torch/version.py
    local = torch_version.partition("+")[2] or (
        "cu" + "".join(torch_cuda.split(".")) if torch_cuda else ""
    )
    installed = f"{torch_version.split('+', 1)[0]}+{local}" if local else torch_version
    if ok and built_for and stable_abi_only(torch_imports):
        # xformers 0.0.35's setup.py builds with -DTORCH_STABLE_ONLY and
        # -DTORCH_TARGET_VERSION=<torch it built with>: its _C.so imports only aoti_torch_*,
        # which every later torch exports. _cpp_lib.py:_register_extensions just calls
        # torch.ops.load_library and prints cpp_lib.json's build only when that fails. Measured
        # on the H100 (round 11a): PyPI 0.0.35 (built for 2.10.0+cu128) ran on 2.11.0+cu130.
        if _release(built_for) > _release(public):
            return failed(
                cid,
                f"xformers {xformers_version}'s compiled ops use torch's stable C ABI as of "
                f"torch {built_for} (xformers/cpp_lib.json); the env has torch {installed}, "
                "older: the aoti_torch_* functions they call may not be there",
                _newer_stable_fix(xformers_version, public, built_for, env, targets),
                built_for=built_for,
                **ev,
            )
        return passed(
            cid,
            f"xformers {xformers_version} requires {spec}; torch is {torch_version}; its "
            f"compiled ops use only torch's stable C ABI ({len(torch_imports or ())} "
            f"aoti_torch_*/torch_* imports), so they load on torch {installed} though built "
            f"for {built_for} (the CUDA runtime they need is abi.cudart's to judge)",
            built_for=built_for,
            stable_abi=True,
            **ev,
        )
    if ok and built_for and _torch_build_key(built_for) != _torch_build_key(installed):
        # Seen on the H100: PyPI's xformers 0.0.35 says torch>=2.10 but its _C.so was built
        # against 2.10.0+cu128; next to 2.11.0+cu130 "xFormers can't load C++/CUDA extensions"
        # and memory_efficient_attention has no operator.
        return failed(
            cid,
            f"xformers {xformers_version}'s compiled ops were built for torch {built_for} "
            f"(xformers/cpp_lib.json); the env has torch {installed}: they will not load "
            f'("xFormers can\'t load C++/CUDA extensions"), though {spec} is met',
            variant_fix(xformers_version, installed, built_for, env, targets),
            built_for=built_for,
            **ev,
        )
    if ok:
        return passed(
            cid, f"xformers {xformers_version} requires {spec}; torch is {torch_version}", **ev
        )
    # the torch the run keeps or installs (vLLM's pin): xformers follows it, not the reverse
    target = targets.torch if targets is not None and targets.torch else public
    want = xformers_for_torch(target)
    fix: str = (
        fixes.pin(env, Package("xformers", f"=={want}", pypi=True)) + f" (built for torch {target})"
        if want
        else f"install the xformers release built for torch {target}"
    )
    if target != public and targets is not None:
        fix = fixes.join([targets.torch_fix(env), fix], " and ")
    if want and vllm_xformers and not _allows(vllm_xformers, want):
        # vLLM #28551: vLLM 0.11.1rc7 pinned xformers==0.0.32.post2, which pins torch 2.8.0,
        # while vLLM itself pins torch 2.9.0: no resolver can satisfy both pins
        fix += f" and override vLLM's own pin (xformers{vllm_xformers}, which cannot hold with " + (
            f'its torch): [pypi-options] dependency-overrides = {{ xformers = "=={want}" }} in '
            f"{fixes.manifest_name(env)} (uv: override-dependencies)"
            if fixes.kind_of(env) in ("pixi", "pyproject")
            else f"its torch): `--no-deps` for xformers=={want}, or uv's override-dependencies"
        )
    if targets is None or not targets.torch or spec.specifier.contains(target):
        fix = fixes.otherwise(fix, f"pin torch to match ({spec.specifier})", ", or ")
    return failed(
        cid,
        f"xformers {xformers_version} requires {spec}, but the env has torch {torch_version}: "
        "its compiled ops will not load against this torch",
        fix,
        **ev,
    )


def _index(local: str) -> str:
    return f"https://download.pytorch.org/whl/{local or 'cpu'}"


def variant_fix(
    xformers_version: str,
    installed: str,
    built_for: str,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
) -> str:
    """The fix for xformers ops built for another torch build, in ``env``'s language. Where
    only the CUDA variant differs (``2.1.2+cu121`` vs ``2.1.2+cu118``, vLLM #2245) it names
    the variant: pinning ``torch == 2.1.2`` again would change nothing. Both variants live on
    PyTorch's index. With the run's ``targets`` (issue 21: one torch and one CUDA every fix
    points at), xformers follows the target torch: where the run installs another torch
    (vLLM's pin, another CUDA build) the fix is that torch and the xformers built for it, and
    a torch of xformers' own build is offered only where it is the target."""
    env = env or PixiEnv(prefix=Path(".pixi/envs/default"))
    release, _, local = installed.partition("+")
    built_release, _, built_local = built_for.partition("+")
    moved = _follow_target(xformers_version, release, env, targets) if targets else ""
    if moved:
        return moved
    xformers = Package("xformers", f"=={xformers_version}", pypi=True)
    mine = f"install the xformers wheel built for torch {installed}: " + fixes.pin(
        env, xformers, index=_index(local)
    )
    # the installed torch is the run's target: a torch of xformers' own build is offered only
    # where it is that target too (it would move torch away from what every other fix keeps)
    keep_torch = (
        targets is None or not targets.torch or _is_target(targets, built_release, built_local)
    )
    if release == built_release and built_local:
        torch = Package("torch", f"=={release}", pypi=True)
        mine += (
            f" (if that index has no such build, take the xformers release it has for {installed})"
        )
        if not keep_torch:
            return mine
        return fixes.otherwise(
            mine,
            "the torch variant xformers was built for: "
            + fixes.pin(env, torch, index=_index(built_local)),
            ", or ",
        )
    if not keep_torch:
        return mine
    torch = Package("torch", f"=={built_release}", pypi=True)
    other = fixes.pin(env, torch, index=_index(built_local) if built_local else "")
    return fixes.otherwise(mine, f"pin torch to match it: {other}", ", or ")


def _newer_stable_fix(
    xformers_version: str,
    public: str,
    built_for: str,
    env: PixiEnv,
    targets: FixTargets | None,
) -> str:
    """xformers' stable-ABI ops target a newer torch than the installed one: the run's target
    torch with the xformers built for it where the run installs another torch; else the
    xformers built for this torch, or (no target to keep) a torch at least as new."""
    if targets is not None and (moved := _follow_target(xformers_version, public, env, targets)):
        return moved
    want = xformers_for_torch(public)
    fix: str = (
        fixes.pin(env, Package("xformers", f"=={want}", pypi=True)) + f" (built for torch {public})"
        if want
        else f"the xformers release built for torch {public}"
    )
    if targets is None or not targets.torch:
        newer = Package("torch", f">={_release_text(built_for)}", pypi=True)
        fix = fixes.otherwise(fix, "install torch that new or later: " + fixes.pin(env, newer))
    return fix


def _follow_target(xformers_version: str, release: str, env: PixiEnv, targets: FixTargets) -> str:
    """The run installs another torch than ``release`` (or another CUDA build of it): that
    torch (:meth:`FixTargets.torch_fix`, the text every other check gives) and the xformers
    built for it, from PyPI where PyPI's torch is that build, else from the PyTorch index of
    the target's variant. "" when the installed torch is the target."""
    if not targets.torch or not targets.torch_changes:
        return ""
    want = xformers_for_torch(targets.torch) or (
        xformers_version if targets.torch == release else None
    )
    build = f"torch {targets.torch}" + (f" ({targets.variant})" if targets.variant else "")
    if want:
        index = targets.index or ""
        xformers = fixes.pin(env, Package("xformers", f"=={want}", pypi=True), index=index)
        xformers += f" (built for {build})"
    else:
        xformers = f"the xformers release built for {build}"
    return fixes.join([targets.torch_fix(env), xformers], " and ")


def _is_target(targets: FixTargets, release: str, local: str) -> bool:
    """Whether torch ``release`` (``+local``: its CUDA variant) is the run's target torch."""
    if release != targets.torch:
        return False
    return not local or targets.variant is None or local == targets.variant


def _torch_build_key(version: str) -> tuple[str, str]:
    """``2.11.0+cu130`` -> ("2.11", "13"): the torch minor and the CUDA major an extension's
    ABI depends on (libcudart.so.12 vs .13)."""
    release, _, local = version.partition("+")
    minor = ".".join(release.split(".")[:2])
    match = re.match(r"cu(\d+)\d$", local)
    return minor, (match[1] if match else local)


def stable_abi_only(torch_imports: Sequence[str] | None) -> bool:
    """True when an extension's torch-side imports are all the stable C ABI's (``aoti_torch_*``
    and ``torch_*`` C functions, no mangled ``c10::``/``at::``/``torch::`` name): built with
    ``TORCH_STABLE_ONLY``, it is not tied to the exact torch it was compiled against."""
    return bool(torch_imports) and not any(n.startswith("_Z") for n in torch_imports or ())


def _release(version: str) -> tuple[int, int]:
    """``2.10.0+cu128`` -> (2, 10): the torch minor a stable-ABI build targets."""
    try:
        major, minor = Version(version.split("+", 1)[0]).release[:2]
    except (InvalidVersion, ValueError):
        return (0, 0)
    return major, minor


def _release_text(version: str) -> str:
    return ".".join(map(str, _release(version)))


def vllm_xformers_requirement(dist: Any) -> str | None:
    """vLLM's specifier for xformers on this platform (``"==0.0.31"``, ``""`` when unpinned),
    None when vLLM does not require xformers (or only as an extra)."""
    req = requirement_of(getattr(dist, "requires", ()) or (), ("xformers",))
    return str(req.specifier) if req is not None else None


def _allows(specifier: str, version: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True


def _torch_requirement(requires: Sequence[str]) -> Requirement | None:
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name.lower() == "torch" and not (req.marker and "extra" in str(req.marker)):
            return req
    return None


def attention(
    probe: ProbeResult,
    decisions: Sequence[Decision],
    python: str = "",
    *,
    env: PixiEnv | None = None,
) -> Finding:
    """xformers.attention: memory_efficient_attention agrees with torch SDPA on the GPU (a
    missing xformers' fix written for ``env``)."""
    cid = "xformers.attention"
    env = env or PixiEnv(prefix=Path(".pixi/envs/default"))
    retry = f"run `{python} -c 'import xformers.ops'` in the env and fix what it prints"
    if blocked := probe_blocked(cid, probe, "xformers", retry):
        return blocked
    d = probe.data
    if d.get("xformers") is None:
        return failed(
            cid,
            f"xformers cannot be imported by {python}: {d.get('exception', 'not installed')}",
            f"install the xformers release built for the env's torch ({d.get('torch')}): "
            + _xformers_for(env, str(d.get("torch") or "")),
            torch=d.get("torch"),
        )
    ev = {k: d.get(k) for k in ("xformers", "torch", "device", "dtype", "diffs")}
    diff = d.get("max_abs_diff")
    if not isinstance(diff, (int, float)) or diff != diff or diff > ATTENTION_TOLERANCE:
        ran = isinstance(diff, (int, float))
        return failed(
            cid,
            (
                f"xformers {d['xformers']} memory_efficient_attention differs from torch SDPA "
                f"by {diff} (> {ATTENTION_TOLERANCE})"
                if ran
                else f"xformers {d['xformers']} memory_efficient_attention did not run on "
                f"{d.get('device')}"
            )
            + (f": {str(d['exception']).splitlines()[0]}" if d.get("exception") else ""),
            "xformers' kernels do not fit this torch/GPU: install the xformers release built "
            f"for torch {d.get('torch')} (`python -m xformers.info` lists the usable ops)",
            **ev,
        )
    return passed(
        cid,
        f"xformers {d['xformers']} memory_efficient_attention matches torch SDPA on "
        f"{d.get('device')} within {ATTENTION_TOLERANCE} (max abs diff {diff:.2e}, "
        f"{d.get('dtype')})",
        **ev,
    )


def _xformers_for(env: PixiEnv, torch: str) -> str:
    """The xformers release built for ``torch`` (:func:`xformers_for_torch`), in the env's
    language; where the table does not know it, where to add it."""
    want = xformers_for_torch(torch.split("+", 1)[0]) if torch else None
    if want:
        return fixes.add(env, Package("xformers", f"=={want}", pypi=True))
    return f"add it to {fixes.deps_place(env, pypi=True)} (xformers.decision names the release)"
