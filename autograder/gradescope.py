"""Gradescope: an autograder bundle that grades an uploaded notebook the way
``effml grade`` does, and writes Gradescope's ``results.json``.

``effml gradescope LAB -o DIR`` writes ``DIR/autograder.zip`` (upload it as
the assignment's autograder) and the same files unpacked in ``DIR/``:

- ``setup.sh``: run once by Gradescope on its Ubuntu image: Python, bubblewrap,
  the course (this bundle's ``course/``) installed into a venv.
- ``run_autograder``: run per submission: ``python -m autograder.gradescope
  run`` in ``course/``; it grades ``/autograder/submission/<lab>.ipynb`` (or
  the one notebook uploaded) with the lab's release, trusted checks (hidden
  cases included), limits and QUICK mode, in the sandbox, and writes
  ``/autograder/results/results.json``.
- ``course/``: the course as ``effml`` needs it for this lab only:
  ``autograder/``, ``helpers/``, ``datasets/``, ``solutions/<lab>/``,
  ``labs/<lab>/``, ``nbgrader_config.py``, ``pyproject.toml``, and
  ``gradescope.json`` (lab, mode, limits, visibility).

``results.json`` (Gradescope's specification): ``score``, ``output``,
``execution_time``, ``tests``: one per task (``name`` "Task 1.2 ...",
``score``, ``max_score``, ``output``: the trusted check's verdict,
``visibility``), one for the run itself (status and reasons, no points) and
one per written answer (0 of its points, "graded by hand"). The per-task
results include hidden cases, so their visibility is ``after_due_date`` by
default (``--visible`` shows them at once). ``AUTOGRADER_ROOT`` replaces
``/autograder`` (tests lay out a temporary one).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat

from .course import NEVER_RELEASED, Course
from .tasks import task_number

BUNDLE_CONFIG = "gradescope.json"
COURSE_FILES = ("autograder", "helpers", "datasets", "nbgrader_config.py", "pyproject.toml", "README.md")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu image (written by `effml gradescope`).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq software-properties-common bubblewrap util-linux >/dev/null
if ! command -v python3.11 >/dev/null; then
  add-apt-repository -y ppa:deadsnakes/ppa && apt-get update -qq
  apt-get install -y -qq python3.11 python3.11-venv >/dev/null
fi
python3.11 -m venv /autograder/venv
/autograder/venv/bin/pip install -q --upgrade pip
/autograder/venv/bin/pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install -q -e /autograder/source/course
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this per submission (written by `effml gradescope`).
# AUTOGRADER_ROOT replaces /autograder; EFFML_PYTHON the venv's python.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PY="${EFFML_PYTHON:-$ROOT/venv/bin/python}"
cd "$ROOT/source/course" || exit 1
exec "$PY" -m autograder.gradescope run --root "$ROOT"
"""


# ---------------------------------------------------------------- the bundle


def write_bundle(course: Course, lab: str, out_dir: Path, *, quick: bool = True, seed: int = 0,
                 visible: bool = False) -> Path:
    """Write the bundle for ``lab`` into ``out_dir``; returns the zip's path."""
    course.check_lab(lab)
    if not course.checks_file(lab).is_file():
        raise SystemExit(f"{lab} has no trusted checks ({course.checks_file(lab)}): it cannot be autograded")
    if not course.release_notebook(lab).is_file():
        raise SystemExit(f"{lab} is not released ({course.release_notebook(lab)}): run `effml release {lab}`")
    out_dir = Path(out_dir)
    target = out_dir / "course"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")
    for name in COURSE_FILES:
        src = course.root / name
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, target / name)
    # The lab's instructor side without its own tests (grader.py and the notebook are what grading reads).
    keep_out = shutil.ignore_patterns(*[p for p in NEVER_RELEASED if p not in ("grader.py", "*.md")])
    shutil.copytree(course.solutions / lab, target / "solutions" / lab, ignore=keep_out)
    shutil.copytree(course.labs_dir / lab, target / "labs" / lab, ignore=ignore)
    config = {"lab": lab, "quick": bool(quick), "seed": int(seed),
              "hidden_visibility": "visible" if visible else "after_due_date"}
    (target / BUNDLE_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
        (out_dir / name).write_text(text)
        (out_dir / name).chmod(0o755)
    zpath = out_dir / "autograder.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("setup.sh", "run_autograder"):
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, (out_dir / name).read_text())
        for p in sorted(target.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(out_dir))
    return zpath


# ---------------------------------------------------------------- grading one upload


def _find_upload(submission: Path, lab: str) -> Path | None:
    """``<lab>.ipynb`` anywhere in the upload, else its only notebook."""
    notebooks = sorted(p for p in submission.rglob("*.ipynb")
                       if p.is_file() and not p.is_symlink() and ".ipynb_checkpoints" not in p.parts)
    named = [p for p in notebooks if p.name == f"{lab}.ipynb"]
    if named:
        return named[0]
    return notebooks[0] if len(notebooks) == 1 else None


def _sandbox(course: Course):
    """The jail ``effml grade`` uses, showing the kernel the ``helpers`` its
    Python imports (the bundle's own once setup.sh installed it)."""
    import subprocess

    from .sandbox import Sandbox, bwrap_problem, kernel_keep, make_sandbox, sandbox_tag

    try:  # where a kernel, started away from the course folder, finds helpers
        found = subprocess.run([sys.executable, "-c", "import helpers; print(helpers.__file__)"], cwd="/",
                               capture_output=True, text=True, timeout=120).stdout.strip()
        helpers_root = Path(found).resolve().parent.parent if found else course.root
    except (OSError, subprocess.TimeoutExpired):
        helpers_root = course.root
    if helpers_root == course.root:
        return make_sandbox("auto", course)
    if not bwrap_problem(str(helpers_root)):
        keep = sorted(set(kernel_keep(course.root)) | set(kernel_keep(helpers_root)))
        return Sandbox("bwrap", keep=keep, tag=sandbox_tag(course))
    return make_sandbox("auto", course)


def _verdicts(course: Course, lab: str, student: str) -> dict[str, str]:
    """grade_id -> the verdict text of the autograded notebook's test cell."""
    path = course.autograded(student, lab) / f"{lab}.ipynb"
    out = {}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - no autograded notebook (an invalid upload)
        return out
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if not gid or cell.cell_type != "code":
            continue
        text = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                text.append(str(o.get("text", "")).strip())
            elif o.get("output_type") == "error":
                text.append(f"{o.get('evalue', '')}".strip())
        out[gid] = "\n".join(t for t in text if t)
    return out


def _task_titles(course: Course, lab: str) -> dict[str, tuple[float, str]]:
    """grade_id -> (points, a name) for every graded cell of the solution."""
    nb = nbformat.read(course.solution_notebook(lab), as_version=4)
    titles = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id"):
            gid = meta["grade_id"]
            number = task_number(gid)
            words = gid.split("_", 3)[3].replace("_", " ") if number and gid.count("_") >= 3 else gid
            titles[gid] = (float(meta.get("points", 0)), f"Task {number}: {words}" if number else gid)
    return titles


def results_json(course: Course, lab: str, result, visibility: str, wall_s: float) -> dict:
    """Gradescope's results.json for one graded ``Result``."""
    from .sanitize import plain_text

    titles = _task_titles(course, lab)
    verdicts = _verdicts(course, lab, result.student)
    tests = [{"name": "Notebook run", "score": 0, "max_score": 0, "visibility": "visible",
              "status": "passed" if result.status == "ok" else "failed",
              "output": plain_text(f"status: {result.status}" + (f"; {result.reason}" if result.reasons else ""),
                                   3000)}]
    for gid, (points, name) in titles.items():
        score = result.tasks.get(gid) if gid in result.tasks else 0.0
        if score is None:  # a written answer: graded by hand, outside Gradescope's autograder
            tests.append({"name": name, "score": 0, "max_score": points, "visibility": "visible",
                          "output": "graded by hand (manual grading pending)"})
            continue
        verdict = verdicts.get(gid) or ("all checks passed" if score >= points else "a check failed")
        tests.append({"name": name, "score": float(score), "max_score": points, "visibility": visibility,
                      "status": "passed" if score >= points else "failed",
                      "output": plain_text(verdict, 3000)})
    head = (f"{lab}: {result.auto_score:g}/{result.auto_max:g} automatic points"
            + (f" ({result.manual_max:g} more points are graded by hand)" if result.manual_max else "")
            + f"; status {result.status}.")
    if result.review:
        head += " A person will review this notebook."
    if visibility != "visible":
        head += " Per-task results (hidden cases included) are shown after the due date."
    return {"score": float(result.auto_score), "execution_time": round(wall_s, 1),
            "output": plain_text(head, 3000), "visibility": "visible", "stdout_visibility": "hidden",
            "tests": tests}


def run(root: Path, course: Course | None = None) -> dict:
    """Grade the upload under ``root/submission`` into ``root/results/results.json``."""
    from .grade import GradeOptions, grade
    from .submissions import collect

    start = time.monotonic()
    course_root = Path.cwd() if course is None else course.root
    config = json.loads((course_root / BUNDLE_CONFIG).read_text())
    lab = config["lab"]
    results_dir = Path(root) / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / "results.json"
    upload = _find_upload(Path(root) / "submission", lab)
    if upload is None:
        data = {"score": 0.0, "output": f"No notebook found: upload {lab}.ipynb.", "tests": [],
                "visibility": "visible"}
        out.write_text(json.dumps(data, indent=1))
        return data
    with tempfile.TemporaryDirectory(prefix="effml-gradescope-") as tmp:
        work = Course(root=course_root, workdir=Path(tmp) / "grading")
        student_dir = Path(tmp) / "upload" / "student"
        student_dir.mkdir(parents=True)
        shutil.copyfile(upload, student_dir / f"{lab}.ipynb")
        subs, _ = collect(student_dir, work.labs(), lab)
        options = GradeOptions(quick=bool(config.get("quick", True)), seed=int(config.get("seed", 0)),
                               sandbox=_sandbox(work), force=True)
        [result] = grade(work, subs, options)
        data = results_json(work, lab, result, config.get("hidden_visibility", "after_due_date"),
                            time.monotonic() - start)
    out.write_text(json.dumps(data, indent=1))
    return data


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m autograder.gradescope")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="grade /autograder/submission into /autograder/results/results.json")
    p.add_argument("--root", default=os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    args = ap.parse_args(argv)
    data = run(Path(args.root))
    print(data.get("output", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
