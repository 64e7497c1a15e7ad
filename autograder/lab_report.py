"""``effml report LAB``: one self-contained HTML page for the instructor.

Pictures (matplotlib PNGs embedded as ``data:`` URIs, so the page is one
file that opens anywhere): the distribution of total scores, each task's pass
rate (hardest first), the failure reasons, the time per submission; then the
students whose grading needs a person: timeouts, crashes and invalid files,
tampering flags ("needs review"), manual grading pending. Student-supplied
text is escaped; a Content-Security-Policy lets only the embedded images load.
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from pathlib import Path

from .course import Course
from .sanitize import plain_text
from .tasks import task_number

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _task_points(course: Course, lab: str) -> tuple[dict[str, float], set[str]]:
    """(grade_id -> points of every graded cell, the ids graded by hand)."""
    import nbformat

    nb = nbformat.read(course.solution_notebook(lab), as_version=4)
    cells = [(m, c) for c in nb.cells if (m := c.metadata.get("nbgrader", {})).get("grade") and m.get("grade_id")]
    return ({m["grade_id"]: float(m.get("points", 0)) for m, _ in cells},
            {m["grade_id"] for m, c in cells if c.cell_type != "code"})


def _label(gid: str) -> str:
    number = task_number(gid)
    return f"Task {number}" if number else gid


def reason_kind(r) -> str | None:
    """A short failure category of one result (None: nothing failed)."""
    if r.status == "ok" and not r.reasons:
        return None
    if r.status not in ("ok", "errors"):
        return r.status.replace("_", " ")
    first = r.reasons[0] if r.reasons else "cells raised errors"
    return plain_text(re.sub(r"\s*\(.*$", "", first.split(";")[0]), 50)


def attention(rows) -> list[tuple[str, str]]:
    """(student, why) for every submission a person should look at."""
    out = []
    for r in rows:
        why = []
        if "timeout" in r.status:
            why.append(f"timed out ({r.status.replace('_', ' ')})")
        elif r.status in ("invalid", "failed", "crashed", "kernel_died", "memory"):
            why.append(f"{r.status}: {r.reason}")
        if r.review:
            why.append("needs review (possible tampering): " + "; ".join(r.review[:3]))
        # grade.sanitize restored these from the release: the score is right, the intent worth a look
        restored = [x for x in r.reasons if x.startswith(("edited read-only cells", "deleted graded cells",
                                                           "duplicated cell ids"))]
        if restored:
            why.append("changed the lab's locked cells: " + "; ".join(restored[:3]))
        if r.manual_pending:
            why.append(f"manual grading pending ({r.manual_pending} answer(s))")
        if why:
            out.append((r.student, " | ".join(why)))
    return out


def figures(course: Course, lab: str, rows) -> dict[str, str]:
    """The report's pictures, as data URIs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    pics = {}
    top = max([r.max_score for r in rows] + [1])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([r.total_score for r in rows], bins=min(20, max(5, len(rows))), range=(0, top), color="tab:blue")
    ax.set(xlabel="total score (automatic + manual)", ylabel="submissions",
           title=f"{lab}: score distribution ({len(rows)} submissions)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    pics["scores"] = _png(fig)

    points, by_hand = _task_points(course, lab)
    rates = []
    for gid, pts in points.items():
        scored = [r.tasks.get(gid) for r in rows if r.tasks.get(gid) is not None]
        if pts and scored:
            rates.append((sum(1 for s in scored if s >= pts) / len(scored), gid))
    rates.sort()  # the hardest first
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(3, len(rates)) + 1))
    ax.barh([_label(g) + (" (by hand)" if g in by_hand else "") for _, g in rates][::-1], [100 * x for x, _ in rates][::-1], color="tab:green")
    ax.set(xlim=(0, 100), xlabel="% of submissions with full points", title="pass rate per task (hardest on top)")
    pics["tasks"] = _png(fig)

    kinds = Counter(k for r in rows if (k := reason_kind(r)))
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(3, len(kinds)) + 1))
    if kinds:
        names, counts = zip(*kinds.most_common()[::-1])
        ax.barh(names, counts, color="tab:red")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "no failures", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="submissions", title="failure reasons")
    pics["reasons"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3))
    timed = [r for r in rows if r.total_s]
    ax.bar(range(len(timed)), [r.total_s for r in timed], color="tab:purple")
    ax.set_xticks(range(len(timed)), [plain_text(r.student, 14) for r in timed], rotation=45, ha="right",
                  fontsize=7)
    ax.set(ylabel="seconds", title="grading time per submission")
    pics["time"] = _png(fig)
    return pics


def render(course: Course, lab: str, rows) -> str:
    e = html.escape
    pics = figures(course, lab, rows)
    need = attention(rows)
    mean = sum(r.total_score for r in rows) / len(rows) if rows else 0
    top = max([r.max_score for r in rows] + [0])
    attention_rows = "".join(f"<tr><td>{e(plain_text(s, 60))}</td><td>{e(plain_text(w, 600))}</td></tr>"
                             for s, w in need) or "<tr><td colspan=2>nobody</td></tr>"
    table = "".join(
        f"<tr><td>{e(plain_text(r.student, 60))}</td><td>{r.total_score:g}/{r.max_score:g}</td>"
        f"<td>{r.auto_score:g}/{r.auto_max:g}</td><td>{e(plain_text(r.status, 30))}</td>"
        f"<td>{r.total_s:.0f} s</td></tr>" for r in rows)
    imgs = "".join(f"<figure><img alt='{e(k)}' src='{v}'></figure>" for k, v in pics.items())
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{e(lab)}: grading report</title>
<style>body{{font-family:sans-serif;margin:16px;max-width:1300px}} figure{{display:inline-block;margin:6px}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}</style>
</head><body>
<h1>{e(lab)}: grading report</h1>
<p>{len(rows)} submission(s); mean total {mean:.1f}/{top:g}; {len(need)} need attention.</p>
{imgs}
<h2>Needs attention</h2>
<table id="attention"><tr><th>student</th><th>why</th></tr>{attention_rows}</table>
<h2>All submissions</h2>
<table><tr><th>student</th><th>total</th><th>auto</th><th>status</th><th>time</th></tr>{table}</table>
</body></html>
"""


def write_report(course: Course, lab: str, out: Path | None = None) -> Path:
    """Write ``<workdir>/reports/<lab>.html`` (or ``out``) from the gradebook."""
    from .report import results

    course.check_lab(lab)
    rows = results(course, lab)
    if not rows:
        raise SystemExit(f"no graded submissions of {lab} in {course.workdir}: run `effml grade` first")
    out = Path(out) if out else course.workdir / "reports" / f"{lab}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(course, lab, rows))
    return out
