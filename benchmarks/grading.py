"""Grading throughput on this machine: how grading scales with workers, per lab.

    python benchmarks/grading.py                 # labs 00, 03, 06, 08; 2 submissions each
    python benchmarks/grading.py --labs lab00_basics --per-lab 6 --json

For each lab, ``--per-lab`` copies of its reference solution (the heaviest
submission: every cell does its full QUICK work) are graded through
``autograder.grade.grade`` with the sandbox on, once with 1 worker and once
with 2; then all labs together as one mixed batch with 2 workers (what an
instructor grading several labs at once meets). Reported per lab:

- ``speedup``: wall time with 1 worker / wall time with 2 (ideal: the number
  of cores, 2 here);
- ``concurrent_slowdown``: median per-submission time (notebook + trusted
  checks) with 2 workers / with 1. Alone a kernel has every core; beside
  another it has its share, so CPU-bound work may at most double;
- ``mixed_slowdown``: the same, inside the mixed batch.

Also the sandbox's cost per submission (lab 00 graded with and without it).
The goal on 2 cores (issue 19): speedup >= 1.7 and concurrent slowdown <= 1.25
on every lab; the figures are printed beside it, never asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.course import Course  # noqa: E402
from autograder.grade import GradeOptions, grade  # noqa: E402
from autograder.sandbox import make_sandbox  # noqa: E402
from autograder.submissions import Submission  # noqa: E402

LABS = ("lab00_basics", "lab03_qat_kd", "lab06_awq", "lab08_qlora")
GOAL_SPEEDUP, GOAL_SLOWDOWN = 1.7, 1.25


def submissions(course: Course, lab: str, count: int) -> list[Submission]:
    data = course.solution_notebook(lab).read_bytes()
    return [Submission(f"{lab[:5]}_student{i:02d}", lab, data, "bench") for i in range(count)]


def run(subs: list[Submission], workers: int, sandbox: str = "auto") -> dict:
    """Grade ``subs`` in a fresh work folder; wall time and per-lab median
    per-submission times."""
    with tempfile.TemporaryDirectory(prefix="effml-bench-grading-") as tmp:
        course = Course(workdir=Path(tmp))
        start = time.monotonic()
        results = grade(course, subs, GradeOptions(workers=workers, sandbox=make_sandbox(sandbox, course)))
        wall = time.monotonic() - start
    bad = [(r.student, r.status, r.reason) for r in results if r.status != "ok" or r.auto_score != r.auto_max]
    if bad:
        raise RuntimeError(f"a reference solution did not grade cleanly: {bad}")
    per_lab: dict[str, list[float]] = {}
    for r in results:
        per_lab.setdefault(r.lab, []).append(r.exec_s + r.check_s)
    return {"wall_s": wall, "per_submission_s": {lab: statistics.median(v) for lab, v in per_lab.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", default=",".join(LABS), help="comma-separated lab ids")
    ap.add_argument("--per-lab", type=int, default=2, help="submissions per lab (even: both workers stay busy)")
    ap.add_argument("--sandbox-sample", type=int, default=4,
                    help="lab 00 submissions graded without the sandbox to measure its cost (0: skip)")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = ap.parse_args(argv)
    course = Course()
    labs = [lab for lab in args.labs.split(",") if lab]
    missing = [lab for lab in labs if lab not in course.labs()]
    if missing:
        ap.error(f"no such lab: {', '.join(missing)}")

    speedup, slowdown, alone, together = {}, {}, {}, {}
    for lab in labs:
        one = run(submissions(course, lab, args.per_lab), 1)
        two = run(submissions(course, lab, args.per_lab), 2)
        alone[lab], together[lab] = one["per_submission_s"][lab], two["per_submission_s"][lab]
        speedup[lab] = one["wall_s"] / two["wall_s"]
        slowdown[lab] = together[lab] / alone[lab]
        print(f"{lab}: {args.per_lab} submissions in {one['wall_s']:.0f} s (1 worker) / {two['wall_s']:.0f} s "
              f"(2 workers): speedup {speedup[lab]:.2f} (goal >= {GOAL_SPEEDUP}); per submission "
              f"{alone[lab]:.1f} s alone, {together[lab]:.1f} s beside another: slowdown {slowdown[lab]:.2f} "
              f"(goal <= {GOAL_SLOWDOWN})", flush=True)

    mixed = run([s for lab in labs for s in submissions(course, lab, args.per_lab)], 2)
    mixed_slowdown = {lab: mixed["per_submission_s"][lab] / alone[lab] for lab in labs}
    serial = sum(alone[lab] * args.per_lab for lab in labs)
    print(f"mixed batch ({len(labs)} labs x {args.per_lab}) with 2 workers: {mixed['wall_s']:.0f} s against "
          f"{serial:.0f} s of one-at-a-time grading: speedup {serial / mixed['wall_s']:.2f}; per-lab slowdown "
          + ", ".join(f"{lab} {v:.2f}" for lab, v in mixed_slowdown.items()), flush=True)

    overhead = None
    if args.sandbox_sample:
        subs = submissions(course, "lab00_basics", args.sandbox_sample)
        bare, jailed = run(subs, 1, "none"), run(subs, 1, "auto")
        overhead = jailed["per_submission_s"]["lab00_basics"] - bare["per_submission_s"]["lab00_basics"]
        print(f"sandbox cost: {overhead:+.2f} s per lab 00 submission "
              f"({jailed['per_submission_s']['lab00_basics']:.1f} s with it, "
              f"{bare['per_submission_s']['lab00_basics']:.1f} s without)")
    if args.json:
        r3 = lambda d: {k: round(v, 3) for k, v in d.items()}  # noqa: E731
        print(json.dumps({"speedup": r3(speedup), "concurrent_slowdown": r3(slowdown),
                          "mixed_slowdown": r3(mixed_slowdown), "per_submission_alone_s": r3(alone),
                          "mixed_speedup": round(serial / mixed["wall_s"], 3), "per_lab": args.per_lab,
                          "sandbox_overhead_s": None if overhead is None else round(overhead, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
