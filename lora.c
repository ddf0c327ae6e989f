/* lora.c -- LoRA adapters: PEFT's adapter_config.json (FACTS.md 2.2), PEFT's target and pattern rules
 * (FACTS 2.5, 2.6), and the adapter files themselves: PEFT folders (FACTS 2.1-2.4), kohya and diffusers
 * Stable Diffusion files (FACTS 3.1-3.3), read into modules in one linear view, dW = scale * B A.
 *
 * Config: follows peft's LoraConfig: an absent key takes LoraConfig's default (r 8, lora_alpha 8,
 * bias "none", every flag false, no patterns); JSON null counts as absent for the flags and for the
 * keys whose default is None. A key of the wrong JSON type is IT_EFORMAT naming the key; keys this
 * file does not know are ignored (PEFT writes many that do not affect the weights). An adapter of
 * another PEFT method (peft_type "LOHA", "IA3", ...) is IT_EUNSUPPORTED: only LoRA is merged.
 *
 * Scale (FACTS 2.3): s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
 *
 * Rules checked against peft's sources (huggingface/peft main, 2026: src/peft/tuners/tuners_utils.py
 * check_target_module_exists; src/peft/utils/other.py get_pattern_key) and, where they changed, against
 * the releases that wrote the adapters people have (the fixtures in data/ come from peft 0.10.0).
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

/* ============================================================================================ */
/* Which modules an adapter adapts, and with what rank (FACTS 2.5, 2.6)                         */
/* ============================================================================================ */
/*
 * PEFT decides both with Python regular expressions; they go through the it__re_* engine (regex.c),
 * compiled once per use: a matcher holds every pattern a config needs, compiled, for one call of
 * it_lora_targets / it_lora_module_rank or for one it_adapter_load (nothing is cached globally).
 */
typedef struct matcher {
    const it_lora_config *cfg;
    int every;           /* no target_modules, or "all-linear": the target test passes every module */
    it__re *target;      /* target_modules as one regex (re.fullmatch) */
    it__re *exclude;     /* exclude_modules as one regex (re.fullmatch) */
    size_t nsave, nlayer, nrank, nalpha;
    it__re **save;       /* [nsave] "(^|.*\.)<m>($|\..*)" per modules_to_save entry (re.match) */
    it__re **layer;      /* [nlayer] the layer-index regexes, tried in order (re.match, group 1) */
    it__re **rank;       /* [nrank] the rank_pattern keys, in file order */
    it__re **alpha;      /* [nalpha] the alpha_pattern keys, in file order */
} matcher;

static void free_res(it__re **re, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (re[i]) it__re_free(re[i]);
    free(re);
}

static void matcher_free(matcher *m)
{
    if (m->target) it__re_free(m->target);
    if (m->exclude) it__re_free(m->exclude);
    free_res(m->save, m->nsave);
    free_res(m->layer, m->nlayer);
    free_res(m->rank, m->nrank);
    free_res(m->alpha, m->nalpha);
    memset(m, 0, sizeof *m);
}

/* Compiles pre + pat + post; a failure names the config key and the pattern as written:
 * "rank_pattern key \"q(\": at offset 1: ...". */
static int compile_wrapped(it__re **re, const char *pre, const char *pat, const char *post, const char *what,
                           it_err *err)
{
    size_t a = strlen(pre), b = strlen(pat), c = strlen(post), n;
    char *s = it__add_size(a + c + 1, b, &n) == 0 ? malloc(n) : NULL;
    if (!s) return it__fail(err, IT_ENOMEM, "%s: out of memory", what);
    memcpy(s, pre, a);
    memcpy(s + a, pat, b);
    memcpy(s + a + b, post, c + 1);
    int rc = it__re_compile(re, s, err);
    free(s);
    if (rc != IT_OK) { /* offsets count in the pattern as PEFT builds it: say so when it is wrapped */
        char where[300];
        int n1 = snprintf(where, sizeof where, "%s \"%.100s%s\"", what, pat, b > 100 ? "..." : "");
        if (a + c > 0 && n1 > 0 && (size_t)n1 < sizeof where)
            snprintf(where + n1, sizeof where - (size_t)n1, " (compiled as \"%s%.100s%s%s\")", pre, pat,
                     b > 100 ? "..." : "", post);
        it__err_prefix(err, where);
    }
    return rc;
}

/* An array of n compiled patterns (NULL entries until compiled; the matcher frees them all). */
static int alloc_res(it__re ***re, size_t *count, size_t n, it_err *err)
{
    if (n == 0) return IT_OK;
    *re = it__calloc(n, sizeof **re);
    if (!*re) return it__fail(err, IT_ENOMEM, "out of memory");
    *count = n;
    return IT_OK;
}

/* "all-linear" (compared case-insensitively, as PEFT lowers the string first). */
static int is_all_linear(const char *s)
{
    const char *want = "all-linear";
    for (; *s && *want; s++, want++)
        if ((*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s) != *want) return 0;
    return *s == 0 && *want == 0;
}

/* The patterns of the target test. The layer index (FACTS 2.5, point 5) is group 1 of
 * re.match(r".*\.[^.]*\.(\d+)\.") or, per layers_pattern entry p, of re.match(rf".*\.{p}\.(\d+)\."): the
 * greedy form, which every peft release up to 2026 uses (0.10.0 wrote our fixtures) and so which
 * selected the modules of the adapters on disk. peft main since PR #3318 (June 2026; FACTS 2.5 reads
 * that snapshot) writes ".*?" instead, so that "model.layers.1.mlp.experts.0.up_proj" is layer 1, not
 * 0; the two differ only for names with two numbered segments (T5's block.N.layer.M, MoE experts, SD
 * UNet blocks). A layers_pattern of "" (or [""]) means "any", as in PEFT. */
static int matcher_targets(matcher *m, it_err *err)
{
    const it_lora_config *c = m->cfg;
    m->every = c->target_regex ? is_all_linear(c->target_regex) : c->ntargets == 0;
    if (c->target_regex && !m->every)
        TRY(compile_wrapped(&m->target, "", c->target_regex, "", "target_modules", err));
    if (c->exclude_regex) TRY(compile_wrapped(&m->exclude, "", c->exclude_regex, "", "exclude_modules", err));
    TRY(alloc_res(&m->save, &m->nsave, c->nmodules_to_save, err));
    for (size_t i = 0; i < m->nsave; i++)
        TRY(compile_wrapped(&m->save[i], "(^|.*\\.)", c->modules_to_save[i], "($|\\..*)", "modules_to_save", err));
    if (c->nlayers == 0) return IT_OK;
    int any = c->nlayers_pattern == 0 || (c->nlayers_pattern == 1 && c->layers_pattern[0][0] == 0);
    TRY(alloc_res(&m->layer, &m->nlayer, any ? 1 : c->nlayers_pattern, err));
    if (any) return compile_wrapped(&m->layer[0], "", ".*\\.[^.]*\\.(\\d+)\\.", "", "layers_to_transform", err);
    for (size_t i = 0; i < m->nlayer; i++)
        TRY(compile_wrapped(&m->layer[i], ".*\\.", c->layers_pattern[i], "\\.(\\d+)\\.", "layers_pattern", err));
    return IT_OK;
}

/* rank_pattern and alpha_pattern keys, each compiled as written (a key is a regex, FACTS 2.6). */
static int matcher_ranks(matcher *m, it_err *err)
{
    const it_lora_config *c = m->cfg;
    TRY(alloc_res(&m->rank, &m->nrank, c->nrank_pattern, err));
    for (size_t i = 0; i < m->nrank; i++)
        TRY(compile_wrapped(&m->rank[i], "", c->rank_pattern[i].key, "", "rank_pattern key", err));
    TRY(alloc_res(&m->alpha, &m->nalpha, c->nalpha_pattern, err));
    for (size_t i = 0; i < m->nalpha; i++)
        TRY(compile_wrapped(&m->alpha[i], "", c->alpha_pattern[i].key, "", "alpha_pattern key", err));
    return IT_OK;
}

/* PEFT's list rule: key == entry, or key ends with "." + entry. */
static int listed(char *const *list, size_t n, const char *key, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(list[i]);
        if (!strcmp(key, list[i])) return 1;
        if (l < len && key[len - l - 1] == '.' && !memcmp(key + len - l, list[i], l)) return 1;
    }
    return 0;
}

/* layers_to_transform: the first layer regex that matches gives the index (group 1); none: not
 * selected. A group 1 that is not a number (a layers_pattern with its own group) makes PEFT fail. */
static int layer_test(const matcher *m, const char *key, size_t len, int *out, it_err *err)
{
    const it_lora_config *c = m->cfg;
    for (size_t i = 0; i < m->nlayer; i++) {
        size_t cap[4];
        if (!it__re_match(m->layer[i], key, len, 0, cap, 4)) continue;
        if (cap[2] == SIZE_MAX || cap[2] >= cap[3] || cap[3] > len || strspn(key + cap[2], "0123456789") < cap[3] - cap[2])
            return it__fail(err, IT_EFORMAT, "layers_pattern: group 1 of the layer regex is not a layer number in "
                            "module %.200s (a layers_pattern with a group of its own?)", key);
        int64_t idx = 0;
        for (size_t p = cap[2]; p < cap[3]; p++) idx = idx > INT64_MAX / 10 - 1 ? INT64_MAX : idx * 10 + (key[p] - '0');
        for (size_t j = 0; j < c->nlayers; j++) *out |= c->layers_to_transform[j] == idx;
        return IT_OK;
    }
    return IT_OK;
}

/* check_target_module_exists (FACTS 2.5), in peft's order: exclude_modules, modules_to_save,
 * target_modules, then the layer filter, which applies to the list form only and not to a module
 * named exactly. */
static int target_test(const matcher *m, const char *key, int *out, it_err *err)
{
    const it_lora_config *c = m->cfg;
    size_t len = strlen(key);
    *out = 0;
    if (m->exclude ? it__re_fullmatch(m->exclude, key, len, 0) : listed(c->exclude, c->nexclude, key, len))
        return IT_OK;
    for (size_t i = 0; i < m->nsave; i++)
        if (it__re_match(m->save[i], key, len, 0, NULL, 0)) return IT_OK;
    if (m->target) {
        *out = it__re_fullmatch(m->target, key, len, 0);
        return IT_OK;
    }
    for (size_t i = 0; i < c->ntargets; i++)
        if (!strcmp(c->targets[i], key)) return *out = 1, IT_OK;
    if (!m->every && !listed(c->targets, c->ntargets, key, len)) return IT_OK;
    if (c->nlayers == 0) return *out = 1, IT_OK;
    return layer_test(m, key, len, out, err);
}

/* get_pattern_key (FACTS 2.6): the first key K, in file order, with re.match(rf"(.*\.)?({K})$", module).
 * The optional group can only end at a dot, and any split that lets K match the rest counts, so
 * this is: K fullmatches module[p..] for p = 0 or p just after some '.'. ('^' in K still means
 * position 0 of the whole name, as in Python.) Returns the key's index, or n when none matches. */
static size_t pattern_find(it__re *const *re, size_t n, const char *module)
{
    size_t len = strlen(module);
    for (size_t k = 0; k < n; k++)
        for (size_t p = 0; p <= len; p++)
            if ((p == 0 || module[p - 1] == '.') && it__re_fullmatch(re[k], module, len, p)) return k;
    return n;
}

/* r and alpha looked up independently (a key in rank_pattern only leaves alpha at lora_alpha),
 * then the scale of LoraLayer.update_layer (FACTS 2.3). */
static void rank_of(const matcher *m, const char *module, int64_t *r, double *alpha, double *scale)
{
    const it_lora_config *c = m->cfg;
    size_t k = pattern_find(m->rank, m->nrank, module);
    *r = k < m->nrank ? (int64_t)c->rank_pattern[k].value : c->r;
    k = pattern_find(m->alpha, m->nalpha, module);
    *alpha = k < m->nalpha ? c->alpha_pattern[k].value : c->lora_alpha;
    *scale = c->use_rslora ? *alpha / sqrt((double)*r) : *alpha / (double)*r;
}

int it_lora_targets(const it_lora_config *cfg, const char *module, int *out, it_err *err)
{
    matcher m = {.cfg = cfg};
    *out = 0;
    int rc = matcher_targets(&m, err);
    if (rc == IT_OK) rc = target_test(&m, module, out, err);
    if (rc != IT_OK) *out = 0;
    matcher_free(&m);
    return rc;
}

int it_lora_module_rank(const it_lora_config *cfg, const char *module, int64_t *r, double *alpha, double *scale,
                        it_err *err)
{
    matcher m = {.cfg = cfg};
    int rc = matcher_ranks(&m, err);
    if (rc == IT_OK) rank_of(&m, module, r, alpha, scale);
    matcher_free(&m);
    return rc;
}

/* ============================================================================================ */
/* Adapters: tensor keys -> (component, module, role)                                            */
/* ============================================================================================ */

enum { ROLE_A, ROLE_B, ROLE_ALPHA };
static const char *const role_name[] = {"lora_A", "lora_B", "alpha"};

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
    matcher m;          /* PEFT: the config's patterns, compiled once */
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

/* ---- PEFT (FACTS 2.4): base_model.model.<module>.lora_A.weight ---- */

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

/* A tensor that is not lora_A / lora_B: say why PEFT would have written it, and refuse it. */
static int peft_other(loader *L, const it_tensor *t, const char *key, size_t len)
{
    char why[240];
    if (strstr(key, "lora_magnitude_vector"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a DoRA magnitude vector: DoRA adapters change the forward pass "
                                              "and are not supported (only plain LoRA is merged)");
    if (ends(key, len, ".lora_B.bias") || ends(key, len, ".lora_B.default.bias"))
        return bad_key(L, IT_EUNSUPPORTED, t, "a lora_B bias (lora_bias): not supported");
    int copy = strstr(key, "modules_to_save") || strstr(key, ".original_module");
    for (size_t i = 0; i < L->m.nsave && !copy; i++) copy = it__re_match(L->m.save[i], key, len, 0, NULL, 0);
    if (copy)
        return bad_key(L, IT_EUNSUPPORTED, t, "a modules_to_save copy, which replaces a whole module of the base "
                                              "model: not supported (only LoRA deltas are merged)");
    if (ends(key, len, ".bias") && strcmp(L->a->cfg.bias, "none") != 0) {
        snprintf(why, sizeof why, "a base-layer bias (bias \"%s\" in adapter_config.json), which replaces the "
                                  "base model's bias: not supported", L->a->cfg.bias);
        return bad_key(L, IT_EUNSUPPORTED, t, why);
    }
    return bad_key(L, IT_EFORMAT, t, "not a tensor of a PEFT LoRA adapter (expected <module>.lora_A.weight, "
                                     "<module>.lora_B.weight, or lora_embedding_A / lora_embedding_B)");
}

static int peft_key(loader *L, const it_tensor *t)
{
    static const char prefix[] = "base_model.model.";
    if (!starts(t->name, prefix))
        return bad_key(L, IT_EFORMAT, t, "expected the prefix \"base_model.model.\" of a PEFT adapter's keys");
    const char *key = t->name + sizeof prefix - 1;
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
 * may carry the LoRA layer's own name (".lora", ".lora_linear_layer", "_lora"), which is dropped.
 * Returns a malloc'd path, or NULL with *why set (or *why NULL when out of memory). */
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

static int diff_key(loader *L, const it_tensor *t)
{
    const char *key = t->name, *comp = "unet"; /* un-prefixed keys are the UNet's (older diffusers) */
    if (starts(key, "unet.")) key += 5;
    else if (starts(key, "text_encoder.")) key += 13, comp = "text_encoder";
    else if (starts(key, "text_encoder_2.")) key += 15, comp = "text_encoder_2";
    size_t len = strlen(key);
    for (size_t i = 0; i < sizeof diff_suffix / sizeof *diff_suffix; i++) {
        const char *suf = diff_suffix[i].suffix, *why;
        if (!ends(key, len, suf)) continue;
        size_t stem = len - strlen(suf);
        char *module = diff_module(comp, key, stem, suf[0] == '_', diff_suffix[i].role == ROLE_ALPHA, &why);
        if (!module) return why ? bad_key(L, IT_EFORMAT, t, why) : it__fail(L->err, IT_ENOMEM, "out of memory");
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

/* r, alpha and scale. PEFT: from the config (it_lora_module_rank's rule), which must agree with the
 * shapes, as PEFT fails to load the state dict otherwise (FACTS 2.6). kohya (FACTS 3.1, LoRAModule):
 * scale = alpha / r with r = lora_down's rows, alpha = r when the alpha tensor is missing or 0; this
 * is kohya's per-module alpha. diffusers loads such a file through PEFT with the most common alpha
 * in lora_alpha and the others in alpha_pattern, but the alpha_pattern keys it builds for attention
 * projections never match (FACTS 3.3 quirk), so a file whose attention modules have different
 * alphas gets the most common one there; for the usual uniform alpha both agree. diffusers' own
 * formats carry no alpha (training script: lora_alpha = r): scale 1, unless an alpha tensor is
 * present, which is then taken as written. */
static int module_scale(loader *L, const entry *alpha, it_lora_module *m, const char *label)
{
    it_adapter *a = L->a;
    if (a->format == IT_ADAPTER_PEFT) {
        int64_t r;
        rank_of(&L->m, m->name, &r, &m->alpha, &m->scale);
        if (r != m->r)
            return it__fail(L->err, IT_EFORMAT, "%s: %s: rank %" PRId64 " in the tensors but %" PRId64 " from %s "
                            "(r / rank_pattern); PEFT would fail to load it", L->file, label, m->r, r, L->config);
        return IT_OK;
    }
    m->alpha = (double)m->r;
    if (alpha) TRY(read_alpha(L, alpha, &m->alpha));
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
        int sel;
        TRY(target_test(&L->m, g->module, &sel, L->err));
        if (!sel) return add_warn(a, L->err, "%s: not selected by target_modules; ignored as PEFT does", label);
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
    return to_f32(L, role[ROLE_B]->t, &m->B);
}

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
    matcher_free(&L->m);
    it_st_close(L->st);
}

/* Opens the weights and places every tensor with key(). */
static int load_tensors(loader *L, int (*key)(loader *, const it_tensor *))
{
    size_t n = it_st_count(L->st);
    L->e = it__calloc(n ? n : 1, sizeof *L->e);
    if (!L->e) return it__fail(L->err, IT_ENOMEM, "%s: out of memory", L->file);
    for (size_t i = 0; i < n; i++) TRY(key(L, it_st_tensor(L->st, i)));
    return build_modules(L);
}

/* A PEFT folder (FACTS 2.1): adapter_config.json and adapter_model.safetensors. */
static int load_peft(loader *L, const char *dir, const char *config)
{
    it_adapter *a = L->a;
    a->format = IT_ADAPTER_PEFT;
    L->config = config;
    TRY(it_lora_config_load(&a->cfg, config, L->err));
    a->has_config = 1;
    if (a->cfg.use_dora)
        return it__fail(L->err, IT_EUNSUPPORTED, "%s: use_dora: DoRA adapters change the forward pass (a learned "
                        "magnitude per output) and are not supported; only plain LoRA is merged", config);
    if (a->cfg.lora_bias)
        return it__fail(L->err, IT_EUNSUPPORTED, "%s: lora_bias: a LoRA whose lora_B has a bias is not supported",
                        config);
    int rc = matcher_targets(&L->m, L->err);
    if (rc == IT_OK) rc = matcher_ranks(&L->m, L->err);
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
    if (rc == IT_OK) rc = load_tensors(L, peft_key);
    free(file);
    free(bin);
    L->file = NULL;
    return rc;
}

/* One Stable Diffusion LoRA file; the format is told by its keys (FACTS 3.3): kohya when every key
 * starts with lora_unet_, lora_te_, lora_te1_ or lora_te2_ (dora_scale keys, DoRA, are refused
 * first, where diffusers drops them with a warning), diffusers' namings otherwise. */
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
        if (starts(t->name, "base_model.model."))
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
    loader L = {.a = a, .m = {.cfg = &a->cfg}, .err = err};
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
static int kohya_table(kname *tab, const char *const *modules, size_t n, const char *path, it_err *err)
{
    for (size_t j = 0; j < n; j++) {
        tab[j].path = modules[j];
        if (!(tab[j].key = it__strdup(modules[j]))) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        for (char *c = tab[j].key; *c; c++)
            if (*c == '.') *c = '_';
    }
    qsort(tab, n, sizeof *tab, cmp_kname);
    return IT_OK;
}

int it_adapter_resolve(it_adapter *a, const char *component, const char *const *modules, size_t nmodules,
                       it_err *err)
{
    if (strcmp(component, "unet") && strcmp(component, "text_encoder") && strcmp(component, "text_encoder_2"))
        return it__fail(err, IT_EINVAL, "%s: component \"%s\": expected unet, text_encoder or text_encoder_2",
                        a->path, component);
    size_t todo = 0;
    for (size_t i = 0; i < a->n; i++) todo += !strcmp(a->mods[i].component, component) && kohya_prefix(component, a->mods[i].name);
    if (todo == 0) return IT_OK;
    kname *tab = it__calloc(nmodules ? nmodules : 1, sizeof *tab);
    const char **names = it__calloc(a->n, sizeof *names);
    char **copies = it__calloc(a->n, sizeof *copies);
    int rc = tab && names && copies ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    if (rc == IT_OK) rc = kohya_table(tab, modules, nmodules, a->path, err);
    if (rc == IT_OK) rc = resolve_names(a, component, tab, nmodules, names, err);
    if (rc == IT_OK) rc = resolve_dups(a, names, err);
    for (size_t i = 0; i < a->n && rc == IT_OK; i++)
        if (names[i] && !(copies[i] = it__strdup(names[i]))) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", a->path);
    for (size_t i = 0; i < a->n && rc == IT_OK; i++) /* commit: all or nothing */
        if (copies[i]) free(a->mods[i].name), a->mods[i].name = copies[i], copies[i] = NULL;
    if (rc == IT_OK) qsort(a->mods, a->n, sizeof *a->mods, cmp_module);
    for (size_t i = 0; copies && i < a->n; i++) free(copies[i]);
    for (size_t j = 0; tab && j < nmodules; j++) free(tab[j].key);
    free(tab);
    free(names);
    free(copies);
    return rc;
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
