"""Test-suite settings shared by ``tests/`` and the labs' own tests under
``solutions/<lab>/``.

- Threads: ``-n 2`` runs two workers (and their kernels) on CI's 2 cores, so
  the cores are split between them before anything imports torch
  (oversubscribed OpenMP made lab 06's notebook 4x slower), unless the user
  set a thread count (``OMP_NUM_THREADS`` ...) themselves.
- Markers: one per lab (``-m lab01_pruning``) and one per task
  (``-m task_1_2``), added to every test under ``solutions/<lab>/`` and to
  each case parametrized with a task (``autograder.labtest.cases``), so
  ``pytest solutions/lab01_pruning -m task_1_2`` runs exactly that task's tests.
"""
from __future__ import annotations

import os
import re

import pytest

os.environ.setdefault("EFFML_QUICK", "1")
os.environ.setdefault("EFFML_SEED", "0")
from autograder.execute import THREAD_VARS, thread_env  # noqa: E402

_TASK = re.compile(r"^task_(\d+)_(\d+)")


def _test_processes(config) -> int:
    """How many test processes share this machine: xdist's worker count, seen
    from a worker or from the controller (``-n 2``); 1 without xdist."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput.get("workercount", 1))
    n = getattr(config.option, "numprocesses", None)
    return n if isinstance(n, int) and n > 0 else 1


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Split the cores before any test module imports torch. It must be done
    # here, not at import: the xdist controller imports this file too (with
    # no worker count in its environment) and its workers inherit its
    # environment, so a value set at import would give every worker, and every
    # kernel it starts, all the cores (measured: lab 06 ran 4x slower).
    if not any(os.environ.get(v) for v in THREAD_VARS):  # a value the user set wins
        os.environ.update(thread_env(_test_processes(config)), EFFML_TEST_THREADS="split")
    from autograder.course import Course

    for lab in Course().labs():
        config.addinivalue_line("markers", f"{lab}: the tests of {lab}")
    for n in range(1, 13):
        for m in range(1, 10):
            config.addinivalue_line("markers", f"task_{n}_{m}: the tests of Task {n}.{m}")


# The longest test scopes (a class or module: what `--dist loadscope` hands
# one worker), longest first, as measured by `make test`; everything else
# keeps its place after them. Started first, they end before the many short
# tests do, so no core idles at the end (`--no-loadscope-reorder` keeps this
# order; xdist's own puts the scopes with most tests first).
SLOW_FIRST = (
    "tests/test_adversarial.py::TestAttacksOnLab00",
    "tests/test_labs.py::TestGradedLab06Awq",
    "tests/test_adversarial.py::TestAttacksOnLab08",
    "tests/test_labs.py::TestGradedLab08Qlora",
    "tests/test_labs.py::TestGradedLab03QatKd",
    "tests/test_grading.py",
    "tests/test_cli_clients.py",
    "tests/test_labs.py::TestGradedLab07LlmEdge",
    "tests/test_gradescope.py",
    "tests/test_exchange.py",
    "tests/test_browser.py",
)


def _slow_rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(SLOW_FIRST) if nodeid.startswith(prefix + "::")), len(SLOW_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _slow_rank(item.nodeid))   # stable: the rest keep their order
    for item in items:
        parts = item.path.parts
        if "solutions" in parts and parts.index("solutions") + 1 < len(parts) - 1:
            item.add_marker(getattr(pytest.mark, parts[parts.index("solutions") + 1]))
        params = getattr(getattr(item, "callspec", None), "params", {})
        for value in params.values():
            m = _TASK.match(value) if isinstance(value, str) else None
            if m:
                item.add_marker(getattr(pytest.mark, f"task_{m.group(1)}_{m.group(2)}"))


def pytest_terminal_summary(terminalreporter):
    rows = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", []):
                if key == "quick_runtime_s":
                    rows[value[0]] = value[1:]
    if rows:
        terminalreporter.write_sep("-", "QUICK-mode solution runs through `effml grade` (sandboxed)")
        for lab, (exec_s, check_s) in sorted(rows.items()):
            terminalreporter.write_line(f"{lab}: notebook {exec_s:.1f} s, trusted checks {check_s:.1f} s")
