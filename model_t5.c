/* model_t5.c -- T5's forward pass: T5ForConditionalGeneration (and MT5) and T5EncoderModel on one
 * unpadded sample (FACTS.md section 5; transformers modeling_t5.py), in float32 as they run on a
 * CPU, teacher-forced on given decoder ids, and greedy decoding to make those ids.
 *
 *   encoder:  h = shared[ids]; per layer:  x = RMS(h) -> q, k, v -> attention with the relative
 *             position bias (bidirectional buckets, no 1/sqrt(d) scaling) -> o;  h += that
 *                                          x = RMS(h) -> wo(act(wi(x)))  or  wo(act(wi_0(x)) * wi_1(x));  h += that
 *             enc = RMS_final(h)
 *   decoder:  h = shared[dec_ids]; per layer: self-attention (causal buckets, causal mask),
 *             cross-attention (q from the decoder, k and v from enc, no bias), feed-forward;
 *             seq = RMS_final(h), times d_model^-0.5 when the head is tied;  logits = seq lm_head^T
 *
 * Only block 0 of each stack owns a relative_attention_bias table; the bias it makes is reused by
 * every block of the stack (FACTS 5.4).
 *
 * Sites and groups (groups in execution order, which the sweep schedule relies on):
 *   encoder layer l:  q, k, v (4l) | o (4l+1) | wi or wi_0, wi_1 (4l+2) | wo (4l+3)
 *   then every decoder layer's EncDecAttention.k and .v, one group G = 4 L_enc: they all read enc,
 *       so they are computed together once the encoder is done (the same numbers as computing
 *       them layer by layer, as transformers does)
 *   decoder layer l:  self q, k, v (G+1+6l) | self o (+2) | cross q (+3) | cross o (+4) |
 *                     wi or wi_0, wi_1 (+5) | wo (+6)
 *   lm_head last (its w0 is the shared embedding when tied).
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

#define NAME_MAX_LEN 512

/* ============================================================================================ */
/* State                                                                                         */
/* ============================================================================================ */

typedef struct t5_layer {
    const float *attn_norm, *cross_norm, *ff_norm; /* (D) layer_norm.weight of the sublayers */
    size_t q, k, v, o;                              /* self-attention sites */
    size_t cq, ck, cv, co;                          /* cross-attention sites (decoder) */
    size_t wi, wi1, wo;                             /* wi (or wi_0), wi_1 (gated), wo */
} t5_layer;

typedef struct t5 {
    size_t D, F, V, nH, dkv, inner;   /* d_model, d_ff, vocab, heads, d_kv, heads * d_kv */
    size_t Le, Ld;                    /* encoder and decoder layers (Ld = 0: T5EncoderModel) */
    size_t buckets, max_distance;
    float eps;
    int gated, tied;
    char act[IT_NAME_MAX];
    int32_t start_id, eos_id;         /* decoder_start_token_id, eos_token_id */
    const float *shared;              /* (V, D) */
    const float *enc_bias, *dec_bias; /* (buckets, nH) relative_attention_bias tables */
    const float *enc_norm, *dec_norm; /* (D) final_layer_norm */
    t5_layer *enc, *dec;              /* (Le), (Ld) */
    size_t lm_head;
} t5;

static void t5_free(void *p)
{
    t5 *T = p;
    if (!T) return;
    free(T->enc);
    free(T->dec);
    free(T);
}

/* ============================================================================================ */
/* Relative position buckets (FACTS 5.4; T5Attention._relative_position_bucket)                  */
/* ============================================================================================ */

/* The bucket of rel = key - query: bidirectional (encoder) or causal (decoder self-attention). The
 * logarithmic branch in float32 and truncated, as torch computes it, and only taken where the
 * distance is at least max_exact (never log 0). */
size_t it__t5_bucket(long rel, int bidirectional, size_t buckets, size_t max_distance)
{
    size_t n = buckets, base = 0;
    unsigned long a;
    if (bidirectional) {
        n /= 2;
        if (rel > 0) base = n;
        a = rel < 0 ? (unsigned long)-rel : (unsigned long)rel;
    } else {
        a = rel < 0 ? (unsigned long)-rel : 0;
    }
    size_t max_exact = n / 2;
    if (a < max_exact) return base + a;
    float f = logf((float)a / (float)max_exact) / (float)log((double)max_distance / (double)max_exact) *
              (float)(n - max_exact);
    size_t large = max_exact + (size_t)f;
    return base + (large < n - 1 ? large : n - 1);
}

/* bias (nH, nq, nk) = table[bucket(j - i), h] (table (buckets, nH)). */
static void position_bias(float *bias, const float *table, size_t nq, size_t nk, size_t nH, int bidirectional,
                          size_t buckets, size_t max_distance)
{
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < nk; j++) {
            size_t b = it__t5_bucket((long)j - (long)i, bidirectional, buckets, max_distance);
            for (size_t h = 0; h < nH; h++) bias[(h * nq + i) * nk + j] = table[b * nH + h];
        }
}

/* ============================================================================================ */
/* Forward                                                                                       */
/* ============================================================================================ */

/* The working buffers of one stack for n tokens (nk keys in the cross-attention), carved from one
 * allocation. */
typedef struct t5_buf {
    float *h, *x, *y;        /* (n, D) residual stream, a sublayer's normalised input, its output */
    float *q, *k, *v, *ctx;  /* (n, inner) */
    float *a, *b;            /* (n, F) the feed-forward's hidden (a: wi / wi_0, b: wi_1) */
    float *bias;             /* (nH, n, n) the stack's position bias (and causal mask) */
    float *p;                /* (max(n, nk)) one query's attention weights */
    float *mem;
} t5_buf;

static int alloc_bufs(const t5 *T, size_t n, size_t nk, t5_buf *b, it_err *err)
{
    size_t nn, sizes[11];
    if (it__mul_size(n, n, &nn) || it__mul_size(nn, T->nH, &sizes[9]))
        return it__fail(err, IT_ENOMEM, "t5 forward: buffers for %zu tokens overflow", n);
    size_t cols[9] = {T->D, T->D, T->D, T->inner, T->inner, T->inner, T->inner, T->F, T->F};
    for (int i = 0; i < 9; i++)
        if (it__mul_size(n, cols[i], &sizes[i])) return it__fail(err, IT_ENOMEM, "t5 forward: buffers overflow");
    sizes[10] = n > nk ? n : nk;
    float **dst[11] = {&b->h, &b->x, &b->y, &b->q, &b->k, &b->v, &b->ctx, &b->a, &b->b, &b->bias, &b->p};
    size_t off[11], total = 0;
    for (int i = 0; i < 11; i++) {
        off[i] = total;
        if (it__add_size(total, sizes[i] + 1, &total)) return it__fail(err, IT_ENOMEM, "t5 forward: buffers overflow");
    }
    if (!(b->mem = it__malloc_n(total, sizeof *b->mem)))
        return it__fail(err, IT_ENOMEM, "t5 forward: out of memory for %zu tokens", n);
    for (int i = 0; i < 11; i++) *dst[i] = b->mem + off[i];
    return IT_OK;
}

/* Self-attention sublayer: h += o(attention(q, k, v of RMS(h)) with the stack's bias). */
static int self_attn(it_model *m, const t5 *T, const t5_layer *ly, t5_buf *b, size_t n, int causal, it_err *err)
{
    it__rmsnorm(b->x, b->h, ly->attn_norm, n, T->D, T->eps);
    TRY(it__linear(m, ly->q, b->x, n, b->q, err));
    TRY(it__linear(m, ly->k, b->x, n, b->k, err));
    TRY(it__linear(m, ly->v, b->x, n, b->v, err));
    it__attention(b->ctx, b->q, b->k, b->v, n, n, T->nH, T->nH, T->dkv, 1.0f, b->bias, causal, b->p);
    TRY(it__linear(m, ly->o, b->ctx, n, b->y, err));
    it__residual(b->h, b->y, n * T->D);
    return IT_OK;
}

/* Cross-attention sublayer: h += o(attention(q of RMS(h), this layer's k, v of enc)), no bias. */
static int cross_attn(it_model *m, const t5 *T, const t5_layer *ly, t5_buf *b, size_t n, const float *k,
                      const float *v, size_t nk, it_err *err)
{
    it__rmsnorm(b->x, b->h, ly->cross_norm, n, T->D, T->eps);
    TRY(it__linear(m, ly->cq, b->x, n, b->q, err));
    it__attention(b->ctx, b->q, k, v, n, nk, T->nH, T->nH, T->dkv, 1.0f, NULL, 0, b->p);
    TRY(it__linear(m, ly->co, b->ctx, n, b->y, err));
    it__residual(b->h, b->y, n * T->D);
    return IT_OK;
}

/* Feed-forward sublayer: h += wo(act(wi(x))) or wo(act(wi_0(x)) * wi_1(x)), x = RMS(h). */
static int feed_forward(it_model *m, const t5 *T, const t5_layer *ly, t5_buf *b, size_t n, it_err *err)
{
    it__rmsnorm(b->x, b->h, ly->ff_norm, n, T->D, T->eps);
    TRY(it__linear(m, ly->wi, b->x, n, b->a, err));
    if (T->gated) TRY(it__linear(m, ly->wi1, b->x, n, b->b, err));
    it__act_apply(T->act, b->a, n * T->F);
    if (T->gated)
        for (size_t i = 0; i < n * T->F; i++) b->a[i] = b->a[i] * b->b[i];
    TRY(it__linear(m, ly->wo, b->a, n, b->y, err));
    it__residual(b->h, b->y, n * T->D);
    return IT_OK;
}

/* The encoder: enc (n, D) = final_layer_norm of the stack's output. */
static int encode(it_model *m, const t5 *T, const int32_t *ids, size_t n, float *enc, it_err *err)
{
    t5_buf b;
    TRY(alloc_bufs(T, n, n, &b, err));
    it__embed_rows(b.h, T->shared, ids, n, T->D);
    position_bias(b.bias, T->enc_bias, n, n, T->nH, 1, T->buckets, T->max_distance);
    int rc = IT_OK;
    for (size_t l = 0; rc == IT_OK && l < T->Le; l++) {
        rc = self_attn(m, T, &T->enc[l], &b, n, 0, err);
        if (rc == IT_OK) rc = feed_forward(m, T, &T->enc[l], &b, n, err);
    }
    if (rc == IT_OK) it__rmsnorm(enc, b.h, T->enc_norm, n, T->D, T->eps);
    free(b.mem);
    return rc;
}

/* Every decoder layer's cross-attention keys and values of enc (n, D): kv (Ld, 2, n, inner). */
static int cross_kv(it_model *m, const t5 *T, const float *enc, size_t n, float *kv, it_err *err)
{
    size_t per = n * T->inner;
    for (size_t l = 0; l < T->Ld; l++) {
        TRY(it__linear(m, T->dec[l].ck, enc, n, kv + (2 * l) * per, err));
        TRY(it__linear(m, T->dec[l].cv, enc, n, kv + (2 * l + 1) * per, err));
    }
    return IT_OK;
}

/* The decoder on dec (nd) against the cross keys and values kv of nk encoder tokens: logits
 * (nd, V), or NULL (lm_head observed only). */
static int decode(it_model *m, const t5 *T, const int32_t *dec, size_t nd, const float *kv, size_t nk,
                  float *logits, it_err *err)
{
    t5_buf b;
    TRY(alloc_bufs(T, nd, nk, &b, err));
    it__embed_rows(b.h, T->shared, dec, nd, T->D);
    position_bias(b.bias, T->dec_bias, nd, nd, T->nH, 0, T->buckets, T->max_distance);
    size_t per = nk * T->inner;
    int rc = IT_OK;
    for (size_t l = 0; rc == IT_OK && l < T->Ld; l++) {
        const t5_layer *ly = &T->dec[l];
        rc = self_attn(m, T, ly, &b, nd, 1, err);
        if (rc == IT_OK) rc = cross_attn(m, T, ly, &b, nd, kv + 2 * l * per, kv + (2 * l + 1) * per, nk, err);
        if (rc == IT_OK) rc = feed_forward(m, T, ly, &b, nd, err);
    }
    if (rc == IT_OK) {
        it__rmsnorm(b.x, b.h, T->dec_norm, nd, T->D, T->eps);
        if (T->tied) { /* the Mesh-TF rescale, as a float32 multiply by the double d_model^-0.5 */
            float s = (float)pow((double)T->D, -0.5);
            for (size_t i = 0; i < nd * T->D; i++) b.x[i] = b.x[i] * s;
        }
        rc = it__linear(m, T->lm_head, b.x, nd, logits, err);
    }
    free(b.mem);
    return rc;
}

/* The encoder and the cross keys and values: *enc (n, D) and *kv (Ld, 2, n, inner), malloc'd. */
static int encoder_side(it_model *m, const t5 *T, const int32_t *ids, size_t n, float **enc, float **kv,
                        it_err *err)
{
    size_t ne, nkv;
    *enc = *kv = NULL;
    if (it__mul_size(n, T->D, &ne) || it__mul_size(n, T->inner, &nkv) || it__mul_size(nkv, 2 * T->Ld + 1, &nkv) ||
        !(*enc = it__malloc_n(ne, sizeof **enc)) || !(*kv = it__malloc_n(nkv, sizeof **kv)))
        return it__fail(err, IT_ENOMEM, "%s: out of memory for %zu encoder tokens", m->dir, n);
    TRY(encode(m, T, ids, n, *enc, err));
    return cross_kv(m, T, *enc, n, *kv, err);
}

static int t5_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err)
{
    const t5 *T = m->priv;
    TRY(it__check_ids(m, s->ids, s->n, 0, "input_ids", err));
    if (T->Ld) {
        if (!s->dec_ids)
            return it__fail(err, IT_EINVAL,
                            "%s: the sample has no decoder_input_ids (give them, or let merge/eval/forward make them "
                            "by greedy decoding)", m->dir);
        TRY(it__check_ids(m, s->dec_ids, s->ndec, 0, "decoder_input_ids", err));
    }
    float *enc = NULL, *kv = NULL, *logits = NULL, *last = NULL;
    int rc = encoder_side(m, T, s->ids, s->n, &enc, &kv, err);
    if (rc == IT_OK && out) {
        out->logits = T->Ld > 0;
        if (T->Ld) logits = it__output_add(out, "logits", s->ndec, T->V, 1);
        last = it__output_add(out, T->Ld ? "encoder_last_hidden_state" : "last_hidden_state", s->n, T->D, !T->Ld);
        if (!last || (T->Ld && !logits)) rc = it__fail(err, IT_ENOMEM, "%s: out of memory for the outputs", m->dir);
        else memcpy(last, enc, s->n * T->D * sizeof *enc);
    }
    if (rc == IT_OK && T->Ld) rc = decode(m, T, s->dec_ids, s->ndec, kv, s->n, logits, err);
    free(enc);
    free(kv);
    return rc;
}

/* Greedy decoding: the decoder rerun on the growing prefix (no cache; calibration outputs are
 * short), the encoder side computed once. */
static int t5_generate(it_model *m, const int32_t *ids, size_t n, size_t max_new, int32_t **dec, size_t *ndec,
                       it_err *err)
{
    const t5 *T = m->priv;
    TRY(it__check_ids(m, ids, n, 0, "input_ids", err));
    if (T->start_id < 0)
        return it__fail(err, IT_EFORMAT, "%s: config.json has no decoder_start_token_id to start decoding with", m->dir);
    float *enc = NULL, *kv = NULL, *logits = NULL;
    int32_t *d = it__malloc_n(max_new + 1, sizeof *d);
    int rc = d && (logits = it__malloc_n((max_new + 1) * T->V, sizeof *logits)) ? IT_OK
             : it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    if (rc == IT_OK) rc = encoder_side(m, T, ids, n, &enc, &kv, err);
    size_t len = 1;
    if (d) d[0] = T->start_id;
    while (rc == IT_OK && len <= max_new) {
        rc = decode(m, T, d, len, kv, n, logits, err);
        if (rc != IT_OK) break;
        const float *z = logits + (len - 1) * T->V;
        size_t best = 0;
        for (size_t v = 1; v < T->V; v++)
            if (z[v] > z[best]) best = v; /* the first maximum, as torch.argmax */
        if ((int32_t)best == T->eos_id) break;
        d[len++] = (int32_t)best;
    }
    free(enc);
    free(kv);
    free(logits);
    if (rc != IT_OK) {
        free(d);
        return rc;
    }
    *dec = d;
    *ndec = len;
    return IT_OK;
}

static const it__model_ops T5_OPS = {"t5", NULL, t5_run, t5_generate, t5_free};
static const it__model_ops T5_ENCODER_OPS = {"t5", NULL, t5_run, NULL, t5_free};

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

/* A [D] norm weight "<stack>.block.<l>.layer.<i>.layer_norm.weight" (l SIZE_MAX: the stack's final). */
static int norm_weight(it_model *m, const t5 *T, const char *stack, size_t l, int i, const float **out, it_err *err)
{
    char name[NAME_MAX_LEN];
    if (l == SIZE_MAX) snprintf(name, sizeof name, "%s.final_layer_norm.weight", stack);
    else snprintf(name, sizeof name, "%s.block.%zu.layer.%d.layer_norm.weight", stack, l, i);
    int64_t D = (int64_t)T->D;
    return it__model_tensor(m, name, 1, &D, out, err);
}

/* Site "<stack>.block.<l>.layer.<i>.<mod>" [dout, din], no bias (T5 has none). */
static int add_site(it_model *m, const char *stack, size_t l, int i, const char *mod, size_t group, size_t dout,
                    size_t din, size_t *idx, it_err *err)
{
    char name[NAME_MAX_LEN], w[NAME_MAX_LEN + 8];
    snprintf(name, sizeof name, "%s.block.%zu.layer.%d.%s", stack, l, i, mod);
    snprintf(w, sizeof w, "%s.weight", name);
    return it__model_add_site(m, name, group, (int64_t)dout, (int64_t)din, w, NULL, NULL, idx, err);
}

/* A layer's feed-forward sites (sublayer i) in groups g (wi / wi_0, wi_1) and g + 1 (wo). */
static int add_ff(it_model *m, const t5 *T, const char *stack, size_t l, int i, size_t g, t5_layer *ly, it_err *err)
{
    if (T->gated) {
        TRY(add_site(m, stack, l, i, "DenseReluDense.wi_0", g, T->F, T->D, &ly->wi, err));
        TRY(add_site(m, stack, l, i, "DenseReluDense.wi_1", g, T->F, T->D, &ly->wi1, err));
    } else {
        TRY(add_site(m, stack, l, i, "DenseReluDense.wi", g, T->F, T->D, &ly->wi, err));
    }
    return add_site(m, stack, l, i, "DenseReluDense.wo", g + 1, T->D, T->F, &ly->wo, err);
}

/* A stack's self-attention sites (sublayer 0): q, k, v in group g, o in g + 1. */
static int add_self(it_model *m, const t5 *T, const char *stack, size_t l, size_t g, t5_layer *ly, it_err *err)
{
    TRY(add_site(m, stack, l, 0, "SelfAttention.q", g, T->inner, T->D, &ly->q, err));
    TRY(add_site(m, stack, l, 0, "SelfAttention.k", g, T->inner, T->D, &ly->k, err));
    TRY(add_site(m, stack, l, 0, "SelfAttention.v", g, T->inner, T->D, &ly->v, err));
    return add_site(m, stack, l, 0, "SelfAttention.o", g + 1, T->D, T->inner, &ly->o, err);
}

/* The shared embedding under whichever of its names the checkpoint stores (FACTS 5.2). */
static int load_shared(it_model *m, t5 *T, it_err *err)
{
    static const char *const names[] = {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"};
    const int64_t shape[2] = {(int64_t)T->V, (int64_t)T->D};
    for (size_t i = 0; i < 3; i++)
        if (it__model_has(m, names[i])) return it__model_tensor(m, names[i], 2, shape, &T->shared, err);
    return it__model_tensor(m, names[0], 2, shape, &T->shared, err); /* the message names shared.weight */
}

static int load_tables(it_model *m, t5 *T, it_err *err)
{
    const int64_t shape[2] = {(int64_t)T->buckets, (int64_t)T->nH};
    TRY(it__model_tensor(m, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2, shape,
                         &T->enc_bias, err));
    if (T->Ld)
        TRY(it__model_tensor(m, "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2, shape,
                             &T->dec_bias, err));
    return IT_OK;
}

/* The encoder's layers (groups 0 .. 4 Le - 1) and final norm. */
static int load_encoder(it_model *m, t5 *T, it_err *err)
{
    for (size_t l = 0; l < T->Le; l++) {
        t5_layer *ly = &T->enc[l];
        TRY(norm_weight(m, T, "encoder", l, 0, &ly->attn_norm, err));
        TRY(norm_weight(m, T, "encoder", l, 1, &ly->ff_norm, err)); /* the encoder's FF is layer.1 */
        TRY(add_self(m, T, "encoder", l, 4 * l, ly, err));
        TRY(add_ff(m, T, "encoder", l, 1, 4 * l + 2, ly, err));
    }
    return norm_weight(m, T, "encoder", SIZE_MAX, 0, &T->enc_norm, err);
}

/* The cross keys and values (group G), then the decoder's layers, final norm and lm_head. */
static int load_decoder(it_model *m, t5 *T, it_err *err)
{
    size_t G = 4 * T->Le;
    for (size_t l = 0; l < T->Ld; l++) {
        TRY(add_site(m, "decoder", l, 1, "EncDecAttention.k", G, T->inner, T->D, &T->dec[l].ck, err));
        TRY(add_site(m, "decoder", l, 1, "EncDecAttention.v", G, T->inner, T->D, &T->dec[l].cv, err));
    }
    for (size_t l = 0; l < T->Ld; l++) {
        t5_layer *ly = &T->dec[l];
        size_t g = G + 1 + 6 * l;
        TRY(norm_weight(m, T, "decoder", l, 0, &ly->attn_norm, err));
        TRY(norm_weight(m, T, "decoder", l, 1, &ly->cross_norm, err));
        TRY(norm_weight(m, T, "decoder", l, 2, &ly->ff_norm, err));
        TRY(add_self(m, T, "decoder", l, g, ly, err));
        TRY(add_site(m, "decoder", l, 1, "EncDecAttention.q", g + 2, T->inner, T->D, &ly->cq, err));
        TRY(add_site(m, "decoder", l, 1, "EncDecAttention.o", g + 3, T->D, T->inner, &ly->co, err));
        TRY(add_ff(m, T, "decoder", l, 2, g + 4, ly, err));
    }
    TRY(norm_weight(m, T, "decoder", SIZE_MAX, 0, &T->dec_norm, err));
    return it__model_add_site(m, "lm_head", G + 1 + 6 * T->Ld, (int64_t)T->V, (int64_t)T->D,
                              T->tied ? NULL : "lm_head.weight", T->shared, NULL, &T->lm_head, err);
}

/* Sizes and settings from the configuration; the class decides whether there is a decoder. */
static int set_sizes(t5 *T, const it_config *c, const char *cfgpath, it_err *err)
{
    size_t k = strlen(c->class_name);
    int encoder_only = k >= 12 && strcmp(c->class_name + k - 12, "EncoderModel") == 0;
    T->D = (size_t)c->hidden, T->F = (size_t)c->intermediate, T->V = (size_t)c->vocab_size;
    T->nH = (size_t)c->heads, T->dkv = (size_t)c->head_dim, T->inner = T->nH * T->dkv;
    T->Le = (size_t)c->layers, T->Ld = encoder_only ? 0 : (size_t)c->decoder_layers;
    T->buckets = (size_t)c->rel_buckets, T->max_distance = (size_t)c->rel_max_distance;
    T->eps = (float)c->norm_eps, T->gated = c->gated, T->tied = c->tie_word_embeddings;
    T->start_id = (int32_t)c->decoder_start_token_id, T->eos_id = (int32_t)c->eos_token_id;
    snprintf(T->act, sizeof T->act, "%s", c->act);
    if (!it__act_known(T->act))
        return it__fail(err, IT_EUNSUPPORTED, "%s: dense_act_fn \"%s\" is not supported by the t5 forward pass", cfgpath,
                        T->act);
    if (T->buckets < 4 || T->max_distance < T->buckets / 2)
        return it__fail(err, IT_EFORMAT, "%s: relative_attention_num_buckets %zu / max_distance %zu: need at least 4 "
                        "buckets and a distance of at least buckets / 2", cfgpath, T->buckets, T->max_distance);
    if (c->class_name[0] && !encoder_only && !strstr(c->class_name, "ForConditionalGeneration"))
        return it__fail(err, IT_EUNSUPPORTED,
                        "%s: %s is not supported (T5ForConditionalGeneration, T5EncoderModel and their MT5 twins)",
                        cfgpath, c->class_name);
    return IT_OK;
}

int it__t5_load(it_model *m, it_err *err)
{
    void *state = NULL;
    char *cfgpath = NULL;
    TRY(it__model_state(m, &T5_ENCODER_OPS, sizeof(t5), &state, &cfgpath, err));
    t5 *T = state;
    int rc = set_sizes(T, &m->cfg, cfgpath, err);
    if (rc == IT_OK) {
        if (T->Ld) m->ops = &T5_OPS;
        T->enc = calloc(T->Le, sizeof *T->enc);
        T->dec = calloc(T->Ld + 1, sizeof *T->dec);
        if (!T->enc || !T->dec) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    }
    if (rc == IT_OK) rc = load_shared(m, T, err);
    if (rc == IT_OK) rc = load_tables(m, T, err);
    if (rc == IT_OK) rc = load_encoder(m, T, err);
    if (rc == IT_OK && T->Ld) rc = load_decoder(m, T, err);
    free(cfgpath);
    return rc;
}
