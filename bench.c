/* bench.c -- timing the linear algebra: GFLOP/s per routine and size (`iteris bench`).
 *
 * Each measurement runs the routine once to warm up, then repeats it (at least 3 times, and until
 * 0.5 s have passed, at most 50 times) and keeps the fastest run. Inputs are seeded, so every
 * run computes the same numbers. Flop counts are the textbook ones, so that figures compare with
 * other libraries: 2 n^3 for a GEMM, n d (d + 1) for the upper triangle of X^T X with n rows and
 * d = n columns, n^3 / 3 for a Cholesky factorisation; for the truncated SVD (rank 32 of an
 * n x n matrix) the GEMM flops it actually executed. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

static double uniform(uint64_t *s) { return (double)(next(s) >> 11) / 9007199254740992.0 - 0.5; }

/* The inputs of one benchmark. */
typedef struct {
    size_t n;
    float *sa, *sb, *sc;     /* [n x n] */
    double *da, *db, *dc;    /* [n x n] */
    double *spd;             /* [n x n] symmetric positive definite */
    double *U, *S, *Vt;      /* SVD outputs */
} bench_data;

static void data_free(bench_data *d)
{
    free(d->sa), free(d->sb), free(d->sc), free(d->da), free(d->db), free(d->dc);
    free(d->spd), free(d->U), free(d->S), free(d->Vt);
}

/* A = B B^T / n + I: well conditioned and positive definite. */
static int make_spd(bench_data *d)
{
    size_t n = d->n;
    int rc = it_dgemm(IT_N, IT_T, n, n, n, 1.0 / (double)n, d->da, n, d->da, n, 0.0, d->spd, n);
    for (size_t i = 0; i < n; i++) d->spd[i * n + i] += 1.0;
    return rc;
}

static int data_make(bench_data *d, const char *routine, size_t n)
{
    memset(d, 0, sizeof *d);
    d->n = n;
    size_t nn = n * n;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    int single = !strcmp(routine, "sgemm") || !strcmp(routine, "gram");
    if (single && (!(d->sa = it__malloc_n(nn, sizeof(float))) || !(d->sb = it__malloc_n(nn, sizeof(float))) ||
                   !(d->sc = it__malloc_n(nn, sizeof(float)))))
        return IT_ENOMEM;
    for (size_t i = 0; single && i < nn; i++) d->sa[i] = (float)uniform(&seed), d->sb[i] = (float)uniform(&seed);
    if (!strcmp(routine, "gram")) return (d->dc = it__malloc_n(nn, sizeof(double))) ? IT_OK : IT_ENOMEM;
    if (single) return IT_OK;
    if (!(d->da = it__malloc_n(nn, sizeof(double))) || !(d->db = it__malloc_n(nn, sizeof(double))) ||
        !(d->dc = it__malloc_n(nn, sizeof(double))))
        return IT_ENOMEM;
    for (size_t i = 0; i < nn; i++) d->da[i] = uniform(&seed), d->db[i] = uniform(&seed);
    if (!strcmp(routine, "dpotrf")) return (d->spd = it__malloc_n(nn, sizeof(double))) ? make_spd(d) : IT_ENOMEM;
    if (!strcmp(routine, "svd")) { /* a decaying spectrum: W = A diag(0.97^i) B */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) d->da[i * n + j] *= pow(0.97, (double)j);
        int rc = it_dgemm(IT_N, IT_N, n, n, n, 1.0, d->da, n, d->db, n, 0.0, d->dc, n);
        d->U = it__malloc_n(n * 32, sizeof(double)), d->S = it__malloc_n(32, sizeof(double)), d->Vt = it__malloc_n(32 * n, sizeof(double));
        return rc != IT_OK ? rc : d->U && d->S && d->Vt ? IT_OK : IT_ENOMEM;
    }
    return IT_OK;
}

/* Untimed preparation before each run: fresh inputs for the routines that overwrite theirs. */
static void prepare(const char *routine, bench_data *d)
{
    if (!strcmp(routine, "gram")) memset(d->dc, 0, d->n * d->n * sizeof *d->dc);
    if (!strcmp(routine, "dpotrf")) memcpy(d->dc, d->spd, d->n * d->n * sizeof *d->dc);
}

/* One run of the routine; *flops gets the count it performs. */
static int run_once(const char *routine, bench_data *d, double *flops)
{
    size_t n = d->n;
    double nd = (double)n;
    if (!strcmp(routine, "sgemm")) {
        *flops = 2.0 * nd * nd * nd;
        return it_sgemm(IT_N, IT_N, n, n, n, 1.0f, d->sa, n, d->sb, n, 0.0f, d->sc, n);
    }
    if (!strcmp(routine, "dgemm")) {
        *flops = 2.0 * nd * nd * nd;
        return it_dgemm(IT_N, IT_N, n, n, n, 1.0, d->da, n, d->db, n, 0.0, d->dc, n);
    }
    if (!strcmp(routine, "gram")) {
        *flops = nd * nd * (nd + 1.0);
        return it_gram(d->dc, n, d->sa, n, n, n);
    }
    if (!strcmp(routine, "dpotrf")) {
        *flops = nd * nd * nd / 3.0;
        return it_dpotrf(d->dc, n, n, NULL);
    }
    uint64_t before = it__gemm_flops();
    int rc = it_svd(d->dc, n, n, n < 32 ? n : 32, d->U, d->S, d->Vt, NULL, 1, NULL);
    *flops = (double)(it__gemm_flops() - before);
    return rc;
}

int it_bench(const char *routine, size_t n, it_bench_result *out, it_err *err)
{
    const char *known[] = {"sgemm", "dgemm", "gram", "dpotrf", "svd"};
    size_t ki = 0;
    while (ki < 5 && strcmp(routine, known[ki])) ki++;
    if (ki == 5) return it__fail(err, IT_EINVAL, "bench: unknown routine \"%s\" (sgemm, dgemm, gram, dpotrf, svd)", routine);
    if (n == 0 || n > 65536) return it__fail(err, IT_EINVAL, "bench: size %zu out of range (1..65536)", n);
    bench_data d;
    int rc = data_make(&d, routine, n);
    double flops = 0.0, best = INFINITY, start = now();
    if (rc == IT_OK) prepare(routine, &d), rc = run_once(routine, &d, &flops); /* warm-up */
    for (int rep = 0; rc == IT_OK && rep < 50 && (rep < 3 || now() - start < 0.5); rep++) {
        prepare(routine, &d);
        double t = now();
        rc = run_once(routine, &d, &flops);
        t = now() - t;
        if (t < best) best = t;
    }
    data_free(&d);
    if (rc != IT_OK) return it__fail(err, rc, "bench %s at n = %zu: %s", routine, n, it_strerror(rc));
    out->routine = known[ki];
    out->n = n;
    out->threads = it_get_threads();
    out->seconds = best;
    out->gflops = flops / best / 1e9;
    return IT_OK;
}
