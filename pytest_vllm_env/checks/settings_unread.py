"""``settings.unread``: settings the env gives vLLM that this vLLM release no longer reads.

vLLM reads its variables through ``vllm/envs.py``'s ``environment_variables``; its own
``validate_environ`` logs "Unknown vLLM environment variable detected: X" for any other
``VLLM_*`` variable and raises it as a ``ValueError`` under ``--fail-on-environ-validation``.
A variable that left the table does nothing: ``VLLM_ATTENTION_BACKEND`` is in no file of vLLM
0.26.0 (vllm-project/vllm#50292: "silently ignored", the engine picks its default backend; AMD-
AGI/Hyperloom#462: an unusably slow baseline); its replacement is the ``--attention-backend``
option. A ``vllm serve`` option the release does not define stops it ("unrecognized
arguments"). Only ``VLLM_*`` variables are judged: a variable vLLM never read is not ours to
judge. Levels: a variable that does nothing, or one vLLM marks deprecated: warning; an option
``vllm serve`` rejects, or an unknown variable under ``--fail-on-environ-validation``: failed.
"""

from __future__ import annotations

from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.vllm_settings import Setting, SettingsFacts
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning

CID = "settings.unread"
_DASHES = str.maketrans("_", "-")
_UNDERSCORES = str.maketrans("-", "_")


def judge(facts: SettingsFacts | None, env: PixiEnv) -> list[Finding]:
    """One finding per setting vLLM does not read; one passed finding when all are read."""
    if facts is None:
        return [skipped(CID, f"vLLM is not installed in {env.prefix}")]
    if facts.source.unreadable and facts.settings:  # what vLLM defines is unknown: name it
        return [
            error(
                CID,
                f"vLLM {facts.vllm}: which settings it reads cannot be read: {why}",
                "reinstall vllm (its files are damaged)",
            )
            for why in facts.source.unreadable[:3]
        ]
    if facts.env_unreadable:  # an activation file may set any VLLM_* variable: name it
        return [
            error(
                CID,
                f"which VLLM_* variables the env's activation sets is unknown: {why}",
                f"restore {why.split(': cannot be read: ', 1)[0]} as a regular file "
                "(reinstall the package that ships it), or remove it",
            )
            for why in facts.env_unreadable[:3]
        ]
    if facts.source.missing and not facts.source.known:
        return [skipped(CID, f"vLLM {facts.vllm}: " + "; ".join(facts.source.missing))]
    if not facts.settings:
        return [skipped(CID, "the env sets no VLLM_* variable and passes no `vllm serve` option")]
    out = [f for s in facts.settings if (f := _one(s, facts)) is not None]
    if out:
        return out
    names = sorted({s.name for s in facts.settings})
    return [
        passed(
            CID,
            f"vLLM {facts.vllm} reads every setting the env gives it: {', '.join(names[:8])}"
            + (f" and {len(names) - 8} more" if len(names) > 8 else ""),
            settings=[f"{s.name} ({s.where})" for s in facts.settings],
        )
    ]


def _one(s: Setting, facts: SettingsFacts) -> Finding | None:
    return _flag(s, facts) if s.kind == "flag" else _variable(s, facts)


def _variable(s: Setting, facts: SettingsFacts) -> Finding | None:
    src = facts.source
    ev = {"set": f"{s.name}={s.value}", "where": s.where, "read_from": "vllm/envs.py"}
    if s.name in src.known:
        if s.name not in src.deprecated:
            return None
        instead = src.deprecated[s.name]
        return warning(
            CID,
            f"vLLM {facts.vllm} marks {s.name} deprecated (vllm/envs.py)"
            + (f": use {instead}" if instead else "")
            + f"; set in {s.where}",
            _replace(s, instead),
            replacement=instead or "none named",
            **ev,
        )
    refs = facts.referenced.get(s.name, [])
    if s.hard_fail and src.validates:
        return failed(
            CID,
            f"{s.name} ({s.where}) is not one of vLLM {facts.vllm}'s variables and a `vllm "
            f'serve` of this env passes --fail-on-environ-validation: it stops with "ValueError:'
            f' Unknown vLLM environment variable detected: {s.name}"',
            _replace(s, _option_for(s.name, facts)),
            **ev,
        )
    if refs:
        return None  # read elsewhere in vLLM's source (os.environ.get in a module)
    if facts.refs_unreadable:  # a file that may read it cannot be searched: name it
        more = len(facts.refs_unreadable) - 1
        return error(
            CID,
            f"vLLM {facts.vllm}: whether it reads {s.name} ({s.where}) is unknown: "
            + facts.refs_unreadable[0]
            + (f" (and {more} more)" if more else ""),
            "reinstall vllm (its files are damaged)",
            **ev,
            unreadable=facts.refs_unreadable[:10],
        )
    instead = _option_for(s.name, facts)
    said = (
        f' (vLLM logs "Unknown vLLM environment variable detected: {s.name}")'
        if src.validates
        else ""
    )
    return warning(
        CID,
        f"vLLM {facts.vllm} does not read {s.name}, set in {s.where}: the setting does nothing"
        + said
        + (f"; this release takes it as the `{instead}` option" if instead else ""),
        _replace(s, instead),
        replacement=instead or "none in this release's source",
        **ev,
    )


def _flag(s: Setting, facts: SettingsFacts) -> Finding | None:
    src = facts.source
    name = s.name
    base = "--" + name[len("--no-") :] if name.startswith("--no-") else name
    ev = {"passed": s.value, "where": s.where, "read_from": "vllm/engine/arg_utils.py, "
          "vllm/entrypoints (the options `vllm serve` defines)"}  # fmt: skip
    if name in src.deprecated_flags or base in src.deprecated_flags:
        instead = src.deprecated_flags.get(name) or src.deprecated_flags.get(base, "")
        return warning(
            CID,
            f"vLLM {facts.vllm} marks `{name}` deprecated"
            + (f": use {instead}" if instead else ""),
            f"in {s.where}, replace `{name}`" + (f" with `{instead}`" if instead else ""),
            **ev,
        )
    if name in src.flags or base in src.flags:
        return None
    # argparse takes a unique prefix of an option (allow_abbrev, FlexibleArgumentParser keeps it)
    if sum(1 for f in src.flags if f.startswith(name)) == 1:
        return None
    return failed(
        CID,
        f"`vllm serve` of vLLM {facts.vllm} has no option `{name}` ({s.where}): it stops with "
        f'"unrecognized arguments: {s.value}"',
        f"drop `{s.value}` from {s.where}, or use the option this release names for it "
        f"(`vllm serve --help={name.lstrip('-').split('-')[0]}`)",
        **ev,
    )


def _option_for(name: str, facts: SettingsFacts) -> str:
    """``--attention-backend`` for ``VLLM_ATTENTION_BACKEND``: the option of the same words,
    when this release defines one; a renamed variable named by envs.py otherwise."""
    option = "--" + name.removeprefix("VLLM_").lower().translate(_DASHES)
    return option if option in facts.source.flags else ""


def _replace(s: Setting, instead: str) -> str:
    if instead.startswith("--"):
        return (
            f"remove {s.name} from {s.where} and pass `{instead} {s.value or 'VALUE'}` to "
            f"`vllm serve` ({instead.lstrip('-').translate(_UNDERSCORES)}= in Python's LLM(...))"
        )
    if instead:
        return f"in {s.where}, rename {s.name} to {instead}"
    return f"remove {s.name} from {s.where}: this vLLM release does not read it"
