/* test/test_demo.c -- `iteris demo` (demo.c): the files it writes read back with the library's
 * readers, the table has every method with finite numbers, both IterIS schedules beat RegMean and
 * linear on the held-out mean, and a second run (into another folder, on one thread) gives the
 * same bytes and bit-identical numbers. */
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

/* The files are the real formats: the model, adapter and sample readers take them. */
static void test_demo_files_load(void)
{
    const it_demo_result *r = first_run();
    if (!r) return;
    CHECK(!strcmp(r->dir, test_tmppath("demo")));
    it_err err = {0};
    it_model *m = NULL;
    CHECKF(it_model_load(&m, at(r->dir, "base"), &err) == IT_OK, "%s", err.msg);
    const it_config *c = m ? it_model_config(m) : NULL;
    CHECK(c && c->arch == IT_ARCH_LLAMA && !strcmp(c->class_name, "LlamaForCausalLM") && c->layers == 2 &&
          c->kv_heads == 2 && !c->tie_word_embeddings);
    CHECK(m && it_model_site_count(m) == 15); /* 7 per layer and lm_head */
    for (int k = 1; k <= 3; k++) {
        char rel[64];
        it_adapter *ad = NULL;
        snprintf(rel, sizeof rel, "adapters/task%d", k);
        CHECKF(it_adapter_load(&ad, at(r->dir, rel), &err) == IT_OK, "%s", err.msg);
        CHECK(ad && ad->format == IT_ADAPTER_PEFT && ad->has_config && ad->n == 14 && ad->nwarn == 0);
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
            CHECKF(it_samples_load(&s, at(r->dir, rel), &err) == IT_OK, "%s", err.msg);
            CHECK(s && s->n == (h ? 8u : 24u));
            /* task k reads its own third of the vocabulary */
            for (size_t q = 0; s && c && q < s->n; q++)
                for (size_t i = 0; i < s->s[q].n; i++)
                    CHECK(s->s[q].ids[i] / (c->vocab_size / 3) == k - 1);
            it_samples_free(s);
        }
    }
    it_model_free(m);
}

/* Six methods with finite numbers; IterIS (both schedules) beats RegMean and linear. */
static void test_demo_table(void)
{
    const it_demo_result *r = first_run();
    if (!r) return;
    CHECK(r->ntasks == 3 && r->nmethods == 6 && first_lines >= 6 + 6);
    for (size_t k = 0; k < r->nmethods && k < 6; k++) {
        const it_demo_method *m = &r->method[k];
        CHECKF(!strcmp(m->name, METHODS[k]), "method %zu: %s", k, m->name);
        double mean = 0;
        for (size_t i = 0; i < r->ntasks; i++) {
            const it_eval_result *e = &m->task[i];
            CHECKF(isfinite(e->rel_err) && e->rel_err >= 0 && isfinite(e->kl) && e->kl >= 0 && e->top1 >= 0 &&
                   e->top1 <= 1 && e->tokens > 0, "%s task %zu", m->name, i + 1);
            mean += e->rel_err / (double)r->ntasks;
        }
        CHECK(fabs(mean - m->mean_rel_err) < 1e-12 && isfinite(m->seconds) && m->seconds >= 0);
        test_note("%-12s mean held-out rel_err %.4f (%.3f s)", m->name, m->mean_rel_err, m->seconds);
    }
    double it = r->method[0].mean_rel_err, sw = r->method[1].mean_rel_err;
    double rm = r->method[2].mean_rel_err, lin = r->method[3].mean_rel_err;
    CHECKF(it < rm && sw < rm && it < lin && sw < lin, "iteris %.4f, sweep %.4f, regmean %.4f, linear %.4f", it, sw,
           rm, lin);
    CHECKF(fabs(it - sw) < 1e-3, "the schedules reach one fixed point: %.6f vs %.6f", it, sw);
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
                           "data/task1.jsonl", "data/task3_heldout.jsonl"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++)
        CHECKF(same_file(at(r->dir, files[k]), at(again.dir, files[k])), "%s differs", files[k]);
    CHECK(again.ntasks == r->ntasks && again.nmethods == r->nmethods);
    for (size_t k = 0; k < r->nmethods; k++)
        for (size_t i = 0; i < r->ntasks; i++) {
            const it_eval_result *a = &r->method[k].task[i], *b = &again.method[k].task[i];
            CHECKF(!memcmp(&a->rel_err, &b->rel_err, sizeof a->rel_err) && !memcmp(&a->kl, &b->kl, sizeof a->kl) &&
                   !memcmp(&a->top1, &b->top1, sizeof a->top1) && a->tokens == b->tokens,
                   "%s task %zu: rel_err %.17g vs %.17g", r->method[k].name, i + 1, a->rel_err, b->rel_err);
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
    /* Two whole demos: about a second natively, ten minutes under valgrind, whose run (make valgrind)
     * sets ITERIS_TEST_SKIP_SLOW; AddressSanitizer (make asan) runs them, leaks included. */
    if (test_skip_slow()) {
        test_note("demo runs skipped (ITERIS_TEST_SKIP_SLOW)");
        return;
    }
    RUN(test_demo_files_load);
    RUN(test_demo_table);
    RUN(test_demo_deterministic);
}
