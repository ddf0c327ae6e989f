/* model_internal.h -- what model.c (the generic part of a model: weights, sites, deltas, observer)
 * shares with the per-architecture forward passes in model_<arch>.c. Not part of the API. */
#ifndef ITERIS_MODEL_INTERNAL_H
#define ITERIS_MODEL_INTERNAL_H

#include "internal.h"

/* it__linear's answer when the observer asked to stop: the forward pass unwinds with it and
 * it_model_forward turns it into IT_OK. Never returned by a public function. */
#define IT__STOP (-1)

/* The architecture-specific part of a model: its forward pass and the release of its state. */
typedef struct it__model_ops {
    const char *name; /* "llama" ... (messages) */
    /* ids [n] already checked against the vocabulary and the context; logits [n x vocab] or NULL
     * (then the last site is observed but not computed). IT_OK, IT__STOP or an error. */
    int (*forward)(it_model *m, const int32_t *ids, size_t n, float *logits, it_err *err);
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

/* The architectures' loaders: fill m->ops, m->priv and the site table from m->cfg and m->st. */
int it__llama_load(it_model *m, it_err *err);

#endif /* ITERIS_MODEL_INTERNAL_H */
