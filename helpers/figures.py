"""The one channel for a lab's headline figures.

A notebook calls ``figures.record("int8_acc_drop", 0.31)``; when the run was
started with a figures file (``autograder.labrun.run_lab(..., figures=path)``,
which sets ``$EFFML_FIGURES`` for the kernel), the pair is appended to that
file as one JSON line. Benchmarks and tests read the figures back with
:func:`read` (the last value of each name wins). Without a figures file,
``record`` does nothing, so a student's notebook is unaffected.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "EFFML_FIGURES"


def _plain(value):
    """numpy / torch scalars and arrays as JSON-ready Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"figure values must be numbers, strings, lists or dicts, not {type(value).__name__}")


def record(name: str, value):
    """Append ``{"name": name, "value": value}`` to the figures file, if any;
    return ``value`` unchanged."""
    path = os.environ.get(ENV)
    if path:
        line = json.dumps({"name": str(name), "value": value}, default=_plain)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return value


def environment(path: str | os.PathLike) -> dict[str, str]:
    """The kernel environment that makes :func:`record` write to ``path``."""
    return {ENV: str(path)}


def read(path: str | os.PathLike) -> dict:
    """``{name: value}`` of the figures recorded in ``path`` (last value
    wins); ``{}`` when nothing was recorded."""
    path = Path(path)
    if not path.exists():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            out[item["name"]] = item["value"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}:{n}: not a figure line: {line[:80]!r}") from None
    return out
