"""The one exception type for user mistakes: the CLI prints its message, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ClbenchError(Exception):
    """Bad input from the user (a name, a file, a field, a value); the message says which."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ClbenchError:
    """An error for an unknown registry name that lists close matches and every known name."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ClbenchError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}.")
