"""glibc floors: the binaries' symbol versions against the machine, and the wheels' manylinux
tags against what the env's installer may take.

Real failures these checks exist for:

- ``platform.glibc``: ``ImportError: /lib64/libc.so.6: version `GLIBC_2.32' not found
  (required by .../vllm/_C.abi3.so)`` (vLLM #6562, CentOS 7 with glibc 2.17). The loader
  compares each ``.gnu.version_r`` entry of a library with the ``.gnu.version_d`` of the file
  that provides it; the same holds for ``GLIBCXX_3.4.x`` against the env's ``libstdc++``.
- ``platform.wheel-tag``: Pixi assumes glibc 2.28 unless ``[system-requirements] libc`` says
  otherwise, so it rejects vLLM 0.13.0's only Linux wheel (``manylinux_2_31``), falls back to
  the sdist and starts a CUDA build with no toolkit: "Failed to build `vllm==0.13.0`" ...
  "No CUDA runtime is found, using CUDA_HOME='/usr'" (prefix-dev/pixi#5266).

``manylinux_X_Y`` needs glibc >= X.Y on the machine (PEP 600; ``manylinux1`` = 2.5,
``manylinux2010`` = 2.12, ``manylinux2014`` = 2.17), which is what ``packaging.tags`` and uv
generate from the declared or detected glibc.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts.linkage import Linkage
from pytest_vllm_env.findings import Change, Finding, Fix, failed, passed, skipped, warning
from pytest_vllm_env.readers.pixilock import LockedPypi

# pixi's default [system-requirements] on linux-64: `libc = { family = "glibc", version =
# "2.28" }` (prefix-dev/pixi docs/features/system_requirements.md, "Default System
# Requirements"; the same from pixi 0.28 to today's docs)
PIXI_DEFAULT_LIBC = "2.28"
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_TAG = re.compile(r"^(manylinux1|manylinux2010|manylinux2014|manylinux_(\d+)_(\d+))_")

# The lowest manylinux glibc among vLLM's PyPI x86_64 wheels, per release, measured with
# `pip install --dry-run --report --only-binary=:all: --platform manylinux_X_Y_x86_64 ...`
# on 2026-11-27 (0.8.5, 0.10.1.1, 0.11.0, 0.11.2: manylinux1; 0.12.0, 0.13.0, 0.14.0, 0.16.0,
# 0.18.0, 0.19.0: 2.31 only; 0.20.0: 2.35 only; 0.22.0, 0.24.0, 0.26.0, 0.28.0: 2.28).
# (first release, last release, glibc); releases outside the ranges are not known.
VLLM_WHEEL_GLIBC: tuple[tuple[str, str, str], ...] = (
    ("0.1.0", "0.11.2", "2.5"),
    ("0.12.0", "0.19.1", "2.31"),
    ("0.20.0", "0.20.2", "2.35"),
    ("0.22.0", "0.28.99", "2.28"),
)


def manylinux(glibc: str) -> str:
    """``manylinux_2_31`` for glibc ``2.31``: the PEP 600 tag prefix."""
    return "manylinux_" + "_".join(glibc.split("."))


def glibc_of_tag(platform: str) -> tuple[int, int] | None:
    """``(2, 31)`` for ``manylinux_2_31_x86_64``; None for a tag that is not manylinux."""
    m = _TAG.match(platform)
    if not m:
        return None
    if m[2]:
        return int(m[2]), int(m[3])
    return _LEGACY[m[1]]


def _v(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:2])


def glibc_defined(version_defs: Iterable[str]) -> str | None:
    """``2.36`` from a libc.so.6's version definitions (the newest ``GLIBC_2.x``): the glibc of
    the C library the loader will actually use."""
    best: tuple[int, int] | None = None
    for name in version_defs:
        m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", name)
        if m:
            got = (int(m[1]), int(m[2]))
            best = max(best or got, got)
    return f"{best[0]}.{best[1]}" if best else None


def vllm_wheel_glibc(version: str | None) -> str | None:
    """The glibc vLLM ``version``'s PyPI wheels need (table above), or None when unknown."""
    try:
        v = Version(version or "")
    except InvalidVersion:
        return None
    for first, last, glibc in VLLM_WHEEL_GLIBC:
        if Version(first) <= Version(v.base_version) <= Version(last):
            return glibc
    return None


# -- the manifest and the lock -------------------------------------------------------------
@dataclass(frozen=True)
class Floor:
    """The glibc the env's installer assumes, and where that comes from."""

    version: str | None  # "2.28"; None when not a Pixi env (pip asks the machine)
    where: str
    declared: bool = False
    table: str = "[system-requirements]"  # where a fix adds `libc = "..."`
    manifest: str = "pixi.toml"
    path: str = ""  # the manifest's path ("" when not known)

    def raise_to(self, glibc: str) -> Fix:
        """The fix that declares glibc ``glibc`` as the workspace's floor."""
        line = f'libc = "{glibc}"'
        changes = [Change("manifest-line", self.path, self.table, line)] if self.path else []
        return Fix(
            f"set `{line}` in {self.table} of {self.manifest} (`pixi workspace "
            f"system-requirements add glibc {glibc}`)",
            changes,
        )


def pixi_floor(manifest: Any | None, env_name: str | None) -> Floor:
    """``[system-requirements] libc`` of the env's features (string or ``{family, version}``),
    else pixi's default 2.28."""
    if manifest is None:
        return Floor(None, "no Pixi manifest: pip/uv use this machine's glibc")
    prefix = manifest.table_prefix()
    name = manifest.path.name
    best: tuple[str, str] | None = None
    for feature in manifest.environments().get(env_name or "default", ["default"]):
        table = manifest.feature_table(feature).get("system-requirements")
        if not isinstance(table, Mapping):
            continue
        libc = table.get("libc")
        value = libc.get("version") if isinstance(libc, Mapping) else libc
        if value is None:
            continue
        head = prefix if feature == "default" else f"{prefix}feature.{feature}."
        where = f"[{head}system-requirements] libc in {name}"
        if best is None or _v(str(value)) > _v(best[0]):
            best = (str(value), where)
    table = f"[{prefix}system-requirements]"
    path = str(manifest.path)
    if best:
        return Floor(best[0], best[1], True, table, name, path)
    return Floor(PIXI_DEFAULT_LIBC, f"pixi's default: no libc in {table} of {name}", False,
                 table, name, path)  # fmt: skip


def wanted_vllm(manifest: Any | None, env_name: str | None) -> tuple[str | None, str]:
    """The vLLM release the manifest pins with ``==`` in [pypi-dependencies] (any feature of
    the env), and where."""
    if manifest is None:
        return None, ""
    for feature in manifest.environments().get(env_name or "default", ["default"]):
        deps = manifest.feature_table(feature).get("pypi-dependencies")
        spec = deps.get("vllm") if isinstance(deps, Mapping) else None
        if isinstance(spec, Mapping):
            spec = spec.get("version")
        if not isinstance(spec, str):
            continue
        try:
            pins = [s.version for s in SpecifierSet(spec) if s.operator in ("==", "===")]
        except InvalidSpecifier:
            continue
        if pins:
            head = "" if feature == "default" else f"feature.{feature}."
            return pins[0], f'[{manifest.table_prefix()}{head}pypi-dependencies] vllm = "{spec}"'
    return None, ""


# -- judgements ------------------------------------------------------------------------------
@dataclass
class VersionNeeds:
    """What one binary asks of the libraries that provide versioned symbols."""

    label: str
    missing: dict[str, list[str]] = field(default_factory=dict)  # provider file -> versions
    glibc: tuple[int, int] | None = None  # the highest GLIBC_2.x it needs from libc/libm/...


def version_needs(label: str, link: Linkage, defs: Mapping[str, list[str]]) -> VersionNeeds:
    """Compare ``link.version_needs`` with the version definitions of each provider file
    (``defs``: provider name -> names it defines, for the providers that were found)."""
    out = VersionNeeds(label)
    for lib, versions in link.version_needs.items():
        for ver in versions:
            m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", ver)
            if m:
                got = (int(m[1]), int(m[2]))
                out.glibc = max(out.glibc or got, got)
            have = defs.get(lib)
            if have is not None and ver not in have:
                out.missing.setdefault(lib, []).append(ver)
    return out


def glibc(
    needs: Iterable[VersionNeeds],
    host: str | None,
    floor: Floor,
    providers: Mapping[str, str] | None = None,
) -> Finding:
    """``platform.glibc``: every symbol version each binary needs is defined by the library
    the loader gives it (failed, with the loader's message), and no binary needs a newer
    glibc than the Pixi workspace declares as its floor (``[system-requirements] libc``, or
    pixi's default 2.28): failed too, as pixi installs the workspace on any host at the floor
    (it checks the host against the declared ``__glibc``, nothing more) and there the loader
    refuses the binary. The level follows what the user declared, not this machine."""
    cid = "platform.glibc"
    needs = list(needs)
    if not needs:
        return skipped(cid, "no extension or torch library to read")
    providers = providers or {}
    broken = [(n, lib, vers) for n in needs for lib, vers in n.missing.items()]
    ev: dict[str, Any] = {"host_glibc": host, "floor": f"{floor.version} ({floor.where})"}
    if broken:
        n, lib, vers = broken[0]
        where = providers.get(lib, lib)
        glibc_miss = [v for v in vers if v.startswith("GLIBC_")]
        if glibc_miss:
            fix = (
                f"this machine's glibc is {host}: run where glibc >= "
                f"{glibc_miss[-1].removeprefix('GLIBC_')} (a newer OS or container image), or "
                f"install {n.label.split('/', 1)[0]} wheels whose manylinux tag is at most "
                f"{manylinux(host or '2.17')}"
            )
        elif lib.startswith("libstdc++"):
            fix = (
                f'{where} is too old: add `libstdcxx = ">=14"` (conda-forge; `libstdcxx-ng` '
                "in older channels) to [dependencies] in pixi.toml so the env ships a newer one"
            )
        else:
            fix = f"install a newer {lib} (it must define {', '.join(vers)}) in the env"
        return failed(
            cid,
            f"{n.label} needs {', '.join(vers)} from {lib}, which {where} does not define: import "
            f'fails with "{where}: version `{vers[-1]}\' not found (required by {n.label})"',
            fix,
            **ev,
            broken=[f"{x.label}: {lib_}: {', '.join(v)}" for x, lib_, v in broken],
        )
    top = max((n for n in needs if n.glibc), key=lambda n: n.glibc or (0, 0), default=None)
    if top is None or top.glibc is None:
        return passed(cid, "no binary asks for a glibc symbol version", **ev)
    need = f"{top.glibc[0]}.{top.glibc[1]}"
    if floor.version and _v(need) > _v(floor.version):
        return failed(
            cid,
            f"{top.label} needs glibc {need}; this machine has {host}, but the workspace "
            f"declares glibc {floor.version} as its floor ({floor.where}): pixi installs it on "
            f'hosts with glibc {floor.version} and there the import fails with "version '
            f"`GLIBC_{need}' not found (required by {top.label})\"",
            floor.raise_to(need)
            + " (pixi then refuses hosts below it, at install, instead of the loader at import)",
            **ev,
        )
    return passed(
        cid,
        f"the binaries need glibc <= {need} ({top.label}); this machine has {host}",
        **ev,
    )


def wheel_tag(
    floor: Floor,
    host: str | None,
    vllm: str | None,
    vllm_from: str,
    locked: LockedPypi | None,
    has_nvcc: bool,
) -> Finding:
    """``platform.wheel-tag``: the vLLM release the env wants has a wheel the installer may
    take under the env's glibc floor; otherwise it builds the sdist (a CUDA build)."""
    cid = "platform.wheel-tag"
    if floor.version is None:
        return skipped(cid, floor.where)
    if locked is not None and not locked.is_sdist:
        return passed(
            cid, f"pixi.lock installs vLLM {locked.version} from a wheel", url=locked.location
        )
    version = locked.version if locked else vllm
    if version is None:
        return skipped(cid, "the manifest pins no vLLM release (`vllm = \"==X\"`) and pixi.lock "
                       "has none")  # fmt: skip
    need = vllm_wheel_glibc(version)
    ev = {"vllm": version, "floor": f"{floor.version} ({floor.where})", "host_glibc": host}
    if locked is None and need is None:
        return skipped(cid, f"the glibc of vLLM {version}'s wheels is not in this suite's table",
                       **ev)  # fmt: skip
    if need is not None and _v(need) <= _v(floor.version):
        return passed(
            cid,
            f"vLLM {version}'s {manylinux(need)} wheels fit the glibc "
            f"{floor.version} floor ({floor.where})",
            **ev,
        )
    why = (
        f"pixi.lock installs vLLM {version} from its sdist ({locked.location.rsplit('/', 1)[-1]})"
        if locked
        else f"vLLM {version} ({vllm_from}) ships only {manylinux(need or '?')} Linux wheels"
    )
    summary = (
        f"{why}: the env's glibc floor is {floor.version} ({floor.where}), so Pixi takes the "
        "sdist and builds vLLM with CUDA"
        + ("; the env has no nvcc, so the build fails (\"No CUDA runtime is found, using "
           "CUDA_HOME='/usr'\", CMake error)" if not has_nvcc else " (an hour-long build)")
    )  # fmt: skip
    want = need or host or "?"
    if need and host and _v(need) > _v(host):
        fix = (
            f"vLLM {version}'s wheels need glibc {need} and this machine has {host}: pin a "
            "vLLM release with manylinux_2_28 wheels (0.22 and later, or 0.11.x and earlier), "
            "or run on a newer OS"
        )
    else:
        fix = floor.raise_to(want) + ", then `pixi lock`/`pixi install` take the wheel"
    return (failed if not has_nvcc else warning)(cid, summary, fix, **ev)
