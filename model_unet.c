/* model_unet.c -- diffusers' UNet2DConditionModel (FACTS.md 7; diffusers 0.27 unet_2d_condition.py,
 * unet_2d_blocks.py, resnet.py, transformer_2d.py, attention.py, attention_processor.py,
 * embeddings.py, upsampling.py, downsampling.py), the SD 1.x / 2.x layout, in float32 as it runs on
 * a CPU. Tensors are NCHW, the batch being the sample's nlatents latents.
 *
 *   temb  = linear_2(act(linear_1(timestep_embedding(t))))          time_embedding (not sites)
 *           timestep_embedding: half = C0/2, e[i] = exp(float(-ln 10000) * i / (half - freq_shift)),
 *           arg = float(t) * e, [sin(arg), cos(arg)], flipped to [cos, sin] when flip_sin_to_cos
 *   h     = conv_in(sample)   (2 * sample - 1 first when center_input_sample); skips = [h]
 *   down_blocks.i (CrossAttnDownBlock2D / DownBlock2D): per layer j, h = resnets.j(h, temb), then
 *           h = attentions.j(h) in a cross-attention block, skips += h; all but the last block:
 *           h = downsamplers.0.conv(h) (3x3, stride 2, pad 1), skips += h
 *   mid_block (UNetMidBlock2DCrossAttn): h = resnets.0(h), attentions.0(h), resnets.1(h)
 *           (those resnets divide by mid_block_scale_factor)
 *   up_blocks.i (UpBlock2D / CrossAttnUpBlock2D): per layer j (layers_per_block + 1), h =
 *           resnets.j(cat([h, skips.pop()], channels)), then attentions.j(h) in a cross-attention
 *           block; all but the last: nearest upsampling to 2x (or to the next skip's size when the
 *           sample's sides are not multiples of 2^upsamplers), then upsamplers.0.conv (3x3, pad 1)
 *   out   = conv_out(act(conv_norm_out(h)))    -> output "sample" [B * out_channels * H, W]
 *   resnet (ResnetBlock2D, pre-norm, "default" time scale): y = conv1(act(norm1(x)));
 *           y += time_emb_proj(act(temb))[:, :, None, None]; y = conv2(act(norm2(y)));
 *           out = (conv_shortcut(x) or x) + y; GroupNorm(norm_num_groups, eps = norm_eps)
 *   attentions.j (Transformer2DModel): r = x; x = GroupNorm(norm_num_groups, eps 1e-6)(x);
 *           rows [B*H*W, C] (row b*H*W + h*W + w); x = proj_in(x) (1x1 Conv2d, or Linear with
 *           use_linear_projection: the same product on these rows); the transformer blocks;
 *           out = proj_out(x) back to NCHW + r
 *   transformer_blocks.k (BasicTransformerBlock): x += attn1.to_out.0(attn(norm1(x)));
 *           x += attn2.to_out.0(attn(to_q(norm2(x)), to_k(context), to_v(context)));
 *           f = ff.net.0.proj(norm3(x)) = [hid, gate]; x += ff.net.2(hid * gelu_erf(gate))
 *           (LayerNorms eps 1e-5; heads = attention_head_dim of the block (diffusers' misnomer:
 *           the number of heads), head_dim = C / heads; scores = head_dim^-0.5 q k^T, softmax)
 *
 * Sites (through it__linear, PEFT's module paths), each group's input depending on earlier groups
 * only: group 0 = every transformer block's attn2.to_k and attn2.to_v, in block order (they all
 * read encoder_hidden_states, which the UNet does not compute: they are computed up front, before
 * conv_in, rows b * nctx + token); then in execution order, per transformer: proj_in (a group),
 * per block attn1.{to_q,to_k,to_v} (one group), attn1.to_out.0, attn2.to_q, attn2.to_out.0,
 * ff.net.0.proj, ff.net.2 (a group each), proj_out (a group). proj_in / proj_out are 1x1 convs
 * seen as linears with W0 = the conv weight viewed [out, in] and rows = spatial positions. The
 * time-embedding linears, the resnets' time_emb_proj and every other convolution are not sites.
 * Convolutions: im2col + it_sgemm; attention: it_sgemm per head (baddbmm's alpha = scale).
 *
 * Refused (IT_EUNSUPPORTED naming config.json and the key): class / addition / conditional time
 * embeddings, encoder_hid_proj, attention_type or resnet_time_scale_shift other than "default",
 * time_embedding_type other than "positional", extra time activations, resnet_skip_time_act,
 * dual or only cross attention, cross_attention_norm, downsample_padding other than 1, block types
 * other than the four above and a mid block other than UNetMidBlock2DCrossAttn.
 * upcast_attention is accepted: it changes nothing in float32.
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

#define NAME_MAX_LEN 512      /* tensor and module names built here */
#define MAX_BLOCKS 8          /* it_config's block_out_channels */
#define CHUNK_FLOATS ((size_t)1 << 24) /* im2col scratch per step (64 MiB) */
#define ATTN_FLOATS ((size_t)1 << 20)  /* attention scores per step (4 MiB) */

/* ============================================================================================ */
/* State                                                                                         */
/* ============================================================================================ */

typedef struct gnorm {
    const float *w, *b;         /* (C) GroupNorm / LayerNorm affine */
} gnorm;

typedef struct conv {
    const float *w, *b;         /* (cout, cin, k, k), (cout) */
    size_t cin, cout, k;        /* odd k, padding (k - 1) / 2 */
} conv;

typedef struct resnet {
    size_t cin, cout;
    gnorm n1, n2;
    conv c1, c2, sc;
    int has_sc;                 /* conv_shortcut (1x1) when cin != cout */
    const float *tw, *tb;       /* time_emb_proj (cout, T), (cout) */
    float scale;                /* output_scale_factor */
} resnet;

typedef struct tblock {
    gnorm ln[3];                /* norm1, norm2, norm3 */
    size_t q, k, v, o;          /* attn1 sites */
    size_t q2, k2, v2, o2;      /* attn2 sites */
    size_t ff1, ff2;            /* ff.net.0.proj, ff.net.2 */
    size_t kv;                  /* index of this block's cross k / v in the run's buffer */
} tblock;

typedef struct xformer {
    size_t C, nH, hd, L;        /* channels, heads, head_dim, transformer blocks */
    float scale;                /* head_dim^-0.5 */
    gnorm norm;                 /* GroupNorm(norm_num_groups, C, eps 1e-6) */
    size_t pin, pout;           /* proj_in, proj_out sites */
    tblock *blk;                /* (L) */
} xformer;

typedef struct ublock {
    size_t nres, cout;
    resnet *res;                /* (nres) */
    xformer *xf;                /* (nres) into unet.xf, or NULL: no attentions */
    int sampler;                /* a downsampler / upsampler */
    conv samp;
} ublock;

typedef struct unet {
    size_t nb, C0, T, cin, cout, G, D; /* blocks, block 0 channels, time dim, in / out, groups, cross dim */
    float eps;                  /* norm_eps */
    const char *act;            /* act_fn (m->cfg's string) */
    int flip, center;           /* flip_sin_to_cos, center_input_sample */
    double shift;               /* freq_shift */
    conv conv_in, conv_out;
    gnorm norm_out;
    const float *l1w, *l1b, *l2w, *l2b; /* time_embedding.linear_1 (T, C0), linear_2 (T, T) */
    ublock down[MAX_BLOCKS], mid, up[MAX_BLOCKS];
    size_t nxf, nkv;            /* transformers; transformer blocks (cross k / v pairs) */
    xformer *xf;                /* (nxf) in execution order */
} unet;

static void free_block(ublock *u)
{
    free(u->res);
}

static void unet_free(void *p)
{
    unet *U = p;
    if (!U) return;
    for (size_t i = 0; i < MAX_BLOCKS; i++) {
        free_block(&U->down[i]);
        free_block(&U->up[i]);
    }
    free_block(&U->mid);
    for (size_t i = 0; U->xf && i < U->nxf; i++) free(U->xf[i].blk);
    free(U->xf);
    free(U);
}

/* ============================================================================================ */
/* Layers                                                                                        */
/* ============================================================================================ */

/* A feature map of the batch: (B, c, h, w). */
typedef struct fmap {
    float *d;
    size_t c, h, w;
} fmap;

typedef struct run {
    it_model *m;
    const unet *U;
    size_t B;
    const float *temb;          /* (B, T) act(temb), the resnets' time input */
    it_err *err;
} run;

/* f->d = (B, c, h, w) floats, overflow-checked. */
static int fm_alloc(const run *r, fmap *f, size_t c, size_t h, size_t w)
{
    size_t n;
    f->d = NULL;
    f->c = c, f->h = h, f->w = w;
    if (it__mul_size(r->B, c, &n) || it__mul_size(n, h, &n) || it__mul_size(n, w, &n))
        return it__fail(r->err, IT_ENOMEM, "%s: unet: a %zu x %zu x %zu x %zu feature map overflows", r->m->dir, r->B, c,
                        h, w);
    if (!(f->d = it__malloc_n(n ? n : 1, sizeof *f->d)))
        return it__fail(r->err, IT_ENOMEM, "%s: unet: out of memory for a %zu x %zu x %zu x %zu feature map", r->m->dir,
                        r->B, c, h, w);
    return IT_OK;
}

static void fm_free(fmap *f)
{
    free(f->d);
    f->d = NULL;
}

static size_t fm_size(const run *r, const fmap *f) { return r->B * f->c * f->h * f->w; }

/* n floats of scratch, overflow-checked product a * b. */
static int scratch_alloc(const run *r, size_t a, size_t b, float **out)
{
    size_t n;
    *out = NULL;
    if (it__mul_size(a, b, &n) || !(*out = it__malloc_n(n ? n : 1, sizeof **out)))
        return it__fail(r->err, IT_ENOMEM, "%s: unet: out of memory for %zu x %zu floats", r->m->dir, a, b);
    return IT_OK;
}

/* GroupNorm over (B, C, HW): groups of C/G channels, mean and biased variance over the group's
 * (C/G)*HW values accumulated in double, then y = (x - mean) * rstd * w + b in float. y may be x. */
typedef struct gn_job {
    const float *x;
    float *y;
    size_t C, HW, G;
    float eps;
    const gnorm *n;
} gn_job;

static void gn_one(void *ctx, size_t i)
{
    const gn_job *j = ctx;
    size_t cg = j->C / j->G, b = i / j->G, g = i % j->G, n = cg * j->HW;
    const float *x = j->x + (b * j->C + g * cg) * j->HW;
    float *y = j->y + (b * j->C + g * cg) * j->HW;
    double s = 0, ss = 0;
    for (size_t t = 0; t < n; t++) s += x[t];
    double mean = s / (double)n;
    for (size_t t = 0; t < n; t++) {
        double d = x[t] - mean;
        ss += d * d;
    }
    float mf = (float)mean, rstd = 1.0f / sqrtf((float)(ss / (double)n) + j->eps);
    for (size_t c = 0; c < cg; c++) {
        float w = j->n->w[g * cg + c], bb = j->n->b[g * cg + c];
        for (size_t t = 0; t < j->HW; t++) y[c * j->HW + t] = (x[c * j->HW + t] - mf) * rstd * w + bb;
    }
}

static void group_norm(const run *r, const fmap *x, float *y, const gnorm *n, size_t G, float eps)
{
    gn_job j = {x->d, y, x->c, x->h * x->w, G, eps, n};
    it__parallel_for(r->B * G, gn_one, &j);
}

/* im2col rows [k-index][position chunk] of a convolution over the whole batch: column t is output
 * position q = q0 + t, q = b * HWo + oy * Wo + ox (the images side by side, so that one product
 * packs the weight once for all of them). */
typedef struct col_job {
    const float *x;             /* (B, cin, H, W) */
    float *cols;                /* (cin * k * k, n) */
    size_t cin, H, W, Wo, HWo, k, pad, stride, q0, n;
} col_job;

static void col_row(void *ctx, size_t row)
{
    const col_job *j = ctx;
    size_t kk = j->k * j->k, ci = row / kk, ky = (row % kk) / j->k, kx = row % j->k;
    float *dst = j->cols + row * j->n;
    for (size_t t = 0; t < j->n; t++) {
        size_t q = j->q0 + t, b = q / j->HWo, p = q % j->HWo, oy = p / j->Wo, ox = p % j->Wo;
        size_t iy = oy * j->stride + ky, ix = ox * j->stride + kx; /* + pad */
        const float *xc = j->x + (b * j->cin + ci) * j->H * j->W;
        dst[t] = iy >= j->pad && iy - j->pad < j->H && ix >= j->pad && ix - j->pad < j->W
                     ? xc[(iy - j->pad) * j->W + (ix - j->pad)]
                     : 0.0f;
    }
}

/* y = conv(x) with stride 1 or 2, padding (k - 1) / 2, bias; y allocated here. Chunks of output
 * positions: cols (K, n) im2col, tmp (cout, n) = W (cout, K) cols, then y = tmp + bias, NCHW. */
static int conv_apply(const run *r, const conv *cv, const fmap *x, size_t stride, fmap *y)
{
    size_t pad = (cv->k - 1) / 2, H = x->h, W = x->w;
    if (H + 2 * pad < cv->k || W + 2 * pad < cv->k)
        return it__fail(r->err, IT_EINVAL, "%s: unet: a %zu x %zu map is too small for a %zu x %zu convolution", r->m->dir,
                        H, W, cv->k, cv->k);
    size_t Ho = (H + 2 * pad - cv->k) / stride + 1, Wo = (W + 2 * pad - cv->k) / stride + 1, HWo = Ho * Wo;
    size_t K = cv->cin * cv->k * cv->k, NP = r->B * HWo, cout = cv->cout;
    size_t chunk = CHUNK_FLOATS / (K > cout ? K : cout);
    if (chunk < 64) chunk = 64;
    if (chunk > NP) chunk = NP;
    float *cols = NULL, *tmp = NULL;
    TRY(fm_alloc(r, y, cout, Ho, Wo));
    int rc = scratch_alloc(r, K, chunk, &cols);
    if (rc == IT_OK) rc = scratch_alloc(r, cout, chunk, &tmp);
    for (size_t q0 = 0; q0 < NP && rc == IT_OK; q0 += chunk) {
        size_t n = NP - q0 < chunk ? NP - q0 : chunk;
        col_job j = {x->d, cols, cv->cin, H, W, Wo, HWo, cv->k, pad, stride, q0, n};
        it__parallel_for(K, col_row, &j);
        if (it_sgemm(IT_N, IT_N, cout, n, K, 1.0f, cv->w, K, cols, n, 0.0f, tmp, n) != IT_OK) {
            rc = it__fail(r->err, IT_ENOMEM, "%s: unet: out of memory in a convolution", r->m->dir);
            break;
        }
        for (size_t c = 0; c < cout; c++) {
            const float *tc = tmp + c * n;
            float bias = cv->b[c];
            for (size_t t = 0; t < n; t++) {
                size_t q = q0 + t, b = q / HWo, p = q % HWo;
                y->d[(b * cout + c) * HWo + p] = tc[t] + bias;
            }
        }
    }
    free(cols);
    free(tmp);
    if (rc != IT_OK) fm_free(y);
    return rc;
}

/* y (n, dout) = x (n, din) w^T + b: a linear that is not a site. */
static int dense(const run *r, const float *x, size_t n, size_t din, const float *w, const float *b, size_t dout,
                 float *y)
{
    if (it_sgemm(IT_N, IT_T, n, dout, din, 1.0f, x, din, w, din, 0.0f, y, dout) != IT_OK)
        return it__fail(r->err, IT_ENOMEM, "%s: unet: out of memory in a product", r->m->dir);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < dout; j++) y[i * dout + j] += b[j];
    return IT_OK;
}

/* out = ResnetBlock2D(x); x unchanged, out allocated here. */
static int resnet_apply(const run *r, const resnet *rs, const fmap *x, fmap *out)
{
    const unet *U = r->U;
    size_t HW = x->h * x->w;
    fmap t = {0}, h = {0}, sc = {0};
    float *tp = NULL;
    out->d = NULL;
    if (x->c != rs->cin)
        return it__fail(r->err, IT_EINVAL, "%s: unet: a resnet expects %zu channels, got %zu", r->m->dir, rs->cin, x->c);
    int rc = fm_alloc(r, &t, x->c, x->h, x->w);
    if (rc == IT_OK) {
        group_norm(r, x, t.d, &rs->n1, U->G, U->eps);
        it__act_apply(U->act, t.d, fm_size(r, &t));
        rc = conv_apply(r, &rs->c1, &t, 1, &h);
    }
    fm_free(&t);
    if (rc == IT_OK) rc = scratch_alloc(r, r->B, rs->cout, &tp);
    if (rc == IT_OK) rc = dense(r, r->temb, r->B, U->T, rs->tw, rs->tb, rs->cout, tp);
    if (rc == IT_OK) {
        for (size_t b = 0; b < r->B; b++)
            for (size_t c = 0; c < rs->cout; c++) {
                float *hc = h.d + (b * rs->cout + c) * HW, v = tp[b * rs->cout + c];
                for (size_t p = 0; p < HW; p++) hc[p] = hc[p] + v;
            }
        group_norm(r, &h, h.d, &rs->n2, U->G, U->eps);
        it__act_apply(U->act, h.d, fm_size(r, &h));
        rc = conv_apply(r, &rs->c2, &h, 1, out);
    }
    free(tp);
    fm_free(&h);
    if (rc == IT_OK && rs->has_sc) rc = conv_apply(r, &rs->sc, x, 1, &sc);
    if (rc == IT_OK) {
        const float *in = rs->has_sc ? sc.d : x->d;
        size_t n = fm_size(r, out);
        for (size_t i = 0; i < n; i++) out->d[i] = in[i] + out->d[i];
        if (rs->scale != 1.0f)
            for (size_t i = 0; i < n; i++) out->d[i] = out->d[i] / rs->scale;
    }
    fm_free(&sc);
    if (rc != IT_OK) fm_free(out);
    return rc;
}

/* Softmax of rows [0, n) of p (n, nk), in parallel. */
typedef struct sm_job {
    float *p;
    size_t nk;
} sm_job;

static void sm_row(void *ctx, size_t i)
{
    const sm_job *j = ctx;
    it__softmax(j->p + i * j->nk, j->nk);
}

/* ctx (B*nq, C) = per batch item and head softmax(scale q k^T) v; q (B*nq, C), k and v (B*nk, C)
 * with head h in columns [h*hd, (h+1)*hd). */
static int attention(const run *r, const xformer *X, float *ctx, const float *q, const float *k, const float *v,
                     size_t nq, size_t nk)
{
    size_t C = X->C, hd = X->hd, chunk = ATTN_FLOATS / (nk ? nk : 1);
    if (chunk < 16) chunk = 16;
    if (chunk > nq) chunk = nq;
    float *S;
    TRY(scratch_alloc(r, chunk, nk, &S));
    int rc = IT_OK;
    for (size_t b = 0; b < r->B && rc == IT_OK; b++)
        for (size_t h = 0; h < X->nH && rc == IT_OK; h++)
            for (size_t q0 = 0; q0 < nq && rc == IT_OK; q0 += chunk) {
                size_t n = nq - q0 < chunk ? nq - q0 : chunk;
                const float *qh = q + (b * nq + q0) * C + h * hd, *kh = k + b * nk * C + h * hd;
                const float *vh = v + b * nk * C + h * hd;
                if (it_sgemm(IT_N, IT_T, n, nk, hd, X->scale, qh, C, kh, C, 0.0f, S, nk) != IT_OK) {
                    rc = IT_ENOMEM;
                    break;
                }
                sm_job j = {S, nk};
                it__parallel_for(n, sm_row, &j);
                if (it_sgemm(IT_N, IT_N, n, hd, nk, 1.0f, S, nk, vh, C, 0.0f, ctx + (b * nq + q0) * C + h * hd, C) !=
                    IT_OK)
                    rc = IT_ENOMEM;
            }
    free(S);
    return rc == IT_OK ? IT_OK : it__fail(r->err, rc, "%s: unet: out of memory in attention", r->m->dir);
}

/* The working buffers of one Transformer2DModel on R = B*HW rows, from one allocation. */
typedef struct xbuf {
    float *h, *x, *y;           /* (R, C) residual stream, normalised input, output */
    float *q, *k, *v, *ctx;     /* (R, C) each, contiguous: g (R, 4C) aliases them */
    float *g;                   /* (R, 4C) GEGLU output */
    float *f;                   /* (R, 8C) ff.net.0.proj output */
} xbuf;

/* One BasicTransformerBlock on b->h; kc, vc: its cross k / v (B*nctx, C). */
static int tblock_apply(const run *r, const xformer *X, const tblock *t, xbuf *b, size_t R, size_t HW,
                        const float *kc, const float *vc, size_t nctx)
{
    it_model *m = r->m;
    size_t C = X->C, I = 4 * C;
    it__layernorm(b->x, b->h, t->ln[0].w, t->ln[0].b, R, C, 1e-5f);
    TRY(it__linear(m, t->q, b->x, R, b->q, r->err));
    TRY(it__linear(m, t->k, b->x, R, b->k, r->err));
    TRY(it__linear(m, t->v, b->x, R, b->v, r->err));
    TRY(attention(r, X, b->ctx, b->q, b->k, b->v, HW, HW));
    TRY(it__linear(m, t->o, b->ctx, R, b->y, r->err));
    it__residual(b->h, b->y, R * C);
    it__layernorm(b->x, b->h, t->ln[1].w, t->ln[1].b, R, C, 1e-5f);
    TRY(it__linear(m, t->q2, b->x, R, b->q, r->err));
    TRY(attention(r, X, b->ctx, b->q, kc, vc, HW, nctx));
    TRY(it__linear(m, t->o2, b->ctx, R, b->y, r->err));
    it__residual(b->h, b->y, R * C);
    it__layernorm(b->x, b->h, t->ln[2].w, t->ln[2].b, R, C, 1e-5f);
    TRY(it__linear(m, t->ff1, b->x, R, b->f, r->err));
    for (size_t i = 0; i < R; i++) {
        float *fi = b->f + i * 2 * I, *gi = b->g + i * I;
        it__act_apply("gelu", fi + I, I);
        for (size_t j = 0; j < I; j++) gi[j] = fi[j] * fi[I + j];
    }
    TRY(it__linear(m, t->ff2, b->g, R, b->y, r->err));
    it__residual(b->h, b->y, R * C);
    return IT_OK;
}

/* x = Transformer2DModel(x) in place (the output is proj_out(...) + x). kv: the run's cross k / v
 * (nkv pairs of (B*nctx, C)); last: stop after proj_out's observation (no output wanted). */
static int xformer_apply(const run *r, const xformer *X, fmap *x, float *const *kv, size_t nctx, int last)
{
    size_t C = X->C, HW = x->h * x->w, R, nf;
    if (x->c != C)
        return it__fail(r->err, IT_EINVAL, "%s: unet: a transformer expects %zu channels, got %zu", r->m->dir, C, x->c);
    if (it__mul_size(r->B, HW, &R) || it__mul_size(C, 19, &nf))
        return it__fail(r->err, IT_ENOMEM, "%s: unet: transformer buffers overflow", r->m->dir);
    float *mem;
    TRY(scratch_alloc(r, R, nf, &mem));
    xbuf b;
    b.h = mem, b.x = b.h + R * C, b.y = b.x + R * C;
    b.q = b.y + R * C, b.k = b.q + R * C, b.v = b.k + R * C, b.ctx = b.v + R * C, b.g = b.q;
    b.f = b.ctx + R * C;
    /* GroupNorm into y (NCHW), then rows: x[b*HW + p][c] */
    group_norm(r, x, b.y, &X->norm, r->U->G, 1e-6f);
    for (size_t bi = 0; bi < r->B; bi++)
        for (size_t c = 0; c < C; c++) {
            const float *src = b.y + (bi * C + c) * HW;
            float *dst = b.x + bi * HW * C + c;
            for (size_t p = 0; p < HW; p++) dst[p * C] = src[p];
        }
    int rc = it__linear(r->m, X->pin, b.x, R, b.h, r->err);
    for (size_t l = 0; l < X->L && rc == IT_OK; l++) {
        const tblock *t = &X->blk[l];
        rc = tblock_apply(r, X, t, &b, R, HW, kv[2 * t->kv], kv[2 * t->kv + 1], nctx);
    }
    if (rc == IT_OK) rc = it__linear(r->m, X->pout, b.h, R, last ? NULL : b.y, r->err);
    if (rc == IT_OK && last) rc = IT__STOP;
    if (rc == IT_OK)
        for (size_t bi = 0; bi < r->B; bi++)
            for (size_t c = 0; c < C; c++) {
                float *dst = x->d + (bi * C + c) * HW;
                const float *src = b.y + bi * HW * C + c;
                for (size_t p = 0; p < HW; p++) dst[p] = src[p * C] + dst[p];
            }
    free(mem);
    return rc;
}

/* out = cat([h, skip], channels). */
static int concat(const run *r, const fmap *h, const fmap *s, fmap *out)
{
    if (h->h != s->h || h->w != s->w)
        return it__fail(r->err, IT_EINVAL, "%s: unet: a skip of %zu x %zu meets a map of %zu x %zu", r->m->dir, s->h, s->w,
                        h->h, h->w);
    TRY(fm_alloc(r, out, h->c + s->c, h->h, h->w));
    size_t HW = h->h * h->w;
    for (size_t b = 0; b < r->B; b++) {
        memcpy(out->d + b * out->c * HW, h->d + b * h->c * HW, h->c * HW * sizeof *out->d);
        memcpy(out->d + (b * out->c + h->c) * HW, s->d + b * s->c * HW, s->c * HW * sizeof *out->d);
    }
    return IT_OK;
}

/* torch's nearest source index (upsample_nearest2d): exact halving for 2x, else
 * min(floor(i * (float)in / out), in - 1). */
static size_t nearest(size_t i, size_t in, size_t out)
{
    if (out == in) return i;
    if (out == 2 * in) return i >> 1;
    float scale = (float)in / (float)out;
    size_t s = (size_t)floorf((float)i * scale);
    return s < in - 1 ? s : in - 1;
}

/* out = nearest upsampling of x to (Ho, Wo). */
static int upsample(const run *r, const fmap *x, size_t Ho, size_t Wo, fmap *out)
{
    TRY(fm_alloc(r, out, x->c, Ho, Wo));
    for (size_t bc = 0; bc < r->B * x->c; bc++) {
        const float *src = x->d + bc * x->h * x->w;
        float *dst = out->d + bc * Ho * Wo;
        for (size_t y = 0; y < Ho; y++) {
            const float *row = src + nearest(y, x->h, Ho) * x->w;
            for (size_t xx = 0; xx < Wo; xx++) dst[y * Wo + xx] = row[nearest(xx, x->w, Wo)];
        }
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Forward                                                                                       */
/* ============================================================================================ */

/* temb0 (B, C0): the sinusoidal embedding of each timestep (get_timestep_embedding, float32). */
static void timestep_embedding(const unet *U, const float *ts, size_t B, float *out)
{
    size_t half = U->C0 / 2;
    float neg = (float)-log(10000.0), div = (float)((double)half - U->shift);
    for (size_t i = 0; i < half; i++) {
        float e = expf(neg * (float)i / div);
        for (size_t b = 0; b < B; b++) {
            float a = ts[b] * e, sn = sinf(a), cs = cosf(a);
            out[b * U->C0 + i] = U->flip ? cs : sn;
            out[b * U->C0 + half + i] = U->flip ? sn : cs;
        }
    }
    if (U->C0 % 2)
        for (size_t b = 0; b < B; b++) out[b * U->C0 + U->C0 - 1] = 0.0f;
}

/* temb (B, T) = act(linear_2(act(linear_1(temb0)))), the resnets' time input. */
static int time_embedding(const run *r, const it_sample *s, float **temb)
{
    const unet *U = r->U;
    float *t0, *t1;
    *temb = NULL;
    TRY(scratch_alloc(r, r->B, U->C0 + 2 * U->T, &t0));
    t1 = t0 + r->B * U->C0;
    timestep_embedding(U, s->timesteps, r->B, t0);
    int rc = dense(r, t0, r->B, U->C0, U->l1w, U->l1b, U->T, t1);
    if (rc == IT_OK) {
        it__act_apply(U->act, t1, r->B * U->T);
        rc = dense(r, t1, r->B, U->T, U->l2w, U->l2b, U->T, t1 + r->B * U->T);
    }
    if (rc != IT_OK) {
        free(t0);
        return rc;
    }
    memmove(t0, t1 + r->B * U->T, r->B * U->T * sizeof *t0);
    it__act_apply(U->act, t0, r->B * U->T);
    *temb = t0;
    return IT_OK;
}

/* The skips, last in first out. */
typedef struct stack {
    fmap f[1 + MAX_BLOCKS * 64];
    size_t n;
} stack;

/* The cross-attention keys and values of every transformer block (group 0), up front. */
static int cross_kv(const run *r, const it_sample *s, float **kv)
{
    const unet *U = r->U;
    size_t rows = r->B * s->nctx;
    for (size_t i = 0; i < U->nxf; i++) {
        const xformer *X = &U->xf[i];
        for (size_t l = 0; l < X->L; l++) {
            const tblock *t = &X->blk[l];
            TRY(scratch_alloc(r, rows, X->C, &kv[2 * t->kv]));
            TRY(scratch_alloc(r, rows, X->C, &kv[2 * t->kv + 1]));
            TRY(it__linear(r->m, t->k2, s->context, rows, kv[2 * t->kv], r->err));
            TRY(it__linear(r->m, t->v2, s->context, rows, kv[2 * t->kv + 1], r->err));
        }
    }
    return IT_OK;
}

/* The whole pass after the checks; every buffer is freed by the caller (st, cur, kv, temb). */
static int forward(run *r, const it_sample *s, stack *st, fmap *cur, float **kv, float **temb, it_outputs *out,
                   int nup)
{
    const unet *U = r->U;
    size_t nx = 0, nctx = s->nctx;
    TRY(cross_kv(r, s, kv));
    fmap x;
    TRY(fm_alloc(r, &x, U->cin, s->lat_h, s->lat_w));
    memcpy(x.d, s->latents, fm_size(r, &x) * sizeof *x.d);
    if (U->center)
        for (size_t i = 0; i < fm_size(r, &x); i++) x.d[i] = 2.0f * x.d[i] - 1.0f;
    int rc = time_embedding(r, s, temb);
    if (rc == IT_OK) rc = conv_apply(r, &U->conv_in, &x, 1, &st->f[st->n]);
    fm_free(&x);
    TRY(rc);
    r->temb = *temb;
    st->n++;
    int fwd_size = 0;
    for (size_t i = 0; i < 2; i++) {
        size_t side = i ? s->lat_w : s->lat_h;
        if (nup < 63 && side % ((size_t)1 << nup)) fwd_size = 1;
    }
    /* down */
    for (size_t i = 0; i < U->nb; i++) {
        const ublock *u = &U->down[i];
        for (size_t j = 0; j < u->nres; j++) {
            TRY(resnet_apply(r, &u->res[j], &st->f[st->n - 1], &st->f[st->n]));
            st->n++;
            if (u->xf) TRY(xformer_apply(r, &u->xf[j], &st->f[st->n - 1], kv, nctx, ++nx == U->nxf && !out));
        }
        if (u->sampler) {
            TRY(conv_apply(r, &u->samp, &st->f[st->n - 1], 2, &st->f[st->n]));
            st->n++;
        }
    }
    /* mid */
    TRY(resnet_apply(r, &U->mid.res[0], &st->f[st->n - 1], cur));
    TRY(xformer_apply(r, &U->mid.xf[0], cur, kv, nctx, ++nx == U->nxf && !out));
    fmap t;
    TRY(resnet_apply(r, &U->mid.res[1], cur, &t));
    fm_free(cur);
    *cur = t;
    /* up */
    for (size_t i = 0; i < U->nb; i++) {
        const ublock *u = &U->up[i];
        for (size_t j = 0; j < u->nres; j++) {
            fmap cat;
            if (st->n == 0) return it__fail(r->err, IT_EINVAL, "%s: unet: the skips ran out", r->m->dir);
            fmap *sk = &st->f[--st->n];
            rc = concat(r, cur, sk, &cat);
            fm_free(sk);
            TRY(rc);
            rc = resnet_apply(r, &u->res[j], &cat, &t);
            fm_free(&cat);
            TRY(rc);
            fm_free(cur);
            *cur = t;
            if (u->xf) TRY(xformer_apply(r, &u->xf[j], cur, kv, nctx, ++nx == U->nxf && !out));
        }
        if (u->sampler) {
            size_t Ho = 2 * cur->h, Wo = 2 * cur->w;
            if (fwd_size && st->n) Ho = st->f[st->n - 1].h, Wo = st->f[st->n - 1].w;
            fmap up;
            TRY(upsample(r, cur, Ho, Wo, &up));
            rc = conv_apply(r, &u->samp, &up, 1, &t);
            fm_free(&up);
            TRY(rc);
            fm_free(cur);
            *cur = t;
        }
    }
    if (!out) return IT_OK;
    /* out */
    group_norm(r, cur, cur->d, &U->norm_out, U->G, U->eps);
    it__act_apply(U->act, cur->d, fm_size(r, cur));
    TRY(conv_apply(r, &U->conv_out, cur, 1, &t));
    size_t rows = r->B * t.c * t.h;
    float *o = it__output_add(out, "sample", rows, t.w, 1);
    if (o) memcpy(o, t.d, fm_size(r, &t) * sizeof *o);
    fm_free(&t);
    return o ? IT_OK : it__fail(r->err, IT_ENOMEM, "%s: out of memory for the output sample", r->m->dir);
}

static int unet_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err)
{
    const unet *U = m->priv;
    if (!s->latents || !s->timesteps || !s->context)
        return it__fail(err, IT_EINVAL, "%s: the sample has no %s; a UNet2DConditionModel takes sample, timestep and "
                        "encoder_hidden_states", m->dir, !s->latents ? "latents (sample)" : !s->timesteps ? "timestep"
                        : "encoder_hidden_states");
    if (s->nlatents == 0 || s->lat_c != U->cin || s->lat_h == 0 || s->lat_w == 0)
        return it__fail(err, IT_EINVAL, "%s: sample [%zu, %zu, %zu, %zu] does not fit the model's [B, %zu, H, W]", m->dir,
                        s->nlatents, s->lat_c, s->lat_h, s->lat_w, U->cin);
    if (s->nctx == 0 || s->dctx != U->D)
        return it__fail(err, IT_EINVAL, "%s: encoder_hidden_states [%zu, %zu, %zu] do not fit cross_attention_dim %zu",
                        m->dir, s->nlatents, s->nctx, s->dctx, U->D);
    if (out) out->logits = 0;
    run r = {m, U, s->nlatents, NULL, err};
    stack *st = calloc(1, sizeof *st);
    float **kv = calloc(2 * U->nkv + 1, sizeof *kv), *temb = NULL;
    fmap cur = {0};
    int nup = 0;
    for (size_t i = 0; i < U->nb; i++) nup += U->up[i].sampler;
    int rc = st && kv ? forward(&r, s, st, &cur, kv, &temb, out, nup)
                      : it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    for (size_t i = 0; st && i < st->n; i++) fm_free(&st->f[i]);
    for (size_t i = 0; kv && i < 2 * U->nkv; i++) free(kv[i]);
    fm_free(&cur);
    free(st);
    free(kv);
    free(temb);
    return rc;
}

static const it__model_ops UNET_OPS = {"unet", NULL, unet_run, NULL, unet_free};

/* ============================================================================================ */
/* config.json: the settings it_config has no field for                                          */
/* ============================================================================================ */

typedef struct cfgr {
    const it_json *root;
    const char *path;
    it_err *err;
} cfgr;

/* The value of key, NULL when absent or null. */
static const it_json *cget(const cfgr *c, const char *key)
{
    const it_json *v = it_json_get(c->root, key);
    return v && v->type != IT_JSON_NULL ? v : NULL;
}

static int bad(const cfgr *c, const char *key, const char *want, const it_json *v)
{
    char got[64];
    it_json_describe(v, got, sizeof got);
    return it__fail(c->err, IT_EFORMAT, "%s: %s: expected %s, got %s", c->path, key, want, got);
}

static int unsupported(const cfgr *c, const char *key, const it_json *v, const char *only)
{
    char got[64];
    it_json_describe(v, got, sizeof got);
    return it__fail(c->err, IT_EUNSUPPORTED, "%s: %s %s is not supported by the unet forward pass (only %s)", c->path,
                    key, got, only);
}

static int cbool(const cfgr *c, const char *key, int def, int *out)
{
    const it_json *v = cget(c, key);
    *out = def;
    if (!v) return IT_OK;
    if (v->type != IT_JSON_TRUE && v->type != IT_JSON_FALSE) return bad(c, key, "true or false", v);
    *out = v->type == IT_JSON_TRUE;
    return IT_OK;
}

static int cnum(const cfgr *c, const char *key, double def, double *out)
{
    const it_json *v = cget(c, key);
    *out = def;
    if (!v) return IT_OK;
    if (v->type != IT_JSON_INT && v->type != IT_JSON_NUM) return bad(c, key, "a number", v);
    *out = v->d;
    return IT_OK;
}

/* key must be absent or null. */
static int cnull(const cfgr *c, const char *key)
{
    const it_json *v = cget(c, key);
    return v ? unsupported(c, key, v, "null") : IT_OK;
}

/* key must be absent, null, or the string want. */
static int cstr_is(const cfgr *c, const char *key, const char *want)
{
    const it_json *v = cget(c, key);
    if (!v || (v->type == IT_JSON_STR && !strcmp(v->s, want))) return IT_OK;
    char only[96];
    snprintf(only, sizeof only, "\"%s\"", want);
    return unsupported(c, key, v, only);
}

/* key must be absent, false, or an array of false. */
static int cfalse(const cfgr *c, const char *key)
{
    const it_json *v = cget(c, key);
    if (!v || v->type == IT_JSON_FALSE) return IT_OK;
    for (size_t i = 0; v->type == IT_JSON_ARR && i < v->n; i++)
        if (v->items[i].type != IT_JSON_FALSE) return unsupported(c, key, v, "false");
    return v->type == IT_JSON_ARR ? IT_OK : unsupported(c, key, v, "false");
}

/* The block kinds: cross[i] = 1 for a cross-attention block (crossn), 0 for plain; diffusers
 * strips a "UNetRes" prefix first. def: the default list (SD 1.x), when the key is absent. */
static int block_types(const cfgr *c, const char *key, const char *plain, const char *crossn, size_t nb,
                       const int *def, int *cross)
{
    const it_json *v = cget(c, key);
    if (!v) {
        if (nb != 4)
            return it__fail(c->err, IT_EFORMAT, "%s: %s: absent, and its default has 4 blocks where block_out_channels "
                            "has %zu", c->path, key, nb);
        for (size_t i = 0; i < nb; i++) cross[i] = def[i];
        return IT_OK;
    }
    if (v->type != IT_JSON_ARR || v->n != nb) return bad(c, key, "one block name per block_out_channels entry", v);
    for (size_t i = 0; i < nb; i++) {
        const it_json *e = &v->items[i];
        if (e->type != IT_JSON_STR) return bad(c, key, "block names", e);
        const char *s = e->s;
        if (!strncmp(s, "UNetRes", 7)) s += 7;
        if (!strcmp(s, plain)) cross[i] = 0;
        else if (!strcmp(s, crossn)) cross[i] = 1;
        else {
            char only[128];
            snprintf(only, sizeof only, "%s and %s", plain, crossn);
            char k2[64];
            snprintf(k2, sizeof k2, "%s[%zu]", key, i);
            return unsupported(c, k2, e, only);
        }
    }
    return IT_OK;
}

typedef struct extra {
    int flip, center;
    double shift, mid_scale;
    int64_t time_dim;          /* 0: 4 * block_out_channels[0] */
    int down_cross[MAX_BLOCKS], up_cross[MAX_BLOCKS];
} extra;

static int read_extra_json(const cfgr *c, size_t nb, extra *x)
{
    static const int DOWN[4] = {1, 1, 1, 0}, UP[4] = {0, 1, 1, 1};
    static const char *const NULLS[] = {"class_embed_type", "num_class_embeds", "addition_embed_type",
                                        "time_cond_proj_dim", "time_embedding_act_fn", "timestep_post_act",
                                        "encoder_hid_dim", "encoder_hid_dim_type", "cross_attention_norm",
                                        "reverse_transformer_layers_per_block"};
    for (size_t i = 0; i < sizeof NULLS / sizeof *NULLS; i++) TRY(cnull(c, NULLS[i]));
    TRY(cstr_is(c, "attention_type", "default"));
    TRY(cstr_is(c, "resnet_time_scale_shift", "default"));
    TRY(cstr_is(c, "time_embedding_type", "positional"));
    TRY(cfalse(c, "resnet_skip_time_act"));
    TRY(cfalse(c, "dual_cross_attention"));
    TRY(cfalse(c, "only_cross_attention"));
    const it_json *mid = it_json_get(c->root, "mid_block_type");
    if (mid && !(mid->type == IT_JSON_STR && !strcmp(mid->s, "UNetMidBlock2DCrossAttn")))
        return unsupported(c, "mid_block_type", mid, "\"UNetMidBlock2DCrossAttn\"");
    double pad, k;
    TRY(cnum(c, "downsample_padding", 1, &pad));
    if (pad != 1) return unsupported(c, "downsample_padding", cget(c, "downsample_padding"), "1");
    const char *const kern[2] = {"conv_in_kernel", "conv_out_kernel"};
    for (int i = 0; i < 2; i++) {
        TRY(cnum(c, kern[i], 3, &k));
        if (k != 3) return unsupported(c, kern[i], cget(c, kern[i]), "3");
    }
    TRY(cbool(c, "flip_sin_to_cos", 1, &x->flip));
    TRY(cbool(c, "center_input_sample", 0, &x->center));
    TRY(cnum(c, "freq_shift", 0, &x->shift));
    TRY(cnum(c, "mid_block_scale_factor", 1, &x->mid_scale));
    if (!(x->mid_scale != 0)) return unsupported(c, "mid_block_scale_factor", cget(c, "mid_block_scale_factor"), "non-zero");
    const it_json *td = cget(c, "time_embedding_dim");
    x->time_dim = 0;
    if (td) {
        if (td->type != IT_JSON_INT || !td->i_ok || td->i <= 0) return bad(c, "time_embedding_dim", "a positive integer", td);
        x->time_dim = td->i;
    }
    TRY(block_types(c, "down_block_types", "DownBlock2D", "CrossAttnDownBlock2D", nb, DOWN, x->down_cross));
    return block_types(c, "up_block_types", "UpBlock2D", "CrossAttnUpBlock2D", nb, UP, x->up_cross);
}

static int read_extra(const char *cfgpath, size_t nb, extra *x, it_err *err)
{
    char *text = NULL;
    size_t len = 0;
    it_json_doc *doc = NULL;
    TRY(it__read_file(cfgpath, (size_t)16 << 20, &text, &len, err));
    int rc = it_json_parse(&doc, text, len, 0, err);
    free(text);
    if (rc != IT_OK) return rc;
    cfgr c = {it_json_root(doc), cfgpath, err};
    rc = read_extra_json(&c, nb, x);
    it_json_free(doc);
    return rc;
}

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

/* Tensor "<pfx><what>" of shape dims[ndim]. */
static int tens(it_model *m, const char *pfx, const char *what, size_t ndim, const int64_t *dims, const float **out,
                it_err *err)
{
    char name[3 * NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s%s", pfx, what);
    return it__model_tensor(m, name, ndim, dims, out, err);
}

static int load_gn(it_model *m, const char *pfx, const char *what, size_t C, gnorm *g, it_err *err)
{
    char name[NAME_MAX_LEN];
    int64_t d = (int64_t)C;
    snprintf(name, sizeof name, "%s.weight", what);
    TRY(tens(m, pfx, name, 1, &d, &g->w, err));
    snprintf(name, sizeof name, "%s.bias", what);
    return tens(m, pfx, name, 1, &d, &g->b, err);
}

static int load_conv(it_model *m, const char *pfx, const char *what, size_t cin, size_t cout, size_t k, conv *cv,
                     it_err *err)
{
    char name[NAME_MAX_LEN];
    const int64_t w[4] = {(int64_t)cout, (int64_t)cin, (int64_t)k, (int64_t)k}, b = (int64_t)cout;
    cv->cin = cin, cv->cout = cout, cv->k = k;
    snprintf(name, sizeof name, "%s.weight", what);
    TRY(tens(m, pfx, name, 4, w, &cv->w, err));
    snprintf(name, sizeof name, "%s.bias", what);
    return tens(m, pfx, name, 1, &b, &cv->b, err);
}

/* "<pfx>resnets.<j>." */
static int load_resnet(it_model *m, const unet *U, const char *pfx, size_t j, size_t cin, size_t cout, float scale,
                       resnet *rs, it_err *err)
{
    char p[NAME_MAX_LEN];
    snprintf(p, sizeof p, "%sresnets.%zu.", pfx, j);
    rs->cin = cin, rs->cout = cout, rs->scale = scale;
    if (cin % U->G || cout % U->G)
        return it__fail(err, IT_EFORMAT, "%s: %s: %zu -> %zu channels are not multiples of norm_num_groups %zu", m->dir, p,
                        cin, cout, U->G);
    TRY(load_gn(m, p, "norm1", cin, &rs->n1, err));
    TRY(load_gn(m, p, "norm2", cout, &rs->n2, err));
    TRY(load_conv(m, p, "conv1", cin, cout, 3, &rs->c1, err));
    TRY(load_conv(m, p, "conv2", cout, cout, 3, &rs->c2, err));
    const int64_t tw[2] = {(int64_t)cout, (int64_t)U->T}, tb = (int64_t)cout;
    TRY(tens(m, p, "time_emb_proj.weight", 2, tw, &rs->tw, err));
    TRY(tens(m, p, "time_emb_proj.bias", 1, &tb, &rs->tb, err));
    rs->has_sc = cin != cout;
    return rs->has_sc ? load_conv(m, p, "conv_shortcut", cin, cout, 1, &rs->sc, err) : IT_OK;
}

/* A transformer's sizes and norms; its sites come later (add_cross_sites, add_sites). */
static int load_xformer(it_model *m, const char *pfx, size_t C, size_t nH, size_t L, xformer *X,
                        size_t *nkv, it_err *err)
{
    if (nH == 0 || C % nH)
        return it__fail(err, IT_EUNSUPPORTED, "%s: %s: %zu channels do not split into %zu heads (attention_head_dim)",
                        m->dir, pfx, C, nH);
    X->C = C, X->nH = nH, X->hd = C / nH, X->L = L;
    X->scale = (float)pow((double)X->hd, -0.5);
    if (!(X->blk = calloc(L ? L : 1, sizeof *X->blk))) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    TRY(load_gn(m, pfx, "norm", C, &X->norm, err));
    for (size_t l = 0; l < L; l++) {
        char p[NAME_MAX_LEN];
        snprintf(p, sizeof p, "%stransformer_blocks.%zu.", pfx, l);
        for (int k = 0; k < 3; k++) {
            char what[16];
            snprintf(what, sizeof what, "norm%d", k + 1);
            TRY(load_gn(m, p, what, C, &X->blk[l].ln[k], err));
        }
        X->blk[l].kv = (*nkv)++;
    }
    return IT_OK;
}

/* Site "<pfx><mod>" with weight [dout, din] and, when bias, its bias. */
static int add_lin(it_model *m, const char *pfx, const char *mod, size_t group, size_t dout, size_t din, int bias,
                   size_t *idx, it_err *err)
{
    char name[NAME_MAX_LEN], w[NAME_MAX_LEN + 8], b[NAME_MAX_LEN + 8];
    snprintf(name, sizeof name, "%s%s", pfx, mod);
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(b, sizeof b, "%s.bias", name);
    return it__model_add_site(m, name, group, (int64_t)dout, (int64_t)din, w, NULL, bias ? b : NULL, idx, err);
}

/* proj_in / proj_out: a Linear [C, C] or a 1x1 Conv2d [C, C, 1, 1] viewed [C, C]. */
static int add_proj(it_model *m, const char *pfx, const char *mod, size_t group, size_t C, int linear, size_t *idx,
                    it_err *err)
{
    if (linear) return add_lin(m, pfx, mod, group, C, C, 1, idx, err);
    char name[NAME_MAX_LEN], b[NAME_MAX_LEN + 8];
    const int64_t w4[4] = {(int64_t)C, (int64_t)C, 1, 1};
    const float *w;
    snprintf(name, sizeof name, "%s%s", pfx, mod);
    snprintf(b, sizeof b, "%s.bias", name);
    TRY(tens(m, name, ".weight", 4, w4, &w, err));
    return it__model_add_site(m, name, group, (int64_t)C, (int64_t)C, NULL, w, b, idx, err);
}

/* The module prefix of transformer x ("down_blocks.0.attentions.1."). */
typedef struct xname {
    char pfx[96];
} xname;

/* Group 0: every block's attn2.to_k / to_v, in block order. */
static int add_cross_sites(it_model *m, const unet *U, const xname *names, it_err *err)
{
    for (size_t i = 0; i < U->nxf; i++) {
        xformer *X = &U->xf[i];
        for (size_t l = 0; l < X->L; l++) {
            char p[NAME_MAX_LEN];
            snprintf(p, sizeof p, "%stransformer_blocks.%zu.", names[i].pfx, l);
            TRY(add_lin(m, p, "attn2.to_k", 0, X->C, U->D, 0, &X->blk[l].k2, err));
            TRY(add_lin(m, p, "attn2.to_v", 0, X->C, U->D, 0, &X->blk[l].v2, err));
        }
    }
    return IT_OK;
}

/* The other sites in execution order, groups from 1 on. */
static int add_sites(it_model *m, const unet *U, const xname *names, int linear, it_err *err)
{
    size_t g = 1;
    for (size_t i = 0; i < U->nxf; i++) {
        xformer *X = &U->xf[i];
        size_t C = X->C;
        TRY(add_proj(m, names[i].pfx, "proj_in", g++, C, linear, &X->pin, err));
        for (size_t l = 0; l < X->L; l++, g += 6) {
            tblock *t = &X->blk[l];
            char p[NAME_MAX_LEN];
            snprintf(p, sizeof p, "%stransformer_blocks.%zu.", names[i].pfx, l);
            TRY(add_lin(m, p, "attn1.to_q", g, C, C, 0, &t->q, err));
            TRY(add_lin(m, p, "attn1.to_k", g, C, C, 0, &t->k, err));
            TRY(add_lin(m, p, "attn1.to_v", g, C, C, 0, &t->v, err));
            TRY(add_lin(m, p, "attn1.to_out.0", g + 1, C, C, 1, &t->o, err));
            TRY(add_lin(m, p, "attn2.to_q", g + 2, C, C, 0, &t->q2, err));
            TRY(add_lin(m, p, "attn2.to_out.0", g + 3, C, C, 1, &t->o2, err));
            TRY(add_lin(m, p, "ff.net.0.proj", g + 4, 8 * C, C, 1, &t->ff1, err));
            TRY(add_lin(m, p, "ff.net.2", g + 5, C, 4 * C, 1, &t->ff2, err));
        }
        TRY(add_proj(m, names[i].pfx, "proj_out", g++, C, linear, &X->pout, err));
    }
    return IT_OK;
}

/* One down / up block's resnets and transformers (into U->xf from *nx on). */
static int load_block(it_model *m, unet *U, ublock *u, const char *pfx, const size_t *cin, size_t cout, int cross,
                      size_t heads, size_t layers, float scale, xname *names, size_t *nx, it_err *err)
{
    u->cout = cout;
    if (!(u->res = calloc(u->nres, sizeof *u->res))) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    if (cross) u->xf = &U->xf[*nx];
    for (size_t j = 0; j < u->nres; j++) {
        TRY(load_resnet(m, U, pfx, j, cin[j], cout, scale, &u->res[j], err));
        if (!cross) continue;
        snprintf(names[*nx].pfx, sizeof names[*nx].pfx, "%sattentions.%zu.", pfx, j);
        TRY(load_xformer(m, names[*nx].pfx, cout, heads, layers, &U->xf[*nx], &U->nkv, err));
        (*nx)++;
    }
    return IT_OK;
}

static int check_sizes(const it_config *c, const char *cfgpath, it_err *err)
{
    if (c->nblocks < 1 || c->nblocks > MAX_BLOCKS || c->layers_per_block < 1 || c->layers_per_block > 63 ||
        c->norm_groups < 1 || c->in_channels < 1 || c->out_channels < 1 || c->cross_attention_dim < 1)
        return it__fail(err, IT_EUNSUPPORTED, "%s: unet sizes out of range (blocks %" PRId64 ", layers_per_block %" PRId64
                        ", norm_num_groups %" PRId64 ")", cfgpath, c->nblocks, c->layers_per_block, c->norm_groups);
    if (strcmp(c->act, "silu") && strcmp(c->act, "swish") && strcmp(c->act, "gelu") && strcmp(c->act, "relu"))
        return it__fail(err, IT_EUNSUPPORTED, "%s: act_fn \"%s\" is not supported by the unet forward pass (silu, swish, "
                        "gelu, relu)", cfgpath, c->act);
    for (int64_t i = 0; i < c->nblocks; i++)
        if (c->block_out_channels[i] < 1 || c->block_out_channels[i] > (1 << 20) || c->attention_head_dims[i] < 1 ||
            c->transformer_layers[i] < 1 || c->transformer_layers[i] > 64)
            return it__fail(err, IT_EUNSUPPORTED, "%s: block %" PRId64 ": sizes out of range", cfgpath, i);
    return IT_OK;
}

static int load_all(it_model *m, unet *U, const char *cfgpath, it_err *err)
{
    const it_config *c = &m->cfg;
    extra x;
    TRY(check_sizes(c, cfgpath, err));
    size_t nb = (size_t)c->nblocks, L = (size_t)c->layers_per_block;
    TRY(read_extra(cfgpath, nb, &x, err));
    const int64_t *boc = c->block_out_channels;
    U->nb = nb, U->C0 = (size_t)boc[0], U->T = x.time_dim ? (size_t)x.time_dim : 4 * U->C0;
    U->cin = (size_t)c->in_channels, U->cout = (size_t)c->out_channels, U->G = (size_t)c->norm_groups;
    U->D = (size_t)c->cross_attention_dim, U->eps = (float)c->norm_eps, U->act = c->act;
    U->flip = x.flip, U->center = x.center, U->shift = x.shift;
    /* transformers, in execution order */
    U->nxf = 1;
    for (size_t i = 0; i < nb; i++) U->nxf += (size_t)x.down_cross[i] * L + (size_t)x.up_cross[i] * (L + 1);
    xname *names = calloc(U->nxf, sizeof *names);
    if (!names || !(U->xf = calloc(U->nxf, sizeof *U->xf))) {
        free(names);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    }
    int rc = IT_OK;
    size_t nx = 0, ch = U->C0, cin[64];
    if (rc == IT_OK) rc = load_conv(m, "", "conv_in", U->cin, U->C0, 3, &U->conv_in, err);
    const int64_t l1[2] = {(int64_t)U->T, (int64_t)U->C0}, l2[2] = {(int64_t)U->T, (int64_t)U->T}, tb = (int64_t)U->T;
    if (rc == IT_OK) rc = tens(m, "time_embedding.", "linear_1.weight", 2, l1, &U->l1w, err);
    if (rc == IT_OK) rc = tens(m, "time_embedding.", "linear_1.bias", 1, &tb, &U->l1b, err);
    if (rc == IT_OK) rc = tens(m, "time_embedding.", "linear_2.weight", 2, l2, &U->l2w, err);
    if (rc == IT_OK) rc = tens(m, "time_embedding.", "linear_2.bias", 1, &tb, &U->l2b, err);
    for (size_t i = 0; i < nb && rc == IT_OK; i++) {
        ublock *u = &U->down[i];
        char pfx[64];
        size_t cout = (size_t)boc[i];
        snprintf(pfx, sizeof pfx, "down_blocks.%zu.", i);
        u->nres = L;
        for (size_t j = 0; j < L; j++) cin[j] = j ? cout : ch;
        rc = load_block(m, U, u, pfx, cin, cout, x.down_cross[i], (size_t)c->attention_head_dims[i],
                        (size_t)c->transformer_layers[i], 1.0f, names, &nx, err);
        u->sampler = i + 1 < nb;
        if (rc == IT_OK && u->sampler) rc = load_conv(m, pfx, "downsamplers.0.conv", cout, cout, 3, &u->samp, err);
        ch = cout;
    }
    if (rc == IT_OK) {
        size_t top = (size_t)boc[nb - 1], mc[2] = {top, top};
        U->mid.nres = 2;
        U->mid.cout = top;
        U->mid.res = calloc(2, sizeof *U->mid.res);
        if (!U->mid.res) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
        for (size_t j = 0; j < 2 && rc == IT_OK; j++)
            rc = load_resnet(m, U, "mid_block.", j, mc[j], top, (float)x.mid_scale, &U->mid.res[j], err);
        if (rc == IT_OK) {
            U->mid.xf = &U->xf[nx];
            snprintf(names[nx].pfx, sizeof names[nx].pfx, "mid_block.attentions.0.");
            rc = load_xformer(m, names[nx].pfx, top, (size_t)c->attention_head_dims[nb - 1],
                              (size_t)c->transformer_layers[nb - 1], &U->xf[nx], &U->nkv, err);
            nx++;
        }
    }
    for (size_t i = 0; i < nb && rc == IT_OK; i++) {
        ublock *u = &U->up[i];
        char pfx[64];
        size_t r = nb - 1 - i, cout = (size_t)boc[r], prev = (size_t)boc[i ? nb - i : nb - 1];
        size_t in = (size_t)boc[nb - 1 - (i + 1 < nb ? i + 1 : nb - 1)];
        snprintf(pfx, sizeof pfx, "up_blocks.%zu.", i);
        u->nres = L + 1;
        for (size_t j = 0; j <= L; j++) cin[j] = (j ? cout : prev) + (j == L ? in : cout);
        rc = load_block(m, U, u, pfx, cin, cout, x.up_cross[i], (size_t)c->attention_head_dims[r],
                        (size_t)c->transformer_layers[r], 1.0f, names, &nx, err);
        u->sampler = i + 1 < nb;
        if (rc == IT_OK && u->sampler) rc = load_conv(m, pfx, "upsamplers.0.conv", cout, cout, 3, &u->samp, err);
    }
    if (rc == IT_OK) rc = load_gn(m, "", "conv_norm_out", U->C0, &U->norm_out, err);
    if (rc == IT_OK) rc = load_conv(m, "", "conv_out", U->C0, U->cout, 3, &U->conv_out, err);
    if (rc == IT_OK) rc = add_cross_sites(m, U, names, err);
    if (rc == IT_OK) rc = add_sites(m, U, names, c->use_linear_projection, err);
    free(names);
    return rc;
}

int it__unet_load(it_model *m, it_err *err)
{
    void *state = NULL;
    char *cfgpath = NULL;
    TRY(it__model_state(m, &UNET_OPS, sizeof(unet), &state, &cfgpath, err));
    unet *U = state;
    int rc = load_all(m, U, cfgpath, err);
    free(cfgpath);
    return rc;
}
