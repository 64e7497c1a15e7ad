"""Lab 00's QUICK-mode runtime and the grader's per-submission overhead.

    python benchmarks/lab00.py [--json] [--repeats N]

Overhead is a submission's grading time beyond executing its notebook:
reading and sanitising it (nbgrader restoring cells from the gradebook),
writing grades, the autograded copy and the result, and with the sandbox,
starting bubblewrap.
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
from autograder.labrun import run_solution  # noqa: E402
from autograder.grade import GradeOptions, grade  # noqa: E402
from autograder.sandbox import make_sandbox  # noqa: E402
from autograder.submissions import Submission  # noqa: E402

LAB = "lab00_basics"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    course = Course()
    runtimes = []
    for _ in range(args.repeats):
        start = time.monotonic()
        run_solution(LAB, quick=True, course=course)
        runtimes.append(time.monotonic() - start)
    print(f"{LAB} QUICK runtime: median {statistics.median(runtimes):.1f} s over {len(runtimes)} runs "
          f"(includes kernel start-up)")

    data = (ROOT / "samples" / LAB / "alice_full" / f"{LAB}.ipynb").read_bytes()
    overhead, exec_median = {}, {}
    for kind in ("none", "auto"):
        with tempfile.TemporaryDirectory() as tmp:
            c = Course(workdir=Path(tmp))
            subs = [Submission(f"s{i}", LAB, data, "bench") for i in range(args.repeats)]
            results = grade(c, subs, GradeOptions(sandbox=make_sandbox(kind, c)))
            assert all(r.auto_score == r.auto_max for r in results), [r.reason for r in results]
            over = [r.total_s - r.exec_s for r in results]
            execs = [r.exec_s for r in results]
            sandbox = getattr(make_sandbox(kind, c), "kind", "none")
            overhead[sandbox] = statistics.median(over)
            exec_median[sandbox] = statistics.median(execs)
            print(f"grading with sandbox={sandbox}: execution median {statistics.median(execs):.1f} s, "
                  f"overhead beyond execution median {overhead[sandbox]:.2f} s per submission")
    sandbox_cost = {k: round(v - exec_median["none"], 2) for k, v in exec_median.items() if k != "none"}
    if sandbox_cost:
        print(f"sandbox cost (execution time with it minus without): {sandbox_cost}")
    if args.json:
        print(json.dumps({"lab00_quick_runtime_s": round(statistics.median(runtimes), 2),
                          "grading_overhead_s": {k: round(v, 3) for k, v in overhead.items()},
                          "sandbox_cost_s": sandbox_cost}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
