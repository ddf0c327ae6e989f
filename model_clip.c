/* model_clip.c -- CLIP's forward pass: CLIPModel, CLIPTextModel, CLIPTextModelWithProjection,
 * CLIPVisionModel and CLIPVisionModelWithProjection (FACTS.md 6; transformers 4.40 modeling_clip.py),
 * in float32 as they run on a CPU.
 *
 *   text:    h = token_embedding[ids] + position_embedding[0..n-1];  layers (causal mask)
 *            last = final_layer_norm(h);  pooled = last[argmax(ids)] (eos_token_id 2) or
 *            last[first position of eos_token_id] (0 when absent)
 *   vision:  h = [class_embedding; patches * patch_embedding] + position_embedding, per image
 *            h = pre_layrnorm(h);  layers (no mask);  last = h;  pooled = post_layernorm(h[CLS])
 *   layer:   x = LN1(h);  q = (x Wq^T + bq) hd^-0.5, k, v;  h += out_proj(attention(q, k, v))
 *            x = LN2(h);  h += fc2(act(fc1(x)))          (each tower its own act and eps)
 *   embeds = pooled projection^T, L2-normalised in a CLIPModel (as CLIPModel.forward returns them)
 *
 * Every nn.Linear goes through it__linear (model.c): the observer, the base product and the
 * installed delta. Sites in execution order (PEFT's module paths), each group numbered after the
 * previous one so that a group's input depends on earlier groups only: per text layer l,
 * text_model.encoder.layers.l.self_attn.{q,k,v}_proj (one group), .self_attn.out_proj, .mlp.fc1,
 * .mlp.fc2 (a group each); text_projection (CLIPModel, CLIPTextModelWithProjection; its own
 * group); the vision layers the same way under vision_model.; visual_projection. The patch
 * embedding (a Conv2d with stride = kernel, no bias) is not a site: im2col rows [N, C*P*P] times
 * the weight viewed [Dv, C*P*P], with it_sgemm.
 *
 * The B images of a sample run together as B * (patches + 1) rows, image-major (CLS, then the
 * patches row-major), through every linear; attention stays within each image.
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

#define NAME_MAX_LEN 512 /* tensor and module names built here */

/* ============================================================================================ */
/* State                                                                                         */
/* ============================================================================================ */

typedef struct clip_layer {
    const float *ln1_w, *ln1_b; /* (H) layer_norm1 */
    const float *ln2_w, *ln2_b; /* (H) layer_norm2 */
    size_t q, k, v, o;          /* site indices of self_attn.{q,k,v,out}_proj */
    size_t fc1, fc2;            /* site indices of mlp.fc1, mlp.fc2 */
} clip_layer;

/* One transformer tower (text or vision). */
typedef struct clip_tower {
    int on;                     /* the model runs this tower */
    size_t H, I, L, nH, hd;     /* hidden, intermediate, layers, heads, head_dim */
    float eps;                  /* layer_norm_eps, as the float32 torch adds */
    float scale;                /* head_dim^-0.5 */
    const char *act;            /* hidden_act (m->cfg's string) */
    clip_layer *layer;          /* (L) */
    const float *pos;           /* position_embedding (positions, H) */
    const float *norm_w, *norm_b; /* (H) text final_layer_norm / vision post_layernorm */
    int proj;                   /* has a projection site */
    size_t proj_site;           /* text_projection / visual_projection */
} clip_tower;

typedef struct clip {
    clip_tower text, vision;
    size_t D;                   /* projection_dim */
    int normalise;              /* CLIPModel: the embeds are L2-normalised */
    const char *cls_name;       /* the class run (messages) */
    const float *tok;           /* text: token_embedding (V, H) */
    const float *cls;           /* vision: class_embedding (H) */
    const float *patch;         /* vision: patch_embedding (H, C*P*P) */
    const float *pre_w, *pre_b; /* vision: pre_layrnorm (H) */
    size_t C, S, P, G, N, CPP;  /* channels, image side, patch side, patches per side, patches, C*P*P */
} clip;

static void clip_free(void *p)
{
    clip *C = p;
    if (!C) return;
    free(C->text.layer);
    free(C->vision.layer);
    free(C);
}

/* ============================================================================================ */
/* Forward                                                                                       */
/* ============================================================================================ */

/* The working buffers of one tower's run on nb sequences of T rows, carved from one allocation. */
typedef struct clip_buf {
    float *h;                   /* (R, H) the residual stream, R = nb * T */
    float *x;                   /* (R, H) a block's normalised input; text: last_hidden_state */
    float *q, *k, *v;           /* (R, H) */
    float *ctx;                 /* (R, H) attention output, out_proj's input */
    float *y;                   /* (R, H) out_proj / fc2 output; vision: the patch embeddings first */
    float *f;                   /* (R, I) fc1 output, fc2's input */
    float *p;                   /* (T) one query's attention weights */
    float *pool;                /* (nb, H) pooled rows */
    float *emb;                 /* (nb, D) projected */
    float *cols;                /* (nb * N, C*P*P) vision: im2col rows; text: none */
} clip_buf;

/* Allocates every buffer of b; ncols im2col rows (0 for text). *mem is the block to free. */
static int alloc_bufs(const it_model *m, const clip *C, const clip_tower *t, size_t nb, size_t T, size_t ncols,
                      clip_buf *b, float **mem, it_err *err)
{
    enum { NB = 12 };
    size_t R, H = t->H;
    float **dst[NB] = {&b->h, &b->x, &b->q, &b->k, &b->v, &b->ctx, &b->y, &b->f, &b->p, &b->pool, &b->emb, &b->cols};
    size_t rows[NB] = {0, 0, 0, 0, 0, 0, 0, 0, T, nb, nb, ncols};
    size_t cols[NB] = {H, H, H, H, H, H, H, t->I, 1, H, C->D, C->CPP};
    size_t off[NB], total = 0, sz;
    if (it__mul_size(nb, T, &R)) return it__fail(err, IT_ENOMEM, "%s: clip forward: %zu x %zu rows overflow", m->dir, nb, T);
    for (int i = 0; i < 8; i++) rows[i] = R;
    for (int i = 0; i < NB; i++) {
        off[i] = total;
        if (it__mul_size(rows[i], cols[i], &sz) || it__add_size(total, sz, &total))
            return it__fail(err, IT_ENOMEM, "%s: clip forward: buffers for %zu rows overflow", m->dir, R);
    }
    if (!(*mem = it__malloc_n(total ? total : 1, sizeof **mem)))
        return it__fail(err, IT_ENOMEM, "%s: clip forward: out of memory for %zu rows", m->dir, R);
    for (int i = 0; i < NB; i++) *dst[i] = *mem + off[i];
    return IT_OK;
}

/* The tower's layers on h (nb sequences of T rows): pre-LN attention (causal for text) and MLP. */
static int encoder(it_model *m, const clip_tower *t, clip_buf *b, size_t nb, size_t T, int causal, it_err *err)
{
    size_t R = nb * T, H = t->H;
    for (size_t l = 0; l < t->L; l++) {
        const clip_layer *ly = &t->layer[l];
        it__layernorm(b->x, b->h, ly->ln1_w, ly->ln1_b, R, H, t->eps);
        TRY(it__linear(m, ly->q, b->x, R, b->q, err));
        TRY(it__linear(m, ly->k, b->x, R, b->k, err));
        TRY(it__linear(m, ly->v, b->x, R, b->v, err));
        for (size_t i = 0; i < R * H; i++) b->q[i] = b->q[i] * t->scale; /* q_proj(x) * scale, bias included */
        for (size_t i = 0; i < nb; i++) {
            size_t o = i * T * H;
            it__attention(b->ctx + o, b->q + o, b->k + o, b->v + o, T, T, t->nH, t->nH, t->hd, 1.0f, NULL, causal,
                          b->p);
        }
        TRY(it__linear(m, ly->o, b->ctx, R, b->y, err));
        it__residual(b->h, b->y, R * H);
        it__layernorm(b->x, b->h, ly->ln2_w, ly->ln2_b, R, H, t->eps);
        TRY(it__linear(m, ly->fc1, b->x, R, b->f, err));
        it__act_apply(t->act, b->f, R * t->I);
        TRY(it__linear(m, ly->fc2, b->f, R, b->y, err));
        it__residual(b->h, b->y, R * H);
    }
    return IT_OK;
}

/* emb (nb, D) = pool projection^T, then in a CLIPModel x / ||x|| row by row (the norm's sum of
 * squares in double, rounded, as torch.norm returns it in float32). No projection: nothing. */
static int project(it_model *m, const clip *C, const clip_tower *t, clip_buf *b, size_t nb, it_err *err)
{
    if (!t->proj) return IT_OK;
    TRY(it__linear(m, t->proj_site, b->pool, nb, b->emb, err));
    for (size_t i = 0; C->normalise && i < nb; i++) {
        float *e = b->emb + i * C->D;
        double ss = 0;
        for (size_t j = 0; j < C->D; j++) ss += (double)e[j] * e[j];
        float nrm = (float)sqrt(ss);
        for (size_t j = 0; j < C->D; j++) e[j] = e[j] / nrm;
    }
    return IT_OK;
}

/* Appends output name (rows, cols) = src to out (when not NULL). */
static int emit(const it_model *m, it_outputs *out, const char *name, const float *src, size_t rows, size_t cols,
                int eval, it_err *err)
{
    if (!out) return IT_OK;
    float *d = it__output_add(out, name, rows, cols, eval);
    if (!d) return it__fail(err, IT_ENOMEM, "%s: out of memory for the output %s", m->dir, name);
    if (rows && cols) memcpy(d, src, rows * cols * sizeof *d);
    return IT_OK;
}

/* The pooled position (FACTS 6.4): the first maximum id when eos_token_id is 2 (legacy configs),
 * else the first position holding eos_token_id, 0 when none does (torch's argmax of all zeros). */
static size_t eos_position(const int32_t *ids, size_t n, int64_t eos)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (eos == 2 && ids[i] > ids[at]) at = i;
        if (eos != 2 && ids[i] == eos) return i;
    }
    return at;
}

static int text_outputs(const it_model *m, const clip *C, const clip_buf *b, size_t n, it_outputs *out, it_err *err)
{
    const clip_tower *t = &C->text;
    if (t->proj) TRY(emit(m, out, "text_embeds", b->emb, 1, C->D, 1, err));
    TRY(emit(m, out, "text_last_hidden_state", b->x, n, t->H, !t->proj, err));
    return emit(m, out, "text_pooler_output", b->pool, 1, t->H, 0, err);
}

/* The text tower on the sample's ids. */
static int run_text(it_model *m, const clip *C, const it_sample *s, it_outputs *out, it_err *err)
{
    const clip_tower *t = &C->text;
    size_t n = s->n, H = t->H;
    TRY(it__check_ids(m, s->ids, n, m->cfg.max_position_embeddings, "input_ids", err));
    clip_buf b;
    float *mem;
    TRY(alloc_bufs(m, C, t, 1, n, 0, &b, &mem, err));
    it__embed_rows(b.h, C->tok, s->ids, n, H);
    it__residual(b.h, t->pos, n * H);
    int rc = encoder(m, t, &b, 1, n, 1, err);
    if (rc == IT_OK) {
        it__layernorm(b.x, b.h, t->norm_w, t->norm_b, n, H, t->eps);
        memcpy(b.pool, b.x + eos_position(s->ids, n, m->cfg.eos_token_id) * H, H * sizeof *b.pool);
        rc = project(m, C, t, &b, 1, err);
    }
    if (rc == IT_OK) rc = text_outputs(m, C, &b, n, out, err);
    free(mem);
    return rc;
}

/* cols (nb * N, C*P*P): image i's patch (gy, gx) is row i * N + gy * G + gx, its column
 * c * P*P + ky * P + kx holding pixel (c, gy * P + ky, gx * P + kx), the order of the Conv2d weight. */
static void im2col(float *cols, const float *px, const clip *C, size_t nb)
{
    size_t S = C->S, P = C->P, G = C->G;
    for (size_t i = 0; i < nb; i++)
        for (size_t gy = 0; gy < G; gy++)
            for (size_t gx = 0; gx < G; gx++) {
                float *row = cols + ((i * G + gy) * G + gx) * C->CPP;
                for (size_t c = 0; c < C->C; c++)
                    for (size_t ky = 0; ky < P; ky++)
                        memcpy(row + (c * P + ky) * P, px + ((i * C->C + c) * S + gy * P + ky) * S + gx * P,
                               P * sizeof *row);
            }
}

/* h (nb * (N+1), H): per image the class embedding then its patch embeddings y (nb * N, H), each
 * plus its position embedding. */
static void vision_embed(float *h, const float *y, const clip *C, size_t nb)
{
    size_t H = C->vision.H, T = C->N + 1;
    const float *pos = C->vision.pos;
    for (size_t i = 0; i < nb; i++) {
        float *hi = h + i * T * H;
        for (size_t j = 0; j < H; j++) hi[j] = C->cls[j] + pos[j];
        for (size_t r = 0; r < C->N; r++)
            for (size_t j = 0; j < H; j++) hi[(r + 1) * H + j] = y[(i * C->N + r) * H + j] + pos[(r + 1) * H + j];
    }
}

static int vision_outputs(const it_model *m, const clip *C, const clip_buf *b, size_t nb, it_outputs *out,
                          it_err *err)
{
    const clip_tower *t = &C->vision;
    if (t->proj) TRY(emit(m, out, "image_embeds", b->emb, nb, C->D, 1, err));
    TRY(emit(m, out, "vision_last_hidden_state", b->h, nb * (C->N + 1), t->H, 0, err));
    return emit(m, out, "vision_pooler_output", b->pool, nb, t->H, !t->proj, err);
}

/* The vision tower on the sample's images, all as one batch. */
static int run_vision(it_model *m, const clip *C, const it_sample *s, it_outputs *out, it_err *err)
{
    const clip_tower *t = &C->vision;
    size_t nb = s->nimages, T = C->N + 1, H = t->H, np;
    if (nb == 0 || s->channels != C->C || s->height != C->S || s->width != C->S)
        return it__fail(err, IT_EINVAL, "%s: pixel_values [%zu, %zu, %zu, %zu] do not fit the model's [B, %zu, %zu, %zu]",
                        m->dir, nb, s->channels, s->height, s->width, C->C, C->S, C->S);
    if (it__mul_size(nb, C->N, &np)) return it__fail(err, IT_ENOMEM, "%s: %zu images overflow", m->dir, nb);
    clip_buf b;
    float *mem;
    TRY(alloc_bufs(m, C, t, nb, T, np, &b, &mem, err));
    im2col(b.cols, s->pixels, C, nb);
    int rc = IT_OK;
    if (it_sgemm(IT_N, IT_T, np, H, C->CPP, 1.0f, b.cols, C->CPP, C->patch, C->CPP, 0.0f, b.y, H) != IT_OK)
        rc = it__fail(err, IT_ENOMEM, "%s: out of memory in the patch embedding", m->dir);
    if (rc == IT_OK) {
        vision_embed(b.h, b.y, C, nb);
        it__layernorm(b.h, b.h, C->pre_w, C->pre_b, nb * T, H, t->eps);
        rc = encoder(m, t, &b, nb, T, 0, err);
    }
    if (rc == IT_OK) {
        for (size_t i = 0; i < nb; i++) it__layernorm(b.pool + i * H, b.h + i * T * H, t->norm_w, t->norm_b, 1, H, t->eps);
        rc = project(m, C, t, &b, nb, err);
    }
    if (rc == IT_OK) rc = vision_outputs(m, C, &b, nb, out, err);
    free(mem);
    return rc;
}

/* it_model_run: the text tower on the sample's ids, the vision tower on its pixels, whichever the
 * model has; at least one of them must apply. */
static int clip_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err)
{
    const clip *C = m->priv;
    int text = C->text.on && s->ids, vision = C->vision.on && s->pixels;
    if (!text && !vision) {
        const char *has = s->ids ? "input_ids only" : s->pixels ? "pixel_values only"
                          : s->text ? "only text (no input_ids)" : "neither input_ids nor pixel_values";
        const char *takes = C->text.on && C->vision.on ? "input_ids or pixel_values"
                            : C->text.on ? "input_ids (a text-only model)" : "pixel_values (a vision-only model)";
        return it__fail(err, IT_EINVAL, "%s: the sample has %s; this %s takes %s", m->dir, has, C->cls_name,
                        takes);
    }
    if (out) out->logits = 0;
    int rc = text ? run_text(m, C, s, out, err) : IT_OK;
    if (rc == IT_OK && vision) rc = run_vision(m, C, s, out, err);
    if (rc == IT__STOP && out) it_outputs_free(out); /* a stopped pass produces nothing, text included */
    return rc;
}

static const it__model_ops CLIP_OPS = {"clip", NULL, clip_run, NULL, clip_free};

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

/* The class decides the towers and projections: CLIPModel both, normalised; the ...Model classes
 * one tower, the ...WithProjection ones with its projection. No architectures: by the config. */
static int read_class(clip *C, const it_config *c, const char *cfgpath, it_err *err)
{
    int text = c->hidden > 0, vision = c->vision_hidden > 0;
    const char *k = c->class_name;
    if (!k[0]) k = text && vision ? "CLIPModel" : text ? "CLIPTextModel" : "CLIPVisionModel";
    int is_text = !strcmp(k, "CLIPTextModel") || !strcmp(k, "CLIPTextModelWithProjection");
    int is_vision = !strcmp(k, "CLIPVisionModel") || !strcmp(k, "CLIPVisionModelWithProjection");
    C->normalise = !strcmp(k, "CLIPModel");
    if (!is_text && !is_vision && !C->normalise)
        return it__fail(err, IT_EUNSUPPORTED,
                        "%s: architecture \"%s\" is not supported by the clip forward pass (CLIPModel, CLIPTextModel, "
                        "CLIPTextModelWithProjection, CLIPVisionModel, CLIPVisionModelWithProjection)", cfgpath, k);
    int need_text = is_text || C->normalise, need_vision = is_vision || C->normalise;
    if ((need_text && !text) || (need_vision && !vision))
        return it__fail(err, IT_EFORMAT, "%s: %s needs a %s tower, which the config does not describe", cfgpath, k,
                        need_text && !text ? "text" : "vision");
    int proj = C->normalise || strstr(k, "WithProjection") != NULL;
    C->cls_name = k;
    C->text.on = need_text;
    C->vision.on = need_vision;
    C->text.proj = need_text && proj;
    C->vision.proj = need_vision && proj;
    C->D = (size_t)c->projection_dim;
    return IT_OK;
}

/* Sizes of a tower; the activation must be one it__act_apply knows. */
static int set_tower(clip_tower *t, int64_t H, int64_t I, int64_t L, int64_t nH, const char *act, double eps,
                     const char *what, const char *cfgpath, it_err *err)
{
    if (!it__act_known(act))
        return it__fail(err, IT_EUNSUPPORTED, "%s: the %s tower's hidden_act \"%s\" is not supported by the clip forward "
                        "pass (relu, gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, silu)", cfgpath, what, act);
    t->H = (size_t)H;
    t->I = (size_t)I;
    t->L = (size_t)L;
    t->nH = (size_t)nH;
    t->hd = t->H / t->nH;
    t->act = act;
    t->eps = (float)eps;
    t->scale = (float)pow((double)t->hd, -0.5);
    return IT_OK;
}

/* The vision geometry: image_size a multiple of patch_size, sizes that fit. */
static int set_geometry(clip *C, const it_config *c, const char *cfgpath, it_err *err)
{
    if (c->image_size % c->patch_size)
        return it__fail(err, IT_EFORMAT, "%s: image_size %" PRId64 " is not a multiple of patch_size %" PRId64, cfgpath,
                        c->image_size, c->patch_size);
    C->C = (size_t)c->num_channels;
    C->S = (size_t)c->image_size;
    C->P = (size_t)c->patch_size;
    C->G = C->S / C->P;
    size_t pp;
    if (it__mul_size(C->G, C->G, &C->N) || it__mul_size(C->P, C->P, &pp) || it__mul_size(C->C, pp, &C->CPP))
        return it__fail(err, IT_EFORMAT, "%s: image_size %" PRId64 " / patch_size %" PRId64 " is too large", cfgpath,
                        c->image_size, c->patch_size);
    return IT_OK;
}

/* A tensor "<pfx><what>" of one dimension [n]; l != SIZE_MAX puts "encoder.layers.<l>." between. */
static int vec(it_model *m, const char *pfx, size_t l, const char *what, size_t n, const float **out, it_err *err)
{
    char name[NAME_MAX_LEN];
    if (l == SIZE_MAX) snprintf(name, sizeof name, "%s%s", pfx, what);
    else snprintf(name, sizeof name, "%sencoder.layers.%zu.%s", pfx, l, what);
    int64_t shape = (int64_t)n;
    return it__model_tensor(m, name, 1, &shape, out, err);
}

/* Adds site "<pfx>encoder.layers.<l>.<mod>" with its weight [dout, din] and bias [dout]. */
static int add_proj(it_model *m, const char *pfx, size_t l, const char *mod, size_t group, size_t dout, size_t din,
                    size_t *idx, it_err *err)
{
    char name[NAME_MAX_LEN], w[NAME_MAX_LEN + 8], b[NAME_MAX_LEN + 8];
    snprintf(name, sizeof name, "%sencoder.layers.%zu.%s", pfx, l, mod);
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(b, sizeof b, "%s.bias", name);
    return it__model_add_site(m, name, group, (int64_t)dout, (int64_t)din, w, NULL, b, idx, err);
}

/* A tower's layers (norms and six sites, four groups each from *group on), its final norm
 * ("final_layer_norm" / "post_layernorm") and its projection site ("text_projection" /
 * "visual_projection", its own group) when it has one. */
static int load_tower(it_model *m, clip *C, clip_tower *t, const char *pfx, const char *norm, const char *proj,
                      size_t *group, it_err *err)
{
    size_t H = t->H, I = t->I;
    if (!(t->layer = calloc(t->L ? t->L : 1, sizeof *t->layer))) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    for (size_t l = 0; l < t->L; l++, *group += 4) {
        clip_layer *ly = &t->layer[l];
        size_t g = *group;
        TRY(vec(m, pfx, l, "layer_norm1.weight", H, &ly->ln1_w, err));
        TRY(vec(m, pfx, l, "layer_norm1.bias", H, &ly->ln1_b, err));
        TRY(vec(m, pfx, l, "layer_norm2.weight", H, &ly->ln2_w, err));
        TRY(vec(m, pfx, l, "layer_norm2.bias", H, &ly->ln2_b, err));
        TRY(add_proj(m, pfx, l, "self_attn.q_proj", g, H, H, &ly->q, err));
        TRY(add_proj(m, pfx, l, "self_attn.k_proj", g, H, H, &ly->k, err));
        TRY(add_proj(m, pfx, l, "self_attn.v_proj", g, H, H, &ly->v, err));
        TRY(add_proj(m, pfx, l, "self_attn.out_proj", g + 1, H, H, &ly->o, err));
        TRY(add_proj(m, pfx, l, "mlp.fc1", g + 2, I, H, &ly->fc1, err));
        TRY(add_proj(m, pfx, l, "mlp.fc2", g + 3, H, I, &ly->fc2, err));
    }
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.weight", norm);
    TRY(vec(m, pfx, SIZE_MAX, name, H, &t->norm_w, err));
    snprintf(name, sizeof name, "%s.bias", norm);
    TRY(vec(m, pfx, SIZE_MAX, name, H, &t->norm_b, err));
    if (!t->proj) return IT_OK;
    snprintf(name, sizeof name, "%s.weight", proj);
    return it__model_add_site(m, proj, (*group)++, (int64_t)C->D, (int64_t)H, name, NULL, NULL, &t->proj_site, err);
}

/* The text tower: embeddings, then load_tower. */
static int load_text(it_model *m, clip *C, size_t *group, it_err *err)
{
    const int64_t H = (int64_t)C->text.H, tshape[2] = {m->cfg.vocab_size, H};
    const int64_t pshape[2] = {m->cfg.max_position_embeddings, H};
    TRY(it__model_tensor(m, "text_model.embeddings.token_embedding.weight", 2, tshape, &C->tok, err));
    TRY(it__model_tensor(m, "text_model.embeddings.position_embedding.weight", 2, pshape, &C->text.pos, err));
    return load_tower(m, C, &C->text, "text_model.", "final_layer_norm", "text_projection", group, err);
}

/* The vision tower: class, patch and position embeddings, pre_layrnorm (sic), then load_tower. */
static int load_vision(it_model *m, clip *C, size_t *group, it_err *err)
{
    const int64_t H = (int64_t)C->vision.H, P = (int64_t)C->P;
    const int64_t wshape[4] = {H, (int64_t)C->C, P, P}, pshape[2] = {(int64_t)C->N + 1, H};
    TRY(vec(m, "vision_model.", SIZE_MAX, "embeddings.class_embedding", C->vision.H, &C->cls, err));
    TRY(it__model_tensor(m, "vision_model.embeddings.patch_embedding.weight", 4, wshape, &C->patch, err));
    TRY(it__model_tensor(m, "vision_model.embeddings.position_embedding.weight", 2, pshape, &C->vision.pos, err));
    TRY(vec(m, "vision_model.", SIZE_MAX, "pre_layrnorm.weight", C->vision.H, &C->pre_w, err));
    TRY(vec(m, "vision_model.", SIZE_MAX, "pre_layrnorm.bias", C->vision.H, &C->pre_b, err));
    return load_tower(m, C, &C->vision, "vision_model.", "post_layernorm", "visual_projection", group, err);
}

/* Checks the config, then the towers' tensors and sites: the text tower's first. */
static int load_all(it_model *m, clip *C, const char *cfgpath, it_err *err)
{
    const it_config *c = &m->cfg;
    size_t group = 0;
    TRY(read_class(C, c, cfgpath, err));
    if (C->text.on)
        TRY(set_tower(&C->text, c->hidden, c->intermediate, c->layers, c->heads, c->act, c->norm_eps, "text", cfgpath,
                      err));
    if (C->vision.on) {
        TRY(set_tower(&C->vision, c->vision_hidden, c->vision_intermediate, c->vision_layers, c->vision_heads,
                      c->vision_act, c->vision_norm_eps, "vision", cfgpath, err));
        TRY(set_geometry(C, c, cfgpath, err));
    }
    if (C->text.on) TRY(load_text(m, C, &group, err));
    return C->vision.on ? load_vision(m, C, &group, err) : IT_OK;
}

int it__clip_load(it_model *m, it_err *err)
{
    void *state = NULL;
    char *cfgpath = NULL;
    TRY(it__model_state(m, &CLIP_OPS, sizeof(clip), &state, &cfgpath, err));
    clip *C = state;
    int rc = load_all(m, C, cfgpath, err);
    free(cfgpath);
    return rc;
}
