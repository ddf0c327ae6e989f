/* json.c -- a strict RFC 8259 JSON parser (the contract is in the JSON section of iteris.h).
 *
 * Recursive descent over the bytes, one function per grammar rule. Recursion is bounded by
 * IT_JSON_MAX_DEPTH, so the C stack holds at most 128 nested containers whatever the input.
 *
 * Memory: every node, string and array of a document lives in one arena of large blocks owned by
 * the it_json_doc. The children of a container, whose count is unknown until it closes, wait on a
 * growable scratch stack and are copied into the arena in one piece when it closes (nested
 * containers have already popped their own children by then).
 *
 * Strings are read twice: a scan validates them (UTF-8, escapes, control characters) and measures
 * the decoded length, then a copy (or, with escapes, a decode) fills an arena buffer of exactly that
 * length. Numbers are checked against the RFC grammar here and converted by strtod.
 *
 * References: RFC 8259 sections 2-8 (grammar), Unicode 15 section 3.9, Table 3-7 (well-formed
 * UTF-8), serde_json's number classification (u64, then i64, then f64).
 */
#include "internal.h"

#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================ */
/* Arena                                                                                         */
/* ============================================================================================ */

/* One arena block: a header, then cap bytes of data aligned for any type. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

#define ARENA_FIRST ((size_t)4096)       /* data bytes of the first block */
#define ARENA_MAX_STEP ((size_t)1 << 22) /* ordinary blocks double up to 4 MiB */

struct it_json_doc {
    arena_block *head; /* the block being filled; full and dedicated blocks follow it */
    size_t next_cap;   /* data bytes of the next ordinary block */
    it_json root;
};

static arena_block *block_new(size_t cap)
{
    size_t bytes;
    if (it__add_size(sizeof(arena_block), cap, &bytes)) return NULL;
    arena_block *b = malloc(bytes);
    if (!b) return NULL;
    b->next = NULL;
    b->used = 0;
    b->cap = cap;
    return b;
}

/* The slow path of arena_alloc. A large request gets a block of its own, linked behind the
 * current one so that the current one's free space stays in use; a small one opens a new current
 * block, twice as large as the previous one (up to ARENA_MAX_STEP). */
static void *arena_grow(it_json_doc *doc, size_t size)
{
    int dedicated = size > doc->next_cap / 4;
    arena_block *b = block_new(dedicated ? size : doc->next_cap);
    if (!b) return NULL;
    b->used = size;
    if (dedicated && doc->head) {
        b->next = doc->head->next;
        doc->head->next = b;
    } else {
        b->next = doc->head;
        doc->head = b;
    }
    if (!dedicated && doc->next_cap < ARENA_MAX_STEP) doc->next_cap *= 2;
    return b->data;
}

/* size bytes aligned to align (a power of two, at most alignof(max_align_t)), or NULL. */
static void *arena_alloc(it_json_doc *doc, size_t size, size_t align)
{
    arena_block *b = doc->head;
    if (b) {
        size_t off = (b->used + align - 1) & ~(align - 1);
        if (off <= b->cap && size <= b->cap - off) {
            b->used = off + size;
            return (unsigned char *)b->data + off;
        }
    }
    return arena_grow(doc, size);
}

void it_json_free(it_json_doc *doc)
{
    if (!doc) return;
    arena_block *b = doc->head;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(doc);
}

const it_json *it_json_root(const it_json_doc *doc)
{
    return doc ? &doc->root : NULL;
}

/* ============================================================================================ */
/* Parser state, scratch stacks and errors                                                       */
/* ============================================================================================ */

/* A key waiting on the scratch stack until its object closes. */
typedef struct pending_key {
    const char *s;
    size_t len, pos;
} pending_key;

/* A key in the duplicate search: a hash of its bytes, the bytes, and its index in the object. */
typedef struct sort_key {
    uint64_t hash;
    const char *s;
    size_t len, idx;
} sort_key;

typedef struct parser {
    const unsigned char *p; /* the text [len] */
    size_t len;
    size_t pos;             /* the next byte to read */
    unsigned flags;
    it_err *err;
    it_json_doc *doc;       /* owns the arena */
    it_json *items;         /* values of the open containers [nitems], capacity cap_items */
    size_t nitems, cap_items;
    pending_key *keys;      /* keys of the open objects [nkeys], capacity cap_keys */
    size_t nkeys, cap_keys;
    sort_key *sort;         /* scratch for the duplicate search [cap_sort] */
    size_t cap_sort;
} parser;

static const it_json json_zero;

/* Grows buf (of *cap elements of elem bytes) to hold at least need elements, doubling. Returns the
 * new buffer and updates *cap, or returns NULL and leaves buf and *cap as they were. */
static void *grow(void *buf, size_t *cap, size_t need, size_t elem)
{
    size_t ncap = *cap ? *cap : 64, bytes;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return NULL;
        ncap *= 2;
    }
    if (it__mul_size(ncap, elem, &bytes)) return NULL;
    void *nb = realloc(buf, bytes);
    if (nb) *cap = ncap;
    return nb;
}

/* Fails with IT_EFORMAT and the message "at byte <at>: <fmt...>". */
static int fail_at(parser *ps, size_t at, const char *fmt, ...) IT__PRINTF(3, 4);
static int fail_at(parser *ps, size_t at, const char *fmt, ...)
{
    char msg[IT_ERR_MAX];
    int n = snprintf(msg, sizeof msg, "at byte %zu: ", at);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    return it__fail(ps->err, IT_EFORMAT, "%s", msg);
}

static int oom(parser *ps)
{
    return it__fail(ps->err, IT_ENOMEM, "at byte %zu: out of memory", ps->pos);
}

static int push_item(parser *ps, const it_json *v)
{
    if (ps->nitems == ps->cap_items) {
        it_json *nb = grow(ps->items, &ps->cap_items, ps->nitems + 1, sizeof *nb);
        if (!nb) return oom(ps);
        ps->items = nb;
    }
    ps->items[ps->nitems++] = *v;
    return IT_OK;
}

static int push_key(parser *ps, const pending_key *k)
{
    if (ps->nkeys == ps->cap_keys) {
        pending_key *nb = grow(ps->keys, &ps->cap_keys, ps->nkeys + 1, sizeof *nb);
        if (!nb) return oom(ps);
        ps->keys = nb;
    }
    ps->keys[ps->nkeys++] = *k;
    return IT_OK;
}

/* The byte at pos, or -1 at the end of the text. */
static int peek(const parser *ps)
{
    return ps->pos < ps->len ? ps->p[ps->pos] : -1;
}

/* RFC 8259 section 2: ws = *( %x20 / %x09 / %x0A / %x0D ). */
static void skip_ws(parser *ps)
{
    while (ps->pos < ps->len) {
        unsigned char c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        ps->pos++;
    }
}

/* ============================================================================================ */
/* UTF-8                                                                                         */
/* ============================================================================================ */

/* The sequence length announced by lead byte c (2 to 4) and the allowed range [*lo, *hi] of the
 * second byte (Unicode 15, Table 3-7: the narrowed ranges after E0, ED, F0 and F4 rule out
 * overlong forms, surrogates and code points above U+10FFFF). 0 with *why for a byte that
 * cannot start a sequence. */
static size_t utf8_lead(unsigned c, unsigned *lo, unsigned *hi, const char **why)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c < 0xC0) *why = "unexpected continuation byte";
    else if (c < 0xC2) *why = "overlong encoding";
    else if (c < 0xE0) return 2;
    else if (c < 0xF0) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    } else if (c < 0xF5) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    } else {
        *why = "byte that never appears in UTF-8";
    }
    return 0;
}

/* Why a continuation byte outside the narrowed second-byte range of lead byte c is refused. */
static const char *utf8_range_why(unsigned c)
{
    if (c == 0xED) return "UTF-16 surrogate encoded in UTF-8";
    if (c == 0xF4) return "code point above U+10FFFF";
    return "overlong encoding";
}

/* The length (1 to 4) of the well-formed UTF-8 sequence at s[0..avail), avail >= 1, or 0 with
 * *why saying what is wrong with it. */
static size_t utf8_seq(const unsigned char *s, size_t avail, const char **why)
{
    unsigned lo, hi;
    if (s[0] < 0x80) return 1;
    size_t n = utf8_lead(s[0], &lo, &hi, why);
    for (size_t k = 1; k < n; k++) {
        if (k >= avail || s[k] < 0x80 || s[k] > 0xBF) {
            *why = "truncated sequence";
            return 0;
        }
        if (k == 1 && (s[1] < lo || s[1] > hi)) {
            *why = utf8_range_why(s[0]);
            return 0;
        }
    }
    return n;
}

/* Whether s[0..n) is well-formed UTF-8 (shared with the safetensors reader, whose reference
 * checks the header's UTF-8 before it parses the JSON). */
int it__utf8_valid(const void *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    const char *why;
    for (size_t i = 0, k; i < n; i += k)
        if ((k = utf8_seq(s + i, n - i, &why)) == 0) return 0;
    return 1;
}

/* The code point of the well-formed sequence s[0..n). */
static unsigned long utf8_decode(const unsigned char *s, size_t n)
{
    static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    unsigned long cp = s[0] & lead_mask[n];
    for (size_t k = 1; k < n; k++) cp = cp << 6 | (s[k] & 0x3Fu);
    return cp;
}

/* Bytes of the UTF-8 encoding of code point cp. */
static size_t utf8_size(unsigned long cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/* Writes the UTF-8 encoding of cp (not a surrogate, at most U+10FFFF) to dst; returns its size. */
static size_t utf8_put(unsigned char *dst, unsigned long cp)
{
    size_t n = utf8_size(cp);
    static const unsigned char lead[5] = {0, 0x00, 0xC0, 0xE0, 0xF0};
    for (size_t k = n - 1; k > 0; k--) {
        dst[k] = (unsigned char)(0x80 | (cp & 0x3F));
        cp >>= 6;
    }
    dst[0] = (unsigned char)(lead[n] | cp);
    return n;
}

static int bad_utf8(parser *ps, size_t at, const char *why)
{
    return fail_at(ps, at, "invalid UTF-8: %s (0x%02X)", why, ps->p[at]);
}

/* Fails at byte i with "expected <what>, found <the input at i>", naming the input as "end of
 * input", 'c', "byte 0xHH" (control characters) or "U+XXXX"; a non-ASCII byte that does not start
 * well-formed UTF-8 is reported as invalid UTF-8 instead. */
static int unexpected(parser *ps, size_t i, const char *what)
{
    if (i >= ps->len) return fail_at(ps, i, "expected %s, found end of input", what);
    unsigned c = ps->p[i];
    if (c >= 0x80) {
        const char *why = "";
        size_t n = utf8_seq(ps->p + i, ps->len - i, &why);
        if (!n) return bad_utf8(ps, i, why);
        return fail_at(ps, i, "expected %s, found U+%04lX", what, utf8_decode(ps->p + i, n));
    }
    if (c < 0x20 || c == 0x7F) return fail_at(ps, i, "expected %s, found byte 0x%02X", what, c);
    return fail_at(ps, i, "expected %s, found '%c'", what, (int)c);
}

/* ============================================================================================ */
/* Strings (RFC 8259 section 7)                                                                  */
/* ============================================================================================ */

static int hex_digit(unsigned c)
{
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* Reads the 4 hex digits (either case) at p[i..i+4) into *v. */
static int hex4(parser *ps, size_t i, unsigned *v)
{
    *v = 0;
    for (size_t k = 0; k < 4; k++) {
        int d = i + k < ps->len ? hex_digit(ps->p[i + k]) : -1;
        if (d < 0) return unexpected(ps, i + k, "a hex digit in a \\u escape");
        *v = *v << 4 | (unsigned)d;
    }
    return IT_OK;
}

/* Whether the text ends within the "\u" that must start at p[i] (after a high surrogate). */
static int high_cut(const parser *ps, size_t i)
{
    return i >= ps->len || (i + 1 >= ps->len && ps->p[i] == '\\');
}

/* Validates the \uXXXX escape at p[i], and when XXXX is a high surrogate the \uYYYY low
 * surrogate that must follow it (section 7: a pair encodes one code point above U+FFFF).
 * Sets *adv to the escape's length in the text and *olen to its length in UTF-8. */
static int scan_unicode(parser *ps, size_t i, size_t *adv, size_t *olen)
{
    unsigned hi, lo;
    int rc = hex4(ps, i + 2, &hi);
    if (rc) return rc;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return fail_at(ps, i, "unpaired low surrogate \\u%04X (it must follow a high surrogate)", hi);
    *adv = 6;
    *olen = utf8_size(hi);
    if (hi < 0xD800 || hi > 0xDBFF) return IT_OK;
    if (high_cut(ps, i + 6))
        return fail_at(ps, ps->len, "expected a \\u escape of a low surrogate after \\u%04X, found end of input", hi);
    if (ps->p[i + 6] != '\\' || ps->p[i + 7] != 'u')
        return fail_at(ps, i, "unpaired high surrogate \\u%04X (expected a \\u escape of a low surrogate after it)", hi);
    if ((rc = hex4(ps, i + 8, &lo))) return rc;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return fail_at(ps, i, "unpaired high surrogate \\u%04X (followed by \\u%04X, not a low surrogate)", hi, lo);
    *adv = 12;
    *olen = 4;
    return IT_OK;
}

/* Validates the escape at p[i] == '\\'; *adv and *olen as for scan_unicode. */
static int scan_escape(parser *ps, size_t i, size_t *adv, size_t *olen)
{
    int c = i + 1 < ps->len ? ps->p[i + 1] : -1;
    switch (c) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        *adv = 2;
        *olen = 1;
        return IT_OK;
    case 'u':
        return scan_unicode(ps, i, adv, olen);
    default:
        return unexpected(ps, i + 1, "one of \" \\ / b f n r t u after a backslash");
    }
}

/* What a scan of one string found. */
typedef struct string_scan {
    size_t end;  /* offset of the closing quote */
    size_t olen; /* decoded length in bytes */
    int escaped; /* whether it holds any escape */
} string_scan;

/* Scans the string whose opening quote is at pos: every byte is plain printable ASCII, a
 * well-formed UTF-8 sequence or a valid escape; control characters (U+0000..U+001F) are refused. */
static int scan_string(parser *ps, string_scan *sc)
{
    const unsigned char *p = ps->p;
    size_t i = ps->pos + 1, n = ps->len, adv = 0, olen = 0;
    sc->escaped = 0;
    for (;;) {
        size_t run = i; /* the fast path: a run of plain ASCII */
        while (i < n && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\') i++;
        olen += i - run;
        if (i >= n) return fail_at(ps, i, "unterminated string (opened at byte %zu)", ps->pos);
        if (p[i] == '"') break;
        if (p[i] < 0x20)
            return fail_at(ps, i, "control character 0x%02X in a string (it must be written as an escape)", p[i]);
        size_t w = 0;
        const char *why = "";
        if (p[i] == '\\') {
            int rc = scan_escape(ps, i, &adv, &w);
            if (rc) return rc;
            sc->escaped = 1;
        } else if ((adv = w = utf8_seq(p + i, n - i, &why)) == 0) {
            return bad_utf8(ps, i, why);
        }
        i += adv;
        olen += w;
    }
    sc->end = i;
    sc->olen = olen;
    return IT_OK;
}

/* Decodes the validated escape at e (e[0] == '\\') to *dst, advancing it; returns the escape's
 * length in the text. */
static size_t decode_escape(unsigned char **dst, const unsigned char *e)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (e[1] != 'u') {
        *(*dst)++ = (unsigned char)to[strchr(from, e[1]) - from];
        return 2;
    }
    unsigned long cp = 0, lo = 0;
    for (int k = 2; k < 6; k++) cp = cp << 4 | (unsigned long)hex_digit(e[k]);
    if (cp < 0xD800 || cp > 0xDBFF) {
        *dst += utf8_put(*dst, cp);
        return 6;
    }
    for (int k = 8; k < 12; k++) lo = lo << 4 | (unsigned long)hex_digit(e[k]);
    *dst += utf8_put(*dst, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
    return 12;
}

/* Writes the decoded form of the validated string body src[0..n) to dst. */
static void decode_string(unsigned char *dst, const unsigned char *src, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const unsigned char *bs = memchr(src + i, '\\', n - i);
        size_t run = bs ? (size_t)(bs - src) - i : n - i;
        memcpy(dst, src + i, run);
        dst += run;
        i += run;
        if (i < n) i += decode_escape(&dst, src + i);
    }
}

/* Parses the string at pos into a NUL-terminated arena copy *s of *len bytes. */
static int parse_string(parser *ps, const char **s, size_t *len)
{
    string_scan sc = {0, 0, 0};
    int rc = scan_string(ps, &sc);
    if (rc) return rc;
    const unsigned char *body = ps->p + ps->pos + 1;
    size_t raw = sc.end - ps->pos - 1;
    *len = sc.olen;
    if (sc.olen == 0) {
        *s = "";
    } else {
        unsigned char *dst = arena_alloc(ps->doc, sc.olen + 1, 1);
        if (!dst) return oom(ps);
        if (sc.escaped) decode_string(dst, body, raw);
        else memcpy(dst, body, raw);
        dst[sc.olen] = 0;
        *s = (const char *)dst;
    }
    ps->pos = sc.end + 1;
    return IT_OK;
}

/* ============================================================================================ */
/* Numbers (RFC 8259 section 6)                                                                  */
/* ============================================================================================ */

/* What a scan of one number literal found. */
typedef struct number_scan {
    size_t start, end; /* the literal is p[start..end) */
    int neg;           /* it starts with '-' */
    int is_int;        /* no fraction and no exponent */
    int wide;          /* the integer part's magnitude exceeds UINT64_MAX */
    uint64_t mag;      /* the integer part's magnitude, when not wide */
} number_scan;

static int is_digit(const parser *ps, size_t i)
{
    return i < ps->len && ps->p[i] >= '0' && ps->p[i] <= '9';
}

/* Skips 1*DIGIT at *i; what names the place for the message when there is none. */
static int scan_digits(parser *ps, size_t *i, const char *what)
{
    if (!is_digit(ps, *i)) return unexpected(ps, *i, what);
    while (is_digit(ps, *i)) (*i)++;
    return IT_OK;
}

/* int = "0" / digit1-9 *DIGIT, accumulating the magnitude. */
static int scan_int_part(parser *ps, size_t *i, number_scan *ns)
{
    if (!is_digit(ps, *i)) return unexpected(ps, *i, "a digit after '-'");
    if (ps->p[*i] == '0') {
        (*i)++;
        if (is_digit(ps, *i)) return fail_at(ps, *i, "leading zeros are not allowed in a number");
        return IT_OK;
    }
    for (; is_digit(ps, *i); (*i)++) {
        unsigned d = ps->p[*i] - '0';
        if (ns->wide || ns->mag > (UINT64_MAX - d) / 10) ns->wide = 1; /* mag * 10 + d > UINT64_MAX */
        else ns->mag = ns->mag * 10 + d;
    }
    return IT_OK;
}

/* number = [ minus ] int [ frac ] [ exp ]; frac = "." 1*DIGIT; exp = ("e"/"E") ["-"/"+"] 1*DIGIT */
static int scan_number(parser *ps, number_scan *ns)
{
    size_t i = ps->pos;
    memset(ns, 0, sizeof *ns);
    ns->start = i;
    ns->neg = ps->p[i] == '-';
    i += (size_t)ns->neg;
    int rc = scan_int_part(ps, &i, ns);
    ns->is_int = 1;
    if (!rc && i < ps->len && ps->p[i] == '.') {
        ns->is_int = 0;
        i++;
        rc = scan_digits(ps, &i, "a digit after the decimal point");
    }
    if (!rc && i < ps->len && (ps->p[i] == 'e' || ps->p[i] == 'E')) {
        ns->is_int = 0;
        i++;
        if (i < ps->len && (ps->p[i] == '+' || ps->p[i] == '-')) i++;
        rc = scan_digits(ps, &i, "a digit in the exponent");
    }
    ns->end = i;
    return rc;
}

/* Converts the literal p[start..end) with strtod, which rounds correctly in glibc and musl. strtod
 * reads the locale's decimal point, so the NUL-terminated copy carries that in place of '.'. A
 * magnitude that overflows to infinity is an error, as in serde_json; underflow gives 0. */
static int to_double(parser *ps, const number_scan *ns, double *d)
{
    const char *dp = localeconv()->decimal_point;
    if (!dp || !*dp) dp = ".";
    size_t dplen = strlen(dp), n = ns->end - ns->start, need, m = 0;
    if (it__add_size(n, dplen + 1, &need)) return oom(ps);
    char local[128], *buf = need <= sizeof local ? local : malloc(need);
    if (!buf) return oom(ps);
    for (size_t k = ns->start; k < ns->end; k++) {
        if (ps->p[k] == '.') {
            memcpy(buf + m, dp, dplen);
            m += dplen;
        } else {
            buf[m++] = (char)ps->p[k];
        }
    }
    buf[m] = 0;
    char *endp;
    *d = strtod(buf, &endp);
    int whole = endp == buf + m;
    if (buf != local) free(buf);
    if (!whole) return fail_at(ps, ns->start, "number not understood by the C library's strtod");
    if (isinf(*d)) return fail_at(ps, ns->start, "number out of range (its magnitude overflows a double)");
    return IT_OK;
}

/* An integer literal of magnitude mag (not wide) in [-2^63, 2^64), not "-0": exact in i and/or u,
 * and as a double in d (exact below 2^53, else by strtod for correct rounding). */
static int set_int(parser *ps, const number_scan *ns, it_json *out)
{
    uint64_t mag = ns->mag;
    out->type = IT_JSON_INT;
    if (ns->neg) {
        out->i_ok = 1;
        out->i = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        out->u_ok = 1;
        out->u = mag;
        out->i_ok = mag <= (uint64_t)INT64_MAX;
        out->i = out->i_ok ? (int64_t)mag : 0;
    }
    if (mag > (uint64_t)1 << 53) return to_double(ps, ns, &out->d);
    out->d = ns->neg ? -(double)mag : (double)mag;
    return IT_OK;
}

/* Parses the number at pos (serde_json's classification, see iteris.h). */
static int parse_number(parser *ps, it_json *out)
{
    number_scan ns;
    int rc = scan_number(ps, &ns);
    if (rc) return rc;
    ps->pos = ns.end;
    int in_range = ns.is_int && !ns.wide && (!ns.neg || ns.mag <= (uint64_t)INT64_MAX + 1);
    if (in_range && !(ns.neg && ns.mag == 0)) return set_int(ps, &ns, out);
    out->type = IT_JSON_NUM;
    return to_double(ps, &ns, &out->d); /* "-0" gives -0.0 here */
}

/* ============================================================================================ */
/* Duplicate keys                                                                                */
/* ============================================================================================ */

static int same_key(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* 64-bit FNV-1a of s[0..n). */
static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xCBF29CE484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001B3u;
    return h;
}

/* qsort order: hash, length, bytes, then index. Equal keys have equal hashes, so they end up side
 * by side in document order; the hash only turns most comparisons of the long shared prefixes of
 * tensor names into one integer comparison (colliding keys still compare by bytes). */
static int sort_key_cmp(const void *va, const void *vb)
{
    const sort_key *a = va, *b = vb;
    if (a->hash != b->hash) return a->hash < b->hash ? -1 : 1;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    int c = memcmp(a->s, b->s, a->len);
    if (c) return c;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Where the duplicate search left an object's keys. */
typedef struct dup_info {
    size_t ndup;   /* keys that repeat an earlier key */
    size_t first;  /* the earliest repeated key: index of its first occurrence */
    size_t second; /* and of its second; valid when ndup > 0 */
} dup_info;

/* Small objects: compare every key with the keys before it. */
static void dups_pairwise(const pending_key *k, size_t n, dup_info *di)
{
    for (size_t j = 1; j < n; j++) {
        for (size_t i = 0; i < j; i++) {
            if (!same_key(k[i].s, k[i].len, k[j].s, k[j].len)) continue;
            if (di->ndup++ == 0) {
                di->first = i;
                di->second = j;
            }
            break;
        }
    }
}

/* Large objects: sort so that equal keys form runs in document order, O(n log n) comparisons.
 * Every key after the head of its run is a repetition; the earliest second occurrence is the
 * smallest index among them. */
static int dups_sorted(parser *ps, const pending_key *k, size_t n, dup_info *di)
{
    if (n > ps->cap_sort) {
        sort_key *nb = grow(ps->sort, &ps->cap_sort, n, sizeof *nb);
        if (!nb) return oom(ps);
        ps->sort = nb;
    }
    sort_key *s = ps->sort;
    for (size_t i = 0; i < n; i++) s[i] = (sort_key){fnv1a(k[i].s, k[i].len), k[i].s, k[i].len, i};
    qsort(s, n, sizeof *s, sort_key_cmp);
    for (size_t head = 0, r = 1; r < n; r++) {
        if (!same_key(s[head].s, s[head].len, s[r].s, s[r].len)) {
            head = r;
            continue;
        }
        if (di->ndup++ == 0 || s[r].idx < di->second) {
            di->first = s[head].idx;
            di->second = s[r].idx;
        }
    }
    return IT_OK;
}

/* Writes up to 48 bytes of key s[0..n) to buf[cap] in double quotes, as printable ASCII: '"' and
 * '\\' escaped, other control and non-ASCII bytes as \xHH, and "..." when cut short. */
static void quote_key(char *buf, size_t cap, const char *s, size_t n)
{
    size_t m = 0, show = n < 48 ? n : 48;
    buf[m++] = '"';
    for (size_t i = 0; i < show && m + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') m += (size_t)snprintf(buf + m, cap - m, "\\%c", c);
        else if (c < 0x20 || c >= 0x7F) m += (size_t)snprintf(buf + m, cap - m, "\\x%02X", c);
        else buf[m++] = (char)c;
    }
    snprintf(buf + m, cap - m, "%s\"", show < n ? "..." : "");
}

static int dup_error(parser *ps, const pending_key *k, const dup_info *di)
{
    char q[256];
    const pending_key *a = &k[di->first], *b = &k[di->second];
    quote_key(q, sizeof q, b->s, b->len);
    return fail_at(ps, b->pos, "duplicate key %s in an object (first at byte %zu)", q, a->pos);
}

/* ============================================================================================ */
/* Values, arrays and objects (RFC 8259 sections 3-5)                                            */
/* ============================================================================================ */

static int parse_value(parser *ps, it_json *out, int depth);

/* Moves the values above mark on the scratch stack into the arena as out's items. */
static int take_items(parser *ps, it_json *out, size_t mark)
{
    size_t n = ps->nitems - mark, bytes;
    out->n = n;
    if (n == 0) return IT_OK;
    if (it__mul_size(n, sizeof(it_json), &bytes)) return oom(ps);
    it_json *items = arena_alloc(ps->doc, bytes, _Alignof(it_json));
    if (!items) return oom(ps);
    memcpy(items, ps->items + mark, bytes);
    out->items = items;
    ps->nitems = mark;
    return IT_OK;
}

/* Moves the keys above kmark into the arena: keys[n], then keylens[n] and keypos[n] in one array. */
static int take_keys(parser *ps, it_json *out, size_t kmark)
{
    size_t n = ps->nkeys - kmark, kbytes, sbytes;
    if (n == 0) return IT_OK;
    if (it__mul_size(n, sizeof(char *), &kbytes) || it__mul_size(n, 2 * sizeof(size_t), &sbytes)) return oom(ps);
    const char **keys = arena_alloc(ps->doc, kbytes, _Alignof(const char *));
    size_t *meta = keys ? arena_alloc(ps->doc, sbytes, _Alignof(size_t)) : NULL;
    if (!meta) return oom(ps);
    const pending_key *k = ps->keys + kmark;
    for (size_t i = 0; i < n; i++) {
        keys[i] = k[i].s;
        meta[i] = k[i].len;
        meta[n + i] = k[i].pos;
    }
    out->keys = keys;
    out->keylens = meta;
    out->keypos = meta + n;
    ps->nkeys = kmark;
    return IT_OK;
}

/* Closes an object: counts its duplicate keys (refusing them under IT_JSON_NODUP), then moves its
 * keys and values into the arena. */
static int close_object(parser *ps, it_json *out, size_t mark, size_t kmark)
{
    const pending_key *k = ps->keys + kmark;
    size_t n = ps->nkeys - kmark;
    dup_info di = {0, 0, 0};
    if (n <= 16) dups_pairwise(k, n, &di);
    else if (dups_sorted(ps, k, n, &di)) return IT_ENOMEM;
    if (di.ndup && (ps->flags & IT_JSON_NODUP)) return dup_error(ps, k, &di);
    out->ndup = di.ndup;
    int rc = take_keys(ps, out, kmark);
    return rc ? rc : take_items(ps, out, mark);
}

/* member = string name-separator value; the key and value go on the scratch stacks. */
static int parse_member(parser *ps, int depth)
{
    pending_key k;
    it_json v;
    k.pos = ps->pos;
    if (peek(ps) != '"') return unexpected(ps, ps->pos, "a string key");
    int rc = parse_string(ps, &k.s, &k.len);
    if (rc) return rc;
    skip_ws(ps);
    if (peek(ps) != ':') return unexpected(ps, ps->pos, "':' after an object key");
    ps->pos++;
    skip_ws(ps);
    if ((rc = parse_value(ps, &v, depth + 1))) return rc;
    if ((rc = push_key(ps, &k))) return rc;
    return push_item(ps, &v);
}

/* Skips the ',' or the closing byte after an element: 1 after ',', 0 after close, or an error. */
static int after_element(parser *ps, char close, const char *what, int *more)
{
    skip_ws(ps);
    int c = peek(ps);
    if (c != ',' && c != close) return unexpected(ps, ps->pos, what);
    ps->pos++;
    *more = c == ',';
    if (*more) skip_ws(ps);
    return IT_OK;
}

/* object = begin-object [ member *( value-separator member ) ] end-object */
static int parse_object(parser *ps, it_json *out, int depth)
{
    size_t mark = ps->nitems, kmark = ps->nkeys;
    out->type = IT_JSON_OBJ;
    ps->pos++;
    skip_ws(ps);
    if (peek(ps) == '}') {
        ps->pos++;
        return IT_OK;
    }
    for (int more = 1, rc; more;) {
        if ((rc = parse_member(ps, depth))) return rc;
        if ((rc = after_element(ps, '}', "',' or '}' after an object member", &more))) return rc;
    }
    return close_object(ps, out, mark, kmark);
}

/* array = begin-array [ value *( value-separator value ) ] end-array */
static int parse_array(parser *ps, it_json *out, int depth)
{
    size_t mark = ps->nitems;
    out->type = IT_JSON_ARR;
    ps->pos++;
    skip_ws(ps);
    if (peek(ps) == ']') {
        ps->pos++;
        return IT_OK;
    }
    for (int more = 1, rc; more;) {
        it_json v;
        if ((rc = parse_value(ps, &v, depth + 1)) || (rc = push_item(ps, &v))) return rc;
        if ((rc = after_element(ps, ']', "',' or ']' after an array element", &more))) return rc;
    }
    return take_items(ps, out, mark);
}

/* One of the literals false, null, true. */
static int parse_literal(parser *ps, const char *word, it_json_type type, it_json *out)
{
    char what[32];
    for (size_t k = 0; word[k]; k++) {
        if (ps->pos + k < ps->len && ps->p[ps->pos + k] == (unsigned char)word[k]) continue;
        snprintf(what, sizeof what, "the literal '%s'", word);
        return unexpected(ps, ps->pos + k, what);
    }
    ps->pos += strlen(word);
    out->type = type;
    return IT_OK;
}

/* value = false / null / true / object / array / number / string, at pos (no whitespace);
 * depth counts the containers around it. */
static int parse_value(parser *ps, it_json *out, int depth)
{
    *out = json_zero;
    out->pos = ps->pos;
    int c = peek(ps);
    if ((c == '[' || c == '{') && depth >= IT_JSON_MAX_DEPTH)
        return fail_at(ps, ps->pos, "arrays and objects nested deeper than %d levels", IT_JSON_MAX_DEPTH);
    switch (c) {
    case '{': return parse_object(ps, out, depth);
    case '[': return parse_array(ps, out, depth);
    case '"': out->type = IT_JSON_STR; return parse_string(ps, &out->s, &out->len);
    case 't': return parse_literal(ps, "true", IT_JSON_TRUE, out);
    case 'f': return parse_literal(ps, "false", IT_JSON_FALSE, out);
    case 'n': return parse_literal(ps, "null", IT_JSON_NULL, out);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps, out);
        return unexpected(ps, ps->pos, "a value");
    }
}

/* JSON-text = ws value ws (section 2), after refusing empty input and a byte order mark
 * (section 8.1: implementations must not add one; we refuse rather than ignore it). */
static int parse_text(parser *ps, it_json *root)
{
    if (ps->len == 0) return fail_at(ps, 0, "empty input");
    if (ps->len >= 3 && ps->p[0] == 0xEF && ps->p[1] == 0xBB && ps->p[2] == 0xBF)
        return fail_at(ps, 0, "the text starts with a UTF-8 byte order mark (EF BB BF), which JSON does not allow");
    skip_ws(ps);
    int rc = parse_value(ps, root, 0);
    if (rc) return rc;
    skip_ws(ps);
    if (ps->pos < ps->len) return unexpected(ps, ps->pos, "the end of the text after the JSON value");
    return IT_OK;
}

/* ============================================================================================ */
/* Public functions                                                                              */
/* ============================================================================================ */

int it_json_parse(it_json_doc **out, const void *text, size_t len, unsigned flags, it_err *err)
{
    if (!out) return it__fail(err, IT_EINVAL, "it_json_parse: out is NULL");
    *out = NULL;
    if (!text && len) return it__fail(err, IT_EINVAL, "it_json_parse: text is NULL");
    if (flags & ~(unsigned)IT_JSON_NODUP) return it__fail(err, IT_EINVAL, "it_json_parse: unknown flags 0x%X", flags);
    it_json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) return it__fail(err, IT_ENOMEM, "at byte 0: out of memory");
    doc->next_cap = ARENA_FIRST;
    parser ps = {0};
    ps.p = text;
    ps.len = len;
    ps.flags = flags;
    ps.err = err;
    ps.doc = doc;
    int rc = parse_text(&ps, &doc->root);
    free(ps.items);
    free(ps.keys);
    free(ps.sort);
    if (rc) {
        it_json_free(doc);
        return rc;
    }
    *out = doc;
    return IT_OK;
}

const it_json *it_json_get(const it_json *obj, const char *key)
{
    if (!obj || obj->type != IT_JSON_OBJ || !key) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->n; i++)
        if (same_key(obj->keys[i], obj->keylens[i], key, n)) return &obj->items[i];
    return NULL;
}

const char *it_json_type_name(it_json_type type)
{
    switch (type) {
    case IT_JSON_NULL: return "null";
    case IT_JSON_FALSE: return "false";
    case IT_JSON_TRUE: return "true";
    case IT_JSON_INT: return "integer";
    case IT_JSON_NUM: return "number";
    case IT_JSON_STR: return "string";
    case IT_JSON_ARR: return "array";
    case IT_JSON_OBJ: return "object";
    }
    return "?";
}

void it_json_describe(const it_json *v, char *buf, size_t size)
{
    switch (v->type) {
    case IT_JSON_NULL: snprintf(buf, size, "null"); break;
    case IT_JSON_FALSE: snprintf(buf, size, "false"); break;
    case IT_JSON_TRUE: snprintf(buf, size, "true"); break;
    case IT_JSON_INT:
        if (v->i_ok) snprintf(buf, size, "%" PRId64, v->i);
        else snprintf(buf, size, "%" PRIu64, v->u);
        break;
    case IT_JSON_NUM:
        snprintf(buf, size, "%.15g", v->d);
        if (strspn(buf, "-0123456789") == strlen(buf)) snprintf(buf, size, "%.1f", v->d); /* 64.0 */
        break;
    case IT_JSON_STR: snprintf(buf, size, "a string"); break;
    case IT_JSON_ARR: snprintf(buf, size, "an array"); break;
    default: snprintf(buf, size, "an object"); break;
    }
}

int it__jr_bad(const it__jreader *r, const char *key, const char *expected, const it_json *v)
{
    char what[64];
    it_json_describe(v, what, sizeof what);
    return it__fail(r->err, IT_EFORMAT, "%s: %s: expected %s, got %s", r->path, key, expected, what);
}

const it_json *it__jr_get(const it__jreader *r, const char *key)
{
    const it_json *v = it_json_get(r->obj, key);
    return v && v->type != IT_JSON_NULL ? v : NULL;
}
