/* test/test_data.c -- calibration sample files (data.c): good files field by field (both id keys,
 * decoder ids, text, names, blank lines, CRLF, no final newline, Unicode), every refusal with its
 * line number and key in the message, the fixtures' inputs.jsonl against their inputs.safetensors,
 * and the seeded choice of samples against an independent copy of its documented rule. */
#include "test.h"

#include "iteris.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

/* Writes text to a temporary samples file and loads it; the file's path in *path (if not NULL). */
static int load_text(const char *text, it_samples **out, it_err *e, const char **path)
{
    const char *p = test_tmppath("samples.jsonl");
    CHECK(test_write_file(p, text, strlen(text)) == 0);
    if (path) *path = p;
    return it_samples_load(out, p, e);
}

/* Loads text and checks that it succeeds; the samples, or NULL. */
static it_samples *load_ok(const char *text, int line)
{
    it_samples *s = NULL;
    it_err e = {0, ""};
    int rc = load_text(text, &s, &e, NULL);
    if (rc != IT_OK) test_fail(__FILE__, line, "load failed: %s", e.msg);
    return s;
}
#define LOAD_OK(text) load_ok((text), __LINE__)

/* Whether msg is one line of printable ASCII. */
static int one_line(const char *msg)
{
    for (const char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F) return 0;
    return 1;
}

/* Whether ids[0..n) are exactly want[0..m). */
static int ids_are(const int32_t *ids, size_t n, const int32_t *want, size_t m)
{
    return n == m && ids && memcmp(ids, want, m * sizeof *ids) == 0;
}

/* Checks that text is refused with code, *out left NULL, and a one-line message that starts with
 * "<path>: line <at>: " (at 0: "<path>: ") and contains needle. */
static void refuse(const char *text, int code, size_t at, const char *needle, int line)
{
    it_samples *s = (it_samples *)&s; /* not NULL, so that we see it cleared */
    it_err e = {0, ""};
    const char *path = NULL;
    int rc = load_text(text, &s, &e, &path);
    char prefix[600];
    if (at) snprintf(prefix, sizeof prefix, "%s: line %zu: ", path, at);
    else snprintf(prefix, sizeof prefix, "%s: ", path);
    if (rc != code || e.code != code)
        test_fail(__FILE__, line, "rc %d (err.code %d), want %d: %s", rc, e.code, code, e.msg);
    if (rc == IT_OK) it_samples_free(s);
    else if (s) test_fail(__FILE__, line, "*out not cleared");
    if (strncmp(e.msg, prefix, strlen(prefix)) != 0)
        test_fail(__FILE__, line, "message \"%s\" does not start with \"%s\"", e.msg, prefix);
    if (needle && !strstr(e.msg, needle)) test_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", e.msg, needle);
    if (!one_line(e.msg)) test_fail(__FILE__, line, "message is not one printable line: %s", e.msg);
}

/* ============================================================================================ */
/* Good files                                                                                    */
/* ============================================================================================ */

/* Every kept field, both id keys, blank lines (with spaces, tabs, CR) skipped but counted, ignored
 * keys (tensor references included), and line numbers. */
static void test_data_fields(void)
{
    const char *text = "\n"
                       "{\"name\": \"a\", \"input_ids\": [5, 0, 2147483647]}\n"
                       " \t \r\n"
                       "{\"ids\": [7]}\n"
                       "{\"input_ids\": [1, 2], \"ids\": [1, 2], \"decoder_input_ids\": [0, 9]}\n"
                       "\n"
                       "{\"text\": \"hello\", \"extra\": {\"a\": [1.5, null]}, \"pixel_values\": "
                       "{\"file\": \"inputs.safetensors\", \"tensor\": \"pixel_values\", \"index\": 0}}\n";
    it_samples *s = LOAD_OK(text);
    if (!s) return;
    CHECK(s->n == 4 && s->path && strstr(s->path, "samples.jsonl"));
    static const int32_t a[] = {5, 0, 2147483647}, b[] = {7}, c[] = {1, 2}, d[] = {0, 9};
    CHECK(ids_are(s->s[0].ids, s->s[0].n, a, 3) && s->s[0].line == 2 && !strcmp(s->s[0].name, "a"));
    CHECK(!s->s[0].dec_ids && s->s[0].ndec == 0 && !s->s[0].text);
    CHECK(ids_are(s->s[1].ids, s->s[1].n, b, 1) && s->s[1].line == 4 && !s->s[1].name && !s->s[1].text);
    CHECK(ids_are(s->s[2].ids, s->s[2].n, c, 2) && ids_are(s->s[2].dec_ids, s->s[2].ndec, d, 2) && s->s[2].line == 5);
    CHECK(!s->s[3].ids && s->s[3].n == 0 && !strcmp(s->s[3].text, "hello") && s->s[3].line == 7 && !s->s[3].name);
    it_samples_free(s);
}

/* CRLF endings, no final newline, Unicode (escaped and raw) in text and name, a sample with both
 * text and ids, whitespace around the object. */
static void test_data_crlf_unicode(void)
{
    const char *text = "{\"text\": \"caf\\u00e9 \xE2\x82\xAC \\ud83d\\ude00\", \"name\": \"n\xC3\xA9\"}\r\n"
                       "\r\n"
                       "  {\"ids\": [3], \"text\": \"x\\ny\"}  \r\n"
                       "{\"ids\": [4,5]}";
    it_samples *s = LOAD_OK(text);
    if (!s) return;
    CHECK(s->n == 3);
    CHECK(!strcmp(s->s[0].text, "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80") && !strcmp(s->s[0].name, "n\xC3\xA9"));
    static const int32_t a[] = {3}, b[] = {4, 5};
    CHECK(ids_are(s->s[1].ids, s->s[1].n, a, 1) && !strcmp(s->s[1].text, "x\ny") && s->s[1].line == 3);
    CHECK(ids_are(s->s[2].ids, s->s[2].n, b, 2) && s->s[2].line == 4);
    it_samples_free(s);
}

/* The in-memory form: the same result, text need not be NUL-terminated, NULL name in messages. */
static void test_data_parse_memory(void)
{
    const char text[] = "{\"ids\": [1]}\n{\"ids\": [2, 3]}XXXX";
    it_samples *s = NULL;
    it_err e = {0, ""};
    CHECK(it_samples_parse(&s, text, strlen(text) - 4, "mem.jsonl", &e) == IT_OK);
    CHECK(s && s->n == 2 && s->s[1].n == 2 && s->s[1].ids[1] == 3 && !strcmp(s->path, "mem.jsonl"));
    it_samples_free(s);
    s = (it_samples *)&s;
    CHECK(it_samples_parse(&s, text, strlen(text), NULL, &e) == IT_EFORMAT && s == NULL);
    CHECKF(!strncmp(e.msg, "(memory): line 2: at byte 15: ", 30), "%s", e.msg);
    CHECK(it_samples_parse(&s, "", 0, "empty", &e) == IT_EFORMAT && !strcmp(e.msg, "empty: no samples"));
    CHECK(it_samples_parse(&s, "{}", 2, "x", NULL) == IT_EFORMAT && s == NULL); /* err may be NULL */
    it_samples_free(NULL);
}

/* Many lines (the sample list grows) and one long line. */
static void test_data_large(void)
{
    size_t nl = 5000, nid = 100000;
    char *text = malloc(nl * 24 + nid * 7 + 64);
    if (!text) return;
    size_t m = 0;
    for (size_t i = 0; i < nl; i++) m += (size_t)sprintf(text + m, "{\"ids\": [%zu]}\n", i);
    m += (size_t)sprintf(text + m, "{\"ids\": [");
    for (size_t i = 0; i < nid; i++) m += (size_t)sprintf(text + m, "%s%zu", i ? "," : "", i * 13 % 100000);
    m += (size_t)sprintf(text + m, "]}\n");
    it_samples *s = LOAD_OK(text);
    free(text);
    if (!s) return;
    CHECK(s->n == nl + 1 && s->s[nl - 1].ids[0] == (int32_t)(nl - 1) && s->s[nl - 1].line == nl);
    CHECK(s->s[nl].n == nid && s->s[nl].ids[nid - 1] == (int32_t)((nid - 1) * 13 % 100000) && s->s[nl].line == nl + 1);
    it_samples_free(s);
}

/* ============================================================================================ */
/* Refusals                                                                                      */
/* ============================================================================================ */

/* One bad line, placed after a good line and a blank one (so it is line 3), and what the message
 * must hold. */
typedef struct bad_line {
    const char *line;
    const char *needle;
} bad_line;

static void test_data_refuse_ids(void)
{
    static const bad_line cases[] = {
        {"{\"input_ids\": [1, 3.0]}", "\"input_ids\"[1] is a number, expected an integer in [0, 2147483647]"},
        {"{\"input_ids\": [1e3]}", "\"input_ids\"[0] is a number"},
        {"{\"input_ids\": [-0]}", "\"input_ids\"[0] is a number"},
        {"{\"input_ids\": [-1]}", "\"input_ids\"[0] = -1 is outside [0, 2147483647]"},
        {"{\"ids\": [0, 2147483648]}", "\"ids\"[1] = 2147483648 is outside"},
        {"{\"ids\": [18446744073709551615]}", "\"ids\"[0] = 18446744073709551615 is outside"},
        {"{\"ids\": [-9223372036854775808]}", "\"ids\"[0] = -9223372036854775808 is outside"},
        {"{\"ids\": [1, \"2\"]}", "\"ids\"[1] is a string"},
        {"{\"ids\": [[1]]}", "\"ids\"[0] is an array"},
        {"{\"ids\": [null]}", "\"ids\"[0] is null"},
        {"{\"input_ids\": \"1 2\"}", "\"input_ids\" is a string, expected an array of token ids"},
        {"{\"input_ids\": 5}", "\"input_ids\" is an integer, expected an array"},
        {"{\"input_ids\": {\"a\": 1}}", "\"input_ids\" is an object"},
        {"{\"input_ids\": []}", "\"input_ids\" is an empty array"},
        {"{\"input_ids\": [1, 2], \"ids\": [1, 3]}", "\"input_ids\" and \"ids\" are both given and differ"},
        {"{\"ids\": [1, 2], \"input_ids\": [1, 2, 3]}", "\"input_ids\" and \"ids\" are both given and differ"},
        {"{\"input_ids\": [1, 2], \"ids\": []}", "\"ids\" is an empty array"},
        {"{\"input_ids\": [1], \"decoder_input_ids\": [0.5]}", "\"decoder_input_ids\"[0] is a number"},
        {"{\"input_ids\": [1], \"decoder_input_ids\": []}", "\"decoder_input_ids\" is an empty array"},
        {"{\"input_ids\": [1], \"decoder_input_ids\": [-3]}", "\"decoder_input_ids\"[0] = -3 is outside"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[300];
        snprintf(text, sizeof text, "{\"ids\": [1]}\n\n%s\n{\"ids\": [2]}\n", cases[i].line);
        refuse(text, IT_EFORMAT, 3, cases[i].needle, __LINE__);
    }
}

static void test_data_refuse_lines(void)
{
    static const bad_line cases[] = {
        {"{\"decoder_input_ids\": [1]}", "no \"input_ids\", \"ids\", \"text\", \"image\", \"pixel_values\" or \"sample\""},
        {"{\"name\": \"x\"}", "no \"input_ids\", \"ids\", \"text\", \"image\", \"pixel_values\" or \"sample\""},
        {"{\"image\": 3}", "\"image\" is an integer, expected a string"},
        {"{\"image\": \"\"}", "\"image\" is an empty path"},
        {"{\"image\": \"a.ppm\", \"pixel_values\": {\"file\": \"x\", \"tensor\": \"t\"}}", "both \"image\" and"},
        {"{\"pixel_values\": [1]}", "\"pixel_values\" is an array, expected {"},
        {"{\"pixel_values\": {\"file\": \"x\"}}", "\"pixel_values\" needs \"file\" and \"tensor\""},
        {"{\"pixel_values\": {\"file\": \"x\", \"tensor\": \"t\", \"idx\": 0}}", "unknown key \"idx\""},
        {"{\"pixel_values\": {\"file\": \"x\", \"tensor\": \"t\", \"index\": -1}}", "\"index\" is an integer, expected"},
        {"{\"sample\": {\"file\": \"x\", \"tensor\": \"t\"}}", "a UNet sample needs all of"},
        {"{\"timestep\": 5}", "\"timestep\" is an integer, expected {"},
        {"{}", "no \"input_ids\""},
        {"{\"text\": 5}", "\"text\" is an integer, expected a string"},
        {"{\"text\": [\"a\"]}", "\"text\" is an array, expected a string"},
        {"{\"ids\": [1], \"name\": null}", "\"name\" is null, expected a string"},
        {"{\"ids\": [1], \"name\": true}", "\"name\" is true, expected a string"},
        {"{\"text\": \"a\\u0000b\"}", "\"text\" contains a NUL character"},
        {"[1, 2, 3]", "the line is an array, expected a JSON object"},
        {"\"text\"", "the line is a string, expected a JSON object"},
        {"7", "the line is an integer, expected a JSON object"},
        {"null", "the line is null, expected a JSON object"},
        {"{\"ids\": [1], \"name\": \"a\", \"ids\": [1]}", "at byte 26: duplicate key \"ids\""},
        {"{\"ids\": [1], \"x\": {\"k\": 1, \"k\": 2}}", "duplicate key \"k\""},
        {"{\"ids\": [1],}", "at byte 12: "},
        {"{\"ids\": [1]} {\"ids\": [2]}", "at byte 13: "},
        {"{\"ids\": [1]", "at byte "},
        {"{'ids': [1]}", "at byte 1: "},
        {"{\"text\": \"\xC3\x28\"}", "at byte "},
        {"\xEF\xBB\xBF{\"ids\": [1]}", "at byte 0: "},
        {"{\"ids\": [1]} // comment", "at byte 13: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[300];
        snprintf(text, sizeof text, "{\"ids\": [1]}\r\n \r\n%s\r\n{\"ids\": [2]}", cases[i].line);
        refuse(text, IT_EFORMAT, 3, cases[i].needle, __LINE__);
    }
    /* an object split over two lines: the first line is unfinished */
    refuse("{\"ids\": [1]}\n{\"ids\":\n[2]}\n", IT_EFORMAT, 2, "at byte ", __LINE__);
    /* the last line, without a newline */
    refuse("{\"ids\": [1]}\n{\"ids\": [2.5]}", IT_EFORMAT, 2, "\"ids\"[0] is a number", __LINE__);
    /* a NUL byte outside strings */
    static const char nul[] = "{\"ids\": [1]}\n{\"ids\": [2]}\0\n";
    it_samples *s = (it_samples *)&s;
    it_err e = {0, ""};
    CHECK(it_samples_parse(&s, nul, sizeof nul - 1, "nul", &e) == IT_EFORMAT && s == NULL);
    CHECKF(!strncmp(e.msg, "nul: line 2: at byte 12: ", 25), "%s", e.msg);
}

/* Files with no samples, files that are not there or not regular, and a file over the size limit
 * (a sparse file, refused before reading). */
static void test_data_refuse_files(void)
{
    refuse("", IT_EFORMAT, 0, "no samples", __LINE__);
    refuse("\n \t\r\n\r\n\n", IT_EFORMAT, 0, "no samples", __LINE__);
    it_samples *s = (it_samples *)&s;
    it_err e = {0, ""};
    CHECK(it_samples_load(&s, test_tmppath("absent.jsonl"), &e) == IT_ENOTFOUND && s == NULL);
    CHECK(strstr(e.msg, "absent.jsonl") != NULL);
    s = (it_samples *)&s;
    CHECK(it_samples_load(&s, test_tmpdir(), &e) == IT_EIO && s == NULL);
    const char *big = test_tmppath("big.jsonl");
    CHECK(test_write_file(big, "", 0) == 0);
    if (truncate(big, ((off_t)1 << 30) + 1) == 0) {
        s = (it_samples *)&s;
        CHECK(it_samples_load(&s, big, &e) == IT_EFORMAT && s == NULL);
        CHECKF(strstr(e.msg, "big.jsonl") && strstr(e.msg, "limit"), "%s", e.msg);
    } else {
        test_note("truncate failed; size limit not tested");
    }
    unlink(big);
}

/* ============================================================================================ */
/* Fixtures                                                                                      */
/* ============================================================================================ */

/* Whether tensor t is int64 [1, n] holding exactly ids[0..n). */
static int tensor_is(const it_tensor *t, const int32_t *ids, size_t n)
{
    if (!t || t->dtype != IT_I64 || t->ndim != 2 || t->shape[0] != 1 || t->shape[1] != n || !ids) return 0;
    const unsigned char *b = t->data;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        for (int k = 7; k >= 0; k--) v = v << 8 | b[8 * i + (size_t)k];
        if (v != (uint64_t)(int64_t)ids[i]) return 0;
    }
    return 1;
}

/* Each family's inputs.jsonl against its inputs.safetensors: input_ids_<i> (and
 * decoder_input_ids_<i> for T5) are the i-th line's lists, and there are no more. */
static void test_data_fixtures(void)
{
    static const struct {
        const char *dir;
        size_t n;
        size_t len[3];
        const char *name0;
    } fx[] = {{"llama", 3, {3, 8, 17}, "seq0"},
              {"qwen2", 3, {3, 8, 17}, "seq0"},
              {"t5", 2, {6, 11, 0}, "pair0"},
              {"clip", 2, {5, 12, 0}, "text0"}};
    for (size_t f = 0; f < sizeof fx / sizeof fx[0]; f++) {
        char rel[64], key[64];
        snprintf(rel, sizeof rel, "%s/inputs.jsonl", fx[f].dir);
        it_samples *s = NULL;
        it_st *st = NULL;
        it_err e = {0, ""};
        CHECKF(it_samples_load(&s, test_data(rel), &e) == IT_OK, "%s", e.msg);
        snprintf(rel, sizeof rel, "%s/inputs.safetensors", fx[f].dir);
        CHECKF(it_st_open(&st, test_data(rel), &e) == IT_OK, "%s", e.msg);
        if (s && st) {
            CHECKF(s->n == fx[f].n, "%s: %zu samples", fx[f].dir, s->n);
            CHECK(s->s[0].name && !strcmp(s->s[0].name, fx[f].name0));
            for (size_t i = 0; i < s->n && i < fx[f].n; i++) {
                const it_sample *x = &s->s[i];
                snprintf(key, sizeof key, "input_ids_%zu", i);
                CHECKF(x->n == fx[f].len[i] && tensor_is(it_st_find(st, key), x->ids, x->n), "%s %s", fx[f].dir, key);
                snprintf(key, sizeof key, "decoder_input_ids_%zu", i);
                const it_tensor *t = it_st_find(st, key);
                CHECKF(t ? tensor_is(t, x->dec_ids, x->ndec) : !x->dec_ids && x->ndec == 0, "%s %s", fx[f].dir, key);
                CHECK(x->line == i + 1 && !x->text);
            }
            snprintf(key, sizeof key, "input_ids_%zu", s->n);
            CHECK(it_st_find(st, key) == NULL);
        }
        it_samples_free(s);
        it_st_close(st);
    }
}

/* ============================================================================================ */
/* Choosing samples                                                                              */
/* ============================================================================================ */

/* n samples "{"ids": [i]}" in memory. */
static it_samples *make_n(size_t n)
{
    char *text = malloc(n * 24 + 1);
    if (!text) return NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += (size_t)sprintf(text + m, "{\"ids\": [%zu]}\n", i);
    it_samples *s = NULL;
    it_err e = {0, ""};
    CHECKF(it_samples_parse(&s, text, m, "n.jsonl", &e) == IT_OK, "%s", e.msg);
    free(text);
    return s;
}

/* The documented rule written out again, independently: splitmix64 (Steele, Lea & Flood 2014),
 * exact uniform draws by rejection, the first k steps of a front-to-back Fisher-Yates shuffle,
 * then sorted. */
static uint64_t oracle_next(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void oracle_choose(size_t n, size_t k, uint64_t seed, size_t *out)
{
    size_t *p = malloc(n * sizeof *p);
    if (!p) return;
    for (size_t i = 0; i < n; i++) p[i] = i;
    for (size_t i = 0; i < k; i++) {
        uint64_t m = n - i, r;
        do r = oracle_next(&seed);
        while (r < (UINT64_MAX - m + 1) % m); /* 2^64 mod m */
        size_t j = i + (size_t)(r % m), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    for (size_t a = 1; a < k; a++) /* insertion sort of the front k */
        for (size_t b = a; b > 0 && p[b - 1] > p[b]; b--) {
            size_t t = p[b];
            p[b] = p[b - 1];
            p[b - 1] = t;
        }
    memcpy(out, p, k * sizeof *out);
    free(p);
}

/* Same seed, same choice; another seed, another choice; increasing (file order, hence distinct);
 * the oracle agrees for many (n, k, seed). */
static void test_data_choose(void)
{
    it_samples *s = make_n(50);
    if (!s) return;
    size_t a[50], b[50], c[50], o[50];
    it_err e = {0, ""};
    CHECK(it_samples_choose(s, 10, 42, a, &e) == IT_OK);
    CHECK(it_samples_choose(s, 10, 42, b, &e) == IT_OK);
    CHECK(it_samples_choose(s, 10, 43, c, &e) == IT_OK);
    CHECK(!memcmp(a, b, sizeof a[0] * 10));
    CHECK(memcmp(a, c, sizeof a[0] * 10) != 0);
    for (size_t i = 0; i < 10; i++) CHECK(a[i] < 50 && (i == 0 || a[i - 1] < a[i]));
    size_t bad = 0;
    for (size_t n = 1; n <= 50; n += 7) {
        s->n = n; /* a shorter view of the same samples (restored below) */
        for (size_t k = 1; k <= n; k += 1 + n / 5)
            for (uint64_t seed = 0; seed < 20; seed++) {
                uint64_t sd = seed * UINT64_C(0x123456789) + (seed == 19 ? UINT64_MAX - 18 : 0);
                if (it_samples_choose(s, k, sd, a, &e) != IT_OK) bad++;
                oracle_choose(n, k, sd, o);
                if (memcmp(a, o, k * sizeof a[0]) != 0) bad++;
            }
    }
    s->n = 50;
    CHECKF(bad == 0, "%zu choices differ from the oracle", bad);
    it_samples_free(s);
}

/* k == n is every sample in order; k == 0 and k > n are IT_EINVAL naming the file. */
static void test_data_choose_limits(void)
{
    it_samples *s = make_n(7);
    if (!s) return;
    size_t a[8];
    it_err e = {0, ""};
    CHECK(it_samples_choose(s, 7, 5, a, &e) == IT_OK);
    for (size_t i = 0; i < 7; i++) CHECK(a[i] == i);
    CHECK(it_samples_choose(s, 8, 5, a, &e) == IT_EINVAL && e.code == IT_EINVAL);
    CHECKF(!strncmp(e.msg, "n.jsonl: 8 samples asked for, but the file has 7", 48) && one_line(e.msg), "%s", e.msg);
    CHECK(it_samples_choose(s, 0, 5, a, &e) == IT_EINVAL && strstr(e.msg, "n.jsonl: 0 samples") == e.msg);
    CHECK(it_samples_choose(s, 8, 5, a, NULL) == IT_EINVAL);
    it_samples_free(s);
}

/* Each sample is chosen with probability k/n: counts over many seeds within 6 standard
 * deviations of the mean. */
static void test_data_choose_uniform(void)
{
    size_t n = 10, k = 3, trials = 20000, count[10] = {0}, a[3];
    it_samples *s = make_n(n);
    if (!s) return;
    for (uint64_t seed = 0; seed < trials; seed++) {
        if (it_samples_choose(s, k, seed, a, NULL) != IT_OK) break;
        for (size_t i = 0; i < k; i++) count[a[i]]++;
    }
    double mean = (double)trials * 0.3, sd = 64.8; /* sqrt(trials * 0.3 * 0.7) */
    for (size_t i = 0; i < n; i++)
        CHECKF((double)count[i] > mean - 6 * sd && (double)count[i] < mean + 6 * sd, "sample %zu chosen %zu times", i,
               count[i]);
    it_samples_free(s);
}

/* split: idx is choose's, rest the others in order; k == n leaves rest empty. */
static void test_data_split(void)
{
    it_samples *s = make_n(20);
    if (!s) return;
    size_t a[20], b[20], rest[20];
    it_err e = {0, ""};
    for (uint64_t seed = 0; seed < 10; seed++) {
        CHECK(it_samples_choose(s, 6, seed, a, &e) == IT_OK);
        CHECK(it_samples_split(s, 6, seed, b, rest, &e) == IT_OK);
        CHECK(!memcmp(a, b, 6 * sizeof a[0]));
        unsigned char seen[20] = {0};
        for (size_t i = 0; i < 6; i++) seen[b[i]]++;
        for (size_t i = 0; i < 14; i++) {
            CHECK(rest[i] < 20 && (i == 0 || rest[i - 1] < rest[i]));
            if (rest[i] < 20) seen[rest[i]]++;
        }
        for (size_t i = 0; i < 20; i++) CHECK(seen[i] == 1);
    }
    rest[0] = 99;
    CHECK(it_samples_split(s, 20, 1, b, rest, &e) == IT_OK && rest[0] == 99 && b[19] == 19);
    CHECK(it_samples_split(s, 21, 1, b, rest, &e) == IT_EINVAL);
    it_samples_free(s);
}

void suite_data(void)
{
    RUN(test_data_fields);
    RUN(test_data_crlf_unicode);
    RUN(test_data_parse_memory);
    RUN(test_data_large);
    RUN(test_data_refuse_ids);
    RUN(test_data_refuse_lines);
    RUN(test_data_refuse_files);
    RUN(test_data_fixtures);
    RUN(test_data_choose);
    RUN(test_data_choose_limits);
    RUN(test_data_choose_uniform);
    RUN(test_data_split);
}
