/* unicode.c -- the Unicode properties the tokenizers need: the \p{L} \p{N} \p{P} \s classes,
 * marks and control characters, lowercase mapping, and the four normalization forms (UAX #15).
 *
 * The tables (unicode_tables.h) are written by
 * test/gen_unicode.py from Python's unicodedata (the Unicode version is named there; rerun it to
 * update them, and `test/gen_unicode.py --check` to compare every code point with Python).
 *
 * Classes: letter = Lu Ll Lt Lm Lo, number = Nd Nl No, punctuation = Pc Pd Ps Pe Pi Pf Po,
 * mark = Mn Mc Me, control = Cc Cf (not Cs, Co or unassigned Cn), space = the White_Space
 * property (what Oniguruma and the Rust regex crate call \s; Python's str.isspace differs).
 *
 * Normalization: the text is decoded (strict UTF-8) into code points, each replaced by its full
 * canonical (NFC, NFD) or compatibility (NFKC, NFKD) decomposition (Hangul syllables
 * algorithmically); every run of non-starters is sorted stably by canonical combining class; for
 * NFC and NFKC the canonical composition algorithm then joins each character that is not blocked
 * from the last starter with it when the pair has a primary composite (again Hangul by formula).
 * The working buffer holds cp | ccc << 24 per character, so the classes are looked up once. */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

typedef struct uni_case_run {
    uint32_t lo, hi, stride;
    int32_t delta; /* cp in [lo, hi] with (cp - lo) % stride == 0 maps to cp + delta */
} uni_case_run;
typedef struct uni_case_multi {
    uint32_t cp, n, out[3];
} uni_case_multi;
typedef struct uni_dec_run {
    uint32_t lo, hi;
    int32_t delta; /* cp in [lo, hi] has the compatibility decomposition cp + delta */
} uni_dec_run;
typedef struct uni_ccc_range {
    uint32_t lo, hi, ccc;
} uni_ccc_range;
typedef struct uni_pair {
    uint32_t a, b, c;
} uni_pair;

#include "unicode_tables.h" /* the generated tables */

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Hangul syllables (Unicode 3.12 "Conjoining Jamo Behavior"). */
enum {
    SBASE = 0xAC00,
    LBASE = 0x1100,
    VBASE = 0x1161,
    TBASE = 0x11A7,
    LCOUNT = 19,
    VCOUNT = 21,
    TCOUNT = 28,
    NCOUNT = VCOUNT * TCOUNT,
    SCOUNT = LCOUNT * NCOUNT
};

/* ============================================================================================ */
/* Properties                                                                                    */
/* ============================================================================================ */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int it__uni_is_letter(uint32_t cp)
{
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(uni_letter, NELEM(uni_letter), cp);
}

int it__uni_is_number(uint32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return in_ranges(uni_number, NELEM(uni_number), cp);
}

int it__uni_is_space(uint32_t cp) { return in_ranges(uni_space, NELEM(uni_space), cp); }
int it__uni_is_punct(uint32_t cp) { return in_ranges(uni_punct, NELEM(uni_punct), cp); }
int it__uni_is_mark(uint32_t cp) { return in_ranges(uni_mark, NELEM(uni_mark), cp); }
int it__uni_is_control(uint32_t cp) { return in_ranges(uni_control, NELEM(uni_control), cp); }

size_t it__uni_lower(uint32_t cp, uint32_t out[3])
{
    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    size_t lo = 0, hi = NELEM(uni_lower_runs);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uni_case_run *r = &uni_lower_runs[mid];
        if (cp < r->lo) {
            hi = mid;
        } else if (cp > r->hi) {
            lo = mid + 1;
        } else {
            if ((cp - r->lo) % r->stride == 0) {
                out[0] = (uint32_t)((int32_t)cp + r->delta);
                return 1;
            }
            break;
        }
    }
    for (size_t i = 0; i < NELEM(uni_lower_multi); i++) {
        if (uni_lower_multi[i].cp == cp) {
            for (uint32_t k = 0; k < uni_lower_multi[i].n; k++) out[k] = uni_lower_multi[i].out[k];
            return uni_lower_multi[i].n;
        }
    }
    out[0] = cp;
    return 1;
}

/* ============================================================================================ */
/* Normalization data                                                                            */
/* ============================================================================================ */

static uint32_t ccc_of(uint32_t cp)
{
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = NELEM(uni_ccc);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < uni_ccc[mid].lo) hi = mid;
        else if (cp > uni_ccc[mid].hi) lo = mid + 1;
        else return uni_ccc[mid].ccc;
    }
    return 0;
}

/* The full decomposition of cp (not Hangul) from the tables: its length and *d (which may point
 * to *one), or 0 if cp decomposes to itself. */
static size_t decomp_of(uint32_t cp, int compat, const uint32_t **d, uint32_t *one)
{
    if (cp < 0xA0) return 0;
    size_t lo = 0, hi = NELEM(uni_dec_off);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uint32_t *e = &uni_dec_data[uni_dec_off[mid]];
        uint32_t key = e[0] & 0x1FFFFF;
        if (cp < key) {
            hi = mid;
        } else if (cp > key) {
            lo = mid + 1;
        } else {
            size_t nc = (e[0] >> 21) & 7, nk = (e[0] >> 24) & 31;
            if (compat && nk) {
                *d = e + 1 + nc;
                return nk;
            }
            *d = e + 1;
            return nc;
        }
    }
    if (!compat) return 0;
    lo = 0, hi = NELEM(uni_dec_runs);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uni_dec_run *r = &uni_dec_runs[mid];
        if (cp < r->lo) {
            hi = mid;
        } else if (cp > r->hi) {
            lo = mid + 1;
        } else {
            *one = (uint32_t)((int32_t)cp + r->delta);
            *d = one;
            return 1;
        }
    }
    return 0;
}

/* The primary composite of (a, b), or 0 if none. */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a - LBASE < LCOUNT && b - VBASE < VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a - SBASE < SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = NELEM(uni_comp);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uni_pair *p = &uni_comp[mid];
        if (a < p->a || (a == p->a && b < p->b)) hi = mid;
        else if (a > p->a || b > p->b) lo = mid + 1;
        else return p->c;
    }
    return 0;
}

/* ============================================================================================ */
/* Normalization                                                                                 */
/* ============================================================================================ */

typedef struct ubuf {
    uint32_t *v; /* cp | ccc << 24 */
    size_t n, cap;
} ubuf;

static int ubuf_push(ubuf *b, uint32_t cp)
{
    if (b->n == b->cap) {
        if (b->cap > SIZE_MAX / (2 * sizeof *b->v)) return -1;
        size_t cap = b->cap ? 2 * b->cap : 64;
        uint32_t *nv = realloc(b->v, cap * sizeof *nv);
        if (!nv) return -1;
        b->v = nv;
        b->cap = cap;
    }
    b->v[b->n++] = cp | ccc_of(cp) << 24;
    return 0;
}

static int decompose(ubuf *b, uint32_t cp, int compat)
{
    if (cp - SBASE < SCOUNT) {
        uint32_t s = cp - SBASE, t = s % TCOUNT;
        if (ubuf_push(b, LBASE + s / NCOUNT) || ubuf_push(b, VBASE + (s % NCOUNT) / TCOUNT))
            return -1;
        return t ? ubuf_push(b, TBASE + t) : 0;
    }
    const uint32_t *d;
    uint32_t one;
    size_t n = decomp_of(cp, compat, &d, &one);
    if (!n) return ubuf_push(b, cp);
    for (size_t i = 0; i < n; i++)
        if (ubuf_push(b, d[i])) return -1;
    return 0;
}

/* Canonical ordering: sorts each run of non-starters stably by class -- insertion sort for short
 * runs, a counting sort through tmp (room for b->n entries, allocated on first need) for long
 * ones, so that a long run of marks costs linear time. */
static int canonical_order(ubuf *b, uint32_t **tmp)
{
    uint32_t *v = b->v;
    size_t i = 0, n = b->n;
    while (i < n) {
        if (!(v[i] >> 24)) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && (v[j] >> 24)) j++;
        if (j - i <= 32) {
            for (size_t k = i + 1; k < j; k++) {
                uint32_t x = v[k];
                size_t m = k;
                while (m > i && (v[m - 1] >> 24) > (x >> 24)) {
                    v[m] = v[m - 1];
                    m--;
                }
                v[m] = x;
            }
        } else {
            if (!*tmp && !(*tmp = malloc(n * sizeof **tmp))) return -1;
            size_t start[257] = {0};
            for (size_t k = i; k < j; k++) start[(v[k] >> 24) + 1]++;
            for (size_t c = 1; c < 257; c++) start[c] += start[c - 1];
            for (size_t k = i; k < j; k++) (*tmp)[start[v[k] >> 24]++] = v[k];
            memcpy(v + i, *tmp, (j - i) * sizeof *v);
        }
        i = j;
    }
    return 0;
}

/* Canonical composition (UAX #15): a character C is blocked from the last starter S when some
 * character between them has class 0 or a class >= C's; an unblocked C that has a primary
 * composite with S replaces S and is dropped. */
static void canonical_compose(ubuf *b)
{
    uint32_t *v = b->v;
    size_t out = 0, starter = SIZE_MAX;
    uint32_t last_cc = 0;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t x = v[i], cp = x & 0xFFFFFF, cc = x >> 24;
        if (starter != SIZE_MAX && (out == starter + 1 || last_cc < cc)) {
            uint32_t c = compose(v[starter] & 0xFFFFFF, cp);
            if (c) {
                v[starter] = c | ccc_of(c) << 24;
                continue;
            }
        }
        if (cc == 0) starter = out;
        last_cc = cc;
        v[out++] = x;
    }
    b->n = out;
}

int it__uni_normalize(const char *form, const char *in, size_t len, char **out, size_t *outlen)
{
    int compat, comp;
    if (!form || !out || !outlen || (!in && len)) return -1;
    if (!strcmp(form, "NFC")) compat = 0, comp = 1;
    else if (!strcmp(form, "NFD")) compat = 0, comp = 0;
    else if (!strcmp(form, "NFKC")) compat = 1, comp = 1;
    else if (!strcmp(form, "NFKD")) compat = 1, comp = 0;
    else return -1;

    /* Validate first, so that invalid input is -1 whatever the memory. */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = it__utf8_get(in + i, len - i, &cp);
        if (!k) return -1;
        i += k;
    }

    ubuf b = {NULL, 0, 0};
    uint32_t *tmp = NULL;
    int rc = -2;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        i += it__utf8_get(in + i, len - i, &cp);
        if (decompose(&b, cp, compat)) goto done;
    }
    if (canonical_order(&b, &tmp)) goto done;
    if (comp) canonical_compose(&b);

    size_t size = 0;
    for (size_t i = 0; i < b.n; i++) {
        uint32_t cp = b.v[i] & 0xFFFFFF;
        size += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    }
    char *o = malloc(size + 1);
    if (!o) goto done;
    size_t m = 0;
    for (size_t i = 0; i < b.n; i++) m += it__utf8_put(b.v[i] & 0xFFFFFF, o + m);
    o[m] = 0;
    *out = o;
    *outlen = m;
    rc = 0;
done:
    free(b.v);
    free(tmp);
    return rc;
}

/* ============================================================================================ */
/* UTF-8                                                                                         */
/* ============================================================================================ */

size_t it__utf8_get(const char *s, size_t len, uint32_t *cp)
{
    if (!len) return 0;
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c = u[0], v, min;
    size_t n;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xC2) return 0; /* a continuation byte, or an overlong two-byte lead */
    if (c < 0xE0) n = 2, v = c & 0x1F, min = 0x80;
    else if (c < 0xF0) n = 3, v = c & 0x0F, min = 0x800;
    else if (c < 0xF5) n = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if (len < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((u[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (u[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

/* A code point past U+10FFFF or a surrogate, which UTF-8 cannot carry, is written as U+FFFD. */
size_t it__utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
