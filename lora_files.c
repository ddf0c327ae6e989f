/* lora_files.c -- LoRA adapter files read into modules in one linear view, dW = scale * B A: PEFT folders
 * (FACTS.md 2.1-2.4), kohya and diffusers Stable Diffusion files (FACTS 3.1-3.3); tensor keys, loading,
 * kohya name resolution, deltas. PEFT's configuration and its target and pattern rules are lora.c's
 * (lora_internal.h).
 *
 * Reference readers, as read for this file: transformers src/transformers/integrations/peft.py
 * (PeftAdapterMixin.load_adapter strips "base_model.model." where a key has it); peft
 * src/peft/utils/save_and_load.py (get_peft_model_state_dict: save_embedding_layers, trainable tokens);
 * diffusers src/diffusers/loaders/lora_base.py @7d568273 (2025: LORA_ADAPTER_METADATA_KEY,
 * _save_lora_weights, write_lora_layers, _load_lora_into_text_encoder), and of the same period
 * loaders/peft.py load_lora_adapter, utils/peft_utils.py get_peft_kwargs and _create_lora_config,
 * utils/state_dict_utils.py _load_sft_state_dict_metadata (FACTS 3.2, 3.3 read diffusers 58eb52c0).
 */
#include "lora_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RANK_LIMIT INT64_C(2147483647)
#define PEFT_PREFIX "base_model.model."

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

/* ============================================================================================ */
/* Adapters: tensor keys -> (component, module, role)                                            */
/* ============================================================================================ */

enum { ROLE_A, ROLE_B, ROLE_ALPHA };
static const char *const role_name[] = {"lora_A", "lora_B", "alpha"};

/* The components of a Stable Diffusion file (FACTS 3.2), and their index in a loader's arrays. */
enum { NCOMP = 3 };
static const char *const comp_name[NCOMP] = {"unet", "text_encoder", "text_encoder_2"};

static int comp_index(const char *comp)
{
    for (int i = 0; i < NCOMP; i++)
        if (!strcmp(comp, comp_name[i])) return i;
    return -1;
}

/* One tensor of the file, placed. */
typedef struct entry {
    const char *comp;   /* static: "", "unet", "text_encoder", "text_encoder_2" */
    char *module;       /* module path (kohya: the kohya name); malloc'd, moved into the module */
    int role;           /* ROLE_* */
    int embedding;      /* lora_embedding_A / _B (FACTS 2.3) */
    const it_tensor *t;
} entry;

typedef struct loader {
    it_adapter *a;
    const char *file;   /* the .safetensors file: messages name it */
    const char *config; /* adapter_config.json (PEFT), for messages about the config */
    it_st *st;
    it__lora_matcher *m; /* PEFT: the config's patterns, compiled once */
    int peft_prefix;    /* PEFT: the keys carry "base_model.model." */
    /* diffusers files, per component (comp_name order) */
    it_lora_config meta_cfg[NCOMP];   /* the LoraConfig of lora_adapter_metadata ... */
    it__lora_matcher *meta[NCOMP];    /* ... and its patterns (NULL: no metadata for the component) */
    int has_alpha[NCOMP];             /* the component has alpha tensors */
    int64_t first_r[NCOMP];           /* the rank of diffusers' first lora_B (0: none) */
    entry *e;           /* [ne] */
    size_t ne;
    it_err *err;
} loader;

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int ends(const char *s, size_t len, const char *suffix)
{
    size_t l = strlen(suffix);
    return len >= l && memcmp(s + len - l, suffix, l) == 0;
}

/* A tensor name fit for a one-line message: control bytes escaped, long names cut. */
static const char *shown(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    for (; *s && o + 8 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != 0x7f) buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    }
    if (*s) memcpy(buf + o, "...", 3), o += 3;
    buf[o] = 0;
    return buf;
}

/* A refused tensor: "<file>: tensor \"<key>\": <why>". */
static int bad_key(loader *L, int code, const it_tensor *t, const char *why)
{
    char k[200];
    return it__fail(L->err, code, "%s: tensor \"%s\": %s", L->file, shown(t->name, k, sizeof k), why);
}

static int add_entry(loader *L, const char *comp, const char *module, size_t len, int role, int emb,
                     const it_tensor *t)
{
    if (len == 0) return bad_key(L, IT_EFORMAT, t, "no module path before the LoRA suffix");
    entry *e = &L->e[L->ne];
    e->module = it__strndup(module, len);
    if (!e->module) return it__fail(L->err, IT_ENOMEM, "%s: out of memory", L->file);
    e->comp = comp, e->role = role, e->embedding = emb, e->t = t;
    L->ne++;
    return IT_OK;
}

/* ---- PEFT (FACTS 2.4): [base_model.model.]<module>.lora_A.weight ---- */

static const struct {
    const char *suffix;
    int role, emb;
} peft_suffix[] = {
    {".lora_A.weight", ROLE_A, 0},         {".lora_B.weight", ROLE_B, 0},
    {".lora_embedding_A", ROLE_A, 1},      {".lora_embedding_B", ROLE_B, 1},
    /* the in-memory names (adapter "default"), which save_pretrained strips; accepted as the same */
    {".lora_A.default.weight", ROLE_A, 0}, {".lora_B.default.weight", ROLE_B, 0},
    {".lora_embedding_A.default", ROLE_A, 1}, {".lora_embedding_B.default", ROLE_B, 1},
};

/* The embedding layers get_peft_model_state_dict saves whole with save_embedding_layers (peft's
 * EMBEDDING_LAYER_NAMES, and the names transformers' models give their input embeddings). */
static int embedding_copy(const char *key, size_t len)
{
    static const char *const names[] = {"embed_tokens", "lm_head", "wte", "shared", "word_embeddings", "embed_in",
                                        "embed_out"};
    if (ends(key, len, ".base_layer.weight")) return 1; /* the base layer of a LoRA-wrapped embedding */
    if (!ends(key, len, ".weight")) return 0;
    size_t end = len - 7, start = end;
    while (start > 0 && key[start - 1] != '.') start--;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (end - start == strlen(names[i]) && !memcmp(key + start, names[i], end - start)) return 1;
    return 0;
}

/* A tensor that is not lora_A / lora_B: say why PEFT would have written it, and refuse it. */
static int peft_other(loader *L, const it_tensor *t, const char *key, size_t len)
{
    char why[240];
    if (strstr(key, "lora_magnitude_vector"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a DoRA magnitude vector: DoRA adapters change the forward pass "
                                              "and are not supported (only plain LoRA is merged)");
    if (ends(key, len, ".lora_B.bias") || ends(key, len, ".lora_B.default.bias"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a lora_B bias (lora_bias): not supported");
    if (strstr(key, "trainable_tokens_delta") || strstr(key, "trainable_tokens_original"))
        return bad_key(L, IT_EUNSUPPORTED, t, "trainable tokens (trainable_token_indices) replace rows of the base "
                                              "embedding; not supported");
    int saved = 0, rc = it__lora_saved(L->m, key, &saved, L->err);
    if (rc != IT_OK) return it__err_prefix(L->err, L->file), rc;
    if (saved || strstr(key, "modules_to_save") || strstr(key, ".original_module"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a modules_to_save copy, which replaces a whole module of the base "
                                              "model: not supported (only LoRA deltas are merged)");
    if (ends(key, len, ".bias") && strcmp(L->a->cfg.bias, "none") != 0) {
        snprintf(why, sizeof why, "a base-layer bias (bias \"%s\" in adapter_config.json), which replaces the "
                                  "base model's bias: not supported", L->a->cfg.bias);
        return bad_key(L, IT_EUNSUPPORTED, t, why);
    }
    if (embedding_copy(key, len))
        return bad_key(L, IT_EUNSUPPORTED, t, "a full copy of the base embedding (save_embedding_layers) replaces "
                                              "base weights; not supported");
    return bad_key(L, IT_EFORMAT, t, "not a tensor of a PEFT LoRA adapter (expected <module>.lora_A.weight, "
                                     "<module>.lora_B.weight, or lora_embedding_A / lora_embedding_B)");
}

/* PEFT saves every key under "base_model.model."; transformers' load_adapter strips it where a key has
 * it and takes the others as they are, so files written without it load too. A file that mixes the two
 * is refused (no writer produces one). */
static int peft_prefix(loader *L)
{
    const it_tensor *with = NULL, *without = NULL;
    for (size_t i = 0, n = it_st_count(L->st); i < n; i++) {
        const it_tensor *t = it_st_tensor(L->st, i);
        if (starts(t->name, PEFT_PREFIX)) with = with ? with : t;
        else without = without ? without : t;
    }
    L->peft_prefix = with != NULL;
    if (!with || !without) return IT_OK;
    char k1[200], k2[200];
    return it__fail(L->err, IT_EFORMAT, "%s: tensor \"%s\" has PEFT's prefix \"" PEFT_PREFIX "\" and tensor \"%s\" "
                    "has not: a file's keys carry it all or none", L->file, shown(with->name, k1, sizeof k1),
                    shown(without->name, k2, sizeof k2));
}

static int peft_key(loader *L, const it_tensor *t)
{
    const char *key = t->name + (L->peft_prefix ? sizeof PEFT_PREFIX - 1 : 0);
    size_t len = strlen(key);
    for (size_t i = 0; i < sizeof peft_suffix / sizeof *peft_suffix; i++)
        if (ends(key, len, peft_suffix[i].suffix))
            return add_entry(L, "", key, len - strlen(peft_suffix[i].suffix), peft_suffix[i].role, peft_suffix[i].emb, t);
    return peft_other(L, t, key, len);
}

/* ---- kohya (FACTS 3.1): <lora_unet_...|lora_te_...>.lora_down.weight / .lora_up.weight / .alpha ---- */

/* The component of a kohya name; NULL when the key has none of the four prefixes. */
static const char *kohya_comp(const char *key)
{
    if (starts(key, "lora_unet_")) return "unet";
    if (starts(key, "lora_te_") || starts(key, "lora_te1_")) return "text_encoder";
    if (starts(key, "lora_te2_")) return "text_encoder_2";
    return NULL;
}

/* Tensor names of LyCORIS's other networks (LoHa, LoKr, LoCon's Tucker core, (IA)^3, OFT, full diff). */
static int lycoris(const char *suffix)
{
    static const char *const tok[] = {"hada_", "lokr_", "lora_mid", "oft_", "diff", "on_input", "w_norm", "b_norm",
                                      "weight", "bias", "scale"};
    for (size_t i = 0; i < sizeof tok / sizeof *tok; i++)
        if (starts(suffix, tok[i])) return 1;
    return 0;
}

static int kohya_key(loader *L, const it_tensor *t)
{
    const char *dot = strchr(t->name, '.'), *suffix = dot ? dot + 1 : "";
    int role = !strcmp(suffix, "lora_down.weight") ? ROLE_A
               : !strcmp(suffix, "lora_up.weight") ? ROLE_B
               : !strcmp(suffix, "alpha")          ? ROLE_ALPHA
                                                   : -1;
    if (role >= 0) return add_entry(L, kohya_comp(t->name), t->name, (size_t)(dot - t->name), role, 0, t);
    if (lycoris(suffix))
        return bad_key(L, IT_EUNSUPPORTED, t, "a LyCORIS tensor (LoHa, LoKr, ...): not a plain LoRA; only LoRA "
                                              "(lora_down / lora_up / alpha) is merged");
    return bad_key(L, IT_EFORMAT, t, "not a tensor of a kohya LoRA (expected <name>.lora_down.weight, "
                                     "<name>.lora_up.weight or <name>.alpha)");
}

/* ---- diffusers' own namings (FACTS 3.2) ---- */

static const struct {
    const char *suffix;
    int role;
} diff_suffix[] = {
    {".lora_A.weight", ROLE_A},                 /* 3.2.1: PEFT style under a component prefix */
    {".lora_B.weight", ROLE_B},
    {".lora.down.weight", ROLE_A},              /* 3.2.2: the training script (PEFT_TO_DIFFUSERS names) */
    {".lora.up.weight", ROLE_B},
    {".lora_linear_layer.down.weight", ROLE_A}, /* 3.2.2: text encoder of the training script */
    {".lora_linear_layer.up.weight", ROLE_B},
    {"_lora.down.weight", ROLE_A},              /* 3.2.3: old attn-procs "to_q_lora.down"; see diff_module */
    {"_lora.up.weight", ROLE_B},
    {".alpha", ROLE_ALPHA},                     /* a per-module alpha, when a writer kept one */
};

/* The module path of a diffusers stem (the key without component prefix and LoRA suffix), by the
 * loader's mappings (FACTS 3.2 point 4: diffusers' state_dict_utils): ".processor." is dropped
 * everywhere (KEYS_TO_ALWAYS_REPLACE); an old attn-procs stem "...to_q" ("to_q_lora") stays to_q
 * (k, v alike) and "to_out" becomes "to_out.0" in the UNet (UNET_TO_DIFFUSERS), while in a text
 * encoder to_q/k/v/out become q_proj/k_proj/v_proj/out_proj (DIFFUSERS_OLD_TO_PEFT). An alpha stem
 * may carry the LoRA layer's own name (".lora", ".lora_linear_layer", "_lora"), which is dropped, after
 * its down weight's name where it has one: diffusers' kohya conversion named alphas
 * split(".lora.")[0] + ".alpha" of the converted down weight, which for attention projections (no
 * ".lora." to split on) is ".../attn1.processor.to_q_lora.down.weight.alpha" (FACTS 3.3 quirk; such
 * files come from saving that conversion). Returns a malloc'd path, or NULL with *why set (or *why
 * NULL when out of memory). */
static char *diff_module(const char *comp, const char *stem, size_t len, int old, int alpha, const char **why)
{
    static const char *const from[] = {"to_q", "to_k", "to_v", "to_out"};
    static const char *const unet[] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *const te[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    char *s = malloc(len + 3), *p;
    *why = NULL;
    if (!s) return NULL;
    memcpy(s, stem, len), s[len] = 0;
    while ((p = strstr(s, ".processor.")) != NULL) memmove(p, p + 10, strlen(p + 10) + 1);
    if (ends(s, strlen(s), ".processor")) s[strlen(s) - 10] = 0;
    int down = alpha && ends(s, strlen(s), ".down.weight");
    if (down) s[strlen(s) - 12] = 0;
    if (alpha && (ends(s, strlen(s), ".up.weight") ||
                  (down && !ends(s, strlen(s), ".lora_linear_layer") && !ends(s, strlen(s), ".lora") &&
                   !ends(s, strlen(s), "_lora")))) {
        free(s);
        *why = "an alpha named after a weight that is not a LoRA down weight (expected <module>.alpha, or "
               "<module>.lora.down.weight.alpha, <module>_lora.down.weight.alpha, "
               "<module>.lora_linear_layer.down.weight.alpha): which module it scales is unclear";
        return NULL;
    }
    if (alpha && ends(s, strlen(s), ".lora_linear_layer")) s[strlen(s) - 18] = 0;
    else if (alpha && ends(s, strlen(s), ".lora")) s[strlen(s) - 5] = 0;
    else if (alpha && ends(s, strlen(s), "_lora")) s[strlen(s) - 5] = 0, old = 1;
    if (!old) return s;
    size_t n = strlen(s);
    for (int i = 0; i < 4; i++) {
        size_t l = strlen(from[i]);
        if (n >= l + 1 && s[n - l - 1] == '.' && !memcmp(s + n - l, from[i], l)) {
            strcpy(s + n - l, strcmp(comp, "unet") ? te[i] : unet[i]); /* room: +2 bytes at most */
            return s;
        }
    }
    free(s);
    *why = "an old attn-procs key whose layer is not to_q_lora, to_k_lora, to_v_lora or to_out_lora";
    return NULL;
}

/* UNet2DConditionModel's top-level modules: an un-prefixed key that starts with one is the UNet's
 * (older diffusers wrote UNet keys so). */
static int unet_top(const char *key, size_t seg)
{
    static const char *const names[] = {"conv_in", "time_proj", "time_embedding", "encoder_hid_proj",
                                        "class_embedding", "add_time_proj", "add_embedding", "down_blocks",
                                        "mid_block", "up_blocks", "conv_norm_out", "conv_out", "position_net"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (seg == strlen(names[i]) && !memcmp(key, names[i], seg)) return 1;
    return 0;
}

/* The component of a diffusers key (its first segment: unet, text_encoder, text_encoder_2, or a UNet
 * module for an un-prefixed UNet key); *key is moved past a component prefix. NULL for another first
 * segment, which the caller refuses. */
static const char *diff_comp(const char **key)
{
    const char *dot = strchr(*key, '.');
    size_t seg = dot ? (size_t)(dot - *key) : strlen(*key);
    for (int i = 0; i < NCOMP && dot; i++)
        if (seg == strlen(comp_name[i]) && !memcmp(*key, comp_name[i], seg)) return *key = dot + 1, comp_name[i];
    return dot && unet_top(*key, seg) ? "unet" : NULL;
}

static int diff_key(loader *L, const it_tensor *t)
{
    const char *key = t->name, *comp = diff_comp(&key), *dot = strchr(key, '.');
    if (!comp && dot && !kohya_comp(key)) { /* (a kohya key among others gets the message at the end) */
        char seg[64], k[200], msg[300];
        snprintf(seg, sizeof seg, "%.*s", (int)(dot - key < 60 ? dot - key : 60), key);
        snprintf(msg, sizeof msg, "component \"%s\" is not one iteris merges (Stable Diffusion's unet, text_encoder, "
                 "text_encoder_2; an un-prefixed key must start with a UNet module such as down_blocks)",
                 shown(seg, k, sizeof k));
        return bad_key(L, IT_EUNSUPPORTED, t, msg);
    }
    size_t len = strlen(key);
    for (size_t i = 0; comp && i < sizeof diff_suffix / sizeof *diff_suffix; i++) {
        const char *suf = diff_suffix[i].suffix, *why;
        if (!ends(key, len, suf)) continue;
        size_t stem = len - strlen(suf);
        char *module = diff_module(comp, key, stem, suf[0] == '_', diff_suffix[i].role == ROLE_ALPHA, &why);
        if (!module) return why ? bad_key(L, IT_EFORMAT, t, why) : it__fail(L->err, IT_ENOMEM, "%s: out of memory", L->file);
        int rc = add_entry(L, comp, module, strlen(module), diff_suffix[i].role, 0, t);
        free(module);
        return rc;
    }
    if (strstr(key, "lora_magnitude_vector"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a DoRA magnitude vector: DoRA adapters are not supported");
    if (ends(key, len, ".lora_B.bias") || ends(key, len, ".lora.up.bias") || ends(key, len, ".lora_linear_layer.up.bias"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a lora_B bias (lora_bias): not supported");
    return bad_key(L, IT_EFORMAT, t, "not a LoRA tensor of a kohya or diffusers Stable Diffusion file (expected "
                                     "unet.<module>.lora_A.weight, ...lora.down.weight, ...processor.to_q_lora.down."
                                     "weight, text_encoder.<module>.lora_linear_layer.down.weight, or kohya's "
                                     "lora_unet_* / lora_te_* names)");
}

/* ============================================================================================ */
/* Adapters: entries -> modules                                                                  */
/* ============================================================================================ */

static int cmp_entry(const void *x, const void *y)
{
    const entry *a = x, *b = y;
    int c = strcmp(a->comp, b->comp);
    if (!c) c = strcmp(a->module, b->module);
    return c ? c : a->role - b->role;
}

/* "module \"text_model...q_proj\"", with the component for Stable Diffusion files. */
static const char *mod_label(const char *comp, const char *name, char *buf, size_t size)
{
    char n[200];
    snprintf(buf, size, "module \"%s\"%s%s%s", shown(name, n, sizeof n), comp[0] ? " (" : "", comp,
             comp[0] ? ")" : "");
    return buf;
}

static int add_warn(it_adapter *a, it_err *err, const char *fmt, ...) IT__PRINTF(3, 4);
static int add_warn(it_adapter *a, it_err *err, const char *fmt, ...)
{
    char line[IT_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char **w = a->nwarn < SIZE_MAX / sizeof *w - 1 ? realloc(a->warn, (a->nwarn + 1) * sizeof *w) : NULL;
    if (!w) return it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    a->warn = w;
    if (!(w[a->nwarn] = it__strdup(line))) return it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    a->nwarn++;
    return IT_OK;
}

static int is_float(it_dtype d)
{
    return d == IT_F16 || d == IT_BF16 || d == IT_F32 || d == IT_F64 || d == IT_F8_E5M2 || d == IT_F8_E4M3 ||
           d == IT_F8_E8M0 || d == IT_F8_E4M3FNUZ || d == IT_F8_E5M2FNUZ;
}

/* A tensor converted to float32 (malloc'd [numel]). */
static int to_f32(loader *L, const it_tensor *t, float **out)
{
    char k[200];
    if (!is_float(t->dtype))
        return it__fail(L->err, IT_EFORMAT, "%s: tensor \"%s\": dtype %s: expected a floating-point dtype (F32, F16, "
                        "BF16, F64, F8)", L->file, shown(t->name, k, sizeof k), it_dtype_name(t->dtype));
    *out = it__malloc_n(t->numel ? (size_t)t->numel : 1, sizeof **out);
    if (!*out) return it__fail(L->err, IT_ENOMEM, "%s: out of memory for tensor \"%s\"", L->file, shown(t->name, k, sizeof k));
    int rc = it_tensor_to_f32(t, *out, L->err);
    if (rc != IT_OK) it__err_prefix(L->err, L->file);
    return rc;
}

/* lora_A / lora_B values v [t->numel] (converted by to_f32) all finite: a NaN or Inf would pass
 * through every solve and come out as a merged weight of NaN, far from its cause. */
static int check_finite(loader *L, const it_tensor *t, const float *v)
{
    char k[200];
    for (size_t i = 0; i < (size_t)t->numel; i++)
        if (!isfinite(v[i]))
            return it__fail(L->err, IT_EFORMAT, "%s: tensor \"%s\": holds NaN or Inf (element %zu is %s)", L->file,
                            shown(t->name, k, sizeof k), i, isnan(v[i]) ? "NaN" : v[i] > 0 ? "Inf" : "-Inf");
    return IT_OK;
}

/* The shapes of lora_A and lora_B (FACTS 2.3, 3.1) -> kind, r, d_in, d_out:
 *   Linear    A [r, in]            B [out, r]
 *   Conv2d    A [r, in, kh, kw]    B [out, r, 1, 1]   (1x1 kernels only: then a linear on channels)
 *   Embedding A [r, num_embeddings] B [dim, r]        (d_in = num_embeddings, d_out = dim) */
static int module_shape(loader *L, const entry *ea, const entry *eb, it_lora_module *m, const char *label)
{
    const it_tensor *A = ea->t, *B = eb->t;
    const uint64_t *a = A->shape, *b = B->shape;
    m->kind = ea->embedding ? IT_LORA_EMBEDDING : A->ndim == 4 ? IT_LORA_CONV1X1 : IT_LORA_LINEAR;
    if (ea->embedding != eb->embedding)
        return it__fail(L->err, IT_EFORMAT, "%s: %s: one of lora_A / lora_B is an embedding LoRA, the other not",
                        L->file, label);
    if (A->ndim == 4 && (a[2] != 1 || a[3] != 1) && !ea->embedding)
        return it__fail(L->err, IT_EUNSUPPORTED, "%s: %s: a %" PRIu64 "x%" PRIu64 " convolution LoRA: only 1x1 "
                        "convolutions (a linear map on the channels) are supported", L->file, label, a[2], a[3]);
    int conv = A->ndim == 4 && !ea->embedding;
    if (!(A->ndim == 2 || conv) || B->ndim != A->ndim || (conv && (b[2] != 1 || b[3] != 1)))
        return it__fail(L->err, IT_EFORMAT, "%s: %s: lora_A has %zu dimensions and lora_B %zu: expected [r, in] and "
                        "[out, r] (Linear), or [r, in, 1, 1] and [out, r, 1, 1] (1x1 Conv2d)", L->file, label,
                        A->ndim, B->ndim);
    if (a[0] != b[1])
        return it__fail(L->err, IT_EFORMAT, "%s: %s: lora_A is [%" PRIu64 ", %" PRIu64 ", ...] and lora_B [%" PRIu64
                        ", %" PRIu64 ", ...]: the rank (lora_A's rows, lora_B's columns) must agree", L->file, label,
                        a[0], a[1], b[0], b[1]);
    if (a[0] == 0 || a[1] == 0 || b[0] == 0 || a[0] > (uint64_t)RANK_LIMIT || a[1] > (uint64_t)INT64_MAX ||
        b[0] > (uint64_t)INT64_MAX)
        return it__fail(L->err, IT_EFORMAT, "%s: %s: an empty or oversized lora_A / lora_B", L->file, label);
    m->r = (int64_t)a[0], m->d_in = (int64_t)a[1], m->d_out = (int64_t)b[0];
    return IT_OK;
}

/* kohya / diffusers alpha: a one-element float tensor (kohya writes a 0-dim one). */
static int read_alpha(loader *L, const entry *e, double *alpha)
{
    char k[200];
    float *v = NULL;
    if (e->t->numel != 1 || e->t->ndim > 1)
        return it__fail(L->err, IT_EFORMAT, "%s: tensor \"%s\": expected a scalar alpha, got %zu dimensions and %" PRIu64
                        " elements", L->file, shown(e->t->name, k, sizeof k), e->t->ndim, e->t->numel);
    TRY(to_f32(L, e->t, &v));
    *alpha = v[0];
    free(v);
    if (!isfinite(*alpha))
        return it__fail(L->err, IT_EFORMAT, "%s: tensor \"%s\": alpha is not finite", L->file,
                        shown(e->t->name, k, sizeof k));
    return IT_OK;
}

/* The configuration behind a diffusers component's modules: "<file>: lora_adapter_metadata "unet.*"". */
static const char *meta_where(const loader *L, int ci, char *buf, size_t size)
{
    snprintf(buf, size, "%s: __metadata__ lora_adapter_metadata \"%s.*\"", L->file, comp_name[ci]);
    return buf;
}

/* r, alpha and scale from a PEFT configuration (current peft's rules), which must agree with the shapes,
 * as PEFT fails to load the state dict otherwise (FACTS 2.6); where peft 0.10's rules give another r or
 * alpha, a note says so. config names the configuration in messages. */
static int config_scale(loader *L, const it__lora_matcher *mt, const char *config, it_lora_module *m,
                        const char *label)
{
    it__lora_rank_info ri;
    char hint[300] = "";
    int rc = it__lora_rank(mt, m->name, &ri, L->err);
    if (rc != IT_OK) return it__err_prefix(L->err, config), rc;
    m->alpha = ri.alpha, m->scale = ri.scale;
    int differ = ri.old_known && (ri.old_r != ri.r || ri.old_alpha != ri.alpha);
    if (ri.r != m->r) {
        if (differ && ri.old_r == m->r)
            snprintf(hint, sizeof hint, " (peft 0.10's rules, one key from chain(rank_pattern, alpha_pattern) matched "
                     "as .*\\.K$, give rank %" PRId64 ": the adapter was likely written by an older peft)", ri.old_r);
        return it__fail(L->err, IT_EFORMAT, "%s: %s: rank %" PRId64 " in the tensors but %" PRId64 " from %s (r / "
                        "rank_pattern); PEFT would fail to load it%s", L->file, label, m->r, ri.r, config, hint);
    }
    if (!differ) return IT_OK;
    return add_warn(L->a, L->err, "%s: %s: r %" PRId64 ", alpha %g by current peft's rank_pattern / alpha_pattern "
                    "rules, which iteris follows; peft 0.10's (one key from chain(rank_pattern, alpha_pattern), "
                    "matched as .*\\.K$) give r %" PRId64 ", alpha %g", config, label, ri.r, ri.alpha, ri.old_r,
                    ri.old_alpha);
}

/* r, alpha and scale. PEFT, and diffusers components with lora_adapter_metadata: from the configuration
 * (config_scale). kohya (FACTS 3.1, LoRAModule): scale = alpha / r with r = lora_down's rows, alpha = r
 * when the alpha tensor is missing or 0; this is kohya's per-module alpha. diffusers loads such a file
 * through PEFT with the most common alpha in lora_alpha and the others in alpha_pattern, but the
 * alpha_pattern keys it builds for attention projections never match (FACTS 3.3 quirk), so a file whose
 * attention modules have different alphas gets the most common one there; for the usual uniform alpha
 * both agree. diffusers' own formats: a module with an alpha tensor (a saved kohya conversion, which
 * diffusers' own loader ignores) gets alpha / r, as in kohya; a component without any alpha gets
 * diffusers' lora_alpha, the rank of its first lora_B (diff_defaults): scale first_r / r, 1 where all
 * ranks agree (the training script: lora_alpha = r); a module without alpha beside others with one
 * gets scale 1. */
static int module_scale(loader *L, const entry *alpha, it_lora_module *m, const char *label)
{
    it_adapter *a = L->a;
    int ci = comp_index(m->component);
    char where[300];
    if (a->format == IT_ADAPTER_PEFT) return config_scale(L, L->m, L->config, m, label);
    if (ci >= 0 && L->meta[ci]) return config_scale(L, L->meta[ci], meta_where(L, ci, where, sizeof where), m, label);
    m->alpha = (double)m->r;
    if (alpha) TRY(read_alpha(L, alpha, &m->alpha));
    else if (a->format == IT_ADAPTER_DIFFUSERS && ci >= 0 && !L->has_alpha[ci] && L->first_r[ci] > 0)
        m->alpha = (double)L->first_r[ci];
    if (a->format == IT_ADAPTER_KOHYA && m->alpha == 0) m->alpha = (double)m->r;
    m->scale = m->alpha / (double)m->r;
    return IT_OK;
}

/* One group of entries (one component and module) -> a module of the adapter, or a skip. */
static int build_module(loader *L, entry *g, size_t n)
{
    it_adapter *a = L->a;
    entry *role[3] = {NULL, NULL, NULL};
    char label[300], k1[200], k2[200];
    mod_label(g->comp, g->module, label, sizeof label);
    for (size_t i = 0; i < n; i++) {
        if (role[g[i].role])
            return it__fail(L->err, IT_EFORMAT, "%s: tensors \"%s\" and \"%s\" are both the %s of %s", L->file,
                            shown(role[g[i].role]->t->name, k1, sizeof k1), shown(g[i].t->name, k2, sizeof k2),
                            role_name[g[i].role], label);
        role[g[i].role] = &g[i];
    }
    if (!role[ROLE_A] || !role[ROLE_B]) {
        const entry *have = role[ROLE_A] ? role[ROLE_A] : role[ROLE_B] ? role[ROLE_B] : role[ROLE_ALPHA];
        return it__fail(L->err, IT_EFORMAT, "%s: %s: tensor \"%s\" has no matching %s", L->file, label,
                        shown(have->t->name, k1, sizeof k1), role[ROLE_A] ? "lora_B (up)" : "lora_A (down)");
    }
    if (a->format == IT_ADAPTER_PEFT) {
        int sel, old_sel, rc = it__lora_select(L->m, g->module, &sel, &old_sel, L->err);
        if (rc != IT_OK) return it__err_prefix(L->err, L->config), rc;
        if (sel != old_sel)
            TRY(add_warn(a, L->err, "%s: %s: %s by current peft's layers_to_transform rule (a lazy layer-index regex "
                         "since peft PR #3318, 2026), which iteris follows; older releases such as 0.10 read another "
                         "layer index (greedy regex) and %s it", L->config, label, sel ? "adapted" : "not adapted",
                         old_sel ? "adapted" : "did not adapt"));
        if (!sel) return add_warn(a, L->err, "%s: %s: not selected by target_modules; ignored as PEFT does", L->config, label);
    }
    it_lora_module *m = &a->mods[a->n];
    memset(m, 0, sizeof *m);
    snprintf(m->component, sizeof m->component, "%s", g->comp);
    TRY(module_shape(L, role[ROLE_A], role[ROLE_B], m, label));
    m->name = g->module; /* taken: the entry no longer owns it */
    g->module = NULL;
    a->n++;
    /* The base tensor is [d_in, d_out] for an embedding, and for fan_in_fan_out (HF Conv1D bases,
     * FACTS 2.3). PEFT itself resets fan_in_fan_out by the base layer's class (an nn.Linear gets 0, a
     * Conv1D 1, with a warning); without the model we follow the config, and the caller, who knows the
     * base layer, checks. Convolutions ignore the flag, as in PEFT. */
    m->transposed = m->kind == IT_LORA_EMBEDDING || (m->kind == IT_LORA_LINEAR && a->cfg.fan_in_fan_out);
    TRY(module_scale(L, role[ROLE_ALPHA], m, label));
    TRY(to_f32(L, role[ROLE_A]->t, &m->A));
    TRY(check_finite(L, role[ROLE_A]->t, m->A));
    TRY(to_f32(L, role[ROLE_B]->t, &m->B));
    return check_finite(L, role[ROLE_B]->t, m->B);
}

/* ---- diffusers: the LoraConfig of each component ---- */

/* The position of a text encoder's module in diffusers' rank dict, which follows the model's
 * named_modules() and holds the modules whose name ends in q_proj, k_proj, v_proj, out_proj, fc1 or
 * fc2 (lora_base.py _load_lora_into_text_encoder); for CLIP that is layer by layer k_proj, v_proj,
 * q_proj, out_proj (CLIPAttention's order), fc1, fc2. -1 for a module not in the dict. */
static int64_t clip_order(const char *name)
{
    static const char *const sub[] = {".k_proj", ".v_proj", ".q_proj", ".out_proj", ".fc1", ".fc2"};
    size_t len = strlen(name);
    int64_t s = -1, layer = 0;
    for (int i = 0; i < 6 && s < 0; i++)
        if (ends(name, len, sub[i])) s = i;
    const char *p = strstr(name, "layers.");
    for (p = p ? p + 7 : ""; *p >= '0' && *p <= '9' && layer < INT64_MAX / 64; p++) layer = layer * 10 + (*p - '0');
    return s < 0 ? -1 : layer * 8 + s;
}

/* diffusers' lora_alpha for a component without alphas or metadata (utils/peft_utils.py get_peft_kwargs:
 * r = lora_alpha = the rank of the first entry of its rank dict; with mixed ranks r becomes the most
 * common one and the others go to rank_pattern, lora_alpha stays), so a module of rank r gets scale
 * first_r / r, not 1. The rank dict follows the state dict's keys for the UNet (loaders/peft.py
 * load_lora_adapter; safetensors lists them sorted, as it_st does) and clip_order for text encoders.
 * Entries are still in the file's (sorted) order here. */
static int diff_defaults(loader *L)
{
    int64_t best[NCOMP] = {0}, lo[NCOMP] = {0}, hi[NCOMP] = {0};
    for (size_t i = 0; i < L->ne; i++) {
        const entry *e = &L->e[i];
        int ci = comp_index(e->comp);
        if (ci < 0) continue;
        L->has_alpha[ci] |= e->role == ROLE_ALPHA;
        if (e->role != ROLE_B || e->t->ndim < 2 || e->t->shape[1] == 0 || e->t->shape[1] > (uint64_t)RANK_LIMIT) continue;
        int64_t r = (int64_t)e->t->shape[1], pos = ci == 0 ? (int64_t)i : clip_order(e->module);
        lo[ci] = lo[ci] && lo[ci] < r ? lo[ci] : r;
        hi[ci] = hi[ci] > r ? hi[ci] : r;
        if (pos >= 0 && (L->first_r[ci] == 0 || pos < best[ci])) best[ci] = pos, L->first_r[ci] = r;
    }
    for (int ci = 0; ci < NCOMP; ci++)
        if (!L->meta[ci] && !L->has_alpha[ci] && lo[ci] != hi[ci] && L->first_r[ci] > 0)
            TRY(add_warn(L->a, L->err, "%s: %s: no alphas and ranks from %" PRId64 " to %" PRId64 ": diffusers sets "
                         "lora_alpha to the rank of its first lora_B (%" PRId64 "), so a module of rank r has scale %"
                         PRId64 " / r (get_peft_kwargs), here as there", L->file, comp_name[ci], lo[ci], hi[ci],
                         L->first_r[ci], L->first_r[ci]));
    return IT_OK;
}

/* One component's LoraConfig from the metadata object root: its "<component>." keys, stripped, read
 * with PEFT's rules (it__lora_config_json), and compiled. */
static int meta_component(loader *L, const it_json *root, int ci)
{
    size_t plen = strlen(comp_name[ci]), n = 0;
    char where[300], desc[400];
    meta_where(L, ci, where, sizeof where);
    for (size_t i = 0; i < root->n; i++)
        n += root->keylens[i] > plen && !memcmp(root->keys[i], comp_name[ci], plen) && root->keys[i][plen] == '.';
    if (n == 0)
        return it__fail(L->err, IT_EFORMAT, "%s: __metadata__ lora_adapter_metadata holds no \"%s.\" keys for the %s's "
                        "LoRA tensors (diffusers reads each component's LoraConfig from its \"<component>.<field>\" "
                        "keys and fails without them)", L->file, comp_name[ci], comp_name[ci]);
    it_json sub = {.type = IT_JSON_OBJ, .n = n};
    it_json *items = it__calloc(n, sizeof *items);
    const char **keys = it__calloc(n, sizeof *keys);
    size_t *lens = it__calloc(n, sizeof *lens), k = 0;
    int rc = items && keys && lens ? IT_OK : it__fail(L->err, IT_ENOMEM, "%s: out of memory", L->file);
    for (size_t i = 0; i < root->n && rc == IT_OK; i++)
        if (root->keylens[i] > plen && !memcmp(root->keys[i], comp_name[ci], plen) && root->keys[i][plen] == '.')
            items[k] = root->items[i], keys[k] = root->keys[i] + plen + 1, lens[k++] = root->keylens[i] - plen - 1;
    sub.items = items, sub.keys = keys, sub.keylens = lens;
    if (rc == IT_OK) rc = it__lora_config_json(&L->meta_cfg[ci], &sub, where, L->err);
    if (rc == IT_OK && (rc = it__lora_matcher_new(&L->meta[ci], &L->meta_cfg[ci], L->err)) != IT_OK)
        it__err_prefix(L->err, where);
    int alphas = 0;
    for (size_t i = 0; i < L->ne; i++) alphas |= L->e[i].role == ROLE_ALPHA && !strcmp(L->e[i].comp, comp_name[ci]);
    if (rc == IT_OK) {
        it_lora_config_describe(&L->meta_cfg[ci], desc, sizeof desc);
        rc = add_warn(L->a, L->err, "%s: %s%s", where, desc,
                      alphas ? "; the alpha tensors are not used, as diffusers does not use them" : "");
    }
    free(items);
    free(keys);
    free(lens);
    return rc;
}

/* diffusers' lora_adapter_metadata (loaders/lora_base.py: _save_lora_weights packs each component's
 * LoraConfig dict under its prefix and write_lora_layers stores the whole as one JSON string under that
 * __metadata__ key; utils/state_dict_utils.py _load_sft_state_dict_metadata parses it back;
 * loaders/peft.py load_lora_adapter and lora_base.py _load_lora_into_text_encoder keep their prefix's
 * keys, stripped, which utils/peft_utils.py _create_lora_config passes to LoraConfig in place of the
 * r and alpha it would infer). So the value is flat: {"unet.r": 4, "unet.lora_alpha": 8,
 * "text_encoder.r": 4, ...}. Every component with tensors in the file takes its LoraConfig from there;
 * one without any key makes diffusers fail (_maybe_raise_error_for_ambiguous_keys reads
 * rank_pattern), and is refused. Modules are the file's (diffusers injects by the state dict's keys),
 * so only the rank and alpha rules apply. */
static int diff_metadata(loader *L)
{
    const char *raw = it_st_meta_get(L->st, "lora_adapter_metadata");
    char where[300];
    it_json_doc *doc;
    if (!raw || !raw[0]) return IT_OK; /* diffusers: "return json.loads(raw) if raw else None" */
    snprintf(where, sizeof where, "%s: __metadata__ lora_adapter_metadata", L->file);
    int rc = it_json_parse(&doc, raw, strlen(raw), IT_JSON_NODUP, L->err);
    if (rc != IT_OK) return it__err_prefix(L->err, where), rc;
    const it_json *root = it_json_root(doc);
    if (root->type != IT_JSON_OBJ)
        rc = it__fail(L->err, IT_EFORMAT, "%s: expected a JSON object of \"<component>.<LoraConfig field>\" keys, got "
                      "a JSON %s", where, it_json_type_name(root->type));
    for (int ci = 0; ci < NCOMP && rc == IT_OK; ci++) {
        int present = 0;
        for (size_t i = 0; i < L->ne && !present; i++) present = !strcmp(L->e[i].comp, comp_name[ci]);
        if (present) rc = meta_component(L, root, ci);
    }
    it_json_free(doc);
    return rc;
}

/* ---- modules ---- */

/* Sorts the entries and builds the modules, which come out sorted by (component, name). */
static int build_modules(loader *L)
{
    if (L->ne == 0) return it__fail(L->err, IT_EFORMAT, "%s: holds no LoRA tensors", L->file);
    qsort(L->e, L->ne, sizeof *L->e, cmp_entry);
    L->a->mods = it__calloc(L->ne, sizeof *L->a->mods);
    if (!L->a->mods) return it__fail(L->err, IT_ENOMEM, "%s: out of memory", L->file);
    for (size_t i = 0, j; i < L->ne; i = j) {
        for (j = i + 1; j < L->ne && !strcmp(L->e[j].comp, L->e[i].comp) && !strcmp(L->e[j].module, L->e[i].module);)
            j++;
        TRY(build_module(L, &L->e[i], j - i));
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Adapters: loading                                                                             */
/* ============================================================================================ */

static void loader_free(loader *L)
{
    for (size_t i = 0; i < L->ne; i++) free(L->e[i].module);
    free(L->e);
    it__lora_matcher_free(L->m);
    for (int ci = 0; ci < NCOMP; ci++) {
        it__lora_matcher_free(L->meta[ci]);
        it_lora_config_free(&L->meta_cfg[ci]);
    }
    it_st_close(L->st);
}

/* Places every tensor of the opened weights with key() (in the file's sorted order), reads a diffusers
 * file's LoraConfigs, and builds the modules. */
static int load_tensors(loader *L, int (*key)(loader *, const it_tensor *))
{
    size_t n = it_st_count(L->st);
    L->e = it__calloc(n ? n : 1, sizeof *L->e);
    if (!L->e) return it__fail(L->err, IT_ENOMEM, "%s: out of memory", L->file);
    for (size_t i = 0; i < n; i++) TRY(key(L, it_st_tensor(L->st, i)));
    if (L->a->format == IT_ADAPTER_DIFFUSERS) {
        TRY(diff_metadata(L));
        TRY(diff_defaults(L));
    }
    return build_modules(L);
}

/* A PEFT folder (FACTS 2.1): adapter_config.json and adapter_model.safetensors. */
static int load_peft(loader *L, const char *dir, const char *config)
{
    it_adapter *a = L->a;
    a->format = IT_ADAPTER_PEFT;
    L->config = config;
    TRY(it__lora_config_read(&a->cfg, config, L->err));
    a->has_config = 1;
    int rc = it__lora_matcher_new(&L->m, &a->cfg, L->err);
    if (rc != IT_OK) return it__err_prefix(L->err, config), rc;
    if (!a->cfg.target_regex && a->cfg.ntargets == 0)
        TRY(add_warn(a, L->err, "%s: no target_modules: PEFT would use the model type's default targets, which "
                     "iteris cannot know here; every module in the file is used", config));
    char *file = it__path_join(dir, "adapter_model.safetensors"), *bin = it__path_join(dir, "adapter_model.bin");
    rc = file && bin ? IT_OK : it__fail(L->err, IT_ENOMEM, "%s: out of memory", dir);
    L->file = file;
    if (rc == IT_OK && !it__exists(file))
        rc = it__exists(bin) ? it__fail(L->err, IT_EUNSUPPORTED, "%s: pickle files are not read; convert to "
                                        "safetensors (adapter_model.safetensors)", bin)
                             : it__fail(L->err, IT_ENOTFOUND, "%s: not found: the weights of the adapter described "
                                        "by %s", file, config);
    if (rc == IT_OK) rc = it_st_open(&L->st, file, L->err);
    if (rc == IT_OK) rc = peft_prefix(L);
    if (rc == IT_OK) rc = load_tensors(L, peft_key);
    free(file);
    free(bin);
    L->file = NULL;
    return rc;
}

/* One Stable Diffusion LoRA file; the format is told by its keys (FACTS 3.3): kohya when every key
 * starts with lora_unet_, lora_te_, lora_te1_ or lora_te2_ (dora_scale keys, DoRA, are refused
 * first, where diffusers drops them with a warning), diffusers' namings otherwise (whose
 * lora_adapter_metadata, if any, is read by load_tensors; a kohya file's is not looked at). */
static int load_sd(loader *L, const char *file)
{
    L->file = file;
    TRY(it_st_open(&L->st, file, L->err));
    size_t n = it_st_count(L->st), kohya = 0;
    for (size_t i = 0; i < n; i++) {
        const it_tensor *t = it_st_tensor(L->st, i);
        if (strstr(t->name, "dora_scale"))
            return bad_key(L, IT_EUNSUPPORTED, t, "a DoRA scale: DoRA adapters change the forward pass and are not "
                                                  "supported (only plain LoRA is merged)");
        if (starts(t->name, PEFT_PREFIX))
            return bad_key(L, IT_EUNSUPPORTED, t, "a PEFT adapter's key: load the adapter folder (with its "
                                                  "adapter_config.json), not its weights alone");
        kohya += kohya_comp(t->name) != NULL;
    }
    L->a->format = n > 0 && kohya == n ? IT_ADAPTER_KOHYA : IT_ADAPTER_DIFFUSERS;
    return load_tensors(L, L->a->format == IT_ADAPTER_KOHYA ? kohya_key : diff_key);
}

static int pickle_name(const char *path)
{
    size_t n = strlen(path);
    return ends(path, n, ".bin") || ends(path, n, ".pt") || ends(path, n, ".pth") || ends(path, n, ".ckpt");
}

/* A folder: a PEFT adapter (adapter_config.json), else diffusers' pytorch_lora_weights.safetensors. */
static int load_dir(loader *L, const char *dir)
{
    static const char *const names[] = {"adapter_config.json", "pytorch_lora_weights.safetensors",
                                        "adapter_model.bin", "pytorch_lora_weights.bin"};
    char *p[4];
    int rc = IT_OK, have = -1;
    for (int i = 0; i < 4; i++) {
        p[i] = it__path_join(dir, names[i]);
        if (!p[i]) rc = IT_ENOMEM;
        else if (have < 0 && it__exists(p[i])) have = i;
    }
    if (rc != IT_OK) rc = it__fail(L->err, IT_ENOMEM, "%s: out of memory", dir);
    else if (have == 0) rc = load_peft(L, dir, p[0]);
    else if (have == 1) rc = load_sd(L, p[1]);
    else if (have > 1) rc = it__fail(L->err, IT_EUNSUPPORTED, "%s: pickle files are not read; convert to safetensors", p[have]);
    else rc = it__fail(L->err, IT_ENOTFOUND, "%s: not an adapter folder: no adapter_config.json (PEFT) and no "
                       "pytorch_lora_weights.safetensors (diffusers)", dir);
    L->file = NULL;
    for (int i = 0; i < 4; i++) free(p[i]);
    return rc;
}

/* A file: adapter_config.json (its folder is the adapter), a PEFT folder's adapter_model.safetensors
 * (likewise), or a Stable Diffusion .safetensors. */
static int load_path(loader *L, const char *path)
{
    if (it__is_dir(path)) return load_dir(L, path);
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *dir = slash ? it__strndup(path, (size_t)(slash - path) + (slash == path)) : it__strdup(".");
    char *config = dir ? it__path_join(dir, "adapter_config.json") : NULL;
    int rc;
    if (!config) rc = it__fail(L->err, IT_ENOMEM, "%s: out of memory", path);
    else if (!it__exists(path)) rc = it__fail(L->err, IT_ENOTFOUND, "%s: no such file or folder", path);
    else if (!strcmp(base, "adapter_config.json")) rc = load_peft(L, dir, path);
    else if (!strcmp(base, "adapter_model.safetensors") && it__exists(config)) rc = load_peft(L, dir, config);
    else if (ends(path, strlen(path), ".safetensors")) rc = load_sd(L, path);
    else if (pickle_name(path)) rc = it__fail(L->err, IT_EUNSUPPORTED, "%s: pickle files are not read; convert to safetensors", path);
    else rc = it__fail(L->err, IT_EFORMAT, "%s: expected a PEFT adapter folder, its adapter_config.json, or a "
                       ".safetensors LoRA file", path);
    free(dir);
    free(config);
    return rc;
}

int it_adapter_load(it_adapter **out, const char *path, it_err *err)
{
    *out = NULL;
    it_adapter *a = it__calloc(1, sizeof *a);
    if (!a || !(a->path = it__strdup(path))) {
        free(a);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    }
    loader L = {.a = a, .err = err};
    int rc = load_path(&L, path);
    loader_free(&L);
    if (rc != IT_OK) it_adapter_free(a);
    else *out = a;
    return rc;
}

void it_adapter_free(it_adapter *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->mods[i].name);
        free(a->mods[i].A);
        free(a->mods[i].B);
    }
    free(a->mods);
    for (size_t i = 0; i < a->nwarn; i++) free(a->warn[i]);
    free(a->warn);
    it_lora_config_free(&a->cfg);
    free(a->path);
    free(a);
}

/* ============================================================================================ */
/* Adapters: lookup, kohya names, deltas                                                         */
/* ============================================================================================ */

static int cmp_module(const void *x, const void *y)
{
    const it_lora_module *a = x, *b = y;
    int c = strcmp(a->component, b->component);
    return c ? c : strcmp(a->name, b->name);
}

const it_lora_module *it_adapter_find(const it_adapter *a, const char *component, const char *name)
{
    if (!a || a->n == 0 || strlen(component) >= sizeof a->mods[0].component) return NULL;
    it_lora_module key;
    snprintf(key.component, sizeof key.component, "%s", component);
    key.name = (char *)(uintptr_t)name; /* bsearch's key is only read */
    return bsearch(&key, a->mods, a->n, sizeof *a->mods, cmp_module);
}

/* One model path as kohya spells it: every '.' replaced by '_' (FACTS 3.1). */
typedef struct kname {
    char *key;
    const char *path;
} kname;

static int cmp_kname(const void *x, const void *y)
{
    const kname *a = x, *b = y;
    int c = strcmp(a->key, b->key);
    return c ? c : strcmp(a->path, b->path);
}

static int cmp_kname_key(const void *k, const void *y) { return strcmp(k, ((const kname *)y)->key); }

/* The kohya prefix of a module of that component, or NULL when its name has none. */
static const char *kohya_prefix(const char *component, const char *name)
{
    static const struct {
        const char *comp, *prefix;
    } p[] = {{"unet", "lora_unet_"}, {"text_encoder", "lora_te_"}, {"text_encoder", "lora_te1_"},
             {"text_encoder_2", "lora_te2_"}};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if (!strcmp(component, p[i].comp) && starts(name, p[i].prefix)) return p[i].prefix;
    return NULL;
}

/* The model paths of names[0..n) for the kohya modules of that component (NULL: left alone). */
static int resolve_names(it_adapter *a, const char *component, kname *tab, size_t nm, const char **names, it_err *err)
{
    for (size_t i = 0; i < a->n; i++) {
        const it_lora_module *m = &a->mods[i];
        const char *prefix = kohya_prefix(component, m->name);
        if (!prefix || strcmp(m->component, component)) continue;
        const char *rest = m->name + strlen(prefix);
        const kname *hit = bsearch(rest, tab, nm, sizeof *tab, cmp_kname_key);
        char n[200], n1[160], n2[160];
        if (!hit)
            return it__fail(err, IT_ENOTFOUND, "%s: kohya module %s names no module of the %s", a->path,
                            shown(m->name, n, sizeof n), component);
        while (hit > tab && !strcmp(hit[-1].key, rest)) hit--; /* the first of equal keys */
        for (const kname *o = hit + 1; o < tab + nm && !strcmp(o->key, rest); o++)
            if (strcmp(o->path, hit->path))
                return it__fail(err, IT_EFORMAT, "%s: kohya module %s is ambiguous: the %s has modules %s and %s",
                                a->path, shown(m->name, n, sizeof n), component, shown(hit->path, n1, sizeof n1),
                                shown(o->path, n2, sizeof n2));
        names[i] = hit->path;
    }
    return IT_OK;
}

/* After resolution no two modules of the adapter may share (component, name): two kohya names for
 * one module ("lora_te_x" and "lora_te1_x"), or a kohya name for a module the file also names in
 * another spelling. Checked on a sorted copy of the would-be names. */
typedef struct final_name {
    const char *comp, *name;
    size_t i;
} final_name;

static int cmp_final(const void *x, const void *y)
{
    const final_name *a = x, *b = y;
    int c = strcmp(a->comp, b->comp);
    return c ? c : strcmp(a->name, b->name);
}

static int resolve_dups(const it_adapter *a, const char **names, it_err *err)
{
    char n1[160], n2[160], n3[160];
    final_name *f = it__malloc_n(a->n, sizeof *f);
    if (!f) return it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    for (size_t i = 0; i < a->n; i++) f[i] = (final_name){a->mods[i].component, names[i] ? names[i] : a->mods[i].name, i};
    qsort(f, a->n, sizeof *f, cmp_final);
    int rc = IT_OK;
    for (size_t k = 0; k + 1 < a->n && rc == IT_OK; k++)
        if (!cmp_final(&f[k], &f[k + 1]))
            rc = it__fail(err, IT_EFORMAT, "%s: modules %s and %s both name %s of the %s", a->path,
                          shown(a->mods[f[k].i].name, n1, sizeof n1), shown(a->mods[f[k + 1].i].name, n2, sizeof n2),
                          shown(f[k].name, n3, sizeof n3), f[k].comp);
    free(f);
    return rc;
}

/* Sorted kohya spellings of the model's paths: one table, then a binary search per module. */
/* The UNet's layers_per_block, from its module paths: one more than the largest j of
 * "down_blocks.<d>.resnets.<j>."; 0 when there is none. */
static size_t unet_layers_per_block(const char *const *modules, size_t n)
{
    size_t lpb = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d, j;
        int used = 0;
        if (sscanf(modules[i], "down_blocks.%u.resnets.%u.%n", &d, &j, &used) == 2 && used > 0 && j + 1 > lpb)
            lpb = j + 1;
    }
    return lpb;
}

/* The original LDM / SGM spelling of a diffusers UNet attention path (FACTS 7.4; kohya files for
 * SD 1.x and SDXL may use it), with L = layers_per_block + 1:
 *   down_blocks.d.attentions.j.X -> input_blocks.(1 + d L + j).1.X
 *   mid_block.attentions.0.X     -> middle_block.1.X
 *   up_blocks.u.attentions.j.X   -> output_blocks.(u L + j).1.X
 * into buf[size]; 0 when the path has no such spelling. */
static int sgm_spelling(const char *path, size_t L, char *buf, size_t size)
{
    unsigned a, b;
    int used = 0;
    if (sscanf(path, "down_blocks.%u.attentions.%u.%n", &a, &b, &used) == 2 && used > 0)
        return snprintf(buf, size, "input_blocks.%zu.1.%s", 1 + a * L + b, path + used) < (int)size;
    used = 0;
    if (sscanf(path, "up_blocks.%u.attentions.%u.%n", &a, &b, &used) == 2 && used > 0)
        return snprintf(buf, size, "output_blocks.%zu.1.%s", a * L + b, path + used) < (int)size;
    if (!strncmp(path, "mid_block.attentions.0.", 23))
        return snprintf(buf, size, "middle_block.1.%s", path + 23) < (int)size;
    return 0;
}

/* The kohya keys of the module paths (every '.' an '_'), sorted: one per path, and for a UNet
 * (sgm_l = layers_per_block + 1 > 1) a second for each attention path in its LDM / SGM spelling.
 * tab has room for 2 n; *ntab gets the count. */
static int kohya_table(kname *tab, size_t *ntab, const char *const *modules, size_t n, size_t sgm_l,
                       const char *path, it_err *err)
{
    size_t k = 0;
    char sgm[512];
    for (size_t j = 0; j < n; j++) {
        for (int pass = 0; pass < 2; pass++) {
            const char *name = modules[j];
            if (pass == 1 && (sgm_l < 2 || !sgm_spelling(modules[j], sgm_l, sgm, sizeof sgm))) continue;
            if (pass == 1) name = sgm;
            tab[k].path = modules[j];
            if (!(tab[k].key = it__strdup(name))) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
            for (char *c = tab[k].key; *c; c++)
                if (*c == '.') *c = '_';
            k++;
            *ntab = k;
        }
    }
    qsort(tab, k, sizeof *tab, cmp_kname);
    return IT_OK;
}

int it_adapter_resolve(it_adapter *a, const char *component, const char *const *modules, size_t nmodules,
                       it_err *err)
{
    if (strcmp(component, "unet") && strcmp(component, "text_encoder") && strcmp(component, "text_encoder_2"))
        return it__fail(err, IT_EINVAL, "%s: component \"%s\": expected unet, text_encoder or text_encoder_2",
                        a->path, component);
    size_t unresolved = 0;
    for (size_t i = 0; i < a->n; i++) unresolved += !strcmp(a->mods[i].component, component) && kohya_prefix(component, a->mods[i].name);
    if (unresolved == 0) return IT_OK;
    size_t ntab = 0, sgm_l = strcmp(component, "unet") ? 0 : unet_layers_per_block(modules, nmodules) + 1;
    kname *tab = it__calloc(2 * nmodules + 1, sizeof *tab);
    const char **names = it__calloc(a->n, sizeof *names);
    char **copies = it__calloc(a->n, sizeof *copies);
    int rc = tab && names && copies ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    if (rc == IT_OK) rc = kohya_table(tab, &ntab, modules, nmodules, sgm_l, a->path, err);
    if (rc == IT_OK) rc = resolve_names(a, component, tab, ntab, names, err);
    if (rc == IT_OK) rc = resolve_dups(a, names, err);
    for (size_t i = 0; i < a->n && rc == IT_OK; i++)
        if (names[i] && !(copies[i] = it__strdup(names[i]))) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    for (size_t i = 0; i < a->n && rc == IT_OK; i++) /* commit: all or nothing */
        if (copies[i]) free(a->mods[i].name), a->mods[i].name = copies[i], copies[i] = NULL;
    if (rc == IT_OK) qsort(a->mods, a->n, sizeof *a->mods, cmp_module);
    for (size_t i = 0; copies && i < a->n; i++) free(copies[i]);
    for (size_t j = 0; tab && j < ntab; j++) free(tab[j].key);
    free(tab);
    free(names);
    free(copies);
    return rc;
}

int it_adapter_select(it_adapter *a, const char *component, const char *const *modules, size_t nmodules,
                      it_err *err)
{
    if (!component || !component[0]) component = NULL;
    if (component) TRY(it_adapter_resolve(a, component, modules, nmodules, err));
    /* what is left out, by component, for the note */
    char left[3][16] = {{0}};
    size_t nleft[3] = {0}, kept = 0;
    for (size_t i = 0; i < a->n; i++) {
        it_lora_module *m = &a->mods[i];
        if (!m->component[0] || (component && !strcmp(m->component, component))) continue;
        size_t k = 0;
        while (k < 3 && left[k][0] && strcmp(left[k], m->component)) k++;
        if (k < 3) snprintf(left[k], sizeof left[k], "%s", m->component), nleft[k]++;
    }
    for (size_t i = 0; i < a->n; i++) {
        it_lora_module *m = &a->mods[i];
        int keep = !m->component[0] || (component && !strcmp(m->component, component));
        if (!keep) {
            free(m->name), free(m->A), free(m->B);
            continue;
        }
        m->component[0] = 0;
        a->mods[kept++] = *m;
    }
    a->n = kept;
    qsort(a->mods, a->n, sizeof *a->mods, cmp_module);
    for (size_t k = 0; k < 3 && left[k][0]; k++)
        TRY(add_warn(a, err, "%s: %zu %s module%s left out: the model is %s", a->path, nleft[k], left[k],
                     nleft[k] == 1 ? "" : "s", component ? component : "not a Stable Diffusion component"));
    return IT_OK;
}

/* dW = scale * B A (FACTS 2.3: W' = W + scaling (B @ A); kohya merge_to likewise, FACTS 3.1), row by
 * row: each element sums B[i][k] A[k][j] over k = 0..r-1 in double, then is multiplied by scale. */
void it_lora_delta(const it_lora_module *m, double *delta)
{
    size_t r = (size_t)m->r, din = (size_t)m->d_in, dout = (size_t)m->d_out;
    for (size_t i = 0; i < dout; i++) {
        double *row = delta + i * din;
        for (size_t j = 0; j < din; j++) row[j] = 0;
        for (size_t k = 0; k < r; k++) {
            double b = m->B[i * r + k];
            const float *a = m->A + k * din;
            for (size_t j = 0; j < din; j++) row[j] += b * a[j];
        }
        for (size_t j = 0; j < din; j++) row[j] *= m->scale;
    }
}
