"""``effml``: release, run, validate and grade the labs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .course import Course, course_root_at, find_course_root
from .sanitize import plain_text


class UserError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


def _parse_params(pairs) -> dict:
    params = {}
    for name, value in pairs or []:
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def _labs(args, course: Course) -> list[str]:
    """The labs named on the command line (each checked), else all of them."""
    return [course.check_lab(lab) for lab in args.labs] if args.labs else course.labs()


def _lab(args, course: Course) -> str | None:
    """``--lab``, checked against the course's labs."""
    return course.check_lab(args.lab) if getattr(args, "lab", None) else None


def cmd_release(args, course: Course) -> int:
    from .release import release

    for lab in _labs(args, course):
        path = release(course, lab)
        print(f"released {lab} -> {path.relative_to(course.root)}")
    return 0


def cmd_stale(args, course: Course) -> int:
    from .release import stale_files

    stale = [f for lab in _labs(args, course) for f in stale_files(course, lab)]
    for f in stale:
        print(f"stale: {f}")
    print("labs/ is up to date" if not stale else "run `effml release` and commit labs/")
    return 1 if stale else 0


def cmd_strip(args, course: Course) -> int:
    from .release import strip_outputs

    for p in args.paths:
        _check_notebook(Path(p))
    paths = [Path(p) for p in args.paths] or sorted(course.solutions.rglob("*.ipynb")) + sorted(course.labs_dir.rglob("*.ipynb"))
    for p in paths:
        if strip_outputs(p):
            print(f"stripped {p}")
    return 0


def _check_notebook(path: Path) -> None:
    """A readable .ipynb file, or a one-line error."""
    import nbformat

    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise UserError(f"{path} is a folder, not a notebook")
    if path.suffix != ".ipynb":
        raise UserError(f"{path} is not a notebook (.ipynb)")
    try:
        nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - whatever nbformat says, in one line
        raise UserError(f"{path} is not a readable notebook ({plain_text(exc, 200)})") from exc


def cmd_run(args, course: Course) -> int:
    from .labrun import notebook_limits, run_lab

    src = Path(args.notebook)
    _check_notebook(src)  # before execution, which writes beside the output whatever happens
    out = Path(args.output) if args.output else src.with_name(src.stem + ".executed.ipynb")
    params = _parse_params(args.parameters)
    quick, seed = params.pop("QUICK", None), params.pop("SEED", None)
    limits = notebook_limits(src).override(cell_timeout=args.cell_timeout, notebook_timeout=args.timeout)
    shown = {**({"QUICK": bool(quick)} if quick is not None else {}), **({"SEED": seed} if seed is not None else {}),
             **params}
    print(f"executing {src} -> {out} with {shown or 'no parameters'} ...", flush=True)
    res = run_lab(src, out, quick=None if quick is None else bool(quick), seed=seed, limits=limits,
                  parameters=params)
    errors = sum(1 for c in res.notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error")
    print(f"{res.status} in {res.duration_s:.1f} s; {errors} cell(s) with errors" + (f"; {plain_text(res.reason, 500)}" if res.reasons else ""))
    return 0 if res.status == "ok" else 1


def cmd_validate(args, course: Course) -> int:
    from .validate import format_report, validate

    code = 0
    for lab in _labs(args, course):
        report = validate(course, lab, run_blank=not args.solution_only, run_solution=not args.blank_only)
        print(format_report(report), flush=True)
        code |= 0 if report.ok else 1
    return code


def _progress_printer(total: int, stream=None):
    """A tqdm bar with ETA on a terminal; one plain line per submission
    otherwise (logs, CI, pipes). Returns (progress(result), closer)."""
    stream = stream or sys.stderr
    done = [0]
    if stream.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="nb", desc="grading", file=stream)

        def progress(r):
            bar.update(1)
            bar.set_postfix_str(plain_text(f"{r.student}/{r.lab}: {r.auto_score:g}/{r.auto_max:g} {r.status}", 60))
        return progress, bar
    start = time.monotonic()

    def progress(r):
        done[0] += 1
        elapsed = time.monotonic() - start
        eta = elapsed / done[0] * (total - done[0])
        print(plain_text(f"[{done[0]}/{total}] {r.student}/{r.lab}: {r.auto_score:g}/{r.auto_max:g} {r.status}"
                         f"{' (unchanged)' if r.resumed else ''} ({r.total_s:.0f} s; elapsed {elapsed:.0f} s, "
                         f"ETA {eta:.0f} s)", 300), file=stream, flush=True)

    class _Closer:
        def close(self):
            pass
    return progress, _Closer()


def collect_submissions(path: Path, labs: list[str], only: str | None = None):
    """``collect()`` for everything ``effml grade`` accepts: a folder of
    students (``<student>/<lab>.ipynb``, ``<student>.zip``), one student's
    folder (it holds ``<lab>.ipynb`` itself; collect() recognises it), one
    ``<student>.zip``, or one ``<student>/<lab>.ipynb`` file. A path that is
    none of these is a one-line error."""
    from .submissions import collect

    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir() or path.suffix == ".zip":
        return collect(path, labs, only)
    if path.suffix != ".ipynb" or not path.is_file():
        raise UserError(f"{path} is not a notebook (.ipynb), a zip (.zip) or a folder")
    if path.stem not in labs:
        raise UserError(f"{path.name} is not a lab notebook (expected one of: "
                        + (", ".join(f"{lab}.ipynb" for lab in labs) or "none") + ")")
    if only and path.stem != only:
        raise UserError(f"{path.name} is not {only}.ipynb")
    # One notebook: its folder is the student's; grade that lab of theirs.
    subs, warnings = collect(path.parent, labs, path.stem)
    target = str(path.resolve())
    mine = [s for s in subs if s.origin == target] or subs[:1]
    return mine, warnings


def cmd_grade(args, course: Course) -> int:
    from .grade import GradeOptions, _finish_totals, grade
    from .report import format_table
    from .sandbox import make_sandbox

    only = _lab(args, course)
    subs, warnings = collect_submissions(Path(args.submissions), course.labs(), only)
    for w in warnings:
        print(f"warning: {plain_text(w, 300)}", file=sys.stderr)
    if not subs:
        print(f"effml: error: no submissions found in {plain_text(args.submissions, 300)}", file=sys.stderr)
        return 1
    options = GradeOptions(quick=not args.full, seed=args.seed, cell_timeout=args.cell_timeout,
                           notebook_timeout=args.timeout, workers=args.workers, force=args.force,
                           sandbox=make_sandbox(args.sandbox, course, [Path(args.submissions)]),
                           scheduler=args.scheduler)
    progress, bar = _progress_printer(len(subs))
    start = time.monotonic()
    results = grade(course, subs, options, progress=progress)
    bar.close()
    from nbgrader.api import MissingEntry

    for r in results:
        if r.resumed:  # saved earlier: manual grades may have been given since
            try:
                _finish_totals(course, r)
            except MissingEntry:
                pass
    print(format_table(results))
    from .summary import summarize
    print(summarize(results, time.monotonic() - start, course))
    return 0


def cmd_gradebook(args, course: Course) -> int:
    from .report import format_table, results

    print(format_table(results(course, _lab(args, course))))
    return 0


def cmd_export(args, course: Course) -> int:
    from .report import export_canvas, export_csv

    writer = export_canvas if args.format == "canvas" else export_csv
    for p in writer(course, Path(args.output or course.workdir / "export"), _lab(args, course)):
        print(f"wrote {p}")
    return 0


def cmd_report(args, course: Course) -> int:
    from .lab_report import write_report

    path = write_report(course, course.check_lab(args.lab), Path(args.output) if args.output else None)
    print(f"wrote {path}")
    return 0


def cmd_gradescope(args, course: Course) -> int:
    from .gradescope import write_bundle

    out = Path(args.output)
    zpath = write_bundle(course, course.check_lab(args.lab), out, quick=not args.full, seed=args.seed,
                        visible=args.visible)
    print(f"wrote {out / 'setup.sh'}, {out / 'run_autograder'}, {out / 'course'}/\n"
          f"upload {zpath} as the assignment's autograder on Gradescope")
    return 0


def cmd_feedback(args, course: Course) -> int:
    from .report import generate_feedback, results

    only = _lab(args, course)
    labs = [only] if only else sorted({r.lab for r in results(course)})
    for lab in labs:
        pages = generate_feedback(course, lab, show_hidden=args.show_hidden)
        print(f"{lab}: {len(pages)} feedback page(s) under {course.feedback_dir()}")
    return 0


def cmd_demo(args, course: Course) -> int:
    from .demo import run_demo

    return run_demo(course, workers=args.workers)


def _global_options(parser: argparse.ArgumentParser) -> None:
    """Options accepted before and after the subcommand. SUPPRESS as the
    default: a subcommand's parser then sets them only when given, and does
    not overwrite what came before the subcommand."""
    parser.add_argument("--course", default=argparse.SUPPRESS, metavar="DIR",
                        help="the course folder (default: the first folder from here upwards "
                             "with nbgrader_config.py and solutions/)")
    parser.add_argument("--workdir", default=argparse.SUPPRESS,
                        help="grading work directory (default: <course>/grading or $EFFML_WORKDIR)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress; show tracebacks of errors")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="effml", description=__doc__)
    _global_options(ap)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name, **kwargs):  # every subcommand takes the global options too
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add("release", help="regenerate labs/ from solutions/ (nbgrader generate_assignment)")
    p.add_argument("labs", nargs="*")
    p.set_defaults(func=cmd_release)

    p = add("check-release", help="fail if labs/ differs from a fresh release")
    p.add_argument("labs", nargs="*")
    p.set_defaults(func=cmd_stale)

    p = add("strip", help="remove outputs from notebooks (default: all of solutions/ and labs/)")
    p.add_argument("paths", nargs="*")
    p.set_defaults(func=cmd_strip)

    p = add("run", help="execute a notebook with papermill parameters")
    p.add_argument("notebook")
    p.add_argument("-o", "--output")
    p.add_argument("-p", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"))
    p.add_argument("--cell-timeout", type=int, help="per-cell limit in seconds (default: the lab's own)")
    p.add_argument("--timeout", type=int, help="whole-notebook limit in seconds (default: the lab's own)")
    p.set_defaults(func=cmd_run)

    p = add("validate", help="solution scores full marks, blank scores 0 (QUICK mode)")
    p.add_argument("labs", nargs="*")
    p.add_argument("--solution-only", action="store_true")
    p.add_argument("--blank-only", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = add("grade", help="grade submissions into the gradebook")
    p.add_argument("submissions", help="folder of <student>/<lab>.ipynb and/or <student>.zip; "
                                       "or one student's folder, zip or <student>/<lab>.ipynb")
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

    p = add("gradebook", help="print the gradebook")
    p.add_argument("--lab")
    p.set_defaults(func=cmd_gradebook)

    p = add("export", help="CSV per lab and per task, or a Canvas gradebook import")
    p.add_argument("--lab")
    p.add_argument("-o", "--output")
    p.add_argument("--format", choices=["csv", "canvas"], default="csv",
                   help="csv: grades_<lab>.csv and tasks.csv; canvas: canvas_grades.csv (Grades > Import)")
    p.set_defaults(func=cmd_export)

    p = add("report", help="an HTML page for the instructor: scores, pass rates, failures, who needs attention")
    p.add_argument("lab")
    p.add_argument("-o", "--output", help="the HTML file (default: <workdir>/reports/<lab>.html)")
    p.set_defaults(func=cmd_report)

    p = add("gradescope", help="write a Gradescope autograder bundle for a lab")
    p.add_argument("lab")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--full", action="store_true", help="grade in full mode instead of QUICK")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--visible", action="store_true",
                   help="show per-task results (hidden cases included) at once, not after the due date")
    p.set_defaults(func=cmd_gradescope)

    p = add("feedback", help="HTML feedback for graded submissions")
    p.add_argument("--lab")
    p.add_argument("--show-hidden", action="store_true",
                   help="show the hidden tests in the feedback (hidden by default)")
    p.set_defaults(func=cmd_feedback)

    p = add("demo", help="release all labs, grade the sample submissions, print the gradebook")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_demo)
    return ap


def _needs_course(args) -> bool:
    """`effml run NOTEBOOK` and `effml strip PATHS` work on files alone."""
    return not (args.command == "run" or (args.command == "strip" and args.paths))


def _course(args) -> Course | None:
    if getattr(args, "course", None):
        root = course_root_at(Path(args.course))
    else:
        try:
            root = find_course_root()
        except FileNotFoundError:
            if _needs_course(args):
                raise
            return None
    workdir = getattr(args, "workdir", None)
    return Course(root=root, workdir=Path(workdir).expanduser() if workdir else None)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return plain_text(text, 500)


USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, FileExistsError, ValueError)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message
        return exc.code if isinstance(exc.code, int) else 2
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args, _course(args))
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            raise
        if verbose:
            logging.exception("effml")
        print(f"effml: error: {_one_line(exc.code)}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        if verbose:
            logging.exception("effml")
        print(f"effml: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("effml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
