"""Gradescope (issue 17): `effml gradescope LAB -o DIR` writes a bundle whose
`run_autograder`, run in a folder laid out as Gradescope lays out
/autograder (source/ from the zip, submission/, results/), grades the upload
as `effml grade` does (release, trusted checks with hidden cases, the lab's
limits, QUICK mode, the sandbox) and writes results/results.json in
Gradescope's format. Lab 00 with the full and blank samples."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder import cli
from autograder.course import REPO_ROOT

LAB = "lab00_basics"
SAMPLES = REPO_ROOT / "samples" / LAB
EXPECTED = json.loads((REPO_ROOT / "samples" / "expected.json").read_text())[LAB]
TASKS = {"Task 1.1", "Task 1.2", "Task 1.3", "Task 2.1", "Task 2.2", "Task 3.1", "Task 3.2"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    assert cli.main(["gradescope", LAB, "-o", str(out)]) == 0
    return out


def _gradescope_run(bundle: Path, tmp: Path, notebook: Path, upload_name: str) -> dict:
    """/autograder as Gradescope lays it out, then its run_autograder."""
    root = tmp / "autograder"
    with zipfile.ZipFile(bundle / "autograder.zip") as z:
        z.extractall(root / "source")
    run = root / "run_autograder"
    shutil.copyfile(root / "source" / "run_autograder", run)  # Gradescope copies it there
    run.chmod(0o755)
    (root / "submission").mkdir()
    shutil.copyfile(notebook, root / "submission" / upload_name)
    (root / "results").mkdir()
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "EFFML_PYTHON": sys.executable}
    proc = subprocess.run([str(run)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if shutil.which("bwrap"):  # the jail of `effml grade`, not the resource-limits fallback
        assert "bubblewrap is not usable" not in proc.stderr, proc.stderr[-3000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_the_bundle_has_what_gradescope_runs(bundle):
    with zipfile.ZipFile(bundle / "autograder.zip") as z:
        names = set(z.namelist())
        assert {"setup.sh", "run_autograder"} <= names
        assert (z.getinfo("run_autograder").external_attr >> 16) & 0o111
    for must in (f"course/solutions/{LAB}/grader.py", f"course/solutions/{LAB}/{LAB}.ipynb",
                 f"course/labs/{LAB}/{LAB}.ipynb", "course/autograder/grade.py", "course/helpers/checks.py",
                 "course/gradescope.json"):
        assert must in names, must
    assert not any(n.startswith("course/solutions/") and "/test_" in n for n in names)
    assert not any(n.startswith("course/solutions/lab01") for n in names)
    config = json.loads((bundle / "course" / "gradescope.json").read_text())
    assert config == {"lab": LAB, "quick": True, "seed": 0, "hidden_visibility": "after_due_date"}
    assert "pip install" in (bundle / "setup.sh").read_text()


def _check_format(data: dict) -> None:
    assert isinstance(data["score"], float) and isinstance(data["tests"], list)
    for t in data["tests"]:
        assert set(t) >= {"name", "score", "max_score", "output", "visibility"}
        assert t["visibility"] in ("visible", "hidden", "after_due_date", "after_published")


def test_full_and_blank_submissions_score_as_effml_grade(bundle, tmp_path):
    full = _gradescope_run(bundle, tmp_path / "full", SAMPLES / "alice_full" / f"{LAB}.ipynb", f"{LAB}.ipynb")
    _check_format(full)
    assert full["score"] == EXPECTED["alice_full"]["auto_score"]
    tasks = {t["name"].split(":")[0]: t for t in full["tests"] if t["name"].startswith("Task")}
    assert TASKS <= set(tasks)
    for name in TASKS:
        t = tasks[name]
        assert t["score"] == t["max_score"] > 0 and t["visibility"] == "after_due_date", t
        assert "passed" in t["output"]
    assert tasks["Task 4.1"]["max_score"] == 10 and tasks["Task 4.1"]["score"] == 0  # written: by hand
    run = next(t for t in full["tests"] if t["name"] == "Notebook run")
    assert run["visibility"] == "visible" and "status: ok" in run["output"]

    # The blank notebook, uploaded under another name: still found, every task 0 with the check's message.
    blank = _gradescope_run(bundle, tmp_path / "blank", SAMPLES / "bob_blank" / f"{LAB}.ipynb", "my_work.ipynb")
    _check_format(blank)
    assert blank["score"] == EXPECTED["bob_blank"]["auto_score"] == 0
    for t in blank["tests"]:
        if t["name"].split(":")[0] in TASKS:
            assert t["score"] == 0 and t["max_score"] > 0 and "Task" in t["output"], t
    assert "status: errors" in next(t for t in blank["tests"] if t["name"] == "Notebook run")["output"]


def test_an_upload_without_a_notebook_scores_zero_with_a_message(bundle, tmp_path):
    from autograder.gradescope import run

    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "submission" / "notes.txt").write_text("no notebook")
    data = run(root, course=type("C", (), {"root": bundle / "course"})())
    assert data["score"] == 0 and f"{LAB}.ipynb" in data["output"]
    assert json.loads((root / "results" / "results.json").read_text()) == data
