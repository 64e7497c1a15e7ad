"""The one lab runner: (notebook, QUICK, SEED, the lab's limits) -> an execution.

Every caller that executes a lab notebook goes through :func:`run_lab`:
``effml run``, grading (and so ``effml validate`` and the test suite), and
the benchmarks (:func:`run_solution`). It maps the mode to the papermill
parameters *and* the environment the notebook's locked parameters cell reads
(``EFFML_QUICK``/``EFFML_SEED``: nbval and JupyterLab see the same mode),
reads the lab's limits from its notebook metadata
(``{"effml": {"cell_timeout": 120, "notebook_timeout": 900, "check_timeout": 300}}``)
over one set of defaults (``autograder.execute``'s, which
``EFFML_CELL_TIMEOUT`` etc. override), and, for the benchmarks, collects the
figures the notebook records with ``helpers.figures.record``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat

from helpers import figures as figures_channel

from .execute import (DEFAULT_CELL_TIMEOUT, DEFAULT_CHECK_TIMEOUT, DEFAULT_NOTEBOOK_TIMEOUT, ExecResult, execute,
                      thread_env)


@dataclass(frozen=True)
class Limits:
    cell_timeout: int = DEFAULT_CELL_TIMEOUT
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT
    check_timeout: int = DEFAULT_CHECK_TIMEOUT

    def override(self, **values: int | None) -> Limits:
        """These limits with the given values in place (``None`` keeps a limit)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def notebook_limits(notebook: str | Path) -> Limits:
    """The limits a lab sets in its notebook metadata, over the defaults; the
    defaults alone for a notebook that cannot be read (a broken submission is
    reported by the execution, not here)."""
    try:
        meta = nbformat.read(notebook, as_version=4).metadata.get("effml", {})
    except Exception:  # noqa: BLE001 - unreadable: execution says why
        return Limits()
    values = {key: meta.get(key) for key in ("cell_timeout", "notebook_timeout", "check_timeout")}
    return Limits().override(**{k: int(v) for k, v in values.items() if isinstance(v, (int, float)) and v > 0})


def mode(quick: bool | None, seed: int | None) -> tuple[dict, dict]:
    """(papermill parameters, kernel environment) for a QUICK/SEED choice;
    ``None`` leaves that setting to the notebook's own default."""
    parameters, env = {}, {}
    if quick is not None:
        parameters["QUICK"] = bool(quick)
        env["EFFML_QUICK"] = "1" if quick else "0"
    if seed is not None:
        parameters["SEED"] = int(seed)
        env["EFFML_SEED"] = str(int(seed))
    return parameters, env


def run_lab(notebook: str | Path, output: str | Path, *, quick: bool | None = True, seed: int | None = 0,
            limits: Limits | None = None, parameters: dict | None = None, cwd: str | Path | None = None,
            env: dict | None = None, concurrent: int | None = None, figures: str | Path | None = None,
            sandbox=None, checks: Path | None = None, log_path: Path | None = None) -> ExecResult:
    """Execute ``notebook`` into ``output`` in the given mode; never raises
    for anything the notebook does (see ``autograder.execute.execute``).

    ``limits``: default, the notebook's own metadata. ``parameters``: more
    papermill parameters (``effml run -p``). ``concurrent``: how many
    executions share this machine's cores (their thread counts split them).
    ``figures``: a file that ``helpers.figures.record`` appends to.
    """
    limits = limits or notebook_limits(notebook)
    params, kernel_env = mode(quick, seed)
    if concurrent:
        kernel_env.update(thread_env(concurrent))
    if figures is not None:
        kernel_env.update(figures_channel.environment(figures))
    kernel_env.update(env or {})
    return execute(Path(notebook), Path(output), parameters={**params, **(parameters or {})},
                   cell_timeout=limits.cell_timeout, notebook_timeout=limits.notebook_timeout,
                   check_timeout=limits.check_timeout if checks else None, cwd=cwd, env=kernel_env,
                   sandbox=sandbox, checks=checks, log_path=log_path)


def run_solution(lab: str, *, quick: bool = True, seed: int = 0, cell_timeout: int | None = None,
                 env: dict | None = None, course=None) -> tuple[dict, float]:
    """Execute ``solutions/<lab>`` (a benchmark's run); return ``(figures it
    recorded, wall seconds)``. Raises ``RuntimeError`` if the notebook failed."""
    from .course import Course

    course = course or Course()
    course.check_lab(lab)
    src = course.solution_notebook(lab)
    # Full mode trains for real: the lab's cell limit is QUICK grading's.
    limits = notebook_limits(src).override(cell_timeout=cell_timeout or (None if quick else 6 * 3600),
                                           notebook_timeout=6 * 3600)
    with tempfile.TemporaryDirectory(prefix=f"effml-run-{lab}-") as tmp:
        out = Path(tmp) / f"{lab}.ipynb"
        res = run_lab(src, out, quick=quick, seed=seed, limits=limits, cwd=src.parent, env=env,
                      figures=Path(tmp) / "figures.jsonl")
        if res.status != "ok":
            raise RuntimeError(f"{lab} did not run cleanly ({res.status}): {res.reason}")
        return figures_channel.read(Path(tmp) / "figures.jsonl"), res.duration_s
