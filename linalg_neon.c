/* linalg_neon.c -- NEON micro-kernels for aarch64 (Advanced SIMD is part of the base ISA there).
 *
 * Same scheme as linalg_avx512.c with 128-bit registers: float 8 x 12 (three 4-wide B registers),
 * double 8 x 6; 24 accumulators in both, of the 32
 * vector registers; A values are loaded and broadcast in one instruction (ld1r). The contract is in
 * internal.h. */
#include "internal.h"

#if defined(__aarch64__) && !defined(IT_NOSIMD)
#include <arm_neon.h>
#include <math.h>

#define SMR 8
#define SNR 12
#define DMR 8
#define DNR 6

_Static_assert(SMR <= IT__MAX_MR && SNR <= IT__MAX_NR && DMR <= IT__MAX_MR && DNR <= IT__MAX_NR,
               "micro-tile larger than the contract's IT__MAX_MR x IT__MAX_NR");

static void s_update(const float *t, float *c, size_t ldc, float alpha, float beta, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? alpha * t[i * SNR + j] : fmaf(alpha, t[i * SNR + j], beta * c[i * ldc + j]);
}

/* The accumulators are spilled to a tile and every element updated by the scalar formula, which
 * on aarch64 compiles to one fused multiply-add as the contract asks. */
static void sgemm_8x12(size_t k, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                       size_t m, size_t n)
{
    float32x4_t acc[SMR][3];
    for (int i = 0; i < SMR; i++) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.0f);
    for (size_t p = 0; p < k; p++) {
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
#pragma GCC unroll 8
        for (int i = 0; i < SMR; i++) {
            float32x4_t ai = vld1q_dup_f32(a + i);
            acc[i][0] = vfmaq_f32(acc[i][0], ai, b0);
            acc[i][1] = vfmaq_f32(acc[i][1], ai, b1);
            acc[i][2] = vfmaq_f32(acc[i][2], ai, b2);
        }
        a += SMR;
        b += SNR;
    }
    float t[SMR * SNR];
    for (int i = 0; i < SMR; i++) {
        vst1q_f32(t + i * SNR, acc[i][0]);
        vst1q_f32(t + i * SNR + 4, acc[i][1]);
        vst1q_f32(t + i * SNR + 8, acc[i][2]);
    }
    s_update(t, c, ldc, alpha, beta, m, n);
}

static void d_update(const double *t, double *c, size_t ldc, double alpha, double beta, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0 ? alpha * t[i * DNR + j] : fma(alpha, t[i * DNR + j], beta * c[i * ldc + j]);
}

static void dgemm_8x6(size_t k, const double *a, const double *b, double *c, size_t ldc, double alpha, double beta,
                      size_t m, size_t n)
{
    float64x2_t acc[DMR][3];
    for (int i = 0; i < DMR; i++) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f64(0.0);
    for (size_t p = 0; p < k; p++) {
        float64x2_t b0 = vld1q_f64(b), b1 = vld1q_f64(b + 2), b2 = vld1q_f64(b + 4);
#pragma GCC unroll 8
        for (int i = 0; i < DMR; i++) {
            float64x2_t ai = vld1q_dup_f64(a + i);
            acc[i][0] = vfmaq_f64(acc[i][0], ai, b0);
            acc[i][1] = vfmaq_f64(acc[i][1], ai, b1);
            acc[i][2] = vfmaq_f64(acc[i][2], ai, b2);
        }
        a += DMR;
        b += DNR;
    }
    double t[DMR * DNR];
    for (int i = 0; i < DMR; i++) {
        vst1q_f64(t + i * DNR, acc[i][0]);
        vst1q_f64(t + i * DNR + 2, acc[i][1]);
        vst1q_f64(t + i * DNR + 4, acc[i][2]);
    }
    d_update(t, c, ldc, alpha, beta, m, n);
}

const it__kernels it__kernels_neon = {
    "neon",
    SMR, SNR, 256, 240, 2048,
    DMR, DNR, 256, 120, 2048,
    sgemm_8x12,
    dgemm_8x6,
    NULL, /* the portable triangular base case */
};

#else
typedef int it__no_neon; /* an empty translation unit is not valid C */
#endif
