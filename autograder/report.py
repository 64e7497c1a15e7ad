"""The gradebook as instructors read it: a table, CSV exports, HTML feedback."""
from __future__ import annotations

import csv
import html
import logging
import re
from pathlib import Path

from .course import Course
from .grade import Result, load_result


def results(course: Course, lab: str | None = None) -> list[Result]:
    """Every graded submission (from the gradebook), with the grading status
    recorded by ``effml grade``; scores come from the gradebook so manual
    grades given in formgrader count."""
    from nbgrader.api import Gradebook

    from .grade import _finish_totals

    rows = []
    if not course.db_path.exists():
        return rows
    with Gradebook(course.db_url) as gb:
        pairs = [(a.name, s.student.id) for a in gb.assignments for s in a.submissions
                 if lab is None or a.name == lab]
    for lab_id, student in sorted(pairs):
        r = load_result(course, lab_id, student) or Result(student, lab_id, "not graded by effml")
        _finish_totals(course, r)
        rows.append(r)
    return rows


def format_table(rows: list[Result]) -> str:
    if not rows:
        return "(the gradebook is empty)"
    head = f"{'lab':<20}{'student':<22}{'score':>8}{'auto':>10}{'manual':>8}  {'status':<16}reason"
    lines = [head, "-" * (len(head) + 20)]
    for r in rows:
        pending = sum(1 for v in r.tasks.values() if v is None)
        manual = f"{pending} todo" if pending else "done"
        lines.append(f"{r.lab:<20}{r.student:<22}{r.auto_score:>8g}{f'/{r.auto_max:g}':>10}{manual:>8}  "
                     f"{r.status:<16}{r.reason[:110]}")
    return "\n".join(lines)


def export_csv(course: Course, out_dir: Path, lab: str | None = None) -> list[Path]:
    """``grades_<lab>.csv`` (a row per student, a column per task) for each
    lab and ``tasks.csv`` (a row per student and task)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results(course, lab)
    written = []
    for lab_id in sorted({r.lab for r in rows}):
        lab_rows = [r for r in rows if r.lab == lab_id]
        tasks = list(lab_rows[0].tasks)
        path = out_dir / f"grades_{lab_id}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["student", "score", "auto_max", "manual_max", "max_score", "status", "reason", *tasks])
            for r in lab_rows:
                w.writerow([r.student, f"{r.auto_score:g}", f"{r.auto_max:g}", f"{r.manual_max:g}",
                            f"{r.max_score:g}", r.status, r.reason,
                            *["" if r.tasks.get(t) is None else f"{r.tasks[t]:g}" for t in tasks]])
        written.append(path)
    path = out_dir / "tasks.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lab", "student", "task", "score", "needs_manual_grade"])
        for r in rows:
            for task, score in r.tasks.items():
                w.writerow([r.lab, r.student, task, "" if score is None else f"{score:g}", score is None])
    written.append(path)
    return written


def generate_feedback(course: Course, lab: str) -> list[Path]:
    """nbgrader's HTML feedback for every autograded submission of ``lab``,
    with the grading status on top; a submission that could not be executed
    gets a page that says why."""
    from nbgrader.converters import GenerateFeedback
    from traitlets.config import Config

    coursedir = course.coursedir()
    coursedir.assignment_id = lab
    converter = GenerateFeedback(coursedir=coursedir, config=Config({"GenerateFeedback": {"force": True}}))
    converter.log.setLevel(logging.ERROR)
    if (course.workdir / "autograded").exists() and any((course.workdir / "autograded").glob(f"*/{lab}")):
        converter.start()
    pages = []
    for r in results(course, lab):
        page = course.feedback_dir() / r.student / lab / f"{lab}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        banner = (f"<div style='border:2px solid #c60;padding:8px;margin:8px;font-family:sans-serif'>"
                  f"<b>{html.escape(lab)}</b>: {r.auto_score:g}/{r.auto_max:g} automatic points"
                  f" ({r.manual_max:g} more graded by hand). Status: {html.escape(r.status)}."
                  + (f"<br>{html.escape(r.reason)}" if r.reason else "") + "</div>")
        body = page.read_text() if page.exists() else "<html><body></body></html>"
        body = re.sub(r"<!--effml-->.*?<!--/effml-->", "", body, flags=re.S)  # a re-run replaces it
        banner = f"<!--effml-->{banner}<!--/effml-->"
        body, n = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + banner, body, count=1)
        page.write_text(body if n else banner + body)
        pages.append(page)
    return pages
