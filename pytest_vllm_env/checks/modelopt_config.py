"""The checkpoint's quantization config against the env's vLLM: files readable, the config
itself, the algorithm accepted, the architecture registered, the GPU capable.

Check ids: ``modelopt.files-readable``, ``modelopt.quant-config``,
``modelopt.quant-algo-supported``, ``modelopt.architecture-registered``,
``modelopt.min-capability``. The real failures: a config.json block vLLM cannot read as
ModelOpt's (a ``hf_quant_config.json`` that disagrees with it is never read: a note, since
vLLM loads what config.json says); a ``quant_algo`` the installed vLLM does not know (``ModelOpt
currently only supports: [...]``), found after minutes of download and engine start-up; FP8
on a GPU under compute capability 8.9: refused at engine start.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_vllm_env.checks.abi_fixes import NO_ENV
from pytest_vllm_env.checks.modelopt_common import REEXPORT, skip_unreadable
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.modelopt_mixed import MIXED
from pytest_vllm_env.facts.modelopt_settings import (
    QuantSettings,
    effective_settings,
    from_config_block,
    settings_from_hf,
)
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_source import ModelOptSource, Registry
from pytest_vllm_env.tables.archs import Arch


# -- 0. the files ---------------------------------------------------------------------------
def files_readable(ckpt: Checkpoint) -> Finding:
    """config.json, hf_quant_config.json, the index and every header parse and validate."""
    check = "modelopt.files-readable"
    if ckpt.problems:
        names = sorted({str(p.path) for p in ckpt.problems})
        return error(
            check,
            f"{ckpt.label}: {len(ckpt.problems)} file problem(s): {ckpt.problems[0]}",
            "replace the named file(s) with complete copies (re-download: "
            "`hf download REPO`, or re-run the ModelOpt export): " + ", ".join(names),
            problems=[str(p) for p in ckpt.problems],
        )
    # A tensor in two files, or an index entry no file holds, is readable: what vLLM loads
    # then (the last copy in its file order; a parameter left unset, or nothing missing at
    # all) is checkpoint.shards' verdict, from the env's own loader (facts/vllm_load_plan).
    # Measured: vLLM 0.26.0 and 0.33.0 load both (fixtures/loader_truth: duplicate-*,
    # index-lists-missing-tensor), so neither is a file problem here.
    layout = []
    if ckpt.duplicates:
        first = next(iter(ckpt.duplicates.items()))
        layout.append(
            f"{len(ckpt.duplicates)} tensor(s) in more than one file "
            f"(e.g. {first[0]!r} in {', '.join(first[1])})"
        )
    if ckpt.index_absent:
        layout.append(
            f"the index lists {len(ckpt.index_absent)} tensor(s) no file holds "
            f"(e.g. {ckpt.index_absent[0]!r})"
        )
    note = f"; {'; '.join(layout)}: checkpoint.shards says what vLLM loads" if layout else ""
    return passed(
        check,
        f"{ckpt.label}: {len(ckpt.tensors)} tensors in {len(ckpt.shards)} safetensors file(s), "
        f"headers valid{note}",
        path=str(ckpt.path),
        shards=[s.name for s in ckpt.shards],
        **({"duplicates": dict(list(ckpt.duplicates.items())[:50])} if ckpt.duplicates else {}),
        **({"index_absent": ckpt.index_absent[:50]} if ckpt.index_absent else {}),
    )


# -- 1. the quantization config -------------------------------------------------------------
def quant_config(ckpt: Checkpoint) -> Finding:
    """A ModelOpt quantization config exists, and config.json and hf_quant_config.json agree."""
    check = "modelopt.quant-config"
    if blocked := skip_unreadable(check, ckpt, config=True):
        return blocked
    block, hf = ckpt.quantization_config, ckpt.hf_quant_config
    if block is None and hf is None:
        return failed(
            check,
            f"{ckpt.label}: no quantization config: config.json has no quantization_config and "
            "there is no hf_quant_config.json, so vLLM loads it as an unquantized model",
            f"{REEXPORT}; it writes hf_quant_config.json and config.json's quantization_config",
            path=str(ckpt.path),
        )
    # vLLM's get_quant_config (model_loader/weight_utils.py) takes config.json's
    # quantization_config when there is one and only then looks for hf_quant_config.json:
    # the file it does not read cannot refuse or change the load. Measured: vLLM 0.26.0 and
    # 0.33.0 load an FP8 export whose hf_quant_config.json says NVFP4, or excludes other
    # modules (fixtures/loader_truth: hf-disagrees-*), as config.json says.
    problems: list[str] = []
    settings: list[QuantSettings] = []
    if block is not None:
        from_block = from_config_block(block)
        settings.append(from_block)
        method = (from_block.quant_method or "").lower()
        if not method.startswith("modelopt"):
            problems.append(
                f"config.json quantization_config.quant_method is {from_block.quant_method!r}, "
                "not 'modelopt': vLLM will not read it as a ModelOpt checkpoint"
            )
        if not from_block.algo:
            problems.append("config.json quantization_config has no quant_algo")
        ignore = block.get("ignore", [])
        if not isinstance(ignore, list):
            # vLLM: "exclude_modules must be a list"
            problems.append(f"config.json quantization_config.ignore is {ignore!r}, not a list")
    unread: list[str] = []  # what is wrong with the file vLLM does not read
    if hf is not None:
        from_hf = settings_from_hf(hf)
        settings.append(from_hf)
        hf_problems = unread if block is not None else problems
        if not isinstance(hf.get("quantization"), dict):
            hf_problems.append("hf_quant_config.json has no 'quantization' object")
        elif not from_hf.algo:
            hf_problems.append("hf_quant_config.json quantization.quant_algo is missing")
        elif not isinstance(hf["quantization"].get("exclude_modules", []), list):
            hf_problems.append("hf_quant_config.json quantization.exclude_modules is not a list")
    if len(settings) == 2 and not problems and not unread:
        a, b = settings
        if a.algo != b.algo:
            unread.append(
                f"quant_algo: config.json says {a.algo!r}, hf_quant_config.json says {b.algo!r}"
            )
        if a.kv_cache_algo != b.kv_cache_algo:
            unread.append(
                f"kv_cache_quant_algo: config.json says {a.kv_cache_algo!r}, "
                f"hf_quant_config.json says {b.kv_cache_algo!r}"
            )
        if set(a.exclude) != set(b.exclude):
            unread.append(
                f"excluded modules: config.json ignore={sorted(a.exclude)}, "
                f"hf_quant_config.json exclude_modules={sorted(b.exclude)}"
            )
    if problems:
        return failed(
            check,
            f"{ckpt.label}: "
            + "; ".join(problems)
            + (" (vLLM uses config.json's block when both exist)" if len(settings) == 2 else ""),
            "make config.json's quantization_config (quant_algo, kv_cache_quant_algo, ignore) and "
            "hf_quant_config.json's quantization (quant_algo, kv_cache_quant_algo, "
            f"exclude_modules) say the same thing, or {REEXPORT}",
            path=str(ckpt.path),
        )
    eff = effective_settings(ckpt)
    assert eff is not None
    note = ""
    if unread:
        # vLLM works; other tools (and people) reading hf_quant_config.json are misled
        note = (
            f"; hf_quant_config.json is never read while config.json has a quantization_config "
            f"(it disagrees: {'; '.join(unread)})"
        )
    return passed(
        check,
        f"{ckpt.label}: ModelOpt {eff.algo}, KV cache {eff.kv_cache_algo or 'not quantized'}, "
        f"excluded {list(eff.exclude)} (vLLM reads {eff.source}){note}",
        sources=[s.source for s in settings],
        **({"unread_disagreements": unread} if unread else {}),
    )


# -- 2. does the env's vLLM accept the algorithm ---------------------------------------------
def quant_algo_supported(
    ckpt: Checkpoint, source: ModelOptSource, vllm_version: str | None
) -> Finding:
    """The effective ``quant_algo`` is in the env's vLLM ``QUANT_ALGOS`` (else vLLM raises
    "ModelOpt currently only supports: [...]", quoted)."""
    check = "modelopt.quant-algo-supported"
    if blocked := skip_unreadable(check, ckpt, config=True):
        return blocked
    eff = effective_settings(ckpt)
    if eff is None or not eff.algo:
        return skipped(check, f"{ckpt.label}: no quant_algo to judge (see modelopt.quant-config)")
    if source.quant_algos is None:
        return skipped(
            check,
            "; ".join(source.missing)
            + (": the accepted algorithms cannot be read statically" if source.path else ""),
        )
    if eff.algo not in source.quant_algos:
        said = (
            source.unsupported_message
            or f"quant_algo {eff.algo} is not in {list(source.quant_algos)}"
        )
        return failed(
            check,
            f"{ckpt.label}: vLLM {vllm_version} refuses quant_algo {eff.algo!r} "
            f"(from {eff.source}); "
            f"it would say: {said}",
            f"re-export with one of {list(source.quant_algos)} (mtq.FP8_DEFAULT_CFG gives 'FP8'), "
            f"or install a vLLM whose {source.path} lists {eff.algo!r}",
            accepted=list(source.quant_algos),
            vllm_source=source.path,
        )
    cls = source.config_class_for(eff.algo)
    return passed(
        check,
        f"{ckpt.label}: vLLM {vllm_version} accepts quant_algo {eff.algo!r}"
        + (f" ({cls.name}, quantization={cls.method!r})" if cls else ""),
        accepted=list(source.quant_algos),
    )


# -- 5. architecture -----------------------------------------------------------------------------
def architecture_registered(
    ckpt: Checkpoint, registry: Registry, vllm_version: str | None, *, env: PixiEnv | None = None
) -> Finding:
    """``architectures[0]`` is registered in the env's vLLM (``registry.py``), or says in
    which release it was last supported (the fix pins that release, in ``env``'s language)."""
    check = "modelopt.architecture-registered"
    if blocked := skip_unreadable(check, ckpt, config=True):
        return blocked
    archs = (ckpt.config or {}).get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        return failed(
            check,
            f"{ckpt.label}: config.json has no architectures list, "
            "so vLLM cannot pick a model class",
            'add "architectures": ["<ModelClass>"] to config.json (the class the original '
            "model's config.json names)",
        )
    if registry.missing:
        return skipped(
            check,
            "; ".join(registry.missing)
            + (": the architectures cannot be read statically" if registry.path else ""),
        )
    arch = archs[0]
    if arch in registry.architectures:
        return passed(check, f"{ckpt.label}: {arch} is registered in vLLM {vllm_version}")
    if arch in registry.previously_supported:
        last = registry.previously_supported[arch]
        return failed(
            check,
            f"{ckpt.label}: vLLM {vllm_version} no longer supports {arch} (last in {last})",
            fixes.otherwise(
                f"install vLLM {last}, the last release that supports it: "
                + fixes.pin(env or NO_ENV, Package("vllm", f"=={last}", pypi=True)),
                "use a model whose architecture vLLM still supports",
                ", or ",
            ),
        )
    return failed(
        check,
        f"{ckpt.label}: {arch} is not registered in vLLM {vllm_version}; vLLM would fall back to "
        "its Transformers backend at best, where ModelOpt quantization is not assured",
        "use a vLLM version that registers it (see its docs' supported models list), or a "
        "checkpoint of a supported architecture",
        registered=len(registry.architectures),
    )


# -- 6. hardware ---------------------------------------------------------------------------------
def min_capability(
    ckpt: Checkpoint,
    source: ModelOptSource,
    vllm_version: str | None,
    archs: Iterable[Arch],
    archs_source: str,
) -> Finding:
    """The algorithm's minimum compute capability in this vLLM vs the target GPUs."""
    check = "modelopt.min-capability"
    if blocked := skip_unreadable(check, ckpt, config=True):
        return blocked
    eff = effective_settings(ckpt)
    if eff is None or not eff.algo:
        return skipped(check, f"{ckpt.label}: no quant_algo (see modelopt.quant-config)")
    if source.missing and not source.classes:
        return skipped(check, "; ".join(source.missing))
    cls = source.config_class_for(eff.algo)
    if cls is None or cls.min_capability is None:
        return skipped(
            check,
            f"vLLM {vllm_version}'s {source.path}: no get_min_capability() found for {eff.algo}",
        )
    targets = list(archs)
    if not targets:
        return skipped(
            check,
            f"no target GPU arch known (from {archs_source}): pass --cuda-arch (e.g. 8.9) to judge "
            f"{eff.algo}'s minimum {_cc(cls.min_capability)}",
        )
    need = cls.min_capability
    short = [a for a in targets if a.number < need]
    if short:
        fits = sorted(
            {
                a
                for c in source.classes
                if c.min_capability is not None and c.min_capability <= min(t.number for t in short)
                for a in (source.quant_algos or ())
                # MIXED_PRECISION is what ModelOpt writes when layers differ, not a recipe to
                # re-export with (its layers' own algorithms decide where they run)
                if source.config_class_for(a) is c and a != MIXED
            }
        )
        return failed(
            check,
            f"{ckpt.label}: {eff.algo} needs compute capability >= {_cc(need)} in vLLM "
            f"{vllm_version} ({cls.name}), but the target {', '.join(a.cc for a in short)} "
            "is lower; vLLM would say: "
            f"The quantization method {cls.method} is not supported for the current GPU. "
            f"Minimum capability: {need}. Current capability: {short[0].number}.",
            f"run on a GPU of compute capability >= {_cc(need)}, or re-export with an algorithm "
            f"this vLLM runs there: {fits or 'none'}",
            min_capability=need,
            targets=[a.cc for a in targets],
        )
    return passed(
        check,
        f"{ckpt.label}: {eff.algo} needs >= {_cc(need)} in vLLM {vllm_version}; targets "
        f"{', '.join(a.cc for a in targets)} (from {archs_source}) meet it",
    )


def _cc(number: int) -> str:
    return f"{number // 10}.{number % 10}"
