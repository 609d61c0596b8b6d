"""The one exception type for user mistakes: the CLI prints its message, never a traceback.

Messages name the place of the mistake first. A place in a file is written `FILE:LINE` (as
compilers and linters do), built by `at`, so every error reads the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


class ClbenchError(Exception):
    """Bad input from the user (a name, a file, a field, a value); the message says which."""


def at(path: str | Path, line: int | None = None) -> str:
    """The place of a mistake: `FILE:LINE` (lines count from 1), or `FILE` without a line."""
    return f"{path}:{line}" if line is not None else str(path)


def read_yaml(path: str | Path) -> Any:
    """The parsed contents of a YAML file; a syntax error names the file and its line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ClbenchError(f"cannot read {path}: {err.strerror}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise ClbenchError(f"{at(path, line)}: not valid YAML: {problem}") from err


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ClbenchError:
    """An error for an unknown registry name that lists close matches and every known name."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ClbenchError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}.")
