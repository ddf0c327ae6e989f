/* output.c -- the three output formats of a merge (DESIGN.md section 3, `--format`):
 *
 *   delta  DIR/delta.safetensors: <site> = W* [d_out x d_in] f32 (the whole weight with
 *          --with-pretrain);
 *   lora   a PEFT adapter (adapter_config.json + adapter_model.safetensors) at rank r: each site's
 *          merged delta through the truncated SVD (linalg.c), dW ~ (U S) Vt, the scale folded into
 *          B = U S, A = Vt, lora_alpha = r so that PEFT's scale is 1, use_rslora false and no
 *          patterns; sites whose rank is below r are padded with zero rows and columns (an exact
 *          no-op), so one r serves every site; the retained energy and rank of each site go into
 *          the safetensors metadata. cat's exact factors are written as they are;
 *   model  the base folder's files with W0 + W* at each site: every other tensor and file copied,
 *          same file names, dtypes and sharding.
 *
 * Every file is written under a temporary name and renamed when complete; lora and model are
 * output sets (it_out_begin), so a failure part way leaves none of their files.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

int it_make_dir(const char *dir, it_err *err)
{
    if (mkdir(dir, 0777) == 0) return it__out_dir_made(dir, err);
    if (errno == EEXIST && it__is_dir(dir)) return IT_OK;
    return it__fail(err, IT_EIO, "%s: cannot create the folder: %s", dir, strerror(errno));
}

/* The merged delta of a site (W* minus W0 with with_pretrain) as a fresh double array. */
static double *site_delta(const it_merged_site *s, int with_pretrain)
{
    size_t len = (size_t)s->d_out * (size_t)s->d_in;
    double *d = it__malloc_n(len, sizeof *d);
    if (!d) return NULL;
    for (size_t k = 0; k < len; k++) d[k] = s->w[k] - (with_pretrain && s->w0 ? (double)s->w0[k] : 0.0);
    return d;
}

static void put_f32(unsigned char *dst, double v)
{
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    it__put_le32(dst, u);
}

/* ============================================================================================ */
/* delta                                                                                         */
/* ============================================================================================ */

int it_write_delta(const char *path, const it_merged_site *sites, size_t n, int with_pretrain, it_err *err)
{
    it_tensor *t = it__calloc(n ? n : 1, sizeof *t);
    uint64_t *shapes = it__calloc(2 * (n ? n : 1), sizeof *shapes);
    int rc = t && shapes ? IT_OK : it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; rc == IT_OK && i < n; i++) {
        size_t len = (size_t)sites[i].d_out * (size_t)sites[i].d_in;
        unsigned char *b = it__malloc_n(len, 4);
        if (!b) {
            rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
            break;
        }
        for (size_t k = 0; k < len; k++) put_f32(b + 4 * k, sites[i].w[k]);
        shapes[2 * i] = (uint64_t)sites[i].d_out, shapes[2 * i + 1] = (uint64_t)sites[i].d_in;
        t[i] = (it_tensor){sites[i].name, IT_F32, 2, shapes + 2 * i, len, 4 * len, b, 0, 0};
    }
    if (rc == IT_OK) {
        const char *k[] = {"format", "iteris_with_pretrain"}, *v[] = {"pt", with_pretrain ? "true" : "false"};
        rc = it_st_save(path, t, n, k, v, 2, err);
    }
    for (size_t i = 0; t && i < n; i++) free((void *)t[i].data);
    free(t), free(shapes);
    return rc;
}

/* ============================================================================================ */
/* lora                                                                                          */
/* ============================================================================================ */

/* One site's factors at rank r (padded with zeros past its own rank): B [d_out x r], A [r x d_in]. */
typedef struct factors {
    float *A, *B;
    int64_t rank;   /* the site's own rank (<= r) */
    double energy;  /* retained energy of the truncation (1 for exact factors) */
} factors;

static int64_t site_rank(const it_merged_site *s, int64_t want)
{
    int64_t cap = s->d_out < s->d_in ? s->d_out : s->d_in;
    int64_t r = want > 0 ? want : s->rank_hint > 0 ? s->rank_hint : cap;
    if (s->exact_A && want <= 0) r = s->exact_r;
    return r < cap || (s->exact_A && want <= 0) ? r : cap;
}

/* Fills f for rank r (f->rank already set): the exact factors, or the truncated SVD. */
static int make_factors(const it_merged_site *s, int with_pretrain, int64_t r, uint64_t seed, factors *f,
                        it_err *err)
{
    size_t m = (size_t)s->d_out, n = (size_t)s->d_in, k = (size_t)f->rank, R = (size_t)r;
    f->A = it__calloc(R * n, sizeof *f->A);
    f->B = it__calloc(m * R, sizeof *f->B);
    if (!f->A || !f->B) return it__fail(err, IT_ENOMEM, "site %s: out of memory", s->name);
    if (s->exact_A && k == (size_t)s->exact_r) {
        for (size_t i = 0; i < k * n; i++) f->A[i] = (float)s->exact_A[i];
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < k; j++) f->B[i * R + j] = (float)s->exact_B[i * k + j];
        f->energy = 1.0;
        return IT_OK;
    }
    double *d = site_delta(s, with_pretrain);
    double *U = it__malloc_n(m * (k ? k : 1), sizeof *U), *S = it__malloc_n(k ? k : 1, sizeof *S);
    double *Vt = it__malloc_n((k ? k : 1) * n, sizeof *Vt);
    int rc = d && U && S && Vt ? IT_OK : it__fail(err, IT_ENOMEM, "site %s: out of memory", s->name);
    if (rc == IT_OK && k) rc = it_svd(d, m, n, k, U, S, Vt, &f->energy, seed, err);
    if (rc == IT_OK && !k) f->energy = 0.0;
    if (rc != IT_OK && rc != IT_ENOMEM) it__err_prefix(err, s->name);
    for (size_t i = 0; rc == IT_OK && i < m; i++) /* B = U S */
        for (size_t j = 0; j < k; j++) f->B[i * R + j] = (float)(U[i * k + j] * S[j]);
    for (size_t i = 0; rc == IT_OK && i < k; i++)
        for (size_t j = 0; j < n; j++) f->A[i * n + j] = (float)Vt[i * n + j];
    free(d), free(U), free(S), free(Vt);
    return rc;
}

/* Appends s, as a JSON string literal with quote. Out of memory, *buf is freed and *len set to
 * SIZE_MAX, which every later append leaves as it is (the caller tests it once at the end). */
static void json_append(char **buf, size_t *len, size_t *cap, const char *s, int quote)
{
    if (*len == SIZE_MAX) return;
    size_t need = *len + 6 * strlen(s) + 3;
    if (need > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < need) c *= 2;
        char *nb = realloc(*buf, c);
        if (!nb) {
            free(*buf);
            *buf = NULL;
            *cap = 0;
            *len = SIZE_MAX;
            return;
        }
        *buf = nb, *cap = c;
    }
    if (!*buf) return;
    char *p = *buf + *len;
    if (quote) *p++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (quote && (c == '"' || c == '\\')) *p++ = '\\', *p++ = (char)c;
        else if (quote && c < 0x20) p += sprintf(p, "\\u%04x", c);
        else *p++ = (char)c;
    }
    if (quote) *p++ = '"';
    *p = 0;
    *len = (size_t)(p - *buf);
}

/* adapter_config.json as peft's save_pretrained writes it (keys sorted, two-space indent). */
static char *lora_config_json(const it_merged_site *sites, size_t n, int64_t r, const it_lora_out_opts *o)
{
    char *b = NULL, num[64];
    size_t len = 0, cap = 0;
    int fan_in_fan_out = 0;
    for (size_t i = 0; i < n; i++) fan_in_fan_out |= sites[i].transposed && sites[i].kind == IT_LORA_LINEAR;
#define LIT(s) json_append(&b, &len, &cap, s, 0)
#define STR(s) json_append(&b, &len, &cap, s, 1)
    LIT("{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
    if (o->base_model) STR(o->base_model);
    else LIT("null");
    LIT(",\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": ");
    LIT(fan_in_fan_out ? "true" : "false");
    LIT(",\n  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n  \"layer_replication\": null,\n"
        "  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n  \"loftq_config\": {},\n"
        "  \"lora_alpha\": ");
    snprintf(num, sizeof num, "%lld", (long long)r);
    LIT(num);
    LIT(",\n  \"lora_dropout\": 0.0,\n  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
        "  \"modules_to_save\": null,\n  \"peft_type\": \"LORA\",\n  \"r\": ");
    LIT(num);
    LIT(",\n  \"rank_pattern\": {},\n  \"revision\": null,\n  \"target_modules\": [");
    for (size_t i = 0; i < n; i++) {
        LIT(i ? ",\n    " : "\n    ");
        STR(sites[i].name);
    }
    LIT(n ? "\n  ],\n  \"task_type\": " : "],\n  \"task_type\": ");
    if (o->task_type && *o->task_type) STR(o->task_type);
    else LIT("null");
    LIT(",\n  \"use_dora\": false,\n  \"use_rslora\": false\n}");
#undef LIT
#undef STR
    return len == SIZE_MAX ? NULL : b; /* NULL: out of memory part way (b already freed) */
}

int it_write_text(const char *path, const char *text, it_err *err)
{
    it__out out;
    int rc = it__out_open(&out, path, err);
    if (rc == IT_OK) rc = it__out_write(&out, text, strlen(text), err);
    if (rc == IT_OK) rc = it__out_commit(&out, err);
    else it__out_abort(&out);
    return rc;
}

static int write_lora(const char *dir, const it_merged_site *sites, size_t n, const it_lora_out_opts *o, double *energy,
                      int64_t *rank_out, it_err *err)
{
    factors *f = it__calloc(n ? n : 1, sizeof *f);
    if (!f) return it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    int64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        f[i].rank = site_rank(&sites[i], o->rank);
        if (f[i].rank > r) r = f[i].rank;
    }
    int rc = IT_OK;
    for (size_t i = 0; rc == IT_OK && i < n; i++) rc = make_factors(&sites[i], o->with_pretrain, r, o->seed, &f[i], err);
    /* tensors: A and B per site, in the PEFT key layout; metadata: rank and energy per site */
    size_t nt = 2 * n, nmeta = 1 + 2 * n;
    it_tensor *t = it__calloc(nt ? nt : 1, sizeof *t);
    uint64_t *shapes = it__calloc(8 * (n ? n : 1), sizeof *shapes);
    char **names = it__calloc(nt ? nt : 1, sizeof *names);
    char **mk = it__calloc(nmeta, sizeof *mk), **mv = it__calloc(nmeta, sizeof *mv);
    unsigned char **bytes = it__calloc(nt ? nt : 1, sizeof *bytes);
    if (rc == IT_OK && (!t || !shapes || !names || !mk || !mv || !bytes))
        rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    for (size_t i = 0; rc == IT_OK && i < n; i++) {
        const it_merged_site *s = &sites[i];
        int emb = s->kind == IT_LORA_EMBEDDING, conv = s->kind == IT_LORA_CONV1X1;
        const char *suffix[2] = {emb ? "lora_embedding_A" : "lora_A.weight", emb ? "lora_embedding_B" : "lora_B.weight"};
        const float *src[2] = {f[i].A, f[i].B};
        uint64_t dims[2][2] = {{(uint64_t)r, (uint64_t)s->d_in}, {(uint64_t)s->d_out, (uint64_t)r}};
        for (int k = 0; k < 2 && rc == IT_OK; k++) {
            size_t idx = 2 * i + (size_t)k, len = (size_t)(dims[k][0] * dims[k][1]);
            size_t nl = strlen(s->name) + strlen(suffix[k]) + 20;
            names[idx] = malloc(nl);
            bytes[idx] = it__malloc_n(len ? len : 1, 4);
            if (!names[idx] || !bytes[idx]) {
                rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
                break;
            }
            snprintf(names[idx], nl, "%s%s.%s", o->diffusers ? "" : "base_model.model.", s->name, suffix[k]);
            for (size_t e = 0; e < len; e++) put_f32(bytes[idx] + 4 * e, src[k][e]);
            uint64_t *sh = shapes + 8 * i + 4 * (size_t)k;
            sh[0] = dims[k][0], sh[1] = dims[k][1], sh[2] = sh[3] = 1;
            t[idx] = (it_tensor){names[idx], IT_F32, conv ? 4 : 2, sh, len, 4 * len, bytes[idx], 0, 0};
        }
        if (rc != IT_OK) break;
        size_t kl = strlen(s->name) + 32;
        mk[1 + 2 * i] = malloc(kl), mk[2 + 2 * i] = malloc(kl);
        mv[1 + 2 * i] = malloc(32), mv[2 + 2 * i] = malloc(32);
        if (!mk[1 + 2 * i] || !mk[2 + 2 * i] || !mv[1 + 2 * i] || !mv[2 + 2 * i]) {
            rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
            break;
        }
        snprintf(mk[1 + 2 * i], kl, "iteris.energy.%s", s->name);
        snprintf(mv[1 + 2 * i], 32, "%.9f", f[i].energy);
        snprintf(mk[2 + 2 * i], kl, "iteris.rank.%s", s->name);
        snprintf(mv[2 + 2 * i], 32, "%lld", (long long)f[i].rank);
        if (energy) energy[i] = f[i].energy;
    }
    if (rc == IT_OK) {
        mk[0] = it__strdup("format"), mv[0] = it__strdup("pt");
        if (!mk[0] || !mv[0]) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    }
    char *cfg = rc == IT_OK && !o->diffusers ? lora_config_json(sites, n, r, o) : NULL;
    if (rc == IT_OK && !o->diffusers && !cfg) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    char *p_model = it__path_join(dir, o->diffusers ? "pytorch_lora_weights.safetensors" : "adapter_model.safetensors");
    char *p_cfg = it__path_join(dir, "adapter_config.json");
    if (rc == IT_OK && (!p_model || !p_cfg)) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    if (rc == IT_OK) rc = it_make_dir(dir, err);
    if (rc == IT_OK)
        rc = it_st_save(p_model, t, nt, (const char *const *)mk, (const char *const *)mv, nmeta, err);
    if (rc == IT_OK && cfg) rc = it_write_text(p_cfg, cfg, err);
    if (rank_out) *rank_out = r;
    for (size_t i = 0; i < n; i++) free(f[i].A), free(f[i].B);
    for (size_t i = 0; i < nt && names; i++) free(names[i]);
    for (size_t i = 0; i < nt && bytes; i++) free(bytes[i]);
    for (size_t i = 0; i < nmeta && mk; i++) free(mk[i]);
    for (size_t i = 0; i < nmeta && mv; i++) free(mv[i]);
    free(f), free(t), free(shapes), free(names), free(mk), free(mv), free(bytes), free(cfg), free(p_model), free(p_cfg);
    return rc;
}

/* ============================================================================================ */
/* model                                                                                         */
/* ============================================================================================ */

static int cmp_site_name(const void *a, const void *b)
{
    return strcmp(((const it_merged_site *)a)->name, ((const it_merged_site *)b)->name);
}

/* The site whose weight tensor is name ("<site>.weight"), or NULL; sites sorted by name. */
static const it_merged_site *site_of_tensor(const it_merged_site *sorted, size_t n, const char *name)
{
    size_t len = strlen(name);
    if (len <= 7 || strcmp(name + len - 7, ".weight")) return NULL;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strncmp(sorted[mid].name, name, len - 7);
        if (c == 0 && sorted[mid].name[len - 7]) c = 1;
        if (c == 0) return &sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* The new value of a site's base tensor t (W0 + W*, or W* with with_pretrain), in t's dtype. */
static int merged_tensor(const it_tensor *t, const it_merged_site *s, int with_pretrain, unsigned char **out,
                         it_err *err)
{
    size_t m = (size_t)s->d_out, n = (size_t)s->d_in;
    if (t->numel != (uint64_t)m * n || t->ndim < 2 ||
        (s->kind != IT_LORA_CONV1X1 && t->ndim != 2) ||
        (t->ndim == 2 && (t->shape[0] != (s->transposed ? n : m) || t->shape[1] != (s->transposed ? m : n))))
        return it__fail(err, IT_EFORMAT, "%s: shape does not match the merged site [%zu x %zu]%s", t->name, m, n,
                        s->transposed ? " (transposed)" : "");
    float *w = it__malloc_n(m * n, sizeof *w);
    unsigned char *b = it__malloc_n(t->nbytes ? t->nbytes : 1, 1);
    int rc = w && b ? it_tensor_to_f32(t, w, err) : it__fail(err, IT_ENOMEM, "%s: out of memory", t->name);
    for (size_t i = 0; rc == IT_OK && i < m; i++)
        for (size_t j = 0; j < n; j++) {
            size_t at = s->transposed ? j * m + i : i * n + j;
            double v = s->w[i * n + j] + (with_pretrain ? 0.0 : (double)w[at]);
            w[at] = (float)v;
        }
    if (rc == IT_OK && t->dtype == IT_F64) { /* keep the precision of an f64 checkpoint */
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                size_t at = s->transposed ? j * m + i : i * n + j;
                double base = 0.0;
                if (!with_pretrain) {
                    uint64_t u = it__le64((const unsigned char *)t->data + 8 * at);
                    memcpy(&base, &u, 8);
                }
                double v = s->w[i * n + j] + base;
                uint64_t u;
                memcpy(&u, &v, 8);
                it__put_le64(b + 8 * at, u);
            }
    } else if (rc == IT_OK) {
        rc = it_f32_encode(b, t->dtype, w, m * n, err);
        if (rc != IT_OK) it__err_prefix(err, t->name);
    }
    free(w);
    if (rc != IT_OK) {
        free(b);
        return rc;
    }
    *out = b;
    return IT_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Pickled weight files (pytorch_model.bin, *.pt, ...), which a loader could pick instead of ours. */
static int pickle_name(const char *name)
{
    return ends_with(name, ".bin") || ends_with(name, ".pt") || ends_with(name, ".pth") || ends_with(name, ".ckpt");
}

/* Rewrites one safetensors file of the base with the merged sites it holds; *used counts them. */
static int write_model_file(const char *src, const char *dst, const it_merged_site *sorted, size_t n,
                            int with_pretrain, unsigned char *used, it_err *err)
{
    it_st *st = NULL;
    int rc = it_st_open(&st, src, err);
    if (rc != IT_OK) return rc;
    if (!dst) { /* the first pass only marks the sites this file holds */
        for (size_t i = 0; i < it_st_count(st); i++) {
            const it_merged_site *s = site_of_tensor(sorted, n, it_st_tensor(st, i)->name);
            if (s) used[s - sorted] = 1;
        }
        it_st_close(st);
        return IT_OK;
    }
    size_t nt = it_st_count(st), nmeta = it_st_meta_count(st);
    it_tensor *t = it__calloc(nt ? nt : 1, sizeof *t);
    unsigned char **own = it__calloc(nt ? nt : 1, sizeof *own);
    const char **mk = it__calloc(nmeta ? nmeta : 1, sizeof *mk), **mv = it__calloc(nmeta ? nmeta : 1, sizeof *mv);
    if (!t || !own || !mk || !mv) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dst);
    for (size_t i = 0; rc == IT_OK && i < nt; i++) {
        t[i] = *it_st_tensor(st, i);
        const it_merged_site *s = site_of_tensor(sorted, n, t[i].name);
        if (!s) continue;
        rc = merged_tensor(&t[i], s, with_pretrain, &own[i], err);
        if (rc != IT_OK) {
            it__err_prefix(err, src);
            break;
        }
        t[i].data = own[i];
        used[s - sorted] = 1;
    }
    for (size_t i = 0; rc == IT_OK && i < nmeta; i++) it_st_meta_at(st, i, &mk[i], &mv[i]);
    if (rc == IT_OK) rc = it_st_save(dst, t, nt, it_st_has_meta(st) ? mk : NULL, mv, nmeta, err);
    for (size_t i = 0; own && i < nt; i++) free(own[i]);
    free(t), free(own), free(mk), free(mv);
    it_st_close(st);
    return rc;
}

static int copy_file(const char *src, const char *dst, it_err *err)
{
    char *data = NULL;
    size_t len = 0;
    /* no limit but the address space (1 << 40 would not fit a 32-bit size_t); - 1 for the NUL */
    int rc = it__read_file(src, SIZE_MAX - 1, &data, &len, err);
    if (rc != IT_OK) return rc;
    it__out out;
    rc = it__out_open(&out, dst, err);
    if (rc == IT_OK) rc = it__out_write(&out, data, len, err);
    if (rc == IT_OK) rc = it__out_commit(&out, err);
    else it__out_abort(&out);
    free(data);
    return rc;
}

static int write_model(const char *dir, const char *base_dir, const it_merged_site *sites, size_t n, int with_pretrain,
                       it_err *err)
{
    it_merged_site *sorted = it__malloc_n(n ? n : 1, sizeof *sorted);
    unsigned char *used = it__calloc(n ? n : 1, 1);
    if (!sorted || !used) {
        free(sorted), free(used);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    }
    if (n) memcpy(sorted, sites, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_site_name);
    int rc = IT_OK;
    DIR *d = opendir(base_dir);
    if (!d) rc = it__fail(err, IT_EIO, "%s: cannot read the folder: %s", base_dir, strerror(errno));
    /* the file names first, sorted, so the order of work (and of messages) is reproducible */
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *e;
    while (rc == IT_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (nn == cap) {
            char **nb = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *nb);
            if (!nb) {
                rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
                break;
            }
            names = nb;
        }
        if (!(names[nn] = it__strdup(e->d_name))) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
        else nn++;
    }
    if (d) closedir(d);
    for (size_t i = 0; rc == IT_OK && i + 1 < nn; i++) /* insertion sort: folders hold few files */
        for (size_t j = i + 1; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *tmp = names[j];
            names[j] = names[j - 1], names[j - 1] = tmp;
        }
    /* two passes: check that every site has its tensor before writing anything, then write */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; rc == IT_OK && i < nn; i++) {
            char *src = it__path_join(base_dir, names[i]), *dst = it__path_join(dir, names[i]);
            if (!src || !dst) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
            else if (it__is_dir(src) || pickle_name(names[i])) {
                /* subfolders are not part of a checkpoint; pickled weights would hold W0 unmerged */
            } else if (ends_with(names[i], ".safetensors"))
                rc = write_model_file(src, pass ? dst : NULL, sorted, n, with_pretrain, used, err);
            else if (pass)
                rc = copy_file(src, dst, err);
            free(src), free(dst);
        }
        for (size_t i = 0; rc == IT_OK && pass == 0 && i < n; i++)
            if (!used[i])
                rc = it__fail(err, IT_ENOTFOUND, "%s: no tensor %s.weight for the merged site", base_dir,
                              sorted[i].name);
        if (rc == IT_OK && pass == 0) rc = it_make_dir(dir, err);
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names), free(sorted), free(used);
    return rc;
}

/* ============================================================================================ */
/* The multi-file formats, each one output set                                                   */
/* ============================================================================================ */

/* Ends the set begun for one output: commits it when rc is IT_OK, else removes what it wrote. */
static int end_set(int rc, it_err *err)
{
    if (rc == IT_OK) return it_out_end(1, err);
    it_out_end(0, NULL);
    return rc;
}

int it_write_lora(const char *dir, const it_merged_site *sites, size_t n, const it_lora_out_opts *o, double *energy,
                  int64_t *rank_out, it_err *err)
{
    it_out_begin();
    return end_set(write_lora(dir, sites, n, o, energy, rank_out, err), err);
}

int it_write_model(const char *dir, const char *base_dir, const it_merged_site *sites, size_t n, int with_pretrain,
                   it_err *err)
{
    it_out_begin();
    return end_set(write_model(dir, base_dir, sites, n, with_pretrain, err), err);
}
