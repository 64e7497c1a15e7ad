"""Lab 07 machinery: SmolLM2 decoding on the CPU with int4 weights.

- A minimal Llama forward (:class:`EdgeLlama`) for SmolLM2 with a KV cache,
  taking its weights from the transformers model, where every linear layer
  calls a pluggable GEMV (:class:`Fp32Gemv`, :class:`W4A8Gemv`); RMSNorm,
  RoPE, grouped-query attention and the SiLU MLP are numpy.
- The torch reference of the same W4A8 arithmetic (:func:`w4a8_reference_model`:
  the transformers model with every linear layer doing W4A8 in torch).
- The kernel harness of the lab: the scalar reference kernel
  (:data:`REFERENCE_SRC`), compiling and binding a student's kernel, random
  GEMV problems with their exact answer, interleaved best-of timing, GOPS.
- Tokens/s: :func:`measure_decode` (fp32 / w4, used by ``benchmarks/llm.py``)
  and :func:`measure_llama_cpp` where llama-cpp-python is importable.

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
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .checks import CheckError
from .kernels.cjit import compile_c

__all__ = [
    "BLOCK",
    "REFERENCE_SRC",
    "KERNEL_SIGNATURE",
    "lab_flags",
    "bind_kernel",
    "compile_kernel",
    "reference_kernel",
    "helpers_kernel",
    "GemvProblem",
    "gemv_problem",
    "bench_problem",
    "check_kernel",
    "run_kernel",
    "time_kernels",
    "gops",
    "quantize_activation",
    "Fp32Gemv",
    "W4A8Gemv",
    "EdgeLlama",
    "w4a8_reference_model",
    "greedy",
    "compare_decode",
    "chat_prompt_ids",
    "measure_decode",
    "measure_llama_cpp",
]

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


@functools.lru_cache(maxsize=None)
def helpers_kernel(variant: str = "all") -> Callable:
    """The engine's optimized kernel from :mod:`helpers.kernels.int4`."""
    from .kernels.cjit import compile_file
    return bind_kernel(compile_file("int4_gemv.c"), variant)


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


# ---------------------------------------------------------------- GEMV backends

def quantize_activation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per block of 32 along the last dim of float32 ``x [T, K]``:
    ``(xq int8 [T, K_pad], xs float32 [T, K_pad/32])``, bit-identical to
    :func:`helpers.kernels.int4.quantize_activation_int8` (numpy: cheaper per call)."""
    t, k = x.shape
    pad = (-k) % BLOCK
    if pad:
        x = np.pad(x, ((0, 0), (0, pad)))
    blocks = x.reshape(t, -1, BLOCK)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127.0)
    inv = np.divide(np.float32(1.0), scale, out=np.zeros_like(scale), where=scale != 0)
    xq = np.clip(np.rint(blocks * inv), -127, 127).astype(np.int8)
    return xq.reshape(t, -1), scale.reshape(t, -1)


class Fp32Gemv:
    """fp32 weights, ``y = x W^T`` with numpy (BLAS)."""

    def prepare(self, w) -> np.ndarray:
        return np.ascontiguousarray(w.detach().float().numpy())

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x @ w.T


@dataclass
class _W4Handle:
    n: int
    k: int           # unpadded input features
    k_padded: int
    codes: np.ndarray
    scales: np.ndarray
    ptrs: tuple[int, int] = field(init=False)

    def __post_init__(self):
        self.ptrs = (self.codes.ctypes.data, self.scales.ctypes.data)


class W4A8Gemv:
    """int4 weights (quantized once by :func:`helpers.kernels.int4.quantize_weight_int4`),
    int8 activations quantized per call, one C kernel call per row of ``x``.

    ``kernel`` is a bound ``gemv_int4_<variant>`` function (a student's, from
    :func:`compile_kernel`); the default is the helpers' ``all`` kernel.
    """

    def __init__(self, kernel: Callable | None = None, num_threads: int = 1):
        self.kernel = kernel if kernel is not None else helpers_kernel("all")
        self.num_threads = num_threads

    def prepare(self, w) -> _W4Handle:
        from .kernels.int4 import quantize_weight_int4
        packed = quantize_weight_int4(w)
        return _W4Handle(packed.n, packed.k, packed.k_padded, packed.codes.numpy(), packed.scales.numpy())

    def __call__(self, x: np.ndarray, h: _W4Handle) -> np.ndarray:
        xq, xs = quantize_activation(x)
        y = np.empty((x.shape[0], h.n), dtype=np.float32)
        for t in range(x.shape[0]):
            self.kernel(h.ptrs[0], h.ptrs[1], xq[t].ctypes.data, xs[t].ctypes.data, y[t].ctypes.data,
                        h.n, h.k_padded, self.num_threads)
        return y


# ---------------------------------------------------------------- the engine

@dataclass
class _Layer:
    ln1: np.ndarray
    qkv: Any          # q, k, v stacked along the output dim: one GEMV
    o: Any
    ln2: np.ndarray
    gate_up: Any      # gate and up stacked: one GEMV
    down: Any


class KVCache:
    """Keys and values of every layer, preallocated ``[layers, kv_heads, max_len, head_dim]``."""

    def __init__(self, n_layers: int, n_kv: int, max_len: int, head_dim: int):
        self.k = np.zeros((n_layers, n_kv, max_len, head_dim), dtype=np.float32)
        self.v = np.zeros_like(self.k)
        self.length = 0
        self.max_len = max_len


class EdgeLlama:
    """A minimal Llama (SmolLM2) forward in numpy where every linear layer is
    ``gemv(x, gemv.prepare(weight))``; the KV cache holds ``max_len`` positions."""

    def __init__(self, model, gemv, *, max_len: int = 1024):
        import torch

        cfg = model.config
        for name in ("attention_bias", "mlp_bias"):
            if getattr(cfg, name, False):
                raise NotImplementedError(f"EdgeLlama supports Llama without biases ({name}=True).")
        self.gemv = gemv
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.max_len = max_len
        inner = model.model
        f32 = lambda t: np.ascontiguousarray(t.detach().float().numpy())  # noqa: E731
        with torch.no_grad():
            self.embed = f32(inner.embed_tokens.weight)
            self.layers = []
            for layer in inner.layers:
                at, mlp = layer.self_attn, layer.mlp
                self.layers.append(_Layer(
                    ln1=f32(layer.input_layernorm.weight),
                    qkv=gemv.prepare(torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight])),
                    o=gemv.prepare(at.o_proj.weight),
                    ln2=f32(layer.post_attention_layernorm.weight),
                    gate_up=gemv.prepare(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
                    down=gemv.prepare(mlp.down_proj.weight)))
            self.norm = f32(inner.norm.weight)
            self.lm_head = gemv.prepare(model.lm_head.weight)
            self.cos, self.sin = self._rope_tables(model, max_len)

    @staticmethod
    def _rope_tables(model, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        # Take cos/sin from the model's own rotary embedding: same frequencies,
        # same fp32 rounding as transformers.
        import torch
        rot = model.model.rotary_emb
        pos = torch.arange(max_len).unsqueeze(0)
        cos, sin = rot(torch.zeros(1, dtype=torch.float32), pos)
        return cos[0].float().numpy(), sin[0].float().numpy()

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers), self.n_kv, self.max_len, self.head_dim)

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return w * (x * (np.float32(1.0) / np.sqrt(var + np.float32(self.eps))))

    def _rope(self, x: np.ndarray, pos: slice) -> np.ndarray:
        # x [heads, T, d]; rotate_half as transformers: (-x2, x1)
        half = self.head_dim // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * self.cos[pos] + rot * self.sin[pos]

    def forward(self, token_ids: Sequence[int], cache: KVCache, *, all_logits: bool = False) -> np.ndarray:
        """Run ``T`` new tokens (a prompt, or one token when decoding) after the
        ``cache.length`` cached ones; returns the logits of the last token
        ``[vocab]`` (or of every new token ``[T, vocab]``)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        t, start = len(ids), cache.length
        if start + t > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} positions; {start} + {t} tokens do not fit "
                             "(make the engine with a larger max_len).")
        h, nq, nkv = self.head_dim, self.n_heads, self.n_kv
        pos = slice(start, start + t)
        group = nq // nkv
        # causal mask of the new queries over cached + new keys
        mask = np.triu(np.full((t, start + t), -np.inf, dtype=np.float32), k=start + 1)
        x = self.embed[ids]
        for i, layer in enumerate(self.layers):
            qkv = self.gemv(self._rms(x, layer.ln1), layer.qkv)
            q = qkv[:, :nq * h].reshape(t, nq, h).transpose(1, 0, 2)
            k = qkv[:, nq * h:(nq + nkv) * h].reshape(t, nkv, h).transpose(1, 0, 2)
            v = qkv[:, (nq + nkv) * h:].reshape(t, nkv, h).transpose(1, 0, 2)
            cache.k[i, :, pos] = self._rope(k, pos)
            cache.v[i, :, pos] = v
            q = self._rope(q, pos).reshape(nkv, group * t, h)     # query heads grouped by their kv head
            keys, values = cache.k[i, :, :start + t], cache.v[i, :, :start + t]
            scores = (q @ keys.transpose(0, 2, 1)) / np.float32(np.sqrt(h))
            scores = scores.reshape(nkv, group, t, start + t) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = (scores / scores.sum(-1, keepdims=True)).reshape(nkv, group * t, start + t)
            att = (probs @ values).reshape(nq, t, h).transpose(1, 0, 2).reshape(t, nq * h)
            x = x + self.gemv(att, layer.o)
            gu = self.gemv(self._rms(x, layer.ln2), layer.gate_up)
            gate, up = gu[:, :gu.shape[1] // 2], gu[:, gu.shape[1] // 2:]
            x = x + self.gemv(gate / (1 + np.exp(-gate)) * up, layer.down)
        cache.length = start + t
        x = self._rms(x if all_logits else x[-1:], self.norm)
        logits = self.gemv(x, self.lm_head)
        return logits if all_logits else logits[0]


# ---------------------------------------------------------------- torch reference

def _reference_linear_cls():
    import torch

    class W4A8ReferenceLinear(torch.nn.Module):
        """``nn.Linear`` doing the kernels' W4A8 arithmetic in torch: the int4
        weight of ``quantize_weight_int4`` dequantized once, the activation
        quantized per call by ``quantize_activation_int8`` (int8 per block of
        32) and dequantized, then an fp32 matmul: the quantized values of the
        kernels, only the rounding of the fp32 arithmetic differs."""

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            from .kernels.int4 import dequantize_int4, quantize_weight_int4
            packed = quantize_weight_int4(linear.weight)
            self.n = packed.n
            w = torch.zeros(packed.n, packed.k_padded)
            w[:, :packed.k] = dequantize_int4(packed)
            self.register_buffer("weight", w)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            from .kernels.int4 import quantize_activation_int8
            lead = x.shape[:-1]
            xq, xs = quantize_activation_int8(x.reshape(-1, x.shape[-1]))
            xd = (xq.reshape(xq.shape[0], -1, BLOCK).float() * xs.unsqueeze(-1)).reshape(xq.shape[0], -1)
            return (xd @ self.weight.T).reshape(*lead, self.n)

    return W4A8ReferenceLinear


def w4a8_reference_model(model):
    """The transformers model with every linear layer (lm_head included)
    doing the W4A8 arithmetic of the kernels in torch. A new module tree that
    shares the other parameters with ``model`` (which is left unchanged)."""
    import copy
    import torch

    ref = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
    cls = _reference_linear_cls()
    with torch.no_grad():
        for parent in list(ref.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, cls(child))
    return ref.eval()


class _Decoder:
    """Greedy decoding one token at a time, with an :class:`EdgeLlama` or a
    transformers model (each with its own KV cache)."""

    def __init__(self, model, prompt_ids: Sequence[int]):
        self.model = model
        if isinstance(model, EdgeLlama):
            self.cache = model.new_cache()
            self.last = int(np.argmax(model.forward(prompt_ids, self.cache)))
        else:
            import torch
            with torch.no_grad():
                out = model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
            self.cache, self.last = out.cache, int(out.logits[0, -1].argmax())

    def step(self) -> int:
        if isinstance(self.model, EdgeLlama):
            self.last = int(np.argmax(self.model.forward([self.last], self.cache)))
        else:
            import torch
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([[self.last]]), cache=self.cache, use_cache=True)
            self.cache, self.last = out.cache, int(out.logits[0, -1].argmax())
        return self.last


def greedy(model, prompt_ids: Sequence[int], n_new: int, *, eos_id: int | None = None) -> list[int]:
    """The first ``n_new`` greedy tokens after the prompt (fewer if ``eos_id``
    comes), from an :class:`EdgeLlama` or a transformers model."""
    dec = _Decoder(model, prompt_ids)
    out = [dec.last]
    while len(out) < n_new and out[-1] != eos_id:
        out.append(dec.step())
    return out


def compare_decode(models: dict[str, Any], prompt_ids: Sequence[int], n_tokens: int, *,
                   num_threads: int | None = None, progress: bool = False) -> dict[str, dict]:
    """Decode ``n_tokens`` greedy tokens with every model, one step of each in
    turn, so all see the same machine load; returns per name ``{"tokens",
    "tokens_per_s", "ms_per_token"}`` from the median step time (a step
    slowed down by another process does not count). Prefill is not timed;
    end-of-sequence does not stop decoding. ``num_threads`` caps the BLAS
    and OpenMP thread pools (numpy, torch) meanwhile, so the fp32 models get
    the threads the int4 kernel gets."""
    from contextlib import nullcontext
    from threadpoolctl import threadpool_limits
    with threadpool_limits(num_threads) if num_threads else nullcontext():
        return _compare_decode(models, prompt_ids, n_tokens, progress)


def _compare_decode(models, prompt_ids, n_tokens, progress):
    decoders = {name: _Decoder(m, prompt_ids) for name, m in models.items()}
    tokens = {name: [d.last] for name, d in decoders.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    steps = range(n_tokens - 1)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="decode " + " / ".join(models), leave=False)
    for _ in steps:
        for name, dec in decoders.items():
            t0 = time.perf_counter()
            tokens[name].append(dec.step())
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in models:
        ms = 1e3 * float(np.median(times[name])) if times[name] else float("nan")
        out[name] = {"tokens": tokens[name], "ms_per_token": ms, "tokens_per_s": 1e3 / ms}
    return out


def chat_prompt_ids(tokenizer, message: str) -> list[int]:
    """Token ids of a one-turn chat with the model's chat template."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- tokens/s

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."


@functools.lru_cache(maxsize=1)
def _smollm2():
    from .data import load_smollm2
    return load_smollm2()


def measure_decode(n_tokens: int = 32, variant: str = "w4", *, prompt: str = DEFAULT_PROMPT,
                   num_threads: int = 1, kernel: Callable | None = None) -> dict:
    """Greedy-decode ``n_tokens`` with SmolLM2; returns ``{"variant",
    "tokens_per_s", "ms_per_token", "tokens"}`` (median decode step, prompt
    prefilled first and not timed).

    ``variant``: ``"fp32"`` (this engine, numpy BLAS), ``"w4"`` (this engine,
    int4 C kernel ``kernel``, default the helpers' ``all``, run with
    ``num_threads``), ``"transformers"`` (the fp32 transformers model).
    Every variant runs with ``num_threads`` threads.
    """
    if n_tokens < 2:
        raise ValueError("n_tokens must be >= 2 (the first token comes from the prefill).")
    model, tokenizer = _smollm2()
    ids = chat_prompt_ids(tokenizer, prompt)
    if variant == "transformers":
        runner = model
    elif variant in ("fp32", "w4"):
        gemv = Fp32Gemv() if variant == "fp32" else W4A8Gemv(kernel, num_threads=num_threads)
        runner = EdgeLlama(model, gemv, max_len=len(ids) + n_tokens)
    else:
        raise ValueError(f"variant must be 'fp32', 'w4' or 'transformers', got {variant!r}")
    return {"variant": variant, **compare_decode({variant: runner}, ids, n_tokens, num_threads=num_threads)[variant]}


def measure_llama_cpp(n_tokens: int = 32, *, prompt: str = DEFAULT_PROMPT, n_threads: int = 2) -> dict:
    """llama.cpp's decode tokens/s on the same GGUF file, through
    llama-cpp-python: ``{"tokens_per_s", ...}``, or ``{"skipped": reason}``
    where it is not importable."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        return {"skipped": f"llama-cpp-python is not importable ({exc}); `pip install llama-cpp-python` "
                           "(it builds llama.cpp from source) to compare"}
    from .data import smollm2_gguf_path
    llm = Llama(model_path=str(smollm2_gguf_path()), n_threads=n_threads, n_ctx=512, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=True)
    llm.eval(ids)                                     # prefill, not timed
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        token = llm.sample(temp=0.0)
        llm.eval([token])
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": n_tokens / seconds, "ms_per_token": 1e3 * seconds / n_tokens,
            "n_threads": n_threads}


def target_note(value: float, target: float, what: str, hint: str | None = None) -> bool:
    """Print how a measured speed compares with the lab's target. Speed is
    shown, never asserted, in the notebook: a busy machine must not fail a
    correct kernel (grading compares with the reference kernel in one run)."""
    if value >= target:
        print(f"  {what}: {value:.2f}x, target >= {target:g}x met")
        return True
    print(f"  {what}: {value:.2f}x, below the target of {target:g}x on this machine"
          + (f" (hint: {hint})" if hint else "") + "; a busy machine also slows kernels down")
    return False
