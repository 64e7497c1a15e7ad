"""Instructor-facing outputs (issue 17): `effml report LAB` (one HTML page,
pictures as data URIs, the students needing attention), `effml export
--format canvas` (Canvas's gradebook import, totals with manual points), and
`effml grade`'s progress (a line per submission when not on a terminal).
Fast: a small gradebook, no notebook executed (tests/test_browser.py opens
the report in Chromium)."""
from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import nbformat

from autograder import cli
from autograder.course import REPO_ROOT, Course
from autograder.grade import Result, _finish_totals, _save_result

LAB = "lab00_basics"


def _cells() -> dict[str, tuple[float, str]]:
    nb = nbformat.read(REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    return {m["grade_id"]: (float(m["points"]), c.cell_type) for c in nb.cells
            if (m := c.metadata.get("nbgrader", {})).get("grade")}


# student -> (failed tasks, status, reasons, review, written score: None = pending)
STUDENTS = {
    "alice_full": ((), "ok", [], [], 8),
    "bob_blank": (None, "errors", [], [], None),
    "carol_partial": (("task_2_2_peak_memory", "task_3_1_latency", "task_3_2_pareto"), "errors", [], [], 5),
    "dave_timeout": (("task_3_2_pareto",), "cell_timeout", ["a cell ran past 120 s"], [], 0),
    "grace_flagged": (("task_1_1_output_size",), "ok", [], ["needs review: patches builtins"], 10),
}


def make_gradebook(workdir: Path) -> Course:
    """A graded lab 00 in ``workdir``: the real cells, five students."""
    from nbgrader.api import Gradebook

    course = Course(workdir=workdir)
    cells = _cells()
    with Gradebook(course.db_url) as gb:
        gb.add_assignment(LAB)
        gb.add_notebook(LAB, LAB)
        for gid, (points, kind) in cells.items():
            gb.add_grade_cell(gid, LAB, LAB, max_score=points, cell_type=kind)
            if kind == "markdown":
                gb.add_solution_cell(gid, LAB, LAB)
        for student, (failed, status, reasons, review, written) in STUDENTS.items():
            gb.update_or_create_student(student, first_name=student.split("_")[0].title(), last_name="Doe")
            gb.update_or_create_submission(LAB, student)
            for gid, (points, kind) in cells.items():
                g = gb.find_grade(gid, LAB, LAB, student)
                if kind == "code":
                    g.auto_score = 0 if failed is None or gid in failed else points
                    g.needs_manual_grade = False
                else:
                    g.auto_score, g.manual_score, g.needs_manual_grade = None, written, written is None
        gb.db.commit()
    for i, (student, (_, status, reasons, review, _)) in enumerate(STUDENTS.items()):
        r = Result(student, LAB, status, reasons=reasons, review=review, total_s=10.0 + 7 * i, exec_s=8.0 + 7 * i)
        _finish_totals(course, r)
        _save_result(course, r)
    return course


def test_report_page_has_pictures_and_who_needs_attention(tmp_path):
    course = make_gradebook(tmp_path / "grading")
    assert cli.main(["--workdir", str(course.workdir), "report", LAB]) == 0
    page = (course.workdir / "reports" / f"{LAB}.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 4  # scores, pass rate per task, failure reasons, time per submission
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and len(png) > 2000
    assert "Content-Security-Policy" in page and "img-src data:" in page
    attention = page.split('id="attention"', 1)[1].split("</table>", 1)[0]
    assert "dave_timeout" in attention and "timed out" in attention
    assert "grace_flagged" in attention and "needs review" in attention
    assert "bob_blank" in attention and "manual grading pending" in attention
    assert "alice_full" not in attention and "carol_partial" not in attention


def test_the_hardest_task_comes_first():
    from autograder.lab_report import attention, reason_kind

    r = Result("x", LAB, "cell_timeout", reasons=["a cell ran past 120 s"])
    assert reason_kind(r) == "cell timeout"
    assert reason_kind(Result("y", LAB, "ok")) is None
    assert attention([Result("z", LAB, "ok", manual_pending=1)]) == [("z", "manual grading pending (1 answer(s))")]
    edited = Result("t", LAB, "ok", reasons=["edited read-only cells task_1_1_output_size (restored from the release)"])
    assert attention([edited]) == [("t", "changed the lab's locked cells: edited read-only cells task_1_1_output_size "
                                         "(restored from the release)")]


def test_report_of_an_ungraded_lab_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["--workdir", str(tmp_path / "empty"), "report", LAB]) == 2
    assert "effml: error: no graded submissions" in capsys.readouterr().err


def test_canvas_export_has_totals_with_manual_points(tmp_path):
    course = make_gradebook(tmp_path / "grading")
    out = tmp_path / "export"
    assert cli.main(["--workdir", str(course.workdir), "export", "--format", "canvas", "-o", str(out)]) == 0
    rows = list(csv.reader((out / "canvas_grades.csv").open()))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", LAB]
    assert rows[1] == ["Points Possible", "", "", "", "", "100"]
    by_login = {r[3]: r for r in rows[2:]}
    assert by_login["alice_full"][0] == "Doe, Alice" and by_login["alice_full"][5] == "98"  # 90 + 8 by hand
    assert by_login["bob_blank"][5] == "0"
    assert by_login["carol_partial"][5] == "55"   # 50 + 5
    assert by_login["grace_flagged"][5] == "90"   # 80 + 10
    # The plain CSV keeps its columns, with the same totals.
    assert cli.main(["--workdir", str(course.workdir), "export", "-o", str(out)]) == 0
    plain = {r["student"]: r for r in csv.DictReader((out / f"grades_{LAB}.csv").open())}
    assert plain["alice_full"]["total"] == "98" and plain["alice_full"]["manual_score"] == "8"


def test_progress_is_one_line_per_submission_off_a_terminal():
    stream = io.StringIO()
    progress, closer = cli._progress_printer(2, stream)
    progress(Result("alice", LAB, "ok", auto_score=90, auto_max=90, total_s=12))
    progress(Result("bob", LAB, "errors", auto_max=90, total_s=3))
    closer.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] alice/lab00_basics: 90/90 ok") and "ETA" in lines[0]
    assert lines[1].startswith("[2/2] bob/lab00_basics: 0/90 errors") and "ETA 0 s" in lines[1]


def test_progress_is_a_bar_with_eta_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    progress, bar = cli._progress_printer(2, stream)
    progress(Result("alice", LAB, "ok", auto_score=90, auto_max=90))
    bar.close()
    out = stream.getvalue()
    assert "grading:" in out and "1/2" in out and "<" in out  # tqdm's elapsed<remaining
