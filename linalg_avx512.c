/* linalg_avx512.c -- AVX-512F micro-kernels (this file alone is compiled with -mavx512f -mfma).
 *
 * Row-major C tiles, vectors along the columns: each k step loads NR values of packed op(B) into
 * two zmm registers and broadcasts MR values of packed op(A), one fused multiply-add per (row,
 * half-row). float: 12 x 32 (24 accumulators), double: 12 x 16 (24 accumulators); with the two B
 * registers and the broadcast that is 27 of the 32 zmm registers. The contract is in internal.h. */
#include "internal.h"

#if defined(__x86_64__) && !defined(IT_NOSIMD)
#include <immintrin.h>
#include <math.h>

#define SMR 12
#define SNR 32
#define DMR 12
#define DNR 16

/* C tile update for a partial tile, from the spilled accumulators t [SMR x SNR]. */
_Static_assert(SMR <= IT__MAX_MR && SNR <= IT__MAX_NR && DMR <= IT__MAX_MR && DNR <= IT__MAX_NR,
               "micro-tile larger than the contract's IT__MAX_MR x IT__MAX_NR");

static void s_update_partial(const float *t, float *c, size_t ldc, float alpha, float beta, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? alpha * t[i * SNR + j] : fmaf(alpha, t[i * SNR + j], beta * c[i * ldc + j]);
}

static void sgemm_12x32(size_t k, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                        size_t m, size_t n)
{
    __m512 acc[SMR][2];
    for (int i = 0; i < SMR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (size_t i = 0; i < m; i++) { /* the C rows are read at the end: start fetching them now */
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
    for (size_t p = 0; p < k; p++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < SMR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += SMR;
        b += SNR;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (m == SMR && n == SNR) {
        for (int i = 0; i < SMR; i++) {
            float *ci = c + (size_t)i * ldc;
            if (beta == 0.0f) {
                _mm512_storeu_ps(ci, _mm512_mul_ps(va, acc[i][0]));
                _mm512_storeu_ps(ci + 16, _mm512_mul_ps(va, acc[i][1]));
            } else {
                _mm512_storeu_ps(ci, _mm512_fmadd_ps(va, acc[i][0], _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));
                _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, acc[i][1], _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16))));
            }
        }
        return;
    }
    float t[SMR * SNR];
    for (int i = 0; i < SMR; i++) {
        _mm512_storeu_ps(t + i * SNR, acc[i][0]);
        _mm512_storeu_ps(t + i * SNR + 16, acc[i][1]);
    }
    s_update_partial(t, c, ldc, alpha, beta, m, n);
}

static void d_update_partial(const double *t, double *c, size_t ldc, double alpha, double beta, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0 ? alpha * t[i * DNR + j] : fma(alpha, t[i * DNR + j], beta * c[i * ldc + j]);
}

static void dgemm_12x16(size_t k, const double *a, const double *b, double *c, size_t ldc, double alpha, double beta,
                        size_t m, size_t n)
{
    __m512d acc[DMR][2];
    for (int i = 0; i < DMR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_pd();
    for (size_t i = 0; i < m; i++) { /* the C rows are read at the end: start fetching them now */
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 8), _MM_HINT_T0);
    }
    for (size_t p = 0; p < k; p++) {
        __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
#pragma GCC unroll 12
        for (int i = 0; i < DMR; i++) {
            __m512d ai = _mm512_set1_pd(a[i]);
            acc[i][0] = _mm512_fmadd_pd(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_pd(ai, b1, acc[i][1]);
        }
        a += DMR;
        b += DNR;
    }
    __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
    if (m == DMR && n == DNR) {
        for (int i = 0; i < DMR; i++) {
            double *ci = c + (size_t)i * ldc;
            if (beta == 0.0) {
                _mm512_storeu_pd(ci, _mm512_mul_pd(va, acc[i][0]));
                _mm512_storeu_pd(ci + 8, _mm512_mul_pd(va, acc[i][1]));
            } else {
                _mm512_storeu_pd(ci, _mm512_fmadd_pd(va, acc[i][0], _mm512_mul_pd(vb, _mm512_loadu_pd(ci))));
                _mm512_storeu_pd(ci + 8, _mm512_fmadd_pd(va, acc[i][1], _mm512_mul_pd(vb, _mm512_loadu_pd(ci + 8))));
            }
        }
        return;
    }
    double t[DMR * DNR];
    for (int i = 0; i < DMR; i++) {
        _mm512_storeu_pd(t + i * DNR, acc[i][0]);
        _mm512_storeu_pd(t + i * DNR + 8, acc[i][1]);
    }
    d_update_partial(t, c, ldc, alpha, beta, m, n);
}

/* X op(L) = B, eight rows per register: column j of the 8-row block is gathered into T[j], then
 * each unknown is the naive routine's sequence (multiply, subtract, in increasing t; divide) on
 * eight rows at once. The last rows go through a masked copy of the same code. */
static void dtrsm_rows_8(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb)
{
    __m512d T[IT__TRSM_BASE];
    long long ld = (long long)ldb;
    __m512i rows = _mm512_set_epi64(7 * ld, 6 * ld, 5 * ld, 4 * ld, 3 * ld, 2 * ld, ld, 0);
    for (size_t i = 0; i < m; i += 8) {
        __mmask8 k = m - i >= 8 ? 0xff : (__mmask8)((1u << (m - i)) - 1);
        double *b = B + i * ldb;
        for (size_t j = 0; j < n; j++) T[j] = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), k, rows, b + j, 8);
        for (size_t s = 0; s < n; s++) {
            size_t jj = op == IT_T ? s : n - 1 - s, t0 = op == IT_T ? 0 : jj + 1, t1 = op == IT_T ? jj : n;
            __m512d v = T[jj];
            for (size_t t = t0; t < t1; t++)
                v = _mm512_sub_pd(v, _mm512_mul_pd(T[t], _mm512_set1_pd(op == IT_N ? L[t * ldl + jj] : L[jj * ldl + t])));
            T[jj] = _mm512_div_pd(v, _mm512_set1_pd(L[jj * ldl + jj]));
        }
        for (size_t j = 0; j < n; j++) _mm512_mask_i64scatter_pd(b + j, k, rows, T[j], 8);
    }
}

/* Blocking for a core with 32 KiB L1d and 1 MiB L2 (Zen 4, Skylake-X class): a 12 x KC panel of
 * op(A) stays in L1, a KC x NB block of op(B) in L2. */
const it__kernels it__kernels_avx512 = {
    "avx512",
    SMR, SNR, 384, 480, 3072,
    DMR, DNR, 256, 240, 3072,
    sgemm_12x32,
    dgemm_12x16,
    dtrsm_rows_8,
};

#else
typedef int it__no_avx512; /* an empty translation unit is not valid C */
#endif
