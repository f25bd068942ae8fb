"""Text from files (prompts, paths, config values, error sentences quoting them) made safe to print.

A prompt in a shared `config.json` or prompts file may hold terminal escape sequences that clear
the screen or fake output, and rich escapes its markup, not control characters. `printable`
shows every character that could move the cursor or reorder text as a visible escape.
"""

from __future__ import annotations

import re

# C0 controls (tab and newline included: they move the cursor), DEL, C1 controls; the bidi
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F,
# U+061C), which reorder what follows them ("Trojan Source"); the line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`str(text)` with control characters, DEL and bidi controls shown as `\\x1b` / `\\u202e`."""
    return _UNSAFE.sub(_escape, str(text))


def shown(text: object) -> str:
    """`printable(text)` with rich markup escaped too: for text inside a markup string."""
    from rich.markup import escape

    return escape(printable(text))
