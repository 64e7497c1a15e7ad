"""Every lab, statically and through the production grading path.

Each lab's solution notebook and its blank release are graded once per test
run by ``autograder.grade.grade`` with the bubblewrap sandbox on, exactly as
``effml grade`` does (the kernel jailed, the trusted checks in the grader):
the solution must score every automatic point, print the figures the lab
promises (``effml.expected_output`` in its metadata) and run without errors;
the blank must score 0, each stub naming its task. One class per lab, so
``pytest -n 2 --dist loadscope`` spreads the labs over the workers.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import pytest

from autograder.course import Course
from autograder.grade import GradeOptions, grade
from autograder.release import stale_files
from autograder.sandbox import make_sandbox
from autograder.submissions import Submission
from autograder.validate import static_problems

COURSE = Course()
LABS = COURSE.labs()
ROOT = COURSE.root
# Longest first, so the two workers finish together.
ORDER = ["lab06_awq", "lab08_qlora", "lab14_tsm", "lab03_qat_kd", "lab07_llm_edge", "lab01_pruning", "lab02_quantization",
         "lab09_distributed", "lab00_basics", "lab04_nas", "lab10_qml", "lab05_tinyengine"]


def test_there_are_labs():
    assert "lab00_basics" in LABS


@pytest.mark.parametrize("lab", LABS)
def test_lab_follows_the_contract(lab):
    nb = nbformat.read(COURSE.solution_notebook(lab), as_version=4)
    assert static_problems(nb) == []


@pytest.mark.parametrize("lab", LABS)
def test_lab_has_trusted_checks_and_its_own_tests(lab):
    assert COURSE.checks_file(lab).is_file(), f"solutions/{lab}/grader.py is missing"
    assert (COURSE.solutions / lab / f"test_{lab}.py").is_file(), f"solutions/{lab}/test_{lab}.py is missing"
    nb = nbformat.read(COURSE.solution_notebook(lab), as_version=4)
    hidden = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
              if "BEGIN HIDDEN TESTS" in c.source and c.metadata.get("nbgrader")]
    assert hidden == [], "hidden tests belong in grader.py, not in the notebook"


@pytest.mark.parametrize("lab", LABS)
def test_students_choose_quick_mode_through_the_environment(lab, monkeypatch):
    """README: `EFFML_QUICK=1 make lab`. The released notebook's locked parameters cell reads it."""
    nb = nbformat.read(COURSE.release_notebook(lab), as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    for value, quick in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv("EFFML_QUICK", value)
        monkeypatch.setenv("EFFML_SEED", "7")
        ns: dict = {}
        exec(cell.source, ns)  # noqa: S102 - the course's own locked cell
        assert (ns["QUICK"], ns["SEED"]) == (quick, 7)


@pytest.mark.parametrize("lab", LABS)
def test_labs_dir_matches_a_fresh_release(lab):
    assert stale_files(COURSE, lab) == [], "run `effml release` and commit labs/"


def test_the_trusted_checks_are_never_released():
    released = [str(p.relative_to(ROOT)) for p in COURSE.labs_dir.rglob("*") if p.is_file() and p.suffix != ".ipynb"]
    assert released == []


def test_no_committed_notebook_has_outputs():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked, "git ls-files found no notebooks"
    dirty = []
    for rel in tracked:
        if rel.startswith("samples/"):
            continue  # sample submissions are student files, checked by samples/build_samples.py --check
        try:
            nb = json.loads((ROOT / rel).read_text())
        except ValueError:
            dirty.append(f"{rel}: not valid JSON")
            continue
        if any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"):
            dirty.append(rel)
    assert dirty == [], "strip outputs with `effml strip`"


def test_samples_are_current():
    out = subprocess.run([sys.executable, "samples/build_samples.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


class GradedLab:
    """Solution and blank release of ``LAB``, graded once."""
    LAB = ""

    @pytest.fixture(scope="class")
    def graded(self, tmp_path_factory):
        lab = self.LAB
        course = Course(workdir=tmp_path_factory.mktemp(f"graded-{lab}"))
        subs = [Submission("solution", lab, course.solution_notebook(lab).read_bytes(), "solutions/"),
                Submission("blank", lab, course.release_notebook(lab).read_bytes(), "labs/")]
        results = {r.student: r for r in grade(course, subs, GradeOptions(sandbox=make_sandbox("bwrap", course)))}
        notebooks = {s: nbformat.read(course.autograded(s, lab) / f"{lab}.ipynb", as_version=4) for s in results}
        return results, notebooks

    def test_the_solution_scores_full_marks(self, graded, record_property):
        results, _ = graded
        r = results["solution"]
        record_property("quick_runtime_s", (self.LAB, r.exec_s, r.check_s))
        failed = {gid: s for gid, s in r.tasks.items() if s is not None and s == 0}
        assert r.auto_max > 0 and r.auto_score == r.auto_max, (r.status, r.reasons, failed, self._messages(graded))
        assert r.status == "ok", r.reasons
        assert not any("edited read-only" in x for x in r.reasons), r.reasons

    def test_the_solution_prints_its_figures(self, graded):
        _, notebooks = graded
        nb = notebooks["solution"]
        stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []) if o.get("output_type") == "stream")
        source = nbformat.read(COURSE.solution_notebook(self.LAB), as_version=4)
        missing = [p for p in source.metadata.get("effml", {}).get("expected_output", [])
                   if not re.search(p, stdout)]
        assert missing == [], f"the solution never printed lines matching {missing}"

    def test_the_solution_draws_its_figures(self, graded):
        """Every cell tagged `figure` (docs/authoring.md) shows an image in the solution's graded run."""
        _, notebooks = graded
        tagged = [c for c in notebooks["solution"].cells if "figure" in c.metadata.get("tags", [])]
        assert tagged, f"{self.LAB} draws no figure: tag the cells that draw one `figure`"
        blank = [c.metadata.get("nbgrader", {}).get("grade_id", c.get("id")) for c in tagged
                 if not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
        assert blank == [], f"these figure cells showed no image: {blank}"

    def test_the_blank_release_scores_zero(self, graded):
        results, notebooks = graded
        r = results["blank"]
        assert r.auto_score == 0, {k: v for k, v in r.tasks.items() if v}
        for cell in notebooks["blank"].cells:
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
                errors = [o for o in cell.outputs if o.get("output_type") == "error"]
                if errors:  # a stub that ran says which task it is
                    assert errors[0]["ename"] == "NotImplementedError", errors[0]
                    assert errors[0]["evalue"].startswith("Task "), errors[0]

    def _messages(self, graded):
        _, notebooks = graded
        return [o.get("evalue", "")[:300] for c in notebooks["solution"].cells for o in c.get("outputs", [])
                if o.get("output_type") == "error"]


for _lab in sorted(LABS, key=lambda lab: ORDER.index(lab) if lab in ORDER else len(ORDER)):
    _name = "TestGraded" + "".join(part.capitalize() for part in _lab.split("_"))
    globals()[_name] = pytest.mark.notebook(type(_name, (GradedLab,), {"LAB": _lab}))
