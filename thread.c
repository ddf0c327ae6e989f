/* thread.c -- a small pthread pool: it__parallel_for runs fn(ctx, i) for every i in [0, n).
 *
 * Callers split work by output (rows of C, tiles, sites), never a reduction, so a result does not
 * depend on which thread ran which index nor on how many threads there are (STYLE.md habit 8).
 * The pool starts on first use with it_get_threads() - 1 workers; the calling thread works too.
 * A parallel_for issued from inside a running one runs serially on the calling thread. */
#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    pthread_t *workers;       /* [nworkers] */
    int nworkers;
    int shutdown;             /* guarded by pool_lock */
    /* the current job: written by the submitter before it bumps generation */
    void (*fn)(void *ctx, size_t i);
    void *ctx;
    size_t n;
    atomic_size_t next;       /* the next index to hand out */
    atomic_ulong generation;  /* bumped (release) for each job */
    atomic_int busy;          /* workers still inside the current job */
} pool_t;

static pool_t pool;           /* zero-initialised */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER; /* a new job, or shutdown */
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER; /* the last worker left the job */
static pthread_mutex_t submit_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static atomic_int want_threads;                                /* 0 = not decided yet */
static _Thread_local int inside_job;

/* Waiting first spins on the atomic (a few tens of microseconds: the next job of a factorisation
 * usually follows at once, and a futex wake-up costs more than a small job), then sleeps. */
#define SPIN 20000

/* Takes indices until none is left. */
static void drain(void (*fn)(void *, size_t), void *ctx, size_t n)
{
    inside_job = 1;
    for (;;) {
        size_t i = atomic_fetch_add(&pool.next, 1);
        if (i >= n) break;
        fn(ctx, i);
    }
    inside_job = 0;
}

/* Waits until generation differs from seen (returns it) or the pool shuts down (returns seen). */
static unsigned long wait_job(unsigned long seen)
{
    for (int s = 0; s < SPIN; s++) {
        unsigned long g = atomic_load_explicit(&pool.generation, memory_order_acquire);
        if (g != seen) return g;
    }
    pthread_mutex_lock(&pool_lock);
    unsigned long g;
    while ((g = atomic_load(&pool.generation)) == seen && !pool.shutdown) pthread_cond_wait(&pool_wake, &pool_lock);
    pthread_mutex_unlock(&pool_lock);
    return g;
}

static void *worker_main(void *arg)
{
    unsigned long seen = (unsigned long)(uintptr_t)arg; /* the generation when this worker was made */
    for (;;) {
        unsigned long g = wait_job(seen);
        if (g == seen) break; /* shutdown */
        seen = g;
        drain(pool.fn, pool.ctx, pool.n);
        if (atomic_fetch_sub_explicit(&pool.busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool_lock);
            pthread_cond_signal(&pool_done);
            pthread_mutex_unlock(&pool_lock);
        }
    }
    return NULL;
}

static void pool_stop(void)
{
    pthread_mutex_lock(&pool_lock);
    pool.shutdown = 1;
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
    for (int i = 0; i < pool.nworkers; i++) pthread_join(pool.workers[i], NULL);
    free(pool.workers);
    pool.workers = NULL;
    pool.nworkers = 0;
    pool.shutdown = 0;
}

/* Starts nworkers threads; on failure keeps however many started (fewer threads, same results).
 * Each worker is told the current generation, so that no earlier job looks new to it. */
static void pool_start(int nworkers)
{
    void *gen = (void *)(uintptr_t)atomic_load(&pool.generation);
    pool.workers = calloc((size_t)(nworkers > 0 ? nworkers : 1), sizeof *pool.workers);
    /* workers start with every signal blocked, so that handlers (it_out_cleanup_on_signals) run on
     * the caller's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; pool.workers && i < nworkers; i++) {
        if (pthread_create(&pool.workers[pool.nworkers], NULL, worker_main, gen) != 0) break;
        pool.nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void stop_at_exit(void)
{
    pthread_mutex_lock(&submit_lock);
    pool_stop();
    pthread_mutex_unlock(&submit_lock);
}

/* ITERIS_THREADS, else the online CPUs. */
static int default_threads(void)
{
    const char *e = getenv("ITERIS_THREADS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == 0 && v >= 1 && v <= IT_MAX_THREADS) return (int)v;
    }
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > IT_MAX_THREADS ? IT_MAX_THREADS : (int)c;
}

/* Lock-free, so that code running inside a job (holding no lock, but with the submitter holding
 * submit_lock) may ask. */
int it_get_threads(void)
{
    int n = atomic_load(&want_threads);
    if (n == 0) {
        int expected = 0;
        n = default_threads();
        if (!atomic_compare_exchange_strong(&want_threads, &expected, n)) n = expected;
    }
    return n;
}

int it_set_threads(int n)
{
    if (n < 1 || n > IT_MAX_THREADS) return IT_EINVAL;
    pthread_mutex_lock(&submit_lock);
    if (pool.nworkers && pool.nworkers != n - 1) pool_stop();
    atomic_store(&want_threads, n);
    pthread_mutex_unlock(&submit_lock);
    return IT_OK;
}

void it__parallel_for(size_t n, void (*fn)(void *ctx, size_t i), void *ctx)
{
    if (n == 0) return;
    if (inside_job || n == 1) { /* nested, or nothing to share */
        for (size_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    it_get_threads(); /* decided before the lock: it_get_threads takes none */
    pthread_mutex_lock(&submit_lock);
    int want = atomic_load(&want_threads);
    static int registered;
    if (!registered) registered = atexit(stop_at_exit) == 0;
    if (!pool.workers && want > 1) pool_start(want - 1);
    if (pool.nworkers == 0) { /* one thread: no pool */
        pthread_mutex_unlock(&submit_lock);
        for (size_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    atomic_store(&pool.next, 0);
    atomic_store(&pool.busy, pool.nworkers);
    pthread_mutex_lock(&pool_lock);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
    drain(fn, ctx, n);
    for (int s = 0; s < SPIN && atomic_load_explicit(&pool.busy, memory_order_acquire) > 0; s++) continue;
    pthread_mutex_lock(&pool_lock);
    while (atomic_load(&pool.busy) > 0) pthread_cond_wait(&pool_done, &pool_lock);
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&submit_lock);
}
