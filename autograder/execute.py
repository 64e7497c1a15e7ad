"""Execute a notebook with papermill under time limits, in a child process
that can be killed whole, and report what happened.

``execute()`` is what grading and ``effml run`` call. The child process runs
``python -m autograder.execute`` (``_child_main``), which calls papermill with
``allow_errors`` so one failing cell does not stop the rest (every test cell
gets its chance), and ``interrupt_on_timeout`` so a cell that runs past its
limit is interrupted rather than the whole notebook lost. The whole-notebook
limit is enforced from outside by killing the process tree.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

DEFAULT_CELL_TIMEOUT = int(os.environ.get("EFFML_CELL_TIMEOUT", "600"))
DEFAULT_NOTEBOOK_TIMEOUT = int(os.environ.get("EFFML_NOTEBOOK_TIMEOUT", "1800"))
TIMEOUT_ENAME = "CellTimeout"
NOT_RUN_ENAME = "CellNotExecuted"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(concurrent: int) -> dict:
    """Thread-count variables for one of ``concurrent`` executions sharing
    this machine: the cores split evenly. Oversubscribed OpenMP threads
    spin-wait for each other: two QUICK lab08 runs at once took 194 s with
    2 threads each and 88 s with 1 each on 2 cores. A value already set in
    the environment wins."""
    n = str(max(1, (os.cpu_count() or 1) // max(1, concurrent)))
    return {var: os.environ.get(var, n) for var in THREAD_VARS}


@dataclass
class ExecResult:
    status: str                 # ok | errors | cell_timeout | notebook_timeout | kernel_died | failed
    duration_s: float
    reasons: list[str] = field(default_factory=list)
    notebook: nbformat.NotebookNode | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


# Executions in flight (child pids), so an interrupted batch can stop them all:
# children run in their own session and would not get the terminal's Ctrl-C.
RUNNING: set[int] = set()


def kill_all_running() -> None:
    for pid in list(RUNNING):
        kill_tree(pid)


def kill_tree(pid: int) -> None:
    """Kill a process and all its descendants (the kernel runs in its own
    session, so killing a process group is not enough)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = parent.children(recursive=True) + [parent]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def child_command(input_path: Path, output_path: Path, status_path: Path, parameters: dict,
                  cell_timeout: int, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "autograder.execute",
            "--input", str(input_path), "--output", str(output_path),
            "--status", str(status_path), "--parameters", json.dumps(parameters),
            "--cell-timeout", str(cell_timeout), "--cwd", str(cwd)]


def execute(input_path: Path, output_path: Path, *, parameters: dict | None = None,
            cell_timeout: int = DEFAULT_CELL_TIMEOUT, notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT,
            cwd: Path | None = None, env: dict | None = None, wrap=None,
            log_path: Path | None = None) -> ExecResult:
    """Execute ``input_path`` into ``output_path``; never raises for anything
    the notebook does. ``wrap(cmd) -> cmd`` lets the caller put the child in a
    sandbox."""
    input_path, output_path = Path(input_path).resolve(), Path(output_path).resolve()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    status_path = output_path.with_suffix(".status.json")
    for p in (output_path, status_path):
        p.unlink(missing_ok=True)
    cwd = Path(cwd or input_path.parent).resolve()
    cmd = child_command(input_path, output_path, status_path, parameters or {}, cell_timeout, cwd)
    if wrap is not None:
        cmd = wrap(cmd)
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    start = time.monotonic()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=child_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.add(proc.pid)
        try:
            proc.wait(timeout=notebook_timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_tree(proc.pid)
            proc.wait()
            RUNNING.discard(proc.pid)
    finally:
        if log_path:
            log.close()
    duration = time.monotonic() - start

    status = _read_json(status_path) or {}
    nb = _read_notebook(output_path)
    reasons: list[str] = []
    if timed_out:
        state = "notebook_timeout"
        reasons.append(f"the notebook ran past its {notebook_timeout} s limit and was stopped")
    elif "state" in status:
        state = status["state"]
        if status.get("message"):
            reasons.append(status["message"])
    else:
        state = "kernel_died" if nb is not None else "failed"
        reasons.append(f"the execution process ended abnormally (exit code {proc.returncode})")
    if nb is None:
        nb = nbformat.read(input_path, as_version=4)
    if state in ("kernel_died", "notebook_timeout"):
        _mark_interrupted_cell(nb, "the kernel died while running this cell" if state == "kernel_died"
                               else "the notebook time limit stopped this cell")
    timeouts = _mark_cell_timeouts(nb, cell_timeout)
    if timeouts and state in ("ok", "errors"):
        state = "cell_timeout"
    reasons.extend(timeouts)
    not_run = _mark_unexecuted(nb, reasons[0] if reasons else "execution stopped early")
    if not_run and state in ("ok", "errors"):
        state = "failed"
    nbformat.write(nb, output_path)
    return ExecResult(state, duration, reasons, nb)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_notebook(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except Exception:  # missing or half-written
        return None


def _cell_label(nb, index: int) -> str:
    cell = nb.cells[index]
    gid = cell.metadata.get("nbgrader", {}).get("grade_id")
    return f"cell {index + 1}" + (f" ({gid})" if gid else "")


def _mark_cell_timeouts(nb, cell_timeout: int) -> list[str]:
    """A cell interrupted for running too long shows KeyboardInterrupt; say why."""
    reasons = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and out.get("ename") == "KeyboardInterrupt":
                out["ename"] = TIMEOUT_ENAME
                out["evalue"] = (f"this cell ran longer than the {cell_timeout} s limit and was interrupted "
                                 "(an infinite loop, or too much work for QUICK mode?)")
                reasons.append(f"{_cell_label(nb, i)} exceeded the {cell_timeout} s cell limit")
    return reasons


def _started(cell) -> bool:
    # papermill marks every cell "completed" at the end; only a start time says it ran.
    meta = cell.metadata.get("papermill")
    if meta is None:
        return cell.get("execution_count") is not None
    return meta.get("start_time") is not None


def _mark_interrupted_cell(nb, why: str) -> None:
    """The last cell that started was running when execution stopped: its
    (test) outcome is unknown, so it gets an error output."""
    started = [c for c in nb.cells if c.cell_type == "code" and _started(c)]
    if started and not any(o.get("output_type") == "error" for o in started[-1].outputs):
        started[-1].outputs.append(nbformat.v4.new_output(
            "error", ename="ExecutionStopped", evalue=why, traceback=[]))


def _mark_unexecuted(nb, why: str) -> list[int]:
    """Give every code cell that never ran an error output, so an unexecuted
    test cell scores 0 (nbgrader would give full marks to a test cell with no
    output) and the feedback says why."""
    missing = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if _started(cell):
            continue
        cell.outputs = [nbformat.v4.new_output(
            "error", ename=NOT_RUN_ENAME, evalue=f"this cell was not executed: {why}", traceback=[])]
        missing.append(i)
    return missing


# ---------------------------------------------------------------- child process

def _child_main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m autograder.execute")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--parameters", default="{}")
    ap.add_argument("--cell-timeout", type=int, default=DEFAULT_CELL_TIMEOUT)
    ap.add_argument("--cwd", default=None)
    args = ap.parse_args(argv)

    import papermill as pm
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    def write_status(state: str, message: str = "") -> None:
        Path(args.status).write_text(json.dumps({"state": state, "message": message}))

    # SIGTERM from outside should leave a status behind.
    signal.signal(signal.SIGTERM, lambda *_: (write_status("notebook_timeout", "stopped"), sys.exit(1)))
    try:
        pm.execute_notebook(
            args.input, args.output, parameters=json.loads(args.parameters),
            kernel_name=None, progress_bar=False, cwd=args.cwd,
            execution_timeout=args.cell_timeout, allow_errors=True, interrupt_on_timeout=True,
        )
        write_status("ok")
    except PapermillExecutionError:
        # allow_errors ran every cell; papermill still reports the first error.
        _drop_papermill_error_cells(Path(args.output))
        write_status("errors")
    except DeadKernelError as exc:
        write_status("kernel_died", f"the kernel died ({exc}); a crash, or the memory limit")
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        write_status("failed", f"{type(exc).__name__}: {exc}")
    return 0


def _drop_papermill_error_cells(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    nbformat.write(nb, path)


if __name__ == "__main__":
    sys.exit(_child_main())
