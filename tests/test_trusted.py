"""The trusted-check machinery on small synthetic notebooks: the wire's plain
data, checks against a jailed kernel, call limits, and scores that no
longer depend on what a test cell printed."""
from __future__ import annotations

import json
import pickle
import textwrap

import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook
import nbformat

from autograder import wire
from autograder.course import Course
from autograder.execute import execute
from autograder.sandbox import make_sandbox
from autograder.trusted import Student, run_checks, task

# ---------------------------------------------------------------- the wire, in process


def _roundtrip(value):
    """Encode as the kernel does, decode as the grader does."""
    ns = {"value": value}
    bridge = {}
    exec(wire.KERNEL_SOURCE, bridge)
    return wire.decode(bridge["__effml_answer"](json.dumps({"op": "get", "name": "value"}), ns))


@pytest.mark.parametrize("value", [None, True, 3, 2.5, "text", [1, "a"], (1, (2, 3)), {"a": [1, 2], 3: (4,)},
                                   b"\x00\x01", float("inf")])
def test_plain_values_cross_with_their_exact_types(value):
    got = _roundtrip(value)
    assert got == value and type(got) is type(value)


def test_arrays_tensors_and_modules_cross_as_data():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    got = _roundtrip(arr)
    assert type(got) is np.ndarray and got.dtype == np.int16 and (got == arr).all()
    t = torch.randn(3, 4).to(torch.bfloat16)
    got = _roundtrip(t)
    assert type(got) is torch.Tensor and got.dtype == torch.bfloat16 and torch.equal(got, t)
    assert type(_roundtrip(np.float32(1.5))) is np.float32
    layer = torch.nn.Linear(3, 2)
    got = _roundtrip(layer)
    assert isinstance(got, wire.ModuleState) and set(got.state) == {"weight", "bias"}
    assert torch.equal(got.state["weight"], layer.weight.detach())


class Liar(float):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("value", [Liar(1.0), np.array([object()], dtype=object), (x for x in []), object(),
                                   type("Sub", (int,), {})(3)])
def test_anything_else_is_refused(value):
    with pytest.raises(wire.WireError, match="expected plain data"):
        _roundtrip(value)


@pytest.mark.parametrize("text", ["", "{", json.dumps({"$pickle": "x"}), json.dumps({"$tensor": "AA==", "dtype": "object"}),
                                  json.dumps({"$ndarray": __import__("base64").b64encode(pickle.dumps([1])).decode()}),
                                  json.dumps({"$dict": [[[1], 2]]}), json.dumps({"$tuple": 3}), "x" * 10])
def test_malformed_answers_are_wire_errors(text):
    with pytest.raises(wire.WireError):
        wire.decode(text)


def test_a_pickled_array_is_never_loaded():
    import base64
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(wire.WireError):
        wire.decode(json.dumps({"$ndarray": base64.b64encode(buf.getvalue()).decode()}))


def test_a_call_may_name_a_helpers_probe_that_drives_student_code():
    bridge = {}
    exec(wire.KERNEL_SOURCE, bridge)
    ns = {"double": lambda x: 2 * x}
    request = {"op": "call", "name": "helpers.probes.call_plain", "args": json.loads(wire.encode([wire.Ref("double"), (4,)])),
               "kwargs": {"$dict": []}}
    answer = wire.decode(bridge["__effml_answer"](json.dumps(request), ns))
    assert answer["value"] == 8, answer
    request["name"] = "os.system"  # only helpers functions may be named
    with pytest.raises(wire.StudentError, match="not defined"):
        wire.decode(bridge["__effml_answer"](json.dumps(request), ns))


def test_run_checks_turns_every_failure_into_a_message():
    from helpers.checks import check_equal

    @task("task_1_1_a")
    def ok(student):
        check_equal(student.value("x"), 1, name="x", task="1.1")

    @task("task_1_2_b")
    def wrong(student):
        check_equal(student.value("x"), 2, name="x", task="1.2")

    @task("task_1_3_c")
    def grader_bug(student):
        raise KeyError("oops")

    ns = {"x": 1}
    bridge = {}
    exec(wire.KERNEL_SOURCE, bridge)
    student = Student(lambda req, timeout: bridge["__effml_answer"](json.dumps(req), ns))
    out = run_checks({"task_1_1_a": ok, "task_1_2_b": wrong, "task_1_3_c": grader_bug}, student,
                     ["task_1_1_a", "task_1_2_b", "task_1_3_c", "task_1_4_missing"])
    assert out["task_1_1_a"].passed
    assert not out["task_1_2_b"].passed and "Task 1.2: `x` is 1, expected 2" in out["task_1_2_b"].message
    assert not out["task_1_3_c"].passed and "could not run" in out["task_1_3_c"].message
    assert not out["task_1_4_missing"].passed


# ---------------------------------------------------------------- against a jailed kernel

CHECKS = '''
from autograder.trusted import task
from helpers.checks import check_equal, check_close

@task("task_1_1_add")
def add(student):
    f = student.function("add")
    for a, b in [(1, 2), (-5, 7), (10**12, 3)]:
        check_equal(f(a, b), a + b, name=f"add({a}, {b})", task="1.1")

@task("task_1_2_scale")
def scale(student):
    import torch
    x = torch.arange(6.0).reshape(2, 3)
    check_close(student.function("scale")(x, 3.0), x * 3, name="scale", task="1.2")

@task("task_1_3_slow")
def slow(student):
    check_equal(student.function("slow")(), 1, name="slow()", task="1.3")

@task("task_1_4_after")
def after(student):
    check_equal(student.function("add")(2, 2), 4, name="add(2, 2) after a timeout", task="1.4")
'''


def _graded_cell(source, gid):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": gid, "locked": True, "points": 1,
                                 "solution": False, "schema_version": 3}
    return cell


def _run(tmp_path, solution: str, **kw):
    cells = [new_code_cell("QUICK = False"), new_code_cell(textwrap.dedent(solution))]
    cells[0].metadata["tags"] = ["parameters"]
    for gid in ("task_1_1_add", "task_1_2_scale", "task_1_3_slow", "task_1_4_after"):
        # A visible test that writes to stderr, as torch.distributed's gloo does in a sandbox.
        cells.append(_graded_cell("import sys; print('[c10d] hostname warning', file=sys.stderr)", gid))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    checks = tmp_path / "grader.py"
    checks.write_text(CHECKS)
    out = tmp_path / "out" / "nb.ipynb"
    return execute(path, out, parameters={"QUICK": True}, cell_timeout=kw.get("cell_timeout", 60),
                   notebook_timeout=120, checks=checks, check_timeout=120,
                   sandbox=make_sandbox("bwrap", Course()))


GOOD = """
def add(a, b):
    return a + b
def scale(x, s):
    return x * s
def slow():
    import time
    time.sleep(0.1)
    return 1
"""


@pytest.mark.notebook
def test_correct_functions_pass_whatever_the_test_cells_print(tmp_path):
    res = _run(tmp_path, GOOD)
    assert res.status == "ok", res.reasons
    assert {g: v["passed"] for g, v in res.checks.items()} == dict.fromkeys(
        ["task_1_1_add", "task_1_2_scale", "task_1_3_slow", "task_1_4_after"], True), res.checks


@pytest.mark.notebook
def test_a_stuck_call_is_interrupted_and_the_next_check_still_runs(tmp_path):
    stuck = GOOD.replace("time.sleep(0.1)", "while True:\n        pass")
    res = _run(tmp_path, stuck, cell_timeout=5)
    assert not res.checks["task_1_3_slow"]["passed"]
    assert "limit" in res.checks["task_1_3_slow"]["message"]
    assert res.checks["task_1_4_after"]["passed"], res.checks
    assert res.checks["task_1_1_add"]["passed"]


@pytest.mark.notebook
def test_a_function_that_lies_or_raises_fails_its_check(tmp_path):
    lying = GOOD.replace("return a + b", "class E(int):\n        def __eq__(s, o): return True\n    return E(0)")
    lying = lying.replace("return x * s", "raise RuntimeError('nope')")
    res = _run(tmp_path, lying)
    assert not res.checks["task_1_1_add"]["passed"] and "plain data" in res.checks["task_1_1_add"]["message"]
    assert not res.checks["task_1_2_scale"]["passed"]
    assert "RuntimeError: nope" in res.checks["task_1_2_scale"]["message"]
