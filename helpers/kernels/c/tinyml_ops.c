/* The int8 operators of lab 05 that helpers/kernels/c/int8.c does not have:
 * residual add and global average pooling, with the same requantization
 * (multiply by mult * 2^(shift - 31), rounding half up).
 * Activations are channels-last (HWC) and per-tensor (scale, zero point). */
#include <stdint.h>

static inline int32_t tinyml_rq(int32_t v, int32_t mult, int32_t shift) {
    const int r = 31 - shift;
    return (int32_t)((((int64_t)v * mult) + ((int64_t)1 << (r - 1))) >> r);
}

static inline int8_t tinyml_clamp(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* y = clamp(y_zp + rq(a - a_zp, mult[0], shift[0]) + rq(b - b_zp, mult[1], shift[1])), n elements. */
void add_int8(const int8_t *a, const int8_t *b, int8_t *y, int n, int a_zp, int b_zp, int y_zp,
              const int32_t *mult, const int32_t *shift, int act_min, int act_max) {
    for (int i = 0; i < n; i++) {
        int32_t v = y_zp + tinyml_rq(a[i] - a_zp, mult[0], shift[0]) + tinyml_rq(b[i] - b_zp, mult[1], shift[1]);
        y[i] = tinyml_clamp(v, act_min, act_max);
    }
}

/* Global average pool of x [H*W][C] -> y [C]: the int32 sum of (x - x_zp) over
 * the H*W positions, requantized by mult/shift (which include the 1 / (H*W)). */
void avgpool_int8(const int8_t *x, int8_t *y, int HW, int C, int x_zp, int y_zp,
                  int32_t mult, int32_t shift, int act_min, int act_max) {
    for (int c = 0; c < C; c++) {
        int32_t acc = 0;
        for (int p = 0; p < HW; p++) acc += x[(long)p * C + c] - x_zp;
        y[c] = tinyml_clamp(tinyml_rq(acc, mult, shift) + y_zp, act_min, act_max);
    }
}
