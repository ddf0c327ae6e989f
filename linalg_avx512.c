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
#include <string.h>

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

/* The twelve rows of a double tile, each in two named registers c<i>0, c<i>1: with no array indexed
 * at run time the compiler keeps all 24 accumulators in zmm registers for the whole call (GCC zeroes
 * and spills an array of __m512d through the stack on every call). */
#define D_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define D_DECL(i) __m512d c##i##0 = _mm512_setzero_pd(), c##i##1 = _mm512_setzero_pd();
#define D_FMA(i)                                                                                                      \
    {                                                                                                                 \
        __m512d ai = _mm512_set1_pd(a[i]);                                                                            \
        c##i##0 = _mm512_fmadd_pd(ai, b0, c##i##0);                                                                   \
        c##i##1 = _mm512_fmadd_pd(ai, b1, c##i##1);                                                                   \
    }
#define D_STORE0(i)                                                                                                   \
    _mm512_storeu_pd(c + i * ldc, _mm512_mul_pd(va, c##i##0));                                                        \
    _mm512_storeu_pd(c + i * ldc + 8, _mm512_mul_pd(va, c##i##1));
#define D_UPDATE(i)                                                                                                   \
    _mm512_storeu_pd(c + i * ldc, _mm512_fmadd_pd(va, c##i##0, _mm512_mul_pd(vb, _mm512_loadu_pd(c + i * ldc))));     \
    _mm512_storeu_pd(c + i * ldc + 8, _mm512_fmadd_pd(va, c##i##1, _mm512_mul_pd(vb, _mm512_loadu_pd(c + i * ldc + 8))));
#define D_SPILL(i) _mm512_storeu_pd(t + i * DNR, c##i##0), _mm512_storeu_pd(t + i * DNR + 8, c##i##1);

static void dgemm_12x16(size_t k, const double *a, const double *b, double *c, size_t ldc, double alpha, double beta,
                        size_t m, size_t n)
{
    D_ROWS(D_DECL)
    for (size_t i = 0; i < m; i++) { /* the C rows are read at the end: start fetching them now */
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 8), _MM_HINT_T0);
    }
    for (size_t p = 0; p < k; p++) {
        __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
        D_ROWS(D_FMA)
        a += DMR;
        b += DNR;
    }
    __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
    if (m == DMR && n == DNR) {
        if (beta == 0.0) {
            D_ROWS(D_STORE0)
        } else {
            D_ROWS(D_UPDATE)
        }
        return;
    }
    double t[DMR * DNR];
    D_ROWS(D_SPILL)
    d_update_partial(t, c, ldc, alpha, beta, m, n);
}

/* r[0..8) := its transpose (r[i] holds row i of an 8 x 8 block): pairs of rows interleaved, then
 * 128-bit lanes gathered twice. */
static void transpose_8x8(__m512d r[8])
{
    __m512d t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);     /* lane L: rows 2i, 2i+1 at column 2L */
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]); /* ... at column 2L+1 */
    }
    for (int h = 0; h < 2; h++) /* h: even or odd columns */
        for (int g = 0; g < 2; g++) { /* g: rows 0-3 or 4-7 */
            u[4 * h + 2 * g] = _mm512_shuffle_f64x2(t[4 * g + h], t[4 * g + 2 + h], 0x88);
            u[4 * h + 2 * g + 1] = _mm512_shuffle_f64x2(t[4 * g + h], t[4 * g + 2 + h], 0xdd);
        }
    for (int h = 0; h < 2; h++)
        for (int c = 0; c < 2; c++) {
            r[2 * c + h] = _mm512_shuffle_f64x2(u[4 * h + c], u[4 * h + 2 + c], 0x88);
            r[2 * c + h + 4] = _mm512_shuffle_f64x2(u[4 * h + c], u[4 * h + 2 + c], 0xdd);
        }
}

/* X op(L) = B for 32 rows of B, four registers (of eight rows) per column: each unknown is the naive
 * routine's sequence (multiply, subtract, in increasing t; divide) on the 32 rows at once, four
 * independent subtraction chains that hide each other's latency. The rows are copied to a local
 * tile first (rows of B a multiple of 4 KiB apart would all fall into one cache set) and turned
 * into columns by 8 x 8 transposes. */
static void dtrsm_rows_32(it_op op, size_t n, const double *L, size_t ldl, double *b, size_t ldb)
{
    enum { W = IT__TRSM_BASE };
    __m512d T[W][4], r[8];
    double buf[32 * W];
    size_t n8 = (n + 7) / 8 * 8;
    for (size_t i = 0; i < 32; i++) {
        memcpy(buf + i * W, b + i * ldb, n * sizeof(double));
        for (size_t j = n; j < n8; j++) buf[i * W + j] = 0.0;
    }
    for (size_t j = 0; j < n8; j += 8)
        for (int q = 0; q < 4; q++) {
            for (int i = 0; i < 8; i++) r[i] = _mm512_loadu_pd(buf + (8 * q + i) * W + j);
            transpose_8x8(r);
            for (int i = 0; i < 8; i++) T[j + i][q] = r[i];
        }
    for (size_t s = 0; s < n; s++) {
        size_t jj = op == IT_T ? s : n - 1 - s, t0 = op == IT_T ? 0 : jj + 1, t1 = op == IT_T ? jj : n;
        __m512d v0 = T[jj][0], v1 = T[jj][1], v2 = T[jj][2], v3 = T[jj][3];
        for (size_t t = t0; t < t1; t++) {
            __m512d l = _mm512_set1_pd(op == IT_N ? L[t * ldl + jj] : L[jj * ldl + t]);
            v0 = _mm512_sub_pd(v0, _mm512_mul_pd(T[t][0], l));
            v1 = _mm512_sub_pd(v1, _mm512_mul_pd(T[t][1], l));
            v2 = _mm512_sub_pd(v2, _mm512_mul_pd(T[t][2], l));
            v3 = _mm512_sub_pd(v3, _mm512_mul_pd(T[t][3], l));
        }
        __m512d d = _mm512_set1_pd(L[jj * ldl + jj]);
        T[jj][0] = _mm512_div_pd(v0, d), T[jj][1] = _mm512_div_pd(v1, d);
        T[jj][2] = _mm512_div_pd(v2, d), T[jj][3] = _mm512_div_pd(v3, d);
    }
    for (size_t j = 0; j < n8; j += 8)
        for (int q = 0; q < 4; q++) {
            for (int i = 0; i < 8; i++) r[i] = T[j + i][q];
            transpose_8x8(r);
            for (int i = 0; i < 8; i++) _mm512_storeu_pd(buf + (8 * q + i) * W + j, r[i]);
        }
    for (size_t i = 0; i < 32; i++) memcpy(b + i * ldb, buf + i * W, n * sizeof(double));
}

/* X op(L) = B: blocks of 32 rows, then the last rows eight at a time (a masked gather of each
 * column into one register, the same sequence of operations). */
static void dtrsm_rows_8(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb)
{
    __m512d T[IT__TRSM_BASE];
    long long ld = (long long)ldb;
    __m512i rows = _mm512_set_epi64(7 * ld, 6 * ld, 5 * ld, 4 * ld, 3 * ld, 2 * ld, ld, 0);
    size_t i = 0;
    for (; i + 32 <= m; i += 32) dtrsm_rows_32(op, n, L, ldl, B + i * ldb, ldb);
    for (; i < m; i += 8) {
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
