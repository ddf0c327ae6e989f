/* test/faults.c -- allocation failures at every allocation site (`make faults`).
 *
 * The library and the command line are built with -DIT_FAULTS (internal.h): every malloc, calloc,
 * realloc and aligned_alloc, and every call of the allocating helpers, comes here with the file and
 * line that asked. This program runs whole commands in-process (main.c's main, renamed iteris_main)
 * on the fixtures in data/:
 *
 *   1. twice as they are: the first fills what the process keeps (caches, the thread pool), the
 *      second records every allocation: its site (file:line) and its place in the run's sequence,
 *      and how many blocks are live at the end (the baseline, 0 when nothing else is kept);
 *   2. then once per chosen allocation, which fails (returns NULL). Chosen: the first and the last
 *      allocation of every site (ITERIS_FAULTS_ALL=1: every allocation of the run).
 *
 * After each failing run: the exit status is 0 (the failure was absorbed, as a thread pool that
 * starts fewer threads) or 1 with the last line of stderr an error "iteris: ..." ; no block leaked
 * (the live count is back at the baseline); and no output: the --out folder does not exist and no
 * temporary file was left beside it. A run that breaks a rule is printed with the failed site;
 * ASan (the build's sanitizer) reports what fails harder: a use after free or a double free on an
 * error path. The last line is "N passed, N failed", as the test runner's.
 */
#include "internal.h"

#include <dirent.h>
#include <stdlib.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#undef malloc
#undef calloc
#undef realloc
#undef aligned_alloc
#undef free

int iteris_main(int argc, char **argv);

/* ============================================================================================ */
/* The allocator                                                                                 */
/* ============================================================================================ */

#define MAX_SITES 4096

typedef struct site {
    const char *file;
    int line;
    long first, last; /* places in the recorded run's sequence of allocations (1-based) */
} site;

static atomic_long live;       /* blocks allocated and not freed */
static atomic_long count;      /* allocations since the run began */
static long fail_at;           /* the allocation to fail (1-based), 0 for none */
static int recording;          /* run 1: note every site */
static int failed_once;        /* the chosen allocation was reached */
static site sites[MAX_SITES];
static size_t nsites;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local const char *pending_file; /* it__fault_site: the caller of a helper */
static _Thread_local int pending_line;

int it__fault_site(const char *file, int line)
{
    if (!pending_file) pending_file = file, pending_line = line; /* the outermost caller names it */
    return 0;
}

void *it__fault_done(void *p)
{
    pending_file = NULL;
    return p;
}

/* 1 if this allocation is to fail; records its site in the recorded run. */
static int next_fails(const char *file, int line)
{
    if (pending_file) file = pending_file, line = pending_line;
    pending_file = NULL;
    long k = atomic_fetch_add(&count, 1) + 1;
    if (recording) {
        pthread_mutex_lock(&lock);
        size_t i = 0;
        while (i < nsites && !(sites[i].line == line && !strcmp(sites[i].file, file))) i++;
        if (i == nsites && nsites < MAX_SITES) sites[nsites++] = (site){file, line, k, k};
        else if (i < nsites) sites[i].last = k;
        pthread_mutex_unlock(&lock);
    }
    if (k != fail_at) return 0;
    failed_once = 1;
    return 1;
}

void *it__fault_malloc(size_t n, const char *file, int line)
{
    if (next_fails(file, line)) return NULL;
    void *p = malloc(n);
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

void *it__fault_calloc(size_t n, size_t size, const char *file, int line)
{
    if (next_fails(file, line)) return NULL;
    void *p = calloc(n, size);
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

void *it__fault_realloc(void *old, size_t n, const char *file, int line)
{
    if (next_fails(file, line)) return NULL;
    void *p = realloc(old, n);
    if (p && !old) atomic_fetch_add(&live, 1);
    return p;
}

void *it__fault_aligned_alloc(size_t align, size_t n, const char *file, int line)
{
    if (next_fails(file, line)) return NULL;
    void *p = aligned_alloc(align, n);
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

void it__fault_free(void *p)
{
    if (p) atomic_fetch_sub(&live, 1);
    free(p);
}

/* ============================================================================================ */
/* The commands                                                                                  */
/* ============================================================================================ */

#define OUT "build/faults/out"
#define ERR "build/faults/stderr.txt"

typedef struct command {
    const char *name;
    const char *argv[32];
} command;

#define LLAMA "--base", "data/llama/base", "--lora", "data/llama/adapters/lora_r4_a16_all", "--lora", \
              "data/llama/adapters/lora_r4_a8_mlp", "--data", "data/llama/inputs.jsonl", "--data", "data/llama/inputs.jsonl"

static const command commands[] = {
    {"merge llama (lora, report)", {"merge", LLAMA, "--iters", "2", "--tol", "0", "--samples", "1", "--out", OUT, NULL}},
    {"merge llama (model, sweep)", {"merge", LLAMA, "--schedule", "sweep", "--samples", "1", "--format", "model", "--out",
                                    OUT, NULL}},
    {"merge llama (delta, regmean)", {"merge", LLAMA, "--method", "regmean", "--samples", "1", "--format", "delta", "--out",
                                      OUT, NULL}},
    {"merge t5", {"merge", "--base", "data/t5/base", "--lora", "data/t5/adapters/lora_r4_a16_all", "--lora",
                  "data/t5/adapters/lora_r4_a8_mlp", "--data", "data/t5/inputs.jsonl", "--data", "data/t5/inputs.jsonl",
                  "--iters", "1", "--samples", "1", "--out", OUT, NULL}},
    {"merge clip (pixels)", {"merge", "--base", "data/clip/base", "--lora", "data/clip/adapters/lora_r4_a16_all", "--data",
                             "data/clip/samples.jsonl", "--iters", "1", "--samples", "1", "--out", OUT, NULL}},
    {"merge unet", {"merge", "--base", "data/unet/base", "--lora", "data/unet/adapters/lora_r4_a16_all", "--data",
                    "data/unet/samples.jsonl", "--iters", "1", "--samples", "1", "--out", OUT, NULL}},
    {"eval llama", {"eval", "--base", "data/llama/base", "--lora", "data/llama/adapters/lora_r4_a16_all", "--data",
                    "data/llama/inputs.jsonl", "--merged", "data/llama/adapters/lora_r4_a8_mlp", "--json", NULL}},
    {"tokenize", {"tokenize", "--model", "data/tokenizer/llama3.json", "Hello world, caf\xc3\xa9 12345", NULL}},
    {"inspect adapter", {"inspect", "data/llama/adapters/lora_r8_a8_rslora_attn", NULL}},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

/* Runs a command in-process with stdout to /dev/null and stderr to ERR; its exit status. */
static int run(const command *c)
{
    char *argv[34];
    int argc = 0;
    argv[argc++] = "iteris";
    for (int i = 0; c->argv[i]; i++) argv[argc++] = (char *)c->argv[i];
    argv[argc] = NULL;
    fflush(NULL);
    int so = dup(1), se = dup(2);
    int dn = open("/dev/null", O_WRONLY), ef = open(ERR, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(dn, 1), dup2(ef, 2);
    close(dn), close(ef);
    int rc = iteris_main(argc, argv);
    fflush(NULL);
    dup2(so, 1), dup2(se, 2);
    close(so), close(se);
    return rc;
}

/* The last line of ERR, in buf. */
static void last_line(char *buf, size_t size)
{
    buf[0] = 0;
    FILE *f = fopen(ERR, "r");
    char line[2048];
    while (f && fgets(line, sizeof line, f)) snprintf(buf, size, "%s", line);
    if (f) fclose(f);
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n') buf[n - 1] = 0;
}

/* Removes OUT and what is in it (one level: the outputs are flat folders). */
static void remove_out(void)
{
    DIR *d = opendir(OUT);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[1024];
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        snprintf(p, sizeof p, OUT "/%s", e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(OUT);
}

/* Anything of an output left: the folder, or a temporary file beside it. */
static int output_left(void)
{
    struct stat st;
    if (stat(OUT, &st) == 0) return 1;
    DIR *d = opendir("build/faults");
    struct dirent *e;
    int left = 0;
    while (d && (e = readdir(d)) != NULL) left |= strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return left;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* One command: the recorded run, then a failing run per chosen allocation. */
static void check_command(const command *c, int every, unsigned long *passed, unsigned long *failed)
{
    remove_out();
    run(c); /* once to fill what the process keeps for later (caches, the thread pool) */
    remove_out();
    nsites = 0, recording = 1, fail_at = 0;
    atomic_store(&count, 0);
    long before = atomic_load(&live);
    int rc0 = run(c);
    recording = 0;
    long total = atomic_load(&count), baseline = atomic_load(&live) - before;
    char line[2048];
    if (rc0 != 0) {
        last_line(line, sizeof line);
        printf("FAIL %s: the command fails without a fault (status %d): %s\n", c->name, rc0, line);
        (*failed)++;
        return;
    }
    long *at = malloc((size_t)(every ? total : 2 * (long)nsites) * sizeof *at + 1);
    size_t nat = 0;
    if (every)
        for (long k = 1; k <= total; k++) at[nat++] = k;
    else
        for (size_t i = 0; i < nsites; i++) {
            at[nat++] = sites[i].first;
            if (sites[i].last != sites[i].first) at[nat++] = sites[i].last;
        }
    qsort(at, nat, sizeof *at, cmp_long);
    unsigned long bad = 0, absorbed = 0;
    for (size_t j = 0; j < nat; j++) {
        remove_out();
        fail_at = at[j], failed_once = 0;
        atomic_store(&count, 0);
        long start = atomic_load(&live);
        int rc = run(c);
        fail_at = 0;
        long leaked = atomic_load(&live) - start - baseline;
        last_line(line, sizeof line);
        const char *why = NULL;
        if (rc != 0 && rc != 1) why = "exit status neither 0 nor 1";
        else if (rc == 1 && strncmp(line, "iteris: ", 8) != 0) why = "no error line on stderr";
        else if (leaked != 0) why = "blocks leaked";
        else if (rc == 1 && output_left()) why = "output left behind";
        if (rc == 0 && failed_once) {
            absorbed++;
            for (size_t i = 0; i < nsites; i++)
                if (sites[i].first == at[j] || sites[i].last == at[j])
                    printf("  absorbed: allocation %ld (%s:%d)\n", at[j], sites[i].file, sites[i].line);
        }
        if (!why) continue;
        bad++;
        const char *file = "?";
        int ln = 0;
        for (size_t i = 0; i < nsites; i++)
            if (sites[i].first == at[j] || sites[i].last == at[j]) file = sites[i].file, ln = sites[i].line;
        printf("FAIL %s: allocation %ld (%s:%d): %s (status %d, %ld leaked): %s\n", c->name, at[j], file, ln, why, rc,
               leaked, line);
        if (leaked > 0) atomic_fetch_sub(&live, leaked); /* report each leak once */
    }
    free(at);
    remove_out();
    printf("%s: %ld allocations at %zu sites; %zu failed in turn: %lu absorbed, %lu broke a rule\n", c->name, total,
           nsites, nat, absorbed, bad);
    *passed += bad == 0;
    *failed += bad != 0;
}

int main(int argc, char **argv)
{
    setenv("ITERIS_THREADS", "1", 1); /* one sequence of allocations */
    mkdir("build", 0777), mkdir("build/faults", 0777);
    const char *all = getenv("ITERIS_FAULTS_ALL");
    int every = all && *all && strcmp(all, "0");
    unsigned long passed = 0, failed = 0;
    if (argc > 2) { /* one command, one failing allocation: stderr kept in ERR, for a closer look */
        for (size_t i = 0; i < NCOMMANDS; i++) {
            if (!strstr(commands[i].name, argv[1])) continue;
            remove_out();
            fail_at = atol(argv[2]);
            int rc = run(&commands[i]);
            printf("%s, allocation %ld: status %d, output left %d (stderr: " ERR ")\n", commands[i].name, fail_at, rc,
                   output_left());
            return 0;
        }
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (argc > 1 && !strstr(commands[i].name, argv[1])) continue;
        check_command(&commands[i], every, &passed, &failed);
        fflush(stdout);
    }
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed != 0;
}
