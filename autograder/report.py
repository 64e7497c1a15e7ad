"""The gradebook as instructors read it: a table, CSV exports, HTML feedback.

Totals count the points given by hand in Formgrader as well as the automatic
ones, and a submission whose written answers nobody has graded yet says so.
Everything a student influenced is made safe for where it goes (terminal,
spreadsheet, browser): see autograder/sanitize.py."""
from __future__ import annotations

import csv
import html
import logging
import multiprocessing
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .course import Course
from .sanitize import HTML_FILTERS, csv_cell, lock_page, plain_text, untrusted_outputs

if TYPE_CHECKING:
    from .grade import Result

log = logging.getLogger("effml.report")

PENDING = "manual grading pending"


def results(course: Course, lab: str | None = None) -> list[Result]:
    """Every graded submission (from the gradebook), with the grading status
    recorded by ``effml grade``; scores come from the gradebook so manual
    grades given in formgrader count."""
    from nbgrader.api import Gradebook

    from .grade import Result, _finish_totals, load_result

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


def _manual(r: Result) -> str:
    """Points given by hand / points to give by hand ("-" when none)."""
    if not r.manual_max and not r.manual_pending:
        return "-"
    return f"{r.manual_score:g}/{r.manual_max:g}"


def format_table(rows: list[Result]) -> str:
    """One line per submission: total (automatic + given by hand), the
    automatic part, the manual part, and whether manual grading is pending."""
    if not rows:
        return "(the gradebook is empty)"
    head = (f"{'lab':<20} {'student':<22}{'total':>10}{'auto':>10}{'manual':>9}  {'pending':<8}"
            f"{'status':<17}reason")
    lines = [head, "-" * (len(head) + 20)]
    for r in rows:
        pending = "yes" if r.manual_pending else ""
        reason = "; ".join(x for x in (r.reason, _review_summary(r)) if x)
        lines.append(f"{plain_text(r.lab, 20):<20} {plain_text(r.student, 22):<22}"
                     f"{f'{r.total_score:g}/{r.max_score:g}':>10}{f'{r.auto_score:g}/{r.auto_max:g}':>10}"
                     f"{_manual(r):>9}  {pending:<8}{plain_text(r.status, 16):<17}{plain_text(reason, 110)}")
    flagged = sum(1 for r in rows if r.review)
    if flagged:
        lines.append(f"\nneeds review: {flagged} submission(s) use constructs that can tamper with grading "
                     "(their scores are the trusted checks'; `effml export` lists what was found)")
    waiting = sum(1 for r in rows if r.manual_pending)
    if waiting:
        lines.append(f"\npending: {PENDING} for {waiting} submission(s) (written answers, in Formgrader); "
                     "their totals count the automatic points and the manual points given so far")
    return "\n".join(lines)


def export_csv(course: Course, out_dir: Path, lab: str | None = None) -> list[Path]:
    """``grades_<lab>.csv`` (a row per student, a column per task) for each
    lab and ``tasks.csv`` (a row per student and task). Cells that a
    spreadsheet would read as a formula are written as text."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results(course, lab)
    written = []

    def row(values):
        return [csv_cell(v) for v in values]

    for lab_id in sorted({r.lab for r in rows}):
        lab_rows = [r for r in rows if r.lab == lab_id]
        tasks = list(dict.fromkeys(t for r in lab_rows for t in r.tasks))
        path = out_dir / f"grades_{lab_id}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(row(["student", "total", "max_score", "auto_score", "auto_max", "manual_score",
                            "manual_max", "pending", "status", "reason", "needs_review", *tasks]))
            for r in lab_rows:
                w.writerow(row([r.student, f"{r.total_score:g}", f"{r.max_score:g}", f"{r.auto_score:g}",
                                f"{r.auto_max:g}", f"{r.manual_score:g}", f"{r.manual_max:g}",
                                PENDING if r.manual_pending else "", r.status, r.reason, " | ".join(r.review),
                                *["" if r.tasks.get(t) is None else f"{r.tasks[t]:g}" for t in tasks]]))
        written.append(path)
    path = out_dir / "tasks.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lab", "student", "task", "score", "needs_manual_grade"])
        for r in rows:
            for task, score in r.tasks.items():
                w.writerow(row([r.lab, r.student, task, "" if score is None else f"{score:g}", score is None]))
    written.append(path)
    return written


CANVAS_HEAD = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def export_canvas(course: Course, out_dir: Path, lab: str | None = None) -> list[Path]:
    """``canvas_grades.csv``: Canvas's gradebook import format (Grades >
    Import): ``Student, ID, SIS User ID, SIS Login ID, Section`` then one
    column per lab holding the student's *total* (automatic points plus the
    points given by hand so far), a ``Points Possible`` row under the header.
    The nbgrader student id goes in ``SIS Login ID`` (what Canvas matches on
    when ``ID`` is empty); names come from the gradebook when it has them.
    Edit the lab column headers to your Canvas assignment names (Canvas adds
    an ``(id)`` on export) to update existing assignments."""
    from nbgrader.api import Gradebook, MissingEntry

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results(course, lab)
    labs = sorted({r.lab for r in rows})
    students = sorted({r.student for r in rows})
    names = {}
    if course.db_path.exists():
        with Gradebook(course.db_url) as gb:
            for sid in students:
                try:
                    s = gb.find_student(sid)
                except MissingEntry:
                    continue
                full = " ".join(x for x in (s.first_name, s.last_name) if x)
                names[sid] = f"{s.last_name}, {s.first_name}" if s.first_name and s.last_name else full
    by = {(r.student, r.lab): r for r in rows}
    possible = {lab_id: max(r.max_score for r in rows if r.lab == lab_id) for lab_id in labs}
    path = out_dir / "canvas_grades.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([csv_cell(v) for v in CANVAS_HEAD + labs])
        w.writerow(["Points Possible", "", "", "", ""] + [f"{possible[x]:g}" for x in labs])
        for sid in students:
            scores = [f"{by[(sid, x)].total_score:g}" if (sid, x) in by else "" for x in labs]
            w.writerow([csv_cell(v) for v in [names.get(sid) or sid, "", "", sid, ""]] + scores)
    return [path]


# ---------------------------------------------------------------- feedback

FEEDBACK_TIMEOUT_S = float(os.environ.get("EFFML_FEEDBACK_TIMEOUT", "60"))  # per student
MAX_SOURCE_CHARS = 20_000     # a cell's source
MAX_OUTPUT_CHARS = 20_000     # one output's text (stream, traceback, text/html, ...)
MAX_IMAGE_CHARS = 4_000_000   # one image (base64)
MAX_PAGE_CHARS = 500_000      # all text of a page; further outputs give way to a note
MAX_PAGE_IMAGE_CHARS = 16_000_000  # all images of a page
TRUNCATED = "[truncated by the grader]"
HIDDEN_NOTE = "# (hidden tests are not shown)"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


def strip_hidden_tests(source: str, note: str = HIDDEN_NOTE) -> tuple[str, bool]:
    """``source`` without the lines from ``### BEGIN HIDDEN TESTS`` to
    ``### END HIDDEN TESTS`` (delimiters included), each region replaced by
    ``note`` at the region's indentation. An unterminated region hides the
    rest of the cell."""
    out, hidden, removed = [], False, False
    for line in source.split("\n"):
        if not hidden and BEGIN_HIDDEN in line:
            hidden = removed = True
            out.append(line[:len(line) - len(line.lstrip())] + note)
        elif hidden:
            if END_HIDDEN in line:
                hidden = False
        else:
            out.append(line)
    return "\n".join(out), removed


def _cut(text: str, limit: int, note: str) -> str:
    return text if len(text) <= limit else text[:limit] + note


def prepare_feedback_notebook(nb, show_hidden: bool = False):
    """The copy of an autograded notebook that a student's feedback shows:
    hidden tests removed (with their tracebacks, which quote them), and
    every source and output cut to a size that renders in seconds; past
    MAX_PAGE_CHARS of text in all, a cell's further outputs give way to a
    note (rendering costs up to 0.5 s per 20 000 characters of hostile
    markdown or HTML); images have a budget of their own."""
    import nbformat

    budget, images = MAX_PAGE_CHARS, MAX_PAGE_IMAGE_CHARS

    def room(limit: int) -> int:
        return max(0, min(limit, budget))

    for cell in nb.cells:
        code = cell.cell_type == "code"
        if not show_hidden:
            cell.source, removed = strip_hidden_tests(cell.source, HIDDEN_NOTE if code
                                                      else "*(hidden tests are not shown)*")
            if removed and code:
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":  # the traceback quotes the hidden lines
                        out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}",
                                            "(the traceback is not shown: it quotes hidden tests)"]
        cell.source = _cut(cell.source, room(MAX_SOURCE_CHARS), f"\n# {TRUNCATED}" if code else f"\n\n*{TRUNCATED}*")
        budget -= len(cell.source)
        if "attachments" in cell:
            size = sum(len(str(v)) for v in cell.attachments.values())
            if size > min(MAX_IMAGE_CHARS, images):
                del cell["attachments"]
            else:
                images -= size
        if not code:
            continue
        kept = []
        for out in cell.get("outputs", []):
            if budget <= 0:
                kept.append(nbformat.v4.new_output("stream", name="stdout", text=f"[more output: {TRUNCATED}]\n"))
                break
            kind = out.get("output_type")
            if kind == "stream":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else str(text)
                out["text"] = _cut(text, room(MAX_OUTPUT_CHARS), f"\n{TRUNCATED}\n")
                budget -= len(out["text"])
            elif kind == "error":
                lines, left = [], room(MAX_OUTPUT_CHARS)
                for line in map(str, out.get("traceback", [])):
                    if len(line) > left:
                        lines.append(line[:left] + TRUNCATED)
                        break
                    lines.append(line)
                    left -= len(line)
                out["traceback"] = lines
                out["evalue"] = _cut(str(out.get("evalue", "")), 2000, TRUNCATED)
                budget -= sum(map(len, lines)) + len(out["evalue"])
            elif "data" in out:
                for mime, value in list(out.data.items()):
                    value = "".join(value) if isinstance(value, list) else value
                    if not isinstance(value, str):
                        continue
                    if mime.startswith("image/"):
                        if len(value) > min(MAX_IMAGE_CHARS, images):
                            del out.data[mime]
                            out.data["text/plain"] = f"(an image too large to show: {TRUNCATED})"
                            continue
                        images -= len(value)
                    else:
                        value = _cut(value, room(MAX_OUTPUT_CHARS), f"\n{TRUNCATED}")
                        budget -= len(value)
                    out.data[mime] = value
            kept.append(out)
        cell.outputs = kept
    return nb


def feedback_preprocessors() -> list:
    """nbgrader's GenerateFeedback pipeline plus the feedback copy above
    (hidden tests out, sizes cut), for ``nbgrader generate_feedback`` and
    Formgrader's "generate feedback" button (see nbgrader_config.py)."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor, Preprocessor
    from nbgrader.preprocessors import GetGrades
    from traitlets import Bool

    class FeedbackCopy(Preprocessor):
        """Hidden tests removed and every cell cut to a size that renders quickly."""

        enabled = Bool(True)  # nbconvert registers preprocessor classes disabled by default

        def preprocess(self, nb, resources):
            nb, resources = untrusted_outputs(nb, resources)
            return prepare_feedback_notebook(nb), resources

    return [GetGrades, CSSHTMLHeaderPreprocessor, FeedbackCopy]  # nbgrader's default, then ours


def _exporter():
    """nbgrader's feedback template on nbconvert's HTMLExporter, with the
    HTML of markdown cells and outputs sanitised (autograder.sanitize), and
    without the exporter's final BeautifulSoup pass over the whole page (it
    adds alt text for the lab template; on a page full of escaped ``<`` it
    took 26 s for 2 MB)."""
    import nbgrader.converters.generate_feedback as gf
    from nbconvert.exporters import HTMLExporter, TemplateExporter
    from traitlets.config import Config

    class FeedbackExporter(HTMLExporter):
        def from_notebook_node(self, nb, resources=None, **kw):
            try:
                from nbconvert.filters.highlight import Highlight2HTML
                from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
            except ImportError:  # another nbconvert: its own way
                return super().from_notebook_node(nb, resources, **kw)
            info = nb.metadata.get("language_info", {})
            lexer = info.get("pygments_lexer", info.get("name", None))
            resources = self._init_resources(resources)
            self.register_filter("highlight_code", self.filters.get(
                "highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self)))
            self.register_filter("filter_data_type", WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources))
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    here = Path(gf.__file__).resolve().parent.parent / "server_extensions" / "formgrader"
    c = Config()
    c.HTMLExporter.template_name = "feedback"
    c.HTMLExporter.extra_template_basedirs = [str(here / "templates")]
    c.HTMLExporter.extra_template_paths = [str(here / "static" / "node_modules" / "bootstrap" / "dist" / "css")]
    c.HTMLExporter.sanitize_html = True   # outputs: html/markdown cleaned, no JavaScript or widgets
    c.HTMLExporter.filters = dict(HTML_FILTERS)
    return FeedbackExporter(config=c)


def render_feedback(course: Course, lab: str, student: str, show_hidden: bool = False) -> str:
    """The feedback page of one autograded notebook (a complete, inert HTML page)."""
    import nbformat
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades

    nb = nbformat.read(course.autograded(student, lab) / f"{lab}.ipynb", as_version=4)
    nb, _ = untrusted_outputs(nb, {})
    nb = prepare_feedback_notebook(nb, show_hidden)
    from jupyter_core.paths import jupyter_config_dir

    resources = {"nbgrader": {"db_url": course.db_url, "assignment": lab, "notebook": lab, "student": student},
                 "config_dir": jupyter_config_dir()}  # where CSSHTMLHeaderPreprocessor looks for custom.css
    for pp in (GetGrades(), CSSHTMLHeaderPreprocessor()):
        pp.log.setLevel(logging.ERROR)
        nb, resources = pp.preprocess(nb, resources)
    exporter = _exporter()
    exporter.log.setLevel(logging.ERROR)
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return lock_page(body)


def _render_child(conn, course, lab, student, show_hidden, out):
    try:
        out.write_text(render_feedback(course, lab, student, show_hidden))
        conn.send(("ok", ""))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent in one line
        conn.send(("error", f"{type(exc).__name__}: {str(exc)[:500]}"))
    finally:
        conn.close()


def _render_limited(course: Course, lab: str, student: str, show_hidden: bool, timeout_s: float) -> tuple[str, str]:
    """Render one student's page in a child process stopped after
    ``timeout_s``: returns (html, "") or ("", why it could not be rendered)."""
    out = course.feedback_dir() / student / lab / f".{lab}.rendering.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    if "fork" not in multiprocessing.get_all_start_methods():  # no cheap child: render here
        try:
            return render_feedback(course, lab, student, show_hidden), ""
        except Exception as exc:  # noqa: BLE001
            return "", f"{type(exc).__name__}: {exc}"
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_render_child, args=(child, course, lab, student, show_hidden, out), daemon=True)
    proc.start()
    child.close()
    try:
        status, message = ("error", "")
        if parent.poll(timeout_s):
            try:
                status, message = parent.recv()
            except EOFError:
                message = "the rendering process ended abnormally"
        else:
            message = f"rendering took longer than {timeout_s:g} s"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    try:
        page = out.read_text() if status == "ok" else ""
    finally:
        out.unlink(missing_ok=True)
    if status == "ok" and not page:
        message = "the rendering process wrote nothing"
    return page, message


def _short_page(lab: str, text: str) -> str:
    return lock_page(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(lab)}</title>"
                     f"</head><body><p style='font-family:sans-serif;margin:8px'>{html.escape(text)}</p>"
                     "</body></html>")


def _review_summary(r: Result) -> str:
    if not r.review:
        return ""
    first = r.review[0]
    return f"{first}" + (f" (+{len(r.review) - 1} more)" if len(r.review) > 1 else "")


def _banner(r: Result, lab: str) -> str:
    manual = ("" if not r.manual_max and not r.manual_pending else
              f"; written answers: {PENDING} ({r.manual_max:g} points)" if r.manual_pending else
              f"; written answers: {r.manual_score:g}/{r.manual_max:g} points")
    return (f"<!--effml--><div style='border:2px solid #c60;padding:8px;margin:8px;font-family:sans-serif'>"
            f"<b>{html.escape(lab)}</b>: {r.total_score:g}/{r.max_score:g} points in total "
            f"({r.auto_score:g}/{r.auto_max:g} automatic points{manual}). "
            f"Status: {html.escape(plain_text(r.status))}."
            + (f"<br>{html.escape(plain_text(r.reason))}" if r.reason else "")
            + ("<br>A person will review this notebook (the score above is unchanged): "
               + "; ".join(html.escape(plain_text(x, 200)) for x in r.review[:5]) if r.review else "")
            + "</div><!--/effml-->")


def generate_feedback(course: Course, lab: str, show_hidden: bool = False,
                      timeout_s: float | None = None) -> list[Path]:
    """An HTML feedback page per graded submission of ``lab``
    (``<workdir>/feedback/<student>/<lab>/<lab>.html``): the grading status
    on top, then the autograded notebook in nbgrader's feedback template
    without the hidden tests (unless ``show_hidden``), sanitised and under a
    Content-Security-Policy. Each student's page is rendered on its own,
    under a time limit: one that fails or is too slow gets a short page
    that says so, and the rest go on."""
    timeout_s = FEEDBACK_TIMEOUT_S if timeout_s is None else timeout_s
    pages = []
    for r in results(course, lab):
        page = course.feedback_dir() / r.student / lab / f"{lab}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        if (course.autograded(r.student, lab) / f"{lab}.ipynb").exists():
            body, problem = _render_limited(course, lab, r.student, show_hidden, timeout_s)
            if problem:  # the details are for the instructor (they may name the grader's files)
                log.warning("feedback for %s/%s could not be rendered: %s", plain_text(r.student), lab,
                            plain_text(problem, 300))
                why = problem if problem.startswith("rendering took") else \
                    f"rendering failed: {problem.split(':', 1)[0]}"
                body = _short_page(lab, f"The graded notebook could not be shown here ({plain_text(why, 100)}); "
                                        "ask your instructor for it.")
        else:
            body = _short_page(lab, "There is no graded notebook to show: see the status above.")
        banner = _banner(r, lab)
        body, n = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + banner, body, count=1)
        page.write_text(body if n else banner + body)
        pages.append(page)
    return pages
