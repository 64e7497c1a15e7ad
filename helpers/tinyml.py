"""TinyML track machinery (labs 04 and 05): recording of target figures.
"""
from __future__ import annotations

import json
import os


def record_metric(name: str, value) -> None:
    """Append ``{"name": value}`` as a JSON line to ``$EFFML_METRICS_FILE``;
    a no-op when the variable is unset. ``benchmarks/tinyml.py`` sets it when
    it executes the labs, to read the figures they print."""
    path = os.environ.get("EFFML_METRICS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({name: value}) + "\n")
