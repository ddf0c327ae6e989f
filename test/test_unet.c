/* test/test_unet.c -- diffusers' UNet2DConditionModel forward pass (model_unet.c).
 *
 * Golden: data/unet (SD-1.5 layout, tiny: block_out_channels (32, 64), layers_per_block 1,
 * CrossAttnDownBlock2D + DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D + CrossAttnUpBlock2D, 8
 * heads, cross_attention_dim 32, norm_num_groups 8, f16 weights computed in f32), run on its base
 * and with each of its three PEFT adapters installed unmerged (diffusers 0.27, peft 0.10, float32
 * on CPU) on the batch of inputs.safetensors (sample [2, 4, 8, 8], timestep [2], encoder_hidden_states
 * [2, 7, 32]). The output "sample" and every captured site input (seen through the observer) must
 * agree to ||a - b|| / ||b|| <= 1e-4 per tensor; with -v the test prints the largest differences
 * per tensor kind.
 *
 * Also: the site table (names, groups: group 0 = every attn2.to_k / to_v, then execution order);
 * a run without outputs (every site observed, nothing computed after the last); the observer's
 * stop; the same output for 1 thread and many; samples the model cannot take (IT_EINVAL naming the
 * folder); config.json settings that are not implemented (IT_EUNSUPPORTED naming the key).
 */
#include "test.h"
#include "golden.h"

#include "iteris.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void suite_unet(void);

#define TOL 1e-4 /* relative difference allowed per tensor */
#define BASE "data/unet/base"
#define NSITES 48   /* 4 transformers x (proj_in, proj_out) + 4 blocks x 10 */
#define NGROUPS 33  /* group 0 + 4 x (proj_in, 6 per block, proj_out) */
#define NCAPTURED 32

static const char *const ADAPTERS[3] = {"lora_r4_a16_all", "lora_r8_a8_rslora_all", "lora_r4_a8_qv"};
static const size_t ADAPTER_MODULES[3] = {32, 32, 16}; /* wrapped modules per adapter (README.txt) */

/* The transformers in execution order, and the block modules in site order. */
static const char *const XF[4] = {"down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.1.attentions.0",
                                  "up_blocks.1.attentions.1"};
static const size_t XF_C[4] = {32, 64, 32, 32};

/* ============================================================================================ */
/* Comparison                                                                                    */
/* ============================================================================================ */

enum { K_Q, K_K, K_V, K_O, K_Q2, K_K2, K_V2, K_O2, K_SAMPLE, NKIND };
static const char *const KIND[NKIND] = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
                                        "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "sample"};

typedef struct stats {
    double max_abs[NKIND], max_rel[NKIND], max_mrel[NKIND];
    size_t count[NKIND];
} stats;

/* The kind of a site or output by the end of its name (-1: none). */
static int kind_of(const char *name)
{
    size_t n = strlen(name);
    for (int k = 0; k < NKIND; k++) {
        size_t l = strlen(KIND[k]);
        if (n >= l && !strcmp(name + n - l, KIND[k]) && (n == l || name[n - l - 1] == '.')) return k;
    }
    return -1;
}

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
/* The sample                                                                                    */
/* ============================================================================================ */

/* The fixture's batch as one sample (owned arrays: free_sample). */
static int load_sample(it_sample *s)
{
    memset(s, 0, sizeof *s);
    it_st *st = NULL;
    if (it_st_open(&st, "data/unet/inputs.safetensors", NULL) != IT_OK) {
        CHECKF(0, "data/unet/inputs.safetensors cannot be opened");
        return -1;
    }
    s->latents = golden_f32(st, "sample", 2 * 4 * 8 * 8);
    s->timesteps = golden_f32(st, "timestep", 2);
    s->context = golden_f32(st, "encoder_hidden_states", 2 * 7 * 32);
    s->nlatents = 2, s->lat_c = 4, s->lat_h = s->lat_w = 8;
    s->nctx = 7, s->dctx = 32;
    it_st_close(st);
    int ok = s->latents && s->timesteps && s->context;
    CHECK(ok);
    return ok ? 0 : -1;
}

static void free_sample(it_sample *s)
{
    free(s->latents);
    free(s->timesteps);
    free(s->context);
}

/* ============================================================================================ */
/* The observer                                                                                  */
/* ============================================================================================ */

typedef struct obs_ctx {
    const it_model *m;
    const it_st *exp;        /* expected.safetensors, or NULL: count only */
    const char *variant;
    stats *s;
    size_t calls, compared;
    size_t stop_at;          /* return 1 at this call (SIZE_MAX: never) */
    size_t last_site;        /* the site of the last call */
} obs_ctx;

static int observe(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    obs_ctx *o = ctx;
    size_t call = o->calls++;
    o->last_site = site;
    if (call == o->stop_at) return 1;
    if (!o->exp) return 0;
    const it_model_site *s = it_model_site_at(o->m, site);
    char key[512];
    snprintf(key, sizeof key, "%s/batch/in/%s", o->variant, s->name);
    if (!it_st_find(o->exp, key)) return 0; /* not captured (projections, feed-forward) */
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

static void golden_variant(it_model *m, const it_sample *smp, const it_st *exp, int a, stats *s)
{
    it_delta *d = NULL;
    it_adapter *ad = a >= 0 ? golden_adapter(m, "unet", ADAPTERS[a], ADAPTER_MODULES[a], &d) : NULL;
    if (a >= 0 && !ad) return;
    const char *variant = a >= 0 ? ADAPTERS[a] : "base";
    obs_ctx o = {m, exp, variant, s, 0, 0, SIZE_MAX, 0};
    it_model_set_observer(m, observe, &o);
    it_outputs out;
    it_err e = {0};
    int rc = it_model_run(m, smp, &out, &e);
    it_model_set_observer(m, NULL, NULL);
    CHECKF(rc == IT_OK, "%s: %s", variant, e.msg);
    if (rc == IT_OK) {
        CHECKF(o.compared == NCAPTURED && o.calls == NSITES, "%s: %zu site inputs compared, %zu calls", variant,
               o.compared, o.calls);
        CHECKF(out.n == 1 && !out.logits && !strcmp(out.o[0].name, "sample") && out.o[0].eval &&
               out.o[0].rows == 2 * 4 * 8 && out.o[0].cols == 8, "%s: outputs", variant);
        char key[256];
        snprintf(key, sizeof key, "%s/batch/sample", variant);
        float *want = out.n == 1 ? golden_f32(exp, key, 2 * 4 * 8 * 8) : NULL;
        if (want && out.o[0].rows * out.o[0].cols == 2 * 4 * 8 * 8) compare(s, K_SAMPLE, key, out.o[0].data, want, 512);
        free(want);
        it_outputs_free(&out);
    }
    golden_release(m, ad, d);
}

static void test_unet_golden(void)
{
    it_model *m = NULL;
    it_st *exp = NULL;
    it_err e = {0};
    it_sample smp;
    int rc = it_model_load(&m, BASE, &e);
    CHECKF(rc == IT_OK, BASE ": %s", e.msg);
    if (rc == IT_OK) CHECK((rc = it_st_open(&exp, "data/unet/expected.safetensors", &e)) == IT_OK);
    if (rc == IT_OK) rc = load_sample(&smp) ? IT_EINVAL : IT_OK;
    stats s;
    memset(&s, 0, sizeof s);
    for (int a = -1; rc == IT_OK && a < 3; a++) golden_variant(m, &smp, exp, a, &s);
    for (int k = 0; k < NKIND; k++)
        test_note("unet %-16s: %3zu tensors, max abs %.3g, max relative %.3g (norm), %.3g (max abs / max |expected|)",
                  KIND[k], s.count[k], s.max_abs[k], s.max_rel[k], s.max_mrel[k]);
    CHECK(rc != IT_OK || (s.count[K_Q] == 16 && s.count[K_K2] == 16 && s.count[K_O2] == 16 && s.count[K_SAMPLE] == 4));
    if (rc == IT_OK) free_sample(&smp);
    it_st_close(exp);
    it_model_free(m);
}

/* ============================================================================================ */
/* The site table                                                                                */
/* ============================================================================================ */

static void test_unet_sites(void)
{
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, BASE, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc != IT_OK) return;
    CHECKF(it_model_site_count(m) == NSITES && it_model_group_count(m) == NGROUPS, "%zu sites, %zu groups",
           it_model_site_count(m), it_model_group_count(m));
    if (it_model_site_count(m) != NSITES) {
        it_model_free(m);
        return;
    }
    static const char *const mods[8] = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
                                         "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"};
    static const size_t group[8] = {0, 0, 0, 1, 2, 3, 4, 5};
    size_t i = 0;
    for (size_t x = 0; x < 4; x++) /* group 0 */
        for (int kv = 0; kv < 2; kv++, i++) {
            const it_model_site *s = it_model_site_at(m, i);
            char name[128];
            snprintf(name, sizeof name, "%s.transformer_blocks.0.attn2.to_%s", XF[x], kv ? "v" : "k");
            CHECKF(!strcmp(s->name, name) && s->group == 0 && s->d_out == (int64_t)XF_C[x] && s->d_in == 32 && !s->bias,
                   "site %zu: %s, group %zu, expected %s", i, s->name, s->group, name);
        }
    for (size_t x = 0; x < 4; x++) {
        size_t C = XF_C[x], g0 = 1 + 8 * x;
        char name[128];
        for (size_t k = 0; k < 10; k++, i++) {
            const it_model_site *s = it_model_site_at(m, i);
            size_t g = k == 0 ? g0 : k == 9 ? g0 + 7 : g0 + 1 + group[k - 1];
            int64_t dout = (int64_t)C, din = (int64_t)C;
            int bias = 1;
            if (k == 0 || k == 9) snprintf(name, sizeof name, "%s.%s", XF[x], k ? "proj_out" : "proj_in");
            else snprintf(name, sizeof name, "%s.transformer_blocks.0.%s", XF[x], mods[k - 1]);
            if (k == 7) dout = 8 * (int64_t)C;
            if (k == 8) din = 4 * (int64_t)C;
            if (k >= 1 && k <= 3) bias = 0;
            if (k == 5) bias = 0;
            CHECKF(!strcmp(s->name, name) && s->group == g && s->d_out == dout && s->d_in == din && (s->bias != NULL) == bias,
                   "site %zu: %s, group %zu, %" PRId64 " x %" PRId64 ", expected %s, group %zu", i, s->name, s->group,
                   s->d_out, s->d_in, name, g);
        }
    }
    /* proj_in is the 1x1 conv viewed [out, in]: its W0 is the checkpoint's weight */
    size_t pi;
    CHECK(it_model_find_site(m, "mid_block.attentions.0.proj_in", &pi) == IT_OK);
    const it_tensor *t = it_st_find(it_model_weights(m), "mid_block.attentions.0.proj_in.weight");
    CHECK(t && t->ndim == 4 && t->numel == 64 * 64);
    float *w = t ? malloc(t->numel * sizeof *w) : NULL;
    if (w && it_tensor_to_f32(t, w, NULL) == IT_OK)
        CHECK(!memcmp(w, it_model_site_at(m, pi)->w0, 64 * 64 * sizeof *w));
    free(w);
    it_model_free(m);
}

/* ============================================================================================ */
/* Calls                                                                                         */
/* ============================================================================================ */

/* Without outputs every site is observed once, the last being the last proj_out; the observer's
 * stop ends the pass with IT_OK and nothing in out; 1 thread and many give the same bits. */
static void test_unet_calls(void)
{
    it_sample smp;
    if (load_sample(&smp)) return;
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, BASE, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc == IT_OK) {
        obs_ctx o = {m, NULL, "base", NULL, 0, 0, SIZE_MAX, 0};
        it_model_set_observer(m, observe, &o);
        CHECKF(it_model_run(m, &smp, NULL, &e) == IT_OK, "%s", e.msg);
        size_t last;
        CHECK(o.calls == NSITES && it_model_find_site(m, "up_blocks.1.attentions.1.proj_out", &last) == IT_OK &&
              o.last_site == last);
        o = (obs_ctx){m, NULL, "base", NULL, 0, 0, 20, 0};
        it_outputs out;
        CHECK(it_model_run(m, &smp, &out, &e) == IT_OK && out.n == 0 && o.calls == 21);
        it_model_set_observer(m, NULL, NULL);
        int threads = it_get_threads();
        it_outputs a, b;
        CHECK(it_set_threads(1) == IT_OK);
        int ra = it_model_run(m, &smp, &a, &e);
        CHECK(it_set_threads(threads > 1 ? threads : 4) == IT_OK);
        int rb = it_model_run(m, &smp, &b, &e);
        CHECK(it_set_threads(threads) == IT_OK);
        CHECK(ra == IT_OK && rb == IT_OK);
        if (ra == IT_OK && rb == IT_OK)
            CHECK(a.n == 1 && b.n == 1 && !memcmp(a.o[0].data, b.o[0].data, 512 * sizeof(float)));
        if (ra == IT_OK) it_outputs_free(&a);
        if (rb == IT_OK) it_outputs_free(&b);
    }
    it_model_free(m);
    free_sample(&smp);
}

/* Samples the model cannot take: IT_EINVAL naming the folder, nothing in out. */
static void test_unet_bad_samples(void)
{
    it_sample smp;
    if (load_sample(&smp)) return;
    it_model *m = NULL;
    it_err e = {0};
    it_outputs o;
    if (it_model_load(&m, BASE, &e) == IT_OK) {
        it_sample s = smp;
        s.lat_c = 3;
        CHECKF(it_model_run(m, &s, &o, &e) == IT_EINVAL && o.n == 0 && strstr(e.msg, BASE) && strstr(e.msg, "[2, 3, 8, 8]"),
               "%s", e.msg);
        s = smp;
        s.dctx = 16;
        CHECKF(it_model_run(m, &s, &o, &e) == IT_EINVAL && strstr(e.msg, BASE) && strstr(e.msg, "cross_attention_dim 32"),
               "%s", e.msg);
        s = smp;
        s.context = NULL;
        CHECKF(it_model_run(m, &s, &o, &e) == IT_EINVAL && strstr(e.msg, "encoder_hidden_states"), "%s", e.msg);
        s = smp;
        s.nlatents = 0;
        CHECK(it_model_run(m, &s, &o, &e) == IT_EINVAL);
        it_sample none = {0};
        CHECK(it_model_run(m, &none, &o, &e) == IT_EINVAL && strstr(e.msg, BASE));
        /* sides that are not multiples of 2: the upsampler follows the skips' sizes */
        s = smp;
        s.lat_h = 5, s.lat_w = 6;
        CHECKF(it_model_run(m, &s, &o, &e) == IT_OK, "%s", e.msg);
        if (o.n == 1) {
            CHECK(o.o[0].rows == 2 * 4 * 5 && o.o[0].cols == 6);
            int finite = 1;
            for (size_t i = 0; i < o.o[0].rows * o.o[0].cols; i++) finite &= isfinite(o.o[0].data[i]) != 0;
            CHECK(finite);
            it_outputs_free(&o);
        }
    }
    it_model_free(m);
    free_sample(&smp);
}

/* ============================================================================================ */
/* Refused settings                                                                              */
/* ============================================================================================ */

/* A folder <tmpdir>/unet-<tag> with data/unet/base's weights (a link) and its config.json with the
 * first occurrence of from replaced by to; returns its path (static buffer). */
static const char *variant_folder(const char *tag, const char *from, const char *to)
{
    static char dir[4096];
    char path[4200], weights[4200], cwd[3000];
    snprintf(dir, sizeof dir, "%s/unet-%s", test_tmpdir(), tag);
    mkdir(dir, 0755);
    size_t len = 0;
    char *cfg = (char *)test_read_file(BASE "/config.json", &len), *at = cfg ? strstr(cfg, from) : NULL;
    CHECKF(at != NULL, "config.json has no %s", from);
    if (!at) {
        free(cfg);
        return dir;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "%.*s%s%s", (int)(at - cfg), cfg, to, at + strlen(from));
        fclose(f);
    }
    free(cfg);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(weights, sizeof weights, "%s/" BASE "/diffusion_pytorch_model.safetensors", cwd);
    unlink(path);
    CHECK(symlink(weights, path) == 0);
    return dir;
}

static void test_unet_refused(void)
{
    static const struct {
        const char *tag, *from, *to, *key;
    } cases[] = {
        {"class", "\"class_embed_type\": null", "\"class_embed_type\": \"timestep\"", "class_embed_type"},
        {"addition", "\"addition_embed_type\": null", "\"addition_embed_type\": \"text_time\"", "addition_embed_type"},
        {"tcond", "\"time_cond_proj_dim\": null", "\"time_cond_proj_dim\": 32", "time_cond_proj_dim"},
        {"shift", "\"resnet_time_scale_shift\": \"default\"", "\"resnet_time_scale_shift\": \"scale_shift\"",
         "resnet_time_scale_shift"},
        {"gated", "\"attention_type\": \"default\"", "\"attention_type\": \"gated\"", "attention_type"},
        {"dual", "\"dual_cross_attention\": false", "\"dual_cross_attention\": true", "dual_cross_attention"},
        {"only", "\"only_cross_attention\": false", "\"only_cross_attention\": true", "only_cross_attention"},
        {"down", "\"CrossAttnDownBlock2D\"", "\"SimpleCrossAttnDownBlock2D\"", "down_block_types[0]"},
        {"up", "\"CrossAttnUpBlock2D\"", "\"AttnUpBlock2D\"", "up_block_types[1]"},
        {"mid", "\"mid_block_type\": \"UNetMidBlock2DCrossAttn\"", "\"mid_block_type\": null", "mid_block_type"},
        {"fourier", "\"time_embedding_type\": \"positional\"", "\"time_embedding_type\": \"fourier\"",
         "time_embedding_type"},
        {"pad", "\"downsample_padding\": 1", "\"downsample_padding\": 0", "downsample_padding"},
        {"kernel", "\"conv_in_kernel\": 3", "\"conv_in_kernel\": 7", "conv_in_kernel"},
        {"skipact", "\"resnet_skip_time_act\": false", "\"resnet_skip_time_act\": true", "resnet_skip_time_act"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        it_model *m = NULL;
        it_err e = {0};
        int rc = it_model_load(&m, variant_folder(cases[i].tag, cases[i].from, cases[i].to), &e);
        CHECKF(rc == IT_EUNSUPPORTED && strstr(e.msg, "config.json") && strstr(e.msg, cases[i].key), "%s: rc %d, %s",
               cases[i].tag, rc, e.msg);
        CHECK(m == NULL);
        it_model_free(m);
    }
    /* accepted: upcast_attention (no change in float32) */
    it_model *m = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, variant_folder("upcast", "\"upcast_attention\": false", "\"upcast_attention\": true"), &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    it_model_free(m);
}

/* ============================================================================================ */
/* Samples by reference, the command line, the sweep                                             */
/* ============================================================================================ */

static int run_cmd(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* forward --dump on data/unet/batch.jsonl (the fixture's tensors named by reference, relative to
 * the samples file): the dump's "sample" and site inputs are the fixture's. */
static void test_unet_cli_forward(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    const char *dump = test_tmppath("unet-dump.safetensors");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s forward --model " BASE " --lora data/unet/adapters/%s --inputs data/unet/batch.jsonl "
             "--dump %s", bin, ADAPTERS[1], dump);
    CHECKF(run_cmd(cmd) == 0, "%s", cmd);
    it_st *d = NULL, *exp = NULL;
    if (it_st_open(&d, dump, NULL) != IT_OK || it_st_open(&exp, "data/unet/expected.safetensors", NULL) != IT_OK) {
        CHECK(0);
        it_st_close(d);
        return;
    }
    static const char *const keys[3][2] = {
        {"sample", "sample"},
        {"inputs.mid_block.attentions.0.transformer_blocks.0.attn1.to_q", "in/mid_block.attentions.0.transformer_blocks.0.attn1.to_q"},
        {"inputs.up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k", "in/up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k"}};
    for (int k = 0; k < 3; k++) {
        char key[512];
        snprintf(key, sizeof key, "%s/batch/%s", ADAPTERS[1], keys[k][1]);
        const it_tensor *t = it_st_find(d, keys[k][0]), *w = it_st_find(exp, key);
        CHECKF(t && w && t->numel == w->numel, "%s", keys[k][0]);
        if (!t || !w || t->numel != w->numel) continue;
        float *a = golden_f32(d, keys[k][0], (size_t)t->numel), *b = golden_f32(exp, key, (size_t)w->numel);
        if (a && b) golden_compare(key, a, b, (size_t)t->numel, TOL);
        free(a), free(b);
    }
    it_st_close(d), it_st_close(exp);
}

/* The merge on raw inputs: each latent of data/unet/samples.jsonl is a sample; the sweep (17 groups: 0,
 * the cross-attention keys and values, then execution order, skip connections included) lands
 * exactly where iterate does with as many iterations as groups; eval runs on the merge. */
static void test_unet_merge(void)
{
    if (test_skip_slow()) return;
    it_model *m = NULL;
    it_adapter *ad[3] = {0};
    it_samples *ss = NULL;
    it_err e = {0};
    int rc = it_model_load(&m, BASE, &e);
    if (rc == IT_OK) rc = it_samples_load(&ss, "data/unet/samples.jsonl", &e);
    if (rc == IT_OK) rc = it_samples_load_pixels(ss, m, &e);
    const it_sample *ptr[2] = {ss ? &ss->s[0] : NULL, ss && ss->n > 1 ? &ss->s[1] : NULL};
    it_task tasks[3];
    for (int i = 0; rc == IT_OK && i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "data/unet/adapters/%s", ADAPTERS[i]);
        rc = it_adapter_load(&ad[i], path, &e);
        tasks[i] = (it_task){ad[i], ptr, 2};
    }
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc == IT_OK) CHECK(ss->n == 2 && ss->s[0].nlatents == 1 && ss->s[0].lat_c == 4 && ss->s[0].nctx == 7);
    it_merge_result *sw = NULL, *it = NULL;
    if (rc == IT_OK) {
        it_merge_opts o;
        it_merge_opts_default(&o);
        o.solve.alpha1 = o.solve.alpha2 = 0.05;
        o.schedule = IT_SCHEDULE_SWEEP;
        CHECKF(it_merge(m, tasks, 3, &o, &sw, &e) == IT_OK, "%s", e.msg);
        it_model_clear_deltas(m);
        o.schedule = IT_SCHEDULE_ITERATE, o.iters = sw ? (int)sw->nsteps : 1, o.tol = 0;
        CHECKF(it_merge(m, tasks, 3, &o, &it, &e) == IT_OK, "%s", e.msg);
    }
    if (sw && it) {
        CHECKF(sw->nsteps == 17 && sw->nsites == NCAPTURED, "%zu steps, %zu sites", sw->nsteps, sw->nsites);
        double worst = 0;
        for (size_t s = 0; s < sw->nsites; s++)
            for (size_t k = 0; k < (size_t)(sw->sites[s].d_out * sw->sites[s].d_in); k++)
                worst = fmax(worst, fabs(sw->wstar[s][k] - it->wstar[s][k]));
        CHECKF(worst == 0.0, "sweep vs iterate(%zu): max |diff| %.3g", sw->nsteps, worst);
        /* eval of the iterate merge against each task: nearer the task's model than the base is */
        size_t msite[NCAPTURED];
        for (size_t k = 0; k < it->nsites && k < NCAPTURED; k++)
            CHECK(it_model_find_site(m, it->sites[k].name, &msite[k]) == IT_OK);
        for (int i = 0; i < 3 && it->nsites == NCAPTURED; i++) {
            it_eval_result r;
            CHECKF(it_eval_task(m, ad[i], it->deltas, msite, it->nsites, NULL, ptr, 2, &r, &e) == IT_OK, "%s", e.msg);
            CHECKF(r.rel_err > 0 && r.rel_err < 1 && r.tokens == 2 * 4 * 8 && isnan(r.kl), "task %d: rel_err %g, %zu rows",
                   i + 1, r.rel_err, r.tokens);
        }
    }
    it_merge_result_free(sw), it_merge_result_free(it);
    for (int i = 0; i < 3; i++) it_adapter_free(ad[i]);
    it_samples_free(ss);
    it_model_free(m);
}

/* The fixture's first adapter rewritten as a kohya file (lora_unet_<path>.lora_down / lora_up /
 * alpha), with some modules in the LDM / SGM spelling (down_blocks.0.attentions.0 is
 * input_blocks.1.1, mid_block.attentions.0 middle_block.1, up_blocks.1.attentions.1 output_blocks.3.1
 * for layers_per_block 1): forward with it dumps exactly what forward with the PEFT folder dumps. */
static void test_unet_kohya(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    it_st *st = NULL;
    char path[512];
    snprintf(path, sizeof path, "data/unet/adapters/%s/adapter_model.safetensors", ADAPTERS[0]);
    if (it_st_open(&st, path, NULL) != IT_OK) {
        CHECK(0);
        return;
    }
    static const char *const sgm[3][2] = {{"down_blocks.0.attentions.0.", "input_blocks.1.1."},
                                          {"mid_block.attentions.0.", "middle_block.1."},
                                          {"up_blocks.1.attentions.1.", "output_blocks.3.1."}};
    size_t n = it_st_count(st), k = 0;
    it_tensor *t = calloc(2 * n, sizeof *t);
    char (*names)[300] = calloc(2 * n, sizeof *names);
    /* lora_alpha 16, r 4: scale 4, as the PEFT folder's; 16.0f as tensor data is little-endian bytes */
    static const unsigned char alpha[4] = {0x00, 0x00, 0x80, 0x41};
    static const uint64_t scalar_shape[1] = {0};
    for (size_t i = 0; t && names && i < n; i++) {
        const it_tensor *src = it_st_tensor(st, i);
        const char *p = src->name + strlen("base_model.model."), *end = strstr(p, ".lora_");
        if (!end) continue;
        char mod[256];
        snprintf(mod, sizeof mod, "%.*s", (int)(end - p), p);
        for (int j = 0; j < 3; j++) /* one spelling in three of the modules that have another */
            if (!strncmp(mod, sgm[j][0], strlen(sgm[j][0])) && (i / 2) % 3 == 0) {
                char tmp[256];
                snprintf(tmp, sizeof tmp, "%s%s", sgm[j][1], mod + strlen(sgm[j][0]));
                snprintf(mod, sizeof mod, "%s", tmp);
            }
        for (char *c = mod; *c; c++)
            if (*c == '.') *c = '_';
        int is_a = strstr(end, "lora_A") != NULL;
        t[k] = *src;
        snprintf(names[k], sizeof names[k], "lora_unet_%s.%s", mod, is_a ? "lora_down.weight" : "lora_up.weight");
        t[k].name = names[k];
        k++;
        if (is_a) {
            snprintf(names[k], sizeof names[k], "lora_unet_%s.alpha", mod);
            t[k] = (it_tensor){names[k], IT_F32, 0, scalar_shape, 1, 4, alpha, 0, 0};
            k++;
        }
    }
    const char *kfile = test_tmppath("unet-kohya.safetensors");
    CHECK(t && names && it_st_save(kfile, t, k, NULL, NULL, 0, NULL) == IT_OK);
    free(t), free(names);
    it_st_close(st);
    char cmd[4096];
    const char *d1 = test_tmppath("unet-peft.dump"), *d2 = test_tmppath("unet-kohya.dump");
    snprintf(cmd, sizeof cmd, "%s forward --model " BASE " --lora data/unet/adapters/%s --inputs data/unet/batch.jsonl "
             "--dump %s && %s forward --model " BASE " --lora %s --inputs data/unet/batch.jsonl --dump %s",
             bin, ADAPTERS[0], d1, bin, kfile, d2);
    CHECKF(run_cmd(cmd) == 0, "%s", cmd);
    size_t l1 = 0, l2 = 0;
    unsigned char *b1 = test_read_file(d1, &l1), *b2 = test_read_file(d2, &l2);
    CHECKF(b1 && b2 && l1 == l2 && !memcmp(b1, b2, l1), "the kohya file's dump differs from the PEFT folder's");
    free(b1), free(b2);
}

void suite_unet(void)
{
    RUN(test_unet_sites);
    RUN(test_unet_golden);
    RUN(test_unet_calls);
    RUN(test_unet_bad_samples);
    RUN(test_unet_refused);
    RUN(test_unet_cli_forward);
    RUN(test_unet_merge);
    RUN(test_unet_kohya);
}
