"""Text that reaches a terminal, made inert.

Much of what the suite prints was written by someone else: package names and versions from
an env's metadata, Pixi env names from a manifest, paths, node names from a fleet, the
evidence a check carries (tool output, file contents). A terminal obeys what it is sent: an
escape sequence in a package's METADATA can clear the screen (``ESC[2J``), retitle the
window, plant a hyperlink whose text lies about its target (OSC 8), or rewrite a line already
printed (``\\r``); a zero-width or bidi character makes two different names read alike.

:func:`terminal_safe` is the one door for such text: escape sequences are removed (what they
would have drawn is not text), every other control or invisible formatting character is
shown as its escape (``\\x07``, ``\\u200b``), and printable Unicode stays as it is. The JSON
report keeps the values as they are (it is data; its readers escape for their own medium,
as the HTML page does).
"""

from __future__ import annotations

import functools
import re

# ECMA-48 sequences, 7-bit (ESC ...) and 8-bit (C1) forms. Bodies are matched with negated
# classes, never ``.*?``, so an unterminated sequence costs one scan, not one per position.
_SEQUENCES = r"""
      (?:\x1b\[|\x9b) [0-?]* [\x20-/]* [@-~]              # CSI: colours, cursor moves, ESC[2J
    | (?:\x1b\]|\x9d) [^\x07\x1b\x9c]* (?:\x07|\x1b\\|\x9c)  # OSC: titles, OSC 8 hyperlinks
    | (?:\x1b[PX^_]|[\x90\x98\x9e\x9f]) [^\x1b\x9c]* (?:\x1b\\|\x9c)  # DCS, SOS, PM, APC
    | \x1b [\x20-/]* [0-~]                                 # the rest: ESC c (reset), ESC 7...
    """
# Characters shown as escapes: controls (C0, DEL, C1), invisible formatting (zero-width
# space and joiners, bidi overrides and isolates, soft hyphen, tag characters), surrogates,
# and the line and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@functools.cache
def _sequences() -> re.Pattern[str]:
    # compiled on first use: the plugin loads in every pytest run, most print nothing of ours
    return re.compile(_SEQUENCES, re.VERBOSE)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_safe(value: object, *, multiline: bool = True) -> str:
    """``str(value)`` fit to print: escape sequences removed, other control and invisible
    formatting characters escaped (``\\r`` as ``\\x0d``), printable Unicode kept.

    ``multiline`` keeps newlines (a finding's render spans lines); without it a newline is
    escaped too, for text that must stay on its line (a node name, a header field). Tabs
    are kept."""
    text = str(value)
    if text.isascii() and text.isprintable():  # the common case: nothing to do
        return text
    import unicodedata  # a C extension: loaded when there is something to escape

    text = _sequences().sub("", text)
    keep = "\n\t" if multiline else "\t"
    return "".join(
        _escape(c) if c not in keep and unicodedata.category(c) in _ESCAPED_CATEGORIES else c
        for c in text
    )
