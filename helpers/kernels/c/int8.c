/* int8 inference kernels (TFLite / TinyEngine arithmetic).
 *
 * Tensors are int8, activations channels-last (NHWC), accumulation in int32:
 *   acc = bias[oc] + sum (x - x_zp) * w         (weights are symmetric: no zero point)
 *   y   = clamp(requant(acc, mult[oc], shift[oc]) + y_zp, act_min, act_max)
 * requant multiplies by the real number mult * 2^(shift - 31), mult in
 * [2^30, 2^31), rounding half up: (acc * mult + 2^(r-1)) >> r with r = 31 - shift.
 * bias may be NULL. Per-channel mult/shift arrays have one entry per output channel.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline int8_t requant(int32_t acc, int32_t mult, int32_t shift, int32_t y_zp,
                             int32_t act_min, int32_t act_max) {
    const int r = 31 - shift; /* 1..62, checked by the Python wrapper */
    int64_t v = (((int64_t)acc * mult) + ((int64_t)1 << (r - 1))) >> r;
    v += y_zp;
    if (v < act_min) v = act_min;
    if (v > act_max) v = act_max;
    return (int8_t)v;
}

/* C[M][N] = requant(A[M][K] . B[N][K]^T): A activations, B weights (row per output). */
void gemm_int8(const int8_t *A, const int8_t *B, const int32_t *bias, const int32_t *mult,
               const int32_t *shift, int8_t *C, int M, int N, int K, int a_zp, int c_zp,
               int act_min, int act_max) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            const int8_t *a = A + (long)m * K, *b = B + (long)n * K;
            int32_t acc = bias ? bias[n] : 0;
            for (int k = 0; k < K; k++) acc += (a[k] - a_zp) * b[k];
            C[(long)m * N + n] = requant(acc, mult[n], shift[n], c_zp, act_min, act_max);
        }
    }
}

/* Convolution by im2col: for each output pixel, gather its KH*KW*C input patch
 * (zero-point subtracted, 0 where the window hangs over the padding) into a
 * column, then take the dot product with every filter w[OC][KH][KW][C]. */
void conv2d_int8(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                 const int32_t *shift, int8_t *y, int N, int H, int W, int C, int OC, int KH, int KW,
                 int stride_h, int stride_w, int pad_h, int pad_w, int OH, int OW, int x_zp, int y_zp,
                 int act_min, int act_max) {
    const int K = KH * KW * C;
#pragma omp parallel
    {
        int16_t *col = (int16_t *)malloc(sizeof(int16_t) * K);
#pragma omp for collapse(2) schedule(static)
        for (int n = 0; n < N; n++) {
            for (int oh = 0; oh < OH; oh++) {
                for (int ow = 0; ow < OW; ow++) {
                    int16_t *c = col;
                    for (int kh = 0; kh < KH; kh++) {
                        const int ih = oh * stride_h - pad_h + kh;
                        for (int kw = 0; kw < KW; kw++, c += C) {
                            const int iw = ow * stride_w - pad_w + kw;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                                memset(c, 0, sizeof(int16_t) * C);
                                continue;
                            }
                            const int8_t *px = x + (((long)n * H + ih) * W + iw) * C;
                            for (int ci = 0; ci < C; ci++) c[ci] = (int16_t)(px[ci] - x_zp);
                        }
                    }
                    int8_t *out = y + (((long)n * OH + oh) * OW + ow) * OC;
                    for (int oc = 0; oc < OC; oc++) {
                        const int8_t *f = w + (long)oc * K;
                        int32_t acc = bias ? bias[oc] : 0;
                        for (int k = 0; k < K; k++) acc += col[k] * f[k];
                        out[oc] = requant(acc, mult[oc], shift[oc], y_zp, act_min, act_max);
                    }
                }
            }
        }
        free(col);
    }
}

/* Depthwise convolution (depth multiplier 1): channel c of the output only
 * sees channel c of the input, filter w[KH][KW][C]. */
void depthwise_conv2d_int8(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                           const int32_t *shift, int8_t *y, int N, int H, int W, int C, int KH, int KW,
                           int stride_h, int stride_w, int pad_h, int pad_w, int OH, int OW, int x_zp,
                           int y_zp, int act_min, int act_max) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int oh = 0; oh < OH; oh++) {
            for (int ow = 0; ow < OW; ow++) {
                int8_t *out = y + (((long)n * OH + oh) * OW + ow) * C;
                for (int c = 0; c < C; c++) {
                    int32_t acc = bias ? bias[c] : 0;
                    for (int kh = 0; kh < KH; kh++) {
                        const int ih = oh * stride_h - pad_h + kh;
                        if (ih < 0 || ih >= H) continue;
                        for (int kw = 0; kw < KW; kw++) {
                            const int iw = ow * stride_w - pad_w + kw;
                            if (iw < 0 || iw >= W) continue;
                            acc += (x[(((long)n * H + ih) * W + iw) * C + c] - x_zp) * w[(kh * KW + kw) * C + c];
                        }
                    }
                    out[c] = requant(acc, mult[c], shift[c], y_zp, act_min, act_max);
                }
            }
        }
    }
}

/* In-place depthwise convolution of one image (TinyEngine's trick for the
 * memory planner): buf holds the input [H][W][C]; afterwards its first
 * OH*OW*C bytes hold the output [OH][OW][C]. Channel c is copied to a scratch
 * buffer of H*W bytes, then its outputs are written to the channel-c slots
 * (p*C + c, p < OH*OW <= H*W), which only channel c's input occupied. Extra
 * memory: H*W bytes instead of a second activation buffer. Needs OH*OW <= H*W.
 * Returns 0, or -1 when the scratch buffer cannot be allocated. */
int depthwise_conv2d_int8_inplace(int8_t *buf, const int8_t *w, const int32_t *bias, const int32_t *mult,
                                  const int32_t *shift, int H, int W, int C, int KH, int KW, int stride_h,
                                  int stride_w, int pad_h, int pad_w, int OH, int OW, int x_zp, int y_zp,
                                  int act_min, int act_max) {
    int8_t *chan = (int8_t *)malloc((size_t)H * W);
    if (!chan) return -1;
    for (int c = 0; c < C; c++) {
        for (int p = 0; p < H * W; p++) chan[p] = buf[(long)p * C + c];
        for (int oh = 0; oh < OH; oh++) {
            for (int ow = 0; ow < OW; ow++) {
                int32_t acc = bias ? bias[c] : 0;
                for (int kh = 0; kh < KH; kh++) {
                    const int ih = oh * stride_h - pad_h + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < KW; kw++) {
                        const int iw = ow * stride_w - pad_w + kw;
                        if (iw < 0 || iw >= W) continue;
                        acc += (chan[ih * W + iw] - x_zp) * w[(kh * KW + kw) * C + c];
                    }
                }
                buf[((long)oh * OW + ow) * C + c] = requant(acc, mult[c], shift[c], y_zp, act_min, act_max);
            }
        }
    }
    free(chan);
    return 0;
}
