/* test_cli.c -- the command line as a user runs it: `iteris inspect` (text and --json) on real
 * files and folders, exit statuses, one-line errors; hostile input to merge / eval / forward (NaN or
 * Inf in adapters, base weights, sample tensors and activations; mismatched adapters, samples and
 * options), each refused with one line naming the file or option. The binary is $ITERIS_BIN (set by
 * make). */
#include "test.h"

#include "iteris.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef struct {
    int status;           /* exit status, -1 if it did not exit normally */
    unsigned char *out;   /* stdout */
    unsigned char *err;   /* stderr */
    size_t outlen, errlen;
} run_result;

/* Runs "$ITERIS_BIN args" with stdout and stderr captured. */
static run_result run_cli(const char *args)
{
    const char *bin = getenv("ITERIS_BIN");
    char cmd[8192];
    run_result r = {0};
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s </dev/null", bin && *bin ? bin : "./iteris", args, test_tmppath("cli.out"),
             test_tmppath("cli.err"));
    int st = system(cmd);
    r.status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    r.out = test_read_file(test_tmppath("cli.out"), &r.outlen);
    r.err = test_read_file(test_tmppath("cli.err"), &r.errlen);
    return r;
}

static void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

/* Exactly one line on stderr. */
static int one_line(const run_result *r)
{
    if (!r->err || r->errlen == 0 || r->err[r->errlen - 1] != '\n') return 0;
    return memchr(r->err, '\n', r->errlen) == r->err + r->errlen - 1;
}

/* inspect --json lists exactly the tensors, dtypes, shapes and metadata of the file. */
static void inspect_json_matches_file(void)
{
    const char *files[] = {"llama/base/model.safetensors", "unet/inputs.safetensors", "clip/adapters/lora_r4_a8_mlp/adapter_model.safetensors"};
    for (size_t f = 0; f < 3; f++) {
        char args[512];
        snprintf(args, sizeof args, "inspect --json %s", test_data(files[f]));
        run_result r = run_cli(args);
        CHECKF(r.status == 0, "%s: status %d", files[f], r.status);
        it_json_doc *doc = NULL;
        it_st *st = NULL;
        it_err err;
        CHECK(r.out && it_json_parse(&doc, r.out, r.outlen, IT_JSON_NODUP, &err) == IT_OK);
        CHECK(it_st_open(&st, test_data(files[f]), &err) == IT_OK);
        const it_json *root = doc ? it_json_root(doc) : NULL, *tensors = it_json_get(root, "tensors"), *meta = it_json_get(root, "metadata");
        CHECK(tensors && tensors->type == IT_JSON_OBJ && st && tensors->n == it_st_count(st));
        for (size_t i = 0; tensors && st && i < tensors->n; i++) {
            const it_tensor *t = it_st_find(st, tensors->keys[i]);
            const it_json *e = &tensors->items[i], *dt = it_json_get(e, "dtype"), *sh = it_json_get(e, "shape");
            CHECKF(t && dt && !strcmp(dt->s, it_dtype_name(t->dtype)) && sh && sh->n == t->ndim, "%s", tensors->keys[i]);
            for (size_t d = 0; t && sh && d < sh->n && d < t->ndim; d++) CHECK(sh->items[d].u == t->shape[d]);
        }
        CHECK(meta && meta->type == IT_JSON_OBJ && meta->n == 1 && !strcmp(it_json_get(meta, "format")->s, "pt"));
        it_json_free(doc);
        it_st_close(st);
        run_free(&r);
    }
}

/* A model folder and an adapter folder also say what they are. */
static void inspect_folders_describe(void)
{
    run_result r = run_cli("inspect --json data/llama/base");
    it_json_doc *doc = NULL;
    it_err err;
    CHECK(r.status == 0 && r.out && it_json_parse(&doc, r.out, r.outlen, IT_JSON_NODUP, &err) == IT_OK);
    const it_json *model = doc ? it_json_get(it_json_root(doc), "model") : NULL;
    CHECK(model && !strcmp(it_json_get(model, "arch")->s, "llama") && it_json_get(model, "hidden")->i == 64);
    CHECK(doc && it_json_get(it_json_get(it_json_root(doc), "tensors"), "lm_head.weight"));
    it_json_free(doc);
    run_free(&r);
    r = run_cli("inspect --json data/llama/adapters/lora_r8_a8_rslora_attn");
    doc = NULL;
    CHECK(r.status == 0 && r.out && it_json_parse(&doc, r.out, r.outlen, IT_JSON_NODUP, &err) == IT_OK);
    const it_json *ad = doc ? it_json_get(it_json_root(doc), "adapter") : NULL;
    CHECK(ad && it_json_get(ad, "r")->i == 8 && it_json_get(ad, "use_rslora")->type == IT_JSON_TRUE);
    CHECK(ad && it_json_get(ad, "target_modules")->n == 4);
    it_json_free(doc);
    run_free(&r);
    r = run_cli("inspect data/unet/base");
    CHECK(r.status == 0 && r.out && strstr((char *)r.out, "model: unet") && strstr((char *)r.out, "total: 208 tensors"));
    run_free(&r);
}

static void inspect_text_lists_everything(void)
{
    run_result r = run_cli("inspect data/llama/base/model.safetensors");
    CHECK(r.status == 0 && r.out);
    const char *o = r.out ? (const char *)r.out : "";
    CHECK(strstr(o, "21 tensors") && strstr(o, "format = pt") && strstr(o, "lm_head.weight"));
    CHECK(strstr(o, "[256, 64]") && strstr(o, "total: 21 tensors"));
    run_free(&r);
}

/* Bad input: exit 1 and one line naming the file and the rule; usage errors: exit 2. */
static void inspect_refuses_cleanly(void)
{
    const char *p = test_tmppath("trailing.safetensors");
    const unsigned char bytes[] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0};
    CHECK(test_write_file(p, bytes, sizeof bytes) == 0);
    char args[4200];
    snprintf(args, sizeof args, "inspect %s", p);
    run_result r = run_cli(args);
    CHECK(r.status == 1 && one_line(&r) && strstr((char *)r.err, p) && strstr((char *)r.err, "(MetadataIncompleteBuffer)"));
    CHECK(r.outlen == 0);
    run_free(&r);
    r = run_cli("inspect data/no-such-file.safetensors");
    CHECK(r.status == 1 && one_line(&r) && strstr((char *)r.err, "no-such-file"));
    run_free(&r);
    r = run_cli("inspect");
    CHECK(r.status == 2);
    run_free(&r);
    r = run_cli("inspect --bogus data/llama/base");
    CHECK(r.status == 2);
    run_free(&r);
    r = run_cli("frobnicate");
    CHECK(r.status == 2);
    run_free(&r);
}

static void version_and_usage_errors(void)
{
    run_result r = run_cli("--version");
    CHECK(r.status == 0 && r.out && !strncmp((char *)r.out, "iteris ", 7));
    run_free(&r);
    r = run_cli("demo --bogus");
    CHECK(r.status == 2);
    run_free(&r);
    r = run_cli("forward --model data/llama/base");
    CHECK(r.status == 2);
    run_free(&r);
    r = run_cli("eval --merged x");
    CHECK(r.status == 2);
    run_free(&r);
}

/* bench --json prints a list of {"routine", "n", "threads", "gflops", "seconds"}. */
static void bench_json_lists_results(void)
{
    run_result r = run_cli("bench gemm --n 64,96 --threads 1 --json");
    it_json_doc *doc = NULL;
    it_err err;
    CHECK(r.status == 0 && r.out && it_json_parse(&doc, r.out, r.outlen, IT_JSON_NODUP, &err) == IT_OK);
    const it_json *list = doc ? it_json_root(doc) : NULL;
    CHECK(list && list->type == IT_JSON_ARR && list->n == 4); /* sgemm and dgemm at two sizes */
    for (size_t i = 0; list && i < list->n; i++) {
        const it_json *e = &list->items[i], *rt = it_json_get(e, "routine"), *gf = it_json_get(e, "gflops");
        CHECK(rt && (!strcmp(rt->s, "sgemm") || !strcmp(rt->s, "dgemm")));
        CHECK(it_json_get(e, "n") && it_json_get(e, "n")->i == (i % 2 ? 96 : 64));
        CHECK(it_json_get(e, "threads") && it_json_get(e, "threads")->i == 1);
        CHECK(gf && gf->d > 0 && it_json_get(e, "seconds") && it_json_get(e, "seconds")->d > 0);
    }
    it_json_free(doc);
    run_free(&r);
    r = run_cli("bench gemm --threads 0");
    CHECK(r.status == 2);
    run_free(&r);
    r = run_cli("bench nothing");
    CHECK(r.status == 2);
    run_free(&r);
}

/* ============================================================================================ */
/* Hostile input                                                                                 */
/* ============================================================================================ */

#define LLAMA_BASE "data/llama/base"
#define LLAMA_ALL "data/llama/adapters/lora_r4_a16_all"
#define LLAMA_MLP "data/llama/adapters/lora_r4_a8_mlp"
#define LLAMA_DATA "data/llama/inputs.jsonl"

static int exists(const char *p)
{
    struct stat s;
    return stat(p, &s) == 0;
}

/* test_tmppath(name) copied into buf [4096] (test_tmppath's own buffers rotate). */
static char *tmp_at(char *buf, const char *name)
{
    snprintf(buf, 4096, "%s", test_tmppath(name));
    return buf;
}

/* A fresh folder dst holding copies of the files names[0..n) of the fixture folder data/<src>. */
static void copy_fixture(const char *src, const char *dst, const char *const *names, size_t n)
{
    CHECKF(mkdir(dst, 0755) == 0, "mkdir %s", dst);
    for (size_t i = 0; i < n; i++) {
        char from[4096], to[4200];
        snprintf(from, sizeof from, "data/%s/%s", src, names[i]);
        snprintf(to, sizeof to, "%s/%s", dst, names[i]);
        size_t len = 0;
        unsigned char *b = test_read_file(from, &len);
        CHECKF(b && test_write_file(to, b, len) == 0, "copy %s to %s", from, to);
        free(b);
    }
}

static const char *const BASE_FILES[] = {"config.json", "generation_config.json", "model.safetensors"};
static const char *const ADAPTER_FILES[] = {"adapter_config.json", "adapter_model.safetensors"};
static const char *const SAMPLE_FILES[] = {"samples.jsonl", "inputs.safetensors"};

/* Element k of the F32 tensor name of the safetensors file path set to v, by patching its bytes
 * (little-endian, at 8 + header length + data_offsets[0] + 4 k). 0, or -1 (a failed check). */
static int poke_f32(const char *path, const char *name, uint64_t k, float v)
{
    it_st *st = NULL;
    it_err e;
    if (it_st_open(&st, path, &e) != IT_OK) {
        CHECKF(0, "%s: %s", path, e.msg);
        return -1;
    }
    const it_tensor *t = it_st_find(st, name);
    int ok = t && t->dtype == IT_F32 && k < t->numel;
    uint64_t begin = ok ? t->begin : 0;
    it_st_close(st);
    size_t len = 0;
    unsigned char *b = ok ? test_read_file(path, &len) : NULL;
    uint64_t hlen = 0;
    for (int i = 0; b && len >= 8 && i < 8; i++) hlen |= (uint64_t)b[i] << (8 * i);
    uint64_t off = 8 + hlen + begin + 4 * k;
    ok = b && len >= 8 && off + 4 <= len;
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int i = 0; ok && i < 4; i++) b[off + i] = (unsigned char)(u >> (8 * i));
    ok = ok && test_write_file(path, b, len) == 0;
    free(b);
    CHECKF(ok, "poke %s in %s", name, path);
    return ok ? 0 : -1;
}

/* Runs args expecting a refusal: exit status `status`; for 1 exactly one line on stderr, for 2 (a
 * usage error) the reason on the first line; that line holding each of want[] (NULL-terminated);
 * and `out` (when not NULL) not created. */
static void refused(const char *args, int status, const char *out, const char *const *want)
{
    run_result r = run_cli(args);
    const char *e = r.err ? (const char *)r.err : "";
    size_t first = strcspn(e, "\n");
    CHECKF(r.status == status, "%s: status %d, want %d: %s", args, r.status, status, e);
    CHECKF(status != 1 || one_line(&r), "%s: not one line: %s", args, e);
    for (size_t i = 0; want[i]; i++) {
        const char *at = strstr(e, want[i]);
        CHECKF(at && (size_t)(at - e) < first, "%s: the message lacks \"%s\": %s", args, want[i], e);
    }
    CHECKF(!out || !exists(out), "%s: %s was created", args, out);
    test_note("%.*s", (int)first, e);
    run_free(&r);
}

#define WANT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* A lora_A / lora_B with NaN: the adapter file and the tensor are named, nothing is merged. */
static void merge_refuses_nonfinite_adapter(void)
{
    char dir[4096], out[4096], args[24576], want[4500], path[4200];
    copy_fixture("llama/adapters/lora_r4_a8_mlp", tmp_at(dir, "nan_adapter"), ADAPTER_FILES, 2);
    snprintf(want, sizeof want, "%s/adapter_model.safetensors: tensor \"base_model.model.model.layers.1.mlp.up_proj."
             "lora_B.weight\": holds NaN or Inf (element 17 is NaN)", dir);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (poke_f32(path, "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight", 17, NAN)) return;
    tmp_at(out, "nan_adapter_out");
    snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora %s --data " LLAMA_DATA " --out %s", dir, out);
    refused(args, 1, out, WANT(want));
    snprintf(args, sizeof args, "eval --base " LLAMA_BASE " --lora %s --data " LLAMA_DATA " --merged " LLAMA_ALL, dir);
    refused(args, 1, NULL, WANT(want));
}

/* A base weight with Inf at a merged site: named by site and file. At a site that is not merged it
 * is not read by the merge, but its NaN outputs reach a merged site's inputs: named there. */
static void merge_refuses_nonfinite_base_weight(void)
{
    char base[4096], out[4096], args[24576], file[4200], want[4500];
    copy_fixture("llama/base", tmp_at(base, "inf_base"), BASE_FILES, 3);
    snprintf(file, sizeof file, "%s/model.safetensors", base);
    if (poke_f32(file, "model.layers.1.self_attn.v_proj.weight", 100, INFINITY)) return;
    tmp_at(out, "inf_base_out");
    snprintf(want, sizeof want, "site model.layers.1.self_attn.v_proj: the base weight holds NaN or Inf (element 100 "
             "is Inf; %s)", file);
    snprintf(args, sizeof args, "merge --base %s --lora " LLAMA_ALL " --data " LLAMA_DATA " --out %s", base, out);
    refused(args, 1, out, WANT(want));
    snprintf(args, sizeof args, "merge --base %s --lora " LLAMA_MLP " --data " LLAMA_DATA " --out %s", base, out);
    refused(args, 1, out, WANT("site model.layers.1.mlp.", ": task 1: the input rows hold NaN or Inf in the task's own "
                               "model (row 0 of the sample on line 1 of the task's samples)"));
}

/* NaN activations (here from the embedding of one token, which no merged site reads) are named by
 * site, task and sample; eval refuses to print a NaN result. */
static void merge_refuses_nonfinite_activations(void)
{
    char base[4096], out[4096], good[4096], t1[4096], t2[4096], args[24576], file[4200];
    copy_fixture("llama/base", tmp_at(base, "nan_embed"), BASE_FILES, 3);
    snprintf(file, sizeof file, "%s/model.safetensors", base);
    if (poke_f32(file, "model.embed_tokens.weight", 200 * 64 + 3, NAN)) return; /* token 200's row */
    const char l1[] = "{\"input_ids\": [5, 6, 7]}\n", l2[] = "{\"input_ids\": [5, 6, 7]}\n{\"input_ids\": [200, 8, 9]}\n";
    CHECK(test_write_file(tmp_at(t1, "nan_t1.jsonl"), l1, strlen(l1)) == 0);
    CHECK(test_write_file(tmp_at(t2, "nan_t2.jsonl"), l2, strlen(l2)) == 0);
    tmp_at(out, "nan_embed_out");
    snprintf(args, sizeof args, "merge --base %s --lora " LLAMA_ALL " --lora " LLAMA_MLP " --data %s --data %s --out %s",
             base, t1, t2, out);
    refused(args, 1, out, WANT("site model.layers.0.self_attn.q_proj: task 2: the input rows hold NaN or Inf in the "
                               "task's own model (row 0 of the sample on line 2 of the task's samples)"));
    /* eval: a merge made on the clean base, evaluated on the poisoned one */
    snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora " LLAMA_ALL " --data %s --iters 1 --out %s", t1,
             tmp_at(good, "nan_embed_good"));
    run_result r = run_cli(args);
    CHECKF(r.status == 0, "%s: %s", args, r.err ? (char *)r.err : "");
    run_free(&r);
    snprintf(args, sizeof args, "eval --base " LLAMA_BASE " --lora " LLAMA_ALL " --data %s --merged %s", t2, good);
    r = run_cli(args);
    CHECKF(r.status == 0 && r.out && !strstr((char *)r.out, "nan"), "%s: %s", args, r.err ? (char *)r.err : "");
    run_free(&r);
    snprintf(args, sizeof args, "eval --base %s --lora " LLAMA_ALL " --data %s --merged %s", base, t2, good);
    refused(args, 1, NULL, WANT("eval: the base model gives NaN or Inf in logits (row 0 of the sample on line 2; task "
                                "adapter " LLAMA_ALL ")"));
}

/* pixel_values and a UNet's raw inputs given by reference, holding NaN or Inf: the samples file,
 * the line, the key and the tensor file are named; no dump is written. */
static void samples_refuse_nonfinite_tensors(void)
{
    char dir[4096], args[24576], file[4200], samples[4200], dump[4200];
    copy_fixture("clip", tmp_at(dir, "nan_clip"), SAMPLE_FILES, 2);
    snprintf(file, sizeof file, "%s/inputs.safetensors", dir);
    snprintf(samples, sizeof samples, "%s/samples.jsonl", dir);
    snprintf(dump, sizeof dump, "%s/dump.safetensors", dir);
    if (poke_f32(file, "pixel_values", 3 * 32 * 32 + 5, NAN)) return; /* item 1, element 5 */
    snprintf(args, sizeof args, "forward --model data/clip/base --inputs %s --dump %s", samples, dump);
    refused(args, 1, dump, WANT(": line 2: pixel_values: tensor pixel_values of ", "inputs.safetensors holds NaN or Inf "
                                "(element 5 of the item is NaN)", samples));
    copy_fixture("unet", tmp_at(dir, "inf_unet"), SAMPLE_FILES, 2);
    snprintf(file, sizeof file, "%s/inputs.safetensors", dir);
    snprintf(samples, sizeof samples, "%s/samples.jsonl", dir);
    snprintf(dump, sizeof dump, "%s/dump.safetensors", dir);
    if (poke_f32(file, "encoder_hidden_states", 0, -INFINITY)) return;
    snprintf(args, sizeof args, "forward --model data/unet/base --inputs %s --dump %s", samples, dump);
    refused(args, 1, dump, WANT(samples, ": line 1: encoder_hidden_states: tensor encoder_hidden_states of ",
                                "holds NaN or Inf (element 0 of the item is -Inf)"));
}

/* An adapter for another model, and one whose lora_A has the wrong d_in: the adapter and the base
 * file are named. */
static void merge_refuses_foreign_adapters(void)
{
    char out[4096], dir[4096], args[24576], path[4200];
    tmp_at(out, "foreign_out");
    snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora data/t5/adapters/lora_r4_a16_all --data " LLAMA_DATA
             " --out %s", out);
    refused(args, 1, out, WANT(LLAMA_BASE "/model.safetensors: adapters made for another base model? ",
                                      "data/t5/adapters/lora_r4_a16_all: decoder.block.0.layer.0.SelfAttention.k "
                                      "needs a base weight [64, 64], the base has none"));
    /* lora_A of gate_proj cut to [4, 32] (and its data to 4 x 32 values) */
    it_st *st = NULL;
    it_err e;
    CHECK(it_st_open(&st, "data/llama/adapters/lora_r4_a8_mlp/adapter_model.safetensors", &e) == IT_OK);
    if (!st) return;
    size_t n = it_st_count(st);
    it_tensor *t = calloc(n, sizeof *t);
    static const uint64_t cut[2] = {4, 32};
    for (size_t i = 0; t && i < n; i++) {
        t[i] = *it_st_tensor(st, i);
        if (strcmp(t[i].name, "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight")) continue;
        CHECK(t[i].ndim == 2 && t[i].shape[0] == 4 && t[i].shape[1] == 64 && t[i].dtype == IT_F32);
        t[i].shape = cut, t[i].numel = 128, t[i].nbytes = 512;
    }
    copy_fixture("llama/adapters/lora_r4_a8_mlp", tmp_at(dir, "narrow_adapter"), ADAPTER_FILES, 1);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    CHECKF(t && it_st_save(path, t, n, mk, mv, 1, &e) == IT_OK, "%s", e.msg);
    free(t);
    it_st_close(st);
    char want[4500];
    snprintf(want, sizeof want, "%s: model.layers.0.mlp.gate_proj needs a base weight [160, 32], the base has [160, 64]",
             dir);
    snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora %s --data " LLAMA_DATA " --out %s", dir, out);
    refused(args, 1, out, WANT("adapters made for another base model? ", want, "(1 site in all)"));
}

/* Samples the model cannot take, and sample files without samples: the file and the line named. */
static void merge_refuses_bad_samples(void)
{
    char out[4096], args[24576], p[4096];
    tmp_at(out, "bad_samples_out");
    static const struct {
        const char *file, *text, *want[3];
    } cases[] = {
        {"empty.jsonl", "", {": no samples"}},
        {"blank.jsonl", "\n   \n\t\r\n\n", {": no samples"}},
        {"vocab.jsonl", "{\"input_ids\": [1, 2, 256]}\n", {": line 1: ", "token id 256 at position 2 is outside the "
                                                           "vocabulary [0, 256)"}},
        {"negative.jsonl", "{\"input_ids\": [1, -2]}\n", {": line 1: \"input_ids\"[1] = -2 is outside [0, "}},
        {"long.jsonl", NULL, {": line 2: ", "input_ids: 129 tokens exceed the model's context of 128"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char text[2048] = "{\"input_ids\": [1, 2]}\n{\"input_ids\": [0";
        if (!cases[c].text) { /* 129 tokens on line 2 */
            for (int k = 1; k < 129; k++) strcat(text, ", 5");
            strcat(text, "]}\n");
        }
        const char *body = cases[c].text ? cases[c].text : text;
        CHECK(test_write_file(tmp_at(p, cases[c].file), body, strlen(body)) == 0);
        snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora " LLAMA_ALL " --lora " LLAMA_MLP " --data "
                 LLAMA_DATA " --data %s --out %s", p, out);
        const char *want[5] = {p, cases[c].want[0], cases[c].want[1], cases[c].want[2], NULL};
        refused(args, 1, out, want);
        snprintf(args, sizeof args, "eval --base " LLAMA_BASE " --lora " LLAMA_ALL " --data %s --merged " LLAMA_MLP, p);
        refused(args, 1, NULL, want);
    }
    /* T5: decoder ids outside the vocabulary */
    const char t5[] = "{\"input_ids\": [5, 1], \"decoder_input_ids\": [0, 7]}\n{\"input_ids\": [5, 1], "
                      "\"decoder_input_ids\": [0, 999]}\n";
    CHECK(test_write_file(tmp_at(p, "t5_dec.jsonl"), t5, strlen(t5)) == 0);
    snprintf(args, sizeof args, "merge --base data/t5/base --lora data/t5/adapters/lora_r4_a16_all --data %s --out %s",
             p, out);
    refused(args, 1, out, WANT(p, ": line 2: ", "decoder_input_ids: token id 999 at position 1 is outside the vocabulary"));
}

/* Option mismatches: --data and --lora counts; an output that is one of the inputs (the base
 * folder, an adapter folder, a data file, the model's weights), which must stay untouched. */
static void cli_refuses_option_mismatches(void)
{
    char out[4096], args[24576];
    tmp_at(out, "mismatch_out");
    snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora " LLAMA_ALL " --lora " LLAMA_MLP " --data " LLAMA_DATA
             " --out %s", out);
    refused(args, 2, out, WANT("merge: 2 --lora but 1 --data: the i-th --data belongs to the i-th --lora"));
    snprintf(args, sizeof args, "eval --base " LLAMA_BASE " --lora " LLAMA_ALL " --data " LLAMA_DATA " --data "
             LLAMA_DATA " --merged " LLAMA_MLP);
    refused(args, 1, NULL, WANT("1 --lora but 2 --data: the i-th --data belongs to the i-th --lora"));
    static const char *const clash[] = {LLAMA_BASE, LLAMA_MLP, LLAMA_DATA};
    for (size_t i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora " LLAMA_MLP " --data " LLAMA_DATA " --out %s",
                 clash[i]);
        char want[512];
        snprintf(want, sizeof want, "merge: %s is one of the inputs; choose another output", clash[i]);
        refused(args, 1, NULL, WANT(want));
    }
    snprintf(args, sizeof args, "merge --base " LLAMA_BASE " --lora " LLAMA_MLP " --data " LLAMA_DATA " --out %s "
             "--report " LLAMA_DATA, out);
    refused(args, 1, out, WANT("merge: " LLAMA_DATA " is one of the inputs; choose another output"));
    CHECK(!exists(LLAMA_BASE "/report.json") && !exists(LLAMA_BASE "/adapter_config.json"));
    CHECK(!exists(LLAMA_MLP "/report.json"));
    refused("forward --model " LLAMA_BASE " --inputs " LLAMA_DATA " --dump " LLAMA_DATA, 1, NULL,
            WANT("forward: --dump " LLAMA_DATA " is one of the inputs; choose another output"));
    refused("forward --model " LLAMA_BASE " --inputs " LLAMA_DATA " --dump " LLAMA_BASE "/model.safetensors", 1, NULL,
            WANT("forward: --dump " LLAMA_BASE "/model.safetensors is one of the inputs"));
}

void suite_cli(void)
{
    RUN(inspect_json_matches_file);
    RUN(inspect_folders_describe);
    RUN(inspect_text_lists_everything);
    RUN(inspect_refuses_cleanly);
    RUN(version_and_usage_errors);
    RUN(bench_json_lists_results);
    RUN(merge_refuses_nonfinite_adapter);
    RUN(merge_refuses_nonfinite_base_weight);
    RUN(merge_refuses_nonfinite_activations);
    RUN(samples_refuse_nonfinite_tensors);
    RUN(merge_refuses_foreign_adapters);
    RUN(merge_refuses_bad_samples);
    RUN(cli_refuses_option_mismatches);
}
