"""Activation scripts read, not run (``--vllm-static``).

Without ``--vllm-static`` each activation script is sourced in its own bash and the exports
it leaves are read back (:func:`pytest_vllm_env.facts.env.compute_activation`). For a
workspace that is not trusted nothing of it may run, so each script is read instead
(:mod:`pytest_vllm_env.readers.shell_script`) and its assignments are applied in order, as
bash would apply them when sourcing it: one script after another, each starting from the
exported variables the previous one left (shell variables of one script do not reach the
next: each ran in a bash of its own). What cannot be known without running it is kept as a
note per line, and ``env.activation`` says that the scripts were read, not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_vllm_env import files
from pytest_vllm_env.readers import shell_script


class _Lookup:
    """Variables as the sourcing shell sees them: exported ones first, then its own."""

    def __init__(self, environ: dict[str, str], shell: dict[str, str]) -> None:
        self.environ = environ
        self.shell = shell

    def __call__(self, name: str) -> str | None:
        if name in self.environ:
            return self.environ[name]
        return self.shell.get(name)

    def assign(self, name: str, value: str) -> None:
        """``${NAME:=word}`` assigns as a plain assignment does."""
        if name in self.environ:
            self.environ[name] = value
        else:
            self.shell[name] = value


def read_scripts(
    scripts: Sequence[Path], environ: dict[str, str]
) -> tuple[dict[str, str], dict[str, str], list[str], list[str]]:
    """Apply ``scripts`` to ``environ`` without running them.

    Returns the environment after them, ``{variable: script}`` for what they set, problems
    (a script that cannot be read) and notes (lines not evaluated, with the script and line).
    """
    current = dict(environ)
    sources: dict[str, str] = {}
    problems: list[str] = []
    notes: list[str] = []
    for script in scripts:
        try:
            text = files.read_text(script, files.CONFIG)
        except OSError as exc:
            problems.append(f"{script}: cannot read: {exc.strerror or exc}")
            continue
        parsed = shell_script.parse(text)
        before = dict(current)
        lookup = _Lookup(current, {})
        for step in parsed.steps:
            if isinstance(step, shell_script.Unset):
                current.pop(step.name, None)
                lookup.shell.pop(step.name, None)
            elif isinstance(step, shell_script.Export):
                if step.name in lookup.shell:
                    current[step.name] = lookup.shell.pop(step.name)
            else:
                value = shell_script.expand(step.value, lookup)
                if step.export or step.name in current:
                    current[step.name] = value
                    lookup.shell.pop(step.name, None)
                else:
                    lookup.shell[step.name] = value
        for key in set(before) | set(current):
            if before.get(key) != current.get(key):
                sources[key] = str(script)
        notes += [f"{script}:{line}: `{text[:120]}`: {why}" for line, text, why in parsed.unread]
    return current, sources, problems, notes
