/* demo.c -- `iteris demo`: the whole pipeline on files it makes itself (DESIGN.md section 3).
 *
 * It writes, in the real on-disk formats, a small Llama model (HF: config.json + model.safetensors),
 * three LoRA adapters (PEFT: adapter_config.json + adapter_model.safetensors) whose tasks read
 * different parts of the vocabulary, and each task's calibration and held-out samples (JSON Lines);
 * it reads them back with the library's own readers, merges the adapters with every method and
 * evaluates each merge on the held-out samples with it_eval_task. Only public calls are used, so the
 * demo is also an end-to-end test of the readers, the writers, the forward pass and the merge.
 *
 * The construction, every number drawn from one splitmix64 stream seeded with DEMO_SEED:
 *   - vocabulary: NTASK disjoint ranges of RANGE tokens, one per task; the embedding rows of task
 *     k's tokens lie mostly in a subspace of SUB dimensions (a block of one random rotation of the
 *     hidden space), plus EMB_NOISE of isotropic noise;
 *   - base model: every projection links task k's block of its input space to task k's block of
 *     its output space, plus CROSSTALK of noise everywhere (see "The base model" below), so each
 *     task's activations stay mostly in its own subspaces at every site; norms 1;
 *   - adapter k, at each of the seven linear modules of each layer: the rows of A_k span the r_k
 *     dominant principal directions of the module's inputs while the base model reads task k's
 *     training sequences (drawn for this only, never merged or evaluated on), plus A_NOISE of
 *     noise, as a trained LoRA's A picks up the directions its task's features occupy;
 *     B_k = W0 A_k^T R_k with R_k Gaussian, scaled so that dW_k moves the module's output by GAIN of
 *     W0's on those inputs;
 *   - samples: NCAL calibration and NHELD held-out sequences per task, drawn independently from the
 *     task's range; the tasks' sequence lengths differ (TASK[k].minlen..maxlen), so they bring
 *     different numbers of calibration tokens, as real tasks do.
 * So each adapter barely touches the other tasks' inputs: a plain average dilutes every delta by
 * 1/N, while RegMean and IterIS, which weigh each task's delta by the Gram of its inputs, keep them.
 * What separates those two here is weighting, not iterating: RegMean's Grams count tokens, and its
 * off-diagonal scaling (0.9) acts as a ridge drawn mostly from the tasks with many tokens, which
 * shrinks the delta of the task with the fewest; IterIS's adaptive weights l_i give every task the
 * same say, and its ridge (ALPHA) is small. With regmean_alpha 1, RegMean comes within 3% of IterIS,
 * and IterIS's first solve is already as good as its fixed point: these tasks barely interact.
 */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================================================================================ */
/* The construction's sizes and knobs                                                            */
/* ============================================================================================ */

enum {
    HID = 64, LAYERS = 2, HEADS = 4, KV_HEADS = 2, HEAD_DIM = HID / HEADS, INTER = 128,
    NTASK = 3, RANGE = 48, VOCAB = NTASK * RANGE,
    SUB = 20, HEAD_SUB = 5, INTER_SUB = 42, /* each task's block in the hidden, head, intermediate spaces */
    NTRAIN = 24, NCAL = 24, NHELD = 8, MAXLEN = 48, /* sequences per task; the longest */
    NSITE_LAYER = 7, TMAX = 32 /* tensors in one file of ours, at most */
};

#define DEMO_SEED 20250611u
#define EMB_NOISE 0.15   /* isotropic share of an embedding row's norm */
#define A_NOISE 0.10     /* noise added to each unit row of A, relative */
#define CROSSTALK 0.2    /* links between different tasks' blocks, relative */
#define GAIN 0.6         /* ||dW x|| / ||W0 x|| on the task's own inputs, about */
#define ALPHA 1e-4       /* IterIS a1 = a2 */
#define POWER_STEPS 4    /* subspace iteration steps for A's directions */
#define ITERS 5          /* IterIS iterate schedule: at most this many solves */
#define TWO_PI 6.283185307179586

/* The tasks: their adapter's rank, lora_alpha and rsLoRA; their sequences' lengths. */
static const struct { int r, alpha, rslora, minlen, maxlen; } TASK[NTASK] = {
    {4, 8, 0, 32, 48}, {8, 16, 1, 16, 24}, {6, 6, 0, 8, 12}};

/* The methods, in the table's order. */
static const struct { const char *name; it_method method; it_schedule schedule; } METHOD[] = {
    {"iteris", IT_METHOD_ITERIS, IT_SCHEDULE_ITERATE}, {"iteris-sweep", IT_METHOD_ITERIS, IT_SCHEDULE_SWEEP},
    {"regmean", IT_METHOD_REGMEAN, IT_SCHEDULE_ITERATE}, {"linear", IT_METHOD_LINEAR, IT_SCHEDULE_ITERATE},
    {"ties", IT_METHOD_TIES, IT_SCHEDULE_ITERATE},       {"dare", IT_METHOD_DARE, IT_SCHEDULE_ITERATE}};
#define NMETHOD (sizeof METHOD / sizeof *METHOD)

static const char *const MODULE[NSITE_LAYER] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                "mlp.down_proj"};

/* ============================================================================================ */
/* Small helpers: random numbers, text, tensor files                                             */
/* ============================================================================================ */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Uniform in (0, 1) and standard normal (Box-Muller, one value per pair) from the stream s. */
static double uniform(uint64_t *s) { return ((double)(it__splitmix64(s) >> 11) + 0.5) * 0x1p-53; }

static double gauss(uint64_t *s)
{
    double u = uniform(s), v = uniform(s);
    return sqrt(-2.0 * log(u)) * cos(TWO_PI * v);
}

static void fill_gauss(float *w, size_t n, double std, uint64_t *s)
{
    for (size_t k = 0; k < n; k++) w[k] = (float)(std * gauss(s));
}

/* C [m x n] = A [m x k] op(B): op(B) = B [k x n], or B^T for B [n x k] when bt. Plain loops in
 * double, so that the files come out the same whatever kernels the machine has. */
static void matmul(double *C, const double *A, const double *B, size_t m, size_t n, size_t k, int bt)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double v = 0;
            for (size_t p = 0; p < k; p++) v += A[i * k + p] * (bt ? B[j * k + p] : B[p * n + j]);
            C[i * n + j] = v;
        }
}

/* A growing text buffer; oom set when an allocation failed. */
typedef struct tbuf {
    char *s;
    size_t len, cap;
    int oom;
} tbuf;

static void tb(tbuf *b, const char *fmt, ...) IT__PRINTF(2, 3);
static void tb(tbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 4096;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns, b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Writes a text buffer to path (atomically) and frees it. */
static int tb_save(tbuf *b, const char *path, it_err *err)
{
    int rc = b->oom || !b->s ? it__fail(err, IT_ENOMEM, "%s: out of memory", path) : it_write_text(path, b->s, err);
    free(b->s);
    *b = (tbuf){0};
    return rc;
}

/* The f32 tensors of one safetensors file, built in memory. */
typedef struct tlist {
    size_t n;
    it_tensor t[TMAX];
    uint64_t shape[TMAX][2];
    char name[TMAX][128];
    float *f[TMAX]; /* [numel] the values, row-major */
} tlist;

/* Adds a zeroed tensor [d0] (d1 = 0) or [d0, d1]; its values, or NULL when out of room or memory. */
static float *tl_add(tlist *l, const char *name, size_t d0, size_t d1)
{
    size_t k = l->n, numel = d0 * (d1 ? d1 : 1);
    float *f = k < TMAX ? it__calloc(numel, sizeof *f) : NULL;
    if (!f) return NULL;
    snprintf(l->name[k], sizeof l->name[k], "%s", name);
    l->shape[k][0] = d0, l->shape[k][1] = d1;
    l->t[k] = (it_tensor){l->name[k], IT_F32, d1 ? 2 : 1, l->shape[k], numel, numel * 4, NULL, 0, 0};
    l->f[k] = f;
    l->n++;
    return f;
}

/* Saves the tensors as little-endian F32 with the metadata {"format": "pt"} that torch writes. */
static int tl_save(tlist *l, const char *path, it_err *err)
{
    unsigned char *bytes[TMAX] = {0};
    int rc = IT_OK;
    for (size_t k = 0; rc == IT_OK && k < l->n; k++) {
        bytes[k] = malloc(l->t[k].nbytes);
        rc = bytes[k] ? it_f32_encode(bytes[k], IT_F32, l->f[k], l->t[k].numel, err)
                      : it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        l->t[k].data = bytes[k];
    }
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    if (rc == IT_OK) rc = it_st_save(path, l->t, l->n, mk, mv, 1, err);
    for (size_t k = 0; k < l->n; k++) free(bytes[k]);
    return rc;
}

static void tl_free(tlist *l)
{
    for (size_t k = 0; k < l->n; k++) free(l->f[k]);
    l->n = 0;
}

/* dir/rel into path [4096] ("" if it did not fit: it_demo_run has checked that the folder leaves room). */
static const char *at(char *path, const char *dir, const char *rel)
{
    int n = snprintf(path, 4096, "%s/%s", dir, rel);
    if (n < 0 || n >= 4096) path[0] = 0;
    return path;
}

/* ============================================================================================ */
/* The base model: base/config.json and base/model.safetensors (FACTS.md 4.2)                    */
/* ============================================================================================ */

/*
 * Each space a weight reads or writes is cut into one block per task and a remainder:
 *   hidden (HID)            blocks of SUB coordinates after a random rotation Q, so that the
 *                           blocks are generic subspaces, not coordinate axes;
 *   heads (q, k, v, o_proj's input)  in each head's HEAD_DIM coordinates, blocks of HEAD_SUB;
 *   intermediate (INTER)    blocks of INTER_SUB coordinates (silu(gate) * up acts per coordinate);
 *   free                    the outputs of q_proj and k_proj, which only score the tokens of one
 *                           sequence against each other.
 * A weight links each input block to the output block of the same task (every input to a free
 * output), Gaussian with variance 1 / (linked inputs), plus CROSSTALK times Gaussian noise of
 * variance 1 / d_in everywhere: a model in which the three vocabularies share little, as languages
 * with different scripts do. Task k's activations stay mostly in its own blocks at every site.
 */
typedef enum { SP_HIDDEN, SP_HEADS, SP_INTER, SP_FREE } space;

/* The task whose block holds coordinate i (rotated coordinates for SP_HIDDEN); -1: the remainder. */
static int block_of(space sp, size_t i)
{
    size_t j = sp == SP_HEADS ? i % HEAD_DIM : i;
    size_t w = sp == SP_HIDDEN ? SUB : sp == SP_HEADS ? HEAD_SUB : INTER_SUB;
    return j < NTASK * w ? (int)(j / w) : -1;
}

static int linked(space out, size_t o, space in, size_t i)
{
    return out == SP_FREE || (block_of(out, o) >= 0 && block_of(out, o) == block_of(in, i));
}

/* Orthonormalises the rows of A [r x n] in place (modified Gram-Schmidt). */
static void orth_rows(double *A, size_t r, size_t n)
{
    for (size_t j = 0; j < r; j++) {
        double *a = A + j * n, nrm = 0;
        for (size_t p = 0; p < j; p++) {
            double d = 0;
            for (size_t i = 0; i < n; i++) d += A[p * n + i] * a[i];
            for (size_t i = 0; i < n; i++) a[i] -= d * A[p * n + i];
        }
        for (size_t i = 0; i < n; i++) nrm += a[i] * a[i];
        for (size_t i = 0; i < n; i++) a[i] /= sqrt(nrm);
    }
}

/* Q [HID x HID], a random rotation: orthonormal rows, hence orthonormal columns. */
static void random_rotation(double *Q, uint64_t *s)
{
    for (size_t k = 0; k < (size_t)HID * HID; k++) Q[k] = gauss(s);
    orth_rows(Q, HID, HID);
}

/* W [dout x din] = Ro Wb Ri^T: Wb the block-linked Gaussian weight in block coordinates, Ro and Ri
 * the rotation Q for a hidden space, the identity otherwise. */
static int fill_proj(float *W, size_t dout, size_t din, space out, space in, const double *Q, uint64_t *s)
{
    double *Wb = it__malloc_n(dout * din, sizeof *Wb), *T = it__malloc_n(dout * din, sizeof *T);
    for (size_t o = 0; Wb && T && o < dout; o++) {
        size_t nl = 0;
        for (size_t i = 0; i < din; i++) nl += (size_t)linked(out, o, in, i);
        for (size_t i = 0; i < din; i++)
            Wb[o * din + i] = (linked(out, o, in, i) ? gauss(s) / sqrt((double)nl) : 0.0) +
                              CROSSTALK * gauss(s) / sqrt((double)din);
    }
    if (Wb && T && out == SP_HIDDEN) matmul(T, Q, Wb, dout, din, dout, 0), memcpy(Wb, T, dout * din * sizeof *T);
    if (Wb && T && in == SP_HIDDEN) matmul(T, Wb, Q, dout, din, din, 1), memcpy(Wb, T, dout * din * sizeof *T);
    for (size_t k = 0; Wb && T && k < dout * din; k++) W[k] = (float)Wb[k];
    int rc = Wb && T ? IT_OK : IT_ENOMEM;
    free(Wb), free(T);
    return rc;
}

/* E [VOCAB x HID]: token t of task k = t / RANGE is Q (c + n), c standard normal on block k's SUB
 * coordinates, n isotropic noise with EMB_NOISE of c's expected norm. */
static void fill_embeddings(float *E, const double *Q, uint64_t *s)
{
    double e[HID], row[HID];
    for (size_t t = 0; t < VOCAB; t++) {
        for (size_t j = 0; j < HID; j++)
            e[j] = EMB_NOISE * sqrt((double)SUB / HID) * gauss(s) +
                   (block_of(SP_HIDDEN, j) == (int)(t / RANGE) ? gauss(s) : 0.0);
        matmul(row, Q, e, HID, 1, HID, 0);
        for (size_t i = 0; i < HID; i++) E[t * HID + i] = (float)row[i];
    }
}

/* config.json as transformers 4.40 writes a LlamaConfig (keys sorted, two-space indent). */
static int write_config(const char *path, it_err *err)
{
    tbuf b = {0};
    tb(&b,
       "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n  \"attention_bias\": false,\n"
       "  \"attention_dropout\": 0.0,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"hidden_act\": \"silu\",\n"
       "  \"hidden_size\": %d,\n  \"initializer_range\": 0.02,\n  \"intermediate_size\": %d,\n"
       "  \"max_position_embeddings\": 128,\n  \"model_type\": \"llama\",\n  \"num_attention_heads\": %d,\n"
       "  \"num_hidden_layers\": %d,\n  \"num_key_value_heads\": %d,\n  \"pretraining_tp\": 1,\n"
       "  \"rms_norm_eps\": 1e-06,\n  \"rope_scaling\": null,\n  \"rope_theta\": 10000.0,\n"
       "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"float32\",\n  \"transformers_version\": \"4.40.2\",\n"
       "  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n",
       HID, INTER, HEADS, LAYERS, KV_HEADS, VOCAB);
    return tb_save(&b, path, err);
}

/* Every tensor of LlamaForCausalLM: norms 1, the projections block-linked, lm_head Gaussian. */
static int write_base(const char *dir, uint64_t *s, it_err *err)
{
    static const size_t dims[NSITE_LAYER][2] = {{HEADS * HEAD_DIM, HID}, {KV_HEADS * HEAD_DIM, HID},
                                                {KV_HEADS * HEAD_DIM, HID}, {HID, HEADS * HEAD_DIM},
                                                {INTER, HID}, {INTER, HID}, {HID, INTER}};
    static const space spaces[NSITE_LAYER][2] = {{SP_FREE, SP_HIDDEN},  {SP_FREE, SP_HIDDEN},  {SP_HEADS, SP_HIDDEN},
                                                 {SP_HIDDEN, SP_HEADS}, {SP_INTER, SP_HIDDEN}, {SP_INTER, SP_HIDDEN},
                                                 {SP_HIDDEN, SP_INTER}}; /* (output, input) */
    double Q[HID * HID];
    tlist l = {0};
    char name[128], path[4096];
    random_rotation(Q, s);
    float *w = tl_add(&l, "model.embed_tokens.weight", VOCAB, HID);
    int ok = w != NULL;
    if (ok) fill_embeddings(w, Q, s);
    for (size_t ly = 0; ok && ly < LAYERS; ly++) {
        for (size_t k = 0; ok && k < NSITE_LAYER; k++) {
            snprintf(name, sizeof name, "model.layers.%zu.%s.weight", ly, MODULE[k]);
            ok = (w = tl_add(&l, name, dims[k][0], dims[k][1])) != NULL &&
                 fill_proj(w, dims[k][0], dims[k][1], spaces[k][0], spaces[k][1], Q, s) == IT_OK;
        }
        const char *norms[2] = {"input_layernorm", "post_attention_layernorm"};
        for (size_t k = 0; ok && k < 2; k++) {
            snprintf(name, sizeof name, "model.layers.%zu.%s.weight", ly, norms[k]);
            ok = (w = tl_add(&l, name, HID, 0)) != NULL;
            for (size_t i = 0; ok && i < HID; i++) w[i] = 1.0f;
        }
    }
    if (ok && (ok = (w = tl_add(&l, "model.norm.weight", HID, 0)) != NULL))
        for (size_t i = 0; i < HID; i++) w[i] = 1.0f;
    if (ok && (ok = (w = tl_add(&l, "lm_head.weight", VOCAB, HID)) != NULL))
        fill_gauss(w, (size_t)VOCAB * HID, 1.0 / sqrt((double)HID), s);
    int rc = ok ? tl_save(&l, at(path, dir, "model.safetensors"), err)
                : it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    if (rc == IT_OK) rc = write_config(at(path, dir, "config.json"), err);
    tl_free(&l);
    return rc;
}

/* ============================================================================================ */
/* Samples: data/task<k>.jsonl (calibration) and data/task<k>_heldout.jsonl                     */
/* ============================================================================================ */

/* One sequence of task k: minlen..maxlen tokens drawn uniformly from the task's range. */
static size_t draw_sequence(int32_t *ids, size_t task, uint64_t *s)
{
    size_t lo = (size_t)TASK[task].minlen, hi = (size_t)TASK[task].maxlen;
    size_t n = lo + (size_t)(uniform(s) * (double)(hi - lo + 1));
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(task * RANGE + (size_t)(uniform(s) * RANGE));
    return n;
}

/* count sequences of task k as JSON Lines {"input_ids": [...]}. */
static int write_samples(const char *path, size_t task, size_t count, uint64_t *s, it_err *err)
{
    tbuf b = {0};
    int32_t ids[MAXLEN];
    for (size_t q = 0; q < count; q++) {
        size_t n = draw_sequence(ids, task, s);
        tb(&b, "{\"input_ids\": [");
        for (size_t i = 0; i < n; i++) tb(&b, "%s%d", i ? ", " : "", (int)ids[i]);
        tb(&b, "]}\n");
    }
    return tb_save(&b, path, err);
}

/* ============================================================================================ */
/* Adapters: adapters/task<k>/adapter_config.json and adapter_model.safetensors                  */
/* ============================================================================================ */

/* The observer that adds each site's input rows to its Gram G[site] [d_in x d_in] (upper triangle;
 * NULL: the site is not watched). */
typedef struct gram_ctx {
    double **G;
    int failed;
} gram_ctx;

static int gram_observer(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    gram_ctx *c = ctx;
    if (c->G[site] && it_gram(c->G[site], d_in, x, d_in, nrows, d_in) != IT_OK) c->failed = 1;
    return c->failed;
}

/* Gram of every site but lm_head while the base model reads NTRAIN training sequences of task k. */
static int task_grams(it_model *m, size_t task, double **G, uint64_t *s, it_err *err)
{
    size_t nsites = it_model_site_count(m);
    int rc = IT_OK;
    for (size_t i = 0; rc == IT_OK && i + 1 < nsites; i++) {
        size_t d = (size_t)it_model_site_at(m, i)->d_in;
        if (!(G[i] = it__calloc(d * d, sizeof **G))) rc = it__fail(err, IT_ENOMEM, "out of memory");
    }
    gram_ctx c = {G, 0};
    int32_t ids[MAXLEN];
    it_model_clear_deltas(m);
    it_model_set_observer(m, gram_observer, &c);
    for (size_t q = 0; rc == IT_OK && q < NTRAIN; q++) {
        size_t n = draw_sequence(ids, task, s);
        rc = it_model_forward(m, ids, n, NULL, err);
        if (rc == IT_OK && c.failed) rc = it__fail(err, IT_ENOMEM, "out of memory");
    }
    it_model_set_observer(m, NULL, NULL);
    return rc;
}

/* tr(M G M^T) for M [dout x din], G [din x din] symmetric: M's output energy on the rows G sums;
 * MG [dout x din] is scratch. */
static double out_energy(const double *M, const double *G, double *MG, size_t dout, size_t din)
{
    double e = 0;
    matmul(MG, M, G, dout, din, din, 0);
    for (size_t k = 0; k < dout * din; k++) e += MG[k] * M[k];
    return e;
}

/* One site's factors A [r x din], B [dout x r] for the Gram G [din x din] (upper triangle) of the
 * task's inputs and the base weight W0: A's rows span G's dominant r-dimensional eigenspace (the
 * directions the inputs occupy; POWER_STEPS of subspace iteration A <- orth(A G) from a Gaussian
 * start, Golub & Van Loan 8.2.4), plus A_NOISE noise; B = W0 A^T R with R [r x r] Gaussian, so that the change stays
 * among the outputs W0 gives those directions, scaled so that the change's energy on the task's
 * inputs is GAIN^2 times the base's: tr(dW G dW^T) = GAIN^2 tr(W0 G W0^T), dW = scale B A. */
static int site_factors(double *G, const float *W0, size_t dout, size_t din, size_t r, double scale, float *A,
                        float *B, uint64_t *s, it_err *err)
{
    size_t nd = dout * din;
    double *Ad = it__malloc_n(r * din, sizeof *Ad), *R = it__malloc_n(r * r, sizeof *R);
    double *W = it__malloc_n(nd, sizeof *W), *M = it__malloc_n(nd, sizeof *M), *MG = it__malloc_n(nd, sizeof *MG);
    double *WA = it__malloc_n(dout * r, sizeof *WA), *Bd = it__malloc_n(dout * r, sizeof *Bd);
    if (!Ad || !R || !W || !M || !MG || !WA || !Bd) {
        free(Ad), free(R), free(W), free(M), free(MG), free(WA), free(Bd);
        return it__fail(err, IT_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < din; i++) /* mirror the upper triangle */
        for (size_t j = 0; j < i; j++) G[i * din + j] = G[j * din + i];
    for (size_t k = 0; k < r * din; k++) Ad[k] = gauss(s);
    for (int step = 0; step < POWER_STEPS; step++) {
        matmul(MG, Ad, G, r, din, din, 0); /* MG as scratch [r x din], r <= dout */
        memcpy(Ad, MG, r * din * sizeof *Ad);
        orth_rows(Ad, r, din);
    }
    for (size_t k = 0; k < r * din; k++) Ad[k] += A_NOISE * gauss(s) / sqrt((double)din);
    for (size_t k = 0; k < r * r; k++) R[k] = gauss(s);
    for (size_t k = 0; k < nd; k++) W[k] = W0[k];
    matmul(WA, W, Ad, dout, r, din, 1); /* W0 A^T */
    matmul(Bd, WA, R, dout, r, r, 0);   /* B = W0 A^T R */
    matmul(M, Bd, Ad, dout, din, r, 0); /* dW / scale */
    double c = GAIN / scale * sqrt(out_energy(W, G, MG, dout, din) / out_energy(M, G, MG, dout, din));
    for (size_t k = 0; k < r * din; k++) A[k] = (float)Ad[k];
    for (size_t k = 0; k < dout * r; k++) B[k] = (float)(c * Bd[k]);
    free(Ad), free(R), free(W), free(M), free(MG), free(WA), free(Bd);
    return IT_OK;
}

/* adapter_config.json as peft 0.10 writes it (keys sorted, two-space indent). */
static int write_adapter_config(const char *path, size_t task, it_err *err)
{
    tbuf b = {0};
    tb(&b, "{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": \"base\",\n"
           "  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n"
           "  \"init_lora_weights\": false,\n  \"layer_replication\": null,\n  \"layers_pattern\": null,\n"
           "  \"layers_to_transform\": null,\n  \"loftq_config\": {},\n  \"lora_alpha\": %d,\n"
           "  \"lora_dropout\": 0.0,\n  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
           "  \"modules_to_save\": null,\n  \"peft_type\": \"LORA\",\n  \"r\": %d,\n  \"rank_pattern\": {},\n"
           "  \"revision\": null,\n  \"target_modules\": [\n",
       TASK[task].alpha, TASK[task].r);
    for (size_t k = 0; k < NSITE_LAYER; k++)
        tb(&b, "    \"%s\"%s\n", strchr(MODULE[k], '.') + 1, k + 1 < NSITE_LAYER ? "," : "");
    tb(&b, "  ],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": false,\n  \"use_rslora\": %s\n}\n",
       TASK[task].rslora ? "true" : "false");
    return tb_save(&b, path, err);
}

/* Adapter k in folder dir, its factors shaped by task k's inputs to the base model m. */
static int write_adapter(it_model *m, size_t task, const char *dir, uint64_t *s, it_err *err)
{
    size_t nsites = it_model_site_count(m), r = (size_t)TASK[task].r;
    double alpha = TASK[task].alpha, scale = TASK[task].rslora ? alpha / sqrt((double)r) : alpha / (double)r;
    double **G = it__calloc(nsites, sizeof *G);
    int rc = G ? task_grams(m, task, G, s, err) : it__fail(err, IT_ENOMEM, "out of memory");
    tlist l = {0};
    char name[128], path[4096];
    for (size_t i = 0; rc == IT_OK && i + 1 < nsites; i++) { /* every site but lm_head */
        const it_model_site *ms = it_model_site_at(m, i);
        snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", ms->name);
        float *A = tl_add(&l, name, r, (size_t)ms->d_in);
        snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", ms->name);
        float *B = A ? tl_add(&l, name, (size_t)ms->d_out, r) : NULL;
        rc = B ? site_factors(G[i], ms->w0, (size_t)ms->d_out, (size_t)ms->d_in, r, scale, A, B, s, err)
               : it__fail(err, IT_ENOMEM, "out of memory");
    }
    if (rc == IT_OK) rc = it_make_dir(dir, err);
    if (rc == IT_OK) rc = tl_save(&l, at(path, dir, "adapter_model.safetensors"), err);
    if (rc == IT_OK) rc = write_adapter_config(at(path, dir, "adapter_config.json"), task, err);
    for (size_t i = 0; G && i < nsites; i++) free(G[i]);
    free(G);
    tl_free(&l);
    return rc;
}

/* ============================================================================================ */
/* Building the folder                                                                           */
/* ============================================================================================ */

static void say(void (*progress)(void *, const char *), void *ctx, const char *fmt, ...) IT__PRINTF(3, 4);
static void say(void (*progress)(void *, const char *), void *ctx, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (progress) progress(ctx, line);
}

/* The folder: dir (created), or a fresh mkdtemp folder under $TMPDIR or /tmp, into out [4096]. */
static int make_root(const char *dir, char *out, it_err *err)
{
    if (dir) {
        if (strlen(dir) > 4096 - 64) return it__fail(err, IT_EINVAL, "demo: the folder name is too long");
        snprintf(out, 4096, "%s", dir);
        return it_make_dir(dir, err);
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    if (strlen(tmp) > 4096 - 96) return it__fail(err, IT_EINVAL, "demo: $TMPDIR is too long");
    snprintf(out, 4096, "%s/iteris-demo-XXXXXX", tmp);
    if (!mkdtemp(out)) return it__fail(err, IT_EIO, "%s: cannot create a temporary folder", out);
    return IT_OK;
}

/* base/, data/ and adapters/ under root; the adapters are shaped on the base model read back. */
static int build_files(const char *root, uint64_t *s, void (*progress)(void *, const char *), void *ctx, it_err *err)
{
    char path[4096], rel[64], desc[512];
    int rc = it_make_dir(at(path, root, "base"), err);
    if (rc == IT_OK) rc = write_base(path, s, err);
    if (rc == IT_OK) rc = it_make_dir(at(path, root, "data"), err);
    for (size_t k = 0; rc == IT_OK && k < NTASK; k++) {
        snprintf(rel, sizeof rel, "data/task%zu.jsonl", k + 1);
        rc = write_samples(at(path, root, rel), k, NCAL, s, err);
        snprintf(rel, sizeof rel, "data/task%zu_heldout.jsonl", k + 1);
        if (rc == IT_OK) rc = write_samples(at(path, root, rel), k, NHELD, s, err);
    }
    it_model *m = NULL;
    if (rc == IT_OK) rc = it_model_load(&m, at(path, root, "base"), err);
    if (rc == IT_OK) {
        it_config_describe(it_model_config(m), desc, sizeof desc);
        say(progress, ctx, "base: %s", desc);
        say(progress, ctx, "data: %d calibration and %d held-out sequences per task, task k reads tokens "
            "[%d(k-1), %dk)", NCAL, NHELD, RANGE, RANGE);
    }
    if (rc == IT_OK) rc = it_make_dir(at(path, root, "adapters"), err);
    for (size_t k = 0; rc == IT_OK && k < NTASK; k++) {
        snprintf(rel, sizeof rel, "adapters/task%zu", k + 1);
        rc = write_adapter(m, k, at(path, root, rel), s, err);
        if (rc == IT_OK)
                say(progress, ctx, "%s: r %d, lora_alpha %d%s, all 7 modules of each layer; sequences of %d-%d tokens",
                rel, TASK[k].r, TASK[k].alpha, TASK[k].rslora ? ", rsLoRA" : "", TASK[k].minlen, TASK[k].maxlen);
    }
    it_model_free(m);
    return rc;
}

/* ============================================================================================ */
/* Merging and evaluating                                                                        */
/* ============================================================================================ */

/* What the merges read: the files, loaded back with the library's readers. */
typedef struct demo_inputs {
    it_model *m;
    it_adapter *ad[NTASK];
    it_samples *cal[NTASK], *held[NTASK];
    const it_sample **calp[NTASK], **heldp[NTASK]; /* [n] pointers into cal, held */
} demo_inputs;

static void inputs_free(demo_inputs *in)
{
    for (size_t k = 0; k < NTASK; k++) {
        it_adapter_free(in->ad[k]);
        it_samples_free(in->cal[k]), it_samples_free(in->held[k]);
        free(in->calp[k]), free(in->heldp[k]);
    }
    it_model_free(in->m);
}

static int load_samples(const char *path, it_samples **s, const it_sample ***p, it_err *err)
{
    int rc = it_samples_load(s, path, err);
    if (rc == IT_OK && !(*p = it__calloc((*s)->n, sizeof **p))) rc = it__fail(err, IT_ENOMEM, "out of memory");
    for (size_t i = 0; rc == IT_OK && i < (*s)->n; i++) (*p)[i] = &(*s)->s[i];
    return rc;
}

static int inputs_load(demo_inputs *in, const char *root, it_err *err)
{
    char path[4096], rel[64];
    int rc = it_model_load(&in->m, at(path, root, "base"), err);
    for (size_t k = 0; rc == IT_OK && k < NTASK; k++) {
        snprintf(rel, sizeof rel, "adapters/task%zu", k + 1);
        rc = it_adapter_load(&in->ad[k], at(path, root, rel), err);
        snprintf(rel, sizeof rel, "data/task%zu.jsonl", k + 1);
        if (rc == IT_OK) rc = load_samples(at(path, root, rel), &in->cal[k], &in->calp[k], err);
        snprintf(rel, sizeof rel, "data/task%zu_heldout.jsonl", k + 1);
        if (rc == IT_OK) rc = load_samples(at(path, root, rel), &in->held[k], &in->heldp[k], err);
    }
    return rc;
}

/* Merges with METHOD[which] on the calibration samples, then evaluates each task on its held-out ones. */
static int run_method(demo_inputs *in, size_t which, it_demo_method *out, it_err *err)
{
    it_merge_opts o;
    it_merge_opts_default(&o);
    o.solve.method = METHOD[which].method, o.schedule = METHOD[which].schedule, o.iters = ITERS;
    o.solve.alpha1 = o.solve.alpha2 = ALPHA;
    o.solve.seed = DEMO_SEED; /* DARE's masks */
    it_task tasks[NTASK];
    for (size_t k = 0; k < NTASK; k++) tasks[k] = (it_task){in->ad[k], in->calp[k], in->cal[k]->n};
    snprintf(out->name, sizeof out->name, "%s", METHOD[which].name);
    double t0 = now_seconds();
    it_merge_result *r = NULL;
    int rc = it_merge(in->m, tasks, NTASK, &o, &r, err);
    out->seconds = now_seconds() - t0;
    size_t *site = rc == IT_OK ? it__calloc(r->nsites + 1, sizeof *site) : NULL;
    if (rc == IT_OK && !site) rc = it__fail(err, IT_ENOMEM, "out of memory");
    for (size_t s = 0; rc == IT_OK && s < r->nsites; s++)
        if (it_model_find_site(in->m, r->sites[s].name, &site[s]) != IT_OK)
            rc = it__fail(err, IT_ENOTFOUND, "demo: %s is not a site of the model", r->sites[s].name);
    out->mean_rel_err = 0;
    for (size_t k = 0; rc == IT_OK && k < NTASK; k++) {
        rc = it_eval_task(in->m, in->ad[k], r->deltas, site, r->nsites, NULL, in->heldp[k], in->held[k]->n,
                          &out->task[k], err);
        out->mean_rel_err += out->task[k].rel_err / NTASK;
    }
    it_model_clear_deltas(in->m); /* they point into r */
    it_merge_result_free(r);
    free(site);
    return rc;
}

int it_demo_run(const char *dir, it_demo_result *out, void (*progress)(void *ctx, const char *line), void *ctx,
                it_err *err)
{
    memset(out, 0, sizeof *out);
    double t0 = now_seconds();
    uint64_t s = DEMO_SEED;
    int rc = make_root(dir, out->dir, err);
    if (rc == IT_OK) say(progress, ctx, "folder: %s", out->dir);
    if (rc == IT_OK) rc = build_files(out->dir, &s, progress, ctx, err);
    demo_inputs in = {0};
    if (rc == IT_OK) rc = inputs_load(&in, out->dir, err);
    out->ntasks = NTASK;
    for (size_t k = 0; rc == IT_OK && k < NMETHOD; k++) {
        rc = run_method(&in, k, &out->method[k], err);
        if (rc == IT_OK)
            say(progress, ctx, "%-12s merged in %.3f s, mean held-out rel_err %.4f", out->method[k].name,
                out->method[k].seconds, out->method[k].mean_rel_err);
        out->nmethods = k + 1;
    }
    inputs_free(&in);
    out->seconds = now_seconds() - t0;
    return rc;
}
