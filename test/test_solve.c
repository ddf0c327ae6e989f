/* test/test_solve.c -- the IterIS solve and the baselines (iteris.c) against naive double-precision
 * oracles written here from DESIGN.md section 1, and `iteris solve` on features files. */
#include "test.h"

#include "../internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* ============================================================================================ */
/* Random problems                                                                               */
/* ============================================================================================ */

static uint64_t rng_state;

static double urand(void) /* [-1, 1) */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-52 - 1.0;
}

static float *frand(size_t n, double scale)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)(scale * urand());
    return a;
}

/* One random problem: N tasks, low-rank deltas, features X_i [rows x n], Xt_i, W0 [m x n]. */
typedef struct problem {
    size_t m, n, N, r, rows;
    float *w0;
    float *A[4], *B[4], *X[4], *Xt[4];
    double scale[4];
    double *xx[4], *xt[4], *tt[4];
    it_site_task tasks[4];
    it_site site;
} problem;

/* Naive X^T Y in double. */
static double *naive_cross(const float *X, const float *Y, size_t rows, size_t n)
{
    double *C = calloc(n * n, sizeof *C);
    for (size_t t = 0; t < rows; t++)
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) C[i * n + j] += (double)X[t * n + i] * (double)Y[t * n + j];
    return C;
}

static void problem_make(problem *p, uint64_t seed, size_t m, size_t n, size_t N, size_t r, size_t rows, int with_xt)
{
    memset(p, 0, sizeof *p);
    rng_state = seed;
    p->m = m, p->n = n, p->N = N, p->r = r, p->rows = rows;
    p->w0 = frand(m * n, 0.5);
    for (size_t i = 0; i < N; i++) {
        p->A[i] = frand(r * n, 0.3);
        p->B[i] = frand(m * r, 0.3);
        p->X[i] = frand(rows * n, 1.0);
        p->Xt[i] = with_xt ? frand(rows * n, 1.0) : NULL;
        if (with_xt) /* Xt near X, as in a real iteration */
            for (size_t k = 0; k < rows * n; k++) p->Xt[i][k] = p->X[i][k] + 0.2f * p->Xt[i][k];
        p->scale[i] = 0.5 + (double)i;
        p->xx[i] = naive_cross(p->X[i], p->X[i], rows, n);
        p->xt[i] = with_xt ? naive_cross(p->X[i], p->Xt[i], rows, n) : NULL;
        p->tt[i] = with_xt ? naive_cross(p->Xt[i], p->Xt[i], rows, n) : NULL;
        p->tasks[i] = (it_site_task){p->A[i], p->B[i], (int64_t)r, p->scale[i], NULL, p->xx[i], p->xt[i], p->tt[i], -1.0};
    }
    p->site = (it_site){"layers.0.q_proj", (int64_t)m, (int64_t)n, p->w0, N, p->tasks};
}

static void problem_free(problem *p)
{
    free(p->w0);
    for (size_t i = 0; i < p->N; i++)
        free(p->A[i]), free(p->B[i]), free(p->X[i]), free(p->Xt[i]), free(p->xx[i]), free(p->xt[i]), free(p->tt[i]);
}

/* dW_i = s B A in double (zero when the task does not adapt the site). */
static double *naive_delta(const problem *p, size_t i)
{
    size_t m = p->m, n = p->n;
    const it_site_task *t = &p->tasks[i];
    size_t r = (size_t)t->r;
    double *d = calloc(m * n, sizeof *d);
    if (t->delta) memcpy(d, t->delta, m * n * sizeof *d);
    if (!t->A) return d;
    for (size_t a = 0; a < m; a++)
        for (size_t b = 0; b < n; b++) {
            double s = 0;
            for (size_t k = 0; k < r; k++) s += (double)t->B[a * r + k] * (double)t->A[k * n + b];
            d[a * n + b] = t->scale * s;
        }
    return d;
}

/* Solves X Q = P for X (Q symmetric positive definite) by Gaussian elimination with partial
 * pivoting on Q^T, in double: the oracle. */
static void naive_right_solve(const double *Q, const double *P, double *X, size_t m, size_t n)
{
    double *M = malloc(n * (n + m) * sizeof *M); /* [Q^T | P^T] */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) M[i * (n + m) + j] = Q[j * n + i];
        for (size_t j = 0; j < m; j++) M[i * (n + m) + n + j] = P[j * n + i];
    }
    size_t w = n + m;
    for (size_t c = 0; c < n; c++) {
        size_t piv = c;
        for (size_t i = c + 1; i < n; i++)
            if (fabs(M[i * w + c]) > fabs(M[piv * w + c])) piv = i;
        for (size_t j = 0; j < w; j++) {
            double t = M[c * w + j];
            M[c * w + j] = M[piv * w + j], M[piv * w + j] = t;
        }
        for (size_t i = 0; i < n; i++) {
            if (i == c) continue;
            double f = M[i * w + c] / M[c * w + c];
            for (size_t j = c; j < w; j++) M[i * w + j] -= f * M[c * w + j];
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++) X[j * n + i] = M[i * w + n + j] / M[i * w + i];
    free(M);
}

static double fro(const double *a, size_t len)
{
    double s = 0;
    for (size_t k = 0; k < len; k++) s += a[k] * a[k];
    return sqrt(s);
}

static double rel_diff(const double *a, const double *b, size_t len)
{
    double d = 0, s = 0;
    for (size_t k = 0; k < len; k++) d += (a[k] - b[k]) * (a[k] - b[k]), s += b[k] * b[k];
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* The whole IterIS solve written out naively from DESIGN.md section 1. */
static void naive_iteris(const problem *p, double a1, double a2, double beta, int with_pretrain, const double *mw,
                         double *W, double *lambda)
{
    size_t m = p->m, n = p->n, rows = p->rows;
    double *P = calloc(m * n, sizeof *P), *Q = calloc(n * n, sizeof *Q);
    for (size_t i = 0; i < p->N; i++) {
        double *d = naive_delta(p, i);
        double *V = calloc(m * n, sizeof *V), *Wf = calloc(m * n, sizeof *Wf);
        for (size_t k = 0; k < m * n; k++) Wf[k] = p->w0[k] + d[k], V[k] = with_pretrain ? Wf[k] : d[k];
        /* l_i from the rows themselves */
        double num = fro(Wf, m * n), den = 0;
        for (size_t t = 0; t < rows; t++)
            for (size_t a = 0; a < m; a++) {
                double y = 0;
                for (size_t b = 0; b < n; b++) y += (double)p->X[i][t * n + b] * Wf[a * n + b];
                den += y * y;
            }
        double l = num * num / den;
        if (lambda) lambda[i] = l;
        double c = l * (mw ? mw[i] : 1.0);
        /* Xh = (1 - beta) Xt + beta X, formed in double */
        const float *Xt = p->Xt[i] ? p->Xt[i] : p->X[i];
        double *Xh = malloc(rows * n * sizeof *Xh), *Xd = malloc(rows * n * sizeof *Xd);
        for (size_t k = 0; k < rows * n; k++) Xh[k] = (1 - beta) * Xt[k] + beta * p->X[i][k], Xd[k] = p->X[i][k];
        double *C = calloc(n * n, sizeof *C), *G = calloc(n * n, sizeof *G);
        for (size_t t = 0; t < rows; t++)
            for (size_t a = 0; a < n; a++)
                for (size_t b = 0; b < n; b++)
                    C[a * n + b] += Xd[t * n + a] * Xh[t * n + b], G[a * n + b] += Xh[t * n + a] * Xh[t * n + b];
        double nc = fro(C, n * n), ng = fro(G, n * n);
        for (size_t a = 0; a < n; a++) C[a * n + a] += a1 * nc, G[a * n + a] += a2 * ng;
        for (size_t k = 0; k < n * n; k++) Q[k] += c * G[k];
        for (size_t a = 0; a < m; a++)
            for (size_t b = 0; b < n; b++) {
                double s = 0;
                for (size_t k = 0; k < n; k++) s += V[a * n + k] * C[k * n + b];
                P[a * n + b] += c * s;
            }
        free(d), free(V), free(Wf), free(Xh), free(Xd), free(C), free(G);
    }
    naive_right_solve(Q, P, W, m, n);
    free(P), free(Q);
}

/* ============================================================================================ */
/* IterIS                                                                                        */
/* ============================================================================================ */

static void check_against_naive(uint64_t seed, size_t m, size_t n, size_t N, size_t rows, int with_xt, double a1,
                                 double a2, double beta, int with_pretrain, const double *mw)
{
    problem p;
    problem_make(&p, seed, m, n, N, 3, rows, with_xt);
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.alpha1 = a1, o.alpha2 = a2, o.reg_mix = beta, o.with_pretrain = with_pretrain;
    o.weights = mw, o.nweights = mw ? N : 0;
    double *W = malloc(m * n * sizeof *W), *ref = malloc(m * n * sizeof *ref);
    double lam[4] = {0}, lref[4] = {0};
    it_site_info info = {0, lam};
    it_err err;
    int rc = it_site_solve(&p.site, &o, W, &info, &err);
    CHECKF(rc == IT_OK, "solve: %s", err.msg);
    naive_iteris(&p, a1, a2, beta, with_pretrain, mw, ref, lref);
    double d = rel_diff(W, ref, m * n);
    CHECKF(d < 1e-9, "m %zu n %zu N %zu rows %zu xt %d a %g/%g beta %g pretrain %d: rel diff %.3g", m, n, N, rows,
           with_xt, a1, a2, beta, with_pretrain, d);
    for (size_t i = 0; i < N; i++)
        CHECKF(fabs(lam[i] - lref[i]) <= 1e-12 * lref[i], "lambda %zu: %.17g vs %.17g", i, lam[i], lref[i]);
    CHECK(info.ridge == 0);
    test_note("m %zu n %zu N %zu: rel diff %.3g", m, n, N, d);
    free(W), free(ref);
    problem_free(&p);
}

static void test_solve_iteris_naive(void)
{
    double mw[3] = {1.0, 0.5, 2.0};
    check_against_naive(1, 7, 5, 2, 40, 0, 1e-7, 1e-7, 0, 0, NULL);
    check_against_naive(2, 13, 9, 3, 50, 1, 1e-4, 1e-3, 0, 0, NULL);
    check_against_naive(3, 6, 11, 3, 30, 1, 1e-2, 1e-2, 0.3, 0, mw);
    check_against_naive(4, 9, 8, 2, 40, 1, 1e-5, 1e-5, 0, 1, NULL);
    check_against_naive(5, 33, 17, 3, 80, 1, 0.1, 0.1, 1.0, 1, mw);
    check_against_naive(6, 70, 65, 2, 200, 1, 1e-6, 1e-6, 0.5, 0, NULL);
}

/* One adapter alone, a1 = a2 = 0, Xt = X: W* = dW exactly (up to rounding). */
static void test_solve_one_adapter_back(void)
{
    problem p;
    problem_make(&p, 11, 12, 10, 1, 3, 60, 0);
    double *ref = naive_delta(&p, 0), *W = malloc(12 * 10 * sizeof *W);
    it_method methods[] = {IT_METHOD_ITERIS, IT_METHOD_REGMEAN, IT_METHOD_LINEAR, IT_METHOD_CAT};
    for (size_t k = 0; k < 4; k++) {
        it_solve_opts o;
        it_solve_opts_default(&o);
        o.method = methods[k], o.alpha1 = o.alpha2 = 0;
        it_err err;
        CHECKF(it_site_solve(&p.site, &o, W, NULL, &err) == IT_OK, "%s: %s", it_method_name(o.method), err.msg);
        double d = rel_diff(W, ref, 120);
        CHECKF(d < 1e-10, "%s: one adapter alone: rel diff %.3g", it_method_name(o.method), d);
        /* and with the pretrained weight: W0 + dW */
        o.with_pretrain = 1;
        CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_OK);
        for (size_t j = 0; j < 120; j++) W[j] -= p.w0[j];
        d = rel_diff(W, ref, 120);
        CHECKF(d < 1e-9, "%s --with-pretrain: one adapter alone: rel diff %.3g", it_method_name(o.method), d);
    }
    free(ref), free(W);
    problem_free(&p);
}

/* N identical adapters (different features, Xt = X) give that adapter back. */
static void test_solve_identical_adapters(void)
{
    problem p;
    problem_make(&p, 12, 9, 7, 3, 2, 40, 0);
    for (size_t i = 1; i < 3; i++) p.tasks[i].A = p.A[0], p.tasks[i].B = p.B[0], p.tasks[i].scale = p.scale[0];
    double *ref = naive_delta(&p, 0), *W = malloc(63 * sizeof *W);
    it_method methods[] = {IT_METHOD_ITERIS, IT_METHOD_REGMEAN, IT_METHOD_LINEAR};
    for (size_t k = 0; k < 3; k++) {
        it_solve_opts o;
        it_solve_opts_default(&o);
        o.method = methods[k], o.alpha1 = o.alpha2 = 0;
        it_err err;
        CHECKF(it_site_solve(&p.site, &o, W, NULL, &err) == IT_OK, "%s", err.msg);
        double d = rel_diff(W, ref, 63);
        CHECKF(d < 1e-10, "%s: identical adapters: rel diff %.3g", it_method_name(o.method), d);
    }
    /* cat sums them: 3 dW with the default weights 1 */
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.method = IT_METHOD_CAT;
    CHECK(it_site_solve(&p.site, &o, W, NULL, NULL) == IT_OK);
    for (size_t j = 0; j < 63; j++) CHECK(fabs(W[j] - 3 * ref[j]) <= 1e-12 * (1 + fabs(ref[j])));
    free(ref), free(W);
    problem_free(&p);
}

/* The order of the tasks does not matter (weights permuted with them). */
static void test_solve_task_order(void)
{
    problem p;
    problem_make(&p, 13, 11, 9, 3, 2, 40, 1);
    double mw[3] = {1.0, 0.25, 3.0};
    it_method methods[] = {IT_METHOD_ITERIS, IT_METHOD_REGMEAN, IT_METHOD_LINEAR, IT_METHOD_TIES, IT_METHOD_CAT};
    for (size_t k = 0; k < 5; k++) {
        it_solve_opts o;
        it_solve_opts_default(&o);
        o.method = methods[k], o.alpha1 = 1e-3, o.alpha2 = 1e-3, o.reg_mix = 0.2;
        o.weights = mw, o.nweights = 3;
        double W1[99], W2[99];
        CHECK(it_site_solve(&p.site, &o, W1, NULL, NULL) == IT_OK);
        it_site_task perm[3] = {p.tasks[2], p.tasks[0], p.tasks[1]};
        double pw[3] = {mw[2], mw[0], mw[1]};
        it_site s2 = p.site;
        s2.tasks = perm;
        o.weights = pw;
        CHECK(it_site_solve(&s2, &o, W2, NULL, NULL) == IT_OK);
        double d = rel_diff(W2, W1, 99);
        CHECKF(d < 1e-12, "%s: task order changes the answer by %.3g", it_method_name(o.method), d);
    }
    problem_free(&p);
}

/* Fewer rows than d_in with a1 = a2 = 0: Q is singular; a ridge is added and reported. */
static void test_solve_ridge(void)
{
    problem p;
    problem_make(&p, 14, 6, 20, 2, 2, 5, 0);
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.alpha1 = o.alpha2 = 0;
    double W[120];
    it_site_info info = {0, NULL};
    it_err err;
    CHECKF(it_site_solve(&p.site, &o, W, &info, &err) == IT_OK, "%s", err.msg);
    CHECKF(info.ridge > 0, "ridge %g", info.ridge);
    test_note("ridge %g", info.ridge);
    /* with the default a1 = a2 the regularisation alone is enough */
    it_solve_opts_default(&o);
    CHECK(it_site_solve(&p.site, &o, W, &info, &err) == IT_OK && info.ridge == 0);
    problem_free(&p);
}

static void test_solve_bad_input(void)
{
    problem p;
    problem_make(&p, 15, 4, 3, 2, 1, 10, 0);
    it_solve_opts o;
    it_solve_opts_default(&o);
    double W[12];
    it_err err;
    p.xx[1][4] = NAN;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_EINVAL && strstr(err.msg, "layers.0.q_proj") &&
          strstr(err.msg, "NaN"));
    p.xx[1][4] = 1.0;
    double w1[1] = {1};
    o.weights = w1, o.nweights = 1;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_EINVAL && strstr(err.msg, "1 weights given for 2 tasks"));
    it_solve_opts_default(&o);
    o.reg_mix = 1.5;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_EINVAL && strstr(err.msg, "reg-mix"));
    it_solve_opts_default(&o);
    o.method = IT_METHOD_DARE, o.drop = 1.0;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_EINVAL);
    /* no statistics at all: iteris cannot run, linear can */
    it_solve_opts_default(&o);
    for (size_t i = 0; i < 2; i++) p.tasks[i].xx = NULL;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_EINVAL && strstr(err.msg, "no statistics"));
    o.method = IT_METHOD_LINEAR;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_OK);
    /* statistics that are all zero: nothing reaches the site */
    double *z = calloc(9, sizeof *z);
    for (size_t i = 0; i < 2; i++) p.tasks[i].xx = z;
    o.method = IT_METHOD_ITERIS;
    CHECK(it_site_solve(&p.site, &o, W, NULL, &err) == IT_EINVAL && strstr(err.msg, "reach"));
    free(z);
    problem_free(&p);
}

/* Statistics given as Xt = X (NULL) and as explicit copies give the same answer; reg-mix 1 is X. */
static void test_solve_reg_mix(void)
{
    problem p;
    problem_make(&p, 16, 8, 6, 2, 2, 30, 1);
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.reg_mix = 1.0;
    double W1[48], W2[48];
    CHECK(it_site_solve(&p.site, &o, W1, NULL, NULL) == IT_OK);
    for (size_t i = 0; i < 2; i++) p.tasks[i].xt = p.tasks[i].tt = NULL;
    o.reg_mix = 0;
    CHECK(it_site_solve(&p.site, &o, W2, NULL, NULL) == IT_OK);
    CHECK(rel_diff(W1, W2, 48) < 1e-12);
    problem_free(&p);
}

/* ============================================================================================ */
/* Baselines                                                                                     */
/* ============================================================================================ */

/* RegMean against its formula, with the off-diagonal scale. */
static void test_solve_regmean(void)
{
    problem p;
    problem_make(&p, 17, 10, 7, 3, 2, 30, 0);
    size_t m = 10, n = 7;
    double alpha = 0.7, mw[3] = {1, 2, 0.5};
    double *P = calloc(m * n, sizeof *P), *Q = calloc(n * n, sizeof *Q), *ref = malloc(m * n * sizeof *ref);
    for (size_t i = 0; i < 3; i++) {
        double *d = naive_delta(&p, i), G[49];
        for (size_t a = 0; a < n; a++)
            for (size_t b = 0; b < n; b++) G[a * n + b] = p.xx[i][a * n + b] * (a == b ? 1.0 : alpha);
        for (size_t k = 0; k < n * n; k++) Q[k] += mw[i] * G[k];
        for (size_t a = 0; a < m; a++)
            for (size_t b = 0; b < n; b++)
                for (size_t k = 0; k < n; k++) P[a * n + b] += mw[i] * d[a * n + k] * G[k * n + b];
        free(d);
    }
    naive_right_solve(Q, P, ref, m, n);
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.method = IT_METHOD_REGMEAN, o.regmean_alpha = alpha, o.weights = mw, o.nweights = 3;
    double W[70];
    CHECK(it_site_solve(&p.site, &o, W, NULL, NULL) == IT_OK);
    double d = rel_diff(W, ref, m * n);
    CHECKF(d < 1e-10, "regmean: rel diff %.3g", d);
    free(P), free(Q), free(ref);
    problem_free(&p);
}

/* TIES on dense deltas small enough to work by hand (peft's ties with density 0.5). */
static void test_solve_ties_by_hand(void)
{
    /* three tasks, 1 x 4 deltas */
    double d0[4] = {3, -1, 0.5, -2}, d1[4] = {-4, 2, 1, 1}, d2[4] = {0.5, 3, -0.25, -1};
    it_site_task t[3] = {{0}, {0}, {0}};
    t[0].delta = d0, t[1].delta = d1, t[2].delta = d2;
    it_site s = {"s", 1, 4, NULL, 3, t};
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.method = IT_METHOD_TIES, o.density = 0.5;
    /* trimmed (top 2 by magnitude): T0 = {3,0,0,-2}, T1 = {-4,2,0,0}, T2 = {0,3,0,-1}
     * total:     votes {-1, 5, 0, -3} -> signs {-, +, + (>= 0), -}
     *   W = {-4/1, (2+3)/2, 0/1, (-2-1)/2} = {-4, 2.5, 0, -1.5} */
    double W[4];
    CHECK(it_site_solve(&s, &o, W, NULL, NULL) == IT_OK);
    double want[4] = {-4, 2.5, 0, -1.5};
    for (int j = 0; j < 4; j++) CHECKF(W[j] == want[j], "ties total [%d] = %g, want %g", j, W[j], want[j]);
    /* frequency: sign counts {+1-1+0 = 0 -> +, 2 -> +, 0 -> +, -2 -> -}: W = {3, 2.5, 0, -1.5} */
    o.ties_frequency = 1;
    CHECK(it_site_solve(&s, &o, W, NULL, NULL) == IT_OK);
    double want2[4] = {3, 2.5, 0, -1.5};
    for (int j = 0; j < 4; j++) CHECKF(W[j] == want2[j], "ties frequency [%d] = %g, want %g", j, W[j], want2[j]);
    /* weights multiply after the election: w = {2, 1, 1} */
    double w[3] = {2, 1, 1};
    o.ties_frequency = 0, o.weights = w, o.nweights = 3;
    CHECK(it_site_solve(&s, &o, W, NULL, NULL) == IT_OK);
    double want3[4] = {-4, 2.5, 0, -2.5};
    for (int j = 0; j < 4; j++) CHECKF(W[j] == want3[j], "ties weighted [%d] = %g, want %g", j, W[j], want3[j]);
    /* density 1 and one task: the delta itself */
    o.weights = NULL, o.nweights = 0, o.density = 1.0;
    s.ntasks = 1;
    CHECK(it_site_solve(&s, &o, W, NULL, NULL) == IT_OK);
    for (int j = 0; j < 4; j++) CHECK(W[j] == d0[j]);
}

/* DARE: p = 0 is linear; a seed gives one answer; the mean over seeds approaches linear. */
static void test_solve_dare(void)
{
    problem p;
    problem_make(&p, 18, 20, 16, 2, 2, 10, 0);
    size_t len = 320;
    it_solve_opts o;
    it_solve_opts_default(&o);
    double *lin = malloc(len * sizeof *lin), *W = malloc(len * sizeof *W), *W2 = malloc(len * sizeof *W2);
    double *mean = calloc(len, sizeof *mean);
    o.method = IT_METHOD_LINEAR;
    CHECK(it_site_solve(&p.site, &o, lin, NULL, NULL) == IT_OK);
    o.method = IT_METHOD_DARE, o.drop = 0;
    CHECK(it_site_solve(&p.site, &o, W, NULL, NULL) == IT_OK);
    CHECK(rel_diff(W, lin, len) < 1e-15);
    o.drop = 0.5, o.seed = 7;
    CHECK(it_site_solve(&p.site, &o, W, NULL, NULL) == IT_OK);
    CHECK(it_site_solve(&p.site, &o, W2, NULL, NULL) == IT_OK);
    CHECK(memcmp(W, W2, len * sizeof *W) == 0);
    size_t dropped = 0;
    for (size_t j = 0; j < len; j++) dropped += W[j] == 0;
    CHECKF(dropped > 40 && dropped < 120, "dropped %zu of %zu (both tasks' entries dropped: ~1/4)", dropped, len);
    o.seed = 8;
    CHECK(it_site_solve(&p.site, &o, W2, NULL, NULL) == IT_OK);
    CHECK(memcmp(W, W2, len * sizeof *W) != 0);
    for (uint64_t seed = 0; seed < 400; seed++) {
        o.seed = seed;
        CHECK(it_site_solve(&p.site, &o, W, NULL, NULL) == IT_OK);
        for (size_t j = 0; j < len; j++) mean[j] += W[j] / 400;
    }
    double d = rel_diff(mean, lin, len);
    CHECKF(d < 0.1, "the mean of 400 DARE draws is %.3g away from linear", d);
    /* another site name draws another mask */
    o.seed = 7;
    CHECK(it_site_solve(&p.site, &o, W, NULL, NULL) == IT_OK);
    p.site.name = "layers.1.q_proj";
    CHECK(it_site_solve(&p.site, &o, W2, NULL, NULL) == IT_OK);
    CHECK(memcmp(W, W2, len * sizeof *W) != 0);
    free(lin), free(W), free(W2), free(mean);
    problem_free(&p);
}

/* A task that does not adapt the site contributes dW = 0 (the union-of-targets rule). */
static void test_solve_untargeted_task(void)
{
    problem p;
    problem_make(&p, 19, 8, 6, 2, 2, 40, 0);
    p.tasks[1].A = NULL, p.tasks[1].B = NULL;
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.alpha1 = o.alpha2 = 0;
    double W[48];
    double lam[2];
    it_site_info info = {0, lam};
    CHECK(it_site_solve(&p.site, &o, W, &info, NULL) == IT_OK);
    /* oracle: the same with task 1's delta zeroed by hand */
    p.tasks[1].A = p.A[1], p.tasks[1].B = p.B[1], p.tasks[1].scale = 0.0;
    double ref[48];
    CHECK(it_site_solve(&p.site, &o, ref, NULL, NULL) == IT_OK);
    CHECK(rel_diff(W, ref, 48) < 1e-12);
    CHECK(lam[1] > 0); /* its weight comes from W0 alone */
    problem_free(&p);
}

/* ============================================================================================ */
/* iteris solve: features files                                                                  */
/* ============================================================================================ */

typedef struct feat_builder {
    it_tensor t[64];
    uint64_t shapes[64][2];
    char names[64][96];
    void *data[64];
    size_t n;
} feat_builder;

static void fb_add(feat_builder *b, const char *name, const float *x, size_t rows, size_t cols)
{
    size_t k = b->n++;
    snprintf(b->names[k], sizeof b->names[k], "%s", name);
    b->shapes[k][0] = rows, b->shapes[k][1] = cols;
    unsigned char *bytes = malloc(rows * cols * 4);
    memcpy(bytes, x, rows * cols * 4); /* little-endian hosts; the suite checks byte order elsewhere */
    b->data[k] = bytes;
    b->t[k] = (it_tensor){b->names[k], IT_F32, 2, b->shapes[k], rows * cols, rows * cols * 4, bytes, 0, 0};
}

static void fb_free(feat_builder *b)
{
    for (size_t k = 0; k < b->n; k++) free(b->data[k]);
}

static int little_endian(void)
{
    uint16_t x = 1;
    unsigned char c;
    memcpy(&c, &x, 1);
    return c == 1;
}

static void test_solve_features_file(void)
{
    if (!little_endian()) {
        test_note("skipped: the test writes raw floats");
        return;
    }
    problem p;
    problem_make(&p, 21, 9, 7, 2, 2, 30, 1);
    feat_builder b = {0};
    for (size_t i = 0; i < 2; i++) {
        double *d = naive_delta(&p, i);
        float df[63];
        for (size_t k = 0; k < 63; k++) df[k] = (float)d[k];
        free(d);
        char name[96];
        snprintf(name, sizeof name, "model.layers.0.mlp.up_proj.delta.%zu", i);
        fb_add(&b, name, df, 9, 7);
        snprintf(name, sizeof name, "model.layers.0.mlp.up_proj.X.%zu", i);
        fb_add(&b, name, p.X[i], 30, 7);
        snprintf(name, sizeof name, "model.layers.0.mlp.up_proj.Xt.%zu", i);
        fb_add(&b, name, p.Xt[i], 30, 7);
    }
    fb_add(&b, "model.layers.0.mlp.up_proj.weight", p.w0, 9, 7);
    const char *feat = test_tmppath("features.safetensors"), *out = test_tmppath("wstar.safetensors");
    it_err err;
    CHECKF(it_st_save(feat, b.t, b.n, NULL, NULL, 0, &err) == IT_OK, "%s", err.msg);
    it_solve_opts o;
    it_solve_opts_default(&o);
    o.alpha1 = 1e-3, o.alpha2 = 2e-3;
    CHECKF(it_solve_features(feat, out, IT_F64, &o, NULL, NULL, &err) == IT_OK, "%s", err.msg);
    /* the oracle sees the f32-rounded deltas the file holds */
    for (size_t i = 0; i < 2; i++) {
        double *d = naive_delta(&p, i);
        /* rewrite the task as a dense f32-rounded delta */
        p.tasks[i].A = NULL;
        double *dd = malloc(63 * sizeof *dd);
        for (size_t k = 0; k < 63; k++) dd[k] = (float)d[k];
        p.tasks[i].delta = dd;
        free(d);
    }
    double ref[63];
    CHECK(it_site_solve(&p.site, &o, ref, NULL, NULL) == IT_OK);
    it_st *st = NULL;
    CHECKF(it_st_open(&st, out, &err) == IT_OK, "%s", err.msg);
    const it_tensor *w = st ? it_st_find(st, "model.layers.0.mlp.up_proj") : NULL;
    CHECK(w && w->dtype == IT_F64 && w->ndim == 2 && w->shape[0] == 9 && w->shape[1] == 7);
    if (w) {
        double got[63];
        memcpy(got, w->data, sizeof got);
        double d = rel_diff(got, ref, 63);
        CHECKF(d < 1e-12, "features file vs direct: %.3g", d);
    }
    CHECK(st && it_st_meta_get(st, "iteris_method") && !strcmp(it_st_meta_get(st, "iteris_method"), "iteris"));
    it_st_close(st);
    for (size_t i = 0; i < 2; i++) free((void *)p.tasks[i].delta);

    /* through the command line too */
    char cmd[8192];
    const char *bin = getenv("ITERIS_BIN");
    snprintf(cmd, sizeof cmd, "%s solve --features %s --out %s --alpha1 1e-3 --alpha2 2e-3 --dtype F64", bin ? bin : "./iteris",
             feat, test_tmppath("cli.safetensors"));
    CHECK(system(cmd) == 0);
    /* usage errors exit 2, bad input 1 */
    snprintf(cmd, sizeof cmd, "%s solve --features %s 2>/dev/null", bin ? bin : "./iteris", feat);
    CHECK(WEXITSTATUS(system(cmd)) == 2);
    snprintf(cmd, sizeof cmd, "%s solve --features %s --out %s --method magic 2>/dev/null", bin ? bin : "./iteris", feat,
             test_tmppath("x.safetensors"));
    CHECK(WEXITSTATUS(system(cmd)) == 2);
    snprintf(cmd, sizeof cmd, "%s solve --features %s --out %s --weights 1,2,3 2>/dev/null", bin ? bin : "./iteris", feat,
             test_tmppath("x.safetensors"));
    CHECK(WEXITSTATUS(system(cmd)) == 1); /* 3 weights for 2 tasks */
    snprintf(cmd, sizeof cmd, "%s solve --features %s --out %s 2>/dev/null", bin ? bin : "./iteris",
             test_tmppath("missing.safetensors"), test_tmppath("x.safetensors"));
    CHECK(WEXITSTATUS(system(cmd)) == 1);
    FILE *leftover = fopen(test_tmppath("x.safetensors"), "rb"); /* failed runs leave no output */
    CHECK(leftover == NULL);
    if (leftover) fclose(leftover);
    size_t l1 = 0, l2 = 0;
    unsigned char *f1 = test_read_file(out, &l1), *f2 = test_read_file(test_tmppath("cli.safetensors"), &l2);
    CHECK(f1 && f2 && l1 == l2 && !memcmp(f1, f2, l1));
    free(f1), free(f2);

    /* a missing X for a stats method, a malformed key */
    feat_builder bad = {0};
    fb_add(&bad, "s.delta.0", p.w0, 9, 7);
    fb_add(&bad, "s.delta.1", p.w0, 9, 7);
    fb_add(&bad, "s.X.0", p.X[0], 30, 7);
    CHECK(it_st_save(feat, bad.t, bad.n, NULL, NULL, 0, NULL) == IT_OK);
    CHECK(it_solve_features(feat, out, IT_F32, &o, NULL, NULL, &err) == IT_EFORMAT && strstr(err.msg, "s.X.1"));
    o.method = IT_METHOD_LINEAR; /* linear needs no features */
    CHECKF(it_solve_features(feat, out, IT_F32, &o, NULL, NULL, &err) == IT_OK, "%s", err.msg);
    fb_add(&bad, "s.Y.0", p.X[0], 30, 7);
    CHECK(it_st_save(feat, bad.t, bad.n, NULL, NULL, 0, NULL) == IT_OK);
    CHECK(it_solve_features(feat, out, IT_F32, &o, NULL, NULL, &err) == IT_EFORMAT && strstr(err.msg, "s.Y.0"));
    fb_free(&bad);
    /* NaN or Inf in a delta or a feature is named where it is read (file, key, element), for every
     * method, before it can become a NaN statistic or weight */
    memset(&bad, 0, sizeof bad);
    fb_add(&bad, "s.delta.0", p.w0, 9, 7);
    fb_add(&bad, "s.delta.1", p.w0, 9, 7);
    fb_add(&bad, "s.X.0", p.X[0], 30, 7);
    fb_add(&bad, "s.X.1", p.X[1], 30, 7);
    ((float *)bad.data[3])[40] = NAN;
    CHECK(it_st_save(feat, bad.t, bad.n, NULL, NULL, 0, NULL) == IT_OK);
    it_solve_opts_default(&o);
    CHECKF(it_solve_features(feat, out, IT_F32, &o, NULL, NULL, &err) == IT_EFORMAT && strstr(err.msg, feat) &&
           strstr(err.msg, "s.X.1: holds NaN or Inf (element 40 is NaN)"), "%s", err.msg);
    ((float *)bad.data[3])[40] = 0.5f, ((float *)bad.data[1])[3] = -INFINITY;
    CHECK(it_st_save(feat, bad.t, bad.n, NULL, NULL, 0, NULL) == IT_OK);
    o.method = IT_METHOD_LINEAR;
    CHECKF(it_solve_features(feat, out, IT_F32, &o, NULL, NULL, &err) == IT_EFORMAT &&
           strstr(err.msg, "s.delta.1: holds NaN or Inf (element 3 is -Inf)"), "%s", err.msg);
    fb_free(&bad);
    fb_free(&b);
    problem_free(&p);
}

/* ============================================================================================ */
/* The real fixture adapters (data/llama): union of targets, rsLoRA scales, captured inputs      */
/* ============================================================================================ */

/* Rows of every run of one variant at a site, concatenated: [28 x d_in] for the llama fixture. */
static float *fixture_rows(const it_st *st, const char *variant, const char *site, size_t n, size_t *rows)
{
    const char *runs[] = {"seq0", "seq1", "seq2"};
    float *X = NULL;
    size_t total = 0;
    for (int k = 0; k < 3; k++) {
        char key[256];
        snprintf(key, sizeof key, "%s/%s/in/%s", variant, runs[k], site);
        const it_tensor *t = it_st_find(st, key);
        if (!t || t->ndim != 2 || t->shape[1] != n) {
            free(X);
            return NULL;
        }
        X = realloc(X, (total + t->shape[0]) * n * sizeof *X);
        it_tensor_to_f32(t, X + total * n, NULL);
        total += t->shape[0];
    }
    *rows = total;
    return X;
}

static void test_solve_fixture_llama(void)
{
    const char *names[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_attn", "lora_r4_a8_mlp"};
    it_adapter *ad[3] = {NULL, NULL, NULL};
    it_st *exp = NULL, *base = NULL;
    it_err err;
    for (int i = 0; i < 3; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "llama/adapters/%s", names[i]);
        CHECKF(it_adapter_load(&ad[i], test_data(dir), &err) == IT_OK, "%s", err.msg);
    }
    CHECK(it_st_open(&exp, test_data("llama/expected.safetensors"), &err) == IT_OK);
    CHECK(it_st_open(&base, test_data("llama/base/model.safetensors"), &err) == IT_OK);
    if (!ad[0] || !ad[1] || !ad[2] || !exp || !base) goto done;
    /* the union of the targets: adapter 0 targets all 14 sites */
    CHECK(ad[0]->n == 14 && ad[1]->n == 8 && ad[2]->n == 6);
    double worst = 0;
    size_t untargeted = 0;
    for (size_t s = 0; s < ad[0]->n; s++) {
        const char *site = ad[0]->mods[s].name;
        problem p;
        memset(&p, 0, sizeof p);
        p.m = (size_t)ad[0]->mods[s].d_out, p.n = (size_t)ad[0]->mods[s].d_in, p.N = 3;
        char wname[256];
        snprintf(wname, sizeof wname, "%s.weight", site);
        const it_tensor *w0 = it_st_find(base, wname);
        CHECK(w0 && w0->numel == p.m * p.n);
        if (!w0) continue;
        p.w0 = malloc(p.m * p.n * sizeof *p.w0);
        it_tensor_to_f32(w0, p.w0, NULL);
        for (size_t i = 0; i < 3; i++) {
            const it_lora_module *mod = it_adapter_find(ad[i], "", site);
            untargeted += !mod;
            p.X[i] = fixture_rows(exp, names[i], site, p.n, &p.rows);
            CHECK(p.X[i] != NULL);
            if (!p.X[i]) break;
            p.xx[i] = naive_cross(p.X[i], p.X[i], p.rows, p.n);
            p.tasks[i] = (it_site_task){mod ? mod->A : NULL, mod ? mod->B : NULL, mod ? mod->r : 0,
                                        mod ? mod->scale : 0, NULL, p.xx[i], NULL, NULL, -1.0};
        }
        p.site = (it_site){site, (int64_t)p.m, (int64_t)p.n, p.w0, 3, p.tasks};
        if (p.X[0] && p.X[1] && p.X[2]) {
            it_solve_opts o;
            it_solve_opts_default(&o);
            o.alpha1 = o.alpha2 = 0.05; /* 28 rows for d_in 64 or 160: regularise */
            double *W = malloc(p.m * p.n * sizeof *W), *ref = malloc(p.m * p.n * sizeof *ref);
            it_site_info info = {0, NULL};
            CHECKF(it_site_solve(&p.site, &o, W, &info, &err) == IT_OK, "%s: %s", site, err.msg);
            CHECK(info.ridge == 0);
            naive_iteris(&p, 0.05, 0.05, 0, 0, NULL, ref, NULL);
            double d = rel_diff(W, ref, p.m * p.n);
            CHECKF(d < 1e-9, "%s: rel diff %.3g", site, d);
            if (d > worst) worst = d;
            free(W), free(ref);
        }
        for (size_t i = 0; i < 3; i++) p.A[i] = p.B[i] = NULL; /* owned by the adapters */
        problem_free(&p);
    }
    CHECKF(untargeted == 14 * 3 - 28, "untargeted (site, task) pairs: %zu", untargeted);
    test_note("14 sites of the llama fixture: worst rel diff %.3g", worst);
done:
    for (int i = 0; i < 3; i++) it_adapter_free(ad[i]);
    it_st_close(exp), it_st_close(base);
}

/* The union of the llama fixture adapters' targets, checked against the base. */
static void test_solve_sites_union(void)
{
    const char *names[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_attn", "lora_r4_a8_mlp"};
    it_adapter *ad[3] = {NULL, NULL, NULL};
    it_st *base = NULL;
    it_err err;
    for (int i = 0; i < 3; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "llama/adapters/%s", names[i]);
        CHECK(it_adapter_load(&ad[i], test_data(dir), &err) == IT_OK);
    }
    CHECK(it_st_open(&base, test_data("llama/base/model.safetensors"), &err) == IT_OK);
    if (!ad[0] || !ad[1] || !ad[2] || !base) goto done;
    it_site_def *sites = NULL;
    size_t n = 0;
    /* the mlp and attention adapters alone: their union is all 14 sites */
    const it_adapter *two[2] = {ad[1], ad[2]};
    CHECKF(it_sites_union(two, 2, "", base, &sites, &n, &err) == IT_OK, "%s", err.msg);
    CHECK(n == 14);
    for (size_t s = 0; s < n; s++) {
        int attn = strstr(sites[s].name, "self_attn") != NULL;
        CHECKF((sites[s].mods[0] != NULL) == attn && (sites[s].mods[1] != NULL) == !attn, "%s", sites[s].name);
        CHECK(sites[s].rank_sum == (attn ? 8 : 4));
        if (s > 0) CHECK(strcmp(sites[s - 1].name, sites[s].name) < 0);
    }
    it_sites_free(sites, n);
    const it_adapter *all[3] = {ad[0], ad[1], ad[2]};
    CHECK(it_sites_union(all, 3, "", base, &sites, &n, &err) == IT_OK && n == 14);
    for (size_t s = 0; s < n; s++) {
        int attn = strstr(sites[s].name, "self_attn") != NULL;
        CHECK(sites[s].rank_sum == 4 + (attn ? 8 : 4));
    }
    it_sites_free(sites, n);
    /* another base: a q_proj of another shape, nothing else */
    static float w[32 * 64];
    static uint64_t shape[2] = {32, 64};
    it_tensor t = {"model.layers.0.self_attn.q_proj.weight", IT_F32, 2, shape, 32 * 64, sizeof w, w, 0, 0};
    const char *path = test_tmppath("other_base.safetensors");
    CHECK(it_st_save(path, &t, 1, NULL, NULL, 0, NULL) == IT_OK);
    it_st *other = NULL;
    CHECK(it_st_open(&other, path, &err) == IT_OK);
    CHECK(it_sites_union(all, 3, "", other, &sites, &n, &err) == IT_EFORMAT && sites == NULL);
    CHECKF(strstr(err.msg, "lora_r4_a16_all: model.layers.0.mlp.down_proj needs a base weight [64, 160], the base has "
                           "none") && strstr(err.msg, "(14 sites in all)"), "%s", err.msg);
    test_note("%s", err.msg);
    it_st_close(other);
done:
    for (int i = 0; i < 3; i++) it_adapter_free(ad[i]);
    it_st_close(base);
}

/* The objective the merge reports, from the statistics, equals l ||X V^T - Xt W^T||^2 from the rows. */
static void test_solve_objective(void)
{
    problem p;
    problem_make(&p, 23, 7, 5, 2, 2, 20, 1);
    it_solve_opts o;
    it_solve_opts_default(&o);
    double W[35];
    for (size_t k = 0; k < 35; k++) W[k] = 0.1 * urand();
    for (int pre = 0; pre < 2; pre++) {
        o.with_pretrain = pre;
        for (size_t i = 0; i < 2; i++) {
            double got = 0, want = 0;
            CHECK(it__site_objective(&p.site, &p.tasks[i], &o, 0.75, W, &got) == IT_OK);
            double *d = naive_delta(&p, i);
            for (size_t t = 0; t < p.rows; t++)
                for (size_t a = 0; a < p.m; a++) {
                    double y = 0;
                    for (size_t b = 0; b < p.n; b++)
                        y += p.X[i][t * p.n + b] * (d[a * p.n + b] + (pre ? p.w0[a * p.n + b] : 0.0)) -
                             p.Xt[i][t * p.n + b] * W[a * p.n + b];
                    want += y * y;
                }
            want *= 0.75;
            CHECKF(fabs(got - want) <= 1e-10 * want, "objective %.17g, from the rows %.17g", got, want);
            free(d);
        }
    }
    problem_free(&p);
}

void suite_solve(void)
{
    RUN(test_solve_iteris_naive);
    RUN(test_solve_one_adapter_back);
    RUN(test_solve_identical_adapters);
    RUN(test_solve_task_order);
    RUN(test_solve_ridge);
    RUN(test_solve_bad_input);
    RUN(test_solve_reg_mix);
    RUN(test_solve_objective);
    RUN(test_solve_regmean);
    RUN(test_solve_ties_by_hand);
    RUN(test_solve_dare);
    RUN(test_solve_untargeted_task);
    RUN(test_solve_features_file);
    RUN(test_solve_fixture_llama);
    RUN(test_solve_sites_union);
}
