/* tokenizer_model.c -- the models of tokenizer.json (BPE, Unigram) and the Precompiled
 * normalizer's charsmap, mirroring the Rust `tokenizers` crate (models/bpe/{model,word,
 * serialization}.rs, models/unigram/model.rs) and spm_precompiled (src/lib.rs).
 *
 * BPE: a word is cut into characters (continuing_subword_prefix on all but the first,
 * end_of_word_suffix on the last); each is looked up, else byte_fallback's <0xHH> tokens (all
 * of them or none), else unk_token (consecutive ones fused with fuse_unk; a character with no
 * unk_token is dropped); then the adjacent pair of lowest merge rank is merged, the leftmost on
 * ties, until none is left (a heap on (rank, position), as word.rs). With ignore_merges a word
 * that is itself in the vocabulary is one token.
 *
 * Unigram: Viterbi over byte positions (encode_optimized): pieces found by a prefix walk of a
 * trie, shortest first, a later candidate replacing an end's best only when strictly better; a
 * character that no one-character piece covers gets an unk candidate scored min_score - 10;
 * consecutive unks on the best path fuse; a result string not in the vocabulary becomes
 * <0xHH> tokens with byte_fallback, else unk_id.
 *
 * Precompiled: base64 -> u32 trie size, a Darts double-array trie, NUL-terminated replacement
 * strings. The text is walked by grapheme clusters (simplified: a code point with the marks, ZWJ
 * sequences and emoji modifiers after it, CR LF, regional-indicator pairs): a cluster shorter
 * than 6 bytes with a prefix in the trie is replaced whole by its shortest prefix's string, else
 * each character is replaced on its own or kept.
 */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

/* ============================================================================================ */
/* Buffers and the string map                                                                    */
/* ============================================================================================ */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return IT_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2) return IT_ENOMEM;
        c *= 2;
    }
    size_t bytes;
    if (it__mul_size(c, elem, &bytes)) return IT_ENOMEM;
    void *q = realloc(*p, bytes);
    if (!q) return IT_ENOMEM;
    *p = q;
    *cap = c;
    return IT_OK;
}

int tk_buf_add(tk_buf *b, const void *s, size_t n)
{
    size_t need;
    if (it__add_size(b->len, n, &need) || it__add_size(need, 1, &need)) return IT_ENOMEM;
    TRY(grow((void **)&b->p, &b->cap, need, 1));
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return IT_OK;
}

int tk_ids_add(tk_ids *v, int32_t id)
{
    TRY(grow((void **)&v->p, &v->cap, v->len + 1, sizeof *v->p));
    v->p[v->len++] = id;
    return IT_OK;
}

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static size_t map_slot(const tk_map *m, const char *s, size_t len)
{
    size_t i = (size_t)hash_bytes(s, len) & (m->cap - 1);
    while (m->keys[i] && !(m->lens[i] == len && memcmp(m->keys[i], s, len) == 0)) i = (i + 1) & (m->cap - 1);
    return i;
}

int tk_map_put(tk_map *m, const char *s, size_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        tk_map n = {0};
        n.cap = cap;
        n.keys = it__calloc(cap, sizeof *n.keys);
        n.lens = it__calloc(cap, sizeof *n.lens);
        n.vals = it__calloc(cap, sizeof *n.vals);
        if (!n.keys || !n.lens || !n.vals || cap > SIZE_MAX / 4) {
            free(n.keys), free(n.lens), free(n.vals);
            return IT_ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = map_slot(&n, m->keys[i], m->lens[i]);
                n.keys[j] = m->keys[i], n.lens[j] = m->lens[i], n.vals[j] = m->vals[i];
            }
        n.n = m->n;
        free(m->keys), free(m->lens), free(m->vals);
        *m = n;
    }
    size_t i = map_slot(m, s, len);
    if (!m->keys[i]) {
        char *k = malloc(len + 1);
        if (!k) return IT_ENOMEM;
        if (len) memcpy(k, s, len);
        k[len] = 0;
        m->keys[i] = k;
        m->lens[i] = len;
        m->n++;
    }
    m->vals[i] = val;
    return IT_OK;
}

int32_t tk_map_get(const tk_map *m, const char *s, size_t len)
{
    if (!m->cap) return -1;
    size_t i = map_slot(m, s, len);
    return m->keys[i] ? m->vals[i] : -1;
}

void tk_map_free(tk_map *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys), free(m->lens), free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ============================================================================================ */
/* Model loading helpers                                                                         */
/* ============================================================================================ */

/* A member that must be a string or null (or absent): *s NULL when null or absent. */
static int opt_string(const it_json *obj, const char *key, const char **s, size_t *len, const char *path, it_err *err)
{
    const it_json *v = it_json_get(obj, key);
    *s = NULL;
    *len = 0;
    if (!v || v->type == IT_JSON_NULL) return IT_OK;
    if (v->type != IT_JSON_STR)
        return it__fail(err, IT_EFORMAT, "%s: model.%s is %s, expected a string or null", path, key,
                        it_json_type_name(v->type));
    *s = v->s;
    *len = v->len;
    return IT_OK;
}

static int opt_bool(const it_json *obj, const char *key, int *out, const char *path, it_err *err)
{
    const it_json *v = it_json_get(obj, key);
    *out = 0;
    if (!v || v->type == IT_JSON_NULL || v->type == IT_JSON_FALSE) return IT_OK;
    if (v->type == IT_JSON_TRUE) return (*out = 1), IT_OK;
    return it__fail(err, IT_EFORMAT, "%s: model.%s is %s, expected true or false", path, key,
                    it_json_type_name(v->type));
}

static char *dup_bytes(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

/* ids of the 256 byte tokens "<0xHH>" (-1 when absent), through a lookup function. */
static void byte_tokens(int32_t ids[256], const tk_map *m)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char s[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        ids[b] = tk_map_get(m, s, 6);
    }
}

/* ============================================================================================ */
/* BPE                                                                                           */
/* ============================================================================================ */

typedef struct bpe {
    tk_map vocab;
    uint64_t *pk; /* merges: (a << 32 | b) + 1, 0 = empty slot */
    uint32_t *prank;
    int32_t *pnew;
    size_t pcap;
    char *unk, *prefix, *suffix; /* NULL when absent */
    size_t unk_len, prefix_len, suffix_len;
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t bytes[256];
} bpe;

typedef struct unigram {
    tk_map ids;
    double *scores; /* [n] */
    size_t n;
    double min_score;
    int32_t unk_id; /* -1: none */
    int byte_fallback;
    int32_t bytes[256];
    /* the trie over the pieces' bytes: node 0 is the root */
    uint32_t *child, *sibling;
    int32_t *val;
    unsigned char *label;
    size_t nodes, cap;
} unigram;

struct tk_model {
    int kind; /* 0 BPE, 1 Unigram */
    bpe b;
    unigram u;
};

static size_t pair_slot(const bpe *b, uint64_t key)
{
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (b->pcap - 1);
    while (b->pk[i] && b->pk[i] != key) i = (i + 1) & (b->pcap - 1);
    return i;
}

/* The rank and result of merging ids a and b: 1 when there is such a merge. */
static int pair_get(const bpe *b, int32_t x, int32_t y, uint32_t *rank, int32_t *new_id)
{
    if (!b->pcap) return 0;
    uint64_t key = ((uint64_t)(uint32_t)x << 32 | (uint32_t)y) + 1;
    size_t i = pair_slot(b, key);
    if (!b->pk[i]) return 0;
    *rank = b->prank[i];
    *new_id = b->pnew[i];
    return 1;
}

static int bpe_merge_one(bpe *b, const char *x, size_t xl, const char *y, size_t yl, size_t rank, const char *path,
                         it_err *err)
{
    int32_t a = tk_map_get(&b->vocab, x, xl), c = tk_map_get(&b->vocab, y, yl);
    if (a < 0 || c < 0)
        return it__fail(err, IT_EFORMAT, "%s: model.merges[%zu]: \"%.*s\" is not in the vocabulary", path, rank,
                        (int)(a < 0 ? (xl > 100 ? 100 : xl) : (yl > 100 ? 100 : yl)), a < 0 ? x : y);
    if (yl < b->prefix_len)
        return it__fail(err, IT_EFORMAT, "%s: model.merges[%zu]: \"%.*s\" is shorter than continuing_subword_prefix",
                        path, rank, (int)(yl > 100 ? 100 : yl), y);
    tk_buf t = {0};
    if (tk_buf_add(&t, x, xl) || tk_buf_add(&t, y + b->prefix_len, yl - b->prefix_len)) {
        free(t.p);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    }
    int32_t n = tk_map_get(&b->vocab, t.p, t.len);
    if (n < 0) {
        int rc = it__fail(err, IT_EFORMAT, "%s: model.merges[%zu]: the merged token \"%.*s\" is not in the vocabulary",
                          path, rank, (int)(t.len > 100 ? 100 : t.len), t.p);
        free(t.p);
        return rc;
    }
    free(t.p);
    if (rank > UINT32_MAX - 1) return it__fail(err, IT_EUNSUPPORTED, "%s: model.merges: too many merges", path);
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)c) + 1;
    size_t i = pair_slot(b, key);
    b->pk[i] = key; /* a repeated pair keeps the later rank, as the crate's HashMap */
    b->prank[i] = (uint32_t)rank;
    b->pnew[i] = n;
    return IT_OK;
}

static int bpe_load(bpe *b, const it_json *m, const char *path, it_err *err)
{
    const it_json *v = it_json_get(m, "vocab"), *mg = it_json_get(m, "merges"), *d = it_json_get(m, "dropout");
    if (!v || v->type != IT_JSON_OBJ)
        return it__fail(err, IT_EFORMAT, "%s: model.vocab: expected an object of token: id", path);
    if (d && d->type != IT_JSON_NULL && !((d->type == IT_JSON_INT || d->type == IT_JSON_NUM) && d->d == 0.0))
        return it__fail(err, IT_EUNSUPPORTED, "%s: model.dropout: BPE dropout is random; only null or 0 is supported",
                        path);
    for (size_t i = 0; i < v->n; i++) {
        const it_json *id = &v->items[i];
        if (id->type != IT_JSON_INT || !id->i_ok || id->i < 0 || id->i > INT32_MAX)
            return it__fail(err, IT_EFORMAT, "%s: model.vocab[\"%.*s\"]: expected an integer id in [0, %d]", path,
                            (int)(v->keylens[i] > 100 ? 100 : v->keylens[i]), v->keys[i], INT32_MAX);
        if (tk_map_put(&b->vocab, v->keys[i], v->keylens[i], (int32_t)id->i))
            return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    }
    const char *s;
    size_t l;
    TRY(opt_string(m, "unk_token", &s, &l, path, err));
    if (s && !(b->unk = dup_bytes(s, l))) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    b->unk_len = l;
    TRY(opt_string(m, "continuing_subword_prefix", &s, &l, path, err));
    if (s && !(b->prefix = dup_bytes(s, l))) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    b->prefix_len = l;
    TRY(opt_string(m, "end_of_word_suffix", &s, &l, path, err));
    if (s && !(b->suffix = dup_bytes(s, l))) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    b->suffix_len = l;
    TRY(opt_bool(m, "fuse_unk", &b->fuse_unk, path, err));
    TRY(opt_bool(m, "byte_fallback", &b->byte_fallback, path, err));
    TRY(opt_bool(m, "ignore_merges", &b->ignore_merges, path, err));
    byte_tokens(b->bytes, &b->vocab);

    if (mg && mg->type == IT_JSON_NULL) mg = NULL;
    if (mg && mg->type != IT_JSON_ARR)
        return it__fail(err, IT_EFORMAT, "%s: model.merges: expected an array", path);
    size_t nm = mg ? mg->n : 0;
    b->pcap = 16;
    while (b->pcap < nm * 2 + 16) {
        if (b->pcap > SIZE_MAX / 4) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        b->pcap *= 2;
    }
    b->pk = it__calloc(b->pcap, sizeof *b->pk);
    b->prank = it__calloc(b->pcap, sizeof *b->prank);
    b->pnew = it__calloc(b->pcap, sizeof *b->pnew);
    if (!b->pk || !b->prank || !b->pnew) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    size_t rank = 0;
    for (size_t i = 0; i < nm; i++) {
        const it_json *e = &mg->items[i];
        if (e->type == IT_JSON_STR) {
            /* legacy "a b": lines starting with #version are skipped; exactly one space */
            if (e->len >= 8 && memcmp(e->s, "#version", 8) == 0) continue;
            const char *sp = memchr(e->s, ' ', e->len);
            if (!sp || memchr(sp + 1, ' ', e->len - (size_t)(sp + 1 - e->s)))
                return it__fail(err, IT_EFORMAT, "%s: model.merges[%zu]: expected \"a b\" with exactly one space", path,
                                i);
            TRY(bpe_merge_one(b, e->s, (size_t)(sp - e->s), sp + 1, e->len - (size_t)(sp + 1 - e->s), rank, path, err));
        } else if (e->type == IT_JSON_ARR && e->n == 2 && e->items[0].type == IT_JSON_STR &&
                   e->items[1].type == IT_JSON_STR) {
            TRY(bpe_merge_one(b, e->items[0].s, e->items[0].len, e->items[1].s, e->items[1].len, rank, path, err));
        } else {
            return it__fail(err, IT_EFORMAT, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", path, i);
        }
        rank++;
    }
    return IT_OK;
}

typedef struct sym {
    int32_t c;
    size_t prev, next; /* SIZE_MAX: none */
    int gone;
} sym;
typedef struct hent {
    uint32_t rank;
    size_t pos;
    int32_t new_id;
} hent;

static int hless(const hent *a, const hent *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}
static void hpush(hent *h, size_t *n, hent e)
{
    size_t i = (*n)++;
    while (i && hless(&e, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}
static hent hpop(hent *h, size_t *n)
{
    hent top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(&h[c + 1], &h[c])) c++;
        if (!hless(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static int sym_add(sym **w, size_t *n, size_t *cap, int32_t id)
{
    TRY(grow((void **)w, cap, *n + 1, sizeof **w));
    (*w)[*n] = (sym){id, *n ? *n - 1 : SIZE_MAX, SIZE_MAX, 0};
    if (*n) (*w)[*n - 1].next = *n;
    (*n)++;
    return IT_OK;
}

static int bpe_encode(const bpe *b, const char *s, size_t len, tk_ids *out, const char *path, it_err *err)
{
    if (b->ignore_merges) {
        int32_t id = tk_map_get(&b->vocab, s, len);
        if (id >= 0) return tk_ids_add(out, id) ? it__fail(err, IT_ENOMEM, "%s: out of memory", path) : IT_OK;
    }
    sym *w = NULL;
    size_t n = 0, cap = 0;
    tk_buf piece = {0};
    int rc = IT_OK, have_unk = 0;
    int32_t unk_id = -1;
    for (size_t i = 0; i < len && rc == IT_OK;) {
        uint32_t cp;
        size_t k = it__utf8_get(s + i, len - i, &cp);
        if (!k) k = 1; /* not reached: the text is valid UTF-8 */
        piece.len = 0;
        if ((i > 0 && b->prefix && tk_buf_add(&piece, b->prefix, b->prefix_len)) || tk_buf_add(&piece, s + i, k) ||
            (i + k == len && b->suffix && tk_buf_add(&piece, b->suffix, b->suffix_len))) {
            rc = IT_ENOMEM;
            break;
        }
        i += k;
        int32_t id = tk_map_get(&b->vocab, piece.p, piece.len);
        if (id >= 0) {
            if (have_unk && (rc = sym_add(&w, &n, &cap, unk_id))) break;
            have_unk = 0;
            rc = sym_add(&w, &n, &cap, id);
            continue;
        }
        if (b->byte_fallback) {
            size_t j = 0;
            while (j < piece.len && b->bytes[(unsigned char)piece.p[j]] >= 0) j++;
            if (j == piece.len) {
                for (j = 0; j < piece.len && rc == IT_OK; j++)
                    rc = sym_add(&w, &n, &cap, b->bytes[(unsigned char)piece.p[j]]);
                continue; /* as the crate: a pending unk is not flushed here */
            }
        }
        if (!b->unk) continue; /* no unk_token: the character is dropped */
        int32_t u = tk_map_get(&b->vocab, b->unk, b->unk_len);
        if (u < 0) {
            rc = it__fail(err, IT_EFORMAT, "%s: model.unk_token \"%.*s\" is not in the vocabulary", path,
                          (int)(b->unk_len > 100 ? 100 : b->unk_len), b->unk);
            break;
        }
        if (have_unk && !b->fuse_unk && (rc = sym_add(&w, &n, &cap, unk_id))) break;
        have_unk = 1;
        unk_id = u;
    }
    if (rc == IT_OK && have_unk) rc = sym_add(&w, &n, &cap, unk_id);
    free(piece.p);
    hent *h = NULL;
    size_t hn = 0;
    if (rc == IT_OK && n > 1) {
        /* each merge adds at most 2 entries: n - 1 + 2 (n - 1) bound the heap */
        h = it__malloc_n(3 * n, sizeof *h);
        if (!h) rc = IT_ENOMEM;
    }
    if (rc == IT_OK && h) {
        uint32_t r;
        int32_t nid;
        for (size_t i = 0; i + 1 < n; i++)
            if (pair_get(b, w[i].c, w[i + 1].c, &r, &nid)) hpush(h, &hn, (hent){r, i, nid});
        while (hn) {
            hent t = hpop(h, &hn);
            sym *cur = &w[t.pos];
            if (cur->gone || cur->next == SIZE_MAX) continue;
            size_t nx = cur->next;
            if (!pair_get(b, cur->c, w[nx].c, &r, &nid) || nid != t.new_id) continue;
            cur->c = t.new_id;
            cur->next = w[nx].next;
            w[nx].gone = 1;
            if (cur->next != SIZE_MAX) w[cur->next].prev = t.pos;
            if (cur->prev != SIZE_MAX && pair_get(b, w[cur->prev].c, cur->c, &r, &nid))
                hpush(h, &hn, (hent){r, cur->prev, nid});
            if (cur->next != SIZE_MAX && pair_get(b, cur->c, w[cur->next].c, &r, &nid))
                hpush(h, &hn, (hent){r, t.pos, nid});
        }
    }
    for (size_t i = 0; i < n && rc == IT_OK; i++)
        if (!w[i].gone) rc = tk_ids_add(out, w[i].c);
    free(h);
    free(w);
    if (rc == IT_ENOMEM) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    return rc;
}

/* ============================================================================================ */
/* Unigram                                                                                       */
/* ============================================================================================ */

static uint32_t trie_find(const unigram *u, uint32_t node, unsigned char c)
{
    for (uint32_t k = u->child[node]; k; k = u->sibling[k])
        if (u->label[k] == c) return k;
    return 0;
}

static int trie_insert(unigram *u, const char *s, size_t len, int32_t id)
{
    uint32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t k = trie_find(u, node, (unsigned char)s[i]);
        if (!k) {
            if (u->nodes >= UINT32_MAX - 1) return IT_ENOMEM;
            if (u->nodes >= u->cap) {
                size_t c = u->cap * 2;
                uint32_t *a = realloc(u->child, c * sizeof *a);
                if (a) u->child = a;
                uint32_t *b2 = realloc(u->sibling, c * sizeof *b2);
                if (b2) u->sibling = b2;
                int32_t *v = realloc(u->val, c * sizeof *v);
                if (v) u->val = v;
                unsigned char *l = realloc(u->label, c);
                if (l) u->label = l;
                if (!a || !b2 || !v || !l) return IT_ENOMEM;
                u->cap = c;
            }
            k = (uint32_t)u->nodes++;
            u->child[k] = 0;
            u->val[k] = -1;
            u->label[k] = (unsigned char)s[i];
            u->sibling[k] = u->child[node];
            u->child[node] = k;
        }
        node = k;
    }
    u->val[node] = id;
    return IT_OK;
}

static int unigram_load(unigram *u, const it_json *m, const char *path, it_err *err)
{
    const it_json *v = it_json_get(m, "vocab"), *unk = it_json_get(m, "unk_id");
    if (!v || v->type != IT_JSON_ARR)
        return it__fail(err, IT_EFORMAT, "%s: model.vocab: expected an array of [piece, score]", path);
    if (!v->n) return it__fail(err, IT_EFORMAT, "%s: model.vocab is empty", path);
    if (v->n > INT32_MAX) return it__fail(err, IT_EUNSUPPORTED, "%s: model.vocab: too many pieces", path);
    u->unk_id = -1;
    if (unk && unk->type != IT_JSON_NULL) {
        if (unk->type != IT_JSON_INT || !unk->i_ok || unk->i < 0 || (uint64_t)unk->i >= v->n)
            return it__fail(err, IT_EFORMAT, "%s: model.unk_id: expected null or an index into model.vocab (%zu pieces)",
                            path, v->n);
        u->unk_id = (int32_t)unk->i;
    }
    TRY(opt_bool(m, "byte_fallback", &u->byte_fallback, path, err));
    u->n = v->n;
    u->scores = it__malloc_n(v->n, sizeof *u->scores);
    u->cap = 1024;
    u->child = malloc(u->cap * sizeof *u->child);
    u->sibling = malloc(u->cap * sizeof *u->sibling);
    u->val = malloc(u->cap * sizeof *u->val);
    u->label = malloc(u->cap);
    if (!u->scores || !u->child || !u->sibling || !u->val || !u->label)
        return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    u->nodes = 1;
    u->child[0] = 0, u->sibling[0] = 0, u->val[0] = -1, u->label[0] = 0;
    u->min_score = INFINITY;
    for (size_t i = 0; i < v->n; i++) {
        const it_json *e = &v->items[i];
        if (e->type != IT_JSON_ARR || e->n != 2 || e->items[0].type != IT_JSON_STR ||
            (e->items[1].type != IT_JSON_INT && e->items[1].type != IT_JSON_NUM))
            return it__fail(err, IT_EFORMAT, "%s: model.vocab[%zu]: expected [piece, score]", path, i);
        double sc = e->items[1].d;
        if (!isfinite(sc)) return it__fail(err, IT_EFORMAT, "%s: model.vocab[%zu]: the score is not finite", path, i);
        u->scores[i] = sc;
        if (sc < u->min_score) u->min_score = sc;
        if (tk_map_put(&u->ids, e->items[0].s, e->items[0].len, (int32_t)i) ||
            trie_insert(u, e->items[0].s, e->items[0].len, (int32_t)i))
            return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    }
    byte_tokens(u->bytes, &u->ids);
    return IT_OK;
}

/* Appends the id(s) of one Viterbi result string. */
static int unigram_emit(const unigram *u, const char *s, size_t len, tk_ids *out, const char *path, it_err *err)
{
    int32_t id = tk_map_get(&u->ids, s, len);
    if (id < 0 && u->byte_fallback) {
        size_t j = 0;
        while (j < len && u->bytes[(unsigned char)s[j]] >= 0) j++;
        if (j == len) {
            for (j = 0; j < len; j++)
                if (tk_ids_add(out, u->bytes[(unsigned char)s[j]])) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
            return IT_OK;
        }
    }
    if (id < 0) id = u->unk_id;
    if (id < 0)
        return it__fail(err, IT_EFORMAT, "%s: model.unk_id is null and the text has a character no piece covers", path);
    return tk_ids_add(out, id) ? it__fail(err, IT_ENOMEM, "%s: out of memory", path) : IT_OK;
}

static int unigram_encode(const unigram *u, const char *s, size_t len, tk_ids *out, const char *path, it_err *err)
{
    double *best = it__malloc_n(len + 1, sizeof *best);
    size_t *from = it__malloc_n(len + 1, sizeof *from);
    int32_t *bid = it__malloc_n(len + 1, sizeof *bid);
    size_t *ends = it__malloc_n(len + 1, sizeof *ends);
    int rc = IT_OK;
    if (!best || !from || !bid || !ends) {
        rc = it__fail(err, IT_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i <= len; i++) best[i] = 0, from[i] = SIZE_MAX, bid[i] = -1;
    double unk_score = u->min_score - 10.0;
    for (size_t st = 0; st < len;) {
        uint32_t cp;
        size_t mb = it__utf8_get(s + st, len - st, &cp);
        if (!mb) mb = 1;
        double here = best[st];
        int single = 0;
        uint32_t node = 0;
        for (size_t e = st; e < len; e++) {
            node = trie_find(u, node, (unsigned char)s[e]);
            if (!node) break;
            int32_t id = u->val[node];
            if (id < 0) continue;
            size_t end = e + 1;
            double cand = here + u->scores[id];
            if (from[end] == SIZE_MAX || cand > best[end]) best[end] = cand, from[end] = st, bid[end] = id;
            if (end - st == mb) single = 1;
        }
        if (!single) {
            double cand = here + unk_score;
            if (from[st + mb] == SIZE_MAX || cand > best[st + mb])
                best[st + mb] = cand, from[st + mb] = st, bid[st + mb] = u->unk_id;
        }
        st += mb;
    }
    /* backtrack: the pieces' end positions, last first; unks (id == unk_id) fuse */
    size_t ne = 0;
    for (size_t e = len; e > 0; e = from[e]) ends[ne++] = e;
    for (size_t k = ne; k > 0 && rc == IT_OK;) {
        size_t e = ends[--k], st = from[e];
        if (u->unk_id >= 0 && bid[e] == u->unk_id) {
            while (k > 0 && bid[ends[k - 1]] == u->unk_id) e = ends[--k];
        }
        rc = unigram_emit(u, s + st, e - st, out, path, err);
    }
done:
    free(best), free(from), free(bid), free(ends);
    return rc;
}

/* ============================================================================================ */
/* The model                                                                                     */
/* ============================================================================================ */

int tk_model_load(tk_model **out, const it_json *model, const char *path, it_err *err)
{
    *out = NULL;
    if (!model || model->type != IT_JSON_OBJ) return it__fail(err, IT_EFORMAT, "%s: model: expected an object", path);
    const it_json *ty = it_json_get(model, "type");
    int kind;
    if (ty && ty->type == IT_JSON_STR && !strcmp(ty->s, "BPE")) kind = 0;
    else if (ty && ty->type == IT_JSON_STR && !strcmp(ty->s, "Unigram")) kind = 1;
    else if (ty && ty->type == IT_JSON_STR)
        return it__fail(err, IT_EUNSUPPORTED, "%s: model.type \"%.*s\" is not supported (BPE and Unigram are)", path,
                        (int)(ty->len > 60 ? 60 : ty->len), ty->s);
    else if (ty) return it__fail(err, IT_EFORMAT, "%s: model.type: expected a string", path);
    else if (it_json_get(model, "merges")) kind = 0; /* old files without "type" */
    else {
        const it_json *v = it_json_get(model, "vocab");
        if (!v || v->type != IT_JSON_ARR)
            return it__fail(err, IT_EUNSUPPORTED, "%s: model has no \"type\" and is neither BPE nor Unigram", path);
        kind = 1;
    }
    tk_model *m = calloc(1, sizeof *m);
    if (!m) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    m->kind = kind;
    int rc = kind == 0 ? bpe_load(&m->b, model, path, err) : unigram_load(&m->u, model, path, err);
    if (rc != IT_OK) {
        tk_model_free(m);
        return rc;
    }
    *out = m;
    return IT_OK;
}

void tk_model_free(tk_model *m)
{
    if (!m) return;
    tk_map_free(&m->b.vocab);
    free(m->b.pk), free(m->b.prank), free(m->b.pnew), free(m->b.unk), free(m->b.prefix), free(m->b.suffix);
    tk_map_free(&m->u.ids);
    free(m->u.scores), free(m->u.child), free(m->u.sibling), free(m->u.val), free(m->u.label);
    free(m);
}

size_t tk_model_vocab_size(const tk_model *m)
{
    return m->kind == 0 ? m->b.vocab.n : m->u.n;
}

int32_t tk_model_token_id(const tk_model *m, const char *s, size_t len)
{
    return tk_map_get(m->kind == 0 ? &m->b.vocab : &m->u.ids, s, len);
}

int tk_model_encode(const tk_model *m, const char *s, size_t len, tk_ids *out, const char *path, it_err *err)
{
    if (!len) return IT_OK;
    return m->kind == 0 ? bpe_encode(&m->b, s, len, out, path, err) : unigram_encode(&m->u, s, len, out, path, err);
}

/* ============================================================================================ */
/* Precompiled charsmap                                                                          */
/* ============================================================================================ */

struct tk_charsmap {
    uint32_t *units;
    size_t nunits;
    char *blob; /* the replacement strings */
    size_t blob_len;
};

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int tk_charsmap_load(tk_charsmap **out, const char *b64, size_t len, const char *path, it_err *err)
{
    *out = NULL;
    if (len % 4)
        return it__fail(err, IT_EFORMAT, "%s: precompiled_charsmap: base64 length %zu is not a multiple of 4", path, len);
    unsigned char *raw = malloc(len / 4 * 3 + 1);
    if (!raw) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)b64[i + k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if ((v[k] = b64_val(c)) < 0 || pad) {
                free(raw);
                return it__fail(err, IT_EFORMAT, "%s: precompiled_charsmap: invalid base64 at offset %zu", path, i + k);
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        raw[n++] = (unsigned char)(w >> 16);
        if (pad < 2) raw[n++] = (unsigned char)(w >> 8);
        if (pad < 1) raw[n++] = (unsigned char)w;
    }
    if (n < 4) {
        free(raw);
        return it__fail(err, IT_EFORMAT, "%s: precompiled_charsmap: shorter than its 4-byte header", path);
    }
    size_t tsize = it__le32(raw), nunits = tsize / 4;
    if (nunits == 0 || nunits > (n - 4) / 4) {
        free(raw);
        return it__fail(err, IT_EFORMAT, "%s: precompiled_charsmap: trie size %zu does not fit in %zu bytes", path, tsize,
                        n - 4);
    }
    tk_charsmap *c = calloc(1, sizeof *c);
    if (c) c->units = it__malloc_n(nunits, sizeof *c->units);
    if (c && c->units) c->blob = malloc(n - 4 - nunits * 4 + 1);
    if (!c || !c->units || !c->blob) {
        if (c) free(c->units);
        free(c);
        free(raw);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    }
    c->nunits = nunits;
    for (size_t i = 0; i < nunits; i++) c->units[i] = it__le32(raw + 4 + 4 * i);
    c->blob_len = n - 4 - nunits * 4;
    memcpy(c->blob, raw + 4 + nunits * 4, c->blob_len);
    c->blob[c->blob_len] = 0;
    free(raw);
    if (!it__utf8_valid(c->blob, c->blob_len)) {
        tk_charsmap_free(c);
        return it__fail(err, IT_EFORMAT, "%s: precompiled_charsmap: the replacement strings are not UTF-8", path);
    }
    *out = c;
    return IT_OK;
}

void tk_charsmap_free(tk_charsmap *c)
{
    if (!c) return;
    free(c->units), free(c->blob), free(c);
}

/* The blob offset of the shortest prefix of s[0..len) in the trie, or -1 (common_prefix_search's
 * first result; a position outside the array ends the walk). */
static long charsmap_find(const tk_charsmap *c, const char *s, size_t len)
{
#define OFFSET(u) ((size_t)((u) >> 10) << (((u)&0x200u) >> 6))
    size_t pos = OFFSET(c->units[0]);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!ch) break;
        pos ^= ch;
        if (pos >= c->nunits) return -1;
        uint32_t u = c->units[pos];
        if ((u & 0x800000FFu) != ch) return -1;
        pos ^= OFFSET(u);
        if (pos >= c->nunits) return -1;
        if ((u >> 8) & 1) return (long)(c->units[pos] & 0x7FFFFFFFu);
    }
#undef OFFSET
    return -1;
}

/* Appends the replacement at blob offset at (up to its NUL). */
static int charsmap_put(const tk_charsmap *c, long at, tk_buf *out, const char *path, it_err *err)
{
    if (at < 0 || (size_t)at >= c->blob_len)
        return it__fail(err, IT_EFORMAT, "%s: precompiled_charsmap: a replacement offset %ld is outside the strings",
                        path, at);
    size_t e = (size_t)at;
    while (e < c->blob_len && c->blob[e]) e++;
    return tk_buf_add(out, c->blob + at, e - (size_t)at) ? it__fail(err, IT_ENOMEM, "%s: out of memory", path) : IT_OK;
}

/* The byte length of the (simplified) grapheme cluster at s[0..len), len > 0. */
static size_t grapheme_len(const char *s, size_t len)
{
    uint32_t cp, nx;
    size_t k = it__utf8_get(s, len, &cp);
    if (!k) return 1;
    if (cp == '\r') return len > 1 && s[1] == '\n' ? 2 : 1;
    if (cp >= 0x1F1E6 && cp <= 0x1F1FF) { /* a regional-indicator pair */
        size_t k2 = it__utf8_get(s + k, len - k, &nx);
        if (k2 && nx >= 0x1F1E6 && nx <= 0x1F1FF) k += k2;
    }
    while (k < len) {
        size_t k2 = it__utf8_get(s + k, len - k, &nx);
        if (!k2) break;
        if (it__uni_is_mark(nx) || (nx >= 0x1F3FB && nx <= 0x1F3FF)) {
            k += k2;
        } else if (nx == 0x200D) { /* ZWJ, and the character it joins */
            k += k2;
            size_t k3 = k < len ? it__utf8_get(s + k, len - k, &nx) : 0;
            if (k3 && nx >= 0x2000) k += k3;
        } else {
            break;
        }
    }
    return k;
}

int tk_charsmap_apply(const tk_charsmap *c, const char *s, size_t len, tk_buf *out, const char *path, it_err *err)
{
    for (size_t i = 0; i < len;) {
        size_t g = grapheme_len(s + i, len - i);
        if (g < 6) {
            long at = charsmap_find(c, s + i, g);
            if (at >= 0) {
                TRY(charsmap_put(c, at, out, path, err));
                i += g;
                continue;
            }
        }
        for (size_t j = 0; j < g;) {
            uint32_t cp;
            size_t k = it__utf8_get(s + i + j, g - j, &cp);
            if (!k) k = 1;
            long at = charsmap_find(c, s + i + j, k);
            if (at >= 0) TRY(charsmap_put(c, at, out, path, err));
            else if (tk_buf_add(out, s + i + j, k)) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
            j += k;
        }
        i += g;
    }
    if (!out->p && tk_buf_add(out, "", 0)) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    return IT_OK;
}
