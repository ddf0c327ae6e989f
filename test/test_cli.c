/* test_cli.c -- the command line as a user runs it: `iteris inspect` (text and --json) on real
 * files and folders, exit statuses, one-line errors. The binary is $ITERIS_BIN (set by make). */
#include "test.h"

#include "iteris.h"

#include <stdlib.h>
#include <string.h>
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

void suite_cli(void)
{
    RUN(inspect_json_matches_file);
    RUN(inspect_folders_describe);
    RUN(inspect_text_lists_everything);
    RUN(inspect_refuses_cleanly);
    RUN(version_and_usage_errors);
    RUN(bench_json_lists_results);
}
