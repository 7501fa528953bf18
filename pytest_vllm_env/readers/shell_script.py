"""The variable assignments of a POSIX shell script, read without running it (``--vllm-static``).

Activation scripts (conda's ``etc/conda/activate.d/*.sh``, a manifest's ``[activation]
scripts``, a venv's ``bin/activate``) are shell code. Sourcing one runs whatever it holds, so
for a workspace that is not trusted they are read instead: this reader turns the script's text
into the assignments bash would make when it sources it, for the part of the language whose
effect is known without running anything, and names every other line as "not evaluated".

What is read, at the script's top level (bash(1), "SHELL GRAMMAR", "PARAMETERS",
"EXPANSION"):

- ``NAME=VALUE`` (a shell variable; exported when it already was, as bash keeps the export
  attribute), ``export NAME=VALUE ...``, ``export NAME``, ``declare -x``/``typeset -x``
  ``NAME=VALUE``, ``unset NAME ...``; commands separated by ``;`` or new lines, lines joined by
  a trailing ``\\``;
- values made of literal text, single quotes (literal), double quotes and unquoted text with
  ``$NAME``, ``${NAME}`` and ``${NAME:-word}``, ``${NAME-word}``, ``${NAME:+word}``,
  ``${NAME+word}``, ``${NAME:=word}``; backslash escapes.

What is not evaluated, and listed with its line: command substitution (``$(...)``, backticks),
arithmetic, tilde expansion, special parameters (``$1``, ``$@``...), any other command
(``source``, ``hash -r``, a function call), ``&&``/``||``/pipes, and every compound command
(``if``, ``case``, loops, ``{ }``, ``( )``): which branch runs is decided at run time. A
function definition is skipped without a note: defining a function runs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A word is a list of parts: ("text", s) or ("var", NAME, OP, word) where OP is one of
# "", ":-", "-", ":+", "+", ":=", "=" and word the parts of the word after OP.
Part = tuple
Word = tuple[Part, ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_COMPOUND_OPEN = {"if", "case", "for", "while", "until", "select", "{", "(", "(("}
_COMPOUND_CLOSE = {"fi", "esac", "done", "}", ")", "))"}
_FUNC = re.compile(
    r"^\s*(function\s+[A-Za-z_][\w:.-]*\s*(\(\s*\))?|[A-Za-z_][\w:.-]*\s*\(\s*\))\s*"
)
_BACKTICKS = "command substitution (backticks): its value is known only by running it"


class Unsupported(ValueError):
    """A construct whose value is known only by running it."""


@dataclass(frozen=True)
class Assign:
    """One assignment: ``export`` says whether it is exported by this command."""

    name: str
    value: Word
    line: int
    export: bool


@dataclass(frozen=True)
class Export:
    """``export NAME`` (no value): the shell variable becomes an environment variable."""

    name: str
    line: int


@dataclass(frozen=True)
class Unset:
    name: str
    line: int


@dataclass
class Script:
    """What a script does when sourced, as far as it is known without running it."""

    steps: list[Assign | Export | Unset] = field(default_factory=list)
    # (line number, the line's text, why it was not evaluated)
    unread: list[tuple[int, str, str]] = field(default_factory=list)


def parse(text: str) -> Script:
    """Read ``text`` (a whole script) into :class:`Script`; never raises."""
    out = Script()
    depth = 0  # inside a compound command or a function body: nothing there is evaluated
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        for command, problem in _split_commands(stripped):
            command = _drop_reserved(command)
            if not command:
                continue
            head = command.split(None, 1)[0]
            if _FUNC.match(command):
                # `name() {` ... `}`: a definition runs nothing when the script is sourced
                depth += max(_net(command, "{", "}"), 0)
                continue
            if head in _COMPOUND_OPEN or head.startswith(("(", "{")):
                if depth == 0:
                    out.unread.append((number, stripped, "a compound command: decided at run time"))
                opened = _net(command, "(", ")") if head.startswith("(") else 1
                depth += opened - (1 if command.split()[-1] in _COMPOUND_CLOSE else 0)
                depth = max(depth, 0)
                continue
            if head in _COMPOUND_CLOSE or head.startswith(("}", ")")):
                depth = max(depth - 1, 0)
                continue
            if depth > 0:
                continue
            try:
                if problem:
                    raise Unsupported(problem)
                out.steps.extend(_command(command, number))
            except Unsupported as exc:
                out.unread.append((number, stripped, str(exc)))
    return out


def _drop_reserved(command: str) -> str:
    """``then export A=1`` -> ``export A=1``: the words that continue a compound command."""
    while True:
        words = command.split(None, 1)
        if not words or words[0] not in ("then", "do", "else", "elif"):
            return command
        command = words[1] if len(words) > 1 else ""


def _net(command: str, opening: str, closing: str) -> int:
    return command.count(opening) - command.count(closing)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Physical lines joined at a trailing backslash, each with its first line's number."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for i, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not pending:
            start = i
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            pending += raw[:-1]
            continue
        out.append((start, pending + raw))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _split_commands(line: str) -> list[tuple[str, str]]:
    """The line's commands, split at top-level ``;``, each with why it cannot be evaluated
    ('' when it may be): ``&&``, ``||``, a pipe, ``&`` or a redirection outside quotes (what
    runs then depends on exit statuses, or a command runs)."""
    parts: list[tuple[str, str]] = []
    current: list[str] = []
    problem = ""
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            current.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(line):
                current.append(line[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            current.append(c)
        elif c == "\\" and i + 1 < len(line):
            current.append(line[i : i + 2])
            i += 1
        elif c == "#" and (not current or current[-1][-1:].isspace()):
            break  # a comment
        elif c == ";":
            parts.append(("".join(current).strip(), problem))
            current, problem = [], ""
        elif c in "&|":
            problem = problem or "`&&`, `||`, `|` or `&`: what runs depends on the commands"
            current.append(c)
        elif c in "<>":
            problem = problem or "a redirection: a command runs"
            current.append(c)
        else:
            current.append(c)
        i += 1
    if quote:
        problem = problem or "an unterminated quote"
    parts.append(("".join(current).strip(), problem))
    return [(c, p) for c, p in parts if c]


def _command(command: str, number: int) -> list[Assign | Export | Unset]:
    """One simple command: assignments, ``export``, ``declare -x``, ``unset``."""
    words = _words(command)
    if not words:
        return []
    head = _literal(words[0])
    if head in ("export", "declare", "typeset", "readonly", "local"):
        args = words[1:]
        flags = []
        while args and (_literal(args[0]) or "").startswith("-"):
            flags.append(_literal(args[0]) or "")
            args = args[1:]
        if head in ("declare", "typeset") and "-x" not in flags:
            raise Unsupported(f"`{head}` without -x: not an environment variable")
        if head == "local":
            raise Unsupported("`local` outside a function")
        if head == "export" and any(f not in ("-p", "--") for f in flags):
            raise Unsupported(f"`export {' '.join(flags)}`")
        out: list[Assign | Export | Unset] = []
        for word in args:
            name, value = _split_assignment(word)
            if value is None:
                if not _NAME.fullmatch(name):
                    raise Unsupported(f"`{head} {name}`: not a variable name")
                out.append(Export(name, number))
            else:
                out.append(Assign(name, value, number, export=head != "readonly"))
        return out
    if head == "unset":
        names = [_literal(w) or "" for w in words[1:] if not (_literal(w) or "").startswith("-")]
        return [Unset(n, number) for n in names if _NAME.fullmatch(n)]
    assigns: list[Assign | Export | Unset] = []
    for i, word in enumerate(words):
        name, value = _split_assignment(word)
        if value is None:
            rest = " ".join(_show(w) for w in words[i:])
            raise Unsupported(
                "a command runs"
                + (" (with the assignments before it for its own environment only)" if i else "")
                + f": `{rest[:80]}`"
            )
        assigns.append(Assign(name, value, number, export=False))
    return assigns


def _split_assignment(word: Word) -> tuple[str, Word | None]:
    """``NAME=value`` -> (NAME, value parts); a word that is no assignment -> (text, None)."""
    if not word or word[0][0] != "text":
        return _show(word), None
    match = _ASSIGN.match(word[0][1])
    if not match:
        return _show(word), None
    rest = word[0][1][match.end() :]
    value = ((("text", rest),) if rest else ()) + tuple(word[1:])
    if value and value[0][0] == "text" and value[0][1].startswith("~") and not word[0][2:3]:
        raise Unsupported("tilde expansion in an assignment")
    return match.group(1), value


def _literal(word: Word) -> str | None:
    """The word's text when it holds no expansion; else None."""
    if all(p[0] == "text" for p in word):
        return "".join(p[1] for p in word)
    return None


def _show(word: Word) -> str:
    out = []
    for part in word:
        if part[0] == "text":
            out.append(part[1])
        else:
            out.append("${" + part[1] + (part[2] + "..." if part[2] else "") + "}")
    return "".join(out)


def _words(command: str) -> list[Word]:
    """Split a simple command into words of parts; quotes removed, expansions kept as parts.
    Text of a quoted part is marked so that ``~`` inside quotes is not tilde expansion."""
    words: list[list[Part]] = []
    current: list[Part] | None = None
    i = 0
    n = len(command)
    while i < n:
        c = command[i]
        if c.isspace():
            if current is not None:
                words.append(current)
                current = None
            i += 1
            continue
        if current is None:
            current = []
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise Unsupported("an unterminated quote")
            _text(current, command[i + 1 : end], quoted=True)
            i = end + 1
        elif c == '"':
            i = _double_quoted(command, i + 1, current)
        elif c == "\\":
            if i + 1 < n:
                _text(current, command[i + 1], quoted=True)
            i += 2
        elif c == "$":
            i = _dollar(command, i, current)
        elif c == "`":
            raise Unsupported(_BACKTICKS)
        elif c in "*?[" and not current:
            raise Unsupported("a glob: expanded at run time")
        else:
            _text(current, c)
            i += 1
    if current is not None:
        words.append(current)
    return [tuple(w) for w in words]


def _text(parts: list[Part], text: str, quoted: bool = False) -> None:
    """Add literal text; quoted text is marked (``~`` there is no tilde expansion)."""
    kind = ("text",) if not quoted else ("text", "quoted")
    last = parts[-1] if parts else None
    if last is not None and last[0] == "text" and (len(last) == 3) == quoted:
        parts[-1] = (last[0], last[1] + text, *last[2:])
    else:
        parts.append((kind[0], text, *kind[1:]))


def _double_quoted(s: str, i: int, parts: list[Part]) -> int:
    while i < len(s):
        c = s[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < len(s) and s[i + 1] in '$`"\\\n':
            _text(parts, s[i + 1], quoted=True)
            i += 2
        elif c == "$":
            i = _dollar(s, i, parts)
        elif c == "`":
            raise Unsupported(_BACKTICKS)
        else:
            _text(parts, c, quoted=True)
            i += 1
    raise Unsupported("an unterminated quote")


def _dollar(s: str, i: int, parts: list[Part]) -> int:
    """``$NAME``, ``${NAME}``, ``${NAME<op>word}`` at ``s[i] == '$'``; the index after it."""
    nxt = s[i + 1 : i + 2]
    if nxt == "(":
        raise Unsupported("command substitution or arithmetic `$(...)`: known only by running it")
    if nxt == "{":
        end = _matching_brace(s, i + 1)
        inner = s[i + 2 : end]
        match = _NAME.match(inner)
        if not match:
            raise Unsupported(f"`${{{inner}}}`: a special parameter or an unsupported expansion")
        name, rest = match.group(0), inner[match.end() :]
        if not rest:
            parts.append(("var", name, "", ()))
            return end + 1
        for op in (":-", ":+", ":=", "-", "+", "="):
            if rest.startswith(op):
                word = _words_joined(rest[len(op) :])
                parts.append(("var", name, op, word))
                return end + 1
        raise Unsupported(f"`${{{inner}}}`: an expansion not read statically")
    match = _NAME.match(s, i + 1)
    if match:
        parts.append(("var", match.group(0), "", ()))
        return match.end()
    if nxt and (nxt.isdigit() or nxt in "@*#?$!-"):
        raise Unsupported(f"`${nxt}`: a special parameter, known only at run time")
    _text(parts, "$")
    return i + 1


def _words_joined(text: str) -> Word:
    """The word after an operator in ``${NAME:-word}``, as one word (spaces kept)."""
    parts: list[Part] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise Unsupported("an unterminated quote")
            _text(parts, text[i + 1 : end], quoted=True)
            i = end + 1
        elif c == '"':
            i = _double_quoted(text, i + 1, parts)
        elif c == "$":
            i = _dollar(text, i, parts)
        elif c == "`":
            raise Unsupported(_BACKTICKS)
        else:
            _text(parts, c)
            i += 1
    return tuple(parts)


def _matching_brace(s: str, i: int) -> int:
    depth = 0
    quote = ""
    for j in range(i, len(s)):
        c = s[j]
        if quote:
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
    raise Unsupported("an unterminated `${`")


def expand(word: Word, lookup) -> str:
    """The value of ``word`` with ``lookup(name) -> str | None`` giving variables (None: unset);
    ``${NAME:=word}`` assigns through ``lookup.assign`` when it has one."""
    out: list[str] = []
    for part in word:
        if part[0] == "text":
            out.append(part[1])
            continue
        _, name, op, alt = part
        value = lookup(name)
        if op == "":
            out.append(value or "")
        elif op in (":-", "-"):
            use_alt = value is None or (op == ":-" and value == "")
            out.append(expand(alt, lookup) if use_alt else value)
        elif op in (":+", "+"):
            use_alt = value is not None and (op == "+" or value != "")
            out.append(expand(alt, lookup) if use_alt else "")
        else:  # ":=", "="
            use_alt = value is None or (op == ":=" and value == "")
            if use_alt:
                value = expand(alt, lookup)
                assign = getattr(lookup, "assign", None)
                if assign is not None:
                    assign(name, value)
            out.append(value or "")
    return "".join(out)
