"""``effml demo``: the main job on the shipped samples. Release every lab,
grade the sample submissions in a fresh work directory, print the
gradebook, check it against samples/expected.json, write feedback and CSV."""
from __future__ import annotations

import json
import shutil
import time

from .course import Course

DEMO_CELL_TIMEOUT = 90  # the infinite-loop sample costs this much


def check_expected(results, expected: dict) -> list[str]:
    """Mismatches between graded results and samples/expected.json."""
    got = {(r.lab, r.student): r for r in results}
    problems = []
    for lab, students in expected.items():
        for student, want in students.items():
            r = got.get((lab, student))
            if r is None:
                problems.append(f"{lab}/{student}: not graded")
            elif r.auto_score != want["auto_score"] or r.status != want["status"]:
                problems.append(f"{lab}/{student}: got {r.auto_score:g} ({r.status}), "
                                f"expected {want['auto_score']} ({want['status']})")
    return problems


def run_demo(course: Course, workers: int = 2) -> int:
    from .grade import GradeOptions, grade
    from .release import release
    from .report import export_csv, format_table, generate_feedback
    from .sandbox import make_sandbox
    from .submissions import collect
    from .summary import summarize

    samples = course.root / "samples"
    expected = json.loads((samples / "expected.json").read_text())
    print(f"== releasing {len(course.labs())} lab(s) into labs/", flush=True)
    for lab in course.labs():
        release(course, lab)
        print(f"   {lab}", flush=True)
    demo = Course(root=course.root, workdir=course.workdir / "demo")
    if demo.workdir.exists():
        shutil.rmtree(demo.workdir)  # a demo grades from scratch
    subs = []
    for lab in expected:
        found, warnings = collect(samples / lab, course.labs(), lab)
        subs += found
        for w in warnings:
            print(f"   warning: {w}")
    print(f"== grading {len(subs)} sample submission(s) with {workers} worker(s) "
          f"(QUICK mode, {DEMO_CELL_TIMEOUT} s cell limit)", flush=True)
    options = GradeOptions(workers=workers, cell_timeout=DEMO_CELL_TIMEOUT,
                           sandbox=make_sandbox("auto", demo, [samples]))
    start = time.monotonic()
    done = []

    def progress(r):
        done.append(r)
        print(f"   [{len(done)}/{len(subs)}] {r.lab}/{r.student}: {r.auto_score:g}/{r.auto_max:g} "
              f"{r.status} ({r.total_s:.0f} s)", flush=True)

    results = grade(demo, subs, options, progress=progress)
    print("\n== gradebook")
    print(format_table(results))
    print(summarize(results, time.monotonic() - start, demo))
    for lab in sorted({r.lab for r in results}):
        pages = generate_feedback(demo, lab)
        print(f"== feedback: {len(pages)} page(s) under {demo.feedback_dir()}")
    for path in export_csv(demo, demo.workdir / "export"):
        print(f"== export: {path}")
    problems = check_expected(results, expected)
    if problems:
        print("\nUNEXPECTED GRADES:\n" + "\n".join(f" - {p}" for p in problems))
        return 1
    print(f"\nall {len(results)} sample grades match samples/expected.json")
    return 0
