"""The int4 GEMV harness of lab 07: the scalar reference kernel
(:data:`REFERENCE_SRC`), compiling and binding a student's kernel, random
GEMV problems with their exact answer, correctness checks with clear
messages, interleaved best-of timing and GOPS.

The weight format is the one of :mod:`helpers.kernels.int4` (TinyChatEngine:
blocks of 32 along K, 4-bit codes with zero point 8, one fp32 scale per
block; activations int8 per block of 32). A kernel is a C function

    void gemv_int4_<variant>(const uint8_t *codes, const float *scales,
                             const int8_t *xq, const float *xs, float *y,
                             int n, int k, int num_threads);
"""
from __future__ import annotations

import ctypes
import functools
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .checks import CheckError
from .kernels.cjit import compile_c

BLOCK = 32

KERNEL_SIGNATURE = (
    "void gemv_int4_{variant}(const uint8_t *codes, const float *scales, const int8_t *xq, "
    "const float *xs, float *y, int n, int k, int num_threads)")

# The scalar baseline every variant is measured against: the loop of
# `gemv_int4_reference` in helpers/kernels/c/int4_gemv.c (a test checks they
# agree), compiled like the students' kernels with lab_flags().
REFERENCE_SRC = r"""
#include <stdint.h>

#define BLOCK 32

/* y[row] = sum over blocks b of  scales[row][b] * xs[b] * sum_{j<32} (code - 8) * xq[32*b + j]
 * codes: 16 bytes per block; byte j holds column 32*b + j (low nibble)
 *        and column 32*b + 16 + j (high nibble). */
void gemv_int4_reference(const uint8_t *codes, const float *scales, const int8_t *xq,
                         const float *xs, float *y, int n, int k, int num_threads) {
    (void)num_threads;  /* single-threaded */
    const int nb = k / BLOCK;
    for (int row = 0; row < n; row++) {
        const uint8_t *w = codes + (long)row * (k / 2);
        float acc = 0.0f;
        for (int b = 0; b < nb; b++) {
            int32_t isum = 0;
            for (int j = 0; j < 16; j++) {
                uint8_t byte = w[b * 16 + j];
                int lo = (byte & 0x0F) - 8;
                int hi = (byte >> 4) - 8;
                isum += lo * xq[b * BLOCK + j] + hi * xq[b * BLOCK + 16 + j];
            }
            acc += scales[(long)row * nb + b] * xs[b] * (float)isum;
        }
        y[row] = acc;
    }
}
"""

_ARGTYPES = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 3


@functools.lru_cache(maxsize=1)
def lab_flags() -> tuple[str, ...]:
    """Extra compiler flags of the lab's kernels: no auto-vectorization and
    no complete unrolling of loops, so each speedup measured is the kernel
    author's (with them, -O3 would vectorize and unroll the reference)."""
    import os
    import subprocess
    out = subprocess.run([os.environ.get("CC", "cc"), "--version"], capture_output=True, text=True, check=False)
    if "clang" in out.stdout:
        return ("-fno-vectorize", "-fno-slp-vectorize", "-fno-unroll-loops")
    return ("-fno-tree-vectorize", "--param=max-completely-peel-times=1")


# ---------------------------------------------------------------- kernels

def bind_kernel(lib: ctypes.CDLL, variant: str, *, task: str | None = None) -> Callable:
    """The function ``gemv_int4_<variant>`` of ``lib`` with its argument types set."""
    name = f"gemv_int4_{variant}"
    fn = getattr(lib, name, None)
    if fn is None:
        prefix = f"Task {task}: " if task else ""
        raise CheckError(f"{prefix}the C source defines no function `{name}`. Define it with the signature\n  "
                         + KERNEL_SIGNATURE.format(variant=variant)
                         + "\n(a `static` function is not exported: drop `static`).")
    fn.restype = None
    fn.argtypes = _ARGTYPES
    return fn


def compile_kernel(source: str, variant: str, *, task: str | None = None) -> Callable:
    """Compile C ``source`` with :func:`lab_flags` (cached by hash) and return
    its ``gemv_int4_<variant>``. A compile error is raised as :class:`helpers.kernels.cjit.CompileError`
    with the compiler's messages and the line numbers of ``source``."""
    if not isinstance(source, str):
        prefix = f"Task {task}: " if task else ""
        raise CheckError(f"{prefix}the kernel source is a {type(source).__name__}, expected the C code as a str.")
    return bind_kernel(compile_c(source, name=f"lab07_{variant}", extra_flags=lab_flags()), variant, task=task)


@functools.lru_cache(maxsize=1)
def reference_kernel() -> Callable:
    """The scalar baseline compiled from :data:`REFERENCE_SRC`."""
    return compile_kernel(REFERENCE_SRC, "reference")



@dataclass
class GemvProblem:
    """A random W4A8 GEMV: packed weight, quantized activation, exact answer."""
    n: int
    k: int
    codes: np.ndarray    # uint8 [n, k/2]
    scales: np.ndarray   # float32 [n, k/32]
    xq: np.ndarray       # int8 [k]
    xs: np.ndarray       # float32 [k/32]
    y_ref: np.ndarray    # float64 [n], the exact sums

    @property
    def macs(self) -> int:
        return self.n * self.k


def gemv_problem(n: int, k: int, seed: int = 0) -> GemvProblem:
    """A weight with a different scale in every block (row-wise and block-wise
    spread, so a scale applied per row or per tensor is caught) and codes over
    the whole 0..15 range, an activation with outlier blocks; the answer is
    the exact integer block sums scaled in float64."""
    if k % BLOCK:
        raise ValueError(f"k={k} must be a multiple of {BLOCK} (the packed format pads K to whole blocks).")
    rng = np.random.default_rng(seed)
    nb = k // BLOCK
    codes = rng.integers(0, 256, size=(n, k // 2), dtype=np.uint8)
    scales = (rng.uniform(0.2, 2.0, size=(n, 1)) * rng.uniform(0.01, 0.1, size=(n, nb))).astype(np.float32)
    xq = rng.integers(-127, 128, size=k, dtype=np.int8)
    xs = rng.uniform(0.001, 0.05, size=nb).astype(np.float32)
    xs[rng.random(nb) < 0.1] *= 20  # outlier blocks, as in real activations
    q = _unpack(codes).astype(np.int64) - 8
    isum = (q.reshape(n, nb, BLOCK) * xq.astype(np.int64).reshape(nb, BLOCK)).sum(-1)
    y = (isum * scales.astype(np.float64) * xs.astype(np.float64)).sum(-1)
    return GemvProblem(n, k, codes, scales, xq, xs, y)


def _unpack(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [n, k/2] -> 4-bit codes [n, k] in column order."""
    c = codes.reshape(codes.shape[0], -1, 16)
    return np.concatenate([c & 0x0F, c >> 4], axis=-1).reshape(codes.shape[0], -1)


def run_kernel(fn: Callable, p: GemvProblem, num_threads: int = 1) -> np.ndarray:
    """Call a kernel on a problem; ``y`` starts as NaN so rows it never
    writes show up as NaN."""
    y = np.full(p.n, np.nan, dtype=np.float32)
    fn(p.codes.ctypes.data, p.scales.ctypes.data, p.xq.ctypes.data, p.xs.ctypes.data, y.ctypes.data,
       p.n, p.k, num_threads)
    return y


def _thread_schedstats(tids: Sequence[str] | None = None) -> dict[str, tuple[int, int]] | None:
    """``{thread id: (ns on a CPU, ns waiting for a CPU)}`` of this process's
    threads ``tids`` (default: all live ones), from Linux's
    ``/proc/self/task/*/schedstat``; None where that does not exist."""
    import os
    if tids is None:
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return None
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run, wait = f.read().split()[:2]
            out[tid] = (int(run), int(wait))
        except (OSError, ValueError):
            pass  # the thread exited meanwhile
    return out


def _kernel_threads(fn: Callable, args: tuple, threads: int, calls: int) -> list[str] | None:
    """The threads that run a multithreaded kernel: those that used a CPU
    during ``calls`` calls (the caller and, e.g., OpenMP's workers), not the
    process's other threads, whose waits must not count as the kernel's."""
    before = _thread_schedstats()
    for _ in range(calls):
        fn(*args, threads)
    after = _thread_schedstats()
    if not before or not after:
        return None
    used = {t: after[t][0] - before[t][0] for t in after if t in before}
    most = max(used.values(), default=0)
    return [t for t, ns in used.items() if ns > 0.1 * most] or None


def _parallel_call_seconds(fn: Callable, args: tuple, threads: int, calls: int,
                           tids: list[str] | None) -> float:
    """Seconds per call of ``calls`` multithreaded calls in a row, not counting
    the time the kernel's threads ``tids`` waited for a CPU that another
    process held.

    Two figures, the smaller one is returned: the wall time; and the wall
    time around the calls and the two reads of the threads' scheduler
    statistics, less the longest time one of the threads sat runnable
    without a CPU, but never less than the CPU time of the busiest thread
    (the calls cannot end before it is done). A thread blocked on a lock
    sleeps, it does not wait for a CPU; threads that exit within the calls
    are not seen, which only leaves their waits counted.
    """
    t_outer = time.perf_counter()
    before = _thread_schedstats(tids) if tids else None
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(*args, threads)
    wall = time.perf_counter() - t0
    after = _thread_schedstats(tids) if tids else None
    outer = time.perf_counter() - t_outer
    deltas = [(after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in after if t in before] \
        if before and after else []
    if not deltas:
        return wall / calls
    busiest = max(d[0] for d in deltas) / 1e9
    waited = max(d[1] for d in deltas) / 1e9
    return min(wall, max(busiest, outer - waited)) / calls


def _cpu_seconds() -> float:
    """CPU time of this process, all its threads, to the microsecond
    (``getrusage``). Not ``time.process_time()``: when the process has a CPU
    time limit (``prlimit --cpu``, as in the grading sandbox) Linux keeps a
    process-wide CPU timer running, and ``CLOCK_PROCESS_CPUTIME_ID`` then
    reads that timer's tick-granular sample (a 1 ms call reads as 0.01 or
    4 ms), so a best-of timing would come out near 0."""
    try:
        import resource
    except ImportError:  # not Unix
        return time.process_time()
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def time_kernels(kernels: dict[str, tuple[Callable, int]], p: GemvProblem, *, min_repeats: int = 10,
                 budget_s: float = 1.0, until: Callable[[dict], bool] | None = None) -> dict[str, float]:
    """Best-of seconds per call for ``{name: (fn, num_threads)}``.

    Calls are interleaved (one of each, again and again) and the minimum is
    kept. A single-threaded call is timed in CPU time of the whole process
    (all its threads, :func:`_cpu_seconds`): another process taking the core does not inflate it,
    so it is the time the call takes on an idle core. A multithreaded call
    is timed on the wall clock less the time its threads waited for a CPU
    held by another process (:func:`_parallel_call_seconds`), so a busy
    machine can make a speedup of threads look smaller, never larger. Runs
    ``min_repeats`` rounds, then more while they fit in ``budget_s``,
    stopping early once ``until(best)`` holds (a target is met).
    (Set ``OMP_WAIT_POLICY=PASSIVE`` before OpenMP starts, as Lab 07 does:
    otherwise idle OpenMP threads spin after a parallel call, and that CPU
    time would be charged to the next single-threaded call.)
    """
    y = np.empty(p.n, dtype=np.float32)
    args = (p.codes.ctypes.data, p.scales.ctypes.data, p.xq.ctypes.data, p.xs.ctypes.data, y.ctypes.data, p.n, p.k)
    best = {name: float("inf") for name in kernels}
    batch, tids = {}, {}  # per multithreaded kernel: calls per timing (>= 2 ms), its threads
    for name, (fn, threads) in kernels.items():
        if threads != 1:
            t0 = time.perf_counter()
            fn(*args, threads)
            batch[name] = max(1, min(100, int(2e-3 / max(time.perf_counter() - t0, 1e-6))))
            tids[name] = _kernel_threads(fn, args, threads, batch[name])
    start, rounds = time.perf_counter(), 0
    while rounds < min_repeats or (time.perf_counter() - start < budget_s and rounds < 10_000
                                   and not (until and until(best))):
        for name, (fn, threads) in kernels.items():
            if threads == 1:
                t0 = _cpu_seconds()
                fn(*args, threads)
                seconds = _cpu_seconds() - t0
            else:
                seconds = _parallel_call_seconds(fn, args, threads, batch[name], tids[name])
            best[name] = min(best[name], seconds)
        rounds += 1
    return best


@functools.lru_cache(maxsize=4)
def bench_problem(seed: int = 0, n: int = 4096) -> GemvProblem:
    """A timing problem of the lab: an ``n`` x 2048 layer. The default 4096 rows
    (8.4M multiply-adds) make two threads pay off even for the SIMD kernel; the
    scalar multithreaded kernel is timed on 1024 rows, whose shorter calls more
    often find both cores free on a shared machine."""
    return gemv_problem(n, 2048, seed)


def check_kernel(fn: Callable, *, task: str, shapes: Sequence[tuple[int, int]], seed: int = 0,
                 num_threads: int = 1, repeats: int = 1, build: str = "") -> None:
    """Check a kernel against the exact W4A8 sums on random problems of the
    given ``(n, k)`` shapes, ``repeats`` times each (a data race shows up as
    results that change from run to run); the message says what looks wrong.
    ``build`` names an unusual build in the messages (e.g. "built without AVX2")."""
    from .checks import check_close
    for i, (n, k) in enumerate(shapes):
        p = gemv_problem(n, k, seed + i)
        first = None
        for r in range(repeats):
            y = run_kernel(fn, p, num_threads)
            where = f"n={n}, k={k}, num_threads={num_threads}" + (f", {build}" if build else "")
            missing = np.flatnonzero(np.isnan(y))
            if missing.size == n:
                raise CheckError(
                    f"Task {task}: with {where} the kernel wrote no element of y. Does every path of its "
                    "#if / #elif / #else compute y (the scalar fallback too)?")
            if missing.size:
                rows = ", ".join(map(str, missing[:8])) + (" ..." if missing.size > 8 else "")
                raise CheckError(
                    f"Task {task}: with {where} the kernel never wrote y[{rows}] ({missing.size} of {n} rows). "
                    "Does it handle every row: the n % 4 left over after an unrolled loop, each thread's share?")
            if first is not None and not np.array_equal(y, first, equal_nan=True):
                raise CheckError(
                    f"Task {task}: with {where} two runs on the same input gave different results "
                    f"(run 1 and run {r + 1} differ in {int(np.sum(y != first))} rows): a data race. "
                    "Is a variable shared by the threads that each thread should have to itself "
                    "(an accumulator declared outside the parallel loop)?")
            first = y
            scale = float(np.abs(p.y_ref).max()) or 1.0
            check_close(y, p.y_ref, name=f"y ({where})", task=task, rtol=1e-4, atol=1e-5 * scale,
                        hint="compare with gemv_int4_reference: zero point 8 (code - 8), one scale per "
                             "(row, block of 32) for the weights and per block for the activations, the low "
                             "nibble of byte j is column 32*b + j and the high nibble column 32*b + 16 + j; "
                             "k need not be a multiple of 64")


def gops(n: int, k: int, seconds: float) -> float:
    """Giga-operations per second of an n x k GEMV (a multiply-add is 2 ops)."""
    return 2.0 * n * k / seconds / 1e9
