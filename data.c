/* data.c -- calibration samples: the JSON Lines files of `--data` and `--inputs` (the contract is in
 * DESIGN.md section 3 and in the "Calibration samples" section of iteris.h), and the seeded choice
 * of `--samples N --seed S`.
 *
 * A file is read whole (it__read_file, at most SAMPLES_MAX_BYTES), cut at each LF, and every line
 * that is not blank is parsed on its own by the strict JSON parser with duplicate keys refused.
 * The fields a sample keeps are copied out of the line's document, which is freed at once, so a
 * file's samples hold no pointer into the file's text.
 *
 * The choice of k samples out of n is the first k steps of a Fisher-Yates shuffle (Durstenfeld's
 * form, Knuth TAOCP vol. 2, section 3.4.2, Algorithm P, run from the front) on the splitmix64
 * stream, with each uniform draw made exact by rejection, so the result depends only on (n, k,
 * seed), on every platform.
 */
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

#define SAMPLES_MAX_BYTES ((size_t)1 << 30) /* 1 GiB: larger files are refused, not read */
#define ID_MAX INT32_MAX                  /* token ids lie in [0, ID_MAX] */

/* ============================================================================================ */
/* Errors                                                                                        */
/* ============================================================================================ */

/* Fills err with "<path>: line <line>: <what>" and returns code. */
static int line_fail(it_err *err, int code, const char *path, size_t line, const char *fmt, ...) IT__PRINTF(5, 6);

static int line_fail(it_err *err, int code, const char *path, size_t line, const char *fmt, ...)
{
    char what[IT_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return it__fail(err, code, "%s: line %zu: %s", path, line, what);
}

/* ============================================================================================ */
/* One sample                                                                                    */
/* ============================================================================================ */

/* A JSON type with its article, for messages: "a string", "an array", "null". */
static const char *type_phrase(it_json_type t)
{
    switch (t) {
    case IT_JSON_INT: return "an integer";
    case IT_JSON_NUM: return "a number";
    case IT_JSON_STR: return "a string";
    case IT_JSON_ARR: return "an array";
    case IT_JSON_OBJ: return "an object";
    default: return it_json_type_name(t); /* null, false, true */
    }
}

/* Where a line is (the file's name and the 1-based line number, for messages), and where errors go. */
typedef struct line_at {
    const char *path;
    size_t line;
    it_err *err;
} line_at;

/* Checks one item of a token id list: an integer literal in [0, ID_MAX]. */
static int id_check(const it_json *v, const char *key, size_t i, const line_at *at)
{
    if (v->type != IT_JSON_INT)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\"[%zu] is %s, expected an integer in [0, %d]",
                         key, i, type_phrase(v->type), ID_MAX);
    if (v->i_ok && v->i >= 0 && v->i <= ID_MAX) return IT_OK;
    if (v->i_ok)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\"[%zu] = %lld is outside [0, %d]", key, i,
                         (long long)v->i, ID_MAX);
    return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\"[%zu] = %llu is outside [0, %d]", key, i,
                     (unsigned long long)v->u, ID_MAX);
}

/* Reads obj[key] as a token id list into a malloc'd ids [*n]: a non-empty array of integers in
 * [0, ID_MAX]. An absent key leaves *ids NULL and *n 0. */
static int ids_get(const it_json *obj, const char *key, int32_t **ids, size_t *n, const line_at *at)
{
    *ids = NULL;
    *n = 0;
    const it_json *v = it_json_get(obj, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_ARR)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\" is %s, expected an array of token ids", key,
                         type_phrase(v->type));
    if (v->n == 0)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\" is an empty array, expected token ids", key);
    for (size_t i = 0; i < v->n; i++) {
        int rc = id_check(&v->items[i], key, i, at);
        if (rc != IT_OK) return rc;
    }
    *ids = it__malloc_n(v->n, sizeof **ids);
    if (!*ids) return line_fail(at->err, IT_ENOMEM, at->path, at->line, "out of memory for %zu token ids", v->n);
    for (size_t i = 0; i < v->n; i++) (*ids)[i] = (int32_t)v->items[i].i;
    *n = v->n;
    return IT_OK;
}

/* Reads obj[key] as a string into a malloc'd, NUL-terminated copy (NULL when absent). A string
 * holding U+0000 is refused: the copy would not read back as the same C string. */
static int str_get(const it_json *obj, const char *key, char **out, const line_at *at)
{
    *out = NULL;
    const it_json *v = it_json_get(obj, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\" is %s, expected a string", key,
                         type_phrase(v->type));
    if (memchr(v->s, 0, v->len))
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\" contains a NUL character (\\u0000)", key);
    *out = it__strndup(v->s, v->len);
    if (!*out) return line_fail(at->err, IT_ENOMEM, at->path, at->line, "out of memory for \"%s\"", key);
    return IT_OK;
}

/* obj["seed"]: an integer literal in [0, 2^64) (0 when absent). */
static int seed_get(const it_json *obj, uint64_t *seed, const line_at *at)
{
    const it_json *v = it_json_get(obj, "seed");
    *seed = 0;
    if (!v) return IT_OK;
    if (v->type != IT_JSON_INT || !v->u_ok)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"seed\" is %s, expected an integer in [0, 2^64)",
                         v->type == IT_JSON_INT ? "negative" : type_phrase(v->type));
    *seed = v->u;
    return IT_OK;
}

static void ref_clear(it_tensor_ref *r)
{
    free(r->file);
    free(r->tensor);
}

static void sample_clear(it_sample *s)
{
    free(s->ids);
    free(s->dec_ids);
    free(s->text);
    free(s->name);
    free(s->image);
    ref_clear(&s->ref_pixels), ref_clear(&s->ref_latents), ref_clear(&s->ref_timestep), ref_clear(&s->ref_context);
    free(s->pixels);
    free(s->latents);
    free(s->timesteps);
    free(s->context);
    memset(s, 0, sizeof *s);
}

/* rel resolved against the folder of the samples file (an absolute rel is kept): malloc'd. */
static char *resolve_path(const char *samples_path, const char *rel)
{
    if (rel[0] == '/') return it__strdup(rel);
    const char *slash = strrchr(samples_path, '/');
    if (!slash) return it__strdup(rel);
    char *dir = it__strndup(samples_path, (size_t)(slash - samples_path) + 1);
    char *out = dir ? it__path_join(dir, rel) : NULL;
    free(dir);
    return out;
}

/* "image": a path string, resolved. */
static int image_get(it_sample *s, const it_json *obj, const line_at *at)
{
    char *rel = NULL;
    int rc = str_get(obj, "image", &rel, at);
    if (rc != IT_OK || !rel) return rc;
    if (!rel[0]) rc = line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"image\" is an empty path");
    else if (!(s->image = resolve_path(at->path, rel)))
        rc = line_fail(at->err, IT_ENOMEM, at->path, at->line, "out of memory");
    free(rel);
    return rc;
}

/* obj[key] as a tensor reference {"file": path, "tensor": name, "index": k (optional, >= 0)}; other
 * keys refused, so that a misspelt "index" is not silently the whole batch. Absent: r->file NULL. */
static int ref_get(it_tensor_ref *r, const it_json *obj, const char *key, const line_at *at)
{
    r->index = -1;
    const it_json *v = it_json_get(obj, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_OBJ)
        return line_fail(at->err, IT_EFORMAT, at->path, at->line,
                         "\"%s\" is %s, expected {\"file\": .., \"tensor\": .., \"index\": ..}", key, type_phrase(v->type));
    for (size_t i = 0; i < v->n; i++) {
        const char *k = v->keys[i];
        if (!strcmp(k, "file") || !strcmp(k, "tensor") || !strcmp(k, "index")) continue;
        char shown[64] = ""; /* the key as JSON spells it, control characters escaped: one line */
        size_t o = 0;
        for (const unsigned char *c = (const unsigned char *)k; *c && o + 8 < sizeof shown; c++)
            o += (size_t)(*c < 0x20 ? snprintf(shown + o, sizeof shown - o, "\\u%04x", *c)
                                    : snprintf(shown + o, sizeof shown - o, "%c", *c));
        return line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\": unknown key \"%s\" (file, tensor, index)",
                         key, shown);
    }
    char *file = NULL;
    int rc = str_get(v, "file", &file, at);
    if (rc == IT_OK) rc = str_get(v, "tensor", &r->tensor, at);
    if (rc == IT_OK && (!file || !file[0] || !r->tensor))
        rc = line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\" needs \"file\" and \"tensor\"", key);
    if (rc == IT_OK && !(r->file = resolve_path(at->path, file)))
        rc = line_fail(at->err, IT_ENOMEM, at->path, at->line, "out of memory");
    free(file);
    const it_json *ix = it_json_get(v, "index");
    if (rc == IT_OK && ix) {
        if (ix->type != IT_JSON_INT || !ix->i_ok || ix->i < 0)
            rc = line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"%s\": \"index\" is %s, expected an integer >= 0",
                           key, type_phrase(ix->type));
        else r->index = ix->i;
    }
    return rc;
}

/* Fills s from one line's object: "input_ids" or "ids" (equal when both are given),
 * "decoder_input_ids", "text", "name", "seed"; other keys are ignored. On failure s is left cleared. */
static int sample_from_json(it_sample *s, const it_json *obj, const line_at *at)
{
    memset(s, 0, sizeof *s);
    s->line = at->line;
    int32_t *alt = NULL;
    size_t nalt = 0;
    int rc = ids_get(obj, "input_ids", &s->ids, &s->n, at);
    if (rc == IT_OK) rc = ids_get(obj, "ids", &alt, &nalt, at);
    if (rc == IT_OK && alt && !s->ids) {
        s->ids = alt; /* only "ids": it is the sample's list */
        s->n = nalt;
        alt = NULL;
    }
    if (rc == IT_OK && alt && (nalt != s->n || memcmp(alt, s->ids, nalt * sizeof *alt) != 0))
        rc = line_fail(at->err, IT_EFORMAT, at->path, at->line, "\"input_ids\" and \"ids\" are both given and differ");
    free(alt);
    if (rc == IT_OK) rc = ids_get(obj, "decoder_input_ids", &s->dec_ids, &s->ndec, at);
    if (rc == IT_OK) rc = str_get(obj, "text", &s->text, at);
    if (rc == IT_OK) rc = str_get(obj, "name", &s->name, at);
    if (rc == IT_OK) rc = seed_get(obj, &s->seed, at);
    if (rc == IT_OK) rc = image_get(s, obj, at);
    if (rc == IT_OK) rc = ref_get(&s->ref_pixels, obj, "pixel_values", at);
    if (rc == IT_OK) rc = ref_get(&s->ref_latents, obj, "sample", at);
    if (rc == IT_OK) rc = ref_get(&s->ref_timestep, obj, "timestep", at);
    if (rc == IT_OK) rc = ref_get(&s->ref_context, obj, "encoder_hidden_states", at);
    if (rc == IT_OK && s->image && s->ref_pixels.file)
        rc = line_fail(at->err, IT_EFORMAT, at->path, at->line, "both \"image\" and \"pixel_values\" are given");
    int unet = !!s->ref_latents.file + !!s->ref_timestep.file + !!s->ref_context.file;
    if (rc == IT_OK && unet && unet < 3)
        rc = line_fail(at->err, IT_EFORMAT, at->path, at->line,
                       "a UNet sample needs all of \"sample\", \"timestep\" and \"encoder_hidden_states\"");
    if (rc == IT_OK && !s->ids && !s->text && !s->image && !s->ref_pixels.file && !unet)
        rc = line_fail(at->err, IT_EFORMAT, at->path, at->line,
                       "no \"input_ids\", \"ids\", \"text\", \"image\", \"pixel_values\" or \"sample\"");
    if (rc != IT_OK) sample_clear(s);
    return rc;
}

/* Parses one non-blank line text[0..len) into s. */
static int sample_parse(it_sample *s, const char *text, size_t len, const line_at *at)
{
    it_json_doc *doc = NULL;
    int rc = it_json_parse(&doc, text, len, IT_JSON_NODUP, at->err);
    if (rc != IT_OK) {
        char where[64];
        snprintf(where, sizeof where, "line %zu", at->line);
        it__err_prefix(at->err, where);
        it__err_prefix(at->err, at->path);
        return rc;
    }
    const it_json *root = it_json_root(doc);
    if (root->type != IT_JSON_OBJ)
        rc = line_fail(at->err, IT_EFORMAT, at->path, at->line, "the line is %s, expected a JSON object",
                       type_phrase(root->type));
    else
        rc = sample_from_json(s, root, at);
    it_json_free(doc);
    return rc;
}

/* ============================================================================================ */
/* A file                                                                                        */
/* ============================================================================================ */

/* 1 if s[0..n) holds only spaces, tabs and CRs (a blank line, skipped). */
static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* Appends a slot to ss->s (doubling its capacity *cap); the new slot, or NULL out of memory. */
static it_sample *samples_grow(it_samples *ss, size_t *cap)
{
    if (ss->n == *cap) {
        size_t c = *cap ? *cap : 16, bytes;
        if (*cap && it__mul_size(c, 2, &c)) return NULL;
        if (it__mul_size(c, sizeof *ss->s, &bytes)) return NULL;
        it_sample *p = realloc(ss->s, bytes);
        if (!p) return NULL;
        ss->s = p;
        *cap = c;
    }
    return &ss->s[ss->n];
}

/* Parses every line of text[0..len) into ss (lines are cut at LF; the last may lack one). */
static int samples_fill(it_samples *ss, const char *text, size_t len, it_err *err)
{
    size_t cap = 0;
    line_at at = {ss->path, 0, err};
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        at.line++;
        if (!is_blank(text + pos, end - pos)) {
            it_sample *s = samples_grow(ss, &cap);
            if (!s) return line_fail(err, IT_ENOMEM, ss->path, at.line, "out of memory for the sample list");
            int rc = sample_parse(s, text + pos, end - pos, &at);
            if (rc != IT_OK) return rc;
            ss->n++;
        }
        pos = end + 1;
    }
    if (ss->n == 0) return it__fail(err, IT_EFORMAT, "%s: no samples", ss->path);
    return IT_OK;
}

int it_samples_parse(it_samples **out, const char *text, size_t len, const char *name, it_err *err)
{
    *out = NULL;
    if (!name) name = "(memory)";
    it_samples *ss = calloc(1, sizeof *ss);
    if (ss) ss->path = it__strdup(name);
    if (!ss || !ss->path) {
        free(ss);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", name);
    }
    int rc = samples_fill(ss, text, len, err);
    if (rc != IT_OK) {
        it_samples_free(ss);
        return rc;
    }
    *out = ss;
    return IT_OK;
}

int it_samples_load(it_samples **out, const char *path, it_err *err)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = it__read_file(path, SAMPLES_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK) rc = it_samples_parse(out, text, len, path, err);
    free(text);
    return rc;
}

void it_samples_free(it_samples *ss)
{
    if (!ss) return;
    for (size_t i = 0; i < ss->n; i++) sample_clear(&ss->s[i]);
    free(ss->s);
    free(ss->path);
    free(ss);
}

/* ============================================================================================ */
/* Images                                                                                        */
/* ============================================================================================ */

/* The float values of a reference (any float or integer dtype, converted): the whole tensor, or
 * item r->index of its first dimension. *data malloc'd; dims (ndim <= 4) the shape, dims[0] = 1
 * for an item. where names the line for messages. */
static int ref_load(const it_tensor_ref *r, const char *key, const char *where, float **data, size_t *ndim,
                    uint64_t dims[4], it_err *err)
{
    it_st *st = NULL;
    int rc = it_st_open(&st, r->file, err);
    if (rc != IT_OK) {
        it__err_prefix(err, where);
        return rc;
    }
    const it_tensor *t = it_st_find(st, r->tensor);
    if (!t) rc = it__fail(err, IT_ENOTFOUND, "%s: %s: %s has no tensor \"%s\"", where, key, r->file, r->tensor);
    else if (t->ndim < 1 || t->ndim > 4)
        rc = it__fail(err, IT_EFORMAT, "%s: %s: tensor %s has %zu dimensions, expected 1 to 4", where, key, r->tensor,
                      t->ndim);
    else if (r->index >= 0 && (uint64_t)r->index >= t->shape[0])
        rc = it__fail(err, IT_EINVAL, "%s: %s: index %" PRId64 " is outside the first dimension of %" PRIu64, where, key,
                      r->index, t->shape[0]);
    size_t all = rc == IT_OK ? (size_t)t->numel : 0, per = rc == IT_OK && t->shape[0] ? all / (size_t)t->shape[0] : 0;
    float *f = rc == IT_OK ? it__malloc_n(all ? all : 1, sizeof *f) : NULL;
    if (rc == IT_OK && !f) rc = it__fail(err, IT_ENOMEM, "%s: %s: out of memory", where, key);
    if (rc == IT_OK && (rc = it_tensor_to_f32(t, f, err)) != IT_OK) it__err_prefix(err, where);
    if (rc == IT_OK && r->index >= 0) memmove(f, f + (size_t)r->index * per, per * sizeof *f);
    /* the values the sample takes, all finite: a NaN or Inf input would come out of the merge as a
     * NaN weight or statistic, far from its cause */
    for (size_t i = 0, n = r->index >= 0 ? per : all; rc == IT_OK && i < n; i++)
        if (!isfinite(f[i]))
            rc = it__fail(err, IT_EINVAL, "%s: %s: tensor %s of %s holds NaN or Inf (element %zu%s is %s)", where, key,
                          r->tensor, r->file, i, r->index >= 0 ? " of the item" : "",
                          isnan(f[i]) ? "NaN" : f[i] > 0 ? "Inf" : "-Inf");
    if (rc == IT_OK) {
        *ndim = t->ndim;
        for (size_t i = 0; i < t->ndim; i++) dims[i] = t->shape[i];
        if (r->index >= 0) dims[0] = 1;
        *data = f;
        f = NULL;
    }
    free(f);
    it_st_close(st);
    return rc;
}

/* pixel_values: [B, C, H, W]. */
static int pixels_from_ref(it_sample *s, const char *where, it_err *err)
{
    size_t nd = 0;
    uint64_t d[4];
    TRY(ref_load(&s->ref_pixels, "pixel_values", where, &s->pixels, &nd, d, err));
    if (nd != 4)
        return it__fail(err, IT_EFORMAT, "%s: pixel_values: %zu dimensions, expected 4 [batch, channels, height, width]",
                        where, nd);
    s->nimages = (size_t)d[0], s->channels = (size_t)d[1], s->height = (size_t)d[2], s->width = (size_t)d[3];
    return IT_OK;
}

/* A UNet's sample [B, C, H, W], timestep [B] (or one for all B) and encoder_hidden_states [B, n, d]. */
static int unet_from_refs(it_sample *s, const char *where, it_err *err)
{
    size_t nl = 0, nt = 0, nc = 0;
    uint64_t dl[4], dt[4], dc[4];
    TRY(ref_load(&s->ref_latents, "sample", where, &s->latents, &nl, dl, err));
    TRY(ref_load(&s->ref_timestep, "timestep", where, &s->timesteps, &nt, dt, err));
    TRY(ref_load(&s->ref_context, "encoder_hidden_states", where, &s->context, &nc, dc, err));
    if (nl != 4) return it__fail(err, IT_EFORMAT, "%s: sample: %zu dimensions, expected 4 [batch, channels, height, width]", where, nl);
    size_t B = (size_t)dl[0];
    if (nt != 1 || (dt[0] != B && dt[0] != 1))
        return it__fail(err, IT_EFORMAT, "%s: timestep: expected %zu values (one per latent) or one", where, B);
    if (nc != 3 || dc[0] != B)
        return it__fail(err, IT_EFORMAT, "%s: encoder_hidden_states: expected [%zu, tokens, dim]", where, B);
    if (dt[0] == 1 && B > 1) { /* one timestep for the whole batch, as diffusers broadcasts it */
        float *t = it__malloc_n(B, sizeof *t);
        if (!t) return it__fail(err, IT_ENOMEM, "%s: out of memory", where);
        for (size_t i = 0; i < B; i++) t[i] = s->timesteps[0];
        free(s->timesteps);
        s->timesteps = t;
    }
    s->nlatents = B, s->lat_c = (size_t)dl[1], s->lat_h = (size_t)dl[2], s->lat_w = (size_t)dl[3];
    s->nctx = (size_t)dc[1], s->dctx = (size_t)dc[2];
    return IT_OK;
}

int it_samples_load_pixels(it_samples *ss, const it_model *m, it_err *err)
{
    const it_config *c = it_model_config(m);
    it_image_proc proc;
    int have_proc = 0;
    for (size_t i = 0; i < ss->n; i++) {
        it_sample *s = &ss->s[i];
        char where[IT_ERR_MAX / 2];
        snprintf(where, sizeof where, "%s: line %zu", ss->path, s->line);
        if (s->ref_latents.file && !s->latents) TRY(unet_from_refs(s, where, err));
        if (s->pixels || (!s->image && !s->ref_pixels.file)) continue;
        if (!c->vision_hidden)
            return it__fail(err, IT_EINVAL, "%s: an image sample, but the model has no vision tower", where);
        if (s->ref_pixels.file) {
            TRY(pixels_from_ref(s, where, err));
            continue;
        }
        if (!have_proc) {
            TRY(it_image_proc_load(&proc, it_model_dir(m), c->image_size, err));
            have_proc = 1;
        }
        size_t h = 0, w = 0;
        int rc = it_image_load(s->image, &proc, &s->pixels, &h, &w, err);
        if (rc != IT_OK) {
            it__err_prefix(err, where);
            return rc;
        }
        s->nimages = 1, s->channels = 3, s->height = h, s->width = w;
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Text                                                                                          */
/* ============================================================================================ */

int it_samples_tokenize(it_samples *ss, const it_tokenizer *t, it_err *err)
{
    for (size_t i = 0; i < ss->n; i++) {
        it_sample *s = &ss->s[i];
        if (s->ids || !s->text) continue;
        int rc = it_tokenizer_encode(t, s->text, strlen(s->text), 1, &s->ids, &s->n, err);
        if (rc == IT_OK && s->n == 0)
            rc = it__fail(err, IT_EINVAL, "the text gives no tokens");
        if (rc != IT_OK) {
            char where[IT_ERR_MAX / 2];
            snprintf(where, sizeof where, "%s: line %zu", ss->path, s->line);
            it__err_prefix(err, where);
            free(s->ids);
            s->ids = NULL, s->n = 0;
            return rc;
        }
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Choosing samples                                                                              */
/* ============================================================================================ */

/* A uniform draw from [0, m), m >= 1, exact: splitmix64 outputs below 2^64 mod m are rejected, so
 * that the ones kept cover each residue equally often (as OpenBSD's arc4random_uniform). */
static uint64_t draw_below(uint64_t *state, uint64_t m)
{
    uint64_t reject = (0 - m) % m; /* 2^64 mod m */
    uint64_t r;
    do r = it__splitmix64(state);
    while (r < reject);
    return r % m;
}

int it_samples_split(const it_samples *ss, size_t k, uint64_t seed, size_t *idx, size_t *rest, it_err *err)
{
    size_t n = ss->n;
    if (k == 0 || k > n)
        return it__fail(err, IT_EINVAL, "%s: %zu samples asked for, but the file has %zu (ask for 1 to %zu)", ss->path,
                        k, n, n);
    size_t *perm = it__malloc_n(n, sizeof *perm);
    unsigned char *chosen = calloc(n, 1);
    if (!perm || !chosen) {
        free(perm);
        free(chosen);
        return it__fail(err, IT_ENOMEM, "%s: out of memory choosing %zu of %zu samples", ss->path, k, n);
    }
    for (size_t i = 0; i < n; i++) perm[i] = i;
    uint64_t state = seed;
    for (size_t i = 0; i < k; i++) { /* Algorithm P from the front: perm[0..i] is a uniform i+1-sample */
        size_t j = i + (size_t)draw_below(&state, (uint64_t)(n - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        chosen[perm[i]] = 1;
    }
    size_t a = 0, b = 0; /* back into file order */
    for (size_t i = 0; i < n; i++) {
        if (chosen[i]) idx[a++] = i;
        else if (rest) rest[b++] = i;
    }
    free(perm);
    free(chosen);
    return IT_OK;
}

int it_samples_choose(const it_samples *ss, size_t k, uint64_t seed, size_t *idx, it_err *err)
{
    return it_samples_split(ss, k, seed, idx, NULL, err);
}
