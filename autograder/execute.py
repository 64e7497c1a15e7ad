"""Execute a notebook under time limits and, when grading, score it with
the lab's trusted checks; report what happened.

``execute()`` is called through ``autograder.labrun.run_lab`` (grading,
validation, the benchmarks, ``effml run``), which maps the lab's mode and
limits onto it. It starts a child process, ``python -m autograder.execute``
(``_child_main``), the *trusted executor*: it injects the papermill
parameters, starts the kernel (inside the sandbox when one is given: only
the kernel is jailed, see ``autograder.sandbox``), runs every cell with
nbclient (``allow_errors``, so one failing cell does not stop the rest, and
``interrupt_on_timeout``), then runs the lab's checks
(``autograder.trusted``) against the still-running kernel. Everything it
writes (executed notebook, status, scores) lives in a folder the kernel
cannot see. The whole-notebook limit is enforced twice: the child kills the
kernel at the deadline, and the parent kills the child's process tree if it
outlives the deadline plus the checks' budget.
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
DEFAULT_CHECK_TIMEOUT = int(os.environ.get("EFFML_CHECK_TIMEOUT", "900"))
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
    n = next((os.environ[v] for v in THREAD_VARS if os.environ.get(v)), n)  # one variable set sets them all
    return {var: os.environ.get(var, n) for var in THREAD_VARS}


@dataclass
class ExecResult:
    status: str                 # ok | errors | cell_timeout | notebook_timeout | kernel_died | failed
    duration_s: float
    reasons: list[str] = field(default_factory=list)
    notebook: nbformat.NotebookNode | None = None
    checks: dict | None = None  # grade_id -> {"passed", "message", "seconds"} from the trusted checks
    check_s: float = 0.0

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
                  cell_timeout: int, notebook_timeout: int, cwd: Path, *, sandbox=None,
                  checks: Path | None = None, check_timeout: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "autograder.execute",
           "--input", str(input_path), "--output", str(output_path),
           "--status", str(status_path), "--parameters", json.dumps(parameters),
           "--cell-timeout", str(cell_timeout), "--notebook-timeout", str(notebook_timeout),
           "--cwd", str(cwd)]
    if sandbox is not None:
        cmd += ["--sandbox", sandbox.to_json()]
    if checks is not None:
        cmd += ["--checks", str(checks), "--check-timeout", str(check_timeout)]
    return cmd


def execute(input_path: Path, output_path: Path, *, parameters: dict | None = None,
            cell_timeout: int = DEFAULT_CELL_TIMEOUT, notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT,
            cwd: Path | None = None, env: dict | None = None, sandbox=None,
            checks: Path | None = None, check_timeout: int | None = None,
            log_path: Path | None = None) -> ExecResult:
    """Execute ``input_path`` into ``output_path``; never raises for anything
    the notebook does. ``sandbox`` (``autograder.sandbox.Sandbox``) jails the
    kernel; ``checks`` (a lab's ``grader.py``) scores the run. ``output_path``'s
    folder must be the grader's own: the status and scores go beside it."""
    input_path, output_path = Path(input_path).resolve(), Path(output_path).resolve()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    status_path = output_path.with_suffix(".status.json")
    for p in (output_path, status_path):
        p.unlink(missing_ok=True)
    cwd = Path(cwd or input_path.parent).resolve()
    check_timeout = check_timeout or (DEFAULT_CHECK_TIMEOUT if checks else 0)
    cmd = child_command(input_path, output_path, status_path, parameters or {}, cell_timeout,
                        notebook_timeout, cwd, sandbox=sandbox, checks=checks, check_timeout=check_timeout)
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    start = time.monotonic()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    # The child stops the kernel at the notebook limit itself; this is the backstop.
    hard_limit = notebook_timeout + check_timeout + 120
    try:
        proc = subprocess.Popen(cmd, cwd=str(output_path.parent), env=child_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.add(proc.pid)
        try:
            proc.wait(timeout=hard_limit)
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
        state = "failed"
        reasons.append(f"the executor ended abnormally (exit code {proc.returncode})")
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
    checks_out = status.get("checks") if checks else None
    if checks and not isinstance(checks_out, dict):
        checks_out = {}
    return ExecResult(state, status.get("cells_s", duration), reasons, nb, checks_out,
                      float(status.get("checks_s", 0.0)))


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
    """The executor stamps each cell as it starts it."""
    return bool(cell.metadata.get("effml", {}).get("started"))


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


# ---------------------------------------------------------------- child process: the trusted executor

MAX_CELL_OUTPUT_BYTES = 4 * 2**20   # per cell; beyond it outputs are dropped with a note
MAX_CELL_OUTPUTS = 500


def _kernel_manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class JailedKernelManager(AsyncKernelManager):
        """nbclient's async kernel manager, starting the kernel inside a
        ``KernelJail`` when it has one; interrupts go over the control channel
        (a signal cannot reach into the jail's session)."""
        jail = None

        def format_kernel_cmd(self, extra_arguments=None):
            if self.jail is None:
                return super().format_kernel_cmd(extra_arguments)
            if os.geteuid() == 0:  # the jailed kernel's uid reads the connection file
                os.chown(self.connection_file, self.jail.uid, self.jail.uid)
            return self.jail.wrap([sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file])

        def send_interrupt(self):
            msg = self.session.msg("interrupt_request", content={})
            self._connect_control_socket()
            self.session.send(self._control_socket, msg)

        async def _async_interrupt_kernel(self):
            if self.has_kernel:
                self.send_interrupt()

        interrupt_kernel = _async_interrupt_kernel

        def alive(self) -> bool:
            process = getattr(self.provisioner, "process", None)
            return process is not None and process.poll() is None

    return JailedKernelManager


def _client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """nbclient with a cap on what one cell may output (a kernel that floods
        its output must not exhaust the grader)."""

        def output(self, outs, msg, display_id, cell_index):
            used = self._out_bytes.get(cell_index, 0) + len(json.dumps(msg.get("content", {})))
            self._out_bytes[cell_index] = used
            if used > MAX_CELL_OUTPUT_BYTES or len(outs) >= MAX_CELL_OUTPUTS:
                if cell_index not in self._capped:
                    self._capped.add(cell_index)
                    outs.append(nbformat.v4.new_output(
                        "stream", name="stdout", text="\n[further output of this cell was dropped by the grader]\n"))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient


def _kernel_transport(km, kc, log):
    """``send(request, timeout) -> answer text``: one call into the kernel."""
    import queue
    import uuid as _uuid

    from .trusted import CallTimeout
    from .wire import KERNEL_SOURCE, WireError

    def send(request: dict, timeout: float) -> str:
        mime = f"application/x-effml-{_uuid.uuid4().hex}+json"
        code = (KERNEL_SOURCE + f"\n__effml_call({json.dumps(json.dumps(request))}, {mime!r})\n"
                "del __effml_call, __effml_answer\n")
        msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        answer = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                km.send_interrupt()
                raise CallTimeout(f"a call into your notebook ran past its {timeout:g} s limit "
                                  "(an infinite loop, or too much work?)")
            try:
                msg = kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not km.alive():
                    raise CallTimeout("the kernel died during a call into your notebook") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg.get("content", {})
            if kind == "display_data" and mime in content.get("data", {}):
                answer = content["data"][mime]
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if answer is None:
            raise WireError("your notebook gave no answer to the grader's call (is something in it "
                            "silencing output or errors?)")
        return answer

    return send


def _child_main(argv=None) -> int:
    import argparse
    import threading

    ap = argparse.ArgumentParser(prog="python -m autograder.execute")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--parameters", default="{}")
    ap.add_argument("--cell-timeout", type=int, default=DEFAULT_CELL_TIMEOUT)
    ap.add_argument("--notebook-timeout", type=int, default=DEFAULT_NOTEBOOK_TIMEOUT)
    ap.add_argument("--cwd", default=None)
    ap.add_argument("--sandbox", default=None)
    ap.add_argument("--checks", default=None)
    ap.add_argument("--check-timeout", type=int, default=0)
    args = ap.parse_args(argv)

    import logging

    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.parameterize import parameterize_notebook

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log = logging.getLogger("effml.executor")
    status = {"state": "failed", "message": ""}
    out_path = Path(args.output)

    def save(nb) -> None:
        tmp = out_path.with_suffix(".tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, out_path)

    def write_status() -> None:
        tmp = Path(args.status).with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, args.status)

    signal.signal(signal.SIGTERM, lambda *_: (status.update(state="notebook_timeout", message="stopped"),
                                              write_status(), sys.exit(1)))
    nb = nbformat.read(args.input, as_version=4)
    parameters = json.loads(args.parameters)
    if parameters:
        nb.metadata.setdefault("papermill", {})
        for cell in nb.cells:  # papermill expects every cell to have tags
            cell.metadata.setdefault("tags", [])
        nb = parameterize_notebook(nb, parameters)
        for cell in nb.cells:
            if cell.metadata.get("tags") == []:
                del cell.metadata["tags"]
    for cell in nb.cells:  # a fresh run: nothing of the submitted outputs survives
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            cell.metadata.pop("effml", None)

    from contextlib import ExitStack

    from .sandbox import Sandbox

    stack = ExitStack()
    jail = None
    if args.sandbox:
        os.environ["EFFML_SANDBOX"] = args.sandbox  # checks that run code in a jail of their own (run_jailed)

        jail = stack.enter_context(Sandbox.from_json(args.sandbox).session())
        km_class = _kernel_manager_class()
        km = km_class(transport="ipc", ip=str(jail.run_dir / "k"),
                      connection_file=str(jail.run_dir / "kernel.json"), kernel_name="python3")
        km.jail = jail
        cwd = str(jail.run_dir)
    else:  # on the host (trusted notebooks): the same manager, interrupts over the control channel too
        km = _kernel_manager_class()(kernel_name="python3")
        cwd = args.cwd
    client = _client_class()(nb, km=km, timeout=args.cell_timeout, allow_errors=True,
                             interrupt_on_timeout=True, startup_timeout=180, kernel_name="python3",
                             resources={"metadata": {"path": cwd}})
    client._out_bytes, client._capped = {}, set()
    stopped = threading.Event()

    def stop_kernel():  # the notebook limit: kill the kernel, the running cell then fails
        stopped.set()
        try:
            km.provisioner.process.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass

    start = time.monotonic()
    grade_ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
                 if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
    try:
        with stack, client.setup_kernel():
            timer = threading.Timer(args.notebook_timeout, stop_kernel)
            timer.daemon = True
            timer.start()
            state, message = "ok", ""
            try:
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    cell.metadata.setdefault("effml", {})["started"] = True
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        pass  # marked by the parent from the KeyboardInterrupt output
                    if any(o.get("output_type") == "error" for o in cell.outputs):
                        state = "errors"
                    save(nb)
            except (ValueError, KeyError, TypeError) as exc:  # malformed messages from the kernel's side
                state, message = "errors", (f"the kernel sent malformed messages ({type(exc).__name__}: "
                                            f"{str(exc)[:120]}); the remaining cells were not run")
            except DeadKernelError:
                if stopped.is_set():
                    state, message = "notebook_timeout", (f"the notebook ran past its {args.notebook_timeout} s "
                                                          "limit and was stopped")
                elif jail is not None and jail.memory_exceeded():
                    mib = jail.sandbox.limits.memory_bytes // 2**20
                    state, message = "kernel_died", f"the kernel died: it used more than the {mib} MiB memory limit"
                else:
                    state, message = "kernel_died", "the kernel died (a crash, or a resource limit)"
            finally:
                timer.cancel()
            status.update(state=state, message=message, cells_s=round(time.monotonic() - start, 3))
            save(nb)
            write_status()
            if args.checks:
                status["checks"] = _run_checks(args, km, grade_ids, state, message, log)
                status["checks_s"] = round(time.monotonic() - start - status["cells_s"], 3)
                write_status()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        log.exception("executor failed")
        if status["state"] in ("failed", "ok", "errors") and "cells_s" not in status:
            status.update(state="failed", message=f"the kernel could not be run ({type(exc).__name__}: {exc})"[:300])
        if args.checks and "checks" not in status:
            status["checks"] = {}
        write_status()
    return 0


def _run_checks(args, km, grade_ids, state, message, log) -> dict:
    """The lab's trusted checks against the kernel, if it is still alive."""
    from .trusted import Student, load_checks, run_checks

    if state in ("kernel_died", "notebook_timeout") or not km.alive():
        why = message or "the kernel is no longer running"
        return {gid: {"passed": False, "message": f"not checked: {why}", "seconds": 0.0} for gid in grade_ids}
    checks = load_checks(Path(args.checks))
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        student = Student(_kernel_transport(km, kc, log), call_timeout=args.cell_timeout)
        outcomes = run_checks(checks, student, grade_ids, deadline=time.monotonic() + args.check_timeout,
                              log=log.warning)
    finally:
        kc.stop_channels()
    return {gid: {"passed": o.passed, "message": o.message, "seconds": round(o.seconds, 3)}
            for gid, o in outcomes.items()}


if __name__ == "__main__":
    sys.exit(_child_main())
