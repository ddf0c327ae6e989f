/* iteris.c -- the IterIS solve and the baselines, one site at a time (DESIGN.md section 1).
 *
 * A site is one LoRA-targeted linear module: y = x W^T with W [d_out x d_in]. For tasks i = 1..N it
 * has a delta dW_i (low-rank s_i B_i A_i, dense, or 0) and the d_in x d_in statistics of the task's
 * calibration rows: X_i^T X_i, X_i^T Xt_i, Xt_i^T Xt_i (X_i: the site's inputs in task i's own model;
 * Xt_i: in the current merged model, same rows). Nothing here knows which model the site belongs
 * to; the schedules that refresh Xt live with the forward passes.
 *
 * IterIS (Chen et al., CVPR 2025, arXiv 2411.15231), as its official implementation computes it
 * (HKUST-LongGroup/IterIS-merging: solution_matrix() and the ceof_list of update_param()):
 *
 *   l_i  = ||W0 + dW_i||_F^2 / ||X_i (W0 + dW_i)^T||_F^2          the paper's adaptive weights
 *   Xh_i = (1 - beta) Xt_i + beta X_i                               reg_ceof in the official code
 *   C_i  = X_i^T Xh_i  + a1 ||X_i^T Xh_i||_F  I                     the paper's regularisation term,
 *   G_i  = Xh_i^T Xh_i + a2 ||Xh_i^T Xh_i||_F I                     scaled by the statistics' norm
 *   P    = sum_i l_i m_i V_i C_i,  Q = sum_i l_i m_i G_i             V_i = dW_i or W0 + dW_i
 *   W*   = P Q^-1                                                   the closed-form solution, by
 *                                                                   Cholesky of Q (torch.linalg.solve
 *                                                                   there)
 *
 * Without a1, a2, W* minimises sum_i l_i m_i ||X_i V_i^T - Xh_i W^T||_F^2; the two terms add
 * a1' V_i to P and a2' I to Q (a1', a2' the scaled coefficients), which for a1' = a2' is the penalty
 * a ||W - V_i||_F^2 pulling W* towards each V_i in directions no feature reaches. Everything is in
 * double. When Q is not positive definite (too few rows, a1 = a2 = 0) a ridge eps * mean(diag Q) is
 * added, eps = 1e-12, 1e-11, ... 1e-2, and reported.
 *
 * Baselines take the same site: RegMean (Jin et al., ICLR 2023: W* = (sum_i dW_i G'_i)(sum_i G'_i)^-1,
 * G'_i = X_i^T X_i with its off-diagonal entries scaled by alpha), linear / task arithmetic, TIES
 * (Yadav et al., NeurIPS 2023) and DARE (Yu et al., ICML 2024) as peft's merge_utils computes them,
 * and cat (the exact sum of the deltas; its low-rank form is written by the lora writer).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = {"iteris", "regmean", "linear", "ties", "dare", "cat"};

const char *it_method_name(it_method m)
{
    return (unsigned)m < sizeof method_names / sizeof *method_names ? method_names[m] : "?";
}

int it_method_parse(const char *name, it_method *m)
{
    for (size_t i = 0; i < sizeof method_names / sizeof *method_names; i++)
        if (!strcmp(name, method_names[i])) {
            *m = (it_method)i;
            return IT_OK;
        }
    return IT_EINVAL;
}

void it_solve_opts_default(it_solve_opts *o)
{
    memset(o, 0, sizeof *o);
    o->method = IT_METHOD_ITERIS;
    o->alpha1 = 1e-7;
    o->alpha2 = 1e-7;
    o->regmean_alpha = 0.9;
    o->density = 0.2;
    o->drop = 0.5;
}

/* ============================================================================================ */
/* Small helpers                                                                                 */
/* ============================================================================================ */

typedef struct solve_ctx {
    const it_site *site;
    const it_solve_opts *o;
    size_t m, n;           /* d_out, d_in */
    it_err *err;
} solve_ctx;

static int oom(const solve_ctx *c)
{
    return it__fail(c->err, IT_ENOMEM, "site %s: out of memory", c->site->name);
}

/* The manual weight of task i. */
static double weight(const solve_ctx *c, size_t i)
{
    if (c->o->weights) return c->o->weights[i];
    int mean = c->o->method == IT_METHOD_LINEAR || c->o->method == IT_METHOD_DARE;
    return mean ? 1.0 / (double)c->site->ntasks : 1.0;
}

static int has_delta(const it_site_task *t)
{
    return t->A || t->delta;
}

/* dst [m x n] += f * dW_i (dense, double). */
static void add_delta(const solve_ctx *c, const it_site_task *t, double f, double *dst)
{
    size_t m = c->m, n = c->n;
    if (t->delta) {
        for (size_t k = 0; k < m * n; k++) dst[k] += f * t->delta[k];
    } else if (t->A) {
        size_t r = (size_t)t->r;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0.0;
                for (size_t k = 0; k < r; k++) s += (double)t->B[i * r + k] * (double)t->A[k * n + j];
                dst[i * n + j] += f * t->scale * s;
            }
    }
}

/* dst [m x n] += f * W0. */
static void add_w0(const solve_ctx *c, double f, double *dst)
{
    if (!c->site->w0) return;
    for (size_t k = 0; k < c->m * c->n; k++) dst[k] += f * (double)c->site->w0[k];
}

static double frob(const double *a, size_t len)
{
    double s = 0.0;
    for (size_t k = 0; k < len; k++) s += a[k] * a[k];
    return sqrt(s);
}

static int all_finite(const double *a, size_t len)
{
    for (size_t k = 0; k < len; k++)
        if (!isfinite(a[k])) return 0;
    return 1;
}

/* ============================================================================================ */
/* Statistics and the normal equations                                                           */
/* ============================================================================================ */

/* The two statistics of task i after reg-mix (beta = o->reg_mix):
 *   cm = X^T Xh  = (1 - beta) X^T Xt + beta X^T X
 *   gm = Xh^T Xh = (1 - beta)^2 Xt^T Xt + beta (1 - beta) (X^T Xt + Xt^T X) + beta^2 X^T X
 * With beta = 0 they are the inputs themselves (no copy): *cm_own / *gm_own stay NULL. */
static int mixed_stats(const solve_ctx *c, const it_site_task *t, const double **cm, const double **gm,
                       double **cm_own, double **gm_own)
{
    size_t n = c->n;
    const double *xx = t->xx, *xt = t->xt ? t->xt : t->xx, *tt = t->tt ? t->tt : t->xx;
    double b = c->o->reg_mix;
    *cm_own = *gm_own = NULL;
    if (b == 0.0) {
        *cm = xt, *gm = tt;
        return IT_OK;
    }
    double *cmo = it__malloc_n(n * n, sizeof *cmo), *gmo = it__malloc_n(n * n, sizeof *gmo);
    if (!cmo || !gmo) {
        free(cmo), free(gmo);
        return oom(c);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            size_t ij = i * n + j, ji = j * n + i;
            cmo[ij] = (1.0 - b) * xt[ij] + b * xx[ij];
            gmo[ij] = (1.0 - b) * (1.0 - b) * tt[ij] + b * (1.0 - b) * (xt[ij] + xt[ji]) + b * b * xx[ij];
        }
    *cm = *cm_own = cmo, *gm = *gm_own = gmo;
    return IT_OK;
}

/* ||X (W0 + dW)^T||_F^2 = sum over rows w of W of w^T (X^T X) w, from the Gram (double). */
static int output_norm2(const solve_ctx *c, const it_site_task *t, const double *w, double *out)
{
    size_t m = c->m, n = c->n;
    if (t->out_norm2 >= 0) {
        *out = t->out_norm2;
        return IT_OK;
    }
    double *ws = it__malloc_n(m * n, sizeof *ws);
    if (!ws) return oom(c);
    int rc = it_dgemm(IT_N, IT_N, m, n, n, 1.0, w, n, t->xx, n, 0.0, ws, n);
    double s = 0.0;
    for (size_t k = 0; rc == IT_OK && k < m * n; k++) s += ws[k] * w[k];
    free(ws);
    if (rc != IT_OK) return oom(c);
    *out = s;
    return IT_OK;
}

/* l_i = ||W0 + dW_i||_F^2 / ||X_i (W0 + dW_i)^T||_F^2 (0 when no row of X_i reaches the site). */
static int adaptive_weight(const solve_ctx *c, const it_site_task *t, double *l)
{
    size_t len = c->m * c->n;
    double *w = it__calloc(len, sizeof *w);
    if (!w) return oom(c);
    add_w0(c, 1.0, w);
    add_delta(c, t, 1.0, w);
    double num = frob(w, len);
    double den = 0.0;
    int rc = output_norm2(c, t, w, &den);
    free(w);
    if (rc != IT_OK) return rc;
    *l = den > 0.0 ? num * num / den : 0.0;
    return IT_OK;
}

/* P += f * V (S + reg I) for V = dW_i (low-rank or dense), S [n x n]: the low-rank form costs
 * r n^2 + m r n instead of m n^2. */
static int add_delta_times(const solve_ctx *c, const it_site_task *t, double f, const double *S, double reg,
                           double *P)
{
    size_t m = c->m, n = c->n;
    if (t->delta) {
        int rc = it_dgemm(IT_N, IT_N, m, n, n, f, t->delta, n, S, n, 1.0, P, n);
        if (rc != IT_OK) return oom(c);
        for (size_t k = 0; k < m * n; k++) P[k] += f * reg * t->delta[k];
        return IT_OK;
    }
    if (!t->A) return IT_OK;
    size_t r = (size_t)t->r;
    double *A = it__malloc_n(r * n, sizeof *A), *B = it__malloc_n(m * r, sizeof *B);
    double *AS = it__malloc_n(r * n, sizeof *AS);
    int rc = A && B && AS ? IT_OK : IT_ENOMEM;
    for (size_t k = 0; rc == IT_OK && k < r * n; k++) A[k] = t->A[k];
    for (size_t k = 0; rc == IT_OK && k < m * r; k++) B[k] = t->B[k];
    if (rc == IT_OK) rc = it_dgemm(IT_N, IT_N, r, n, n, 1.0, A, n, S, n, 0.0, AS, n);
    for (size_t k = 0; rc == IT_OK && k < r * n; k++) AS[k] += reg * A[k];
    if (rc == IT_OK) rc = it_dgemm(IT_N, IT_N, m, n, r, f * t->scale, B, r, AS, n, 1.0, P, n);
    free(A), free(B), free(AS);
    return rc == IT_OK ? IT_OK : oom(c);
}

/* X = P Q^-1 with Q symmetric (both triangles given). Q's lower triangle and diagonal are
 * overwritten by the factor; on failure they are rebuilt from the upper triangle and a growing
 * ridge is added (reported in info). P is untouched until the factorisation succeeds. */
static int solve_spd(const solve_ctx *c, double *Q, double *P, it_site_info *info)
{
    size_t n = c->n;
    double mean = 0.0;
    for (size_t i = 0; i < n; i++) mean += Q[i * n + i];
    mean /= (double)n;
    if (!(mean > 0.0))
        return it__fail(c->err, IT_EINVAL, "site %s: no task's calibration rows reach this site", c->site->name);
    double *diag = it__malloc_n(n, sizeof *diag);
    if (!diag) return oom(c);
    for (size_t i = 0; i < n; i++) diag[i] = Q[i * n + i];
    double r = 0.0, *ridge = &r;
    int rc = IT_ENOTSPD;
    size_t pivot = 0;
    for (int e = -13; e <= -2; e++) { /* -13: no ridge; then 1e-12 ... 1e-2 */
        if (e > -13) { /* restore the lower triangle, then add the next ridge */
            *ridge = pow(10.0, e);
            for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < i; j++) Q[i * n + j] = Q[j * n + i];
                Q[i * n + i] = diag[i] + *ridge * mean;
            }
        }
        rc = it_dpotrf(Q, n, n, &pivot);
        if (rc != IT_ENOTSPD) break;
    }
    free(diag);
    if (rc == IT_ENOTSPD)
        return it__fail(c->err, IT_ENOTSPD,
                        "site %s: Q is not positive definite even with a ridge of 1e-2 times its mean "
                        "diagonal (pivot %zu)", c->site->name, pivot);
    if (rc != IT_OK) return oom(c);
    if (info) info->ridge = r;
    rc = it_dtrsm_right(IT_T, c->m, n, Q, n, P, n);
    if (rc == IT_OK) rc = it_dtrsm_right(IT_N, c->m, n, Q, n, P, n);
    return rc == IT_OK ? IT_OK : oom(c);
}

/* ============================================================================================ */
/* IterIS and RegMean                                                                            */
/* ============================================================================================ */

/* IterIS: builds P and Q task by task, then W* = P Q^-1 (see the top of the file). */
static int solve_iteris(const solve_ctx *c, double *wstar, it_site_info *info)
{
    const it_site *s = c->site;
    const it_solve_opts *o = c->o;
    size_t m = c->m, n = c->n;
    double *Q = it__calloc(n * n, sizeof *Q);
    double *Csum = o->with_pretrain ? it__calloc(n * n, sizeof *Csum) : NULL; /* sum_i c_i C_i */
    if (!Q || (o->with_pretrain && !Csum)) {
        free(Q), free(Csum);
        return oom(c);
    }
    memset(wstar, 0, m * n * sizeof *wstar);
    int rc = IT_OK;
    double csum_reg = 0.0;
    for (size_t i = 0; rc == IT_OK && i < s->ntasks; i++) {
        const it_site_task *t = &s->tasks[i];
        double l = 0.0;
        rc = adaptive_weight(c, t, &l);
        if (rc != IT_OK) break;
        if (info && info->lambda) info->lambda[i] = l;
        double ci = l * weight(c, i);
        if (ci == 0.0) continue;
        const double *cm = NULL, *gm = NULL;
        double *cm_own = NULL, *gm_own = NULL;
        rc = mixed_stats(c, t, &cm, &gm, &cm_own, &gm_own);
        if (rc != IT_OK) break;
        double reg1 = o->alpha1 * frob(cm, n * n), reg2 = o->alpha2 * frob(gm, n * n);
        for (size_t k = 0; k < n * n; k++) Q[k] += ci * gm[k];
        for (size_t j = 0; j < n; j++) Q[j * n + j] += ci * reg2;
        rc = add_delta_times(c, t, ci, cm, reg1, wstar);
        if (rc == IT_OK && Csum) {
            for (size_t k = 0; k < n * n; k++) Csum[k] += ci * cm[k];
            csum_reg += ci * reg1;
        }
        free(cm_own), free(gm_own);
    }
    if (rc == IT_OK && Csum && s->w0) { /* V_i = W0 + dW_i: P += W0 (sum_i c_i C_i) */
        for (size_t j = 0; j < n; j++) Csum[j * n + j] += csum_reg;
        double *W0 = it__malloc_n(m * n, sizeof *W0);
        rc = W0 ? IT_OK : IT_ENOMEM;
        for (size_t k = 0; rc == IT_OK && k < m * n; k++) W0[k] = s->w0[k];
        if (rc == IT_OK) rc = it_dgemm(IT_N, IT_N, m, n, n, 1.0, W0, n, Csum, n, 1.0, wstar, n);
        free(W0);
        if (rc != IT_OK) rc = oom(c);
    }
    if (rc == IT_OK) rc = solve_spd(c, Q, wstar, info);
    free(Q), free(Csum);
    return rc;
}

/* RegMean: G'_i = X_i^T X_i with off-diagonals times alpha; W* = (sum m_i V_i G'_i)(sum m_i G'_i)^-1
 * (Jin et al. 2023, eq. 3 with their reduce_non_diagonal_ratio). With with_pretrain V_i = W0 + dW_i,
 * which gives the delta's answer plus W0. */
static int solve_regmean(const solve_ctx *c, double *wstar, it_site_info *info)
{
    const it_site *s = c->site;
    size_t m = c->m, n = c->n;
    double a = c->o->regmean_alpha;
    double *Q = it__calloc(n * n, sizeof *Q), *G = it__malloc_n(n * n, sizeof *G), *V = NULL;
    if (!Q || !G) {
        free(Q), free(G);
        return oom(c);
    }
    memset(wstar, 0, m * n * sizeof *wstar);
    int rc = IT_OK;
    for (size_t i = 0; rc == IT_OK && i < s->ntasks; i++) {
        const it_site_task *t = &s->tasks[i];
        double wi = weight(c, i);
        for (size_t p = 0; p < n; p++)
            for (size_t q = 0; q < n; q++) G[p * n + q] = p == q ? t->xx[p * n + q] : a * t->xx[p * n + q];
        for (size_t k = 0; k < n * n; k++) Q[k] += wi * G[k];
        if (c->o->with_pretrain) { /* V_i dense */
            if (!V) V = it__malloc_n(m * n, sizeof *V);
            if (!V) {
                rc = oom(c);
                break;
            }
            memset(V, 0, m * n * sizeof *V);
            add_w0(c, 1.0, V);
            add_delta(c, t, 1.0, V);
            if (it_dgemm(IT_N, IT_N, m, n, n, wi, V, n, G, n, 1.0, wstar, n) != IT_OK) rc = oom(c);
        } else if (has_delta(t)) {
            rc = add_delta_times(c, t, wi, G, 0.0, wstar);
        }
    }
    if (rc == IT_OK) rc = solve_spd(c, Q, wstar, info);
    free(Q), free(G), free(V);
    return rc;
}

/* ============================================================================================ */
/* Linear, cat, TIES, DARE                                                                       */
/* ============================================================================================ */

static int solve_linear(const solve_ctx *c, double *wstar)
{
    memset(wstar, 0, c->m * c->n * sizeof *wstar);
    for (size_t i = 0; i < c->site->ntasks; i++) add_delta(c, &c->site->tasks[i], weight(c, i), wstar);
    return IT_OK;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* peft's magnitude_based_pruning: keep the k = floor(density * numel) entries of largest
 * magnitude, zero the rest. torch.topk leaves the order of ties unspecified; here ties at the
 * threshold are kept in index order, so the result is reproducible. */
static int trim(const solve_ctx *c, double *d, size_t len)
{
    size_t k = (size_t)(c->o->density * (double)len);
    if (k >= len) return IT_OK;
    double *mag = it__malloc_n(len, sizeof *mag);
    if (!mag) return oom(c);
    for (size_t j = 0; j < len; j++) mag[j] = fabs(d[j]);
    qsort(mag, len, sizeof *mag, cmp_desc);
    double thr = k ? mag[k - 1] : INFINITY;
    size_t above = 0; /* entries strictly above the threshold are all kept */
    while (above < k && mag[above] > thr) above++;
    size_t ties = k - above;
    free(mag);
    for (size_t j = 0; j < len; j++) {
        double a = fabs(d[j]);
        if (a > thr) continue;
        if (a == thr && ties > 0) {
            ties--;
            continue;
        }
        d[j] = 0.0;
    }
    return IT_OK;
}

static double sign(double x)
{
    return (double)((x > 0) - (x < 0));
}

/* peft's ties(): trimmed deltas T_i; elected sign e = +1 where sum_i T_i >= 0 (or sum_i sign(T_i)
 * with frequency), else -1; W* = sum_{i: sign(T_i) = e} w_i T_i / max(1, #{i: sign(T_i) = e}). */
static int solve_ties(const solve_ctx *c, double *wstar)
{
    const it_site *s = c->site;
    size_t len = c->m * c->n, N = s->ntasks;
    double *T = it__calloc(N * len, sizeof *T), *vote = it__calloc(len, sizeof *vote);
    int rc = T && vote ? IT_OK : oom(c);
    for (size_t i = 0; rc == IT_OK && i < N; i++) {
        add_delta(c, &s->tasks[i], 1.0, T + i * len);
        rc = trim(c, T + i * len, len);
    }
    for (size_t i = 0; rc == IT_OK && i < N; i++)
        for (size_t j = 0; j < len; j++) vote[j] += c->o->ties_frequency ? sign(T[i * len + j]) : T[i * len + j];
    for (size_t j = 0; rc == IT_OK && j < len; j++) {
        double e = vote[j] >= 0 ? 1.0 : -1.0, sum = 0.0, count = 0.0;
        for (size_t i = 0; i < N; i++)
            if (sign(T[i * len + j]) == e) sum += weight(c, i) * T[i * len + j], count += 1.0;
        wstar[j] = sum / (count > 1.0 ? count : 1.0);
    }
    free(T), free(vote);
    return rc;
}

/* The mask stream of (seed, site, task): FNV-1a of the site name mixed with both, so every site
 * and task draws its own mask, the same for any thread count or site order. */
static uint64_t dare_stream(uint64_t seed, const char *site, size_t task)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (const char *p = site ? site : ""; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3u;
    uint64_t x = seed ^ h;
    x = it__splitmix64(&x) ^ (uint64_t)task;
    return it__splitmix64(&x);
}

/* peft's dare_linear: each entry of dW_i kept with probability 1 - p and divided by 1 - p, then
 * W* = sum_i w_i (masked dW_i). A uniform u in [0, 1) from 53 bits keeps the entry when u >= p. */
static int solve_dare(const solve_ctx *c, double *wstar)
{
    const it_site *s = c->site;
    size_t len = c->m * c->n;
    double p = c->o->drop, keep = 1.0 - p;
    double *d = it__malloc_n(len, sizeof *d);
    if (!d) return oom(c);
    memset(wstar, 0, len * sizeof *wstar);
    for (size_t i = 0; i < s->ntasks; i++) {
        memset(d, 0, len * sizeof *d);
        add_delta(c, &s->tasks[i], 1.0, d);
        uint64_t x = dare_stream(c->o->seed, s->name, i);
        double w = weight(c, i);
        for (size_t j = 0; j < len; j++) {
            double u = (double)(it__splitmix64(&x) >> 11) * 0x1p-53;
            if (u >= p) wstar[j] += w * d[j] / keep;
        }
    }
    free(d);
    return IT_OK;
}

/* ============================================================================================ */
/* Entry                                                                                         */
/* ============================================================================================ */

int it_solve_opts_check(const it_solve_opts *o, size_t ntasks, it_err *err)
{
    if ((unsigned)o->method > IT_METHOD_CAT) return it__fail(err, IT_EINVAL, "unknown method %d", (int)o->method);
    if (!(o->alpha1 >= 0 && o->alpha2 >= 0 && isfinite(o->alpha1) && isfinite(o->alpha2)))
        return it__fail(err, IT_EINVAL, "alpha1 and alpha2 must be finite and >= 0");
    if (!(o->reg_mix >= 0 && o->reg_mix <= 1))
        return it__fail(err, IT_EINVAL, "reg-mix must lie in [0, 1], got %g", o->reg_mix);
    if (!(o->regmean_alpha >= 0 && o->regmean_alpha <= 1))
        return it__fail(err, IT_EINVAL, "RegMean's alpha must lie in [0, 1], got %g", o->regmean_alpha);
    if (!(o->density > 0 && o->density <= 1))
        return it__fail(err, IT_EINVAL, "TIES density must lie in (0, 1], got %g", o->density);
    if (!(o->drop >= 0 && o->drop < 1))
        return it__fail(err, IT_EINVAL, "DARE drop probability must lie in [0, 1), got %g", o->drop);
    if (o->weights && o->nweights != ntasks)
        return it__fail(err, IT_EINVAL, "%zu weights given for %zu tasks", o->nweights, ntasks);
    for (size_t i = 0; o->weights && i < ntasks; i++)
        if (!isfinite(o->weights[i])) return it__fail(err, IT_EINVAL, "weight %zu is not finite", i + 1);
    return IT_OK;
}

static int check_inputs(const solve_ctx *c)
{
    const it_site *s = c->site;
    const it_solve_opts *o = c->o;
    const char *name = s->name;
    if (s->d_out <= 0 || s->d_in <= 0 || s->ntasks == 0 || !s->tasks)
        return it__fail(c->err, IT_EINVAL, "site %s: empty problem (%lld x %lld, %zu tasks)", name,
                        (long long)s->d_out, (long long)s->d_in, s->ntasks);
    int rc = it_solve_opts_check(o, s->ntasks, c->err);
    if (rc != IT_OK) return rc;
    int stats = o->method == IT_METHOD_ITERIS || o->method == IT_METHOD_REGMEAN;
    size_t nn = c->n * c->n;
    for (size_t i = 0; i < s->ntasks; i++) {
        const it_site_task *t = &s->tasks[i];
        if (t->A && (!t->B || t->r <= 0 || !isfinite(t->scale)))
            return it__fail(c->err, IT_EINVAL, "site %s: task %zu: incomplete low-rank delta", name, i + 1);
        if (!stats) continue;
        if (!t->xx)
            return it__fail(c->err, IT_EINVAL, "site %s: task %zu: no statistics (method %s needs them)",
                            name, i + 1, it_method_name(o->method));
        if (!all_finite(t->xx, nn) || (t->xt && !all_finite(t->xt, nn)) || (t->tt && !all_finite(t->tt, nn)))
            return it__fail(c->err, IT_EINVAL, "site %s: task %zu: the calibration statistics hold NaN or Inf",
                            name, i + 1);
    }
    return IT_OK;
}

int it_site_solve(const it_site *site_in, const it_solve_opts *o, double *wstar, it_site_info *info, it_err *err)
{
    it_site named = *site_in; /* every message names the site */
    if (!named.name) named.name = "?";
    const it_site *site = &named;
    solve_ctx c = {site, o, (size_t)site->d_out, (size_t)site->d_in, err};
    int rc = check_inputs(&c);
    if (rc != IT_OK) return rc;
    if (info) info->ridge = 0.0;
    if (info && info->lambda) memset(info->lambda, 0, site->ntasks * sizeof *info->lambda);
    switch (o->method) {
    case IT_METHOD_ITERIS: rc = solve_iteris(&c, wstar, info); break;
    case IT_METHOD_REGMEAN: rc = solve_regmean(&c, wstar, info); break;
    case IT_METHOD_LINEAR:
    case IT_METHOD_CAT: rc = solve_linear(&c, wstar); break;
    case IT_METHOD_TIES: rc = solve_ties(&c, wstar); break;
    case IT_METHOD_DARE: rc = solve_dare(&c, wstar); break;
    default: return it__fail(err, IT_EINVAL, "unknown method %d", (int)o->method);
    }
    int whole = o->method != IT_METHOD_ITERIS && o->method != IT_METHOD_REGMEAN; /* those two did it */
    if (rc == IT_OK && o->with_pretrain && whole) add_w0(&c, 1.0, wstar);
    if (rc == IT_OK && !all_finite(wstar, c.m * c.n))
        rc = it__fail(err, IT_EINVAL, "site %s: the merged weight holds NaN or Inf (check the adapters)", site->name);
    return rc;
}

/* ============================================================================================ */
/* The objective (the merge's progress and --alpha auto)                                         */
/* ============================================================================================ */

/* tr(A S B^T) for A, B [m x n], S [n x n]: the sum of (A S) .* B, in double. */
static int trace_asb(const double *A, const double *S, const double *B, size_t m, size_t n, double *out)
{
    double *AS = it__malloc_n(m * n, sizeof *AS);
    if (!AS) return IT_ENOMEM;
    int rc = it_dgemm(IT_N, IT_N, m, n, n, 1.0, A, n, S, n, 0.0, AS, n);
    double s = 0.0;
    for (size_t k = 0; rc == IT_OK && k < m * n; k++) s += AS[k] * B[k];
    free(AS);
    *out = s;
    return rc;
}

int it__site_objective(const it_site *site, const it_site_task *t, const it_solve_opts *o, double l, const double *W,
                       double *out)
{
    solve_ctx c = {site, o, (size_t)site->d_out, (size_t)site->d_in, NULL};
    size_t m = c.m, n = c.n;
    double *V = it__calloc(m * n, sizeof *V);
    if (!V) return IT_ENOMEM;
    if (o->with_pretrain) add_w0(&c, 1.0, V);
    add_delta(&c, t, 1.0, V);
    const double *xt = t->xt ? t->xt : t->xx, *tt = t->tt ? t->tt : t->xx;
    double x = 0, y = 0, z = 0;
    int rc = trace_asb(V, t->xx, V, m, n, &x);
    if (rc == IT_OK) rc = trace_asb(V, xt, W, m, n, &y);
    if (rc == IT_OK) rc = trace_asb(W, tt, W, m, n, &z);
    free(V);
    *out = l * (x - 2 * y + z);
    return rc;
}

/* ============================================================================================ */
/* Solving a features file (`iteris solve`)                                                      */
/* ============================================================================================ */

enum { FEAT_DELTA, FEAT_X, FEAT_XT, FEAT_WEIGHT };

/* One key of a features file, split into its site, its kind and its task index. */
typedef struct feat_key {
    const it_tensor *t;
    size_t site_len; /* the site is t->name[0..site_len) */
    int kind;
    size_t task;
} feat_key;

/* Splits "<site>.delta.<i>", "<site>.X.<i>", "<site>.Xt.<i>" or "<site>.weight"; 0 if it is none. */
static int split_key(const it_tensor *t, feat_key *k)
{
    const char *s = t->name;
    size_t len = strlen(s);
    k->t = t;
    k->task = 0;
    if (len > 7 && !strcmp(s + len - 7, ".weight")) {
        k->kind = FEAT_WEIGHT, k->site_len = len - 7;
        return 1;
    }
    size_t d = len;
    while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9') d--;
    if (d == len || len - d > 6 || (s[d] == '0' && len - d > 1) || d == 0 || s[d - 1] != '.') return 0;
    k->task = (size_t)strtoul(s + d, NULL, 10);
    static const struct { const char *suffix; int kind; } kinds[] = {
        {".delta.", FEAT_DELTA}, {".X.", FEAT_X}, {".Xt.", FEAT_XT}};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        size_t sl = strlen(kinds[i].suffix);
        if (d > sl && !memcmp(s + d - sl, kinds[i].suffix, sl)) {
            k->kind = kinds[i].kind, k->site_len = d - sl;
            return 1;
        }
    }
    return 0;
}

/* Orders keys by site, then kind, then task. */
static int cmp_site(const feat_key *x, const feat_key *y)
{
    size_t n = x->site_len < y->site_len ? x->site_len : y->site_len;
    int c = memcmp(x->t->name, y->t->name, n);
    if (c) return c;
    return x->site_len < y->site_len ? -1 : x->site_len > y->site_len;
}

static int cmp_feat_key(const void *a, const void *b)
{
    const feat_key *x = a, *y = b;
    int c = cmp_site(x, y);
    if (c) return c;
    if (x->kind != y->kind) return x->kind < y->kind ? -1 : 1;
    return x->task < y->task ? -1 : x->task > y->task;
}

/* The tensors of one site, by kind and task. */
typedef struct feat_site {
    char *name;
    const it_tensor *weight;
    const it_tensor **delta, **X, **Xt; /* [ntasks] each, NULL where absent */
} feat_site;

/* A float tensor converted to a fresh float32 array, checked to be [rows x cols] (rows 0: any). */
static int load_matrix(const char *path, const it_tensor *t, uint64_t rows, uint64_t cols, float **out,
                       it_err *err)
{
    *out = NULL;
    if (t->ndim != 2 || (rows && t->shape[0] != rows) || t->shape[1] != cols)
        return it__fail(err, IT_EFORMAT, "%s: %s: expected a matrix [%s%llu x %llu], got %zu dimensions%s", path,
                        t->name, rows ? "" : "rows ", (unsigned long long)(rows ? rows : 0),
                        (unsigned long long)cols, t->ndim, t->ndim == 2 ? " of another shape" : "");
    float *f = it__malloc_n(t->numel ? t->numel : 1, sizeof *f);
    if (!f) return it__fail(err, IT_ENOMEM, "%s: %s: out of memory", path, t->name);
    int rc = it_tensor_to_f32(t, f, err);
    if (rc != IT_OK) {
        it__err_prefix(err, path);
        free(f);
        return rc;
    }
    for (size_t k = 0; k < (size_t)t->numel; k++) /* named here, not later as a NaN statistic or weight */
        if (!isfinite(f[k])) {
            rc = it__fail(err, IT_EFORMAT, "%s: %s: holds NaN or Inf (element %zu is %s)", path, t->name, k,
                          isnan(f[k]) ? "NaN" : f[k] > 0 ? "Inf" : "-Inf");
            free(f);
            return rc;
        }
    *out = f;
    return IT_OK;
}

/* G = X^T X (both triangles) and, when Y is given, C = X^T Y, in double. */
static int gram_full(const float *X, const float *Y, size_t rows, size_t d, double *G, double *C)
{
    memset(G, 0, d * d * sizeof *G);
    int rc = it_gram(G, d, X, d, rows, d);
    for (size_t i = 0; rc == IT_OK && i < d; i++)
        for (size_t j = 0; j < i; j++) G[i * d + j] = G[j * d + i];
    if (rc == IT_OK && Y) {
        memset(C, 0, d * d * sizeof *C);
        rc = it_gram_cross(C, d, X, d, Y, d, rows, d, d);
    }
    return rc;
}

/* Everything one site's solve owns. */
typedef struct site_work {
    it_site_task *tasks;
    double **delta, **xx, **xt, **tt;
    float *w0;
    size_t ntasks;
} site_work;

static void site_work_free(site_work *w)
{
    for (size_t i = 0; i < w->ntasks; i++) {
        if (w->delta) free(w->delta[i]);
        if (w->xx) free(w->xx[i]);
        if (w->xt) free(w->xt[i]);
        if (w->tt) free(w->tt[i]);
    }
    free(w->tasks), free(w->delta), free(w->xx), free(w->xt), free(w->tt), free(w->w0);
    memset(w, 0, sizeof *w);
}

/* Loads one site's deltas, base weight and statistics and solves it into wstar [d_out x d_in]. */
static int solve_feature_site(const char *path, const feat_site *fs, size_t ntasks, const it_solve_opts *o,
                              double **wstar_out, int64_t *d_out, int64_t *d_in, it_site_info *info, it_err *err)
{
    /* the shape [d_out x d_in]: from the first delta, else from the base weight */
    const it_tensor *ref = NULL;
    for (size_t i = 0; !ref && i < ntasks; i++) ref = fs->delta[i];
    if (!ref) ref = fs->weight;
    if (!ref)
        return it__fail(err, IT_EFORMAT, "%s: site %s: no task has a delta (keys %s.delta.<i>)", path, fs->name,
                        fs->name);
    if (ref->ndim != 2)
        return it__fail(err, IT_EFORMAT, "%s: %s: expected a matrix [d_out x d_in], got %zu dimensions", path,
                        ref->name, ref->ndim);
    uint64_t m = ref->shape[0], n = ref->shape[1];
    if (m == 0 || n == 0) return it__fail(err, IT_EFORMAT, "%s: %s: an empty matrix", path, ref->name);
    int stats = o->method == IT_METHOD_ITERIS || o->method == IT_METHOD_REGMEAN;
    site_work w = {0};
    w.ntasks = ntasks;
    w.tasks = it__calloc(ntasks, sizeof *w.tasks);
    w.delta = it__calloc(ntasks, sizeof *w.delta);
    w.xx = it__calloc(ntasks, sizeof *w.xx);
    w.xt = it__calloc(ntasks, sizeof *w.xt);
    w.tt = it__calloc(ntasks, sizeof *w.tt);
    int rc = w.tasks && w.delta && w.xx && w.xt && w.tt ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    if (rc == IT_OK && fs->weight) rc = load_matrix(path, fs->weight, m, n, &w.w0, err);
    for (size_t i = 0; rc == IT_OK && i < ntasks; i++) {
        it_site_task *t = &w.tasks[i];
        t->out_norm2 = -1.0;
        if (fs->delta[i]) {
            float *f = NULL;
            rc = load_matrix(path, fs->delta[i], m, n, &f, err);
            if (rc == IT_OK && !(w.delta[i] = it__malloc_n(m * n, sizeof(double))))
                rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
            for (size_t k = 0; rc == IT_OK && k < m * n; k++) w.delta[i][k] = f[k];
            free(f);
            t->delta = w.delta[i];
        }
        if (!stats) continue;
        if (!fs->X[i]) {
            rc = it__fail(err, IT_EFORMAT, "%s: site %s: no %s.X.%zu (method %s needs every task's features)", path,
                          fs->name, fs->name, i, it_method_name(o->method));
            break;
        }
        float *X = NULL, *Xt = NULL;
        uint64_t rows = fs->X[i]->ndim == 2 ? fs->X[i]->shape[0] : 0;
        rc = load_matrix(path, fs->X[i], 0, n, &X, err);
        if (rc == IT_OK && fs->Xt[i]) rc = load_matrix(path, fs->Xt[i], rows, n, &Xt, err);
        if (rc == IT_OK) {
            w.xx[i] = it__malloc_n(n * n, sizeof(double));
            if (Xt) w.xt[i] = it__malloc_n(n * n, sizeof(double)), w.tt[i] = it__malloc_n(n * n, sizeof(double));
            if (!w.xx[i] || (Xt && (!w.xt[i] || !w.tt[i]))) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        }
        if (rc == IT_OK && gram_full(X, Xt, rows, n, w.xx[i], w.xt[i]) != IT_OK)
            rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        if (rc == IT_OK && Xt && gram_full(Xt, NULL, rows, n, w.tt[i], NULL) != IT_OK)
            rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        free(X), free(Xt);
        t->xx = w.xx[i], t->xt = w.xt[i], t->tt = w.tt[i];
    }
    double *wstar = NULL;
    if (rc == IT_OK && !(wstar = it__malloc_n(m * n, sizeof *wstar)))
        rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    if (rc == IT_OK) {
        it_site site = {fs->name, (int64_t)m, (int64_t)n, w.w0, ntasks, w.tasks};
        rc = it_site_solve(&site, o, wstar, info, err);
    }
    site_work_free(&w);
    if (rc != IT_OK) {
        free(wstar);
        return rc;
    }
    *wstar_out = wstar, *d_out = (int64_t)m, *d_in = (int64_t)n;
    return IT_OK;
}

/* Groups the keys by site; every key must have one of the four forms. */
static int group_sites(const char *path, const it_st *st, feat_site **out, size_t *nout, size_t *ntasks,
                       it_err *err)
{
    size_t nt = it_st_count(st), nsites = 0, maxtask = 0;
    feat_key *keys = it__malloc_n(nt ? nt : 1, sizeof *keys);
    if (!keys) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < nt; i++) {
        const it_tensor *t = it_st_tensor(st, i);
        if (!split_key(t, &keys[i]) || keys[i].site_len == 0) {
            free(keys);
            return it__fail(err, IT_EFORMAT,
                            "%s: key %s: expected <site>.delta.<i>, <site>.X.<i>, <site>.Xt.<i> or <site>.weight",
                            path, t->name);
        }
        if (keys[i].kind != FEAT_WEIGHT && keys[i].task + 1 > maxtask) maxtask = keys[i].task + 1;
    }
    qsort(keys, nt, sizeof *keys, cmp_feat_key);
    for (size_t i = 0; i < nt; i++) nsites += i == 0 || cmp_site(&keys[i - 1], &keys[i]) != 0;
    if (maxtask == 0) {
        free(keys);
        return it__fail(err, IT_EFORMAT, "%s: no task data (keys <site>.delta.<i> and <site>.X.<i>)", path);
    }
    feat_site *sites = it__calloc(nsites, sizeof *sites);
    int rc = sites ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    size_t s = 0;
    for (size_t i = 0; rc == IT_OK && i < nt; i++) {
        const feat_key *k = &keys[i];
        if (i > 0 && cmp_site(&keys[i - 1], k) != 0) s++;
        feat_site *fs = &sites[s];
        if (!fs->name) {
            fs->name = it__strndup(k->t->name, k->site_len);
            fs->delta = it__calloc(maxtask, sizeof *fs->delta);
            fs->X = it__calloc(maxtask, sizeof *fs->X);
            fs->Xt = it__calloc(maxtask, sizeof *fs->Xt);
            if (!fs->name || !fs->delta || !fs->X || !fs->Xt) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        }
        if (rc != IT_OK) break;
        switch (k->kind) {
        case FEAT_WEIGHT: fs->weight = k->t; break;
        case FEAT_DELTA: fs->delta[k->task] = k->t; break;
        case FEAT_X: fs->X[k->task] = k->t; break;
        default: fs->Xt[k->task] = k->t; break;
        }
    }
    free(keys);
    if (rc != IT_OK) {
        for (size_t i = 0; sites && i < nsites; i++)
            free(sites[i].name), free(sites[i].delta), free(sites[i].X), free(sites[i].Xt);
        free(sites);
        return rc;
    }
    *out = sites, *nout = nsites, *ntasks = maxtask;
    return IT_OK;
}

int it_solve_features(const char *features, const char *out_path, it_dtype out_dtype, const it_solve_opts *o,
                      it_solve_progress progress, void *ctx, it_err *err)
{
    if (out_dtype != IT_F32 && out_dtype != IT_F64)
        return it__fail(err, IT_EINVAL, "%s: the output dtype must be F32 or F64", out_path);
    it_st *st = NULL;
    int rc = it_st_open(&st, features, err);
    if (rc != IT_OK) return rc;
    feat_site *sites = NULL;
    size_t nsites = 0, ntasks = 0;
    rc = group_sites(features, st, &sites, &nsites, &ntasks, err);
    if (rc != IT_OK) {
        it_st_close(st);
        return rc;
    }
    it_tensor *outs = it__calloc(nsites, sizeof *outs);
    uint64_t *shapes = it__calloc(2 * nsites, sizeof *shapes);
    double *lambda = it__calloc(ntasks, sizeof *lambda);
    if (!outs || !shapes || !lambda) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", features);
    for (size_t s = 0; rc == IT_OK && s < nsites; s++) {
        double *wstar = NULL;
        int64_t m = 0, n = 0;
        it_site_info info = {0.0, lambda};
        rc = solve_feature_site(features, &sites[s], ntasks, o, &wstar, &m, &n, &info, err);
        if (rc != IT_OK) break;
        size_t len = (size_t)m * (size_t)n, esize = out_dtype == IT_F64 ? 8 : 4;
        unsigned char *bytes = it__malloc_n(len, esize);
        if (!bytes) {
            free(wstar);
            rc = it__fail(err, IT_ENOMEM, "%s: out of memory", out_path);
            break;
        }
        for (size_t k = 0; k < len; k++) {
            if (out_dtype == IT_F64) {
                uint64_t u;
                memcpy(&u, &wstar[k], 8);
                it__put_le64(bytes + 8 * k, u);
            } else {
                float f = (float)wstar[k];
                uint32_t u;
                memcpy(&u, &f, 4);
                it__put_le32(bytes + 4 * k, u);
            }
        }
        free(wstar);
        shapes[2 * s] = (uint64_t)m, shapes[2 * s + 1] = (uint64_t)n;
        outs[s] = (it_tensor){sites[s].name, out_dtype, 2, shapes + 2 * s, len, len * esize, bytes, 0, 0};
        if (progress) progress(ctx, sites[s].name, s, nsites, &info, ntasks);
    }
    if (rc == IT_OK) {
        const char *keys[] = {"format", "iteris_method"}, *values[] = {"pt", it_method_name(o->method)};
        rc = it_st_save(out_path, outs, nsites, keys, values, 2, err);
    }
    for (size_t s = 0; outs && s < nsites; s++) free((void *)outs[s].data);
    for (size_t s = 0; s < nsites; s++) free(sites[s].name), free(sites[s].delta), free(sites[s].X), free(sites[s].Xt);
    free(sites), free(outs), free(shapes), free(lambda);
    it_st_close(st);
    return rc;
}

/* ============================================================================================ */
/* Sites: the union of the adapters' targets, checked against the base                            */
/* ============================================================================================ */

void it_sites_free(it_site_def *sites, size_t n)
{
    for (size_t i = 0; sites && i < n; i++) free(sites[i].name), free((void *)sites[i].mods);
    free(sites);
}

static const char *adapter_label(const it_adapter *a)
{
    return a->path ? a->path : "adapter";
}

/* The shape the base tensor of a module must have, as text and as dims. */
static size_t base_shape(const it_site_def *s, uint64_t dims[4])
{
    if (s->kind == IT_LORA_CONV1X1) {
        dims[0] = (uint64_t)s->d_out, dims[1] = (uint64_t)s->d_in, dims[2] = dims[3] = 1;
        return 4;
    }
    dims[0] = (uint64_t)(s->transposed ? s->d_in : s->d_out);
    dims[1] = (uint64_t)(s->transposed ? s->d_out : s->d_in);
    return 2;
}

static void shape_text(const uint64_t *dims, size_t nd, char *buf, size_t size)
{
    size_t off = (size_t)snprintf(buf, size, "[");
    for (size_t i = 0; i < nd && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (off < size) snprintf(buf + off, size - off, "]");
}

/* Checks every site against the base: collects up to three offenders into one message. */
static int check_base(const it_site_def *sites, size_t n, const it_adapter *const *ad, size_t nad, const it_st *base,
                      it_err *err)
{
    char msg[sizeof err->msg] = "";
    size_t bad = 0, off = 0;
    for (size_t s = 0; s < n; s++) {
        const it_site_def *d = &sites[s];
        size_t nl = strlen(d->name) + 8;
        char *wname = it__malloc_n(nl, 1);
        if (!wname) return it__fail(err, IT_ENOMEM, "out of memory");
        snprintf(wname, nl, "%s.weight", d->name);
        const it_tensor *t = it_st_find(base, wname);
        free(wname);
        uint64_t dims[4];
        size_t nd = base_shape(d, dims);
        int ok = t && t->ndim == nd;
        for (size_t k = 0; ok && k < nd; k++) ok = t->shape[k] == dims[k];
        if (ok) continue;
        size_t who = 0;
        while (who < nad && !d->mods[who]) who++;
        char want[96], got[96];
        shape_text(dims, nd, want, sizeof want);
        if (t) shape_text(t->shape, t->ndim, got, sizeof got);
        if (bad < 3 && off < sizeof msg)
            off += (size_t)snprintf(msg + off, sizeof msg - off, "%s%s: %s needs a base weight %s, the base has %s",
                                    bad ? "; " : "", adapter_label(ad[who]), d->name, want, t ? got : "none");
        bad++;
    }
    if (!bad) return IT_OK;
    return it__fail(err, IT_EFORMAT, "%s: adapters made for another base model? %s%s (%zu site%s in all)",
                    it_st_file_path(base, 0), msg, bad > 3 ? "; ..." : "", bad, bad == 1 ? "" : "s");
}

/* One adapter's module, for sorting all of them by name. */
typedef struct mod_ref {
    const it_lora_module *m;
    size_t adapter;
} mod_ref;

static int cmp_mod_ref(const void *a, const void *b)
{
    const mod_ref *x = a, *y = b;
    int c = strcmp(x->m->name, y->m->name);
    return c ? c : x->adapter < y->adapter ? -1 : x->adapter > y->adapter;
}

int it_sites_union(const it_adapter *const *ad, size_t nad, const char *component, const it_st *base,
                   it_site_def **out, size_t *nout, it_err *err)
{
    *out = NULL, *nout = 0;
    size_t nref = 0;
    for (size_t i = 0; i < nad; i++) nref += ad[i]->n;
    mod_ref *refs = it__malloc_n(nref ? nref : 1, sizeof *refs);
    it_site_def *sites = it__calloc(nref ? nref : 1, sizeof *sites);
    if (!refs || !sites) {
        free(refs), free(sites);
        return it__fail(err, IT_ENOMEM, "out of memory");
    }
    nref = 0;
    for (size_t i = 0; i < nad; i++)
        for (size_t k = 0; k < ad[i]->n; k++)
            if (!strcmp(ad[i]->mods[k].component, component)) refs[nref++] = (mod_ref){&ad[i]->mods[k], i};
    qsort(refs, nref, sizeof *refs, cmp_mod_ref);
    size_t n = 0;
    int rc = IT_OK;
    for (size_t k = 0; rc == IT_OK && k < nref; k++) {
        const it_lora_module *m = refs[k].m;
        it_site_def *d = &sites[n - (n > 0 && !strcmp(sites[n - 1].name, m->name))];
        if (d == &sites[n]) { /* a new site */
            d->name = it__strdup(m->name);
            d->mods = it__calloc(nad, sizeof *d->mods);
            if (!d->name || !d->mods) {
                free(d->name), free((void *)d->mods);
                d->name = NULL, d->mods = NULL;
                rc = it__fail(err, IT_ENOMEM, "out of memory");
                break;
            }
            d->kind = m->kind, d->transposed = m->transposed, d->d_out = m->d_out, d->d_in = m->d_in;
            n++;
        } else if (d->kind != m->kind || d->transposed != m->transposed || d->d_out != m->d_out ||
                   d->d_in != m->d_in) {
            size_t first = 0;
            while (first < nad && !d->mods[first]) first++;
            rc = it__fail(err, IT_EFORMAT, "%s and %s disagree on %s: [%lld x %lld] against [%lld x %lld]",
                          adapter_label(ad[first]), adapter_label(ad[refs[k].adapter]), m->name,
                          (long long)d->d_out, (long long)d->d_in, (long long)m->d_out, (long long)m->d_in);
            break;
        }
        d->mods[refs[k].adapter] = m;
        d->rank_sum += m->r;
    }
    free(refs);
    if (rc == IT_OK && base) rc = check_base(sites, n, ad, nad, base, err);
    if (rc != IT_OK) {
        it_sites_free(sites, n);
        return rc;
    }
    *out = sites, *nout = n;
    return IT_OK;
}
