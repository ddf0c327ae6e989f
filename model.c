/* model.c -- config.json -> it_config: which architecture, its sizes, the reference defaults; and
 * the architecture-free part of a loaded model (weights, site table, deltas, observer, it__linear).
 *
 * Each reader follows its reference configuration class key by key (FACTS.md):
 *   Llama family  transformers LlamaConfig / MistralConfig / Qwen2Config      (4.1, 4.5)
 *   T5            transformers T5Config / MT5Config                           (5.1)
 *   CLIP          transformers CLIPConfig, CLIPTextConfig, CLIPVisionConfig   (6.1)
 *   UNet          diffusers UNet2DConditionModel.__init__ (code defaults)     (7.1)
 * Rules shared by all of them:
 *   - an absent key takes the reference default; JSON null counts as absent only for keys whose
 *     reference default is None (num_key_value_heads, head_dim, num_decoder_layers, ...);
 *   - a key of the wrong JSON type, or a size that is not a positive integer, is IT_EFORMAT with
 *     "<file>: <key>: expected ..., got ..." -- never a guess;
 *   - shapes the architecture cannot build (heads not dividing hidden where it must) are IT_EFORMAT;
 *   - reading describes the file, it does not judge what a forward pass supports: scaled RoPE,
 *     per-block UNet head counts, CLIP towers with different activations are recorded, and each
 *     forward pass checks the fields it needs;
 *   - only settings it_config has no field for (per-layer-type RoPE, UNet layers_per_block or
 *     cross_attention_dim lists whose entries differ, more than 8 blocks, ...) are IT_EUNSUPPORTED,
 *     so nothing is silently dropped.
 */
#include "model_internal.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES ((size_t)16 << 20) /* config.json files are a few KiB */
#define SIZE_LIMIT INT64_C(2147483647)      /* sizes above 2^31 - 1 are refused (no model has them) */

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

/* ============================================================================================ */
/* Typed reads with defaults                                                                     */
/* ============================================================================================ */

/* Where keys are read from: one object of the parsed file, named in messages by path + prefix. */
typedef struct reader {
    const char *path;   /* the config.json file */
    const char *prefix; /* "" at the top level, "text_config." inside a sub-config */
    const it_json *obj; /* the object; NULL reads every key as absent */
    it_err *err;
} reader;

enum { REQUIRED = 0, NULLABLE = 1 }; /* NULLABLE: null means "use the default" (a None default) */

static int bad_value(const reader *r, const char *key, const char *expected, const it_json *v)
{
    char what[64];
    it_json_describe(v, what, sizeof what);
    return it__fail(r->err, IT_EFORMAT, "%s: %s%s: expected %s, got %s", r->path, r->prefix, key, expected, what);
}

/* The value of key; NULL when absent, or when null and the key is nullable. */
static const it_json *lookup(const reader *r, const char *key, int nullable)
{
    const it_json *v = it_json_get(r->obj, key);
    if (v && v->type == IT_JSON_NULL && nullable) return NULL;
    return v;
}

/* 1 if v is the JSON string s exactly (an embedded NUL never matches). */
static int json_is(const it_json *v, const char *s)
{
    return v && v->type == IT_JSON_STR && v->len == strlen(s) && memcmp(v->s, s, v->len) == 0;
}

/* Checks one positive integer value (v not NULL) and stores it. */
static int take_size(const reader *r, const char *key, const it_json *v, int64_t *out)
{
    if (v->type != IT_JSON_INT || !v->i_ok || v->i <= 0) return bad_value(r, key, "a positive integer", v);
    if (v->i > SIZE_LIMIT)
        return it__fail(r->err, IT_EFORMAT, "%s: %s%s: %" PRId64 " is too large (the limit is 2^31 - 1)", r->path,
                        r->prefix, key, v->i);
    *out = v->i;
    return IT_OK;
}

/* A size: a positive integer, def when absent. */
static int rd_size(const reader *r, const char *key, int64_t def, int nullable, int64_t *out)
{
    const it_json *v = lookup(r, key, nullable);
    if (!v) {
        *out = def;
        return IT_OK;
    }
    return take_size(r, key, v, out);
}

/* A token id: an integer in [0, 2^31 - 1] (a list of them, as generation configs may give for
 * eos_token_id: its first), def when absent or null. */
static int rd_token(const reader *r, const char *key, int64_t def, int64_t *out)
{
    const it_json *v = lookup(r, key, NULLABLE);
    if (v && v->type == IT_JSON_ARR && v->n > 0) v = &v->items[0];
    if (!v) {
        *out = def;
        return IT_OK;
    }
    if (v->type != IT_JSON_INT || !v->i_ok || v->i < 0 || v->i > SIZE_LIMIT)
        return bad_value(r, key, "a token id (an integer in [0, 2^31 - 1])", v);
    *out = v->i;
    return IT_OK;
}

/* A positive, finite number (an integer literal counts), def when absent. */
static int rd_number(const reader *r, const char *key, double def, int nullable, double *out)
{
    const it_json *v = lookup(r, key, nullable);
    if (!v) {
        *out = def;
        return IT_OK;
    }
    if ((v->type != IT_JSON_INT && v->type != IT_JSON_NUM) || !isfinite(v->d) || !(v->d > 0))
        return bad_value(r, key, "a positive number", v);
    *out = v->d;
    return IT_OK;
}

/* JSON true or false, def when absent. */
static int rd_bool(const reader *r, const char *key, int def, int *out)
{
    const it_json *v = lookup(r, key, REQUIRED);
    if (!v) {
        *out = def;
        return IT_OK;
    }
    if (v->type != IT_JSON_TRUE && v->type != IT_JSON_FALSE) return bad_value(r, key, "true or false", v);
    *out = v->type == IT_JSON_TRUE;
    return IT_OK;
}

/* Copies len bytes of s into dst[size], cut at a UTF-8 character boundary when they do not fit. */
static void copy_name(char *dst, size_t size, const char *s, size_t len)
{
    if (len >= size) {
        len = size - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
    memcpy(dst, s, len);
    dst[len] = 0;
}

/* A name that decides behaviour (an activation, feed_forward_proj, a rope_type): a non-empty
 * string of at most IT_NAME_MAX - 1 bytes without NUL (v not NULL). */
static int take_name(const reader *r, const char *key, const it_json *v, char dst[IT_NAME_MAX])
{
    if (v->type != IT_JSON_STR || v->len == 0) return bad_value(r, key, "a non-empty string", v);
    if (v->len >= IT_NAME_MAX || strlen(v->s) != v->len)
        return it__fail(r->err, IT_EFORMAT, "%s: %s%s: expected a name of at most %d bytes without NUL characters",
                        r->path, r->prefix, key, IT_NAME_MAX - 1);
    memcpy(dst, v->s, v->len + 1);
    return IT_OK;
}

/* Such a name, def when absent. dst and def may be the same buffer. */
static int rd_act(const reader *r, const char *key, const char *def, char dst[IT_NAME_MAX])
{
    const it_json *v = lookup(r, key, REQUIRED);
    if (v) return take_name(r, key, v, dst);
    char tmp[IT_NAME_MAX];
    snprintf(tmp, sizeof tmp, "%s", def);
    memcpy(dst, tmp, sizeof tmp);
    return IT_OK;
}

/* A sub-object such as text_config: absent or null reads as an empty object (all defaults). */
static int sub_reader(const reader *r, const char *key, const char *prefix, reader *out)
{
    const it_json *v = lookup(r, key, NULLABLE);
    if (v && v->type != IT_JSON_OBJ) return bad_value(r, key, "an object", v);
    *out = (reader){r->path, prefix, v, r->err};
    return IT_OK;
}

/* IT_EFORMAT unless a is a multiple of b; why says which layer needs it. */
static int need_multiple(const reader *r, const char *ka, int64_t a, const char *kb, int64_t b, const char *why)
{
    if (a % b == 0) return IT_OK;
    return it__fail(r->err, IT_EFORMAT, "%s: %s%s %" PRId64 " is not a multiple of %s%s %" PRId64 " (%s)", r->path,
                    r->prefix, ka, a, r->prefix, kb, b, why);
}

/* ============================================================================================ */
/* Llama family: llama, mistral, qwen2 (FACTS 4.1, 4.4, 4.5)                                     */
/* ============================================================================================ */

/* The defaults of LlamaConfig, MistralConfig and Qwen2Config. kv_heads 0 stands for None. */
typedef struct llama_defaults {
    const char *model_type;
    int64_t vocab, hidden, intermediate, layers, heads, kv_heads, max_pos;
} llama_defaults;

static const llama_defaults LLAMA_DEFAULTS[] = {
    {"llama", 32000, 4096, 11008, 32, 32, 0, 2048},
    {"mistral", 32000, 4096, 14336, 32, 32, 8, 4096 * 32},
    {"qwen2", 151936, 4096, 22016, 32, 32, 32, 32768},
};

/* A number in (0, 1], def when absent or null (partial_rotary_factor: the rotated share of head_dim). */
static int rd_fraction(const reader *r, const char *key, double def, double *out)
{
    TRY(rd_number(r, key, def, NULLABLE, out));
    if (*out <= 1.0) return IT_OK;
    return it__fail(r->err, IT_EFORMAT, "%s: %s%s: expected a number in (0, 1], got %g", r->path, r->prefix, key, *out);
}

/* transformers raises KeyError when a rope type's required key is missing (modeling_rope_utils
 * _check_received_keys): factor for linear / dynamic / yarn / llama3, and llama3's two frequency
 * factors. original_max_position_embeddings may be absent: v5 then takes max_position_embeddings.
 * The scaling types warn when factor < 1 (it would shrink the context); that is refused here. */
static int check_rope_keys(const it_config *c, const reader *sub, const char *type_key)
{
    static const char *const scaling[] = {"linear", "dynamic", "yarn", "llama3"};
    int is_llama3 = strcmp(c->rope_type, "llama3") == 0;
    for (size_t i = 0; i < sizeof scaling / sizeof scaling[0]; i++) {
        if (strcmp(c->rope_type, scaling[i]) != 0) continue;
        const char *missing = NULL;
        if (!c->rope_factor) missing = "factor";
        else if (is_llama3 && !c->rope_low_freq_factor) missing = "low_freq_factor";
        else if (is_llama3 && !c->rope_high_freq_factor) missing = "high_freq_factor";
        if (missing)
            return it__fail(sub->err, IT_EFORMAT, "%s: %s%s: missing, and %s%s \"%s\" needs it", sub->path,
                            sub->prefix, missing, sub->prefix, type_key, c->rope_type);
        if (c->rope_factor < 1.0)
            return it__fail(sub->err, IT_EFORMAT, "%s: %sfactor: expected a number >= 1 for %s%s \"%s\", got %g",
                            sub->path, sub->prefix, sub->prefix, type_key, c->rope_type, c->rope_factor);
    }
    return IT_OK;
}

/* One rope_scaling / rope_parameters object (FACTS 4.4): rope_type, or the legacy "type" when
 * rope_type is absent or null ("default" when both are); the scaling numbers, 0 when absent or
 * null. Any rope type is recorded, known or not. A v5 object keyed by layer type ({"full_attention":
 * {...}, ...}) holds one RoPE per layer type, which it_config cannot represent. */
static int read_rope_object(it_config *c, const reader *sub)
{
    for (size_t i = 0; i < sub->obj->n; i++)
        if (sub->obj->items[i].type == IT_JSON_OBJ)
            return it__fail(sub->err, IT_EUNSUPPORTED,
                            "%s: %s%.*s: per-layer-type RoPE parameters are not supported (one RoPE for all layers)",
                            sub->path, sub->prefix, (int)(sub->obj->keylens[i] < 64 ? sub->obj->keylens[i] : 64),
                            sub->obj->keys[i]);
    const char *key = "rope_type";
    const it_json *v = lookup(sub, key, NULLABLE);
    if (!v) v = lookup(sub, key = "type", NULLABLE);
    if (v) TRY(take_name(sub, key, v, c->rope_type));
    else snprintf(c->rope_type, sizeof c->rope_type, "default");
    TRY(rd_number(sub, "factor", 0, NULLABLE, &c->rope_factor));
    TRY(rd_number(sub, "low_freq_factor", 0, NULLABLE, &c->rope_low_freq_factor));
    TRY(rd_number(sub, "high_freq_factor", 0, NULLABLE, &c->rope_high_freq_factor));
    TRY(rd_size(sub, "original_max_position_embeddings", 0, NULLABLE, &c->rope_original_max_pos));
    TRY(rd_number(sub, "attention_factor", 0, NULLABLE, &c->rope_attention_factor));
    return check_rope_keys(c, sub, v ? key : "rope_type");
}

/* rope_theta and partial_rotary_factor at the top level; the scaling in rope_scaling, or in the
 * transformers v5 rope_parameters, which wins wholly and may also carry rope_theta and
 * partial_rotary_factor (they win too). Both objects are checked. */
static int read_rope(it_config *c, const reader *r)
{
    reader sub;
    snprintf(c->rope_type, sizeof c->rope_type, "default");
    TRY(rd_number(r, "rope_theta", 10000.0, REQUIRED, &c->rope_theta));
    TRY(rd_fraction(r, "partial_rotary_factor", 1.0, &c->partial_rotary_factor));
    TRY(sub_reader(r, "rope_scaling", "rope_scaling.", &sub));
    if (sub.obj) TRY(read_rope_object(c, &sub));
    TRY(sub_reader(r, "rope_parameters", "rope_parameters.", &sub));
    if (sub.obj) {
        TRY(rd_number(&sub, "rope_theta", c->rope_theta, NULLABLE, &c->rope_theta));
        TRY(rd_fraction(&sub, "partial_rotary_factor", c->partial_rotary_factor, &c->partial_rotary_factor));
        TRY(read_rope_object(c, &sub));
    }
    return IT_OK;
}

/* Head counts: num_key_value_heads None -> num_attention_heads (MistralConfig's absent default is
 * 8); head_dim None -> hidden_size / num_attention_heads, which must then divide exactly. */
static int read_llama_heads(it_config *c, const reader *r, const llama_defaults *d)
{
    TRY(rd_size(r, "num_attention_heads", d->heads, REQUIRED, &c->heads));
    int64_t kv_def = d->kv_heads && !it_json_get(r->obj, "num_key_value_heads") ? d->kv_heads : c->heads;
    TRY(rd_size(r, "num_key_value_heads", kv_def, NULLABLE, &c->kv_heads));
    TRY(need_multiple(r, "num_attention_heads", c->heads, "num_key_value_heads", c->kv_heads,
                      "grouped-query attention shares each key/value head among a whole number of query heads"));
    TRY(rd_size(r, "head_dim", 0, NULLABLE, &c->head_dim));
    if (c->head_dim == 0) {
        TRY(need_multiple(r, "hidden_size", c->hidden, "num_attention_heads", c->heads,
                          "head_dim is not given, so it is hidden_size / num_attention_heads"));
        c->head_dim = c->hidden / c->heads;
    }
    return IT_OK;
}

static int load_llama(it_config *c, const reader *r, const llama_defaults *d)
{
    c->arch = IT_ARCH_LLAMA;
    c->gated = 1; /* the MLP is always gated: down(act(gate(x)) * up(x)) */
    TRY(rd_size(r, "vocab_size", d->vocab, REQUIRED, &c->vocab_size));
    TRY(rd_size(r, "hidden_size", d->hidden, REQUIRED, &c->hidden));
    TRY(rd_size(r, "intermediate_size", d->intermediate, REQUIRED, &c->intermediate));
    TRY(rd_size(r, "num_hidden_layers", d->layers, REQUIRED, &c->layers));
    TRY(read_llama_heads(c, r, d));
    TRY(rd_act(r, "hidden_act", "silu", c->act));
    TRY(rd_number(r, "rms_norm_eps", 1e-6, REQUIRED, &c->norm_eps));
    TRY(rd_size(r, "max_position_embeddings", d->max_pos, REQUIRED, &c->max_position_embeddings));
    TRY(read_rope(c, r));
    TRY(rd_bool(r, "tie_word_embeddings", 0, &c->tie_word_embeddings));
    TRY(rd_bool(r, "attention_bias", 0, &c->attention_bias));
    return rd_bool(r, "mlp_bias", 0, &c->mlp_bias);
}

/* ============================================================================================ */
/* T5 and mT5 (FACTS 5.1)                                                                        */
/* ============================================================================================ */

typedef struct t5_defaults {
    const char *model_type;
    int64_t vocab, d_model, d_kv, d_ff, layers, heads;
    const char *feed_forward_proj;
    int tie;
} t5_defaults;

static const t5_defaults T5_DEFAULTS[] = {
    {"t5", 32128, 512, 64, 2048, 6, 8, "relu", 1},
    {"mt5", 250112, 512, 64, 1024, 8, 6, "gated-gelu", 0},
};

/* T5Config: feed_forward_proj "gated-ACT" or "ACT" gives dense_act_fn = ACT and is_gated_act =
 * (first part == "gated"); anything else is refused as the reference refuses it. "gated-gelu" means
 * gelu_new (tanh GELU) for backwards compatibility. Explicit dense_act_fn / is_gated_act win. */
static int read_t5_act(it_config *c, const reader *r, const char *def)
{
    char ffp[IT_NAME_MAX];
    TRY(rd_act(r, "feed_forward_proj", def, ffp));
    const char *dash = strchr(ffp, '-');
    const char *act = dash ? dash + 1 : ffp;
    int gated = dash ? dash - ffp == 5 && memcmp(ffp, "gated", 5) == 0 : strcmp(ffp, "gated") == 0;
    if ((dash && !gated) || strchr(act, '-') || !*act)
        return it__fail(r->err, IT_EFORMAT, "%s: feed_forward_proj: \"%s\" is not of the form \"gated-ACT\" or \"ACT\"",
                        r->path, ffp);
    snprintf(c->act, sizeof c->act, "%s", strcmp(ffp, "gated-gelu") == 0 ? "gelu_new" : act);
    c->gated = gated;
    TRY(rd_act(r, "dense_act_fn", c->act, c->act));
    return rd_bool(r, "is_gated_act", c->gated, &c->gated);
}

/* inner = num_heads * d_kv need not equal d_model, so no divisibility rule applies. */
static int load_t5(it_config *c, const reader *r, const t5_defaults *d)
{
    c->arch = IT_ARCH_T5;
    TRY(rd_size(r, "vocab_size", d->vocab, REQUIRED, &c->vocab_size));
    TRY(rd_size(r, "d_model", d->d_model, REQUIRED, &c->hidden));
    TRY(rd_size(r, "d_kv", d->d_kv, REQUIRED, &c->head_dim));
    TRY(rd_size(r, "d_ff", d->d_ff, REQUIRED, &c->intermediate));
    TRY(rd_size(r, "num_layers", d->layers, REQUIRED, &c->layers));
    TRY(rd_size(r, "num_decoder_layers", c->layers, NULLABLE, &c->decoder_layers));
    TRY(rd_size(r, "num_heads", d->heads, REQUIRED, &c->heads));
    TRY(rd_number(r, "layer_norm_epsilon", 1e-6, REQUIRED, &c->norm_eps));
    TRY(read_t5_act(c, r, d->feed_forward_proj));
    TRY(rd_size(r, "relative_attention_num_buckets", 32, REQUIRED, &c->rel_buckets));
    TRY(rd_size(r, "relative_attention_max_distance", 128, REQUIRED, &c->rel_max_distance));
    TRY(rd_token(r, "decoder_start_token_id", -1, &c->decoder_start_token_id));
    TRY(rd_token(r, "eos_token_id", 1, &c->eos_token_id));
    return rd_bool(r, "tie_word_embeddings", d->tie, &c->tie_word_embeddings);
}

/* ============================================================================================ */
/* CLIP (FACTS 6.1; defaults = openai/clip-vit-base-patch32)                                     */
/* ============================================================================================ */

enum { CLIP_TEXT = 1, CLIP_VISION = 2 };

/* CLIPAttention refuses embed_dim not divisible by num_heads, hence the check. */
static const char CLIP_HEADS_WHY[] = "CLIP attention splits hidden_size into num_attention_heads equal heads";

/* CLIPTextConfig: the text tower's sizes, activation and epsilon. */
static int read_clip_text(it_config *c, const reader *r)
{
    TRY(rd_size(r, "vocab_size", 49408, REQUIRED, &c->vocab_size));
    TRY(rd_size(r, "hidden_size", 512, REQUIRED, &c->hidden));
    TRY(rd_size(r, "intermediate_size", 2048, REQUIRED, &c->intermediate));
    TRY(rd_size(r, "num_hidden_layers", 12, REQUIRED, &c->layers));
    TRY(rd_size(r, "num_attention_heads", 8, REQUIRED, &c->heads));
    TRY(need_multiple(r, "hidden_size", c->hidden, "num_attention_heads", c->heads, CLIP_HEADS_WHY));
    c->head_dim = c->hidden / c->heads;
    TRY(rd_size(r, "max_position_embeddings", 77, REQUIRED, &c->max_position_embeddings));
    TRY(rd_act(r, "hidden_act", "quick_gelu", c->act));
    TRY(rd_token(r, "eos_token_id", 49407, &c->eos_token_id));
    return rd_number(r, "layer_norm_eps", 1e-5, REQUIRED, &c->norm_eps);
}

/* CLIPVisionConfig: the vision tower's sizes, activation and epsilon (which may differ from the
 * text tower's: each tower keeps its own). */
static int read_clip_vision(it_config *c, const reader *r)
{
    TRY(rd_size(r, "hidden_size", 768, REQUIRED, &c->vision_hidden));
    TRY(rd_size(r, "intermediate_size", 3072, REQUIRED, &c->vision_intermediate));
    TRY(rd_size(r, "num_hidden_layers", 12, REQUIRED, &c->vision_layers));
    TRY(rd_size(r, "num_attention_heads", 12, REQUIRED, &c->vision_heads));
    TRY(need_multiple(r, "hidden_size", c->vision_hidden, "num_attention_heads", c->vision_heads, CLIP_HEADS_WHY));
    TRY(rd_size(r, "image_size", 224, REQUIRED, &c->image_size));
    TRY(rd_size(r, "patch_size", 32, REQUIRED, &c->patch_size));
    TRY(rd_size(r, "num_channels", 3, REQUIRED, &c->num_channels));
    TRY(rd_act(r, "hidden_act", "quick_gelu", c->vision_act));
    return rd_number(r, "layer_norm_eps", 1e-5, REQUIRED, &c->vision_norm_eps);
}

/* towers: CLIP_TEXT | CLIP_VISION for a CLIPModel (sub-configs text_config / vision_config), one of
 * them for a standalone clip_text_model / clip_vision_model config (keys at the top level). */
static int load_clip(it_config *c, const reader *r, int towers)
{
    reader tr = *r, vr = *r;
    c->arch = IT_ARCH_CLIP;
    TRY(rd_size(r, "projection_dim", 512, REQUIRED, &c->projection_dim));
    if (towers == (CLIP_TEXT | CLIP_VISION)) {
        TRY(sub_reader(r, "text_config", "text_config.", &tr));
        TRY(sub_reader(r, "vision_config", "vision_config.", &vr));
    }
    if (towers & CLIP_TEXT) TRY(read_clip_text(c, &tr));
    if (towers & CLIP_VISION) TRY(read_clip_vision(c, &vr));
    return IT_OK;
}

/* ============================================================================================ */
/* diffusers UNet2DConditionModel (FACTS 7.1; defaults are the __init__ defaults)                */
/* ============================================================================================ */

/* block_out_channels: 1 to 8 positive integers, default [320, 640, 1280, 1280]. */
static int read_blocks(it_config *c, const reader *r)
{
    static const int64_t def[] = {320, 640, 1280, 1280};
    const it_json *v = lookup(r, "block_out_channels", REQUIRED);
    if (!v) {
        c->nblocks = 4;
        memcpy(c->block_out_channels, def, sizeof def);
        return IT_OK;
    }
    if (v->type != IT_JSON_ARR || v->n == 0) return bad_value(r, "block_out_channels", "a non-empty array", v);
    if (v->n > 8)
        return it__fail(r->err, IT_EUNSUPPORTED, "%s: block_out_channels: %zu blocks, at most 8 are supported", r->path,
                        v->n);
    for (size_t i = 0; i < v->n; i++)
        TRY(take_size(r, "block_out_channels[]", &v->items[i], &c->block_out_channels[i]));
    c->nblocks = (int64_t)v->n;
    return IT_OK;
}

/* A diffusers per-block setting: one integer for every block, or an array with one entry per block
 * (diffusers refuses another length), expanded to out[nblocks]. */
static int rd_block_list(const reader *r, const char *key, int64_t def, int64_t nblocks, int64_t out[8])
{
    const it_json *v = lookup(r, key, REQUIRED);
    if (!v || v->type != IT_JSON_ARR) {
        int64_t x = 0;
        TRY(rd_size(r, key, def, REQUIRED, &x));
        for (int64_t i = 0; i < nblocks; i++) out[i] = x;
        return IT_OK;
    }
    if ((int64_t)v->n != nblocks)
        return it__fail(r->err, IT_EFORMAT, "%s: %s: %zu entries, but block_out_channels has %" PRId64, r->path, key,
                        v->n, nblocks);
    for (size_t i = 0; i < v->n; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s[%zu]", key, i);
        TRY(take_size(r, name, &v->items[i], &out[i]));
    }
    return IT_OK;
}

/* A per-block setting it_config holds once (layers_per_block, cross_attention_dim): an array whose
 * entries differ is IT_EUNSUPPORTED. */
static int rd_per_block(const reader *r, const char *key, int64_t def, int64_t nblocks, int64_t *out)
{
    int64_t v[8];
    TRY(rd_block_list(r, key, def, nblocks, v));
    for (int64_t i = 1; i < nblocks; i++)
        if (v[i] != v[0])
            return it__fail(r->err, IT_EUNSUPPORTED,
                            "%s: %s: per-block values that differ (block 0: %" PRId64 ", block %" PRId64 ": %" PRId64
                            ") are not supported",
                            r->path, key, v[0], i, v[i]);
    *out = v[0];
    return IT_OK;
}

/* down_block_types / up_block_types, when given: one name per block (diffusers checks this). */
static int check_block_types(const reader *r, const char *key, int64_t nblocks)
{
    const it_json *v = lookup(r, key, REQUIRED);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_ARR) return bad_value(r, key, "an array of block names", v);
    for (size_t i = 0; i < v->n; i++)
        if (v->items[i].type != IT_JSON_STR) return bad_value(r, key, "an array of block names", &v->items[i]);
    if ((int64_t)v->n != nblocks)
        return it__fail(r->err, IT_EFORMAT, "%s: %s: %zu entries, but block_out_channels has %" PRId64, r->path, key,
                        v->n, nblocks);
    return IT_OK;
}

/* attention_head_dim is, by a historical misnomer, the NUMBER of heads per block
 * (num_attention_heads = num_attention_heads or attention_head_dim); diffusers raises ValueError
 * for an explicit num_attention_heads, so it must be absent or null. SD2.x gives a list
 * ([5, 10, 20, 20]): head_dim 64 everywhere. transformer_layers_per_block as a list of lists (an
 * asymmetric UNet, with reverse_transformer_layers_per_block) has no field in it_config. */
static int read_unet_attention(it_config *c, const reader *r)
{
    const it_json *nh = lookup(r, "num_attention_heads", NULLABLE);
    if (nh)
        return it__fail(r->err, IT_EUNSUPPORTED,
                        "%s: num_attention_heads must be null for UNet2DConditionModel (diffusers refuses it; "
                        "attention_head_dim gives the number of heads)",
                        r->path);
    TRY(rd_block_list(r, "attention_head_dim", 8, c->nblocks, c->attention_head_dims));
    c->attention_head_dim = c->heads = c->attention_head_dims[0];
    TRY(rd_per_block(r, "cross_attention_dim", 1280, c->nblocks, &c->cross_attention_dim));
    const it_json *tl = lookup(r, "transformer_layers_per_block", REQUIRED);
    for (size_t i = 0; tl && tl->type == IT_JSON_ARR && i < tl->n; i++)
        if (tl->items[i].type == IT_JSON_ARR)
            return it__fail(r->err, IT_EUNSUPPORTED,
                            "%s: transformer_layers_per_block[%zu]: per-layer lists (an asymmetric UNet) are not "
                            "supported, only one count per block",
                            r->path, i);
    TRY(rd_block_list(r, "transformer_layers_per_block", 1, c->nblocks, c->transformer_layers));
    return rd_bool(r, "use_linear_projection", 0, &c->use_linear_projection);
}

static int load_unet(it_config *c, const reader *r)
{
    c->arch = IT_ARCH_UNET;
    TRY(rd_size(r, "in_channels", 4, REQUIRED, &c->in_channels));
    TRY(rd_size(r, "out_channels", 4, REQUIRED, &c->out_channels));
    TRY(rd_size(r, "sample_size", 0, NULLABLE, &c->sample_size));
    TRY(read_blocks(c, r));
    TRY(check_block_types(r, "down_block_types", c->nblocks));
    TRY(check_block_types(r, "up_block_types", c->nblocks));
    TRY(rd_per_block(r, "layers_per_block", 2, c->nblocks, &c->layers_per_block));
    TRY(read_unet_attention(c, r));
    TRY(rd_size(r, "norm_num_groups", 32, REQUIRED, &c->norm_groups));
    for (int64_t i = 0; i < c->nblocks; i++)
        if (c->block_out_channels[i] % c->norm_groups)
            return it__fail(r->err, IT_EFORMAT,
                            "%s: block_out_channels[%" PRId64 "] %" PRId64
                            " is not a multiple of norm_num_groups %" PRId64 " (GroupNorm needs it)",
                            r->path, i, c->block_out_channels[i], c->norm_groups);
    TRY(rd_number(r, "norm_eps", 1e-5, REQUIRED, &c->norm_eps));
    return rd_act(r, "act_fn", "silu", c->act);
}

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

/* Reads and parses a JSON config; path is the file or a folder holding name. On success *file is
 * the malloc'd file path (for messages) and *doc the parsed document, whose root is an object. */
static int parse_json_file(const char *path, const char *name, char **file, it_json_doc **doc, it_err *err)
{
    char *text = NULL;
    size_t len = 0;
    *doc = NULL;
    *file = it__is_dir(path) ? it__path_join(path, name) : it__strdup(path);
    if (!*file) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    int rc = it__read_file(*file, CONFIG_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK) {
        rc = it_json_parse(doc, text, len, IT_JSON_NODUP, err);
        if (rc != IT_OK) it__err_prefix(err, *file);
    }
    free(text);
    if (rc == IT_OK && it_json_root(*doc)->type != IT_JSON_OBJ) {
        char what[64];
        it_json_describe(it_json_root(*doc), what, sizeof what);
        rc = it__fail(err, IT_EFORMAT, "%s: expected a JSON object at the top level, got %s", *file, what);
    }
    if (rc != IT_OK) {
        if (*doc) it_json_free(*doc);
        *doc = NULL;
        free(*file);
        *file = NULL;
    }
    return rc;
}

/* model_type (a string, or null/absent) and class_name = architectures[0] or diffusers'
 * _class_name. Sets *type to the model_type value (NULL when absent) and *cls to the class name. */
static int read_names(it_config *c, const reader *r, const it_json **type, const it_json **cls)
{
    *type = lookup(r, "model_type", NULLABLE);
    if (*type && (*type)->type != IT_JSON_STR) return bad_value(r, "model_type", "a string", *type);
    *cls = NULL;
    const it_json *a = lookup(r, "architectures", NULLABLE);
    if (a && a->type != IT_JSON_ARR) return bad_value(r, "architectures", "an array of class names", a);
    if (a && a->n > 0) *cls = &a->items[0];
    else *cls = lookup(r, "_class_name", NULLABLE);
    if (*cls && (*cls)->type != IT_JSON_STR)
        return bad_value(r, a ? "architectures[0]" : "_class_name", "a class name string", *cls);
    if (*type) copy_name(c->model_type, sizeof c->model_type, (*type)->s, (*type)->len);
    if (*cls) copy_name(c->class_name, sizeof c->class_name, (*cls)->s, (*cls)->len);
    return IT_OK;
}

/* Dispatches on model_type (the full string, before any truncation). An unknown type is not an
 * error: the caller gets IT_ARCH_UNKNOWN with the names filled in. */
static int load_root(it_config *c, const reader *r)
{
    const it_json *type = NULL, *cls = NULL;
    TRY(read_names(c, r, &type, &cls));
    for (size_t i = 0; i < sizeof LLAMA_DEFAULTS / sizeof LLAMA_DEFAULTS[0]; i++)
        if (json_is(type, LLAMA_DEFAULTS[i].model_type)) return load_llama(c, r, &LLAMA_DEFAULTS[i]);
    for (size_t i = 0; i < sizeof T5_DEFAULTS / sizeof T5_DEFAULTS[0]; i++)
        if (json_is(type, T5_DEFAULTS[i].model_type)) return load_t5(c, r, &T5_DEFAULTS[i]);
    if (json_is(type, "clip")) return load_clip(c, r, CLIP_TEXT | CLIP_VISION);
    if (json_is(type, "clip_text_model")) return load_clip(c, r, CLIP_TEXT);
    if (json_is(type, "clip_vision_model")) return load_clip(c, r, CLIP_VISION);
    if (!type && json_is(cls, "UNet2DConditionModel")) {
        snprintf(c->model_type, sizeof c->model_type, "unet");
        return load_unet(c, r);
    }
    c->arch = IT_ARCH_UNKNOWN;
    return IT_OK;
}

int it_config_load(it_config *cfg, const char *path, it_err *err)
{
    char *file;
    it_json_doc *doc;
    memset(cfg, 0, sizeof *cfg);
    int rc = parse_json_file(path, "config.json", &file, &doc, err);
    if (rc != IT_OK) return rc;
    reader r = {file, "", it_json_root(doc), err};
    rc = load_root(cfg, &r);
    if (rc != IT_OK) memset(cfg, 0, sizeof *cfg);
    it_json_free(doc);
    free(file);
    return rc;
}

/* ============================================================================================ */
/* Description                                                                                   */
/* ============================================================================================ */

/* Appends to buf[size] at *off; output that does not fit is cut and buf stays NUL-terminated. */
static void app(char *buf, size_t size, size_t *off, const char *fmt, ...) IT__PRINTF(4, 5);
static void app(char *buf, size_t size, size_t *off, const char *fmt, ...)
{
    if (*off + 1 >= size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *off, size - *off, fmt, ap);
    va_end(ap);
    if (n < 0) buf[*off] = 0;
    else *off = (size_t)n >= size - *off ? size - 1 : *off + (size_t)n;
}

/* The RoPE variant, when it is not the plain one: ", rope llama3 x8 (low 1, high 4, orig 8192)". */
static void describe_rope(const it_config *c, char *buf, size_t size, size_t *off)
{
    if (strcmp(c->rope_type, "default") != 0) {
        app(buf, size, off, ", rope %s", c->rope_type);
        if (c->rope_factor) app(buf, size, off, " x%g", c->rope_factor);
        char extra[192] = "";
        size_t n = 0;
        if (c->rope_low_freq_factor) app(extra, sizeof extra, &n, ", low %g", c->rope_low_freq_factor);
        if (c->rope_high_freq_factor) app(extra, sizeof extra, &n, ", high %g", c->rope_high_freq_factor);
        if (c->rope_original_max_pos) app(extra, sizeof extra, &n, ", orig %" PRId64, c->rope_original_max_pos);
        if (c->rope_attention_factor) app(extra, sizeof extra, &n, ", attention %g", c->rope_attention_factor);
        if (n) app(buf, size, off, " (%s)", extra + 2);
    }
    if (c->partial_rotary_factor != 1.0) app(buf, size, off, ", partial rotary %g", c->partial_rotary_factor);
}

static void describe_llama(const it_config *c, char *buf, size_t size, size_t *off)
{
    app(buf, size, off,
        ": vocab %" PRId64 ", hidden %" PRId64 ", intermediate %" PRId64 ", layers %" PRId64 ", heads %" PRId64
        " (kv %" PRId64 ", head_dim %" PRId64 "), %s, rope_theta %g",
        c->vocab_size, c->hidden, c->intermediate, c->layers, c->heads, c->kv_heads, c->head_dim, c->act,
        c->rope_theta);
    describe_rope(c, buf, size, off);
    app(buf, size, off, ", rms_norm_eps %g, %s head", c->norm_eps, c->tie_word_embeddings ? "tied" : "untied");
    if (c->attention_bias) app(buf, size, off, ", attention bias");
    if (c->mlp_bias) app(buf, size, off, ", mlp bias");
}

static void describe_t5(const it_config *c, char *buf, size_t size, size_t *off)
{
    app(buf, size, off,
        ": vocab %" PRId64 ", d_model %" PRId64 ", d_ff %" PRId64 ", layers %" PRId64 " encoder + %" PRId64
        " decoder, heads %" PRId64 " (d_kv %" PRId64 "), %s%s, layer_norm_epsilon %g, %s head",
        c->vocab_size, c->hidden, c->intermediate, c->layers, c->decoder_layers, c->heads, c->head_dim,
        c->gated ? "gated " : "", c->act, c->norm_eps, c->tie_word_embeddings ? "tied" : "untied");
}

/* The activation and epsilon once when the towers agree (or there is one), else per tower. */
static void describe_clip(const it_config *c, char *buf, size_t size, size_t *off)
{
    app(buf, size, off, ":");
    if (c->hidden)
        app(buf, size, off,
            " text vocab %" PRId64 ", hidden %" PRId64 ", intermediate %" PRId64 ", layers %" PRId64 ", heads %" PRId64
            ";",
            c->vocab_size, c->hidden, c->intermediate, c->layers, c->heads);
    if (c->vision_hidden)
        app(buf, size, off,
            " vision hidden %" PRId64 ", intermediate %" PRId64 ", layers %" PRId64 ", heads %" PRId64
            ", image %" PRId64 ", patch %" PRId64 ";",
            c->vision_hidden, c->vision_intermediate, c->vision_layers, c->vision_heads, c->image_size,
            c->patch_size);
    app(buf, size, off, " projection %" PRId64, c->projection_dim);
    int both = c->hidden && c->vision_hidden;
    if (both && (strcmp(c->act, c->vision_act) != 0 || c->norm_eps != c->vision_norm_eps))
        app(buf, size, off, ", text %s, layer_norm_eps %g, vision %s, layer_norm_eps %g", c->act, c->norm_eps,
            c->vision_act, c->vision_norm_eps);
    else if (c->hidden) app(buf, size, off, ", %s, layer_norm_eps %g", c->act, c->norm_eps);
    else app(buf, size, off, ", %s, layer_norm_eps %g", c->vision_act, c->vision_norm_eps);
}

/* Appends " [a, b, ...]" for a per-block list whose entries differ, else " a". */
static void describe_blocks(const int64_t *v, int64_t n, char *buf, size_t size, size_t *off)
{
    int same = 1;
    for (int64_t i = 1; i < n && i < 8; i++) same &= v[i] == v[0];
    if (same) {
        app(buf, size, off, " %" PRId64, n > 0 ? v[0] : 0);
        return;
    }
    for (int64_t i = 0; i < n && i < 8; i++) app(buf, size, off, "%s%" PRId64, i ? ", " : " [", v[i]);
    app(buf, size, off, "]");
}

static void describe_unet(const it_config *c, char *buf, size_t size, size_t *off)
{
    app(buf, size, off, ": block_out_channels [");
    for (int64_t i = 0; i < c->nblocks && i < 8; i++)
        app(buf, size, off, "%s%" PRId64, i ? ", " : "", c->block_out_channels[i]);
    app(buf, size, off, "], layers_per_block %" PRId64 ", cross_attention_dim %" PRId64 ", attention_head_dim",
        c->layers_per_block, c->cross_attention_dim);
    describe_blocks(c->attention_head_dims, c->nblocks, buf, size, off);
    app(buf, size, off, " (= heads)");
    int one = 1;
    for (int64_t i = 0; i < c->nblocks && i < 8; i++) one &= c->transformer_layers[i] == 1;
    if (!one) {
        app(buf, size, off, ", transformer_layers_per_block");
        describe_blocks(c->transformer_layers, c->nblocks, buf, size, off);
    }
    if (c->use_linear_projection) app(buf, size, off, ", linear projection");
    app(buf, size, off, ", norm groups %" PRId64 ", in %" PRId64 ", out %" PRId64, c->norm_groups, c->in_channels,
        c->out_channels);
    if (c->sample_size) app(buf, size, off, ", sample %" PRId64, c->sample_size);
    else app(buf, size, off, ", sample unset");
    app(buf, size, off, ", %s, norm_eps %g", c->act, c->norm_eps);
}

void it_config_describe(const it_config *cfg, char *buf, size_t size)
{
    size_t off = 0;
    if (!buf || size == 0) return;
    buf[0] = 0;
    if (!cfg) return;
    app(buf, size, &off, "%s", cfg->model_type[0] ? cfg->model_type : "(no model_type)");
    if (cfg->class_name[0]) app(buf, size, &off, " (%s)", cfg->class_name);
    switch (cfg->arch) {
    case IT_ARCH_LLAMA: describe_llama(cfg, buf, size, &off); break;
    case IT_ARCH_T5: describe_t5(cfg, buf, size, &off); break;
    case IT_ARCH_CLIP: describe_clip(cfg, buf, size, &off); break;
    case IT_ARCH_UNET: describe_unet(cfg, buf, size, &off); break;
    default: app(buf, size, &off, ": architecture not supported"); break;
    }
}

/* ============================================================================================ */
/* Models: the weights file                                                                      */
/* ============================================================================================ */
/*
 * A model folder holds config.json and its weights: model.safetensors, or a sharded set through
 * model.safetensors.index.json (the names transformers writes); failing both, the one
 * *.safetensors.index.json or the one *.safetensors file of the folder.
 */

/* 1 when name ends with suffix. */
static int has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

/* The one file of dir whose name ends with suffix: *found = malloc'd path, NULL when there is
 * none; two or more are IT_EFORMAT (which would be the weights is not guessed). */
static int find_single(const char *dir, const char *suffix, char **found, it_err *err)
{
    DIR *d = opendir(dir);
    *found = NULL;
    if (!d) return it__fail(err, IT_EIO, "%s: cannot read the folder", dir);
    struct dirent *e;
    int rc = IT_OK;
    while (rc == IT_OK && (e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, suffix) || e->d_name[0] == '.') continue;
        if (*found) rc = it__fail(err, IT_EFORMAT, "%s: several *%s files (%s, %s): which holds the weights is unclear",
                                  dir, suffix, strrchr(*found, '/') + 1, e->d_name);
        else if (!(*found = it__path_join(dir, e->d_name))) rc = it__fail(err, IT_ENOMEM, "out of memory");
    }
    closedir(d);
    if (rc != IT_OK) {
        free(*found);
        *found = NULL;
    }
    return rc;
}

/* The weights file of the model folder dir (malloc'd path). */
static int find_weights(const char *dir, char **path, it_err *err)
{
    static const char *const names[] = {"model.safetensors.index.json", "model.safetensors"};
    for (size_t i = 0; i < 2; i++) {
        if (!(*path = it__path_join(dir, names[i]))) return it__fail(err, IT_ENOMEM, "out of memory");
        if (it__exists(*path)) return IT_OK;
        free(*path);
    }
    int rc = find_single(dir, ".safetensors.index.json", path, err);
    if (rc == IT_OK && !*path) rc = find_single(dir, ".safetensors", path, err);
    if (rc == IT_OK && !*path)
        rc = it__fail(err, IT_ENOTFOUND, "%s: no safetensors weights in this folder (looked for model.safetensors, "
                      "model.safetensors.index.json, *.safetensors)", dir);
    return rc;
}

/* ============================================================================================ */
/* Models: tensors and sites                                                                     */
/* ============================================================================================ */

/* 1 on a little-endian host (the only one where f32 bytes on disk can be used in place). */
static int host_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* "[a, b]" into buf[size], from int64 sizes (dims64) or the file's uint64 sizes (dimsu). */
static void shape_str(char *buf, size_t size, size_t ndim, const int64_t *dims64, const uint64_t *dimsu)
{
    size_t off = 0;
    app(buf, size, &off, "[");
    for (size_t i = 0; i < ndim; i++)
        app(buf, size, &off, "%s%" PRIu64, i ? ", " : "", dims64 ? (uint64_t)dims64[i] : dimsu[i]);
    app(buf, size, &off, "]");
}

/* IT_EFORMAT unless tensor t has ndim dimensions of the given sizes. */
static int check_shape(const it_model *m, const it_tensor *t, size_t ndim, const int64_t *shape, it_err *err)
{
    int same = t->ndim == ndim;
    for (size_t i = 0; same && i < ndim; i++) same = t->shape[i] == (uint64_t)shape[i];
    if (same) return IT_OK;
    char want[128], got[128];
    shape_str(want, sizeof want, ndim, shape, NULL);
    shape_str(got, sizeof got, t->ndim, NULL, t->shape);
    return it__fail(err, IT_EFORMAT, "%s: tensor %s has shape %s, expected %s", it_st_file_path(m->st, t->file),
                    t->name, got, want);
}

/* Keeps p (owned by the model from now on, freed with it); frees it on failure. */
static int own(it_model *m, float *p, it_err *err)
{
    if (m->nowned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 16;
        float **o = realloc(m->owned, cap * sizeof *o);
        if (!o) {
            free(p);
            return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->nowned++] = p;
    return IT_OK;
}

/* The f32 values of t: in place, or an owned copy (f16, bf16, unaligned or big-endian f32). */
static int tensor_f32(it_model *m, const it_tensor *t, const float **out, it_err *err)
{
    const char *file = it_st_file_path(m->st, t->file);
    if (t->dtype != IT_F32 && t->dtype != IT_F16 && t->dtype != IT_BF16)
        return it__fail(err, IT_EUNSUPPORTED, "%s: tensor %s: dtype %s is not supported (F32, F16 or BF16)", file,
                        t->name, it_dtype_name(t->dtype));
    if (t->dtype == IT_F32 && host_little_endian() && (uintptr_t)t->data % _Alignof(float) == 0) {
        *out = (const float *)t->data;
        return IT_OK;
    }
    float *f = t->numel ? it__malloc_n((size_t)t->numel, sizeof *f) : malloc(1);
    if (!f) return it__fail(err, IT_ENOMEM, "%s: tensor %s: out of memory", file, t->name);
    int rc = it_tensor_to_f32(t, f, err);
    if (rc != IT_OK) {
        free(f);
        return rc;
    }
    *out = f;
    return own(m, f, err);
}

int it__model_has(const it_model *m, const char *name) { return it_st_find(m->st, name) != NULL; }

int it__model_tensor(it_model *m, const char *name, size_t ndim, const int64_t *shape, const float **out,
                     it_err *err)
{
    const it_tensor *t = it_st_find(m->st, name);
    if (!t) {
        char want[128];
        shape_str(want, sizeof want, ndim, shape, NULL);
        return it__fail(err, IT_ENOTFOUND, "%s: tensor %s is missing (expected shape %s)", m->wpath, name, want);
    }
    int rc = check_shape(m, t, ndim, shape, err);
    return rc == IT_OK ? tensor_f32(m, t, out, err) : rc;
}

/* Room for one more site (the table and the delta slots grow together). */
static int grow_sites(it_model *m, it_err *err)
{
    if (m->nsites < m->cap_sites) return IT_OK;
    size_t cap = m->cap_sites ? 2 * m->cap_sites : 64;
    it_model_site *s = realloc(m->sites, cap * sizeof *s);
    if (s) m->sites = s;
    const it_delta **d = s ? realloc(m->delta, cap * sizeof *d) : NULL;
    if (!d) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    m->delta = d;
    m->cap_sites = cap;
    return IT_OK;
}

int it__model_add_site(it_model *m, const char *name, size_t group, int64_t d_out, int64_t d_in, const char *wname,
                       const float *w0, const char *bname, size_t *index, it_err *err)
{
    const float *bias = NULL;
    const int64_t wshape[2] = {d_out, d_in};
    if (wname) TRY(it__model_tensor(m, wname, 2, wshape, &w0, err));
    if (bname) TRY(it__model_tensor(m, bname, 1, &d_out, &bias, err));
    TRY(grow_sites(m, err));
    char *copy = it__strdup(name);
    if (!copy) return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    m->sites[m->nsites] = (it_model_site){copy, d_out, d_in, group, w0, bias};
    m->delta[m->nsites] = NULL;
    *index = m->nsites++;
    if (group + 1 > m->ngroups) m->ngroups = group + 1;
    return IT_OK;
}

/* ============================================================================================ */
/* Models: one site's product, with its delta as PEFT computes it                                */
/* ============================================================================================ */

/* At least n floats of scratch space. */
static float *scratch(it_model *m, size_t n)
{
    if (n <= m->scratch_cap) return m->scratch;
    float *p = it__malloc_n(n, sizeof *p);
    if (!p) return NULL;
    free(m->scratch);
    m->scratch = p;
    m->scratch_cap = n;
    return p;
}

/* y (nrows, d_out) += b (d_out) on every row. */
static void add_bias(float *y, const float *b, size_t nrows, size_t d_out)
{
    for (size_t i = 0; i < nrows; i++)
        for (size_t j = 0; j < d_out; j++) y[i * d_out + j] += b[j];
}

/* y (nrows, d_out) += ((x A^T) B^T) * scale with x (nrows, d_in), A (r, d_in), B (d_out, r): PEFT's
 * lora_B(lora_A(x)) * scaling, the scaling a float32 multiply of the finished product, then added. */
static int add_lowrank(it_model *m, const it_model_site *s, const it_delta *d, const float *x, size_t nrows,
                       float *y, it_err *err)
{
    size_t r = (size_t)d->r, dout = (size_t)s->d_out, din = (size_t)s->d_in, nt, nu, n;
    float *t;
    if (it__mul_size(nrows, r, &nt) || it__mul_size(nrows, dout, &nu) || it__add_size(nt, nu, &n) ||
        !(t = scratch(m, n)))
        return it__fail(err, IT_ENOMEM, "site %s: out of memory for the delta's product", s->name);
    float *u = t + nt, sc = (float)d->scale;
    if (it_sgemm(IT_N, IT_T, nrows, r, din, 1.0f, x, din, d->A, din, 0.0f, t, r) != IT_OK ||
        it_sgemm(IT_N, IT_T, nrows, dout, r, 1.0f, t, r, d->B, r, 0.0f, u, dout) != IT_OK)
        return it__fail(err, IT_ENOMEM, "site %s: out of memory in the delta's product", s->name);
    for (size_t i = 0; i < nu; i++) y[i] = y[i] + u[i] * sc;
    return IT_OK;
}

int it__linear(it_model *m, size_t site, const float *x, size_t nrows, float *y, it_err *err)
{
    const it_model_site *s = &m->sites[site];
    const it_delta *d = m->delta[site];
    size_t dout = (size_t)s->d_out, din = (size_t)s->d_in;
    if (m->obs && m->obs(m->obs_ctx, site, x, nrows, din) != 0) return IT__STOP;
    if (!y) return IT_OK;
    if (it_sgemm(IT_N, IT_T, nrows, dout, din, 1.0f, x, din, s->w0, din, 0.0f, y, dout) != IT_OK)
        return it__fail(err, IT_ENOMEM, "site %s: out of memory in the product", s->name);
    if (s->bias) add_bias(y, s->bias, nrows, dout);
    if (d && d->A && d->B && d->r > 0) return add_lowrank(m, s, d, x, nrows, y, err);
    if (d && !d->A && d->dense &&
        it_sgemm(IT_N, IT_T, nrows, dout, din, 1.0f, x, din, d->dense, din, 1.0f, y, dout) != IT_OK)
        return it__fail(err, IT_ENOMEM, "site %s: out of memory in the delta's product", s->name);
    return IT_OK;
}

/* ============================================================================================ */
/* Layers shared by the architectures                                                            */
/* ============================================================================================ */

void it__embed_rows(float *h, const float *embed, const int32_t *ids, size_t n, size_t H)
{
    for (size_t i = 0; i < n; i++) memcpy(h + i * H, embed + (size_t)ids[i] * H, H * sizeof *h);
}

void it__rmsnorm(float *out, const float *x, const float *w, size_t n, size_t H, float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * H;
        double ss = 0;
        for (size_t j = 0; j < H; j++) ss += (double)(xi[j] * xi[j]);
        float r = 1.0f / sqrtf((float)(ss / (double)H) + eps);
        for (size_t j = 0; j < H; j++) out[i * H + j] = w[j] * (xi[j] * r);
    }
}

/* The mean and the biased variance in double, rounded to float as torch's float32 kernel returns
 * them; then (x - mean) * rstd * w + b. */
void it__layernorm(float *out, const float *x, const float *w, const float *b, size_t n, size_t H, float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * H;
        double mean = 0, var = 0;
        for (size_t j = 0; j < H; j++) mean += xi[j];
        mean /= (double)H;
        for (size_t j = 0; j < H; j++) var += ((double)xi[j] - mean) * ((double)xi[j] - mean);
        float mu = (float)mean, rstd = 1.0f / sqrtf((float)(var / (double)H) + eps);
        for (size_t j = 0; j < H; j++) out[i * H + j] = (xi[j] - mu) * rstd * w[j] + b[j];
    }
}

void it__residual(float *h, const float *y, size_t m)
{
    for (size_t i = 0; i < m; i++) h[i] = h[i] + y[i];
}

void it__softmax(float *p, size_t m)
{
    float mx = p[0];
    for (size_t j = 1; j < m; j++) mx = p[j] > mx ? p[j] : mx;
    double sum = 0;
    for (size_t j = 0; j < m; j++) {
        p[j] = expf(p[j] - mx);
        sum += p[j];
    }
    float s = (float)sum;
    for (size_t j = 0; j < m; j++) p[j] = p[j] / s;
}

int it__act_known(const char *a)
{
    return !strcmp(a, "relu") || !strcmp(a, "gelu") || !strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh") ||
           !strcmp(a, "quick_gelu") || !strcmp(a, "silu") || !strcmp(a, "swish");
}

/* transformers' activations.py: GELUActivation is erf GELU; NewGELUActivation and
 * PytorchGELUTanh the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); QuickGELU
 * x * sigmoid(1.702 x); SiLU x / (1 + exp(-x)). Each in float32. */
void it__act_apply(const char *a, float *x, size_t m)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    if (!strcmp(a, "relu"))
        for (size_t i = 0; i < m; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    else if (!strcmp(a, "gelu"))
        for (size_t i = 0; i < m; i++) x[i] = x[i] * 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f));
    else if (!strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh"))
        for (size_t i = 0; i < m; i++) x[i] = 0.5f * x[i] * (1.0f + tanhf(k * (x[i] + 0.044715f * (x[i] * x[i] * x[i]))));
    else if (!strcmp(a, "quick_gelu"))
        for (size_t i = 0; i < m; i++) x[i] = x[i] * (1.0f / (1.0f + expf(-1.702f * x[i])));
    else
        for (size_t i = 0; i < m; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void it__attention(float *ctx, const float *q, const float *k, const float *v, size_t nq, size_t nk, size_t nH,
                   size_t nKV, size_t hd, float scale, const float *bias, int causal, float *p)
{
    size_t rep = nH / nKV, qd = nH * hd, kd = nKV * hd;
    for (size_t h = 0; h < nH; h++)
        for (size_t i = 0; i < nq; i++) {
            const float *qi = q + i * qd + h * hd;
            size_t kvh = h / rep, nkey = causal ? (i + 1 < nk ? i + 1 : nk) : nk;
            for (size_t j = 0; j < nkey; j++) {
                const float *kj = k + j * kd + kvh * hd;
                double dot = 0;
                for (size_t d = 0; d < hd; d++) dot += (double)qi[d] * kj[d];
                p[j] = (float)dot * scale;
                if (bias) p[j] = p[j] + bias[(h * nq + i) * nk + j];
            }
            it__softmax(p, nkey);
            float *out = ctx + i * qd + h * hd;
            for (size_t d = 0; d < hd; d++) {
                double acc = 0;
                for (size_t j = 0; j < nkey; j++) acc += (double)p[j] * v[j * kd + kvh * hd + d];
                out[d] = (float)acc;
            }
        }
}

/* ============================================================================================ */
/* Models: loading and the public calls                                                          */
/* ============================================================================================ */

int it__model_state(it_model *m, const it__model_ops *ops, size_t size, void **state, char **cfgpath, it_err *err)
{
    void *p = calloc(1, size);
    char *cfg = cfgpath ? it__path_join(m->dir, "config.json") : NULL;
    if (!p || (cfgpath && !cfg)) {
        free(p), free(cfg);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", m->dir);
    }
    m->ops = ops, m->priv = p, *state = p;
    if (cfgpath) *cfgpath = cfg;
    return IT_OK;
}

/* Chooses the forward pass for m->cfg; the others are IT_EUNSUPPORTED naming config.json. */
static int load_arch(it_model *m, it_err *err)
{
    if (m->cfg.arch == IT_ARCH_LLAMA) return it__llama_load(m, err);
    if (m->cfg.arch == IT_ARCH_T5) return it__t5_load(m, err);
    if (m->cfg.arch == IT_ARCH_CLIP) return it__clip_load(m, err);
    if (m->cfg.arch == IT_ARCH_UNET) return it__unet_load(m, err);
    char *cfg = it__path_join(m->dir, "config.json");
    int rc;
    if (m->cfg.arch == IT_ARCH_UNKNOWN)
        rc = it__fail(err, IT_EUNSUPPORTED, "%s: model_type \"%s\" (%s) is not a supported architecture",
                      cfg ? cfg : m->dir, m->cfg.model_type, m->cfg.class_name[0] ? m->cfg.class_name : "no class");
    else
        rc = it__fail(err, IT_EUNSUPPORTED, "%s: %s forward pass not built yet", cfg ? cfg : m->dir,
                      m->cfg.model_type);
    free(cfg);
    return rc;
}

/* config.json, the weights, then the architecture's tensors and sites; or, for a folder with
 * model_index.json, a Stable Diffusion pipeline (model_sd.c). */
static int model_open(it_model *m, const char *dir, it_err *err)
{
    if (!it__is_dir(dir)) return it__fail(err, IT_EINVAL, "%s: expected a model folder (config.json + safetensors)", dir);
    if (!(m->dir = it__strdup(dir))) return it__fail(err, IT_ENOMEM, "out of memory");
    char *index = it__path_join(dir, "model_index.json");
    if (!index) return it__fail(err, IT_ENOMEM, "out of memory");
    int pipeline = it__exists(index);
    free(index);
    if (pipeline) return it__sd_load(m, err); /* a diffusers pipeline folder: model_sd.c */
    TRY(it_config_load(&m->cfg, dir, err));
    if (m->cfg.arch == IT_ARCH_UNKNOWN) return load_arch(m, err); /* refused before the weights are read */
    TRY(find_weights(dir, &m->wpath, err));
    TRY(it_st_open(&m->st, m->wpath, err));
    return load_arch(m, err);
}

int it_model_load(it_model **out, const char *dir, it_err *err)
{
    *out = NULL;
    it_model *m = calloc(1, sizeof *m);
    if (!m) return it__fail(err, IT_ENOMEM, "out of memory");
    int rc = model_open(m, dir, err);
    if (rc != IT_OK) {
        it_model_free(m);
        return rc;
    }
    *out = m;
    return IT_OK;
}

void it_model_free(it_model *m)
{
    if (!m) return;
    if (m->ops && m->ops->free) (m->ops->free)(m->priv); /* parenthesised: free may be a macro (IT_FAULTS) */
    for (size_t i = 0; i < m->nsites; i++) free((char *)m->sites[i].name);
    for (size_t i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->sites);
    free(m->delta);
    free(m->owned);
    free(m->scratch);
    it_st_close(m->st);
    free(m->wpath);
    free(m->dir);
    free(m);
}

const it_config *it_model_config(const it_model *m) { return m ? &m->cfg : NULL; }
const it_st *it_model_weights(const it_model *m) { return m ? m->st : NULL; }
const char *it_model_dir(const it_model *m) { return m ? m->dir : NULL; }

const char *it_model_component(const it_model *m)
{
    if (!m) return "";
    if (m->cfg.arch == IT_ARCH_UNET) return "unet";
    if (m->cfg.arch == IT_ARCH_CLIP && m->cfg.hidden && !m->cfg.vision_hidden) return "text_encoder";
    return "";
}
size_t it_model_site_count(const it_model *m) { return m ? m->nsites : 0; }
size_t it_model_group_count(const it_model *m) { return m ? m->ngroups : 0; }

const it_model_site *it_model_site_at(const it_model *m, size_t i)
{
    return m && i < m->nsites ? &m->sites[i] : NULL;
}

int it_model_find_site(const it_model *m, const char *name, size_t *i)
{
    for (size_t k = 0; m && name && k < m->nsites; k++)
        if (strcmp(m->sites[k].name, name) == 0) {
            *i = k;
            return IT_OK;
        }
    return IT_ENOTFOUND;
}

void it_model_set_delta(it_model *m, size_t i, const it_delta *d)
{
    if (m && i < m->nsites) m->delta[i] = d;
}

void it_model_clear_deltas(it_model *m)
{
    for (size_t i = 0; m && i < m->nsites; i++) m->delta[i] = NULL;
}

void it_model_set_observer(it_model *m, it_observer fn, void *ctx)
{
    if (!m) return;
    m->obs = fn;
    m->obs_ctx = ctx;
}

/* ============================================================================================ */
/* Models: running one sample                                                                    */
/* ============================================================================================ */

int it__check_ids(const it_model *m, const int32_t *ids, size_t n, int64_t max_positions, const char *what,
                  it_err *err)
{
    if (n == 0 || !ids) return it__fail(err, IT_EINVAL, "%s: empty %s (0 tokens)", m->dir, what);
    if (max_positions > 0 && n > (uint64_t)max_positions)
        return it__fail(err, IT_EINVAL, "%s: %s: %zu tokens exceed the model's context of %" PRId64, m->dir, what, n,
                        max_positions);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return it__fail(err, IT_EINVAL, "%s: %s: token id %" PRId32 " at position %zu is outside the vocabulary [0, %"
                            PRId64 ")", m->dir, what, ids[i], i, m->cfg.vocab_size);
    return IT_OK;
}

float *it__output_add(it_outputs *out, const char *name, size_t rows, size_t cols, int eval)
{
    size_t n;
    if (out->n == IT_MAX_OUTPUTS || it__mul_size(rows, cols, &n)) return NULL;
    float *data = calloc(n ? n : 1, sizeof *data);
    if (!data) return NULL;
    out->o[out->n++] = (it_output){name, rows, cols, data, eval};
    return data;
}

void it_outputs_free(it_outputs *o)
{
    if (!o) return;
    for (size_t i = 0; i < o->n; i++) free(o->o[i].data);
    memset(o, 0, sizeof *o);
}

int it_model_forward(it_model *m, const int32_t *ids, size_t n, float *logits, it_err *err)
{
    if (!m) return it__fail(err, IT_EINVAL, "it_model_forward: no model");
    if (!m->ops->forward)
        return it__fail(err, IT_EUNSUPPORTED, "%s: a %s model is not a causal language model (use it_model_run)",
                        m->dir, m->ops->name);
    TRY(it__check_ids(m, ids, n, m->cfg.max_position_embeddings, "input_ids", err));
    int rc = m->ops->forward(m, ids, n, logits, err);
    return rc == IT__STOP ? IT_OK : rc;
}

int it_model_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err)
{
    if (out) memset(out, 0, sizeof *out);
    if (!m || !s) return it__fail(err, IT_EINVAL, "it_model_run: no model or no sample");
    int rc = m->ops->run(m, s, out, err);
    if (rc == IT__STOP) rc = IT_OK;
    if (rc != IT_OK) it_outputs_free(out);
    return rc;
}

/* The observer of it__model_check_sample: the first site ends the pass. */
static int stop_at_first_site(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    (void)ctx, (void)site, (void)x, (void)nrows, (void)d_in;
    return 1;
}

int it__model_check_sample(it_model *m, const it_sample *s, it_err *err)
{
    it_observer obs = m->obs;
    void *ctx = m->obs_ctx;
    m->obs = stop_at_first_site, m->obs_ctx = NULL;
    int rc = it_model_run(m, s, NULL, err);
    m->obs = obs, m->obs_ctx = ctx;
    return rc;
}

int it_model_needs_decoder_ids(const it_model *m) { return m && m->ops->generate != NULL; }

int it_model_generate(it_model *m, const int32_t *ids, size_t n, size_t max_new, int32_t **dec, size_t *ndec,
                      it_err *err)
{
    *dec = NULL;
    *ndec = 0;
    if (!m || !m->ops->generate)
        return it__fail(err, IT_EUNSUPPORTED, "%s: the model has no decoder to generate with", m ? m->dir : "(none)");
    int rc = m->ops->generate(m, ids, n, max_new, dec, ndec, err);
    if (rc == IT__STOP) rc = it__fail(err, IT_EINVAL, "%s: generation stopped by the observer", m->dir);
    if (rc != IT_OK) {
        free(*dec);
        *dec = NULL;
        *ndec = 0;
    }
    return rc;
}
