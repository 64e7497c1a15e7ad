"""Lab 07's graded checks, run by the grader against the student's notebook
(``autograder.trusted``); never released to students.

The student's kernels are C sources in string variables (``UNROLL_SRC``,
``MULTITHREAD_SRC``, ``SIMD_SRC``, ``ALL_SRC``). The grader reads them with
``student.source`` and never compiles or loads them in its own process: each
check sends the source to ``run_jailed``, a fresh jail (the grading sandbox's
settings) where a small script (``_JAIL_SCRIPT``) compiles it with
``helpers.kernels.cjit`` and the lab's flags, runs it on seeded problems,
times it and prints what it got as JSON. Everything that decides a score
happens here: the exact answers come from ``helpers.llm_edge.gemv_problem``
computed in this process, the greedy tokens and logits of Task 2.1 from the
decode engine with a numpy W4A8 GEMV (no C) on a tiny seeded Llama.

Speed is never measured against a fixed threshold: each timing is the
student's kernel against the course's solution of the same technique
(read from the solution notebook next to this file), interleaved in the same
jailed run, best of many calls; the student's must reach ``SPEED_FLOOR`` of
the solution's speed, a bar the solution meets with a wide margin on a busy
2-core machine. Whether a kernel really uses its threads is checked on CPU
time (the calling thread's share of the process's), which a busy machine
does not change.
"""
from __future__ import annotations

import ast
import functools
import json
import platform
from pathlib import Path

import numpy as np

from autograder.trusted import run_jailed, task
from helpers.checks import CheckError, check, check_close
from helpers.gemv_harness import gemv_problem, REFERENCE_SRC

SOLUTION_NOTEBOOK = Path(__file__).resolve().parent / "lab07_llm_edge.ipynb"
SPEED_FLOOR = 0.5        # the student's kernel must run at >= this fraction of the solution's speed
THREAD_SHARE_MAX = 0.8   # a multithreaded kernel: the calling thread does at most this share of the CPU work
BENCH = (4096, 2048)     # the timing layer of the lab (bench_problem)
X86 = platform.machine() in ("x86_64", "AMD64")
NO_AVX2 = ["-mno-avx2", "-mno-avx512f"]
JAIL_TIMEOUT = 180       # seconds per jailed run (about 5-20 s when all is well)

# The tiny Llama of Task 2.1, built the same way here (the reference tokens)
# and in the jail (the student's kernel in the engine).
_TINY_LLAMA = r'''
def tiny_llama():
    # SmolLM2-135M's layer shapes (hidden 576, MLP 1536, 9 query heads of 64 on 3 kv heads: GEMVs of
    # 576 to 4096 rows with K = 576 and 1536) in 2 layers with a 4096-token vocabulary, the weights drawn
    # from numpy's generator with a fixed seed: the object EdgeLlama reads a transformers Llama through
    # (config, weights, rotary embedding), without transformers. Linear layers of std 0.5 / sqrt(K) and
    # an untied output layer: greedy tokens change at every step, yet a few float32 roundings in a GEMV
    # (another summation order) move the logits by at most about 0.2% of the largest one, far less than
    # int4 quantization does (about 10%) or a wrong kernel.
    import types
    import numpy as np
    import torch
    V, H, I, L, NH, NKV, D = 4096, 576, 1536, 2, 9, 3, 64
    rng = np.random.default_rng(7)
    ns = types.SimpleNamespace

    def w(*shape, std=0.1, mean=0.0):
        return torch.from_numpy(np.float32(mean) + rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def lin(n, k):
        return ns(weight=w(n, k, std=0.5 / np.sqrt(k)))

    layers = [ns(input_layernorm=ns(weight=w(H, mean=1.0)), post_attention_layernorm=ns(weight=w(H, mean=1.0)),
                 self_attn=ns(q_proj=lin(NH * D, H), k_proj=lin(NKV * D, H), v_proj=lin(NKV * D, H),
                              o_proj=lin(H, NH * D)),
                 mlp=ns(gate_proj=lin(I, H), up_proj=lin(I, H), down_proj=lin(H, I)))
              for _ in range(L)]
    embed, head = w(V, H, std=1.0), w(V, H)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))

    def rotary(x, pos):
        freqs = pos[0].float()[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos()[None], emb.sin()[None]

    cfg = ns(num_attention_heads=NH, num_key_value_heads=NKV, head_dim=D, hidden_size=H, rms_norm_eps=1e-5)
    inner = ns(embed_tokens=ns(weight=embed), layers=layers, norm=ns(weight=w(H, mean=1.0)), rotary_emb=rotary)
    return ns(config=cfg, model=inner, lm_head=ns(weight=head))


def weights_sum(model):
    inner = model.model
    tensors = [inner.embed_tokens.weight, inner.norm.weight, model.lm_head.weight] + [
        t.weight for layer in inner.layers for t in (
            layer.input_layernorm, layer.post_attention_layernorm, layer.self_attn.q_proj, layer.self_attn.k_proj,
            layer.self_attn.v_proj, layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
            layer.mlp.down_proj)]
    return float(sum(float(t.double().sum()) for t in tensors))
'''

_JAIL_SCRIPT = r'''
import json, math, os, sys, time
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before OpenMP starts: idle workers sleep, they do not spin
# The answer goes to a private copy of stdout; whatever the kernels print (printf) goes to stderr.
ANSWER = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
import numpy as np
from helpers import edge_llama, gemv_harness
from helpers.checks import CheckError
from helpers.kernels.cjit import CompileError, compile_c

job = json.load(sys.stdin)
out = {}


def step(text):  # the last one is what a crash report shows
    print(f"(while {text})", file=sys.stderr, flush=True)


def finish(**kw):
    out.update(kw)
    ANSWER.write(json.dumps(out) + "\n")
    ANSWER.flush()
    sys.exit(0)


def cpu_seconds():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


kernels = {}
for name, b in job["builds"].items():
    step(f"compiling {name}")
    try:
        lib = compile_c(b["source"], name=f"lab07_{b['variant']}_{name}",
                        extra_flags=(*gemv_harness.lab_flags(), *b.get("flags", [])))
        kernels[name] = gemv_harness.bind_kernel(lib, b["variant"], task=job["task"])
    except (CompileError, CheckError) as exc:
        finish(error=str(exc), build=name)

runs, wrong = [], False
for r in job.get("runs", []):
    p = gemv_harness.gemv_problem(r["n"], r["k"], r["seed"])
    ys = []
    for _ in range(r["repeats"]):
        step(f"running gemv_int4_{job['variant']} with n={r['n']}, k={r['k']}, num_threads={r['threads']}"
             + (", built without AVX2" if r["build"] == "student_noavx2" else ""))
        y = gemv_harness.run_kernel(kernels[r["build"]], p, r["threads"])
        scale = float(np.abs(p.y_ref).max()) or 1.0
        wrong = wrong or not np.allclose(y, p.y_ref, rtol=1e-4, atol=1e-5 * scale)
        ys.append(y.tolist())
    runs.append(ys)
out["runs"] = runs
if wrong:  # the grader will say what is wrong: no need to time it
    finish()

if "threads" in job:  # the calling thread's CPU time against the whole process's, per batch of calls
    t = job["threads"]
    p = gemv_harness.gemv_problem(t["n"], t["k"], 0)
    y = np.empty(p.n, dtype=np.float32)
    args = (p.codes.ctypes.data, p.scales.ctypes.data, p.xq.ctypes.data, p.xs.ctypes.data, y.ctypes.data, p.n, p.k)
    fn = kernels[t["build"]]
    step(f"running gemv_int4_{job['variant']} with num_threads={t['threads']} (thread use)")
    fn(*args, t["threads"])
    batches, start = [], time.perf_counter()
    while True:
        c0, p0 = time.thread_time(), cpu_seconds()
        for _ in range(t["calls"]):
            fn(*args, t["threads"])
        c1, p1 = time.thread_time(), cpu_seconds()
        batches.append([c1 - c0, p1 - p0])
        share = min(c / max(pt, 1e-9) for c, pt in batches)
        if len(batches) >= t["min_batches"] and (share <= t["until"] or time.perf_counter() - start > t["budget_s"]):
            break
    out["thread_cpu"] = batches

if "timing" in job:
    tm = job["timing"]
    p = gemv_harness.gemv_problem(tm["n"], tm["k"], 0)
    mine, theirs, floor = tm["until"]
    step(f"timing gemv_int4_{job['variant']}")
    best = gemv_harness.time_kernels({label: (kernels[b], th) for label, (b, th) in tm["kernels"].items()}, p,
                                 min_repeats=tm["min_repeats"], budget_s=tm["budget_s"],
                                 until=lambda best: best[theirs] >= floor * best[mine])
    out["timing"] = best

if "decode" in job:
    import copy
    import torch
    from threadpoolctl import threadpool_limits
    d = job["decode"]
    with threadpool_limits(1):
        torch.set_num_threads(1)
        step("building the tiny Llama")
        model = tiny_llama()
        out["weights_sum"] = weights_sum(model)
        engine = edge_llama.EdgeLlama(model, edge_llama.W4A8Gemv(kernels["student"], num_threads=1),
                                    max_len=d["max_len"])
        cases = []
        for ids, forced in d["cases"]:
            step("decoding with gemv_int4_all in the engine")
            cache = engine.new_cache()
            logits = [engine.forward(ids, cache)]
            for token in forced[:-1]:
                logits.append(engine.forward([token], cache))
            cases.append([l.tolist() for l in logits])
        out["decode"] = cases
        solution = copy.copy(engine)  # the same int4 weights, the solution's kernel
        solution.gemv = edge_llama.W4A8Gemv(kernels["solution"], num_threads=1)
        step("timing decode steps")
        state = {}
        for name, eng in (("yours", engine), ("solution", solution)):
            cache = eng.new_cache()
            state[name] = [eng, cache, int(np.argmax(eng.forward(d["speed_ids"], cache)))]
        best = {name: math.inf for name in state}
        for _ in range(d["speed_steps"]):
            for name, s in state.items():
                t0 = cpu_seconds()
                s[2] = int(np.argmax(s[0].forward([s[2]], s[1])))
                best[name] = min(best[name], cpu_seconds() - t0)
        out["decode_s"] = best

finish()
'''


# ---------------------------------------------------------------- the solution's kernels

@functools.lru_cache(maxsize=1)
def _solution_sources() -> dict[str, str]:
    """``{"UNROLL_SRC": ..., ...}``: the string constants the solution
    notebook's code cells assign (read with ``ast``, nothing executed)."""
    nb = json.loads(SOLUTION_NOTEBOOK.read_text())
    found = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.endswith("_SRC"):
                        found[target.id] = node.value.value
    return found


def _solution(name: str) -> str:
    src = _solution_sources().get(name)
    if not src:
        raise RuntimeError(f"{SOLUTION_NOTEBOOK} assigns no {name}")
    return src


# ---------------------------------------------------------------- one jailed run

def _run(task_no: str, variant: str, student_src: str, solution_src: str, *, runs=(), threads=None,
         timing=None, decode=None, no_avx2: bool = False) -> dict:
    """Compile the solution, the student's source (and, with ``no_avx2`` on
    x86, the student's again without AVX2, and for a timing the scalar
    reference) in a jail, run what the job asks there and return its
    answer. The jail skips the timings once a result is wrong (it has the
    exact answers too); the grader checks every result itself."""
    check(isinstance(student_src, str) and student_src.strip(), f"the C source of gemv_int4_{variant} is empty",
          task=task_no)
    builds = {"solution": {"source": solution_src, "variant": variant},
              "student": {"source": student_src, "variant": variant}}
    if timing:
        builds["reference"] = {"source": REFERENCE_SRC, "variant": "reference"}
    if no_avx2 and X86:
        builds["student_noavx2"] = {"source": student_src, "variant": variant, "flags": NO_AVX2}
    job = {"task": task_no, "variant": variant, "builds": builds, "runs": list(runs)}
    if threads:
        job["threads"] = threads
    if timing:
        job["timing"] = timing
    if decode:
        job["decode"] = decode
    script = (_TINY_LLAMA if decode else "") + _JAIL_SCRIPT
    got = run_jailed(script, job, timeout=JAIL_TIMEOUT)
    check(isinstance(got, dict), "your code's isolated run gave an unreadable answer", task=task_no)
    if "error" in got:
        build = got.get("build")
        if not str(build).startswith("student"):
            raise RuntimeError(f"the course's {build} kernel did not build: {got['error']}")
        where = " (built without AVX2, as for a CPU without it)" if build == "student_noavx2" else ""
        raise CheckError(f"{got['error']}{where}" if str(got["error"]).startswith("Task ")
                         else f"Task {task_no}: {got['error']}{where}")
    return got


def _field(got: dict, key: str, task_no: str):
    if key not in got:
        raise CheckError(f"Task {task_no}: your code's isolated run gave no `{key}` (did it stop early?)")
    return got[key]


def _case(n, k, seed, threads=1, repeats=1, build="student"):
    return {"n": n, "k": k, "seed": seed, "threads": threads, "repeats": repeats, "build": build}


def _cases(shapes, seed, **kw):
    return [_case(n, k, seed + i, **kw) for i, (n, k) in enumerate(shapes)]


def _check_runs(got: dict, cases: list[dict], task_no: str) -> None:
    """The answers of every run against the exact W4A8 sums computed here
    (the messages of ``helpers.llm_edge.check_kernel``)."""
    runs = _field(got, "runs", task_no)
    check(isinstance(runs, list) and len(runs) == len(cases), "your code's isolated run gave malformed results",
          task=task_no)
    for case, ys in zip(cases, runs):
        n, k = case["n"], case["k"]
        p = gemv_problem(n, k, case["seed"])
        build = ", built without AVX2" if case["build"] == "student_noavx2" else ""
        where = f"n={n}, k={k}, num_threads={case['threads']}{build}"
        try:
            ys = [np.asarray(y, dtype=np.float64) for y in ys]
        except (TypeError, ValueError):
            raise CheckError(f"Task {task_no}: your code's isolated run gave malformed results ({where})") from None
        check(len(ys) == case["repeats"] and all(y.shape == (n,) for y in ys),
              f"your code's isolated run gave malformed results ({where})", task=task_no)
        first = None
        for r, y in enumerate(ys):
            missing = np.flatnonzero(np.isnan(y))
            if missing.size == n:
                raise CheckError(f"Task {task_no}: with {where} the kernel wrote no element of y. Does every path "
                                 "of its #if / #elif / #else compute y (the scalar fallback too)?")
            if missing.size:
                rows = ", ".join(map(str, missing[:8])) + (" ..." if missing.size > 8 else "")
                raise CheckError(f"Task {task_no}: with {where} the kernel never wrote y[{rows}] ({missing.size} of "
                                 f"{n} rows). Does it handle every row: the n % 4 left over after an unrolled loop, "
                                 "each thread's share?")
            if first is not None and not np.array_equal(y, first, equal_nan=True):
                raise CheckError(f"Task {task_no}: with {where} two runs on the same input gave different results "
                                 f"(run 1 and run {r + 1} differ in {int(np.sum(y != first))} rows): a data race. "
                                 "Is a variable shared by the threads that each thread should have to itself "
                                 "(an accumulator declared outside the parallel loop)?")
            first = y
            scale = float(np.abs(p.y_ref).max()) or 1.0
            check_close(y, p.y_ref, name=f"y ({where})", task=task_no, rtol=1e-4, atol=1e-5 * scale,
                        hint="compare with gemv_int4_reference: zero point 8 (code - 8), one scale per (row, block "
                             "of 32) for the weights and per block for the activations, the low nibble of byte j "
                             "is column 32*b + j and the high nibble column 32*b + 16 + j; k need not be a "
                             "multiple of 64")


def _seconds(best: dict, label: str, task_no: str) -> float:
    try:
        s = float(best[label])
    except (KeyError, TypeError, ValueError):
        raise CheckError(f"Task {task_no}: your code's isolated run gave no timing") from None
    check(np.isfinite(s), "your code's isolated run gave no timing", task=task_no)
    return max(s, 1e-7)


def _check_speed(got: dict, variant: str, task_no: str, threads: int, hint: str) -> None:
    best = _field(got, "timing", task_no)
    check(isinstance(best, dict), "your code's isolated run gave no timing", task=task_no)
    mine, theirs, ref = (_seconds(best, x, task_no) for x in ("yours", "solution", "reference"))
    on = f" on {threads} threads" if threads > 1 else ""
    check(theirs / mine >= SPEED_FLOOR,
          f"gemv_int4_{variant}{on} runs at {theirs / mine:.2f}x the speed of the course's solution of the same "
          f"technique (timed in turns in the same run on a {BENCH[0] if variant != 'multithread' else 1024} x "
          f"{BENCH[1]} layer: yours {mine * 1e3:.3f} ms, the solution's {theirs * 1e3:.3f} ms, the scalar "
          f"reference {ref * 1e3:.3f} ms, i.e. {ref / mine:.2f}x the reference); at least {SPEED_FLOOR:g}x is "
          "required", task=task_no, hint=hint)


def _check_threads(got: dict, variant: str, task_no: str, threads: int) -> None:
    batches = _field(got, "thread_cpu", task_no)
    try:
        shares = [float(c) / max(float(p), 1e-9) for c, p in batches]
    except (TypeError, ValueError):
        raise CheckError(f"Task {task_no}: your code's isolated run gave malformed results") from None
    check(shares, "your code's isolated run gave malformed results", task=task_no)
    share = min(shares)
    check(share <= THREAD_SHARE_MAX,
          f"with num_threads={threads}, gemv_int4_{variant} did {100 * min(share, 1):.0f}% of its CPU work on the "
          f"thread that called it: it does not run on {threads} threads (a kernel that shares its rows among 2 "
          f"threads does about 50% there; at most {100 * THREAD_SHARE_MAX:.0f}% is accepted)", task=task_no,
          hint="pass num_threads to OpenMP (`#pragma omp parallel for num_threads(num_threads)`) or start "
               "num_threads - 1 pthreads; OMP_NUM_THREADS may be 1 where the tests run")


def _timing(n: int, threads: int, budget_s: float) -> dict:
    return {"n": n, "k": BENCH[1], "min_repeats": 5, "budget_s": budget_s,
            "until": ["yours", "solution", SPEED_FLOOR],
            "kernels": {"reference": ["reference", 1], "solution": ["solution", threads],
                        "yours": ["student", threads]}}


# ---------------------------------------------------------------- Part 1

@task("task_1_1_unroll")
def unroll(student):
    src = student.source("UNROLL_SRC")
    cases = [_case(64, 256, 1)] + _cases([(67, 96), (5, 32), (130, 800), (1, 2048), (1003, 576), (6, 1056)], 11)
    got = _run("1.1", "unroll", src, _solution("UNROLL_SRC"), runs=cases, timing=_timing(BENCH[0], 1, 2.0))
    _check_runs(got, cases, "1.1")
    _check_speed(got, "unroll", "1.1", 1, "share each activation load between four rows and unroll the byte loop")


@task("task_1_2_multithread")
def multithread(student):
    src = student.source("MULTITHREAD_SRC")
    cases = ([_case(64, 256, 2, threads=2, repeats=3)]
             + _cases([(67, 96), (1003, 576), (3, 64)], 120, threads=2, repeats=5)
             + _cases([(131, 800), (4099, 256)], 130, threads=3, repeats=5)
             + [_case(77, 160, 140, threads=0), _case(77, 160, 150, threads=1), _case(1, 64, 160, threads=2)])
    threads = {"build": "student", "n": 1024, "k": BENCH[1], "threads": 2, "calls": 8, "min_batches": 3,
               "until": THREAD_SHARE_MAX * 0.75, "budget_s": 2.0}
    got = _run("1.2", "multithread", src, _solution("MULTITHREAD_SRC"), runs=cases, threads=threads,
               timing=_timing(1024, 2, 3.0))
    _check_runs(got, cases, "1.2")
    _check_threads(got, "multithread", "1.2", 2)
    _check_speed(got, "multithread", "1.2", 2, "each thread takes a contiguous share of the rows")


@task("task_1_3_simd")
def simd(student):
    src = student.source("SIMD_SRC")
    intrinsics = "_mm256_" if X86 else "vld1q"
    check(intrinsics in src, task="1.3",
          message="SIMD_SRC uses no " + ("AVX2 (_mm256_*)" if X86 else "NEON (vld1q_*)") + " intrinsics.",
          hint="the kernels compile with auto-vectorization off: the SIMD must be yours")
    cases = ([_case(64, 256, 3)] + _cases([(67, 96), (5, 32), (130, 800), (2, 2080), (1003, 576)], 21)
             + (_cases([(67, 96), (130, 800), (5, 32)], 22, build="student_noavx2") if X86 else []))
    got = _run("1.3", "simd", src, _solution("SIMD_SRC"), runs=cases, timing=_timing(BENCH[0], 1, 2.0), no_avx2=True)
    _check_runs(got, cases, "1.3")
    _check_speed(got, "simd", "1.3", 1, "one block is one 256-bit register: 32 multiply-adds per maddubs")


@task("task_1_4_all")
def all_together(student):
    src = student.source("ALL_SRC")
    cases = ([_case(64, 256, 4, threads=2, repeats=3)]
             + _cases([(67, 96), (5, 32), (1003, 576), (130, 800)], 31, threads=2, repeats=4)
             + _cases([(4099, 256), (9, 2080)], 41, threads=3, repeats=4)
             + [_case(77, 160, 51, threads=0), _case(77, 160, 52, threads=1), _case(3, 64, 53, threads=2)]
             + (_cases([(67, 96), (130, 800)], 61, threads=2, build="student_noavx2") if X86 else []))
    threads = {"build": "student", "n": BENCH[0], "k": BENCH[1], "threads": 2, "calls": 20, "min_batches": 3,
               "until": THREAD_SHARE_MAX * 0.75, "budget_s": 2.0}
    got = _run("1.4", "all", src, _solution("ALL_SRC"), runs=cases, threads=threads,
               timing=_timing(BENCH[0], 2, 3.0), no_avx2=True)
    _check_runs(got, cases, "1.4")
    _check_threads(got, "all", "1.4", 2)
    _check_speed(got, "all", "1.4", 2, "SIMD blocks, four rows per iteration, rows shared among the threads")


# ---------------------------------------------------------------- Part 2

PROMPTS = ([3, 17, 99, 42, 5, 150, 7, 64, 23, 88, 11, 2], [2001, 4000, 77, 310, 1290, 12, 3333])
N_TOKENS = (10, 6)
SPEED_STEPS = 12
MARGIN = 0.01   # steps whose top-2 logits are closer than this (x the largest logit) are ambiguous
LOGIT_TOL = 0.01  # the student's logits within this (x the largest logit) of the expected ones


class _NumpyW4A8:
    """The W4A8 GEMV of every kernel in numpy, no C: the int4 codes and
    scales of ``quantize_weight_int4``, the int8 activations of
    ``quantize_activation``, exact integer block sums (float32 products of
    small integers are exact), one float32 multiply-add per block. In the
    engine it gives the logits a correct kernel gives, to a few float32
    roundings. (The lab's torch reference, ``w4a8_reference_model``, rounds
    its attention differently, which moves some activations to the next
    int8 step: its logits differ from the engine's by about 1%.)"""

    def prepare(self, w):
        from helpers.kernels.int4 import quantize_weight_int4
        from helpers.gemv_harness import _unpack

        packed = quantize_weight_int4(w)
        q = _unpack(packed.codes.numpy()).astype(np.float32) - 8        # [n, k_padded]
        nb = q.shape[1] // 32
        return np.ascontiguousarray(q.reshape(packed.n, nb, 32).transpose(1, 2, 0)), packed.scales.numpy()

    def __call__(self, x, handle):
        from helpers.edge_llama import quantize_activation

        q, scales = handle                                               # [nb, 32, n], [n, nb]
        xq, xs = quantize_activation(x)                                  # [t, nb * 32], [t, nb]
        xb = xq.reshape(x.shape[0], -1, 32).astype(np.float32)
        y = np.zeros((x.shape[0], q.shape[2]), dtype=np.float32)
        for b in range(q.shape[0]):
            y += (scales[:, b][None, :] * xs[:, b][:, None]) * (xb[:, b] @ q[b])
        return y


@functools.lru_cache(maxsize=1)
def _decode_reference():
    """The tiny Llama's weight checksum and, per prompt, the greedy tokens
    of the engine (``helpers.llm_edge.EdgeLlama``) with the numpy W4A8 GEMV
    (:class:`_NumpyW4A8`) and its logits at each step."""
    import torch

    from helpers.edge_llama import EdgeLlama

    ns: dict = {}
    exec(_TINY_LLAMA, ns)  # noqa: S102 - our own source, shared with the jail
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = ns["tiny_llama"]()
        engine = EdgeLlama(model, _NumpyW4A8(), max_len=64)
        cases = []
        for ids, n in zip(PROMPTS, N_TOKENS):
            cache = engine.new_cache()
            logits = [engine.forward(ids, cache)]
            tokens = [int(np.argmax(logits[-1]))]
            while len(tokens) < n:
                logits.append(engine.forward([tokens[-1]], cache))
                tokens.append(int(np.argmax(logits[-1])))
            cases.append((list(ids), tokens, np.asarray(logits, dtype=np.float64)))
    finally:
        torch.set_num_threads(torch_threads)
    return ns["weights_sum"](model), cases


@task("task_2_1_decode")
def decode(student):
    src = student.source("ALL_SRC")
    weights_sum, cases = _decode_reference()
    job = {"max_len": 64, "cases": [[ids, tokens] for ids, tokens, _ in cases],
           "speed_ids": PROMPTS[0], "speed_steps": SPEED_STEPS}
    got = _run("2.1", "all", src, _solution("ALL_SRC"), decode=job)
    theirs = _field(got, "weights_sum", "2.1")
    if not (isinstance(theirs, float) and abs(theirs - weights_sum) <= 1e-6 * max(1.0, abs(weights_sum))):
        raise RuntimeError(f"the jail built another tiny Llama (weight sum {theirs!r}, here {weights_sum!r})")
    steps = _field(got, "decode", "2.1")
    check(isinstance(steps, list) and len(steps) == len(cases), "your code's isolated run gave malformed results",
          task="2.1")
    model = ("(a 2-layer Llama with SmolLM2's layer shapes: GEMVs of 576 to 4096 rows with K = 576 and 1536, "
             "num_threads=1)")
    for c, ((ids, tokens, want), mine) in enumerate(zip(cases, steps)):
        what = "a first prompt" if c == 0 else "another prompt"
        try:
            mine = np.asarray(mine, dtype=np.float64)
        except (TypeError, ValueError):
            raise CheckError("Task 2.1: your code's isolated run gave malformed results") from None
        check(mine.shape == want.shape, "your code's isolated run gave malformed results", task="2.1")
        scale = float(np.abs(want).max())
        top2 = np.sort(want, axis=-1)[:, -2:]
        for i, token in enumerate(tokens):
            if top2[i, 1] - top2[i, 0] > MARGIN * scale and int(np.argmax(mine[i])) != token:
                raise CheckError(
                    f"Task 2.1: on {what}, greedy decoding with your gemv_int4_all gives token "
                    f"{int(np.argmax(mine[i]))} at step {i + 1} of {len(tokens)} where the exact W4A8 arithmetic "
                    f"gives {token} {model}\n  Hint: the kernel must reproduce the W4A8 arithmetic exactly; "
                    "run the Part 1 tests again")
        check_close(mine, want, name=f"the logits of each greedy step on {what} {model}", task="2.1", rtol=0,
                    atol=LOGIT_TOL * scale, hint="the kernel must reproduce the W4A8 arithmetic exactly")
    best = _field(got, "decode_s", "2.1")
    check(isinstance(best, dict), "your code's isolated run gave no timing", task="2.1")
    mine_s, theirs_s = _seconds(best, "yours", "2.1"), _seconds(best, "solution", "2.1")
    check(theirs_s / mine_s >= SPEED_FLOOR,
          f"decoding with your gemv_int4_all runs at {theirs_s / mine_s:.2f}x the speed of decoding with the "
          f"course's solution (the same engine and int4 weights, 1 thread, timed in turns: "
          f"{mine_s * 1e3:.1f} ms per token against {theirs_s * 1e3:.1f} ms); at least {SPEED_FLOOR:g}x is required",
          task="2.1", hint="is gemv_int4_all fast with num_threads=1? compare its GOPS in the table of Part 1")
