/* test/test_t5.c -- T5's forward pass (model_t5.c) and greedy decoding.
 *
 * Golden: data/t5 (T5ForConditionalGeneration, flan-t5 style: gated-gelu, untied head), run on its
 * base and with each of its three PEFT adapters installed unmerged (transformers 4.40, peft 0.10,
 * float32 on CPU), teacher-forced on the fixture's decoder ids. The logits, the encoder's last
 * hidden state and every captured site input (seen through the observer) must agree to a relative
 * difference ||a - b|| / ||b|| <= 1e-5 per tensor; with -v the largest difference per kind is
 * printed.
 *
 * Also: the relative position buckets against FACTS 5.4's table; greedy decoding checked against
 * the teacher-forced logits it claims to follow; a T5EncoderModel folder (the same weights) gives
 * the encoder's output; the shared embedding under its other names; a tied head (lm_head = the
 * embedding, input rescaled by d_model^-0.5); T5 v1.0's relu feed-forward with one wi; refusals of
 * samples without decoder ids or with ids outside the vocabulary; the merge's sweep equals iterate.
 */
#include "test.h"
#include "golden.h"

#include "iteris.h"
#include "../model_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOL 1e-5

static const char *const ADAPTERS[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_attn", "lora_r4_a8_mlp"};
static const size_t ADAPTER_MODULES[3] = {36, 24, 12};

typedef struct stats {
    double max_rel[3]; /* site inputs, logits, encoder_last_hidden_state */
    size_t count[3];
} stats;

static void compare(stats *s, int kind, const char *key, const float *a, const float *b, size_t n)
{
    golden_diff g = golden_compare(key, a, b, n, TOL);
    if (!(g.rel <= s->max_rel[kind])) s->max_rel[kind] = g.rel;
    s->count[kind]++;
}


typedef struct obs_ctx {
    const it_model *m;
    const it_st *exp;
    const char *variant, *run;
    stats *s;
    size_t compared;
} obs_ctx;

static int observe(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    obs_ctx *o = ctx;
    const it_model_site *s = it_model_site_at(o->m, site);
    char key[512];
    snprintf(key, sizeof key, "%s/%s/in/%s", o->variant, o->run, s->name);
    if (!it_st_find(o->exp, key)) return 0; /* lm_head: not captured */
    float *b = golden_f32(o->exp, key, nrows * d_in);
    if (b) compare(o->s, 0, key, x, b, nrows * d_in);
    free(b);
    o->compared++;
    return 0;
}

static it_samples *fixture_samples(void)
{
    it_samples *ss = NULL;
    it_err e = {0};
    int rc = it_samples_load(&ss, "data/t5/inputs.jsonl", &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    return ss;
}


static void run_variant(it_model *m, const it_samples *ss, const it_st *exp, const char *variant, stats *s)
{
    for (size_t k = 0; k < ss->n; k++) {
        const it_sample *smp = &ss->s[k];
        char key[128];
        obs_ctx o = {m, exp, variant, smp->name, s, 0};
        it_model_set_observer(m, observe, &o);
        it_outputs out;
        it_err e = {0};
        int rc = it_model_run(m, smp, &out, &e);
        CHECKF(rc == IT_OK, "%s/%s: %s", variant, smp->name, e.msg);
        CHECKF(o.compared == 36, "%s/%s: %zu site inputs compared", variant, smp->name, o.compared);
        it_model_set_observer(m, NULL, NULL);
        if (rc != IT_OK) continue;
        CHECK(out.n == 2 && out.logits && !strcmp(out.o[0].name, "logits") && out.o[0].eval &&
              !strcmp(out.o[1].name, "encoder_last_hidden_state") && !out.o[1].eval);
        for (size_t j = 0; j < out.n && j < 2; j++) {
            snprintf(key, sizeof key, "%s/%s/%s", variant, smp->name, out.o[j].name);
            float *want = golden_f32(exp, key, out.o[j].rows * out.o[j].cols);
            if (want) compare(s, 1 + (int)j, key, out.o[j].data, want, out.o[j].rows * out.o[j].cols);
            free(want);
        }
        it_outputs_free(&out);
    }
}

static void test_t5_golden(void)
{
    it_model *m = NULL;
    it_st *exp = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, "data/t5/base", &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc == IT_OK) CHECK((rc = it_st_open(&exp, "data/t5/expected.safetensors", &e)) == IT_OK);
    it_samples *ss = rc == IT_OK ? fixture_samples() : NULL;
    stats s;
    memset(&s, 0, sizeof s);
    for (int a = -1; ss && a < 3; a++) {
        it_delta *d = NULL;
        it_adapter *ad = a >= 0 ? golden_adapter(m, "t5", ADAPTERS[a], ADAPTER_MODULES[a], &d) : NULL;
        if (a >= 0 && !ad) continue;
        run_variant(m, ss, exp, a >= 0 ? ADAPTERS[a] : "base", &s);
        golden_release(m, ad, d);
    }
    static const char *const kinds[3] = {"site inputs", "logits", "encoder_last_hidden_state"};
    for (int k = 0; k < 3; k++) test_note("t5 %-26s: %3zu tensors, max relative %.3g", kinds[k], s.count[k], s.max_rel[k]);
    CHECK(!ss || (s.count[1] == 8 && s.count[2] == 8 && s.count[0] == 8 * 36));
    it_samples_free(ss);
    it_st_close(exp);
    it_model_free(m);
}

/* Greedy decoding: each appended id is the argmax of the teacher-forced logits at the position
 * before it, and decoding stops at eos or max_new. */
static void test_t5_generate(void)
{
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, "data/t5/base", &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    it_samples *ss = rc == IT_OK ? fixture_samples() : NULL;
    CHECK(m && it_model_needs_decoder_ids(m));
    for (size_t k = 0; ss && k < ss->n; k++) {
        int32_t *dec = NULL;
        size_t nd = 0;
        rc = it_model_generate(m, ss->s[k].ids, ss->s[k].n, 6, &dec, &nd, &e);
        CHECKF(rc == IT_OK, "%s", e.msg);
        if (rc != IT_OK) continue;
        CHECK(nd >= 1 && nd <= 7 && dec[0] == 0);
        it_sample smp = ss->s[k];
        smp.dec_ids = dec, smp.ndec = nd;
        it_outputs out;
        rc = it_model_run(m, &smp, &out, &e);
        CHECKF(rc == IT_OK, "%s", e.msg);
        size_t V = (size_t)it_model_config(m)->vocab_size;
        for (size_t t = 0; rc == IT_OK && t < nd; t++) {
            const float *z = out.o[0].data + t * V;
            size_t best = 0;
            for (size_t v = 1; v < V; v++) best = z[v] > z[best] ? v : best;
            if (t + 1 < nd) CHECKF((int32_t)best == dec[t + 1], "step %zu: %zu, generated %d", t, best, dec[t + 1]);
            else CHECK(nd == 7 || best == 1); /* stopped: eos next, or max_new reached */
        }
        it_outputs_free(&out);
        free(dec);
    }
    it_samples_free(ss);
    it_model_free(m);
}

/* Copies data/t5/base into dir with config.json's architectures replaced by cls. */
static int copy_with_class(const char *dir, const char *cls)
{
    size_t n = 0, w = 0;
    unsigned char *cfg = test_read_file("data/t5/base/config.json", &n);
    unsigned char *wts = test_read_file("data/t5/base/model.safetensors", &w);
    int ok = cfg && wts && mkdir(dir, 0755) == 0;
    char *p = cfg ? strstr((char *)cfg, "T5ForConditionalGeneration") : NULL;
    ok = ok && p;
    char path[512];
    if (ok) {
        size_t pre = (size_t)(p - (char *)cfg), old = strlen("T5ForConditionalGeneration");
        size_t len = pre + strlen(cls) + (n - pre - old);
        char *out = malloc(len + 1);
        memcpy(out, cfg, pre);
        memcpy(out + pre, cls, strlen(cls));
        memcpy(out + pre + strlen(cls), p + old, n - pre - old);
        snprintf(path, sizeof path, "%s/config.json", dir);
        ok = test_write_file(path, out, len) == 0;
        free(out);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        ok = ok && test_write_file(path, wts, w) == 0;
    }
    free(cfg);
    free(wts);
    return ok ? 0 : -1;
}

/* T5EncoderModel on the same weights: the encoder's sites only, last_hidden_state as the fixture's
 * encoder_last_hidden_state. */
static void test_t5_encoder_model(void)
{
    const char *dir = test_tmppath("t5enc");
    CHECK(copy_with_class(dir, "T5EncoderModel") == 0);
    it_model *m = NULL;
    it_st *exp = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, dir, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc == IT_OK) CHECK((rc = it_st_open(&exp, "data/t5/expected.safetensors", &e)) == IT_OK);
    it_samples *ss = rc == IT_OK ? fixture_samples() : NULL;
    if (m) CHECK(it_model_site_count(m) == 2 * 7 && !it_model_needs_decoder_ids(m));
    stats s;
    memset(&s, 0, sizeof s);
    for (size_t k = 0; ss && k < ss->n; k++) {
        it_sample smp = ss->s[k];
        smp.dec_ids = NULL, smp.ndec = 0;
        it_outputs out;
        rc = it_model_run(m, &smp, &out, &e);
        CHECKF(rc == IT_OK, "%s", e.msg);
        if (rc != IT_OK) continue;
        CHECK(out.n == 1 && !strcmp(out.o[0].name, "last_hidden_state") && out.o[0].eval && !out.logits);
        char key[128];
        snprintf(key, sizeof key, "base/%s/encoder_last_hidden_state", smp.name);
        float *want = golden_f32(exp, key, out.o[0].rows * out.o[0].cols);
        if (want) compare(&s, 2, key, out.o[0].data, want, out.o[0].rows * out.o[0].cols);
        free(want);
        it_outputs_free(&out);
    }
    it_samples_free(ss);
    it_st_close(exp);
    it_model_free(m);
}

static void test_t5_refusals(void)
{
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, "data/t5/base", &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc != IT_OK) return;
    int32_t ids[3] = {5, 6, 1}, bad[2] = {0, 256};
    it_sample s = {0};
    s.ids = ids, s.n = 3;
    it_outputs out;
    CHECK(it_model_run(m, &s, &out, &e) == IT_EINVAL && strstr(e.msg, "decoder_input_ids") && out.n == 0);
    s.dec_ids = bad, s.ndec = 2;
    CHECK(it_model_run(m, &s, &out, &e) == IT_EINVAL && strstr(e.msg, "256") && strstr(e.msg, "vocabulary"));
    CHECK(it_model_forward(m, ids, 3, NULL, &e) == IT_EUNSUPPORTED);
    it_model_free(m);
}

/* The merge on T5: decoder ids made per task by greedy decoding with the task's own adapter, then
 * the sweep (groups in execution order: encoder, the cross keys and values, decoder) lands exactly
 * where iterate does with as many iterations as there are groups. */
static void test_t5_sweep_equals_iterate(void)
{
    if (test_skip_slow()) return;
    static const char lines[] = "{\"input_ids\": [140, 93, 179, 128, 24, 1]}\n"
                                "{\"input_ids\": [148, 125, 229, 60, 147, 117, 26, 30, 145, 204, 1]}\n"
                                "{\"input_ids\": [5, 9, 77, 200, 31, 1]}\n"
                                "{\"input_ids\": [12, 250, 3, 1], \"decoder_input_ids\": [0, 7, 7]}\n";
    it_model *m = NULL;
    it_adapter *ad[3] = {0};
    it_samples *ss[3] = {0};
    const it_sample *ptr[3][4];
    it_task tasks[3];
    it_err e = {0};
    int rc = it_model_load(&m, "data/t5/base", &e);
    for (int i = 0; rc == IT_OK && i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "data/t5/adapters/%s", ADAPTERS[i]);
        rc = it_adapter_load(&ad[i], path, &e);
        if (rc == IT_OK) rc = it_samples_parse(&ss[i], lines, sizeof lines - 1, "t5-samples", &e);
        if (rc == IT_OK) rc = it_samples_complete(m, ad[i], ss[i], 5, &e);
        for (size_t k = 0; rc == IT_OK && k < 4; k++) ptr[i][k] = &ss[i]->s[k];
        tasks[i] = (it_task){ad[i], ptr[i], 4};
    }
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc == IT_OK) {
        CHECK(ss[0]->s[3].ndec == 3 && ss[0]->s[3].dec_ids[1] == 7); /* given ids are kept */
        for (int i = 0; i < 3; i++)
            for (size_t k = 0; k < 3; k++) CHECK(ss[i]->s[k].ndec >= 1 && ss[i]->s[k].ndec <= 6);
        it_merge_opts o;
        it_merge_opts_default(&o);
        o.solve.alpha1 = o.solve.alpha2 = 0.05;
        o.schedule = IT_SCHEDULE_SWEEP;
        it_merge_result *sw = NULL, *it = NULL;
        CHECKF(it_merge(m, tasks, 3, &o, &sw, &e) == IT_OK, "%s", e.msg);
        it_model_clear_deltas(m);
        o.schedule = IT_SCHEDULE_ITERATE, o.iters = sw ? (int)sw->nsteps : 21, o.tol = 0;
        CHECKF(it_merge(m, tasks, 3, &o, &it, &e) == IT_OK, "%s", e.msg);
        it_model_clear_deltas(m);
        if (sw && it) {
            CHECKF(sw->nsteps == 21 && sw->nsites == 36, "%zu steps, %zu sites", sw->nsteps, sw->nsites);
            double worst = 0;
            for (size_t s = 0; s < sw->nsites; s++)
                for (size_t k = 0; k < (size_t)(sw->sites[s].d_out * sw->sites[s].d_in); k++)
                    worst = fmax(worst, fabs(sw->wstar[s][k] - it->wstar[s][k]));
            CHECKF(worst == 0.0, "sweep vs iterate(%zu): max |diff| %.3g", sw->nsteps, worst);
        }
        it_merge_result_free(sw), it_merge_result_free(it);
    }
    for (int i = 0; i < 3; i++) it_adapter_free(ad[i]), it_samples_free(ss[i]);
    it_model_free(m);
}

/* FACTS 5.4's test vectors (32 buckets, max_distance 128). */
static void test_t5_buckets(void)
{
    static const long enc[][2] = {{-200, 15}, {-128, 15}, {-127, 15}, {-64, 14}, {-32, 12}, {-16, 10}, {-12, 9},
                                  {-11, 8},   {-8, 8},    {-7, 7},    {-1, 1},   {0, 0},    {1, 17},   {2, 18},
                                  {7, 23},    {8, 24},    {12, 25},   {16, 26},  {32, 28},  {64, 30},  {127, 31},
                                  {128, 31}};
    for (size_t i = 0; i < sizeof enc / sizeof enc[0]; i++)
        CHECKF(it__t5_bucket(enc[i][0], 1, 32, 128) == (size_t)enc[i][1], "encoder rel %ld: %zu, expected %ld",
               enc[i][0], it__t5_bucket(enc[i][0], 1, 32, 128), enc[i][1]);
    /* decoder, by q - k: 0..16 one to one, then the first distance of buckets 17..31 */
    static const long starts[] = {19, 21, 24, 27, 31, 35, 40, 46, 52, 59, 67, 77, 87, 99, 113};
    for (long d = 0; d <= 16; d++) CHECK(it__t5_bucket(-d, 0, 32, 128) == (size_t)d);
    for (size_t b = 0; b < 15; b++) {
        CHECKF(it__t5_bucket(-starts[b], 0, 32, 128) == 17 + b, "decoder distance %ld", starts[b]);
        CHECKF(it__t5_bucket(-(starts[b] - 1), 0, 32, 128) == 16 + b, "decoder distance %ld", starts[b] - 1);
    }
    CHECK(it__t5_bucket(5, 0, 32, 128) == 0 && it__t5_bucket(-1000, 0, 32, 128) == 31); /* future keys; far */
}

/* ============================================================================================ */
/* Variants of the fixture's folder: the other layouts a T5 checkpoint comes in                  */
/* ============================================================================================ */

/* name with every occurrence of from replaced by to, into buf[size]. */
static const char *replace_all(char *buf, size_t size, const char *name, const char *from, const char *to)
{
    size_t off = 0, fl = strlen(from);
    buf[0] = 0;
    for (const char *p = name; *p && off + 1 < size;) {
        if (fl && !strncmp(p, from, fl)) {
            off += (size_t)snprintf(buf + off, size - off, "%s", to);
            p += fl;
        } else {
            buf[off++] = *p++, buf[off] = 0;
        }
    }
    return buf;
}

/* A copy of data/t5/base in <tmp>/<name>: config.json with each cfg[2k] replaced by cfg[2k+1]
 * (ncfg pairs), tensor names with rename[0] replaced by rename[1] (NULL: none), tensors whose name
 * contains drop left out (NULL: none). Returns the folder (static), or NULL. */
static const char *t5_variant(const char *name, const char *const *cfg, size_t ncfg, const char *const *rename,
                              const char *drop)
{
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmppath(name));
    mkdir(dir, 0755);
    size_t len = 0;
    char *text = (char *)test_read_file("data/t5/base/config.json", &len), path[4200];
    for (size_t k = 0; text && k < ncfg; k++) {
        char *out = malloc(len + strlen(cfg[2 * k + 1]) + 1);
        CHECKF(strstr(text, cfg[2 * k]) != NULL, "config.json lacks %s", cfg[2 * k]);
        replace_all(out, len + strlen(cfg[2 * k + 1]) + 1, text, cfg[2 * k], cfg[2 * k + 1]);
        free(text);
        text = out, len = strlen(out);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    int ok = text && test_write_file(path, text, len) == 0;
    free(text);
    it_st *st = NULL;
    if (!ok || it_st_open(&st, "data/t5/base/model.safetensors", NULL) != IT_OK) return NULL;
    size_t n = it_st_count(st), k = 0;
    it_tensor *t = calloc(n, sizeof *t);
    char (*names)[256] = calloc(n, sizeof *names);
    for (size_t i = 0; t && names && i < n; i++) {
        const it_tensor *src = it_st_tensor(st, i);
        if (drop && strstr(src->name, drop)) continue;
        t[k] = *src;
        if (rename) t[k].name = replace_all(names[k], sizeof names[k], src->name, rename[0], rename[1]);
        k++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = t && names ? it_st_save(path, t, k, NULL, NULL, 0, NULL) : IT_ENOMEM;
    free(t), free(names);
    it_st_close(st);
    CHECKF(rc == IT_OK, "%s: cannot write", path);
    return rc == IT_OK ? dir : NULL;
}

/* Collects the input rows of one site (by name) during a run. */
typedef struct rows_ctx {
    const it_model *m;
    const char *site;
    float *x;
    size_t n;
} rows_ctx;

static int rows_observe(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    rows_ctx *c = ctx;
    if (strcmp(it_model_site_at(c->m, site)->name, c->site) != 0) return 0;
    free(c->x);
    c->x = malloc(nrows * d_in * sizeof *c->x);
    if (c->x) memcpy(c->x, x, nrows * d_in * sizeof *x);
    c->n = nrows * d_in;
    return 0;
}

/* The fixture's first sample on the model in dir: outputs in out (freed by the caller), and the
 * input rows of site (NULL: none) in rows->x. */
static int run_first(const char *dir, it_outputs *out, const char *site, rows_ctx *rows)
{
    it_model *m = NULL;
    it_err e = {0};
    it_samples *ss = fixture_samples();
    int rc = dir && ss ? it_model_load(&m, dir, &e) : IT_EINVAL;
    if (rc == IT_OK && site) {
        *rows = (rows_ctx){m, site, NULL, 0};
        it_model_set_observer(m, rows_observe, rows);
    }
    if (rc == IT_OK) rc = it_model_run(m, &ss->s[0], out, &e);
    CHECKF(rc == IT_OK, "%s: %s", dir ? dir : "(no folder)", e.msg);
    it_samples_free(ss);
    it_model_free(m);
    return rc;
}

/* The shared embedding under each of its names gives the same logits, bit for bit (FACTS 5.2). */
static void test_t5_embedding_names(void)
{
    it_outputs ref, o;
    if (run_first("data/t5/base", &ref, NULL, NULL) != IT_OK) return;
    static const char *const names[2] = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"};
    for (int k = 0; k < 2; k++) {
        const char *ren[2] = {"shared.weight", names[k]};
        if (run_first(t5_variant(k ? "t5-dec-embed" : "t5-enc-embed", NULL, 0, ren, NULL), &o, NULL, NULL) != IT_OK)
            continue;
        CHECKF(!memcmp(o.o[0].data, ref.o[0].data, o.o[0].rows * o.o[0].cols * sizeof(float)), "%s", names[k]);
        it_outputs_free(&o);
    }
    it_outputs_free(&ref);
}

/* A tied head (FACTS 5.5): lm_head's W0 is the shared embedding, and its input is the decoder's
 * output times d_model^-0.5 = 1/8 (exact in binary: the untied model's lm_head input, divided by 8). */
static void test_t5_tied_head(void)
{
    const char *cfg[2] = {"\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true"};
    rows_ctx a = {0}, b = {0};
    it_outputs ref, tied;
    if (run_first("data/t5/base", &ref, "lm_head", &a) != IT_OK) return;
    const char *dir = t5_variant("t5-tied", cfg, 1, NULL, "lm_head.weight");
    if (run_first(dir, &tied, "lm_head", &b) == IT_OK) {
        CHECK(a.x && b.x && a.n == b.n);
        for (size_t i = 0; a.x && b.x && i < a.n; i++) CHECK(b.x[i] == a.x[i] * 0.125f);
        /* and the logits are x W^T with W the embedding */
        it_st *st = NULL;
        float *shared = NULL;
        if (it_st_open(&st, "data/t5/base/model.safetensors", NULL) == IT_OK)
            shared = golden_f32(st, "shared.weight", 256 * 64);
        double worst = 0;
        for (size_t r = 0; shared && b.x && r < tied.o[0].rows; r++)
            for (size_t v = 0; v < 256; v++) {
                double acc = 0;
                for (size_t k = 0; k < 64; k++) acc += (double)b.x[r * 64 + k] * shared[v * 64 + k];
                worst = fmax(worst, fabs(acc - tied.o[0].data[r * 256 + v]));
            }
        CHECKF(shared && worst < 1e-4, "tied logits differ from x E^T by %g", worst);
        free(shared);
        it_st_close(st);
        it_outputs_free(&tied);
    }
    free(a.x), free(b.x);
    it_outputs_free(&ref);
}

/* T5 v1.0: feed_forward_proj "relu", one wi: the input rows of wo are relu(x wi^T) of wi's input rows. */
static void test_t5_relu(void)
{
    const char *cfg[6] = {"\"dense_act_fn\": \"gelu_new\"", "\"dense_act_fn\": \"relu\"",
                          "\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"relu\"",
                          "\"is_gated_act\": true", "\"is_gated_act\": false"};
    const char *ren[2] = {"wi_0", "wi"};
    const char *dir = t5_variant("t5-relu", cfg, 3, ren, "wi_1");
    rows_ctx wi = {0}, wo = {0};
    it_outputs o1, o2;
    if (run_first(dir, &o1, "decoder.block.1.layer.2.DenseReluDense.wi", &wi) != IT_OK) return;
    if (run_first(dir, &o2, "decoder.block.1.layer.2.DenseReluDense.wo", &wo) == IT_OK) {
        it_model *m = NULL;
        size_t site = 0;
        CHECK(it_model_load(&m, dir, NULL) == IT_OK &&
              it_model_find_site(m, "decoder.block.1.layer.2.DenseReluDense.wi", &site) == IT_OK &&
              it_model_site_count(m) == 2 * 6 + 2 * 2 + 2 * 8 + 1);
        const float *W = m ? it_model_site_at(m, site)->w0 : NULL;
        double worst = 0;
        size_t rows = wi.n / 64;
        for (size_t r = 0; W && wi.x && wo.x && wo.n == rows * 128 && r < rows; r++)
            for (size_t j = 0; j < 128; j++) {
                double acc = 0;
                for (size_t k = 0; k < 64; k++) acc += (double)wi.x[r * 64 + k] * W[j * 64 + k];
                worst = fmax(worst, fabs((acc > 0 ? acc : 0) - wo.x[r * 128 + j]));
            }
        CHECKF(W && wo.n == rows * 128 && worst < 1e-5, "wo's input is not relu(x wi^T): %g", worst);
        it_model_free(m);
        it_outputs_free(&o2);
    }
    free(wi.x), free(wo.x);
    it_outputs_free(&o1);
}

void suite_t5(void)
{
    RUN(test_t5_buckets);
    RUN(test_t5_golden);
    RUN(test_t5_generate);
    RUN(test_t5_encoder_model);
    RUN(test_t5_embedding_names);
    RUN(test_t5_tied_head);
    RUN(test_t5_relu);
    RUN(test_t5_refusals);
    RUN(test_t5_sweep_equals_iterate);
}
