"""The grading pipeline end to end on the shipped lab 00 samples."""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import time

import pytest

from autograder.course import Course
from autograder.demo import check_expected
from autograder.grade import GradeOptions, grade
from autograder.report import export_csv, format_table, generate_feedback, results
from autograder.submissions import collect

ROOT = Course().root
SAMPLES = ROOT / "samples"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
LAB = "lab00_basics"

pytestmark = pytest.mark.notebook


def _effml(*args):
    return [sys.executable, "-m", "autograder.cli", *map(str, args)]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """`effml grade` on the samples, killed once midway and run again."""
    work = tmp_path_factory.mktemp("grading")
    course = Course(workdir=work)
    cmd = _effml("--workdir", work, "grade", SAMPLES / LAB, "--lab", LAB, "--workers", 2, "--cell-timeout", 90)
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    done = lambda: list((work / "results" / LAB).glob("*.json")) if (work / "results").exists() else []  # noqa: E731
    while len(done()) < 3 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(1)
    first.kill()  # SIGKILL: no clean-up of any kind
    first.wait()
    finished_before_kill = {p.stem for p in done()}
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stdout + second.stderr
    subs, _ = collect(SAMPLES / LAB, course.labs(), LAB)
    return course, subs, {r.student: r for r in results(course, LAB)}, finished_before_kill, second.stdout


def test_a_killed_batch_resumes_where_it_stopped(graded):
    _, subs, res, finished_before_kill, stdout = graded
    assert 3 <= len(finished_before_kill) < len(subs), "the batch was not killed midway"
    resumed = len(finished_before_kill)
    assert f"{len(subs) - resumed} graded now, {resumed} already graded (unchanged)" in stdout
    assert set(res) == {s.student for s in subs}  # nothing lost, nothing twice
    assert "score distribution" in stdout and "lab00_basics: mean" in stdout


def test_every_sample_gets_its_expected_grade(graded):
    _, _, res, _, _ = graded
    assert check_expected(list(res.values()), EXPECTED) == []


def test_reasons_say_what_happened(graded):
    _, _, r, _, _ = graded
    assert "exceeded the 90 s cell limit" in r["dave_infinite_loop"].reason
    assert "task_3_2_pareto_code" in r["dave_infinite_loop"].reason
    assert "not a valid notebook" in r["erin_broken_json"].reason
    assert "deleted graded cells task_1_3_mac_count" in r["frank_deleted_test"].reason
    assert "edited read-only cells task_1_1_output_size" in r["grace_tampered"].reason
    assert r["alice_full"].reason == ""


def test_scores_are_per_task(graded):
    _, _, r, _, _ = graded
    carol = r["carol_partial"].tasks
    assert carol["task_1_1_output_size"] == 10 and carol["task_1_2_param_count"] == 15
    assert carol["task_2_1_model_size"] == 10
    assert carol["task_1_3_mac_count"] == 0 and carol["task_3_2_pareto"] == 0
    # The restored test cell catches Grace's wrong formula although she deleted the tests.
    assert r["grace_tampered"].tasks["task_1_1_output_size"] == 0
    # Written answers wait for a person; the blank one scores 0 at once.
    assert r["alice_full"].tasks["task_4_1_macs_vs_latency"] is None
    assert r["bob_blank"].tasks["task_4_1_macs_vs_latency"] == 0
    assert r["alice_full"].auto_max == 90 and r["alice_full"].max_score == 100


def test_a_rerun_regrades_nothing_and_gives_identical_scores(graded):
    course, subs, first, _, _ = graded
    again = grade(course, subs, GradeOptions(workers=2, cell_timeout=90))
    assert all(r.resumed for r in again)
    assert {r.student: (r.auto_score, r.tasks) for r in again} == {s: (r.auto_score, r.tasks) for s, r in first.items()}


def test_a_changed_submission_is_regraded(graded, tmp_path):
    course, subs, _, _, _ = graded
    bob = next(s for s in subs if s.student == "bob_blank")
    bob = dataclasses.replace(bob, data=(SAMPLES / LAB / "carol_partial" / f"{LAB}.ipynb").read_bytes())
    (res,) = grade(course, [bob], GradeOptions(cell_timeout=90))
    assert not res.resumed and res.auto_score == 35


def test_exports_and_feedback(graded, tmp_path):
    course, _, graded_results, _, _ = graded
    paths = export_csv(course, tmp_path)
    per_lab = list(csv.DictReader(open(tmp_path / f"grades_{LAB}.csv")))
    assert {row["student"] for row in per_lab} == set(graded_results)
    assert "task_3_2_pareto" in per_lab[0]
    long = list(csv.DictReader(open(tmp_path / "tasks.csv")))
    assert len(long) == 8 * len(graded_results)
    assert tmp_path / "tasks.csv" in paths
    pages = generate_feedback(course, LAB)
    assert len(pages) == len(graded_results)
    erin = (course.feedback_dir() / "erin_broken_json" / LAB / f"{LAB}.html").read_text()
    assert "not a valid notebook" in erin
    alice = (course.feedback_dir() / "alice_full" / LAB / f"{LAB}.html").read_text()
    assert "90/90 automatic points" in alice and "conv2d_output_size" in alice
    generate_feedback(course, LAB)  # a re-run replaces the banner, it does not stack it
    assert (course.feedback_dir() / "alice_full" / LAB / f"{LAB}.html").read_text().count("<!--effml-->") == 1
    table = format_table(list(graded_results.values()))
    assert all(s in table for s in graded_results)


def test_grading_on_a_dask_cluster_gives_the_same_grades(tmp_path):
    from distributed import LocalCluster

    course = Course(workdir=tmp_path)
    subs, _ = collect(SAMPLES / LAB, course.labs(), LAB)
    subs = [s for s in subs if s.student in ("alice_full", "carol_partial", "erin_broken_json")]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        on_cluster = grade(course, subs, GradeOptions(cell_timeout=90, scheduler=cluster.scheduler_address))
    want = {s: EXPECTED[LAB][s] for s in ("alice_full", "carol_partial", "erin_broken_json")}
    assert check_expected(on_cluster, {LAB: want}) == []
