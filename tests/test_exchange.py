"""nbgrader on its own (issue 17): on a fresh clone nbgrader's commands find
what they need; the exchange workflow works end to end (the instructor's
`nbgrader release_assignment`, a student's `fetch_assignment` and `submit`,
the instructor's `collect`, then `effml grade` on what was collected); and
nbgrader's notebook runs (autograde, Formgrader's buttons, Validate) take
each lab's limits and QUICK mode from where `effml grade` takes them.

The student is another user (uid `nobody`) where the machine lets that user
run this Python, else another home directory and user name."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from autograder import cli
from autograder.course import REPO_ROOT, Course
from autograder.grade import load_result

LAB = "lab00_basics"
BIN = Path(sys.executable).parent
NOBODY = 65534


def _nbgrader(*args, cwd, env, user=None, check=True):
    cmd = [str(BIN / "nbgrader"), *map(str, args)]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _other_user_can_run_python() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            sys.executable, "-c", "import nbgrader, autograder"],
                           capture_output=True, text=True, timeout=120, cwd="/")
    return probe.returncode == 0


def _instructor_env(base: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFFML_")}
    env.update(EFFML_WORKDIR=str(base / "grading"), EFFML_EXCHANGE=str(base / "exchange"),
               EFFML_QUICK="1", PATH=f"{BIN}:{env.get('PATH', '')}")
    return env


def test_release_fetch_submit_collect_then_effml_grade():
    base = Path(tempfile.mkdtemp(prefix="effml-exchange-"))
    try:
        base.chmod(0o755)  # the student (another user) must reach the exchange
        as_other = _other_user_can_run_python()
        env = _instructor_env(base)
        # The exchange does not exist yet: nbgrader_config.py creates it (world-writable, sticky).
        _nbgrader("release_assignment", LAB, cwd=REPO_ROOT, env=env)
        exchange = base / "exchange"
        assert (exchange.stat().st_mode & 0o1777) == 0o1777
        assert (exchange / "effml" / "outbound" / LAB / f"{LAB}.ipynb").is_file()

        # The student: their own home, their own config (as a JupyterHub admin would set it).
        home = base / "student1"
        (home / ".jupyter").mkdir(parents=True)
        (home / ".jupyter" / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = 'effml'\nc.Exchange.root = {str(exchange)!r}\n")
        user = None
        if as_other:
            for p in [home, *home.rglob("*")]:
                os.chown(p, NOBODY, NOBODY)
            user = NOBODY
        senv = {"PATH": env["PATH"], "HOME": str(home), "USER": "student1", "LOGNAME": "student1",
                "LANG": "C.UTF-8"}
        listed = _nbgrader("list", cwd=home, env=senv, user=user)
        assert LAB in listed.stdout + listed.stderr
        _nbgrader("fetch_assignment", LAB, cwd=home, env=senv, user=user)
        fetched = home / LAB / f"{LAB}.ipynb"
        assert fetched.is_file()
        # The student works: their notebook becomes the full sample's answers.
        fetched.write_bytes((REPO_ROOT / "samples" / LAB / "alice_full" / f"{LAB}.ipynb").read_bytes())
        _nbgrader("submit", LAB, cwd=home, env=senv, user=user)
        inbound = list((exchange / "effml" / "inbound").iterdir())
        # nbgrader names the submitter by their account (uid), not by $USER
        student = pwd.getpwuid(NOBODY if as_other else os.getuid()).pw_name
        assert len(inbound) == 1 and inbound[0].name.startswith(f"{student}+{LAB}+"), inbound

        # The instructor collects into grading/submitted and grades with effml.
        _nbgrader("collect", LAB, cwd=REPO_ROOT, env=env)
        collected = base / "grading" / "submitted" / student / LAB / f"{LAB}.ipynb"
        assert collected.is_file()
        code = cli.main(["--workdir", str(base / "grading"), "grade", str(base / "grading" / "submitted"),
                         "--lab", LAB])
        assert code == 0
        r = load_result(Course(workdir=base / "grading"), LAB, student)
        assert r is not None and r.status == "ok" and r.auto_score == r.auto_max == 90, r
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_fresh_clone_needs_nothing_made_by_hand(tmp_path):
    """No grading/ yet: generate_assignment (which deletes the release it
    replaces) must not fail on the missing gradebook folder."""
    course = tmp_path / "course"
    course.mkdir()
    for name in ("nbgrader_config.py", f"solutions/{LAB}", f"labs/{LAB}"):
        src = REPO_ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, course / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFFML_")}
    env.update(EFFML_EXCHANGE=str(tmp_path / "exchange"))
    _nbgrader("generate_assignment", LAB, "--force", cwd=course, env=env)
    assert (course / "grading" / "gradebook.db").is_file()
    released = nbformat.read(course / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    assert 'NotImplementedError("Task 1.1")' in "".join(c.source for c in released.cells)


def _nbgrader_config(monkeypatch, quick: str | None):
    from nbgrader.apps import NbGraderApp

    if quick is None:
        monkeypatch.delenv("EFFML_QUICK", raising=False)
    else:
        monkeypatch.setenv("EFFML_QUICK", quick)
    monkeypatch.chdir(REPO_ROOT)
    app = NbGraderApp()
    app.config_file_paths.append(str(REPO_ROOT))
    app.load_config_file()
    return app.config


@pytest.mark.parametrize("quick, expected", [(None, "1"), ("1", "1"), ("0", "0")])
def test_nbgrader_runs_use_effml_mode(monkeypatch, quick, expected):
    config = _nbgrader_config(monkeypatch, quick)
    args = config.Execute.extra_arguments
    assert "--HistoryManager.hist_file=:memory:" in args
    assert any(f'"EFFML_QUICK": "{expected}"' in a for a in args), args


def test_nbgrader_runs_use_the_labs_limits(monkeypatch, tmp_path):
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute
    from nbgrader.validator import Validator

    from autograder.labrun import Limits, notebook_limits

    config = _nbgrader_config(monkeypatch, "1")
    lab_limit = notebook_limits(REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb").cell_timeout
    assert lab_limit != Execute.timeout.default_value  # nbgrader's 30 s is not what runs
    # `nbgrader autograde` and Formgrader's button: the graded assignment names the lab.
    [executor] = [p for p in Autograde(config=config).autograde_preprocessors if issubclass(p, Execute)]
    assert executor is not Execute
    pp = executor(config=config)
    seen = {}
    monkeypatch.setattr(Execute, "preprocess", lambda self, nb, res, *a, **k: seen.update(
        timeout=self.timeout, func=self.timeout_func) or (nb, res))
    pp.preprocess(nbformat.v4.new_notebook(), {"nbgrader": {"assignment": LAB}})
    assert seen == {"timeout": lab_limit, "func": None}
    # The Validate button: nbgrader's Validator runs the notebook from its folder.
    [validate_exec] = [p(parent=Validator(config=config)) for p in Validator(config=config).preprocessors
                       if p is Execute]
    monkeypatch.chdir(REPO_ROOT / "labs" / LAB)
    assert validate_exec.timeout_func(None) == lab_limit
    monkeypatch.chdir(tmp_path)
    assert validate_exec.timeout_func(None) == Limits().cell_timeout
