/* main.c -- the iteris command line: the only place that prints to the user or exits.
 *
 * Exit status: 0 success, 1 bad input or failed run (one line on stderr), 2 usage error. */
#include "cli.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *usage_text =
    "usage: iteris <command> [options]\n"
    "\n"
    "commands:\n"
    "  inspect FILE|DIR [--json]   list the tensors, metadata and totals of a safetensors file, a\n"
    "                              sharded index or a model/adapter folder (and what it is)\n"
    "  demo [--out DIR] [--json]   build a small model and adapters, merge them with every method\n"
    "  bench [gemm|gram|chol|svd|all] [--n N[,N...]] [--threads T] [--json]\n"
    "                              GFLOP/s of the linear algebra (sizes 256 to 4096 by default)\n"
    "  tokenize --model DIR TEXT [--no-special]\n"
    "                              the ids the model folder's tokenizer.json gives TEXT (a JSON list)\n"
    "  bench unet [--latent N] [--batch B] [--f16] [--dir DIR] [--threads T] [--json]\n"
    "                              one step of an SD 1.5-sized UNet (random weights): seconds, peak memory\n"
    "  solve --features FILE --out FILE [--method M] [--alpha1 A] [--alpha2 A] [--reg-mix B]\n"
    "        [--with-pretrain] [--weights w1,w2,..] [--seed S] [--threads T] [--dtype F32|F64] [-v]\n"
    "                              W* per site from supplied features (<site>.delta.<i>,\n"
    "                              <site>.X.<i>, <site>.Xt.<i>, <site>.weight)\n"
    "  merge --base DIR --lora DIR... --data FILE... --out DIR [--method iteris|regmean|linear|ties|dare|cat]\n"
    "        [--schedule iterate|sweep] [--iters N] [--tol T] [--alpha1 A] [--alpha2 A] [--alpha A|auto]\n"
    "        [--weights w1,..] [--reg-mix B] [--with-pretrain] [--samples N] [--seed S] [--threads T]\n"
    "        [--format lora|delta|model] [--rank R] [--report FILE.json] [--x-policy keep|recompute]\n"
    "        [--regmean-alpha A] [--density D] [--ties-sign total|frequency] [--drop P] [--gen-len N]\n"
    "        [--timesteps K]\n"
    "                              merge one adapter per task, with each task's calibration samples\n"
    "  eval --base DIR --lora DIR... --data FILE... --merged DIR [--json] [--gen-len N]\n"
    "        [--timesteps K]\n"
    "                              rel_err (KL and top-1 for logits) of a merge against each task's model\n"
    "  forward --model DIR [--lora DIR | --merged DIR] --inputs FILE --dump OUT.safetensors [--gen-len N]\n"
    "        [--timesteps K]\n"
    "                              the model's outputs and every adapted site's inputs\n"
    "\n"
    "  --gen-len N: T5 samples without decoder_input_ids get them by greedy decoding (N new tokens at\n"
    "  most, default 16) with each task's own adapter (forward: the model as given)\n"
    "  --timesteps K: with a Stable Diffusion pipeline folder as the model, each prompt sample runs the\n"
    "  UNet on K noisy latents at random timesteps (default 4), drawn from the sample's \"seed\"\n"
    "\n"
    "  iteris --version            print the version\n";

static int usage(const char *why)
{
    if (why) fprintf(stderr, "iteris: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

static int fail(const it_err *err)
{
    fprintf(stderr, "iteris: %s\n", err->msg);
    return 1;
}

/* Wall-clock seconds (not CPU time, which grows with the threads). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 when both paths name the same existing file or folder (outputs never replace inputs). */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Fills err with a formatted message and returns code (for errors found here, not in the library). */
static int errf(it_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return err->code = code;
}

/* ============================================================================================ */
/* JSON output                                                                                   */
/* ============================================================================================ */

/* A JSON string literal: quotes, backslashes and control characters escaped. */
static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* A finite double as a JSON number (null otherwise). */
static void json_num(double v)
{
    if (isfinite(v)) printf("%.17g", v);
    else fputs("null", stdout);
}

static void json_key(const char *key, int *first)
{
    fputs(*first ? "" : ", ", stdout);
    *first = 0;
    json_str(key);
    fputs(": ", stdout);
}

static void json_int_field(const char *key, int64_t v, int *first)
{
    if (!v) return;
    json_key(key, first);
    printf("%lld", (long long)v);
}

static void json_str_list(char **items, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", stdout);
        json_str(items[i]);
    }
    putchar(']');
}

/* ============================================================================================ */
/* inspect                                                                                       */
/* ============================================================================================ */

static const char *arch_name(it_arch a)
{
    switch (a) {
    case IT_ARCH_LLAMA: return "llama";
    case IT_ARCH_T5: return "t5";
    case IT_ARCH_CLIP: return "clip";
    case IT_ARCH_UNET: return "unet";
    default: return "unknown";
    }
}

static void config_json(const it_config *c)
{
    int first = 1;
    fputs("{", stdout);
    json_key("arch", &first);
    json_str(arch_name(c->arch));
    json_key("model_type", &first);
    json_str(c->model_type);
    json_key("class", &first);
    json_str(c->class_name);
    json_int_field("vocab_size", c->vocab_size, &first);
    json_int_field("hidden", c->hidden, &first);
    json_int_field("intermediate", c->intermediate, &first);
    json_int_field("layers", c->layers, &first);
    json_int_field("decoder_layers", c->decoder_layers, &first);
    json_int_field("heads", c->heads, &first);
    json_int_field("kv_heads", c->kv_heads, &first);
    json_int_field("head_dim", c->head_dim, &first);
    json_int_field("vision_hidden", c->vision_hidden, &first);
    json_int_field("vision_layers", c->vision_layers, &first);
    json_int_field("projection_dim", c->projection_dim, &first);
    json_int_field("in_channels", c->in_channels, &first);
    json_int_field("cross_attention_dim", c->cross_attention_dim, &first);
    json_int_field("layers_per_block", c->layers_per_block, &first);
    if (c->nblocks) {
        json_key("block_out_channels", &first);
        for (int64_t i = 0; i < c->nblocks; i++) printf("%s%lld", i ? ", " : "[", (long long)c->block_out_channels[i]);
        putchar(']');
    }
    json_key("description", &first);
    char line[512];
    it_config_describe(c, line, sizeof line);
    json_str(line);
    fputs("}", stdout);
}

static double lora_scale(const it_lora_config *c)
{
    return c->use_rslora ? c->lora_alpha / sqrt((double)c->r) : c->lora_alpha / (double)c->r;
}

static void lora_json(const it_lora_config *c)
{
    int first = 1;
    fputs("{", stdout);
    json_int_field("r", c->r, &first);
    json_key("lora_alpha", &first);
    json_num(c->lora_alpha);
    json_key("use_rslora", &first);
    fputs(c->use_rslora ? "true" : "false", stdout);
    json_key("scale", &first);
    json_num(lora_scale(c));
    json_key("target_modules", &first);
    if (c->target_regex) json_str(c->target_regex);
    else json_str_list(c->targets, c->ntargets);
    json_key("rank_pattern_entries", &first);
    printf("%zu", c->nrank_pattern);
    json_key("alpha_pattern_entries", &first);
    printf("%zu", c->nalpha_pattern);
    json_key("description", &first);
    char line[1024];
    it_lora_config_describe(c, line, sizeof line);
    json_str(line);
    fputs("}", stdout);
}

/* "[256, 64]" */
static void shape_str(const it_tensor *t, char *buf, size_t size)
{
    size_t o = (size_t)snprintf(buf, size, "[");
    for (size_t d = 0; d < t->ndim && o < size; d++)
        o += (size_t)snprintf(buf + o, size - o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    if (o < size) snprintf(buf + o, size - o, "]");
}

static void print_tensors_json(const it_st *st)
{
    fputs("\"tensors\": {", stdout);
    for (size_t i = 0; i < it_st_count(st); i++) {
        const it_tensor *t = it_st_tensor(st, i);
        fputs(i ? ", " : "", stdout);
        json_str(t->name);
        fputs(": {\"dtype\": ", stdout);
        json_str(it_dtype_name(t->dtype));
        fputs(", \"shape\": [", stdout);
        for (size_t d = 0; d < t->ndim; d++) printf("%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
        fputs("]}", stdout);
    }
    fputs("}, \"metadata\": ", stdout);
    if (!it_st_has_meta(st)) {
        fputs("null", stdout);
        return;
    }
    fputs("{", stdout);
    for (size_t i = 0; i < it_st_meta_count(st); i++) {
        const char *k, *v;
        it_st_meta_at(st, i, &k, &v);
        fputs(i ? ", " : "", stdout);
        json_str(k);
        fputs(": ", stdout);
        json_str(v);
    }
    fputs("}", stdout);
}

static void print_tensors_text(const it_st *st, const char *path)
{
    size_t n = it_st_count(st), wname = 4;
    uint64_t elems = 0, bytes = 0, per_dtype[IT_DTYPE_COUNT] = {0}, count_dtype[IT_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        const it_tensor *t = it_st_tensor(st, i);
        size_t l = strlen(t->name);
        if (l > wname) wname = l;
        elems += t->numel;
        bytes += t->nbytes;
        per_dtype[t->dtype] += t->nbytes;
        count_dtype[t->dtype]++;
    }
    printf("%s: %zu tensors in %zu file%s\n", path, n, it_st_file_count(st), it_st_file_count(st) == 1 ? "" : "s");
    for (size_t i = 0; it_st_file_count(st) > 1 && i < it_st_file_count(st); i++) printf("  shard %s\n", it_st_file_path(st, i));
    if (it_st_has_meta(st)) {
        printf("metadata (%zu):\n", it_st_meta_count(st));
        for (size_t i = 0; i < it_st_meta_count(st); i++) {
            const char *k, *v;
            it_st_meta_at(st, i, &k, &v);
            printf("  %s = %s\n", k, v);
        }
    } else {
        printf("metadata: none\n");
    }
    printf("  %-*s  %-11s  %-20s  %s\n", (int)wname, "name", "dtype", "shape", "bytes");
    for (size_t i = 0; i < n; i++) {
        const it_tensor *t = it_st_tensor(st, i);
        char shape[256];
        shape_str(t, shape, sizeof shape);
        printf("  %-*s  %-11s  %-20s  %zu\n", (int)wname, t->name, it_dtype_name(t->dtype), shape, t->nbytes);
    }
    printf("total: %zu tensors, %llu elements, %llu bytes", n, (unsigned long long)elems, (unsigned long long)bytes);
    for (int d = 0; d < IT_DTYPE_COUNT; d++)
        if (count_dtype[d]) printf("; %s: %llu tensors, %llu bytes", it_dtype_name((it_dtype)d), (unsigned long long)count_dtype[d], (unsigned long long)per_dtype[d]);
    printf("\n");
}

static int is_dir(const char *p)
{
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

static int has_file(const char *dir, const char *name)
{
    char p[4096];
    struct stat s;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &s) == 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* What a folder (or a config file) is: model config and/or adapter config, when present. */
typedef struct {
    int has_cfg, has_lora;
    it_config cfg;
    it_lora_config lora;
} what_it_is;

static int load_what(what_it_is *w, const char *path, int dir, it_err *err)
{
    memset(w, 0, sizeof *w);
    int rc = IT_OK;
    const char *bn = base_name(path);
    if ((dir && has_file(path, "config.json")) || (!dir && !strcmp(bn, "config.json"))) {
        rc = it_config_load(&w->cfg, path, err);
        w->has_cfg = rc == IT_OK;
    }
    if (rc == IT_OK && ((dir && has_file(path, "adapter_config.json")) || (!dir && !strcmp(bn, "adapter_config.json")))) {
        rc = it_lora_config_load(&w->lora, path, err);
        w->has_lora = rc == IT_OK;
    }
    return rc;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return usage("inspect: unknown option");
        else if (path) return usage("inspect: one FILE or DIR");
        else path = argv[i];
    }
    if (!path) return usage("inspect: which FILE or DIR?");
    it_err err;
    what_it_is w;
    int dir = is_dir(path);
    if (load_what(&w, path, dir, &err) != IT_OK) return fail(&err);
    it_st *st = NULL;
    int config_only = !dir && (w.has_cfg || w.has_lora);
    int rc = config_only ? IT_OK : it_st_open(&st, path, &err);
    if (rc == IT_ENOTFOUND && dir && (w.has_cfg || w.has_lora)) rc = IT_OK; /* a folder with configs only */
    if (rc != IT_OK) {
        it_lora_config_free(&w.lora);
        return fail(&err);
    }
    if (json) {
        fputs("{", stdout);
        if (st) print_tensors_json(st);
        else fputs("\"tensors\": {}, \"metadata\": null", stdout);
        if (w.has_cfg) fputs(", \"model\": ", stdout), config_json(&w.cfg);
        if (w.has_lora) fputs(", \"adapter\": ", stdout), lora_json(&w.lora);
        fputs("}\n", stdout);
    } else {
        char line[1024];
        if (w.has_cfg) it_config_describe(&w.cfg, line, sizeof line), printf("model: %s\n", line);
        if (w.has_lora) it_lora_config_describe(&w.lora, line, sizeof line), printf("adapter: %s\n", line);
        if (st) print_tensors_text(st, it_st_file_count(st) == 1 ? it_st_file_path(st, 0) : path);
    }
    it_st_close(st);
    it_lora_config_free(&w.lora);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ============================================================================================ */
/* bench                                                                                         */
/* ============================================================================================ */

/* A positive integer option value, or 0. */
static long positive(const char *s)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    return s && *s && *end == 0 && v > 0 ? v : 0;
}

/* The helpers the other command-line files share (cli.h). */
int cli_usage(const char *why) { return usage(why); }
int cli_fail(const it_err *err) { return fail(err); }
long cli_positive(const char *s) { return positive(s); }

static int cmd_bench(int argc, char **argv)
{
    if (argc > 0 && !strcmp(argv[0], "unet")) return cli_bench_unet(argc - 1, argv + 1);
    const char *what = "all";
    size_t sizes[16] = {256, 512, 1024, 2048, 4096}, nsizes = 5;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--n") && i + 1 < argc) { /* one size, or a comma-separated list */
            nsizes = 0;
            for (char *tok = strtok(argv[++i], ","); tok && nsizes < 16; tok = strtok(NULL, ",")) {
                long v = positive(tok);
                if (!v || v > 65536) return usage("bench: --n takes sizes from 1 to 65536");
                sizes[nsizes++] = (size_t)v;
            }
            if (!nsizes) return usage("bench: --n takes sizes from 1 to 65536");
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            long t = positive(argv[++i]);
            if (!t || it_set_threads((int)t) != IT_OK) return usage("bench: --threads takes 1 to 256");
        } else if (argv[i][0] != '-' && !strcmp(what, "all")) {
            what = argv[i];
        } else {
            return usage("bench: unknown option");
        }
    }
    const char *groups[][3] = {{"gemm", "sgemm", "dgemm"}, {"gram", "gram", NULL}, {"chol", "dpotrf", NULL}, {"svd", "svd", NULL}};
    const char *routines[8];
    size_t nr = 0;
    for (size_t g = 0; g < 4; g++)
        if (!strcmp(what, "all") || !strcmp(what, groups[g][0]))
            for (int k = 1; k < 3 && groups[g][k]; k++) routines[nr++] = groups[g][k];
    if (!nr) return usage("bench: which routine? gemm, gram, chol, svd or all");
    if (json) printf("[");
    else printf("iteris bench: kernels %s, %d thread%s\n%-8s %6s %8s %10s %10s\n", it_kernels(), it_get_threads(),
                it_get_threads() == 1 ? "" : "s", "routine", "n", "threads", "GFLOP/s", "seconds");
    int first = 1;
    for (size_t r = 0; r < nr; r++)
        for (size_t k = 0; k < nsizes; k++) {
            it_bench_result b;
            it_err err;
            if (it_bench(routines[r], sizes[k], &b, &err) != IT_OK) {
                if (json) printf("]\n");
                return fail(&err);
            }
            if (json)
                printf("%s{\"routine\": \"%s\", \"n\": %zu, \"threads\": %d, \"gflops\": %.3f, \"seconds\": %.6f}",
                       first ? "" : ", ", b.routine, b.n, b.threads, b.gflops, b.seconds);
            else
                printf("%-8s %6zu %8d %10.2f %10.6f\n", b.routine, b.n, b.threads, b.gflops, b.seconds);
            first = 0;
            fflush(stdout);
        }
    if (json) printf("]\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ============================================================================================ */
/* solve                                                                                         */
/* ============================================================================================ */

/* A finite number; 0 if s is not one. */
static int number(const char *s, double *v)
{
    char *end;
    if (!s || !*s) return 0;
    *v = strtod(s, &end);
    return *end == 0 && isfinite(*v);
}

#define MAX_TASKS 1024

/* The options merge and solve share (DESIGN.md section 3). *i is at the option; returns 1 when
 * it was one of them (consumed with its value), 0 when not, -1 (after printing usage) when bad. */
static int solve_option(int argc, char **argv, int *i, it_solve_opts *o, double *weights, const char *cmd)
{
    const char *opt = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    char why[160];
    double v;
    if (!strcmp(opt, "--with-pretrain")) {
        o->with_pretrain = 1;
        return 1;
    }
    static const char *const takes_value[] = {"--method", "--alpha1", "--alpha2", "--alpha", "--reg-mix",
                                              "--weights", "--seed", "--threads", "--regmean-alpha",
                                              "--density", "--ties-sign", "--drop"};
    int known = 0;
    for (size_t k = 0; k < sizeof takes_value / sizeof *takes_value; k++) known |= !strcmp(opt, takes_value[k]);
    if (!known) return 0;
    snprintf(why, sizeof why, "%s: %s needs a value", cmd, opt);
    if (!val) return usage(why), -1;
    (*i)++;
    snprintf(why, sizeof why, "%s: %s: bad value '%s'", cmd, opt, val);
    if (!strcmp(opt, "--method")) {
        if (it_method_parse(val, &o->method) != IT_OK)
            return usage("--method takes iteris, regmean, linear, ties, dare or cat"), -1;
    } else if (!strcmp(opt, "--ties-sign")) {
        if (strcmp(val, "total") && strcmp(val, "frequency")) return usage("--ties-sign takes total or frequency"), -1;
        o->ties_frequency = !strcmp(val, "frequency");
    } else if (!strcmp(opt, "--seed")) {
        char *end;
        unsigned long long s = strtoull(val, &end, 10);
        if (!*val || *end || val[0] == '-') return usage(why), -1;
        o->seed = s;
    } else if (!strcmp(opt, "--threads")) {
        long t = positive(val);
        if (!t || it_set_threads((int)t) != IT_OK) return usage("--threads takes 1 to 256"), -1;
    } else if (!strcmp(opt, "--weights")) {
        o->nweights = 0;
        const char *p = val;
        for (;;) {
            char *end;
            double w = strtod(p, &end);
            if (end == p || !isfinite(w) || o->nweights == MAX_TASKS || (*end && *end != ',')) return usage(why), -1;
            weights[o->nweights++] = w;
            if (!*end) break;
            p = end + 1;
        }
        o->weights = weights;
    } else {
        if (!strcmp(opt, "--alpha") && !strcmp(val, "auto")) {
            snprintf(why, sizeof why, "%s: --alpha auto needs calibration samples (iteris merge)", cmd);
            return usage(why), -1;
        }
        if (!number(val, &v)) return usage(why), -1;
        if (!strcmp(opt, "--alpha1")) o->alpha1 = v;
        else if (!strcmp(opt, "--alpha2")) o->alpha2 = v;
        else if (!strcmp(opt, "--alpha")) o->alpha1 = o->alpha2 = v;
        else if (!strcmp(opt, "--reg-mix")) o->reg_mix = v;
        else if (!strcmp(opt, "--regmean-alpha")) o->regmean_alpha = v;
        else if (!strcmp(opt, "--density")) o->density = v;
        else o->drop = v;
    }
    return 1;
}

static void solve_progress(void *ctx, const char *site, size_t k, size_t nsites, const it_site_info *info,
                           size_t ntasks)
{
    if (!*(int *)ctx && info->ridge == 0) return; /* a ridge is always reported */
    fprintf(stderr, "[%zu/%zu] %s", k + 1, nsites, site);
    if (info->lambda && info->lambda[0] > 0) {
        fputs("  lambda", stderr);
        for (size_t i = 0; i < ntasks; i++) fprintf(stderr, " %.4g", info->lambda[i]);
    }
    if (info->ridge > 0) fprintf(stderr, "  warning: Q was not positive definite; ridge %.0e x mean diagonal added", info->ridge);
    fputc('\n', stderr);
}

static int cmd_solve(int argc, char **argv)
{
    const char *features = NULL, *out = NULL;
    it_solve_opts o;
    it_solve_opts_default(&o);
    static double weights[MAX_TASKS];
    it_dtype dtype = IT_F32;
    int verbose = 0;
    for (int i = 0; i < argc; i++) {
        int r = solve_option(argc, argv, &i, &o, weights, "solve");
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--features") && i + 1 < argc) features = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) verbose = 1;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "F32") || !strcmp(d, "f32")) dtype = IT_F32;
            else if (!strcmp(d, "F64") || !strcmp(d, "f64")) dtype = IT_F64;
            else return usage("solve: --dtype takes F32 or F64");
        } else {
            char why[160];
            snprintf(why, sizeof why, "solve: unknown option '%s'", argv[i]);
            return usage(why);
        }
    }
    if (!features || !out) return usage("solve: --features FILE and --out FILE are required");
    if (same_file(features, out)) {
        fprintf(stderr, "iteris: solve: --out %s is the --features file; choose another output\n", out);
        return 1;
    }
    it_err err;
    if (it_solve_features(features, out, dtype, &o, solve_progress, &verbose, &err) != IT_OK) return fail(&err);
    if (verbose) fprintf(stderr, "wrote %s\n", out);
    return 0;
}

/* ============================================================================================ */
/* merge                                                                                         */
/* ============================================================================================ */

#define MAX_PATHS 64
#define GEN_LEN_DEFAULT 16 /* --gen-len */

/* Everything a merge or an eval loads: the model, the adapters, the samples. */
typedef struct run_inputs {
    const char *base, *lora[MAX_PATHS], *data[MAX_PATHS];
    size_t nlora, ndata;
    size_t gen_len;               /* --gen-len: greedy decoding's length for encoder-decoder samples */
    size_t timesteps;             /* --timesteps: noisy latents per prompt of a pipeline (0: its default) */
    it_model *model;
    it_adapter *ad[MAX_PATHS];
    it_samples *smp[MAX_PATHS];
    const it_sample **chosen[MAX_PATHS];
    size_t nchosen[MAX_PATHS];
} run_inputs;

static void run_inputs_free(run_inputs *in)
{
    for (size_t i = 0; i < MAX_PATHS; i++) {
        it_adapter_free(in->ad[i]);
        it_samples_free(in->smp[i]);
        free((void *)in->chosen[i]);
    }
    it_model_free(in->model);
}

/* 1 for a Stable Diffusion pipeline folder (model_sd.c), whose lora output is diffusers' file. */
static int is_pipeline(const it_model *m) { return !strcmp(it_model_config(m)->model_type, "stable-diffusion"); }

/* What a samples file needs before model m runs it: the ids of "text" samples (the model folder's
 * tokenizer.json), the pixels of image samples, the timesteps per prompt of a pipeline, and for an
 * encoder-decoder model decoder ids made by greedy decoding with adapter ad installed (NULL: the
 * model as it is). */
static int prepare_samples(it_model *m, const it_adapter *ad, it_samples *ss, size_t gen_len, size_t timesteps,
                           it_err *err)
{
    int text = 0, rc = IT_OK;
    for (size_t j = 0; j < ss->n; j++) ss->s[j].ntimesteps = timesteps, text |= !ss->s[j].ids && ss->s[j].text;
    if (text) { /* "text" samples: the model folder's tokenizer */
        it_tokenizer *t = NULL;
        rc = it_tokenizer_for_model(&t, m, err);
        if (rc == IT_OK) rc = it_samples_tokenize(ss, t, err);
        it_tokenizer_free(t);
        if (rc != IT_OK) return rc;
    }
    rc = it_samples_load_pixels(ss, m, err);
    return rc == IT_OK ? it_samples_complete(m, ad, ss, gen_len, err) : rc;
}

/* Loads the model, the adapters and the samples (samples_per_task 0: all of them). */
static int load_inputs(run_inputs *in, size_t samples_per_task, uint64_t seed, it_err *err)
{
    if (in->nlora != in->ndata)
        return errf(err, IT_EINVAL, "%zu --lora but %zu --data: the i-th --data belongs to the i-th "
                        "--lora", in->nlora, in->ndata);
    int rc = it_model_load(&in->model, in->base, err);
    for (size_t i = 0; rc == IT_OK && i < in->nlora; i++) {
        rc = it_adapter_load(&in->ad[i], in->lora[i], err);
        if (rc == IT_OK) rc = it_model_fit_adapter(in->model, in->ad[i], err);
    }
    for (size_t i = 0; rc == IT_OK && i < in->ndata; i++) rc = it_samples_load(&in->smp[i], in->data[i], err);
    for (size_t i = 0; rc == IT_OK && i < in->ndata; i++) {
        size_t n = in->smp[i]->n, k = samples_per_task ? samples_per_task : n;
        size_t *idx = malloc(k * sizeof *idx);
        in->chosen[i] = malloc(k * sizeof *in->chosen[i]);
        if (!idx || !in->chosen[i]) {
            free(idx);
            return errf(err, IT_ENOMEM, "out of memory");
        }
        rc = it_samples_choose(in->smp[i], k, seed, idx, err);
        if (rc == IT_OK) rc = prepare_samples(in->model, in->ad[i], in->smp[i], in->gen_len, in->timesteps, err);
        for (size_t j = 0; rc == IT_OK && j < k; j++) in->chosen[i][j] = &in->smp[i]->s[idx[j]];
        in->nchosen[i] = k;
        free(idx);
    }
    for (size_t i = 0; rc == IT_OK && i < in->nlora; i++)
        for (size_t k = 0; k < in->ad[i]->nwarn; k++) fprintf(stderr, "iteris: note: %s\n", in->ad[i]->warn[k]);
    return rc;
}

static void merge_progress(void *ctx, const it_merge_step *p)
{
    (void)ctx;
    fprintf(stderr, "[%s %zu/%zu] %.2f s", p->schedule, p->step + 1, p->nsteps, p->seconds);
    if (p->max_change >= 0) fprintf(stderr, "  change %.3e", p->max_change);
    if (p->objective) {
        fputs("  objective", stderr);
        for (size_t i = 0; i < p->ntasks; i++) fprintf(stderr, " %.4g", p->objective[i]);
    }
    if (p->step + 1 < p->nsteps) fprintf(stderr, "  ETA %.1f s", p->eta);
    fputc('\n', stderr);
}

/* A growing text buffer for report.json. */
typedef struct text {
    char *s;
    size_t len, cap;
    int oom;
} text;

static void tx(text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? 2 * t->cap : 4096;
        while (cap < t->len + (size_t)n + 1) cap *= 2;
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->oom = 1;
            return;
        }
        t->s = ns, t->cap = cap;
    }
}

static void tx_str(text *t, const char *s)
{
    tx(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') tx(t, "\\%c", c);
        else if (c < 0x20) tx(t, "\\u%04x", c);
        else tx(t, "%c", c);
    }
    tx(t, "\"");
}

static void tx_num(text *t, double v)
{
    if (isfinite(v)) tx(t, "%.17g", v);
    else tx(t, "null");
}

#define AUTO_GRID 7

typedef struct merge_args {
    run_inputs in;
    const char *out, *format, *report;
    it_merge_opts mo;
    size_t samples;
    int64_t rank;
    uint64_t seed;
    int alpha_auto;                 /* --alpha auto: the grid's held-out errors, and the choice */
    double auto_error[AUTO_GRID];
} merge_args;

static const double auto_grid[AUTO_GRID] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};

/* report.json: every option, the seed, the per-step figures, per-site details. */
static char *merge_report(const merge_args *a, const it_merge_result *r, const double *energy, int64_t rank,
                          double seconds)
{
    text t = {0};
    const it_solve_opts *o = &a->mo.solve;
    tx(&t, "{\n  \"iteris_version\": \"%s\",\n  \"method\": \"%s\",\n  \"schedule\": \"%s\",\n", IT_VERSION,
       o->method == IT_METHOD_ITERIS && a->mo.schedule == IT_SCHEDULE_SWEEP ? "iteris-sweep" : it_method_name(o->method),
       o->method != IT_METHOD_ITERIS ? "single solve" : a->mo.schedule == IT_SCHEDULE_SWEEP ? "sweep" : "iterate");
    tx(&t, "  \"options\": {\"base\": ");
    tx_str(&t, a->in.base);
    tx(&t, ", \"lora\": [");
    for (size_t i = 0; i < a->in.nlora; i++) tx(&t, "%s", i ? ", " : ""), tx_str(&t, a->in.lora[i]);
    tx(&t, "], \"data\": [");
    for (size_t i = 0; i < a->in.ndata; i++) tx(&t, "%s", i ? ", " : ""), tx_str(&t, a->in.data[i]);
    tx(&t, "], \"iters\": %d, \"tol\": ", a->mo.iters);
    tx_num(&t, a->mo.tol);
    tx(&t, ", \"alpha1\": "), tx_num(&t, o->alpha1), tx(&t, ", \"alpha2\": "), tx_num(&t, o->alpha2);
    tx(&t, ", \"reg_mix\": "), tx_num(&t, o->reg_mix);
    tx(&t, ", \"with_pretrain\": %s, \"weights\": ", o->with_pretrain ? "true" : "false");
    if (o->weights) {
        tx(&t, "[");
        for (size_t i = 0; i < o->nweights; i++) tx(&t, "%s", i ? ", " : ""), tx_num(&t, o->weights[i]);
        tx(&t, "]");
    } else {
        tx(&t, "null");
    }
    tx(&t, ", \"regmean_alpha\": "), tx_num(&t, o->regmean_alpha), tx(&t, ", \"density\": "), tx_num(&t, o->density);
    tx(&t, ", \"ties_sign\": \"%s\", \"drop\": ", o->ties_frequency ? "frequency" : "total"), tx_num(&t, o->drop);
    tx(&t, ", \"x_policy\": \"%s\"", a->mo.recompute_x ? "recompute" : "keep");
    if (it_model_needs_decoder_ids(a->in.model)) tx(&t, ", \"gen_len\": %zu", a->in.gen_len);
    if (!strcmp(it_model_config(a->in.model)->model_type, "stable-diffusion"))
        tx(&t, ", \"timesteps\": %zu", a->in.timesteps ? a->in.timesteps : 4);
    tx(&t, ", \"samples\": %zu, \"seed\": %llu, \"threads\": %d, \"format\": ", a->samples, (unsigned long long)a->seed,
       it_get_threads());
    tx_str(&t, a->format);
    tx(&t, ", \"rank\": %lld},\n", (long long)rank);
    if (a->alpha_auto) {
        tx(&t, "  \"alpha_auto\": {\"grid\": [");
        for (int k = 0; k < AUTO_GRID; k++) tx(&t, "%s", k ? ", " : ""), tx_num(&t, auto_grid[k]);
        tx(&t, "], \"heldout_error\": [");
        for (int k = 0; k < AUTO_GRID; k++) tx(&t, "%s", k ? ", " : ""), tx_num(&t, a->auto_error[k]);
        tx(&t, "], \"chosen\": "), tx_num(&t, o->alpha1), tx(&t, "},\n");
    }
    tx(&t, "  \"seconds\": ");
    tx_num(&t, seconds);
    tx(&t, ",\n  \"steps\": [");
    for (size_t k = 0; k < r->nsteps; k++) {
        const it_merge_step *p = &r->steps[k];
        tx(&t, "%s\n    {\"step\": %zu, \"seconds\": ", k ? "," : "", p->step);
        tx_num(&t, p->seconds), tx(&t, ", \"max_change\": ");
        if (p->max_change >= 0) tx_num(&t, p->max_change);
        else tx(&t, "null");
        tx(&t, ", \"objective\": [");
        for (size_t i = 0; i < p->ntasks; i++) tx(&t, "%s", i ? ", " : ""), tx_num(&t, p->objective[i]);
        tx(&t, "]}");
    }
    tx(&t, "\n  ],\n  \"sites\": {");
    for (size_t s = 0; s < r->nsites; s++) {
        tx(&t, "%s\n    ", s ? "," : "");
        tx_str(&t, r->sites[s].name);
        tx(&t, ": {\"ridge\": "), tx_num(&t, r->ridge[s]), tx(&t, ", \"lambda\": [");
        for (size_t i = 0; i < r->ntasks; i++) tx(&t, "%s", i ? ", " : ""), tx_num(&t, r->lambda[s * r->ntasks + i]);
        tx(&t, "], \"rows\": [");
        for (size_t i = 0; i < r->ntasks; i++) tx(&t, "%s%zu", i ? ", " : "", r->rows[s * r->ntasks + i]);
        tx(&t, "]");
        if (energy) tx(&t, ", \"energy\": "), tx_num(&t, energy[s]);
        tx(&t, "}");
    }
    tx(&t, "\n  }\n}\n");
    if (t.oom) {
        free(t.s);
        return NULL;
    }
    return t.s;
}

/* The merged sites as the writers take them; cat's exact factors built here. */
static int merged_sites(const merge_args *a, const it_merge_result *r, it_merged_site *ms, double **exA, double **exB)
{
    const it_solve_opts *o = &a->mo.solve;
    for (size_t s = 0; s < r->nsites; s++) {
        const it_site_def *d = &r->sites[s];
        size_t mi = 0;
        it_model_find_site(a->in.model, d->name, &mi);
        ms[s] = (it_merged_site){d->name, d->kind, d->transposed, d->d_out, d->d_in, r->wstar[s],
                                 it_model_site_at(a->in.model, mi)->w0, d->rank_sum, NULL, NULL, 0};
        if (o->method != IT_METHOD_CAT) continue;
        size_t R = (size_t)d->rank_sum, m = (size_t)d->d_out, n = (size_t)d->d_in, off = 0;
        exA[s] = calloc(R * n + 1, sizeof **exA), exB[s] = calloc(m * R + 1, sizeof **exB);
        if (!exA[s] || !exB[s]) return IT_ENOMEM;
        for (size_t i = 0; i < r->ntasks; i++) { /* [w_i s_i B_i] and [A_i] side by side */
            const it_lora_module *mod = d->mods[i];
            if (!mod) continue;
            double w = o->weights ? o->weights[i] : 1.0;
            size_t ri = (size_t)mod->r;
            for (size_t k = 0; k < ri * n; k++) exA[s][off * n + k] = mod->A[k];
            for (size_t row = 0; row < m; row++)
                for (size_t k = 0; k < ri; k++) exB[s][row * R + off + k] = w * mod->scale * mod->B[row * ri + k];
            off += ri;
        }
        ms[s].exact_A = exA[s], ms[s].exact_B = exB[s], ms[s].exact_r = (int64_t)R;
    }
    return IT_OK;
}

/* Writes the merge in the chosen format, then report.json. */
static int write_merge(const merge_args *a, const it_merge_result *r, double seconds, it_err *err)
{
    size_t n = r->nsites;
    it_merged_site *ms = calloc(n ? n : 1, sizeof *ms);
    double **exA = calloc(n ? n : 1, sizeof *exA), **exB = calloc(n ? n : 1, sizeof *exB);
    double *energy = calloc(n ? n : 1, sizeof *energy);
    int rc = ms && exA && exB && energy ? merged_sites(a, r, ms, exA, exB) : IT_ENOMEM;
    if (rc == IT_ENOMEM) errf(err, rc, "out of memory");
    it_out_begin(); /* the output and the report: all of them, or none */
    if (rc == IT_OK) rc = it_make_dir(a->out, err);
    char path[4096];
    int64_t rank = 0;
    int lora = !strcmp(a->format, "lora");
    if (rc == IT_OK && !strcmp(a->format, "delta")) {
        snprintf(path, sizeof path, "%s/delta.safetensors", a->out);
        rc = it_write_delta(path, ms, n, a->mo.solve.with_pretrain, err);
    } else if (rc == IT_OK && lora) {
        it_lora_out_opts lo = {a->rank, a->mo.solve.with_pretrain, a->in.ad[0]->cfg.base_model,
                               a->in.ad[0]->has_config ? a->in.ad[0]->cfg.task_type : NULL, a->seed,
                               is_pipeline(a->in.model)};
        rc = it_write_lora(a->out, ms, n, &lo, energy, &rank, err);
    } else if (rc == IT_OK) {
        rc = it_write_model(a->out, a->in.base, ms, n, a->mo.solve.with_pretrain, err);
    }
    char *rep = rc == IT_OK ? merge_report(a, r, lora ? energy : NULL, rank, seconds) : NULL;
    if (rc == IT_OK && !rep) rc = errf(err, IT_ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/report.json", a->out);
    if (rc == IT_OK) rc = it_write_text(path, rep, err);
    if (rc == IT_OK && a->report) rc = it_write_text(a->report, rep, err); /* and a copy where asked */
    if (rc == IT_OK) rc = it_out_end(1, err);
    else it_out_end(0, NULL);
    for (size_t s = 0; s < n; s++) free(exA ? exA[s] : NULL), free(exB ? exB[s] : NULL);
    free(ms), free(exA), free(exB), free(energy), free(rep);
    return rc;
}


/* --alpha auto (DESIGN.md section 1): every fourth chosen sample of each task is held out; a1 = a2
 * is taken from the grid by the held-out alignment error of a merge on the rest. */
static int choose_alpha(merge_args *a, it_err *err)
{
    size_t nt = a->in.nlora;
    it_task cal[MAX_PATHS], held[MAX_PATHS];
    const it_sample **bufs[2 * MAX_PATHS] = {0};
    int rc = IT_OK;
    for (size_t i = 0; rc == IT_OK && i < nt; i++) {
        size_t n = a->in.nchosen[i], nh = 0, nc = 0;
        if (n < 2) rc = errf(err, IT_EINVAL, "%s: --alpha auto needs at least 2 samples per task", a->in.data[i]);
        bufs[2 * i] = malloc(n * sizeof **bufs), bufs[2 * i + 1] = malloc(n * sizeof **bufs);
        if (rc == IT_OK && (!bufs[2 * i] || !bufs[2 * i + 1])) rc = errf(err, IT_ENOMEM, "out of memory");
        for (size_t k = 0; rc == IT_OK && k < n; k++) {
            if (k % 4 == 3 || (n < 4 && k == n - 1)) bufs[2 * i + 1][nh++] = a->in.chosen[i][k];
            else bufs[2 * i][nc++] = a->in.chosen[i][k];
        }
        cal[i] = (it_task){a->in.ad[i], bufs[2 * i], nc};
        held[i] = (it_task){a->in.ad[i], bufs[2 * i + 1], nh};
    }
    it_merge_opts o = a->mo;
    o.progress = NULL;
    int best = -1;
    for (int k = 0; rc == IT_OK && k < AUTO_GRID; k++) {
        o.solve.alpha1 = o.solve.alpha2 = auto_grid[k];
        it_merge_result *r = NULL;
        rc = it_merge(a->in.model, cal, nt, &o, &r, err);
        if (rc == IT_OK) rc = it_merge_alignment(a->in.model, held, nt, &o, r, &a->auto_error[k], err);
        it_model_clear_deltas(a->in.model);
        it_merge_result_free(r);
        if (rc != IT_OK) break;
        fprintf(stderr, "[alpha auto] a1 = a2 = %g: held-out alignment error %.6g\n", auto_grid[k], a->auto_error[k]);
        if (best < 0 || a->auto_error[k] < a->auto_error[best]) best = k;
    }
    for (size_t i = 0; i < 2 * nt; i++) free((void *)bufs[i]);
    if (rc != IT_OK) return rc;
    a->mo.solve.alpha1 = a->mo.solve.alpha2 = auto_grid[best];
    fprintf(stderr, "[alpha auto] chose a1 = a2 = %g\n", auto_grid[best]);
    return IT_OK;
}

static int cmd_merge(int argc, char **argv)
{
    static merge_args a; /* static: large; cleared, so that main may run again in one process */
    static double weights[MAX_TASKS];
    memset(&a, 0, sizeof a);
    it_merge_opts_default(&a.mo);
    a.format = "lora";
    a.in.gen_len = GEN_LEN_DEFAULT;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--alpha") && i + 1 < argc && !strcmp(argv[i + 1], "auto")) {
            a.alpha_auto = 1, i++;
            continue;
        }
        int r = solve_option(argc, argv, &i, &a.mo.solve, weights, "merge");
        if (r < 0) return 2;
        if (r) continue;
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        char why[200];
        snprintf(why, sizeof why, "merge: %s needs a value", opt);
        int takes = !strcmp(opt, "--base") || !strcmp(opt, "--lora") || !strcmp(opt, "--data") || !strcmp(opt, "--out") ||
                    !strcmp(opt, "--schedule") || !strcmp(opt, "--iters") || !strcmp(opt, "--tol") ||
                    !strcmp(opt, "--samples") || !strcmp(opt, "--format") || !strcmp(opt, "--rank") ||
                    !strcmp(opt, "--report") || !strcmp(opt, "--x-policy") || !strcmp(opt, "--gen-len") ||
                    !strcmp(opt, "--timesteps");
        if (!takes) {
            snprintf(why, sizeof why, "merge: unknown option '%s'", opt);
            return usage(why);
        }
        if (!val) return usage(why);
        i++;
        double v;
        if (!strcmp(opt, "--base")) a.in.base = val;
        else if (!strcmp(opt, "--lora") && a.in.nlora < MAX_PATHS) a.in.lora[a.in.nlora++] = val;
        else if (!strcmp(opt, "--data") && a.in.ndata < MAX_PATHS) a.in.data[a.in.ndata++] = val;
        else if (!strcmp(opt, "--out")) a.out = val;
        else if (!strcmp(opt, "--report")) a.report = val;
        else if (!strcmp(opt, "--x-policy")) {
            if (strcmp(val, "keep") && strcmp(val, "recompute")) return usage("merge: --x-policy takes keep or recompute");
            a.mo.recompute_x = !strcmp(val, "recompute");
        }
        else if (!strcmp(opt, "--schedule")) {
            if (strcmp(val, "iterate") && strcmp(val, "sweep")) return usage("merge: --schedule takes iterate or sweep");
            a.mo.schedule = !strcmp(val, "sweep") ? IT_SCHEDULE_SWEEP : IT_SCHEDULE_ITERATE;
        } else if (!strcmp(opt, "--iters")) {
            long n = positive(val);
            if (!n || n > 1000) return usage("merge: --iters takes 1 to 1000");
            a.mo.iters = (int)n;
        } else if (!strcmp(opt, "--tol")) {
            if (!number(val, &v) || v < 0) return usage("merge: --tol takes a number >= 0");
            a.mo.tol = v;
        } else if (!strcmp(opt, "--gen-len")) {
            long n = positive(val);
            if (!n || n > 4096) return usage("merge: --gen-len takes 1 to 4096");
            a.in.gen_len = (size_t)n;
        } else if (!strcmp(opt, "--timesteps")) {
            long n = positive(val);
            if (!n || n > 1000) return usage("merge: --timesteps takes 1 to 1000");
            a.in.timesteps = (size_t)n;
        } else if (!strcmp(opt, "--samples")) {
            long n = positive(val);
            if (!n) return usage("merge: --samples takes a positive count");
            a.samples = (size_t)n;
        } else if (!strcmp(opt, "--format")) {
            if (strcmp(val, "lora") && strcmp(val, "delta") && strcmp(val, "model"))
                return usage("merge: --format takes lora, delta or model");
            a.format = val;
        } else if (!strcmp(opt, "--rank")) {
            long n = positive(val);
            if (!n) return usage("merge: --rank takes a positive rank");
            a.rank = n;
        } else {
            return usage("merge: too many --lora or --data (at most 64)");
        }
    }
    a.seed = a.mo.solve.seed;
    if (!a.in.base || !a.in.nlora || !a.in.ndata || !a.out)
        return usage("merge: --base DIR, --lora DIR (one per task), --data FILE (one per task) and --out DIR are required");
    it_err err = {0};
    char why[600];
    if (a.in.nlora != a.in.ndata) {
        snprintf(why, sizeof why, "merge: %zu --lora but %zu --data: the i-th --data belongs to the i-th --lora",
                 a.in.nlora, a.in.ndata);
        return usage(why);
    }
    if (it_solve_opts_check(&a.mo.solve, a.in.nlora, &err) != IT_OK) {
        snprintf(why, sizeof why, "merge: %s", err.msg);
        return usage(why);
    }
    if (a.alpha_auto && a.mo.solve.method != IT_METHOD_ITERIS) return usage("merge: --alpha auto is for --method iteris");
    const char *inputs[3 * MAX_PATHS + 1];
    size_t ninputs = 0;
    inputs[ninputs++] = a.in.base;
    for (size_t i = 0; i < a.in.nlora; i++) inputs[ninputs++] = a.in.lora[i];
    for (size_t i = 0; i < a.in.ndata; i++) inputs[ninputs++] = a.in.data[i];
    for (size_t i = 0; i < ninputs; i++) {
        const char *clash = same_file(a.out, inputs[i]) ? a.out : a.report && same_file(a.report, inputs[i]) ? a.report : NULL;
        if (clash) {
            fprintf(stderr, "iteris: merge: %s is one of the inputs; choose another output\n", clash);
            return 1;
        }
    }
    int rc = it_out_check_dir(a.out, &err); /* before the work, not after */
    if (rc == IT_OK) rc = load_inputs(&a.in, a.samples, a.seed, &err);
    if (rc == IT_OK && is_pipeline(a.in.model) && !strcmp(a.format, "model"))
        rc = errf(&err, IT_EUNSUPPORTED, "%s: --format model is not built for a Stable Diffusion pipeline yet; use "
                  "--format lora (diffusers' LoRA file) or delta", a.in.base);
    it_task tasks[MAX_PATHS];
    for (size_t i = 0; i < a.in.nlora; i++) tasks[i] = (it_task){a.in.ad[i], a.in.chosen[i], a.in.nchosen[i]};
    it_merge_result *res = NULL;
    a.mo.progress = merge_progress;
    double t0 = now();
    if (rc == IT_OK && a.alpha_auto) rc = choose_alpha(&a, &err);
    if (rc == IT_OK) rc = it_merge(a.in.model, tasks, a.in.nlora, &a.mo, &res, &err);
    for (size_t s = 0; rc == IT_OK && s < res->nsites; s++) {
        size_t fewest = SIZE_MAX;
        for (size_t i = 0; i < res->ntasks; i++)
            if (res->rows[s * res->ntasks + i] < fewest) fewest = res->rows[s * res->ntasks + i];
        int stats = a.mo.solve.method == IT_METHOD_ITERIS || a.mo.solve.method == IT_METHOD_REGMEAN;
        if (stats && fewest < (size_t)res->sites[s].d_in)
            fprintf(stderr, "iteris: warning: site %s: %zu calibration rows for d_in %lld: regularisation decides "
                    "the unseen directions (use more samples or a larger --alpha1/--alpha2)\n", res->sites[s].name,
                    fewest, (long long)res->sites[s].d_in);
    }
    double seconds = now() - t0;
    if (rc == IT_OK) rc = write_merge(&a, res, seconds, &err);
    if (res) it_model_clear_deltas(a.in.model);
    it_merge_result_free(res);
    run_inputs_free(&a.in);
    if (rc != IT_OK) return fail(&err);
    fprintf(stderr, "wrote %s (%s)\n", a.out, a.format);
    return 0;
}

/* ============================================================================================ */
/* eval                                                                                          */
/* ============================================================================================ */

/* A merge output loaded for evaluation: deltas for the base model, or a model of its own. */
typedef struct merged_out {
    it_adapter *ad;        /* --format lora */
    it_st *delta;          /* --format delta */
    it_model *model;       /* --format model */
    float **dense;         /* [n] */
    it_delta *d;           /* [n] */
    size_t *site, n;
    char method[64];
} merged_out;

static void merged_out_free(merged_out *o)
{
    for (size_t k = 0; o->dense && k < o->n; k++) free(o->dense[k]);
    free(o->dense), free(o->d), free(o->site);
    it_adapter_free(o->ad), it_st_close(o->delta), it_model_free(o->model);
}

/* The method name a merge recorded in DIR/report.json ("merged" when there is none). */
static void read_method(const char *dir, char *out, size_t size)
{
    char path[4096];
    snprintf(out, size, "merged");
    snprintf(path, sizeof path, "%s/report.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) {
            char *nb = len < ((size_t)1 << 30) ? realloc(buf, cap *= 2) : NULL;
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    it_json_doc *doc = NULL;
    if (buf && it_json_parse(&doc, buf, len, 0, NULL) == IT_OK) {
        const it_json *mth = it_json_get(it_json_root(doc), "method");
        if (mth && mth->type == IT_JSON_STR) snprintf(out, size, "%s", mth->s);
    }
    it_json_free(doc);
    free(buf);
}

static int load_merged(merged_out *o, const char *dir, it_model *base, it_err *err)
{
    char path[4096];
    read_method(dir, o->method, sizeof o->method);
    if (is_dir(dir) && has_file(dir, "pytorch_lora_weights.safetensors")) { /* a pipeline's lora output */
        snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", dir);
        return load_merged(o, path, base, err);
    }
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (has_file(dir, "adapter_config.json") || !is_dir(dir)) { /* a PEFT folder, or an SD LoRA file */
        int rc = it_adapter_load(&o->ad, dir, err);
        if (rc == IT_OK) rc = it_model_fit_adapter(base, o->ad, err);
        o->n = rc == IT_OK ? o->ad->n : 0;
        o->d = calloc(o->n + 1, sizeof *o->d), o->site = calloc(o->n + 1, sizeof *o->site);
        if (rc == IT_OK && (!o->d || !o->site)) return errf(err, IT_ENOMEM, "out of memory");
        for (size_t k = 0; rc == IT_OK && k < o->n; k++) {
            const it_lora_module *mod = &o->ad->mods[k];
            if (it_model_find_site(base, mod->name, &o->site[k]) != IT_OK)
                return errf(err, IT_EFORMAT, "%s: %s is not a site of the base model", dir, mod->name);
            o->d[k] = (it_delta){mod->A, mod->B, mod->r, mod->scale, NULL};
        }
        return rc;
    }
    if (has_file(dir, "delta.safetensors")) {
        snprintf(path, sizeof path, "%s/delta.safetensors", dir);
        int rc = it_st_open(&o->delta, path, err);
        o->n = rc == IT_OK ? it_st_count(o->delta) : 0;
        const char *wp = rc == IT_OK ? it_st_meta_get(o->delta, "iteris_with_pretrain") : NULL;
        int whole = wp && !strcmp(wp, "true");
        o->d = calloc(o->n + 1, sizeof *o->d), o->site = calloc(o->n + 1, sizeof *o->site);
        o->dense = calloc(o->n + 1, sizeof *o->dense);
        if (rc == IT_OK && (!o->d || !o->site || !o->dense)) return errf(err, IT_ENOMEM, "out of memory");
        for (size_t k = 0; rc == IT_OK && k < o->n; k++) {
            const it_tensor *t = it_st_tensor(o->delta, k);
            if (it_model_find_site(base, t->name, &o->site[k]) != IT_OK)
                return errf(err, IT_EFORMAT, "%s: %s is not a site of the base model", path, t->name);
            const it_model_site *ms = it_model_site_at(base, o->site[k]);
            if (t->numel != (uint64_t)(ms->d_out * ms->d_in))
                return errf(err, IT_EFORMAT, "%s: %s: expected [%lld, %lld]", path, t->name,
                                (long long)ms->d_out, (long long)ms->d_in);
            o->dense[k] = malloc(t->numel * sizeof **o->dense);
            if (!o->dense[k]) return errf(err, IT_ENOMEM, "out of memory");
            rc = it_tensor_to_f32(t, o->dense[k], err);
            for (size_t j = 0; rc == IT_OK && whole && j < t->numel; j++) o->dense[k][j] -= ms->w0[j];
            o->d[k] = (it_delta){NULL, NULL, 0, 0.0, o->dense[k]};
        }
        return rc;
    }
    if (has_file(dir, "config.json")) return it_model_load(&o->model, dir, err);
    return errf(err, IT_ENOTFOUND, "%s: not a merge output (no adapter_config.json, delta.safetensors or "
                    "config.json)", dir);
}

static int cmd_eval(int argc, char **argv)
{
    static run_inputs in; /* static: large; cleared as in cmd_merge */
    memset(&in, 0, sizeof in);
    const char *merged = NULL;
    int json = 0;
    in.gen_len = GEN_LEN_DEFAULT;
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(opt, "--json")) json = 1;
        else if (!strcmp(opt, "--base") && val) in.base = argv[++i];
        else if (!strcmp(opt, "--lora") && val && in.nlora < MAX_PATHS) in.lora[in.nlora++] = argv[++i];
        else if (!strcmp(opt, "--data") && val && in.ndata < MAX_PATHS) in.data[in.ndata++] = argv[++i];
        else if (!strcmp(opt, "--merged") && val) merged = argv[++i];
        else if (!strcmp(opt, "--gen-len") && val) {
            long n = positive(argv[++i]);
            if (!n || n > 4096) return usage("eval: --gen-len takes 1 to 4096");
            in.gen_len = (size_t)n;
        } else if (!strcmp(opt, "--timesteps") && val) {
            long n = positive(argv[++i]);
            if (!n || n > 1000) return usage("eval: --timesteps takes 1 to 1000");
            in.timesteps = (size_t)n;
        } else if (!strcmp(opt, "--threads") && val) {
            long t = positive(argv[++i]);
            if (!t || it_set_threads((int)t) != IT_OK) return usage("eval: --threads takes 1 to 256");
        } else {
            char why[200];
            snprintf(why, sizeof why, "eval: unknown option '%s'", opt);
            return usage(why);
        }
    }
    if (!in.base || !in.nlora || !in.ndata || !merged)
        return usage("eval: --base DIR, --lora DIR..., --data FILE... and --merged DIR are required");
    it_err err = {0};
    merged_out mo = {0};
    double c0 = now();
    int rc = load_inputs(&in, 0, 0, &err);
    if (rc == IT_OK) rc = load_merged(&mo, merged, in.model, &err);
    it_eval_result r[MAX_PATHS];
    for (size_t i = 0; rc == IT_OK && i < in.nlora; i++)
        rc = it_eval_task(in.model, in.ad[i], mo.d, mo.site, mo.n, mo.model, in.chosen[i], in.nchosen[i], &r[i], &err);
    double secs = now() - c0, mean = 0;
    for (size_t i = 0; rc == IT_OK && i < in.nlora; i++) mean += r[i].rel_err / (double)in.nlora;
    if (rc == IT_OK && json) {
        printf("{\"methods\": {");
        json_str(mo.method);
        printf(": {\"tasks\": [");
        for (size_t i = 0; i < in.nlora; i++) {
            printf("%s{\"rel_err\": ", i ? ", " : "");
            json_num(r[i].rel_err), printf(", \"kl\": "), json_num(r[i].kl), printf(", \"top1\": "), json_num(r[i].top1);
            printf("}");
        }
        printf("], \"mean_rel_err\": "), json_num(mean), printf("}}, \"seconds\": "), json_num(secs), printf("}\n");
    } else if (rc == IT_OK) {
        printf("%-14s %-6s %10s %10s %8s %8s\n", "method", "task", "rel_err", "kl", "top1", "rows");
        for (size_t i = 0; i < in.nlora; i++) {
            printf("%-14s %-6zu %10.4f ", mo.method, i + 1, r[i].rel_err);
            if (isnan(r[i].kl)) printf("%10s %8s", "-", "-"); /* outputs that are not logits */
            else printf("%10.4g %8.3f", r[i].kl, r[i].top1);
            printf(" %8zu\n", r[i].tokens);
        }
        printf("%-14s %-6s %10.4f\n", mo.method, "mean", mean);
    }
    merged_out_free(&mo);
    run_inputs_free(&in);
    return rc == IT_OK ? 0 : fail(&err);
}

/* ============================================================================================ */
/* forward                                                                                       */
/* ============================================================================================ */

/* The rows one site received over all samples, in forward order. */
typedef struct dump_site {
    float *x;
    size_t rows, cap, d;
    int want;
} dump_site;

typedef struct dump_ctx {
    dump_site *sites;
    int oom;
} dump_ctx;

/* Appends rows x [nrows x d] to s; 0, or -1 out of memory. */
static int append_rows(dump_site *s, const float *x, size_t nrows, size_t d)
{
    if (s->rows + nrows > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        while (cap < s->rows + nrows) cap *= 2;
        float *nx = realloc(s->x, cap * d * sizeof *nx);
        if (!nx) return -1;
        s->x = nx, s->cap = cap;
    }
    memcpy(s->x + s->rows * d, x, nrows * d * sizeof *x);
    s->rows += nrows, s->d = d;
    return 0;
}

static int dump_observer(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    dump_ctx *c = ctx;
    dump_site *s = &c->sites[site];
    if (s->want && append_rows(s, x, nrows, d_in)) return c->oom = 1;
    return 0;
}

/* A float32 tensor for it_st_save, its bytes little-endian whatever the host. */
static int f32_tensor(it_tensor *t, char *name, uint64_t *shape, const float *x, size_t rows, size_t cols, it_err *err)
{
    size_t n = rows * cols;
    void *b = malloc(n * 4 + 1);
    if (!b) return errf(err, IT_ENOMEM, "out of memory");
    int rc = it_f32_encode(b, IT_F32, x, n, err);
    shape[0] = rows, shape[1] = cols;
    *t = (it_tensor){name, IT_F32, 2, shape, n, 4 * n, b, 0, 0};
    return rc;
}

static int cmd_forward(int argc, char **argv)
{
    const char *model_dir = NULL, *lora = NULL, *merged = NULL, *inputs = NULL, *dump = NULL;
    size_t gen_len = GEN_LEN_DEFAULT, timesteps = 0;
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(opt, "--model") && has) model_dir = argv[++i];
        else if (!strcmp(opt, "--lora") && has) lora = argv[++i];
        else if (!strcmp(opt, "--merged") && has) merged = argv[++i];
        else if (!strcmp(opt, "--inputs") && has) inputs = argv[++i];
        else if (!strcmp(opt, "--dump") && has) dump = argv[++i];
        else if (!strcmp(opt, "--gen-len") && has) {
            long n = positive(argv[++i]);
            if (!n || n > 4096) return usage("forward: --gen-len takes 1 to 4096");
            gen_len = (size_t)n;
        } else if (!strcmp(opt, "--timesteps") && has) {
            long n = positive(argv[++i]);
            if (!n || n > 1000) return usage("forward: --timesteps takes 1 to 1000");
            timesteps = (size_t)n;
        } else if (!strcmp(opt, "--threads") && has) {
            long t = positive(argv[++i]);
            if (!t || it_set_threads((int)t) != IT_OK) return usage("forward: --threads takes 1 to 256");
        } else {
            char why[200];
            snprintf(why, sizeof why, "forward: unknown option '%s'", opt);
            return usage(why);
        }
    }
    if (!model_dir || !inputs || !dump || (lora && merged))
        return usage("forward: --model DIR, --inputs FILE and --dump FILE are required; at most one of --lora, --merged");
    it_err err = {0};
    it_model *m = NULL;
    it_samples *smp = NULL;
    merged_out mo = {0};
    int rc = it_model_load(&m, model_dir, &err);
    int clash = rc == IT_OK && same_file(dump, inputs);
    for (size_t k = 0; rc == IT_OK && m && it_model_weights(m) && k < it_st_file_count(it_model_weights(m)); k++)
        clash |= same_file(dump, it_st_file_path(it_model_weights(m), k));
    if (clash) rc = errf(&err, IT_EINVAL, "forward: --dump %s is one of the inputs; choose another output", dump);
    if (rc == IT_OK) rc = it_samples_load(&smp, inputs, &err);
    if (rc == IT_OK && (lora || merged)) rc = load_merged(&mo, lora ? lora : merged, m, &err);
    if (rc == IT_OK && mo.model) rc = errf(&err, IT_EINVAL, "forward: give a model folder with --model, not --merged");
    size_t ns = m ? it_model_site_count(m) : 0;
    dump_ctx dc = {calloc(ns + 1, sizeof *dc.sites), 0};
    dump_site outs[IT_MAX_OUTPUTS] = {{0}};
    const char *out_names[IT_MAX_OUTPUTS] = {0};
    size_t nouts = 0;
    if (rc == IT_OK && !dc.sites) rc = errf(&err, IT_ENOMEM, "out of memory");
    for (size_t k = 0; rc == IT_OK && k < ns; k++) dc.sites[k].want = !(lora || merged);
    for (size_t k = 0; rc == IT_OK && k < mo.n; k++) {
        dc.sites[mo.site[k]].want = 1;
        it_model_set_delta(m, mo.site[k], &mo.d[k]);
    }
    if (rc == IT_OK) rc = prepare_samples(m, NULL, smp, gen_len, timesteps, &err); /* decoder ids from this very model */
    if (rc == IT_OK) it_model_set_observer(m, dump_observer, &dc);
    for (size_t k = 0; rc == IT_OK && k < smp->n; k++) { /* each output concatenated over the samples */
        it_outputs o;
        rc = it_model_run(m, &smp->s[k], &o, &err);
        for (size_t j = 0; rc == IT_OK && j < o.n; j++) {
            size_t slot = 0;
            while (slot < nouts && strcmp(out_names[slot], o.o[j].name)) slot++;
            if (slot == nouts && nouts < IT_MAX_OUTPUTS) out_names[nouts++] = o.o[j].name;
            if (slot < nouts && outs[slot].rows && outs[slot].d != o.o[j].cols)
                rc = errf(&err, IT_EINVAL, "%s: line %zu: output %s has %zu columns, earlier samples %zu", inputs,
                          smp->s[k].line, o.o[j].name, o.o[j].cols, outs[slot].d);
            else if (slot < nouts && append_rows(&outs[slot], o.o[j].data, o.o[j].rows, o.o[j].cols))
                dc.oom = 1;
        }
        it_outputs_free(&o);
        if (rc == IT_OK && dc.oom) rc = errf(&err, IT_ENOMEM, "out of memory");
    }
    /* the outputs, then inputs.<site> for every site observed */
    it_tensor *t = calloc(ns + IT_MAX_OUTPUTS, sizeof *t);
    uint64_t *shapes = calloc(2 * (ns + IT_MAX_OUTPUTS), sizeof *shapes);
    char **names = calloc(ns + 1, sizeof *names);
    size_t nt = 0;
    if (rc == IT_OK && (!t || !shapes || !names)) rc = errf(&err, IT_ENOMEM, "out of memory");
    for (size_t k = 0; rc == IT_OK && k < nouts; k++, nt++)
        rc = f32_tensor(&t[nt], (char *)out_names[k], shapes + 2 * nt, outs[k].x, outs[k].rows, outs[k].d, &err);
    for (size_t k = 0; rc == IT_OK && k < ns; k++) {
        if (!dc.sites[k].want || !dc.sites[k].rows) continue;
        const char *sn = it_model_site_at(m, k)->name;
        names[k] = malloc(strlen(sn) + 8);
        if (!names[k]) {
            rc = errf(&err, IT_ENOMEM, "out of memory");
            break;
        }
        sprintf(names[k], "inputs.%s", sn);
        rc = f32_tensor(&t[nt], names[k], shapes + 2 * nt, dc.sites[k].x, dc.sites[k].rows, dc.sites[k].d, &err);
        nt++;
    }
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    if (rc == IT_OK) rc = it_st_save(dump, t, nt, mk, mv, 1, &err);
    for (size_t k = 0; t && k < nt; k++) free((void *)t[k].data);
    for (size_t k = 0; dc.sites && k < ns; k++) free(dc.sites[k].x), free(names ? names[k] : NULL);
    for (size_t k = 0; k < IT_MAX_OUTPUTS; k++) free(outs[k].x);
    free(t), free(shapes), free(names), free(dc.sites);
    if (m) it_model_clear_deltas(m);
    merged_out_free(&mo);
    it_samples_free(smp);
    it_model_free(m);
    return rc == IT_OK ? 0 : fail(&err);
}

/* ============================================================================================ */
/* demo                                                                                          */
/* ============================================================================================ */

static void demo_progress(void *ctx, const char *line)
{
    if (!*(int *)ctx) fprintf(stderr, "  %s\n", line);
}

/* A case's {"methods": {"<method>": {"tasks": [{"rel_err", "kl", "top1"}, ..], "mean_rel_err"}, ..}, "seconds"}
 * members (without the braces): DESIGN.md's shape. */
static void demo_json_case(const it_demo_case *c, double seconds)
{
    printf("\"methods\": {");
    for (size_t k = 0; k < c->nmethods; k++) {
        const it_demo_method *m = &c->method[k];
        printf("%s", k ? ", " : "");
        json_str(m->name);
        printf(": {\"tasks\": [");
        for (size_t i = 0; i < c->ntasks; i++) {
            printf("%s{\"rel_err\": ", i ? ", " : "");
            json_num(m->task[i].rel_err), printf(", \"kl\": "), json_num(m->task[i].kl);
            printf(", \"top1\": "), json_num(m->task[i].top1), printf("}");
        }
        printf("], \"mean_rel_err\": "), json_num(m->mean_rel_err), printf("}");
    }
    printf("}, \"seconds\": "), json_num(seconds);
}

static void demo_table(const it_demo_case *c)
{
    printf("\n%s: held-out rel_err per task (0 = the task's own adapter, 1 = no better than the base model)\n\n",
           c->model);
    printf("%-14s", "method");
    for (size_t i = 0; i < c->ntasks; i++) printf("   task %zu", i + 1);
    printf("     mean   KL mean  top1 mean  merge s\n");
    for (size_t k = 0; k < c->nmethods; k++) {
        const it_demo_method *m = &c->method[k];
        double kl = 0, top1 = 0;
        printf("%-14s", m->name);
        for (size_t i = 0; i < c->ntasks; i++) {
            printf(" %8.4f", m->task[i].rel_err);
            kl += m->task[i].kl / (double)c->ntasks, top1 += m->task[i].top1 / (double)c->ntasks;
        }
        printf(" %8.4f %9.4g %10.3f %8.2f\n", m->mean_rel_err, kl, top1, m->seconds);
    }
}

static int cmd_demo(int argc, char **argv)
{
    const char *out = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            long t = positive(argv[++i]);
            if (!t || it_set_threads((int)t) != IT_OK) return usage("demo: --threads takes 1 to 256");
        } else {
            char why[200];
            snprintf(why, sizeof why, "demo: unknown option '%s'", argv[i]);
            return usage(why);
        }
    }
    static it_demo_result r;
    it_err err = {0};
    int quiet = json;
    if (!json)
        fprintf(stderr, "iteris demo: a small Llama and a small T5 model, three adapters each with their own tasks, "
                        "six merges each\n");
    if (it_demo_run(out, &r, demo_progress, &quiet, &err) != IT_OK) return fail(&err);
    if (json) { /* the first case (llama) at the top, as DESIGN.md has it; the others under their name */
        printf("{");
        demo_json_case(&r.cases[0], r.seconds);
        for (size_t c = 1; c < r.ncases; c++) {
            printf(", ");
            json_str(r.cases[c].model);
            printf(": {");
            demo_json_case(&r.cases[c], r.cases[c].seconds);
            printf("}");
        }
        printf("}\n");
        return fflush(stdout) == 0 ? 0 : 1;
    }
    for (size_t c = 0; c < r.ncases; c++) demo_table(&r.cases[c]);
    printf("\nfiles in %s (t5/: the T5 case); %.1f s in all", r.dir, r.seconds);
    for (size_t c = 0; c < r.ncases; c++) printf("%s%s %.1f s", c ? ", " : " (", r.cases[c].model, r.cases[c].seconds);
    printf(")\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage(NULL);
    it_out_cleanup_on_signals(); /* an interrupt leaves no partial output */
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("iteris %s\n", IT_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "solve")) return cmd_solve(argc - 2, argv + 2);
    if (!strcmp(cmd, "merge")) return cmd_merge(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "forward")) return cmd_forward(argc - 2, argv + 2);
    if (!strcmp(cmd, "demo")) return cmd_demo(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return cli_tokenize(argc - 2, argv + 2);
    return usage("unknown command");
}
