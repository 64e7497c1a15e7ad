"""Trusted checks: a lab's scores are computed in the grader, not in the
student's kernel.

Each lab keeps its graded checks in ``solutions/<lab>/grader.py`` (never
released, never visible to the kernel). A check is a function of the
student's notebook, seen through :class:`Student`::

    from autograder.trusted import task
    from helpers.checks import check_equal

    @task("task_1_1_output_size")
    def output_size(student):
        f = student.function("conv2d_output_size")
        check_equal(f(16, 3, padding=1), 16, name="conv2d_output_size(16, 3, padding=1)", task="1.1")

``student.function(name)(*args)`` calls the student's function in the
sandboxed kernel with plain-data arguments and returns its result decoded as
plain data (``autograder.wire``): the reference values, the expected results
and the comparison all stay here. A check passes when it returns without
raising; the task then scores its points, otherwise 0 with the first failure
as the message. Visible tests stay in the notebook, for the student; the
grader re-checks them here along with the hidden ones.
"""
from __future__ import annotations

import importlib.util
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .wire import ModuleSpec, ModuleState, Ref, StudentError, WireError

__all__ = ["task", "Student", "Ref", "ModuleSpec", "ModuleState", "StudentError", "WireError",
           "CallTimeout", "load_checks", "run_checks", "run_jailed", "CHECKS_FILE"]

CHECKS_FILE = "grader.py"


class CallTimeout(Exception):
    """A call into the kernel ran past its limit (the kernel was interrupted)."""


def task(grade_id: str):
    """Mark a function as the check of the graded test cell ``grade_id``."""
    def mark(fn):
        fn.__effml_task__ = grade_id
        return fn
    return mark


class Student:
    """The student's notebook as the trusted checks see it. ``transport``
    sends one request dict to the kernel and returns the answer's JSON text
    (or raises CallTimeout)."""

    def __init__(self, transport: Callable[[dict, float], str], call_timeout: float = 600):
        self._send = transport
        self.call_timeout = call_timeout
        self.calls = 0

    def _request(self, request: dict, what: str, timeout: float | None):
        from .wire import decode

        self.calls += 1
        return decode(self._send(request, timeout or self.call_timeout), what=what)

    def call(self, name: str, *args, args_back: bool = False, timeout: float | None = None, **kwargs):
        """``name(*args, **kwargs)`` in the kernel. With ``args_back`` the
        result is ``(result, [args after the call])`` for functions that work
        in place. (A student keyword named ``timeout`` or ``args_back``: use
        ``function(name)``, which passes every keyword through.)"""
        return self._call(name, args, kwargs, args_back, timeout)

    def _call(self, name, args, kwargs, args_back, timeout):
        return self._request({"op": "call", "name": name, "args": _enc_json(list(args)),
                              "kwargs": _enc_json(dict(kwargs)), "args_back": bool(args_back)},
                             f"the result of {name}()", timeout)

    def function(self, name: str, *, args_back: bool = False, timeout: float | None = None):
        """A callable that calls the student's ``name`` in the kernel; all its
        arguments, keywords included, go to the student's function."""
        def remote(*args, **kwargs):
            return self._call(name, args, kwargs, args_back, timeout)
        remote.__name__ = name
        return remote

    def value(self, name: str, timeout: float | None = None):
        """The notebook variable ``name`` as plain data (a model comes back as
        a :class:`ModuleState`)."""
        return self._request({"op": "get", "name": name}, f"the notebook's `{name}`", timeout)

    def source(self, name: str) -> str:
        """A string variable of the notebook (e.g. the C source of a kernel
        task); a non-string is a check failure."""
        got = self._request({"op": "source", "name": name}, f"the notebook's `{name}`", None)
        if type(got) is not str:
            raise WireError(f"`{name}` is not a string in the notebook")
        return got


def _enc_json(value):
    """Arguments as the JSON structure ``wire.encode`` would write."""
    import json

    from .wire import encode

    return json.loads(encode(value))


def load_checks(path: Path) -> dict[str, Callable]:
    """The ``@task`` functions of a lab's checks file, by grade id."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"effml_checks_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checks = {}
    for value in vars(module).values():
        gid = getattr(value, "__effml_task__", None)
        if gid is not None:
            if gid in checks:
                raise ValueError(f"{path}: two checks for {gid}")
            checks[gid] = value
    return checks


@dataclass
class TaskOutcome:
    grade_id: str
    passed: bool
    message: str = ""
    seconds: float = 0.0


def run_checks(checks: dict[str, Callable], student: Student, grade_ids: list[str],
               deadline: float | None = None, log=None) -> dict[str, TaskOutcome]:
    """Run each graded cell's check in notebook order; never raises."""
    from helpers.checks import CheckError

    outcomes = {}
    for gid in grade_ids:
        start = time.monotonic()
        fn = checks.get(gid)
        if fn is None:
            outcomes[gid] = TaskOutcome(gid, False, "the grader has no check for this cell")
            continue
        if deadline is not None and time.monotonic() > deadline:
            outcomes[gid] = TaskOutcome(gid, False, "not checked: the grading time limit was reached")
            continue
        try:
            fn(student)
            outcome = TaskOutcome(gid, True)
        except (CheckError, AssertionError) as exc:
            outcome = TaskOutcome(gid, False, str(exc) or type(exc).__name__)
        except StudentError as exc:
            outcome = TaskOutcome(gid, False, f"your code raised {exc}")
        except WireError as exc:
            outcome = TaskOutcome(gid, False, str(exc))
        except CallTimeout as exc:
            outcome = TaskOutcome(gid, False, str(exc))
        except Exception as exc:  # noqa: BLE001 - a check that cannot run scores 0, with why
            if log:
                log("check %s raised:\n%s" % (gid, traceback.format_exc()))
            outcome = TaskOutcome(gid, False, f"the check could not run on your results "
                                              f"({type(exc).__name__}: {str(exc)[:300]})")
        outcome.seconds = time.monotonic() - start
        outcomes[gid] = outcome
    return outcomes


def run_jailed(script: str, payload=None, timeout: float = 300) -> object:
    """Run ``python -c script`` in a jail of its own (the grading sandbox's
    settings, ``$EFFML_SANDBOX``; on the host when grading runs without
    one) with ``payload`` as JSON on stdin; its last stdout line, JSON, is
    the answer. For checks that must run student code outside the kernel
    (lab 07 compiles and runs the student's C here): the grader's process
    never loads it. Raises ``StudentError`` when the script fails."""
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-c", script]
    stdin = json.dumps(payload)
    try:
        if os.environ.get("EFFML_SANDBOX"):
            from .sandbox import Sandbox

            sandbox = Sandbox.from_json(os.environ["EFFML_SANDBOX"])
            with sandbox.session() as jail:
                proc = subprocess.run(jail.wrap(cmd), input=stdin, capture_output=True, text=True,
                                      timeout=timeout)
        else:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CallTimeout(f"running your code in isolation took longer than {timeout:g} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:500]
        raise StudentError(f"your code failed when run in isolation (exit code {proc.returncode}): {tail}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise WireError("your code's isolated run gave an unreadable answer") from None
