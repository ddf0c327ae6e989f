/* test/golden.h -- comparisons with the golden fixtures (data/<family>/expected.safetensors), shared
 * by the forward-pass tests (test_model.c, test_t5.c, test_clip.c). */
#ifndef ITERIS_TEST_GOLDEN_H
#define ITERIS_TEST_GOLDEN_H

#include "../iteris.h"

#include <stddef.h>

/* How far a tensor is from the expected one: rel = ||a - b|| / ||b|| (||a - b|| when b = 0),
 * max_abs = max |a - b| (NaN counts as infinite), mrel = max_abs / max |b|. */
typedef struct golden_diff {
    double rel, max_abs, mrel;
} golden_diff;

/* a [n] against the expected b [n], CHECKed rel <= tol with a message naming key. */
golden_diff golden_compare(const char *key, const float *a, const float *b, size_t n, double tol);

/* Tensor key of st converted to f32 (malloc'd), CHECKed to exist and to hold n values; NULL if not. */
float *golden_f32(const it_st *st, const char *key, size_t n);

/* Installs every module of ad at its site as a low-rank delta (d has room for ad->n), CHECKing that
 * each has a site of its shape; returns how many were installed. */
size_t golden_install(it_model *m, const it_adapter *ad, it_delta *d);

/* Loads data/<fx>/adapters/<name> and installs it on m (golden_install), CHECKing that nmod modules
 * were installed; *d gets the deltas the model points to. Release both with golden_release after
 * the runs. NULL (and a failed check) when the adapter cannot be loaded. */
it_adapter *golden_adapter(it_model *m, const char *fx, const char *name, size_t nmod, it_delta **d);
void golden_release(it_model *m, it_adapter *ad, it_delta *d);

#endif
