/* merge.c -- the merge of DESIGN.md section 1: X_i from each adapter's own model, Xt_i from the
 * merged model, the statistics streamed from the forward passes through the sites' observers, and
 * the two schedules (iterate, the paper's; sweep, ours). Free of architecture knowledge: it sees a
 * model only through it_model's sites, groups and observer (iteris.h); each site's solve is
 * it_site_solve (iteris.c).
 */
#include "model_internal.h" /* it__model_check_sample only: the model is still seen through the API */

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================================================================================ */
/* Statistics from the forward passes                                                            */
/* ============================================================================================ */
/*
 * X_i policy (the cross term X_i^T Xt_i needs X_i and Xt_i at the same rows): "keep" holds the rows of
 * X_i in memory per site group (rows x d_in floats per task and group); "recompute" runs task i's
 * own model again on each sample just before the merged model, so only one sample's rows are held,
 * for twice the forward passes. Either way the statistics (three d_in x d_in doubles per task and
 * group) accumulate as the rows stream.
 */

void it_merge_opts_default(it_merge_opts *o)
{
    memset(o, 0, sizeof *o);
    it_solve_opts_default(&o->solve);
    o->schedule = IT_SCHEDULE_ITERATE;
    o->iters = 5;
    o->tol = 1e-4;
}

/* One task's data at one site group. */
typedef struct group_stats {
    float *X;              /* [rows x d_in] X_i, kept for the cross term */
    size_t rows, cap;      /* rows held (all of X_i, or one sample's with recompute) */
    size_t total;          /* rows of X_i seen in all */
    double *xx, *xt, *tt;  /* [d_in x d_in] each; xt, tt of the current Xt */
    size_t cursor;         /* rows of Xt seen so far in the current pass */
} group_stats;

enum {
    CAPTURE_X,     /* X_i: its Gram, and its rows held */
    CAPTURE_XROWS, /* X_i's rows only (recompute policy, before the merged model's pass) */
    CAPTURE_XT     /* Xt_i against the held rows */
};

typedef struct merge_state {
    it_model *m;
    const it_task *tasks;
    size_t ntasks;
    const it_merge_opts *o;
    it_err *err;
    size_t nsites;         /* union sites */
    it_site_def *sites;
    size_t *msite;         /* [nsites] model site index */
    size_t ngroups;        /* model groups */
    size_t *rep;           /* [ngroups] the model site that reports a group's input (its first) */
    int *active;           /* [ngroups] some union site reads this group's input */
    size_t *din;           /* [ngroups] */
    group_stats *gs;       /* [ntasks x ngroups] */
    double **wstar;        /* [nsites] current W* (NULL before the first solve) */
    float **wf;            /* [nsites] the installed dense delta (f32) */
    it_delta *deltas;      /* [nsites] */
    /* the observer's view */
    int phase;
    size_t task;
    size_t only_group;     /* sweep: SIZE_MAX, or the one group to capture (then stop) */
    int failed;            /* an allocation failed inside the observer, or its rows were not finite */
    int nonfinite;         /* the observer saw NaN or Inf: at model site bad_site, row bad_row */
    size_t bad_site, bad_row;
} merge_state;

static group_stats *stats_at(merge_state *st, size_t task, size_t g)
{
    return &st->gs[task * st->ngroups + g];
}

/* Appends rows to X_i and (gram) adds them to X_i^T X_i. */
static int capture_x(group_stats *g, const float *x, size_t nrows, size_t d, int gram)
{
    if (g->rows + nrows > g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 256;
        while (cap < g->rows + nrows) cap *= 2;
        float *nx = realloc(g->X, cap * d * sizeof *nx);
        if (!nx) return IT_ENOMEM;
        g->X = nx, g->cap = cap;
    }
    memcpy(g->X + g->rows * d, x, nrows * d * sizeof *x);
    g->rows += nrows;
    if (!gram) return IT_OK;
    g->total += nrows;
    return it_gram(g->xx, d, x, d, nrows, d);
}

/* Adds rows of Xt: Xt^T Xt, and X^T Xt against the same rows of X. */
static int capture_xt(group_stats *g, const float *x, size_t nrows, size_t d)
{
    if (g->cursor + nrows > g->rows) return IT_EINVAL; /* not the rows X_i saw */
    int rc = it_gram(g->tt, d, x, d, nrows, d);
    if (rc == IT_OK) rc = it_gram_cross(g->xt, d, g->X + g->cursor * d, d, x, d, nrows, d, d);
    g->cursor += nrows;
    return rc;
}

static int merge_observer(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    merge_state *st = ctx;
    size_t g = it_model_site_at(st->m, site)->group;
    if (g >= st->ngroups || st->rep[g] != site || !st->active[g]) return 0;
    if (st->only_group != SIZE_MAX && g != st->only_group) return 0;
    /* NaN or Inf rows (a bad weight outside the merged sites, an overflow) are stopped here, where
     * the site, the task and the sample are known, rather than surfacing as NaN statistics (one pass
     * over the rows, against the Gram's d_in passes) */
    for (size_t k = 0; k < nrows * d_in; k++)
        if (!isfinite(x[k])) {
            st->nonfinite = 1, st->bad_site = site, st->bad_row = k / d_in;
            st->failed = IT_EINVAL;
            return 1;
        }
    group_stats *gs = stats_at(st, st->task, g);
    int rc = st->phase == CAPTURE_XT ? capture_xt(gs, x, nrows, d_in)
                                     : capture_x(gs, x, nrows, d_in, st->phase == CAPTURE_X);
    if (rc != IT_OK) {
        st->failed = rc;
        return 1;
    }
    return st->only_group != SIZE_MAX; /* sweep: nothing after this group matters */
}

/* Installs task i's own adapter (phase X) at the union sites, nothing elsewhere. */
static void install_adapter(merge_state *st, size_t task)
{
    it_model_clear_deltas(st->m);
    for (size_t s = 0; s < st->nsites; s++) {
        const it_lora_module *mod = st->sites[s].mods[task];
        if (!mod) continue;
        st->deltas[s] = (it_delta){mod->A, mod->B, mod->r, mod->scale, NULL};
        it_model_set_delta(st->m, st->msite[s], &st->deltas[s]);
    }
}

/* Installs the merged W* where one has been solved (the base elsewhere). */
static void install_merged(merge_state *st)
{
    it_model_clear_deltas(st->m);
    for (size_t s = 0; s < st->nsites; s++) {
        if (!st->wf[s]) continue;
        st->deltas[s] = (it_delta){NULL, NULL, 0, 0.0, st->wf[s]};
        it_model_set_delta(st->m, st->msite[s], &st->deltas[s]);
    }
}

/* Forgets the rows a task's groups hold (the recompute policy keeps one sample's). */
static void drop_rows(merge_state *st, size_t task)
{
    for (size_t g = 0; g < st->ngroups; g++) stats_at(st, task, g)->rows = 0, stats_at(st, task, g)->cursor = 0;
}

/* One sample through the model as it is, the observer capturing in the given phase. */
static int run_sample(merge_state *st, size_t task, const it_sample *smp, int phase)
{
    st->phase = phase;
    int rc = it_model_run(st->m, smp, NULL, st->err);
    if (rc == IT_OK && st->nonfinite)
        rc = it__fail(st->err, IT_EINVAL, "site %s: task %zu: the input rows hold NaN or Inf in %s (row %zu of the "
                      "sample on line %zu of the task's samples)", it_model_site_at(st->m, st->bad_site)->name,
                      task + 1, phase == CAPTURE_XT ? "the merged model" : "the task's own model", st->bad_row,
                      smp->line);
    else if (rc == IT_OK && st->failed)
        rc = it__fail(st->err, st->failed, "task %zu: %s while collecting the site inputs", task + 1,
                      st->failed == IT_ENOMEM ? "out of memory" : "the rows changed between passes");
    return rc;
}

/* Runs every calibration sample of a task, the observer capturing: phase CAPTURE_X through the model
 * as it is (task i's own); CAPTURE_XT through the merged model (installed by the caller), against
 * X_i's held rows, or, with the recompute policy, against rows recomputed sample by sample. */
static int run_task(merge_state *st, size_t task, int phase, size_t only_group)
{
    const it_task *t = &st->tasks[task];
    int recompute = st->o->recompute_x;
    st->task = task, st->only_group = only_group, st->failed = 0, st->nonfinite = 0;
    for (size_t g = 0; g < st->ngroups; g++) stats_at(st, task, g)->cursor = 0;
    it_model_set_observer(st->m, merge_observer, st);
    int rc = IT_OK;
    for (size_t k = 0; rc == IT_OK && k < t->nsamples; k++) {
        if (recompute) drop_rows(st, task);
        if (recompute && phase == CAPTURE_XT) { /* X_i of this sample first, from task i's own model */
            install_adapter(st, task);
            rc = run_sample(st, task, t->samples[k], CAPTURE_XROWS);
            install_merged(st);
        }
        if (rc == IT_OK) rc = run_sample(st, task, t->samples[k], phase);
    }
    if (recompute) drop_rows(st, task);
    it_model_set_observer(st->m, NULL, NULL);
    return rc;
}

/* Zeroes the Xt statistics of the given groups (all when only_group is SIZE_MAX). */
static void reset_xt(merge_state *st, size_t only_group)
{
    for (size_t i = 0; i < st->ntasks; i++)
        for (size_t g = 0; g < st->ngroups; g++) {
            if (!st->active[g] || (only_group != SIZE_MAX && g != only_group)) continue;
            group_stats *gs = stats_at(st, i, g);
            memset(gs->xt, 0, st->din[g] * st->din[g] * sizeof *gs->xt);
            memset(gs->tt, 0, st->din[g] * st->din[g] * sizeof *gs->tt);
        }
}

/* Gram statistics hold only their upper triangle: mirror it. */
static void mirror(double *G, size_t d)
{
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < i; j++) G[i * d + j] = G[j * d + i];
}

/* Solves union site s from the current statistics; adds each task's objective to obj [ntasks]
 * and returns the relative change of W* in *change. */
static int merge_solve_site(merge_state *st, size_t s, int first, it_merge_result *res, double *obj,
                            double *change)
{
    const it_site_def *d = &st->sites[s];
    const it_model_site *ms = it_model_site_at(st->m, st->msite[s]);
    size_t g = ms->group, m = (size_t)d->d_out, n = (size_t)d->d_in;
    it_site_task *tk = it__calloc(st->ntasks, sizeof *tk);
    double *W = it__malloc_n(m * n, sizeof *W);
    if (!tk || !W) {
        free(tk), free(W);
        return it__fail(st->err, IT_ENOMEM, "site %s: out of memory", d->name);
    }
    for (size_t i = 0; i < st->ntasks; i++) {
        const it_lora_module *mod = d->mods[i];
        group_stats *gs = stats_at(st, i, g);
        tk[i] = (it_site_task){mod ? mod->A : NULL, mod ? mod->B : NULL, mod ? mod->r : 0, mod ? mod->scale : 0.0,
                               NULL, gs->xx, first ? NULL : gs->xt, first ? NULL : gs->tt, -1.0};
        res->rows[s * st->ntasks + i] = gs->total;
    }
    it_site site = {d->name, d->d_out, d->d_in, ms->w0, st->ntasks, tk};
    it_site_info info = {0.0, res->lambda + s * st->ntasks};
    int rc = it_site_solve(&site, &st->o->solve, W, &info, st->err);
    int objective = st->o->solve.method == IT_METHOD_ITERIS;
    for (size_t i = 0; rc == IT_OK && objective && i < st->ntasks; i++) {
        double v = 0;
        if (it__site_objective(&site, &tk[i], &st->o->solve, res->lambda[s * st->ntasks + i], W, &v) != IT_OK)
            rc = it__fail(st->err, IT_ENOMEM, "site %s: out of memory", d->name);
        obj[i] += v;
    }
    if (rc == IT_OK) {
        res->ridge[s] = info.ridge;
        double num = 0, den = 0;
        for (size_t k = 0; st->wstar[s] && k < m * n; k++)
            num += (W[k] - st->wstar[s][k]) * (W[k] - st->wstar[s][k]), den += W[k] * W[k];
        *change = st->wstar[s] ? (den > 0 ? sqrt(num / den) : sqrt(num)) : -1.0;
        free(st->wstar[s]);
        st->wstar[s] = W, W = NULL;
        if (!st->wf[s] && !(st->wf[s] = it__malloc_n(m * n, sizeof(float))))
            rc = it__fail(st->err, IT_ENOMEM, "site %s: out of memory", d->name);
        for (size_t k = 0; rc == IT_OK && k < m * n; k++) /* the installed delta: W* - W0 for a whole weight */
            st->wf[s][k] = (float)(st->wstar[s][k] - (st->o->solve.with_pretrain ? (double)ms->w0[k] : 0.0));
    }
    free(tk), free(W);
    return rc;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Records one step (iteration or group) and tells the caller. */
static int record_step(merge_state *st, it_merge_result *res, const char *schedule, size_t step, size_t nsteps,
                       double t0, double change, double *obj)
{
    it_merge_step *ns = realloc(res->steps, (res->nsteps + 1) * sizeof *ns);
    if (!ns) {
        free(obj);
        return it__fail(st->err, IT_ENOMEM, "out of memory");
    }
    res->steps = ns;
    double secs = now_seconds() - t0;
    it_merge_step *p = &res->steps[res->nsteps++];
    *p = (it_merge_step){schedule, step, nsteps, secs, secs / (double)(step + 1) * (double)(nsteps - step - 1),
                         change, obj, st->ntasks};
    if (st->o->progress) st->o->progress(st->o->ctx, p);
    return IT_OK;
}

/* The paper's schedule: solve all sites from the current Xt, install, re-run every task, repeat. */
static int schedule_iterate(merge_state *st, it_merge_result *res, double t0)
{
    size_t iters = st->o->iters > 0 ? (size_t)st->o->iters : 1;
    if (st->o->solve.method != IT_METHOD_ITERIS) iters = 1; /* the baselines read no Xt */
    int rc = IT_OK;
    for (size_t t = 0; rc == IT_OK && t < iters; t++) {
        if (t > 0) { /* refresh Xt with the merged model */
            reset_xt(st, SIZE_MAX);
            install_merged(st);
            for (size_t i = 0; rc == IT_OK && i < st->ntasks; i++) rc = run_task(st, i, CAPTURE_XT, SIZE_MAX);
            for (size_t i = 0; rc == IT_OK && i < st->ntasks; i++)
                for (size_t g = 0; g < st->ngroups; g++)
                    if (st->active[g]) mirror(stats_at(st, i, g)->tt, st->din[g]);
        }
        double *obj = it__calloc(st->ntasks, sizeof *obj), change = -1.0;
        if (rc == IT_OK && !obj) rc = it__fail(st->err, IT_ENOMEM, "out of memory");
        for (size_t s = 0; rc == IT_OK && s < st->nsites; s++) {
            double c = -1.0;
            rc = merge_solve_site(st, s, t == 0, res, obj, &c);
            if (c > change) change = c;
        }
        if (rc != IT_OK) {
            free(obj);
            break;
        }
        rc = record_step(st, res, "iterate", t, iters, t0, t == 0 ? -1.0 : change, obj);
        if (t > 0 && change < st->o->tol) break;
    }
    install_merged(st);
    return rc;
}

/* The sweep: site groups in execution order, each solved from the inputs the merged earlier groups
 * produce; reaches the iterate schedule's fixed point in one pass. */
static int schedule_sweep(merge_state *st, it_merge_result *res, double t0)
{
    size_t nactive = 0, done = 0;
    for (size_t g = 0; g < st->ngroups; g++) nactive += st->active[g] != 0;
    int rc = IT_OK;
    for (size_t g = 0; rc == IT_OK && g < st->ngroups; g++) {
        if (!st->active[g]) continue;
        reset_xt(st, g);
        install_merged(st);
        for (size_t i = 0; rc == IT_OK && i < st->ntasks; i++) rc = run_task(st, i, CAPTURE_XT, g);
        for (size_t i = 0; rc == IT_OK && i < st->ntasks; i++) mirror(stats_at(st, i, g)->tt, st->din[g]);
        double *obj = it__calloc(st->ntasks, sizeof *obj);
        if (rc == IT_OK && !obj) rc = it__fail(st->err, IT_ENOMEM, "out of memory");
        for (size_t s = 0; rc == IT_OK && s < st->nsites; s++) {
            if (it_model_site_at(st->m, st->msite[s])->group != g) continue;
            double c;
            rc = merge_solve_site(st, s, 0, res, obj, &c);
        }
        if (rc != IT_OK) {
            free(obj);
            break;
        }
        rc = record_step(st, res, "sweep", done++, nactive, t0, -1.0, obj);
    }
    install_merged(st);
    return rc;
}

/* Maps the union sites to the model's sites and groups, and allocates the statistics. */
static int merge_setup(merge_state *st)
{
    it_model *m = st->m;
    const it_adapter **ads = it__calloc(st->ntasks, sizeof *ads);
    if (!ads) return it__fail(st->err, IT_ENOMEM, "out of memory");
    for (size_t i = 0; i < st->ntasks; i++) ads[i] = st->tasks[i].adapter;
    int rc = it_sites_union(ads, st->ntasks, "", it_model_weights(m), &st->sites, &st->nsites, st->err);
    free(ads);
    if (rc != IT_OK) return rc;
    st->ngroups = it_model_group_count(m);
    st->msite = it__calloc(st->nsites ? st->nsites : 1, sizeof *st->msite);
    st->rep = it__malloc_n(st->ngroups ? st->ngroups : 1, sizeof *st->rep);
    st->active = it__calloc(st->ngroups ? st->ngroups : 1, sizeof *st->active);
    st->din = it__calloc(st->ngroups ? st->ngroups : 1, sizeof *st->din);
    st->gs = it__calloc(st->ntasks * (st->ngroups ? st->ngroups : 1), sizeof *st->gs);
    st->wstar = it__calloc(st->nsites ? st->nsites : 1, sizeof *st->wstar);
    st->wf = it__calloc(st->nsites ? st->nsites : 1, sizeof *st->wf);
    st->deltas = it__calloc(st->nsites ? st->nsites : 1, sizeof *st->deltas);
    if (!st->msite || !st->rep || !st->active || !st->din || !st->gs || !st->wstar || !st->wf || !st->deltas)
        return it__fail(st->err, IT_ENOMEM, "out of memory");
    for (size_t g = 0; g < st->ngroups; g++) st->rep[g] = SIZE_MAX;
    for (size_t i = it_model_site_count(m); i-- > 0;) st->rep[it_model_site_at(m, i)->group] = i;
    for (size_t s = 0; s < st->nsites; s++) {
        const it_site_def *d = &st->sites[s];
        if (it_model_find_site(m, d->name, &st->msite[s]) != IT_OK)
            return it__fail(st->err, IT_EUNSUPPORTED, "site %s: adapted by an adapter but not a linear layer this "
                            "forward pass exposes (embedding LoRAs are not merged)", d->name);
        const it_model_site *ms = it_model_site_at(m, st->msite[s]);
        if (ms->d_out != d->d_out || ms->d_in != d->d_in)
            return it__fail(st->err, IT_EFORMAT, "site %s: the adapters' delta is [%lld x %lld], the base weight "
                            "[%lld x %lld] (adapters made for another base model?)", d->name, (long long)d->d_out,
                            (long long)d->d_in, (long long)ms->d_out, (long long)ms->d_in);
        if ((d->kind != IT_LORA_LINEAR && d->kind != IT_LORA_CONV1X1) || d->transposed) /* a 1x1 conv is linear */
            return it__fail(st->err, IT_EUNSUPPORTED, "site %s: a %s LoRA on this model is not supported", d->name,
                            d->transposed ? "fan_in_fan_out" : "non-linear");
        size_t g = it_model_site_at(m, st->msite[s])->group;
        st->active[g] = 1, st->din[g] = (size_t)d->d_in;
    }
    /* the statistics a method reads: X^T X for regmean, all three for iteris, none for the rest */
    int xx = st->o->solve.method == IT_METHOD_ITERIS || st->o->solve.method == IT_METHOD_REGMEAN;
    int xt = st->o->solve.method == IT_METHOD_ITERIS;
    for (size_t i = 0; i < st->ntasks; i++)
        for (size_t g = 0; xx && g < st->ngroups; g++) {
            if (!st->active[g]) continue;
            group_stats *gs = stats_at(st, i, g);
            size_t dd = st->din[g] * st->din[g];
            gs->xx = it__calloc(dd, sizeof(double));
            gs->xt = xt ? it__calloc(dd, sizeof(double)) : NULL;
            gs->tt = xt ? it__calloc(dd, sizeof(double)) : NULL;
            if (!gs->xx || (xt && (!gs->xt || !gs->tt))) return it__fail(st->err, IT_ENOMEM, "out of memory");
        }
    return IT_OK;
}

/* The base weights W0 of the merged sites are finite: one pass over them per merge. A NaN there
 * would reach W* through the statistics (and the merged model through W0 itself) far from its
 * cause. The message names the checkpoint file that holds the site's weight where it can be found
 * by name, else the model folder. */
static int check_base_weights(merge_state *st)
{
    const it_st *w = it_model_weights(st->m);
    for (size_t s = 0; s < st->nsites; s++) {
        const it_model_site *ms = it_model_site_at(st->m, st->msite[s]);
        size_t len = (size_t)ms->d_out * (size_t)ms->d_in, k = 0;
        while (ms->w0 && k < len && isfinite(ms->w0[k])) k++;
        if (!ms->w0 || k == len) continue;
        char key[1024];
        snprintf(key, sizeof key, "%s.weight", ms->name);
        const it_tensor *t = w ? it_st_find(w, key) : NULL;
        return it__fail(st->err, IT_EFORMAT, "site %s: the base weight holds NaN or Inf (element %zu is %s; %s)",
                        st->sites[s].name, k, isnan(ms->w0[k]) ? "NaN" : ms->w0[k] > 0 ? "Inf" : "-Inf",
                        t ? it_st_file_path(w, t->file) : it_model_dir(st->m));
    }
    return IT_OK;
}

/* Every task reaches the sites it adapts: a site whose input its samples never produce (text-only
 * samples for a vision tower's site) would silently lose that task's change there. */
static int check_reached(merge_state *st)
{
    for (size_t s = 0; s < st->nsites; s++) {
        size_t g = it_model_site_at(st->m, st->msite[s])->group;
        for (size_t i = 0; i < st->ntasks; i++)
            if (st->sites[s].mods[i] && stats_at(st, i, g)->total == 0)
                return it__fail(st->err, IT_EINVAL,
                                "site %s: adapted by task %zu (%s), but none of its samples reach it (an image site "
                                "with text-only samples, or the reverse?)",
                                st->sites[s].name, i + 1, st->tasks[i].adapter->path);
    }
    return IT_OK;
}

static void merge_state_free(merge_state *st)
{
    for (size_t k = 0; st->gs && k < st->ntasks * st->ngroups; k++)
        free(st->gs[k].X), free(st->gs[k].xx), free(st->gs[k].xt), free(st->gs[k].tt);
    for (size_t s = 0; st->wf && s < st->nsites; s++) free(st->wf[s]);
    free(st->msite), free(st->rep), free(st->active), free(st->din), free(st->gs), free(st->wf), free(st->deltas);
}

void it_merge_result_free(it_merge_result *r)
{
    if (!r) return;
    for (size_t s = 0; r->wstar && s < r->nsites; s++) free(r->wstar[s]);
    for (size_t s = 0; r->installed && s < r->nsites; s++) free(r->installed[s]);
    for (size_t k = 0; k < r->nsteps; k++) free((void *)r->steps[k].objective);
    free(r->installed), free(r->deltas);
    it_sites_free(r->sites, r->nsites);
    free(r->wstar), free(r->ridge), free(r->lambda), free(r->rows), free(r->steps), free(r);
}

int it_merge(it_model *m, const it_task *tasks, size_t ntasks, const it_merge_opts *o, it_merge_result **out,
             it_err *err)
{
    *out = NULL;
    if (ntasks == 0) return it__fail(err, IT_EINVAL, "no adapters to merge");
    double t0 = now_seconds();
    merge_state st = {m, tasks, ntasks, o, err, 0, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                      0, 0, SIZE_MAX, 0, 0, 0, 0};
    it_merge_result *res = it__calloc(1, sizeof *res);
    int rc = res ? merge_setup(&st) : it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK) rc = check_base_weights(&st);
    if (rc == IT_OK) {
        res->nsites = st.nsites, res->ntasks = ntasks;
        res->ridge = it__calloc(st.nsites ? st.nsites : 1, sizeof *res->ridge);
        res->lambda = it__calloc(st.nsites * ntasks + 1, sizeof *res->lambda);
        res->rows = it__calloc(st.nsites * ntasks + 1, sizeof *res->rows);
        if (!res->ridge || !res->lambda || !res->rows) rc = it__fail(err, IT_ENOMEM, "out of memory");
    }
    int stats = o->solve.method == IT_METHOD_ITERIS || o->solve.method == IT_METHOD_REGMEAN;
    for (size_t i = 0; rc == IT_OK && stats && i < ntasks; i++) { /* X_i from task i's own model */
        install_adapter(&st, i);
        rc = run_task(&st, i, CAPTURE_X, SIZE_MAX);
        for (size_t g = 0; rc == IT_OK && g < st.ngroups; g++)
            if (st.active[g]) mirror(stats_at(&st, i, g)->xx, st.din[g]);
    }
    if (rc == IT_OK && stats) rc = check_reached(&st);
    if (rc == IT_OK)
        rc = o->schedule == IT_SCHEDULE_SWEEP && o->solve.method == IT_METHOD_ITERIS ? schedule_sweep(&st, res, t0)
                                                                                      : schedule_iterate(&st, res, t0);
    if (res) { /* handed over: the model's installed deltas point into wf and deltas */
        res->sites = st.sites, res->nsites = st.nsites, res->wstar = st.wstar, res->installed = st.wf;
        res->deltas = st.deltas;
        st.wf = NULL, st.deltas = NULL;
    } else {
        it_sites_free(st.sites, st.nsites);
        for (size_t s = 0; st.wstar && s < st.nsites; s++) free(st.wstar[s]);
        free(st.wstar);
    }
    if (rc != IT_OK) it_model_clear_deltas(m); /* the deltas pointed into the state freed below */
    merge_state_free(&st);
    if (rc != IT_OK) {
        it_merge_result_free(res);
        return rc;
    }
    *out = res;
    return IT_OK;
}

/* ============================================================================================ */
/* The held-out alignment error (--alpha auto)                                                   */
/* ============================================================================================ */

int it_merge_alignment(it_model *m, const it_task *tasks, size_t ntasks, const it_merge_opts *opts,
                       const it_merge_result *r, double *out, it_err *err)
{
    it_merge_opts keep = *opts; /* X_i's rows held: the Xt pass below installs r's deltas itself */
    keep.recompute_x = 0;
    const it_merge_opts *o = &keep;
    merge_state st = {m, tasks, ntasks, o, err, 0, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                      0, 0, SIZE_MAX, 0, 0, 0, 0};
    int rc = merge_setup(&st);
    if (rc == IT_OK && st.nsites != r->nsites) rc = it__fail(err, IT_EINVAL, "the merge result has other sites");
    *out = 0.0;
    for (size_t i = 0; rc == IT_OK && i < ntasks; i++) { /* X_i, then Xt_i on the same samples */
        install_adapter(&st, i);
        rc = run_task(&st, i, CAPTURE_X, SIZE_MAX);
        it_model_clear_deltas(m);
        for (size_t s = 0; rc == IT_OK && s < r->nsites; s++) it_model_set_delta(m, st.msite[s], &r->deltas[s]);
        if (rc == IT_OK) rc = run_task(&st, i, CAPTURE_XT, SIZE_MAX);
        for (size_t g = 0; rc == IT_OK && g < st.ngroups; g++)
            if (st.active[g]) mirror(stats_at(&st, i, g)->xx, st.din[g]), mirror(stats_at(&st, i, g)->tt, st.din[g]);
    }
    for (size_t s = 0; rc == IT_OK && s < r->nsites; s++) {
        const it_site_def *d = &st.sites[s];
        const it_model_site *ms = it_model_site_at(m, st.msite[s]);
        for (size_t i = 0; rc == IT_OK && i < ntasks; i++) {
            const it_lora_module *mod = d->mods[i];
            group_stats *gs = stats_at(&st, i, ms->group);
            it_site_task t = {mod ? mod->A : NULL, mod ? mod->B : NULL, mod ? mod->r : 0, mod ? mod->scale : 0.0,
                              NULL, gs->xx, gs->xt, gs->tt, -1.0};
            it_site site = {d->name, d->d_out, d->d_in, ms->w0, ntasks, &t};
            double v = 0.0;
            if (it__site_objective(&site, &t, &o->solve, r->lambda[s * ntasks + i], r->wstar[s], &v) != IT_OK)
                rc = it__fail(err, IT_ENOMEM, "out of memory");
            *out += v;
        }
    }
    it_model_clear_deltas(m);
    it_sites_free(st.sites, st.nsites);
    for (size_t s = 0; st.wstar && s < st.nsites; s++) free(st.wstar[s]);
    free(st.wstar);
    merge_state_free(&st);
    return rc;
}

/* ============================================================================================ */
/* eval                                                                                          */
/* ============================================================================================ */

/* Installs an adapter's modules at the model's sites (those it names that the model has). */
static int install_modules(it_model *m, const it_adapter *ad, it_delta *d, it_err *err)
{
    it_model_clear_deltas(m);
    for (size_t k = 0; k < ad->n; k++) {
        const it_lora_module *mod = &ad->mods[k];
        size_t i;
        if (it_model_find_site(m, mod->name, &i) != IT_OK)
            return it__fail(err, IT_EUNSUPPORTED, "%s: %s is not a linear layer of the model", ad->path, mod->name);
        d[k] = (it_delta){mod->A, mod->B, mod->r, mod->scale, NULL};
        it_model_set_delta(m, i, &d[k]);
    }
    return IT_OK;
}

/* Adds one sample's logits comparison (KL, top-1): zm merged, zi the task's model, [n x V] each. */
static void eval_logits(const float *zm, const float *zi, size_t n, size_t V, double *kl, double *agree)
{
    for (size_t t = 0; t < n; t++) {
        const float *a = zi + t * V, *b = zm + t * V;
        double ma = -INFINITY, mb = -INFINITY;
        size_t ia = 0, ib = 0;
        for (size_t v = 0; v < V; v++) {
            if (a[v] > ma) ma = a[v], ia = v;
            if (b[v] > mb) mb = b[v], ib = v;
        }
        double sa = 0, sb = 0;
        for (size_t v = 0; v < V; v++) sa += exp(a[v] - ma), sb += exp(b[v] - mb);
        double la = ma + log(sa), lb = mb + log(sb), k = 0; /* log-sum-exp */
        for (size_t v = 0; v < V; v++) k += exp(a[v] - la) * ((a[v] - la) - (b[v] - lb));
        *kl += k;
        *agree += ia == ib;
    }
}

/* Adds the eval outputs of one sample: ||zm - zi||^2 to num, ||zi - zb||^2 to den, and for logits
 * KL and top-1 per row. */
static int eval_accumulate(const it_outputs *zm, const it_outputs *zi, const it_outputs *zb, double *num,
                           double *den, double *kl, double *agree, size_t *rows, it_err *err)
{
    if (zm->n != zi->n || zb->n != zi->n) return it__fail(err, IT_EINVAL, "eval: the models' outputs differ");
    for (size_t k = 0; k < zi->n; k++) {
        const it_output *a = &zi->o[k], *b = &zm->o[k], *c = &zb->o[k];
        if (!a->eval) continue;
        if (b->rows != a->rows || b->cols != a->cols || c->rows != a->rows || c->cols != a->cols)
            return it__fail(err, IT_EINVAL, "eval: output %s has different shapes", a->name);
        for (size_t j = 0; j < a->rows * a->cols; j++) {
            *num += ((double)b->data[j] - a->data[j]) * ((double)b->data[j] - a->data[j]);
            *den += ((double)a->data[j] - c->data[j]) * ((double)a->data[j] - c->data[j]);
        }
        if (zi->logits) eval_logits(b->data, a->data, a->rows, a->cols, kl, agree);
        *rows += a->rows;
    }
    return IT_OK;
}

/* The outputs eval compares, all finite: a NaN or Inf there would be printed as a rel_err of nan;
 * which names the model, s the sample. */
static int eval_finite(const it_outputs *o, const char *which, const it_adapter *ad, const it_sample *s, it_err *err)
{
    for (size_t k = 0; k < o->n; k++) {
        const it_output *a = &o->o[k];
        if (!a->eval) continue;
        for (size_t j = 0; j < a->rows * a->cols; j++)
            if (!isfinite(a->data[j]))
                return it__fail(err, IT_EINVAL, "eval: %s gives NaN or Inf in %s (row %zu of the sample on line %zu; "
                                "task adapter %s)", which, a->name, j / (a->cols ? a->cols : 1), s->line,
                                ad->path ? ad->path : "(memory)");
    }
    return IT_OK;
}

int it_eval_task(it_model *m, const it_adapter *ad, const it_delta *merged, const size_t *merged_site, size_t nmerged,
                 it_model *merged_model, const it_sample *const *samples, size_t nsamples, it_eval_result *out,
                 it_err *err)
{
    it_delta *d = it__calloc(ad->n + 1, sizeof *d);
    int rc = d ? IT_OK : it__fail(err, IT_ENOMEM, "out of memory"), logits = 0;
    double num = 0, den = 0, kl = 0, agree = 0;
    size_t rows = 0;
    for (size_t k = 0; rc == IT_OK && k < nsamples; k++) {
        const it_sample *s = samples[k];
        it_outputs zb = {0}, zi = {0}, zm = {0};
        it_model_clear_deltas(m);
        rc = it_model_run(m, s, &zb, err);
        if (rc == IT_OK) rc = install_modules(m, ad, d, err);
        if (rc == IT_OK) rc = it_model_run(m, s, &zi, err);
        if (rc == IT_OK && merged_model) rc = it_model_run(merged_model, s, &zm, err);
        if (rc == IT_OK && !merged_model) {
            it_model_clear_deltas(m);
            for (size_t j = 0; j < nmerged; j++) it_model_set_delta(m, merged_site[j], &merged[j]);
            rc = it_model_run(m, s, &zm, err);
        }
        if (rc == IT_OK) rc = eval_finite(&zb, "the base model", ad, s, err);
        if (rc == IT_OK) rc = eval_finite(&zi, "the task's model", ad, s, err);
        if (rc == IT_OK) rc = eval_finite(&zm, "the merged model", ad, s, err);
        if (rc == IT_OK) rc = eval_accumulate(&zm, &zi, &zb, &num, &den, &kl, &agree, &rows, err);
        logits = zi.logits;
        it_outputs_free(&zb), it_outputs_free(&zi), it_outputs_free(&zm);
    }
    it_model_clear_deltas(m);
    free(d);
    if (rc != IT_OK) return rc;
    out->rel_err = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
    out->kl = logits && rows ? kl / (double)rows : NAN;
    out->top1 = logits && rows ? agree / (double)rows : NAN;
    out->tokens = rows;
    return IT_OK;
}

/* ============================================================================================ */
/* Decoder inputs for encoder-decoder models                                                     */
/* ============================================================================================ */

/* Decoder ids where they are missing, then every sample checked against the model up front
 * (it__model_check_sample): an id outside the vocabulary or a sample longer than the context is
 * reported with the samples file and the line, not later from inside a merge with the model folder
 * alone. */
int it_samples_complete(it_model *m, const it_adapter *ad, it_samples *ss, size_t gen_len, it_err *err)
{
    int gen = it_model_needs_decoder_ids(m);
    it_delta *d = gen && ad ? it__calloc(ad->n + 1, sizeof *d) : NULL;
    int rc = !gen || !ad || d ? IT_OK : it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK && gen && ad) rc = install_modules(m, ad, d, err);
    for (size_t k = 0; rc == IT_OK && gen && k < ss->n; k++) {
        it_sample *s = &ss->s[k];
        if (s->dec_ids || !s->ids) continue;
        rc = it_model_generate(m, s->ids, s->n, gen_len, &s->dec_ids, &s->ndec, err);
        if (rc != IT_OK) {
            char where[IT_ERR_MAX / 2];
            snprintf(where, sizeof where, "%s: line %zu", ss->path, s->line);
            it__err_prefix(err, where);
        }
    }
    if (gen && ad) it_model_clear_deltas(m);
    free(d);
    for (size_t k = 0; rc == IT_OK && k < ss->n; k++) {
        rc = it__model_check_sample(m, &ss->s[k], err);
        if (rc != IT_OK) {
            char where[IT_ERR_MAX / 2];
            snprintf(where, sizeof where, "%s: line %zu", ss->path, ss->s[k].line);
            it__err_prefix(err, where);
        }
    }
    return rc;
}
