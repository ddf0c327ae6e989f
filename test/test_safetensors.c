/* test_safetensors.c -- reading and writing safetensors: bit-exact round trips of every dtype,
 * the reference writer's layout byte for byte (against files it wrote: the fixtures in data/),
 * JSON escaping as serde_json writes it, mmap and read() paths, atomic replacement, sharded sets. */
#include "test.h"

#include "iteris.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Every committed fixture written by the reference writer. */
static const char *const fixture_files[] = {
    "llama/base/model.safetensors", "llama/inputs.safetensors", "llama/expected.safetensors",
    "llama/adapters/lora_r4_a16_all/adapter_model.safetensors", "llama/adapters/lora_r4_a8_mlp/adapter_model.safetensors",
    "llama/adapters/lora_r8_a8_rslora_attn/adapter_model.safetensors", "qwen2/base/model.safetensors",
    "qwen2/adapters/lora_r4_a16_all/adapter_model.safetensors", "t5/base/model.safetensors", "t5/expected.safetensors",
    "t5/adapters/lora_r8_a8_rslora_attn/adapter_model.safetensors", "clip/base/model.safetensors",
    "clip/inputs.safetensors", "clip/adapters/lora_r4_a16_all/adapter_model.safetensors",
    "unet/base/diffusion_pytorch_model.safetensors", "unet/inputs.safetensors", "unet/expected.safetensors",
    "unet/adapters/lora_r8_a8_rslora_all/adapter_model.safetensors",
};

static uint32_t rng = 2463534242u;
static unsigned char next_byte(void)
{
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    return (unsigned char)(rng >> 24);
}

/* Saves the tensors of an open set again (same metadata) and compares with the original bytes. */
static int resave_identical(const it_st *st, const char *orig, const char *out)
{
    size_t n = it_st_count(st), nm = it_st_meta_count(st);
    it_tensor *t = malloc((n + 1) * sizeof *t);
    const char **mk = malloc((nm + 1) * sizeof *mk), **mv = malloc((nm + 1) * sizeof *mv);
    for (size_t i = 0; i < n; i++) t[i] = *it_st_tensor(st, i);
    for (size_t i = 0; i < nm; i++) it_st_meta_at(st, i, &mk[i], &mv[i]);
    it_err err;
    int rc = it_st_save(out, t, n, it_st_has_meta(st) ? mk : NULL, mv, nm, &err);
    CHECKF(rc == IT_OK, "save %s: %s", out, err.msg);
    size_t la = 0, lb = 0;
    unsigned char *a = test_read_file(orig, &la), *b = test_read_file(out, &lb);
    int same = a && b && la == lb && memcmp(a, b, la) == 0;
    free(a), free(b), free(t), free(mk), free(mv);
    return same;
}

/* Each fixture opens, and writing its tensors back reproduces the reference writer's file
 * byte for byte (header order, padding and data layout). */
static void fixtures_rewrite_byte_identical(void)
{
    for (size_t i = 0; i < sizeof fixture_files / sizeof *fixture_files; i++) {
        it_st *st;
        it_err err;
        const char *path = test_data(fixture_files[i]);
        if (it_st_open(&st, path, &err) != IT_OK) {
            CHECKF(0, "%s", err.msg);
            continue;
        }
        CHECKF(it_st_count(st) > 0 && !strcmp(it_st_meta_get(st, "format"), "pt"), "%s", path);
        CHECKF(resave_identical(st, path, test_tmppath("rewrite.safetensors")), "%s differs when rewritten", path);
        it_st_close(st);
    }
}

/* What the reference library lists for the Llama fixture (see data/llama/README.txt). */
static void fixture_llama_listing(void)
{
    it_st *st;
    it_err err;
    CHECK(it_st_open(&st, test_data("llama/base/model.safetensors"), &err) == IT_OK);
    CHECK(it_st_count(st) == 21 && it_st_file_count(st) == 1);
    const it_tensor *t = it_st_find(st, "lm_head.weight");
    CHECK(t && t->dtype == IT_F32 && t->ndim == 2 && t->shape[0] == 256 && t->shape[1] == 64 && t->nbytes == 65536);
    t = it_st_find(st, "model.layers.0.mlp.down_proj.weight");
    CHECK(t && t->shape[0] == 64 && t->shape[1] == 160 && t->numel == 10240);
    CHECK(it_st_find(st, "model.layers.2.mlp.down_proj.weight") == NULL);
    for (size_t i = 1; i < it_st_count(st); i++) CHECK(strcmp(it_st_tensor(st, i - 1)->name, it_st_tensor(st, i)->name) < 0);
    CHECK(it_st_has_meta(st) && it_st_meta_count(st) == 1);
    it_st_close(st);
}

/* The UNet weights are F16 on disk; values convert exactly. */
static void fixture_unet_f16(void)
{
    it_st *st;
    it_err err;
    CHECK(it_st_open(&st, test_data("unet/base/diffusion_pytorch_model.safetensors"), &err) == IT_OK);
    CHECK(it_st_count(st) == 208);
    const it_tensor *t = it_st_find(st, "conv_in.weight");
    CHECK(t && t->dtype == IT_F16 && t->ndim == 4 && t->numel == 32 * 4 * 3 * 3);
    float *f = malloc(t->numel * sizeof *f);
    CHECK(it_tensor_to_f32(t, f, &err) == IT_OK);
    const unsigned char *raw = t->data;
    int bad = 0;
    for (uint64_t i = 0; i < t->numel; i++) bad += f[i] != it_f16_to_f32((uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8));
    CHECK(bad == 0);
    free(f);
    it_st_close(st);
}

/* Random bytes of every dtype survive a save and a read bit for bit; a second save gives the
 * same file. */
static void roundtrip_every_dtype(void)
{
    it_tensor t[IT_DTYPE_COUNT];
    uint64_t shapes[IT_DTYPE_COUNT][3];
    unsigned char *data[IT_DTYPE_COUNT];
    char names[IT_DTYPE_COUNT][32];
    for (int d = 0; d < IT_DTYPE_COUNT; d++) {
        shapes[d][0] = 3, shapes[d][1] = 4, shapes[d][2] = (uint64_t)d + 1; /* 12 (d+1) elements: whole bytes for F4, F6 */
        uint64_t n = 12 * ((uint64_t)d + 1);
        size_t nb = (size_t)(n * (uint64_t)it_dtype_bits((it_dtype)d) / 8);
        data[d] = malloc(nb);
        for (size_t i = 0; i < nb; i++) data[d][i] = next_byte();
        snprintf(names[d], sizeof names[d], "t.%s", it_dtype_name((it_dtype)d));
        t[d] = (it_tensor){names[d], (it_dtype)d, 3, shapes[d], n, nb, data[d], 0, 0};
    }
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "round trip \"quoted\" \\ \xc3\xa9"};
    it_err err;
    const char *path = test_tmppath("all.safetensors");
    CHECKF(it_st_save(path, t, IT_DTYPE_COUNT, mk, mv, 2, &err) == IT_OK, "%s", err.msg);
    it_st *st;
    CHECKF(it_st_open(&st, path, &err) == IT_OK, "%s", err.msg);
    CHECK(it_st_count(st) == IT_DTYPE_COUNT);
    for (int d = 0; d < IT_DTYPE_COUNT; d++) {
        const it_tensor *r = it_st_find(st, names[d]);
        CHECKF(r && r->dtype == (it_dtype)d && r->ndim == 3 && r->shape[2] == (uint64_t)d + 1 && r->nbytes == t[d].nbytes &&
                   memcmp(r->data, data[d], r->nbytes) == 0, "dtype %s", it_dtype_name((it_dtype)d));
    }
    CHECK(!strcmp(it_st_meta_get(st, "note"), mv[1]));
    CHECK(resave_identical(st, path, test_tmppath("all2.safetensors")));
    it_st_close(st);
    for (int d = 0; d < IT_DTYPE_COUNT; d++) free(data[d]);
}

/* The header the reference writer produces for a known set, byte for byte: dtype descending by
 * enum order (I64 > F32 > BF16 > U8), then name; __metadata__ first; spaces to a multiple of 8. */
static void writer_layout_exact(void)
{
    uint64_t s1[] = {1}, s2[] = {2}, s0[] = {0};
    unsigned char buf[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    it_tensor t[] = {
        {"b", IT_F32, 1, s2, 2, 8, buf, 0, 0}, {"a", IT_F32, 1, s1, 1, 4, buf + 8, 0, 0},
        {"z", IT_U8, 1, s1, 1, 1, buf + 12, 0, 0}, {"c", IT_I64, 1, s1, 1, 8, buf, 0, 0},
        {"d", IT_BF16, 1, s1, 1, 2, buf + 13, 0, 0}, {"e", IT_F32, 1, s0, 0, 0, NULL, 0, 0},
        {"s", IT_F32, 0, NULL, 1, 4, buf + 4, 0, 0},
    };
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    it_err err;
    const char *path = test_tmppath("layout.safetensors");
    CHECKF(it_st_save(path, t, 7, mk, mv, 1, &err) == IT_OK, "%s", err.msg);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]},"
                       "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[20,20]},"
                       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[20,24]},"
                       "\"d\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[24,26]},"
                       "\"z\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[26,27]}}";
    size_t len, wl = strlen(want), padded = (wl + 7) / 8 * 8;
    unsigned char *f = test_read_file(path, &len);
    CHECK(f && len == 8 + padded + 27);
    CHECK(f && f[0] == (padded & 255) && f[1] == padded >> 8 && f[2] == 0 && f[7] == 0);
    CHECK(f && memcmp(f + 8, want, wl) == 0);
    for (size_t i = wl; f && i < padded; i++) CHECK(f[8 + i] == ' ');
    CHECK(f && memcmp(f + 8 + padded, buf, 8) == 0 && memcmp(f + 8 + padded + 8, buf + 8, 4) == 0);
    free(f);
}

/* No tensors: "{}" padded to 8; no metadata: no "__metadata__" key; empty metadata: "{}". */
static void writer_empty_and_metadata_forms(void)
{
    it_err err;
    size_t len;
    const char *p = test_tmppath("empty.safetensors");
    CHECK(it_st_save(p, NULL, 0, NULL, NULL, 0, &err) == IT_OK);
    unsigned char *f = test_read_file(p, &len);
    CHECK(f && len == 16 && f[0] == 8 && memcmp(f + 8, "{}      ", 8) == 0);
    free(f);
    const char *none[1] = {NULL};
    CHECK(it_st_save(p, NULL, 0, none, none, 0, &err) == IT_OK);
    f = test_read_file(p, &len);
    CHECK(f && len == 8 + 24 && memcmp(f + 8, "{\"__metadata__\":{}}     ", 24) == 0);
    free(f);
    it_st *st;
    CHECK(it_st_open(&st, p, &err) == IT_OK && it_st_has_meta(st) && it_st_meta_count(st) == 0 && it_st_count(st) == 0);
    it_st_close(st);
}

/* Names and metadata are escaped as serde_json does: \" \\ \n \t and \u00xx (lowercase) for
 * other control characters; DEL and non-ASCII are written as is. */
static void writer_escapes_like_serde(void)
{
    uint64_t s1[] = {1};
    unsigned char b[1] = {7};
    const char *name = "q\"\\\n\t\x01\x1f\x7f\xe2\x82\xac/";
    it_tensor t = {name, IT_U8, 1, s1, 1, 1, b, 0, 0};
    const char *mk[] = {"k\b\f\r"}, *mv[] = {"v"};
    it_err err;
    const char *p = test_tmppath("esc.safetensors");
    CHECK(it_st_save(p, &t, 1, mk, mv, 1, &err) == IT_OK);
    size_t len;
    unsigned char *f = test_read_file(p, &len);
    const char *want = "{\"__metadata__\":{\"k\\b\\f\\r\":\"v\"},\"q\\\"\\\\\\n\\t\\u0001\\u001f\x7f\xe2\x82\xac/\":";
    CHECK(f && memcmp(f + 8, want, strlen(want)) == 0);
    free(f);
    it_st *st;
    CHECK(it_st_open(&st, p, &err) == IT_OK && it_st_find(st, name) && it_st_meta_get(st, "k\b\f\r"));
    it_st_close(st);
}

static void writer_refuses_bad_tensors(void)
{
    uint64_t s2[] = {2};
    unsigned char b[8] = {0};
    it_err err;
    const char *p = test_tmppath("bad.safetensors");
    it_tensor dup[2] = {{"x", IT_F32, 1, s2, 2, 8, b, 0, 0}, {"x", IT_F16, 1, s2, 2, 4, b, 0, 0}};
    CHECK(it_st_save(p, dup, 2, NULL, NULL, 0, &err) == IT_EINVAL && strstr(err.msg, "twice"));
    it_tensor size = {"x", IT_F32, 1, s2, 2, 7, b, 0, 0};
    CHECK(it_st_save(p, &size, 1, NULL, NULL, 0, &err) == IT_EINVAL && strstr(err.msg, "needs 8"));
    it_tensor meta = {"__metadata__", IT_F32, 1, s2, 2, 8, b, 0, 0};
    CHECK(it_st_save(p, &meta, 1, NULL, NULL, 0, &err) == IT_EINVAL);
    it_tensor utf = {"bad\xff", IT_F32, 1, s2, 2, 8, b, 0, 0};
    CHECK(it_st_save(p, &utf, 1, NULL, NULL, 0, &err) == IT_EINVAL);
    it_tensor odd = {"f4", IT_F4, 1, (uint64_t[]){3}, 3, 1, b, 0, 0};
    CHECK(it_st_save(p, &odd, 1, NULL, NULL, 0, &err) == IT_EINVAL);
    CHECK(test_read_file(p, NULL) == NULL); /* nothing was written */
}

/* A failed save leaves the previous file untouched and no temporary file behind; a good save
 * replaces it. */
static void writer_is_atomic(void)
{
    uint64_t s1[] = {1};
    unsigned char b[4] = {1, 2, 3, 4};
    it_tensor good = {"x", IT_F32, 1, s1, 1, 4, b, 0, 0}, bad = {"x", IT_F32, 1, s1, 1, 3, b, 0, 0};
    it_err err;
    const char *p = test_tmppath("atomic.safetensors");
    CHECK(it_st_save(p, &good, 1, NULL, NULL, 0, &err) == IT_OK);
    size_t l1, l2;
    unsigned char *before = test_read_file(p, &l1);
    CHECK(it_st_save(p, &bad, 1, NULL, NULL, 0, &err) != IT_OK);
    unsigned char *after = test_read_file(p, &l2);
    CHECK(before && after && l1 == l2 && memcmp(before, after, l1) == 0);
    free(before), free(after);
    CHECK(it_st_save(test_tmppath("no/such/dir/x.safetensors"), &good, 1, NULL, NULL, 0, &err) == IT_EIO);
    CHECK(strstr(err.msg, "no/such/dir/x.safetensors") != NULL);
    DIR *d = opendir(test_tmpdir());
    struct dirent *e;
    int tmp_left = 0;
    while (d && (e = readdir(d)) != NULL) tmp_left += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    CHECK(tmp_left == 0);
}

/* The mmap path and the read() fallback see the same tensors. */
static void mmap_and_read_agree(void)
{
    it_st *a, *b;
    it_err err;
    const char *p = test_data("clip/inputs.safetensors");
    CHECK(it_st_open(&a, p, &err) == IT_OK);
    setenv("ITERIS_NO_MMAP", "1", 1);
    int rc = it_st_open(&b, p, &err);
    unsetenv("ITERIS_NO_MMAP");
    CHECK(rc == IT_OK && it_st_count(a) == it_st_count(b) && it_st_count(a) == 3);
    for (size_t i = 0; rc == IT_OK && i < it_st_count(a); i++) {
        const it_tensor *x = it_st_tensor(a, i), *y = it_st_tensor(b, i);
        CHECK(!strcmp(x->name, y->name) && x->nbytes == y->nbytes && memcmp(x->data, y->data, x->nbytes) == 0);
    }
    it_st_close(a);
    if (rc == IT_OK) it_st_close(b);
}

/* Two shards and an index open as one set, through the index and through the folder. */
static void sharded_set(void)
{
    uint64_t s2[] = {2};
    unsigned char b[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    it_tensor s1t[] = {{"a.weight", IT_F32, 1, s2, 2, 8, b, 0, 0}, {"b.weight", IT_F16, 1, s2, 2, 4, b + 8, 0, 0}};
    it_tensor s2t[] = {{"c.weight", IT_F32, 1, s2, 2, 8, b + 4, 0, 0}};
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    it_err err;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmppath("sharded"));
    CHECK(mkdir(dir, 0755) == 0);
    char p1[4200], p2[4200], pi[4200];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(pi, sizeof pi, "%s/model.safetensors.index.json", dir);
    CHECK(it_st_save(p1, s1t, 2, mk, mv, 1, &err) == IT_OK && it_st_save(p2, s2t, 1, mk, mv, 1, &err) == IT_OK);
    const char *index = "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", "
                        "\"b.weight\": \"model-00001-of-00002.safetensors\", \"c.weight\": \"model-00002-of-00002.safetensors\"}}";
    CHECK(test_write_file(pi, index, strlen(index)) == 0);
    for (int via = 0; via < 2; via++) {
        it_st *st;
        CHECKF(it_st_open(&st, via ? dir : pi, &err) == IT_OK, "%s", err.msg);
        CHECK(it_st_count(st) == 3 && it_st_file_count(st) == 2);
        const it_tensor *c = it_st_find(st, "c.weight");
        CHECK(c && c->file == 1 && memcmp(c->data, b + 4, 8) == 0 && strstr(it_st_file_path(st, c->file), "00002"));
        CHECK(!strcmp(it_st_meta_get(st, "format"), "pt") && it_st_meta_count(st) == 1);
        it_st_close(st);
    }
}

static void open_errors_name_the_file(void)
{
    it_st *st;
    it_err err;
    CHECK(it_st_open(&st, "data/no-such-file.safetensors", &err) == IT_ENOTFOUND && st == NULL);
    CHECK(strstr(err.msg, "data/no-such-file.safetensors") != NULL);
    CHECK(it_st_open(&st, "data/llama", &err) == IT_ENOTFOUND && strstr(err.msg, "data/llama"));
    it_st_close(NULL);
    CHECK(it_st_count(NULL) == 0 && it_st_find(NULL, "x") == NULL);
}

void suite_safetensors(void)
{
    RUN(fixtures_rewrite_byte_identical);
    RUN(fixture_llama_listing);
    RUN(fixture_unet_f16);
    RUN(roundtrip_every_dtype);
    RUN(writer_layout_exact);
    RUN(writer_empty_and_metadata_forms);
    RUN(writer_escapes_like_serde);
    RUN(writer_refuses_bad_tensors);
    RUN(writer_is_atomic);
    RUN(mmap_and_read_agree);
    RUN(sharded_set);
    RUN(open_errors_name_the_file);
}
