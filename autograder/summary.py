"""The batch summary printed after grading: scores, failures by reason, time."""
from __future__ import annotations

import statistics
from collections import Counter

from .sanitize import plain_text


def summarize(results, wall_s: float, course=None) -> str:
    if not results:
        return "no submissions graded"
    fresh = [r for r in results if not r.resumed]
    lines = [f"\n{len(results)} submission(s): {len(fresh)} graded now, "
             f"{len(results) - len(fresh)} already graded (unchanged), in {wall_s:.1f} s"]
    if fresh:
        per = [r.total_s for r in fresh]
        over = [max(r.total_s - r.exec_s, 0.0) for r in fresh if r.exec_s]
        lines.append(f"time per submission: median {statistics.median(per):.1f} s, max {max(per):.1f} s"
                     + (f"; grading overhead beyond execution: median {statistics.median(over):.2f} s" if over else ""))
    by_status = Counter(r.status for r in results)
    lines.append("status: " + ", ".join(f"{plain_text(k, 40)} {v}" for k, v in sorted(by_status.items())))
    for lab in sorted({r.lab for r in results}):
        scores = [r.auto_score for r in results if r.lab == lab]
        top = max(r.auto_max for r in results if r.lab == lab)
        lines.append(f"{plain_text(lab, 40)}: mean {statistics.mean(scores):.1f}/{top:g}, "
                     f"median {statistics.median(scores):g}, min {min(scores):g}, max {max(scores):g} "
                     "(automatic points)")
        pending = sum(1 for r in results if r.lab == lab and r.manual_pending)
        if pending:
            lines.append(f"  manual grading pending for {pending} submission(s): grade the written answers "
                         "in Formgrader; `effml gradebook` then shows the totals")
        if course is not None:
            path = plot_distribution(results, lab, course.workdir / "reports" / f"scores_{lab}.png")
            lines.append(f"  score distribution: {path}")
    return "\n".join(lines)


def plot_distribution(results, lab: str, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [r.auto_score for r in results if r.lab == lab]
    top = max([r.auto_max for r in results if r.lab == lab] + [1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(scores, bins=min(20, max(5, len(scores))), range=(0, top), color="tab:blue")
    ax.set(xlabel="automatic score", ylabel="submissions", title=f"{lab} ({len(scores)} graded)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
