/* lora.c -- PEFT adapter_config.json -> it_lora_config (FACTS.md 2.2), and its description.
 *
 * Follows peft's LoraConfig: an absent key takes LoraConfig's default (r 8, lora_alpha 8, bias
 * "none", every flag false, no patterns); JSON null counts as absent for the flags and for the keys
 * whose default is None. A key of the wrong JSON type is IT_EFORMAT naming the key; keys this file
 * does not know are ignored (PEFT writes many that do not affect the weights). An adapter of
 * another PEFT method (peft_type "LOHA", "IA3", ...) is IT_EUNSUPPORTED: only LoRA is merged.
 *
 * Scale (FACTS 2.3): s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
 */
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES ((size_t)16 << 20) /* adapter_config.json files are a few KiB */
#define RANK_LIMIT INT64_C(2147483647)

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

/* ============================================================================================ */
/* Typed reads                                                                                   */
/* ============================================================================================ */

/* The object keys are read from, and the file named in messages. */
typedef struct reader {
    const char *path;
    const it_json *obj;
    it_err *err;
} reader;

/* Describes a JSON value for a message: "a string", "null", "-3", "2.5", "64.0", "an array". */
static void json_what(const it_json *v, char *buf, size_t size)
{
    switch (v->type) {
    case IT_JSON_NULL: snprintf(buf, size, "null"); break;
    case IT_JSON_FALSE: snprintf(buf, size, "false"); break;
    case IT_JSON_TRUE: snprintf(buf, size, "true"); break;
    case IT_JSON_INT:
        if (v->i_ok) snprintf(buf, size, "%" PRId64, v->i);
        else snprintf(buf, size, "%" PRIu64, v->u);
        break;
    case IT_JSON_NUM:
        snprintf(buf, size, "%.15g", v->d);
        if (strspn(buf, "-0123456789") == strlen(buf)) snprintf(buf, size, "%.1f", v->d); /* 64.0 */
        break;
    case IT_JSON_STR: snprintf(buf, size, "a string"); break;
    case IT_JSON_ARR: snprintf(buf, size, "an array"); break;
    default: snprintf(buf, size, "an object"); break;
    }
}

/* key is what the message names, e.g. "target_modules[2]" or "rank_pattern.q_proj". */
static int bad_value(const reader *r, const char *key, const char *expected, const it_json *v)
{
    char what[64];
    json_what(v, what, sizeof what);
    return it__fail(r->err, IT_EFORMAT, "%s: %s: expected %s, got %s", r->path, key, expected, what);
}

/* The value of key, or NULL when it is absent or null. */
static const it_json *lookup(const reader *r, const char *key)
{
    const it_json *v = it_json_get(r->obj, key);
    return v && v->type == IT_JSON_NULL ? NULL : v;
}

/* A string value copied to a malloc'd C string; refused if it holds a NUL (it would be cut). */
static int dup_str(const reader *r, const char *key, const it_json *v, char **out)
{
    if (v->type != IT_JSON_STR) return bad_value(r, key, "a string", v);
    if (strlen(v->s) != v->len)
        return it__fail(r->err, IT_EFORMAT, "%s: %s: the string contains a NUL character", r->path, key);
    *out = it__strndup(v->s, v->len);
    return *out ? IT_OK : it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
}

/* A string into a fixed buffer: refused when too long (strict, for names that decide behaviour),
 * otherwise cut at a UTF-8 character boundary. Absent or null leaves dst as it is. */
static int rd_name(const reader *r, const char *key, int strict, char dst[IT_NAME_MAX])
{
    const it_json *v = lookup(r, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return bad_value(r, key, "a string", v);
    if (strlen(v->s) != v->len)
        return it__fail(r->err, IT_EFORMAT, "%s: %s: the string contains a NUL character", r->path, key);
    size_t len = v->len;
    if (len >= IT_NAME_MAX && strict)
        return it__fail(r->err, IT_EFORMAT, "%s: %s: longer than %d bytes", r->path, key, IT_NAME_MAX - 1);
    if (len >= IT_NAME_MAX) {
        len = IT_NAME_MAX - 1;
        while (len > 0 && ((unsigned char)v->s[len] & 0xC0) == 0x80) len--;
    }
    memcpy(dst, v->s, len);
    dst[len] = 0;
    return IT_OK;
}

/* JSON true or false; absent or null is false (the LoraConfig default of every flag read here). */
static int rd_flag(const reader *r, const char *key, int *out)
{
    const it_json *v = lookup(r, key);
    *out = 0;
    if (!v) return IT_OK;
    if (v->type != IT_JSON_TRUE && v->type != IT_JSON_FALSE) return bad_value(r, key, "true or false", v);
    *out = v->type == IT_JSON_TRUE;
    return IT_OK;
}

/* A rank: a positive integer literal (2.0 is refused: nn.Linear needs an int). */
static int take_rank(const reader *r, const char *key, const it_json *v, int64_t *out)
{
    if (v->type != IT_JSON_INT || !v->i_ok || v->i <= 0 || v->i > RANK_LIMIT)
        return bad_value(r, key, "a positive integer", v);
    *out = v->i;
    return IT_OK;
}

/* An alpha: any finite number, integer or not. */
static int take_alpha(const reader *r, const char *key, const it_json *v, double *out)
{
    if ((v->type != IT_JSON_INT && v->type != IT_JSON_NUM) || !isfinite(v->d))
        return bad_value(r, key, "a finite number", v);
    *out = v->d;
    return IT_OK;
}

/* ============================================================================================ */
/* Lists and patterns                                                                            */
/* ============================================================================================ */

enum {
    LIST_ONLY,     /* modules_to_save: a list of names */
    LIST_OR_ONE,   /* layers_pattern: a list, or one name (a list of one) */
    LIST_OR_REGEX  /* target_modules, exclude_modules: a list, or one string that is a regex */
};

/* A list of names into (*list)[*n]; entries are counted as they are copied, so a failure leaves
 * only what it_lora_config_free releases. */
static int rd_names(const reader *r, const char *key, int form, char ***list, size_t *n, char **regex)
{
    char name[96];
    const it_json *v = lookup(r, key);
    if (!v) return IT_OK;
    if (v->type == IT_JSON_STR && form == LIST_OR_REGEX) return dup_str(r, key, v, regex);
    const it_json *items = v->type == IT_JSON_ARR ? v->items : v;
    size_t count = v->type == IT_JSON_ARR ? v->n : 1;
    if (v->type != IT_JSON_ARR && !(v->type == IT_JSON_STR && form == LIST_OR_ONE))
        return bad_value(r, key, form == LIST_ONLY ? "an array of strings" : "a string or an array of strings", v);
    if (count == 0) return IT_OK;
    *list = it__calloc(count, sizeof **list);
    if (!*list) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; i < count; i++) {
        snprintf(name, sizeof name, "%s[%zu]", key, i);
        TRY(dup_str(r, name, &items[i], &(*list)[i]));
        *n = i + 1;
    }
    return IT_OK;
}

/* layers_to_transform: one layer index or a list of them (non-negative integers). */
static int rd_layers(const reader *r, it_lora_config *c)
{
    const it_json *v = lookup(r, "layers_to_transform");
    if (!v) return IT_OK;
    const it_json *items = v->type == IT_JSON_ARR ? v->items : v;
    size_t count = v->type == IT_JSON_ARR ? v->n : 1;
    if (count == 0) return IT_OK;
    c->layers_to_transform = it__malloc_n(count, sizeof *c->layers_to_transform);
    if (!c->layers_to_transform) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; i < count; i++) {
        const it_json *x = &items[i];
        if (x->type != IT_JSON_INT || !x->i_ok || x->i < 0)
            return bad_value(r, "layers_to_transform",
                             "a non-negative layer index or an array of them", v->type == IT_JSON_ARR ? x : v);
        c->layers_to_transform[i] = x->i;
    }
    c->nlayers = count;
    return IT_OK;
}

/* rank_pattern (is_rank: values are positive integers) or alpha_pattern (finite numbers): an
 * object from a module-name pattern to a value, kept in file order because PEFT takes the first
 * key that matches (FACTS 2.6). */
static int rd_patterns(const reader *r, const char *key, int is_rank, it_lora_pattern **out, size_t *n)
{
    char name[160];
    const it_json *v = lookup(r, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_OBJ) return bad_value(r, key, "an object", v);
    if (v->n == 0) return IT_OK;
    *out = it__calloc(v->n, sizeof **out);
    if (!*out) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; i < v->n; i++) {
        snprintf(name, sizeof name, "%s.%s", key, v->keys[i]);
        const it_json keyv = {.type = IT_JSON_STR, .s = v->keys[i], .len = v->keylens[i]};
        it_lora_pattern *p = &(*out)[i];
        TRY(dup_str(r, name, &keyv, &p->key));
        *n = i + 1;
        if (is_rank) {
            int64_t rank = 0;
            TRY(take_rank(r, name, &v->items[i], &rank));
            p->value = (double)rank;
        } else {
            TRY(take_alpha(r, name, &v->items[i], &p->value));
        }
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

/* peft_type: "LORA" when given (null or absent means LoRA, the class being loaded). */
static int read_peft_type(const reader *r, it_lora_config *c)
{
    const it_json *v = lookup(r, "peft_type");
    snprintf(c->peft_type, sizeof c->peft_type, "LORA");
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return bad_value(r, "peft_type", "a string", v);
    if (v->len == 4 && memcmp(v->s, "LORA", 4) == 0) return IT_OK;
    return it__fail(r->err, IT_EUNSUPPORTED,
                    "%s: peft_type \"%.*s\" is not supported: iteris merges LoRA adapters only", r->path,
                    (int)(v->len < 64 ? v->len : 64), v->s);
}

/* r (default 8) and lora_alpha (default 8). */
static int read_rank_alpha(const reader *r, it_lora_config *c)
{
    const it_json *v = it_json_get(r->obj, "r");
    c->r = 8;
    if (v) TRY(take_rank(r, "r", v, &c->r));
    v = it_json_get(r->obj, "lora_alpha");
    c->lora_alpha = 8;
    if (v) TRY(take_alpha(r, "lora_alpha", v, &c->lora_alpha));
    return IT_OK;
}

/* bias: "none" (default), "all" or "lora_only". */
static int read_bias(const reader *r, it_lora_config *c)
{
    const it_json *v = it_json_get(r->obj, "bias");
    snprintf(c->bias, sizeof c->bias, "none");
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return bad_value(r, "bias", "\"none\", \"all\" or \"lora_only\"", v);
    if (v->len != strlen(v->s) || (strcmp(v->s, "none") && strcmp(v->s, "all") && strcmp(v->s, "lora_only")))
        return it__fail(r->err, IT_EFORMAT, "%s: bias: expected \"none\", \"all\" or \"lora_only\", got \"%.*s\"",
                        r->path, (int)(v->len < 64 ? v->len : 64), v->s);
    memcpy(c->bias, v->s, v->len + 1);
    return IT_OK;
}

static int parse_lora(const reader *r, it_lora_config *c)
{
    TRY(read_peft_type(r, c));
    TRY(read_rank_alpha(r, c));
    TRY(rd_flag(r, "use_rslora", &c->use_rslora));
    TRY(rd_flag(r, "use_dora", &c->use_dora));
    TRY(rd_flag(r, "fan_in_fan_out", &c->fan_in_fan_out));
    TRY(rd_flag(r, "lora_bias", &c->lora_bias));
    TRY(read_bias(r, c));
    TRY(rd_names(r, "target_modules", LIST_OR_REGEX, &c->targets, &c->ntargets, &c->target_regex));
    TRY(rd_names(r, "exclude_modules", LIST_OR_REGEX, &c->exclude, &c->nexclude, &c->exclude_regex));
    TRY(rd_names(r, "layers_pattern", LIST_OR_ONE, &c->layers_pattern, &c->nlayers_pattern, NULL));
    TRY(rd_names(r, "modules_to_save", LIST_ONLY, &c->modules_to_save, &c->nmodules_to_save, NULL));
    TRY(rd_layers(r, c));
    TRY(rd_patterns(r, "rank_pattern", 1, &c->rank_pattern, &c->nrank_pattern));
    TRY(rd_patterns(r, "alpha_pattern", 0, &c->alpha_pattern, &c->nalpha_pattern));
    TRY(rd_name(r, "task_type", 0, c->task_type));
    const it_json *v = lookup(r, "base_model_name_or_path");
    return v ? dup_str(r, "base_model_name_or_path", v, &c->base_model) : IT_OK;
}

/* Reads and parses path (the file, or a folder holding adapter_config.json); the root must be an
 * object. On success *file (malloc'd, for messages) and *doc are the caller's. */
static int parse_json_file(const char *path, char **file, it_json_doc **doc, it_err *err)
{
    char *text = NULL;
    size_t len = 0;
    *doc = NULL;
    *file = it__is_dir(path) ? it__path_join(path, "adapter_config.json") : it__strdup(path);
    if (!*file) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    int rc = it__read_file(*file, CONFIG_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK) {
        rc = it_json_parse(doc, text, len, IT_JSON_NODUP, err);
        if (rc != IT_OK) it__err_prefix(err, *file);
    }
    free(text);
    if (rc == IT_OK && it_json_root(*doc)->type != IT_JSON_OBJ) {
        char what[64];
        json_what(it_json_root(*doc), what, sizeof what);
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

int it_lora_config_load(it_lora_config *cfg, const char *path, it_err *err)
{
    char *file;
    it_json_doc *doc;
    memset(cfg, 0, sizeof *cfg);
    int rc = parse_json_file(path, &file, &doc, err);
    if (rc != IT_OK) return rc;
    reader r = {file, it_json_root(doc), err};
    rc = parse_lora(&r, cfg);
    if (rc != IT_OK) it_lora_config_free(cfg);
    it_json_free(doc);
    free(file);
    return rc;
}

static void free_names(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}

static void free_patterns(it_lora_pattern *p, size_t n)
{
    for (size_t i = 0; i < n; i++) free(p[i].key);
    free(p);
}

void it_lora_config_free(it_lora_config *cfg)
{
    if (!cfg) return;
    free(cfg->target_regex);
    free_names(cfg->targets, cfg->ntargets);
    free(cfg->exclude_regex);
    free_names(cfg->exclude, cfg->nexclude);
    free(cfg->layers_to_transform);
    free_names(cfg->layers_pattern, cfg->nlayers_pattern);
    free_names(cfg->modules_to_save, cfg->nmodules_to_save);
    free_patterns(cfg->rank_pattern, cfg->nrank_pattern);
    free_patterns(cfg->alpha_pattern, cfg->nalpha_pattern);
    free(cfg->base_model);
    memset(cfg, 0, sizeof *cfg);
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

/* ", <label> a b c" for a name list, or ", <label> regex \"...\"" for a regex. */
static void app_names(char *buf, size_t size, size_t *off, const char *label, char *const *list, size_t n,
                      const char *regex)
{
    if (regex) {
        app(buf, size, off, ", %s regex \"%s\"", label, regex);
        return;
    }
    if (n == 0) return;
    app(buf, size, off, ", %s", label);
    for (size_t i = 0; i < n; i++) app(buf, size, off, " %s", list[i]);
}

static void app_count(char *buf, size_t size, size_t *off, const char *label, size_t n)
{
    if (n) app(buf, size, off, ", %s %zu entr%s", label, n, n == 1 ? "y" : "ies");
}

void it_lora_config_describe(const it_lora_config *cfg, char *buf, size_t size)
{
    size_t off = 0;
    if (!buf || size == 0) return;
    buf[0] = 0;
    if (!cfg) return;
    double r = (double)cfg->r;
    app(buf, size, &off, "LoRA r %" PRId64 ", alpha %g, ", cfg->r, cfg->lora_alpha);
    if (cfg->use_rslora) app(buf, size, &off, "scale %g (alpha/sqrt(r), rsLoRA)", cfg->lora_alpha / sqrt(r));
    else app(buf, size, &off, "scale %g (alpha/r)", cfg->lora_alpha / r);
    if (!cfg->target_regex && cfg->ntargets == 0) app(buf, size, &off, ", targets unset (the model type's default)");
    app_names(buf, size, &off, "targets", cfg->targets, cfg->ntargets, cfg->target_regex);
    app_names(buf, size, &off, "exclude", cfg->exclude, cfg->nexclude, cfg->exclude_regex);
    if (cfg->nlayers) app(buf, size, &off, ", layers");
    for (size_t i = 0; i < cfg->nlayers; i++) app(buf, size, &off, " %" PRId64, cfg->layers_to_transform[i]);
    app_names(buf, size, &off, "layers_pattern", cfg->layers_pattern, cfg->nlayers_pattern, NULL);
    app_count(buf, size, &off, "rank_pattern", cfg->nrank_pattern);
    app_count(buf, size, &off, "alpha_pattern", cfg->nalpha_pattern);
    if (cfg->fan_in_fan_out) app(buf, size, &off, ", fan_in_fan_out");
    if (cfg->use_dora) app(buf, size, &off, ", DoRA");
    if (cfg->lora_bias) app(buf, size, &off, ", lora_bias");
    if (cfg->bias[0] && strcmp(cfg->bias, "none") != 0) app(buf, size, &off, ", bias %s", cfg->bias);
    app_names(buf, size, &off, "modules_to_save", cfg->modules_to_save, cfg->nmodules_to_save, NULL);
    if (cfg->task_type[0]) app(buf, size, &off, ", task %s", cfg->task_type);
}
