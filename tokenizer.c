/* tokenizer.c -- tokenizer.json (HF `tokenizers`): loading, and the encoding pipeline of the Rust
 * crate's Tokenizer::encode (tokenizer/mod.rs, added_vocabulary.rs, normalizer.rs,
 * pre_tokenizers/, processors/); the models are in tokenizer_model.c.
 *
 * encode(text):
 *   1. added tokens whose "normalized" is false are cut out of the raw text (leftmost-longest;
 *      single_word, lstrip, rstrip; stripped spaces go into the token);
 *   2. each other piece is normalized, and the added tokens whose "normalized" is true (matched
 *      in their normalized form) are cut out of it;
 *   3. the pre-tokenizer cuts the remaining pieces into words, and the model gives each word's ids;
 *   4. with add_special, the post-processor adds its tokens.
 * An added token's id is the model's id for its content when there is one, else the next id after
 * the vocabulary (as AddedVocabulary::add_tokens; the "id" in the file is not used).
 *
 * The split regexes are not compiled but hand-coded, each for one exact pattern string, with
 * Oniguruma's semantics (alternatives in order, backtracking as the engine would): GPT-2's (also
 * ByteLevel's use_regex), Llama-3's, Qwen2's and CLIP's. Classes: \p{L}, \p{N}, \s (White_Space)
 * from unicode.h.
 */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

#define TOKENIZER_MAX_BYTES ((size_t)1 << 30)

static const char RX_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RX_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RX_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RX_CLIP[] = "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

enum { PAT_LITERAL, PAT_GPT2, PAT_LLAMA3, PAT_QWEN2, PAT_CLIP, PAT_SPACES, PAT_SPACE, PAT_2SPACES, PAT_BLANKS };

/* ============================================================================================ */
/* Components                                                                                    */
/* ============================================================================================ */

enum { N_SEQ, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_STRIP, N_ACCENTS, N_PREPEND, N_REPLACE, N_PRECOMPILED };
typedef struct norm {
    int type;
    struct norm *kids;
    size_t nkids;
    int pat;      /* Replace: PAT_LITERAL (lit) or a regex */
    char *lit;    /* Replace: the literal pattern; Prepend: the prefix */
    size_t litlen;
    char *content; /* Replace */
    size_t clen;
    int left, right; /* Strip */
    tk_charsmap *cm;
} norm;

enum { P_SEQ, P_BYTELEVEL, P_SPLIT, P_METASPACE, P_WSSPLIT, P_DIGITS, P_PUNCT };
enum { B_REMOVED, B_ISOLATED, B_PREV, B_NEXT, B_CONTIGUOUS };
typedef struct pretok {
    int type;
    struct pretok *kids;
    size_t nkids;
    int prefix_space, use_regex; /* ByteLevel */
    int pat;                     /* Split */
    char *lit;
    size_t litlen;
    int behavior, invert;
    uint32_t rep; /* Metaspace */
    int prepend;  /* 0 always, 1 first, 2 never */
    int split;
    int individual; /* Digits */
} pretok;

enum { Q_SEQ, Q_ITEMS, Q_NOOP };
typedef struct post {
    int type;
    struct post *kids;
    size_t nkids;
    int32_t *items; /* ids, and -1 for the sequence */
    size_t nitems;
} post;

typedef struct added {
    char *content, *norm; /* norm: the normalized content (normalized tokens) */
    size_t len, normlen;
    int32_t id;
    int single_word, lstrip, rstrip, normalized;
} added;

struct it_tokenizer {
    char *path;
    tk_model *model;
    norm *norm;
    pretok *pre;
    post *post;
    added *added;
    size_t nadded;
    tk_map added_ids;
};

/* A piece of text in the pipeline: a finished token (id >= 0) or text still to encode. first: its
 * original offset is 0 (Metaspace's prepend_scheme "first"). */
typedef struct piece {
    char *s;
    size_t len;
    int32_t id;
    int first;
} piece;
typedef struct plist {
    piece *p;
    size_t n, cap;
} plist;

static void plist_free(plist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->p[i].s);
    free(l->p);
    memset(l, 0, sizeof *l);
}

/* Appends a copy of s[0..len) (empty text pieces are dropped, as PreTokenizedString::split). */
static int plist_add(plist *l, const char *s, size_t len, int32_t id, int first)
{
    if (!len && id < 0) return IT_OK;
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 16;
        piece *p = it__malloc_n(c, sizeof *p);
        if (!p) return IT_ENOMEM;
        if (l->n) memcpy(p, l->p, l->n * sizeof *p);
        free(l->p);
        l->p = p;
        l->cap = c;
    }
    char *d = malloc(len + 1);
    if (!d) return IT_ENOMEM;
    if (len) memcpy(d, s, len);
    d[len] = 0;
    l->p[l->n++] = (piece){d, len, id, first};
    return IT_OK;
}

static void norm_free(norm *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->nkids; i++) norm_free(&n->kids[i]);
    free(n->kids), free(n->lit), free(n->content);
    tk_charsmap_free(n->cm);
}
static void pretok_free(pretok *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nkids; i++) pretok_free(&p->kids[i]);
    free(p->kids), free(p->lit);
}
static void post_free(post *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nkids; i++) post_free(&p->kids[i]);
    free(p->kids), free(p->items);
}

void it_tokenizer_free(it_tokenizer *t)
{
    if (!t) return;
    tk_model_free(t->model);
    norm_free(t->norm), free(t->norm);
    pretok_free(t->pre), free(t->pre);
    post_free(t->post), free(t->post);
    for (size_t i = 0; i < t->nadded; i++) free(t->added[i].content), free(t->added[i].norm);
    free(t->added);
    tk_map_free(&t->added_ids);
    free(t->path);
    free(t);
}

/* ============================================================================================ */
/* Characters and the hand-coded split patterns                                                  */
/* ============================================================================================ */

/* The code point at s[p] (p < len) and its length in *k (1 for an invalid byte, not reached on
 * validated text). */
static uint32_t cp_at(const char *s, size_t len, size_t p, size_t *k)
{
    uint32_t cp = 0xFFFD;
    *k = it__utf8_get(s + p, len - p, &cp);
    if (!*k) *k = 1, cp = 0xFFFD;
    return cp;
}

static int is_l(uint32_t c) { return it__uni_is_letter(c); }
static int is_n(uint32_t c) { return it__uni_is_number(c); }
static int is_s(uint32_t c) { return it__uni_is_space(c); }
static int is_other(uint32_t c) { return !is_s(c) && !is_l(c) && !is_n(c); }

/* The end of the run of characters with class f from p. */
static size_t run_end(const char *s, size_t len, size_t p, int (*f)(uint32_t))
{
    size_t k;
    while (p < len && f(cp_at(s, len, p, &k))) p += k;
    return p;
}

/* The contractions 's 't 're 've 'm 'll 'd at p (s[p] == '\''): the match's length or 0. ci: (?i:...),
 * where Oniguruma's case folding also lets U+017F (long s) match s. */
static size_t contraction(const char *s, size_t len, size_t p, int ci)
{
    static const char *const alts[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (size_t a = 0; a < 7; a++) {
        size_t q = p + 1, ok = 1;
        for (const char *c = alts[a]; *c && ok; c++) {
            size_t k;
            uint32_t cp = q < len ? cp_at(s, len, q, &k) : 0;
            if (q >= len) ok = 0;
            else if (cp == (uint32_t)*c || (ci && cp == (uint32_t)*c - 32) || (ci && *c == 's' && cp == 0x17F)) q += k;
            else ok = 0;
        }
        if (ok) return q - p;
    }
    return 0;
}

/* \s+(?!\S)|\s+ at p (s[p] is a space): the whole run at the end of the text or when it is one
 * character, else all but its last character. */
static size_t space_run(const char *s, size_t len, size_t p)
{
    size_t e = run_end(s, len, p, is_s), last = p, k;
    for (size_t q = p; q < e; q += k) {
        cp_at(s, len, q, &k);
        last = q;
    }
    if (e == len || last == p) return e - p;
    return last - p;
}

/* ` ?X+` at p: the optional space then a run of class f, or 0. */
static size_t opt_space_run(const char *s, size_t len, size_t p, int (*f)(uint32_t))
{
    size_t k, q = p;
    uint32_t c = cp_at(s, len, p, &k);
    if (c == ' ' && p + 1 < len && f(cp_at(s, len, p + 1, &k))) q = p + 1;
    else if (!f(c)) return 0;
    return run_end(s, len, q, f) - p;
}

static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* The length of the pattern's match at p (p < len), 0 when it does not match there. */
static size_t pattern_at(int pat, const char *s, size_t len, size_t p)
{
    size_t k, m;
    uint32_t c = cp_at(s, len, p, &k);
    if (c == '\'' && (m = contraction(s, len, p, pat == PAT_LLAMA3 || pat == PAT_QWEN2))) return m;
    if (pat == PAT_GPT2) {
        if ((m = opt_space_run(s, len, p, is_l)) || (m = opt_space_run(s, len, p, is_n)) ||
            (m = opt_space_run(s, len, p, is_other)))
            return m;
        return is_s(c) ? space_run(s, len, p) : 0;
    }
    if (pat == PAT_CLIP) {
        if (is_l(c)) return run_end(s, len, p, is_l) - p;
        if (is_n(c)) return k;
        if (is_other(c)) return run_end(s, len, p, is_other) - p;
        return 0;
    }
    /* Llama-3 and Qwen2 */
    size_t k2;
    if (!is_crlf(c) && !is_l(c) && !is_n(c) && p + k < len && is_l(cp_at(s, len, p + k, &k2)))
        return run_end(s, len, p + k, is_l) - p;
    if (is_l(c)) return run_end(s, len, p, is_l) - p;
    if (is_n(c)) {
        size_t q = p, i = 0, lim = pat == PAT_LLAMA3 ? 3 : 1;
        while (i < lim && q < len && is_n(cp_at(s, len, q, &k2))) q += k2, i++;
        return q - p;
    }
    if ((m = opt_space_run(s, len, p, is_other))) return run_end(s, len, p + m, is_crlf) - p;
    if (!is_s(c)) return 0;
    size_t e = run_end(s, len, p, is_s), lastnl = SIZE_MAX;
    for (size_t q = p; q < e; q += k2)
        if (is_crlf(cp_at(s, len, q, &k2))) lastnl = q;
    if (lastnl != SIZE_MAX) return lastnl + 1 - p;
    return space_run(s, len, p);
}

/* A span of a piece and whether the pattern matched it. */
typedef struct span {
    size_t a, b;
    int m;
} span;
typedef struct spans {
    span *p;
    size_t n, cap;
} spans;

static int spans_add(spans *v, size_t a, size_t b, int m)
{
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 16;
        span *q = it__malloc_n(c, sizeof *q);
        if (!q) return IT_ENOMEM;
        if (v->n) memcpy(q, v->p, v->n * sizeof *q);
        free(v->p);
        v->p = q;
        v->cap = c;
    }
    v->p[v->n++] = (span){a, b, m};
    return IT_OK;
}

/* Char predicates for the char patterns (each matching character is its own match). */
typedef struct cpred {
    int kind; /* 0 == rep, 1 whitespace, 2 numeric, 3 punctuation */
    uint32_t rep;
} cpred;
static int cpred_ok(const cpred *f, uint32_t c)
{
    switch (f->kind) {
    case 0: return c == f->rep;
    case 1: return is_s(c);
    case 2: return is_n(c);
    default: return (c < 0x80 && c > 0x20 && c != 0x7F && !is_l(c) && !is_n(c)) || it__uni_is_punct(c);
    }
}

/* Pattern::find_matches: the spans of s[0..len) (len > 0), matches and the text between them.
 * pat < 0: the char predicate f. */
static int find_matches(int pat, const char *lit, size_t litlen, const cpred *f, const char *s, size_t len, spans *out)
{
    size_t prev = 0, p = 0, k;
    if (pat == PAT_LITERAL && !litlen) return spans_add(out, 0, len, 0);
    while (p < len) {
        size_t m = 0;
        if (pat < 0) {
            m = cpred_ok(f, cp_at(s, len, p, &k)) ? k : 0;
        } else if (pat == PAT_LITERAL) {
            m = len - p >= litlen && memcmp(s + p, lit, litlen) == 0 ? litlen : 0;
        } else if (pat == PAT_SPACES || pat == PAT_SPACE) {
            if (is_s(cp_at(s, len, p, &k))) m = pat == PAT_SPACE ? k : run_end(s, len, p, is_s) - p;
        } else if (pat == PAT_2SPACES || pat == PAT_BLANKS) {
            size_t q = p;
            while (q < len && s[q] == ' ') q++;
            if (q - p >= (pat == PAT_2SPACES ? 2u : 1u)) m = q - p;
        } else {
            m = pattern_at(pat, s, len, p);
        }
        if (!m) {
            cp_at(s, len, p, &k);
            p += k;
            continue;
        }
        if (prev != p) TRY(spans_add(out, prev, p, 0));
        TRY(spans_add(out, p, p + m, 1));
        p += m;
        prev = p;
    }
    if (prev != len) TRY(spans_add(out, prev, len, 0));
    return IT_OK;
}

/* NormalizedString::split: cuts piece (text, first) by the spans and the behaviour into out. */
static int split_piece(const piece *pc, spans *v, int behavior, int invert, plist *out)
{
    if (invert)
        for (size_t i = 0; i < v->n; i++) v->p[i].m = !v->p[i].m;
    size_t n = 0;
    int prevm = 0;
    if (behavior == B_NEXT) {
        /* folded from the right: a match glues onto the span after it */
        size_t w = v->n;
        for (size_t i = v->n; i-- > 0;) {
            span sp = v->p[i];
            if (sp.m && !prevm && w < v->n) v->p[w].a = sp.a;
            else v->p[--w] = (span){sp.a, sp.b, 0};
            prevm = sp.m;
        }
        memmove(v->p, v->p + w, (v->n - w) * sizeof *v->p);
        n = v->n - w;
    } else {
        for (size_t i = 0; i < v->n; i++) {
            span sp = v->p[i];
            if (behavior == B_REMOVED) {
                v->p[n++] = sp;
                continue;
            }
            int glue = behavior == B_PREV ? sp.m && !prevm : behavior == B_CONTIGUOUS ? sp.m == prevm : 0;
            if (glue && n) v->p[n - 1].b = sp.b;
            else v->p[n++] = (span){sp.a, sp.b, 0};
            prevm = sp.m;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (behavior == B_REMOVED && v->p[i].m) continue;
        TRY(plist_add(out, pc->s + v->p[i].a, v->p[i].b - v->p[i].a, -1, pc->first && v->p[i].a == 0));
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Normalizers                                                                                   */
/* ============================================================================================ */

static int norm_apply(const it_tokenizer *t, const norm *n, tk_buf *io, it_err *err)
{
    tk_buf out = {0};
    int rc = IT_OK;
    const char *s = io->p ? io->p : "";
    size_t len = io->len, k;
    switch (n->type) {
    case N_SEQ:
        for (size_t i = 0; i < n->nkids; i++) TRY(norm_apply(t, &n->kids[i], io, err));
        return IT_OK;
    case N_NFC:
    case N_NFD:
    case N_NFKC:
    case N_NFKD: {
        static const char *const forms[] = {"NFC", "NFD", "NFKC", "NFKD"};
        char *o = NULL;
        size_t ol = 0;
        int r = it__uni_normalize(forms[n->type - N_NFC], s, len, &o, &ol);
        if (r == -2 || (r == 0 && !o)) return it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
        if (r != 0) return it__fail(err, IT_EINVAL, "%s: normalizing invalid UTF-8", t->path);
        free(io->p);
        io->p = o, io->len = ol, io->cap = ol + 1;
        return IT_OK;
    }
    case N_LOWER:
        for (size_t p = 0; p < len && rc == IT_OK; p += k) {
            uint32_t lo[3];
            char u[12];
            size_t m = it__uni_lower(cp_at(s, len, p, &k), lo), ul = 0;
            for (size_t j = 0; j < m && j < 3; j++) ul += it__utf8_put(lo[j], u + ul);
            rc = tk_buf_add(&out, u, ul);
        }
        break;
    case N_STRIP: {
        size_t a = 0, b = len;
        if (n->left) a = run_end(s, len, 0, is_s);
        if (n->right) {
            size_t q = a;
            b = a;
            while (q < len) {
                if (!is_s(cp_at(s, len, q, &k))) b = q + k;
                q += k;
            }
        }
        rc = tk_buf_add(&out, s + a, b - a);
        break;
    }
    case N_ACCENTS:
        for (size_t p = 0; p < len && rc == IT_OK; p += k)
            if (!it__uni_is_mark(cp_at(s, len, p, &k))) rc = tk_buf_add(&out, s + p, k);
        break;
    case N_PREPEND:
        if (!len) return IT_OK;
        rc = tk_buf_add(&out, n->lit, n->litlen);
        if (rc == IT_OK) rc = tk_buf_add(&out, s, len);
        break;
    case N_REPLACE: {
        spans v = {0};
        rc = len ? find_matches(n->pat, n->lit, n->litlen, NULL, s, len, &v) : IT_OK;
        for (size_t i = 0; i < v.n && rc == IT_OK; i++)
            rc = v.p[i].m ? tk_buf_add(&out, n->content, n->clen) : tk_buf_add(&out, s + v.p[i].a, v.p[i].b - v.p[i].a);
        free(v.p);
        break;
    }
    case N_PRECOMPILED:
        rc = tk_charsmap_apply(n->cm, s, len, &out, t->path, err);
        if (rc != IT_OK) {
            free(out.p);
            return rc;
        }
        break;
    }
    if (rc == IT_OK && !out.p) rc = tk_buf_add(&out, "", 0);
    if (rc != IT_OK) {
        free(out.p);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
    }
    free(io->p);
    *io = out;
    return IT_OK;
}

/* ============================================================================================ */
/* Added tokens                                                                                  */
/* ============================================================================================ */

/* The regex crate's \w (used for single_word): Alphabetic, marks, Nd, Pc and Join_Control. Taken here
 * as letters, marks, numbers other than No (the table, Unicode 15), Pc and ZWNJ / ZWJ. */
static const uint32_t NO_RANGES[][2] = {
    {0xB2, 0xB3},       {0xB9, 0xB9},       {0xBC, 0xBE},       {0x9F4, 0x9F9},     {0xB72, 0xB77},     {0xBF0, 0xBF2},
    {0xC78, 0xC7E},     {0xD58, 0xD5E},     {0xD70, 0xD78},     {0xF2A, 0xF33},     {0x1369, 0x137C},   {0x17F0, 0x17F9},
    {0x19DA, 0x19DA},   {0x2070, 0x2070},   {0x2074, 0x2079},   {0x2080, 0x2089},   {0x2150, 0x215F},   {0x2189, 0x2189},
    {0x2460, 0x249B},   {0x24EA, 0x24FF},   {0x2776, 0x2793},   {0x2CFD, 0x2CFD},   {0x3192, 0x3195},   {0x3220, 0x3229},
    {0x3248, 0x324F},   {0x3251, 0x325F},   {0x3280, 0x3289},   {0x32B1, 0x32BF},   {0xA830, 0xA835},   {0x10107, 0x10133},
    {0x10175, 0x10178}, {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10858, 0x1085F}, {0x10879, 0x1087F},
    {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B}, {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF},
    {0x10A40, 0x10A48}, {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F}, {0x10B78, 0x10B7F},
    {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB},
    {0x11052, 0x11065}, {0x111E1, 0x111F4}, {0x1173A, 0x1173B}, {0x118EA, 0x118F2}, {0x11C5A, 0x11C6C}, {0x11FC0, 0x11FD4},
    {0x16B5B, 0x16B61}, {0x16E80, 0x16E96}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378}, {0x1E8C7, 0x1E8CF}, {0x1EC71, 0x1ECAB},
    {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4}, {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}};

static int is_word_char(uint32_t c)
{
    if (is_l(c) || it__uni_is_mark(c) || c == '_' || c == 0x200C || c == 0x200D || c == 0x203F || c == 0x2040 ||
        c == 0x2054 || c == 0xFE33 || c == 0xFE34 || (c >= 0xFE4D && c <= 0xFE4F) || c == 0xFF3F)
        return 1;
    if (!is_n(c)) return 0;
    for (size_t i = 0; i < sizeof NO_RANGES / sizeof *NO_RANGES; i++)
        if (c >= NO_RANGES[i][0] && c <= NO_RANGES[i][1]) return 0;
    return 1;
}

/* The last code point before s[p] (p > 0). */
static uint32_t cp_before(const char *s, size_t len, size_t p, size_t *start)
{
    size_t q = p - 1, k;
    while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
    *start = q;
    return cp_at(s, len, q, &k);
}

/* AddedVocabulary::find_matches over one piece: cuts it at the added tokens of one pass
 * (normalized 0: the raw contents of tokens with normalized false; 1: the normalized contents of
 * the others) into out. */
static int added_split(const it_tokenizer *t, const piece *pc, int normalized, plist *out)
{
    const char *s = pc->s;
    size_t len = pc->len, start_off = 0, p = 0, k, st;
    int any = 0;
    for (size_t i = 0; i < t->nadded; i++) any |= t->added[i].normalized == normalized;
    if (!any) return plist_add(out, s, len, -1, pc->first);
    while (p < len) {
        const added *best = NULL;
        size_t blen = 0;
        for (size_t i = 0; i < t->nadded; i++) {
            const added *a = &t->added[i];
            const char *c = normalized ? a->norm : a->content;
            size_t cl = normalized ? a->normlen : a->len;
            if (a->normalized != normalized || !cl || cl <= blen || cl > len - p || memcmp(s + p, c, cl)) continue;
            best = a, blen = cl;
        }
        if (!best) {
            p++;
            continue;
        }
        size_t a = p, b = p + blen;
        p = b;
        if (best->single_word) {
            int sw = a == 0 || !is_word_char(cp_before(s, len, a, &st));
            int ew = b == len || !is_word_char(cp_at(s, len, b, &k));
            if (!sw || !ew) continue;
        }
        if (best->lstrip) {
            size_t q = a;
            while (q > 0 && is_s(cp_before(s, len, q, &st))) q = st;
            a = q > start_off ? q : start_off;
        }
        if (best->rstrip) b = run_end(s, len, b, is_s);
        if (start_off < a) TRY(plist_add(out, s + start_off, a - start_off, -1, pc->first && start_off == 0));
        TRY(plist_add(out, s + a, b - a, best->id, 0));
        start_off = b;
    }
    if (start_off < len) TRY(plist_add(out, s + start_off, len - start_off, -1, pc->first && start_off == 0));
    return IT_OK;
}

/* ============================================================================================ */
/* Pre-tokenizers                                                                                */
/* ============================================================================================ */

static uint32_t byte_char(unsigned char b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    /* the other 68 bytes, in order, from U+0100 */
    uint32_t n = b <= 0x20 ? b : b <= 0xA0 ? 0x21u + (b - 0x7Fu) : 0x21u + 0x22u;
    return 0x100 + n;
}

static int pretok_apply(const pretok *pt, plist *io)
{
    plist out = {0};
    int rc = IT_OK;
    if (pt->type == P_SEQ) {
        for (size_t i = 0; i < pt->nkids; i++) TRY(pretok_apply(&pt->kids[i], io));
        return IT_OK;
    }
    for (size_t i = 0; i < io->n && rc == IT_OK; i++) {
        piece *pc = &io->p[i];
        if (pc->id >= 0) {
            rc = plist_add(&out, pc->s, pc->len, pc->id, 0);
            continue;
        }
        spans v = {0};
        cpred f = {1, 0};
        tk_buf b = {0};
        switch (pt->type) {
        case P_BYTELEVEL: {
            piece tmp = *pc;
            if (pt->prefix_space && pc->s[0] != ' ') {
                if ((rc = tk_buf_add(&b, " ", 1)) || (rc = tk_buf_add(&b, pc->s, pc->len))) break;
                tmp.s = b.p, tmp.len = b.len;
            }
            plist words = {0};
            if (pt->use_regex) {
                rc = find_matches(PAT_GPT2, NULL, 0, NULL, tmp.s, tmp.len, &v);
                if (rc == IT_OK) rc = split_piece(&tmp, &v, B_ISOLATED, 0, &words);
            } else {
                rc = plist_add(&words, tmp.s, tmp.len, -1, tmp.first);
            }
            for (size_t w = 0; w < words.n && rc == IT_OK; w++) {
                tk_buf m = {0};
                for (size_t j = 0; j < words.p[w].len && rc == IT_OK; j++) {
                    char u[4];
                    rc = tk_buf_add(&m, u, it__utf8_put(byte_char((unsigned char)words.p[w].s[j]), u));
                }
                if (rc == IT_OK) rc = plist_add(&out, m.p, m.len, -1, words.p[w].first);
                free(m.p);
            }
            plist_free(&words);
            break;
        }
        case P_SPLIT:
            rc = find_matches(pt->pat, pt->lit, pt->litlen, NULL, pc->s, pc->len, &v);
            if (rc == IT_OK) rc = split_piece(pc, &v, pt->behavior, pt->invert, &out);
            break;
        case P_METASPACE: {
            char r[4];
            size_t rl = it__utf8_put(pt->rep, r), k;
            for (size_t p = 0; p < pc->len && rc == IT_OK; p += k) {
                uint32_t c = cp_at(pc->s, pc->len, p, &k);
                rc = c == ' ' ? tk_buf_add(&b, r, rl) : tk_buf_add(&b, pc->s + p, k);
            }
            if (rc != IT_OK) break;
            if ((pt->prepend == 0 || (pt->prepend == 1 && pc->first)) && !(b.len >= rl && !memcmp(b.p, r, rl))) {
                tk_buf c = {0};
                if ((rc = tk_buf_add(&c, r, rl)) || (rc = tk_buf_add(&c, b.p, b.len))) {
                    free(c.p);
                    break;
                }
                free(b.p);
                b = c;
            }
            piece tmp = {b.p, b.len, -1, pc->first};
            if (!pt->split) {
                rc = plist_add(&out, b.p, b.len, -1, pc->first);
                break;
            }
            f = (cpred){0, pt->rep};
            rc = find_matches(-1, NULL, 0, &f, b.p, b.len, &v);
            if (rc == IT_OK) rc = split_piece(&tmp, &v, B_NEXT, 0, &out);
            break;
        }
        case P_WSSPLIT:
        case P_DIGITS:
        case P_PUNCT: {
            int beh = B_REMOVED;
            if (pt->type == P_DIGITS) f.kind = 2, beh = pt->individual ? B_ISOLATED : B_CONTIGUOUS;
            if (pt->type == P_PUNCT) f.kind = 3, beh = pt->behavior;
            rc = find_matches(-1, NULL, 0, &f, pc->s, pc->len, &v);
            if (rc == IT_OK) rc = split_piece(pc, &v, beh, 0, &out);
            break;
        }
        }
        free(v.p);
        free(b.p);
    }
    if (rc != IT_OK) {
        plist_free(&out);
        return rc;
    }
    plist_free(io);
    *io = out;
    return IT_OK;
}

/* ============================================================================================ */
/* Encoding                                                                                      */
/* ============================================================================================ */

static int post_apply(const post *q, tk_ids *ids)
{
    if (q->type == Q_NOOP) return IT_OK;
    if (q->type == Q_SEQ) {
        for (size_t i = 0; i < q->nkids; i++) TRY(post_apply(&q->kids[i], ids));
        return IT_OK;
    }
    tk_ids out = {0};
    for (size_t i = 0; i < q->nitems; i++) {
        int rc = IT_OK;
        if (q->items[i] >= 0) rc = tk_ids_add(&out, q->items[i]);
        else
            for (size_t j = 0; j < ids->len && rc == IT_OK; j++) rc = tk_ids_add(&out, ids->p[j]);
        if (rc != IT_OK) {
            free(out.p);
            return rc;
        }
    }
    free(ids->p);
    *ids = out;
    return IT_OK;
}

int it_tokenizer_encode(const it_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids, size_t *n,
                        it_err *err)
{
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!t || !ids || !n || (!text && len)) return it__fail(err, IT_EINVAL, "it_tokenizer_encode: a NULL argument");
    if (!it__utf8_valid(text, len)) return it__fail(err, IT_EINVAL, "%s: the text is not valid UTF-8", t->path);
    plist a = {0}, b = {0};
    tk_ids out = {0};
    piece whole = {(char *)(text ? text : ""), len, -1, 1};
    int rc = added_split(t, &whole, 0, &a);
    for (size_t i = 0; i < a.n && rc == IT_OK; i++) {
        if (a.p[i].id >= 0) {
            rc = plist_add(&b, a.p[i].s, a.p[i].len, a.p[i].id, 0);
            continue;
        }
        tk_buf nb = {0};
        rc = tk_buf_add(&nb, a.p[i].s, a.p[i].len);
        if (rc == IT_OK && t->norm) {
            rc = norm_apply(t, t->norm, &nb, err);
            if (rc != IT_OK) {
                free(nb.p);
                plist_free(&a), plist_free(&b);
                return rc;
            }
        }
        piece np = {nb.p, nb.len, -1, a.p[i].first};
        if (rc == IT_OK) rc = added_split(t, &np, 1, &b);
        free(nb.p);
    }
    plist_free(&a);
    if (rc == IT_OK && t->pre) rc = pretok_apply(t->pre, &b);
    if (rc != IT_OK) {
        plist_free(&b);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
    }
    for (size_t i = 0; i < b.n && rc == IT_OK; i++) {
        if (b.p[i].id >= 0) {
            if (tk_ids_add(&out, b.p[i].id)) rc = it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
        } else {
            rc = tk_model_encode(t->model, b.p[i].s, b.p[i].len, &out, t->path, err);
        }
    }
    plist_free(&b);
    if (rc == IT_OK && add_special && t->post && post_apply(t->post, &out))
        rc = it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
    if (rc != IT_OK) {
        free(out.p);
        return rc;
    }
    if (!out.len) free(out.p), out.p = NULL;
    *ids = out.p;
    *n = out.len;
    return IT_OK;
}

int32_t it_tokenizer_token_id(const it_tokenizer *t, const char *token)
{
    if (!t || !token) return -1;
    size_t len = strlen(token);
    int32_t id = tk_map_get(&t->added_ids, token, len);
    return id >= 0 ? id : tk_model_token_id(t->model, token, len);
}

/* ============================================================================================ */
/* Loading                                                                                       */
/* ============================================================================================ */

typedef struct rd {
    const char *path;
    it_err *err;
} rd;

/* "type" of a component object, into a short printable name for messages. */
static const char *comp_type(const it_json *v)
{
    const it_json *ty = it_json_get(v, "type");
    return ty && ty->type == IT_JSON_STR ? ty->s : NULL;
}

static int bad(const rd *r, const char *where, const char *what)
{
    return it__fail(r->err, IT_EFORMAT, "%s: %s: %s", r->path, where, what);
}

static int unsupported(const rd *r, const char *where, const char *type)
{
    return it__fail(r->err, IT_EUNSUPPORTED, "%s: %s of type \"%.60s\" is not supported", r->path, where, type);
}

static int get_bool(const rd *r, const it_json *o, const char *key, int dflt, int *out, const char *where)
{
    const it_json *v = it_json_get(o, key);
    *out = dflt;
    if (!v || v->type == IT_JSON_NULL) return IT_OK;
    if (v->type != IT_JSON_TRUE && v->type != IT_JSON_FALSE) {
        char w[128];
        snprintf(w, sizeof w, "%s.%s", where, key);
        return bad(r, w, "expected true or false");
    }
    *out = v->type == IT_JSON_TRUE;
    return IT_OK;
}

static int get_str(const rd *r, const it_json *o, const char *key, const it_json **out, const char *where)
{
    *out = it_json_get(o, key);
    if (*out && (*out)->type == IT_JSON_STR) return IT_OK;
    char w[128];
    snprintf(w, sizeof w, "%s.%s", where, key);
    return bad(r, w, "expected a string");
}

static char *dup(const char *s, size_t n)
{
    return it__strndup(s, n);
}

/* A pattern {"String": s} or {"Regex": r}: *pat, and the literal. */
static int read_pattern(const rd *r, const it_json *o, const char *where, int for_split, int *pat, char **lit,
                        size_t *litlen)
{
    const it_json *p = it_json_get(o, "pattern");
    const it_json *str = it_json_get(p, "String"), *re = it_json_get(p, "Regex");
    *lit = NULL, *litlen = 0;
    if (str && str->type == IT_JSON_STR) {
        *pat = PAT_LITERAL;
        if (!(*lit = dup(str->s, str->len))) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        *litlen = str->len;
        return IT_OK;
    }
    if (!re || re->type != IT_JSON_STR) return bad(r, where, "pattern: expected {\"String\": ...} or {\"Regex\": ...}");
    static const struct {
        const char *rx;
        int pat, split;
    } known[] = {{RX_GPT2, PAT_GPT2, 1},   {RX_LLAMA3, PAT_LLAMA3, 1}, {RX_QWEN2, PAT_QWEN2, 1},
                 {RX_CLIP, PAT_CLIP, 1},   {"\\s+", PAT_SPACES, 0},    {"\\s", PAT_SPACE, 0},
                 {" {2,}", PAT_2SPACES, 0}, {" +", PAT_BLANKS, 0}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (known[i].split == for_split && strlen(known[i].rx) == re->len && !memcmp(known[i].rx, re->s, re->len)) {
            *pat = known[i].pat;
            return IT_OK;
        }
    return it__fail(r->err, IT_EUNSUPPORTED, "%s: %s: the regex \"%.200s\" is not one of the patterns supported", r->path,
                    where, re->s);
}

static int load_norm(const rd *r, const it_json *v, norm *n, int depth)
{
    const char *ty = comp_type(v);
    if (!ty) return bad(r, "normalizer", "expected an object with a \"type\"");
    static const char *const simple[] = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(ty, simple[i])) return (n->type = N_NFC + i), IT_OK;
    if (!strcmp(ty, "StripAccents")) return (n->type = N_ACCENTS), IT_OK;
    if (!strcmp(ty, "Strip")) {
        n->type = N_STRIP;
        TRY(get_bool(r, v, "strip_left", 0, &n->left, "normalizer"));
        return get_bool(r, v, "strip_right", 0, &n->right, "normalizer");
    }
    if (!strcmp(ty, "Prepend")) {
        const it_json *s;
        n->type = N_PREPEND;
        TRY(get_str(r, v, "prepend", &s, "normalizer"));
        if (!(n->lit = dup(s->s, s->len))) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        n->litlen = s->len;
        return IT_OK;
    }
    if (!strcmp(ty, "Replace")) {
        const it_json *c;
        n->type = N_REPLACE;
        TRY(get_str(r, v, "content", &c, "normalizer"));
        if (!(n->content = dup(c->s, c->len))) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        n->clen = c->len;
        return read_pattern(r, v, "normalizer Replace", 0, &n->pat, &n->lit, &n->litlen);
    }
    if (!strcmp(ty, "Precompiled")) {
        const it_json *c;
        n->type = N_PRECOMPILED;
        TRY(get_str(r, v, "precompiled_charsmap", &c, "normalizer"));
        return tk_charsmap_load(&n->cm, c->s, c->len, r->path, r->err);
    }
    if (!strcmp(ty, "Sequence")) {
        const it_json *l = it_json_get(v, "normalizers");
        n->type = N_SEQ;
        if (!l || l->type != IT_JSON_ARR) return bad(r, "normalizer Sequence", "normalizers: expected an array");
        if (l->n && !(n->kids = it__calloc(l->n, sizeof *n->kids)))
            return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        n->nkids = l->n; /* all of them, so that a failure part way frees what the earlier ones hold */
        for (size_t i = 0; i < l->n; i++) TRY(load_norm(r, &l->items[i], &n->kids[i], depth + 1));
        return IT_OK;
    }
    return unsupported(r, "normalizer", ty);
}

static int load_pretok(const rd *r, const it_json *v, pretok *p)
{
    const char *ty = comp_type(v);
    if (!ty) return bad(r, "pre_tokenizer", "expected an object with a \"type\"");
    if (!strcmp(ty, "ByteLevel")) {
        p->type = P_BYTELEVEL;
        TRY(get_bool(r, v, "add_prefix_space", 1, &p->prefix_space, "pre_tokenizer ByteLevel"));
        return get_bool(r, v, "use_regex", 1, &p->use_regex, "pre_tokenizer ByteLevel");
    }
    if (!strcmp(ty, "WhitespaceSplit")) return (p->type = P_WSSPLIT), IT_OK;
    if (!strcmp(ty, "Digits")) {
        p->type = P_DIGITS;
        return get_bool(r, v, "individual_digits", 0, &p->individual, "pre_tokenizer Digits");
    }
    if (!strcmp(ty, "Split") || !strcmp(ty, "Punctuation")) {
        static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        const it_json *b = it_json_get(v, "behavior");
        p->type = ty[0] == 'S' ? P_SPLIT : P_PUNCT;
        p->behavior = -1;
        if (!b && p->type == P_PUNCT) p->behavior = B_ISOLATED;
        for (int i = 0; i < 5 && b && b->type == IT_JSON_STR; i++)
            if (!strcmp(b->s, names[i])) p->behavior = i;
        if (p->behavior < 0) return bad(r, "pre_tokenizer", "behavior: expected Removed, Isolated, MergedWithPrevious, "
                                                            "MergedWithNext or Contiguous");
        if (p->type == P_PUNCT) return IT_OK;
        TRY(get_bool(r, v, "invert", 0, &p->invert, "pre_tokenizer Split"));
        return read_pattern(r, v, "pre_tokenizer Split", 1, &p->pat, &p->lit, &p->litlen);
    }
    if (!strcmp(ty, "Metaspace")) {
        const it_json *rep, *ps = it_json_get(v, "prepend_scheme");
        p->type = P_METASPACE;
        TRY(get_str(r, v, "replacement", &rep, "pre_tokenizer Metaspace"));
        size_t k = it__utf8_get(rep->s, rep->len, &p->rep);
        if (!k || k != rep->len) return bad(r, "pre_tokenizer Metaspace", "replacement: expected one character");
        TRY(get_bool(r, v, "split", 1, &p->split, "pre_tokenizer Metaspace"));
        if (ps && ps->type == IT_JSON_STR) {
            if (!strcmp(ps->s, "always")) p->prepend = 0;
            else if (!strcmp(ps->s, "first")) p->prepend = 1;
            else if (!strcmp(ps->s, "never")) p->prepend = 2;
            else return bad(r, "pre_tokenizer Metaspace", "prepend_scheme: expected always, first or never");
        } else if (ps && ps->type != IT_JSON_NULL) {
            return bad(r, "pre_tokenizer Metaspace", "prepend_scheme: expected a string");
        } else {
            int aps;
            TRY(get_bool(r, v, "add_prefix_space", 1, &aps, "pre_tokenizer Metaspace"));
            p->prepend = aps ? 0 : 2;
        }
        return IT_OK;
    }
    if (!strcmp(ty, "Sequence")) {
        const it_json *l = it_json_get(v, "pretokenizers");
        p->type = P_SEQ;
        if (!l || l->type != IT_JSON_ARR) return bad(r, "pre_tokenizer Sequence", "pretokenizers: expected an array");
        if (l->n && !(p->kids = it__calloc(l->n, sizeof *p->kids)))
            return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        p->nkids = l->n; /* as for normalizers: freed whole on failure */
        for (size_t i = 0; i < l->n; i++) TRY(load_pretok(r, &l->items[i], &p->kids[i]));
        return IT_OK;
    }
    return unsupported(r, "pre_tokenizer", ty);
}

/* An id in [0, INT32_MAX]. */
static int read_id(const rd *r, const it_json *v, const char *where, int32_t *out)
{
    if (!v || v->type != IT_JSON_INT || !v->i_ok || v->i < 0 || v->i > INT32_MAX)
        return bad(r, where, "expected a token id, an integer in [0, 2147483647]");
    *out = (int32_t)v->i;
    return IT_OK;
}

/* ["token", id] of Roberta/BertProcessing. */
static int read_pair(const rd *r, const it_json *v, const char *key, int32_t *out)
{
    const it_json *p = it_json_get(v, key);
    char w[64];
    snprintf(w, sizeof w, "post_processor.%s", key);
    if (!p || p->type != IT_JSON_ARR || p->n != 2 || p->items[0].type != IT_JSON_STR)
        return bad(r, w, "expected [\"token\", id]");
    return read_id(r, &p->items[1], w, out);
}

/* TemplateProcessing's "single": the special tokens' ids and -1 for the sequence $A. */
static int template_items(const rd *r, const it_json *v, tk_ids *items)
{
    const it_json *single = it_json_get(v, "single"), *sp = it_json_get(v, "special_tokens");
    if (!single || single->type != IT_JSON_ARR) return bad(r, "post_processor.single", "expected an array");
    if (sp && sp->type != IT_JSON_OBJ && sp->type != IT_JSON_NULL)
        return bad(r, "post_processor.special_tokens", "expected an object");
    for (size_t i = 0; i < single->n; i++) {
        const it_json *it = &single->items[i], *seq = it_json_get(it, "Sequence"), *tok = it_json_get(it, "SpecialToken");
        const it_json *id = it_json_get(seq ? seq : tok, "id");
        char w[64];
        snprintf(w, sizeof w, "post_processor.single[%zu]", i);
        if ((!seq && !tok) || !id || id->type != IT_JSON_STR)
            return bad(r, w, "expected {\"Sequence\": {\"id\": ...}} or {\"SpecialToken\": {\"id\": ...}}");
        if (seq) {
            if (strcmp(id->s, "A"))
                return it__fail(r->err, IT_EUNSUPPORTED, "%s: %s: a single template can only hold the sequence A",
                                r->path, w);
            if (tk_ids_add(items, -1)) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
            continue;
        }
        const it_json *st = it_json_get(it_json_get(sp, id->s), "ids");
        if (!st || st->type != IT_JSON_ARR)
            return it__fail(r->err, IT_EFORMAT, "%s: %s: the special token \"%.100s\" has no ids in special_tokens",
                            r->path, w, id->s);
        for (size_t j = 0; j < st->n; j++) {
            int32_t x = 0;
            TRY(read_id(r, &st->items[j], "post_processor.special_tokens", &x));
            if (tk_ids_add(items, x)) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        }
    }
    return IT_OK;
}

static int load_post(const rd *r, const it_json *v, post *q)
{
    const char *ty = comp_type(v);
    if (!ty) return bad(r, "post_processor", "expected an object with a \"type\"");
    if (!strcmp(ty, "ByteLevel")) return (q->type = Q_NOOP), IT_OK;
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        q->type = Q_ITEMS;
        if (!(q->items = malloc(3 * sizeof *q->items))) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        q->nitems = 3;
        q->items[1] = -1;
        TRY(read_pair(r, v, "cls", &q->items[0]));
        return read_pair(r, v, "sep", &q->items[2]);
    }
    if (!strcmp(ty, "TemplateProcessing")) {
        q->type = Q_ITEMS;
        tk_ids items = {0};
        int rc = template_items(r, v, &items);
        q->items = items.p;
        q->nitems = items.len;
        return rc;
    }
    if (!strcmp(ty, "Sequence")) {
        const it_json *l = it_json_get(v, "processors");
        q->type = Q_SEQ;
        if (!l || l->type != IT_JSON_ARR) return bad(r, "post_processor Sequence", "processors: expected an array");
        if (l->n && !(q->kids = it__calloc(l->n, sizeof *q->kids)))
            return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        q->nkids = l->n; /* as for normalizers: freed whole on failure */
        for (size_t i = 0; i < l->n; i++) TRY(load_post(r, &l->items[i], &q->kids[i]));
        return IT_OK;
    }
    return unsupported(r, "post_processor", ty);
}

/* added_tokens: ids as AddedVocabulary::add_tokens gives them; an empty or repeated content is
 * skipped. Run after the model and the normalizer are loaded (normalized contents). */
static int load_added(it_tokenizer *t, const rd *r, const it_json *list)
{
    if (!list || list->type == IT_JSON_NULL) return IT_OK;
    if (list->type != IT_JSON_ARR) return bad(r, "added_tokens", "expected an array");
    if (list->n && !(t->added = it__calloc(list->n, sizeof *t->added)))
        return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
    size_t vsize = tk_model_vocab_size(t->model);
    int64_t max = -1;
    for (size_t i = 0; i < list->n; i++) {
        const it_json *o = &list->items[i], *c = it_json_get(o, "content");
        char w[64];
        int32_t fid = 0;
        snprintf(w, sizeof w, "added_tokens[%zu]", i);
        if (o->type != IT_JSON_OBJ || !c || c->type != IT_JSON_STR) return bad(r, w, "expected an object with a content");
        TRY(read_id(r, it_json_get(o, "id"), w, &fid));
        added a = {0};
        TRY(get_bool(r, o, "single_word", 0, &a.single_word, w));
        TRY(get_bool(r, o, "lstrip", 0, &a.lstrip, w));
        TRY(get_bool(r, o, "rstrip", 0, &a.rstrip, w));
        TRY(get_bool(r, o, "normalized", 1, &a.normalized, w));
        if (!c->len || tk_map_get(&t->added_ids, c->s, c->len) >= 0) continue;
        int32_t id = tk_model_token_id(t->model, c->s, c->len);
        if (id < 0) {
            int64_t next = max < 0 ? (int64_t)vsize : (max >= (int64_t)vsize || vsize == 0) ? max + 1 : (int64_t)vsize;
            if (next > INT32_MAX) return bad(r, w, "the token's id would pass 2147483647");
            id = (int32_t)next;
        }
        if (id > max) max = id;
        a.id = id;
        a.len = c->len;
        if (!(a.content = dup(c->s, c->len))) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        t->added[t->nadded++] = a;
        if (tk_map_put(&t->added_ids, c->s, c->len, id)) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
        if (a.normalized) {
            tk_buf b = {0};
            if (tk_buf_add(&b, c->s, c->len)) return it__fail(r->err, IT_ENOMEM, "%s: out of memory", r->path);
            int rc = t->norm ? norm_apply(t, t->norm, &b, r->err) : IT_OK;
            if (rc != IT_OK) {
                free(b.p);
                return rc;
            }
            t->added[t->nadded - 1].norm = b.p;
            t->added[t->nadded - 1].normlen = b.len;
        }
    }
    return IT_OK;
}

/* A component member: NULL when null or absent; else it must be an object. */
static int component(const rd *r, const it_json *root, const char *key, const it_json **out)
{
    *out = it_json_get(root, key);
    if (*out && (*out)->type == IT_JSON_NULL) *out = NULL;
    if (*out && (*out)->type != IT_JSON_OBJ) return bad(r, key, "expected an object or null");
    return IT_OK;
}

static int load_all(it_tokenizer *t, const it_json *root, it_err *err)
{
    rd r = {t->path, err};
    const it_json *v;
    if (root->type != IT_JSON_OBJ) return bad(&r, "the top level", "expected a JSON object");
    TRY(tk_model_load(&t->model, it_json_get(root, "model"), t->path, err));
    TRY(component(&r, root, "normalizer", &v));
    if (v) {
        if (!(t->norm = calloc(1, sizeof *t->norm))) return it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
        TRY(load_norm(&r, v, t->norm, 0));
    }
    TRY(component(&r, root, "pre_tokenizer", &v));
    if (v) {
        if (!(t->pre = calloc(1, sizeof *t->pre))) return it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
        TRY(load_pretok(&r, v, t->pre));
    }
    TRY(component(&r, root, "post_processor", &v));
    if (v) {
        if (!(t->post = calloc(1, sizeof *t->post))) return it__fail(err, IT_ENOMEM, "%s: out of memory", t->path);
        TRY(load_post(&r, v, t->post));
    }
    return load_added(t, &r, it_json_get(root, "added_tokens"));
}

/* The tokenizer in text; t->path names it in messages. */
static int parse_into(it_tokenizer *t, const char *text, size_t len, it_err *err)
{
    it_json_doc *doc = NULL;
    int rc = it_json_parse(&doc, text, len, 0, err);
    if (rc != IT_OK) it__err_prefix(err, t->path);
    if (rc == IT_OK) rc = load_all(t, it_json_root(doc), err);
    it_json_free(doc);
    return rc;
}

/* A fresh tokenizer named path (a copy is kept for messages), or NULL. */
static it_tokenizer *tokenizer_new(char *path)
{
    it_tokenizer *t = path ? calloc(1, sizeof *t) : NULL;
    if (t) t->path = path;
    else free(path);
    return t;
}

int it_tokenizer_load(it_tokenizer **out, const char *dir, it_err *err)
{
    if (!out || !dir) return it__fail(err, IT_EINVAL, "it_tokenizer_load: a NULL argument");
    *out = NULL;
    it_tokenizer *t = tokenizer_new(it__is_dir(dir) ? it__path_join(dir, "tokenizer.json") : it__strdup(dir));
    if (!t) return it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    char *text = NULL;
    size_t len = 0;
    int rc = it__read_file(t->path, TOKENIZER_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK) rc = parse_into(t, text, len, err);
    free(text);
    if (rc != IT_OK) {
        it_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return IT_OK;
}

int it_tokenizer_parse(it_tokenizer **out, const char *name, const char *text, size_t len, it_err *err)
{
    if (!out || !name || (!text && len)) return it__fail(err, IT_EINVAL, "it_tokenizer_parse: a NULL argument");
    *out = NULL;
    it_tokenizer *t = tokenizer_new(it__strdup(name));
    if (!t) return it__fail(err, IT_ENOMEM, "%s: out of memory", name);
    int rc = parse_into(t, text, len, err);
    if (rc != IT_OK) {
        it_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return IT_OK;
}

int it_tokenizer_for_model(it_tokenizer **out, const it_model *m, it_err *err)
{
    *out = NULL;
    int pipeline = !strcmp(it_model_config(m)->model_type, "stable-diffusion");
    char *dir = pipeline ? it__path_join(it_model_dir(m), "tokenizer") : it__strdup(it_model_dir(m));
    char *file = dir ? it__path_join(dir, "tokenizer.json") : NULL;
    if (!file) {
        free(dir);
        return it__fail(err, IT_ENOMEM, "out of memory");
    }
    int rc = IT_OK;
    if (!it__exists(file))
        rc = it__fail(err, IT_ENOTFOUND, "%s: not found: \"text\" samples need the model's tokenizer.json (the slow "
                      "tokenizers' vocab.json / merges.txt / spiece.model are not read); give \"input_ids\"", file);
    if (rc == IT_OK) rc = it_tokenizer_load(out, file, err);
    free(dir), free(file);
    return rc;
}
