"""The checking harness that lab test cells and the test suite share.

Every check raises :class:`CheckError` (an ``AssertionError``, so nbgrader
counts it as a failed test) whose message names the task and says what is off
and what was expected, e.g.::

    Task 1.2: `mask` has shape (16, 8), expected (8, 16).

Values may be torch tensors, numpy arrays, Python numbers or sequences; torch
is imported only when a tensor is passed, so ``import helpers.checks`` stays
cheap.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterable

import numpy as np

__all__ = [
    "CheckError",
    "check",
    "check_type",
    "check_shape",
    "check_dtype",
    "check_close",
    "check_equal",
    "check_in_range",
    "check_finite",
]


class CheckError(AssertionError):
    """A failed check; the message is meant for the student."""


def _prefix(task: str | None) -> str:
    return f"Task {task}: " if task else ""


def _fail(task: str | None, message: str, hint: str | None = None) -> None:
    text = _prefix(task) + message
    if hint:
        text += f"\n  Hint: {hint}"
    raise CheckError(text)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _shape(x: Any) -> tuple:
    if _is_tensor(x) or isinstance(x, np.ndarray):
        return tuple(x.shape)
    return tuple(np.shape(x))


def check(condition: Any, message: str, *, task: str | None = None, hint: str | None = None) -> None:
    """Fail with ``message`` unless ``condition`` is true."""
    if not condition:
        _fail(task, message, hint)


def check_type(value: Any, expected: type | tuple[type, ...], *, name: str, task: str | None = None) -> None:
    if not isinstance(value, expected):
        names = (
            " or ".join(t.__name__ for t in expected) if isinstance(expected, tuple) else expected.__name__
        )
        hint = None
        if value is None:
            hint = "did the function forget to `return` its result?"
        _fail(task, f"`{name}` is a {type(value).__name__}, expected {names}.", hint)


def check_shape(value: Any, expected: Iterable[int], *, name: str, task: str | None = None,
                hint: str | None = None) -> None:
    if value is None:
        _fail(task, f"`{name}` is None, expected an array of shape {tuple(expected)}.",
              "did the function forget to `return` its result?")
    got, want = _shape(value), tuple(int(d) for d in expected)
    if got != want:
        if sorted(got) == sorted(want) and got != want:
            hint = hint or "the dimensions are right but in the wrong order (a missing transpose?)"
        _fail(task, f"`{name}` has shape {got}, expected {want}.", hint)


def check_dtype(value: Any, expected: Any, *, name: str, task: str | None = None) -> None:
    got = value.dtype
    ok = got == expected
    if not ok:
        # Accept numpy/torch spellings of the same dtype.
        ok = str(got).replace("torch.", "") == str(expected).replace("torch.", "")
    if not ok:
        _fail(task, f"`{name}` has dtype {got}, expected {expected}.",
              "convert with `.to(dtype)` (torch) or `.astype(dtype)` (numpy)")


def check_finite(value: Any, *, name: str, task: str | None = None) -> None:
    arr = _to_numpy(value).astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        _fail(task, f"`{name}` has {int(bad.sum())} NaN/inf entries (of {arr.size}).",
              "look for a division by zero or a log of zero")


def check_close(value: Any, expected: Any, *, name: str, task: str | None = None,
                rtol: float = 1e-5, atol: float = 1e-6, hint: str | None = None) -> None:
    """Like ``allclose``, with a message saying where and by how much it is off."""
    if value is None:
        _fail(task, f"`{name}` is None.", "did the function forget to `return` its result?")
    got, want = _to_numpy(value), _to_numpy(expected)
    if got.shape != want.shape:
        check_shape(got, want.shape, name=name, task=task)
    got64 = got.astype(np.float64, copy=False)
    want64 = want.astype(np.float64, copy=False)
    if got.size == 0:
        return
    nan_mismatch = np.isnan(got64) != np.isnan(want64)
    diff = np.abs(got64 - want64)
    tol = atol + rtol * np.abs(want64)
    bad = (diff > tol) | nan_mismatch
    bad &= ~(np.isnan(got64) & np.isnan(want64))
    if bad.any():
        n_bad = int(bad.sum())
        idx = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf), -1))), got.shape)
        where = f" at index {tuple(int(i) for i in idx)}" if got.ndim else ""
        _fail(
            task,
            f"`{name}` differs from the expected value in {n_bad} of {got.size} entries; "
            f"largest difference{where}: got {got64[idx]:.6g}, expected {want64[idx]:.6g} "
            f"(tolerance rtol={rtol:g}, atol={atol:g}).",
            hint,
        )


def check_equal(value: Any, expected: Any, *, name: str, task: str | None = None,
                hint: str | None = None) -> None:
    """Exact equality for numbers, strings, sequences or arrays."""
    if _is_tensor(value) or isinstance(value, np.ndarray) or _is_tensor(expected) or isinstance(expected, np.ndarray):
        got, want = _to_numpy(value), _to_numpy(expected)
        if got.shape != want.shape:
            check_shape(got, want.shape, name=name, task=task)
        neq = got != want
        if np.any(neq):
            idx = np.unravel_index(int(np.argmax(neq)), got.shape) if got.ndim else ()
            where = f" (first at index {tuple(int(i) for i in idx)}: got {got[idx]!r}, expected {want[idx]!r})" if got.ndim else ""
            _fail(task, f"`{name}` differs from the expected value in {int(np.sum(neq))} of {got.size} entries{where}.", hint)
        return
    if value != expected:
        _fail(task, f"`{name}` is {value!r}, expected {expected!r}.", hint)


def check_in_range(value: Any, low: float | None, high: float | None, *, name: str,
                   task: str | None = None, hint: str | None = None) -> None:
    """``low <= value <= high`` (either bound may be None)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        _fail(task, f"`{name}` is {value!r}, expected a number.")
    if math.isnan(v) or (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        _fail(task, f"`{name}` is {v:.6g}, expected a value in [{lo}, {hi}].", hint)


# A test cell imports the checks afresh (`from helpers.checks import check_close`),
# which undoes a student's `check_close = ...` in the notebook; making the
# module's functions read-only also stops `helpers.checks.check_close = ...`.
class _ReadOnlyChecks(type(sys.modules[__name__])):
    def __setattr__(self, name, value):
        if name in __all__:
            raise AttributeError(f"helpers.checks.{name} is read-only: the tests always use the original")
        super().__setattr__(name, value)

    def __delattr__(self, name):
        if name in __all__:
            raise AttributeError(f"helpers.checks.{name} is read-only")
        super().__delattr__(name)


sys.modules[__name__].__class__ = _ReadOnlyChecks
