"""Checks of text at the edge, before anything is stored or looked up.

Two things a client can send that no database stores as text: the NUL character
(PostgreSQL refuses it in ``text`` columns) and an unpaired UTF-16 surrogate (a JSON
escape such as ``"\\ud800"`` decodes to one; it has no UTF-8 encoding, so neither
database driver can send it). Both are refused with one line that names the field and
the character, never the text itself.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


class InputError(ValueError):
    """Text that cannot be accepted; the message says which field and why, in one line."""


def text_problem(value: str, field: str) -> str | None:
    """Why ``value`` cannot be stored (one line), or None if it can."""
    if "\x00" in value:
        return f"{field} contains a NUL character (U+0000); remove it and send again"
    found = _SURROGATE.search(value)
    if found:
        return (f"{field} contains an unpaired surrogate (U+{ord(found.group()):04X}), "
                f"which is not text; send UTF-8 text")
    return None


def check_text(value: str, field: str, max_chars: int | None = None) -> str:
    """``value`` if it can be stored, else InputError."""
    if max_chars is not None and len(value) > max_chars:
        raise InputError(f"{field}: at most {max_chars} characters")
    problem = text_problem(value, field)
    if problem:
        raise InputError(problem)
    return value
