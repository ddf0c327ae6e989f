/* test/fuzz.c -- a fuzz target for the safetensors reader, the JSON parser, the JSON Lines sample
 * reader and the PPM/PGM decoder.
 *
 * LLVMFuzzerTestOneInput opens the bytes with it_st_open_mem and, when they are accepted, walks
 * every tensor (bounds, sizes, names, a bounded float32 conversion) and the metadata; it also parses
 * the same bytes with it_json_parse, with and without IT_JSON_NODUP, and walks both trees; reads
 * them as a samples file (it_samples_parse) and decodes them as an image (it_image_decode_pnm). Beyond
 * "no crash, no leak, no hang" it checks the promises of iteris.h that hold for any input (a
 * refusal is a one-line "<name>: ... (<Reason>)"; views lie inside the buffer; NODUP refuses
 * exactly the texts with a repeated key; ...). A broken promise aborts in a fuzz build and fails
 * the suite in the test build.
 *
 * Three builds:
 *   (no macro)           in run_tests: LLVMFuzzerTestOneInput and suite_fuzz, which replays
 *                        test/corpus/ and runs a short seeded mutation loop over it;
 *   -DIT_FUZZ_LIBFUZZER  LLVMFuzzerTestOneInput alone; libFuzzer supplies main (`make fuzz`):
 *                            build/fuzz/fuzz_iteris -max_total_time=60 /tmp/fz test/corpus
 *   -DIT_FUZZ_MAIN       LLVMFuzzerTestOneInput and a main that replays the files and folders named
 *                        on its command line (for a crash found elsewhere, or a build without
 *                        libFuzzer):
 *                            make fuzz-replay && build/fuzz/fuzz_replay test/corpus
 */
#include "iteris.h"

#if !defined(IT_FUZZ_LIBFUZZER) && !defined(IT_FUZZ_MAIN)
#define IT_FUZZ_SUITE 1
#include "test.h"
#endif

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz"        /* the file name given to it_st_open_mem */
#define FUZZ_MAX_CONVERT 64     /* elements converted to float32 per tensor */
#define FUZZ_MAX_KEYS_CHECKED 256 /* objects with more members skip the quadratic key checks */

/* ============================================================================================ */
/* Broken promises                                                                               */
/* ============================================================================================ */

#ifdef IT_FUZZ_SUITE
static unsigned long fuzz_broken;   /* promises broken since the last reset */
static char fuzz_first_broken[256]; /* the first of them */
static unsigned long fuzz_st_ok, fuzz_json_ok; /* inputs accepted by the reader / the parser */
static unsigned long fuzz_reason[10];          /* refusals by reason (the order of reasons[]) */
#endif

/* A promise of the library did not hold: a crash in a fuzz build (so that libFuzzer keeps the
 * input), a failure of the suite in the test build. */
static void broken(const char *what, int line)
{
#ifdef IT_FUZZ_SUITE
    if (!fuzz_broken++) snprintf(fuzz_first_broken, sizeof fuzz_first_broken, "test/fuzz.c:%d: %s", line, what);
#else
    fprintf(stderr, "test/fuzz.c:%d: promise broken: %s\n", line, what);
    abort();
#endif
}
#define PROMISE(c)                                                                                 \
    do {                                                                                           \
        if (!(c)) broken(#c, __LINE__);                                                            \
    } while (0)

/* ============================================================================================ */
/* The safetensors reader                                                                        */
/* ============================================================================================ */

/* A failed open: IT_EFORMAT (or IT_ENOMEM), with a one-line message "fuzz: ... (<Reason>)". */
static void check_refusal(int rc, const it_st *st, const it_err *err)
{
    static const char *const reasons[] = {"(HeaderTooSmall)", "(HeaderTooLarge)", "(InvalidHeaderLength)", "(InvalidHeader)",
                                          "(InvalidHeaderDeserialization)", "(InvalidOffset)", "(ValidationOverflow)",
                                          "(MisalignedSlice)", "(TensorInvalidInfo)", "(MetadataIncompleteBuffer)"};
    PROMISE(st == NULL && err->code == rc);
    if (rc == IT_ENOMEM) return;
    PROMISE(rc == IT_EFORMAT);
    PROMISE(strncmp(err->msg, FUZZ_NAME ": ", strlen(FUZZ_NAME) + 2) == 0);
    PROMISE(strlen(err->msg) < IT_ERR_MAX && !strpbrk(err->msg, "\r\n"));
    int named = 0;
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++) {
        if (!strstr(err->msg, reasons[i])) continue;
        named = 1;
#ifdef IT_FUZZ_SUITE
        fuzz_reason[i]++;
#endif
    }
    PROMISE(named);
}

/* Is the dtype one that it_tensor_to_f32 converts? */
static int converts(it_dtype d)
{
    return d != IT_C64 && d != IT_F4 && d != IT_F6_E2M3 && d != IT_F6_E3M2;
}

/* One tensor: its fields agree with each other, its bytes lie inside the input, and its first
 * elements convert. */
static void walk_tensor(const it_st *st, const it_tensor *t, const uint8_t *data, size_t size)
{
    PROMISE(t->name && (unsigned)t->dtype < IT_DTYPE_COUNT && t->file == 0);
    PROMISE(it_st_find(st, t->name) == t);
    uint64_t numel = 1;
    for (size_t d = 0; d < t->ndim; d++) numel = t->shape[d] && numel > UINT64_MAX / t->shape[d] ? 0 : numel * t->shape[d];
    uint64_t bits = (uint64_t)it_dtype_bits(t->dtype);
    PROMISE(numel == t->numel && numel <= UINT64_MAX / bits && numel * bits % 8 == 0 && t->nbytes == numel * bits / 8);
    const uint8_t *p = (const uint8_t *)t->data;
    PROMISE(p >= data && (size_t)(p - data) <= size && t->nbytes <= size - (size_t)(p - data));
    uint64_t hlen = 0; /* the data starts at 8 + N + begin */
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
    PROMISE(hlen <= size - 8 && t->begin <= size - 8 - hlen && p == data + 8 + hlen + t->begin);
    if (t->nbytes) {
        volatile uint8_t touch = p[0] ^ p[t->nbytes - 1];
        (void)touch;
    }
    it_tensor few = *t; /* the first elements only, so that a huge tensor stays quick */
    if (few.numel > FUZZ_MAX_CONVERT) few.numel = FUZZ_MAX_CONVERT;
    few.nbytes = (size_t)(few.numel * bits / 8);
    float out[FUZZ_MAX_CONVERT];
    it_err err;
    int rc = it_tensor_to_f32(&few, out, &err);
    PROMISE(converts(t->dtype) ? rc == IT_OK : rc == IT_EUNSUPPORTED && err.code == rc);
}

/* The metadata: pairs of strings, each found again by its key. */
static void walk_meta(const it_st *st)
{
    size_t n = it_st_meta_count(st);
    PROMISE(it_st_has_meta(st) || n == 0);
    for (size_t i = 0; i < n; i++) {
        const char *k = NULL, *v = NULL;
        it_st_meta_at(st, i, &k, &v);
        PROMISE(k && v);
        if (k && v) PROMISE(it_st_meta_get(st, k) == v && strlen(v) < SIZE_MAX);
    }
}

static void fuzz_safetensors(const uint8_t *data, size_t size)
{
    it_st *st = NULL;
    it_err err;
    memset(&err, 0, sizeof err);
    int rc = it_st_open_mem(&st, data, size, FUZZ_NAME, &err);
    if (rc != IT_OK) {
        check_refusal(rc, st, &err);
        return;
    }
#ifdef IT_FUZZ_SUITE
    fuzz_st_ok++;
#endif
    size_t n = it_st_count(st);
    PROMISE(st && size >= 8 && it_st_file_count(st) == 1 && it_st_tensor(st, n) == NULL);
    for (size_t i = 0; i < n; i++) {
        const it_tensor *t = it_st_tensor(st, i);
        PROMISE(t != NULL);
        if (!t) break;
        if (i) PROMISE(strcmp(it_st_tensor(st, i - 1)->name, t->name) < 0); /* sorted, unique */
        walk_tensor(st, t, data, size);
    }
    walk_meta(st);
    it_st_close(st);
}

/* ============================================================================================ */
/* The JSON parser                                                                               */
/* ============================================================================================ */

/* The first member of obj whose key equals member i's key, by bytes. */
static size_t first_with_key(const it_json *obj, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (obj->keylens[j] == obj->keylens[i] && memcmp(obj->keys[j], obj->keys[i], obj->keylens[i]) == 0) return j;
    return i;
}

/* An object's members: keys NUL-terminated, positioned at a quote, ndup counted right, and
 * it_json_get finding the first member of each key. */
static void walk_keys(const it_json *v, const uint8_t *text, size_t size)
{
    size_t dups = 0;
    for (size_t i = 0; i < v->n; i++) {
        PROMISE(v->keys[i] && v->keys[i][v->keylens[i]] == 0 && v->keypos[i] < size && text[v->keypos[i]] == '"');
        PROMISE(v->keypos[i] > v->pos && v->items[i].pos > v->keypos[i]);
        if (v->n > FUZZ_MAX_KEYS_CHECKED) continue;
        size_t j = first_with_key(v, i);
        dups += j != i;
        if (strlen(v->keys[i]) == v->keylens[i]) PROMISE(it_json_get(v, v->keys[i]) == &v->items[j]);
    }
    if (v->n <= FUZZ_MAX_KEYS_CHECKED) PROMISE(v->ndup == dups);
}

/* Walks a tree, checking what iteris.h promises of each node; returns the number of repeated keys. */
static size_t walk_json(const it_json *v, const uint8_t *text, size_t size, int depth)
{
    size_t dups = 0;
    PROMISE(v->pos < size && it_json_type_name(v->type) != NULL);
    switch (v->type) {
    case IT_JSON_NULL: PROMISE(text[v->pos] == 'n'); break;
    case IT_JSON_FALSE: PROMISE(text[v->pos] == 'f'); break;
    case IT_JSON_TRUE: PROMISE(text[v->pos] == 't'); break;
    case IT_JSON_INT:
        PROMISE(v->i_ok || v->u_ok);
        if (v->i_ok && v->u_ok) PROMISE(v->i >= 0 && (uint64_t)v->i == v->u);
        if (v->i_ok) PROMISE((double)v->i == v->d);
        if (v->u_ok) PROMISE((double)v->u == v->d);
        break;
    case IT_JSON_NUM: PROMISE(text[v->pos] == '-' || (text[v->pos] >= '0' && text[v->pos] <= '9')); break;
    case IT_JSON_STR: PROMISE(text[v->pos] == '"' && v->s && v->s[v->len] == 0); break;
    case IT_JSON_ARR:
    case IT_JSON_OBJ:
        PROMISE(depth <= IT_JSON_MAX_DEPTH && text[v->pos] == (v->type == IT_JSON_ARR ? '[' : '{'));
        PROMISE(v->n == 0 || v->items);
        if (v->type == IT_JSON_OBJ) {
            walk_keys(v, text, size);
            dups += v->ndup;
        }
        for (size_t i = 0; i < v->n; i++) dups += walk_json(&v->items[i], text, size, depth + 1);
        break;
    default: PROMISE(!"a node of an unknown type");
    }
    return dups;
}

/* A JSON error: the same code in err, and a message "at byte N: ..." with N inside the text. */
static void check_json_error(int rc, const it_err *err, size_t size)
{
    PROMISE(err->code == rc && rc != IT_OK);
    if (rc == IT_ENOMEM) return;
    PROMISE(rc == IT_EFORMAT && strncmp(err->msg, "at byte ", 8) == 0 && !strpbrk(err->msg, "\r\n"));
    PROMISE(strtoull(err->msg + 8, NULL, 10) <= size);
}

/* Parses the text without and with IT_JSON_NODUP: NODUP refuses exactly the texts that parse
 * with a repeated key. */
static void fuzz_json(const uint8_t *data, size_t size)
{
    it_json_doc *plain = NULL, *nodup = NULL;
    it_err e0, e1;
    memset(&e0, 0, sizeof e0);
    memset(&e1, 0, sizeof e1);
    int r0 = it_json_parse(&plain, data, size, 0, &e0);
    int r1 = it_json_parse(&nodup, data, size, IT_JSON_NODUP, &e1);
    size_t d0 = 0, d1 = 0;
    if (r0 == IT_OK) d0 = walk_json(it_json_root(plain), data, size, 1);
    else check_json_error(r0, &e0, size);
    if (r1 == IT_OK) d1 = walk_json(it_json_root(nodup), data, size, 1);
    else check_json_error(r1, &e1, size);
    if (r0 != IT_ENOMEM && r1 != IT_ENOMEM) {
        PROMISE(r1 != IT_OK || (r0 == IT_OK && d0 == 0 && d1 == 0));
        PROMISE(r0 == IT_OK || r1 != IT_OK);
        PROMISE(r0 != IT_OK || r1 == IT_OK || d0 > 0);
    }
#ifdef IT_FUZZ_SUITE
    fuzz_json_ok += r0 == IT_OK;
#endif
    it_json_free(plain);
    it_json_free(nodup);
}

/* ============================================================================================ */
/* The JSON Lines sample reader and the PPM/PGM decoder                                          */
/* ============================================================================================ */

/* Accepted: at least one sample, each with something to run; refused: nothing returned and a one-line
 * message naming the file. */
static void fuzz_samples(const uint8_t *data, size_t size)
{
    it_err err = {0};
    it_samples *ss = NULL;
    int rc = it_samples_parse(&ss, (const char *)data, size, FUZZ_NAME, &err);
    PROMISE(rc == IT_OK ? ss && ss->n > 0 : !ss && !strchr(err.msg, '\n') && !strncmp(err.msg, FUZZ_NAME ": ", strlen(FUZZ_NAME) + 2));
    for (size_t i = 0; rc == IT_OK && i < ss->n; i++) {
        const it_sample *s = &ss->s[i];
        PROMISE(s->ids || s->text || s->image || s->ref_pixels.file || s->ref_latents.file);
        PROMISE((s->ids != NULL) == (s->n > 0) && (s->dec_ids != NULL) == (s->ndec > 0));
    }
    it_samples_free(ss);
}

/* Accepted: an image of its stated size; refused: a one-line message naming the file. */
static void fuzz_image(const uint8_t *data, size_t size)
{
    it_err err = {0};
    uint8_t *rgb = NULL;
    size_t h = 0, w = 0;
    int grey = 0;
    int rc = it_image_decode_pnm(data, size, FUZZ_NAME, &rgb, &h, &w, &grey, &err);
    PROMISE(rc == IT_OK ? rgb && h > 0 && w > 0 : !strchr(err.msg, '\n') && !strncmp(err.msg, FUZZ_NAME ": ", strlen(FUZZ_NAME) + 2));
    if (rc == IT_OK) {
        unsigned sum = 0; /* every byte written: read them all (valgrind and MSan see it) */
        for (size_t i = 0; i < h * w * 3; i++) sum += rgb[i];
        PROMISE(sum <= 255u * h * w * 3);
    }
    free(rgb);
}

/* ============================================================================================ */
/* adapter_config.json and tokenizer.json                                                        */
/* ============================================================================================ */

/* A refusal of a reader that names FUZZ_NAME: one line, starting with the name. */
static int named_refusal(const it_err *err)
{
    return err->code != IT_OK && !strpbrk(err->msg, "\r\n") && strlen(err->msg) < IT_ERR_MAX &&
           !strncmp(err->msg, FUZZ_NAME ": ", strlen(FUZZ_NAME) + 2);
}

/* Module paths of the kinds PEFT matches target_modules, rank_pattern and layers_to_transform
 * against. */
static const char *const fuzz_modules[] = {
    "model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "encoder.block.1.layer.0.SelfAttention.q",
    "text_model.encoder.layers.2.self_attn.v_proj", "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_k",
    "lm_head", "q_proj", "", "model.layers.x.self_attn.q_proj", "h.3.attn.c_attn",
};

/* Parsed (plain and strict): a config whose fields agree with each other, every module answers the
 * target and rank questions (or refuses the pattern in one line), and the description is one line.
 * Refused: one line naming the file. A config the strict reading accepts, the plain one does too. */
static void fuzz_adapter_config(const uint8_t *data, size_t size)
{
    for (int strict = 0; strict < 2; strict++) {
        it_err err = {0};
        it_lora_config cfg;
        int rc = it_lora_config_parse(&cfg, FUZZ_NAME, (const char *)data, size, strict, &err);
        if (rc != IT_OK) {
            PROMISE(rc == err.code && named_refusal(&err));
            continue;
        }
        PROMISE(cfg.r > 0 && isfinite(cfg.lora_alpha));
        PROMISE((cfg.targets != NULL) == (cfg.ntargets > 0) && (cfg.layers_to_transform != NULL) == (cfg.nlayers > 0));
        for (size_t i = 0; i < cfg.ntargets; i++) PROMISE(cfg.targets[i] != NULL);
        for (size_t i = 0; i < cfg.nrank_pattern; i++) PROMISE(cfg.rank_pattern[i].key && cfg.rank_pattern[i].value > 0);
        char desc[512];
        it_lora_config_describe(&cfg, desc, sizeof desc);
        PROMISE(strlen(desc) < sizeof desc && !strpbrk(desc, "\r\n"));
        for (size_t m = 0; m < sizeof fuzz_modules / sizeof *fuzz_modules; m++) {
            int hit = -1;
            it_err e2 = {0};
            int rt = it_lora_targets(&cfg, fuzz_modules[m], &hit, &e2);
            PROMISE(rt == IT_OK ? hit == 0 || hit == 1 : rt == e2.code && !strpbrk(e2.msg, "\r\n"));
            int64_t r = 0;
            double alpha = 0, scale = 0;
            rt = it_lora_module_rank(&cfg, fuzz_modules[m], &r, &alpha, &scale, &e2);
            PROMISE(rt == IT_OK ? r > 0 && isfinite(alpha) && isfinite(scale) : rt == e2.code && !strpbrk(e2.msg, "\r\n"));
        }
        it_lora_config_free(&cfg);
        if (!strict) continue;
        it_lora_config plain; /* what the strict reading accepts, the plain one does too */
        PROMISE(it_lora_config_parse(&plain, FUZZ_NAME, (const char *)data, size, 0, &err) == IT_OK);
        it_lora_config_free(&plain);
    }
}

/* Texts every tokenizer meets: ASCII, accents and CJK, emoji, digits, whitespace runs, special-token
 * look-alikes. */
static const char *const fuzz_texts[] = {
    "Hello world", " leading and  double  spaces\n\ttabs", "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
    "\xf0\x9f\x98\x80 12345 3.14", "<s></s><unk><|endoftext|><pad>", "",
};

/* Loaded: every text encodes to ids inside the vocabulary (with and without the special tokens),
 * and so does the input itself when it is valid UTF-8 (invalid: IT_EINVAL). Refused: one line
 * naming the file. */
static void fuzz_tokenizer(const uint8_t *data, size_t size)
{
    it_err err = {0};
    it_tokenizer *t = NULL;
    int rc = it_tokenizer_parse(&t, FUZZ_NAME, (const char *)data, size, &err);
    if (rc != IT_OK) {
        PROMISE(!t && rc == err.code && named_refusal(&err));
        return;
    }
    PROMISE(t != NULL);
    size_t ntexts = sizeof fuzz_texts / sizeof *fuzz_texts;
    for (size_t i = 0; i <= ntexts; i++) {
        const char *text = i < ntexts ? fuzz_texts[i] : (const char *)data;
        size_t len = i < ntexts ? strlen(text) : size < 256 ? size : 256;
        for (int special = 0; special < 2; special++) {
            int32_t *ids = NULL;
            size_t n = 0;
            it_err e2 = {0};
            int re = it_tokenizer_encode(t, text, len, special, &ids, &n, &e2);
            if (re == IT_OK) {
                PROMISE((ids != NULL) == (n > 0));
                for (size_t k = 0; k < n; k++) PROMISE(ids[k] >= 0);
            } else {
                /* only invalid UTF-8 (the input's first bytes), a vocabulary without the text's
                 * pieces or unknown token, or memory */
                PROMISE(re == e2.code && !strpbrk(e2.msg, "\r\n") && !strncmp(e2.msg, FUZZ_NAME ": ", strlen(FUZZ_NAME) + 2));
            }
            free(ids);
        }
    }
    it_tokenizer_free(t);
}

/* ============================================================================================ */
/* The targets                                                                                   */
/* ============================================================================================ */

/* Each reader is a target of its own (`make fuzz` builds build/fuzz/fuzz_<name> with
 * -DIT_FUZZ_ONLY='"<name>"') with its own corpus folder, test/corpus/<name>; the suite and the replay
 * main put every input through all of them. */
static const struct {
    const char *name;
    void (*run)(const uint8_t *, size_t);
} fuzz_targets[] = {
    {"safetensors", fuzz_safetensors}, {"json", fuzz_json},       {"adapter_config", fuzz_adapter_config},
    {"tokenizer", fuzz_tokenizer},     {"samples", fuzz_samples}, {"image", fuzz_image},
};
#define FUZZ_NTARGETS (sizeof fuzz_targets / sizeof *fuzz_targets)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef IT_FUZZ_ONLY
    static size_t only = FUZZ_NTARGETS;
    for (size_t i = 0; only == FUZZ_NTARGETS && i < FUZZ_NTARGETS; i++)
        if (!strcmp(fuzz_targets[i].name, IT_FUZZ_ONLY)) only = i;
    if (only == FUZZ_NTARGETS) abort(); /* a name the table does not hold */
    fuzz_targets[only].run(data, size);
#else
    for (size_t i = 0; i < FUZZ_NTARGETS; i++) fuzz_targets[i].run(data, size);
#endif
    return 0;
}

/* ============================================================================================ */
/* Inputs from files (the test suite and the replay main)                                        */
/* ============================================================================================ */

#ifndef IT_FUZZ_LIBFUZZER

#define FUZZ_MAX_FILE (64u << 20)

/* A whole file, malloc'd (at least 1 byte allocated); NULL if it cannot be read. */
static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap && cap < FUZZ_MAX_FILE) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        } else if (n == cap) {
            break;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the regular files in dir and, one level deeper, in its subfolders (the corpus of each
 * target) to *v as malloc'd "dir/name" paths; the new count, or -1 if dir cannot be listed. */
static long add_files(const char *dir, int depth, char ***v, long n)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        struct stat st;
        if (!p) break;
        snprintf(p, len, "%s/%s", dir, e->d_name);
        int sub = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
        char **nv = !sub && S_ISREG(st.st_mode) ? realloc(*v, (size_t)(n + 1) * sizeof **v) : NULL;
        if (sub && depth < 1) {
            long m = add_files(p, depth + 1, v, n);
            if (m > 0) n = m;
        }
        if (!nv) {
            free(p);
            continue;
        }
        *v = nv;
        (*v)[n++] = p;
    }
    closedir(d);
    return n;
}

/* The regular files in dir and its subfolders, sorted by path; the count, or -1 if dir cannot be
 * listed. */
static long list_files(const char *dir, char ***out)
{
    char **v = NULL;
    long n = add_files(dir, 0, &v, 0);
    if (n > 0) qsort(v, (size_t)n, sizeof *v, name_cmp);
    *out = v;
    return n < 0 ? -1 : n;
}

static void free_list(char **v, long n)
{
    for (long i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Runs one file through the target; 1 if it could be read. */
static int replay_file(const char *path)
{
    size_t len = 0;
    uint8_t *b = read_all(path, &len);
    if (!b) return 0;
    LLVMFuzzerTestOneInput(b, len);
    free(b);
    return 1;
}

#endif /* !IT_FUZZ_LIBFUZZER */

/* ============================================================================================ */
/* The test suite: the corpus, then seeded mutations of it                                       */
/* ============================================================================================ */

#ifdef IT_FUZZ_SUITE

#define CORPUS_DIR "test/corpus"
#define MUTATIONS 20000
#define MUT_CAP 16384
#define FUZZ_FAILURE "fuzz-failure.bin" /* in the working folder */ /* a mutated input never grows beyond this */

static void fuzz_reset(void)
{
    fuzz_broken = fuzz_st_ok = fuzz_json_ok = 0;
    fuzz_first_broken[0] = 0;
    memset(fuzz_reason, 0, sizeof fuzz_reason);
}

static void test_fuzz_corpus_replays(void)
{
    char **files = NULL;
    long n = list_files(CORPUS_DIR, &files);
    CHECKF(n >= 20, "%s: %ld seed files (run the tests from the repository root)", CORPUS_DIR, n);
    fuzz_reset();
    for (long i = 0; i < n; i++) {
        unsigned long before = fuzz_broken;
        CHECKF(replay_file(files[i]), "cannot read %s", files[i]);
        CHECKF(fuzz_broken == before, "%s: %s", files[i], fuzz_first_broken);
    }
    test_note("%ld seeds: %lu open as safetensors, %lu parse as JSON", n, fuzz_st_ok, fuzz_json_ok);
    CHECKF(fuzz_st_ok >= 5 && fuzz_json_ok >= 4, "the corpus should hold valid files: %lu safetensors, %lu JSON", fuzz_st_ok, fuzz_json_ok);
    free_list(files, n);
}

/* xorshift64: a fixed sequence, so that a failure repeats. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t below(uint64_t *s, size_t n)
{
    return n ? (size_t)(rnd(s) % n) : 0;
}

/* An input under mutation; keep_n keeps the size prefix in step with edits inside the header. */
typedef struct {
    uint8_t b[MUT_CAP];
    size_t len;
    int keep_n;
} mut;

static uint64_t prefix_n(const mut *m)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0 && m->len >= 8; i--) n = n << 8 | m->b[i];
    return n;
}

static void set_prefix_n(mut *m, uint64_t n)
{
    for (int i = 0; i < 8 && m->len >= 8; i++) m->b[i] = (uint8_t)(n >> (8 * i));
}

/* Does an edit at pos fall inside a header that the prefix describes? */
static int in_header(const mut *m, size_t pos)
{
    uint64_t n = prefix_n(m);
    return m->keep_n && m->len >= 8 && n <= m->len - 8 && pos >= 8 && pos <= 8 + n;
}

static void insert(mut *m, size_t pos, const void *p, size_t k)
{
    if (k > MUT_CAP - m->len || pos > m->len) return;
    int hdr = in_header(m, pos);
    memmove(m->b + pos + k, m->b + pos, m->len - pos);
    memcpy(m->b + pos, p, k);
    m->len += k;
    if (hdr) set_prefix_n(m, prefix_n(m) + k);
}

static void erase(mut *m, size_t pos, size_t k)
{
    if (pos >= m->len) return;
    if (k > m->len - pos) k = m->len - pos;
    int hdr = in_header(m, pos) && pos + k <= 8 + prefix_n(m);
    memmove(m->b + pos, m->b + pos + k, m->len - pos - k);
    m->len -= k;
    if (hdr) set_prefix_n(m, prefix_n(m) - k);
}

/* Pieces of safetensors headers and JSON worth inserting. */
static const char *const tokens[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\ud83d\\ude00", "null", "true", "-", ".", "e", " ", "\t", "\n",
    "\"F32\"", "\"F4\"", "\"F6_E2M3\"", "\"C64\"", "\"BOOL\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
    "[0,0]", "[]", "{}", "\xff", "\xc3\xa9", "\xed\xa0\x80", "\xef\xbb\xbf", "[[[[[[[[", "]]]]]]]]",
};

/* Numbers worth putting where a number was. */
static const char *const numbers[] = {
    "0", "1", "2", "3", "4", "7", "8", "9", "12", "16", "-0", "-1", "1e1", "2.0", "255", "65536", "4294967296",
    "2305843009213693952", "4611686018427387904", "9223372036854775808", "18446744073709551615", "18446744073709551616",
};

static const char *pick(uint64_t *s, const char *const *v, size_t n)
{
    return v[below(s, n)];
}

/* Where to edit: mostly inside the header (when the prefix describes one), never in the prefix
 * itself while keep_n is set. */
static size_t site(const mut *m, uint64_t *s)
{
    uint64_t n = prefix_n(m);
    if (m->keep_n && m->len >= 8 && n <= m->len - 8 && below(s, 5)) return 8 + below(s, (size_t)n + 1);
    if (m->keep_n && m->len >= 8) return 8 + below(s, m->len - 7);
    return below(s, m->len + 1);
}

/* Replaces the first run of digits at or after pos with another number. */
static void renumber(mut *m, size_t pos, uint64_t *s)
{
    while (pos < m->len && !(m->b[pos] >= '0' && m->b[pos] <= '9')) pos++;
    size_t end = pos;
    while (end < m->len && m->b[end] >= '0' && m->b[end] <= '9') end++;
    if (end == pos) return;
    const char *t = pick(s, numbers, sizeof numbers / sizeof *numbers);
    erase(m, pos, end - pos);
    insert(m, pos, t, strlen(t));
}

/* One random edit. */
static void mutate_once(mut *m, uint64_t *s)
{
    size_t pos = site(m, s);
    uint8_t c = below(s, 4) ? (uint8_t)(0x20 + below(s, 0x5f)) : (uint8_t)rnd(s); /* mostly printable */
    switch (below(s, 10)) {
    case 0: if (pos < m->len) m->b[pos] ^= (uint8_t)(1u << below(s, 8)); break;
    case 1: if (pos < m->len) m->b[pos] = c; break;
    case 2: insert(m, pos, &c, 1); break;
    case 3: erase(m, pos, 1 + below(s, 4)); break;
    case 4: {
        const char *t = pick(s, tokens, sizeof tokens / sizeof *tokens);
        insert(m, pos, t, strlen(t));
        break;
    }
    case 5: case 6: renumber(m, pos, s); break;
    case 7: { /* duplicate a chunk */
        size_t from = below(s, m->len), k = 1 + below(s, 32);
        uint8_t tmp[32];
        if (k > m->len - from) k = m->len - from;
        memcpy(tmp, m->b + from, k);
        insert(m, pos, tmp, k);
        break;
    }
    case 8: if (m->len > 0 && !below(s, 4)) m->len = below(s, m->len); else erase(m, pos, 1 + below(s, 64)); break;
    default: if (!below(s, 3)) { /* a new size prefix near the old one, or anywhere */
        uint64_t n = prefix_n(m);
        uint64_t choices[] = {n + 1, n - 1, m->len - 8, rnd(s), 100000000u, 100000001u, UINT64_MAX, (uint64_t)below(s, 64)};
        set_prefix_n(m, choices[below(s, 8)]);
    }
        break;
    }
}

/* MUTATIONS inputs, each a seed with 1 to 4 random edits, through the target. */
static void test_fuzz_mutations(void)
{
    char **files = NULL;
    long n = list_files(CORPUS_DIR, &files);
    CHECK(n > 0);
    if (n <= 0) return;
    mut *m = malloc(sizeof *m);
    uint8_t **seed = calloc((size_t)n, sizeof *seed);
    size_t *seed_len = calloc((size_t)n, sizeof *seed_len);
    CHECK(m && seed && seed_len);
    for (long i = 0; seed && seed_len && i < n; i++) seed[i] = read_all(files[i], &seed_len[i]);
    fuzz_reset();
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (long it = 0; m && seed && seed_len && it < MUTATIONS && !fuzz_broken; it++) {
        long k = (long)below(&s, (size_t)n);
        m->len = seed[k] && seed_len[k] <= MUT_CAP ? seed_len[k] : 0;
        if (m->len) memcpy(m->b, seed[k], m->len);
        m->keep_n = below(&s, 4) != 0;
        for (size_t e = 1 + below(&s, 4); e > 0; e--) mutate_once(m, &s);
        LLVMFuzzerTestOneInput(m->b, m->len);
        if (fuzz_broken) { /* keep the input for build/fuzz/fuzz_replay or a debugger */
            FILE *f = fopen(FUZZ_FAILURE, "wb");
            if (f) fwrite(m->b, 1, m->len, f), fclose(f);
        }
        CHECKF(!fuzz_broken, "mutation %ld of %s (kept as " FUZZ_FAILURE "): %s", it, files[k], fuzz_first_broken);
    }
    test_note("%d mutations: %lu open as safetensors, %lu parse as JSON", MUTATIONS, fuzz_st_ok, fuzz_json_ok);
    for (int r = 0; r < 10; r++) test_note("refusal reason %d: %lu", r, fuzz_reason[r]);
    for (long i = 0; seed && i < n; i++) free(seed[i]);
    free(seed);
    free(seed_len);
    free(m);
    free_list(files, n);
}

/* A few inputs no corpus file is: nothing at all, a prefix alone, bytes of every value. */
static void test_fuzz_edge_inputs(void)
{
    uint8_t b[512] = {0};
    fuzz_reset();
    LLVMFuzzerTestOneInput(b, 0);
    memset(b, 0, 8);
    LLVMFuzzerTestOneInput(b, 8);
    memset(b, 0xff, sizeof b);
    LLVMFuzzerTestOneInput(b, sizeof b);
    for (int i = 0; i < 256; i++) b[8 + i] = (uint8_t)i;
    b[0] = 0, b[1] = 1; /* N = 256 */
    memset(b + 2, 0, 6);
    LLVMFuzzerTestOneInput(b, 8 + 256);
    memset(b, '[', sizeof b);
    LLVMFuzzerTestOneInput(b, sizeof b);
    CHECKF(!fuzz_broken, "%s", fuzz_first_broken);
}

void suite_fuzz(void)
{
    RUN(test_fuzz_edge_inputs);
    RUN(test_fuzz_corpus_replays);
    RUN(test_fuzz_mutations);
}

#endif /* IT_FUZZ_SUITE */

/* ============================================================================================ */
/* The replay main                                                                               */
/* ============================================================================================ */

#ifdef IT_FUZZ_MAIN

int main(int argc, char **argv)
{
    size_t ran = 0;
    for (int i = 1; i < argc; i++) {
        char **files = NULL;
        long n = list_files(argv[i], &files);
        if (n < 0) {
            if (replay_file(argv[i])) ran++;
            else fprintf(stderr, "%s: cannot read\n", argv[i]);
            continue;
        }
        for (long k = 0; k < n; k++) ran += (size_t)replay_file(files[k]);
        free_list(files, n);
    }
    printf("%zu inputs ran\n", ran);
    return 0;
}

#endif /* IT_FUZZ_MAIN */
