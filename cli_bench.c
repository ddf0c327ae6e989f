/* cli_bench.c -- `iteris bench unet`: one step of a Stable-Diffusion-1.5-sized UNet, its seconds and
 * its peak memory (part of the command line, like main.c: it prints).
 *
 * The UNet (random weights, it_bench_unet_write) is written to a folder, then loaded with
 * it_model_load and run for one step (it_model_run, every site observed by a no-op observer, as in
 * a merge) on seeded latents [batch, 4, latent, latent], timesteps and text states [batch, 77, 768].
 * The peak resident memory is the process's (getrusage): the writer frees its buffers (a few hundred
 * MB at most) before the load, so the figure is the load's and the step's.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A one-line failure (exit status 1). */
static int fail_msg(const char *msg)
{
    fprintf(stderr, "iteris: %s\n", msg);
    return 1;
}

/* Uniform in [-1, 1) from a splitmix64 stream. */
static float uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / 16777216.0 * 2.0 - 1.0);
}

static int count_sites(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in)
{
    (void)site, (void)x, (void)nrows, (void)d_in;
    ++*(size_t *)ctx;
    return 0;
}

/* What one step measured. */
typedef struct step_result {
    double load, step, rms;
    size_t calls;
} step_result;

/* Loads dir and runs one step. */
static int run_step(const char *dir, size_t batch, size_t side, step_result *r, it_err *err)
{
    it_model *m = NULL;
    double t0 = seconds_now();
    int rc = it_model_load(&m, dir, err);
    if (rc != IT_OK) return rc;
    r->load = seconds_now() - t0;
    it_sample s;
    memset(&s, 0, sizeof s);
    s.nlatents = batch, s.lat_c = 4, s.lat_h = side, s.lat_w = side, s.nctx = 77, s.dctx = 768;
    s.latents = malloc(batch * 4 * side * side * sizeof *s.latents);
    s.timesteps = malloc(batch * sizeof *s.timesteps);
    s.context = malloc(batch * 77 * 768 * sizeof *s.context);
    if (!s.latents || !s.timesteps || !s.context) {
        snprintf(err->msg, sizeof err->msg, "bench unet: out of memory for the inputs");
        rc = err->code = IT_ENOMEM;
    }
    uint64_t st = 7;
    for (size_t i = 0; rc == IT_OK && i < batch * 4 * side * side; i++) s.latents[i] = uniform(&st);
    for (size_t i = 0; rc == IT_OK && i < batch * 77 * 768; i++) s.context[i] = uniform(&st);
    for (size_t i = 0; rc == IT_OK && i < batch; i++) s.timesteps[i] = (float)(999 - 333 * (i % 4));
    it_model_set_observer(m, count_sites, &r->calls);
    it_outputs o;
    double t2 = seconds_now();
    if (rc == IT_OK) rc = it_model_run(m, &s, &o, err);
    r->step = seconds_now() - t2;
    if (rc == IT_OK) {
        double ss = 0;
        for (size_t i = 0; i < o.o[0].rows * o.o[0].cols; i++) ss += (double)o.o[0].data[i] * o.o[0].data[i];
        r->rms = sqrt(ss / (double)(o.o[0].rows * o.o[0].cols));
        it_outputs_free(&o);
    }
    free(s.latents), free(s.timesteps), free(s.context);
    it_model_free(m);
    return rc;
}

/* Removes the two files it_bench_unet_write makes, then the folder. */
static void remove_folder(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir), remove(p);
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir), remove(p);
    rmdir(dir);
}

int cli_bench_unet(int argc, char **argv)
{
    size_t batch = 1, side = 64;
    int f16 = 0, json = 0;
    const char *keep = NULL;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(o, "--json")) json = 1;
        else if (!strcmp(o, "--f16")) f16 = 1;
        else if (!strcmp(o, "--dir") && v) keep = v, i++;
        else if (!strcmp(o, "--batch") && v && (n = cli_positive(v)) > 0 && n <= 64) batch = (size_t)n, i++;
        else if (!strcmp(o, "--latent") && v && (n = cli_positive(v)) > 0 && n <= 256 && n % 8 == 0) side = (size_t)n, i++;
        else if (!strcmp(o, "--threads") && v && (n = cli_positive(v)) > 0 && it_set_threads((int)n) == IT_OK) i++;
        else
            return cli_usage("bench unet: options are --latent N (a multiple of 8, up to 256), --batch B (1..64), "
                             "--f16, --dir DIR (keep the model there), --threads T, --json");
    }
    it_err err = {0};
    char tmp[] = "/tmp/iteris-bench-unet-XXXXXX";
    const char *dir = keep;
    if (!dir && !(dir = mkdtemp(tmp))) return fail_msg("bench unet: cannot make a temporary folder in /tmp");
    uint64_t params = 0;
    if (!json) fprintf(stderr, "writing an SD 1.5-sized UNet (%s) to %s ...\n", f16 ? "F16" : "F32", dir);
    double w0 = seconds_now();
    int rc = it_bench_unet_write(dir, f16, &params, &err);
    double wsec = seconds_now() - w0;
    if (rc != IT_OK) {
        if (!keep) remove_folder(dir);
        return cli_fail(&err);
    }
    step_result r = {0, 0, 0, 0};
    rc = run_step(dir, batch, side, &r, &err);
    if (!keep) remove_folder(dir);
    if (rc != IT_OK) return cli_fail(&err);
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    getrusage(RUSAGE_SELF, &ru);
    double load = r.load, step = r.step, rms = r.rms;
    size_t calls = r.calls;
    double peak_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
    if (json)
        printf("[{\"routine\": \"unet\", \"n\": %zu, \"batch\": %zu, \"threads\": %d, \"dtype\": \"%s\", \"params\": %llu, "
               "\"load_seconds\": %.3f, \"seconds\": %.3f, \"peak_mb\": %.1f}]\n",
               side, batch, it_get_threads(), f16 ? "F16" : "F32", (unsigned long long)params, load, step, peak_mb);
    else
        printf("unet: SD 1.5 sizes (%llu parameters, %s on disk), latents %zu x 4 x %zu x %zu, 77 text tokens, %d thread%s\n"
               "  written in %.1f s, loaded in %.2f s, one step in %.2f s (%zu sites observed, output rms %.3g)\n"
               "  peak memory (load + step): %.0f MB\n",
               (unsigned long long)params, f16 ? "F16" : "F32", batch, side, side, it_get_threads(),
               it_get_threads() == 1 ? "" : "s", wsec, load, step, calls, rms, peak_mb);
    return 0;
}
