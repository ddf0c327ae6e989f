/* test_linalg.c -- the linear algebra of linalg.c against its naive twins and by identities:
 *   GEMM (float, double) for every kernel set this machine runs, every transpose pair, shapes that
 *   are and are not multiples of the micro-tiles and cache blocks, padded leading dimensions,
 *   alpha/beta with NaN in C for beta = 0, to 1e-5 (float) / 1e-12 (double) normalised error;
 *   the micro-kernel contract (partial tiles = part of the full tile, bit for bit);
 *   Gram statistics (upper triangle only, accumulation, a long sum against compensated summation);
 *   Cholesky residual ||L L^T - A||_F / ||A||_F and non-SPD detection with the failing pivot;
 *   triangular solves by residual; the SPD solve X Q = P;
 *   the SVD against matrices of known spectrum (Eckart-Young optimum, orthonormality);
 *   results bit-identical for 1, 2 and 7 threads.
 * Random inputs come from a seeded splitmix64 stream, so every run sees the same matrices. */
#include "test.h"

#include "internal.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ============================================================================================ */
/* Helpers: random numbers, sentinels, kernel sets, thread counts                               */
/* ============================================================================================ */

#define PAD 3 /* extra columns in every test matrix, and extra elements after its last row */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static double rng_unif(uint64_t *s) { return (double)(rng_next(s) >> 11) / 4503599627370496.0 - 1.0; }

/* Standard normal (Box-Muller). */
static double rng_gauss(uint64_t *s)
{
    double u1 = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Quiet NaNs with a payload: padding and "never read" cells hold them and must keep their bits. */
static float sent_f(void)
{
    uint32_t u = 0x7fc5a5a5u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static double sent_d(void)
{
    uint64_t u = 0x7ff8a5a5a5a5a5a5u;
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}
static int is_sent_f(float f) { float s = sent_f(); return memcmp(&f, &s, sizeof f) == 0; }
static int is_sent_d(double d) { double s = sent_d(); return memcmp(&d, &s, sizeof d) == 0; }

/* A rows x cols float matrix with ld = cols + PAD: random entries, sentinels in the padding and in
 * PAD elements after the last row. */
static float *s_matrix(size_t rows, size_t cols, size_t *ld, uint64_t *seed)
{
    *ld = cols + PAD;
    size_t size = rows * *ld + PAD;
    float *M = malloc(size * sizeof *M);
    for (size_t i = 0; i < size; i++) M[i] = sent_f();
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) M[i * *ld + j] = (float)rng_unif(seed);
    return M;
}

static double *d_matrix(size_t rows, size_t cols, size_t *ld, uint64_t *seed)
{
    *ld = cols + PAD;
    size_t size = rows * *ld + PAD;
    double *M = malloc(size * sizeof *M);
    for (size_t i = 0; i < size; i++) M[i] = sent_d();
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) M[i * *ld + j] = rng_unif(seed);
    return M;
}

/* The number of cells outside the rows x cols window of a matrix from s_matrix/d_matrix that lost
 * their sentinel. */
static size_t s_pad_broken(const float *M, size_t rows, size_t cols, size_t ld)
{
    size_t bad = 0;
    for (size_t i = 0; i < rows * ld + PAD; i++) bad += (i / ld >= rows || i % ld >= cols) && !is_sent_f(M[i]);
    return bad;
}
static size_t d_pad_broken(const double *M, size_t rows, size_t cols, size_t ld)
{
    size_t bad = 0;
    for (size_t i = 0; i < rows * ld + PAD; i++) bad += (i / ld >= rows || i % ld >= cols) && !is_sent_d(M[i]);
    return bad;
}

static void *dup_bytes(const void *p, size_t bytes)
{
    void *q = malloc(bytes ? bytes : 1);
    memcpy(q, p, bytes);
    return q;
}

/* The kernel sets this machine runs, in the order generic, avx2, avx512, neon; returns the count. */
static size_t kernel_sets(const char *sets[4])
{
    static const char *const names[] = {"generic", "avx2", "avx512", "neon"};
    const char *orig = it_kernels();
    size_t n = 0;
    for (size_t i = 0; i < 4; i++)
        if (it_set_kernels(names[i]) == IT_OK) sets[n++] = names[i];
    CHECK(it_set_kernels(orig) == IT_OK);
    return n;
}

static const char *op_name(it_op ta, it_op tb)
{
    static const char *const names[] = {"NN", "NT", "TN", "TT"};
    return names[(ta == IT_T) * 2 + (tb == IT_T)];
}

/* Stored shape of a matrix whose op is r x c. */
static void stored_shape(it_op t, size_t r, size_t c, size_t *rows, size_t *cols)
{
    *rows = t == IT_N ? r : c;
    *cols = t == IT_N ? c : r;
}

/* Element (r, c) of op(M). */
static double s_op_at(const float *M, size_t ld, it_op t, size_t r, size_t c)
{
    return t == IT_N ? M[r * ld + c] : M[c * ld + r];
}
static double d_op_at(const double *M, size_t ld, it_op t, size_t r, size_t c)
{
    return t == IT_N ? M[r * ld + c] : M[c * ld + r];
}

/* ============================================================================================ */
/* GEMM against the naive twins                                                                  */
/* ============================================================================================ */

typedef struct {
    it_op ta, tb;
    size_t m, n, k;
    double alpha, beta;
} gcase;

/* The worst error over a group of cases, for one kernel set. */
typedef struct {
    double maxabs, maxrel;
    gcase worst;
    size_t pad_bad, rc_bad;
} gstat;

static void gstat_add(gstat *st, const gcase *c, double abserr, double relerr)
{
    if (abserr > st->maxabs) st->maxabs = abserr;
    if (relerr > st->maxrel || (relerr != relerr && st->maxrel == st->maxrel)) st->maxrel = relerr, st->worst = *c;
}

/* The shapes m, n, k and a thread count: every triple from {1, 7, 33} (alternately 1 and 3
 * threads), then larger ones that cross the micro-tiles and the cache blocks, on one thread where
 * a block must be crossed inside one task (k past KC = 256/384, n past NB = 120..480, m past
 * MB = 1024..3072). */
static const size_t gemm_shapes[][4] = {
    {129, 129, 129, 3}, {257, 33, 129, 1}, {33, 257, 129, 3}, {257, 257, 7, 3}, {1, 257, 257, 1}, {257, 1, 129, 3},
    {129, 7, 257, 3},   {13, 31, 385, 1},  {31, 47, 481, 1},  {47, 13, 481, 3}, {129, 481, 13, 1}, {385, 33, 47, 3},
    {13, 129, 385, 3},  {3100, 7, 5, 1},
};
#define N_SMALL 27
#define N_SHAPES (N_SMALL + sizeof gemm_shapes / sizeof *gemm_shapes)

static const double gemm_ab[3][2] = {{1.0, 0.0}, {-0.5, 2.0}, {1.0, 1.0}};

/* Shape s of the list (the 27 small triples, then gemm_shapes); returns its thread count. */
static int gemm_shape(size_t s, size_t *m, size_t *n, size_t *k)
{
    static const size_t small[] = {1, 7, 33};
    if (s < N_SMALL) {
        *m = small[s / 9], *n = small[s / 3 % 3], *k = small[s % 3];
        return s % 2 ? 1 : 3;
    }
    *m = gemm_shapes[s - N_SMALL][0], *n = gemm_shapes[s - N_SMALL][1], *k = gemm_shapes[s - N_SMALL][2];
    return (int)gemm_shapes[s - N_SMALL][3];
}

/* Row norms of op(A) [m x k] and column norms of op(B) [k x n], in double: the normalisation
 * |C - C_ref|_ij / (|alpha| ||op(A)_i|| ||op(B)^j|| + |beta C_ij|) bounds the rounding of a dot. */
static void s_norms(const gcase *c, const float *A, size_t lda, const float *B, size_t ldb, double *na, double *nb)
{
    for (size_t i = 0; i < c->m; i++) {
        double s = 0.0;
        for (size_t p = 0; p < c->k; p++) s += s_op_at(A, lda, c->ta, i, p) * s_op_at(A, lda, c->ta, i, p);
        na[i] = sqrt(s);
    }
    for (size_t j = 0; j < c->n; j++) {
        double s = 0.0;
        for (size_t p = 0; p < c->k; p++) s += s_op_at(B, ldb, c->tb, p, j) * s_op_at(B, ldb, c->tb, p, j);
        nb[j] = sqrt(s);
    }
}

static void d_norms(const gcase *c, const double *A, size_t lda, const double *B, size_t ldb, double *na, double *nb)
{
    for (size_t i = 0; i < c->m; i++) {
        double s = 0.0;
        for (size_t p = 0; p < c->k; p++) s += d_op_at(A, lda, c->ta, i, p) * d_op_at(A, lda, c->ta, i, p);
        na[i] = sqrt(s);
    }
    for (size_t j = 0; j < c->n; j++) {
        double s = 0.0;
        for (size_t p = 0; p < c->k; p++) s += d_op_at(B, ldb, c->tb, p, j) * d_op_at(B, ldb, c->tb, p, j);
        nb[j] = sqrt(s);
    }
}

/* Compares C with the naive result R (C0 the input C) over the m x n window. */
static void s_compare(const gcase *c, const float *C, const float *R, const float *C0, size_t ldc, const double *na,
                      const double *nb, gstat *st)
{
    for (size_t i = 0; i < c->m; i++)
        for (size_t j = 0; j < c->n; j++) {
            double got = C[i * ldc + j], want = R[i * ldc + j];
            double c0 = c->beta == 0.0 ? 0.0 : fabs(c->beta * C0[i * ldc + j]);
            double scale = fabs(c->alpha) * na[i] * nb[j] + c0 + 1e-300;
            gstat_add(st, c, fabs(got - want), fabs(got - want) / scale);
        }
}

static void d_compare(const gcase *c, const double *C, const double *R, const double *C0, size_t ldc, const double *na,
                      const double *nb, gstat *st)
{
    for (size_t i = 0; i < c->m; i++)
        for (size_t j = 0; j < c->n; j++) {
            double got = C[i * ldc + j], want = R[i * ldc + j];
            double c0 = c->beta == 0.0 ? 0.0 : fabs(c->beta * C0[i * ldc + j]);
            double scale = fabs(c->alpha) * na[i] * nb[j] + c0 + 1e-300;
            gstat_add(st, c, fabs(got - want), fabs(got - want) / scale);
        }
}

/* One float case: the naive result once, then it_sgemm with every kernel set (st[set]). With
 * beta = 0, C starts as NaN sentinels, which must not reach the result. */
static void s_gemm_case(const gcase *c, const char **sets, size_t nsets, gstat *st, uint64_t *seed)
{
    size_t ra, ca, rb, cb, lda, ldb, ldc;
    stored_shape(c->ta, c->m, c->k, &ra, &ca);
    stored_shape(c->tb, c->k, c->n, &rb, &cb);
    float *A = s_matrix(ra, ca, &lda, seed), *B = s_matrix(rb, cb, &ldb, seed), *C0 = s_matrix(c->m, c->n, &ldc, seed);
    size_t csize = (c->m * ldc + PAD) * sizeof *C0;
    if (c->beta == 0.0)
        for (size_t i = 0; i < c->m * ldc; i++) C0[i] = sent_f();
    float *R = dup_bytes(C0, csize), *C = malloc(csize);
    double *na = malloc((c->m + 1) * sizeof *na), *nb = malloc((c->n + 1) * sizeof *nb);
    it_sgemm_naive(c->ta, c->tb, c->m, c->n, c->k, (float)c->alpha, A, lda, B, ldb, (float)c->beta, R, ldc);
    s_norms(c, A, lda, B, ldb, na, nb);
    for (size_t s = 0; s < nsets; s++) {
        it_set_kernels(sets[s]);
        memcpy(C, C0, csize);
        st[s].rc_bad += it_sgemm(c->ta, c->tb, c->m, c->n, c->k, (float)c->alpha, A, lda, B, ldb, (float)c->beta, C,
                                 ldc) != IT_OK;
        s_compare(c, C, R, C0, ldc, na, nb, &st[s]);
        st[s].pad_bad += s_pad_broken(C, c->m, c->n, ldc);
    }
    free(A), free(B), free(C0), free(R), free(C), free(na), free(nb);
}

static void d_gemm_case(const gcase *c, const char **sets, size_t nsets, gstat *st, uint64_t *seed)
{
    size_t ra, ca, rb, cb, lda, ldb, ldc;
    stored_shape(c->ta, c->m, c->k, &ra, &ca);
    stored_shape(c->tb, c->k, c->n, &rb, &cb);
    double *A = d_matrix(ra, ca, &lda, seed), *B = d_matrix(rb, cb, &ldb, seed), *C0 = d_matrix(c->m, c->n, &ldc, seed);
    size_t csize = (c->m * ldc + PAD) * sizeof *C0;
    if (c->beta == 0.0)
        for (size_t i = 0; i < c->m * ldc; i++) C0[i] = sent_d();
    double *R = dup_bytes(C0, csize), *C = malloc(csize);
    double *na = malloc((c->m + 1) * sizeof *na), *nb = malloc((c->n + 1) * sizeof *nb);
    it_dgemm_naive(c->ta, c->tb, c->m, c->n, c->k, c->alpha, A, lda, B, ldb, c->beta, R, ldc);
    d_norms(c, A, lda, B, ldb, na, nb);
    for (size_t s = 0; s < nsets; s++) {
        it_set_kernels(sets[s]);
        memcpy(C, C0, csize);
        st[s].rc_bad += it_dgemm(c->ta, c->tb, c->m, c->n, c->k, c->alpha, A, lda, B, ldb, c->beta, C, ldc) != IT_OK;
        d_compare(c, C, R, C0, ldc, na, nb, &st[s]);
        st[s].pad_bad += d_pad_broken(C, c->m, c->n, ldc);
    }
    free(A), free(B), free(C0), free(R), free(C), free(na), free(nb);
}

/* Prints and checks the worst errors of one group (precision x transpose pair) per kernel set. */
static void gemm_report(const char *prec, it_op ta, it_op tb, const char **sets, size_t nsets, const gstat *st,
                        double tol)
{
    for (size_t s = 0; s < nsets; s++) {
        const gcase *w = &st[s].worst;
        test_note("%s %s %-7s max abs %.3g, max rel %.3g (worst %zux%zux%zu alpha %g beta %g)", prec, op_name(ta, tb),
                  sets[s], st[s].maxabs, st[s].maxrel, w->m, w->n, w->k, w->alpha, w->beta);
        CHECKF(st[s].maxrel <= tol, "%s %s %s: rel error %.3g > %.1g at %zux%zux%zu alpha %g beta %g", prec,
               op_name(ta, tb), sets[s], st[s].maxrel, tol, w->m, w->n, w->k, w->alpha, w->beta);
        CHECKF(st[s].pad_bad == 0, "%s %s %s: %zu padding cells of C written", prec, op_name(ta, tb), sets[s],
               st[s].pad_bad);
        CHECKF(st[s].rc_bad == 0, "%s %s %s: %zu calls failed", prec, op_name(ta, tb), sets[s], st[s].rc_bad);
    }
}

/* Every shape and transpose pair; the small shapes with every alpha/beta, the large ones with one
 * pair each (in turn); one or three threads (the thread tests show the count does not matter). */
static void gemm_all_shapes(int dbl)
{
    const char *sets[4];
    size_t nsets = kernel_sets(sets);
    const char *orig = it_kernels();
    int threads = it_get_threads();
    uint64_t seed = dbl ? 2 : 1;
    for (int op = 0; op < 4; op++) {
        gstat st[4];
        memset(st, 0, sizeof st);
        for (size_t s = 0; s < N_SHAPES; s++) {
            gcase c = {op / 2 ? IT_T : IT_N, op % 2 ? IT_T : IT_N, 0, 0, 0, 0.0, 0.0};
            it_set_threads(gemm_shape(s, &c.m, &c.n, &c.k));
            for (size_t ab = 0; ab < 3; ab++) {
                if (s >= N_SMALL && ab != (s + (size_t)op) % 3) continue;
                c.alpha = gemm_ab[ab][0], c.beta = gemm_ab[ab][1];
                if (dbl) d_gemm_case(&c, sets, nsets, st, &seed);
                else s_gemm_case(&c, sets, nsets, st, &seed);
            }
        }
        gemm_report(dbl ? "dgemm" : "sgemm", op / 2 ? IT_T : IT_N, op % 2 ? IT_T : IT_N, sets, nsets, st,
                    dbl ? 1e-12 : 1e-5);
    }
    it_set_threads(threads);
    CHECK(it_set_kernels(orig) == IT_OK);
}

static void linalg_sgemm_vs_naive(void) { gemm_all_shapes(0); }
static void linalg_dgemm_vs_naive(void) { gemm_all_shapes(1); }

/* m = 0 or n = 0 leaves C alone (even NaNs); k = 0 gives C = beta C, zeros for beta = 0. */
static void linalg_gemm_empty_dims(void)
{
    const char *sets[4];
    size_t nsets = kernel_sets(sets), ld;
    const char *orig = it_kernels();
    uint64_t seed = 3;
    for (size_t s = 0; s < nsets; s++) {
        it_set_kernels(sets[s]);
        float *sc = s_matrix(9, 5, &ld, &seed), *sc0 = dup_bytes(sc, (9 * ld + PAD) * sizeof *sc);
        double *dc = d_matrix(9, 5, &ld, &seed), *dc0 = dup_bytes(dc, (9 * ld + PAD) * sizeof *dc);
        float x = 1.0f;
        double y = 1.0;
        CHECK(it_sgemm(IT_N, IT_N, 0, 5, 4, 1.0f, &x, 4, &x, 5, 0.0f, sc, ld) == IT_OK);
        CHECK(it_sgemm(IT_T, IT_N, 9, 0, 4, 1.0f, &x, 9, &x, 1, 0.0f, sc, ld) == IT_OK);
        CHECK(it_dgemm(IT_N, IT_T, 0, 0, 0, 1.0, &y, 1, &y, 1, 0.0, dc, ld) == IT_OK);
        CHECKF(!memcmp(sc, sc0, (9 * ld + PAD) * sizeof *sc) && !memcmp(dc, dc0, (9 * ld + PAD) * sizeof *dc),
               "%s: empty product wrote C", sets[s]);
        CHECK(it_sgemm(IT_N, IT_N, 9, 5, 0, 1.0f, &x, 1, &x, 5, -2.0f, sc, ld) == IT_OK);
        CHECK(it_dgemm(IT_T, IT_T, 9, 5, 0, 1.0, &y, 9, &y, 1, 0.5, dc, ld) == IT_OK);
        int bad = 0;
        for (size_t i = 0; i < 9; i++)
            for (size_t j = 0; j < 5; j++)
                bad += sc[i * ld + j] != -2.0f * sc0[i * ld + j] || dc[i * ld + j] != 0.5 * dc0[i * ld + j];
        CHECKF(bad == 0, "%s: k = 0 is not C = beta C (%d cells)", sets[s], bad);
        for (size_t i = 0; i < 9 * ld; i++) sc[i] = sent_f(), dc[i] = sent_d();
        CHECK(it_sgemm(IT_N, IT_N, 9, 5, 0, 1.0f, &x, 1, &x, 5, 0.0f, sc, ld) == IT_OK);
        CHECK(it_dgemm(IT_N, IT_N, 9, 5, 0, 1.0, &y, 1, &y, 5, 0.0, dc, ld) == IT_OK);
        for (size_t i = 0; i < 9; i++)
            for (size_t j = 0; j < 5; j++) bad += sc[i * ld + j] != 0.0f || dc[i * ld + j] != 0.0;
        CHECKF(bad == 0, "%s: k = 0, beta = 0 over NaN is not 0 (%d cells)", sets[s], bad);
        CHECK(s_pad_broken(sc, 9, 5, ld) == 0 && d_pad_broken(dc, 9, 5, ld) == 0);
        free(sc), free(sc0), free(dc), free(dc0);
    }
    CHECK(it_set_kernels(orig) == IT_OK);
}

/* ============================================================================================ */
/* The micro-kernel contract (internal.h)                                                        */
/* ============================================================================================ */

/* The contract's value of one element, in the kernel's own arithmetic for the SIMD sets: a chain
 * of fused multiply-adds, then fma(alpha, acc, beta c) or alpha acc. */
static float s_contract(size_t k, const float *a, const float *b, size_t mr, size_t nr, size_t i, size_t j,
                        float alpha, float beta, float c)
{
    float acc = 0.0f;
    for (size_t p = 0; p < k; p++) acc = fmaf(a[p * mr + i], b[p * nr + j], acc);
    return beta == 0.0f ? alpha * acc : fmaf(alpha, acc, beta * c);
}

static double d_contract(size_t k, const double *a, const double *b, size_t mr, size_t nr, size_t i, size_t j,
                         double alpha, double beta, double c)
{
    double acc = 0.0;
    for (size_t p = 0; p < k; p++) acc = fma(a[p * mr + i], b[p * nr + j], acc);
    return beta == 0.0 ? alpha * acc : fma(alpha, acc, beta * c);
}

/* Mismatches of the float kernel of kn over depth k: the full tile against the contract (exactly
 * for the SIMD sets, to 1e-5 for the portable one, whose compiler may or may not fuse), and every
 * m x n <= MR x NR tile bit for bit against the full tile's corner, C elsewhere untouched. With
 * beta = 0 C starts as NaN sentinels. */
static size_t s_kernel_tiles(const it__kernels *kn, size_t k, float beta, uint64_t *seed)
{
    size_t mr = kn->smr, nr = kn->snr, ldc = nr + PAD, bad = 0;
    float *ap = malloc(k * mr * 4 + 4), *bp = malloc(k * nr * 4 + 4);
    float *c0 = malloc(mr * ldc * 4), *full = malloc(mr * ldc * 4), *part = malloc(mr * ldc * 4);
    for (size_t i = 0; i < k * mr; i++) ap[i] = (float)rng_unif(seed);
    for (size_t i = 0; i < k * nr; i++) bp[i] = (float)rng_unif(seed);
    for (size_t i = 0; i < mr * ldc; i++) c0[i] = beta == 0.0f || i % ldc >= nr ? sent_f() : (float)rng_unif(seed);
    memcpy(full, c0, mr * ldc * 4);
    kn->sgemm(k, ap, bp, full, ldc, 1.5f, beta, mr, nr);
    for (size_t i = 0; i < mr; i++)
        for (size_t j = 0; j < nr; j++) {
            float want = s_contract(k, ap, bp, mr, nr, i, j, 1.5f, beta, c0[i * ldc + j]);
            float got = full[i * ldc + j];
            bad += strcmp(kn->name, "generic") ? memcmp(&want, &got, 4) != 0 : !(fabsf(got - want) <= 1e-5f * (float)k);
        }
    for (size_t m = 1; m <= mr; m++)
        for (size_t n = 1; n <= nr; n++) {
            memcpy(part, c0, mr * ldc * 4);
            kn->sgemm(k, ap, bp, part, ldc, 1.5f, beta, m, n);
            for (size_t i = 0; i < mr * ldc; i++)
                bad += memcmp(part + i, (i / ldc < m && i % ldc < n ? full : c0) + i, 4) != 0;
        }
    free(ap), free(bp), free(c0), free(full), free(part);
    return bad;
}

static size_t d_kernel_tiles(const it__kernels *kn, size_t k, double beta, uint64_t *seed)
{
    size_t mr = kn->dmr, nr = kn->dnr, ldc = nr + PAD, bad = 0;
    double *ap = malloc(k * mr * 8 + 8), *bp = malloc(k * nr * 8 + 8);
    double *c0 = malloc(mr * ldc * 8), *full = malloc(mr * ldc * 8), *part = malloc(mr * ldc * 8);
    for (size_t i = 0; i < k * mr; i++) ap[i] = rng_unif(seed);
    for (size_t i = 0; i < k * nr; i++) bp[i] = rng_unif(seed);
    for (size_t i = 0; i < mr * ldc; i++) c0[i] = beta == 0.0 || i % ldc >= nr ? sent_d() : rng_unif(seed);
    memcpy(full, c0, mr * ldc * 8);
    kn->dgemm(k, ap, bp, full, ldc, 1.5, beta, mr, nr);
    for (size_t i = 0; i < mr; i++)
        for (size_t j = 0; j < nr; j++) {
            double want = d_contract(k, ap, bp, mr, nr, i, j, 1.5, beta, c0[i * ldc + j]);
            double got = full[i * ldc + j];
            bad += strcmp(kn->name, "generic") ? memcmp(&want, &got, 8) != 0 : !(fabs(got - want) <= 1e-13 * (double)k);
        }
    for (size_t m = 1; m <= mr; m++)
        for (size_t n = 1; n <= nr; n++) {
            memcpy(part, c0, mr * ldc * 8);
            kn->dgemm(k, ap, bp, part, ldc, 1.5, beta, m, n);
            for (size_t i = 0; i < mr * ldc; i++)
                bad += memcmp(part + i, (i / ldc < m && i % ldc < n ? full : c0) + i, 8) != 0;
        }
    free(ap), free(bp), free(c0), free(full), free(part);
    return bad;
}

/* Every kernel set this machine runs, through it__kern() after it_set_kernels. */
static void linalg_kernel_partial_tiles(void)
{
    const char *sets[4];
    size_t nsets = kernel_sets(sets);
    const char *orig = it_kernels();
    uint64_t seed = 4;
    static const size_t depths[] = {1, 37, 300};
    for (size_t s = 0; s < nsets; s++) {
        it_set_kernels(sets[s]);
        const it__kernels *kn = it__kern();
        CHECK(!strcmp(kn->name, sets[s]));
        for (size_t d = 0; d < 3; d++)
            for (int z = 0; z < 2; z++) {
                size_t sb = s_kernel_tiles(kn, depths[d], z ? 0.75f : 0.0f, &seed);
                size_t db = d_kernel_tiles(kn, depths[d], z ? 0.75 : 0.0, &seed);
                CHECKF(sb == 0 && db == 0, "%s k %zu beta %s: %zu float, %zu double mismatches", kn->name, depths[d],
                       z ? "0.75" : "0 (NaN C)", sb, db);
            }
        test_note("%s: float %zux%zu, double %zux%zu tiles; KC %zu/%zu, NB %zu/%zu, MB %zu/%zu", kn->name, kn->smr,
                  kn->snr, kn->dmr, kn->dnr, kn->skc, kn->dkc, kn->snb, kn->dnb, kn->smb, kn->dmb);
    }
    CHECK(it_set_kernels(orig) == IT_OK);
    CHECK(it_set_kernels("no-such-set") == IT_EUNSUPPORTED && it_set_kernels(NULL) == IT_EUNSUPPORTED);
    CHECK(!strcmp(it_kernels(), orig));
}

/* ============================================================================================ */
/* Gram statistics                                                                               */
/* ============================================================================================ */

/* Euclidean norms of the d columns of X [rows x d], in double. */
static double *col_norms(const float *X, size_t ldx, size_t rows, size_t d)
{
    double *nrm = calloc(d + 1, sizeof *nrm);
    for (size_t t = 0; t < rows; t++)
        for (size_t j = 0; j < d; j++) nrm[j] += (double)X[t * ldx + j] * X[t * ldx + j];
    for (size_t j = 0; j < d; j++) nrm[j] = sqrt(nrm[j]);
    return nrm;
}

/* The worst of |G - R| / (||x_i|| ||y_j|| + |G0|) over the cells that should change (upper
 * triangle when upper, else all), and the number of other cells that lost their bits. */
static double gram_diff(const double *G, const double *R, const double *G0, size_t ld, size_t d1, size_t d2,
                        const double *nx, const double *ny, int upper, size_t *touched)
{
    double worst = 0.0;
    for (size_t i = 0; i < d1 * ld + PAD; i++) {
        size_t r = i / ld, c = i % ld;
        if (r < d1 && c < d2 && (!upper || c >= r)) {
            double e = fabs(G[i] - R[i]) / (nx[r] * ny[c] + fabs(G0[i]) + 1e-300);
            worst = e > worst || e != e ? e : worst;
        } else {
            *touched += memcmp(G + i, G0 + i, sizeof *G) != 0;
        }
    }
    return worst;
}

/* G += X^T Y (cross) or the upper triangle of G += X^T X, every kernel set against the naive twin,
 * G starting random with sentinels in the strict lower triangle (Gram) and the padding. */
static void gram_case(size_t rows, size_t d1, size_t d2, int cross, const char **sets, size_t nsets, double *worst,
                      uint64_t *seed)
{
    size_t ldx, ldy, ldg;
    float *X = s_matrix(rows, d1, &ldx, seed), *Y = cross ? s_matrix(rows, d2, &ldy, seed) : X;
    if (!cross) ldy = ldx;
    double *G0 = d_matrix(d1, d2, &ldg, seed), *nx = col_norms(X, ldx, rows, d1), *ny = col_norms(Y, ldy, rows, d2);
    size_t gsize = (d1 * ldg + PAD) * sizeof *G0, touched = 0;
    for (size_t i = 0; !cross && i < d1; i++)
        for (size_t j = 0; j < i; j++) G0[i * ldg + j] = sent_d();
    double *R = dup_bytes(G0, gsize), *G = malloc(gsize);
    if (cross) it_gram_cross_naive(R, ldg, X, ldx, Y, ldy, rows, d1, d2);
    else it_gram_naive(R, ldg, X, ldx, rows, d1);
    for (size_t s = 0; s < nsets; s++) {
        it_set_kernels(sets[s]);
        memcpy(G, G0, gsize);
        int rc = cross ? it_gram_cross(G, ldg, X, ldx, Y, ldy, rows, d1, d2) : it_gram(G, ldg, X, ldx, rows, d1);
        double e = gram_diff(G, R, G0, ldg, d1, d2, nx, ny, !cross, &touched);
        CHECKF(rc == IT_OK && e <= 1e-12 && touched == 0, "%s %s rows %zu d %zux%zu: rc %d, rel %.3g, %zu cells touched",
               cross ? "gram_cross" : "gram", sets[s], rows, d1, d2, rc, e, touched);
        worst[s] = e > worst[s] || e != e ? e : worst[s];
    }
    if (cross) free(Y);
    free(X), free(G0), free(nx), free(ny), free(R), free(G);
}

static void gram_all(int cross)
{
    static const size_t rows[] = {1, 7, 257, 1000}, dims[] = {1, 7, 33, 129};
    static const size_t pairs[][2] = {{1, 7}, {7, 33}, {33, 7}, {129, 33}, {7, 129}, {129, 1}};
    const char *sets[4], *orig = it_kernels();
    size_t nsets = kernel_sets(sets);
    double worst[4] = {0};
    uint64_t seed = cross ? 6 : 5;
    for (size_t r = 0; r < 4; r++)
        for (size_t d = 0; d < 4 + 6 * (size_t)cross; d++) {
            size_t d1 = d < 4 ? dims[d] : pairs[d - 4][0], d2 = d < 4 ? dims[d] : pairs[d - 4][1];
            gram_case(rows[r], d1, d2, cross, sets, nsets, worst, &seed);
        }
    for (size_t s = 0; s < nsets; s++) test_note("%s %s: max rel %.3g", cross ? "gram_cross" : "gram", sets[s], worst[s]);
    CHECK(it_set_kernels(orig) == IT_OK);
}

static void linalg_gram_vs_naive(void) { gram_all(0); }
static void linalg_gram_cross_vs_naive(void) { gram_all(1); }

/* sum_t x_t y_t of exact double products by Neumaier's compensated summation (Neumaier 1974):
 * the exactly rounded sum to within a few units in the last place. */
static double sum_products(const float *X, size_t ld, size_t rows, size_t i, size_t j)
{
    double s = 0.0, comp = 0.0;
    for (size_t t = 0; t < rows; t++) {
        double v = (double)X[t * ld + i] * X[t * ld + j], u = s + v;
        comp += fabs(s) >= fabs(v) ? (s - u) + v : (v - u) + s;
        s = u;
    }
    return s + comp;
}

/* A long sum: 200000 rows, column 0 all 0.1f (X^T X [0][0] = 200000 (double)0.1f^2, one rounding),
 * columns 1-2 random; against compensated sums to 1e-12 of sum |x_i x_j|. */
static void linalg_gram_long_sum(void)
{
    size_t rows = 200000, d = 3, ld = 3;
    float *X = malloc(rows * d * sizeof *X);
    uint64_t seed = 7;
    for (size_t t = 0; t < rows; t++)
        X[t * ld] = 0.1f, X[t * ld + 1] = (float)rng_unif(&seed), X[t * ld + 2] = (float)(1.0 + 0.5 * rng_unif(&seed));
    double ref[9], scale[9], v = (double)0.1f * (double)0.1f;
    double *nrm = col_norms(X, ld, rows, d);
    for (size_t i = 0; i < 9; i++) ref[i] = sum_products(X, ld, rows, i / 3, i % 3), scale[i] = nrm[i / 3] * nrm[i % 3];
    CHECK(ref[0] == 200000.0 * v);
    const char *sets[4], *orig = it_kernels();
    size_t nsets = kernel_sets(sets);
    for (size_t s = 0; s < nsets; s++) {
        double G[9] = {0}, worst = 0.0;
        it_set_kernels(sets[s]);
        CHECK(it_gram(G, 3, X, ld, rows, d) == IT_OK);
        for (size_t i = 0; i < 9; i++)
            if (i % 3 >= i / 3) worst = fmax(worst, fabs(G[i] - ref[i]) / scale[i]);
        test_note("gram %s, 200000 rows: [0][0] rel %.3g, worst rel %.3g", sets[s], fabs(G[0] - ref[0]) / ref[0], worst);
        CHECKF(worst <= 1e-12, "gram %s: long sum rel error %.3g", sets[s], worst);
    }
    double Gn[9] = {0};
    it_gram_naive(Gn, 3, X, ld, rows, d);
    test_note("gram naive, 200000 rows: [0][0] rel %.3g", fabs(Gn[0] - ref[0]) / ref[0]);
    CHECK(it_set_kernels(orig) == IT_OK);
    free(X), free(nrm);
}

/* ============================================================================================ */
/* Cholesky                                                                                      */
/* ============================================================================================ */

/* A [n x n] = B B^T + 0.5 I with B [n x 32] random: symmetric positive definite with condition
 * number up to about 10^4 (full, ld n). */
static double *spd_matrix(size_t n, uint64_t *seed)
{
    size_t w = 32;
    double *B = malloc(n * w * sizeof *B), *A = malloc((n * n + 1) * sizeof *A);
    for (size_t i = 0; i < n * w; i++) B[i] = rng_unif(seed);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j <= i; j++) {
            double s = i == j ? 0.5 : 0.0;
            for (size_t t = 0; t < w; t++) s += B[i * w + t] * B[j * w + t];
            A[i * n + j] = A[j * n + i] = s;
        }
    free(B);
    return A;
}

/* The lower triangle of A0 [n x n] (ld n) in a padded matrix whose strict upper triangle and
 * padding hold sentinels. */
static double *lower_copy(const double *A0, size_t n, size_t *ld)
{
    *ld = n + PAD;
    double *A = malloc((n * *ld + PAD) * sizeof *A);
    for (size_t i = 0; i < n * *ld + PAD; i++) A[i] = sent_d();
    for (size_t i = 0; i < n; i++) memcpy(A + i * *ld, A0 + i * n, (i + 1) * sizeof *A);
    return A;
}

/* ||L L^T - A0||_F / ||A0||_F from the lower triangle of L (A0 full, ld n). */
static double chol_residual(const double *L, size_t ld, const double *A0, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j <= i; j++) {
            double s = 0.0;
            for (size_t t = 0; t <= j; t++) s += L[i * ld + t] * L[j * ld + t];
            double w = i == j ? 1.0 : 2.0, a = A0[i * n + j];
            num += w * (s - a) * (s - a), den += w * a * a;
        }
    return sqrt(num / den);
}

/* The number of strict-upper-triangle and padding cells of A that are not sentinels. */
static size_t upper_broken(const double *A, size_t ld, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n * ld + PAD; i++) bad += (i / ld >= n || i % ld > i / ld) && !is_sent_d(A[i]);
    return bad;
}

/* Every kernel set equal to the naive twin to 1e-12 of max |L|, with the strict upper triangle
 * untouched; ||L L^T - A|| / ||A|| <= 1e-12 for the default set (the others are that close to it). */
static void linalg_potrf_residual(void)
{
    static const size_t sizes[] = {1, 7, 33, 64, 65, 129, 257, 600};
    const char *sets[4], *orig = it_kernels();
    size_t nsets = kernel_sets(sets), ld;
    uint64_t seed = 8;
    for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        size_t n = sizes[c], pivot = 12345;
        double *A0 = spd_matrix(n, &seed), *N = lower_copy(A0, n, &ld), maxl = 0.0;
        CHECK(it_dpotrf_naive(N, ld, n, &pivot) == IT_OK && pivot == 12345);
        for (size_t i = 0; i < n * ld; i++) maxl = i % ld <= i / ld ? fmax(maxl, fabs(N[i])) : maxl;
        for (size_t s = 0; s < nsets; s++) {
            it_set_kernels(sets[s]);
            double *L = lower_copy(A0, n, &ld), diff = 0.0;
            CHECKF(it_dpotrf(L, ld, n, &pivot) == IT_OK, "%s n %zu: not SPD at %zu", sets[s], n, pivot);
            for (size_t i = 0; i < n * ld; i++) diff = i % ld <= i / ld ? fmax(diff, fabs(L[i] - N[i])) : diff;
            double res = !strcmp(sets[s], orig) ? chol_residual(L, ld, A0, n) : 0.0;
            test_note("potrf %s n %zu: residual %.3g, vs naive %.3g", sets[s], n, res, diff / maxl);
            CHECKF(res <= 1e-12 && diff <= 1e-12 * maxl, "potrf %s n %zu: residual %.3g, vs naive %.3g", sets[s], n,
                   res, diff / maxl);
            CHECKF(upper_broken(L, ld, n) == 0, "potrf %s n %zu: upper triangle or padding written", sets[s], n);
            free(L);
        }
        CHECK(upper_broken(N, ld, n) == 0);
        free(A0), free(N);
    }
    CHECK(it_set_kernels(orig) == IT_OK);
}

/* it_dpotrf and its twin on A0 (full, ld n): IT_ENOTSPD at pivot want from both. */
static void expect_not_spd(const double *A0, size_t n, size_t want, const char *what)
{
    size_t ld, p1 = 99999, p2 = 99999;
    double *A = lower_copy(A0, n, &ld), *B = lower_copy(A0, n, &ld);
    int rc1 = it_dpotrf(A, ld, n, &p1), rc2 = it_dpotrf_naive(B, ld, n, &p2);
    CHECKF(rc1 == IT_ENOTSPD && p1 == want, "%s (n %zu): it_dpotrf rc %d pivot %zu, want IT_ENOTSPD at %zu", what, n,
           rc1, p1, want);
    CHECKF(rc2 == IT_ENOTSPD && p2 == want, "%s (n %zu): naive rc %d pivot %zu, want IT_ENOTSPD at %zu", what, n, rc2,
           p2, want);
    CHECK(upper_broken(A, ld, n) == 0);
    CHECK(it_dpotrf(B, ld, n, NULL) == IT_ENOTSPD); /* pivot may be NULL */
    free(A), free(B);
}

/* diag(1, ..., d at p, ..., 1). */
static double *diag_matrix(size_t n, size_t p, double d)
{
    double *A = calloc(n * n + 1, sizeof *A);
    for (size_t i = 0; i < n; i++) A[i * n + i] = i == p ? d : 1.0 + 0.01 * (double)i;
    return A;
}

/* L D L^T with L unit lower triangular random and D = diag(1, .., -1 at p, .., 1): dense, and
 * its first non-positive pivot is p. */
static double *indefinite_matrix(size_t n, size_t p, uint64_t *seed)
{
    double *L = calloc(n * n, sizeof *L), *A = malloc((n * n + 1) * sizeof *A);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) L[i * n + j] = 0.3 * rng_unif(seed);
        L[i * n + i] = 1.0;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t t = 0; t <= (i < j ? i : j); t++) s += L[i * n + t] * L[j * n + t] * (t == p ? -1.0 : 1.0);
            A[i * n + j] = s;
        }
    free(L);
    return A;
}

/* Non-SPD matrices fail with IT_ENOTSPD at the right pivot, in the base case and through the
 * recursion: a negative diagonal, a dense indefinite matrix, NaN and inf, singular PSD ones. */
static void linalg_potrf_not_spd(void)
{
    static const size_t diag_at[][2] = {{40, 5}, {300, 0}, {300, 5}, {300, 64}, {300, 65}, {300, 150}, {300, 299}};
    uint64_t seed = 9;
    double *A;
    for (size_t c = 0; c < sizeof diag_at / sizeof *diag_at; c++) {
        size_t n = diag_at[c][0], p = diag_at[c][1];
        expect_not_spd(A = diag_matrix(n, p, -1.0), n, p, "negative diagonal");
        free(A);
    }
    expect_not_spd(A = diag_matrix(100, 70, 0.0), 100, 70, "zero diagonal"), free(A);
    expect_not_spd(A = calloc(10 * 10, sizeof *A), 10, 0, "zero matrix"), free(A);
    static const size_t indef[][2] = {{20, 7}, {100, 37}, {100, 80}, {257, 200}};
    for (size_t c = 0; c < sizeof indef / sizeof *indef; c++) {
        size_t n = indef[c][0], p = indef[c][1];
        expect_not_spd(A = indefinite_matrix(n, p, &seed), n, p, "dense indefinite");
        free(A);
    }
    A = malloc(100 * 100 * sizeof *A); /* rank 1, integer entries: pivot 1 is exactly 0 */
    for (size_t i = 0; i < 100 * 100; i++) A[i] = (double)((i / 100 + 1) * (i % 100 + 1));
    expect_not_spd(A, 100, 1, "rank-1 PSD"), free(A);
    A = spd_matrix(100, &seed);
    A[3 * 100 + 3] = NAN, expect_not_spd(A, 100, 3, "NaN diagonal");
    A[3 * 100 + 3] = 50.0, A[90 * 100 + 10] = A[10 * 100 + 90] = NAN, expect_not_spd(A, 100, 90, "NaN below the diagonal");
    A[90 * 100 + 10] = A[10 * 100 + 90] = 0.0, A[70 * 100 + 70] = INFINITY, expect_not_spd(A, 100, 70, "inf diagonal");
    free(A);
    double one = 1.0;
    size_t pivot = 7;
    CHECK(it_dpotrf(&one, 1, 0, &pivot) == IT_OK && pivot == 7 && one == 1.0);
    CHECK(it_dpotrf_naive(&one, 1, 0, NULL) == IT_OK);
}

/* ============================================================================================ */
/* Triangular solves                                                                             */
/* ============================================================================================ */

/* L [n x n] lower triangular, well conditioned (diagonal in [1, 2), off-diagonal entries below
 * 1/n), the strict upper triangle and padding sentinels. */
static double *tri_matrix(size_t n, size_t *ld, uint64_t *seed)
{
    double *L = d_matrix(n, n, ld, seed);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            L[i * *ld + j] = j > i ? sent_d() : j == i ? 1.5 + 0.5 * rng_unif(seed) : L[i * *ld + j] / (double)n;
    return L;
}

/* op(L)[r][c], 0 in the structurally zero triangle (the sentinels there are never read). */
static double tri_op(const double *L, size_t ld, it_op op, size_t r, size_t c)
{
    if (op == IT_T) {
        size_t t = r;
        r = c, c = t;
    }
    return c <= r ? L[r * ld + c] : 0.0;
}

/* max over cells of |op(L) X - B| / (|op(L)| |X| + |B|) (left), or of X op(L) - B (right). */
static double trsm_residual(int left, it_op op, size_t n, size_t m, const double *L, size_t ldl, const double *X,
                            const double *B, size_t ldb)
{
    size_t rows = left ? n : m, cols = left ? m : n;
    double worst = 0.0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double s = 0.0, a = 0.0;
            int below = (op == IT_N) == (left != 0); /* the terms t <= d, else t >= d, where op(L) != 0 */
            size_t d = left ? i : j, lo = below ? 0 : d, hi = below ? d + 1 : n;
            for (size_t t = lo; t < hi; t++) {
                double v = left ? tri_op(L, ldl, op, i, t) * X[t * ldb + j] : X[i * ldb + t] * tri_op(L, ldl, op, t, j);
                s += v, a += fabs(v);
            }
            double e = fabs(s - B[i * ldb + j]) / (a + fabs(B[i * ldb + j]) + 1e-300);
            worst = e > worst || e != e ? e : worst;
        }
    return worst;
}

/* One solve for every kernel set: distance to the naive twin <= 1e-12 (relative to max |X|),
 * padding of B untouched; the residual <= 1e-12 for the naive twin and the default set. */
static void trsm_case(int left, it_op op, size_t n, size_t m, const char **sets, size_t nsets, const char *def,
                      double *worst, uint64_t *seed)
{
    size_t ldl, ldb, rows = left ? n : m, cols = left ? m : n;
    double *L = tri_matrix(n, &ldl, seed), *B0 = d_matrix(rows, cols, &ldb, seed), maxx = 0.0;
    size_t bsize = (rows * ldb + PAD) * sizeof *B0;
    double *N = dup_bytes(B0, bsize), *X = malloc(bsize);
    if (left) it_dtrsm_left_naive(op, n, m, L, ldl, N, ldb);
    else it_dtrsm_right_naive(op, m, n, L, ldl, N, ldb);
    for (size_t i = 0; i < rows * ldb; i++) maxx = i % ldb < cols ? fmax(maxx, fabs(N[i])) : maxx;
    for (size_t s = 0; s < nsets; s++) {
        it_set_kernels(sets[s]);
        memcpy(X, B0, bsize);
        int rc = left ? it_dtrsm_left(op, n, m, L, ldl, X, ldb) : it_dtrsm_right(op, m, n, L, ldl, X, ldb);
        double diff = 0.0, res = !strcmp(sets[s], def) ? trsm_residual(left, op, n, m, L, ldl, X, B0, ldb) : 0.0;
        for (size_t i = 0; i < rows * ldb; i++) diff = i % ldb < cols ? fmax(diff, fabs(X[i] - N[i])) : diff;
        diff /= maxx + 1e-300;
        CHECKF(rc == IT_OK && res <= 1e-12 && diff <= 1e-12 && d_pad_broken(X, rows, cols, ldb) == 0,
               "trsm_%s %s %s n %zu m %zu: rc %d residual %.3g vs naive %.3g", left ? "left" : "right",
               op == IT_N ? "N" : "T", sets[s], n, m, rc, res, diff);
        worst[0] = fmax(worst[0], res), worst[1] = fmax(worst[1], diff);
    }
    CHECK(trsm_residual(left, op, n, m, L, ldl, N, B0, ldb) <= 1e-12);
    free(L), free(B0), free(N), free(X);
}

static void trsm_all(int left)
{
    static const size_t ns[] = {1, 7, 31, 32, 33, 100, 257}, ms[] = {1, 5, 300};
    const char *sets[4], *orig = it_kernels();
    size_t nsets = kernel_sets(sets);
    uint64_t seed = 10 + (uint64_t)left;
    for (int op = 0; op < 2; op++) {
        double worst[2] = {0.0, 0.0};
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
            for (size_t j = 0; j < 3; j++) trsm_case(left, op ? IT_T : IT_N, ns[i], ms[j], sets, nsets, orig, worst, &seed);
        test_note("trsm_%s %s: max residual %.3g, max vs naive %.3g", left ? "left" : "right", op ? "T" : "N", worst[0],
                  worst[1]);
    }
    CHECK(it_set_kernels(orig) == IT_OK);
}

static void linalg_trsm_left(void) { trsm_all(1); }
static void linalg_trsm_right(void) { trsm_all(0); }

/* X = P Q^-1: max |X Q - P| / (|X| |Q| + |P|) <= 1e-12; a non-SPD Q gives IT_ENOTSPD and the pivot. */
static void linalg_posv_right(void)
{
    static const size_t sizes[][2] = {{20, 3}, {150, 40}, {257, 1}};
    uint64_t seed = 12;
    for (size_t c = 0; c < 3; c++) {
        size_t n = sizes[c][0], m = sizes[c][1], ldq, ldp, pivot = 0;
        double *Q0 = spd_matrix(n, &seed), *Q = lower_copy(Q0, n, &ldq), *P0 = d_matrix(m, n, &ldp, &seed);
        double *X = dup_bytes(P0, (m * ldp + PAD) * sizeof *X), worst = 0.0;
        CHECK(it_dposv_right(Q, ldq, n, X, ldp, m, &pivot) == IT_OK);
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0.0, a = 0.0;
                for (size_t t = 0; t < n; t++) {
                    double v = X[i * ldp + t] * Q0[t * n + j];
                    s += v, a += fabs(v);
                }
                worst = fmax(worst, fabs(s - P0[i * ldp + j]) / (a + fabs(P0[i * ldp + j])));
            }
        test_note("posv_right n %zu m %zu: residual %.3g", n, m, worst);
        CHECKF(worst <= 1e-12, "posv_right n %zu m %zu: residual %.3g", n, m, worst);
        CHECK(upper_broken(Q, ldq, n) == 0 && d_pad_broken(X, m, n, ldp) == 0);
        free(Q0), free(Q), free(P0), free(X);
    }
    double *Q0 = diag_matrix(100, 77, -2.0), P[100 * 2];
    size_t ldq, pivot = 0;
    double *Q = lower_copy(Q0, 100, &ldq);
    for (size_t i = 0; i < 200; i++) P[i] = 1.0;
    CHECK(it_dposv_right(Q, ldq, 100, P, 100, 2, &pivot) == IT_ENOTSPD && pivot == 77);
    free(Q0), free(Q);
}

/* ============================================================================================ */
/* SVD                                                                                           */
/* ============================================================================================ */

/* q orthonormal rows of length len (q <= len): Gaussian rows through modified Gram-Schmidt, twice. */
static double *orthonormal_rows(size_t q, size_t len, uint64_t *seed)
{
    double *Q = malloc((q * len + 1) * sizeof *Q);
    for (size_t i = 0; i < q; i++) {
        double *v = Q + i * len, nv = 0.0;
        for (size_t z = 0; z < len; z++) v[z] = rng_gauss(seed);
        for (int pass = 0; pass < 2; pass++)
            for (size_t t = 0; t < i; t++) {
                double c = 0.0;
                for (size_t z = 0; z < len; z++) c += Q[t * len + z] * v[z];
                for (size_t z = 0; z < len; z++) v[z] -= c * Q[t * len + z];
            }
        for (size_t z = 0; z < len; z++) nv += v[z] * v[z];
        for (size_t z = 0; z < len; z++) v[z] /= sqrt(nv);
    }
    return Q;
}

/* W [m x n] = sum_{t<q} s_t u_t v_t^T with orthonormal u_t, v_t: singular values s[0..q), then 0. */
static double *known_spectrum(size_t m, size_t n, size_t q, const double *s, uint64_t *seed)
{
    double *Ut = orthonormal_rows(q, m, seed), *Vt = orthonormal_rows(q, n, seed), *W = calloc(m * n + 1, sizeof *W);
    for (size_t t = 0; t < q; t++)
        for (size_t i = 0; i < m; i++) {
            double a = s[t] * Ut[t * m + i];
            for (size_t j = 0; j < n; j++) W[i * n + j] += a * Vt[t * n + j];
        }
    free(Ut), free(Vt);
    return W;
}

static double sum_squares(const double *x, size_t count)
{
    double s = 0.0;
    for (size_t i = 0; i < count; i++) s += x[i] * x[i];
    return s;
}

/* ||W - U diag(S) Vt||_F^2 for U [m x r], S [r], Vt [r x n]. */
static double recon_err2(const double *W, size_t m, size_t n, size_t r, const double *U, const double *S, const double *Vt)
{
    double e = 0.0, *row = malloc((n + 1) * sizeof *row);
    for (size_t i = 0; i < m; i++) {
        memcpy(row, W + i * n, n * sizeof *row);
        for (size_t t = 0; t < r; t++) {
            double a = U[i * r + t] * S[t];
            for (size_t j = 0; j < n; j++) row[j] -= a * Vt[t * n + j];
        }
        e += sum_squares(row, n);
    }
    free(row);
    return e;
}

/* max |U^T U - I| for the k columns of U [m x k]; orth_rows_err: max |V V^T - I| for V [k x n]. */
static double orth_cols_err(const double *U, size_t m, size_t k)
{
    double worst = 0.0;
    for (size_t a = 0; a < k; a++)
        for (size_t b = 0; b <= a; b++) {
            double s = 0.0;
            for (size_t i = 0; i < m; i++) s += U[i * k + a] * U[i * k + b];
            worst = fmax(worst, fabs(s - (a == b)));
        }
    return worst;
}

static double orth_rows_err(const double *V, size_t k, size_t n)
{
    double worst = 0.0;
    for (size_t a = 0; a < k; a++)
        for (size_t b = 0; b <= a; b++) {
            double s = 0.0;
            for (size_t j = 0; j < n; j++) s += V[a * n + j] * V[b * n + j];
            worst = fmax(worst, fabs(s - (a == b)));
        }
    return worst;
}

/* 1 if S [k] is finite, non-negative and non-increasing. */
static int descending(const double *S, size_t k)
{
    for (size_t i = 0; i < k; i++)
        if (!(S[i] >= 0.0 && S[i] < INFINITY) || (i && S[i] > S[i - 1])) return 0;
    return 1;
}

/* The full SVD of W [m x n] by it_svd_jacobi: ||W - U S Vt|| <= 1e-12 ||W||, orthonormal factors
 * to 1e-12, S descending; copies S into s_out (if not NULL). */
static void svd_jacobi_check(const double *W, size_t m, size_t n, const char *what, double *s_out)
{
    size_t k = m < n ? m : n;
    double *U = malloc((m * k + 1) * sizeof *U), *S = malloc((k + 1) * sizeof *S), *Vt = malloc((k * n + 1) * sizeof *Vt);
    it_err err = {0, ""};
    int rc = it_svd_jacobi(W, m, n, U, S, Vt, &err);
    double nw = sqrt(sum_squares(W, m * n)), e = rc == IT_OK ? sqrt(recon_err2(W, m, n, k, U, S, Vt)) : INFINITY;
    double ou = orth_cols_err(U, m, k), ov = orth_rows_err(Vt, k, n);
    test_note("svd_jacobi %s %zux%zu: recon %.3g of ||W||, U^T U %.3g, Vt Vt^T %.3g", what, m, n, nw > 0 ? e / nw : e,
              ou, ov);
    CHECKF(rc == IT_OK && e <= 1e-12 * nw && ou <= 1e-12 && ov <= 1e-12 && descending(S, k),
           "svd_jacobi %s %zux%zu: rc %d (%s), recon %.3g, ||W|| %.3g, U^T U %.3g, Vt Vt^T %.3g", what, m, n, rc,
           err.msg, e, nw, ou, ov);
    if (s_out) memcpy(s_out, S, k * sizeof *S);
    free(U), free(S), free(Vt);
}

/* Random, rank-deficient, zero, 1 x 1 and tall/wide/square matrices. */
static void linalg_svd_jacobi_shapes(void)
{
    static const size_t shapes[][2] = {{1, 1}, {5, 3}, {3, 5}, {8, 8}, {40, 17}, {17, 40}, {60, 60}, {1, 9}, {9, 1}};
    uint64_t seed = 13;
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        size_t m = shapes[c][0], n = shapes[c][1];
        double *W = malloc(m * n * sizeof *W);
        for (size_t i = 0; i < m * n; i++) W[i] = rng_unif(&seed);
        svd_jacobi_check(W, m, n, "random", NULL);
        free(W);
    }
    double *X = malloc(30 * 4 * sizeof *X), *Y = malloc(4 * 20 * sizeof *Y), *W = calloc(30 * 20, sizeof *W), s[20];
    for (size_t i = 0; i < 120; i++) X[i] = rng_unif(&seed), Y[i % 80] = rng_unif(&seed);
    for (size_t i = 0; i < 30; i++) /* W = X Y, rank 4 */
        for (size_t j = 0; j < 20; j++)
            for (size_t t = 0; t < 4; t++) W[i * 20 + j] += X[i * 4 + t] * Y[t * 20 + j];
    svd_jacobi_check(W, 30, 20, "rank 4", s);
    CHECKF(s[4] <= 1e-14 * s[0], "rank 4: S[4] = %.3g of S[0]", s[4] / s[0]);
    memset(W, 0, 30 * 20 * sizeof *W);
    svd_jacobi_check(W, 6, 4, "zero", s);
    svd_jacobi_check(W, 4, 6, "zero", s);
    CHECK(s[0] == 0.0 && s[3] == 0.0);
    W[0] = -3.0;
    svd_jacobi_check(W, 1, 1, "negative", s);
    CHECK(s[0] == 3.0);
    free(X), free(Y), free(W);
}

/* Singular values: 0.8^i (geometric), 1/(1+i) (slow), or 5 - i (q = 5, an exact low rank). */
static double *spectrum(size_t q, int decay)
{
    double *s = malloc(q * sizeof *s);
    for (size_t i = 0; i < q; i++)
        s[i] = decay == 0 ? pow(0.8, (double)i) : decay == 1 ? 1.0 / (1.0 + (double)i) : 5.0 - (double)i;
    return s;
}

/* The Jacobi SVD finds a known spectrum to 1e-12 of the largest value. */
static void linalg_svd_jacobi_known_spectrum(void)
{
    static const size_t shapes[][2] = {{40, 25}, {25, 40}, {60, 60}};
    uint64_t seed = 14;
    for (size_t c = 0; c < 3; c++) {
        size_t m = shapes[c][0], n = shapes[c][1], k = m < n ? m : n;
        double *s = spectrum(k, (int)c % 2), *W = known_spectrum(m, n, k, s, &seed);
        double *S = malloc(k * sizeof *S), worst = 0.0;
        svd_jacobi_check(W, m, n, "known spectrum", S);
        for (size_t i = 0; i < k; i++) worst = fmax(worst, fabs(S[i] - s[i]) / s[0]);
        CHECKF(worst <= 1e-12, "svd_jacobi %zux%zu: singular values off by %.3g of the largest", m, n, worst);
        free(s), free(W), free(S);
    }
}

typedef struct {
    size_t m, n, q, r; /* W [m x n] of rank q, truncated at r */
    int decay;         /* as spectrum() */
} svd_case;

/* it_svd against the known spectrum: S to 1e-10 (relative, or of s_0 where the true value is 0),
 * ||W - U S Vt||_F^2 = sum_{i>=r} s_i^2 (Eckart-Young) to 1e-10 plus 1e-14 ||W||_F^2, the retained
 * energy to 1e-12, orthonormal factors to 1e-12. */
static void svd_known_case(const svd_case *c, uint64_t *seed)
{
    double *s = spectrum(c->q, c->decay), *W = known_spectrum(c->m, c->n, c->q, s, seed);
    double *U = malloc((c->m * c->r + 1) * sizeof *U), *S = malloc((c->r + 1) * sizeof *S);
    double *Vt = malloc((c->r * c->n + 1) * sizeof *Vt), energy = -1.0, kept = 0.0, opt = 0.0, serr = 0.0;
    it_err err = {0, ""};
    int rc = it_svd(W, c->m, c->n, c->r, U, S, Vt, &energy, 42, &err);
    for (size_t i = 0; i < c->q; i++) *(i < c->r ? &kept : &opt) += s[i] * s[i];
    for (size_t i = 0; i < c->r; i++) serr = fmax(serr, fabs(S[i] - (i < c->q ? s[i] : 0.0)) / (i < c->q ? s[i] : s[0]));
    double e2 = recon_err2(W, c->m, c->n, c->r, U, S, Vt), ey = fabs(e2 - opt) / (opt + 1e-4 * (kept + opt));
    double ee = fabs(energy - kept / (kept + opt)), ou = orth_cols_err(U, c->m, c->r), ov = orth_rows_err(Vt, c->r, c->n);
    test_note("svd %zux%zu rank %zu r %zu decay %d: S rel %.3g, ||W - USV||^2 %.6g vs optimum %.6g (rel %.3g), energy "
              "%.3g, U^T U %.3g, Vt Vt^T %.3g", c->m, c->n, c->q, c->r, c->decay, serr, e2, opt, fabs(e2 - opt) / opt,
              ee, ou, ov);
    CHECKF(rc == IT_OK, "svd %zux%zu r %zu: %s", c->m, c->n, c->r, err.msg);
    CHECKF(serr <= 1e-10 && fabs(e2 - opt) <= 1e-10 * opt + 1e-14 * (kept + opt) && ee <= 1e-12,
           "svd %zux%zu rank %zu r %zu decay %d: S rel %.3g, error^2 %.10g vs optimum %.10g (%.3g), energy off %.3g",
           c->m, c->n, c->q, c->r, c->decay, serr, e2, opt, ey, ee);
    CHECKF(ou <= 1e-12 && ov <= 1e-12 && descending(S, c->r), "svd %zux%zu r %zu: U^T U %.3g, Vt Vt^T %.3g", c->m, c->n,
           c->r, ou, ov);
    free(s), free(W), free(U), free(S), free(Vt);
}

/* The small path (min(m, n) <= 128, one-sided Jacobi) and subspace iteration (the others), with
 * geometric and slow decay and an exact rank 5 below r = 8. */
static void linalg_svd_known_spectrum(void)
{
    static const svd_case cases[] = {
        {100, 80, 80, 8, 0},  {60, 200, 60, 20, 1}, {90, 70, 5, 8, 2},    {300, 500, 40, 1, 1},
        {200, 300, 60, 8, 1}, {400, 260, 90, 40, 0}, {600, 160, 40, 8, 0}, {300, 500, 5, 8, 2},
    };
    uint64_t seed = 15;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) svd_known_case(&cases[c], &seed);
}

/* The same seed gives the same bits; r > min(m, n) is IT_EINVAL; r = 0 retains nothing; W = 0
 * retains everything (energy 1). */
static void linalg_svd_reproducible_and_args(void)
{
    enum { M = 200, N = 300, R = 8 }; /* subspace iteration: min(M, N) > 128 */
    uint64_t seed = 16;
    double *s = spectrum(40, 0), *W = known_spectrum(M, N, 40, s, &seed);
    double *U[2], *S[2], *Vt[2], energy = -1.0;
    it_err err = {0, ""};
    for (int t = 0; t < 2; t++) {
        U[t] = malloc(M * R * sizeof *U[t]), S[t] = malloc(R * sizeof *S[t]), Vt[t] = malloc(R * N * sizeof *Vt[t]);
        CHECK(it_svd(W, M, N, R, U[t], S[t], Vt[t], NULL, 7, &err) == IT_OK);
    }
    CHECK(!memcmp(U[0], U[1], M * R * sizeof(double)) && !memcmp(S[0], S[1], R * sizeof(double)) &&
          !memcmp(Vt[0], Vt[1], R * N * sizeof(double)));
    CHECK(it_svd(W, M, N, M + 1, U[0], S[0], Vt[0], &energy, 7, &err) == IT_EINVAL && err.code == IT_EINVAL);
    CHECK(it_svd(W, 20, 10, 11, U[0], S[0], Vt[0], &energy, 7, NULL) == IT_EINVAL);
    CHECK(it_svd(W, 20, 10, 0, U[0], S[0], Vt[0], &energy, 7, &err) == IT_OK && energy == 0.0);
    memset(W, 0, M * N * sizeof *W);
    CHECK(it_svd(W, M, N, R, U[0], S[0], Vt[0], &energy, 7, &err) == IT_OK && energy == 1.0 && S[0][0] == 0.0);
    CHECK(orth_cols_err(U[0], M, R) <= 1e-12 && orth_rows_err(Vt[0], R, N) <= 1e-12);
    for (int t = 0; t < 2; t++) free(U[t]), free(S[t]), free(Vt[t]);
    free(s), free(W);
}

/* ============================================================================================ */
/* Zero sizes                                                                                    */
/* ============================================================================================ */

/* Call i of the routines with a zero dimension: 0 if it returns IT_OK and writes nothing. */
static int zero_size_call(int i)
{
    double L[40 * 40] = {0}, B[9], B0[9], U[9], S[3], Vt[9], e = -1.0; /* L = I [40 x 40] */
    float X[9] = {0};
    size_t p = 77;
    int rc = IT_OK;
    for (int t = 0; t < 9; t++) B[t] = B0[t] = t + 1.0;
    for (int t = 0; t < 40; t++) L[t * 40 + t] = 1.0;
    switch (i) {
    case 0: rc = it_dtrsm_left(IT_N, 0, 3, L, 40, B, 3) | it_dtrsm_right(IT_T, 3, 0, L, 40, B, 3); break;
    case 1: rc = it_dtrsm_left(IT_N, 3, 0, L, 40, B, 3) | it_dtrsm_left(IT_T, 40, 0, L, 40, B, 3); break;
    case 2: rc = it_dtrsm_right(IT_T, 0, 3, L, 40, B, 3) | it_dtrsm_right(IT_N, 0, 40, L, 40, B, 3); break;
    case 3: rc = it_dposv_right(L, 40, 3, B, 3, 0, &p) | (p != 77); break;
    case 4: rc = it_gram(B, 3, X, 3, 0, 3) | it_gram_cross(B, 3, X, 3, X, 3, 0, 3, 2); break;
    case 5: rc = it_svd_jacobi(B, 0, 3, U, S, Vt, NULL); break;
    default: rc = it_svd(B, 3, 0, 0, U, S, Vt, &e, 1, NULL) | (e != 1.0); break;
    }
    return rc != IT_OK || memcmp(B, B0, sizeof B) != 0;
}

/* Each call in a child process, so that a crash is a failed check rather than the end of the run. */
static void linalg_zero_sizes(void)
{
    static const char *const what[] = {"trsm with n = 0", "it_dtrsm_left with m = 0", "it_dtrsm_right with m = 0",
                                       "it_dposv_right with m = 0", "gram over 0 rows", "svd_jacobi 0 x 3",
                                       "svd 3 x 0, r 0"};
    for (int i = 0; i < 7; i++) {
        fflush(stdout), fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) _exit(zero_size_call(i));
        int status = 0;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECKF(!WIFSIGNALED(status), "%s: killed by signal %d%s", what[i], WTERMSIG(status),
               WTERMSIG(status) == SIGFPE ? " (SIGFPE, a division by zero)" : "");
        CHECKF(!WIFEXITED(status) || WEXITSTATUS(status) == 0, "%s: not IT_OK, or B written", what[i]);
    }
}

/* ============================================================================================ */
/* Threads: bit-identical results for 1, 2 and 7 threads                                         */
/* ============================================================================================ */

/* Runs job(ctx, out) with 1, 2 and 7 threads; 1 if the bytes of out are the same every time. */
static int same_for_threads(void (*job)(const void *ctx, void *out), const void *ctx, size_t bytes)
{
    static const int counts[] = {1, 2, 7};
    int old = it_get_threads(), same = 1;
    unsigned char *first = malloc(bytes), *out = malloc(bytes);
    for (int i = 0; i < 3; i++) {
        CHECK(it_set_threads(counts[i]) == IT_OK && it_get_threads() == counts[i]);
        job(ctx, i ? out : first);
        same &= !i || memcmp(first, out, bytes) == 0;
    }
    CHECK(it_set_threads(old) == IT_OK);
    free(first), free(out);
    return same;
}

typedef struct {
    it_op ta, tb, op;
    size_t m, n, k;
    const float *sA, *sB, *sC;
    const double *dA, *dB, *dC;
    size_t lda, ldb, ldc;
} tjob;

static void job_sgemm(const void *ctx, void *out)
{
    const tjob *j = ctx;
    memcpy(out, j->sC, j->m * j->ldc * sizeof(float));
    CHECK(it_sgemm(j->ta, j->tb, j->m, j->n, j->k, 0.75f, j->sA, j->lda, j->sB, j->ldb, -1.25f, out, j->ldc) == IT_OK);
}

static void job_dgemm(const void *ctx, void *out)
{
    const tjob *j = ctx;
    memcpy(out, j->dC, j->m * j->ldc * sizeof(double));
    CHECK(it_dgemm(j->ta, j->tb, j->m, j->n, j->k, 0.75, j->dA, j->lda, j->dB, j->ldb, -1.25, out, j->ldc) == IT_OK);
}

/* sgemm and dgemm, every transpose pair, on shapes that make several tasks for 2 and 7 threads:
 * split by rows, by columns, and with k past the depth block; every kernel set for NN. */
static void linalg_threads_gemm(void)
{
    static const size_t shapes[][3] = {{400, 37, 50}, {37, 400, 50}, {100, 40, 300}};
    const char *sets[4], *orig = it_kernels();
    size_t nsets = kernel_sets(sets);
    uint64_t seed = 17;
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++)
        for (int op = 0; op < 4; op++) {
            tjob j = {op / 2 ? IT_T : IT_N, op % 2 ? IT_T : IT_N, IT_N, shapes[c][0], shapes[c][1], shapes[c][2],
                      NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};
            size_t ra, ca, rb, cb;
            stored_shape(j.ta, j.m, j.k, &ra, &ca), stored_shape(j.tb, j.k, j.n, &rb, &cb);
            float *sA = s_matrix(ra, ca, &j.lda, &seed), *sB = s_matrix(rb, cb, &j.ldb, &seed);
            float *sC = s_matrix(j.m, j.n, &j.ldc, &seed);
            double *dA = d_matrix(ra, ca, &j.lda, &seed), *dB = d_matrix(rb, cb, &j.ldb, &seed);
            double *dC = d_matrix(j.m, j.n, &j.ldc, &seed);
            j.sA = sA, j.sB = sB, j.sC = sC, j.dA = dA, j.dB = dB, j.dC = dC;
            for (size_t s = 0; s < nsets; s++) {
                if (op != 0 && strcmp(sets[s], orig)) continue; /* every set for NN, the default for the rest */
                it_set_kernels(sets[s]);
                CHECKF(same_for_threads(job_sgemm, &j, j.m * j.ldc * sizeof(float)), "sgemm %s %s %zux%zux%zu differs",
                       sets[s], op_name(j.ta, j.tb), j.m, j.n, j.k);
                CHECKF(same_for_threads(job_dgemm, &j, j.m * j.ldc * sizeof(double)), "dgemm %s %s %zux%zux%zu differs",
                       sets[s], op_name(j.ta, j.tb), j.m, j.n, j.k);
            }
            free(sA), free(sB), free(sC), free(dA), free(dB), free(dC);
        }
    CHECK(it_set_kernels(orig) == IT_OK);
}

static void job_gram(const void *ctx, void *out)
{
    const tjob *j = ctx;
    memcpy(out, j->dC, j->m * j->ldc * sizeof(double));
    if (j->sB) CHECK(it_gram_cross(out, j->ldc, j->sA, j->lda, j->sB, j->ldb, j->k, j->m, j->n) == IT_OK);
    else CHECK(it_gram(out, j->ldc, j->sA, j->lda, j->k, j->m) == IT_OK);
}

/* it_gram (d 200) and it_gram_cross (130 x 70) over 400 rows. */
static void linalg_threads_gram(void)
{
    uint64_t seed = 18;
    tjob j = {IT_T, IT_N, IT_N, 200, 200, 400, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};
    float *X = s_matrix(400, 200, &j.lda, &seed), *Y = s_matrix(400, 70, &j.ldb, &seed);
    double *G = d_matrix(200, 200, &j.ldc, &seed);
    j.sA = X, j.dC = G;
    CHECK(same_for_threads(job_gram, &j, 200 * j.ldc * sizeof(double)));
    j.sB = Y, j.m = 130, j.n = 70;
    CHECK(same_for_threads(job_gram, &j, 130 * j.ldc * sizeof(double)));
    free(X), free(Y), free(G);
}

static void job_potrf(const void *ctx, void *out)
{
    const tjob *j = ctx;
    memcpy(out, j->dA, j->n * j->lda * sizeof(double));
    CHECK(it_dpotrf(out, j->lda, j->n, NULL) == IT_OK);
}

static void job_trsm(const void *ctx, void *out)
{
    const tjob *j = ctx;
    size_t rows = j->ta == IT_N ? j->n : j->m; /* ta: IT_N left, IT_T right */
    memcpy(out, j->dB, rows * j->ldb * sizeof(double));
    if (j->ta == IT_N) CHECK(it_dtrsm_left(j->op, j->n, j->m, j->dA, j->lda, out, j->ldb) == IT_OK);
    else CHECK(it_dtrsm_right(j->op, j->m, j->n, j->dA, j->lda, out, j->ldb) == IT_OK);
}

/* it_dpotrf (n 700: three block steps, the next block factored beside the trailing update) and the
 * four triangular solves (n 200, 150 right-hand sides). */
static void linalg_threads_potrf_trsm(void)
{
    uint64_t seed = 19;
    tjob j = {IT_N, IT_N, IT_N, 0, 700, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};
    double *A0 = spd_matrix(700, &seed), *A = lower_copy(A0, 700, &j.lda);
    j.dA = A;
    CHECK(same_for_threads(job_potrf, &j, 700 * j.lda * sizeof(double)));
    size_t ldl, ldr;
    double *L = tri_matrix(200, &j.lda, &seed);
    double *BL = d_matrix(200, 150, &ldl, &seed), *BR = d_matrix(150, 200, &ldr, &seed);
    j.dA = L, j.n = 200, j.m = 150;
    for (int side = 0; side < 2; side++)
        for (int op = 0; op < 2; op++) {
            j.ta = side ? IT_T : IT_N, j.op = op ? IT_T : IT_N, j.dB = side ? BR : BL, j.ldb = side ? ldr : ldl;
            CHECKF(same_for_threads(job_trsm, &j, (side ? 150 : 200) * j.ldb * sizeof(double)), "trsm_%s %s differs",
                   side ? "right" : "left", op ? "T" : "N");
        }
    free(A0), free(A), free(L), free(BL), free(BR);
}

static void job_svd(const void *ctx, void *out)
{
    const tjob *j = ctx;
    double *U = out, *S = U + j->m * j->k, *Vt = S + j->k, energy;
    CHECK(it_svd(j->dA, j->m, j->n, j->k, U, S, Vt, &energy, 99, NULL) == IT_OK);
}

/* it_svd by subspace iteration (160 x 300, r 8; the Jacobi path is serial). */
static void linalg_threads_svd(void)
{
    uint64_t seed = 20;
    double *s = spectrum(40, 0), *W = known_spectrum(160, 300, 40, s, &seed);
    tjob j = {IT_N, IT_N, IT_N, 160, 300, 8, NULL, NULL, NULL, W, NULL, NULL, 0, 0, 0};
    CHECK(same_for_threads(job_svd, &j, (160 * 8 + 8 + 8 * 300) * sizeof(double)));
    free(s), free(W);
}

/* ============================================================================================ */

void suite_linalg(void)
{
    RUN(linalg_kernel_partial_tiles);
    RUN(linalg_sgemm_vs_naive);
    RUN(linalg_dgemm_vs_naive);
    RUN(linalg_gemm_empty_dims);
    RUN(linalg_gram_vs_naive);
    RUN(linalg_gram_cross_vs_naive);
    RUN(linalg_gram_long_sum);
    RUN(linalg_potrf_residual);
    RUN(linalg_potrf_not_spd);
    RUN(linalg_trsm_left);
    RUN(linalg_trsm_right);
    RUN(linalg_posv_right);
    RUN(linalg_svd_jacobi_shapes);
    RUN(linalg_svd_jacobi_known_spectrum);
    RUN(linalg_svd_known_spectrum);
    RUN(linalg_svd_reproducible_and_args);
    RUN(linalg_zero_sizes);
    RUN(linalg_threads_gemm);
    RUN(linalg_threads_gram);
    RUN(linalg_threads_potrf_trsm);
    RUN(linalg_threads_svd);
}
