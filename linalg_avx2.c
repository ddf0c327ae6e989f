/* linalg_avx2.c -- AVX2 + FMA micro-kernels (this file alone is compiled with -mavx2 -mfma).
 *
 * Same scheme as linalg_avx512.c with 256-bit registers: float 6 x 16 and double 6 x 8, 12
 * accumulators plus two B registers and a broadcast, 15 of the 16 ymm registers. The contract is in
 * internal.h. */
#include "internal.h"

#if defined(__x86_64__) && !defined(IT_NOSIMD)
#include <immintrin.h>
#include <math.h>

#define SMR 6
#define SNR 16
#define DMR 6
#define DNR 8

_Static_assert(SMR <= IT__MAX_MR && SNR <= IT__MAX_NR && DMR <= IT__MAX_MR && DNR <= IT__MAX_NR,
               "micro-tile larger than the contract's IT__MAX_MR x IT__MAX_NR");

static void s_update_partial(const float *t, float *c, size_t ldc, float alpha, float beta, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? alpha * t[i * SNR + j] : fmaf(alpha, t[i * SNR + j], beta * c[i * ldc + j]);
}

static void sgemm_6x16(size_t k, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                       size_t m, size_t n)
{
    __m256 acc[SMR][2];
    for (int i = 0; i < SMR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < SMR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += SMR;
        b += SNR;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (m == SMR && n == SNR) {
        for (int i = 0; i < SMR; i++) {
            float *ci = c + (size_t)i * ldc;
            if (beta == 0.0f) {
                _mm256_storeu_ps(ci, _mm256_mul_ps(va, acc[i][0]));
                _mm256_storeu_ps(ci + 8, _mm256_mul_ps(va, acc[i][1]));
            } else {
                _mm256_storeu_ps(ci, _mm256_fmadd_ps(va, acc[i][0], _mm256_mul_ps(vb, _mm256_loadu_ps(ci))));
                _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(va, acc[i][1], _mm256_mul_ps(vb, _mm256_loadu_ps(ci + 8))));
            }
        }
        return;
    }
    float t[SMR * SNR];
    for (int i = 0; i < SMR; i++) {
        _mm256_storeu_ps(t + i * SNR, acc[i][0]);
        _mm256_storeu_ps(t + i * SNR + 8, acc[i][1]);
    }
    s_update_partial(t, c, ldc, alpha, beta, m, n);
}

static void d_update_partial(const double *t, double *c, size_t ldc, double alpha, double beta, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0 ? alpha * t[i * DNR + j] : fma(alpha, t[i * DNR + j], beta * c[i * ldc + j]);
}

static void dgemm_6x8(size_t k, const double *a, const double *b, double *c, size_t ldc, double alpha, double beta,
                      size_t m, size_t n)
{
    __m256d acc[DMR][2];
    for (int i = 0; i < DMR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    for (size_t p = 0; p < k; p++) {
        __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
#pragma GCC unroll 6
        for (int i = 0; i < DMR; i++) {
            __m256d ai = _mm256_broadcast_sd(a + i);
            acc[i][0] = _mm256_fmadd_pd(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(ai, b1, acc[i][1]);
        }
        a += DMR;
        b += DNR;
    }
    __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
    if (m == DMR && n == DNR) {
        for (int i = 0; i < DMR; i++) {
            double *ci = c + (size_t)i * ldc;
            if (beta == 0.0) {
                _mm256_storeu_pd(ci, _mm256_mul_pd(va, acc[i][0]));
                _mm256_storeu_pd(ci + 4, _mm256_mul_pd(va, acc[i][1]));
            } else {
                _mm256_storeu_pd(ci, _mm256_fmadd_pd(va, acc[i][0], _mm256_mul_pd(vb, _mm256_loadu_pd(ci))));
                _mm256_storeu_pd(ci + 4, _mm256_fmadd_pd(va, acc[i][1], _mm256_mul_pd(vb, _mm256_loadu_pd(ci + 4))));
            }
        }
        return;
    }
    double t[DMR * DNR];
    for (int i = 0; i < DMR; i++) {
        _mm256_storeu_pd(t + i * DNR, acc[i][0]);
        _mm256_storeu_pd(t + i * DNR + 4, acc[i][1]);
    }
    d_update_partial(t, c, ldc, alpha, beta, m, n);
}

/* X op(L) = B, four rows per register, the naive routine's operations in its order (see
 * linalg_avx512.c); the last rows go through a zero-padded tile. */
static void dtrsm_rows_4(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb)
{
    double tile[IT__TRSM_BASE][4];
    __m256d T[IT__TRSM_BASE];
    for (size_t i = 0; i < m; i += 4) {
        size_t h = m - i < 4 ? m - i : 4;
        for (size_t j = 0; j < n; j++)
            for (size_t r = 0; r < 4; r++) tile[j][r] = r < h ? B[(i + r) * ldb + j] : 0.0;
        for (size_t j = 0; j < n; j++) T[j] = _mm256_loadu_pd(tile[j]);
        for (size_t s = 0; s < n; s++) {
            size_t jj = op == IT_T ? s : n - 1 - s, t0 = op == IT_T ? 0 : jj + 1, t1 = op == IT_T ? jj : n;
            __m256d v = T[jj];
            for (size_t t = t0; t < t1; t++)
                v = _mm256_sub_pd(v, _mm256_mul_pd(T[t], _mm256_set1_pd(op == IT_N ? L[t * ldl + jj] : L[jj * ldl + t])));
            T[jj] = _mm256_div_pd(v, _mm256_set1_pd(L[jj * ldl + jj]));
        }
        for (size_t j = 0; j < n; j++) _mm256_storeu_pd(tile[j], T[j]);
        for (size_t j = 0; j < n; j++)
            for (size_t r = 0; r < h; r++) B[(i + r) * ldb + j] = tile[j][r];
    }
}

/* Blocking for 32 KiB L1d and 256 KiB - 1 MiB L2 (Haswell to Zen 3). */
const it__kernels it__kernels_avx2 = {
    "avx2",
    SMR, SNR, 256, 256, 3072,
    DMR, DNR, 256, 128, 3072,
    sgemm_6x16,
    dgemm_6x8,
    dtrsm_rows_4,
};

#else
typedef int it__no_avx2; /* an empty translation unit is not valid C */
#endif
