"""Shared by the lab benchmarks: execute a solution notebook the way the
grader does (papermill in a child process, limits, environment passed to the
kernel) and read the figures it printed or recorded."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.execute import execute  # noqa: E402


def run_solution(lab: str, *, quick: bool = True, cell_timeout: int = 900, env: dict | None = None):
    """Execute ``solutions/<lab>`` (QUICK unless ``quick`` is false); return
    ``(executed notebook, wall seconds)``. Raises if the notebook failed."""
    src = ROOT / "solutions" / lab / f"{lab}.ipynb"
    with tempfile.TemporaryDirectory(prefix=f"effml-bench-{lab}-") as tmp:
        res = execute(src, Path(tmp) / f"{lab}.ipynb", parameters={"QUICK": quick, "SEED": 0},
                      cell_timeout=cell_timeout, notebook_timeout=6 * 3600, cwd=src.parent,
                      env={"EFFML_QUICK": "1" if quick else "0", "EFFML_SEED": "0", **(env or {})})
    if res.status != "ok":
        raise RuntimeError(f"{lab} did not run cleanly ({res.status}): {res.reason}")
    return res.notebook, res.duration_s


def printed_json(nb, marker: str) -> dict:
    """The JSON after ``marker`` on a line the notebook printed."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(marker):
                    return json.loads(line[len(marker):])
    raise RuntimeError(f"the notebook printed no {marker.strip()!r} line; did its last cell run?")
