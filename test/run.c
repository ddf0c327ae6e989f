/* test/run.c -- runs every suite (or the tests whose name contains argv[1]) and ends with the
 * line "N passed, N failed"; exit status 1 if any test failed. -v prints every test's name. */
#include "test.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed, cur_failed, verbose;
static const char *filter;
static char tmpdir[4096];

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cur_failed++;
}

void test_note(const char *fmt, ...)
{
    if (!verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("    ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

void test_run(const char *name, void (*fn)(void))
{
    if (filter && !strstr(name, filter)) return;
    cur_failed = 0;
    if (verbose) printf("%s\n", name);
    fflush(stdout);
    fn();
    if (cur_failed) {
        fprintf(stderr, "FAILED %s (%d checks)\n", name, cur_failed);
        failed++;
    } else {
        passed++;
    }
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void cleanup(void)
{
    if (tmpdir[0]) rm_tree(tmpdir);
}

const char *test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/iteris-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(cleanup);
    }
    return tmpdir;
}

const char *test_tmppath(const char *name)
{
    static char buf[8][8192];
    static int k;
    k = (k + 1) % 8;
    const char *dir = test_tmpdir();
    if (strlen(dir) + strlen(name) + 2 > sizeof buf[k]) {
        fprintf(stderr, "test_tmppath: name too long\n");
        exit(1);
    }
    sprintf(buf[k], "%s/%s", dir, name);
    return buf[k];
}

int test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

unsigned char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int test_skip_slow(void)
{
    const char *v = getenv("ITERIS_TEST_SKIP_SLOW");
    return v && *v && strcmp(v, "0") != 0;
}

const char *test_data(const char *rel)
{
    static char buf[8][4096];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "data/%s", rel);
    return buf[k];
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v")) verbose = 1;
        else filter = argv[i];
    }
    suite_json();
    suite_dtype();
    suite_linalg();
    suite_safetensors();
    suite_malformed();
    suite_config();
    suite_regex();
    suite_unicode();
    suite_tokenizer();
    suite_lora();
    suite_solve();
    suite_output();
    suite_model();
    suite_t5();
    suite_clip();
    suite_image();
    suite_unet();
    suite_sd();
    suite_data();
    suite_merge();
    suite_demo();
    suite_cli();
    suite_fuzz();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
