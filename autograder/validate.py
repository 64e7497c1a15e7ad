"""Check a lab against the lab contract: the solution graded in QUICK mode
scores full marks, the released blank scores 0, points total 100, every task
id agrees between grade id, heading and stub. Grading is the production
path (``effml grade``), so what validate says is what students get."""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .course import Course
from .execute import ExecResult
from .release import generate_assignment
from .scoring import CellScore, score_cells, totals


@dataclass
class LabReport:
    lab: str
    problems: list[str] = field(default_factory=list)
    solution: list[CellScore] = field(default_factory=list)
    blank: list[CellScore] = field(default_factory=list)
    solution_run: ExecResult | None = None
    blank_run: ExecResult | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def static_problems(nb) -> list[str]:
    """Contract checks that need no execution."""
    from nbgrader.utils import is_grade, is_solution

    problems = []
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not params:
        problems.append("no cell tagged `parameters`")
    else:
        src = params[0].source
        for name in ("QUICK", "SEED", "EFFML_QUICK"):
            if name not in src:
                problems.append(f"the parameters cell does not mention {name}")
    total = sum(float(c.metadata["nbgrader"]["points"]) for c in nb.cells if is_grade(c))
    if abs(total - 100) > 1e-9:
        problems.append(f"points add up to {total:g}, expected 100")
    headings = set(re.findall(r"Task (\d+\.\d+)", "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")))
    from .tasks import task_number
    for c in nb.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id", "")
        if (is_grade(c) or is_solution(c)) and c.cell_type == "code":
            task = task_number(gid)
            if task is None:
                problems.append(f"grade id {gid!r} does not follow task_<n>_<m>_<name>")
            elif task not in headings:
                problems.append(f"grade id {gid!r} has no markdown heading `Task {task}`")
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")):
            problems.append(f"cell {gid or c.get('id')} has outputs: commit notebooks without outputs")
            break
    return problems


def validate(course: Course, lab: str, *, run_solution: bool = True, run_blank: bool = True,
             sandbox: str = "auto") -> LabReport:
    """Grade the solution and the blank release through the production path
    (``autograder.grade``: the kernel in the sandbox, the trusted checks in
    the grader) in a scratch work directory, and report per task."""
    from .grade import GradeOptions, grade
    from .sandbox import make_sandbox
    from .submissions import Submission

    course.check_lab(lab)
    report = LabReport(lab)
    source = nbformat.read(course.solution_notebook(lab), as_version=4)
    report.problems += static_problems(source)
    if not course.checks_file(lab).is_file():
        report.problems.append(f"no trusted checks: solutions/{lab}/grader.py is missing")
        return report
    with tempfile.TemporaryDirectory(prefix=f"effml-validate-{lab}-") as tmp:
        tmp = Path(tmp)
        scratch = Course(root=course.root, workdir=tmp / "work")
        released = generate_assignment(scratch, lab, tmp / "release")
        subs = []
        if run_solution:
            subs.append(Submission("solution", lab, course.solution_notebook(lab).read_bytes(), "solutions/"))
        if run_blank:
            subs.append(Submission("blank", lab, released.read_bytes(), "release"))
        results = {r.student: r for r in grade(scratch, subs, GradeOptions(sandbox=make_sandbox(sandbox, scratch)))}
        for who in results:
            nb = nbformat.read(scratch.autograded(who, lab) / f"{lab}.ipynb", as_version=4)
            run = ExecResult(results[who].status, results[who].exec_s, results[who].reasons, nb)
            rows = score_cells(nb)
            if who == "solution":
                report.solution_run, report.solution = run, rows
                for r in rows:
                    if not r.manual and r.score != r.max_score:
                        report.problems.append(f"solution scores {r.score:g}/{r.max_score:g} on {r.grade_id}: "
                                               f"{r.message}")
                if run.status != "ok":
                    report.problems.append(f"solution run: {run.status} {run.reason}")
            else:
                report.blank_run, report.blank = run, rows
                for r in rows:
                    if not r.manual and (r.score or 0) != 0:
                        report.problems.append(f"the blank release scores {r.score:g} on {r.grade_id}")
    return report


def format_report(report: LabReport) -> str:
    lines = [f"{report.lab}"]
    sol = {r.grade_id: r for r in report.solution}
    blank = {r.grade_id: r for r in report.blank}
    ids = list(sol) or list(blank)
    lines.append(f"  {'task':<44}{'points':>7}{'solution':>10}{'blank':>8}")
    fmt = lambda r: "-" if r is None else ("manual" if r.score is None else f"{r.score:g}")  # noqa: E731
    for gid in ids:
        r = sol.get(gid) or blank.get(gid)
        lines.append(f"  {gid:<44}{r.max_score:>7g}{fmt(sol.get(gid)):>10}{fmt(blank.get(gid)):>8}")
    for name, rows, run in (("solution", report.solution, report.solution_run),
                            ("blank", report.blank, report.blank_run)):
        if run is not None:
            t = totals(rows)
            lines.append(f"  {name}: {t['auto_score']:g}/{t['auto_max']:g} auto points "
                         f"(+{t['manual_max']:g} manual), {run.status}, {run.duration_s:.1f} s")
    lines.append("  OK" if report.ok else "  PROBLEMS:\n" + "\n".join(f"   - {p}" for p in report.problems))
    return "\n".join(lines)
