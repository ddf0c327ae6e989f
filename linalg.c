/* linalg.c -- the linear algebra of IterIS: packed GEMM (float and double), Gram statistics
 * accumulated in double, blocked Cholesky, triangular solves with many right-hand sides, the SPD
 * solve W = P Q^-1, and the truncated SVD; a naive twin beside each optimised routine.
 *
 * The GEMM follows the BLIS design (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly
 * Instantiating BLAS Functionality", ACM TOMS 2015), transposed for row-major C: the micro-kernel
 * computes an MR x NR tile of C from a packed MR x KC panel of op(A) (broadcast, kept in L1) and
 * packed KC x NR panels of op(B) (vector loads, streamed from an L2-sized block). Only the
 * micro-kernels are ISA-specific (linalg_<isa>.c); everything here is portable C.
 *
 * Determinism: threads split C into blocks of whole rows (or columns); each element of C is
 * computed by the same sequence of operations whatever the split, because the depth blocking (KC)
 * starts at 0 and the kernel's accumulation order is fixed. So results are bit-identical for any
 * thread count (STYLE.md habit 8). */
#include "internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && !defined(IT_NOSIMD)
#include <cpuid.h>
#define IT__X86 1
#endif

/* ============================================================================================ */
/* Generic kernels (portable C): the reference for every slot                                   */
/* ============================================================================================ */

#define GMR 4
#define GNR 8

static void sgemm_generic(size_t k, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                          size_t m, size_t n)
{
    float acc[GMR][GNR] = {{0}};
    for (size_t p = 0; p < k; p++, a += GMR, b += GNR)
        for (int i = 0; i < GMR; i++)
            for (int j = 0; j < GNR; j++) acc[i][j] += a[i] * b[j];
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * c[i * ldc + j];
}

static void dgemm_generic(size_t k, const double *a, const double *b, double *c, size_t ldc, double alpha, double beta,
                          size_t m, size_t n)
{
    double acc[GMR][GNR] = {{0}};
    for (size_t p = 0; p < k; p++, a += GMR, b += GNR)
        for (int i = 0; i < GMR; i++)
            for (int j = 0; j < GNR; j++) acc[i][j] += a[i] * b[j];
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0 ? alpha * acc[i][j] : alpha * acc[i][j] + beta * c[i * ldc + j];
}

static void trsm_right_rows(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb);

const it__kernels it__kernels_generic = {
    "generic",
    GMR, GNR, 256, 256, 1024,
    GMR, GNR, 256, 128, 1024,
    sgemm_generic,
    dgemm_generic,
    trsm_right_rows,
};

/* ============================================================================================ */
/* Choosing the kernel set                                                                       */
/* ============================================================================================ */

static _Atomic(const it__kernels *) kernels_in_use;

#ifdef IT__X86
/* AVX2+FMA and AVX-512F need both the CPU feature (CPUID) and the OS saving the registers
 * (XGETBV: XMM|YMM state for AVX2, plus opmask and ZMM state for AVX-512). */
static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (unsigned long long)hi << 32 | lo;
}

static int cpu_has(const char *name)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1;
    if (!osxsave) return 0;
    unsigned long long xcr0 = xgetbv0();
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    if (!strcmp(name, "avx2")) return avx2 && fma && (xcr0 & 6) == 6;
    if (!strcmp(name, "avx512")) return avx512f && fma && (xcr0 & 0xe6) == 0xe6;
    return 0;
}
#endif

/* The set called name, if this build has it and this CPU runs it. */
static const it__kernels *kernels_named(const char *name)
{
    _Static_assert(GMR <= IT__MAX_MR && GNR <= IT__MAX_NR, "the portable micro-tile exceeds IT__MAX_MR x IT__MAX_NR");
    if (!strcmp(name, "generic")) return &it__kernels_generic;
#ifdef IT__X86
    if (!strcmp(name, "avx512") && cpu_has("avx512")) return &it__kernels_avx512;
    if (!strcmp(name, "avx2") && cpu_has("avx2")) return &it__kernels_avx2;
#endif
#if defined(__aarch64__) && !defined(IT_NOSIMD)
    if (!strcmp(name, "neon")) return &it__kernels_neon;
#endif
    return NULL;
}

/* IT_ARCH if set and usable, else the best the CPU has. */
static const it__kernels *kernels_default(void)
{
    const char *env = getenv("IT_ARCH");
    const it__kernels *k = env && *env ? kernels_named(env) : NULL;
    const char *best[] = {"avx512", "avx2", "neon"};
    for (size_t i = 0; !k && i < sizeof best / sizeof *best; i++) k = kernels_named(best[i]);
    return k ? k : &it__kernels_generic;
}

const it__kernels *it__kern(void)
{
    const it__kernels *k = atomic_load(&kernels_in_use);
    if (!k) {
        k = kernels_default();
        atomic_store(&kernels_in_use, k);
    }
    return k;
}

const char *it_kernels(void) { return it__kern()->name; }

int it_set_kernels(const char *name)
{
    const it__kernels *k = name ? kernels_named(name) : NULL;
    if (!k) return IT_EUNSUPPORTED;
    atomic_store(&kernels_in_use, k);
    return IT_OK;
}

/* ============================================================================================ */
/* Packing                                                                                       */
/* ============================================================================================ */
/* A panel of width w from rows [r0, r0+rows) and depth [p0, p0+depth) of M = op(src), where M[r][p]
 * is src[r*ld + p] (t = IT_N) or src[p*ld + r] (t = IT_T): micro-panels of w rows, each laid out
 * p-major (dst[p*w + r]), rows past the end zero. op(A) is packed as is; op(B) is packed as the
 * rows of op(B)^T (the caller flips t). The source is always read along its rows: with a leading
 * dimension that is a multiple of 4 KiB, reading down a column would map every access to one cache
 * set. */

static void pack_ss(float *dst, const float *src, size_t ld, it_op t, size_t r0, size_t rows, size_t p0,
                    size_t depth, size_t w)
{
    for (size_t ir = 0; ir < rows; ir += w, dst += depth * w) {
        size_t h = rows - ir < w ? rows - ir : w;
        for (size_t r = 0; t == IT_N && r < h; r++) { /* row r of M is contiguous: read it in order */
            const float *s = src + (r0 + ir + r) * ld + p0;
            for (size_t p = 0; p < depth; p++) dst[p * w + r] = s[p];
        }
        for (size_t p = 0; t == IT_T && p < depth; p++) { /* column p of M is contiguous */
            const float *s = src + (p0 + p) * ld + r0 + ir;
            for (size_t r = 0; r < h; r++) dst[p * w + r] = s[r];
        }
        for (size_t p = 0; h < w && p < depth; p++)
            for (size_t r = h; r < w; r++) dst[p * w + r] = 0.0f;
    }
}

/* A hint to fetch the line at x (no effect on results); nothing where the compiler has no builtin. */
#if defined(__GNUC__) || defined(__clang__)
#define PACK_PREFETCH(x) __builtin_prefetch(x)
#else
#define PACK_PREFETCH(x) ((void)(x))
#endif

static void pack_dd(double *dst, const double *src, size_t ld, it_op t, size_t r0, size_t rows, size_t p0,
                    size_t depth, size_t w)
{
    for (size_t ir = 0; ir < rows; ir += w, dst += depth * w) {
        size_t h = rows - ir < w ? rows - ir : w;
        /* rows of M are contiguous: a cache line (8 values) of each of the h rows in turn, so that
         * the h rows' misses overlap and each line is used whole as soon as it arrives, with the
         * line two ahead in each row prefetched (the rows lie far apart in memory, one stream each;
         * reading them one after the other, as the float packers do, made this packer wait on
         * memory for 13% of a Cholesky at n = 4096) */
        for (size_t q = 0; t == IT_N && q < depth; q += 8) {
            size_t e = depth - q < 8 ? depth - q : 8;
            for (size_t r = 0; r < h; r++) {
                const double *s = src + (r0 + ir + r) * ld + p0 + q;
                if (q + 16 < depth) PACK_PREFETCH(s + 16);
                for (size_t p = 0; p < e; p++) dst[(q + p) * w + r] = s[p];
            }
        }
        for (size_t p = 0; t == IT_T && p < depth; p++) { /* column p of M is contiguous */
            const double *s = src + (p0 + p) * ld + r0 + ir;
            for (size_t r = 0; r < h; r++) dst[p * w + r] = s[r];
        }
        for (size_t p = 0; h < w && p < depth; p++)
            for (size_t r = h; r < w; r++) dst[p * w + r] = 0.0;
    }
}

/* float source, double panel: the Gram statistics widen while they pack. */
static void pack_sd(double *dst, const float *src, size_t ld, it_op t, size_t r0, size_t rows, size_t p0,
                    size_t depth, size_t w)
{
    for (size_t ir = 0; ir < rows; ir += w, dst += depth * w) {
        size_t h = rows - ir < w ? rows - ir : w;
        for (size_t r = 0; t == IT_N && r < h; r++) { /* row r of M is contiguous: read it in order */
            const float *s = src + (r0 + ir + r) * ld + p0;
            for (size_t p = 0; p < depth; p++) dst[p * w + r] = s[p];
        }
        for (size_t p = 0; t == IT_T && p < depth; p++) { /* column p of M is contiguous */
            const float *s = src + (p0 + p) * ld + r0 + ir;
            for (size_t r = 0; r < h; r++) dst[p * w + r] = s[r];
        }
        for (size_t p = 0; h < w && p < depth; p++)
            for (size_t r = h; r < w; r++) dst[p * w + r] = 0.0;
    }
}

/* ============================================================================================ */
/* The GEMM driver, shared by both precisions                                                    */
/* ============================================================================================ */

enum { TRI_ALL, TRI_UPPER, TRI_LOWER }; /* which tiles of C to compute: all, j >= i, j <= i */

typedef enum { PREC_S, PREC_D, PREC_SD } prec_t; /* float, double, float inputs into double */

typedef struct {
    prec_t prec;
    it_op ta, tb;
    size_t m, n, k;
    const void *A, *B;
    size_t lda, ldb;
    void *C;
    size_t ldc;
    float salpha, sbeta;
    double dalpha, dbeta;
    int tri;
    const it__kernels *kn;
    size_t mr, nr, kc, nb, mb, es; /* micro-tile, blocking, element size of the panels */
    int by_rows;                   /* threads split rows (else columns) */
    size_t chunk;                  /* rows or columns per task, a multiple of mr or nr */
    atomic_int failed;
} gemm_t;

static void pack_a(const gemm_t *g, void *dst, size_t i0, size_t rows, size_t p0, size_t depth)
{
    if (g->prec == PREC_S) pack_ss(dst, g->A, g->lda, g->ta, i0, rows, p0, depth, g->mr);
    else if (g->prec == PREC_D) pack_dd(dst, g->A, g->lda, g->ta, i0, rows, p0, depth, g->mr);
    else pack_sd(dst, g->A, g->lda, g->ta, i0, rows, p0, depth, g->mr);
}

static void pack_b(const gemm_t *g, void *dst, size_t j0, size_t cols, size_t p0, size_t depth)
{
    it_op flip = g->tb == IT_N ? IT_T : IT_N;
    if (g->prec == PREC_S) pack_ss(dst, g->B, g->ldb, flip, j0, cols, p0, depth, g->nr);
    else if (g->prec == PREC_D) pack_dd(dst, g->B, g->ldb, flip, j0, cols, p0, depth, g->nr);
    else pack_sd(dst, g->B, g->ldb, flip, j0, cols, p0, depth, g->nr);
}

/* Whether the tile [i, i+h) x [j, j+w) holds an element of the triangle to compute. */
static int tile_wanted(int tri, size_t i, size_t h, size_t j, size_t w)
{
    if (tri == TRI_UPPER) return j + w > i;
    if (tri == TRI_LOWER) return j < i + h;
    return 1;
}

/* Whether the tile crosses the diagonal, so that only part of it may be written. */
static int tile_split(int tri, size_t i, size_t h, size_t j, size_t w)
{
    return tri != TRI_ALL && j < i + h && j + w > i;
}

/* A tile on the diagonal of a triangular update: the kernel writes the raw sums into a scratch
 * tile, and the wanted elements are updated as the kernel would update them. The triangular callers
 * (Gram, Cholesky) use alpha = +-1 and beta = 1 only, where the fused and unfused formulas of the
 * kernels give the same, exactly rounded, result. */
static void run_split_tile(const gemm_t *g, size_t kb, const void *a, const void *b, size_t i, size_t j, size_t h,
                           size_t w, int first)
{
    double t[IT__MAX_MR * IT__MAX_NR];
    double beta = first ? g->dbeta : 1.0;
    double *c = (double *)g->C;
    g->kn->dgemm(kb, a, b, t, g->nr, 1.0, 0.0, h, w);
    for (size_t r = 0; r < h; r++)
        for (size_t q = 0; q < w; q++) {
            size_t ii = i + r, jj = j + q;
            if (g->tri == TRI_UPPER ? jj < ii : jj > ii) continue;
            double *x = c + ii * g->ldc + jj;
            *x = beta == 0.0 ? g->dalpha * t[r * g->nr + q] : fma(g->dalpha, t[r * g->nr + q], beta * *x);
        }
}

static void run_tile(const gemm_t *g, size_t kb, const void *a, const void *b, size_t i, size_t j, size_t h, size_t w,
                     int first)
{
    if (g->prec == PREC_S) {
        float *c = (float *)g->C + i * g->ldc + j;
        g->kn->sgemm(kb, a, b, c, g->ldc, g->salpha, first ? g->sbeta : 1.0f, h, w);
    } else if (tile_split(g->tri, i, h, j, w)) {
        run_split_tile(g, kb, a, b, i, j, h, w, first);
    } else {
        double *c = (double *)g->C + i * g->ldc + j;
        g->kn->dgemm(kb, a, b, c, g->ldc, g->dalpha, first ? g->dbeta : 1.0, h, w);
    }
}

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

static void *alloc_panel(size_t elems, size_t es)
{
    size_t bytes;
    if (it__mul_size(elems ? elems : 1, es, &bytes) || bytes > SIZE_MAX - 64) return NULL;
    return aligned_alloc(64, round_up(bytes, 64));
}

/* C[i_lo:i_hi, j_lo:j_hi] on one thread: for each row block (L3) and depth block, pack op(A); for
 * each column block (L2), pack op(B); then every MR x NR tile, A panel outer (L1), B panels inner. */
static void gemm_block(gemm_t *g, size_t i_lo, size_t i_hi, size_t j_lo, size_t j_hi)
{
    size_t kc = g->k < g->kc ? g->k : g->kc;
    size_t mrows = round_up(i_hi - i_lo < g->mb ? i_hi - i_lo : g->mb, g->mr);
    size_t ncols = round_up(j_hi - j_lo < g->nb ? j_hi - j_lo : g->nb, g->nr);
    void *pa = alloc_panel(mrows * kc, g->es), *pb = alloc_panel(ncols * kc, g->es);
    if (!pa || !pb) {
        atomic_store(&g->failed, 1);
        free(pa), free(pb);
        return;
    }
    for (size_t i0 = i_lo; i0 < i_hi; i0 += g->mb) {
        size_t mh = i_hi - i0 < g->mb ? i_hi - i0 : g->mb;
        for (size_t p0 = 0; p0 < g->k; p0 += g->kc) {
            size_t kb = g->k - p0 < g->kc ? g->k - p0 : g->kc;
            pack_a(g, pa, i0, mh, p0, kb);
            for (size_t j0 = j_lo; j0 < j_hi; j0 += g->nb) {
                size_t nw = j_hi - j0 < g->nb ? j_hi - j0 : g->nb;
                if (!tile_wanted(g->tri, i0, mh, j0, nw)) continue;
                pack_b(g, pb, j0, nw, p0, kb);
                for (size_t ir = 0; ir < mh; ir += g->mr) {
                    size_t h = mh - ir < g->mr ? mh - ir : g->mr;
                    const char *a = (const char *)pa + ir * kb * g->es;
                    for (size_t jr = 0; jr < nw; jr += g->nr) {
                        size_t w = nw - jr < g->nr ? nw - jr : g->nr;
                        if (!tile_wanted(g->tri, i0 + ir, h, j0 + jr, w)) continue;
                        run_tile(g, kb, a, (const char *)pb + jr * kb * g->es, i0 + ir, j0 + jr, h, w, p0 == 0);
                    }
                }
            }
        }
    }
    free(pa);
    free(pb);
}

static void gemm_task(void *ctx, size_t t)
{
    gemm_t *g = ctx;
    size_t len = g->by_rows ? g->m : g->n, tasks = (len + g->chunk - 1) / g->chunk;
    if (g->tri == (g->by_rows ? TRI_LOWER : TRI_UPPER)) t = tasks - 1 - t; /* the longest strips first */
    size_t lo = t * g->chunk, hi = lo + g->chunk;
    if (g->by_rows) gemm_block(g, lo, hi < g->m ? hi : g->m, 0, g->n);
    else gemm_block(g, 0, g->m, lo, hi < g->n ? hi : g->n);
}

/* C = beta C where k = 0 (no product to add). */
static void scale_c(gemm_t *g)
{
    for (size_t i = 0; i < g->m; i++)
        for (size_t j = 0; j < g->n; j++) {
            if (!tile_wanted(g->tri, i, 1, j, 1)) continue;
            if (g->prec == PREC_S) {
                float *c = (float *)g->C + i * g->ldc + j;
                *c = g->sbeta == 0.0f ? 0.0f : g->sbeta * *c;
            } else {
                double *c = (double *)g->C + i * g->ldc + j;
                *c = g->dbeta == 0.0 ? 0.0 : g->dbeta * *c;
            }
        }
}

static atomic_uint_least64_t gemm_flops;

uint64_t it__gemm_flops(void) { return atomic_load(&gemm_flops); }

/* The kernel set and its blocking for g; counts the flops. */
static void gemm_setup(gemm_t *g)
{
    atomic_fetch_add(&gemm_flops, (uint_least64_t)(2.0 * (double)g->m * (double)g->n * (double)g->k));
    const it__kernels *kn = g->kn = it__kern();
    int d = g->prec != PREC_S;
    g->mr = d ? kn->dmr : kn->smr, g->nr = d ? kn->dnr : kn->snr;
    g->kc = d ? kn->dkc : kn->skc, g->nb = d ? kn->dnb : kn->snb, g->mb = d ? kn->dmb : kn->smb;
    g->es = d ? sizeof(double) : sizeof(float);
    atomic_store(&g->failed, 0);
}

/* Splits C between threads (whole MR rows or NR columns, more tasks than threads for triangles)
 * and runs. */
static int gemm_run(gemm_t *g)
{
    if (g->m == 0 || g->n == 0) return IT_OK;
    if (g->k == 0) {
        scale_c(g);
        return IT_OK;
    }
    gemm_setup(g);
    size_t threads = (size_t)it_get_threads(), tasks = threads * (g->tri != TRI_ALL ? 4 : 1);
    g->by_rows = g->m / g->mr >= g->n / g->nr;
    size_t len = g->by_rows ? g->m : g->n, unit = g->by_rows ? g->mr : g->nr;
    g->chunk = round_up((len + tasks - 1) / tasks, unit);
    it__parallel_for((len + g->chunk - 1) / g->chunk, gemm_task, g);
    return atomic_load(&g->failed) ? IT_ENOMEM : IT_OK;
}

int it_sgemm(it_op ta, it_op tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda, const float *B,
             size_t ldb, float beta, float *C, size_t ldc)
{
    gemm_t g = {.prec = PREC_S, .ta = ta, .tb = tb, .m = m, .n = n, .k = k, .A = A, .B = B, .lda = lda, .ldb = ldb,
                .C = C, .ldc = ldc, .salpha = alpha, .sbeta = beta, .tri = TRI_ALL};
    return gemm_run(&g);
}

int it_dgemm(it_op ta, it_op tb, size_t m, size_t n, size_t k, double alpha, const double *A, size_t lda,
             const double *B, size_t ldb, double beta, double *C, size_t ldc)
{
    gemm_t g = {.prec = PREC_D, .ta = ta, .tb = tb, .m = m, .n = n, .k = k, .A = A, .B = B, .lda = lda, .ldb = ldb,
                .C = C, .ldc = ldc, .dalpha = alpha, .dbeta = beta, .tri = TRI_ALL};
    return gemm_run(&g);
}

/* C = alpha op(A) op(B) + beta C on one triangle of C only (syrk-like updates). */
static int dgemm_tri(int tri, it_op ta, it_op tb, size_t n, size_t k, double alpha, const double *A, size_t lda,
                     const double *B, size_t ldb, double beta, double *C, size_t ldc)
{
    gemm_t g = {.prec = PREC_D, .ta = ta, .tb = tb, .m = n, .n = n, .k = k, .A = A, .B = B, .lda = lda, .ldb = ldb,
                .C = C, .ldc = ldc, .dalpha = alpha, .dbeta = beta, .tri = tri};
    return gemm_run(&g);
}

/* ---- naive twins ---- */

static double s_at(const float *M, size_t ld, it_op t, size_t r, size_t c) { return t == IT_N ? M[r * ld + c] : M[c * ld + r]; }
static double d_at(const double *M, size_t ld, it_op t, size_t r, size_t c) { return t == IT_N ? M[r * ld + c] : M[c * ld + r]; }

void it_sgemm_naive(it_op ta, it_op tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda,
                    const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t p = 0; p < k; p++) s += s_at(A, lda, ta, i, p) * s_at(B, ldb, tb, p, j);
            C[i * ldc + j] = (float)(beta == 0.0f ? alpha * s : alpha * s + (double)beta * C[i * ldc + j]);
        }
}

void it_dgemm_naive(it_op ta, it_op tb, size_t m, size_t n, size_t k, double alpha, const double *A, size_t lda,
                    const double *B, size_t ldb, double beta, double *C, size_t ldc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t p = 0; p < k; p++) s += d_at(A, lda, ta, i, p) * d_at(B, ldb, tb, p, j);
            C[i * ldc + j] = beta == 0.0 ? alpha * s : alpha * s + beta * C[i * ldc + j];
        }
}

/* ============================================================================================ */
/* Gram statistics (DESIGN.md section 1): X^T X and X^T Y in double                              */
/* ============================================================================================ */

/* G += X^T X over the rows of X: the GEMM with op(A) = X^T, op(B) = X, the float rows widened to
 * double while packing, upper-triangle tiles only. */
int it_gram(double *G, size_t ldg, const float *X, size_t ldx, size_t rows, size_t d)
{
    gemm_t g = {.prec = PREC_SD, .ta = IT_T, .tb = IT_N, .m = d, .n = d, .k = rows, .A = X, .B = X, .lda = ldx,
                .ldb = ldx, .C = G, .ldc = ldg, .dalpha = 1.0, .dbeta = 1.0, .tri = TRI_UPPER};
    return gemm_run(&g);
}

int it_gram_cross(double *C, size_t ldc, const float *X, size_t ldx, const float *Y, size_t ldy, size_t rows, size_t d1,
                  size_t d2)
{
    gemm_t g = {.prec = PREC_SD, .ta = IT_T, .tb = IT_N, .m = d1, .n = d2, .k = rows, .A = X, .B = Y, .lda = ldx,
                .ldb = ldy, .C = C, .ldc = ldc, .dalpha = 1.0, .dbeta = 1.0, .tri = TRI_ALL};
    return gemm_run(&g);
}

void it_gram_naive(double *G, size_t ldg, const float *X, size_t ldx, size_t rows, size_t d)
{
    for (size_t i = 0; i < d; i++)
        for (size_t j = i; j < d; j++) {
            double s = 0.0;
            for (size_t t = 0; t < rows; t++) s += (double)X[t * ldx + i] * X[t * ldx + j];
            G[i * ldg + j] += s;
        }
}

void it_gram_cross_naive(double *C, size_t ldc, const float *X, size_t ldx, const float *Y, size_t ldy, size_t rows,
                         size_t d1, size_t d2)
{
    for (size_t i = 0; i < d1; i++)
        for (size_t j = 0; j < d2; j++) {
            double s = 0.0;
            for (size_t t = 0; t < rows; t++) s += (double)X[t * ldx + i] * Y[t * ldy + j];
            C[i * ldc + j] += s;
        }
}

/* ============================================================================================ */
/* Triangular solves with many right-hand sides                                                  */
/* ============================================================================================ */
/* The naive twins solve one right-hand side (a row of B for the right-side solves, a column for
 * the left-side ones) at a time by substitution. The blocked versions recurse on halves of L
 * (Elmroth, Gustavson, Jonsson & Kagstrom, "Recursive blocked algorithms and hybrid data
 * structures for dense matrix library software", SIAM Review 2004), so that almost all the work is
 * GEMM, down to blocks of TRSM_BASE columns of L that the naive routine solves, split between
 * threads by right-hand sides. Every element goes through the same operations in the same order
 * whatever the threads. */

#define TRSM_BASE IT__TRSM_BASE

static double l_at(const double *L, size_t ldl, it_op op, size_t r, size_t c) { return op == IT_N ? L[r * ldl + c] : L[c * ldl + r]; }

/* X op(L) = B row by row: op(L) lower (op = N, backward) or upper (op = T, forward); x[jj] is
 * b[jj] minus the terms of the already known x[t] in increasing t, divided by the pivot. */
void it_dtrsm_right_naive(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb)
{
    for (size_t i = 0; i < m; i++) {
        double *x = B + i * ldb;
        for (size_t s = 0; s < n; s++) {
            size_t jj = op == IT_T ? s : n - 1 - s, t0 = op == IT_T ? 0 : jj + 1, t1 = op == IT_T ? jj : n;
            double v = x[jj];
            for (size_t t = t0; t < t1; t++) v -= x[t] * l_at(L, ldl, op, t, jj);
            x[jj] = v / L[jj * ldl + jj];
        }
    }
}

/* The same operations, eight rows at a time through a transposed tile, so that each step is a
 * vector operation across rows (the naive routine's order, hence its exact results). */
#define TRSM_ROWS 8
static void trsm_right_rows(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb)
{
    double T[TRSM_BASE][TRSM_ROWS];
    size_t i = 0;
    for (; n <= TRSM_BASE && i + TRSM_ROWS <= m; i += TRSM_ROWS) {
        for (size_t j = 0; j < n; j++)
            for (size_t r = 0; r < TRSM_ROWS; r++) T[j][r] = B[(i + r) * ldb + j];
        for (size_t s = 0; s < n; s++) {
            size_t jj = op == IT_T ? s : n - 1 - s, t0 = op == IT_T ? 0 : jj + 1, t1 = op == IT_T ? jj : n;
            double v[TRSM_ROWS], d = L[jj * ldl + jj];
            for (size_t r = 0; r < TRSM_ROWS; r++) v[r] = T[jj][r];
            for (size_t t = t0; t < t1; t++) {
                double l = l_at(L, ldl, op, t, jj);
                for (size_t r = 0; r < TRSM_ROWS; r++) v[r] -= T[t][r] * l;
            }
            for (size_t r = 0; r < TRSM_ROWS; r++) T[jj][r] = v[r] / d;
        }
        for (size_t j = 0; j < n; j++)
            for (size_t r = 0; r < TRSM_ROWS; r++) B[(i + r) * ldb + j] = T[j][r];
    }
    it_dtrsm_right_naive(op, m - i, n, L, ldl, B + i * ldb, ldb);
}

/* op(L) X = B column by column: forward for op = N, backward for op = T; each row of B is updated
 * as a whole (the columns are independent). */
void it_dtrsm_left_naive(it_op op, size_t n, size_t m, const double *L, size_t ldl, double *B, size_t ldb)
{
    for (size_t s = 0; s < n; s++) {
        size_t r = op == IT_N ? s : n - 1 - s, t0 = op == IT_N ? 0 : r + 1, t1 = op == IT_N ? r : n;
        double *xr = B + r * ldb;
        for (size_t t = t0; t < t1; t++) {
            double l = l_at(L, ldl, op, r, t);
            const double *xt = B + t * ldb;
            for (size_t j = 0; j < m; j++) xr[j] -= l * xt[j];
        }
        double d = L[r * ldl + r];
        for (size_t j = 0; j < m; j++) xr[j] /= d;
    }
}

/* The base case, split between threads by rows of B (right) or columns of B (left). */
typedef struct {
    int left;
    it_op op;
    size_t n, m, chunk;
    const double *L;
    size_t ldl;
    double *B;
    size_t ldb;
} trsm_base_t;

static void trsm_base_task(void *ctx, size_t t)
{
    trsm_base_t *b = ctx;
    size_t lo = t * b->chunk, hi = lo + b->chunk < b->m ? lo + b->chunk : b->m;
    if (b->left) it_dtrsm_left_naive(b->op, b->n, hi - lo, b->L, b->ldl, b->B + lo, b->ldb);
    else (it__kern()->dtrsm_rows ? it__kern()->dtrsm_rows : trsm_right_rows)(b->op, hi - lo, b->n, b->L, b->ldl, b->B + lo * b->ldb, b->ldb);
}

static void trsm_base(int left, it_op op, size_t n, size_t m, const double *L, size_t ldl, double *B, size_t ldb)
{
    if (m == 0 || n == 0) return;
    size_t unit = left ? 64 : 16, tasks = (size_t)it_get_threads();
    trsm_base_t b = {left, op, n, m, round_up((m + tasks - 1) / tasks, unit), L, ldl, B, ldb};
    it__parallel_for((m + b.chunk - 1) / b.chunk, trsm_base_task, &b);
}

/* X op(L) = B, B [m x n]: with L = [L11 0; L21 L22] split at n1,
 *   op = T:  X1 L11^T = B1,  then X2 L22^T = B2 - X1 L21^T;
 *   op = N:  X2 L22 = B2,    then X1 L11 = B1 - X2 L21. */
int it_dtrsm_right(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb)
{
    if (n <= TRSM_BASE) {
        trsm_base(0, op, n, m, L, ldl, B, ldb);
        return IT_OK;
    }
    size_t n1 = n / 2, n2 = n - n1;
    const double *L11 = L, *L21 = L + n1 * ldl, *L22 = L + n1 * ldl + n1;
    double *B1 = B, *B2 = B + n1;
    int rc;
    if (op == IT_T) {
        if ((rc = it_dtrsm_right(op, m, n1, L11, ldl, B1, ldb))) return rc;
        if ((rc = it_dgemm(IT_N, IT_T, m, n2, n1, -1.0, B1, ldb, L21, ldl, 1.0, B2, ldb))) return rc;
        return it_dtrsm_right(op, m, n2, L22, ldl, B2, ldb);
    }
    if ((rc = it_dtrsm_right(op, m, n2, L22, ldl, B2, ldb))) return rc;
    if ((rc = it_dgemm(IT_N, IT_N, m, n1, n2, -1.0, B2, ldb, L21, ldl, 1.0, B1, ldb))) return rc;
    return it_dtrsm_right(op, m, n1, L11, ldl, B1, ldb);
}

/* op(L) X = B, B [n x m]:
 *   op = N:  L11 X1 = B1,     then L22 X2 = B2 - L21 X1;
 *   op = T:  L22^T X2 = B2,   then L11^T X1 = B1 - L21^T X2. */
int it_dtrsm_left(it_op op, size_t n, size_t m, const double *L, size_t ldl, double *B, size_t ldb)
{
    if (n <= TRSM_BASE) {
        trsm_base(1, op, n, m, L, ldl, B, ldb);
        return IT_OK;
    }
    size_t n1 = n / 2, n2 = n - n1;
    const double *L11 = L, *L21 = L + n1 * ldl, *L22 = L + n1 * ldl + n1;
    double *B1 = B, *B2 = B + n1 * ldb;
    int rc;
    if (op == IT_N) {
        if ((rc = it_dtrsm_left(op, n1, m, L11, ldl, B1, ldb))) return rc;
        if ((rc = it_dgemm(IT_N, IT_N, n2, m, n1, -1.0, L21, ldl, B1, ldb, 1.0, B2, ldb))) return rc;
        return it_dtrsm_left(op, n2, m, L22, ldl, B2, ldb);
    }
    if ((rc = it_dtrsm_left(op, n2, m, L22, ldl, B2, ldb))) return rc;
    if ((rc = it_dgemm(IT_T, IT_N, n1, m, n2, -1.0, L21, ldl, B2, ldb, 1.0, B1, ldb))) return rc;
    return it_dtrsm_left(op, n1, m, L11, ldl, B1, ldb);
}

/* ============================================================================================ */
/* Cholesky factorisation and the SPD solve                                                      */
/* ============================================================================================ */

#define POTRF_BASE 32

/* Cholesky-Banachiewicz, row by row (Golub & Van Loan, Matrix Computations, 4th ed., Alg. 4.2.1
 * in its row-oriented form): L[i][j] = (A[i][j] - sum_{t<j} L[i][t] L[j][t]) / L[j][j] and
 * L[i][i] = sqrt(A[i][i] - sum_{t<i} L[i][t]^2), which must be a positive finite pivot. */
int it_dpotrf_naive(double *A, size_t lda, size_t n, size_t *pivot)
{
    for (size_t i = 0; i < n; i++) {
        double *li = A + i * lda;
        for (size_t j = 0; j <= i; j++) {
            const double *lj = A + j * lda;
            double s = li[j];
            for (size_t t = 0; t < j; t++) s -= li[t] * lj[t];
            if (j < i) {
                li[j] = s / lj[j];
            } else if (!(s > 0.0) || isinf(s)) {
                if (pivot) *pivot = i;
                return IT_ENOTSPD;
            } else {
                li[i] = sqrt(s);
            }
        }
    }
    return IT_OK;
}

/* Recursive Cholesky (Gustavson, "Recursion leads to automatic variable blocking for dense
 * linear-algebra algorithms", IBM J. Res. Dev. 1997): with A = [A11 .; A21 A22] split at n1,
 *   L11 = chol(A11);  L21 = A21 L11^-T;  A22 -= L21 L21^T (lower triangle only);  L22 = chol(A22). */
static int potrf_recursive(double *A, size_t lda, size_t n, size_t *pivot)
{
    if (n <= POTRF_BASE) return it_dpotrf_naive(A, lda, n, pivot);
    size_t n1 = n / 2, n2 = n - n1, p = 0;
    double *A21 = A + n1 * lda, *A22 = A + n1 * lda + n1;
    int rc = potrf_recursive(A, lda, n1, pivot);
    if (rc == IT_OK) rc = it_dtrsm_right(IT_T, n2, n1, A, lda, A21, lda);
    if (rc == IT_OK) rc = dgemm_tri(TRI_LOWER, IT_N, IT_T, n2, n1, -1.0, A21, lda, A21, lda, 1.0, A22, lda);
    if (rc == IT_OK) {
        rc = potrf_recursive(A22, lda, n2, &p);
        if (rc == IT_ENOTSPD && pivot) *pivot = n1 + p;
    }
    return rc;
}

/* One step of the blocked Cholesky with lookahead: A22 -= L21 L21^T on the lower triangle of the
 * trailing matrix (rest x rest), and the factorisation of its leading nb x nb block as soon as that
 * block is updated. Task 0 updates and factors the block (the only serial work of the step) while
 * the other tasks update strips of rows below it, the longest strips first. */
typedef struct {
    gemm_t g;          /* the update of the trailing matrix, C = A22 */
    size_t nb, chunk;  /* the block to factor next; rows of A22 per strip below it */
    int rc;            /* of the factorisation (task 0) */
    size_t pivot;      /* its failing row, within the block */
} potrf_step_t;

static void potrf_step_task(void *ctx, size_t t)
{
    potrf_step_t *st = ctx;
    size_t m = st->g.m, strips = (m - st->nb + st->chunk - 1) / st->chunk;
    if (t == 0) {
        gemm_block(&st->g, 0, st->nb, 0, st->nb);
        if (!atomic_load(&st->g.failed)) st->rc = potrf_recursive(st->g.C, st->g.ldc, st->nb, &st->pivot);
        return;
    }
    size_t lo = st->nb + (strips - t) * st->chunk, hi = lo + st->chunk < m ? lo + st->chunk : m;
    gemm_block(&st->g, lo, hi, 0, hi);
}

/* Blocked right-looking Cholesky (Golub & Van Loan, Alg. 4.2.4) with a lookahead of one block
 * (the factorisation of the next diagonal block overlaps the rest of the trailing update): for
 * each block column of POTRF_NB, the diagonal block is factored (recursively), the panel below it
 * is solved, and the trailing matrix is updated with one deep GEMM on its lower triangle. Each
 * element goes through the same operations whatever the threads: only the order of the
 * independent updates changes. */
#define POTRF_NB 256
int it_dpotrf(double *A, size_t lda, size_t n, size_t *pivot)
{
    size_t jb = n < POTRF_NB ? n : POTRF_NB, next = 0, p = 0;
    int rc = potrf_recursive(A, lda, jb, &p);
    if (rc == IT_ENOTSPD && pivot) *pivot = p;
    for (size_t j = 0; rc == IT_OK && j + jb < n; j += jb, jb = next) {
        size_t rest = n - j - jb;
        next = rest < POTRF_NB ? rest : POTRF_NB;
        double *Ajj = A + j * lda + j, *A21 = Ajj + jb * lda, *A22 = A21 + jb;
        if ((rc = it_dtrsm_right(IT_T, rest, jb, Ajj, lda, A21, lda))) break;
        potrf_step_t st = {.g = {.prec = PREC_D, .ta = IT_N, .tb = IT_T, .m = rest, .n = rest, .k = jb, .A = A21,
                                 .B = A21, .lda = lda, .ldb = lda, .C = A22, .ldc = lda, .dalpha = -1.0, .dbeta = 1.0,
                                 .tri = TRI_LOWER},
                           .nb = next, .rc = IT_OK};
        gemm_setup(&st.g);
        size_t strips = 4 * (size_t)it_get_threads();
        size_t rows = (rest - next + strips - 1) / strips;
        st.chunk = round_up(rows ? rows : 1, st.g.mr);
        it__parallel_for(1 + (rest - next + st.chunk - 1) / st.chunk, potrf_step_task, &st);
        rc = atomic_load(&st.g.failed) ? IT_ENOMEM : st.rc;
        if (rc == IT_ENOTSPD && pivot) *pivot = j + jb + st.pivot;
    }
    return rc;
}

/* X Q = P with Q = L L^T: Y L^T = P, then X L = Y. */
int it_dposv_right(double *Q, size_t ldq, size_t n, double *P, size_t ldp, size_t m, size_t *pivot)
{
    int rc = it_dpotrf(Q, ldq, n, pivot);
    if (rc == IT_OK) rc = it_dtrsm_right(IT_T, m, n, Q, ldq, P, ldp);
    if (rc == IT_OK) rc = it_dtrsm_right(IT_N, m, n, Q, ldq, P, ldp);
    return rc;
}

/* ============================================================================================ */
/* SVD                                                                                           */
/* ============================================================================================ */

/* Normal deviates by the Box-Muller transform from the splitmix64 stream. */

static double gaussian(uint64_t *s)
{
    double u1 = ((double)(it__splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(it__splitmix64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double dot(const double *x, const double *y, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* One-sided Jacobi on the rows of M [k x len] (Hestenes 1958; the rotation of Demmel & Veselic,
 * "Jacobi's method is more accurate than QR", SIAM J. Matrix Anal. Appl. 1992): plane rotations
 * of row pairs until every pair is orthogonal to working precision; the same rotations are applied
 * to the rows of E [k x k]. Then M = E^T M' with the rows of M' mutually orthogonal. */
static void jacobi_rows(double *M, size_t k, size_t len, double *E)
{
    for (int sweep = 0; sweep < 80; sweep++) {
        int rotated = 0;
        for (size_t i = 0; i + 1 < k; i++)
            for (size_t j = i + 1; j < k; j++) {
                double *x = M + i * len, *y = M + j * len;
                double a = dot(x, x, len), b = dot(y, y, len), g = dot(x, y, len);
                if (g == 0.0 || fabs(g) <= 1e-15 * sqrt(a) * sqrt(b)) continue;
                double zeta = (b - a) / (2.0 * g);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + hypot(1.0, zeta));
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                for (size_t q = 0; q < len; q++) {
                    double u = x[q], v = y[q];
                    x[q] = c * u - s * v;
                    y[q] = s * u + c * v;
                }
                double *ex = E + i * k, *ey = E + j * k;
                for (size_t q = 0; q < k; q++) {
                    double u = ex[q], v = ey[q];
                    ex[q] = c * u - s * v;
                    ey[q] = s * u + c * v;
                }
                rotated = 1;
            }
        if (!rotated) break;
    }
}

/* Makes row i of R [count x len] a unit vector orthogonal to rows keep[0..nkeep) (which are
 * orthonormal), starting from standard basis vectors in order: deterministic completion of the
 * singular vectors of zero singular values. */
static void complete_row(double *R, size_t len, size_t i, const size_t *keep, size_t nkeep)
{
    double *v = R + i * len;
    for (size_t q = 0; q < len; q++) {
        memset(v, 0, len * sizeof *v);
        v[q] = 1.0;
        for (int pass = 0; pass < 2; pass++)
            for (size_t t = 0; t < nkeep; t++) {
                const double *u = R + keep[t] * len;
                double c = dot(u, v, len);
                for (size_t z = 0; z < len; z++) v[z] -= c * u[z];
            }
        double nv = sqrt(dot(v, v, len));
        if (nv > 0.5) {
            for (size_t z = 0; z < len; z++) v[z] /= nv;
            return;
        }
    }
}

/* The full SVD of W [m x n] by one-sided Jacobi on its shorter side. */
int it_svd_jacobi(const double *W, size_t m, size_t n, double *U, double *S, double *Vt, it_err *err)
{
    size_t k = m < n ? m : n, len = m < n ? n : m;
    double *M = it__malloc_n(k * len, sizeof *M), *E = it__calloc(k * k, sizeof *E), *sig = it__malloc_n(k, sizeof *sig);
    size_t *ord = it__malloc_n(k, sizeof *ord), *keep = it__malloc_n(k, sizeof *keep);
    if (!M || !E || !sig || !ord || !keep) {
        free(M), free(E), free(sig), free(ord), free(keep);
        return it__fail(err, IT_ENOMEM, "svd: out of memory for a %zu x %zu matrix", m, n);
    }
    for (size_t i = 0; i < k; i++) /* the rows of M are the rows of W (m <= n) or its columns */
        for (size_t q = 0; q < len; q++) M[i * len + q] = m <= n ? W[i * n + q] : W[q * n + i];
    for (size_t i = 0; i < k; i++) E[i * k + i] = 1.0;
    jacobi_rows(M, k, len, E);
    for (size_t i = 0; i < k; i++) sig[i] = sqrt(dot(M + i * len, M + i * len, len)), ord[i] = i;
    for (size_t i = 1; i < k; i++) /* stable insertion sort, descending */
        for (size_t j = i; j > 0 && sig[ord[j]] > sig[ord[j - 1]]; j--) {
            size_t t = ord[j];
            ord[j] = ord[j - 1], ord[j - 1] = t;
        }
    size_t nkeep = 0;
    double tiny = (k ? sig[ord[0]] : 0.0) * 1e-300;
    for (size_t i = 0; i < k; i++) { /* normalise the rows of M' that carry a singular value */
        double *x = M + ord[i] * len;
        if (sig[ord[i]] > tiny && sig[ord[i]] > 0.0) {
            for (size_t q = 0; q < len; q++) x[q] /= sig[ord[i]];
            keep[nkeep++] = ord[i];
        }
    }
    for (size_t i = 0; i < k; i++)
        if (!(sig[ord[i]] > tiny && sig[ord[i]] > 0.0)) complete_row(M, len, ord[i], keep, nkeep), keep[nkeep++] = ord[i];
    for (size_t i = 0; i < k; i++) { /* M = E^T M': left vectors in E, right ones in M' (or swapped) */
        const double *mi = M + ord[i] * len, *ei = E + ord[i] * k;
        S[i] = sig[ord[i]];
        for (size_t q = 0; q < len; q++) {
            if (m <= n) Vt[i * n + q] = mi[q];
            else U[q * k + i] = mi[q];
        }
        for (size_t q = 0; q < k; q++) {
            if (m <= n) U[q * k + i] = ei[q];
            else Vt[i * n + q] = ei[q];
        }
    }
    free(M), free(E), free(sig), free(ord), free(keep);
    return IT_OK;
}

/* Orthonormalises the rows of Y [l x len] in place and gives R [l x l], lower triangular, with
 * Y_before = R Y_after: CholeskyQR2 (Fukaya et al., "CholeskyQR2: a simple and communication-
 * avoiding algorithm", ScalA 2014) on GEMM and Cholesky, or, when the rows are (nearly) dependent
 * and the Gram matrix is not positive definite, modified Gram-Schmidt twice with seeded random
 * directions standing in for the dependent rows. */
static int orth_rows(double *Y, size_t l, size_t len, double *R, uint64_t *seed)
{
    double *G = it__calloc(l * l, sizeof *G), *R2 = it__calloc(l * l, sizeof *R2);
    double *Ycopy = it__malloc_n(l * len, sizeof *Ycopy);
    if (!G || !R2 || !Ycopy) return free(G), free(R2), free(Ycopy), IT_ENOMEM;
    memcpy(Ycopy, Y, l * len * sizeof *Y);
    int rc = IT_OK, ok = 1;
    memset(R, 0, l * l * sizeof *R);
    for (size_t i = 0; i < l; i++) R[i * l + i] = 1.0;
    for (int pass = 0; pass < 2 && ok && rc == IT_OK; pass++) { /* Y = L Y': G = Y Y^T = L L^T */
        rc = it_dgemm(IT_N, IT_T, l, l, len, 1.0, Y, len, Y, len, 0.0, G, l);
        if (rc == IT_OK) ok = it_dpotrf(G, l, l, NULL) == IT_OK;
        double dmax = 0.0; /* a diagonal of L below 1e-7 of the largest: too ill-conditioned */
        for (size_t i = 0; ok && i < l; i++) dmax = fmax(dmax, G[i * l + i]);
        for (size_t i = 0; ok && i < l; i++) ok = G[i * l + i] > 1e-7 * dmax;
        if (rc == IT_OK && ok) rc = it_dtrsm_left(IT_N, l, len, G, l, Y, len);
        for (size_t i = 0; i < l; i++) /* R = R L (lower) */
            for (size_t j = 0; j <= i; j++) {
                double s = 0.0;
                for (size_t t = j; t <= i; t++) s += R[i * l + t] * G[t * l + j];
                R2[i * l + j] = s;
            }
        if (ok) memcpy(R, R2, l * l * sizeof *R);
    }
    if (rc == IT_OK && !ok) { /* MGS twice from the original rows */
        memcpy(Y, Ycopy, l * len * sizeof *Y);
        memset(R, 0, l * l * sizeof *R);
        for (size_t i = 0; i < l; i++) {
            double *v = Y + i * len, n0 = sqrt(dot(v, v, len));
            for (int pass = 0; pass < 2; pass++)
                for (size_t t = 0; t < i; t++) {
                    double c = dot(Y + t * len, v, len);
                    for (size_t q = 0; q < len; q++) v[q] -= c * Y[t * len + q];
                    R[i * l + t] += c;
                }
            double nv = sqrt(dot(v, v, len));
            R[i * l + i] = nv;
            if (nv <= 1e-12 * n0 || nv == 0.0) { /* dependent: any direction orthogonal to the rest */
                for (size_t q = 0; q < len; q++) v[q] = gaussian(seed);
                for (int pass = 0; pass < 2; pass++)
                    for (size_t t = 0; t < i; t++) {
                        double c = dot(Y + t * len, v, len);
                        for (size_t q = 0; q < len; q++) v[q] -= c * Y[t * len + q];
                    }
                nv = sqrt(dot(v, v, len));
            }
            for (size_t q = 0; q < len; q++) v[q] /= nv;
        }
    }
    free(G), free(R2), free(Ycopy);
    return rc;
}

/* Subspace iteration for the leading singular triplets (Halko, Martinsson & Tropp, "Finding
 * structure with randomness", SIAM Review 2011, Alg. 4.4, with Rayleigh-Ritz at every step):
 * Q spans W Omega (Omega seeded Gaussian, l = r + oversampling columns); each step forms
 * B = Q^T W = R P^T (P orthonormal), whose SVD R = Ur S Vr^T gives the Ritz triplets
 * W ~ (Q Ur) S (Vr^T P^T), then Q = orth(W P). The retained energy sum_{i<r} S_i^2 rises to the
 * optimum of Eckart-Young; stop when it gains less than 1e-15 ||W||_F^2. */
typedef struct {
    size_t m, n, r, l;
    double *Qt, *Pt, *R, *Ur, *S, *Vrt; /* [l x m], [l x n], [l x l] x 3, [l] */
} subspace_t;

static int subspace_step(const double *W, subspace_t *s, uint64_t *seed)
{
    int rc = it_dgemm(IT_N, IT_N, s->l, s->n, s->m, 1.0, s->Qt, s->m, W, s->n, 0.0, s->Pt, s->n); /* B = Q^T W */
    if (rc == IT_OK) rc = orth_rows(s->Pt, s->l, s->n, s->R, seed);                                   /* B = R P^T */
    if (rc == IT_OK) rc = it_svd_jacobi(s->R, s->l, s->l, s->Ur, s->S, s->Vrt, NULL);
    return rc;
}

static int svd_subspace(const double *W, subspace_t *s, double normw2, uint64_t seed, it_err *err)
{
    int rc = IT_OK;
    for (size_t i = 0; i < s->l * s->n; i++) s->Pt[i] = gaussian(&seed); /* Omega^T */
    double prev = -1.0;
    for (int it = 0; it < 200 && rc == IT_OK; it++) {
        rc = it_dgemm(IT_N, IT_T, s->l, s->m, s->n, 1.0, s->Pt, s->n, W, s->n, 0.0, s->Qt, s->m); /* (W P)^T */
        if (rc == IT_OK) rc = orth_rows(s->Qt, s->l, s->m, s->R, &seed);
        if (rc == IT_OK) rc = subspace_step(W, s, &seed);
        double e = 0.0;
        for (size_t i = 0; i < s->r; i++) e += s->S[i] * s->S[i];
        if (rc != IT_OK || e - prev <= 1e-15 * normw2) break;
        prev = e;
    }
    return rc == IT_OK ? IT_OK : it__fail(err, rc, "svd: out of memory for a %zu x %zu matrix", s->m, s->n);
}

int it_svd(const double *W, size_t m, size_t n, size_t r, double *U, double *S, double *Vt, double *energy,
           uint64_t seed, it_err *err)
{
    size_t k = m < n ? m : n;
    if (r > k) return it__fail(err, IT_EINVAL, "svd: rank %zu exceeds min(%zu, %zu)", r, m, n);
    double normw2 = 0.0;
    for (size_t i = 0; i < m * n; i++) normw2 += W[i] * W[i];
    size_t l = r + (r > 16 ? r : 16);
    int rc;
    if (l >= k / 2 || k <= 128) { /* small: the full Jacobi SVD, truncated */
        double *Uf = it__malloc_n(m * k, sizeof *Uf), *Sf = it__malloc_n(k, sizeof *Sf), *Vf = it__malloc_n(k * n, sizeof *Vf);
        rc = Uf && Sf && Vf ? it_svd_jacobi(W, m, n, Uf, Sf, Vf, err) : it__fail(err, IT_ENOMEM, "svd: out of memory");
        for (size_t i = 0; rc == IT_OK && i < m; i++) memcpy(U + i * r, Uf + i * k, r * sizeof *U);
        if (rc == IT_OK) memcpy(S, Sf, r * sizeof *S), memcpy(Vt, Vf, r * n * sizeof *Vt);
        free(Uf), free(Sf), free(Vf);
    } else {
        subspace_t s = {m, n, r, l, it__malloc_n(l * m, sizeof(double)), it__malloc_n(l * n, sizeof(double)),
                        it__malloc_n(l * l, sizeof(double)), it__malloc_n(l * l, sizeof(double)),
                        it__malloc_n(l, sizeof(double)), it__malloc_n(l * l, sizeof(double))};
        rc = s.Qt && s.Pt && s.R && s.Ur && s.S && s.Vrt ? svd_subspace(W, &s, normw2, seed, err)
                                                        : it__fail(err, IT_ENOMEM, "svd: out of memory");
        /* U = Q Ur[:, :r], Vt = Vr^T[:r] P^T */
        if (rc == IT_OK) rc = it_dgemm(IT_T, IT_N, m, r, l, 1.0, s.Qt, m, s.Ur, l, 0.0, U, r);
        if (rc == IT_OK) rc = it_dgemm(IT_N, IT_N, r, n, l, 1.0, s.Vrt, l, s.Pt, n, 0.0, Vt, n);
        if (rc == IT_OK) memcpy(S, s.S, r * sizeof *S);
        free(s.Qt), free(s.Pt), free(s.R), free(s.Ur), free(s.S), free(s.Vrt);
        if (rc == IT_ENOMEM) it__fail(err, rc, "svd: out of memory");
    }
    if (rc == IT_OK && energy) {
        double e = 0.0;
        for (size_t i = 0; i < r; i++) e += S[i] * S[i];
        *energy = normw2 > 0.0 ? e / normw2 : 1.0;
    }
    return rc;
}
