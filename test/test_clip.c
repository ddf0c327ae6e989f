/* test/test_clip.c -- CLIP's forward pass (model_clip.c).
 *
 * Golden: data/clip (CLIPModel: text and vision towers of 2 layers, d 64, 4 heads, projection 32,
 * 32x32 images in 8x8 patches), run on its base and with each of its three PEFT adapters installed
 * unmerged (transformers 4.40, peft 0.10, float32 on CPU): the text tower on input_ids_0 / _1, the
 * vision tower on both images of pixel_values at once. Every output, CLIPModel's logits_per_image
 * (computed here from the two embeddings and logit_scale) and every captured site input (seen
 * through the observer) must agree to ||a - b|| / ||b|| <= 1e-5 per tensor; with -v the test
 * prints the largest max-abs and relative differences per tensor kind.
 *
 * Also: the site table (names, groups in execution order, biases); the same folder run as
 * CLIPTextModel, CLIPVisionModel and CLIPVisionModelWithProjection (config.json rewritten); the
 * observer's stop; samples the model cannot take.
 */
#include "test.h"
#include "golden.h"

#include "iteris.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void suite_clip(void);

#define TOL 1e-5 /* relative difference allowed per tensor */

static const char *const ADAPTERS[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_attn", "lora_r4_a8_mlp"};
static const size_t ADAPTER_MODULES[3] = {24, 16, 8}; /* wrapped modules per adapter (README.txt) */

/* ============================================================================================ */
/* Comparison                                                                                    */
/* ============================================================================================ */

enum { K_Q, K_K, K_V, K_O, K_FC1, K_FC2, K_TEXT_EMBEDS, K_TEXT_LAST, K_TEXT_POOL, K_IMAGE_EMBEDS, K_VISION_LAST,
       K_VISION_POOL, K_LOGITS, NKIND };
static const char *const KIND[NKIND] = {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "text_embeds",
                                        "text_last_hidden_state", "text_pooler_output", "image_embeds",
                                        "vision_last_hidden_state", "vision_pooler_output", "logits_per_image"};

/* The largest differences seen per tensor kind: max |a - b|, ||a - b|| / ||b|| and
 * max |a - b| / max |b|. */
typedef struct stats {
    double max_abs[NKIND], max_rel[NKIND], max_mrel[NKIND];
    size_t count[NKIND];
} stats;

/* The kind of a site or output by its last path component (-1: none). */
static int kind_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (int k = 0; k < NKIND; k++)
        if (!strcmp(dot ? dot + 1 : name, KIND[k])) return k;
    return -1;
}

/* Compares a (n) with the expected b (n). */
static void compare(stats *s, int kind, const char *key, const float *a, const float *b, size_t n)
{
    golden_diff g = golden_compare(key, a, b, n, TOL);
    if (kind < 0) return;
    if (g.max_abs > s->max_abs[kind]) s->max_abs[kind] = g.max_abs;
    if (g.rel > s->max_rel[kind]) s->max_rel[kind] = g.rel;
    if (g.mrel > s->max_mrel[kind]) s->max_mrel[kind] = g.mrel;
    s->count[kind]++;
}


/* ============================================================================================ */
/* Samples                                                                                       */
/* ============================================================================================ */

/* The fixture's inputs as samples: text[0], text[1] (ids only) and image (both pixel_values). */
typedef struct inputs {
    it_sample text[2], image;
} inputs;

static int load_inputs(inputs *in)
{
    memset(in, 0, sizeof *in);
    it_st *st = NULL;
    if (it_st_open(&st, "data/clip/inputs.safetensors", NULL) != IT_OK) {
        CHECKF(0, "data/clip/inputs.safetensors cannot be opened");
        return -1;
    }
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        char key[32];
        snprintf(key, sizeof key, "input_ids_%d", k);
        const it_tensor *t = it_st_find(st, key);
        size_t n = t ? (size_t)t->numel : 0;
        float *f = t ? golden_f32(st, key, n) : NULL;
        in->text[k].ids = f ? malloc(n * sizeof *in->text[k].ids) : NULL;
        for (size_t i = 0; in->text[k].ids && i < n; i++) in->text[k].ids[i] = (int32_t)f[i];
        in->text[k].n = n;
        ok &= in->text[k].ids != NULL;
        free(f);
    }
    in->image.pixels = golden_f32(st, "pixel_values", 2 * 3 * 32 * 32);
    in->image.nimages = 2;
    in->image.channels = 3;
    in->image.height = in->image.width = 32;
    ok &= in->image.pixels != NULL;
    it_st_close(st);
    CHECK(ok);
    return ok ? 0 : -1;
}

static void free_inputs(inputs *in)
{
    free(in->text[0].ids);
    free(in->text[1].ids);
    free(in->image.pixels);
}

/* Output name of o, or NULL. */
static const it_output *find_output(const it_outputs *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->o[i].name, name)) return &o->o[i];
    return NULL;
}

/* ============================================================================================ */
/* The observer: compares each site's input rows with the captured ones                          */
/* ============================================================================================ */

typedef struct obs_ctx {
    const it_model *m;
    const it_st *exp;        /* expected.safetensors, or NULL: count only */
    const char *variant, *run;
    stats *s;
    size_t calls, compared;
    size_t stop_at;          /* return 1 at this call (SIZE_MAX: never) */
} obs_ctx;

static int observe(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    obs_ctx *o = ctx;
    size_t call = o->calls++;
    if (call == o->stop_at) return 1;
    if (!o->exp) return 0;
    const it_model_site *s = it_model_site_at(o->m, site);
    char key[512];
    snprintf(key, sizeof key, "%s/%s/in/%s", o->variant, o->run, s->name);
    if (!it_st_find(o->exp, key)) return 0; /* the projections: not captured */
    CHECKF((int64_t)d_in == s->d_in, "%s: d_in %zu", key, d_in);
    float *b = golden_f32(o->exp, key, nrows * d_in);
    if (b) compare(o->s, kind_of(s->name), key, x, b, nrows * d_in);
    free(b);
    o->compared++;
    return 0;
}

/* ============================================================================================ */
/* Golden runs                                                                                   */
/* ============================================================================================ */


/* Runs sample s as run of variant, comparing the site inputs and the outputs (names[nnames]) with
 * the expected ones; *out keeps the outputs (the caller frees them). */
static int run_one(it_model *m, const it_sample *smp, const it_st *exp, const char *variant, const char *run,
                   const char *const *names, size_t nnames, stats *s, it_outputs *out)
{
    obs_ctx o = {m, exp, variant, run, s, 0, 0, SIZE_MAX};
    it_model_set_observer(m, observe, &o);
    it_err e = {0};
    int rc = it_model_run(m, smp, out, &e);
    it_model_set_observer(m, NULL, NULL);
    CHECKF(rc == IT_OK, "%s/%s: %s", variant, run, e.msg);
    if (rc != IT_OK) return rc;
    CHECKF(o.compared == 12 && o.calls == 13, "%s/%s: %zu site inputs compared, %zu calls", variant, run, o.compared,
           o.calls);
    CHECKF(out->n == nnames && !out->logits, "%s/%s: %zu outputs", variant, run, out->n);
    for (size_t i = 0; i < nnames; i++) {
        const it_output *got = find_output(out, names[i]);
        char key[256];
        snprintf(key, sizeof key, "%s/%s/%s", variant, run, names[i]);
        CHECKF(got && got == &out->o[i] && got->eval == (strstr(names[i], "embeds") != NULL), "%s: missing, misplaced "
               "or wrongly marked", key);
        float *want = got ? golden_f32(exp, key, got->rows * got->cols) : NULL;
        if (want) compare(s, kind_of(names[i]), key, got->data, want, got->rows * got->cols);
        free(want);
    }
    return IT_OK;
}

/* logits_per_image [2, 1] = exp(logit_scale) * image_embeds text_embeds^T, against the expected. */
static void check_logits(const it_model *m, const it_outputs *img, const it_outputs *txt, const it_st *exp,
                         const char *variant, const char *run, stats *s)
{
    const it_tensor *t = it_st_find(it_model_weights(m), "logit_scale");
    const it_output *ie = find_output(img, "image_embeds"), *te = find_output(txt, "text_embeds");
    float ls;
    CHECK(t && t->numel == 1 && ie && te);
    if (!t || t->numel != 1 || !ie || !te || it_tensor_to_f32(t, &ls, NULL) != IT_OK) return;
    float got[2], scale = expf(ls);
    for (size_t i = 0; i < 2; i++) {
        double dot = 0;
        for (size_t j = 0; j < te->cols; j++) dot += (double)ie->data[i * ie->cols + j] * te->data[j];
        got[i] = (float)dot * scale;
    }
    char key[256];
    snprintf(key, sizeof key, "%s/%s/logits_per_image", variant, run);
    float *want = golden_f32(exp, key, 2);
    if (want) compare(s, K_LOGITS, key, got, want, 2);
    free(want);
}

static const char *const TEXT_OUT[3] = {"text_embeds", "text_last_hidden_state", "text_pooler_output"};
static const char *const VISION_OUT[3] = {"image_embeds", "vision_last_hidden_state", "vision_pooler_output"};

/* One variant: base (a = -1) or an adapter of the fixture installed unmerged. */
static void golden_variant(it_model *m, const inputs *in, const it_st *exp, int a, stats *s)
{
    it_delta *d = NULL;
    it_adapter *ad = a >= 0 ? golden_adapter(m, "clip", ADAPTERS[a], ADAPTER_MODULES[a], &d) : NULL;
    if (a >= 0 && !ad) return;
    const char *variant = a >= 0 ? ADAPTERS[a] : "base";
    it_outputs img, txt;
    if (run_one(m, &in->image, exp, variant, "vision", VISION_OUT, 3, s, &img) == IT_OK) {
        for (int k = 0; k < 2; k++) {
            char run[16];
            snprintf(run, sizeof run, "text%d", k);
            if (run_one(m, &in->text[k], exp, variant, run, TEXT_OUT, 3, s, &txt) != IT_OK) continue;
            check_logits(m, &img, &txt, exp, variant, run, s);
            it_outputs_free(&txt);
        }
        it_outputs_free(&img);
    }
    golden_release(m, ad, d);
}

static void test_clip_golden(void)
{
    it_model *m = NULL;
    it_st *exp = NULL;
    it_err e = {0};
    inputs in;
    int rc = it_model_load(&m, "data/clip/base", &e);
    CHECKF(rc == IT_OK, "data/clip/base: %s", e.msg);
    if (rc == IT_OK) CHECK((rc = it_st_open(&exp, "data/clip/expected.safetensors", &e)) == IT_OK);
    if (rc == IT_OK) rc = load_inputs(&in) ? IT_EINVAL : IT_OK;
    stats s;
    memset(&s, 0, sizeof s);
    for (int a = -1; rc == IT_OK && a < 3; a++) golden_variant(m, &in, exp, a, &s);
    for (int k = 0; k < NKIND; k++)
        test_note("clip %-24s: %3zu tensors, max abs %.3g, max relative %.3g (norm), %.3g (max abs / max |expected|)",
                  KIND[k], s.count[k], s.max_abs[k], s.max_rel[k], s.max_mrel[k]);
    CHECK(rc != IT_OK || (s.count[K_Q] == 24 && s.count[K_FC2] == 24 && s.count[K_TEXT_EMBEDS] == 8 &&
                          s.count[K_VISION_LAST] == 4 && s.count[K_LOGITS] == 8));
    if (rc == IT_OK) free_inputs(&in);
    it_st_close(exp);
    it_model_free(m);
}

/* ============================================================================================ */
/* The site table                                                                                */
/* ============================================================================================ */

static void test_clip_sites(void)
{
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, "data/clip/base", &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc != IT_OK) return;
    static const char *const mods[6] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.out_proj", "mlp.fc1", "mlp.fc2"};
    static const size_t group[6] = {0, 0, 0, 1, 2, 3};
    static const int64_t dout[6] = {64, 64, 64, 64, 128, 64}, din[6] = {64, 64, 64, 64, 64, 128};
    CHECK(it_model_site_count(m) == 26 && it_model_group_count(m) == 18);
    for (size_t i = 0; i < 26 && it_model_site_count(m) == 26; i++) {
        const it_model_site *s = it_model_site_at(m, i);
        size_t t = i < 13 ? i : i - 13, g0 = i < 13 ? 0 : 9; /* index and first group within the tower */
        char name[128];
        if (t == 12) {
            snprintf(name, sizeof name, "%s", i < 13 ? "text_projection" : "visual_projection");
            CHECKF(!strcmp(s->name, name) && s->group == g0 + 8 && s->d_out == 32 && s->d_in == 64 && !s->bias,
                   "site %zu: %s, group %zu", i, s->name, s->group);
            continue;
        }
        snprintf(name, sizeof name, "%s.encoder.layers.%zu.%s", i < 13 ? "text_model" : "vision_model", t / 6,
                 mods[t % 6]);
        CHECKF(!strcmp(s->name, name), "site %zu is %s, expected %s", i, s->name, name);
        CHECKF(s->group == g0 + 4 * (t / 6) + group[t % 6] && s->d_out == dout[t % 6] && s->d_in == din[t % 6] && s->bias,
               "site %s: group %zu", s->name, s->group);
    }
    it_model_free(m);
}

/* ============================================================================================ */
/* Other classes on the same weights                                                             */
/* ============================================================================================ */

/* A folder <tmpdir>/clip-<cls> holding data/clip/base's weights (a link) and its config.json with
 * architectures [cls]; returns its path (static buffer). */
static const char *class_folder(const char *cls)
{
    static char dir[4096];
    char path[4200], weights[4200];
    snprintf(dir, sizeof dir, "%s/clip-%s", test_tmpdir(), cls);
    mkdir(dir, 0755);
    size_t len = 0;
    char *cfg = (char *)test_read_file("data/clip/base/config.json", &len), *at = cfg ? strstr(cfg, "\"CLIPModel\"") : NULL;
    CHECK(at != NULL);
    if (!at) {
        free(cfg);
        return dir;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fprintf(f, "%.*s\"%s\"%s", (int)(at - cfg), cfg, cls, at + strlen("\"CLIPModel\""));
        fclose(f);
    }
    free(cfg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char cwd[4000];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(weights, sizeof weights, "%s/data/clip/base/model.safetensors", cwd);
    unlink(path);
    CHECK(symlink(weights, path) == 0);
    return dir;
}

/* Runs sample s on the model in dir (outputs into out); the sites and groups are counted. */
static int run_class(const char *cls, const it_sample *s, it_outputs *out, size_t nsites, size_t ngroups)
{
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, class_folder(cls), &e);
    CHECKF(rc == IT_OK, "%s: %s", cls, e.msg);
    if (rc == IT_OK) {
        CHECKF(it_model_site_count(m) == nsites && it_model_group_count(m) == ngroups, "%s: %zu sites, %zu groups", cls,
               it_model_site_count(m), it_model_group_count(m));
        rc = it_model_run(m, s, out, &e);
        CHECKF(rc == IT_OK, "%s: %s", cls, e.msg);
    }
    it_model_free(m);
    return rc;
}

/* The i-th output of o is name with the given eval flag and the data of ref's output name. */
static void check_same_output(const it_outputs *o, size_t i, const char *name, int eval, const it_outputs *ref)
{
    const it_output *r = find_output(ref, name);
    CHECKF(i < o->n && !strcmp(o->o[i].name, name) && o->o[i].eval == eval && r && r->rows == o->o[i].rows &&
           r->cols == o->o[i].cols && !memcmp(r->data, o->o[i].data, r->rows * r->cols * sizeof *r->data),
           "output %zu is not %s (eval %d) as CLIPModel computes it", i, name, eval);
}

static void test_clip_classes(void)
{
    inputs in;
    if (load_inputs(&in)) return;
    it_sample both = in.text[1];
    both.pixels = in.image.pixels;
    both.nimages = 2;
    both.channels = 3;
    both.height = both.width = 32;
    it_outputs ref, o;
    if (run_class("CLIPModel", &both, &ref, 26, 18) == IT_OK) {
        CHECK(ref.n == 6 && !strcmp(ref.o[0].name, "text_embeds") && !strcmp(ref.o[3].name, "image_embeds"));
        if (run_class("CLIPTextModel", &both, &o, 12, 8) == IT_OK) {
            CHECK(o.n == 2);
            check_same_output(&o, 0, "text_last_hidden_state", 1, &ref);
            check_same_output(&o, 1, "text_pooler_output", 0, &ref);
            it_outputs_free(&o);
        }
        if (run_class("CLIPVisionModel", &both, &o, 12, 8) == IT_OK) {
            CHECK(o.n == 2);
            check_same_output(&o, 0, "vision_last_hidden_state", 0, &ref);
            check_same_output(&o, 1, "vision_pooler_output", 1, &ref);
            it_outputs_free(&o);
        }
        /* unnormalised: normalising gives CLIPModel's image_embeds */
        if (run_class("CLIPVisionModelWithProjection", &in.image, &o, 13, 9) == IT_OK) {
            CHECK(o.n == 3 && !strcmp(o.o[0].name, "image_embeds") && o.o[0].eval);
            const it_output *r = find_output(&ref, "image_embeds");
            for (size_t i = 0; r && o.n == 3 && i < 2; i++) {
                double ss = 0, d = 0;
                for (size_t j = 0; j < 32; j++) ss += (double)o.o[0].data[i * 32 + j] * o.o[0].data[i * 32 + j];
                for (size_t j = 0; j < 32; j++) d = fmax(d, fabs(o.o[0].data[i * 32 + j] / sqrt(ss) - r->data[i * 32 + j]));
                CHECKF(fabs(sqrt(ss) - 1) > 1e-3 && d < 1e-6, "image %zu: norm %g, difference %g", i, sqrt(ss), d);
            }
            it_outputs_free(&o);
        }
        if (run_class("CLIPTextModelWithProjection", &in.text[1], &o, 13, 9) == IT_OK) {
            CHECK(o.n == 3 && !strcmp(o.o[0].name, "text_embeds") && o.o[0].eval && !o.o[1].eval);
            it_outputs_free(&o);
        }
        it_outputs_free(&ref);
    }
    it_model *m = NULL;
    it_err e = {0};
    CHECK(it_model_load(&m, class_folder("CLIPForImageClassification"), &e) == IT_EUNSUPPORTED &&
          strstr(e.msg, "config.json") && strstr(e.msg, "CLIPForImageClassification"));
    free_inputs(&in);
}

/* Pooling (FACTS 6.4): with eos_token_id 2 (legacy configs) the row of the largest id, else the
 * first row holding eos_token_id, row 0 when none does. */
static void test_clip_pooling(void)
{
    int32_t ids[5] = {3, 200, 9, 201, 5}; /* no 255: the fixture's eos is absent */
    it_sample s = {0};
    s.ids = ids, s.n = 5;
    for (int legacy = 0; legacy < 2; legacy++) {
        const char *dir = class_folder("CLIPTextModel");
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", dir);
        size_t len = 0;
        char *cfg = (char *)test_read_file(path, &len), *at = cfg ? strstr(cfg, "\"eos_token_id\": 255") : NULL;
        CHECK(at != NULL);
        if (at && legacy) memcpy(at, "\"eos_token_id\":   2", strlen("\"eos_token_id\": 255"));
        CHECK(cfg && test_write_file(path, cfg, len) == 0);
        free(cfg);
        it_model *m = NULL;
        it_outputs o;
        it_err e = {0};
        int rc = it_model_load(&m, dir, &e);
        if (rc == IT_OK) rc = it_model_run(m, &s, &o, &e);
        CHECKF(rc == IT_OK, "%s", e.msg);
        if (rc == IT_OK) {
            size_t row = legacy ? 3 : 0;
            CHECKF(o.n == 2 && !memcmp(o.o[1].data, o.o[0].data + row * 64, 64 * sizeof(float)),
                   "eos_token_id %s: the pooled row is not %zu", legacy ? "2" : "255", row);
            it_outputs_free(&o);
        }
        it_model_free(m);
    }
}

/* ============================================================================================ */
/* Calls                                                                                         */
/* ============================================================================================ */

/* Samples the model cannot take: IT_EINVAL naming the folder, nothing in out. */
static void test_clip_bad_samples(void)
{
    inputs in;
    if (load_inputs(&in)) return;
    it_model *m = NULL;
    it_err e = {0};
    it_outputs o;
    if (it_model_load(&m, "data/clip/base", &e) == IT_OK) {
        it_sample s = in.image;
        s.height = s.width = 16;
        CHECK(it_model_run(m, &s, &o, &e) == IT_EINVAL && o.n == 0 && strstr(e.msg, "data/clip/base") &&
              strstr(e.msg, "[2, 3, 16, 16]") && strstr(e.msg, "[B, 3, 32, 32]"));
        s = in.image;
        s.channels = 1;
        CHECK(it_model_run(m, &s, &o, &e) == IT_EINVAL && strstr(e.msg, "[2, 1, 32, 32]"));
        s = in.image;
        s.nimages = 0;
        CHECK(it_model_run(m, &s, &o, &e) == IT_EINVAL);
        it_sample none = {0};
        CHECK(it_model_run(m, &none, &o, &e) == IT_EINVAL && o.n == 0 && strstr(e.msg, "data/clip/base") &&
              strstr(e.msg, "neither input_ids nor pixel_values"));
        int32_t bad[3] = {254, 256, 255}, many[33] = {0};
        it_sample t = {.ids = bad, .n = 3};
        CHECK(it_model_run(m, &t, &o, &e) == IT_EINVAL && strstr(e.msg, "token id 256 at position 1"));
        t = (it_sample){.ids = many, .n = 33};
        CHECK(it_model_run(m, &t, &o, &e) == IT_EINVAL && strstr(e.msg, "33 tokens exceed"));
        t.n = 32;
        CHECK(it_model_run(m, &t, &o, &e) == IT_OK && o.n == 3);
        it_outputs_free(&o);
    } else {
        CHECKF(0, "%s", e.msg);
    }
    it_model_free(m);
    m = NULL;
    if (it_model_load(&m, class_folder("CLIPTextModel"), &e) == IT_OK) {
        CHECK(it_model_run(m, &in.image, &o, &e) == IT_EINVAL && strstr(e.msg, "pixel_values only") &&
              strstr(e.msg, "text-only"));
    }
    it_model_free(m);
    m = NULL;
    if (it_model_load(&m, class_folder("CLIPVisionModel"), &e) == IT_OK) {
        CHECK(it_model_run(m, &in.text[0], &o, &e) == IT_EINVAL && strstr(e.msg, "input_ids only") &&
              strstr(e.msg, "vision-only"));
    }
    it_model_free(m);
    free_inputs(&in);
}

/* The observer's stop ends the run at once (IT_OK, no outputs); out NULL observes every site. */
static void test_clip_observer_stop(void)
{
    inputs in;
    if (load_inputs(&in)) return;
    it_model *m = NULL;
    it_err e = {0};
    if (it_model_load(&m, "data/clip/base", &e) == IT_OK) {
        it_sample both = in.text[0];
        both.pixels = in.image.pixels;
        both.nimages = 2;
        both.channels = 3;
        both.height = both.width = 32;
        it_outputs o;
        obs_ctx c = {m, NULL, NULL, NULL, NULL, 0, 0, 15};
        it_model_set_observer(m, observe, &c);
        CHECK(it_model_run(m, &both, &o, &e) == IT_OK && c.calls == 16 && o.n == 0);
        c = (obs_ctx){m, NULL, NULL, NULL, NULL, 0, 0, SIZE_MAX};
        CHECK(it_model_run(m, &both, NULL, &e) == IT_OK && c.calls == 26);
        it_model_set_observer(m, NULL, NULL);
    } else {
        CHECKF(0, "%s", e.msg);
    }
    it_model_free(m);
    free_inputs(&in);
}

/* The sweep over CLIP's two towers (text groups, then vision groups) lands exactly where iterate
 * does with as many iterations as there are groups. */
static void test_clip_sweep_equals_iterate(void)
{
    if (test_skip_slow()) return;
    inputs in;
    if (load_inputs(&in)) return;
    it_sample both[2];
    const it_sample *ptr[2] = {&both[0], &both[1]};
    for (int k = 0; k < 2; k++) {
        both[k] = in.text[k];
        both[k].pixels = in.image.pixels + (size_t)k * 3 * 32 * 32;
        both[k].nimages = 1, both[k].channels = 3, both[k].height = both[k].width = 32;
    }
    it_model *m = NULL;
    it_adapter *ad[3] = {0};
    it_task tasks[3];
    it_err e = {0};
    int rc = it_model_load(&m, "data/clip/base", &e);
    for (int i = 0; rc == IT_OK && i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "data/clip/adapters/%s", ADAPTERS[i]);
        rc = it_adapter_load(&ad[i], path, &e);
        tasks[i] = (it_task){ad[i], ptr, 2};
    }
    CHECKF(rc == IT_OK, "%s", e.msg);
    it_merge_result *sw = NULL, *it = NULL;
    if (rc == IT_OK) {
        it_merge_opts o;
        it_merge_opts_default(&o);
        o.solve.alpha1 = o.solve.alpha2 = 0.05;
        o.schedule = IT_SCHEDULE_SWEEP;
        CHECKF(it_merge(m, tasks, 3, &o, &sw, &e) == IT_OK, "%s", e.msg);
        o.schedule = IT_SCHEDULE_ITERATE, o.iters = sw ? (int)sw->nsteps : 16, o.tol = 0;
        CHECKF(it_merge(m, tasks, 3, &o, &it, &e) == IT_OK, "%s", e.msg);
        it_model_clear_deltas(m);
    }
    if (sw && it) {
        CHECKF(sw->nsteps == 16 && sw->nsites == 24, "%zu steps, %zu sites", sw->nsteps, sw->nsites);
        double worst = 0;
        for (size_t s = 0; s < sw->nsites; s++)
            for (size_t k = 0; k < (size_t)(sw->sites[s].d_out * sw->sites[s].d_in); k++)
                worst = fmax(worst, fabs(sw->wstar[s][k] - it->wstar[s][k]));
        CHECKF(worst == 0.0, "sweep vs iterate(%zu): max |diff| %.3g", sw->nsteps, worst);
    }
    it_merge_result_free(sw), it_merge_result_free(it);
    for (int i = 0; i < 3; i++) it_adapter_free(ad[i]);
    it_model_free(m);
    free_inputs(&in);
}

/* ============================================================================================ */
/* The command line: pixel_values by reference, forward --dump, merge and eval                   */
/* ============================================================================================ */

static int run_cmd(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A samples file in the temporary folder: the fixture's two texts, each with one image of
 * pixel_values named by reference (a path relative to the samples file's folder). */
static const char *write_samples(const char *name, int with_text, int with_image)
{
    char cwd[1024], line[4096], text[8192] = "";
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    static const char *const ids[2] = {"[254, 217, 113, 10, 255]", "[254, 48, 68, 24, 150, 185, 45, 94, 221, 246, 113, 255]"};
    for (int k = 0; k < 2; k++) {
        char img[2048] = "";
        if (with_image)
            snprintf(img, sizeof img, "%s\"pixel_values\": {\"file\": \"%s/data/clip/inputs.safetensors\", \"tensor\": "
                     "\"pixel_values\", \"index\": %d}", with_text ? ", " : "", cwd, k);
        snprintf(line, sizeof line, "{%s%s%s}\n", with_text ? "\"input_ids\": " : "", with_text ? ids[k] : "", img);
        strcat(text, line);
    }
    const char *path = test_tmppath(name);
    return test_write_file(path, text, strlen(text)) == 0 ? path : NULL;
}

/* forward --dump on pixel_values by reference (data/clip/samples.jsonl names inputs.safetensors
 * relative to its own folder): the dump's tensors are the fixture's (the vision tower run image by
 * image here, both images at once there). */
static void test_clip_cli_forward(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    const char *smp = "data/clip/samples.jsonl", *dump = test_tmppath("clip-dump.safetensors"); /* relative paths */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s forward --model data/clip/base --lora data/clip/adapters/%s --inputs %s --dump %s",
             bin, ADAPTERS[0], smp, dump);
    CHECKF(smp && run_cmd(cmd) == 0, "%s", cmd);
    it_st *d = NULL, *exp = NULL;
    if (it_st_open(&d, dump, NULL) != IT_OK || it_st_open(&exp, "data/clip/expected.safetensors", NULL) != IT_OK) {
        CHECK(0);
        it_st_close(d);
        return;
    }
    stats s;
    memset(&s, 0, sizeof s);
    static const char *const outs[4] = {"image_embeds", "vision_pooler_output", "vision_last_hidden_state",
                                        "inputs.vision_model.encoder.layers.1.mlp.fc2"};
    for (int k = 0; k < 4; k++) {
        const it_tensor *t = it_st_find(d, outs[k]);
        char key[256];
        snprintf(key, sizeof key, "%s/vision/%s", ADAPTERS[0],
                 k == 3 ? "in/vision_model.encoder.layers.1.mlp.fc2" : outs[k]);
        const it_tensor *w = it_st_find(exp, key);
        CHECKF(t && w && t->numel == w->numel, "%s", outs[k]);
        if (!t || !w || t->numel != w->numel) continue;
        float *a = malloc(t->numel * sizeof *a), *b = malloc(w->numel * sizeof *b);
        if (a && b && it_tensor_to_f32(t, a, NULL) == IT_OK && it_tensor_to_f32(w, b, NULL) == IT_OK)
            compare(&s, kind_of(outs[k]) < 0 ? K_FC2 : kind_of(outs[k]), key, a, b, (size_t)t->numel);
        free(a), free(b);
    }
    const it_tensor *te = it_st_find(d, "text_embeds");
    CHECK(te && te->ndim == 2 && te->shape[0] == 2 && te->shape[1] == 32);
    it_st_close(d), it_st_close(exp);
}

/* merge and eval on CLIP: image+text samples reach every site; text-only samples for an adapter
 * of the vision tower are refused naming the site. */
static void test_clip_cli_merge(void)
{
    if (test_skip_slow()) return;
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    const char *both = write_samples("clip-m.jsonl", 1, 1), *text = write_samples("clip-t.jsonl", 1, 0);
    char args[4096], cmd[8192];
    snprintf(args, sizeof args, "--base data/clip/base --lora data/clip/adapters/%s --lora data/clip/adapters/%s "
             "--data %s --data %s", ADAPTERS[1], ADAPTERS[2], both, both);
    const char *out = test_tmppath("clip-merged");
    snprintf(cmd, sizeof cmd, "%s merge %s --out %s --format delta --alpha 0.05 2>/dev/null", bin, args, out);
    CHECKF(run_cmd(cmd) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s eval %s --merged %s --json > %s", bin, args, out, test_tmppath("clip-eval.json"));
    CHECKF(run_cmd(cmd) == 0, "%s", cmd);
    size_t len = 0;
    unsigned char *ev = test_read_file(test_tmppath("clip-eval.json"), &len);
    CHECK(ev && strstr((char *)ev, "\"rel_err\": ") && strstr((char *)ev, "\"kl\": null"));
    free(ev);
    snprintf(cmd, sizeof cmd, "%s merge --base data/clip/base --lora data/clip/adapters/%s --data %s --out %s 2> %s",
             bin, ADAPTERS[2], text, test_tmppath("clip-refused"), test_tmppath("clip-err.txt"));
    CHECK(run_cmd(cmd) == 1);
    unsigned char *msg = test_read_file(test_tmppath("clip-err.txt"), &len);
    CHECKF(msg && strstr((char *)msg, "vision_model.encoder.layers.0.mlp.fc1") && strstr((char *)msg, "reach"), "%s",
           msg ? (char *)msg : "");
    free(msg);
}

void suite_clip(void)
{
    RUN(test_clip_golden);
    RUN(test_clip_sites);
    RUN(test_clip_classes);
    RUN(test_clip_pooling);
    RUN(test_clip_bad_samples);
    RUN(test_clip_observer_stop);
    RUN(test_clip_sweep_equals_iterate);
    RUN(test_clip_cli_forward);
    RUN(test_clip_cli_merge);
}
