/* main.c -- the iteris command line: the only place that prints to the user or exits.
 *
 * Exit status: 0 success, 1 bad input or failed run (one line on stderr), 2 usage error. */
#include "iteris.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *usage_text =
    "usage: iteris <command> [options]\n"
    "\n"
    "commands:\n"
    "  inspect FILE|DIR [--json]   list the tensors, metadata and totals of a safetensors file, a\n"
    "                              sharded index or a model/adapter folder (and what it is)\n"
    "  demo [--out DIR] [--json]   build a small model and adapters, merge them with every method\n"
    "  bench [gemm|gram|chol|svd|all] [--n N[,N...]] [--threads T] [--json]\n"
    "                              GFLOP/s of the linear algebra (sizes 256 to 4096 by default)\n"
    "  solve --features FILE --out FILE [--method M] [--alpha1 A] [--alpha2 A] [--reg-mix B]\n"
    "        [--with-pretrain] [--weights w1,w2,..] [--seed S] [--threads T] [--dtype F32|F64] [-v]\n"
    "                              W* per site from supplied features (<site>.delta.<i>,\n"
    "                              <site>.X.<i>, <site>.Xt.<i>, <site>.weight)\n"
    "  merge, eval, forward (see README.md)\n"
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

static int cmd_bench(int argc, char **argv)
{
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
    it_err err;
    if (it_solve_features(features, out, dtype, &o, solve_progress, &verbose, &err) != IT_OK) return fail(&err);
    if (verbose) fprintf(stderr, "wrote %s\n", out);
    return 0;
}

/* ============================================================================================ */
/* Commands that later issues fill in                                                            */
/* ============================================================================================ */

static int not_built(const char *cmd)
{
    fprintf(stderr, "iteris: '%s' is not built yet (this version has inspect, solve and bench; see README.md)\n", cmd);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage(NULL);
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
    const char *later[] = {"merge", "eval", "forward", "demo"};
    for (size_t i = 0; i < sizeof later / sizeof *later; i++)
        if (!strcmp(cmd, later[i])) return not_built(cmd);
    return usage("unknown command");
}
