"""Scores of an executed notebook, cell by cell, the way nbgrader counts them
(a test cell with an error or stderr output scores 0; a written answer waits
for a person)."""
from __future__ import annotations

from dataclasses import dataclass

from .tasks import task_number


@dataclass
class CellScore:
    grade_id: str
    task: str | None
    score: float | None   # None: awaits manual grading
    max_score: float
    manual: bool
    message: str = ""     # first line of the failure, for the student


def _failure(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return "wrote to stderr: " + "".join(out.get("text", ""))[:200].strip()
    return ""


def score_cells(nb) -> list[CellScore]:
    from nbgrader.utils import determine_grade, is_grade

    rows = []
    for cell in nb.cells:
        if not is_grade(cell):
            continue
        meta = cell.metadata["nbgrader"]
        score, max_score = determine_grade(cell)
        manual = cell.cell_type != "code" or bool(meta.get("solution"))
        rows.append(CellScore(meta["grade_id"], task_number(meta["grade_id"]), score, max_score, manual,
                              "" if manual else _failure(cell)))
    return rows


def totals(rows: list[CellScore]) -> dict:
    auto = [r for r in rows if not r.manual]
    return {
        "auto_score": sum(r.score or 0 for r in auto),
        "auto_max": sum(r.max_score for r in auto),
        "manual_max": sum(r.max_score for r in rows if r.manual),
        "max_score": sum(r.max_score for r in rows),
    }
