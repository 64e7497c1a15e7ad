/* CSR sparse matrix-vector product, fp32: y = A x for A [rows x cols].
 * Row r's nonzeros are values[indptr[r] .. indptr[r+1]) in columns
 * indices[indptr[r] .. indptr[r+1]). Rows are split across OpenMP threads. */
#include <stdint.h>

void spmv_csr_f32(const int32_t *indptr, const int32_t *indices, const float *values,
                  const float *x, float *y, int rows) {
#pragma omp parallel for schedule(dynamic, 64)
    for (int r = 0; r < rows; r++) {
        float acc = 0.0f;
        for (int32_t i = indptr[r]; i < indptr[r + 1]; i++) acc += values[i] * x[indices[i]];
        y[r] = acc;
    }
}
