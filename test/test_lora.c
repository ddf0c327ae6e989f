/* test/test_lora.c -- adapters (lora.c, lora_files.c): every PEFT fixture in data/ loads with the right modules,
 * ranks and scales and gives scale * B A; small adapters written here in each on-disk format (PEFT
 * folders, kohya and diffusers Stable Diffusion files) check the naming rules, PEFT's target and
 * pattern rules (FACTS.md 2.5, 2.6: current peft's, with a note where peft 0.10's differ), diffusers'
 * lora_adapter_metadata and default alphas, and every refusal, with the right code and a message that
 * names the file and the tensor or module. */
#include "test.h"

#include "iteris.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

/* A message names the file first (when path is given), holds want, and is one line. */
static void check_msg(const it_err *e, const char *path, const char *want)
{
    if (path) CHECKF(strncmp(e->msg, path, strlen(path)) == 0, "message does not start with %s: %s", path, e->msg);
    CHECKF(strstr(e->msg, want) != NULL, "message \"%s\" lacks \"%s\"", e->msg, want);
    CHECKF(strchr(e->msg, '\n') == NULL, "message has a newline: %s", e->msg);
}

/* The tests of PEFT's regex rules need regex.c: a target_modules regex must be evaluated, not
 * refused as unsupported (the placeholder's answer). */
static int regex_missing(const char *what)
{
    it_lora_config c;
    memset(&c, 0, sizeof c);
    c.target_regex = "a";
    int out = 0;
    int rc = it_lora_targets(&c, "a", &out, NULL);
    CHECKF(rc == IT_OK && out == 1, "%s: regular expressions are not available (rc %d)", what, rc);
    return rc != IT_OK;
}

/* A fresh folder under the test directory (its path copied to dir[4096]). */
static const char *mk_dir(char *dir, const char *name)
{
    snprintf(dir, 4096, "%s", test_tmppath(name));
    mkdir(dir, 0755);
    return dir;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    CHECKF(test_write_file(p, text, strlen(text)) == 0, "cannot write %s", p);
}

/* ---- tensors written with it_st_save ---- */

#define TB_MAX 64

typedef struct tbuf {
    size_t n;
    it_tensor t[TB_MAX];
    uint64_t shape[TB_MAX][4];
    void *data[TB_MAX];
    char *name[TB_MAX];
} tbuf;

/* A deterministic value in [-1, 1) for element k of a tensor seeded seed. */
static float val(uint64_t k, int seed) { return (float)((int)((k * 37 + (uint64_t)seed * 101) % 29) - 14) / 16.0f; }

/* Adds a tensor; values val(k, seed) encoded as dtype (F32, F16, BF16, F64), or k for I32. */
static void tb_add(tbuf *b, const char *name, it_dtype dtype, size_t ndim, const uint64_t *shape, int seed)
{
    if (b->n >= TB_MAX) {
        CHECK(!"tbuf full");
        return;
    }
    size_t i = b->n++;
    uint64_t numel = 1;
    for (size_t d = 0; d < ndim; d++) numel *= (b->shape[i][d] = shape[d]);
    size_t bytes = (size_t)numel * (size_t)it_dtype_bits(dtype) / 8;
    b->data[i] = calloc(bytes ? bytes : 1, 1);
    b->name[i] = malloc(strlen(name) + 1);
    strcpy(b->name[i], name);
    float *f = malloc((numel ? numel : 1) * sizeof *f);
    for (uint64_t k = 0; k < numel; k++) f[k] = val(k, seed);
    if (dtype == IT_I32) {
        for (uint64_t k = 0; k < numel; k++) ((unsigned char *)b->data[i])[4 * k] = (unsigned char)k;
    } else {
        CHECK(it_f32_encode(b->data[i], dtype, f, (size_t)numel, NULL) == IT_OK);
    }
    free(f);
    b->t[i] = (it_tensor){.name = b->name[i], .dtype = dtype, .ndim = ndim, .shape = b->shape[i], .numel = numel,
                          .nbytes = bytes, .data = b->data[i]};
}

/* A scalar (0-dim) tensor holding v. */
static void tb_scalar(tbuf *b, const char *name, it_dtype dtype, float v)
{
    tb_add(b, name, dtype, 0, NULL, 0);
    CHECK(it_f32_encode(b->data[b->n - 1], dtype, &v, 1, NULL) == IT_OK);
}

/* lora_A [r, in] and lora_B [out, r] of a module, F32, under "<prefix><module><sa>" / "<sb>". */
static void tb_pair(tbuf *b, const char *prefix, const char *module, const char *sa, const char *sb, uint64_t r,
                    uint64_t in, uint64_t out, int seed)
{
    char n[512];
    snprintf(n, sizeof n, "%s%s%s", prefix, module, sa);
    tb_add(b, n, IT_F32, 2, (uint64_t[]){r, in}, seed);
    snprintf(n, sizeof n, "%s%s%s", prefix, module, sb);
    tb_add(b, n, IT_F32, 2, (uint64_t[]){out, r}, seed + 1);
}

static void tb_peft(tbuf *b, const char *module, uint64_t r, uint64_t in, uint64_t out, int seed)
{
    tb_pair(b, "base_model.model.", module, ".lora_A.weight", ".lora_B.weight", r, in, out, seed);
}

/* Writes b to path with __metadata__ {"format": "pt", "lora_adapter_metadata": meta} (meta NULL: no
 * __metadata__), and empties b. */
static void tb_save_meta(tbuf *b, const char *path, const char *meta)
{
    it_err e;
    const char *k[2] = {"format", "lora_adapter_metadata"}, *v[2] = {"pt", meta};
    CHECKF(it_st_save(path, b->t, b->n, meta ? k : NULL, meta ? v : NULL, meta ? 2 : 0, &e) == IT_OK, "%s: %s", path,
           e.msg);
    for (size_t i = 0; i < b->n; i++) free(b->data[i]), free(b->name[i]);
    b->n = 0;
}

static void tb_save(tbuf *b, const char *path) { tb_save_meta(b, path, NULL); }

/* A PEFT folder: adapter_config.json = json and adapter_model.safetensors from b. */
static const char *peft_dir(char *dir, const char *name, const char *json, tbuf *b)
{
    char p[4200];
    mk_dir(dir, name);
    write_text(dir, "adapter_config.json", json);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    tb_save(b, p);
    return dir;
}

/* dir/adapter_model.safetensors, in a static rotating buffer. */
static const char *weights(const char *dir)
{
    static char buf[4][4200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/adapter_model.safetensors", dir);
    return buf[k];
}

/* One .safetensors file from b. */
static const char *sd_file(char *path, const char *name, tbuf *b)
{
    snprintf(path, 4096, "%s", test_tmppath(name));
    tb_save(b, path);
    return path;
}

/* Loads path, expecting failure with code; the message names the file and holds want. */
static void load_fails(const char *path, int code, const char *file, const char *want)
{
    it_adapter *a = (it_adapter *)(uintptr_t)1;
    it_err e = {0, ""};
    int rc = it_adapter_load(&a, path, &e);
    CHECKF(rc == code, "%s: got %d (%s), want %d", path, rc, e.msg, code);
    CHECK(a == NULL);
    if (rc != IT_OK) check_msg(&e, file, want);
    else it_adapter_free(a);
    test_note("%s", e.msg);
}

static it_adapter *load_ok(const char *path)
{
    it_adapter *a = NULL;
    it_err e;
    int rc = it_adapter_load(&a, path, &e);
    CHECKF(rc == IT_OK, "%s: %s", path, e.msg);
    return rc == IT_OK ? a : NULL;
}

/* it_lora_delta against scale * B A computed here from the file's tensors keyA [r, in(, 1, 1)] and
 * keyB [out, r(, 1, 1)], in double; prints the largest differences. */
static void check_delta(const it_lora_module *m, const char *file, const char *keyA, const char *keyB, double scale)
{
    it_st *st;
    it_err e;
    if (!m) return;
    CHECKF(it_st_open(&st, file, &e) == IT_OK, "%s", e.msg);
    const it_tensor *ta = it_st_find(st, keyA), *tb = it_st_find(st, keyB);
    CHECKF(ta && tb, "%s: %s / %s missing", file, keyA, keyB);
    if (!ta || !tb) {
        it_st_close(st);
        return;
    }
    size_t r = (size_t)ta->shape[0], in = (size_t)ta->shape[1], out = (size_t)tb->shape[0];
    CHECK(m->r == (int64_t)r && m->d_in == (int64_t)in && m->d_out == (int64_t)out && m->scale == scale);
    float *A = malloc(ta->numel * sizeof *A), *B = malloc(tb->numel * sizeof *B);
    double *got = malloc(out * in * sizeof *got);
    CHECK(it_tensor_to_f32(ta, A, NULL) == IT_OK && it_tensor_to_f32(tb, B, NULL) == IT_OK);
    it_lora_delta(m, got);
    double maxabs = 0, maxref = 0;
    for (size_t i = 0; i < out; i++)
        for (size_t j = 0; j < in; j++) {
            double s = 0;
            for (size_t k = 0; k < r; k++) s += (double)B[i * r + k] * (double)A[k * in + j];
            double want = scale * s;
            maxabs = fmax(maxabs, fabs(got[i * in + j] - want));
            maxref = fmax(maxref, fabs(want));
        }
    test_note("delta %s: [%zu x %zu] max-abs %.3g, relative %.3g", m->name, out, in, maxabs,
              maxref > 0 ? maxabs / maxref : 0);
    CHECKF(maxref > 0 && maxabs <= 1e-12 * maxref, "%s: delta differs by %g (of %g)", m->name, maxabs, maxref);
    free(A), free(B), free(got);
    it_st_close(st);
}

/* ============================================================================================ */
/* The PEFT fixtures (data/<family>/adapters, written by peft 0.10.0)                            */
/* ============================================================================================ */

static void test_lora_fixture_adapters(void)
{
    static const struct {
        const char *dir;
        size_t n;       /* modules: the README's wrapped Linear modules */
        int64_t r;
        double scale;   /* r8 a8 rslora: 8/sqrt(8); r4 a16: 4; r4 a8: 2 */
        const char *module, *tail; /* one module to check the delta of, and the end of the last one */
    } fx[] = {
        {"llama/adapters/lora_r4_a16_all", 14, 4, 4.0, "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.v_proj"},
        {"llama/adapters/lora_r4_a8_mlp", 6, 4, 2.0, "model.layers.0.mlp.gate_proj", "model.layers.1.mlp.up_proj"},
        {"llama/adapters/lora_r8_a8_rslora_attn", 8, 8, 0, "model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.v_proj"},
        {"qwen2/adapters/lora_r4_a16_all", 14, 4, 4.0, "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"},
        {"qwen2/adapters/lora_r4_a8_mlp", 6, 4, 2.0, "model.layers.1.mlp.down_proj", "model.layers.1.mlp.up_proj"},
        {"qwen2/adapters/lora_r8_a8_rslora_attn", 8, 8, 0, "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.v_proj"},
        {"t5/adapters/lora_r4_a16_all", 36, 4, 4.0, "decoder.block.1.layer.1.EncDecAttention.k", "encoder.block.1.layer.1.DenseReluDense.wo"},
        {"t5/adapters/lora_r4_a8_mlp", 12, 4, 2.0, "encoder.block.0.layer.1.DenseReluDense.wi_1", "encoder.block.1.layer.1.DenseReluDense.wo"},
        {"t5/adapters/lora_r8_a8_rslora_attn", 24, 8, 0, "encoder.block.0.layer.0.SelfAttention.o", "encoder.block.1.layer.0.SelfAttention.v"},
        {"clip/adapters/lora_r4_a16_all", 24, 4, 4.0, "vision_model.encoder.layers.1.mlp.fc2", "vision_model.encoder.layers.1.self_attn.v_proj"},
        {"clip/adapters/lora_r4_a8_mlp", 8, 4, 2.0, "text_model.encoder.layers.0.mlp.fc1", "vision_model.encoder.layers.1.mlp.fc2"},
        {"clip/adapters/lora_r8_a8_rslora_attn", 16, 8, 0, "text_model.encoder.layers.1.self_attn.out_proj", "vision_model.encoder.layers.1.self_attn.v_proj"},
        {"unet/adapters/lora_r4_a16_all", 32, 4, 4.0, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k", "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"},
        {"unet/adapters/lora_r4_a8_qv", 16, 4, 2.0, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"},
        {"unet/adapters/lora_r8_a8_rslora_all", 32, 8, 0, "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"},
    };
    for (size_t k = 0; k < sizeof fx / sizeof *fx; k++) {
        char path[512], file[512], ka[512], kb[512];
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", test_data(fx[k].dir));
        /* the folder, its adapter_config.json and its adapter_model.safetensors all name the adapter */
        if (k % 3 == 0) snprintf(path, sizeof path, "%s", test_data(fx[k].dir));
        else if (k % 3 == 1) snprintf(path, sizeof path, "%s/adapter_config.json", test_data(fx[k].dir));
        else snprintf(path, sizeof path, "%s", file);
        it_adapter *a = load_ok(path);
        if (!a) continue;
        double scale = fx[k].scale ? fx[k].scale : 8.0 / sqrt(8.0);
        CHECK(a->format == IT_ADAPTER_PEFT && a->has_config && !strcmp(a->path, path));
        CHECKF(a->n == fx[k].n && a->nwarn == 0, "%s: %zu modules, %zu warnings", fx[k].dir, a->n, a->nwarn);
        for (size_t i = 0; i < a->n; i++) {
            const it_lora_module *m = &a->mods[i];
            CHECKF(m->r == fx[k].r && m->scale == scale && m->kind == IT_LORA_LINEAR && !m->transposed &&
                       m->component[0] == 0 && m->A && m->B && m->d_in > 0 && m->d_out > 0,
                   "%s: %s r %lld scale %g", fx[k].dir, m->name, (long long)m->r, m->scale);
            CHECK(m->alpha == a->cfg.lora_alpha);
            CHECK(i == 0 || strcmp(a->mods[i - 1].name, m->name) < 0); /* sorted */
            CHECK(it_adapter_find(a, "", m->name) == m);
        }
        CHECKF(a->n && !strcmp(a->mods[a->n - 1].name, fx[k].tail), "%s: last %s", fx[k].dir, a->mods[a->n - 1].name);
        const it_lora_module *m = it_adapter_find(a, "", fx[k].module);
        CHECKF(m != NULL, "%s: %s not found", fx[k].dir, fx[k].module);
        CHECK(it_adapter_find(a, "unet", fx[k].module) == NULL && it_adapter_find(a, "", "q_proj") == NULL);
        snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", fx[k].module);
        snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", fx[k].module);
        check_delta(m, file, ka, kb, scale);
        it_adapter_free(a);
    }
    it_adapter_free(NULL);
}

/* GQA shapes: k_proj of the llama fixture is [32, 64] (2 kv heads of 16). */
static void test_lora_fixture_shapes(void)
{
    it_adapter *a = load_ok(test_data("llama/adapters/lora_r4_a16_all"));
    if (!a) return;
    const it_lora_module *k = it_adapter_find(a, "", "model.layers.0.self_attn.k_proj");
    const it_lora_module *d = it_adapter_find(a, "", "model.layers.0.mlp.down_proj");
    CHECK(k && k->d_out == 32 && k->d_in == 64 && k->r == 4);
    CHECK(d && d->d_out == 64 && d->d_in == 160);
    it_adapter_free(a);
}

/* ============================================================================================ */
/* PEFT folders written here                                                                     */
/* ============================================================================================ */

static const char *const LLAMA_TARGETS = "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\"]";

/* Any float dtype converts; fan_in_fan_out marks Linear modules transposed, shapes unchanged. */
static void test_lora_peft_dtypes_fan_in_fan_out(void)
{
    char dir[4096], json[512];
    for (int fif = 0; fif < 2; fif++) {
        tbuf b = {0};
        const it_dtype dt[4] = {IT_F16, IT_BF16, IT_F64, IT_F32};
        const char *proj[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        for (int i = 0; i < 4; i++) {
            char n[128];
            snprintf(n, sizeof n, "base_model.model.model.layers.0.self_attn.%s.lora_A.weight", proj[i]);
            tb_add(&b, n, dt[i], 2, (uint64_t[]){2, 6}, i);
            snprintf(n, sizeof n, "base_model.model.model.layers.0.self_attn.%s.lora_B.weight", proj[i]);
            tb_add(&b, n, dt[3 - i], 2, (uint64_t[]){5, 2}, i + 1);
        }
        snprintf(json, sizeof json, "{\"r\": 2, \"lora_alpha\": 3, %s, \"fan_in_fan_out\": %s}", LLAMA_TARGETS,
                 fif ? "true" : "false");
        peft_dir(dir, fif ? "fif" : "dtypes", json, &b);
        it_adapter *a = load_ok(dir);
        if (!a) continue;
        CHECK(a->n == 4 && a->cfg.fan_in_fan_out == fif);
        char file[4200], ka[128], kb[128];
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
        for (int i = 0; i < 4; i++) {
            char mod[64];
            snprintf(mod, sizeof mod, "model.layers.0.self_attn.%s", proj[i]);
            const it_lora_module *m = it_adapter_find(a, "", mod);
            CHECKF(m != NULL, "%s missing", mod);
            if (!m) continue;
            CHECK(m->transposed == fif && m->kind == IT_LORA_LINEAR && m->r == 2 && m->d_in == 6 && m->d_out == 5);
            CHECK(m->scale == 1.5 && m->alpha == 3);
            /* values are multiples of 1/16: exact in every dtype */
            for (int k = 0; k < 12; k++) CHECK(m->A[k] == val((uint64_t)k, i));
            for (int k = 0; k < 10; k++) CHECK(m->B[k] == val((uint64_t)k, i + 1));
            snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", mod);
            snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", mod);
            check_delta(m, file, ka, kb, 1.5);
        }
        it_adapter_free(a);
    }
}

/* Embedding LoRA (FACTS 2.3): lora_embedding_A [r, num_embeddings], lora_embedding_B [dim, r]. */
static void test_lora_peft_embedding(void)
{
    char dir[4096], file[4200];
    tbuf b = {0};
    tb_add(&b, "base_model.model.model.embed_tokens.lora_embedding_A", IT_F32, 2, (uint64_t[]){4, 10}, 3);
    tb_add(&b, "base_model.model.model.embed_tokens.lora_embedding_B", IT_F32, 2, (uint64_t[]){7, 4}, 4);
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 4, 7, 7, 5);
    peft_dir(dir, "embedding", "{\"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"embed_tokens\", \"q_proj\"]}", &b);
    it_adapter *a = load_ok(dir);
    if (!a) return;
    CHECK(a->n == 2);
    const it_lora_module *m = it_adapter_find(a, "", "model.embed_tokens");
    CHECK(m && m->kind == IT_LORA_EMBEDDING && m->transposed == 1 && m->d_in == 10 && m->d_out == 7 && m->r == 4);
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    check_delta(m, file, "base_model.model.model.embed_tokens.lora_embedding_A",
                "base_model.model.model.embed_tokens.lora_embedding_B", 2.0);
    const it_lora_module *q = it_adapter_find(a, "", "model.layers.0.self_attn.q_proj");
    CHECK(q && q->kind == IT_LORA_LINEAR && !q->transposed);
    it_adapter_free(a);

    /* an embedding A with a plain lora_B is not one module */
    tb_add(&b, "base_model.model.model.embed_tokens.lora_embedding_A", IT_F32, 2, (uint64_t[]){4, 10}, 3);
    tb_add(&b, "base_model.model.model.embed_tokens.lora_B.weight", IT_F32, 2, (uint64_t[]){7, 4}, 4);
    peft_dir(dir, "embedding_mixed", "{\"r\": 4, \"target_modules\": [\"embed_tokens\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "one of lora_A / lora_B is an embedding LoRA");
}

/* Conv2d LoRA (FACTS 2.3): 1x1 kernels are squeezed to a linear on channels; larger ones refused. */
static void test_lora_peft_conv(void)
{
    char dir[4096], file[4200];
    tbuf b = {0};
    tb_add(&b, "base_model.model.down_blocks.0.attentions.0.proj_in.lora_A.weight", IT_F32, 4, (uint64_t[]){2, 6, 1, 1}, 1);
    tb_add(&b, "base_model.model.down_blocks.0.attentions.0.proj_in.lora_B.weight", IT_F32, 4, (uint64_t[]){8, 2, 1, 1}, 2);
    peft_dir(dir, "conv1x1", "{\"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"proj_in\"]}", &b);
    it_adapter *a = load_ok(dir);
    if (a) {
        const it_lora_module *m = it_adapter_find(a, "", "down_blocks.0.attentions.0.proj_in");
        CHECK(a->n == 1 && m && m->kind == IT_LORA_CONV1X1 && !m->transposed && m->d_in == 6 && m->d_out == 8);
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
        check_delta(m, file, "base_model.model.down_blocks.0.attentions.0.proj_in.lora_A.weight",
                    "base_model.model.down_blocks.0.attentions.0.proj_in.lora_B.weight", 2.0);
        it_adapter_free(a);
    }
    tb_add(&b, "base_model.model.down_blocks.0.resnets.0.conv1.lora_A.weight", IT_F32, 4, (uint64_t[]){2, 6, 3, 3}, 1);
    tb_add(&b, "base_model.model.down_blocks.0.resnets.0.conv1.lora_B.weight", IT_F32, 4, (uint64_t[]){8, 2, 1, 1}, 2);
    peft_dir(dir, "conv3x3", "{\"r\": 2, \"target_modules\": [\"conv1\"]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "module \"down_blocks.0.resnets.0.conv1\": a 3x3 convolution LoRA");
    /* a 1x1 A with a B that is not [out, r, 1, 1] */
    tb_add(&b, "base_model.model.c.proj_in.lora_A.weight", IT_F32, 4, (uint64_t[]){2, 6, 1, 1}, 1);
    tb_add(&b, "base_model.model.c.proj_in.lora_B.weight", IT_F32, 2, (uint64_t[]){8, 2}, 2);
    peft_dir(dir, "conv_mixed", "{\"r\": 2, \"target_modules\": [\"proj_in\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "lora_A has 4 dimensions and lora_B 2");
}

/* DoRA, lora_bias, bias "all" and modules_to_save change more than a low-rank delta: refused. */
static void test_lora_peft_refusals(void)
{
    char dir[4096], file[4200], cfg[4200];
    tbuf b = {0};
    /* use_dora in the config */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    peft_dir(dir, "dora_cfg", "{\"r\": 2, \"use_dora\": true, \"target_modules\": [\"q_proj\"]}", &b);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    load_fails(dir, IT_EUNSUPPORTED, cfg, "use_dora: DoRA");
    /* a magnitude vector without the flag */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", IT_F32, 1, (uint64_t[]){4}, 1);
    peft_dir(dir, "dora_key", "{\"r\": 2, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "q_proj.lora_magnitude_vector\": a DoRA magnitude vector");
    /* lora_bias: the flag, and a lora_B bias */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    peft_dir(dir, "lora_bias_cfg", "{\"r\": 2, \"lora_bias\": true, \"target_modules\": [\"q_proj\"]}", &b);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    load_fails(dir, IT_EUNSUPPORTED, cfg, "lora_bias");
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", IT_F32, 1, (uint64_t[]){4}, 1);
    peft_dir(dir, "lora_bias_key", "{\"r\": 2, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "a lora_B bias (lora_bias)");
    /* bias "all": base biases replaced */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.model.layers.0.self_attn.q_proj.bias", IT_F32, 1, (uint64_t[]){4}, 1);
    peft_dir(dir, "bias_all", "{\"r\": 2, \"bias\": \"all\", \"target_modules\": [\"q_proj\"]}", &b);
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "base-layer bias (bias \"all\"");
    /* bias "lora_only" with no bias tensor in the file changes nothing: accepted */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    peft_dir(dir, "bias_lora_only", "{\"r\": 2, \"bias\": \"lora_only\", \"target_modules\": [\"q_proj\"]}", &b);
    it_adapter *a = load_ok(dir);
    CHECK(a && a->n == 1);
    it_adapter_free(a);
    /* a modules_to_save copy, as other writers name it */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.score.modules_to_save.default.weight", IT_F32, 2, (uint64_t[]){2, 4}, 1);
    peft_dir(dir, "mts_key", "{\"r\": 2, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "a modules_to_save copy");
}

/* Shapes that do not agree, A without B, keys PEFT does not write, files that are not there. */
static void test_lora_peft_bad(void)
{
    char dir[4096], file[4200], cfg[4200];
    tbuf b = {0};
    /* A [4, 8] with B [8, 3] */
    tb_add(&b, "base_model.model.m.q_proj.lora_A.weight", IT_F32, 2, (uint64_t[]){4, 8}, 1);
    tb_add(&b, "base_model.model.m.q_proj.lora_B.weight", IT_F32, 2, (uint64_t[]){8, 3}, 1);
    peft_dir(dir, "shape", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "module \"m.q_proj\": lora_A is [4, 8, ...] and lora_B [8, 3, ...]");
    /* r 8 in the config, 4 in the tensors */
    tb_peft(&b, "m.q_proj", 4, 8, 8, 1);
    peft_dir(dir, "rank", "{\"r\": 8, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "module \"m.q_proj\": rank 4 in the tensors but 8 from");
    /* A without B, B without A */
    tb_add(&b, "base_model.model.m.q_proj.lora_A.weight", IT_F32, 2, (uint64_t[]){4, 8}, 1);
    tb_add(&b, "base_model.model.m.v_proj.lora_B.weight", IT_F32, 2, (uint64_t[]){8, 4}, 1);
    peft_dir(dir, "lonely", "{\"r\": 4, \"target_modules\": [\"q_proj\", \"v_proj\"]}", &b);
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    load_fails(dir, IT_EFORMAT, weights(dir), "module \"m.q_proj\": tensor \"base_model.model.m.q_proj.lora_A.weight\" has "
                                      "no matching lora_B");
    tb_add(&b, "base_model.model.m.v_proj.lora_B.weight", IT_F32, 2, (uint64_t[]){8, 4}, 1);
    peft_dir(dir, "lonely_b", "{\"r\": 4, \"target_modules\": [\"q_proj\", \"v_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "has no matching lora_A");
    /* keys with and without the prefix in one file; a key PEFT does not write; 3-D tensors; an integer dtype */
    tb_peft(&b, "m.q_proj", 4, 8, 8, 1);
    tb_add(&b, "m.k_proj.lora_A.weight", IT_F32, 2, (uint64_t[]){4, 8}, 1);
    peft_dir(dir, "prefix", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "has PEFT's prefix \"base_model.model.\" and tensor \"m.k_proj.lora_A.weight\" "
                                              "has not");
    tb_peft(&b, "m.q_proj", 4, 8, 8, 1);
    tb_add(&b, "base_model.model.m.q_proj.lora_C.weight", IT_F32, 2, (uint64_t[]){4, 8}, 1);
    peft_dir(dir, "unknown", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "tensor \"base_model.model.m.q_proj.lora_C.weight\": not a tensor of a PEFT");
    tb_add(&b, "base_model.model.m.q_proj.lora_A.weight", IT_F32, 3, (uint64_t[]){4, 8, 2}, 1);
    tb_add(&b, "base_model.model.m.q_proj.lora_B.weight", IT_F32, 3, (uint64_t[]){8, 4, 1}, 1);
    peft_dir(dir, "conv1d", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "lora_A has 3 dimensions");
    tb_add(&b, "base_model.model.m.q_proj.lora_A.weight", IT_I32, 2, (uint64_t[]){4, 8}, 1);
    tb_add(&b, "base_model.model.m.q_proj.lora_B.weight", IT_F32, 2, (uint64_t[]){8, 4}, 1);
    peft_dir(dir, "int", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "dtype I32: expected a floating-point dtype");
    /* two spellings of one tensor */
    tb_peft(&b, "m.q_proj", 4, 8, 8, 1);
    tb_add(&b, "base_model.model.m.q_proj.lora_A.default.weight", IT_F32, 2, (uint64_t[]){4, 8}, 1);
    peft_dir(dir, "dup", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "are both the lora_A of module \"m.q_proj\"");
    /* the in-memory spelling alone is accepted */
    tb_pair(&b, "base_model.model.", "m.q_proj", ".lora_A.default.weight", ".lora_B.default.weight", 4, 8, 8, 1);
    peft_dir(dir, "default", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    it_adapter *a = load_ok(dir);
    CHECK(a && a->n == 1 && !strcmp(a->mods[0].name, "m.q_proj"));
    it_adapter_free(a);
    /* an empty file */
    peft_dir(dir, "empty", "{\"r\": 4, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "holds no LoRA tensors");
    /* no weights; pickle weights; no config; a bad config */
    mk_dir(dir, "noweights");
    write_text(dir, "adapter_config.json", "{\"r\": 4}");
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    load_fails(dir, IT_ENOTFOUND, file, "adapter_model.safetensors: not found");
    write_text(dir, "adapter_model.bin", "PK");
    snprintf(file, sizeof file, "%s/adapter_model.bin", dir);
    load_fails(dir, IT_EUNSUPPORTED, file, "pickle files are not read; convert to safetensors");
    load_fails(file, IT_EUNSUPPORTED, file, "pickle files are not read");
    mk_dir(dir, "nothing");
    load_fails(dir, IT_ENOTFOUND, dir, "not an adapter folder");
    snprintf(file, sizeof file, "%s/missing.safetensors", dir);
    load_fails(file, IT_ENOTFOUND, file, "no such file or folder");
    snprintf(file, sizeof file, "%s/none", dir);
    load_fails(file, IT_ENOTFOUND, file, "no such file or folder");
    mk_dir(dir, "badcfg");
    write_text(dir, "adapter_config.json", "{\"r\": 0}");
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    load_fails(dir, IT_EFORMAT, cfg, "r: expected a positive integer");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LOHA\"}");
    load_fails(cfg, IT_EUNSUPPORTED, cfg, "peft_type \"LOHA\"");
}

/* Settings whose weights are not a plain delta on the unchanged base are refused naming the key
 * (peft's LoraConfig); initialisations that leave the base alone, and unset values, are accepted. */
static void test_lora_peft_not_plain(void)
{
    static const struct {
        const char *extra, *want; /* extra config; the message part, or NULL when it loads */
    } cases[] = {
        {"\"init_lora_weights\": \"pissa\"", "init_lora_weights \"pissa\": PiSSA, OLoRA, CorDA and LoftQ change the base"},
        {"\"init_lora_weights\": \"pissa_niter_16\"", "init_lora_weights \"pissa_niter_16\": PiSSA"},
        {"\"init_lora_weights\": \"olora\"", "init_lora_weights \"olora\""},
        {"\"init_lora_weights\": \"corda\"", "init_lora_weights \"corda\""},
        {"\"init_lora_weights\": \"loftq\"", "init_lora_weights \"loftq\""},
        {"\"init_lora_weights\": \"mystery\"", "init_lora_weights \"mystery\": not an initialisation iteris knows"},
        {"\"use_qalora\": true", "use_qalora: QALoRA"},
        {"\"alora_invocation_tokens\": [5, 6]", "alora_invocation_tokens: an activated LoRA"},
        {"\"target_parameters\": [\"mlp.experts.down_proj\"]", "target_parameters: LoRA on parameters"},
        {"\"layer_replication\": [[0, 2], [1, 2]]", "layer_replication: the adapter stacks repeated base layers"},
        {"\"init_lora_weights\": true, \"use_qalora\": false, \"alora_invocation_tokens\": null, "
         "\"target_parameters\": [], \"layer_replication\": null", NULL},
        {"\"init_lora_weights\": false", NULL},
        {"\"init_lora_weights\": \"gaussian\"", NULL},
        {"\"init_lora_weights\": \"eva\", \"target_parameters\": null", NULL},
        {"\"init_lora_weights\": \"orthogonal\", \"layer_replication\": []", NULL},
    };
    char dir[4096], cfg[4200], json[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tbuf b = {0};
        tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
        snprintf(json, sizeof json, "{\"r\": 2, \"target_modules\": [\"q_proj\"], %s}", cases[i].extra);
        char name[32];
        snprintf(name, sizeof name, "not_plain_%zu", i);
        peft_dir(dir, name, json, &b);
        snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
        if (cases[i].want) {
            load_fails(dir, IT_EUNSUPPORTED, cfg, cases[i].want);
        } else {
            it_adapter *a = load_ok(dir);
            CHECKF(a && a->n == 1, "%s", cases[i].extra);
            it_adapter_free(a);
        }
    }
    /* it_lora_config_load still reads such a config (to describe it) */
    it_lora_config c;
    it_err e;
    write_text(dir, "adapter_config.json", "{\"r\": 2, \"init_lora_weights\": \"pissa\", \"use_dora\": true}");
    CHECKF(it_lora_config_load(&c, dir, &e) == IT_OK, "%s", e.msg);
    CHECK(c.use_dora == 1);
    it_lora_config_free(&c);
    /* a value of the wrong type */
    write_text(dir, "adapter_config.json", "{\"r\": 2, \"init_lora_weights\": 3}");
    load_fails(dir, IT_EFORMAT, cfg, "init_lora_weights: expected true, false or a string, got 3");
}

/* transformers' load_adapter strips "base_model.model." only where a key has it: files without it load
 * the same; one that mixes both is refused (test_lora_peft_bad). */
static void test_lora_peft_unprefixed(void)
{
    char dir[4096], file[4200];
    tbuf b = {0};
    tb_pair(&b, "", "model.layers.0.self_attn.q_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 5, 1);
    tb_pair(&b, "", "model.layers.0.self_attn.v_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 5, 3);
    tb_add(&b, "model.embed_tokens.lora_embedding_A", IT_F32, 2, (uint64_t[]){2, 10}, 3);
    tb_add(&b, "model.embed_tokens.lora_embedding_B", IT_F32, 2, (uint64_t[]){6, 2}, 4);
    peft_dir(dir, "unprefixed", "{\"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"v_proj\", "
                                "\"embed_tokens\"]}", &b);
    it_adapter *a = load_ok(dir);
    if (!a) return;
    CHECK(a->n == 3 && a->nwarn == 0);
    const it_lora_module *q = it_adapter_find(a, "", "model.layers.0.self_attn.q_proj");
    const it_lora_module *emb = it_adapter_find(a, "", "model.embed_tokens");
    CHECK(q && q->scale == 2.0 && emb && emb->kind == IT_LORA_EMBEDDING);
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    check_delta(q, file, "model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj.lora_B.weight",
                2.0);
    it_adapter_free(a);
    /* unknown keys are still refused by name */
    tb_pair(&b, "", "m.q_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 5, 1);
    tb_add(&b, "m.q_proj.lora_C.weight", IT_F32, 2, (uint64_t[]){2, 6}, 1);
    peft_dir(dir, "unprefixed_bad", "{\"r\": 2, \"target_modules\": [\"q_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "tensor \"m.q_proj.lora_C.weight\": not a tensor of a PEFT");
}

/* save_embedding_layers (whole embeddings) and trainable tokens replace base weights: refused with a
 * message that says so, with or without the prefix. */
static void test_lora_peft_embedding_copies(void)
{
    static const char *const keys[] = {
        "base_model.model.model.embed_tokens.base_layer.weight", "base_model.model.lm_head.base_layer.weight",
        "base_model.model.model.embed_tokens.weight", "base_model.model.lm_head.weight", "model.embed_tokens.weight",
        "base_model.model.shared.weight",
    };
    char dir[4096];
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        tbuf b = {0};
        int bare = strncmp(keys[i], "base_model.model.", 17) != 0;
        tb_pair(&b, bare ? "" : "base_model.model.", "model.layers.0.self_attn.q_proj", ".lora_A.weight",
                ".lora_B.weight", 2, 4, 4, 1);
        tb_add(&b, keys[i], IT_F32, 2, (uint64_t[]){10, 4}, 1);
        char name[32], want[200];
        snprintf(name, sizeof name, "emb_copy_%zu", i);
        peft_dir(dir, name, "{\"r\": 2, \"target_modules\": [\"q_proj\", \"embed_tokens\"]}", &b);
        snprintf(want, sizeof want, "tensor \"%s\": a full copy of the base embedding (save_embedding_layers) "
                                    "replaces base weights; not supported", keys[i]);
        load_fails(dir, IT_EUNSUPPORTED, weights(dir), want);
    }
    tbuf b = {0};
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta", IT_F32, 2,
           (uint64_t[]){3, 4}, 1);
    peft_dir(dir, "trainable_tokens", "{\"r\": 2, \"target_modules\": [\"q_proj\"], "
                                      "\"trainable_token_indices\": [1, 2, 3]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "trainable tokens (trainable_token_indices) replace rows of the base "
                                                   "embedding; not supported");
    /* a whole lm_head listed in modules_to_save keeps the modules_to_save message */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.lm_head.weight", IT_F32, 2, (uint64_t[]){10, 4}, 1);
    peft_dir(dir, "mts_lm_head", "{\"r\": 2, \"target_modules\": [\"q_proj\"], \"modules_to_save\": [\"lm_head\"]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "a modules_to_save copy");
}

/* target_modules as a list (FACTS 2.5): modules the config does not select are skipped with a note,
 * as PEFT ignores their keys; exclude_modules as a list. No regex needed. */
static void test_lora_peft_targets_list(void)
{
    char dir[4096];
    tbuf b = {0};
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_peft(&b, "model.layers.0.self_attn.k_proj", 2, 4, 4, 2);
    tb_peft(&b, "model.layers.1.self_attn.q_proj", 2, 4, 4, 3);
    tb_peft(&b, "model.layers.1.mlp.up_proj", 2, 4, 6, 4);
    peft_dir(dir, "targets", "{\"r\": 2, \"target_modules\": [\"q_proj\", \"mlp.up_proj\"], "
                             "\"exclude_modules\": [\"layers.1.self_attn.q_proj\"]}", &b);
    it_adapter *a = load_ok(dir);
    if (!a) return;
    CHECKF(a->n == 2, "%zu modules", a->n);
    CHECK(it_adapter_find(a, "", "model.layers.0.self_attn.q_proj") && it_adapter_find(a, "", "model.layers.1.mlp.up_proj"));
    CHECK(!it_adapter_find(a, "", "model.layers.0.self_attn.k_proj") && !it_adapter_find(a, "", "model.layers.1.self_attn.q_proj"));
    CHECKF(a->nwarn == 2, "%zu warnings", a->nwarn);
    for (size_t i = 0; i < a->nwarn; i++) {
        test_note("warning: %s", a->warn[i]);
        CHECK(strstr(a->warn[i], "not selected by target_modules; ignored as PEFT does") != NULL);
    }
    CHECK(a->nwarn == 2 && strstr(a->warn[0], "model.layers.0.self_attn.k_proj") &&
          strstr(a->warn[1], "model.layers.1.self_attn.q_proj"));
    it_adapter_free(a);

    /* no target_modules: every module in the file, and a note */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_peft(&b, "model.layers.0.self_attn.k_proj", 2, 4, 4, 2);
    peft_dir(dir, "notargets", "{\"r\": 2}", &b);
    a = load_ok(dir);
    CHECK(a && a->n == 2 && a->nwarn == 1 && strstr(a->warn[0], "no target_modules"));
    it_adapter_free(a);

    /* it_lora_targets itself */
    it_lora_config c;
    memset(&c, 0, sizeof c);
    char *t[] = {"q", "to_out.0", "model.layers.3.self_attn.k_proj"}, *ex[] = {"decoder.block.0.layer.0.SelfAttention.q"};
    c.targets = t, c.ntargets = 3, c.exclude = ex, c.nexclude = 1;
    static const struct {
        const char *module;
        int want;
    } cases[] = {
        {"encoder.block.0.layer.0.SelfAttention.q", 1}, {"decoder.block.1.layer.1.EncDecAttention.q", 1},
        {"decoder.block.0.layer.0.SelfAttention.q", 0}, /* excluded */
        {"q", 1},                                        /* equality */
        {"encoder.block.0.layer.0.SelfAttention.qq", 0}, {"xq", 0}, {"a.to_out.0", 1}, {"a.to_out.00", 0},
        {"model.layers.3.self_attn.k_proj", 1},          {"x.model.layers.3.self_attn.k_proj", 1},
        {"model.layers.3.self_attn.v_proj", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int out = -1;
        CHECK(it_lora_targets(&c, cases[i].module, &out, NULL) == IT_OK);
        CHECKF(out == cases[i].want, "%s: %d", cases[i].module, out);
    }
    /* no targets, or "all-linear" (any case): every module; exclusions still apply */
    c.targets = NULL, c.ntargets = 0;
    int out = -1;
    CHECK(it_lora_targets(&c, "lm_head", &out, NULL) == IT_OK && out == 1);
    CHECK(it_lora_targets(&c, "decoder.block.0.layer.0.SelfAttention.q", &out, NULL) == IT_OK && out == 0);
    c.target_regex = "ALL-Linear";
    CHECK(it_lora_targets(&c, "lm_head", &out, NULL) == IT_OK && out == 1);
}

/* ============================================================================================ */
/* PEFT rules that need regular expressions                                                      */
/* ============================================================================================ */

/* rank_pattern / alpha_pattern (FACTS 2.6): a key K matches when re.match(rf"(.*\.)?({K})$", name). */
static void test_lora_rank_pattern(void)
{
    if (regex_missing("rank_pattern / alpha_pattern")) return;
    it_lora_config c;
    it_err e;
    const char *p = test_tmppath("rank_cfg.json");
    const char *json = "{\"r\": 8, \"lora_alpha\": 16, \"rank_pattern\": {"
                       "\"q_proj\": 2, "                              /* a suffix at a dot */
                       "\"^model.layers.1.self_attn.k_proj\": 6, "    /* '^': the whole name */
                       "\"^layers.0.self_attn.k_proj\": 5, "          /* '^' not at the name's start: never */
                       "\"self_attn.v.proj\": 3, "                    /* an unescaped '.' matches '_' */
                       "\"model.layers.0.self_attn.q_proj\": 7, "     /* after q_proj: never reached */
                       "\"_proj\": 9"                                 /* not at a dot: o_proj keeps r */
                       "}, \"alpha_pattern\": {\"o_proj\": 32, \"layers.1.self_attn.q_proj\": 4}}";
    CHECK(test_write_file(p, json, strlen(json)) == 0);
    CHECKF(it_lora_config_load(&c, p, &e) == IT_OK, "%s", e.msg);
    static const struct {
        const char *module;
        int64_t r;
        double alpha;
    } cases[] = {
        {"model.layers.0.self_attn.q_proj", 2, 16}, /* first key in file order wins */
        {"model.layers.1.self_attn.q_proj", 2, 4},  /* independent lookups */
        {"model.layers.1.self_attn.k_proj", 6, 16}, {"model.layers.0.self_attn.k_proj", 8, 16},
        {"model.layers.0.self_attn.v_proj", 3, 16}, {"model.layers.0.self_attn.o_proj", 8, 32},
        {"q_proj", 2, 16},                          /* the optional prefix may be empty */
        {"model.layers.0.mlp.up_proj", 8, 16},
    };
    for (int rs = 0; rs < 2; rs++) {
        c.use_rslora = rs;
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            int64_t r = 0;
            double alpha = 0, scale = 0;
            int rc = it_lora_module_rank(&c, cases[i].module, &r, &alpha, &scale, &e);
            CHECKF(rc == IT_OK, "%s", e.msg);
            double want = rs ? cases[i].alpha / sqrt((double)cases[i].r) : cases[i].alpha / (double)cases[i].r;
            CHECKF(r == cases[i].r && alpha == cases[i].alpha && scale == want, "%s: r %lld alpha %g scale %g",
                   cases[i].module, (long long)r, alpha, scale);
        }
    }
    it_lora_config_free(&c);

    /* the same through a PEFT folder: the tensors' rank must be the resolved one */
    char dir[4096], file[4200];
    tbuf b = {0};
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_peft(&b, "model.layers.0.self_attn.k_proj", 8, 4, 4, 2);
    tb_peft(&b, "model.layers.1.self_attn.k_proj", 6, 4, 4, 3);
    tb_peft(&b, "model.layers.0.self_attn.o_proj", 8, 4, 4, 4);
    peft_dir(dir, "patterns", "{\"r\": 8, \"lora_alpha\": 16, \"use_rslora\": true, \"target_modules\": [\"q_proj\", "
                              "\"k_proj\", \"o_proj\"], \"rank_pattern\": {\"q_proj\": 2, \"^model.layers.1.self_attn.k_proj\": 6}, "
                              "\"alpha_pattern\": {\"o_proj\": 32}}", &b);
    it_adapter *a = load_ok(dir);
    if (a) {
        const it_lora_module *q = it_adapter_find(a, "", "model.layers.0.self_attn.q_proj");
        const it_lora_module *k1 = it_adapter_find(a, "", "model.layers.1.self_attn.k_proj");
        const it_lora_module *o = it_adapter_find(a, "", "model.layers.0.self_attn.o_proj");
        CHECK(q && q->r == 2 && q->alpha == 16 && q->scale == 16 / sqrt(2.0));
        CHECK(k1 && k1->r == 6 && k1->scale == 16 / sqrt(6.0));
        CHECK(o && o->r == 8 && o->alpha == 32 && o->scale == 32 / sqrt(8.0));
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
        check_delta(q, file, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", 16 / sqrt(2.0));
        it_adapter_free(a);
    }
    /* rank_pattern gives 2 but the tensors have 4: PEFT fails to load */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 4, 4, 4, 1);
    peft_dir(dir, "pattern_mismatch", "{\"r\": 4, \"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"q_proj\": 2}}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "rank 4 in the tensors but 2 from");
    /* a key that is not a regex */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 4, 4, 4, 1);
    peft_dir(dir, "pattern_bad", "{\"r\": 4, \"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"q_proj(\": 2}}", &b);
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    load_fails(dir, IT_EFORMAT, cfg, "rank_pattern key \"q_proj(\"");
    memset(&c, 0, sizeof c);
    c.r = 4, c.lora_alpha = 4;
    it_lora_pattern bad = {"[", 2};
    c.alpha_pattern = &bad, c.nalpha_pattern = 1;
    int64_t r;
    double alpha, scale;
    CHECK(it_lora_module_rank(&c, "x", &r, &alpha, &scale, &e) == IT_EFORMAT);
    check_msg(&e, NULL, "alpha_pattern key \"[\"");
}

/* target_modules as a regex (re.fullmatch), exclude_modules as a regex, modules_to_save. */
static void test_lora_target_regex(void)
{
    if (regex_missing("target_modules / exclude_modules regex")) return;
    it_lora_config c;
    memset(&c, 0, sizeof c);
    c.target_regex = ".*decoder.*(SelfAttention|EncDecAttention)\\.(q|v)";
    static const struct {
        const char *module;
        int want;
    } cases[] = {
        {"decoder.block.0.layer.0.SelfAttention.q", 1}, {"decoder.block.1.layer.1.EncDecAttention.v", 1},
        {"encoder.block.0.layer.0.SelfAttention.q", 0}, {"decoder.block.0.layer.0.SelfAttention.k", 0},
        {"decoder.block.0.layer.0.SelfAttention.qx", 0}, /* fullmatch, not search */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int out = -1;
        CHECK(it_lora_targets(&c, cases[i].module, &out, NULL) == IT_OK);
        CHECKF(out == cases[i].want, "%s: %d", cases[i].module, out);
    }
    c.exclude_regex = ".*block\\.1\\..*";
    int out = -1;
    CHECK(it_lora_targets(&c, "decoder.block.1.layer.1.EncDecAttention.v", &out, NULL) == IT_OK && out == 0);
    CHECK(it_lora_targets(&c, "decoder.block.0.layer.1.EncDecAttention.v", &out, NULL) == IT_OK && out == 1);
    /* modules_to_save: never adapted, nor anything inside it */
    char *t[] = {"dense", "q_proj"}, *save[] = {"classifier"};
    memset(&c, 0, sizeof c);
    c.targets = t, c.ntargets = 2, c.modules_to_save = save, c.nmodules_to_save = 1;
    CHECK(it_lora_targets(&c, "classifier.dense", &out, NULL) == IT_OK && out == 0);
    CHECK(it_lora_targets(&c, "model.classifier", &out, NULL) == IT_OK && out == 0);
    CHECK(it_lora_targets(&c, "model.classifier_x.dense", &out, NULL) == IT_OK && out == 1);
    CHECK(it_lora_targets(&c, "x.q_proj", &out, NULL) == IT_OK && out == 1);
    /* a broken regex */
    memset(&c, 0, sizeof c);
    c.target_regex = "(q|v";
    it_err e;
    CHECK(it_lora_targets(&c, "q", &out, &e) == IT_EFORMAT && out == 0);
    check_msg(&e, NULL, "target_modules \"(q|v\"");

    /* through a folder: a regex target, a regex exclusion */
    char dir[4096];
    tbuf b = {0};
    tb_peft(&b, "encoder.block.0.layer.0.SelfAttention.q", 2, 4, 4, 1);
    tb_peft(&b, "encoder.block.1.layer.0.SelfAttention.q", 2, 4, 4, 2);
    tb_peft(&b, "encoder.block.0.layer.0.SelfAttention.k", 2, 4, 4, 3);
    peft_dir(dir, "regex_targets", "{\"r\": 2, \"target_modules\": \".*SelfAttention\\\\.(q|k)\", "
                                   "\"exclude_modules\": \".*block\\\\.1\\\\..*\"}", &b);
    it_adapter *a = load_ok(dir);
    CHECK(a && a->n == 2 && a->nwarn == 1 && strstr(a->warn[0], "encoder.block.1.layer.0.SelfAttention.q"));
    it_adapter_free(a);
    /* a modules_to_save copy saved under the module's own name (PEFT strips "modules_to_save.default") */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_add(&b, "base_model.model.score.weight", IT_F32, 2, (uint64_t[]){2, 4}, 1);
    peft_dir(dir, "mts_plain", "{\"r\": 2, \"target_modules\": [\"q_proj\"], \"modules_to_save\": [\"score\"]}", &b);
    load_fails(dir, IT_EUNSUPPORTED, weights(dir), "tensor \"base_model.model.score.weight\": a modules_to_save copy");
}

/* layers_to_transform (FACTS 2.5 point 5) with and without layers_pattern: the layer index is group 1
 * of current peft's lazy re.match(r".*?\.[^.]*\.(\d+)\."), or of r".*?\.{pattern}\.(\d+)\." (PR #3318). */
static void test_lora_layers_to_transform(void)
{
    if (regex_missing("layers_to_transform")) return;
    it_lora_config c;
    memset(&c, 0, sizeof c);
    char *t[] = {"q", "q_proj", "up_proj"}, *pat[] = {"block"}, *two[] = {"h", "layers"}, *empty[] = {""};
    int64_t layers[] = {1};
    c.targets = t, c.ntargets = 3, c.layers_to_transform = layers, c.nlayers = 1;
    static const struct {
        const char *module;
        int plain, block; /* without layers_pattern; with layers_pattern "block" */
    } cases[] = {
        /* T5 names: the lazy default finds the first ".<name>.<digits>." (block.N), as "block" does */
        {"encoder.block.1.layer.0.SelfAttention.q", 1, 1},
        {"encoder.block.0.layer.1.EncDecAttention.q", 0, 0},
        {"decoder.block.1.layer.1.EncDecAttention.q", 1, 1},
        {"model.layers.1.self_attn.q_proj", 1, 0},
        {"model.layers.0.self_attn.q_proj", 0, 0},
        {"model.layers.1.mlp.experts.0.up_proj", 1, 0}, /* MoE: layer 1, not expert 0 */
        {"model.layers.2.mlp.experts.1.up_proj", 0, 0},
        {"x.q_proj", 0, 0}, /* no index at all: not selected */
        {"q", 1, 1},      /* named exactly: the layer filter does not apply */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int out = -1;
        c.layers_pattern = NULL, c.nlayers_pattern = 0;
        CHECK(it_lora_targets(&c, cases[i].module, &out, NULL) == IT_OK);
        CHECKF(out == cases[i].plain, "%s: %d without layers_pattern", cases[i].module, out);
        /* [""] builds r".*?\.\.(\d+)\.", which never matches: nothing is selected but exact names */
        c.layers_pattern = empty, c.nlayers_pattern = 1;
        CHECK(it_lora_targets(&c, cases[i].module, &out, NULL) == IT_OK);
        CHECKF(out == !strcmp(cases[i].module, "q"), "%s: %d with layers_pattern [\"\"]", cases[i].module, out);
        c.layers_pattern = pat, c.nlayers_pattern = 1;
        CHECK(it_lora_targets(&c, cases[i].module, &out, NULL) == IT_OK);
        CHECKF(out == cases[i].block, "%s: %d with layers_pattern block", cases[i].module, out);
    }
    /* patterns tried in order; the first that matches decides */
    int out = -1;
    c.layers_pattern = two, c.nlayers_pattern = 2;
    CHECK(it_lora_targets(&c, "transformer.h.1.attn.q_proj", &out, NULL) == IT_OK && out == 1);
    CHECK(it_lora_targets(&c, "model.layers.1.self_attn.q_proj", &out, NULL) == IT_OK && out == 1);
    CHECK(it_lora_targets(&c, "model.blocks.1.self_attn.q_proj", &out, NULL) == IT_OK && out == 0);
    /* a target regex ignores layers_to_transform, as in PEFT */
    c.target_regex = ".*q_proj";
    CHECK(it_lora_targets(&c, "model.layers.0.self_attn.q_proj", &out, NULL) == IT_OK && out == 1);

    /* through a folder of T5 names */
    char dir[4096], cfg[4200];
    tbuf b = {0};
    tb_peft(&b, "encoder.block.0.layer.0.SelfAttention.q", 2, 4, 4, 1);
    tb_peft(&b, "encoder.block.1.layer.0.SelfAttention.q", 2, 4, 4, 2);
    tb_peft(&b, "decoder.block.1.layer.1.EncDecAttention.q", 2, 4, 4, 3);
    peft_dir(dir, "layers", "{\"r\": 2, \"target_modules\": [\"q\"], \"layers_to_transform\": 1, "
                            "\"layers_pattern\": \"block\"}", &b);
    it_adapter *a = load_ok(dir);
    CHECK(a && a->n == 2 && a->nwarn == 1 && it_adapter_find(a, "", "encoder.block.1.layer.0.SelfAttention.q"));
    it_adapter_free(a);
    /* layers_pattern "" (a string) is "any"; [""] selects nothing (every module noted as skipped) */
    tb_peft(&b, "encoder.block.1.layer.0.SelfAttention.q", 2, 4, 4, 2);
    peft_dir(dir, "layers_empty", "{\"r\": 2, \"target_modules\": [\"q\"], \"layers_to_transform\": 1, "
                                  "\"layers_pattern\": \"\"}", &b);
    a = load_ok(dir);
    CHECK(a && a->n == 1 && a->cfg.nlayers_pattern == 0);
    it_adapter_free(a);
    tb_peft(&b, "encoder.block.1.layer.0.SelfAttention.q", 2, 4, 4, 2);
    peft_dir(dir, "layers_empty_list", "{\"r\": 2, \"target_modules\": [\"q\"], \"layers_to_transform\": 1, "
                                       "\"layers_pattern\": [\"\"]}", &b);
    a = load_ok(dir);
    CHECK(a && a->n == 0 && a->nwarn == 1 && strstr(a->warn[0], "not selected"));
    it_adapter_free(a);
    /* a layers_pattern with a group of its own: PEFT fails (int() of group 1); the message names the config */
    tb_peft(&b, "encoder.block.1.layer.0.SelfAttention.q", 2, 4, 4, 2);
    peft_dir(dir, "layers_group", "{\"r\": 2, \"target_modules\": [\"q\"], \"layers_to_transform\": 1, "
                                  "\"layers_pattern\": \"(bl)ock\"}", &b);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    load_fails(dir, IT_EFORMAT, cfg, "group 1 of the layer regex is not a layer number in module "
                                     "encoder.block.1.layer.0.SelfAttention.q");
}

/* Where peft 0.10 (the fixtures' writer) and current peft disagree, current peft decides and a note
 * names the module: the layer index (greedy then, lazy now) and rank_pattern / alpha_pattern (one key
 * from chain(rank_pattern, alpha_pattern) matched as ".*\.K$" then, independent "(.*\.)?(K)$" now). */
static void test_lora_peft_versions(void)
{
    if (regex_missing("peft versions")) return;
    char dir[4096], cfg[4200];
    tbuf b = {0};
    /* T5: layers_to_transform [0], no layers_pattern: block 0 now, "layer.1" (index 1) with the greedy regex */
    tb_peft(&b, "encoder.block.0.layer.1.SelfAttention.q", 2, 4, 4, 1);
    tb_peft(&b, "encoder.block.1.layer.0.SelfAttention.q", 2, 4, 4, 2);
    tb_peft(&b, "encoder.block.0.layer.0.SelfAttention.q", 2, 4, 4, 3);
    peft_dir(dir, "versions_layers", "{\"r\": 2, \"target_modules\": [\"q\"], \"layers_to_transform\": [0]}", &b);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    it_adapter *a = load_ok(dir);
    if (a) {
        CHECK(a->n == 2 && it_adapter_find(a, "", "encoder.block.0.layer.1.SelfAttention.q") &&
              it_adapter_find(a, "", "encoder.block.0.layer.0.SelfAttention.q"));
        /* block.0.layer.1: adapted now, not then; block.1.layer.0: not now (skip note), adapted then */
        CHECKF(a->nwarn == 3, "%zu notes", a->nwarn);
        int adapted = 0, skipped = 0;
        for (size_t i = 0; i < a->nwarn; i++) {
            test_note("note: %s", a->warn[i]);
            CHECK(strncmp(a->warn[i], cfg, strlen(cfg)) == 0);
            adapted += strstr(a->warn[i], "encoder.block.0.layer.1.SelfAttention.q\": adapted by current peft") != NULL &&
                       strstr(a->warn[i], "did not adapt it") != NULL;
            skipped += strstr(a->warn[i], "encoder.block.1.layer.0.SelfAttention.q\": not adapted by current peft") != NULL;
        }
        CHECK(adapted == 1 && skipped == 1);
        it_adapter_free(a);
    }
    /* rank_pattern / alpha_pattern: q_proj is in both; peft 0.10 took rank_pattern's key alone (alpha 16) */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 2, 4, 4, 1);
    tb_peft(&b, "model.layers.0.self_attn.v_proj", 8, 4, 4, 2);
    const char *json = "{\"r\": 8, \"lora_alpha\": 16, \"target_modules\": [\"q_proj\", \"v_proj\"], "
                       "\"rank_pattern\": {\"q_proj\": 2}, \"alpha_pattern\": {\"self_attn.q_proj\": 4}}";
    peft_dir(dir, "versions_ranks", json, &b);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    a = load_ok(dir);
    if (a) {
        const it_lora_module *q = it_adapter_find(a, "", "model.layers.0.self_attn.q_proj");
        CHECK(q && q->r == 2 && q->alpha == 4 && q->scale == 2.0);
        CHECKF(a->nwarn == 1 && strstr(a->warn[0], "self_attn.q_proj\": r 2, alpha 4 by current peft") &&
                   strstr(a->warn[0], "give r 2, alpha 16"), "%zu notes: %s", a->nwarn, a->nwarn ? a->warn[0] : "");
        it_adapter_free(a);
    }
    /* a key written as the whole name with '^': current peft matches it, peft 0.10 did not (rank 8 then);
     * tensors of rank 8 fail now, and the message says which peft gives that rank */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 8, 4, 4, 1);
    peft_dir(dir, "versions_old_rank", "{\"r\": 8, \"target_modules\": [\"q_proj\"], "
                                       "\"rank_pattern\": {\"^model.layers.0.self_attn.q_proj\": 4}}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir), "rank 8 in the tensors but 4 from");
    load_fails(dir, IT_EFORMAT, weights(dir), "peft 0.10's rules, one key from chain(rank_pattern, alpha_pattern) "
                                              "matched as .*\\.K$, give rank 8");
    /* a key equal to the whole name applies in both (0.10 through its dict fallback): no note */
    tb_peft(&b, "model.layers.0.self_attn.q_proj", 4, 4, 4, 1);
    peft_dir(dir, "versions_same", "{\"r\": 8, \"target_modules\": [\"q_proj\"], "
                                   "\"rank_pattern\": {\"model.layers.0.self_attn.q_proj\": 4}}", &b);
    a = load_ok(dir);
    CHECK(a && a->n == 1 && a->mods[0].r == 4 && a->nwarn == 0);
    it_adapter_free(a);
}

/* ============================================================================================ */
/* kohya files (FACTS 3.1, 3.3)                                                                  */
/* ============================================================================================ */

static void tb_kohya(tbuf *b, const char *name, uint64_t r, uint64_t in, uint64_t out, int conv, int seed)
{
    char n[256];
    snprintf(n, sizeof n, "%s.lora_down.weight", name);
    if (conv) tb_add(b, n, IT_F16, 4, (uint64_t[]){r, in, 1, 1}, seed);
    else tb_add(b, n, IT_F16, 2, (uint64_t[]){r, in}, seed);
    snprintf(n, sizeof n, "%s.lora_up.weight", name);
    if (conv) tb_add(b, n, IT_F16, 4, (uint64_t[]){out, r, 1, 1}, seed + 1);
    else tb_add(b, n, IT_F16, 2, (uint64_t[]){out, r}, seed + 1);
}

#define K_Q "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
#define K_OUT "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"
#define K_PROJ "lora_unet_down_blocks_0_attentions_0_proj_in"
#define K_TE "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
#define K_FC "lora_te_text_model_encoder_layers_0_mlp_fc1"

static const char *kohya_file(char *path)
{
    tbuf b = {0};
    char n[256];
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    snprintf(n, sizeof n, "%s.alpha", K_Q);
    tb_scalar(&b, n, IT_F16, 2.0f);    /* scale 2/4 */
    tb_kohya(&b, K_OUT, 4, 8, 8, 0, 3); /* no alpha: scale 1 */
    tb_kohya(&b, K_PROJ, 2, 8, 8, 1, 5);
    snprintf(n, sizeof n, "%s.alpha", K_PROJ);
    tb_scalar(&b, n, IT_F32, 0.0f);    /* alpha 0: alpha = r, scale 1 */
    tb_kohya(&b, K_TE, 4, 6, 6, 0, 7);
    snprintf(n, sizeof n, "%s.alpha", K_TE);
    tb_scalar(&b, n, IT_BF16, 8.0f);   /* scale 2 */
    tb_kohya(&b, K_FC, 2, 6, 12, 0, 9);
    tb_kohya(&b, "lora_te2_text_model_encoder_layers_0_self_attn_k_proj", 2, 6, 6, 0, 11);
    return sd_file(path, "kohya.safetensors", &b);
}

static void test_lora_kohya(void)
{
    char path[4096];
    it_adapter *a = load_ok(kohya_file(path));
    if (!a) return;
    CHECK(a->format == IT_ADAPTER_KOHYA && !a->has_config && a->n == 6 && a->nwarn == 0);
    static const struct {
        const char *comp, *name;
        it_lora_kind kind;
        int64_t r;
        double alpha, scale;
    } want[] = {
        {"text_encoder", K_FC, IT_LORA_LINEAR, 2, 2, 1},
        {"text_encoder", K_TE, IT_LORA_LINEAR, 4, 8, 2},
        {"text_encoder_2", "lora_te2_text_model_encoder_layers_0_self_attn_k_proj", IT_LORA_LINEAR, 2, 2, 1},
        {"unet", K_PROJ, IT_LORA_CONV1X1, 2, 2, 1},
        {"unet", K_OUT, IT_LORA_LINEAR, 4, 4, 1},
        {"unet", K_Q, IT_LORA_LINEAR, 4, 2, 0.5},
    };
    for (size_t i = 0; i < a->n && i < 6; i++) {
        const it_lora_module *m = &a->mods[i];
        CHECKF(!strcmp(m->component, want[i].comp) && !strcmp(m->name, want[i].name), "%zu: %s %s", i, m->component,
               m->name);
        CHECKF(m->kind == want[i].kind && m->r == want[i].r && m->alpha == want[i].alpha && m->scale == want[i].scale &&
                   !m->transposed, "%s: r %lld alpha %g scale %g", m->name, (long long)m->r, m->alpha, m->scale);
        CHECK(it_adapter_find(a, want[i].comp, want[i].name) == m);
    }
    CHECK(it_adapter_find(a, "unet", K_TE) == NULL);
    check_delta(it_adapter_find(a, "unet", K_Q), path, K_Q ".lora_down.weight", K_Q ".lora_up.weight", 0.5);
    check_delta(it_adapter_find(a, "unet", K_PROJ), path, K_PROJ ".lora_down.weight", K_PROJ ".lora_up.weight", 1.0);
    check_delta(it_adapter_find(a, "text_encoder", K_TE), path, K_TE ".lora_down.weight", K_TE ".lora_up.weight", 2.0);
    it_adapter_free(a);
}

/* Kohya names -> module paths, given the model's modules (FACTS 3.1: prefix + path with '.' -> '_'). */
/* kohya names in the original LDM / SGM spelling of the UNet (input_blocks, middle_block,
 * output_blocks) resolve to the diffusers paths, with layers_per_block (here 2, so L = 3) read off
 * the resnets' paths. */
static void test_lora_kohya_sgm(void)
{
    char path[4096];
    it_err e;
    const char *unet[] = {
        "down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.1.conv1",
        "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q", /* input_blocks.5.1 */
        "mid_block.attentions.0.proj_in",                               /* middle_block.1 */
        "up_blocks.2.attentions.0.transformer_blocks.0.attn2.to_k",     /* output_blocks.6.1 */
    };
    tbuf b = {0};
    tb_kohya(&b, "lora_unet_input_blocks_5_1_transformer_blocks_0_attn1_to_q", 2, 8, 8, 0, 1);
    tb_kohya(&b, "lora_unet_middle_block_1_proj_in", 2, 8, 8, 1, 2);
    tb_kohya(&b, "lora_unet_output_blocks_6_1_transformer_blocks_0_attn2_to_k", 2, 8, 8, 0, 3);
    it_adapter *a = load_ok(sd_file(path, "kohya-sgm.safetensors", &b));
    if (!a) return;
    CHECKF(it_adapter_resolve(a, "unet", unet, 5, &e) == IT_OK, "%s", e.msg);
    for (int k = 2; k < 5; k++) CHECKF(it_adapter_find(a, "unet", unet[k]) != NULL, "%s not resolved", unet[k]);
    it_adapter_free(a);
    /* with layers_per_block 1 (L = 2) input_blocks.5.1 is down_blocks.2.attentions.0: not a module here */
    const char *one[] = {unet[0], unet[2], unet[3], unet[4]};
    a = load_ok(path);
    if (!a) return;
    CHECK(it_adapter_resolve(a, "unet", one, 4, &e) == IT_ENOTFOUND);
    check_msg(&e, path, "kohya module lora_unet_input_blocks_5_1_transformer_blocks_0_attn1_to_q names no module");
    it_adapter_free(a);
}

static void test_lora_kohya_resolve(void)
{
    char path[4096];
    it_err e;
    const char *unet[] = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "down_blocks.0.attentions.0.proj_in",
        "down_blocks.0.attentions.0.proj_out",
        "conv_in",
    };
    const char *te[] = {"text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.mlp.fc1",
                        "text_model.encoder.layers.0.self_attn.k_proj"};
    it_adapter *a = load_ok(kohya_file(path));
    if (!a) return;
    CHECKF(it_adapter_resolve(a, "unet", unet, 5, &e) == IT_OK, "%s", e.msg);
    CHECKF(it_adapter_resolve(a, "text_encoder", te, 3, &e) == IT_OK, "%s", e.msg);
    CHECK(it_adapter_resolve(a, "unet", unet, 5, &e) == IT_OK); /* again: nothing left to do */
    const it_lora_module *q = it_adapter_find(a, "unet", unet[0]), *p = it_adapter_find(a, "unet", unet[2]);
    CHECK(q && q->scale == 0.5 && q->kind == IT_LORA_LINEAR);
    CHECK(p && p->kind == IT_LORA_CONV1X1 && it_adapter_find(a, "unet", unet[1]));
    CHECK(it_adapter_find(a, "text_encoder", te[0]) && it_adapter_find(a, "text_encoder", te[1]));
    CHECK(it_adapter_find(a, "unet", K_Q) == NULL);
    /* text_encoder_2 is still unresolved, and sorting is by (component, name) again */
    CHECK(it_adapter_find(a, "text_encoder_2", "lora_te2_text_model_encoder_layers_0_self_attn_k_proj") != NULL);
    for (size_t i = 1; i < a->n; i++) {
        int c = strcmp(a->mods[i - 1].component, a->mods[i].component);
        CHECK(c < 0 || (c == 0 && strcmp(a->mods[i - 1].name, a->mods[i].name) < 0));
    }
    check_delta(q, path, K_Q ".lora_down.weight", K_Q ".lora_up.weight", 0.5);
    CHECKF(it_adapter_resolve(a, "text_encoder_2", te, 3, &e) == IT_OK, "%s", e.msg);
    CHECK(it_adapter_find(a, "text_encoder_2", te[2]) != NULL);
    CHECK(it_adapter_resolve(a, "vae", te, 3, &e) == IT_EINVAL);
    it_adapter_free(a);

    /* a kohya name that names no module of the model: nothing changes */
    a = load_ok(path);
    if (!a) return;
    CHECK(it_adapter_resolve(a, "unet", unet + 1, 4, &e) == IT_ENOTFOUND);
    check_msg(&e, path, "kohya module " K_Q " names no module of the unet");
    CHECK(it_adapter_find(a, "unet", K_OUT) && it_adapter_find(a, "unet", K_Q));
    CHECK(it_adapter_resolve(a, "text_encoder", NULL, 0, &e) == IT_ENOTFOUND);
    /* two model paths with one kohya spelling */
    const char *amb[] = {unet[0], unet[1], unet[2], "down_blocks.0.attentions.0.proj.in", "down_blocks.0.attentions.0.proj_in"};
    CHECK(it_adapter_resolve(a, "unet", amb, 5, &e) == IT_EFORMAT);
    check_msg(&e, path, "kohya module " K_PROJ " is ambiguous");
    /* the same path listed twice is not ambiguous */
    const char *twice[] = {unet[0], unet[1], unet[2], unet[2]};
    CHECKF(it_adapter_resolve(a, "unet", twice, 4, &e) == IT_OK, "%s", e.msg);
    it_adapter_free(a);

    /* lora_te_ and lora_te1_ spellings of one module */
    tbuf b = {0};
    tb_kohya(&b, "lora_te_text_model_encoder_layers_0_mlp_fc1", 2, 6, 12, 0, 1);
    tb_kohya(&b, "lora_te1_text_model_encoder_layers_0_mlp_fc1", 2, 6, 12, 0, 2);
    a = load_ok(sd_file(path, "kohya_te1.safetensors", &b));
    if (!a) return;
    CHECK(a->n == 2 && !strcmp(a->mods[0].component, "text_encoder") && !strcmp(a->mods[1].component, "text_encoder"));
    CHECK(it_adapter_resolve(a, "text_encoder", te, 3, &e) == IT_EFORMAT);
    check_msg(&e, path, "both name text_model.encoder.layers.0.mlp.fc1");
    it_adapter_free(a);
}

/* Refusals: LyCORIS, DoRA, a bare PEFT file, bad alphas, 3x3 convolutions, unknown keys. */
static void test_lora_kohya_bad(void)
{
    char path[4096];
    tbuf b = {0};
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_add(&b, "lora_unet_x.hada_w1_a", IT_F16, 2, (uint64_t[]){4, 8}, 1);
    load_fails(sd_file(path, "loha.safetensors", &b), IT_EUNSUPPORTED, path, "tensor \"lora_unet_x.hada_w1_a\": a LyCORIS tensor");
    tb_add(&b, "lora_unet_x.lokr_w1", IT_F16, 2, (uint64_t[]){4, 8}, 1);
    load_fails(sd_file(path, "lokr.safetensors", &b), IT_EUNSUPPORTED, path, "a LyCORIS tensor");
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_add(&b, K_Q ".dora_scale", IT_F16, 2, (uint64_t[]){1, 8}, 1);
    load_fails(sd_file(path, "dora.safetensors", &b), IT_EUNSUPPORTED, path, "dora_scale\": a DoRA scale");
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_add(&b, K_Q ".lora_mystery", IT_F16, 2, (uint64_t[]){1, 8}, 1);
    load_fails(sd_file(path, "kunknown.safetensors", &b), IT_EFORMAT, path, "not a tensor of a kohya LoRA");
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_add(&b, K_Q ".alpha", IT_F16, 1, (uint64_t[]){2}, 1);
    load_fails(sd_file(path, "kalpha2.safetensors", &b), IT_EFORMAT, path, "expected a scalar alpha");
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_add(&b, K_Q ".alpha", IT_I32, 0, NULL, 1);
    load_fails(sd_file(path, "kalphaint.safetensors", &b), IT_EFORMAT, path, "dtype I32");
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_scalar(&b, K_Q ".alpha", IT_F32, INFINITY);
    load_fails(sd_file(path, "kalphainf.safetensors", &b), IT_EFORMAT, path, "alpha is not finite");
    tb_scalar(&b, K_Q ".alpha", IT_F32, 4);
    tb_add(&b, K_Q ".lora_down.weight", IT_F16, 2, (uint64_t[]){4, 8}, 1);
    load_fails(sd_file(path, "konly.safetensors", &b), IT_EFORMAT, path, "has no matching lora_B (up)");
    tb_add(&b, "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", IT_F16, 4, (uint64_t[]){4, 8, 3, 3}, 1);
    tb_add(&b, "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", IT_F16, 4, (uint64_t[]){8, 4, 1, 1}, 1);
    load_fails(sd_file(path, "k3x3.safetensors", &b), IT_EUNSUPPORTED, path,
               "module \"lora_unet_down_blocks_0_resnets_0_conv1\" (unet): a 3x3 convolution LoRA");
    tb_peft(&b, "m.q_proj", 4, 8, 8, 1);
    load_fails(sd_file(path, "bare_peft.safetensors", &b), IT_EUNSUPPORTED, path, "load the adapter folder");
    load_fails(sd_file(path, "nothing.safetensors", &b), IT_EFORMAT, path, "holds no LoRA tensors");
    /* a kohya key among diffusers keys: not kohya, and not a diffusers key either */
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_pair(&b, "unet.", "a.to_k", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    load_fails(sd_file(path, "mixed.safetensors", &b), IT_EFORMAT, path, "not a LoRA tensor of a kohya or diffusers");
}

/* Element k of b's tensor i set to v (in the tensor's dtype). */
static void tb_set(tbuf *b, size_t i, size_t k, float v)
{
    size_t bytes = (size_t)it_dtype_bits(b->t[i].dtype) / 8;
    CHECK(k < b->t[i].numel && it_f32_encode((unsigned char *)b->data[i] + k * bytes, b->t[i].dtype, &v, 1, NULL) == IT_OK);
}

/* A lora_A / lora_B (kohya: lora_down / lora_up) holding NaN or Inf is refused where it is read,
 * naming the file, the tensor and the element, in every format and dtype. */
static void test_lora_nonfinite(void)
{
    char path[4096], dir[4096];
    tbuf b = {0};
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_set(&b, 1, 5, NAN);
    load_fails(sd_file(path, "knan.safetensors", &b), IT_EFORMAT, path,
               "tensor \"" K_Q ".lora_up.weight\": holds NaN or Inf (element 5 is NaN)");
    tb_kohya(&b, K_Q, 4, 8, 8, 0, 1);
    tb_set(&b, 0, 0, -INFINITY);
    load_fails(sd_file(path, "kinf.safetensors", &b), IT_EFORMAT, path,
               "tensor \"" K_Q ".lora_down.weight\": holds NaN or Inf (element 0 is -Inf)");
    tb_pair(&b, "unet.", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", ".lora.down.weight",
            ".lora.up.weight", 4, 8, 8, 1);
    tb_set(&b, 1, 31, INFINITY);
    load_fails(sd_file(path, "dinf.safetensors", &b), IT_EFORMAT, path, "to_q.lora.up.weight\": holds NaN or Inf (element 31 is Inf)");
    tb_peft(&b, "m.q_proj", 4, 8, 8, 1);
    tb_peft(&b, "m.v_proj", 4, 8, 8, 3);
    tb_set(&b, 2, 7, NAN);
    peft_dir(dir, "peft_nan", "{\"r\": 4, \"target_modules\": [\"q_proj\", \"v_proj\"]}", &b);
    load_fails(dir, IT_EFORMAT, weights(dir),
               "tensor \"base_model.model.m.v_proj.lora_A.weight\": holds NaN or Inf (element 7 is NaN)");
}

/* ============================================================================================ */
/* diffusers files (FACTS 3.2)                                                                   */
/* ============================================================================================ */

#define ATT "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
#define TEL "text_model.encoder.layers.0"

static void test_lora_diffusers(void)
{
    char path[4096];
    tbuf b = {0};
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);         /* PEFT style */
    tb_pair(&b, "unet.", ATT ".to_k", ".lora.down.weight", ".lora.up.weight", 4, 8, 8, 3);      /* training script */
    tb_pair(&b, "unet.", ATT ".to_out.0", ".lora.down.weight", ".lora.up.weight", 4, 8, 8, 5);
    tb_pair(&b, "", "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out", "_lora.down.weight",
            "_lora.up.weight", 4, 8, 8, 7);                                                      /* old attn-procs */
    tb_pair(&b, "unet.", ATT ".processor.to_v", "_lora.down.weight", "_lora.up.weight", 4, 8, 8, 9);
    tb_pair(&b, "text_encoder.", TEL ".mlp.fc1", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight",
            4, 6, 12, 11);
    tb_pair(&b, "text_encoder.", TEL ".self_attn.to_q", "_lora.down.weight", "_lora.up.weight", 4, 6, 6, 13);
    tb_pair(&b, "text_encoder.", TEL ".self_attn.to_out", "_lora.down.weight", "_lora.up.weight", 4, 6, 6, 15);
    tb_pair(&b, "text_encoder_2.", TEL ".self_attn.k_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 6, 17);
    tb_pair(&b, "", "mid_block.attentions.0.proj_out", ".lora_A.weight", ".lora_B.weight", 2, 8, 8, 19); /* un-prefixed */
    tb_scalar(&b, "unet." ATT ".to_k.alpha", IT_F16, 2.0f);
    it_adapter *a = load_ok(sd_file(path, "diffusers.safetensors", &b));
    if (!a) return;
    static const struct {
        const char *comp, *name;
        double scale;
    } want[] = {
        {"text_encoder", TEL ".mlp.fc1", 1},
        {"text_encoder", TEL ".self_attn.out_proj", 1},
        {"text_encoder", TEL ".self_attn.q_proj", 1},
        {"text_encoder_2", TEL ".self_attn.k_proj", 1},
        {"unet", ATT ".to_k", 0.5},
        {"unet", ATT ".to_out.0", 1},
        {"unet", ATT ".to_q", 1},
        {"unet", ATT ".to_v", 1},
        {"unet", "mid_block.attentions.0.proj_out", 1},
        {"unet", "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0", 1},
    };
    CHECKF(a->format == IT_ADAPTER_DIFFUSERS && a->n == 10, "%zu modules", a->n);
    for (size_t i = 0; i < a->n && i < 10; i++) {
        const it_lora_module *m = &a->mods[i];
        CHECKF(!strcmp(m->component, want[i].comp) && !strcmp(m->name, want[i].name) && m->scale == want[i].scale,
               "%zu: %s %s scale %g", i, m->component, m->name, m->scale);
    }
    check_delta(it_adapter_find(a, "unet", ATT ".to_out.0"), path, "unet." ATT ".to_out.0.lora.down.weight",
                "unet." ATT ".to_out.0.lora.up.weight", 1.0);
    check_delta(it_adapter_find(a, "text_encoder", TEL ".self_attn.q_proj"), path,
                "text_encoder." TEL ".self_attn.to_q_lora.down.weight", "text_encoder." TEL ".self_attn.to_q_lora.up.weight", 1.0);
    check_delta(it_adapter_find(a, "unet", ATT ".to_k"), path, "unet." ATT ".to_k.lora.down.weight",
                "unet." ATT ".to_k.lora.up.weight", 0.5);
    it_adapter_free(a);

    /* diffusers' folder file name */
    char dir[4096], file[4200];
    mk_dir(dir, "pipe_lora");
    snprintf(file, sizeof file, "%s/pytorch_lora_weights.safetensors", dir);
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    tb_save(&b, file);
    a = load_ok(dir);
    CHECK(a && a->n == 1 && a->format == IT_ADAPTER_DIFFUSERS);
    it_adapter_free(a);

    /* two spellings of one module; an old key of a layer without mapping; a lora bias; DoRA */
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    tb_pair(&b, "unet.", ATT ".processor.to_q", "_lora.down.weight", "_lora.up.weight", 4, 8, 8, 1);
    load_fails(sd_file(path, "ddup.safetensors", &b), IT_EFORMAT, path, "are both the lora_A of module \"" ATT ".to_q\" (unet)");
    tb_pair(&b, "unet.", ATT ".processor.add_k_proj", "_lora.down.weight", "_lora.up.weight", 4, 8, 8, 1);
    load_fails(sd_file(path, "dold.safetensors", &b), IT_EFORMAT, path, "an old attn-procs key");
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    tb_add(&b, "unet." ATT ".to_q.lora_B.bias", IT_F32, 1, (uint64_t[]){8}, 1);
    load_fails(sd_file(path, "dbias.safetensors", &b), IT_EUNSUPPORTED, path, "lora_bias");
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    tb_add(&b, "unet." ATT ".to_q.lora_magnitude_vector", IT_F32, 1, (uint64_t[]){8}, 1);
    load_fails(sd_file(path, "ddora.safetensors", &b), IT_EUNSUPPORTED, path, "DoRA");
}

/* The scale of module name of component comp is want (and its rank r). */
static void check_scale(const it_adapter *a, const char *comp, const char *name, int64_t r, double want)
{
    const it_lora_module *m = it_adapter_find(a, comp, name);
    CHECKF(m != NULL, "%s %s missing", comp, name);
    if (m) CHECKF(m->r == r && fabs(m->scale - want) <= 1e-15 * fabs(want), "%s %s: r %lld scale %.17g, want r %lld "
                  "scale %.17g", comp, name, (long long)m->r, m->scale, (long long)r, want);
}

/* diffusers' lora_adapter_metadata (loaders/lora_base.py): flat "<component>.<LoraConfig field>" keys in
 * one JSON string; each component's r, lora_alpha, use_rslora, rank_pattern and alpha_pattern decide its
 * modules' scales (utils/peft_utils.py _create_lora_config), and the alpha tensors are not used. */
static void test_lora_diffusers_metadata(void)
{
    if (regex_missing("lora_adapter_metadata")) return;
    char path[4096];
    tbuf b = {0};
    const char *meta = "{\n  \"text_encoder.lora_alpha\": 2,\n  \"text_encoder.r\": 2,\n  \"text_encoder.use_rslora\": true,\n"
                       "  \"unet.alpha_pattern\": {\"to_v\": 2},\n  \"unet.init_lora_weights\": \"gaussian\",\n"
                       "  \"unet.lora_alpha\": 8,\n  \"unet.peft_type\": \"LORA\",\n  \"unet.r\": 4,\n"
                       "  \"unet.rank_pattern\": {\"^" ATT ".to_k\": 8},\n"
                       "  \"unet.target_modules\": [\"to_q\", \"to_k\", \"to_v\"],\n"
                       "  \"unet.use_dora\": false\n}";
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    tb_pair(&b, "unet.", ATT ".to_k", ".lora_A.weight", ".lora_B.weight", 8, 8, 8, 3);
    tb_pair(&b, "unet.", ATT ".to_v", ".lora.down.weight", ".lora.up.weight", 4, 8, 8, 5);
    tb_scalar(&b, "unet." ATT ".to_q.alpha", IT_F32, 1.0f); /* not used: the metadata decides */
    tb_pair(&b, "text_encoder.", TEL ".self_attn.q_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 6, 7);
    snprintf(path, sizeof path, "%s", test_tmppath("dmeta.safetensors"));
    tb_save_meta(&b, path, meta);
    it_adapter *a = load_ok(path);
    if (a) {
        CHECK(a->format == IT_ADAPTER_DIFFUSERS && a->n == 4 && !a->has_config);
        check_scale(a, "unet", ATT ".to_q", 4, 2.0);
        check_scale(a, "unet", ATT ".to_k", 8, 1.0);
        check_scale(a, "unet", ATT ".to_v", 4, 0.5);
        check_scale(a, "text_encoder", TEL ".self_attn.q_proj", 2, 2 / sqrt(2.0));
        check_delta(it_adapter_find(a, "unet", ATT ".to_v"), path, "unet." ATT ".to_v.lora.down.weight",
                    "unet." ATT ".to_v.lora.up.weight", 0.5);
        size_t described = 0, old = 0;
        for (size_t i = 0; i < a->nwarn; i++) {
            test_note("note: %s", a->warn[i]);
            CHECK(strncmp(a->warn[i], path, strlen(path)) == 0);
            described += strstr(a->warn[i], "lora_adapter_metadata \"") && strstr(a->warn[i], "LoRA r ");
            old += strstr(a->warn[i], ATT ".to_k\" (unet): r 8, alpha 8 by current peft") != NULL; /* 0.10: r 4 */
        }
        CHECKF(described == 2 && old == 1 && a->nwarn == 3, "%zu notes", a->nwarn);
        it_adapter_free(a);
    }
    /* an empty value is no metadata (diffusers: "json.loads(raw) if raw else None"): scale first_r / r = 1 */
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
    snprintf(path, sizeof path, "%s", test_tmppath("dmeta_empty.safetensors"));
    tb_save_meta(&b, path, "");
    a = load_ok(path);
    CHECK(a && a->n == 1 && a->mods[0].scale == 1.0 && a->nwarn == 0);
    it_adapter_free(a);

    static const struct {
        const char *meta, *want;
        int code;
    } bad[] = {
        {"{\"unet.r\": 4}", "holds no \"text_encoder.\" keys for the text_encoder's LoRA tensors", IT_EFORMAT},
        {"{\"unet\": {\"r\": 4}, \"text_encoder\": {\"r\": 2}}", "holds no \"unet.\" keys", IT_EFORMAT},
        {"{\"unet.r\": 4, \"unet.use_dora\": true, \"text_encoder.r\": 2}",
         "lora_adapter_metadata \"unet.*\": use_dora: DoRA", IT_EUNSUPPORTED},
        {"{\"unet.r\": 4, \"text_encoder.r\": 2, \"text_encoder.lora_bias\": true}", "\"text_encoder.*\": lora_bias",
         IT_EUNSUPPORTED},
        {"{\"unet.r\": 4, \"unet.init_lora_weights\": \"pissa\", \"text_encoder.r\": 2}", "init_lora_weights \"pissa\"",
         IT_EUNSUPPORTED},
        {"{\"unet.r\": 8, \"text_encoder.r\": 2}", "rank 4 in the tensors but 8 from", IT_EFORMAT},
        {"{\"unet.r\": 0, \"text_encoder.r\": 2}", "\"unet.*\": r: expected a positive integer, got 0", IT_EFORMAT},
        {"{\"unet.r\": 4, \"unet.rank_pattern\": {\"to_q(\": 4}, \"text_encoder.r\": 2}",
         "\"unet.*\": rank_pattern key \"to_q(\"", IT_EFORMAT},
        {"{\"unet.r\": 4,", "lora_adapter_metadata", IT_EFORMAT},
        {"[1, 2]", "expected a JSON object of \"<component>.<LoraConfig field>\" keys, got a JSON array", IT_EFORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
        tb_pair(&b, "text_encoder.", TEL ".self_attn.q_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 6, 7);
        snprintf(path, sizeof path, "%s", test_tmppath("dmeta_bad.safetensors"));
        tb_save_meta(&b, path, bad[i].meta);
        load_fails(path, bad[i].code, path, bad[i].want);
    }
}

/* Alphas named after the converted down weight (diffusers' kohya conversion: split(".lora.")[0] +
 * ".alpha", which keeps "to_q_lora.down.weight" for attention projections) scale their module. */
static void test_lora_diffusers_alpha_names(void)
{
    char path[4096];
    tbuf b = {0};
    tb_pair(&b, "unet.", ATT ".processor.to_q", "_lora.down.weight", "_lora.up.weight", 4, 8, 8, 1);
    tb_scalar(&b, "unet." ATT ".processor.to_q_lora.down.weight.alpha", IT_F16, 2.0f);
    tb_pair(&b, "unet.", ATT ".processor.to_out", "_lora.down.weight", "_lora.up.weight", 4, 8, 8, 3);
    tb_scalar(&b, "unet." ATT ".processor.to_out_lora.down.weight.alpha", IT_F16, 8.0f);
    tb_pair(&b, "unet.", "mid_block.attentions.0.proj_in", ".lora.down.weight", ".lora.up.weight", 2, 8, 8, 5);
    tb_scalar(&b, "unet.mid_block.attentions.0.proj_in.lora.down.weight.alpha", IT_F32, 1.0f);
    tb_pair(&b, "text_encoder.", TEL ".self_attn.to_k", "_lora.down.weight", "_lora.up.weight", 4, 6, 6, 7);
    tb_scalar(&b, "text_encoder." TEL ".self_attn.to_k_lora.down.weight.alpha", IT_F32, 1.0f);
    tb_pair(&b, "text_encoder.", TEL ".mlp.fc1", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight", 2,
            6, 12, 9);
    tb_scalar(&b, "text_encoder." TEL ".mlp.fc1.lora_linear_layer.down.weight.alpha", IT_F32, 4.0f);
    it_adapter *a = load_ok(sd_file(path, "dalpha_names.safetensors", &b));
    if (a) {
        CHECKF(a->n == 5, "%zu modules", a->n);
        check_scale(a, "unet", ATT ".to_q", 4, 0.5);
        check_scale(a, "unet", ATT ".to_out.0", 4, 2.0);
        check_scale(a, "unet", "mid_block.attentions.0.proj_in", 2, 0.5);
        check_scale(a, "text_encoder", TEL ".self_attn.k_proj", 4, 0.25);
        check_scale(a, "text_encoder", TEL ".mlp.fc1", 2, 2.0);
        it_adapter_free(a);
    }
    /* an alpha named after an up weight, or after a down weight of no LoRA layer: refused by name */
    tb_pair(&b, "unet.", ATT ".to_q", ".lora.down.weight", ".lora.up.weight", 4, 8, 8, 1);
    tb_scalar(&b, "unet." ATT ".to_q.lora.up.weight.alpha", IT_F32, 1.0f);
    load_fails(sd_file(path, "dalpha_up.safetensors", &b), IT_EFORMAT, path,
               "to_q.lora.up.weight.alpha\": an alpha named after a weight that is not a LoRA down weight");
    tb_pair(&b, "unet.", ATT ".to_q", ".lora.down.weight", ".lora.up.weight", 4, 8, 8, 1);
    tb_scalar(&b, "unet." ATT ".to_q.down.weight.alpha", IT_F32, 1.0f);
    load_fails(sd_file(path, "dalpha_down.safetensors", &b), IT_EFORMAT, path, "which module it scales is unclear");
}

/* Component prefixes: unet, text_encoder, text_encoder_2, or an un-prefixed UNet module; any other first
 * segment (another pipeline's component) is refused naming it. */
static void test_lora_diffusers_components(void)
{
    char path[4096];
    tbuf b = {0};
    tb_pair(&b, "", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", ".lora_A.weight", ".lora_B.weight",
            4, 8, 8, 1);
    tb_pair(&b, "", "time_embedding.linear_1", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 3);
    tb_pair(&b, "", "conv_in", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 5);
    tb_pair(&b, "unet.", "up_blocks.0.attentions.0.proj_out", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 7);
    it_adapter *a = load_ok(sd_file(path, "dcomp.safetensors", &b));
    if (a) {
        CHECK(a->n == 4 && it_adapter_find(a, "unet", "time_embedding.linear_1") && it_adapter_find(a, "unet", "conv_in"));
        for (size_t i = 0; i < a->n; i++) CHECK(!strcmp(a->mods[i].component, "unet"));
        it_adapter_free(a);
    }
    static const char *const other[] = {"transformer", "text_encoder_3", "prior", "decoder"};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        char prefix[64], want[160];
        snprintf(prefix, sizeof prefix, "%s.", other[i]);
        tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
        tb_pair(&b, prefix, "blocks.0.attn.to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 1);
        snprintf(want, sizeof want, "component \"%s\" is not one iteris merges", other[i]);
        load_fails(sd_file(path, "dcomp_other.safetensors", &b), IT_EUNSUPPORTED, path, want);
    }
}

/* No alphas, mixed ranks: diffusers' get_peft_kwargs makes lora_alpha the rank of the first lora_B of
 * its rank dict (the UNet's sorted keys; the text encoder's module order, k_proj before q_proj), so a
 * module of rank r gets scale first_r / r. */
static void test_lora_diffusers_mixed_ranks(void)
{
    char path[4096];
    tbuf b = {0};
    tb_pair(&b, "unet.", ATT ".to_k", ".lora.down.weight", ".lora.up.weight", 8, 8, 8, 1);   /* first by name */
    tb_pair(&b, "unet.", ATT ".to_q", ".lora_A.weight", ".lora_B.weight", 4, 8, 8, 3);
    tb_pair(&b, "unet.", "up_blocks.1.attentions.0.proj_in", ".lora_A.weight", ".lora_B.weight", 2, 8, 8, 5);
    tb_pair(&b, "text_encoder.", TEL ".mlp.fc1", ".lora_A.weight", ".lora_B.weight", 2, 6, 12, 7); /* first by name */
    tb_pair(&b, "text_encoder.", TEL ".self_attn.q_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 6, 9);
    tb_pair(&b, "text_encoder.", TEL ".self_attn.k_proj", ".lora_A.weight", ".lora_B.weight", 4, 6, 6, 11); /* first */
    tb_pair(&b, "text_encoder.", "text_model.encoder.layers.1.self_attn.k_proj", ".lora_A.weight", ".lora_B.weight", 2,
            6, 6, 13);
    tb_pair(&b, "text_encoder_2.", TEL ".self_attn.q_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 6, 15);
    tb_pair(&b, "text_encoder_2.", TEL ".self_attn.v_proj", ".lora_A.weight", ".lora_B.weight", 2, 6, 6, 17);
    it_adapter *a = load_ok(sd_file(path, "dmixed.safetensors", &b));
    if (!a) return;
    CHECKF(a->n == 9, "%zu modules", a->n);
    check_scale(a, "unet", ATT ".to_k", 8, 1.0);
    check_scale(a, "unet", ATT ".to_q", 4, 2.0);
    check_scale(a, "unet", "up_blocks.1.attentions.0.proj_in", 2, 4.0);
    check_scale(a, "text_encoder", TEL ".self_attn.k_proj", 4, 1.0);
    check_scale(a, "text_encoder", TEL ".mlp.fc1", 2, 2.0);
    check_scale(a, "text_encoder", TEL ".self_attn.q_proj", 2, 2.0);
    check_scale(a, "text_encoder", "text_model.encoder.layers.1.self_attn.k_proj", 2, 2.0);
    check_scale(a, "text_encoder_2", TEL ".self_attn.q_proj", 2, 1.0);
    check_delta(it_adapter_find(a, "unet", "up_blocks.1.attentions.0.proj_in"), path,
                "unet.up_blocks.1.attentions.0.proj_in.lora_A.weight", "unet.up_blocks.1.attentions.0.proj_in.lora_B.weight",
                4.0);
    /* one note per component of mixed ranks */
    CHECKF(a->nwarn == 2, "%zu notes", a->nwarn);
    for (size_t i = 0; i < a->nwarn; i++) {
        test_note("note: %s", a->warn[i]);
        CHECK(strstr(a->warn[i], "lora_alpha to the rank of its first lora_B") != NULL);
    }
    CHECK(a->nwarn == 2 && strstr(a->warn[0], ": unet: no alphas and ranks from 2 to 8") &&
          strstr(a->warn[1], ": text_encoder: no alphas and ranks from 2 to 4"));
    it_adapter_free(a);
}

/* it_lora_delta against a naive triple loop on an odd shape, and the scale applied last. */
static void test_lora_delta_naive(void)
{
    float A[3 * 5], B[7 * 3];
    for (int i = 0; i < 15; i++) A[i] = val((uint64_t)i, 3) * 1.37f;
    for (int i = 0; i < 21; i++) B[i] = val((uint64_t)i, 8) * 0.71f;
    it_lora_module m = {.name = "m", .kind = IT_LORA_LINEAR, .d_out = 7, .d_in = 5, .r = 3, .alpha = 3, .scale = 0.3,
                        .A = A, .B = B};
    double d[35];
    it_lora_delta(&m, d);
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) {
            double s = 0;
            for (int k = 0; k < 3; k++) s += (double)B[i * 3 + k] * A[k * 5 + j];
            CHECK(d[i * 5 + j] == 0.3 * s);
        }
}

void suite_lora(void)
{
    RUN(test_lora_fixture_adapters);
    RUN(test_lora_fixture_shapes);
    RUN(test_lora_peft_dtypes_fan_in_fan_out);
    RUN(test_lora_peft_embedding);
    RUN(test_lora_peft_conv);
    RUN(test_lora_peft_refusals);
    RUN(test_lora_peft_bad);
    RUN(test_lora_peft_not_plain);
    RUN(test_lora_peft_unprefixed);
    RUN(test_lora_peft_embedding_copies);
    RUN(test_lora_peft_targets_list);
    RUN(test_lora_rank_pattern);
    RUN(test_lora_target_regex);
    RUN(test_lora_layers_to_transform);
    RUN(test_lora_peft_versions);
    RUN(test_lora_kohya);
    RUN(test_lora_kohya_resolve);
    RUN(test_lora_kohya_sgm);
    RUN(test_lora_kohya_bad);
    RUN(test_lora_diffusers);
    RUN(test_lora_diffusers_metadata);
    RUN(test_lora_diffusers_alpha_names);
    RUN(test_lora_diffusers_components);
    RUN(test_lora_diffusers_mixed_ranks);
    RUN(test_lora_delta_naive);
    RUN(test_lora_nonfinite);
}
