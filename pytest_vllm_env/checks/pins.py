"""``pins.siblings``: the kernel packages' own pins, from their metadata, against what is installed.

A resolver never builds an env where torch 2.11.0 (``triton==3.6.0``) sits next to triton
3.5.1, or torchvision 0.26.0 (``torch==2.11.0``) next to torch 2.13.0; a later ``pip install``
of one package, ``--no-deps``, an override, or a conda package next to a PyPI one does. Each
pin is read from the owner's ``Requires-Dist`` (:mod:`pytest_vllm_env.facts.pins`), so no list
of names decides which pairs matter.

Levels: where the owner's compiled objects need a library the sibling ships (``DT_NEEDED``:
torchvision's ``_C.so`` needs torch's ``libc10.so``), the pin is an ABI: the loader binds the
owner to that exact build and another one fails to load or to run: failed. Otherwise (a pure
Python side, or two native packages that never link each other, as vLLM 0.26.0 and numba or
apache-tvm-ffi, which ran on the H100 off their pins) the owner was written against the
sibling's Python API and may work or fail where the two disagree: warning.
vLLM's pins of torch & co. are judged by ``abi.pins`` and xformers' torch
pin by ``xformers.torch-pin``; those pairs are left to them here.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.pins import PinFacts, SiblingPin
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning
from pytest_vllm_env.tables.xformers_torch import xformers_for_torch

CID = "pins.siblings"
# (owner, sibling) pairs another check already judges, with its id. vLLM's are abi.PINNED
# (checks/abi.py; tests/test_runtime_pins.py keeps the two lists equal).
JUDGED_ELSEWHERE: dict[tuple[str, str], str] = {
    **{
        ("vllm", name): "abi.pins"
        for name in ("torch", "torchvision", "torchaudio", "xformers", "flashinfer-python")
    },
    ("xformers", "torch"): "xformers.torch-pin",
}


def judge(facts: PinFacts, env: PixiEnv, targets: FixTargets | None = None) -> list[Finding]:
    """One finding per pin that does not hold; one passed finding when all hold. A pin on
    torch that excludes the run's target torch (``targets``: vLLM's pin) is fixed on the
    owner's side: the owner's release for that torch, not a torch every other fix undoes."""
    mine = [p for p in facts.pins if _elsewhere(p) is None]
    if not mine:
        return [skipped(CID, f"no installed distribution in {env.prefix} pins another one")]
    broken = [p for p in mine if not p.holds]
    if not broken:
        shown = ", ".join(
            f"{p.owner} {p.owner_version}: {p.sibling}{p.specifier}" for p in mine[:6]
        )
        more = f" and {len(mine) - 6} more" if len(mine) > 6 else ""
        return [
            passed(
                CID,
                f"{len(mine)} sibling pins hold ({shown}{more})",
                pins=[f"{p.owner}: {p.requirement} (installed {p.installed})" for p in mine],
                judged_elsewhere=sorted(
                    {f"{p.owner}->{p.sibling}" for p in facts.pins}
                    - {f"{p.owner}->{p.sibling}" for p in mine}
                ),
            )
        ]
    return [_broken(p, env, targets) for p in broken]


def _elsewhere(pin: SiblingPin) -> str | None:
    key = (canonicalize_name(pin.owner), canonicalize_name(pin.sibling))
    return JUDGED_ELSEWHERE.get(key)


def _allows(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


def _owner_fix(pin: SiblingPin, env: PixiEnv, targets: FixTargets) -> str:
    """The owner's release built for the run's target torch, with that torch, in one request:
    the installer then picks the owner release whose own pin is that torch (``!=`` the
    installed one, so pip cannot keep it: "Requirement already satisfied")."""
    torch = targets.torch or ""
    known = xformers_for_torch(torch) if canonicalize_name(pin.owner) == "xformers" else None
    spec = f"=={known}" if known else f"!={pin.owner_version}"
    if fixes.kind_of(env) in ("pixi", "pyproject"):
        spec = f"=={known}" if known else "*"
    owner = Package(pin.owner, spec, pypi=True)
    why = f"install the {pin.owner} release built for torch {torch} ({targets.torch_why}): "
    if targets.index is None and env.conda("pytorch") is None:
        torch_pkg = Package("torch", f"=={torch}", pypi=True)
        if fixes.kind_of(env) in ("pixi", "pyproject"):
            return why + fixes.join([fixes.pin(env, torch_pkg), fixes.pin(env, owner)], " and ")
        return why + fixes.add(env, torch_pkg, owner, verb="pin")
    steps = [targets.torch_fix(env)] if targets.torch_changes else []
    steps.append(fixes.pin(env, owner))
    return why + fixes.join(steps, " and ")


def _broken(pin: SiblingPin, env: PixiEnv, targets: FixTargets | None = None) -> Finding:
    what = f"{pin.owner} {pin.owner_version} requires {pin.sibling}{pin.specifier}"
    have = f"the env has {pin.sibling} {pin.installed}"
    pypi = env.conda(pin.sibling) is None
    torch = targets.torch if targets is not None else None
    if canonicalize_name(pin.sibling) == "torch" and torch and not _allows(pin.specifier, torch):
        fix = _owner_fix(pin, env, targets)  # type: ignore[arg-type]
    else:
        fix = fixes.otherwise(
            fixes.pin(env, Package(pin.sibling, pin.specifier, pypi=pypi))
            + f" (the pin {pin.owner} {pin.owner_version} declares)",
            f"install the {pin.owner} release built for {pin.sibling} {pin.installed}",
            ", or ",
        )
    ev = {
        "requirement": pin.requirement,
        "installed": f"{pin.sibling} {pin.installed}",
        "read_from": f"{pin.owner}-{pin.owner_version}.dist-info/METADATA (Requires-Dist)",
        "compiled_code": f"{pin.owner}: {_yes(pin.owner_native)}, "
        f"{pin.sibling}: {_yes(pin.sibling_native)}",
    }
    if pin.unreadable:  # which of the two levels is unknown: name the file, never guess one
        return error(
            CID,
            f"{what}, {have}: whether {pin.owner}'s compiled code links {pin.sibling}'s "
            f"libraries is unknown: {pin.unreadable}",
            f"reinstall {pin.damaged}, whose {pin.damaged_part} is damaged: "
            f"{fixes.reinstall(env, pin.damaged, pypi=True)}",
            **ev,
        )
    if pin.links:
        return failed(
            CID,
            f"{what}, {have}: {pin.owner}'s compiled code links {pin.sibling}'s "
            f"{', '.join(pin.links)}, built against that {pin.sibling}; next to another it "
            "fails to load or to run",
            fix,
            **ev,
            links=list(pin.links),
        )
    how = (
        f"{pin.owner}'s compiled code links none of {pin.sibling}'s libraries"
        if pin.owner_native and pin.sibling_native and pin.links is not None
        else f"{pin.owner} was written against that {pin.sibling}'s Python API"
    )
    return warning(
        CID,
        f"{what}, {have}: {how}; it may work, or fail where the two disagree "
        "(pip check reports this env as broken)",
        fix,
        **ev,
    )


def _yes(flag: bool | None) -> str:
    return {True: "yes (a .so in RECORD)", False: "no (pure Python)"}.get(
        flag, "unknown (no RECORD)"
    )
