/* test/bench_openblas.c -- `make bench`: our routines and an installed OpenBLAS side by side, in
 * one process, same inputs, same sizes, fastest of several runs each; prints the ratio
 * ours / OpenBLAS. Built only when OpenBLAS is installed; the iteris binary never links it.
 *
 * Compared: sgemm and dgemm (NN), the f64 Cholesky (OpenBLAS's LAPACK dpotrf; a row-major lower
 * factor is a column-major upper one, so both factor the same memory), and our float->double
 * Gram X^T X against OpenBLAS dsyrk on the same data already in double. */
#ifdef IT_BENCH_OPENBLAS
#include "iteris.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void openblas_set_num_threads(int);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    int n;
    float *sa, *sb, *sc;
    double *da, *db, *dc, *spd;
} data;

static void fill(data *d, int n)
{
    size_t nn = (size_t)n * (size_t)n;
    uint64_t s = 88172645463325252u;
    d->n = n;
    d->sa = malloc(nn * 4), d->sb = malloc(nn * 4), d->sc = malloc(nn * 4);
    d->da = malloc(nn * 8), d->db = malloc(nn * 8), d->dc = malloc(nn * 8), d->spd = malloc(nn * 8);
    for (size_t i = 0; i < nn; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        d->da[i] = (double)(s >> 11) / 9007199254740992.0 - 0.5;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        d->db[i] = (double)(s >> 11) / 9007199254740992.0 - 0.5;
        d->sa[i] = (float)d->da[i], d->sb[i] = (float)d->db[i], d->da[i] = d->sa[i];
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0 / n, d->da, n, d->da, n, 0.0, d->spd, n);
    for (int i = 0; i < n; i++) d->spd[(size_t)i * n + i] += 1.0;
}

static void release(data *d)
{
    free(d->sa), free(d->sb), free(d->sc), free(d->da), free(d->db), free(d->dc), free(d->spd);
}

/* One timed run of routine r by us (who = 0) or OpenBLAS (who = 1). */
static double run(const char *r, int who, data *d)
{
    int n = d->n, info;
    size_t nn = (size_t)n * n;
    if (!strcmp(r, "dpotrf")) memcpy(d->dc, d->spd, nn * 8);
    if (!strcmp(r, "gram")) memset(d->dc, 0, nn * 8);
    double t = now();
    if (!strcmp(r, "sgemm") && !who) it_sgemm(IT_N, IT_N, n, n, n, 1.0f, d->sa, n, d->sb, n, 0.0f, d->sc, n);
    if (!strcmp(r, "sgemm") && who) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, d->sa, n, d->sb, n, 0.0f, d->sc, n);
    if (!strcmp(r, "dgemm") && !who) it_dgemm(IT_N, IT_N, n, n, n, 1.0, d->da, n, d->db, n, 0.0, d->dc, n);
    if (!strcmp(r, "dgemm") && who) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, d->da, n, d->db, n, 0.0, d->dc, n);
    if (!strcmp(r, "dpotrf") && !who) it_dpotrf(d->dc, n, n, NULL);
    if (!strcmp(r, "dpotrf") && who) dpotrf_("U", &n, d->dc, &n, &info);
    if (!strcmp(r, "gram") && !who) it_gram(d->dc, n, d->sa, n, n, n);
    if (!strcmp(r, "gram") && who) cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, n, 1.0, d->da, n, 1.0, d->dc, n);
    return now() - t;
}

static double flops(const char *r, double n)
{
    if (!strcmp(r, "dpotrf")) return n * n * n / 3.0;
    if (!strcmp(r, "gram")) return n * n * (n + 1.0);
    return 2.0 * n * n * n;
}

int main(int argc, char **argv)
{
    int sizes[] = {256, 512, 1024, 2048, 4096}, nsizes = 5, threads[] = {1, 2};
    const char *routines[] = {"sgemm", "dgemm", "gram", "dpotrf"};
    if (argc > 1) sizes[0] = atoi(argv[1]), nsizes = 1;
    printf("%-8s %6s %7s %12s %12s %7s   (kernels %s)\n", "routine", "n", "threads", "iteris", "OpenBLAS", "ratio", it_kernels());
    for (int ti = 0; ti < 2; ti++) {
        it_set_threads(threads[ti]);
        openblas_set_num_threads(threads[ti]);
        for (int ri = 0; ri < 4; ri++)
            for (int si = 0; si < nsizes; si++) {
                data d;
                fill(&d, sizes[si]);
                /* OpenBLAS's idle threads spin for a while after a call (fill's cblas_dgemm here, the
                 * previous measurement below): let them go to sleep before a measurement of ours */
                struct timespec pause = {0, 300000000};
                nanosleep(&pause, NULL);
                double best[2] = {INFINITY, INFINITY};
                for (int who = 0; who < 2; who++) { /* ours first, then OpenBLAS, each warmed up */
                    double start = now();
                    run(routines[ri], who, &d);
                    for (int rep = 0; rep < 30 && (rep < 3 || now() - start < 1.0); rep++)
                        best[who] = fmin(best[who], run(routines[ri], who, &d));
                }
                double f = flops(routines[ri], sizes[si]) / 1e9;
                printf("%-8s %6d %7d %12.2f %12.2f %7.2f\n", routines[ri], sizes[si], threads[ti], f / best[0], f / best[1], best[1] / best[0]);
                fflush(stdout);
                release(&d);
            }
    }
    return 0;
}
#else
int bench_openblas_not_built; /* compiled into the tests' glob only as an empty unit */
#endif
