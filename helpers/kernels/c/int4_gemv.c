/* int4 weight-only GEMV in the TinyChatEngine layout: y = W x.
 *
 * Layout (see helpers/kernels/int4.py for the Python side):
 *   W is N x K, K a multiple of 32, split along K into blocks of 32.
 *   codes  uint8 [N][K/2]: block b of row n uses bytes codes[n*K/2 + 16*b + j],
 *          j = 0..15; the LOW nibble of byte j is the code of column 32*b + j,
 *          the HIGH nibble the code of column 32*b + 16 + j.
 *   scales float [N][K/32]: w[n][k] = (code - 8) * scales[n][k/32].
 *   xq     int8  [K]    activations quantized per block of 32,
 *   xs     float [K/32] x[k] ~= xq[k] * xs[k/32].
 *   y      float [N]    y[n] = sum_b scales[n][b] * xs[b] * sum_{k in b} (code-8) * xq[k].
 *
 * Variants (one exported function each, same signature):
 *   gemv_int4_reference    scalar loops, the baseline
 *   gemv_int4_unroll       four rows per pass, inner loop unrolled by four
 *   gemv_int4_multithread  the reference with rows split across OpenMP threads
 *   gemv_int4_simd         AVX2 on x86, NEON on AArch64, the scalar loop otherwise
 *                          (chosen at compile time by #if on the target's macros)
 *   gemv_int4_all          SIMD + four rows per pass + threads
 * Every variant computes the same sums in int32 per block, then fp32 across
 * blocks; they differ only in how fast they do it. num_threads <= 0 means the
 * OpenMP default (OMP_NUM_THREADS); reference, unroll and simd ignore it.
 */
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

#ifdef _OPENMP
#include <omp.h>
static int omp_default_threads(void) { return omp_get_max_threads(); }
#else
static int omp_default_threads(void) { return 1; }
#endif

#define BLOCK 32

/* The reference is the scalar baseline every other variant is measured
 * against, so GCC must not auto-vectorize it (that is what `simd` does). */
#if defined(__GNUC__) && !defined(__clang__)
#define SCALAR_BASELINE __attribute__((optimize("no-tree-vectorize")))
#else
#define SCALAR_BASELINE
#endif

/* 1. reference: one row, one block, one byte at a time. */
SCALAR_BASELINE void gemv_int4_reference(const uint8_t *codes, const float *scales, const int8_t *xq,
                         const float *xs, float *y, int n, int k, int num_threads) {
    (void)num_threads;
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

/* 2. unroll: four rows per iteration share each activation load, and the
 *    byte loop is unrolled by four. (GCC -O3 already unrolls the reference's
 *    fixed 16-step loop completely, so the gain here comes from the shared
 *    loads and is small: measure it.) */
SCALAR_BASELINE static inline void four_rows_scalar(const uint8_t *codes, const float *scales, const int8_t *xq,
                                    const float *xs, float *y, int row, int k) {
    const int nb = k / BLOCK;
    const uint8_t *w0 = codes + (long)row * (k / 2);
    const uint8_t *w1 = w0 + k / 2, *w2 = w1 + k / 2, *w3 = w2 + k / 2;
    const float *s0 = scales + (long)row * nb;
    float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
    for (int b = 0; b < nb; b++) {
        int32_t i0 = 0, i1 = 0, i2 = 0, i3 = 0;
        const int8_t *xl = xq + b * BLOCK, *xh = xl + 16;
        for (int j = b * 16; j < b * 16 + 16; j += 4) {
#define STEP(u)                                                                  \
    {                                                                            \
        int xlo = xl[j - b * 16 + u], xhi = xh[j - b * 16 + u];                  \
        i0 += ((w0[j + u] & 15) - 8) * xlo + ((w0[j + u] >> 4) - 8) * xhi;      \
        i1 += ((w1[j + u] & 15) - 8) * xlo + ((w1[j + u] >> 4) - 8) * xhi;      \
        i2 += ((w2[j + u] & 15) - 8) * xlo + ((w2[j + u] >> 4) - 8) * xhi;      \
        i3 += ((w3[j + u] & 15) - 8) * xlo + ((w3[j + u] >> 4) - 8) * xhi;      \
    }
            STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
        }
        acc0 += s0[b] * xs[b] * (float)i0;
        acc1 += s0[nb + b] * xs[b] * (float)i1;
        acc2 += s0[2 * nb + b] * xs[b] * (float)i2;
        acc3 += s0[3 * nb + b] * xs[b] * (float)i3;
    }
    y[row] = acc0; y[row + 1] = acc1; y[row + 2] = acc2; y[row + 3] = acc3;
}

void gemv_int4_unroll(const uint8_t *codes, const float *scales, const int8_t *xq,
                      const float *xs, float *y, int n, int k, int num_threads) {
    int row = 0;
    for (; row + 4 <= n; row += 4) four_rows_scalar(codes, scales, xq, xs, y, row, k);
    if (row < n) gemv_int4_reference(codes + (long)row * (k / 2), scales + (long)row * (k / BLOCK),
                                     xq, xs, y + row, n - row, k, num_threads);
}

/* 3. multithread: the reference loop, rows split across OpenMP threads. */
void gemv_int4_multithread(const uint8_t *codes, const float *scales, const int8_t *xq,
                           const float *xs, float *y, int n, int k, int num_threads) {
    const int nb = k / BLOCK;
    if (num_threads <= 0) num_threads = omp_default_threads();
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 16)
    for (int row = 0; row < n; row++)
        gemv_int4_reference(codes + (long)row * (k / 2), scales + (long)row * nb, xq, xs, y + row, 1, k, 1);
}

/* 4. simd: the int8 dot product of one block in vector registers. */
#if defined(__AVX2__)
/* 32 int8 weights of block b: low nibbles in lanes 0..15, high in 16..31. */
static inline __m256i load_block_avx2(const uint8_t *w) {
    __m128i raw = _mm_loadu_si128((const __m128i *)w);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}
/* signed x signed int8 dot -> 8 int32 partial sums. maddubs wants an unsigned
 * operand, so multiply |w| by x carrying w's sign (products fit in int16). */
static inline __m256i dot_block_avx2(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#elif defined(__ARM_NEON) && defined(__aarch64__)
/* int8 dot of one block -> 4 int32 partial sums. */
static inline int32x4_t dot_block_neon(const uint8_t *w, const int8_t *x) {
    uint8x16_t raw = vld1q_u8(w);
    int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), vdupq_n_s8(8));
    int8x16_t xl = vld1q_s8(x), xh = vld1q_s8(x + 16);
    int16x8_t p = vmull_s8(vget_low_s8(lo), vget_low_s8(xl));
    p = vmlal_s8(p, vget_high_s8(lo), vget_high_s8(xl));
    int16x8_t q = vmull_s8(vget_low_s8(hi), vget_low_s8(xh));
    q = vmlal_s8(q, vget_high_s8(hi), vget_high_s8(xh));
    return vaddq_s32(vpaddlq_s16(p), vpaddlq_s16(q));
}
#endif

static void simd_rows(const uint8_t *codes, const float *scales, const int8_t *xq,
                      const float *xs, float *y, int row_begin, int row_end, int k) {
    const int nb = k / BLOCK;
    for (int row = row_begin; row < row_end; row++) {
        const uint8_t *w = codes + (long)row * (k / 2);
        const float *s = scales + (long)row * nb;
#if defined(__AVX2__)
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * BLOCK));
            __m256 d = _mm256_cvtepi32_ps(dot_block_avx2(load_block_avx2(w + b * 16), x));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(s[b] * xs[b]), d, acc);
        }
        y[row] = hsum_avx2(acc);
#elif defined(__ARM_NEON) && defined(__aarch64__)
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int b = 0; b < nb; b++) {
            float32x4_t d = vcvtq_f32_s32(dot_block_neon(w + b * 16, xq + b * BLOCK));
            acc = vmlaq_n_f32(acc, d, s[b] * xs[b]);
        }
        y[row] = vaddvq_f32(acc);
#else
        gemv_int4_reference(w, s, xq, xs, y + row, 1, k, 1);
#endif
    }
}

void gemv_int4_simd(const uint8_t *codes, const float *scales, const int8_t *xq,
                    const float *xs, float *y, int n, int k, int num_threads) {
    (void)num_threads;
    simd_rows(codes, scales, xq, xs, y, 0, n, k);
}

/* 5. all: SIMD, four rows per activation load, rows split across threads. */
static void simd_four_rows(const uint8_t *codes, const float *scales, const int8_t *xq,
                           const float *xs, float *y, int row, int k) {
#if defined(__AVX2__)
    const int nb = k / BLOCK;
    const uint8_t *w0 = codes + (long)row * (k / 2);
    const uint8_t *w1 = w0 + k / 2, *w2 = w1 + k / 2, *w3 = w2 + k / 2;
    const float *s0 = scales + (long)row * nb, *s1 = s0 + nb, *s2 = s1 + nb, *s3 = s2 + nb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int b = 0; b < nb; b++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * BLOCK));
        __m256 d0 = _mm256_cvtepi32_ps(dot_block_avx2(load_block_avx2(w0 + b * 16), x));
        __m256 d1 = _mm256_cvtepi32_ps(dot_block_avx2(load_block_avx2(w1 + b * 16), x));
        __m256 d2 = _mm256_cvtepi32_ps(dot_block_avx2(load_block_avx2(w2 + b * 16), x));
        __m256 d3 = _mm256_cvtepi32_ps(dot_block_avx2(load_block_avx2(w3 + b * 16), x));
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0[b] * xs[b]), d0, a0);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(s1[b] * xs[b]), d1, a1);
        a2 = _mm256_fmadd_ps(_mm256_set1_ps(s2[b] * xs[b]), d2, a2);
        a3 = _mm256_fmadd_ps(_mm256_set1_ps(s3[b] * xs[b]), d3, a3);
    }
    y[row] = hsum_avx2(a0); y[row + 1] = hsum_avx2(a1);
    y[row + 2] = hsum_avx2(a2); y[row + 3] = hsum_avx2(a3);
#else
    simd_rows(codes, scales, xq, xs, y, row, row + 4, k);
#endif
}

void gemv_int4_all(const uint8_t *codes, const float *scales, const int8_t *xq,
                   const float *xs, float *y, int n, int k, int num_threads) {
    if (num_threads <= 0) num_threads = omp_default_threads();
    const int n4 = n / 4;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 16)
    for (int i = 0; i < n4; i++) simd_four_rows(codes, scales, xq, xs, y, 4 * i, k);
    simd_rows(codes, scales, xq, xs, y, 4 * n4, n, k);
}
