"""Hostile submissions (samples/adversarial/) graded in one batch with the
sandbox: each gets its expected score and reason, and none harms the others
or the course."""
from __future__ import annotations

import hashlib
import json

import pytest

from autograder.course import Course
from autograder.demo import check_expected
from autograder.grade import GradeOptions, grade
from autograder.sandbox import bwrap_works, make_sandbox
from autograder.submissions import collect

ROOT = Course().root
LAB = "lab00_basics"
FIXTURES = ROOT / "samples" / "adversarial"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())

pytestmark = pytest.mark.notebook


def _digest(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    assert bwrap_works(), "bubblewrap is required for these tests: `make venv` installs it"
    course = Course(workdir=tmp_path_factory.mktemp("adversarial"))
    protected = [ROOT / "helpers" / "checks.py", course.solution_notebook(LAB), course.release_notebook(LAB)]
    before = _digest(protected)
    subs, warnings = collect(FIXTURES / LAB, course.labs(), LAB)
    assert warnings == [] and len(subs) == len(EXPECTED[LAB])
    sandbox = make_sandbox("bwrap", course, [FIXTURES])
    # The submission that ignores interrupts can only be stopped by the notebook limit: grade it
    # on its own with a short one (its score is 0 wherever the limit falls), the rest with room.
    stuck = [s for s in subs if s.student == "ignores_interrupts"]
    rest = [s for s in subs if s.student != "ignores_interrupts"]
    results = {r.student: r for r in grade(course, stuck, GradeOptions(cell_timeout=10, notebook_timeout=45,
                                                                        sandbox=sandbox))}
    options = GradeOptions(workers=2, cell_timeout=120, notebook_timeout=900, sandbox=sandbox)
    results.update({r.student: r for r in grade(course, rest, options)})
    return course, results, before, _digest(protected)


def test_each_attack_gets_its_expected_score_and_status(batch):
    _, results, _, _ = batch
    problems = check_expected(list(results.values()), EXPECTED)
    assert problems == [], "\n".join(problems + [f"{r.student}: {r.reason}" for r in results.values()])


@pytest.mark.parametrize("student", sorted(s for s, w in EXPECTED[LAB].items() if "reason" in w or "output" in w))
def test_each_attack_is_explained(batch, student):
    import nbformat

    course, results, _, _ = batch
    want = EXPECTED[LAB][student]
    if "reason" in want:
        assert want["reason"] in results[student].reason
    if "output" in want:
        nb = nbformat.read(course.autograded(student, LAB) / f"{LAB}.ipynb", as_version=4)
        text = json.dumps([c.get("outputs", []) for c in nb.cells])
        assert want["output"] in text


def test_the_course_files_are_untouched(batch):
    _, _, before, after = batch
    assert before == after


def test_the_fork_bomb_was_contained(batch):
    import re

    import nbformat

    course, _, _, _ = batch
    nb = nbformat.read(course.autograded("fork_bomb", LAB) / f"{LAB}.ipynb", as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    children = int(re.search(r"fork refused after (\d+) children", text).group(1))
    assert children < 256


def test_no_grading_process_is_left_behind(batch):
    import psutil

    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if "autograder.execute" in " ".join(p.info["cmdline"] or []) and "adversarial" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
