"""Judge a built vLLM ``.whl`` without installing it (``--vllm-wheel``).

A wheel built in a CI job or an isolated build env can carry the wrong tags, a torch pin
the target env cannot meet, or extensions compiled against another torch; installing it
is when users find out today. The zip is read (readers/wheel.py: the filename, ``METADATA``,
``RECORD``, and the ``.so`` members, each copied into a file of ours and read, never
extracted by its own name) by the ``vllm_wheel_facts`` fixture; here they are judged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import abi, coverage_arch
from pytest_vllm_env.checks.platform_floor import Floor, _v, glibc_of_tag
from pytest_vllm_env.facts import binaries
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.fatbin import FatbinImage
from pytest_vllm_env.readers.wheel import RecordCheck
from pytest_vllm_env.tables.archs import Arch


def _as_wheel(f: Finding) -> Finding:
    return replace(f, id="wheel." + f.id.split(".", 1)[1])


def filename_tags(
    path: Path,
    python_version: str | None,
    host_glibc: str | None = None,
    floor: Floor | None = None,
) -> Finding:
    """``wheel.tags``: the filename parses and one of its tags fits a Linux x86_64 CPython,
    with a manylinux glibc this machine has (pip refuses it otherwise: "is not a supported
    wheel on this platform") and, in a Pixi env, the manifest's glibc floor allows (Pixi
    refuses a path wheel its platform cannot take, prefix-dev/pixi#5266)."""
    cid = "wheel.tags"
    try:
        name, version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        return F.error(cid, f"{path.name}: {exc}", "rename the wheel as `pip wheel` writes it")
    py = (python_version or "3.12").split(".")[:2]
    want = int("".join(py)) if all(p.isdigit() for p in py) else 312
    ok = [t for t in tags if _fits(t, want, py[0])]
    if ok:
        needs = [g for t in ok if (g := glibc_of_tag(t.platform))]
        need = min(needs) if len(needs) == len(ok) else None  # an `any`/linux tag needs none
        label = f"{need[0]}.{need[1]}" if need else ""
        if need and host_glibc and need > _v(host_glibc):
            return F.failed(
                cid,
                f"{path.name}: its manylinux tag needs glibc {label}, this machine has "
                f'{host_glibc}: pip refuses it ("is not a supported wheel on this platform")',
                f"build the wheel on a system with glibc <= {host_glibc} (a manylinux_"
                f"{'_'.join(host_glibc.split('.'))} image), or install it where glibc >= {label}",
            )
        if need and floor is not None and floor.version and need > _v(floor.version):
            return F.failed(
                cid,
                f"{path.name}: its manylinux tag needs glibc {label}, the env's Pixi floor is "
                f"{floor.version} ({floor.where}): Pixi will not install it",
                f'set `libc = "{label}"` in {floor.table} of {floor.manifest} (`pixi workspace '
                f"system-requirements add glibc {label}`)",
            )
        return F.passed(cid, f"{name} {version}: tag {ok[0]} fits CPython {'.'.join(py)} on Linux")
    return F.failed(
        cid,
        f"{path.name}: no tag fits CPython {'.'.join(py)} on Linux x86_64 "
        f"(has {', '.join(sorted(map(str, tags)))})",
        f"build the wheel with the env's Python ({python_version}) on Linux x86_64",
    )


def _fits(tag: Tag, want: int, major: str) -> bool:
    """cp312 fits 3.12; cp38-abi3 fits every CPython >= 3.8; py3-none-any fits all."""
    if not ("x86_64" in tag.platform or tag.platform == "any"):
        return False
    if tag.interpreter in (f"py{major}", f"cp{want}"):
        return True
    digits = tag.interpreter[2:]
    return (
        tag.abi == "abi3"
        and tag.interpreter.startswith("cp")
        and digits.isdigit()
        and int(digits) <= want
    )


@dataclass
class WheelMember:
    """One ``.so`` member as read (``ext.path`` is the member's name in the wheel), with its
    fatbin images; ``images_error`` says why they could not be read."""

    name: str
    ext: binaries.ExtensionFacts
    images: list[FatbinImage] | None = None
    images_error: str = ""


@dataclass
class WheelFacts:
    """What one ``--vllm-wheel`` holds, read without extracting it (readers/wheel.py)."""

    path: Path
    unreadable: str = ""  # no such wheel, not a regular file, not a zip: nothing else read
    missing: bool = False
    info_dir: str = ""
    requires: list[str] = field(default_factory=list)
    record: RecordCheck | None = None
    members: list[WheelMember] = field(default_factory=list)


def record_finding(record: RecordCheck | None) -> Finding:
    """``wheel.record``: every RECORD hash matches its member (a tampered or partial wheel)."""
    cid = "wheel.record"
    if record is None:
        return F.failed(cid, "no .dist-info/METADATA in the wheel", "rebuild the wheel")
    if record.problem == "the wheel has no RECORD":
        return F.failed(cid, record.problem, "rebuild the wheel with `pip wheel`/`uv build`")
    if record.problem:
        return F.error(
            cid,
            f"RECORD not checked: {record.problem}",
            "rebuild the wheel with `pip wheel`/`uv build`, or download it again",
        )
    if record.bad:
        return F.failed(
            cid,
            f"RECORD does not match {len(record.bad)} member(s): the wheel was altered or cut "
            "short",
            "rebuild the wheel, or download it again",
            members=record.bad,
        )
    return F.passed(cid, f"RECORD hashes match all {record.checked} members")


def judge_wheel(
    wheel: WheelFacts,
    *,
    python_version: str | None,
    torch: binaries.TorchFacts | None,
    targets: Iterable[Arch],
    host_glibc: str | None = None,
    floor: Floor | None = None,
    env: PixiEnv | None = None,
) -> list[Finding]:
    """Every ``wheel.*`` finding for one wheel; fixes are written for ``env``, the env the
    wheel is meant for (its manifest, conda prefix or venv)."""
    path = wheel.path
    if wheel.missing:
        return [
            F.error("wheel.tags", f"{path}: no such wheel", "pass an existing .whl to --vllm-wheel")
        ]
    out = [filename_tags(path, python_version, host_glibc, floor)]
    if wheel.unreadable:
        out.append(
            F.error(
                "wheel.record",
                f"{path.name} is not a readable zip: {wheel.unreadable}",
                "rebuild the wheel",
            )
        )
        return out
    out += [
        _as_wheel(f)
        for f in abi.pins(wheel.requires, {"torch": torch.version if torch else None}, env=env)
    ]
    out.append(record_finding(wheel.record))
    built_for = binaries.torch_pin_of(wheel.requires)
    targets = list(targets)
    for member in wheel.members:
        ext = member.ext
        for f in (
            abi.symbols(ext, torch, built_for, env=env),
            abi.cudart(ext, torch, env=env),
            abi.cxx11(ext, torch, env=env),
        ):
            out.append(_as_wheel(f))
        out += [
            _as_wheel(f)
            for f in coverage_arch.coverage(
                member.name, member.images, targets, member.images_error, env=env, wheel=True
            )
        ]
    return out
