"""Test a lab's trusted checks without a kernel: the lab's own tests
(``solutions/<lab>/test_<lab>.py``) use this to prove that each task's
check passes the reference solution and fails typical wrong implementations.

``LabHarness(lab, preamble)`` executes the preamble (which stands in for the
notebook's locked set-up cells: small data, a tiny model) and the lab's
solution cells in a fresh namespace, then runs a task's check against that
namespace through the same wire code the kernel uses
(``wire.KERNEL_SOURCE``), so arguments and results cross as plain data
exactly as in grading. A *mistake* swaps one fragment of one solution cell::

    harness = LabHarness("lab00_basics", PREAMBLE)
    assert harness.outcome("task_1_1_output_size").passed
    assert not harness.outcome("task_1_1_output_size",
                               patch=("task_1_1_output_size_code", "// stride", "/ stride")).passed
"""
from __future__ import annotations

import contextlib
import io
import json

import nbformat

from .course import Course
from .trusted import Student, TaskOutcome, load_checks, run_checks
from .wire import KERNEL_SOURCE


def local_student(ns: dict) -> Student:
    """A :class:`Student` over a namespace in this process (the kernel's
    wire code, without the kernel)."""
    bridge: dict = {}
    exec(KERNEL_SOURCE, bridge)  # noqa: S102 - our own source
    answer = bridge["__effml_answer"]

    def send(request: dict, timeout: float) -> str:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return answer(json.dumps(request), ns)

    return Student(send)


class LabHarness:
    def __init__(self, lab: str, preamble: str = "", course: Course | None = None, needs: dict | None = None):
        self.lab = lab
        self.needs = needs  # grade id -> the solution cells its check needs (default: all of them)
        self.course = course or Course()
        self.preamble = preamble
        nb = nbformat.read(self.course.solution_notebook(lab), as_version=4)
        self.cells = []        # (grade_id, source, is a solution cell), in notebook order
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade")):
                self.cells.append((meta["grade_id"], cell.source, bool(meta.get("solution"))))
        self.checks = load_checks(self.course.checks_file(lab))

    @property
    def test_ids(self) -> list[str]:
        return [gid for gid, _, is_solution in self.cells if not is_solution]

    def namespace(self, patch: tuple[str, str, str] | None = None, extra: str = "",
                  only: list[str] | None = None) -> dict:
        """The preamble, every solution cell (``patch`` = (cell, old, new)
        changes one) and ``extra``, executed in a fresh namespace."""
        ns: dict = {"__name__": "__main__"}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(self.preamble, f"<{self.lab}:preamble>", "exec"), ns)  # noqa: S102
            patched = False
            for gid, source, is_solution in self.cells:
                if not is_solution or (only is not None and gid not in only):
                    continue
                if patch and gid == patch[0]:
                    if patch[1] not in source:
                        raise AssertionError(f"the solution of {gid} no longer contains {patch[1]!r}: "
                                             "update this mistake")
                    source, patched = source.replace(patch[1], patch[2]), True
                exec(compile(source, f"<{self.lab}:{gid}>", "exec"), ns)  # noqa: S102
            if patch and not patched:
                raise AssertionError(f"{self.lab} has no solution cell {patch[0]}")
            if extra:
                exec(compile(extra, f"<{self.lab}:extra>", "exec"), ns)  # noqa: S102
        return ns

    def outcome(self, grade_id: str, patch: tuple[str, str, str] | None = None, extra: str = "") -> TaskOutcome:
        """The trusted check of ``grade_id`` against the (patched) solution."""
        if grade_id not in self.checks:
            raise AssertionError(f"{self.lab}: grader.py has no check for {grade_id}")
        only = self.needs.get(grade_id) if self.needs else None
        student = local_student(self.namespace(patch, extra, only))
        return run_checks({grade_id: self.checks[grade_id]}, student, [grade_id])[grade_id]


def cases(table: dict) -> list:
    """``pytest.param`` per entry of a MISTAKES/ALTERNATIVES table (whose
    values end with the test cell's grade id), marked with that task
    (``-m task_1_2``)."""
    import re

    import pytest

    out = []
    for name, spec in table.items():
        m = re.match(r"^task_(\d+)_(\d+)", spec[-1])
        marks = [getattr(pytest.mark, f"task_{m.group(1)}_{m.group(2)}")] if m else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def lab_tests(lab: str, preamble: str, mistakes: dict, alternatives: dict, extra=None, needs=None,
              reasons: dict | None = None, solution_preambles: dict | None = None) -> dict:
    """The standard tests of a lab's checks, for its ``test_<lab>.py``::

        globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))

    - every graded cell has a check; the reference solution passes each;
    - each MISTAKE (solution cell, fragment, replacement, test cell) loses its task, with a message;
    - each ALTERNATIVE (a correct solution written differently) keeps it;
    - every autograded task has at least one mistake on file.

    ``extra(harness, test_id) -> source`` runs after the solution cells (a
    lab whose check reads a long computation's result supplies it there);
    ``needs`` (grade id -> solution cells) runs only those before a check
    (a lab whose solution cells train for long). ``reasons`` (mistake name ->
    text) is what the failed check's message must say. ``solution_preambles``
    (grade id -> preamble) proves the reference solution of those tasks with
    another preamble (e.g. the notebook's QUICK data, where the tiny one
    cannot reach the task's target); mistakes and alternatives keep ``preamble``.
    """
    import pytest

    def more(harness, test_id):
        return extra(harness, test_id) if extra else ""

    @pytest.fixture(scope="module")
    def harness():
        return LabHarness(lab, preamble, needs=needs)

    solution_harnesses: dict = {}

    def solution_harness(harness, test_id):
        if test_id not in (solution_preambles or {}):
            return harness
        text = solution_preambles[test_id]
        if text not in solution_harnesses:
            solution_harnesses[text] = LabHarness(lab, text, needs=needs)
        return solution_harnesses[text]

    def test_every_graded_cell_has_a_check(harness):
        assert sorted(harness.checks) == sorted(harness.test_ids)
        assert needs is None or sorted(needs) == sorted(harness.test_ids)

    @pytest.mark.parametrize("test_id", LabHarness(lab).test_ids)
    def test_the_solution_passes(harness, test_id):
        h = solution_harness(harness, test_id)
        outcome = h.outcome(test_id, extra=more(h, test_id))
        assert outcome.passed, outcome.message

    @pytest.mark.parametrize("name", cases(mistakes))
    def test_the_mistake_loses_the_task(harness, name):
        cell, old, new, test_id = mistakes[name]
        outcome = harness.outcome(test_id, patch=(cell, old, new), extra=more(harness, test_id))
        assert not outcome.passed, f"{name}: the check of {test_id} passed a wrong implementation"
        assert outcome.message, "a failed task says why"
        assert (reasons or {}).get(name, "") in outcome.message, f"{name}: the message does not say why"

    @pytest.mark.parametrize("name", cases(alternatives))
    def test_a_correct_alternative_passes(harness, name):
        cell, old, new, test_id = alternatives[name]
        outcome = harness.outcome(test_id, patch=(cell, old, new), extra=more(harness, test_id))
        assert outcome.passed, f"{name}: {outcome.message}"

    def test_every_task_has_a_mistake_on_file(harness):
        missing = set(harness.test_ids) - {spec[-1] for spec in mistakes.values()}
        assert missing == set(), f"no mistake on file for {sorted(missing)}"

    return {"harness": harness,
            "test_every_graded_cell_has_a_check": test_every_graded_cell_has_a_check,
            "test_the_solution_passes": test_the_solution_passes,
            "test_the_mistake_loses_the_task": test_the_mistake_loses_the_task,
            "test_a_correct_alternative_passes": test_a_correct_alternative_passes,
            "test_every_task_has_a_mistake_on_file": test_every_task_has_a_mistake_on_file}


def locked_cell(lab: str, grade_id: str, course: Course | None = None) -> str:
    """The source of one of the lab's locked cells, for a PREAMBLE that runs it as the notebook does."""
    nb = nbformat.read((course or Course()).solution_notebook(lab), as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
