"""Grading throughput: a batch of QUICK-mode submissions graded with 1 and
2 workers, the speedup, and what the sandbox costs per submission.

    python benchmarks/grading.py [--count 40] [--json]

The batch is lab 00's sample submissions repeated under distinct student ids
(full, blank and partial answers; the pathological ones are left out so the
figure is throughput, not time limits).
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

LAB = "lab00_basics"
KINDS = ("alice_full", "bob_blank", "carol_partial")


def batch(count: int) -> list[Submission]:
    data = {k: (ROOT / "samples" / LAB / k / f"{LAB}.ipynb").read_bytes() for k in KINDS}
    return [Submission(f"student{i:03d}", LAB, data[KINDS[i % len(KINDS)]], "bench") for i in range(count)]


def run(count: int, workers: int, sandbox: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        course = Course(workdir=Path(tmp))
        start = time.monotonic()
        results = grade(course, batch(count), GradeOptions(workers=workers, sandbox=make_sandbox(sandbox, course)))
        wall = time.monotonic() - start
    bad = [r for r in results if r.status not in ("ok", "errors")]
    assert not bad, [(r.student, r.status, r.reason) for r in bad]
    return {"wall_s": wall, "per_min": 60 * count / wall,
            "exec_s": statistics.median(r.exec_s for r in results)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--sandbox-sample", type=int, default=6,
                    help="submissions graded without the sandbox to measure its cost")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    figures = {}
    for workers in (1, 2):
        figures[workers] = run(args.count, workers, "auto")
        f = figures[workers]
        print(f"{workers} worker(s): {args.count} submissions in {f['wall_s']:.0f} s = "
              f"{f['per_min']:.2f} submissions/min (median execution {f['exec_s']:.1f} s)", flush=True)
    speedup = figures[2]["per_min"] / figures[1]["per_min"]
    bare = run(args.sandbox_sample, 1, "none")
    sandboxed = run(args.sandbox_sample, 1, "auto")
    overhead = sandboxed["exec_s"] - bare["exec_s"]
    print(f"speedup with 2 workers: {speedup:.2f}x")
    print(f"sandbox cost: median execution {sandboxed['exec_s']:.2f} s with it, {bare['exec_s']:.2f} s without "
          f"-> {overhead:+.2f} s per submission ({args.sandbox_sample} submissions each)")
    if args.json:
        print(json.dumps({"throughput_per_min": {str(w): round(f["per_min"], 3) for w, f in figures.items()},
                          "speedup": round(speedup, 3), "sandbox_overhead_s": round(overhead, 3),
                          "count": args.count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
