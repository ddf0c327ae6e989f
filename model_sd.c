/* model_sd.c -- a diffusers Stable Diffusion pipeline folder (SD 1.x / 2.x: model_index.json with
 * unet/ and text_encoder/ beside scheduler/ and tokenizer/) as one model whose sites are those of
 * its text encoder (model_clip.c) and of its UNet (model_unet.c), so that Stable Diffusion LoRAs
 * can be merged with prompts as calibration data (FACTS.md 3, 6.4, 7.4).
 *
 * The composite: its private state holds the two sub-models, each loaded with it_model_load. Its
 * site table mirrors theirs under the names diffusers' LoRA files use, "text_encoder.<path>" then
 * "unet.<path>", sharing their W0 and bias; groups: the text encoder's first, then the UNet's moved
 * past them (the UNet's group 0, every cross-attention to_k / to_v, reads the text encoder's output,
 * so the sweep schedule must solve it after the text groups). Before each run the composite's
 * installed deltas are copied into the sub-models and each sub-model's observer forwards to the
 * composite's with the site index moved by the sub-model's offset; a stop (the observer's 1) ends
 * the sub-model's pass and the composite's. The composite has no checkpoint of its own:
 * it_model_weights gives NULL; it_model_fit_adapter (below) fits adapters to the two parts.
 *
 * A prompt sample {"input_ids": [...], "seed": S} runs as training would see it (DDPM forward
 * process, diffusers' train_text_to_image.py), K = the sample's ntimesteps (0: 4; the command
 * line's --timesteps) times:
 *   ids   padded to the text encoder's max_position_embeddings (77) with the tokenizer's pad id
 *         (tokenizer/special_tokens_map.json, else tokenizer_config.json, "pad_token"; its id from
 *         tokenizer/vocab.json, else tokenizer.json's added_tokens / model.vocab); longer refused
 *   ctx   = CLIPTextModel(ids).last_hidden_state [77, d], no attention mask (the pipeline passes none)
 *   per k = 0..K-1, from one splitmix64 stream seeded with S:
 *         t_k uniform in [0, num_train_timesteps) (one draw, rejection against modulo bias);
 *         x0 then eps, each [C, H, W] = [in_channels, sample_size, sample_size] of N(0, 1), each value
 *         Box-Muller on two draws: sqrt(-2 ln u1) cos(2 pi u2) in double, u1 in (0, 1], u2 in [0, 1)
 *         (53-bit), rounded to float;
 *         x_t = sqrt(abar[t]) x0 + sqrt(1 - abar[t]) eps in float32 (DDPMScheduler.add_noise)
 *   out   = UNet(x_t [K, C, H, W], t [K], ctx repeated [K, 77, d]).sample  -> "sample" (eval output)
 * x0 stands in for an image's VAE latent times the scaling factor, which has about unit variance;
 * no image is needed. abar = cumprod(1 - beta) from scheduler/scheduler_config.json as diffusers
 * builds it: "scaled_linear" beta = linspace(sqrt(beta_start), sqrt(beta_end), T)^2, "linear" beta =
 * linspace(beta_start, beta_end, T), both in float32 (linspace as torch's scalar kernel: start + i
 * step below T/2, end - (T-1-i) step above), the product accumulated in double and rounded at each
 * step (torch's CPU cumprod); other schedules and trained_betas are refused. The numbers depend on
 * the seed only (not on the thread count). prediction_type is not read: what the sites see does
 * not depend on it. A sample with the UNet's raw tensors (sample, timestep, encoder_hidden_states)
 * runs the UNet alone.
 */
#include "model_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

#define JSON_MAX_BYTES ((size_t)64 << 20) /* tokenizer.json is a few MiB */
#define DEFAULT_TIMESTEPS 4
#define TOKEN_MAX 256                     /* a pad token's text */

/* ============================================================================================ */
/* State                                                                                         */
/* ============================================================================================ */

/* A sub-model's observer: the composite's, with site indices moved by off. */
typedef struct relay {
    it_model *m;                /* the composite */
    size_t off;                 /* the sub-model's first composite site */
} relay;

typedef struct sd {
    it_model *te, *unet;        /* text_encoder/ (CLIPTextModel), unet/ (UNet2DConditionModel) */
    size_t nte;                 /* composite sites [0, nte) are the text encoder's */
    relay rte, runet;
    int64_t pad_id;             /* the tokenizer's pad id, or -1: none found */
    size_t T;                   /* num_train_timesteps */
    float *abar;                /* (T) alphas_cumprod */
} sd;

static void sd_free(void *p)
{
    sd *P = p;
    if (!P) return;
    it_model_free(P->te);
    it_model_free(P->unet);
    free(P->abar);
    free(P);
}

/* ============================================================================================ */
/* Running                                                                                       */
/* ============================================================================================ */

static int relay_obs(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    const relay *r = ctx;
    return r->m->obs ? r->m->obs(r->m->obs_ctx, site + r->off, x, nrows, d_in) : 0;
}

/* The composite's deltas and observer into the sub-models. */
static void connect_parts(it_model *m, sd *P)
{
    for (size_t i = 0; i < m->nsites; i++) {
        if (i < P->nte) it_model_set_delta(P->te, i, m->delta[i]);
        else it_model_set_delta(P->unet, i - P->nte, m->delta[i]);
    }
    it_model_set_observer(P->te, m->obs ? relay_obs : NULL, &P->rte);
    it_model_set_observer(P->unet, m->obs ? relay_obs : NULL, &P->runet);
}

/* A sub-model's run that keeps IT__STOP (it_model_run would turn it into IT_OK). */
static int sub_run(it_model *sub, const it_sample *s, it_outputs *out, it_err *err)
{
    if (out) memset(out, 0, sizeof *out);
    int rc = sub->ops->run(sub, s, out, err);
    if (rc != IT_OK && out) it_outputs_free(out);
    return rc;
}

/* A uniform draw from [0, n), n >= 1, exact by rejection (as data.c's). */
static uint64_t draw_below(uint64_t *state, uint64_t n)
{
    uint64_t reject = (0 - n) % n, r;
    do r = it__splitmix64(state);
    while (r < reject);
    return r % n;
}

/* One N(0, 1) value: Box-Muller's cosine branch on two draws. */
static float normal(uint64_t *state)
{
    double u1 = ((double)(it__splitmix64(state) >> 11) + 1.0) * 0x1p-53; /* (0, 1] */
    double u2 = (double)(it__splitmix64(state) >> 11) * 0x1p-53;         /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* lat (K, n) noisy latents and ts (K) timesteps of seed, n = C * H * W (header comment). */
static void noisy_latents(const sd *P, uint64_t seed, size_t K, size_t n, float *lat, float *ts)
{
    uint64_t st = seed;
    for (size_t k = 0; k < K; k++) {
        size_t t = (size_t)draw_below(&st, P->T);
        float ab = P->abar[t], sa = sqrtf(ab), sb = sqrtf(1.0f - ab);
        float *x = lat + k * n;
        ts[k] = (float)t;
        for (size_t i = 0; i < n; i++) x[i] = normal(&st);
        for (size_t i = 0; i < n; i++) x[i] = sa * x[i] + sb * normal(&st);
    }
}

/* ids (L) = the sample's ids padded with the pad id. */
static int pad_ids(const it_model *m, const sd *P, const it_sample *s, int32_t *ids, size_t L, it_err *err)
{
    if (s->n > L)
        return it__fail(err, IT_EINVAL, "%s: input_ids: %zu tokens, the text encoder takes at most %zu", m->dir, s->n, L);
    if (s->n < L && P->pad_id < 0)
        return it__fail(err, IT_EINVAL, "%s: input_ids: %zu tokens and no pad token id was found (tokenizer/"
                        "special_tokens_map.json or tokenizer_config.json pad_token, with vocab.json or "
                        "tokenizer.json); give input_ids already padded to %zu", m->dir, s->n, L);
    memcpy(ids, s->ids, s->n * sizeof *ids);
    for (size_t i = s->n; i < L; i++) ids[i] = (int32_t)P->pad_id;
    return IT_OK;
}

/* The UNet on the sample's K noisy latents with the context ctx (nctx, d). */
static int run_unet(const it_model *m, sd *P, const it_sample *s, const float *ctx, size_t nctx, size_t d,
                    it_outputs *out, it_err *err)
{
    const it_config *uc = &P->unet->cfg;
    size_t K = s->ntimesteps ? s->ntimesteps : DEFAULT_TIMESTEPS, S = (size_t)uc->sample_size;
    size_t C = (size_t)uc->in_channels, n = C * S * S, nl, nc;
    if (it__mul_size(K, n, &nl) || it__mul_size(K, nctx * d, &nc))
        return it__fail(err, IT_ENOMEM, "%s: %zu timesteps overflow", m->dir, K);
    it_sample u = {0};
    u.latents = it__malloc_n(nl, sizeof *u.latents);
    u.timesteps = it__malloc_n(K, sizeof *u.timesteps);
    u.context = it__malloc_n(nc, sizeof *u.context);
    int rc = u.latents && u.timesteps && u.context ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    if (rc == IT_OK) {
        noisy_latents(P, s->seed, K, n, u.latents, u.timesteps);
        for (size_t k = 0; k < K; k++) memcpy(u.context + k * nctx * d, ctx, nctx * d * sizeof *ctx);
        u.nlatents = K, u.lat_c = C, u.lat_h = u.lat_w = S, u.nctx = nctx, u.dctx = d;
        rc = sub_run(P->unet, &u, out, err);
    }
    free(u.latents), free(u.timesteps), free(u.context);
    return rc;
}

/* A prompt: the text encoder on the padded ids, then the UNet on the noisy latents. */
static int run_prompt(it_model *m, sd *P, const it_sample *s, it_outputs *out, it_err *err)
{
    size_t L = (size_t)P->te->cfg.max_position_embeddings;
    int32_t *ids = it__malloc_n(L, sizeof *ids);
    if (!ids) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    it_sample ts = {0};
    it_outputs to;
    ts.ids = ids, ts.n = L;
    int rc = pad_ids(m, P, s, ids, L, err);
    if (rc == IT_OK) rc = sub_run(P->te, &ts, &to, err);
    free(ids);
    if (rc != IT_OK) return rc;
    const it_output *h = NULL;
    for (size_t i = 0; i < to.n; i++)
        if (!strcmp(to.o[i].name, "text_last_hidden_state")) h = &to.o[i];
    rc = h ? run_unet(m, P, s, h->data, h->rows, h->cols, out, err)
           : it__fail(err, IT_EINVAL, "%s: the text encoder gave no last_hidden_state", m->dir);
    it_outputs_free(&to);
    return rc;
}

static int sd_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err)
{
    sd *P = m->priv;
    connect_parts(m, P);
    if (s->latents) return sub_run(P->unet, s, out, err); /* the UNet's raw inputs */
    if (!s->ids)
        return it__fail(err, IT_EINVAL, "%s: the sample has %s; a pipeline takes a prompt's input_ids (and a seed), or "
                        "the UNet's sample, timestep and encoder_hidden_states", m->dir,
                        s->text ? "only text (no input_ids)" : "neither input_ids nor UNet tensors");
    return run_prompt(m, P, s, out, err);
}

static const it__model_ops SD_OPS = {"stable-diffusion", NULL, sd_run, NULL, sd_free};

/* ============================================================================================ */
/* Loading: JSON files of the pipeline folder                                                    */
/* ============================================================================================ */

/* dir/rel parsed (root an object) into *doc; *path malloc'd for messages. optional: an absent file
 * leaves *doc NULL. */
static int read_json(const char *dir, const char *rel, int optional, it_json_doc **doc, char **path, it_err *err)
{
    char *text = NULL;
    size_t len = 0;
    *doc = NULL;
    if (!(*path = it__path_join(dir, rel))) return it__fail(err, IT_ENOMEM, "out of memory");
    if (optional && !it__exists(*path)) return IT_OK;
    int rc = it__read_file(*path, JSON_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK && (rc = it_json_parse(doc, text, len, IT_JSON_NODUP, err)) != IT_OK) it__err_prefix(err, *path);
    free(text);
    if (rc == IT_OK && it_json_root(*doc)->type != IT_JSON_OBJ)
        rc = it__fail(err, IT_EFORMAT, "%s: expected a JSON object at the top level", *path);
    return rc;
}

static int is_str(const it_json *v, const char *s)
{
    return v && v->type == IT_JSON_STR && v->len == strlen(s) && !memcmp(v->s, s, v->len);
}

/* A component entry of model_index.json ["library", "Class"]: 1 when it names class (NULL: any). */
static int component_is(const it_json *root, const char *key, const char *cls)
{
    const it_json *v = it_json_get(root, key);
    if (!v || v->type != IT_JSON_ARR || v->n != 2 || v->items[1].type == IT_JSON_NULL) return 0;
    return !cls || is_str(&v->items[1], cls);
}

/* model_index.json: a ...Pipeline class whose unet is a UNet2DConditionModel and text_encoder a
 * CLIPTextModel, and no second text encoder, transformer or prior (SDXL, SD3, unCLIP ...). */
static int read_index(it_model *m, it_err *err)
{
    it_json_doc *doc;
    char *path;
    int rc = read_json(m->dir, "model_index.json", 0, &doc, &path, err);
    const it_json *root = rc == IT_OK ? it_json_root(doc) : NULL, *cls = it_json_get(root, "_class_name");
    if (rc == IT_OK && (!cls || cls->type != IT_JSON_STR || cls->len < 8 || strcmp(cls->s + cls->len - 8, "Pipeline")))
        rc = it__fail(err, IT_EFORMAT, "%s: _class_name: expected a diffusers pipeline class name", path);
    static const char *const extra[] = {"text_encoder_2", "text_encoder_3", "transformer", "prior", "image_encoder"};
    for (size_t i = 0; rc == IT_OK && i < sizeof extra / sizeof extra[0]; i++)
        if (component_is(root, extra[i], NULL))
            rc = it__fail(err, IT_EUNSUPPORTED, "%s: %s has a %s: only Stable Diffusion 1.x / 2.x pipelines (one unet, "
                          "one text_encoder) are supported", path, cls->s, extra[i]);
    if (rc == IT_OK && (!component_is(root, "unet", "UNet2DConditionModel") ||
                        !component_is(root, "text_encoder", "CLIPTextModel")))
        rc = it__fail(err, IT_EUNSUPPORTED, "%s: %s: expected \"unet\": [\"diffusers\", \"UNet2DConditionModel\"] and "
                      "\"text_encoder\": [\"transformers\", \"CLIPTextModel\"]", path, cls->s);
    if (rc == IT_OK) {
        memset(m->cfg.class_name, 0, sizeof m->cfg.class_name);
        memcpy(m->cfg.class_name, cls->s, cls->len < IT_NAME_MAX - 1 ? cls->len : IT_NAME_MAX - 1);
    }
    if (rc == IT_OK) m->wpath = path;
    else free(path);
    it_json_free(doc);
    return rc;
}

/* A positive number of key (def when absent), as *out. */
static int sched_num(const it_json *root, const char *key, double def, const char *path, double *out, it_err *err)
{
    const it_json *v = it_json_get(root, key);
    *out = def;
    if (!v) return IT_OK;
    if ((v->type != IT_JSON_INT && v->type != IT_JSON_NUM) || !(v->d > 0) || !isfinite(v->d))
        return it__fail(err, IT_EFORMAT, "%s: %s: expected a positive number", path, key);
    *out = v->d;
    return IT_OK;
}

/* beta [T] float32 as torch.linspace(a, b, T) computes it (scalar kernel), squared when sq. */
static void linspace_f32(float *beta, size_t T, double a, double b, int sq)
{
    float fa = (float)a, fb = (float)b, step = T > 1 ? (fb - fa) / (float)(T - 1) : 0.0f;
    for (size_t i = 0; i < T; i++) {
        float v = i < T / 2 ? fa + step * (float)i : fb - step * (float)(T - 1 - i);
        beta[i] = sq ? v * v : v;
    }
}

/* scheduler/scheduler_config.json -> P->T, P->abar (the header comment's rule). */
static int read_scheduler(const it_model *m, sd *P, it_err *err)
{
    it_json_doc *doc;
    char *path;
    double T = 0, b0 = 0, b1 = 0;
    int rc = read_json(m->dir, "scheduler/scheduler_config.json", 0, &doc, &path, err);
    const it_json *root = rc == IT_OK ? it_json_root(doc) : NULL, *sched = it_json_get(root, "beta_schedule");
    const it_json *tb = it_json_get(root, "trained_betas");
    if (rc == IT_OK) rc = sched_num(root, "num_train_timesteps", 1000, path, &T, err);
    if (rc == IT_OK) rc = sched_num(root, "beta_start", 0.0001, path, &b0, err);
    if (rc == IT_OK) rc = sched_num(root, "beta_end", 0.02, path, &b1, err);
    int scaled = is_str(sched, "scaled_linear");
    if (rc == IT_OK && (T != floor(T) || T > 1e6 || b0 >= 1 || b1 >= 1))
        rc = it__fail(err, IT_EFORMAT, "%s: num_train_timesteps %g, beta_start %g, beta_end %g: expected an integer "
                      "count and betas below 1", path, T, b0, b1);
    if (rc == IT_OK && tb && tb->type != IT_JSON_NULL)
        rc = it__fail(err, IT_EUNSUPPORTED, "%s: trained_betas: not supported (a beta_schedule is)", path);
    if (rc == IT_OK && sched && !scaled && !is_str(sched, "linear"))
        rc = it__fail(err, IT_EUNSUPPORTED, "%s: beta_schedule \"%s\": not supported (\"scaled_linear\" or \"linear\")",
                      path, sched->type == IT_JSON_STR ? sched->s : "?");
    if (rc == IT_OK) {
        P->T = (size_t)T;
        if (!(P->abar = it__malloc_n(P->T, sizeof *P->abar))) rc = it__fail(err, IT_ENOMEM, "out of memory");
    }
    if (rc == IT_OK) {
        linspace_f32(P->abar, P->T, scaled ? sqrt(b0) : b0, scaled ? sqrt(b1) : b1, scaled);
        double prod = 1.0;
        for (size_t t = 0; t < P->T; t++) P->abar[t] = (float)(prod *= (double)(1.0f - P->abar[t]));
    }
    it_json_free(doc);
    free(path);
    return rc;
}

/* pad_token of a tokenizer file's root (a string or {"content": ...}) into tok; 0 when none. */
static int pad_text(const it_json *root, char tok[TOKEN_MAX])
{
    const it_json *v = it_json_get(root, "pad_token");
    if (v && v->type == IT_JSON_OBJ) v = it_json_get(v, "content");
    if (!v || v->type != IT_JSON_STR || v->len == 0 || v->len >= TOKEN_MAX || strlen(v->s) != v->len) return 0;
    memcpy(tok, v->s, v->len + 1);
    return 1;
}

/* The id of tok in a vocabulary object {token: id}, or -1. */
static int64_t vocab_id(const it_json *vocab, const char *tok)
{
    const it_json *v = vocab && vocab->type == IT_JSON_OBJ ? it_json_get(vocab, tok) : NULL;
    return v && v->type == IT_JSON_INT && v->i_ok && v->i >= 0 && v->i <= INT32_MAX ? v->i : -1;
}

/* tokenizer.json: added_tokens [{"id", "content"}], then model.vocab. */
static int64_t tokenizer_json_id(const it_json *root, const char *tok)
{
    const it_json *added = it_json_get(root, "added_tokens");
    for (size_t i = 0; added && added->type == IT_JSON_ARR && i < added->n; i++)
        if (is_str(it_json_get(&added->items[i], "content"), tok)) return vocab_id(&added->items[i], "id");
    return vocab_id(it_json_get(it_json_get(root, "model"), "vocab"), tok);
}

/* The pad id: the first file that has each piece wins; P->pad_id -1 when none. */
static int read_pad(const it_model *m, sd *P, it_err *err)
{
    static const char *const files[] = {"tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
                                        "tokenizer/vocab.json", "tokenizer/tokenizer.json"};
    char tok[TOKEN_MAX];
    int have = 0, rc = IT_OK;
    P->pad_id = -1;
    for (size_t i = 0; rc == IT_OK && i < 4 && P->pad_id < 0; i++) {
        it_json_doc *doc;
        char *path;
        if ((i == 1 && have) || (i >= 2 && !have)) continue;
        rc = read_json(m->dir, files[i], 1, &doc, &path, err);
        if (rc == IT_OK && doc && i < 2) have = have || pad_text(it_json_root(doc), tok);
        if (rc == IT_OK && doc && i >= 2)
            P->pad_id = i == 2 ? vocab_id(it_json_root(doc), tok) : tokenizer_json_id(it_json_root(doc), tok);
        if (rc == IT_OK && P->pad_id >= P->te->cfg.vocab_size)
            rc = it__fail(err, IT_EFORMAT, "%s: pad token \"%s\" has id %" PRId64 ", outside the text encoder's "
                          "vocabulary of %" PRId64, path, tok, P->pad_id, P->te->cfg.vocab_size);
        it_json_free(doc);
        free(path);
    }
    return rc;
}

/* ============================================================================================ */
/* Loading: the parts and the site table                                                         */
/* ============================================================================================ */

/* dir/sub loaded as a model of the given architecture. */
static int load_part(const it_model *m, const char *sub, it_arch arch, it_model **out, it_err *err)
{
    char *dir = it__path_join(m->dir, sub);
    if (!dir) return it__fail(err, IT_ENOMEM, "out of memory");
    int rc = it_model_load(out, dir, err);
    if (rc == IT_OK && (*out)->cfg.arch != arch)
        rc = it__fail(err, IT_EFORMAT, "%s: expected a %s model", dir, arch == IT_ARCH_UNET ? "UNet2DConditionModel"
                                                                                          : "CLIPTextModel");
    free(dir);
    return rc;
}

/* What the pipeline's forward needs of the parts to fit together. */
static int check_parts(const it_model *m, const sd *P, it_err *err)
{
    const it_config *t = &P->te->cfg, *u = &P->unet->cfg;
    if (t->vision_hidden || !t->hidden || (t->class_name[0] && strcmp(t->class_name, "CLIPTextModel")))
        return it__fail(err, IT_EUNSUPPORTED, "%s/text_encoder: %s: expected a CLIPTextModel", m->dir, t->class_name);
    if (u->cross_attention_dim != t->hidden)
        return it__fail(err, IT_EFORMAT, "%s: unet cross_attention_dim %" PRId64 " but text_encoder hidden_size %" PRId64,
                        m->dir, u->cross_attention_dim, t->hidden);
    if (!u->sample_size)
        return it__fail(err, IT_EFORMAT, "%s/unet/config.json: sample_size: needed for the calibration latents", m->dir);
    if (u->in_channels != u->out_channels)
        return it__fail(err, IT_EUNSUPPORTED, "%s/unet: in_channels %" PRId64 " != out_channels %" PRId64 " (an "
                        "inpainting or depth UNet, whose extra channels are conditioning): not supported", m->dir,
                        u->in_channels, u->out_channels);
    return IT_OK;
}

/* The sub-model's sites as "<prefix>.<name>", their groups moved by goff. */
static int mirror_sites(it_model *m, const it_model *sub, const char *prefix, size_t goff, it_err *err)
{
    for (size_t i = 0; i < sub->nsites; i++) {
        const it_model_site *s = &sub->sites[i];
        size_t len = strlen(prefix) + strlen(s->name) + 2, idx;
        char *name = it__malloc_n(len, 1);
        if (!name) return it__fail(err, IT_ENOMEM, "out of memory");
        snprintf(name, len, "%s.%s", prefix, s->name);
        int rc = it__model_add_site(m, name, s->group + goff, s->d_out, s->d_in, NULL, s->w0, NULL, &idx, err);
        free(name);
        TRY(rc);
        m->sites[idx].bias = s->bias;
    }
    return IT_OK;
}

int it__sd_load(it_model *m, it_err *err)
{
    void *state = NULL;
    TRY(it__model_state(m, &SD_OPS, sizeof(sd), &state, NULL, err));
    sd *P = state;
    TRY(read_index(m, err));
    TRY(load_part(m, "text_encoder", IT_ARCH_CLIP, &P->te, err));
    TRY(load_part(m, "unet", IT_ARCH_UNET, &P->unet, err));
    TRY(check_parts(m, P, err));
    TRY(read_scheduler(m, P, err));
    TRY(read_pad(m, P, err));
    char cls[IT_NAME_MAX];
    memcpy(cls, m->cfg.class_name, sizeof cls);
    m->cfg = P->unet->cfg; /* the sizes of the UNet, the pipeline's name */
    memcpy(m->cfg.class_name, cls, sizeof cls);
    snprintf(m->cfg.model_type, sizeof m->cfg.model_type, "stable-diffusion");
    P->nte = P->te->nsites;
    P->rte = (relay){m, 0};
    P->runet = (relay){m, P->nte};
    TRY(mirror_sites(m, P->te, "text_encoder", 0, err));
    return mirror_sites(m, P->unet, "unet", P->te->ngroups, err);
}

/* ============================================================================================ */
/* Fitting adapters                                                                              */
/* ============================================================================================ */

static void paths_free(char **p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) free(p[i]);
    free(p);
}

/* The module paths of a checkpoint: its tensor names ending in ".weight", without it. */
static int module_paths(const it_st *st, char ***out, size_t *n, it_err *err)
{
    size_t total = it_st_count(st), k = 0;
    char **names = it__calloc(total + 1, sizeof *names);
    if (!names) return it__fail(err, IT_ENOMEM, "out of memory");
    for (size_t i = 0; i < total; i++) {
        const char *t = it_st_tensor(st, i)->name;
        size_t len = strlen(t);
        if (len <= 7 || strcmp(t + len - 7, ".weight")) continue;
        if (!(names[k++] = it__strndup(t, len - 7))) {
            paths_free(names, k);
            return it__fail(err, IT_ENOMEM, "out of memory");
        }
    }
    *out = names, *n = k;
    return IT_OK;
}

/* Resolves the kohya names of component against the part's module paths. */
static int resolve_part(it_adapter *ad, const char *component, const it_model *part, it_err *err)
{
    char **names;
    size_t k;
    TRY(module_paths(it_model_weights(part), &names, &k, err));
    int rc = it_adapter_resolve(ad, component, (const char *const *)names, k, err);
    paths_free(names, k);
    return rc;
}

static int cmp_name(const void *x, const void *y)
{
    return strcmp(((const it_lora_module *)x)->name, ((const it_lora_module *)y)->name);
}

/* The composite name of a module ("" when it is dropped): "<component>.<name>" for the unet and
 * text_encoder parts of an SD file, the name of a plain module that already starts with one of
 * those prefixes, else "unet.<name>" (a PEFT folder with a pipeline targets the UNet). */
static char *pipeline_name(const it_lora_module *mod)
{
    const char *c = mod->component, *n = mod->name;
    if (c[0] && strcmp(c, "unet") && strcmp(c, "text_encoder")) return it__strdup("");
    if (!c[0] && (!strncmp(n, "unet.", 5) || !strncmp(n, "text_encoder.", 13))) return it__strdup(n);
    size_t len = strlen(n) + 14;
    char *s = it__malloc_n(len, 1);
    if (s) snprintf(s, len, "%s.%s", c[0] ? c : "unet", n);
    return s;
}

/* Renames every module to its composite name, drops the rest (with a note), sorts. */
static int rename_modules(it_adapter *ad, it_err *err)
{
    size_t n0 = ad->n;
    char **names = it__calloc(n0 + 1, sizeof *names);
    char **w = realloc(ad->warn, (ad->nwarn + 1) * sizeof *w);
    int rc = names && w ? IT_OK : it__fail(err, IT_ENOMEM, "out of memory");
    if (w) ad->warn = w;
    for (size_t i = 0; rc == IT_OK && i < ad->n; i++)
        if (!(names[i] = pipeline_name(&ad->mods[i]))) rc = it__fail(err, IT_ENOMEM, "out of memory");
    size_t kept = 0, dropped = 0;
    for (size_t i = 0; rc == IT_OK && i < ad->n; i++) { /* commit */
        it_lora_module *mod = &ad->mods[i];
        free(mod->name);
        mod->name = names[i], names[i] = NULL;
        if (!mod->name[0]) {
            free(mod->name), free(mod->A), free(mod->B);
            dropped++;
            continue;
        }
        mod->component[0] = 0;
        ad->mods[kept++] = *mod;
    }
    if (rc == IT_OK) ad->n = kept;
    paths_free(names, n0); /* what was not moved into the modules */
    if (rc != IT_OK) return rc;
    qsort(ad->mods, ad->n, sizeof *ad->mods, cmp_name);
    for (size_t i = 1; i < ad->n; i++)
        if (!strcmp(ad->mods[i - 1].name, ad->mods[i].name))
            return it__fail(err, IT_EFORMAT, "%s: module %s is given twice (with and without its component prefix?)",
                            ad->path, ad->mods[i].name);
    if (!dropped) return IT_OK;
    char note[IT_ERR_MAX];
    snprintf(note, sizeof note, "%s: %zu module%s of other components (text_encoder_2) left out: the pipeline has unet "
             "and text_encoder", ad->path, dropped, dropped == 1 ? "" : "s");
    if (!(ad->warn[ad->nwarn] = it__strdup(note))) return it__fail(err, IT_ENOMEM, "out of memory");
    ad->nwarn++;
    return IT_OK;
}

int it_model_fit_adapter(const it_model *m, it_adapter *ad, it_err *err)
{
    if (!m || !ad) return it__fail(err, IT_EINVAL, "it_model_fit_adapter: no model or no adapter");
    if (m->ops != &SD_OPS) {
        char **names;
        size_t k;
        TRY(module_paths(it_model_weights(m), &names, &k, err));
        int rc = it_adapter_select(ad, it_model_component(m), (const char *const *)names, k, err);
        paths_free(names, k);
        return rc;
    }
    const sd *P = m->priv;
    TRY(resolve_part(ad, "unet", P->unet, err));
    TRY(resolve_part(ad, "text_encoder", P->te, err));
    return rename_modules(ad, err);
}
