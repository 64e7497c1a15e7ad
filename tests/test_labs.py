"""Every lab, statically and with its blank release executed. (The solutions
are executed once, by nbval, through the root conftest.py.)"""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from autograder.course import Course
from autograder.execute import execute
from autograder.release import stale_files
from autograder.scoring import score_cells
from autograder.validate import static_problems

COURSE = Course()
LABS = COURSE.labs()
ROOT = COURSE.root


def test_there_are_labs():
    assert "lab00_basics" in LABS


@pytest.mark.parametrize("lab", LABS)
def test_lab_follows_the_contract(lab):
    nb = nbformat.read(COURSE.solution_notebook(lab), as_version=4)
    assert static_problems(nb) == []


@pytest.mark.parametrize("lab", LABS)
def test_labs_dir_matches_a_fresh_release(lab):
    assert stale_files(COURSE, lab) == [], "run `effml release` and commit labs/"


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


@pytest.mark.notebook
@pytest.mark.parametrize("lab", LABS)
def test_blank_release_scores_zero(lab, tmp_path):
    limits = nbformat.read(COURSE.solution_notebook(lab), as_version=4).metadata.get("effml", {})
    res = execute(COURSE.release_notebook(lab), tmp_path / "blank.ipynb", parameters={"QUICK": True, "SEED": 0},
                  cwd=COURSE.labs_dir / lab, env={"EFFML_QUICK": "1"},
                  cell_timeout=limits.get("cell_timeout", 600), notebook_timeout=limits.get("notebook_timeout", 1800))
    assert res.status in ("ok", "errors"), res.reason
    rows = score_cells(res.notebook)
    assert rows, "no graded cells found"
    earned = {r.grade_id: r.score for r in rows if r.score}
    assert earned == {}, f"the blank release earns points: {earned}"
    stubs = [c for c in res.notebook.cells
             if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
    for cell in stubs:
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:  # a stub that ran says which task it is
            assert errors[0]["ename"] == "NotImplementedError" and errors[0]["evalue"].startswith("Task "), errors[0]


def test_samples_are_current():
    out = subprocess.run([sys.executable, "samples/build_samples.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
