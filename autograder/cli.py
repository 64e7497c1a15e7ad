"""``effml``: release, run, validate and grade the labs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .course import Course


def _parse_params(pairs) -> dict:
    params = {}
    for name, value in pairs or []:
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def cmd_release(args, course: Course) -> int:
    from .release import release

    for lab in args.labs or course.labs():
        path = release(course, course.check_lab(lab))
        print(f"released {lab} -> {path.relative_to(course.root)}")
    return 0


def cmd_stale(args, course: Course) -> int:
    from .release import stale_files

    stale = [f for lab in (args.labs or course.labs()) for f in stale_files(course, lab)]
    for f in stale:
        print(f"stale: {f}")
    print("labs/ is up to date" if not stale else "run `effml release` and commit labs/")
    return 1 if stale else 0


def cmd_strip(args, course: Course) -> int:
    from .release import strip_outputs

    paths = [Path(p) for p in args.paths] or sorted(course.solutions.rglob("*.ipynb")) + sorted(course.labs_dir.rglob("*.ipynb"))
    for p in paths:
        if strip_outputs(p):
            print(f"stripped {p}")
    return 0


def cmd_run(args, course: Course) -> int:
    from .execute import execute

    src = Path(args.notebook)
    out = Path(args.output) if args.output else src.with_name(src.stem + ".executed.ipynb")
    params = _parse_params(args.parameters)
    env = {}
    if "QUICK" in params:
        env["EFFML_QUICK"] = "1" if params["QUICK"] else "0"
    if "SEED" in params:
        env["EFFML_SEED"] = str(params["SEED"])
    print(f"executing {src} -> {out} with {params or 'no parameters'} ...", flush=True)
    res = execute(src, out, parameters=params, cell_timeout=args.cell_timeout,
                  notebook_timeout=args.timeout, env=env)
    errors = sum(1 for c in res.notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error")
    print(f"{res.status} in {res.duration_s:.1f} s; {errors} cell(s) with errors" + (f"; {res.reason}" if res.reasons else ""))
    return 0 if res.status == "ok" else 1


def cmd_validate(args, course: Course) -> int:
    from .validate import format_report, validate

    code = 0
    for lab in args.labs or course.labs():
        report = validate(course, lab, run_blank=not args.solution_only, run_solution=not args.blank_only)
        print(format_report(report), flush=True)
        code |= 0 if report.ok else 1
    return code


def _progress_printer(total: int):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="nb", desc="grading", file=sys.stderr, disable=None)

    def progress(r):
        bar.update(1)
        bar.set_postfix_str(f"{r.student}/{r.lab}: {r.auto_score:g}/{r.auto_max:g} {r.status}"[:60])
    return progress, bar


def cmd_grade(args, course: Course) -> int:
    from .grade import GradeOptions, grade
    from .report import format_table
    from .sandbox import make_sandbox
    from .submissions import collect

    subs, warnings = collect(Path(args.submissions), course.labs(), args.lab)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not subs:
        print("no submissions found", file=sys.stderr)
        return 1
    options = GradeOptions(quick=not args.full, seed=args.seed, cell_timeout=args.cell_timeout,
                           notebook_timeout=args.timeout, workers=args.workers, force=args.force,
                           sandbox=make_sandbox(args.sandbox, course, [Path(args.submissions)]),
                           scheduler=args.scheduler)
    progress, bar = _progress_printer(len(subs))
    start = time.monotonic()
    results = grade(course, subs, options, progress=progress)
    bar.close()
    print(format_table(results))
    from .summary import summarize
    print(summarize(results, time.monotonic() - start, course))
    return 0


def cmd_gradebook(args, course: Course) -> int:
    from .report import format_table, results

    print(format_table(results(course, args.lab)))
    return 0


def cmd_export(args, course: Course) -> int:
    from .report import export_csv

    for p in export_csv(course, Path(args.output or course.workdir / "export"), args.lab):
        print(f"wrote {p}")
    return 0


def cmd_feedback(args, course: Course) -> int:
    from .report import generate_feedback, results

    labs = [args.lab] if args.lab else sorted({r.lab for r in results(course)})
    for lab in labs:
        pages = generate_feedback(course, lab)
        print(f"{lab}: {len(pages)} feedback page(s) under {course.feedback_dir()}")
    return 0


def cmd_demo(args, course: Course) -> int:
    from .demo import run_demo

    return run_demo(course, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="effml", description=__doc__)
    ap.add_argument("--workdir", help="grading work directory (default: ./grading or $EFFML_WORKDIR)")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="regenerate labs/ from solutions/ (nbgrader generate_assignment)")
    p.add_argument("labs", nargs="*")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("check-release", help="fail if labs/ differs from a fresh release")
    p.add_argument("labs", nargs="*")
    p.set_defaults(func=cmd_stale)

    p = sub.add_parser("strip", help="remove outputs from notebooks (default: all of solutions/ and labs/)")
    p.add_argument("paths", nargs="*")
    p.set_defaults(func=cmd_strip)

    p = sub.add_parser("run", help="execute a notebook with papermill parameters")
    p.add_argument("notebook")
    p.add_argument("-o", "--output")
    p.add_argument("-p", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"))
    p.add_argument("--cell-timeout", type=int, default=600)
    p.add_argument("--timeout", type=int, default=3600, help="whole-notebook limit in seconds")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="solution scores full marks, blank scores 0 (QUICK mode)")
    p.add_argument("labs", nargs="*")
    p.add_argument("--solution-only", action="store_true")
    p.add_argument("--blank-only", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("grade", help="grade submissions into the gradebook")
    p.add_argument("submissions", help="folder of <student>/<lab>.ipynb and/or <student>.zip")
    p.add_argument("--lab")
    p.add_argument("--full", action="store_true", help="grade in full mode instead of QUICK")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell-timeout", type=int)
    p.add_argument("--timeout", type=int, help="whole-notebook limit in seconds")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--scheduler", help="Dask scheduler address (grade on a cluster)")
    p.add_argument("--force", action="store_true", help="re-grade submissions already graded")
    p.add_argument("--sandbox", choices=["auto", "bwrap", "rlimits", "none"], default="auto")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("gradebook", help="print the gradebook")
    p.add_argument("--lab")
    p.set_defaults(func=cmd_gradebook)

    p = sub.add_parser("export", help="CSV per lab and per task")
    p.add_argument("--lab")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("feedback", help="HTML feedback for graded submissions")
    p.add_argument("--lab")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("demo", help="release all labs, grade the sample submissions, print the gradebook")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    course = Course(workdir=Path(args.workdir) if args.workdir else None)
    return args.func(args, course)


if __name__ == "__main__":
    sys.exit(main())
