/* test/test_sd.c -- a diffusers Stable Diffusion pipeline folder as one model (model_sd.c).
 *
 * The pipeline is built in a temporary folder: unet/ = data/unet/base (cross_attention_dim 32), a
 * small seeded CLIPTextModel (hidden 32, 2 layers, 4 heads, vocab 300, 77 positions) as
 * text_encoder/, SD 1.5's scheduler config, a tokenizer folder giving the pad id, model_index.json.
 *
 * Checked: the site table (prefixed names, shared weights, the text groups first); a prompt's
 * "sample" equals the text encoder and the UNet run apart on the padded ids and the noisy latents
 * recomputed here from the documented rule (bit for bit, any thread count); raw UNet samples; the
 * observer's relay and stop; a merge of a PEFT UNet folder and a diffusers file with unet. and
 * text_encoder. keys (sweep equals iterate with as many iterations, exactly); refusals (no pad id,
 * ids beyond 77, an unsupported beta_schedule, an SDXL index, a text-only sample); "seed" parsing.
 */
#include "test.h"

#include "../iteris.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define HID 32
#define LAYERS 2
#define INTER 64
#define VOCAB 300
#define CTX 77
#define PAD_ID 299
#define NT 36 /* text encoder tensors */

/* ============================================================================================ */
/* The pipeline folder                                                                           */
/* ============================================================================================ */

typedef struct variant {
    int tokenizer;            /* 0: none, 1: special_tokens_map + vocab.json, 2: tokenizer_config + tokenizer.json */
    const char *schedule;     /* beta_schedule */
    int sdxl;                 /* model_index names a text_encoder_2 */
} variant;

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s) { return (float)((double)(mix(s) >> 11) * 0x1p-53 * 2.0 - 1.0); }

static int write_text(const char *dir, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return test_write_file(path, text, strlen(text));
}

static int copy_file(const char *from, const char *dir, const char *rel)
{
    size_t len = 0;
    unsigned char *b = test_read_file(from, &len);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    int rc = b ? test_write_file(path, b, len) : -1;
    free(b);
    return rc;
}

/* The text encoder's tensor list: names and shapes (d1 0: one dimension). */
typedef struct tlist {
    char names[NT][96];
    uint64_t shapes[NT][2];
    size_t n;
} tlist;

static void add(tlist *L, const char *name, uint64_t d0, uint64_t d1)
{
    snprintf(L->names[L->n], sizeof L->names[0], "%s", name);
    L->shapes[L->n][0] = d0, L->shapes[L->n][1] = d1;
    L->n++;
}

/* text_encoder/model.safetensors: seeded weights, layer norms near 1. */
static int write_text_encoder(const char *dir)
{
    static tlist L;
    it_tensor t[NT];
    float *data[NT];
    const char *lin[6] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                          "mlp.fc2"};
    char nm[96];
    L.n = 0;
    add(&L, "text_model.embeddings.token_embedding.weight", VOCAB, HID);
    add(&L, "text_model.embeddings.position_embedding.weight", CTX, HID);
    for (int l = 0; l < LAYERS; l++) {
        for (int k = 0; k < 2; k++) {
            snprintf(nm, sizeof nm, "text_model.encoder.layers.%d.layer_norm%d.weight", l, k + 1);
            add(&L, nm, HID, 0);
            snprintf(nm, sizeof nm, "text_model.encoder.layers.%d.layer_norm%d.bias", l, k + 1);
            add(&L, nm, HID, 0);
        }
        for (int k = 0; k < 6; k++) {
            uint64_t out = k == 4 ? INTER : HID, in = k == 5 ? INTER : HID;
            snprintf(nm, sizeof nm, "text_model.encoder.layers.%d.%s.weight", l, lin[k]);
            add(&L, nm, out, in);
            snprintf(nm, sizeof nm, "text_model.encoder.layers.%d.%s.bias", l, lin[k]);
            add(&L, nm, out, 0);
        }
    }
    add(&L, "text_model.final_layer_norm.weight", HID, 0);
    add(&L, "text_model.final_layer_norm.bias", HID, 0);
    size_t n = L.n;
    char (*names)[96] = L.names;
    uint64_t (*shapes)[2] = L.shapes;
    uint64_t seed = 7;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        size_t numel = shapes[i][0] * (shapes[i][1] ? shapes[i][1] : 1);
        int norm_w = strstr(names[i], "norm") && strstr(names[i], ".weight");
        data[i] = malloc(numel * sizeof *data[i]);
        ok &= data[i] != NULL;
        for (size_t j = 0; data[i] && j < numel; j++) data[i][j] = (norm_w ? 1.0f : 0.0f) + 0.2f * uniform(&seed);
        t[i] = (it_tensor){names[i], IT_F32, shapes[i][1] ? 2u : 1u, shapes[i], numel, numel * 4, data[i], 0, 0};
    }
    char path[512];
    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", dir);
    it_err err;
    if (ok && it_st_save(path, t, n, NULL, NULL, 0, &err) != IT_OK) ok = 0;
    for (size_t i = 0; i < n; i++) free(data[i]);
    return ok ? 0 : -1;
}

static const char TE_CONFIG[] =
    "{\"architectures\": [\"CLIPTextModel\"], \"model_type\": \"clip_text_model\", \"hidden_size\": 32, "
    "\"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 300, "
    "\"max_position_embeddings\": 77, \"eos_token_id\": 2, \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05}";

/* A pipeline folder test_tmpdir()/name of the given variant; its path, or NULL. */
static const char *build(const char *name, const variant *v)
{
    static char root[4][512];
    static int turn;
    char *dir = root[turn++ % 4];
    snprintf(dir, sizeof root[0], "%s", test_tmppath(name));
    static const char *const subs[] = {"", "/unet", "/text_encoder", "/scheduler", "/tokenizer"};
    for (size_t i = 0; i < 5; i++) {
        char p[560];
        snprintf(p, sizeof p, "%s%s", dir, subs[i]);
        mkdir(p, 0755);
    }
    char index[1024], sched[512];
    snprintf(index, sizeof index,
             "{\"_class_name\": \"StableDiffusionPipeline\", \"_diffusers_version\": \"0.27.2\", \"feature_extractor\": "
             "[null, null], \"requires_safety_checker\": false, \"safety_checker\": [null, null], \"scheduler\": "
             "[\"diffusers\", \"PNDMScheduler\"], \"text_encoder\": [\"transformers\", \"CLIPTextModel\"], %s"
             "\"tokenizer\": [\"transformers\", \"CLIPTokenizer\"], \"unet\": [\"diffusers\", \"UNet2DConditionModel\"], "
             "\"vae\": [\"diffusers\", \"AutoencoderKL\"]}",
             v->sdxl ? "\"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"], " : "");
    snprintf(sched, sizeof sched,
             "{\"_class_name\": \"PNDMScheduler\", \"beta_end\": 0.012, \"beta_schedule\": \"%s\", \"beta_start\": "
             "0.00085, \"num_train_timesteps\": 1000, \"set_alpha_to_one\": false, \"skip_prk_steps\": true, "
             "\"steps_offset\": 1, \"trained_betas\": null}",
             v->schedule ? v->schedule : "scaled_linear");
    int rc = write_text(dir, "model_index.json", index) | write_text(dir, "scheduler/scheduler_config.json", sched) |
             copy_file(test_data("unet/base/config.json"), dir, "unet/config.json") |
             copy_file(test_data("unet/base/diffusion_pytorch_model.safetensors"), dir,
                       "unet/diffusion_pytorch_model.safetensors") |
             write_text(dir, "text_encoder/config.json", TE_CONFIG) | write_text_encoder(dir);
    if (v->tokenizer == 1)
        rc |= write_text(dir, "tokenizer/special_tokens_map.json",
                         "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"lstrip\": false}, \"eos_token\": "
                         "\"<|endoftext|>\", \"pad_token\": \"<|endoftext|>\", \"unk_token\": \"<|endoftext|>\"}") |
              write_text(dir, "tokenizer/vocab.json",
                         "{\"!\": 0, \"a</w>\": 5, \"<|startoftext|>\": 298, \"<|endoftext|>\": 299}");
    if (v->tokenizer == 2)
        rc |= write_text(dir, "tokenizer/tokenizer_config.json", "{\"pad_token\": {\"content\": \"!\"}}") |
              write_text(dir, "tokenizer/tokenizer.json",
                         "{\"added_tokens\": [{\"id\": 299, \"content\": \"<|endoftext|>\"}], \"model\": {\"type\": "
                         "\"BPE\", \"vocab\": {\"!\": 0, \"<|endoftext|>\": 299}}}");
    CHECKF(rc == 0, "cannot write the pipeline folder %s", dir);
    return rc == 0 ? dir : NULL;
}

static const variant SD15 = {1, NULL, 0};

/* ============================================================================================ */
/* The reference: the two parts run apart                                                        */
/* ============================================================================================ */

/* SD 1.5's alphas_cumprod as diffusers builds it (float32 linspace, squared; cumprod in double). */
static void ref_abar(float *abar, size_t T)
{
    float a = (float)sqrt(0.00085), b = (float)sqrt(0.012), step = (b - a) / (float)(T - 1);
    double prod = 1.0;
    for (size_t i = 0; i < T; i++) {
        float v = i < T / 2 ? a + step * (float)i : b - step * (float)(T - 1 - i);
        prod *= (double)(1.0f - v * v);
        abar[i] = (float)prod;
    }
}

static float ref_normal(uint64_t *s)
{
    double u1 = ((double)(mix(s) >> 11) + 1.0) * 0x1p-53, u2 = (double)(mix(s) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* The "sample" of a prompt (ids [n], seed, K timesteps) computed with the parts apart: malloc'd
 * [K * 4 * 8 * 8], or NULL. */
static float *reference(const char *dir, const int32_t *ids, size_t n, int32_t pad, uint64_t seed, size_t K)
{
    char te_dir[600], unet_dir[600];
    snprintf(te_dir, sizeof te_dir, "%s/text_encoder", dir);
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", dir);
    it_model *te = NULL, *unet = NULL;
    it_err err;
    float *result = NULL, abar[1000];
    if (it_model_load(&te, te_dir, &err) != IT_OK || it_model_load(&unet, unet_dir, &err) != IT_OK) {
        CHECKF(0, "%s", err.msg);
        goto done;
    }
    int32_t padded[CTX];
    for (size_t i = 0; i < CTX; i++) padded[i] = i < n ? ids[i] : pad;
    it_sample ts = {0};
    ts.ids = padded, ts.n = CTX;
    it_outputs to;
    CHECKF(it_model_run(te, &ts, &to, &err) == IT_OK, "%s", err.msg);
    const float *ctx = NULL;
    for (size_t i = 0; i < to.n; i++)
        if (!strcmp(to.o[i].name, "text_last_hidden_state") && to.o[i].rows == CTX && to.o[i].cols == HID)
            ctx = to.o[i].data;
    CHECK(ctx != NULL);
    ref_abar(abar, 1000);
    size_t N = 4 * 8 * 8;
    it_sample u = {0};
    u.latents = malloc(K * N * sizeof(float)), u.timesteps = malloc(K * sizeof(float));
    u.context = malloc(K * CTX * HID * sizeof(float));
    uint64_t st = seed;
    for (size_t k = 0; ctx && u.latents && u.timesteps && u.context && k < K; k++) {
        uint64_t r, reject = (0 - (uint64_t)1000) % 1000;
        do r = mix(&st);
        while (r < reject);
        size_t t = (size_t)(r % 1000);
        float sa = sqrtf(abar[t]), sb = sqrtf(1.0f - abar[t]);
        u.timesteps[k] = (float)t;
        for (size_t i = 0; i < N; i++) u.latents[k * N + i] = ref_normal(&st);
        for (size_t i = 0; i < N; i++) u.latents[k * N + i] = sa * u.latents[k * N + i] + sb * ref_normal(&st);
        memcpy(u.context + k * CTX * HID, ctx, CTX * HID * sizeof(float));
    }
    u.nlatents = K, u.lat_c = 4, u.lat_h = u.lat_w = 8, u.nctx = CTX, u.dctx = HID;
    it_outputs uo = {0};
    if (ctx && u.latents && u.timesteps && u.context) {
        CHECKF(it_model_run(unet, &u, &uo, &err) == IT_OK, "%s", err.msg);
        if (uo.n == 1 && uo.o[0].rows * uo.o[0].cols == K * N && (result = malloc(K * N * sizeof *result)))
            memcpy(result, uo.o[0].data, K * N * sizeof *result);
    }
    it_outputs_free(&uo);
    it_outputs_free(&to);
    free(u.latents), free(u.timesteps), free(u.context);
done:
    it_model_free(te);
    it_model_free(unet);
    return result;
}

/* The composite's "sample" on a prompt, compared with the reference bit for bit. */
static void check_prompt(it_model *m, const char *dir, const int32_t *ids, size_t n, int32_t pad, uint64_t seed,
                         size_t K)
{
    it_sample s = {0};
    s.ids = (int32_t *)ids, s.n = n, s.seed = seed, s.ntimesteps = K;
    it_outputs o;
    it_err err;
    CHECKF(it_model_run(m, &s, &o, &err) == IT_OK, "%s", err.msg);
    float *ref = reference(dir, ids, n, pad, seed, K);
    size_t len = K * 4 * 8 * 8;
    CHECK(o.n == 1 && !strcmp(o.o[0].name, "sample") && o.o[0].eval && o.o[0].rows == K * 4 * 8 && o.o[0].cols == 8);
    CHECKF(ref && o.n == 1 && !memcmp(o.o[0].data, ref, len * sizeof *ref), "seed %llu, K %zu: differs from the parts",
           (unsigned long long)seed, K);
    free(ref);
    it_outputs_free(&o);
}

/* ============================================================================================ */
/* Tests                                                                                         */
/* ============================================================================================ */

static void test_sd_sites(void)
{
    const char *dir = build("sd_sites", &SD15);
    char te_dir[600], unet_dir[600];
    snprintf(te_dir, sizeof te_dir, "%s/text_encoder", dir ? dir : "");
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", dir ? dir : "");
    it_model *m = NULL, *te = NULL, *unet = NULL;
    it_err err;
    CHECKF(dir && it_model_load(&m, dir, &err) == IT_OK, "%s", err.msg);
    CHECKF(dir && it_model_load(&te, te_dir, &err) == IT_OK, "%s", err.msg);
    CHECKF(dir && it_model_load(&unet, unet_dir, &err) == IT_OK, "%s", err.msg);
    if (!m || !te || !unet) goto done;
    size_t nte = it_model_site_count(te), nun = it_model_site_count(unet), gte = it_model_group_count(te);
    CHECK(nte == 12 && nun == 48 && gte == 8);
    CHECK(it_model_site_count(m) == nte + nun && it_model_group_count(m) == gte + it_model_group_count(unet));
    for (size_t i = 0; i < nte + nun; i++) {
        const it_model_site *c = it_model_site_at(m, i);
        const it_model_site *s = i < nte ? it_model_site_at(te, i) : it_model_site_at(unet, i - nte);
        char want[256];
        snprintf(want, sizeof want, "%s.%s", i < nte ? "text_encoder" : "unet", s->name);
        CHECKF(!strcmp(c->name, want), "site %zu: %s, expected %s", i, c->name, want);
        CHECK(c->group == s->group + (i < nte ? 0 : gte) && c->d_out == s->d_out && c->d_in == s->d_in);
        CHECK(!memcmp(c->w0, s->w0, (size_t)(s->d_out * s->d_in) * sizeof *s->w0));
        CHECK((c->bias == NULL) == (s->bias == NULL));
        CHECK(!c->bias || !memcmp(c->bias, s->bias, (size_t)s->d_out * sizeof *s->bias));
    }
    /* the UNet's first group, the cross-attention keys and values, comes right after the text groups */
    CHECK(strstr(it_model_site_at(m, nte)->name, "attn2.to_k") && it_model_site_at(m, nte)->group == gte);
    size_t k;
    CHECK(it_model_find_site(m, "text_encoder.text_model.encoder.layers.1.mlp.fc2", &k) == IT_OK && k == 11);
    CHECK(it_model_weights(m) == NULL && !strcmp(it_model_component(m), "unet"));
    const it_config *c = it_model_config(m);
    CHECK(!strcmp(c->class_name, "StableDiffusionPipeline") && !strcmp(c->model_type, "stable-diffusion"));
    CHECK(c->arch == IT_ARCH_UNET && c->sample_size == 8 && c->cross_attention_dim == 32);
done:
    it_model_free(m), it_model_free(te), it_model_free(unet);
}

/* Counts the observed sites; stops at site stop_at (SIZE_MAX: never). */
typedef struct seen {
    size_t calls[64], order_bad, last, n, stop_at, after_stop;
    int stopped;
} seen;

static int count_obs(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    seen *s = ctx;
    (void)x, (void)nrows, (void)d_in;
    if (s->stopped) s->after_stop++;
    if (site < 64) s->calls[site]++;
    if (s->n && site < 12 && s->last >= 12) s->order_bad++; /* a text site after a UNet site */
    s->last = site, s->n++;
    if (site == s->stop_at) s->stopped = 1;
    return site == s->stop_at;
}

static void test_sd_forward(void)
{
    const char *dir = build("sd_fwd", &SD15);
    it_model *m = NULL;
    it_err err;
    CHECKF(dir && it_model_load(&m, dir, &err) == IT_OK, "%s", err.msg);
    if (!m) return;
    static const int32_t ids[5] = {298, 5, 17, 42, 299};
    check_prompt(m, dir, ids, 5, PAD_ID, 42, 3);
    check_prompt(m, dir, ids, 2, PAD_ID, 0, 1);
    int threads = it_get_threads();
    it_set_threads(1);
    check_prompt(m, dir, ids, 5, PAD_ID, 42, 3);
    it_set_threads(threads);
    int32_t full[CTX];
    for (size_t i = 0; i < CTX; i++) full[i] = (int32_t)(i * 7 % VOCAB);
    check_prompt(m, dir, full, CTX, PAD_ID, 123456789, 2);
    /* raw UNet tensors run through the UNet alone */
    it_samples *ss = NULL;
    it_model *unet = NULL;
    char unet_dir[600];
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", dir);
    CHECKF(it_samples_load(&ss, test_data("unet/samples.jsonl"), &err) == IT_OK, "%s", err.msg);
    CHECKF(ss && it_samples_load_pixels(ss, m, &err) == IT_OK, "%s", err.msg);
    CHECKF(it_model_load(&unet, unet_dir, &err) == IT_OK, "%s", err.msg);
    if (ss && unet) {
        it_outputs a, b;
        CHECKF(it_model_run(m, &ss->s[0], &a, &err) == IT_OK, "%s", err.msg);
        CHECKF(it_model_run(unet, &ss->s[0], &b, &err) == IT_OK, "%s", err.msg);
        CHECK(a.n == 1 && b.n == 1 && a.o[0].rows == b.o[0].rows &&
              !memcmp(a.o[0].data, b.o[0].data, a.o[0].rows * a.o[0].cols * sizeof(float)));
        it_outputs_free(&a), it_outputs_free(&b);
    }
    it_samples_free(ss);
    it_model_free(unet);
    /* the observer sees every site, the text encoder's first; a stop ends the whole run */
    seen s = {.stop_at = SIZE_MAX};
    it_sample p = {0};
    p.ids = (int32_t *)ids, p.n = 5, p.ntimesteps = 2;
    it_model_set_observer(m, count_obs, &s);
    CHECKF(it_model_run(m, &p, NULL, &err) == IT_OK, "%s", err.msg);
    for (size_t i = 0; i < 60; i++) CHECKF(s.calls[i] >= 1, "site %zu not observed", i);
    CHECK(s.order_bad == 0 && s.calls[60] == 0);
    for (size_t stop = 0; stop < 2; stop++) {
        seen t = {.stop_at = stop ? 12 : 3};
        it_outputs o;
        it_model_set_observer(m, count_obs, &t);
        CHECKF(it_model_run(m, &p, &o, &err) == IT_OK, "%s", err.msg);
        CHECK(o.n == 0 && t.stopped && t.after_stop == 0 && t.n == t.stop_at + 1);
    }
    it_model_set_observer(m, NULL, NULL);
    it_model_free(m);
}

/* A diffusers-format file: two UNet modules and two text encoder modules, rank 2, seeded. */
static const char *write_diffusers_lora(void)
{
    static const char *const mods[4] = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                                        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
                                        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
                                        "text_encoder.text_model.encoder.layers.1.mlp.fc1"};
    static const uint64_t dims[4][2] = {{32, 32}, {64, 32}, {32, 32}, {64, 32}}; /* d_out, d_in */
    static char names[8][128];
    static uint64_t shapes[8][2];
    it_tensor t[8];
    float *data[8];
    uint64_t seed = 99;
    int ok = 1;
    for (size_t i = 0; i < 8; i++) {
        int b = i % 2;
        snprintf(names[i], sizeof names[i], "%s.lora_%c.weight", mods[i / 2], b ? 'B' : 'A');
        shapes[i][0] = b ? dims[i / 2][0] : 2, shapes[i][1] = b ? 2 : dims[i / 2][1];
        size_t numel = shapes[i][0] * shapes[i][1];
        data[i] = malloc(numel * sizeof(float));
        ok &= data[i] != NULL;
        for (size_t j = 0; data[i] && j < numel; j++) data[i][j] = 0.3f * uniform(&seed);
        t[i] = (it_tensor){names[i], IT_F32, 2, shapes[i], numel, numel * 4, data[i], 0, 0};
    }
    const char *path = test_tmppath("sd_lora.safetensors");
    it_err err;
    if (ok && it_st_save(path, t, 8, NULL, NULL, 0, &err) != IT_OK) ok = 0;
    for (size_t i = 0; i < 8; i++) free(data[i]);
    CHECK(ok);
    return ok ? path : NULL;
}

static void test_sd_merge(void)
{
    if (test_skip_slow()) return;
    const char *dir = build("sd_merge", &SD15), *file = write_diffusers_lora();
    it_model *m = NULL;
    it_adapter *ad[2] = {NULL, NULL};
    it_samples *ss = NULL;
    it_err err;
    int rc = dir && file ? it_model_load(&m, dir, &err) : IT_EIO;
    if (rc == IT_OK) rc = it_adapter_load(&ad[0], test_data("unet/adapters/lora_r4_a8_qv"), &err);
    if (rc == IT_OK) rc = it_adapter_load(&ad[1], file, &err);
    for (int i = 0; rc == IT_OK && i < 2; i++) rc = it_model_fit_adapter(m, ad[i], &err);
    static const char text[] = "{\"input_ids\": [298, 5, 299], \"seed\": 1}\n{\"input_ids\": [298, 17, 18, 299], "
                               "\"seed\": 2}\n{\"input_ids\": [298, 40, 299], \"seed\": 3}\n";
    if (rc == IT_OK) rc = it_samples_parse(&ss, text, sizeof text - 1, "prompts", &err);
    CHECKF(rc == IT_OK, "%s", err.msg);
    if (rc != IT_OK) goto done;
    CHECK(ad[0]->n == 16 && ad[1]->n == 4);
    for (size_t k = 0; k < ad[0]->n; k++) CHECK(!strncmp(ad[0]->mods[k].name, "unet.", 5) && !ad[0]->mods[k].component[0]);
    CHECK(!strcmp(ad[1]->mods[0].name, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"));
    CHECK(!strcmp(ad[1]->mods[3].name, "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k"));
    const it_sample *smp[3];
    for (size_t k = 0; k < 3; k++) ss->s[k].ntimesteps = 2, smp[k] = &ss->s[k];
    it_task tasks[2] = {{ad[0], smp, 3}, {ad[1], smp, 3}};
    it_merge_opts o;
    it_merge_opts_default(&o);
    o.solve.alpha1 = o.solve.alpha2 = 0.05;
    o.schedule = IT_SCHEDULE_SWEEP;
    it_merge_result *sw = NULL, *it = NULL;
    CHECKF(it_merge(m, tasks, 2, &o, &sw, &err) == IT_OK, "%s", err.msg);
    it_model_clear_deltas(m);
    o.schedule = IT_SCHEDULE_ITERATE, o.iters = sw ? (int)sw->nsteps : 1, o.tol = 0;
    CHECKF(it_merge(m, tasks, 2, &o, &it, &err) == IT_OK, "%s", err.msg);
    it_model_clear_deltas(m);
    if (sw && it) {
        /* one sweep step per group a merged site is in: 4 text groups and the UNet's */
        unsigned char active[64] = {0};
        size_t ngroups = 0, idx;
        for (size_t s = 0; s < sw->nsites; s++)
            if (it_model_find_site(m, sw->sites[s].name, &idx) == IT_OK && !active[it_model_site_at(m, idx)->group]++)
                ngroups++;
        CHECKF(sw->nsites == 19 && sw->nsteps == ngroups && it->nsteps == ngroups, "%zu sites, %zu / %zu steps, %zu groups",
               sw->nsites, sw->nsteps, it->nsteps, ngroups);
        double worst = 0;
        for (size_t s = 0; s < sw->nsites && s < it->nsites; s++)
            for (size_t k = 0; k < (size_t)(sw->sites[s].d_out * sw->sites[s].d_in); k++)
                worst = fmax(worst, fabs(sw->wstar[s][k] - it->wstar[s][k]));
        CHECKF(worst == 0.0, "sweep vs iterate(%zu): max |diff| %.3g", sw->nsteps, worst);
        test_note("pipeline merge: %zu sites, sweep over %zu groups vs iterate: max |diff| %.3g", sw->nsites,
                  sw->nsteps, worst);
    }
    it_merge_result_free(sw), it_merge_result_free(it);
done:
    it_samples_free(ss);
    it_adapter_free(ad[0]), it_adapter_free(ad[1]);
    it_model_free(m);
}

static void test_sd_refusals(void)
{
    it_model *m = NULL;
    it_err err;
    /* no tokenizer files: short ids are refused, 77 ids run */
    variant nopad = {0, NULL, 0};
    const char *dir = build("sd_nopad", &nopad);
    CHECKF(dir && it_model_load(&m, dir, &err) == IT_OK, "%s", err.msg);
    static int32_t ids[CTX + 1];
    for (size_t i = 0; i < CTX + 1; i++) ids[i] = (int32_t)(i % 50);
    it_sample s = {0};
    s.ids = ids, s.n = 4, s.ntimesteps = 1;
    it_outputs o;
    CHECK(m && it_model_run(m, &s, &o, &err) == IT_EINVAL && strstr(err.msg, "padded to 77") && o.n == 0);
    s.n = CTX;
    CHECKF(m && it_model_run(m, &s, &o, &err) == IT_OK, "%s", err.msg);
    it_outputs_free(&o);
    s.n = CTX + 1;
    CHECK(m && it_model_run(m, &s, &o, &err) == IT_EINVAL && strstr(err.msg, "at most 77"));
    it_sample text = {0};
    text.text = "a cat";
    CHECK(m && it_model_run(m, &text, &o, &err) == IT_EINVAL && strstr(err.msg, "input_ids"));
    it_model_free(m), m = NULL;
    /* the pad token from tokenizer_config.json + tokenizer.json ("!", id 0) */
    variant tj = {2, NULL, 0};
    dir = build("sd_tokjson", &tj);
    CHECKF(dir && it_model_load(&m, dir, &err) == IT_OK, "%s", err.msg);
    if (m) check_prompt(m, dir, ids, 6, 0, 5, 1);
    it_model_free(m), m = NULL;
    /* schedules and pipelines that are not implemented */
    variant cos = {1, "squaredcos_cap_v2", 0}, xl = {1, NULL, 1}, lin = {1, "linear", 0};
    dir = build("sd_cos", &cos);
    CHECK(dir && it_model_load(&m, dir, &err) == IT_EUNSUPPORTED && strstr(err.msg, "beta_schedule") && !m);
    dir = build("sd_xl", &xl);
    CHECK(dir && it_model_load(&m, dir, &err) == IT_EUNSUPPORTED && strstr(err.msg, "text_encoder_2") && !m);
    dir = build("sd_lin", &lin);
    CHECKF(dir && it_model_load(&m, dir, &err) == IT_OK, "%s", err.msg);
    it_model_free(m);
}

static void test_sd_seed_key(void)
{
    it_samples *ss = NULL;
    it_err err;
    static const char ok[] = "{\"input_ids\": [1], \"seed\": 18446744073709551615}\n{\"input_ids\": [2]}\n";
    CHECKF(it_samples_parse(&ss, ok, sizeof ok - 1, "s", &err) == IT_OK, "%s", err.msg);
    CHECK(ss && ss->s[0].seed == UINT64_MAX && ss->s[1].seed == 0 && ss->s[0].ntimesteps == 0);
    it_samples_free(ss), ss = NULL;
    static const char *const bad[] = {"{\"input_ids\": [1], \"seed\": -1}", "{\"input_ids\": [1], \"seed\": 1.5}",
                                      "{\"input_ids\": [1], \"seed\": \"7\"}"};
    for (size_t i = 0; i < 3; i++) {
        CHECK(it_samples_parse(&ss, bad[i], strlen(bad[i]), "s", &err) == IT_EFORMAT && strstr(err.msg, "\"seed\""));
        it_samples_free(ss), ss = NULL;
    }
    /* the scheduler's end point, against diffusers' SD 1.5 alphas_cumprod */
    float abar[1000];
    ref_abar(abar, 1000);
    CHECKF(fabs(abar[0] - 0.99915) < 1e-6 && fabs(abar[999] - 0.0046601) < 2e-6, "%.7g %.7g", abar[0], abar[999]);
}

static int run_cmd(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* merge, eval and forward through the command line with the pipeline as --base / --model. */
static void test_sd_cli(void)
{
    if (test_skip_slow()) return;
    const char *dir = build("sd_cli", &SD15), *lora = write_diffusers_lora();
    char file[512], prompts[512];
    snprintf(file, sizeof file, "%s", lora ? lora : "");
    snprintf(prompts, sizeof prompts, "%s", test_tmppath("prompts.jsonl"));
    static const char text[] = "{\"input_ids\": [298, 5, 299], \"seed\": 1}\n{\"input_ids\": [298, 17, 299], \"seed\": 2}\n";
    if (!dir || !lora || test_write_file(prompts, text, sizeof text - 1)) {
        CHECK(0);
        return;
    }
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    char args[2048], cmd[4096];
    snprintf(args, sizeof args, "--base %s --lora %s --lora %s --data %s --data %s --timesteps 2", dir,
             test_data("unet/adapters/lora_r4_a8_qv"), file, prompts, prompts);
    const char *formats[2] = {"lora", "delta"};
    for (int k = 0; k < 2; k++) {
        const char *out = test_tmppath(k ? "sd_out_delta" : "sd_out_lora");
        snprintf(cmd, sizeof cmd, "%s merge %s --out %s --format %s --alpha 0.05 --iters 2 2>/dev/null", bin, args, out,
                 formats[k]);
        CHECKF(run_cmd(cmd) == 0, "%s", cmd);
        char rep[600];
        if (k == 0) { /* the lora output of a pipeline is diffusers' file, read back as any SD LoRA file */
            snprintf(rep, sizeof rep, "%s/pytorch_lora_weights.safetensors", out);
            it_adapter *ad = NULL;
            CHECK(it_adapter_load(&ad, rep, NULL) == IT_OK && ad->format == IT_ADAPTER_DIFFUSERS &&
                  it_adapter_find(ad, "text_encoder", "text_model.encoder.layers.0.self_attn.q_proj") != NULL);
            it_adapter_free(ad);
            snprintf(rep, sizeof rep, "%s/adapter_config.json", out);
            CHECK(access(rep, F_OK) != 0);
        }
        snprintf(rep, sizeof rep, "%s/report.json", out);
        size_t len;
        unsigned char *txt = test_read_file(rep, &len);
        CHECK(txt && strstr((char *)txt, "\"timesteps\": 2"));
        free(txt);
        snprintf(cmd, sizeof cmd, "%s eval %s --merged %s --json > %s 2>/dev/null", bin, args, out,
                 test_tmppath("sd_eval.json"));
        CHECKF(run_cmd(cmd) == 0, "%s", cmd);
        unsigned char *ev = test_read_file(test_tmppath("sd_eval.json"), &len);
        CHECKF(ev && strstr((char *)ev, "\"tasks\": [{\"rel_err\": "), "%s", ev ? (char *)ev : "(none)");
        test_note("eval of the %s output: %s", formats[k], ev ? (char *)ev : "(none)");
        free(ev);
    }
    snprintf(cmd, sizeof cmd, "%s forward --model %s --lora %s --inputs %s --dump %s --timesteps 3 2>/dev/null", bin, dir,
             file, prompts, test_tmppath("sd_dump.safetensors"));
    CHECKF(run_cmd(cmd) == 0, "%s", cmd);
    it_st *st = NULL;
    CHECK(it_st_open(&st, test_tmppath("sd_dump.safetensors"), NULL) == IT_OK);
    const it_tensor *t = it_st_find(st, "sample");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 * 3 * 4 * 8 && t->shape[1] == 8);
    t = it_st_find(st, "inputs.text_encoder.text_model.encoder.layers.0.self_attn.q_proj");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 * CTX && t->shape[1] == HID);
    it_st_close(st);
}

void suite_sd(void)
{
    RUN(test_sd_sites);
    RUN(test_sd_forward);
    RUN(test_sd_merge);
    RUN(test_sd_refusals);
    RUN(test_sd_seed_key);
    RUN(test_sd_cli);
}
