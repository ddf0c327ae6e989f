/* tokenizer_internal.h -- what tokenizer.c (the pipeline) and tokenizer_model.c (the BPE and
 * Unigram models, the Precompiled normalizer's charsmap) share. Not part of the API. */
#ifndef ITERIS_TOKENIZER_INTERNAL_H
#define ITERIS_TOKENIZER_INTERNAL_H

#include "internal.h"

/* A growable byte string (p NUL-terminated when not NULL) and a growable id list. The append
 * functions return IT_OK or IT_ENOMEM (nothing is reported: callers add the file's name). */
typedef struct tk_buf {
    char *p;
    size_t len, cap;
} tk_buf;
typedef struct tk_ids {
    int32_t *p;
    size_t len, cap;
} tk_ids;
int tk_buf_add(tk_buf *b, const void *s, size_t n);
int tk_ids_add(tk_ids *v, int32_t id);

/* A string -> int32 hash map that owns copies of its keys; put overwrites (the last one wins, as
 * a Rust HashMap built from a list). get: the value or -1. */
typedef struct tk_map {
    char **keys;
    size_t *lens;
    int32_t *vals;
    size_t cap, n;
} tk_map;
int tk_map_put(tk_map *m, const char *s, size_t len, int32_t val);
int32_t tk_map_get(const tk_map *m, const char *s, size_t len);
void tk_map_free(tk_map *m);

/* The model (tokenizer_model.c). */
typedef struct tk_model tk_model;
/* Reads the "model" object of path's JSON. */
int tk_model_load(tk_model **out, const it_json *model, const char *path, it_err *err);
void tk_model_free(tk_model *m);
/* The number of distinct entries in the vocabulary (the first id an added token may get). */
size_t tk_model_vocab_size(const tk_model *m);
int32_t tk_model_token_id(const tk_model *m, const char *s, size_t len);
/* Appends the ids of one word (a pre-tokenized piece, not empty) to out; errors name path. */
int tk_model_encode(const tk_model *m, const char *s, size_t len, tk_ids *out, const char *path, it_err *err);

/* The Precompiled normalizer's charsmap (SentencePiece's double-array trie and replacements). */
typedef struct tk_charsmap tk_charsmap;
int tk_charsmap_load(tk_charsmap **out, const char *b64, size_t len, const char *path, it_err *err);
void tk_charsmap_free(tk_charsmap *c);
/* Appends the normalization of s[0..len) to out. */
int tk_charsmap_apply(const tk_charsmap *c, const char *s, size_t len, tk_buf *out, const char *path, it_err *err);

#endif
