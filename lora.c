/* lora.c -- PEFT's LoRA configuration and its rules: adapter_config.json (FACTS.md 2.2), which modules
 * an adapter adapts (FACTS 2.5) and with what rank, alpha and scale (FACTS 2.3, 2.6). The adapter files
 * themselves (PEFT folders, kohya and diffusers Stable Diffusion files) are read by lora_files.c, which
 * uses the rules here through lora_internal.h.
 *
 * Config: follows peft's LoraConfig: an absent key takes LoraConfig's default (r 8, lora_alpha 8,
 * bias "none", every flag false, no patterns); JSON null counts as absent for the flags and for the
 * keys whose default is None. A key of the wrong JSON type is IT_EFORMAT naming the key; keys this
 * file does not know are ignored (PEFT writes many that do not affect the weights). An adapter of
 * another PEFT method (peft_type "LOHA", "IA3", ...) is IT_EUNSUPPORTED: only LoRA is merged. Loading
 * an adapter also refuses every setting whose weights are not a plain delta on the unchanged base
 * (check_plain below).
 *
 * Scale (FACTS 2.3): s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
 *
 * Versions. A user loads an adapter with the PEFT they have, which today is the current release, so the
 * rules here are current peft's everywhere: huggingface/peft main as of 2026-08 (5d602fdb, FACTS 2.5;
 * 5779b17 as quoted in peft issue #3610): src/peft/tuners/tuners_utils.py check_target_module_exists,
 * whose layer-index regexes are lazy (".*?") since PR #3318 (merged 2026-06), and src/peft/utils/other.py
 * get_pattern_key, re.match(rf"(.*\.)?({key})$", name), looked up separately for rank and alpha (the
 * "^" form of PR #2419). Adapters on disk were often written by older releases; peft 0.10.0 (which wrote
 * the fixtures in data/) read the layer index with the greedy ".*" and took one key from
 * chain(rank_pattern, alpha_pattern) matched with re.match(rf".*\.{key}$", name) (lora/model.py
 * _create_and_replace). Where those older rules give a module another selection, rank or alpha, the
 * loader notes it in the adapter's warnings (it__lora_select, it__lora_rank).
 */
#include "lora_internal.h"

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

/* A string value copied to a malloc'd C string; refused if it holds a NUL (it would be cut). */
static int dup_str(const it__jreader *r, const char *key, const it_json *v, char **out)
{
    if (v->type != IT_JSON_STR) return it__jr_bad(r, key, "a string", v);
    if (strlen(v->s) != v->len)
        return it__fail(r->err, IT_EFORMAT, "%s: %s: the string contains a NUL character", r->path, key);
    *out = it__strndup(v->s, v->len);
    return *out ? IT_OK : it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
}

/* A string into a fixed buffer: refused when too long (strict, for names that decide behaviour),
 * otherwise cut at a UTF-8 character boundary. Absent or null leaves dst as it is. */
static int rd_name(const it__jreader *r, const char *key, int strict, char dst[IT_NAME_MAX])
{
    const it_json *v = it__jr_get(r, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return it__jr_bad(r, key, "a string", v);
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
static int rd_flag(const it__jreader *r, const char *key, int *out)
{
    const it_json *v = it__jr_get(r, key);
    *out = 0;
    if (!v) return IT_OK;
    if (v->type != IT_JSON_TRUE && v->type != IT_JSON_FALSE) return it__jr_bad(r, key, "true or false", v);
    *out = v->type == IT_JSON_TRUE;
    return IT_OK;
}

/* A rank: a positive integer literal (2.0 is refused: nn.Linear needs an int). */
static int take_rank(const it__jreader *r, const char *key, const it_json *v, int64_t *out)
{
    if (v->type != IT_JSON_INT || !v->i_ok || v->i <= 0 || v->i > RANK_LIMIT)
        return it__jr_bad(r, key, "a positive integer", v);
    *out = v->i;
    return IT_OK;
}

/* An alpha: any finite number, integer or not. */
static int take_alpha(const it__jreader *r, const char *key, const it_json *v, double *out)
{
    if ((v->type != IT_JSON_INT && v->type != IT_JSON_NUM) || !isfinite(v->d))
        return it__jr_bad(r, key, "a finite number", v);
    *out = v->d;
    return IT_OK;
}

/* ============================================================================================ */
/* Lists and patterns                                                                            */
/* ============================================================================================ */

enum {
    LIST_ONLY,     /* modules_to_save: a list of names */
    LIST_OR_ONE,   /* layers_pattern: a list, or one name (a list of one; "" is no name, see matcher_layers) */
    LIST_OR_REGEX  /* target_modules, exclude_modules: a list, or one string that is a regex */
};

/* A list of names into (*list)[*n]; entries are counted as they are copied, so a failure leaves
 * only what it_lora_config_free releases. */
static int rd_names(const it__jreader *r, const char *key, int form, char ***list, size_t *n, char **regex)
{
    char name[96];
    const it_json *v = it__jr_get(r, key);
    if (!v) return IT_OK;
    if (v->type == IT_JSON_STR && form == LIST_OR_REGEX) return dup_str(r, key, v, regex);
    const it_json *items = v->type == IT_JSON_ARR ? v->items : v;
    size_t count = v->type == IT_JSON_ARR ? v->n : 1;
    if (v->type != IT_JSON_ARR && !(v->type == IT_JSON_STR && form == LIST_OR_ONE))
        return it__jr_bad(r, key, form == LIST_ONLY ? "an array of strings" : "a string or an array of strings", v);
    if (count == 0 || (v->type == IT_JSON_STR && v->len == 0)) return IT_OK;
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
static int rd_layers(const it__jreader *r, it_lora_config *c)
{
    const it_json *v = it__jr_get(r, "layers_to_transform");
    if (!v) return IT_OK;
    const it_json *items = v->type == IT_JSON_ARR ? v->items : v;
    size_t count = v->type == IT_JSON_ARR ? v->n : 1;
    if (count == 0) return IT_OK;
    c->layers_to_transform = it__malloc_n(count, sizeof *c->layers_to_transform);
    if (!c->layers_to_transform) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; i < count; i++) {
        const it_json *x = &items[i];
        if (x->type != IT_JSON_INT || !x->i_ok || x->i < 0)
            return it__jr_bad(r, "layers_to_transform",
                             "a non-negative layer index or an array of them", v->type == IT_JSON_ARR ? x : v);
        c->layers_to_transform[i] = x->i;
    }
    c->nlayers = count;
    return IT_OK;
}

/* rank_pattern (is_rank: values are positive integers) or alpha_pattern (finite numbers): an
 * object from a module-name pattern to a value, kept in file order because PEFT takes the first
 * key that matches (FACTS 2.6). */
static int rd_patterns(const it__jreader *r, const char *key, int is_rank, it_lora_pattern **out, size_t *n)
{
    char name[160];
    const it_json *v = it__jr_get(r, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_OBJ) return it__jr_bad(r, key, "an object", v);
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
static int read_peft_type(const it__jreader *r, it_lora_config *c)
{
    const it_json *v = it__jr_get(r, "peft_type");
    snprintf(c->peft_type, sizeof c->peft_type, "LORA");
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return it__jr_bad(r, "peft_type", "a string", v);
    if (v->len == 4 && memcmp(v->s, "LORA", 4) == 0) return IT_OK;
    return it__fail(r->err, IT_EUNSUPPORTED,
                    "%s: peft_type \"%.*s\" is not supported: iteris merges LoRA adapters only", r->path,
                    (int)(v->len < 64 ? v->len : 64), v->s);
}

/* r (default 8) and lora_alpha (default 8). */
static int read_rank_alpha(const it__jreader *r, it_lora_config *c)
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
static int read_bias(const it__jreader *r, it_lora_config *c)
{
    const it_json *v = it_json_get(r->obj, "bias");
    snprintf(c->bias, sizeof c->bias, "none");
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return it__jr_bad(r, "bias", "\"none\", \"all\" or \"lora_only\"", v);
    if (v->len != strlen(v->s) || (strcmp(v->s, "none") && strcmp(v->s, "all") && strcmp(v->s, "lora_only")))
        return it__fail(r->err, IT_EFORMAT, "%s: bias: expected \"none\", \"all\" or \"lora_only\", got \"%.*s\"",
                        r->path, (int)(v->len < 64 ? v->len : 64), v->s);
    memcpy(c->bias, v->s, v->len + 1);
    return IT_OK;
}

static int parse_lora(const it__jreader *r, it_lora_config *c)
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
    const it_json *v = it__jr_get(r, "base_model_name_or_path");
    return v ? dup_str(r, "base_model_name_or_path", v, &c->base_model) : IT_OK;
}

/* Parses text as the config named file (for messages); the root must be an object. On success
 * *doc is the caller's. */
static int parse_json_text(const char *file, const char *text, size_t len, it_json_doc **doc, it_err *err)
{
    *doc = NULL;
    int rc = it_json_parse(doc, text, len, IT_JSON_NODUP, err);
    if (rc != IT_OK) it__err_prefix(err, file);
    if (rc == IT_OK && it_json_root(*doc)->type != IT_JSON_OBJ) {
        char what[64];
        it_json_describe(it_json_root(*doc), what, sizeof what);
        rc = it__fail(err, IT_EFORMAT, "%s: expected a JSON object at the top level, got %s", file, what);
    }
    if (rc != IT_OK && *doc) {
        it_json_free(*doc);
        *doc = NULL;
    }
    return rc;
}

/* Reads and parses path (the file, or a folder holding adapter_config.json). On success *file
 * (malloc'd, for messages) and *doc are the caller's. */
static int parse_json_file(const char *path, char **file, it_json_doc **doc, it_err *err)
{
    char *text = NULL;
    size_t len = 0;
    *doc = NULL;
    *file = it__is_dir(path) ? it__path_join(path, "adapter_config.json") : it__strdup(path);
    if (!*file) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    int rc = it__read_file(*file, CONFIG_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK) rc = parse_json_text(*file, text, len, doc, err);
    free(text);
    if (rc != IT_OK) {
        free(*file);
        *file = NULL;
    }
    return rc;
}

/* ============================================================================================ */
/* Plain deltas only                                                                             */
/* ============================================================================================ */

/* init_lora_weights (LoraConfig: true, false, "gaussian", "eva", "olora", "pissa", "pissa_niter_<n>",
 * "corda", "loftq", "orthogonal"). PiSSA, OLoRA and CorDA take their principal components out of the
 * base weights at initialisation and LoftQ quantises them, so the adapter is a delta on modified base
 * weights; once converted (save_pretrained's path_initial_model_for_weight_conversion) PEFT writes
 * init_lora_weights true. The other values leave the base as it is. A string PEFT does not know makes
 * it fail (update_layer: "Unknown initialization"); refused here as well. */
static int check_init(const it__jreader *r)
{
    static const char *const plain[] = {"gaussian", "eva", "orthogonal"};
    const it_json *v = it__jr_get(r, "init_lora_weights");
    if (!v || v->type == IT_JSON_TRUE || v->type == IT_JSON_FALSE) return IT_OK;
    if (v->type != IT_JSON_STR) return it__jr_bad(r, "init_lora_weights", "true, false or a string", v);
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
        if (v->len == strlen(plain[i]) && !memcmp(v->s, plain[i], v->len)) return IT_OK;
    int known = (v->len >= 5 && !memcmp(v->s, "pissa", 5)) || !strcmp(v->s, "olora") || !strcmp(v->s, "corda") ||
                !strcmp(v->s, "loftq");
    return it__fail(r->err, IT_EUNSUPPORTED, "%s: init_lora_weights \"%.*s\": %s", r->path,
                    (int)(v->len < 64 ? v->len : 64), v->s,
                    known ? "PiSSA, OLoRA, CorDA and LoftQ change the base weights at initialisation, so the adapter "
                            "is a delta on modified weights, not on the base model; convert it first (peft's "
                            "save_pretrained with path_initial_model_for_weight_conversion)"
                          : "not an initialisation iteris knows to leave the base weights unchanged (true, false, "
                            "\"gaussian\", \"eva\", \"orthogonal\")");
}

/* A key that is set (not absent, null, false, or an empty list) refuses the adapter with why. */
static int refuse_set(const it__jreader *r, const char *key, const char *why)
{
    const it_json *v = it__jr_get(r, key);
    if (!v || v->type == IT_JSON_FALSE || (v->type == IT_JSON_ARR && v->n == 0)) return IT_OK;
    return it__fail(r->err, IT_EUNSUPPORTED, "%s: %s: %s", r->path, key, why);
}

/* Settings whose weights are not a plain delta dW = s B A on the unchanged base (peft's LoraConfig,
 * src/peft/tuners/lora/config.py): refused with IT_EUNSUPPORTED naming the key. Loading only;
 * it_lora_config_load reads such configs (to describe them). */
static int check_plain(const it__jreader *r, const it_lora_config *c)
{
    if (c->use_dora)
        return it__fail(r->err, IT_EUNSUPPORTED, "%s: use_dora: DoRA adapters change the forward pass (a learned "
                        "magnitude per output) and are not supported; only plain LoRA is merged", r->path);
    if (c->lora_bias)
        return it__fail(r->err, IT_EUNSUPPORTED, "%s: lora_bias: a LoRA whose lora_B has a bias is not supported",
                        r->path);
    TRY(check_init(r));
    TRY(refuse_set(r, "use_qalora", "QALoRA pools the input in groups before lora_A (another forward pass); not "
                                    "supported"));
    TRY(refuse_set(r, "alora_invocation_tokens", "an activated LoRA (aLoRA) acts only after its invocation tokens, "
                                                 "not as a delta on every input; not supported"));
    TRY(refuse_set(r, "target_parameters", "LoRA on parameters (nn.Parameter targets such as MoE experts) is not "
                                           "supported; only modules are merged"));
    return refuse_set(r, "layer_replication", "the adapter stacks repeated base layers (a model of another depth); "
                                              "not supported");
}

/* The fields of a parsed config, and with strict the plain-delta check. */
static int config_read(it_lora_config *cfg, const char *file, it_json_doc *doc, int strict, it_err *err)
{
    it__jreader r = {file, it_json_root(doc), err};
    int rc = parse_lora(&r, cfg);
    if (rc == IT_OK && strict) rc = check_plain(&r, cfg);
    if (rc != IT_OK) it_lora_config_free(cfg);
    return rc;
}

/* it_lora_config_load, and with strict the plain-delta check. */
static int config_load(it_lora_config *cfg, const char *path, int strict, it_err *err)
{
    char *file;
    it_json_doc *doc;
    memset(cfg, 0, sizeof *cfg);
    int rc = parse_json_file(path, &file, &doc, err);
    if (rc != IT_OK) return rc;
    rc = config_read(cfg, file, doc, strict, err);
    it_json_free(doc);
    free(file);
    return rc;
}

int it_lora_config_parse(it_lora_config *cfg, const char *name, const char *text, size_t len, int strict, it_err *err)
{
    it_json_doc *doc;
    memset(cfg, 0, sizeof *cfg);
    int rc = parse_json_text(name, text, len, &doc, err);
    if (rc != IT_OK) return rc;
    rc = config_read(cfg, name, doc, strict, err);
    it_json_free(doc);
    return rc;
}

int it_lora_config_load(it_lora_config *cfg, const char *path, it_err *err) { return config_load(cfg, path, 0, err); }

int it__lora_config_read(it_lora_config *cfg, const char *path, it_err *err) { return config_load(cfg, path, 1, err); }

int it__lora_config_json(it_lora_config *cfg, const it_json *obj, const char *where, it_err *err)
{
    it__jreader r = {where, obj, err};
    memset(cfg, 0, sizeof *cfg);
    int rc = parse_lora(&r, cfg);
    if (rc == IT_OK) rc = check_plain(&r, cfg);
    if (rc != IT_OK) it_lora_config_free(cfg);
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
    it__escape_controls(buf, size); /* names from the file stay on the line */
}

/* ============================================================================================ */
/* Which modules an adapter adapts, and with what rank (FACTS 2.5, 2.6)                         */
/* ============================================================================================ */
/*
 * PEFT decides both with Python regular expressions; they go through the it__re_* engine (regex.c),
 * compiled once per use: a matcher holds every pattern a config needs, compiled, for one call of
 * it_lora_targets / it_lora_module_rank or for one configuration of an adapter (nothing is cached
 * globally). It also holds the forms peft 0.10 compiled, to tell where those rules answer otherwise.
 */
struct it__lora_matcher {
    const it_lora_config *cfg;
    int every;           /* no target_modules, or "all-linear": the target test passes every module */
    it__re *target;      /* target_modules as one regex (re.fullmatch) */
    it__re *exclude;     /* exclude_modules as one regex (re.fullmatch) */
    size_t nsave, nlayer, nrank, nalpha;
    it__re **save;       /* [nsave] "(^|.*\.)<m>($|\..*)" per modules_to_save entry (re.match) */
    it__re **layer;      /* [nlayer] the layer-index regexes (lazy), tried in order (re.match, group 1) */
    it__re **rank;       /* [nrank] the rank_pattern keys, in file order */
    it__re **alpha;      /* [nalpha] the alpha_pattern keys, in file order */
    int old_ok;          /* peft 0.10's forms below all compiled (else no comparison is made) */
    it__re **old_layer;  /* [nlayer] the greedy layer-index regexes */
    it__re **old_rank;   /* [nrank] ".*\.<key>$" per rank_pattern key (re.match) */
    it__re **old_alpha;  /* [nalpha] likewise per alpha_pattern key */
};
typedef struct it__lora_matcher matcher;

static void free_res(it__re **re, size_t n)
{
    for (size_t i = 0; re && i < n; i++)
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
    free_res(m->old_layer, m->nlayer);
    free_res(m->old_rank, m->nrank);
    free_res(m->old_alpha, m->nalpha);
    memset(m, 0, sizeof *m);
}

/* pre + pat + post, malloc'd (NULL when out of memory). */
static char *wrap(const char *pre, const char *pat, const char *post)
{
    size_t a = strlen(pre), b = strlen(pat), c = strlen(post), n;
    char *s = it__add_size(a + c + 1, b, &n) == 0 ? malloc(n) : NULL;
    if (!s) return NULL;
    memcpy(s, pre, a);
    memcpy(s + a, pat, b);
    memcpy(s + a + b, post, c + 1);
    return s;
}

/* Compiles pre + pat + post; a failure names the config key and the pattern as written:
 * "rank_pattern key \"q(\": at offset 1: ...". */
static int compile_wrapped(it__re **re, const char *pre, const char *pat, const char *post, const char *what,
                           it_err *err)
{
    size_t a = strlen(pre), b = strlen(pat), c = strlen(post);
    char *s = wrap(pre, pat, post);
    if (!s) return it__fail(err, IT_ENOMEM, "%s: out of memory", what);
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

/* One of peft 0.10's forms: a pattern that does not compile (or no memory) only turns the comparison
 * with those rules off. */
static void compile_old(matcher *m, it__re **re, const char *pre, const char *pat, const char *post)
{
    char *s = wrap(pre, pat, post);
    if (!s || it__re_compile(re, s, NULL) != IT_OK) m->old_ok = 0, *re = NULL;
    free(s);
}

/* An array of n compiled patterns (NULL entries until compiled; the matcher frees them all). */
static int alloc_res(it__re ***re, size_t n, const char *what, it_err *err)
{
    if (n == 0) return IT_OK;
    *re = it__calloc(n, sizeof **re);
    return *re ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", what);
}

/* "all-linear" (compared case-insensitively, as PEFT lowers the string first). */
static int is_all_linear(const char *s)
{
    const char *want = "all-linear";
    for (; *s && *want; s++, want++)
        if ((*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s) != *want) return 0;
    return *s == 0 && *want == 0;
}

/* The layer-index regexes (FACTS 2.5, point 5): group 1 of re.match(r".*?\.[^.]*\.(\d+)\.") or, per
 * layers_pattern entry p in order, of re.match(rf".*?\.{p}\.(\d+)\."): current peft's lazy forms (PR
 * #3318), which find the first numbered segment ("model.layers.1.mlp.experts.0.up_proj" is layer 1,
 * T5's "encoder.block.0.layer.1.SelfAttention.q" is 0); peft 0.10 and every release before that PR
 * compiled the greedy ".*", which finds the last one (expert 0; layer 1). In PEFT None, [] and "" mean
 * "any" (rd_names reads "" as no entry); a list holding "" builds r".*?\.\.(\d+)\.", which never
 * matches, so that filter selects nothing, here as there. */
static int matcher_layers(matcher *m, it_err *err)
{
    const it_lora_config *c = m->cfg;
    size_t n = c->nlayers_pattern ? c->nlayers_pattern : 1;
    const char *what = c->nlayers_pattern ? "layers_pattern" : "layers_to_transform";
    TRY(alloc_res(&m->layer, n, what, err));
    m->nlayer = n;
    TRY(alloc_res(&m->old_layer, n, what, err));
    for (size_t i = 0; i < n; i++) {
        const char *p = c->nlayers_pattern ? c->layers_pattern[i] : "[^.]*";
        TRY(compile_wrapped(&m->layer[i], ".*?\\.", p, "\\.(\\d+)\\.", what, err));
        compile_old(m, &m->old_layer[i], ".*\\.", p, "\\.(\\d+)\\.");
    }
    return IT_OK;
}

/* The patterns of the target test. */
static int matcher_targets(matcher *m, it_err *err)
{
    const it_lora_config *c = m->cfg;
    m->every = c->target_regex ? is_all_linear(c->target_regex) : c->ntargets == 0;
    if (c->target_regex && !m->every)
        TRY(compile_wrapped(&m->target, "", c->target_regex, "", "target_modules", err));
    if (c->exclude_regex) TRY(compile_wrapped(&m->exclude, "", c->exclude_regex, "", "exclude_modules", err));
    TRY(alloc_res(&m->save, c->nmodules_to_save, "modules_to_save", err));
    m->nsave = c->nmodules_to_save;
    for (size_t i = 0; i < m->nsave; i++)
        TRY(compile_wrapped(&m->save[i], "(^|.*\\.)", c->modules_to_save[i], "($|\\..*)", "modules_to_save", err));
    return c->nlayers ? matcher_layers(m, err) : IT_OK;
}

/* rank_pattern and alpha_pattern keys, each compiled as written (a key is a regex, FACTS 2.6), and in
 * peft 0.10's form. */
static int matcher_ranks(matcher *m, it_err *err)
{
    const it_lora_config *c = m->cfg;
    TRY(alloc_res(&m->rank, c->nrank_pattern, "rank_pattern", err));
    m->nrank = c->nrank_pattern;
    TRY(alloc_res(&m->old_rank, m->nrank, "rank_pattern", err));
    for (size_t i = 0; i < m->nrank; i++) {
        TRY(compile_wrapped(&m->rank[i], "", c->rank_pattern[i].key, "", "rank_pattern key", err));
        compile_old(m, &m->old_rank[i], ".*\\.", c->rank_pattern[i].key, "$");
    }
    TRY(alloc_res(&m->alpha, c->nalpha_pattern, "alpha_pattern", err));
    m->nalpha = c->nalpha_pattern;
    TRY(alloc_res(&m->old_alpha, m->nalpha, "alpha_pattern", err));
    for (size_t i = 0; i < m->nalpha; i++) {
        TRY(compile_wrapped(&m->alpha[i], "", c->alpha_pattern[i].key, "", "alpha_pattern key", err));
        compile_old(m, &m->old_alpha[i], ".*\\.", c->alpha_pattern[i].key, "$");
    }
    return IT_OK;
}

/* it__re_match / it__re_fullmatch answer -1 when a large pattern's working memory cannot be had. */
static int re_nomem(it_err *err) { return it__fail(err, IT_ENOMEM, "out of memory matching a pattern"); }

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
 * selected. A group 1 that is not a number (a layers_pattern with its own group) makes PEFT fail; with
 * peft 0.10's forms (old) it only counts as not selected. */
static int layer_test(const matcher *m, int old, const char *key, size_t len, int *out, it_err *err)
{
    const it_lora_config *c = m->cfg;
    it__re *const *re = old ? m->old_layer : m->layer;
    for (size_t i = 0; i < m->nlayer; i++) {
        size_t cap[4];
        int hit = re[i] ? it__re_match(re[i], key, len, 0, cap, 4) : 0;
        if (hit < 0) return re_nomem(err);
        if (hit == 0) continue;
        if (cap[2] == SIZE_MAX || cap[2] >= cap[3] || cap[3] > len || strspn(key + cap[2], "0123456789") < cap[3] - cap[2])
            return old ? IT_OK : it__fail(err, IT_EFORMAT, "layers_pattern: group 1 of the layer regex is not a "
                                          "layer number in module %.200s (a layers_pattern with a group of its own?)", key);
        int64_t idx = 0;
        for (size_t p = cap[2]; p < cap[3]; p++) idx = idx > INT64_MAX / 10 - 1 ? INT64_MAX : idx * 10 + (key[p] - '0');
        for (size_t j = 0; j < c->nlayers; j++) *out |= c->layers_to_transform[j] == idx;
        return IT_OK;
    }
    return IT_OK;
}

/* check_target_module_exists (FACTS 2.5), in peft's order: exclude_modules, modules_to_save,
 * target_modules, then the layer filter, which applies to the list form only and not to a module
 * named exactly. old: with peft 0.10's greedy layer regexes. */
static int target_test(const matcher *m, int old, const char *key, int *out, it_err *err)
{
    const it_lora_config *c = m->cfg;
    size_t len = strlen(key);
    *out = 0;
    int hit = m->exclude ? it__re_fullmatch(m->exclude, key, len, 0) : listed(c->exclude, c->nexclude, key, len);
    for (size_t i = 0; i < m->nsave && hit == 0; i++) hit = it__re_match(m->save[i], key, len, 0, NULL, 0);
    if (hit != 0) return hit < 0 ? re_nomem(err) : IT_OK;
    if (m->target) {
        hit = it__re_fullmatch(m->target, key, len, 0);
        *out = hit == 1;
        return hit < 0 ? re_nomem(err) : IT_OK;
    }
    for (size_t i = 0; i < c->ntargets; i++)
        if (!strcmp(c->targets[i], key)) return *out = 1, IT_OK;
    if (!m->every && !listed(c->targets, c->ntargets, key, len)) return IT_OK;
    if (c->nlayers == 0) return *out = 1, IT_OK;
    return layer_test(m, old, key, len, out, err);
}

/* get_pattern_key (FACTS 2.6): the first key K, in file order, with re.match(rf"(.*\.)?({K})$", module).
 * The optional group can only end at a dot, and any split that lets K match the rest counts, so
 * this is: K fullmatches module[p..] for p = 0 or p just after some '.'. ('^' in K still means
 * position 0 of the whole name, as in Python.) *k: the key's index, or n when none matches. */
static int pattern_find(it__re *const *re, size_t n, const char *module, size_t *k, it_err *err)
{
    size_t len = strlen(module);
    for (*k = 0; *k < n; ++*k)
        for (size_t p = 0; p <= len; p++) {
            int hit = p == 0 || module[p - 1] == '.' ? it__re_fullmatch(re[*k], module, len, p) : 0;
            if (hit != 0) return hit < 0 ? re_nomem(err) : IT_OK;
        }
    return IT_OK;
}

/* r and alpha looked up independently (a key in rank_pattern only leaves alpha at lora_alpha),
 * then the scale of LoraLayer.update_layer (FACTS 2.3). */
static int rank_of(const matcher *m, const char *module, int64_t *r, double *alpha, double *scale, it_err *err)
{
    const it_lora_config *c = m->cfg;
    size_t k;
    TRY(pattern_find(m->rank, m->nrank, module, &k, err));
    *r = k < m->nrank ? (int64_t)c->rank_pattern[k].value : c->r;
    TRY(pattern_find(m->alpha, m->nalpha, module, &k, err));
    *alpha = k < m->nalpha ? c->alpha_pattern[k].value : c->lora_alpha;
    *scale = c->use_rslora ? *alpha / sqrt((double)*r) : *alpha / (double)*r;
    return IT_OK;
}

/* peft 0.10's r and alpha (lora/model.py _create_and_replace): K = the first key of
 * chain(rank_pattern, alpha_pattern) with re.match(rf".*\.{K}$", module), else the module name itself;
 * then r = rank_pattern.get(K, r) and alpha = alpha_pattern.get(K, lora_alpha). So one key decides both
 * (a rank key that matches hides every alpha key), a key must follow a dot, and a key spelled as the
 * whole name applies through the fallback. */
static int old_rank_of(const matcher *m, const char *module, int64_t *r, double *alpha, it_err *err)
{
    const it_lora_config *c = m->cfg;
    size_t len = strlen(module);
    const char *key = module;
    for (size_t k = 0; k < m->nrank + m->nalpha && key == module; k++) {
        const it__re *re = k < m->nrank ? m->old_rank[k] : m->old_alpha[k - m->nrank];
        int hit = re ? it__re_match(re, module, len, 0, NULL, 0) : 0;
        if (hit < 0) return re_nomem(err);
        if (hit == 1) key = k < m->nrank ? c->rank_pattern[k].key : c->alpha_pattern[k - m->nrank].key;
    }
    *r = c->r;
    *alpha = c->lora_alpha;
    for (size_t k = 0; k < c->nrank_pattern; k++)
        if (!strcmp(c->rank_pattern[k].key, key)) *r = (int64_t)c->rank_pattern[k].value;
    for (size_t k = 0; k < c->nalpha_pattern; k++)
        if (!strcmp(c->alpha_pattern[k].key, key)) *alpha = c->alpha_pattern[k].value;
    return IT_OK;
}

int it_lora_targets(const it_lora_config *cfg, const char *module, int *out, it_err *err)
{
    matcher m = {.cfg = cfg};
    *out = 0;
    int rc = matcher_targets(&m, err);
    if (rc == IT_OK) rc = target_test(&m, 0, module, out, err);
    if (rc != IT_OK) *out = 0;
    matcher_free(&m);
    return rc;
}

int it_lora_module_rank(const it_lora_config *cfg, const char *module, int64_t *r, double *alpha, double *scale,
                        it_err *err)
{
    matcher m = {.cfg = cfg};
    int rc = matcher_ranks(&m, err);
    if (rc == IT_OK) rc = rank_of(&m, module, r, alpha, scale, err);
    matcher_free(&m);
    return rc;
}

/* ---- for lora_files.c (lora_internal.h) ---- */

int it__lora_matcher_new(it__lora_matcher **out, const it_lora_config *cfg, it_err *err)
{
    matcher *m = it__calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return it__fail(err, IT_ENOMEM, "out of memory");
    m->cfg = cfg;
    m->old_ok = 1;
    int rc = matcher_targets(m, err);
    if (rc == IT_OK) rc = matcher_ranks(m, err);
    if (rc != IT_OK) {
        matcher_free(m);
        free(m);
        return rc;
    }
    *out = m;
    return IT_OK;
}

void it__lora_matcher_free(it__lora_matcher *m)
{
    if (!m) return;
    matcher_free(m);
    free(m);
}

int it__lora_select(const it__lora_matcher *m, const char *module, int *sel, int *old_sel, it_err *err)
{
    TRY(target_test(m, 0, module, sel, err));
    if (!m->old_ok || m->cfg->nlayers == 0) return *old_sel = *sel, IT_OK;
    return target_test(m, 1, module, old_sel, err);
}

int it__lora_rank(const it__lora_matcher *m, const char *module, it__lora_rank_info *out, it_err *err)
{
    TRY(rank_of(m, module, &out->r, &out->alpha, &out->scale, err));
    out->old_known = m->old_ok;
    out->old_r = out->r, out->old_alpha = out->alpha;
    return m->old_ok ? old_rank_of(m, module, &out->old_r, &out->old_alpha, err) : IT_OK;
}

int it__lora_saved(const it__lora_matcher *m, const char *key, int *saved, it_err *err)
{
    size_t len = strlen(key);
    int hit = 0;
    for (size_t i = 0; i < m->nsave && hit == 0; i++) hit = it__re_match(m->save[i], key, len, 0, NULL, 0);
    *saved = hit == 1;
    return hit < 0 ? re_nomem(err) : IT_OK;
}
