"""Judge a built vLLM ``.whl`` without installing it (``--vllm-wheel``).

A wheel built in a CI job or an isolated build env can carry the wrong tags, a torch pin
the target env cannot meet, or extensions compiled against another torch; installing it
is when users find out today. We read the zip: the filename, ``METADATA``, ``RECORD``, and
the ``.so`` members (copied out one by one to a scratch folder, never the whole wheel).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import zipfile
from collections.abc import Iterable
from email.parser import HeaderParser
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import abi, coverage_arch
from pytest_vllm_env.checks.platform_floor import Floor, _v, glibc_of_tag
from pytest_vllm_env.facts import binaries
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers import fatbin
from pytest_vllm_env.readers.elf import ElfError
from pytest_vllm_env.tables.archs import Arch

MAX_MEMBER = 2 * 1024**3  # a member claiming more than 2 GiB is not a vLLM extension


def _as_wheel(f: Finding) -> Finding:
    return dataclasses.replace(f, id="wheel." + f.id.split(".", 1)[1])


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
                f"{host_glibc.replace('.', '_')} image), or install it where glibc >= {label}",
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


def read_metadata(zf: zipfile.ZipFile) -> tuple[str, list[str]]:
    """(dist-info folder, Requires-Dist lines) from the wheel's METADATA."""
    meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
    if meta is None:
        return "", []
    msg = HeaderParser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return meta.rsplit("/", 1)[0], msg.get_all("Requires-Dist") or []


def record_hashes(zf: zipfile.ZipFile, info_dir: str) -> Finding:
    """``wheel.record``: every RECORD hash matches its member (a tampered or partial wheel)."""
    cid = "wheel.record"
    try:
        rows = zf.read(f"{info_dir}/RECORD").decode("utf-8", "replace").splitlines()
    except KeyError:
        return F.failed(
            cid, "the wheel has no RECORD", "rebuild the wheel with `pip wheel`/`uv build`"
        )
    bad: list[str] = []
    names = set(zf.namelist())
    checked = 0
    for row in rows:
        parts = row.rsplit(",", 2)
        if len(parts) != 3 or not parts[1]:
            continue
        member, digest = parts[0], parts[1]
        algo, _, want = digest.partition("=")
        if member not in names or algo not in ("sha256", "sha384", "sha512"):
            bad.append(f"{member} (missing)" if member not in names else f"{member} ({algo}?)")
            continue
        h = hashlib.new(algo)
        with zf.open(member) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        checked += 1
        if got != want:
            bad.append(member)
    if bad:
        return F.failed(
            cid,
            f"RECORD does not match {len(bad)} member(s): the wheel was altered or cut short",
            "rebuild the wheel, or download it again",
            members=bad,
        )
    return F.passed(cid, f"RECORD hashes match all {checked} members")


def extract_extensions(zf: zipfile.ZipFile, scratch: Path) -> list[tuple[str, Path | None, str]]:
    """Copy each ``.so`` member to ``scratch``: (member, path or None, error)."""
    out: list[tuple[str, Path | None, str]] = []
    for info in zf.infolist():
        if not info.filename.endswith(".so") or info.is_dir():
            continue
        if info.file_size > MAX_MEMBER:
            out.append((info.filename, None, f"claims {info.file_size} bytes"))
            continue
        target = scratch / info.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, target.open("wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
        out.append((info.filename, target, ""))
    return out


def judge_wheel(
    path: Path,
    *,
    python_version: str | None,
    torch: abi.TorchFacts | None,
    targets: Iterable[Arch],
    scratch: Path,
    host_glibc: str | None = None,
    floor: Floor | None = None,
    env: PixiEnv | None = None,
) -> list[Finding]:
    """Every ``wheel.*`` finding for one wheel; fixes are written for ``env``, the env the
    wheel is meant for (its manifest, conda prefix or venv)."""
    if not path.is_file():
        return [
            F.error("wheel.tags", f"{path}: no such wheel", "pass an existing .whl to --vllm-wheel")
        ]
    out = [filename_tags(path, python_version, host_glibc, floor)]
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        out.append(
            F.error(
                "wheel.record", f"{path.name} is not a readable zip: {exc}", "rebuild the wheel"
            )
        )
        return out
    with zf:
        info_dir, requires = read_metadata(zf)
        out += [
            _as_wheel(f)
            for f in abi.pins(requires, {"torch": torch.version if torch else None}, env=env)
        ]
        out.append(
            record_hashes(zf, info_dir)
            if info_dir
            else F.failed(
                "wheel.record", "no .dist-info/METADATA in the wheel", "rebuild the wheel"
            )
        )
        built_for = binaries.torch_pin_of(requires)
        targets = list(targets)
        for member, so, err in extract_extensions(zf, scratch):
            ext = (
                binaries.extension_facts(so, "")
                if so
                else abi.ExtensionFacts(Path(member), "", error=err)
            )
            ext.path = Path(member)
            for f in (
                abi.symbols(ext, torch, built_for, env=env),
                abi.cudart(ext, torch, env=env, built=built_for),
                abi.cxx11(ext, torch, env=env),
            ):
                out.append(_as_wheel(f))
            try:
                images = fatbin.read_images(so) if so else None
                out += [_as_wheel(f) for f in coverage_arch.coverage(member, images, targets, err)]
            except ElfError as exc:
                out += [
                    _as_wheel(f) for f in coverage_arch.coverage(member, None, targets, str(exc))
                ]
    return out
