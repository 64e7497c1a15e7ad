"""Lab 07's trusted checks pass the reference solution, pass correct kernels
written differently, and fail the typical mistakes (run with
``pytest solutions/lab07_llm_edge`` or ``-m lab07_llm_edge``).

The checks compile and run the C sources in a jail of their own
(``autograder.trusted.run_jailed``; here, without ``$EFFML_SANDBOX``, a
subprocess): each case below costs a compile and a few seconds of timing.
"""
import platform

import pytest

from autograder.labtest import lab_tests

# Stand-ins for the locked set-up cells: the kernel helpers (no SmolLM2: the
# solution cells of Part 1 only compile and run kernels).
PREAMBLE = """
import os, platform
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
from helpers.gemv_harness import (REFERENCE_SRC, bench_problem, check_kernel, compile_kernel, gemv_problem, gops,
                                  reference_kernel, run_kernel, time_kernels)
QUICK, SEED = True, 0
"""
LAB = "lab07_llm_edge"
pytestmark = pytest.mark.lab07_llm_edge
X86 = platform.machine() in ("x86_64", "AMD64")

# The end of the unroll cell (compiles and runs the kernel): mistakes that
# would stop the cell there change the source string after it instead.
UNROLL_TAIL = ('unroll = compile_kernel(UNROLL_SRC, "unroll", task="1.1")\n_p = gemv_problem(64, 256)\n'
               'print("max |error| on a 64 x 256 problem:", np.abs(run_kernel(unroll, _p) - _p.y_ref).max())')

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # 1.1
    "unroll: the n % 4 tail rows forgotten": (
        "task_1_1_unroll_code", "    for (; row < n; row++)\n        y[row] = row_scalar(",
        "    for (; row < 0; row++)\n        y[row] = row_scalar(", "task_1_1_unroll"),
    "unroll: k taken as a multiple of 64 (byte loop over two blocks)": (
        "task_1_1_unroll_code", "const int nb = k / BLOCK, stride = k / 2;",
        "const int nb = (k / 64) * 2, stride = k / 2;", "task_1_1_unroll"),
    "unroll: the high nibble paired with the wrong activation": (
        "task_1_1_unroll_code",
        "i0 += ((w0[o + j + u] & 0x0F) - 8) * lo + ((w0[o + j + u] >> 4) - 8) * hi;",
        "i0 += ((w0[o + j + u] & 0x0F) - 8) * lo + ((w0[o + j + u] >> 4) - 8) * xl[j + u + 1];",
        "task_1_1_unroll"),
    "unroll: a much slower kernel (every row computed 8 times)": (
        "task_1_1_unroll_code", "    int row = 0;\n    /* Four rows",
        "    for (int again = 0; again < 7; again++)\n"
        "        for (int r = 0; r < n; r++)\n"
        "            y[r] = row_scalar(codes + (long)r * stride, scales + (long)r * nb, xq, xs, nb);\n"
        "    int row = 0;\n    /* Four rows", "task_1_1_unroll"),
    "unroll: a C syntax error": (
        "task_1_1_unroll_code", UNROLL_TAIL, 'UNROLL_SRC = UNROLL_SRC.replace("y[row] = acc0;", "y[row] = acc0")',
        "task_1_1_unroll"),
    "unroll: the function misnamed": (
        "task_1_1_unroll_code", UNROLL_TAIL,
        'UNROLL_SRC = UNROLL_SRC.replace("void gemv_int4_unroll(", "void gemv_int4_unrolled(")', "task_1_1_unroll"),
    # 1.2
    "multithread: the block loop parallelized, its sum shared (a data race)": (
        "task_1_2_multithread_code",
        "#pragma omp parallel for num_threads(num_threads) schedule(static)\n    for (int row = 0; row < n; row++) {\n"
        "        const uint8_t *w = codes + (long)row * (k / 2);\n        float acc = 0.0f;\n"
        "        for (int b = 0; b < nb; b++) {",
        "    for (int row = 0; row < n; row++) {\n"
        "        const uint8_t *w = codes + (long)row * (k / 2);\n        float acc = 0.0f;\n"
        "#pragma omp parallel for num_threads(num_threads)\n"
        "        for (int b = 0; b < nb; b++) {",
        "task_1_2_multithread"),
    "multithread: num_threads ignored (no threads)": (
        "task_1_2_multithread_code", "#pragma omp parallel for num_threads(num_threads) schedule(static)\n", "",
        "task_1_2_multithread"),
    "multithread: rows split by a chunk that drops the remainder": (
        "task_1_2_multithread_code",
        "#pragma omp parallel for num_threads(num_threads) schedule(static)\n    for (int row = 0; row < n; row++) {",
        "    const int chunk = n / num_threads;\n"
        "#pragma omp parallel for num_threads(num_threads) schedule(static)\n"
        "    for (int row = 0; row < chunk * num_threads; row++) {",
        "task_1_2_multithread"),
    # 1.3
    "simd: no intrinsics (the scalar loop)": (
        "task_1_3_simd_code", "#if defined(__AVX2__)\n        __m256 acc = _mm256_setzero_ps();",
        "#if 0\n        __m256 acc = _mm256_setzero_ps();", "task_1_3_simd"),
    "simd: zero point not subtracted": (
        "task_1_3_simd_code", "    return _mm256_sub_epi8(nib, _mm256_set1_epi8(8));\n}\n/* int8",
        "    return nib;\n}\n/* int8", "task_1_3_simd"),
    "simd: the nibble halves swapped (high nibbles first)": (
        "task_1_3_simd_code", "_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw)",
        "_mm256_set_m128i(raw, _mm_srli_epi16(raw, 4))", "task_1_3_simd"),
    "simd: the scalar fallback writes nothing": (
        "task_1_3_simd_code",
        "            acc += s[b] * xs[b] * (float)isum;\n        }\n        y[row] = acc;\n#endif",
        "            acc += s[b] * xs[b] * (float)isum;\n        }\n        (void)acc;\n#endif", "task_1_3_simd"),
    "simd: the scalar fallback forgets the zero point": (
        "task_1_3_simd_code", "                isum += ((w[b * 16 + j] & 0x0F) - 8) * xq[b * BLOCK + j]",
        "                isum += ((w[b * 16 + j] & 0x0F)) * xq[b * BLOCK + j]", "task_1_3_simd"),
    # 1.4
    "all: the tail rows forgotten": (
        "task_1_4_all_code", "    for (int row = 4 * n4; row < n; row++)",
        "    for (int row = 4 * n4; row < 4 * n4; row++)",
        "task_1_4_all"),
    "all: num_threads ignored": (
        "task_1_4_all_code", "#pragma omp parallel for num_threads(num_threads) schedule(static)\n    for (int g = 0;",
        "    for (int g = 0;", "task_1_4_all"),
    "all: scalar blocks (no SIMD)": (
        "task_1_4_all_code", "#if defined(__AVX2__)\n        __m256 a0 = _mm256_setzero_ps(), a1 = a0",
        "#if 0\n        __m256 a0 = _mm256_setzero_ps(), a1 = a0", "task_1_4_all"),
    "all: groups split in n / num_threads chunks, the remainder dropped": (
        "task_1_4_all_code",
        "#pragma omp parallel for num_threads(num_threads) schedule(static)\n    for (int g = 0; g < n4; g++) {",
        "    const int per = n4 / (num_threads > 0 ? num_threads : 1);\n"
        "#pragma omp parallel for num_threads(num_threads) schedule(static)\n"
        "    for (int g = 0; g < per * (num_threads > 0 ? num_threads : 1); g++) {",
        "task_1_4_all"),
    "all: one scale per row instead of per block": (
        "task_1_4_all_code", "a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0[b] * xs[b]), dot_block(w0 + b * 16, x), a0);",
        "a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0[0] * xs[b]), dot_block(w0 + b * 16, x), a0);", "task_1_4_all"),
    "all: the fallback (no AVX2) forgets the zero point": (
        "task_1_4_all_code", "        isum += ((w[j] & 0x0F) - 8) * x[j] + ((w[j] >> 4) - 8) * x[16 + j];",
        "        isum += (w[j] & 0x0F) * x[j] + (w[j] >> 4) * x[16 + j];", "task_1_4_all"),
    # 2.1: the kernel at work in the decode loop
    "decode: wrong only when num_threads == 1": (
        "task_1_4_all_code", "        y[row] = hsum(a0); y[row + 1] = hsum(a1);",
        "        y[row] = hsum(a0) * (num_threads == 1 ? 1.1f : 1.0f); y[row + 1] = hsum(a1);",
        "task_2_1_decode"),
    "decode: a scalar kernel, far slower than the solution's": (
        "task_1_4_all_code", "#if defined(__AVX2__)\n        __m256 a0 = _mm256_setzero_ps(), a1 = a0",
        "#if 0\n        __m256 a0 = _mm256_setzero_ps(), a1 = a0", "task_2_1_decode"),
    "decode: ALL_SRC missing": (
        "task_1_4_all_code", 'all_kernel = compile_kernel(ALL_SRC, "all", task="1.4")', "del ALL_SRC",
        "task_2_1_decode"),
}
# Mistakes in the AVX2 code or in the builds without AVX2: x86 cases (the course grades on x86).
AVX2_ONLY = {"simd: no intrinsics (the scalar loop)", "simd: zero point not subtracted",
             "simd: the nibble halves swapped (high nibbles first)", "simd: the scalar fallback writes nothing",
             "simd: the scalar fallback forgets the zero point", "all: scalar blocks (no SIMD)",
             "all: one scale per row instead of per block", "all: the fallback (no AVX2) forgets the zero point",
             "decode: wrong only when num_threads == 1", "decode: a scalar kernel, far slower than the solution's"}
if not X86:
    MISTAKES = {name: spec for name, spec in MISTAKES.items() if name not in AVX2_ONLY}

# Correct kernels written differently: full marks. A whole source replaces the
# solution's (the solution's string is kept, unused, after it).
UNROLL_TWO_ROWS = r"""
#include <stdint.h>

/* Two rows per iteration sharing each activation byte, the byte loop unrolled by 8, the odd row last. */
static inline int32_t pair(uint8_t byte, int8_t lo, int8_t hi) {
    return ((byte & 15) - 8) * lo + ((byte >> 4) - 8) * hi;
}

void gemv_int4_unroll(const uint8_t *codes, const float *scales, const int8_t *xq,
                      const float *xs, float *y, int n, int k, int num_threads) {
    (void)num_threads;
    const int nb = k / 32;
    for (int row = 0; row < n; row += 2) {
        const int two = row + 1 < n;
        const uint8_t *a = codes + (long)row * (k / 2), *b = two ? a + k / 2 : a;
        float ya = 0.0f, yb = 0.0f;
        for (int blk = 0; blk < nb; blk++) {
            const int8_t *x = xq + 32 * blk;
            int32_t sa = 0, sb = 0;
            for (int j = 0; j < 16; j += 8) {
                sa += pair(a[16 * blk + j], x[j], x[16 + j]) + pair(a[16 * blk + j + 1], x[j + 1], x[17 + j])
                    + pair(a[16 * blk + j + 2], x[j + 2], x[18 + j]) + pair(a[16 * blk + j + 3], x[j + 3], x[19 + j])
                    + pair(a[16 * blk + j + 4], x[j + 4], x[20 + j]) + pair(a[16 * blk + j + 5], x[j + 5], x[21 + j])
                    + pair(a[16 * blk + j + 6], x[j + 6], x[22 + j]) + pair(a[16 * blk + j + 7], x[j + 7], x[23 + j]);
                sb += pair(b[16 * blk + j], x[j], x[16 + j]) + pair(b[16 * blk + j + 1], x[j + 1], x[17 + j])
                    + pair(b[16 * blk + j + 2], x[j + 2], x[18 + j]) + pair(b[16 * blk + j + 3], x[j + 3], x[19 + j])
                    + pair(b[16 * blk + j + 4], x[j + 4], x[20 + j]) + pair(b[16 * blk + j + 5], x[j + 5], x[21 + j])
                    + pair(b[16 * blk + j + 6], x[j + 6], x[22 + j]) + pair(b[16 * blk + j + 7], x[j + 7], x[23 + j]);
            }
            ya += scales[(long)row * nb + blk] * xs[blk] * (float)sa;
            if (two) yb += scales[(long)(row + 1) * nb + blk] * xs[blk] * (float)sb;
        }
        y[row] = ya;
        if (two) y[row + 1] = yb;
    }
}
"""

MULTITHREAD_PTHREADS = r"""
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#define BLOCK 32

typedef struct { const uint8_t *codes; const float *scales; const int8_t *xq; const float *xs;
                 float *y; int k, lo, hi; } job_t;

static void *rows(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int nb = j->k / BLOCK;
    for (int row = j->lo; row < j->hi; row++) {
        const uint8_t *w = j->codes + (long)row * (j->k / 2);
        const float *s = j->scales + (long)row * nb;
        float acc = 0.0f;
        for (int b = 0; b < nb; b++) {
            int32_t isum = 0;
            for (int q = 0; q < 16; q++)
                isum += ((w[b * 16 + q] & 0x0F) - 8) * j->xq[b * BLOCK + q]
                      + ((w[b * 16 + q] >> 4) - 8) * j->xq[b * BLOCK + 16 + q];
            acc += s[b] * j->xs[b] * (float)isum;
        }
        j->y[row] = acc;
    }
    return NULL;
}

void gemv_int4_multithread(const uint8_t *codes, const float *scales, const int8_t *xq,
                           const float *xs, float *y, int n, int k, int num_threads) {
    if (num_threads <= 0) num_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (num_threads > 64) num_threads = 64;
    if (num_threads > n) num_threads = n;
    pthread_t tid[64];
    job_t jobs[64];
    for (int t = 0; t < num_threads; t++) {
        jobs[t] = (job_t){codes, scales, xq, xs, y, k, (int)((long)n * t / num_threads),
                          (int)((long)n * (t + 1) / num_threads)};
        if (t > 0) pthread_create(&tid[t], NULL, rows, &jobs[t]);
    }
    rows(&jobs[0]);
    for (int t = 1; t < num_threads; t++) pthread_join(tid[t], NULL);
}
"""


def _whole(variable, source, test_id):
    cell = {"UNROLL_SRC": "task_1_1_unroll_code", "MULTITHREAD_SRC": "task_1_2_multithread_code"}[variable]
    return (cell, f'### BEGIN SOLUTION\n{variable} = r"""',
            f'### BEGIN SOLUTION\n{variable} = r"""{source}"""\n_UNUSED = r"""', test_id)


ALTERNATIVES = {
    "unroll: two rows per iteration, the byte loop unrolled by 8": _whole(
        "UNROLL_SRC", UNROLL_TWO_ROWS, "task_1_1_unroll"),
    "multithread: pthreads, a contiguous share of rows per thread": _whole(
        "MULTITHREAD_SRC", MULTITHREAD_PTHREADS, "task_1_2_multithread"),
    "multithread: OpenMP with a dynamic schedule": (
        "task_1_2_multithread_code", "num_threads(num_threads) schedule(static)",
        "num_threads(num_threads) schedule(dynamic, 16)", "task_1_2_multithread"),
    "simd: int8 widened to int16 and madd instead of maddubs": (
        "task_1_3_simd_code",
        "    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));\n"
        "    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));",
        "    const __m256i wl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));\n"
        "    const __m256i wh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));\n"
        "    const __m256i xl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x));\n"
        "    const __m256i xh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1));\n"
        "    return _mm256_add_epi32(_mm256_madd_epi16(wl, xl), _mm256_madd_epi16(wh, xh));",
        "task_1_3_simd"),
    "all: a dynamic schedule over the groups of four rows": (
        "task_1_4_all_code", "num_threads(num_threads) schedule(static)\n    for (int g = 0; g < n4; g++) {",
        "num_threads(num_threads) schedule(dynamic, 8)\n    for (int g = 0; g < n4; g++) {", "task_1_4_all"),
}
ALTERNATIVES["simd: a debug printf left in the kernel (its output must not spoil the answer)"] = (
    "task_1_3_simd_code", "    (void)num_threads;\n    const int nb = k / BLOCK;\n",
    "    (void)num_threads;\n"
    "    { extern int printf(const char *, ...); extern int fflush(void *); extern void *stdout;\n"
    "      printf(\"simd: n=%d k=%d\\n\", n, k); fflush(stdout); }\n"
    "    const int nb = k / BLOCK;\n", "task_1_3_simd")
if not X86:  # the alternatives that are AVX2 code
    del ALTERNATIVES["simd: int8 widened to int16 and madd instead of maddubs"]


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
