/* test/test_model.c -- the Llama family's forward pass (model.c, model_llama.c).
 *
 * Golden: data/llama (LlamaForCausalLM, GQA) and data/qwen2 (Qwen2ForCausalLM, q/k/v biases), each
 * run on its base and with each of its three PEFT adapters installed unmerged (transformers 4.40,
 * peft 0.10, float32 on CPU). Every run's logits and every captured site input (seen through the
 * observer) must agree to a relative difference ||a - b|| / ||b|| <= 1e-5 per tensor; the test prints
 * (with -v) the largest max-abs and relative difference per tensor kind. No tensor needs more: the
 * remaining differences are float32 summation order (torch's BLAS versus it_sgemm) and ulp-level
 * differences of expf / powf / cosf.
 *
 * Identities on folders written here: a model whose file holds bf16 / f16 equals the f32 model of
 * the same (rounded) values bit for bit; a sharded copy, a tied head and a bare LlamaModel naming
 * give the same logits as their plain equivalents; linear RoPE with factor 1 and dynamic RoPE equal
 * the default. Refusals: missing tensors, wrong shapes, bad ids, too long sequences, unsupported
 * architectures and rope types, all with messages naming what is wrong.
 */
#include "test.h"
#include "golden.h"

#include "iteris.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOL 1e-5 /* relative difference allowed per tensor */

static const char *const ADAPTERS[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_attn", "lora_r4_a8_mlp"};
static const size_t ADAPTER_MODULES[3] = {14, 8, 6}; /* wrapped modules per adapter (README.txt) */

/* ============================================================================================ */
/* Comparison                                                                                    */
/* ============================================================================================ */

enum { K_Q, K_K, K_V, K_O, K_GATE, K_UP, K_DOWN, K_LOGITS, NKIND };
static const char *const KIND[NKIND] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                        "down_proj", "logits"};

/* The largest differences seen per tensor kind. */
typedef struct stats {
    double max_abs[NKIND], max_rel[NKIND];
    size_t count[NKIND];
} stats;

/* The kind of a site by its last path component (-1: none of the seven). */
static int kind_of(const char *site)
{
    const char *dot = strrchr(site, '.');
    for (int k = 0; k < K_LOGITS; k++)
        if (!strcmp(dot ? dot + 1 : site, KIND[k])) return k;
    return -1;
}

/* Compares a (n) with the expected b (n): max |a - b| and ||a - b|| / ||b|| (in double). */
static void compare(stats *s, int kind, const char *key, const float *a, const float *b, size_t n)
{
    golden_diff g = golden_compare(key, a, b, n, TOL);
    if (g.max_abs > s->max_abs[kind]) s->max_abs[kind] = g.max_abs;
    if (g.rel > s->max_rel[kind]) s->max_rel[kind] = g.rel;
    s->count[kind]++;
}


/* input_ids_<k> of inputs.safetensors as int32 (malloc'd), *n its length. */
static int32_t *load_ids(const it_st *in, int k, size_t *n)
{
    char key[64];
    snprintf(key, sizeof key, "input_ids_%d", k);
    const it_tensor *t = it_st_find(in, key);
    CHECKF(t != NULL, "inputs: missing %s", key);
    if (!t) return NULL;
    *n = (size_t)t->numel;
    float *f = golden_f32(in, key, *n);
    int32_t *ids = malloc(*n * sizeof *ids);
    for (size_t i = 0; f && ids && i < *n; i++) ids[i] = (int32_t)f[i];
    free(f);
    return ids;
}

/* ============================================================================================ */
/* The observer: compares each site's input rows with the captured ones                          */
/* ============================================================================================ */

typedef struct obs_ctx {
    const it_model *m;
    const it_st *exp;        /* expected.safetensors */
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
    if (!it_st_find(o->exp, key)) return 0; /* lm_head: not captured */
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


/* Runs seq0..2 of one variant and compares logits and site inputs. */
static void run_variant(it_model *m, const it_st *in, const it_st *exp, const char *variant, stats *s)
{
    size_t V = (size_t)it_model_config(m)->vocab_size;
    for (int k = 0; k < 3; k++) {
        char run[16], key[128];
        snprintf(run, sizeof run, "seq%d", k);
        size_t n = 0;
        int32_t *ids = load_ids(in, k, &n);
        float *logits = ids ? malloc(n * V * sizeof *logits) : NULL;
        obs_ctx o = {m, exp, variant, run, s, 0, 0, SIZE_MAX};
        it_model_set_observer(m, observe, &o);
        it_err e = {0};
        int rc = logits ? it_model_forward(m, ids, n, logits, &e) : IT_ENOMEM;
        CHECKF(rc == IT_OK, "%s/%s: %s", variant, run, e.msg);
        CHECKF(o.compared == 14 && o.calls == it_model_site_count(m), "%s/%s: %zu site inputs compared, %zu calls",
               variant, run, o.compared, o.calls);
        snprintf(key, sizeof key, "%s/%s/logits", variant, run);
        float *want = rc == IT_OK ? golden_f32(exp, key, n * V) : NULL;
        if (want) compare(s, K_LOGITS, key, logits, want, n * V);
        free(want);
        free(logits);
        free(ids);
        it_model_set_observer(m, NULL, NULL);
    }
}

/* One variant: base (adapter NULL) or an adapter of the fixture installed unmerged. */
static void golden_variant(it_model *m, const char *fx, const it_st *in, const it_st *exp, int a, stats *s)
{
    it_delta *d = NULL;
    it_adapter *ad = a >= 0 ? golden_adapter(m, fx, ADAPTERS[a], ADAPTER_MODULES[a], &d) : NULL;
    if (a >= 0 && !ad) return;
    run_variant(m, in, exp, a >= 0 ? ADAPTERS[a] : "base", s);
    golden_release(m, ad, d);
}

static void golden(const char *fx)
{
    char dir[128], p[160];
    snprintf(dir, sizeof dir, "data/%s/base", fx);
    it_model *m = NULL;
    it_st *in = NULL, *exp = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, dir, &e);
    CHECKF(rc == IT_OK, "%s: %s", dir, e.msg);
    snprintf(p, sizeof p, "data/%s/inputs.safetensors", fx);
    if (rc == IT_OK) CHECK((rc = it_st_open(&in, p, &e)) == IT_OK);
    snprintf(p, sizeof p, "data/%s/expected.safetensors", fx);
    if (rc == IT_OK) CHECK((rc = it_st_open(&exp, p, &e)) == IT_OK);
    stats s;
    memset(&s, 0, sizeof s);
    for (int a = -1; rc == IT_OK && a < 3; a++) golden_variant(m, fx, in, exp, a, &s);
    for (int k = 0; k < NKIND; k++)
        test_note("%s %-9s: %2zu tensors, max abs %.3g, max relative %.3g", fx, KIND[k], s.count[k], s.max_abs[k],
                  s.max_rel[k]);
    CHECK(rc != IT_OK || s.count[K_LOGITS] == 12);
    it_st_close(exp);
    it_st_close(in);
    it_model_free(m);
}

static void test_model_llama_golden(void) { golden("llama"); }
static void test_model_qwen2_golden(void) { golden("qwen2"); }

/* ============================================================================================ */
/* The site table                                                                                */
/* ============================================================================================ */

static void check_sites(const char *fx, int qkv_bias)
{
    char dir[64];
    snprintf(dir, sizeof dir, "data/%s/base", fx);
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, dir, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc != IT_OK) return;
    static const char *const mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    static const size_t group[7] = {0, 0, 0, 1, 2, 2, 3};
    static const int64_t dout[7] = {64, 32, 32, 64, 160, 160, 64}, din[7] = {64, 64, 64, 64, 64, 64, 160};
    CHECK(it_model_site_count(m) == 15 && it_model_group_count(m) == 9);
    const uint16_t one = 1;
    const int little_endian = *(const unsigned char *)&one == 1;
    for (size_t i = 0; i < 14 && it_model_site_count(m) == 15; i++) {
        const it_model_site *s = it_model_site_at(m, i);
        char name[128];
        snprintf(name, sizeof name, "model.layers.%zu.%s", i / 7, mods[i % 7]);
        CHECKF(!strcmp(s->name, name), "site %zu is %s, expected %s", i, s->name, name);
        CHECK(s->group == 4 * (i / 7) + group[i % 7] && s->d_out == dout[i % 7] && s->d_in == din[i % 7]);
        CHECK((s->bias != NULL) == (qkv_bias && i % 7 < 3));
        snprintf(name + strlen(name), sizeof name - strlen(name), ".weight");
        const it_tensor *t = it_st_find(it_model_weights(m), name);
        /* in place on little-endian hosts; a big-endian one holds a converted copy (model.c) */
        CHECKF(t && ((const void *)s->w0 == t->data) == little_endian, "%s: f32 weights %s in place", name,
               little_endian ? "are not used" : "are wrongly used");
    }
    const it_model_site *h = it_model_site_at(m, 14);
    CHECK(h && !strcmp(h->name, "lm_head") && h->group == 8 && h->d_out == 256 && h->d_in == 64 && !h->bias);
    size_t i = 99;
    CHECK(it_model_find_site(m, "model.layers.1.mlp.up_proj", &i) == IT_OK && i == 12);
    CHECK(it_model_find_site(m, "model.layers.2.mlp.up_proj", &i) == IT_ENOTFOUND);
    CHECK(it_model_site_at(m, 15) == NULL && it_model_config(m)->arch == IT_ARCH_LLAMA);
    it_model_free(m);
}

static void test_model_sites(void)
{
    check_sites("llama", 0);
    check_sites("qwen2", 1);
    it_model_free(NULL);
}

/* ============================================================================================ */
/* Folders written here                                                                          */
/* ============================================================================================ */

/* How to derive a model folder from data/llama/base. */
typedef struct derive {
    const char *drop;        /* a tensor left out, or NULL */
    const char *cut;         /* a tensor whose first dimension loses one row, or NULL */
    const char *copy_to;     /* "dst=src": tensor dst written with src's values, or NULL */
    int strip;               /* names without the "model." prefix */
    it_dtype dtype;          /* written as F32, F16 or BF16 */
    int round_only;          /* values rounded through dtype but written as F32 */
    int shards;              /* two shards and an index */
    const char *cfg_from, *cfg_to; /* config.json: the first occurrence of cfg_from replaced */
} derive;

/* config.json of data/llama/base, edited, into dir. */
static int write_config(const char *dir, const derive *dv)
{
    size_t len;
    char *t = (char *)test_read_file("data/llama/base/config.json", &len), path[4200];
    if (!t) return -1;
    char *out = malloc(len + 4096), *at = dv->cfg_from ? strstr(t, dv->cfg_from) : NULL;
    if (at) {
        size_t pre = (size_t)(at - t);
        memcpy(out, t, pre);
        sprintf(out + pre, "%s%s", dv->cfg_to, at + strlen(dv->cfg_from));
    } else {
        memcpy(out, t, len + 1);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = test_write_file(path, out, strlen(out));
    free(out);
    free(t);
    return (dv->cfg_from && !at) ? -1 : rc;
}

/* One tensor of the derived folder: its name, shape and bytes (buf owned). */
typedef struct wtensor {
    char name[128];
    uint64_t shape[4];
    void *buf;
    it_tensor t;
} wtensor;

/* Fills w from the source tensor src (values of tensor vals), as dv says. */
static int derive_tensor(wtensor *w, const it_tensor *src, const it_tensor *vals, const derive *dv)
{
    snprintf(w->name, sizeof w->name, "%s", dv->strip && !strncmp(src->name, "model.", 6) ? src->name + 6 : src->name);
    size_t n = (size_t)vals->numel;
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f || it_tensor_to_f32(vals, f, NULL) != IT_OK) return -1;
    memcpy(w->shape, src->shape, src->ndim * sizeof *w->shape);
    if (dv->cut && !strcmp(src->name, dv->cut)) { /* the last row goes */
        n -= (size_t)(n / w->shape[0]);
        w->shape[0]--;
    }
    it_dtype dt = dv->round_only ? IT_F32 : dv->dtype;
    w->buf = malloc(n * 4 + 1);
    if (dv->round_only && dv->dtype != IT_F32)
        for (size_t i = 0; i < n; i++)
            f[i] = dv->dtype == IT_BF16 ? it_bf16_to_f32(it_f32_to_bf16(f[i])) : it_f16_to_f32(it_f32_to_f16(f[i]));
    int rc = w->buf && it_f32_encode(w->buf, dt, f, n, NULL) == IT_OK ? 0 : -1;
    free(f);
    w->t = (it_tensor){.name = w->name, .dtype = dt, .ndim = src->ndim, .shape = w->shape, .numel = n,
                       .nbytes = n * (size_t)(it_dtype_bits(dt) / 8), .data = w->buf};
    return rc;
}

/* Writes tensors w (n) as model.safetensors, or as two shards and model.safetensors.index.json. */
static int write_weights(const char *dir, const wtensor *w, size_t n, int shards)
{
    it_tensor *t = malloc(n * sizeof *t);
    char path[4200];
    for (size_t i = 0; i < n; i++) t[i] = w[i].t;
    int rc = 0;
    if (!shards) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = it_st_save(path, t, n, NULL, NULL, 0, NULL);
    } else {
        size_t half = n / 2;
        char *idx = malloc(64 * 1024), *p = idx;
        p += sprintf(p, "{\"metadata\": {}, \"weight_map\": {");
        for (size_t i = 0; i < n; i++)
            p += sprintf(p, "%s\"%s\": \"part-%d.safetensors\"", i ? ", " : "", w[i].name, i < half ? 1 : 2);
        sprintf(p, "}}");
        snprintf(path, sizeof path, "%s/part-1.safetensors", dir);
        rc |= it_st_save(path, t, half, NULL, NULL, 0, NULL);
        snprintf(path, sizeof path, "%s/part-2.safetensors", dir);
        rc |= it_st_save(path, t + half, n - half, NULL, NULL, 0, NULL);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        rc |= test_write_file(path, idx, strlen(idx));
        free(idx);
    }
    free(t);
    return rc;
}

/* A folder <tmpdir>/model-<name> derived from data/llama/base; returns its path (static buffer). */
static const char *derive_folder(const char *name, const derive *dv)
{
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/model-%s", test_tmpdir(), name); /* the folder is shared by every suite */
    mkdir(dir, 0755);
    it_st *st = NULL;
    int rc = write_config(dir, dv) || it_st_open(&st, "data/llama/base/model.safetensors", NULL) != IT_OK;
    size_t n = it_st_count(st), k = 0;
    wtensor *w = calloc(n + 1, sizeof *w);
    char dst[128] = "", *src = NULL;
    if (dv->copy_to) {
        snprintf(dst, sizeof dst, "%s", dv->copy_to);
        src = strchr(dst, '=');
        *src++ = 0;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        const it_tensor *t = it_st_tensor(st, i), *vals = t;
        if (dv->drop && !strcmp(t->name, dv->drop)) continue;
        if (src && !strcmp(t->name, dst)) vals = it_st_find(st, src);
        rc = derive_tensor(&w[k++], t, vals, dv);
    }
    if (!rc) rc = write_weights(dir, w, k, dv->shards);
    for (size_t i = 0; i < k; i++) free(w[i].buf);
    free(w);
    it_st_close(st);
    CHECKF(rc == 0, "%s: could not be written", dir);
    return dir;
}

/* seq2's logits (17 x 256, malloc'd) of the model in dir, or NULL after a failed check. */
static float *logits_of(const char *dir)
{
    it_model *m = NULL;
    it_err e = {0};
    const int32_t ids[17] = {5, 200, 17, 99, 3, 255, 0, 128, 64, 12, 7, 7, 7, 250, 31, 1, 2};
    float *lg = malloc(17 * 256 * sizeof *lg);
    int rc = it_model_load(&m, dir, &e);
    CHECKF(rc == IT_OK, "%s: %s", dir, e.msg);
    if (rc == IT_OK) rc = it_model_forward(m, ids, 17, lg, &e);
    CHECKF(rc == IT_OK, "%s: forward: %s", dir, e.msg);
    it_model_free(m);
    if (rc == IT_OK) return lg;
    free(lg);
    return NULL;
}

/* The two folders' logits are bit-identical (same = 1) or differ somewhere (same = 0). */
static void check_same(const char *a, const char *b, int same, const char *what)
{
    char da[4096];
    snprintf(da, sizeof da, "%s", a);
    float *la = logits_of(da), *lb = logits_of(b);
    if (la && lb) CHECKF((memcmp(la, lb, 17 * 256 * sizeof *la) == 0) == same, "%s", what);
    free(la);
    free(lb);
}

/* The load of dir fails with code, the message holding want1 and want2. */
static void check_refused(const char *dir, int code, const char *want1, const char *want2)
{
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, dir, &e);
    CHECKF(rc == code, "%s: code %d, expected %d (%s)", dir, rc, code, e.msg);
    CHECKF(strstr(e.msg, want1) && (!want2 || strstr(e.msg, want2)), "message \"%s\" lacks \"%s\" / \"%s\"", e.msg,
           want1, want2 ? want2 : "");
    CHECK(m == NULL && !strchr(e.msg, '\n'));
    it_model_free(m);
}

/* ============================================================================================ */
/* Identities and refusals on derived folders                                                    */
/* ============================================================================================ */

static void test_model_dtypes(void)
{
    derive f32 = {.dtype = IT_F32};
    char plain[4096];
    snprintf(plain, sizeof plain, "%s", derive_folder("plain", &f32));
    check_same(plain, "data/llama/base", 1, "a rewritten f32 copy gives the same logits");
    static const it_dtype dts[2] = {IT_BF16, IT_F16};
    for (int i = 0; i < 2; i++) {
        derive lo = {.dtype = dts[i]}, rounded = {.dtype = dts[i], .round_only = 1};
        char a[4096];
        snprintf(a, sizeof a, "%s", derive_folder(i ? "f16" : "bf16", &lo));
        check_same(a, derive_folder(i ? "f16r" : "bf16r", &rounded), 1, "16-bit weights equal their f32 values");
        check_same(a, plain, 0, "16-bit weights change the logits");
    }
}

static void test_model_layouts(void)
{
    derive tied = {.dtype = IT_F32, .drop = "lm_head.weight"};
    derive copied = {.dtype = IT_F32, .copy_to = "lm_head.weight=model.embed_tokens.weight"};
    derive bare = {.dtype = IT_F32, .drop = "lm_head.weight", .strip = 1};
    derive cfg_tied = {.dtype = IT_F32, .cfg_from = "\"tie_word_embeddings\": false", .cfg_to = "\"tie_word_embeddings\": true"};
    derive sharded = {.dtype = IT_F32, .shards = 1};
    char t[4096];
    snprintf(t, sizeof t, "%s", derive_folder("tied", &tied));
    check_same(t, derive_folder("copied", &copied), 1, "an absent lm_head ties to embed_tokens");
    check_same(t, derive_folder("cfgtied", &cfg_tied), 1, "tie_word_embeddings ties lm_head to embed_tokens");
    check_same(t, derive_folder("bare", &bare), 1, "a bare LlamaModel naming works");
    check_same("data/llama/base", derive_folder("sharded", &sharded), 1, "a sharded copy gives the same logits");
    it_model *m = NULL;
    size_t i;
    if (it_model_load(&m, derive_folder("bare", &bare), NULL) == IT_OK)
        CHECK(it_model_find_site(m, "layers.0.self_attn.q_proj", &i) == IT_OK && i == 0);
    it_model_free(m);
}

static void test_model_rope_types(void)
{
    derive lin = {.dtype = IT_F32, .cfg_from = "\"rope_scaling\": null",
                  .cfg_to = "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 1.0}"};
    derive dyn = {.dtype = IT_F32, .cfg_from = "\"rope_scaling\": null",
                  .cfg_to = "\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 4.0}"};
    derive l3 = {.dtype = IT_F32, .cfg_from = "\"rope_scaling\": null",
                 .cfg_to = "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                           "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}"};
    derive yarn = {.dtype = IT_F32, .cfg_from = "\"rope_scaling\": null",
                   .cfg_to = "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2.0}"};
    check_same("data/llama/base", derive_folder("lin", &lin), 1, "linear RoPE with factor 1 is the default");
    check_same("data/llama/base", derive_folder("dyn", &dyn), 1, "dynamic RoPE within the context is the default");
    check_same("data/llama/base", derive_folder("l3", &l3), 0, "llama3 RoPE changes the logits");
    check_refused(derive_folder("yarn", &yarn), IT_EUNSUPPORTED, "config.json", "rope_type \"yarn\"");
}

static void test_model_bad_folders(void)
{
    derive miss = {.dtype = IT_F32, .drop = "model.layers.1.mlp.up_proj.weight"};
    derive cut = {.dtype = IT_F32, .cut = "model.layers.0.self_attn.k_proj.weight"};
    derive norm = {.dtype = IT_F32, .drop = "model.layers.0.post_attention_layernorm.weight"};
    derive gelu = {.dtype = IT_F32, .cfg_from = "\"silu\"", .cfg_to = "\"gelu\""};
    check_refused(derive_folder("miss", &miss), IT_ENOTFOUND, "model.layers.1.mlp.up_proj.weight is missing",
                  "expected shape [160, 64]");
    check_refused(derive_folder("cut", &cut), IT_EFORMAT, "model.layers.0.self_attn.k_proj.weight has shape [31, 64]",
                  "expected [32, 64]");
    check_refused(derive_folder("norm", &norm), IT_ENOTFOUND, "post_attention_layernorm.weight is missing", "[64]");
    check_refused(derive_folder("gelu", &gelu), IT_EUNSUPPORTED, "hidden_act \"gelu\"", NULL);
    derive bert = {.dtype = IT_F32, .cfg_from = "\"model_type\": \"llama\"", .cfg_to = "\"model_type\": \"bert\""};
    check_refused(derive_folder("bert", &bert), IT_EUNSUPPORTED, "model_type \"bert\"", "is not a supported architecture");
    check_refused("data/nowhere", IT_EINVAL, "data/nowhere", NULL);
    derive plain = {.dtype = IT_F32};
    const char *empty = test_tmppath("model-empty");
    mkdir(empty, 0755);
    write_config(empty, &plain);
    check_refused(empty, IT_ENOTFOUND, "no safetensors weights", NULL);
}

/* Mistral's sliding window is refused past its length (not implemented), fine below it. */
static void test_model_sliding_window(void)
{
    derive mis = {.dtype = IT_F32, .cfg_from = "\"model_type\": \"llama\"",
                  .cfg_to = "\"sliding_window\": 8, \"model_type\": \"mistral\""};
    it_model *m = NULL;
    it_err e = {0};
    const int32_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float lg[9 * 256];
    int rc = it_model_load(&m, derive_folder("mistral", &mis), &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc != IT_OK) return;
    CHECK(it_model_forward(m, ids, 8, lg, &e) == IT_OK);
    CHECK(it_model_forward(m, ids, 9, lg, &e) == IT_EUNSUPPORTED && strstr(e.msg, "sliding window of 8"));
    it_model_free(m);
}

/* ============================================================================================ */
/* Calls                                                                                         */
/* ============================================================================================ */

static void test_model_bad_ids(void)
{
    it_model *m = NULL;
    it_err e = {0};
    if (it_model_load(&m, "data/llama/base", &e) != IT_OK) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    int32_t ids[129] = {0};
    float *lg = malloc(129 * 256 * sizeof *lg);
    ids[1] = -1;
    CHECK(it_model_forward(m, ids, 3, lg, &e) == IT_EINVAL && strstr(e.msg, "token id -1 at position 1"));
    ids[1] = 256;
    CHECK(it_model_forward(m, ids, 3, lg, &e) == IT_EINVAL && strstr(e.msg, "token id 256 at position 1"));
    ids[1] = 255;
    CHECK(it_model_forward(m, ids, 0, lg, &e) == IT_EINVAL && strstr(e.msg, "empty"));
    CHECK(it_model_forward(m, ids, 129, lg, &e) == IT_EINVAL && strstr(e.msg, "129 tokens exceed"));
    CHECK(it_model_forward(m, ids, 128, lg, &e) == IT_OK);
    free(lg);
    it_model_free(m);
}

/* The observer's stop: the pass ends at once, IT_OK, no logits; with logits NULL every site is
 * observed, lm_head included, and nothing is computed there. */
static void test_model_observer_stop(void)
{
    it_model *m = NULL;
    it_err e = {0};
    if (it_model_load(&m, "data/llama/base", &e) != IT_OK) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    const int32_t ids[4] = {3, 1, 4, 1};
    float lg[4 * 256];
    for (size_t i = 0; i < 4 * 256; i++) lg[i] = -7.0f;
    obs_ctx o = {m, NULL, NULL, NULL, NULL, 0, 0, 4};
    it_model_set_observer(m, observe, &o);
    CHECK(it_model_forward(m, ids, 4, lg, &e) == IT_OK && o.calls == 5);
    int untouched = 1;
    for (size_t i = 0; i < 4 * 256; i++) untouched &= lg[i] == -7.0f;
    CHECK(untouched);
    o = (obs_ctx){m, NULL, NULL, NULL, NULL, 0, 0, SIZE_MAX};
    CHECK(it_model_forward(m, ids, 4, NULL, &e) == IT_OK && o.calls == 15);
    it_model_free(m);
}

/* Installs every module of ad as a dense delta D = scale B A (rounded to f32) into dd, dense. */
static void install_dense(it_model *m, const it_adapter *ad, it_delta *dd, float **dense, size_t max)
{
    for (size_t i = 0; i < ad->n && i < max; i++) {
        const it_lora_module *mod = &ad->mods[i];
        size_t nel = (size_t)(mod->d_out * mod->d_in), site;
        double *w = malloc(nel * sizeof *w);
        dense[i] = malloc(nel * sizeof *dense[i]);
        it_lora_delta(mod, w);
        for (size_t j = 0; j < nel; j++) dense[i][j] = (float)w[j];
        free(w);
        dd[i] = (it_delta){NULL, NULL, 0, 0, dense[i]};
        if (it_model_find_site(m, mod->name, &site) == IT_OK) it_model_set_delta(m, site, &dd[i]);
    }
}

/* Bit-identical logits for 1 and 2 threads (an adapter installed); a dense delta equal to the
 * adapter's scale B A gives the same logits to rounding. */
static void test_model_threads(void)
{
    it_model *m = NULL;
    it_adapter *ad = NULL;
    it_err e = {0};
    if (it_model_load(&m, "data/qwen2/base", &e) != IT_OK ||
        it_adapter_load(&ad, "data/qwen2/adapters/lora_r4_a16_all", &e) != IT_OK) {
        CHECKF(0, "%s", e.msg);
        it_model_free(m);
        return;
    }
    it_delta d[14], dd[14];
    float *dense[14] = {0}, *l1 = malloc(40 * 256 * sizeof *l1), *l2 = malloc(40 * 256 * sizeof *l2);
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (i * 37 + 11) % 256;
    golden_install(m, ad, d);
    int saved = it_get_threads();
    it_set_threads(1);
    CHECK(it_model_forward(m, ids, 40, l1, &e) == IT_OK);
    it_set_threads(2);
    CHECK(it_model_forward(m, ids, 40, l2, &e) == IT_OK);
    it_set_threads(saved);
    CHECK(memcmp(l1, l2, 40 * 256 * sizeof *l1) == 0);
    install_dense(m, ad, dd, dense, 14);
    CHECK(it_model_forward(m, ids, 40, l2, &e) == IT_OK);
    stats s;
    memset(&s, 0, sizeof s);
    compare(&s, K_LOGITS, "dense deltas versus low-rank", l2, l1, 40 * 256);
    test_note("dense versus low-rank deltas: max abs %.3g, relative %.3g", s.max_abs[K_LOGITS], s.max_rel[K_LOGITS]);
    for (int i = 0; i < 14; i++) free(dense[i]);
    free(l1);
    free(l2);
    it_adapter_free(ad);
    it_model_free(m);
}

void suite_model(void)
{
    RUN(test_model_llama_golden);
    RUN(test_model_qwen2_golden);
    RUN(test_model_sites);
    RUN(test_model_dtypes);
    RUN(test_model_layouts);
    RUN(test_model_rope_types);
    RUN(test_model_bad_folders);
    RUN(test_model_sliding_window);
    RUN(test_model_bad_ids);
    RUN(test_model_observer_stop);
    RUN(test_model_threads);
}
