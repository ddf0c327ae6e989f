/* test/test_demo.c -- `iteris demo` (demo.c), both cases (llama, t5): the files it writes read back
 * with the library's readers, each table has every method with finite numbers, both IterIS
 * schedules beat RegMean and linear on the held-out mean, and a second run (into another folder,
 * on one thread) gives the same bytes and bit-identical numbers. */
#include "test.h"

#include "../iteris.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const METHODS[6] = {"iteris", "iteris-sweep", "regmean", "linear", "ties", "dare"};

static void count_lines(void *ctx, const char *line)
{
    (void)line;
    (*(int *)ctx)++;
}

/* The first run, shared by the tests below (NULL if it failed). */
static it_demo_result first;
static int first_rc = -1, first_lines;

static const it_demo_result *first_run(void)
{
    if (first_rc < 0) {
        it_err err = {0};
        first_rc = it_demo_run(test_tmppath("demo"), &first, count_lines, &first_lines, &err);
        CHECKF(first_rc == IT_OK, "%s", err.msg);
    }
    return first_rc == IT_OK ? &first : NULL;
}

static const char *at(const char *dir, const char *rel)
{
    static char buf[4][8192];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, rel);
    return buf[k];
}

/* The tensors, adapters and samples of one case under root (llama: root, t5: root/t5). */
static void check_case_files(const char *root, int t5)
{
    it_err err = {0};
    it_model *m = NULL;
    CHECKF(it_model_load(&m, at(root, "base"), &err) == IT_OK, "%s", err.msg);
    const it_config *c = m ? it_model_config(m) : NULL;
    if (t5) { /* 7 sites per encoder layer, 11 per decoder layer, lm_head */
        CHECK(c && c->arch == IT_ARCH_T5 && !strcmp(c->class_name, "T5ForConditionalGeneration") &&
              !c->tie_word_embeddings && it_model_needs_decoder_ids(m));
        CHECK(m && it_model_site_count(m) == 2 * 7 + 2 * 11 + 1);
    } else {
        CHECK(c && c->arch == IT_ARCH_LLAMA && !strcmp(c->class_name, "LlamaForCausalLM") && c->layers == 2 &&
              c->kv_heads == 2 && !c->tie_word_embeddings);
        CHECK(m && it_model_site_count(m) == 15); /* 7 per layer and lm_head */
    }
    int32_t lo = t5 ? 2 : 0; /* T5: pad/start 0 and eos 1 come first */
    for (int k = 1; k <= 3; k++) {
        char rel[64];
        it_adapter *ad = NULL;
        snprintf(rel, sizeof rel, "adapters/task%d", k);
        CHECKF(it_adapter_load(&ad, at(root, rel), &err) == IT_OK, "%s", err.msg);
        CHECK(ad && ad->format == IT_ADAPTER_PEFT && ad->has_config && ad->n == (t5 ? 36u : 14u) && ad->nwarn == 0);
        for (size_t i = 0; ad && m && i < ad->n; i++) { /* each module is a site of the model, shapes agreeing */
            const it_lora_module *mod = &ad->mods[i];
            size_t s;
            CHECK(it_model_find_site(m, mod->name, &s) == IT_OK && it_model_site_at(m, s)->d_in == mod->d_in &&
                  it_model_site_at(m, s)->d_out == mod->d_out);
        }
        it_adapter_free(ad);
        const char *names[2] = {"data/task%d.jsonl", "data/task%d_heldout.jsonl"};
        for (int h = 0; h < 2; h++) {
            it_samples *s = NULL;
            snprintf(rel, sizeof rel, names[h], k);
            CHECKF(it_samples_load(&s, at(root, rel), &err) == IT_OK, "%s", err.msg);
            CHECK(s && s->n == (h ? 8u : t5 ? 16u : 24u));
            /* task k reads its own third of the vocabulary (T5: then eos); no decoder ids in the files */
            for (size_t q = 0; s && c && q < s->n; q++) {
                size_t n = s->s[q].n - (size_t)t5;
                CHECK(!s->s[q].dec_ids && (!t5 || s->s[q].ids[n] == 1));
                for (size_t i = 0; i < n; i++) CHECK((s->s[q].ids[i] - lo) / 48 == k - 1);
            }
            it_samples_free(s);
        }
    }
    it_model_free(m);
}

/* The files are the real formats: the model, adapter and sample readers take them. */
static void test_demo_files_load(void)
{
    const it_demo_result *r = first_run();
    if (!r) return;
    CHECK(!strcmp(r->dir, test_tmppath("demo")));
    check_case_files(r->dir, 0);
    char t5[8192];
    snprintf(t5, sizeof t5, "%s/t5", r->dir);
    check_case_files(t5, 1);
}

/* Two cases of six methods with finite numbers; IterIS (both schedules) beats RegMean and linear. */
static void test_demo_table(void)
{
    const it_demo_result *r = first_run();
    if (!r) return;
    CHECK(r->ncases == 2 && !strcmp(r->cases[0].model, "llama") && !strcmp(r->cases[1].model, "t5"));
    CHECK(first_lines >= 2 * (6 + 6));
    for (size_t c = 0; c < r->ncases && c < 2; c++) {
        const it_demo_case *dc = &r->cases[c];
        CHECK(dc->ntasks == 3 && dc->nmethods == 6 && isfinite(dc->seconds) && dc->seconds > 0);
        for (size_t k = 0; k < dc->nmethods && k < 6; k++) {
            const it_demo_method *m = &dc->method[k];
            CHECKF(!strcmp(m->name, METHODS[k]), "%s method %zu: %s", dc->model, k, m->name);
            double mean = 0;
            for (size_t i = 0; i < dc->ntasks; i++) {
                const it_eval_result *e = &m->task[i];
                CHECKF(isfinite(e->rel_err) && e->rel_err >= 0 && isfinite(e->kl) && e->kl >= 0 && e->top1 >= 0 &&
                       e->top1 <= 1 && e->tokens > 0, "%s %s task %zu", dc->model, m->name, i + 1);
                /* T5: logits over the decoder positions, 8 held-out samples of 9 each */
                if (c == 1) CHECKF(e->tokens == 8 * 9, "%s task %zu: %zu positions", m->name, i + 1, e->tokens);
                mean += e->rel_err / (double)dc->ntasks;
            }
            CHECK(fabs(mean - m->mean_rel_err) < 1e-12 && isfinite(m->seconds) && m->seconds >= 0);
            test_note("%-5s %-12s mean held-out rel_err %.4f (%.3f s)", dc->model, m->name, m->mean_rel_err,
                      m->seconds);
        }
        double it = dc->method[0].mean_rel_err, sw = dc->method[1].mean_rel_err;
        double rm = dc->method[2].mean_rel_err, lin = dc->method[3].mean_rel_err;
        CHECKF(it < rm && sw < rm && it < lin && sw < lin, "%s: iteris %.4f, sweep %.4f, regmean %.4f, linear %.4f",
               dc->model, it, sw, rm, lin);
        if (c == 0) CHECKF(fabs(it - sw) < 1e-3, "the schedules reach one fixed point: %.6f vs %.6f", it, sw);
    }
    /* the Llama case's numbers, as the README quotes them */
    static const double LLAMA[6] = {0.1115, 0.1116, 0.1507, 0.7983, 0.4297, 0.8159};
    for (size_t k = 0; r->ncases && k < 6; k++)
        CHECKF(fabs(r->cases[0].method[k].mean_rel_err - LLAMA[k]) < 5e-5, "llama %s: %.4f, README %.4f", METHODS[k],
               r->cases[0].method[k].mean_rel_err, LLAMA[k]);
    CHECK(isfinite(r->seconds) && r->seconds > 0);
}

static int same_file(const char *a, const char *b)
{
    size_t la, lb;
    unsigned char *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x), free(y);
    return same;
}

/* A second run into another folder, on one thread: the same files, bit-identical numbers. */
static void test_demo_deterministic(void)
{
    const it_demo_result *r = first_run();
    if (!r) return;
    static it_demo_result again;
    it_err err = {0};
    int threads = it_get_threads();
    it_set_threads(1);
    int rc = it_demo_run(test_tmppath("demo_again"), &again, NULL, NULL, &err);
    it_set_threads(threads);
    CHECKF(rc == IT_OK, "%s", err.msg);
    if (rc != IT_OK) return;
    const char *files[] = {"base/config.json", "base/model.safetensors", "adapters/task1/adapter_config.json",
                           "adapters/task2/adapter_model.safetensors", "adapters/task3/adapter_model.safetensors",
                           "data/task1.jsonl", "data/task3_heldout.jsonl", "t5/base/config.json",
                           "t5/base/model.safetensors", "t5/adapters/task1/adapter_config.json",
                           "t5/adapters/task2/adapter_model.safetensors", "t5/data/task3.jsonl",
                           "t5/data/task1_heldout.jsonl"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++)
        CHECKF(same_file(at(r->dir, files[k]), at(again.dir, files[k])), "%s differs", files[k]);
    CHECK(again.ncases == r->ncases);
    for (size_t c = 0; c < r->ncases && c < again.ncases; c++) {
        const it_demo_case *x = &r->cases[c], *y = &again.cases[c];
        CHECK(x->ntasks == y->ntasks && x->nmethods == y->nmethods);
        for (size_t k = 0; k < x->nmethods; k++)
            for (size_t i = 0; i < x->ntasks; i++) {
                const it_eval_result *a = &x->method[k].task[i], *b = &y->method[k].task[i];
                CHECKF(!memcmp(&a->rel_err, &b->rel_err, sizeof a->rel_err) && !memcmp(&a->kl, &b->kl, sizeof a->kl) &&
                       !memcmp(&a->top1, &b->top1, sizeof a->top1) && a->tokens == b->tokens,
                       "%s %s task %zu: rel_err %.17g vs %.17g", x->model, x->method[k].name, i + 1, a->rel_err,
                       b->rel_err);
            }
    }
}

/* A folder whose parent does not exist is an ordinary error naming it. */
static void test_demo_bad_folder(void)
{
    static it_demo_result r;
    it_err err = {0};
    const char *dir = test_tmppath("no/such/folder");
    CHECK(it_demo_run(dir, &r, NULL, NULL, &err) == IT_EIO && strstr(err.msg, dir) != NULL);
}

void suite_demo(void)
{
    RUN(test_demo_bad_folder);
    /* Two whole demos: about two seconds each natively, far longer under valgrind, whose run (make
     * valgrind) sets ITERIS_TEST_SKIP_SLOW; AddressSanitizer (make asan) runs them, leaks included. */
    if (test_skip_slow()) {
        test_note("demo runs skipped (ITERIS_TEST_SKIP_SLOW)");
        return;
    }
    RUN(test_demo_files_load);
    RUN(test_demo_table);
    RUN(test_demo_deterministic);
}
