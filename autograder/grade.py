"""Grade submissions: restore locked and hidden cells (nbgrader), execute
with papermill in QUICK mode under limits, record scores in the gradebook,
keep the autograded notebooks for feedback.

Only the main process touches the gradebook: the expensive part (execution)
runs in worker threads that each drive a child process, so ``workers=N``
grades N notebooks at once without ever writing the database concurrently.
A finished submission leaves ``<workdir>/results/<lab>/<student>.json``; a
re-run skips those whose input and lab are unchanged (resumable batches).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import nbformat

from .course import Course
from .execute import kill_all_running
from .labrun import notebook_limits, run_lab
from .release import ensure_in_gradebook
from .submissions import Submission

log = logging.getLogger("effml.grade")


@dataclass
class GradeOptions:
    quick: bool = True
    seed: int = 0
    cell_timeout: int | None = None       # None: the lab's own limit, else the default
    notebook_timeout: int | None = None
    workers: int = 1
    force: bool = False                   # re-grade even when a result exists
    sandbox: object = None                # autograder.sandbox.Sandbox: jails the kernel; None: on the host
    scheduler: str | None = None          # Dask scheduler address: execute on the cluster's workers


@dataclass
class Result:
    student: str
    lab: str
    status: str
    auto_score: float = 0.0
    auto_max: float = 0.0
    manual_max: float = 0.0
    max_score: float = 0.0
    manual_score: float = 0.0     # points given by hand so far (written answers)
    total_score: float = 0.0      # auto_score + manual_score, what nbgrader's gradebook shows
    manual_pending: int = 0       # cells still waiting for a manual grade
    reasons: list[str] = field(default_factory=list)
    tasks: dict = field(default_factory=dict)     # grade_id -> score (None: manual)
    review: list[str] = field(default_factory=list)  # the static scan's "needs review: ..." findings
    exec_s: float = 0.0
    check_s: float = 0.0          # the trusted checks' time
    total_s: float = 0.0
    input_sha256: str = ""
    lab_sha256: str = ""
    resumed: bool = False

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @classmethod
    def from_dict(cls, data: dict) -> "Result":
        """A result saved by this or another version: unknown keys are
        ignored, missing ones take their defaults."""
        if not isinstance(data, dict):
            raise TypeError(f"a saved result is a JSON object, not {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        result = cls(**{k: v for k, v in data.items() if k in names})
        if "manual_pending" not in data:  # saved before manual totals were kept
            result.manual_pending = sum(1 for v in (result.tasks or {}).values() if v is None)
        if "total_score" not in data:
            result.total_score = result.auto_score + result.manual_score
        return result


def _lab_hash(course: Course, lab: str) -> str:
    """The lab as graded: its notebook and its trusted checks (a changed check re-grades)."""
    h = hashlib.sha256(course.solution_notebook(lab).read_bytes())
    h.update(course.checks_file(lab).read_bytes())
    return h.hexdigest()


def _result_path(course: Course, lab: str, student: str) -> Path:
    return course.workdir / "results" / lab / f"{student}.json"


def load_result(course: Course, lab: str, student: str) -> Result | None:
    try:
        return Result.from_dict(json.loads(_result_path(course, lab, student).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save_result(course: Course, result: Result) -> None:
    path = _result_path(course, result.lab, result.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(result), indent=1))
    os.replace(tmp, path)  # atomic: a killed batch never leaves half a result


# ---------------------------------------------------------------- steps


def _resources(course: Course, sub: Submission) -> dict:
    return {"nbgrader": {"db_url": course.db_url, "assignment": sub.lab, "notebook": sub.lab,
                         "student": sub.student}}


def _register(course: Course, sub: Submission) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb:
        gb.update_or_create_student(sub.student)
        gb.update_or_create_submission(sub.lab, sub.student)


def _source_cells(course: Course, lab: str) -> tuple[list[str], dict[str, str]]:
    """Grade cell ids of the lab, and the checksum of every read-only cell as
    released (the gradebook's checksums include the hidden tests)."""
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb:
        grade_ids = [c.name for c in gb.find_notebook(lab, lab).grade_cells]
    release = nbformat.read(course.release_notebook(lab), as_version=4)
    locked = {m["grade_id"]: m["checksum"] for c in release.cells
              if (m := c.metadata.get("nbgrader", {})).get("locked") and m.get("checksum")}
    return grade_ids, locked


def sanitize(course: Course, sub: Submission, nb) -> tuple[object, list[str]]:
    """nbgrader's autograde sanitising: clear outputs, drop duplicated ids,
    restore the release's kernelspec, and overwrite locked and test cells
    (hidden tests included) from the gradebook, re-adding deleted ones."""
    from nbgrader.utils import compute_checksum, is_grade

    reasons = []
    grade_ids, locked = _source_cells(course, sub.lab)
    present = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells if is_grade(c)]
    dupes = sorted({g for g in present if present.count(g) > 1})
    if dupes:
        reasons.append("duplicated cell ids " + ", ".join(dupes) + " (one copy is graded)")
    missing = [g for g in grade_ids if g not in present]
    if missing:
        reasons.append("deleted graded cells " + ", ".join(missing) + " (restored from the release)")
    edited = sorted({gid for c in nb.cells
                     if (gid := c.metadata.get("nbgrader", {}).get("grade_id")) in locked
                     and compute_checksum(c) != locked[gid]})
    if edited:
        reasons.append("edited read-only cells " + ", ".join(edited) + " (restored from the release)")
    nb = nbformat.from_dict(nbformat.validator.normalize(nb)[1])  # cells saved without ids get one
    resources = _resources(course, sub)
    for pp in nbgrader_pipeline("sanitize"):
        pp.log.setLevel(logging.ERROR)
        nb, resources = pp(nb, resources)  # __call__ honours `enabled`, as nbgrader's exporter does
        for cell in nb.cells:  # DeduplicateIds leaves `nbgrader: {}` on the copies it drops
            if cell.metadata.get("nbgrader") == {}:
                del cell.metadata["nbgrader"]
    return nb, reasons


def _zero_grades(course: Course, sub: Submission) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb:
        for grade in gb.find_submission_notebook(sub.lab, sub.lab, sub.student).grades:
            grade.auto_score = 0
            grade.needs_manual_grade = False
        gb.db.commit()


def _prepare(course: Course, sub: Submission, lab_sha: str, exec_root: Path):
    """Main thread: returns (path to execute, reasons) or a finished Result."""
    start = time.monotonic()
    base = Result(sub.student, sub.lab, "pending", input_sha256=sub.sha256, lab_sha256=lab_sha)
    _register(course, sub)
    submitted = course.submitted(sub.student, sub.lab)
    submitted.mkdir(parents=True, exist_ok=True)
    if sub.data is not None:
        (submitted / f"{sub.lab}.ipynb").write_bytes(sub.data)
    problem = sub.problem
    nb = None
    if not problem:
        try:
            nb = nbformat.reads(sub.data.decode("utf-8"), as_version=4)
            nbformat.validate(nb)
        except Exception as exc:  # noqa: BLE001 - anything unreadable scores 0 with the reason
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problem = f"the notebook file is not a valid notebook ({first[:160]})"
    reasons: list[str] = []
    if not problem:
        try:
            nb, reasons = sanitize(course, sub, nb)
        except Exception as exc:  # noqa: BLE001
            problem = f"the notebook's grading metadata is damaged ({exc})"
    if problem:
        _zero_grades(course, sub)
        base.status, base.reasons = "invalid", [problem]
        base.total_s = time.monotonic() - start
        _finish_totals(course, base)
        return base
    work = exec_root / sub.lab / sub.student  # the grader's own: the kernel never sees it
    if work.is_symlink() or work.exists():
        _remove(work)
    work.mkdir(parents=True)
    path = work / f"{sub.lab}.ipynb"
    nbformat.write(nb, path)
    base.reasons = reasons
    base.review = _review(course, sub.lab, nb)
    base.total_s = time.monotonic() - start
    return path, base


def _log_path(course: Course, sub: Submission) -> Path:
    """The executor's log (kernel start-up, executor errors), kept for the instructor."""
    path = course.workdir / "logs" / sub.lab / f"{sub.student}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)  # never follows links


def _review(course: Course, lab: str, nb) -> list[str]:
    """The static scan's findings: a person should look; the score is not changed."""
    try:
        from .scan import scan_notebook
    except ImportError:
        return []
    try:
        release = nbformat.read(course.release_notebook(lab), as_version=4)
        return [str(f) for f in scan_notebook(nb, release)]
    except Exception as exc:  # noqa: BLE001 - the scan is advisory
        log.warning("scan of %s failed: %s", lab, exc)
        return []


def apply_verdicts(nb, checks: dict) -> None:
    """Each graded test cell's outputs become the trusted check's verdict, so
    nbgrader's scoring (and Formgrader, and the feedback) read the grader's
    score, whatever the kernel printed there."""
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        verdict = checks.get(meta.get("grade_id")) or {"passed": False, "message": "not checked"}
        points = meta.get("points", 0)
        if verdict.get("passed") is True:
            cell.outputs = [nbformat.v4.new_output(
                "stream", name="stdout", text=f"Grader: all checks passed ({points:g}/{points:g} points)\n")]
        else:
            message = str(verdict.get("message") or "a check failed")[:3000]
            cell.outputs = [nbformat.v4.new_output("error", ename="GraderCheck", evalue=message, traceback=[
                f"Grader: 0/{points:g} points", message])]


def nbgrader_pipeline(stage: str) -> list:
    """nbgrader's own autograde pipelines, derived from nbgrader rather than
    retyped: ``sanitize`` (clear outputs, dedupe ids, restore kernelspec and
    locked cells, re-adding deleted ones) and ``record`` (its autograde
    pipeline without ``Execute``: the trusted executor has run the notebook)."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    config = Config({"OverwriteCells": {"add_missing_cells": True}})
    autograde = Autograde(config=config)
    classes = (autograde.sanitize_preprocessors if stage == "sanitize"
               else [p for p in autograde.autograde_preprocessors if p is not Execute])
    return [cls(config=config) for cls in classes]


def _finalize(course: Course, sub: Submission, base: Result, exec_result) -> Result:
    start = time.monotonic()
    nb = exec_result.notebook
    apply_verdicts(nb, exec_result.checks or {})
    resources = _resources(course, sub)
    for pp in nbgrader_pipeline("record"):
        pp.log.setLevel(logging.ERROR)
        nb, resources = pp(nb, resources)
    out = course.autograded(sub.student, sub.lab)
    if out.is_symlink() or out.exists():
        _remove(out)
    out.mkdir(parents=True)
    nbformat.write(nb, out / f"{sub.lab}.ipynb")
    _remove(course.workdir / "exec" / sub.lab / sub.student)  # nothing of the run stays behind
    base.status = exec_result.status
    base.reasons = base.reasons + exec_result.reasons
    base.exec_s = exec_result.duration_s
    base.check_s = exec_result.check_s
    _finish_totals(course, base)
    base.total_s += exec_result.duration_s + exec_result.check_s + time.monotonic() - start
    return base


def _finish_totals(course: Course, result: Result) -> None:
    """Scores as the gradebook has them: automatic points (code cells), the
    points given by hand in formgrader (written answers), their total (what
    nbgrader shows), and how many cells still wait for a manual grade."""
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb:
        nb = gb.find_submission_notebook(result.lab, result.lab, result.student)
        code = [g for g in nb.grades if g.cell_type == "code"]
        written = [g for g in nb.grades if g.cell_type != "code"]
        result.tasks = {g.name: g.score if not g.needs_manual_grade else None for g in nb.grades}
        result.auto_score = float(sum(g.score for g in code if not g.needs_manual_grade))
        result.auto_max = float(sum(g.max_score for g in code))
        result.max_score = float(nb.max_score)
        result.manual_max = result.max_score - result.auto_max
        result.manual_score = float(sum(g.score for g in written if not g.needs_manual_grade))
        result.total_score = result.auto_score + result.manual_score
        result.manual_pending = sum(1 for g in nb.grades if g.needs_manual_grade)


# ---------------------------------------------------------------- batch


@contextmanager
def _executor(options: GradeOptions):
    """Where executions run: ``workers`` threads here (each drives a child
    process), or a Dask cluster's workers, which must see the grading work
    directory at the same path (a shared filesystem, or a local cluster)."""
    if not options.scheduler:
        with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
            yield pool
        return
    from distributed import Client

    with Client(options.scheduler, timeout=30) as client:
        # A concurrent.futures facade: the same submit/as_completed loop drives it.
        with client.get_executor(pure=False) as pool:
            yield pool


def grade(course: Course, subs: list[Submission], options: GradeOptions | None = None,
          progress=None) -> list[Result]:
    """Grade ``subs``; ``progress(result)`` is called as each one finishes."""
    options = options or GradeOptions()
    # nbgrader's gradebook emits SQLAlchemy autoflush warnings that mean nothing to an instructor.
    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", category=nbformat.validator.MissingIDFieldWarning)
    results: list[Result] = []
    seen = set()
    todo = []
    for sub in subs:
        key = (sub.student, sub.lab)
        if key in seen:
            log.warning("%s submitted %s twice; grading the first (%s)", sub.student, sub.lab, sub.origin)
            continue
        seen.add(key)
        todo.append(sub)

    lab_shas = {}
    for lab in sorted({s.lab for s in todo}):
        course.check_lab(lab)
        if not course.checks_file(lab).is_file():
            raise SystemExit(f"{lab} cannot be graded: it has no trusted checks "
                             f"({course.checks_file(lab).relative_to(course.root)})")
        ensure_in_gradebook(course, lab)
        lab_shas[lab] = _lab_hash(course, lab)

    exec_root = course.workdir / "exec"
    pending = []
    for sub in todo:
        previous = None if options.force else load_result(course, sub.lab, sub.student)
        if previous and previous.input_sha256 == sub.sha256 and previous.lab_sha256 == lab_shas[sub.lab]:
            previous.resumed = True
            results.append(previous)
            if progress:
                progress(previous)
            continue
        prepared = _prepare(course, sub, lab_shas[sub.lab], exec_root)
        if isinstance(prepared, Result):
            _save_result(course, prepared)
            results.append(prepared)
            if progress:
                progress(prepared)
        else:
            pending.append((sub, *prepared))

    def run(item):
        sub, path, _ = item
        # The lab's limits come from its solution notebook, never from the submission.
        limits = notebook_limits(course.solution_notebook(sub.lab)).override(
            cell_timeout=options.cell_timeout, notebook_timeout=options.notebook_timeout)
        return run_lab(path, path.with_name(f"{sub.lab}.executed.ipynb"), quick=options.quick, seed=options.seed,
                       limits=limits, cwd=path.parent, sandbox=options.sandbox, checks=course.checks_file(sub.lab),
                       # a Dask worker's machine has its own cores
                       concurrent=None if options.scheduler else options.workers,
                       log_path=_log_path(course, sub))

    with _executor(options) as pool:
        futures = {pool.submit(run, item): item for item in pending}
        try:
            _collect(course, futures, results, progress)
        except BaseException:
            # Ctrl-C or a kill: stop what runs; finished grades are saved, a re-run does the rest.
            for fut in futures:
                fut.cancel()
            kill_all_running()
            raise
    if options.sandbox is not None and not options.scheduler:
        from .sandbox import sweep

        sweep(options.sandbox.tag)
    order = {(s.student, s.lab): i for i, s in enumerate(todo)}
    results.sort(key=lambda r: order.get((r.student, r.lab), 0))
    return results


def _collect(course: Course, futures: dict, results: list, progress) -> None:
    """Main thread: finalize each execution as it completes (the only gradebook writer)."""
    for fut in as_completed(futures):
        sub, _, base = futures[fut]
        try:
            result = _finalize(course, sub, base, fut.result())
        except Exception as exc:  # noqa: BLE001 - one bad submission never stops a batch
            log.exception("grading %s/%s failed", sub.student, sub.lab)
            _remove(course.workdir / "exec" / sub.lab / sub.student)
            _zero_grades(course, sub)
            base.status, base.reasons = "failed", base.reasons + [f"the grader failed: {exc}"]
            _finish_totals(course, base)
            result = base
        _save_result(course, result)
        results.append(result)
        if progress:
            progress(result)
