/* test/test_merge.c -- the merge loop (merge.c) on the llama fixture: the schedules agree, one
 * adapter comes back, eval's end points, and the merge / eval command lines. */
#include "test.h"

#include "../iteris.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *const NAMES[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_attn", "lora_r4_a8_mlp"};

typedef struct fixture {
    it_model *m;
    it_adapter *ad[3];
    it_samples *smp;
    const it_sample *s[16];
    it_task tasks[3];
} fixture;

static int fixture_open(fixture *f)
{
    memset(f, 0, sizeof *f);
    it_err err;
    int rc = it_model_load(&f->m, test_data("llama/base"), &err);
    for (int i = 0; rc == IT_OK && i < 3; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "llama/adapters/%s", NAMES[i]);
        rc = it_adapter_load(&f->ad[i], test_data(dir), &err);
    }
    if (rc == IT_OK) rc = it_samples_load(&f->smp, test_data("llama/inputs.jsonl"), &err);
    for (size_t k = 0; rc == IT_OK && k < f->smp->n && k < 16; k++) f->s[k] = &f->smp->s[k];
    for (int i = 0; rc == IT_OK && i < 3; i++) f->tasks[i] = (it_task){f->ad[i], f->s, f->smp->n};
    CHECKF(rc == IT_OK, "%s", err.msg);
    return rc;
}

static void fixture_close(fixture *f)
{
    for (int i = 0; i < 3; i++) it_adapter_free(f->ad[i]);
    it_samples_free(f->smp);
    it_model_free(f->m);
}

/* iterate with as many iterations as there are site groups lands where sweep does. */
static void test_merge_sweep_equals_iterate(void)
{
    fixture f;
    if (fixture_open(&f) != IT_OK) return;
    it_merge_opts o;
    it_merge_opts_default(&o);
    o.solve.alpha1 = o.solve.alpha2 = 0.05;
    o.schedule = IT_SCHEDULE_SWEEP;
    it_merge_result *sw = NULL, *it = NULL;
    it_err err;
    CHECKF(it_merge(f.m, f.tasks, 3, &o, &sw, &err) == IT_OK, "%s", err.msg);
    it_model_clear_deltas(f.m);
    o.schedule = IT_SCHEDULE_ITERATE, o.iters = sw ? (int)sw->nsteps : 8, o.tol = 0;
    CHECKF(it_merge(f.m, f.tasks, 3, &o, &it, &err) == IT_OK, "%s", err.msg);
    it_model_clear_deltas(f.m);
    /* the recompute policy gives the same answer bit for bit, for both schedules */
    for (int k = 0; k < 2; k++) {
        it_merge_opts ro = o;
        ro.recompute_x = 1;
        ro.schedule = k ? IT_SCHEDULE_SWEEP : IT_SCHEDULE_ITERATE;
        it_merge_result *rr = NULL;
        CHECKF(it_merge(f.m, f.tasks, 3, &ro, &rr, &err) == IT_OK, "%s", err.msg);
        it_model_clear_deltas(f.m);
        const it_merge_result *ref = k ? sw : it;
        for (size_t s = 0; rr && ref && s < rr->nsites; s++) {
            size_t len = (size_t)(rr->sites[s].d_out * rr->sites[s].d_in);
            CHECKF(!memcmp(rr->wstar[s], ref->wstar[s], len * sizeof(double)), "recompute policy, %s: %s differs",
                   k ? "sweep" : "iterate", rr->sites[s].name);
            CHECK(rr->rows[s * 3] == ref->rows[s * 3]);
        }
        it_merge_result_free(rr);
    }
    if (sw && it) {
        CHECK(sw->nsteps == 8 && it->nsteps == 8 && sw->nsites == 14 && it->nsites == 14);
        double worst = 0;
        for (size_t s = 0; s < sw->nsites; s++) {
            size_t len = (size_t)(sw->sites[s].d_out * sw->sites[s].d_in);
            for (size_t k = 0; k < len; k++) {
                double d = fabs(sw->wstar[s][k] - it->wstar[s][k]);
                if (d > worst) worst = d;
            }
        }
        CHECKF(worst == 0.0, "sweep vs iterate(%zu): max |diff| %.3g", sw->nsteps, worst);
        test_note("sweep vs iterate(8): max |diff| %.3g", worst);
        /* the objective falls from the first solve (Xt = X is optimistic) to a fixed point */
        CHECK(it->steps[it->nsteps - 1].max_change < it->steps[2].max_change);
    }
    it_merge_result_free(sw), it_merge_result_free(it);
    fixture_close(&f);
}

/* The worst relative difference between W* and the adapter's own delta over the sites. */
static double worst_vs_adapter(const it_merge_result *r)
{
    double worst = 0;
    for (size_t s = 0; r && s < r->nsites; s++) {
        const it_lora_module *mod = r->sites[s].mods[0];
        size_t len = (size_t)(mod->d_out * mod->d_in);
        double *d = malloc(len * sizeof *d), num = 0, den = 0;
        it_lora_delta(mod, d);
        for (size_t k = 0; k < len; k++) num += (r->wstar[s][k] - d[k]) * (r->wstar[s][k] - d[k]), den += d[k] * d[k];
        if (sqrt(num / den) > worst) worst = sqrt(num / den);
        free(d);
    }
    return worst;
}

/* One adapter alone with a1 = a2 gives it back: W* = dW at every site (exactly in the first solve,
 * where Xt = X; to f32 rounding after, where Xt comes from the merged model's float forward pass),
 * and eval says rel_err 0. */
static void test_merge_one_adapter_back(void)
{
    fixture f;
    if (fixture_open(&f) != IT_OK) return;
    it_merge_opts o;
    it_merge_opts_default(&o);
    o.solve.alpha1 = o.solve.alpha2 = 0.01;
    o.iters = 1;
    it_merge_result *r = NULL;
    it_err err;
    CHECKF(it_merge(f.m, f.tasks, 1, &o, &r, &err) == IT_OK, "%s", err.msg);
    double w1 = worst_vs_adapter(r);
    CHECKF(r && w1 < 1e-9, "one adapter, one solve: worst site rel diff %.3g", w1);
    it_model_clear_deltas(f.m);
    it_merge_result_free(r);
    r = NULL;
    o.iters = 3;
    CHECKF(it_merge(f.m, f.tasks, 1, &o, &r, &err) == IT_OK, "%s", err.msg);
    double w3 = worst_vs_adapter(r);
    CHECKF(r && w3 < 1e-5, "one adapter, three solves: worst site rel diff %.3g", w3);
    test_note("one adapter back: rel diff %.3g after one solve, %.3g after three", w1, w3);
    /* eval with the merged model installed: rel_err ~ 0, top1 = 1 */
    if (r) {
        size_t *sites = malloc(r->nsites * sizeof *sites);
        for (size_t s = 0; s < r->nsites; s++) it_model_find_site(f.m, r->sites[s].name, &sites[s]);
        it_eval_result e;
        CHECKF(it_eval_task(f.m, f.ad[0], r->deltas, sites, r->nsites, NULL, f.s, f.smp->n, &e, &err) == IT_OK, "%s",
               err.msg);
        CHECKF(e.rel_err < 1e-5 && e.top1 == 1.0 && e.kl < 1e-9, "rel_err %.3g kl %.3g top1 %.3f", e.rel_err, e.kl,
               e.top1);
        /* and the base model as the "merge": rel_err exactly 1 */
        CHECK(it_eval_task(f.m, f.ad[0], NULL, NULL, 0, NULL, f.s, f.smp->n, &e, &err) == IT_OK && e.rel_err == 1.0);
        free(sites);
    }
    it_model_clear_deltas(f.m);
    it_merge_result_free(r);
    fixture_close(&f);
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* merge and eval through the command line: the three formats evaluate the same. */
static void test_merge_cli(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    char args[2048], cmd[4096];
    snprintf(args, sizeof args, "--base data/llama/base --lora data/llama/adapters/%s --lora data/llama/adapters/%s "
             "--data data/llama/inputs.jsonl --data data/llama/inputs.jsonl", NAMES[0], NAMES[2]);
    const char *formats[3] = {"lora", "delta", "model"};
    double first[2] = {0, 0};
    for (int k = 0; k < 3; k++) {
        const char *out = test_tmppath(formats[k]);
        snprintf(cmd, sizeof cmd, "%s merge %s --out %s --format %s --alpha 0.05 --iters 2 2>/dev/null", bin, args, out,
                 formats[k]);
        CHECKF(run(cmd) == 0, "%s", cmd);
        char rep[4096];
        snprintf(rep, sizeof rep, "%s/report.json", out);
        size_t len;
        unsigned char *txt = test_read_file(rep, &len);
        it_json_doc *doc = NULL;
        CHECK(txt && it_json_parse(&doc, (const char *)txt, len, IT_JSON_NODUP, NULL) == IT_OK);
        const it_json *meth = doc ? it_json_get(it_json_root(doc), "method") : NULL;
        CHECK(meth && meth->type == IT_JSON_STR && !strcmp(meth->s, "iteris"));
        it_json_free(doc);
        free(txt);
        snprintf(cmd, sizeof cmd, "%s eval %s --merged %s --json > %s", bin, args, out, test_tmppath("eval.json"));
        CHECKF(run(cmd) == 0, "%s", cmd);
        unsigned char *ev = test_read_file(test_tmppath("eval.json"), &len);
        CHECK(ev && strstr((char *)ev, "\"iteris\": {\"tasks\": [{\"rel_err\": "));
        /* the same numbers whatever the format, to the float rounding of low-rank vs dense deltas */
        it_json_doc *ed = NULL;
        const it_json *tk = NULL;
        if (ev && it_json_parse(&ed, (const char *)ev, len, 0, NULL) == IT_OK) {
            const it_json *mm = it_json_get(it_json_get(it_json_root(ed), "methods"), "iteris");
            tk = mm ? it_json_get(mm, "tasks") : NULL;
        }
        CHECK(tk && tk->type == IT_JSON_ARR && tk->n == 2);
        for (size_t i = 0; tk && i < tk->n && i < 2; i++) {
            const it_json *re = it_json_get(&tk->items[i], "rel_err");
            double v = re ? (re->type == IT_JSON_INT ? (double)re->i : re->d) : -1;
            if (k == 0) first[i] = v;
            else CHECKF(fabs(v - first[i]) < 1e-6, "%s: task %zu rel_err %.9f vs %.9f", formats[k], i, v, first[i]);
        }
        it_json_free(ed);
        free(ev);
    }
    /* --alpha auto records the grid, the held-out errors and its choice */
    const char *outa = test_tmppath("auto");
    snprintf(cmd, sizeof cmd, "%s merge %s --out %s --format delta --alpha auto --iters 2 2>/dev/null", bin, args, outa);
    CHECKF(run(cmd) == 0, "%s", cmd);
    char rep[4096];
    snprintf(rep, sizeof rep, "%s/report.json", outa);
    size_t rlen;
    unsigned char *rtxt = test_read_file(rep, &rlen);
    it_json_doc *rd = NULL;
    const it_json *aa = NULL;
    if (rtxt && it_json_parse(&rd, (const char *)rtxt, rlen, 0, NULL) == IT_OK) aa = it_json_get(it_json_root(rd), "alpha_auto");
    const it_json *ch = aa ? it_json_get(aa, "chosen") : NULL, *he = aa ? it_json_get(aa, "heldout_error") : NULL;
    CHECK(ch && he && he->type == IT_JSON_ARR && he->n == 7);
    double chosen = ch ? (ch->type == IT_JSON_INT ? (double)ch->i : ch->d) : -1, best = INFINITY, at = -2;
    const it_json *gr = aa ? it_json_get(aa, "grid") : NULL;
    for (size_t k = 0; he && gr && k < he->n && k < gr->n; k++) {
        double e = he->items[k].d, g = gr->items[k].type == IT_JSON_INT ? (double)gr->items[k].i : gr->items[k].d;
        if (e < best) best = e, at = g;
    }
    CHECKF(chosen == at, "chosen %g, the grid's best %g", chosen, at);
    it_json_free(rd);
    free(rtxt);
    /* a --data count that differs from the --lora count; an output folder that is an input */
    snprintf(cmd, sizeof cmd, "%s merge %s --data data/llama/inputs.jsonl --out %s 2>/dev/null", bin, args,
             test_tmppath("x"));
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "%s merge %s --out %s --weights 1,2,3 2>/dev/null", bin, args, test_tmppath("x"));
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "%s merge %s --out %s --method linear --alpha auto 2>/dev/null", bin, args,
             test_tmppath("x"));
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "%s merge %s --out %s --report data/llama/inputs.jsonl 2>/dev/null", bin, args,
             test_tmppath("x"));
    CHECK(run(cmd) == 1);
    snprintf(cmd, sizeof cmd, "%s merge %s --out data/llama/base 2>/dev/null", bin, args);
    CHECK(run(cmd) == 1);
    snprintf(cmd, sizeof cmd, "%s merge %s --out %s --schedule zigzag 2>/dev/null", bin, args, test_tmppath("y"));
    CHECK(run(cmd) == 2);
}

/* Rows of expected '<variant>/seq0..2/<what>' concatenated, as f32. */
static float *expected_rows(const it_st *st, const char *variant, const char *what, size_t *len)
{
    float *out = NULL;
    *len = 0;
    for (int k = 0; k < 3; k++) {
        char key[1024];
        snprintf(key, sizeof key, "%s/seq%d/%s", variant, k, what);
        const it_tensor *t = it_st_find(st, key);
        if (!t) {
            free(out);
            return NULL;
        }
        out = realloc(out, (*len + t->numel) * sizeof *out);
        it_tensor_to_f32(t, out + *len, NULL);
        *len += t->numel;
    }
    return out;
}

/* iteris forward --dump against the fixture: logits and every adapted site's inputs. */
static void test_merge_forward_dump(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    char cmd[4096];
    const char *dump = test_tmppath("dump.safetensors");
    snprintf(cmd, sizeof cmd, "%s forward --model data/llama/base --lora data/llama/adapters/%s --inputs "
             "data/llama/inputs.jsonl --dump %s", bin, NAMES[1], dump);
    CHECKF(run(cmd) == 0, "%s", cmd);
    it_st *got = NULL, *exp = NULL;
    it_err err;
    CHECK(it_st_open(&got, dump, &err) == IT_OK);
    CHECK(it_st_open(&exp, test_data("llama/expected.safetensors"), &err) == IT_OK);
    size_t checked = 0;
    double worst = 0;
    for (size_t i = 0; got && exp && i < it_st_count(got); i++) {
        const it_tensor *t = it_st_tensor(got, i);
        char what[256];
        if (!strcmp(t->name, "logits")) snprintf(what, sizeof what, "logits");
        else snprintf(what, sizeof what, "in/%s", t->name + strlen("inputs."));
        size_t len = 0;
        float *want = expected_rows(exp, NAMES[1], what, &len), *have = malloc(t->numel * sizeof *have);
        it_tensor_to_f32(t, have, NULL);
        CHECKF(want && len == t->numel, "%s: %zu values, expected %zu", t->name, (size_t)t->numel, len);
        double num = 0, den = 0;
        for (size_t k = 0; want && k < len && k < t->numel; k++)
            num += ((double)have[k] - want[k]) * ((double)have[k] - want[k]), den += (double)want[k] * want[k];
        double rel = den > 0 ? sqrt(num / den) : 0;
        CHECKF(rel < 1e-5, "%s: rel diff %.3g", t->name, rel);
        if (rel > worst) worst = rel;
        checked++;
        free(want), free(have);
    }
    CHECKF(checked == 9, "%zu tensors (the logits and 8 attention sites)", checked);
    test_note("forward --dump vs the fixture: %zu tensors, worst rel diff %.3g", checked, worst);
    it_st_close(got), it_st_close(exp);
}

/* eval on a case worked out by hand: a LoRA on lm_head only moves the logits linearly, so a merged
 * delta of half the adapter's gives z_merged = z_base + (z_i - z_base) / 2: rel_err 1/2; the full
 * delta gives 0 (top1 1, KL 0), none gives 1. */
static void test_merge_eval_by_hand(void)
{
    fixture f;
    if (fixture_open(&f) != IT_OK) return;
    size_t site;
    CHECK(it_model_find_site(f.m, "lm_head", &site) == IT_OK);
    const it_model_site *ms = it_model_site_at(f.m, site);
    size_t r = 2, m = (size_t)ms->d_out, n = (size_t)ms->d_in;
    float *A = malloc(r * n * sizeof *A), *B = malloc(m * r * sizeof *B);
    for (size_t k = 0; k < r * n; k++) A[k] = (float)(0.05 * sin(1.0 + (double)k));
    for (size_t k = 0; k < m * r; k++) B[k] = (float)(0.05 * cos(2.0 + (double)k));
    it_lora_module mod = {"lm_head", "", IT_LORA_LINEAR, 0, (int64_t)m, (int64_t)n, (int64_t)r, 2.0, 1.0, A, B};
    it_adapter ad;
    memset(&ad, 0, sizeof ad);
    ad.path = "hand", ad.n = 1, ad.mods = &mod;
    it_delta half = {A, B, (int64_t)r, 0.5, NULL}, full = {A, B, (int64_t)r, 1.0, NULL};
    it_eval_result e;
    it_err err;
    CHECKF(it_eval_task(f.m, &ad, &half, &site, 1, NULL, f.s, f.smp->n, &e, &err) == IT_OK, "%s", err.msg);
    CHECKF(fabs(e.rel_err - 0.5) < 1e-6, "half the delta: rel_err %.9f, expected 0.5", e.rel_err);
    CHECK(e.tokens == 28 && e.kl > 0 && e.top1 >= 0 && e.top1 <= 1);
    CHECK(it_eval_task(f.m, &ad, &full, &site, 1, NULL, f.s, f.smp->n, &e, &err) == IT_OK);
    CHECKF(e.rel_err == 0 && e.kl == 0 && e.top1 == 1, "the adapter itself: %g %g %g", e.rel_err, e.kl, e.top1);
    CHECK(it_eval_task(f.m, &ad, NULL, NULL, 0, NULL, f.s, f.smp->n, &e, &err) == IT_OK && e.rel_err == 1.0);
    free(A), free(B);
    fixture_close(&f);
}

/* One adapter merged alone through the command line: the delta and lora outputs give it back. */
static void test_merge_one_adapter_outputs(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    char cmd[4096], src[256];
    snprintf(src, sizeof src, "data/llama/adapters/%s", NAMES[1]);
    it_adapter *orig = NULL, *back = NULL;
    it_st *delta = NULL;
    it_err err;
    CHECK(it_adapter_load(&orig, src, &err) == IT_OK);
    const char *fmts[2] = {"lora", "delta"};
    for (int k = 0; k < 2; k++) {
        const char *out = test_tmppath(k ? "one_delta" : "one_lora");
        snprintf(cmd, sizeof cmd, "%s merge --base data/llama/base --lora %s --data data/llama/inputs.jsonl --out %s "
                 "--format %s --alpha 0.01 --iters 1 2>/dev/null", bin, src, out, fmts[k]);
        CHECKF(run(cmd) == 0, "%s", cmd);
        char path[4096];
        snprintf(path, sizeof path, "%s/delta.safetensors", out);
        if (k == 0) CHECKF(it_adapter_load(&back, out, &err) == IT_OK, "%s", err.msg);
        else CHECKF(it_st_open(&delta, path, &err) == IT_OK, "%s", err.msg);
    }
    double worst = 0;
    for (size_t s = 0; orig && back && delta && s < orig->n; s++) {
        const it_lora_module *a = &orig->mods[s], *b = it_adapter_find(back, "", a->name);
        const it_tensor *t = it_st_find(delta, a->name);
        CHECKF(b && t, "%s missing from the outputs", a->name);
        if (!b || !t) continue;
        size_t len = (size_t)(a->d_out * a->d_in);
        double *da = malloc(len * sizeof *da), *db = malloc(len * sizeof *db), na = 0, nb = 0, nd = 0;
        float *dt = malloc(len * sizeof *dt);
        it_lora_delta(a, da), it_lora_delta(b, db), it_tensor_to_f32(t, dt, NULL);
        for (size_t k = 0; k < len; k++)
            na += (db[k] - da[k]) * (db[k] - da[k]), nb += (dt[k] - da[k]) * (dt[k] - da[k]), nd += da[k] * da[k];
        double e = fmax(sqrt(na / nd), sqrt(nb / nd));
        if (e > worst) worst = e;
        free(da), free(db), free(dt);
    }
    CHECKF(worst < 1e-6, "one adapter through lora / delta outputs: worst rel diff %.3g", worst);
    test_note("one adapter through the lora and delta outputs: worst rel diff %.3g", worst);
    it_adapter_free(orig), it_adapter_free(back), it_st_close(delta);
}

void suite_merge(void)
{
    RUN(test_merge_one_adapter_back);
    if (!test_skip_slow()) { /* minutes under valgrind; AddressSanitizer runs them */
        RUN(test_merge_sweep_equals_iterate);
        RUN(test_merge_cli);
    }
    RUN(test_merge_forward_dump);
    RUN(test_merge_eval_by_hand);
    RUN(test_merge_one_adapter_outputs);
}
