/* test/test.h -- the small test harness behind `make test`.
 *
 * A test is a void function; CHECK records a failed condition with its file and line and lets the
 * test go on; a test passes when none of its checks failed. Each test file exposes one suite
 * function that RUNs its tests; test/run.c calls the suites and prints "N passed, N failed". */
#ifndef ITERIS_TEST_H
#define ITERIS_TEST_H

#include <stddef.h>
#include <stdio.h>

#if defined(__GNUC__) || defined(__clang__)
#define TEST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TEST_PRINTF(a, b)
#endif

void test_fail(const char *file, int line, const char *fmt, ...) TEST_PRINTF(3, 4);
void test_run(const char *name, void (*fn)(void));
void test_note(const char *fmt, ...) TEST_PRINTF(1, 2); /* printed under -v, or with a failure */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) test_fail(__FILE__, __LINE__, "%s", #cond);                                  \
    } while (0)
#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);                                  \
    } while (0)
#define RUN(fn) test_run(#fn, fn)

/* A fresh private folder for the running program (created on first use, removed at exit). */
const char *test_tmpdir(void);
/* test_tmpdir()/name in a static rotating buffer. */
const char *test_tmppath(const char *name);
/* Writes len bytes to path; returns 0 or -1. */
int test_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file (malloc'd, NUL-terminated); NULL if it cannot. */
unsigned char *test_read_file(const char *path, size_t *len);
/* The path of a committed fixture: "data/<rel>" (tests run from the repository root). */
const char *test_data(const char *rel);

/* 1 when ITERIS_TEST_SKIP_SLOW is set (not "0"): `make valgrind` and `make cross-test` (qemu) set it
 * to leave out the tests that take minutes there (whole merges and demos); the native runs and
 * AddressSanitizer run them all. */
int test_skip_slow(void);

/* The suites, one per test file. */
void suite_json(void);
void suite_dtype(void);
void suite_linalg(void);
void suite_safetensors(void);
void suite_malformed(void);
void suite_config(void);
void suite_regex(void);
void suite_unicode(void);
void suite_tokenizer(void);
void suite_lora(void);
void suite_solve(void);
void suite_output(void);
void suite_model(void);
void suite_t5(void);
void suite_clip(void);
void suite_image(void);
void suite_unet(void);
void suite_sd(void);
void suite_data(void);
void suite_merge(void);
void suite_demo(void);
void suite_cli(void);
void suite_fuzz(void);

#endif
