/* model_llama.c -- the Llama family's forward pass: LlamaForCausalLM, MistralForCausalLM and
 * Qwen2ForCausalLM on one unpadded sample (FACTS.md 4.2-4.5; transformers modeling_llama.py,
 * modeling_qwen2.py, modeling_mistral.py, modeling_rope_utils.py), in float32 as they run on a CPU.
 *
 *   h = embed_tokens[ids]
 *   per layer:  x = RMSNorm(h) -> q, k, v (+ bias) -> RoPE(q, k) -> causal GQA attention -> o_proj
 *               h = h + that;  x = RMSNorm(h) -> down(silu(gate(x)) * up(x));  h = h + that
 *   logits = RMSNorm(h) lm_head^T   (lm_head tied to embed_tokens when configured or absent)
 *
 * Every linear layer goes through it__linear (model.c): the observer, the base product and the
 * installed delta. Sites per layer, in execution order: q, k, v (one group), o, gate, up (one
 * group), down; lm_head last. Attention is plain loops (calibration samples are short); the
 * projections are it_sgemm, threaded and bit-identical for any thread count.
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

#define NAME_MAX_LEN 512            /* tensor and module names built here */
#define TWO_PI 6.283185307179586    /* Python's 2 * math.pi */

/* ============================================================================================ */
/* State                                                                                         */
/* ============================================================================================ */

typedef struct llama_layer {
    const float *in_norm;   /* (H) input_layernorm.weight */
    const float *post_norm; /* (H) post_attention_layernorm.weight */
    size_t q, k, v, o;      /* site indices of self_attn.{q,k,v,o}_proj */
    size_t gate, up, down;  /* site indices of mlp.{gate,up,down}_proj */
} llama_layer;

typedef struct llama {
    size_t H, I, V, L;      /* hidden, intermediate, vocab, layers */
    size_t nH, nKV, hd;     /* query heads, key/value heads, head_dim */
    float eps;              /* rms_norm_eps, as the float32 HF adds */
    float scale;            /* head_dim^-0.5 */
    const float *embed;     /* (V, H) embed_tokens.weight */
    const float *norm;      /* (H) norm.weight */
    llama_layer *layer;     /* (L) */
    size_t lm_head;         /* site index */
    float *inv_freq;        /* (hd/2) RoPE inverse frequencies */
    int64_t window;         /* sliding-window attention beyond this many tokens (0: none) */
} llama;

static void llama_free(void *p)
{
    llama *L = p;
    if (!L) return;
    free(L->layer);
    free(L->inv_freq);
    free(L);
}

/* ============================================================================================ */
/* Layers                                                                                        */
/* ============================================================================================ */

/* cos, sin (n, half) of p * inv_freq[i] for positions p = 0..n-1, the product and the functions in
 * float32 (FACTS 4.4: freqs = inv_freq @ position_ids in float32, emb = cat(freqs, freqs)). */
static void rope_table(float *cs, float *sn, const float *inv_freq, size_t n, size_t half)
{
    for (size_t p = 0; p < n; p++)
        for (size_t i = 0; i < half; i++) {
            float f = (float)p * inv_freq[i];
            cs[p * half + i] = cosf(f);
            sn[p * half + i] = sinf(f);
        }
}

/* x (n, heads * hd) rotated in place, rotate-half convention (FACTS 4.4): for i < hd/2,
 * x'[i] = x[i] cos_i - x[i + hd/2] sin_i, x'[i + hd/2] = x[i + hd/2] cos_i + x[i] sin_i. */
static void rope_apply(float *x, const float *cs, const float *sn, size_t n, size_t heads, size_t hd)
{
    size_t half = hd / 2;
    for (size_t p = 0; p < n; p++)
        for (size_t h = 0; h < heads; h++) {
            float *v = x + (p * heads + h) * hd;
            for (size_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], c = cs[p * half + i], s = sn[p * half + i];
                v[i] = a * c + (-b) * s;
                v[i + half] = b * c + a * s;
            }
        }
}

/* g (m) = silu(g) * u, silu(x) = x / (1 + exp(-x)) as torch computes it in float32. */
static void swiglu(float *g, const float *u, size_t m)
{
    for (size_t i = 0; i < m; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ============================================================================================ */
/* Forward                                                                                       */
/* ============================================================================================ */

/* The working buffers of one call, carved from one allocation. */
typedef struct llama_buf {
    float *h;         /* (n, H) the residual stream */
    float *x;         /* (n, H) a block's normalised input */
    float *q;         /* (n, nH * hd) */
    float *k, *v;     /* (n, nKV * hd) */
    float *ctx;       /* (n, nH * hd) attention output, o_proj's input */
    float *y;         /* (n, H) o_proj / down_proj output */
    float *g, *u;     /* (n, I) gate, up; g becomes down_proj's input */
    float *cs, *sn;   /* (n, hd / 2) RoPE cos, sin */
    float *p;         /* (n) one query's attention weights */
} llama_buf;

/* Allocates every buffer of b for n tokens; *mem is the block to free. */
static int alloc_bufs(const llama *L, size_t n, llama_buf *b, float **mem, it_err *err)
{
    size_t cols[12] = {L->H, L->H, L->nH * L->hd, L->nKV * L->hd, L->nKV * L->hd, L->nH * L->hd,
                       L->H, L->I, L->I, L->hd / 2, L->hd / 2, 1};
    float **dst[12] = {&b->h, &b->x, &b->q, &b->k, &b->v, &b->ctx, &b->y, &b->g, &b->u, &b->cs, &b->sn, &b->p};
    size_t off[12], total = 0, sz;
    for (int i = 0; i < 12; i++) {
        off[i] = total;
        if (it__mul_size(n, cols[i], &sz) || it__add_size(total, sz, &total))
            return it__fail(err, IT_ENOMEM, "llama forward: buffers for %zu tokens overflow", n);
    }
    if (!(*mem = it__malloc_n(total, sizeof **mem)))
        return it__fail(err, IT_ENOMEM, "llama forward: out of memory for %zu tokens", n);
    for (int i = 0; i < 12; i++) *dst[i] = *mem + off[i];
    return IT_OK;
}

/* The attention half of a layer: h += o_proj(attention(RoPE(q), RoPE(k), v)) of RMSNorm(h). */
static int attn_block(it_model *m, const llama *L, const llama_layer *ly, llama_buf *b, size_t n, it_err *err)
{
    it__rmsnorm(b->x, b->h, ly->in_norm, n, L->H, L->eps);
    TRY(it__linear(m, ly->q, b->x, n, b->q, err));
    TRY(it__linear(m, ly->k, b->x, n, b->k, err));
    TRY(it__linear(m, ly->v, b->x, n, b->v, err));
    rope_apply(b->q, b->cs, b->sn, n, L->nH, L->hd);
    rope_apply(b->k, b->cs, b->sn, n, L->nKV, L->hd);
    it__attention(b->ctx, b->q, b->k, b->v, n, n, L->nH, L->nKV, L->hd, L->scale, NULL, 1, b->p);
    TRY(it__linear(m, ly->o, b->ctx, n, b->y, err));
    it__residual(b->h, b->y, n * L->H);
    return IT_OK;
}

/* The MLP half of a layer: h += down(silu(gate(x)) * up(x)), x = RMSNorm(h). */
static int mlp_block(it_model *m, const llama *L, const llama_layer *ly, llama_buf *b, size_t n, it_err *err)
{
    it__rmsnorm(b->x, b->h, ly->post_norm, n, L->H, L->eps);
    TRY(it__linear(m, ly->gate, b->x, n, b->g, err));
    TRY(it__linear(m, ly->up, b->x, n, b->u, err));
    swiglu(b->g, b->u, n * L->I);
    TRY(it__linear(m, ly->down, b->g, n, b->y, err));
    it__residual(b->h, b->y, n * L->H);
    return IT_OK;
}

/* Every layer, the final norm and lm_head into logits (n, V) (NULL: lm_head observed only). */
static int run_layers(it_model *m, const llama *L, const int32_t *ids, size_t n, llama_buf *b, float *logits,
                      it_err *err)
{
    it__embed_rows(b->h, L->embed, ids, n, L->H);
    rope_table(b->cs, b->sn, L->inv_freq, n, L->hd / 2);
    for (size_t l = 0; l < L->L; l++) {
        TRY(attn_block(m, L, &L->layer[l], b, n, err));
        TRY(mlp_block(m, L, &L->layer[l], b, n, err));
    }
    it__rmsnorm(b->x, b->h, L->norm, n, L->H, L->eps);
    return it__linear(m, L->lm_head, b->x, n, logits, err);
}

static int llama_forward(it_model *m, const int32_t *ids, size_t n, float *logits, it_err *err)
{
    const llama *L = m->priv;
    if (L->window > 0 && n > (uint64_t)L->window)
        return it__fail(err, IT_EUNSUPPORTED,
                        "%s: %zu tokens exceed the sliding window of %" PRId64
                        " (sliding-window attention is not implemented)",
                        m->dir, n, L->window);
    llama_buf b;
    float *mem;
    TRY(alloc_bufs(L, n, &b, &mem, err));
    int rc = run_layers(m, L, ids, n, &b, logits, err);
    free(mem);
    return rc;
}

/* it_model_run: the sample's ids, logits as the one output. */
static int llama_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err)
{
    TRY(it__check_ids(m, s->ids, s->n, m->cfg.max_position_embeddings, "input_ids", err));
    float *logits = NULL;
    if (out && !(logits = it__output_add(out, "logits", s->n, (size_t)m->cfg.vocab_size, 1)))
        return it__fail(err, IT_ENOMEM, "%s: out of memory for the logits", m->dir);
    if (out) out->logits = 1;
    return llama_forward(m, s->ids, s->n, logits, err);
}

static const it__model_ops LLAMA_OPS = {"llama", llama_forward, llama_run, NULL, llama_free};

/* ============================================================================================ */
/* RoPE frequencies (FACTS 4.4; modeling_rope_utils.py), in float32 as torch computes them       */
/* ============================================================================================ */

/* default: inv_freq[i] = 1 / theta^((2i) / dim), the exponent a float32 quotient, the power float32. */
static void rope_default(float *inv, size_t dim, float theta)
{
    for (size_t i = 0; i < dim / 2; i++) inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)dim);
}

/* llama3 (_compute_llama3_parameters): low frequencies (wavelength above orig / low_ff) divided by
 * factor, high ones (below orig / high_ff) kept, the band between interpolated smoothly. */
static void rope_llama3(float *inv, size_t half, const it_config *c)
{
    double orig = (double)(c->rope_original_max_pos ? c->rope_original_max_pos : c->max_position_embeddings);
    float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor;
    float lo_wavelen = (float)(orig / c->rope_low_freq_factor), hi_wavelen = (float)(orig / c->rope_high_freq_factor);
    float span = (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
    for (size_t i = 0; i < half; i++) {
        /* scalar / tensor is tensor.reciprocal() * scalar in torch: two roundings, kept here */
        float wavelen = (1.0f / inv[i]) * (float)TWO_PI;
        float f = wavelen > lo_wavelen ? inv[i] / factor : inv[i];
        if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
            float s = ((1.0f / wavelen) * (float)orig - lo) / span;
            f = (1.0f - s) * f / factor + s * f;
        }
        inv[i] = f;
    }
}

/* inv_freq (hd/2) for the configured rope type. dynamic (NTK) changes the frequencies only past
 * max_position_embeddings, which it_model_forward refuses, so it is the default here. linear
 * divides inv_freq by factor (current transformers; 4.40 divided the positions instead, which
 * differs by rounding only). */
static int rope_freqs(llama *L, const it_config *c, const char *cfgpath, it_err *err)
{
    const char *t = c->rope_type;
    int known = !strcmp(t, "default") || !strcmp(t, "linear") || !strcmp(t, "dynamic") || !strcmp(t, "llama3");
    if (!known)
        return it__fail(err, IT_EUNSUPPORTED, "%s: rope_type \"%s\" is not supported (default, linear, dynamic, llama3)",
                        cfgpath, t);
    if (c->partial_rotary_factor != 1.0)
        return it__fail(err, IT_EUNSUPPORTED, "%s: partial_rotary_factor %g is not supported by the llama forward pass",
                        cfgpath, c->partial_rotary_factor);
    if (!(L->inv_freq = it__malloc_n(L->hd / 2 ? L->hd / 2 : 1, sizeof *L->inv_freq)))
        return it__fail(err, IT_ENOMEM, "%s: out of memory", cfgpath);
    rope_default(L->inv_freq, L->hd, (float)c->rope_theta);
    if (!strcmp(t, "linear"))
        for (size_t i = 0; i < L->hd / 2; i++) L->inv_freq[i] = L->inv_freq[i] / (float)c->rope_factor;
    if (!strcmp(t, "llama3")) rope_llama3(L->inv_freq, L->hd / 2, c);
    return IT_OK;
}

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

/* The settings this forward pass implements: SiLU, an even head_dim, the rope types above. */
static int check_config(const it_config *c, const char *cfgpath, it_err *err)
{
    if (strcmp(c->act, "silu") != 0 && strcmp(c->act, "swish") != 0)
        return it__fail(err, IT_EUNSUPPORTED, "%s: hidden_act \"%s\" is not supported by the llama forward pass (silu)",
                        cfgpath, c->act);
    if (c->head_dim % 2)
        return it__fail(err, IT_EFORMAT, "%s: head_dim %" PRId64 " is odd (RoPE rotates pairs of halves)", cfgpath,
                        c->head_dim);
    return IT_OK;
}

/* The sliding window that applies (Mistral: sliding_window; Qwen2: sliding_window when
 * use_sliding_window), read from config.json, since it_config has no field for it. */
static int read_window(llama *L, const it_config *c, const char *cfgpath, it_err *err)
{
    int mistral = !strcmp(c->model_type, "mistral"), qwen2 = !strcmp(c->model_type, "qwen2");
    if (!mistral && !qwen2) return IT_OK;
    char *text = NULL;
    size_t len = 0;
    it_json_doc *doc = NULL;
    TRY(it__read_file(cfgpath, (size_t)16 << 20, &text, &len, err));
    int rc = it_json_parse(&doc, text, len, 0, err);
    free(text);
    if (rc != IT_OK) return rc;
    const it_json *root = it_json_root(doc), *w = it_json_get(root, "sliding_window");
    const it_json *use = it_json_get(root, "use_sliding_window");
    int applies = mistral || (use && use->type == IT_JSON_TRUE);
    if (applies && w && w->type == IT_JSON_INT && w->i_ok && w->i > 0) L->window = w->i;
    if (mistral && !w) L->window = 4096; /* MistralConfig's default */
    it_json_free(doc);
    return IT_OK;
}

/* Adds site "<pfx>layers.<l>.<mod>" with its weight [dout, din] and, when bias, its bias [dout]. */
static int add_proj(it_model *m, const char *pfx, size_t l, const char *mod, size_t group, size_t dout, size_t din,
                    int bias, size_t *idx, it_err *err)
{
    char name[NAME_MAX_LEN], w[NAME_MAX_LEN + 8], b[NAME_MAX_LEN + 8];
    snprintf(name, sizeof name, "%slayers.%zu.%s", pfx, l, mod);
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(b, sizeof b, "%s.bias", name);
    return it__model_add_site(m, name, group, (int64_t)dout, (int64_t)din, w, NULL, bias ? b : NULL, idx, err);
}

/* A norm weight "<pfx><what>" [H]. */
static int norm_weight(it_model *m, const llama *L, const char *pfx, const char *what, size_t l, const float **out,
                       it_err *err)
{
    char name[NAME_MAX_LEN];
    if (l == SIZE_MAX) snprintf(name, sizeof name, "%s%s", pfx, what);
    else snprintf(name, sizeof name, "%slayers.%zu.%s", pfx, l, what);
    int64_t H = (int64_t)L->H;
    return it__model_tensor(m, name, 1, &H, out, err);
}

/* Layer l's norms and seven sites; groups 4l (q, k, v), 4l+1 (o), 4l+2 (gate, up), 4l+3 (down).
 * Biases: Qwen2 on q, k, v; Llama's attention_bias on q, k, v, o and mlp_bias on the MLP. */
static int load_layer(it_model *m, llama *L, const char *pfx, size_t l, it_err *err)
{
    llama_layer *ly = &L->layer[l];
    int qwen2 = !strcmp(m->cfg.model_type, "qwen2"), is_llama = !strcmp(m->cfg.model_type, "llama");
    int qkvb = qwen2 || (is_llama && m->cfg.attention_bias), ob = is_llama && m->cfg.attention_bias;
    int mb = is_llama && m->cfg.mlp_bias;
    size_t qd = L->nH * L->hd, kd = L->nKV * L->hd, g = 4 * l;
    TRY(norm_weight(m, L, pfx, "input_layernorm.weight", l, &ly->in_norm, err));
    TRY(norm_weight(m, L, pfx, "post_attention_layernorm.weight", l, &ly->post_norm, err));
    TRY(add_proj(m, pfx, l, "self_attn.q_proj", g, qd, L->H, qkvb, &ly->q, err));
    TRY(add_proj(m, pfx, l, "self_attn.k_proj", g, kd, L->H, qkvb, &ly->k, err));
    TRY(add_proj(m, pfx, l, "self_attn.v_proj", g, kd, L->H, qkvb, &ly->v, err));
    TRY(add_proj(m, pfx, l, "self_attn.o_proj", g + 1, L->H, qd, ob, &ly->o, err));
    TRY(add_proj(m, pfx, l, "mlp.gate_proj", g + 2, L->I, L->H, mb, &ly->gate, err));
    TRY(add_proj(m, pfx, l, "mlp.up_proj", g + 2, L->I, L->H, mb, &ly->up, err));
    return add_proj(m, pfx, l, "mlp.down_proj", g + 3, L->H, L->I, mb, &ly->down, err);
}

/* Sizes from the configuration. */
static void set_sizes(llama *L, const it_config *c)
{
    L->H = (size_t)c->hidden;
    L->I = (size_t)c->intermediate;
    L->V = (size_t)c->vocab_size;
    L->L = (size_t)c->layers;
    L->nH = (size_t)c->heads;
    L->nKV = (size_t)c->kv_heads;
    L->hd = (size_t)c->head_dim;
    L->eps = (float)c->norm_eps;
    L->scale = (float)pow((double)c->head_dim, -0.5);
}

/* embed_tokens, the layers, the final norm and lm_head (tied to embed_tokens when configured, or
 * when the checkpoint has no lm_head.weight). pfx is "model." or "" (a bare LlamaModel). */
static int load_tensors(it_model *m, llama *L, const char *pfx, it_err *err)
{
    char name[NAME_MAX_LEN];
    const int64_t eshape[2] = {(int64_t)L->V, (int64_t)L->H};
    snprintf(name, sizeof name, "%sembed_tokens.weight", pfx);
    TRY(it__model_tensor(m, name, 2, eshape, &L->embed, err));
    if (!(L->layer = calloc(L->L, sizeof *L->layer))) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    for (size_t l = 0; l < L->L; l++) TRY(load_layer(m, L, pfx, l, err));
    TRY(norm_weight(m, L, pfx, "norm.weight", SIZE_MAX, &L->norm, err));
    int tied = m->cfg.tie_word_embeddings || !it__model_has(m, "lm_head.weight");
    return it__model_add_site(m, "lm_head", 4 * L->L, eshape[0], eshape[1], tied ? NULL : "lm_head.weight", L->embed,
                              NULL, &L->lm_head, err);
}

int it__llama_load(it_model *m, it_err *err)
{
    void *state = NULL;
    char *cfgpath = NULL;
    TRY(it__model_state(m, &LLAMA_OPS, sizeof(llama), &state, &cfgpath, err));
    llama *L = state;
    set_sizes(L, &m->cfg);
    int rc = check_config(&m->cfg, cfgpath, err);
    if (rc == IT_OK) rc = rope_freqs(L, &m->cfg, cfgpath, err);
    if (rc == IT_OK) rc = read_window(L, &m->cfg, cfgpath, err);
    const char *pfx = it__model_has(m, "model.embed_tokens.weight") || !it__model_has(m, "embed_tokens.weight")
                          ? "model."
                          : "";
    if (rc == IT_OK) rc = load_tensors(m, L, pfx, err);
    free(cfgpath);
    return rc;
}
