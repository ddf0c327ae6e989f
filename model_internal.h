/* model_internal.h -- what model.c (the generic part of a model: weights, sites, deltas, observer)
 * shares with the per-architecture forward passes in model_<arch>.c. Not part of the API. */
#ifndef ITERIS_MODEL_INTERNAL_H
#define ITERIS_MODEL_INTERNAL_H

#include "internal.h"

/* it__linear's answer when the observer asked to stop: the forward pass unwinds with it and
 * it_model_forward turns it into IT_OK. Never returned by a public function. */
#define IT__STOP (-1)

/* The architecture-specific part of a model: its forward passes and the release of its state. */
typedef struct it__model_ops {
    const char *name; /* "llama" ... (messages) */
    /* A causal language model only (else NULL): ids [n] already checked against the vocabulary
     * and the context; logits [n x vocab] or NULL (then the last site is observed but not
     * computed). IT_OK, IT__STOP or an error. */
    int (*forward)(it_model *m, const int32_t *ids, size_t n, float *logits, it_err *err);
    /* it_model_run: the sample checked by the architecture; out empty on entry, or NULL. IT_OK,
     * IT__STOP or an error (the caller frees out on failure). */
    int (*run)(it_model *m, const it_sample *s, it_outputs *out, it_err *err);
    /* it_model_generate, or NULL */
    int (*generate)(it_model *m, const int32_t *ids, size_t n, size_t max_new, int32_t **dec, size_t *ndec,
                    it_err *err);
    void (*free)(void *priv);
} it__model_ops;

struct it_model {
    it_config cfg;               /* config.json */
    char *dir;                   /* the model folder, as given */
    char *wpath;                 /* the weights file (or index) opened, for messages */
    it_st *st;                   /* the base checkpoint (mapped) */
    size_t nsites, cap_sites;
    it_model_site *sites;        /* (nsites) in execution order; names owned */
    const it_delta **delta;      /* (nsites) installed deltas, NULL = none */
    size_t ngroups;              /* groups are 0 .. ngroups-1 */
    it_observer obs;             /* or NULL */
    void *obs_ctx;
    size_t nowned, cap_owned;
    float **owned;               /* (nowned) f32 copies of tensors not stored as aligned f32 */
    float *scratch;              /* (scratch_cap) it__linear's low-rank temporaries */
    size_t scratch_cap;
    const it__model_ops *ops;
    void *priv;                  /* the architecture's state, freed by ops->free */
};

/* The f32 data of tensor name, checked to have ndim dimensions of the given sizes: a pointer into
 * the mapping when the file holds aligned f32 on a little-endian host, else an owned copy converted
 * from f16 / bf16 (other dtypes IT_EUNSUPPORTED). Absent: IT_ENOTFOUND; another shape: IT_EFORMAT;
 * both naming the file, the tensor and the expected (and actual) shape. */
int it__model_tensor(it_model *m, const char *name, size_t ndim, const int64_t *shape, const float **out,
                     it_err *err);

/* 1 when the checkpoint holds tensor name. */
int it__model_has(const it_model *m, const char *name);

/* Appends a site: name (copied), W0 = tensor wname [d_out, d_in], bias = tensor bname [d_out]
 * (bname NULL: none), or with wname NULL the given w0 (a tied weight). *index gets its number. */
int it__model_add_site(it_model *m, const char *name, size_t group, int64_t d_out, int64_t d_in, const char *wname,
                       const float *w0, const char *bname, size_t *index, it_err *err);

/* y [nrows x d_out] = x [nrows x d_in] W0^T + b, plus the installed delta computed unmerged as PEFT
 * does (tuners/lora/layer.py Linear.forward: result + lora_B(lora_A(x)) * scaling): t = x A^T
 * [nrows x r], u = t B^T [nrows x d_out], y += u * scale (float), in that order; a dense delta adds
 * x D^T. The observer sees x first; IT__STOP when it returns 1. y NULL: observe only. */
int it__linear(it_model *m, size_t site, const float *x, size_t nrows, float *y, it_err *err);

/* ids (n): 0 < n, each in [0, vocab_size); n <= max_positions unless that is 0. what names the
 * list in messages ("input_ids", "decoder_input_ids"). */
int it__check_ids(const it_model *m, const int32_t *ids, size_t n, int64_t max_positions, const char *what,
                  it_err *err);

/* Whether model m takes sample s, as it_model_run checks it (ids in the vocabulary and the context,
 * decoder ids, pixels or latents of the model's shape), at the cost of the pass up to the first
 * site: it_model_run with an observer that stops there (m's own observer is put back). Callers
 * that know the samples file prefix the error with it and the line (it_samples_complete). */
int it__model_check_sample(it_model *m, const it_sample *s, it_err *err);

/* A new output slot of out: name (static), [rows x cols] zeroed floats; NULL out of memory. */
float *it__output_add(it_outputs *out, const char *name, size_t rows, size_t cols, int eval);

/* ============================================================================================ */
/* Layers shared by the architectures (model.c), in float32 as torch computes them on a CPU      */
/* ============================================================================================ */

/* h (n, H) = rows ids (n) of embed (V, H); no scaling. */
void it__embed_rows(float *h, const float *embed, const int32_t *ids, size_t n, size_t H);

/* out (n, H) = w * (x * rsqrt(mean(x^2) + eps)) row by row: LlamaRMSNorm, T5LayerNorm (the mean of
 * the float squares accumulated in double, then rounded). out may be x. */
void it__rmsnorm(float *out, const float *x, const float *w, size_t n, size_t H, float eps);

/* out (n, H) = (x - mean) / sqrt(var + eps) * w + b row by row, var biased: nn.LayerNorm. out may be x. */
void it__layernorm(float *out, const float *x, const float *w, const float *b, size_t n, size_t H, float eps);

/* h (m) += y (m): a residual connection. */
void it__residual(float *h, const float *y, size_t m);

/* p (m) = softmax(p) in place (float32 exponentials, the sum in double). */
void it__softmax(float *p, size_t m);

/* Activations by their transformers name (ACT2FN): "relu", "gelu" (erf), "gelu_new" /
 * "gelu_pytorch_tanh" (tanh), "quick_gelu", "silu" / "swish". it__act_known: 1 when one of them. */
int it__act_known(const char *name);
void it__act_apply(const char *name, float *x, size_t m);

/* ctx (nq, nH * hd) = softmax(q k^T * scale + bias) v per head, q (nq, nH * hd), k, v (nk, nKV * hd);
 * query head h reads key/value head h / (nH / nKV). bias (nH, nq, nk) or NULL (T5's position
 * bias); causal: key j > query i gets weight exactly 0 (the finfo.min mask after the softmax).
 * Each score is the dot product in double, rounded, times scale, plus the bias. p (nk) scratch. */
void it__attention(float *ctx, const float *q, const float *k, const float *v, size_t nq, size_t nk, size_t nH,
                   size_t nKV, size_t hd, float scale, const float *bias, int causal, float *p);

/* The architecture's state for a loader: *state = size zeroed bytes, installed as m->priv with
 * m->ops = ops (it_model_free releases it through ops->free from then on), and, when cfgpath is
 * not NULL, *cfgpath = the malloc'd path of the folder's config.json (for messages). IT_ENOMEM. */
int it__model_state(it_model *m, const it__model_ops *ops, size_t size, void **state, char **cfgpath, it_err *err);

/* T5's relative position bucket of rel = key - query (model_t5.c; exposed for the tests). */
size_t it__t5_bucket(long rel, int bidirectional, size_t buckets, size_t max_distance);

/* The architectures' loaders: fill m->ops, m->priv and the site table from m->cfg and m->st. */
int it__llama_load(it_model *m, it_err *err);
int it__t5_load(it_model *m, it_err *err);
int it__clip_load(it_model *m, it_err *err);
int it__unet_load(it_model *m, it_err *err);
/* A diffusers pipeline folder (m->dir holds model_index.json): the composite of its text_encoder/
 * and unet/ (model_sd.c); m->st stays NULL. */
int it__sd_load(it_model *m, it_err *err);

#endif /* ITERIS_MODEL_INTERNAL_H */
