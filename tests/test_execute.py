"""The executor's limits on small synthetic notebooks."""
from __future__ import annotations

import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from autograder.execute import execute
from autograder.scoring import score_cells


def _nb(tmp_path, *sources, graded_last=True):
    cells = [new_code_cell(s) for s in sources]
    cells[0].metadata["tags"] = ["parameters"]
    if graded_last:
        cells[-1].metadata["nbgrader"] = {"grade": True, "grade_id": "task_1_1_check", "locked": True,
                                          "points": 5, "solution": False, "schema_version": 3}
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_parameters_are_injected_and_cells_run(tmp_path):
    path = _nb(tmp_path, "QUICK = False", "assert QUICK is True, QUICK")
    res = execute(path, tmp_path / "out.ipynb", parameters={"QUICK": True}, cell_timeout=60)
    assert res.status == "ok", res.reason
    assert score_cells(res.notebook)[0].score == 5


def test_an_infinite_loop_costs_one_cell_and_the_rest_still_runs(tmp_path):
    path = _nb(tmp_path, "x = 1", "while True:\n    pass", "print('after')", "assert x == 1")
    res = execute(path, tmp_path / "out.ipynb", cell_timeout=3, notebook_timeout=120)
    assert res.status == "cell_timeout"
    assert "cell 2 exceeded the 3 s cell limit" in res.reason
    assert res.notebook.cells[2].outputs[0]["text"] == "after\n"
    assert res.notebook.cells[1].outputs[-1]["ename"] == "CellTimeout"
    assert score_cells(res.notebook)[0].score == 5


def test_a_crashing_kernel_scores_what_ran_and_zero_after(tmp_path):
    path = _nb(tmp_path, "x = 1", "import ctypes; ctypes.string_at(0)", "assert x == 1")
    res = execute(path, tmp_path / "out.ipynb", cell_timeout=60, notebook_timeout=120)
    assert res.status == "kernel_died", res
    assert "kernel died" in res.reason
    # nbgrader would give full marks to an unexecuted test cell: we give 0 and say why.
    (row,) = score_cells(res.notebook)
    assert row.score == 0 and "not executed" in row.message


def test_the_notebook_limit_stops_everything(tmp_path):
    path = _nb(tmp_path, "import time", "time.sleep(2)", "time.sleep(2)", "time.sleep(60)", "assert True")
    res = execute(path, tmp_path / "out.ipynb", cell_timeout=100, notebook_timeout=12)
    assert res.status == "notebook_timeout"
    assert res.duration_s < 40
    assert score_cells(res.notebook)[0].score == 0


@pytest.mark.parametrize("output", ["import sys; print('oops', file=sys.stderr)", "raise ValueError('no')"])
def test_test_cells_with_errors_or_stderr_score_zero(tmp_path, output):
    path = _nb(tmp_path, "x = 1", output)
    res = execute(path, tmp_path / "out.ipynb", cell_timeout=60)
    assert score_cells(res.notebook)[0].score == 0


def test_concurrent_executions_split_the_cores(monkeypatch):
    from autograder.execute import THREAD_VARS, thread_env

    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert thread_env(1)["OMP_NUM_THREADS"] == "8"
    assert thread_env(3) == dict.fromkeys(THREAD_VARS, "2")
    assert thread_env(16)["MKL_NUM_THREADS"] == "1"        # never zero
    monkeypatch.setenv("OMP_NUM_THREADS", "5")              # the user's choice wins
    assert thread_env(4)["OMP_NUM_THREADS"] == "5"
    assert thread_env(4)["MKL_NUM_THREADS"] == "5"          # and sets the libraries left unset


def test_each_test_process_has_its_share_of_the_cores():
    """conftest splits the cores between xdist's workers (in the controller,
    whose environment the workers inherit): with ``-n 2`` on 2 cores every
    worker, and every kernel it starts, gets one thread. Skipped in meaning,
    not in effect, when the user chose a thread count: theirs is kept."""
    import torch

    from autograder.execute import THREAD_VARS

    if os.environ.get("EFFML_TEST_THREADS") != "split":
        assert any(os.environ.get(v) for v in THREAD_VARS)     # the user's own setting
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    want = max(1, (os.cpu_count() or 1) // workers)
    assert {os.environ[v] for v in THREAD_VARS} == {str(want)}
    assert torch.get_num_threads() == want


def test_the_kernel_sees_the_thread_budget(tmp_path):
    path = _nb(tmp_path, "QUICK = False",
               "import os, torch\nassert os.environ['OMP_NUM_THREADS'] == '1'\nassert torch.get_num_threads() == 1")
    from autograder.execute import THREAD_VARS

    res = execute(path, tmp_path / "out.ipynb", cell_timeout=120, env=dict.fromkeys(THREAD_VARS, "1"))
    assert res.status == "ok", [o for c in res.notebook.cells for o in c.outputs]
    assert score_cells(res.notebook)[0].score == 5


def test_a_fresh_empty_cgroup_of_another_batch_is_not_reaped(monkeypatch):
    """A cgroup made a moment ago by another batch (or test process) is empty
    until its kernel enters it: reaping it then failed that kernel's start
    (two test processes probing bubblewrap at once). Old empty ones go."""
    import uuid
    from pathlib import Path

    from autograder import sandbox

    base = sandbox.CGROUP_ROOT / "pids"
    if not os.access(base, os.W_OK):
        pytest.skip("no writable pids cgroup hierarchy here")
    group = base / f"effml-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        sandbox.reap_stale_cgroups()
        assert group.is_dir()
        monkeypatch.setattr(sandbox, "STALE_CGROUP_S", -1)
        sandbox.reap_stale_cgroups()
        assert not group.exists()
    finally:
        if Path(group).exists():
            group.rmdir()
