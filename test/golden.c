/* test/golden.c -- comparisons with the golden fixtures (see golden.h). */
#include "golden.h"

#include "test.h"

#include <math.h>
#include <stdlib.h>

golden_diff golden_compare(const char *key, const float *a, const float *b, size_t n, double tol)
{
    double d2 = 0, b2 = 0, mx = 0, bmx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        d2 += d * d;
        b2 += (double)b[i] * b[i];
        mx = fabs(d) > mx || d != d ? fabs(d) : mx;
        bmx = fabs((double)b[i]) > bmx ? fabs((double)b[i]) : bmx;
    }
    golden_diff g = {b2 > 0 ? sqrt(d2 / b2) : sqrt(d2), mx, bmx > 0 ? mx / bmx : mx};
    CHECKF(g.rel <= tol, "%s: relative difference %.3g > %g (max abs %.3g)", key, g.rel, tol, mx);
    return g;
}

float *golden_f32(const it_st *st, const char *key, size_t n)
{
    const it_tensor *t = it_st_find(st, key);
    CHECKF(t != NULL, "missing %s", key);
    if (!t) return NULL;
    CHECKF(t->numel == n, "%s: %llu values, expected %zu", key, (unsigned long long)t->numel, n);
    float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
    if (f && t->numel == n && it_tensor_to_f32(t, f, NULL) == IT_OK) return f;
    free(f);
    return NULL;
}

size_t golden_install(it_model *m, const it_adapter *ad, it_delta *d)
{
    size_t k = 0;
    for (size_t i = 0; i < ad->n; i++) {
        const it_lora_module *mod = &ad->mods[i];
        size_t site;
        int rc = it_model_find_site(m, mod->name, &site);
        CHECKF(rc == IT_OK, "adapter module %s has no site", mod->name);
        if (rc != IT_OK) continue;
        const it_model_site *s = it_model_site_at(m, site);
        CHECK(s->d_out == mod->d_out && s->d_in == mod->d_in);
        d[k] = (it_delta){mod->A, mod->B, mod->r, mod->scale, NULL};
        it_model_set_delta(m, site, &d[k++]);
    }
    return k;
}

it_adapter *golden_adapter(it_model *m, const char *fx, const char *name, size_t nmod, it_delta **d)
{
    char path[512];
    it_err e = {0};
    it_adapter *ad = NULL;
    *d = NULL;
    snprintf(path, sizeof path, "data/%s/adapters/%s", fx, name);
    int rc = it_adapter_load(&ad, path, &e);
    CHECKF(rc == IT_OK, "%s: %s", path, e.msg);
    if (rc != IT_OK) return NULL;
    *d = calloc(ad->n + 1, sizeof **d);
    CHECKF(*d && golden_install(m, ad, *d) == nmod, "%s: wrong number of modules", path);
    return ad;
}

void golden_release(it_model *m, it_adapter *ad, it_delta *d)
{
    it_model_clear_deltas(m);
    free(d);
    it_adapter_free(ad);
}
