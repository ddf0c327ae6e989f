/* regex.c -- the subset of Python's `re` that PEFT adapter configurations use, matched in time
 * linear in the subject, with the spans Python's backtracking engine reports.
 *
 * Syntax (Python 3.11 `re`, str patterns, no flags):
 *   literals; '.' (any character but '\n'); classes [...] and [^...] with ranges and escapes, ']'
 *   first is literal; \d \w \s \D \W \S; \a \f \n \r \t \v \xhh \uhhhh \Uhhhhhhhh \0oo \ooo and
 *   escaped punctuation; groups (...), (?:...), (?P<name>...) (numbered like any group);
 *   alternation |; quantifiers * + ? {m} {m,} {,n} {m,n} {,} and their lazy forms (*? ... {m,n}?);
 *   anchors ^ and \A (absolute position 0 only, as for pattern.match(s, pos)), $ (the end, or just
 *   before a final '\n'), \Z (the end); word boundaries \b \B. A '{' that does not open a
 *   well-formed quantifier is a literal, as in Python.
 * Refused with IT_EFORMAT "at offset N: ...": possessive quantifiers, atomic groups, lookaround,
 *   backreferences, conditionals, comments, inline flags, \N{...}, non-ASCII characters inside
 *   classes, counts above 1000, nesting deeper than 100, programs above 20000 instructions; and
 *   what Python refuses (nothing to repeat, multiple repeat, unbalanced parentheses, bad ranges,
 *   bad escapes, ...). Messages follow Python's wording loosely.
 *
 * Characters: patterns and subjects are bytes and positions byte offsets. A well-formed UTF-8
 * sequence counts as one character for '.', negated classes and quantified literals, so ASCII and
 * UTF-8 text match as Python matches the decoded string, with one deviation: \d \w \s (and \b)
 * know only ASCII, as under re.ASCII -- no non-ASCII character is a digit, word character or
 * space here, so \D \W \S match every one. (Their ASCII members are Python's: \s includes
 * \x1c-\x1f.) A byte that starts no well-formed sequence counts as one non-ASCII character.
 *
 * How: a recursive-descent parser builds a syntax tree, which is compiled to a program for a Pike
 * VM: Thompson's simulation of the NFA, one step per subject byte, whose threads are kept in the
 * order a backtracking matcher would try them; following empty transitions depth first with the
 * preferred branch first, and dropping a path that reaches an instruction already reached in the
 * same step, gives the first-found (Python's) match and spans (R. Cox, "Regular Expression
 * Matching: the Virtual Machine Approach", 2009). Time O(len x program x slots), no backtracking.
 * Counted repetition is expanded into copies ({2,4} -> X X (X (X)?)?).
 *
 * Empty iterations follow CPython's "zero-width match protection" (_sre.c MAX_UNTIL/MIN_UNTIL):
 * beyond the required count, an iteration that consumed nothing ends the loop (the tail is tried,
 * no further iteration), so (a*)* terminates and (a*)* or (a|)+ on "aa" give group 1 = (2, 2) as
 * Python does. When a loop's body can match empty, each iteration saves its start position in a
 * slot (SAVE) and the iteration's end tests it (JEMPTY). Two paths reaching one instruction can
 * then differ in their future, so "reached before" is per (instruction, state), the state being
 * how many of the enclosing such loop bodies are in an iteration begun before this step (see
 * first_visit); plain per-instruction dropping would give (a*)* on "aa" group 1 = (0, 2).
 *
 * Known deviations from CPython 3.11: the ASCII-only \d \w \s \b above. Differential testing
 * on random patterns of this subset (nested, lazy, counted and empty-matching loops, alternation,
 * anchors, starts past 0) found no other. (\b and \B never match an empty subject: that is
 * 3.11's behaviour, changed for \B in 3.14.)
 *
 * No global mutable state: a compiled pattern is read-only and may be shared between threads;
 * each match has its own scratch, on the stack when small (as for every PEFT pattern seen) and
 * else from malloc, whose failure makes it__re_match / it__re_fullmatch return -1. */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RE_MAX_COUNT 1000             /* the largest count in {m,n} */
#define RE_MAX_DEPTH 100              /* the deepest nesting of parentheses */
#define RE_MAX_PROG 20000             /* the largest program, in instructions */
#define RE_MAX_TABLE ((size_t)1 << 22) /* the largest thread table, instructions x slots */
#define RE_INF UINT32_MAX             /* no upper bound on a repetition */
#define RE_LOCAL 4096                 /* words of scratch a match keeps on the stack */
#define NONE SIZE_MAX
#define NO_PC UINT32_MAX

/* ============================================================================================ */
/* Syntax tree and program                                                                       */
/* ============================================================================================ */

/* A set of characters: 128 bits for ASCII, and whether every non-ASCII character belongs. */
typedef struct cset {
    unsigned char bits[16];
    int nonascii;
} cset;

enum { N_BYTE, N_SET, N_CAT, N_ALT, N_GROUP, N_REP, N_ASSERT };
enum { A_BEGIN, A_END, A_END_NL, A_WORD, A_NOTWORD };

typedef struct node {
    int type;
    int greedy;    /* N_REP */
    int nullable;  /* whether it can match the empty string; -1 until computed */
    uint32_t a;    /* N_BYTE byte, N_SET set index, N_GROUP number, N_ASSERT kind, N_REP min */
    uint32_t b;    /* N_REP max, or RE_INF */
    uint32_t slot; /* N_REP with a nullable body: the slot of its iteration start (NO_PC: none yet) */
    size_t off;    /* offset in the pattern, for messages */
    size_t kid;    /* first child (N_CAT and N_ALT: a list through next), or NONE */
    size_t next;   /* next sibling, or NONE */
} node;

/* Instructions. BYTE / SET / CHAR / CONT consume a byte; the rest are empty transitions. */
enum {
    OP_BYTE,   /* the byte x */
    OP_SET,    /* an ASCII byte of set x */
    OP_CHAR,   /* a character of set x (1 to 4 bytes), continued by 3 CONTs: 4 - len are skipped */
    OP_CONT,   /* the next byte of a character CHAR accepted */
    OP_SPLIT,  /* go on at x, and with lower priority at y */
    OP_JMP,    /* go on at x */
    OP_SAVE,   /* slot x = the current position */
    OP_JEMPTY, /* if slot x == the current position (an empty iteration) go to y, else go on */
    OP_ASSERT, /* go on if assertion x holds here */
    OP_MATCH
};

typedef struct inst {
    uint32_t op, x, y;
    uint32_t frame; /* the innermost empty-checked loop body holding it (NO_PC: none) */
    uint32_t mark;  /* its first entry in the visit marks */
} inst;

/* An empty-checked loop body (the code between SAVE s and JEMPTY s). */
typedef struct frame {
    uint32_t slot, parent; /* parent: the enclosing frame, or NO_PC */
    uint32_t depth;        /* 1 for an outermost one */
} frame;

struct it__re {
    inst *prog;     /* (ninst) */
    cset *sets;     /* (nsets) */
    frame *frames;  /* (nframes) */
    size_t ninst, nsets, nframes;
    size_t nmarks;  /* visit marks: 1 per consuming instruction, 1 + frame depth for the others */
    size_t ngroups; /* capturing groups, group 0 (the whole match) not counted */
    size_t nslots;  /* 2 (ngroups + 1) capture slots, then one per empty-checked loop */
    size_t nwords;  /* words of scratch one match needs */
};

/* ============================================================================================ */
/* Parser                                                                                        */
/* ============================================================================================ */

typedef struct parser {
    const char *pat;
    size_t len, pos;
    node *nodes;
    size_t nnodes, capnodes;
    cset *sets;
    size_t nsets, capsets;
    size_t *names; /* (nnames, 2): offset and length of each group name, to refuse duplicates */
    size_t nnames, capnames;
    size_t ngroups, depth;
    it_err *err;
    int rc;
} parser;

/* arr with room for need elements of size bytes (capacity doubled), or NULL when out of memory
 * (arr is then unchanged). */
static void *grow(void *arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return arr;
    size_t ncap = *cap ? *cap : 16, bytes;
    while (ncap < need) ncap *= 2;
    if (it__mul_size(ncap, size, &bytes)) return NULL;
    void *p = realloc(arr, bytes);
    if (p) *cap = ncap;
    return p;
}

/* Records a malformed or unsupported pattern (the first error only); returns NONE. */
static size_t perr(parser *ps, size_t off, const char *what)
{
    if (ps->rc == IT_OK) ps->rc = it__fail(ps->err, IT_EFORMAT, "at offset %zu: %s", off, what);
    return NONE;
}

/* perr for the functions that return 0 or -1. */
static int bad(parser *ps, size_t off, const char *what)
{
    perr(ps, off, what);
    return -1;
}

static size_t oom(parser *ps)
{
    if (ps->rc == IT_OK) ps->rc = it__fail(ps->err, IT_ENOMEM, "out of memory compiling a regular expression");
    return NONE;
}

/* The byte at the parse position, or -1 at the end. */
static int peek(const parser *ps)
{
    return ps->pos < ps->len ? (unsigned char)ps->pat[ps->pos] : -1;
}

/* A new node of the given type, or NONE. */
static size_t new_node(parser *ps, int type, size_t off, uint32_t a)
{
    node *n = grow(ps->nodes, &ps->capnodes, ps->nnodes + 1, sizeof *n);
    if (!n) return oom(ps);
    ps->nodes = n;
    n[ps->nnodes] = (node){type, 1, -1, a, 0, NO_PC, off, NONE, NONE};
    return ps->nnodes++;
}

static size_t set_node(parser *ps, size_t off, const cset *set)
{
    cset *s = grow(ps->sets, &ps->capsets, ps->nsets + 1, sizeof *s);
    if (!s) return oom(ps);
    ps->sets = s;
    s[ps->nsets] = *set;
    return new_node(ps, N_SET, off, (uint32_t)ps->nsets++);
}

/* Appends kid to the child list of parent, whose last child is *tail. */
static void append(parser *ps, size_t parent, size_t *tail, size_t kid)
{
    if (*tail == NONE) ps->nodes[parent].kid = kid;
    else ps->nodes[*tail].next = kid;
    *tail = kid;
}

/* One character given as k bytes: a byte node, or a N_CAT of them (one atom for a quantifier). */
static size_t bytes_node(parser *ps, size_t off, const unsigned char *b, size_t k)
{
    if (k == 1) return new_node(ps, N_BYTE, off, b[0]);
    size_t cat = new_node(ps, N_CAT, off, 0), tail = NONE;
    for (size_t i = 0; i < k && cat != NONE; i++) {
        size_t n = new_node(ps, N_BYTE, off, b[i]);
        if (n == NONE) return NONE;
        append(ps, cat, &tail, n);
    }
    return cat;
}

/* The length of the UTF-8 character at s[i] (i < n): 2 to 4 for a lead byte followed by its
 * continuation bytes, else 1 (ASCII, or a byte that starts no well-formed sequence). */
static size_t utf8_len(const unsigned char *s, size_t i, size_t n)
{
    unsigned c = s[i];
    size_t k = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
    if (k > n - i) return 1;
    for (size_t j = 1; j < k; j++)
        if ((s[i + j] & 0xC0) != 0x80) return 1;
    return k;
}

/* Code point cp as a literal character (UTF-8 encoded). */
static size_t codepoint_node(parser *ps, size_t off, uint32_t cp)
{
    unsigned char b[4];
    size_t k = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (k == 1) b[0] = (unsigned char)cp;
    else {
        for (size_t i = k - 1; i > 0; i--, cp >>= 6) b[i] = (unsigned char)(0x80 | (cp & 0x3F));
        b[0] = (unsigned char)((0xF00u >> k) | cp); /* 0xC0, 0xE0 or 0xF0 with the top bits */
    }
    return bytes_node(ps, off, b, k);
}

/* The pattern character at the parse position as a literal (a whole UTF-8 sequence). */
static size_t literal(parser *ps)
{
    size_t off = ps->pos, k = utf8_len((const unsigned char *)ps->pat, off, ps->len);
    ps->pos += k;
    return bytes_node(ps, off, (const unsigned char *)ps->pat + off, k);
}

static void set_add(cset *s, unsigned lo, unsigned hi)
{
    for (unsigned c = lo; c <= hi; c++) s->bits[c >> 3] |= (unsigned char)(1u << (c & 7));
}

static void set_negate(cset *s)
{
    for (int i = 0; i < 16; i++) s->bits[i] = (unsigned char)~s->bits[i];
    s->nonascii = !s->nonascii;
}

/* The class of \d \D \s \S \w \W (ASCII members as in Python's str patterns); 0 if c is none. */
static int category(int c, cset *s)
{
    *s = (cset){{0}, 0};
    switch (c | 0x20) {
    case 'd': set_add(s, '0', '9'); break;
    case 's': set_add(s, '\t', '\r'), set_add(s, 0x1C, ' '); break;
    case 'w': set_add(s, '0', '9'), set_add(s, 'A', 'Z'), set_add(s, 'a', 'z'), set_add(s, '_', '_'); break;
    default: return 0;
    }
    if (c >= 'A' && c <= 'Z') set_negate(s);
    return 1;
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(int c, int base)
{
    return base == 16 ? (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') : c >= '0' && c < '0' + base;
}

/* Reads up to n digits of base at the parse position into *v; returns how many. */
static size_t digits(parser *ps, size_t n, int base, uint32_t *v)
{
    size_t k = 0;
    for (*v = 0; k < n && is_digit(peek(ps), base); k++, ps->pos++) {
        int c = peek(ps) | 0x20;
        *v = *v * (uint32_t)base + (uint32_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return k;
}

/* Escapes that stand for one code point (Python's _escape / _class_escape), the parse position
 * just after "\c" at off: 1 with *cp set, 0 when c is a plain escaped character, -1 on error. */
static int code_escape(parser *ps, size_t off, int in_class, uint32_t *cp)
{
    static const char from[] = "afnrtv\\", to[] = "\a\f\n\r\t\v\\";
    int c = (unsigned char)ps->pat[off + 1];
    const char *f = strchr(from, c);
    char what[48];
    if (f) return *cp = (unsigned char)to[f - from], 1;
    if (c == 'b' && in_class) return *cp = '\b', 1;
    if (c == 'x' || c == 'u' || c == 'U') {
        size_t want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        snprintf(what, sizeof what, "incomplete escape \\%c", c);
        if (digits(ps, want, 16, cp) != want) return bad(ps, off, what);
        if (*cp > 0x10FFFF) return bad(ps, off, "bad escape \\U (above U+10FFFF)");
        return 1;
    }
    if (c == 'N') return bad(ps, off, "\\N{...} named characters are not supported");
    if (c >= '0' && c <= '7' && (in_class || c == '0')) { /* octal: up to 3 digits (\0oo outside) */
        ps->pos = off + 1;
        digits(ps, 3, 8, cp);
    } else if (c >= '1' && c <= '9' && !in_class) { /* \ooo is octal, the rest back-references */
        ps->pos = off + 1;
        if (digits(ps, 3, 8, cp) != 3) return bad(ps, off, "backreferences are not supported");
    } else if (is_alpha(c) || is_digit(c, 10)) {
        snprintf(what, sizeof what, "bad escape \\%c", c);
        return bad(ps, off, what);
    } else {
        return 0;
    }
    if (*cp > 0377) return bad(ps, off, "octal escape value outside of range 0-0o377");
    return 1;
}

/* An escape outside a class, at the parse position. */
static size_t parse_escape(parser *ps)
{
    size_t off = ps->pos;
    if (off + 1 >= ps->len) return perr(ps, off, "bad escape (end of pattern)");
    int c = (unsigned char)ps->pat[off + 1];
    const char *asserts = "AZbB";
    const char *a = strchr(asserts, c);
    cset set;
    uint32_t cp;
    ps->pos = off + 2;
    if (category(c, &set)) return set_node(ps, off, &set);
    if (a) return new_node(ps, N_ASSERT, off, (uint32_t[]){A_BEGIN, A_END, A_WORD, A_NOTWORD}[a - asserts]);
    int r = code_escape(ps, off, 0, &cp);
    if (r < 0) return NONE;
    if (r > 0) return codepoint_node(ps, off, cp);
    ps->pos = off + 1; /* an escaped punctuation or non-ASCII character stands for itself */
    return literal(ps);
}

/* One class member at the parse position: a code point *cp, or (*is_cat) a category in *cat. */
static int class_item(parser *ps, uint32_t *cp, cset *cat, int *is_cat)
{
    size_t off = ps->pos;
    int c = (unsigned char)ps->pat[off];
    *is_cat = 0;
    *cp = (uint32_t)c;
    ps->pos++;
    if (c == '\\') {
        if (off + 1 >= ps->len) return bad(ps, off, "bad escape (end of pattern)");
        c = (unsigned char)ps->pat[off + 1];
        ps->pos = off + 2;
        if ((*is_cat = category(c, cat))) return 0;
        int r = code_escape(ps, off, 1, cp);
        if (r < 0) return -1;
        if (r == 0) *cp = (uint32_t)c;
    }
    if (*cp >= 0x80) return bad(ps, off, "non-ASCII characters in a class are not supported");
    return 0;
}

/* A class [...] or [^...] at the parse position (Python's rules: ']' first is literal; '-' first,
 * last or after a range is literal; a range needs two single characters, low <= high). */
static size_t parse_class(parser *ps)
{
    size_t off = ps->pos++;
    cset set = {{0}, 0}, cat, cat2;
    int negate = peek(ps) == '^', first = 1, is_cat, is_cat2;
    uint32_t lo, hi;
    ps->pos += (size_t)negate;
    for (;; first = 0) {
        size_t at = ps->pos;
        if (at >= ps->len) return perr(ps, off, "unterminated character set");
        if (ps->pat[at] == ']' && !first) break;
        if (class_item(ps, &lo, &cat, &is_cat)) return NONE;
        int range = peek(ps) == '-' && ps->pos + 1 < ps->len && ps->pat[ps->pos + 1] != ']';
        if (peek(ps) == '-' && ps->pos + 1 >= ps->len) return perr(ps, off, "unterminated character set");
        if (!range) {
            if (!is_cat) set_add(&set, lo, lo);
            for (int i = 0; is_cat && i < 16; i++) set.bits[i] |= cat.bits[i];
            set.nonascii |= is_cat && cat.nonascii;
            continue;
        }
        ps->pos++;
        if (class_item(ps, &hi, &cat2, &is_cat2)) return NONE;
        if (is_cat || is_cat2 || hi < lo) return perr(ps, at, "bad character range");
        set_add(&set, lo, hi);
    }
    ps->pos++;
    if (negate) set_negate(&set);
    return set_node(ps, off, &set);
}

/* Reads the name of (?P<name>...) at the parse position (after '<') up to '>'; 0 or -1. */
static int group_name(parser *ps, size_t off)
{
    size_t start = ps->pos;
    while (ps->pos < ps->len && ps->pat[ps->pos] != '>') {
        int c = peek(ps);
        int ok = c == '_' || is_alpha(c) || c >= 0x80 || (ps->pos > start && is_digit(c, 10));
        if (!ok) return bad(ps, ps->pos, "bad character in group name");
        ps->pos++;
    }
    size_t n = ps->pos - start;
    if (ps->pos >= ps->len) return bad(ps, off, "missing >, unterminated name");
    if (n == 0) return bad(ps, off, "missing group name");
    for (size_t i = 0; i < ps->nnames; i++)
        if (ps->names[2 * i + 1] == n && !memcmp(ps->pat + ps->names[2 * i], ps->pat + start, n))
            return bad(ps, start, "redefinition of group name");
    size_t *names = grow(ps->names, &ps->capnames, 2 * (ps->nnames + 1), sizeof *names);
    if (!names) return oom(ps), -1;
    ps->names = names;
    names[2 * ps->nnames] = start, names[2 * ps->nnames++ + 1] = n;
    ps->pos++;
    return 0;
}

/* The extension after "(?" (the '(' at off): (?: gives *group = NONE, (?P<name> a number; every
 * other extension is refused. 0 or -1. */
static int group_ext(parser *ps, size_t off, size_t *group)
{
    const char *p = ps->pat + off + 2;
    const char *what = "unknown extension";
    ps->pos = off + 3;
    if (off + 2 >= ps->len) what = "unexpected end of pattern";
    else if (*p == ':') return *group = NONE, 0;
    else if (*p == 'P' && p[1] == '<') return ps->pos++, *group = ++ps->ngroups, group_name(ps, off);
    else if (*p == 'P' && p[1] == '=') what = "named backreferences are not supported";
    else if (*p == '=' || *p == '!') what = "lookahead assertions are not supported";
    else if (*p == '<' && (p[1] == '=' || p[1] == '!')) what = "lookbehind assertions are not supported";
    else if (*p == '>') what = "atomic groups are not supported";
    else if (*p == '#') what = "comments are not supported";
    else if (*p == '(') what = "conditional groups are not supported";
    else if (strchr("aiLmsux-", *p)) what = "inline flags are not supported";
    return bad(ps, off, what);
}

static size_t parse_alt(parser *ps);

/* A group at the parse position: (...), (?:...) (its content itself) or (?P<name>...). */
static size_t parse_group(parser *ps)
{
    size_t off = ps->pos++, group = 0, kid;
    if (peek(ps) == '?') {
        if (group_ext(ps, off, &group)) return NONE;
    } else {
        group = ++ps->ngroups;
    }
    if (++ps->depth > RE_MAX_DEPTH) return perr(ps, off, "parentheses nested deeper than 100 are not supported");
    kid = parse_alt(ps);
    ps->depth--;
    if (kid == NONE) return NONE;
    if (peek(ps) != ')') return perr(ps, off, "missing ), unterminated subpattern");
    ps->pos++;
    if (group == NONE) return kid;
    size_t g = new_node(ps, N_GROUP, off, (uint32_t)group);
    if (g != NONE) ps->nodes[g].kid = kid;
    return g;
}

/* Reads decimal digits at p[*j..len) into *v (saturating at RE_MAX_COUNT + 1); whether any. */
static int count_at(const char *p, size_t len, size_t *j, uint32_t *v)
{
    size_t start = *j;
    for (*v = 0; *j < len && is_digit((unsigned char)p[*j], 10); ++*j)
        if ((*v = *v * 10 + (uint32_t)(p[*j] - '0')) > RE_MAX_COUNT) *v = RE_MAX_COUNT + 1;
    return *j > start;
}

/* Whether a quantifier starts at the parse position: * + ? or Python's well-formed braces {m}
 * {m,} {,n} {m,n} {,} (not "{}"). Sets *lo, *hi (RE_INF: unbounded; counts above RE_MAX_COUNT
 * read as RE_MAX_COUNT + 1) and *end, the offset after it. */
static int quant_at(const parser *ps, uint32_t *lo, uint32_t *hi, size_t *end)
{
    size_t j = ps->pos + 1;
    int c = peek(ps), has_hi;
    *end = j;
    if (c == '*' || c == '+' || c == '?') return *lo = c == '+', *hi = c == '?' ? 1 : RE_INF, 1;
    if (c != '{' || j >= ps->len || ps->pat[j] == '}') return 0;
    has_hi = count_at(ps->pat, ps->len, &j, lo);
    if (j < ps->len && ps->pat[j] == ',') j++, has_hi = count_at(ps->pat, ps->len, &j, hi);
    else *hi = *lo;
    if (j >= ps->len || ps->pat[j] != '}') return 0;
    if (!has_hi) *hi = RE_INF;
    *end = j + 1;
    return 1;
}

/* The quantifier after atom (if any) at the parse position. */
static size_t parse_quant(parser *ps, size_t atom)
{
    uint32_t lo, hi;
    size_t end, q = ps->pos;
    if (atom == NONE || !quant_at(ps, &lo, &hi, &end)) return atom;
    if (ps->nodes[atom].type == N_ASSERT) return perr(ps, q, "nothing to repeat");
    if (lo > RE_MAX_COUNT || (hi != RE_INF && hi > RE_MAX_COUNT))
        return perr(ps, q, "repetition counts above 1000 are not supported");
    if (lo > hi) return perr(ps, q, "min repeat greater than max repeat");
    ps->pos = end;
    int greedy = peek(ps) != '?';
    if (peek(ps) == '+') return perr(ps, ps->pos, "possessive quantifiers are not supported");
    ps->pos += (size_t)!greedy;
    uint32_t lo2, hi2;
    if (quant_at(ps, &lo2, &hi2, &end)) return perr(ps, ps->pos, "multiple repeat");
    size_t r = new_node(ps, N_REP, q, lo);
    if (r == NONE) return NONE;
    ps->nodes[r].b = hi, ps->nodes[r].greedy = greedy, ps->nodes[r].kid = atom;
    return r;
}

/* One atom at the parse position (before its quantifier). */
static size_t parse_atom(parser *ps)
{
    static const cset dot = {{0xFF, 0xFB, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* all but '\n' (bit 10) */
                              0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
                             1};
    size_t off = ps->pos, end;
    uint32_t lo, hi;
    switch (peek(ps)) {
    case '(': return parse_group(ps);
    case '[': return parse_class(ps);
    case '\\': return parse_escape(ps);
    case '.': return ps->pos++, set_node(ps, off, &dot);
    case '^': return ps->pos++, new_node(ps, N_ASSERT, off, A_BEGIN);
    case '$': return ps->pos++, new_node(ps, N_ASSERT, off, A_END_NL);
    }
    if (quant_at(ps, &lo, &hi, &end)) return perr(ps, off, "nothing to repeat");
    return literal(ps);
}

/* A sequence of quantified atoms up to '|', ')' or the end: a N_CAT (maybe of nothing). */
static size_t parse_seq(parser *ps)
{
    size_t cat = new_node(ps, N_CAT, ps->pos, 0), tail = NONE;
    if (cat == NONE) return NONE;
    for (int c = peek(ps); c >= 0 && c != '|' && c != ')'; c = peek(ps)) {
        size_t a = parse_quant(ps, parse_atom(ps));
        if (a == NONE) return NONE;
        append(ps, cat, &tail, a);
    }
    return cat;
}

/* Alternatives separated by '|': the one sequence, or a N_ALT of them in order. */
static size_t parse_alt(parser *ps)
{
    size_t first = parse_seq(ps);
    if (first == NONE || peek(ps) != '|') return first;
    size_t alt = new_node(ps, N_ALT, ps->pos, 0), tail = NONE;
    if (alt == NONE) return NONE;
    append(ps, alt, &tail, first);
    while (peek(ps) == '|') {
        ps->pos++;
        size_t k = parse_seq(ps);
        if (k == NONE) return NONE;
        append(ps, alt, &tail, k);
    }
    return alt;
}

/* ============================================================================================ */
/* Code generation                                                                               */
/* ============================================================================================ */

typedef struct gen {
    parser *ps;
    inst *prog;
    size_t n, cap;
    frame *frames;
    size_t nframes, capframes;
    uint32_t cur;  /* the frame being emitted, or NO_PC */
    size_t nslots; /* slots given out so far */
    size_t off;    /* offset of the repetition being expanded, for a too-large message */
} gen;

/* Appends an instruction; its pc, or NONE (error recorded) when the program is full. */
static size_t emit(gen *g, uint32_t op, uint32_t x, uint32_t y)
{
    if (g->n >= RE_MAX_PROG)
        return perr(g->ps, g->off, "patterns compiling to more than 20000 instructions are not supported");
    inst *p = grow(g->prog, &g->cap, g->n + 1, sizeof *p);
    if (!p) return oom(g->ps);
    g->prog = p;
    p[g->n] = (inst){op, x, y, g->cur, 0};
    return g->n++;
}

/* Enters the body of an empty-checked loop with slot s (after its SAVE); 0 or -1. */
static int enter(gen *g, uint32_t s)
{
    frame *f = grow(g->frames, &g->capframes, g->nframes + 1, sizeof *f);
    if (!f) return oom(g->ps), -1;
    g->frames = f;
    f[g->nframes] = (frame){s, g->cur, g->cur == NO_PC ? 1 : f[g->cur].depth + 1};
    g->cur = (uint32_t)g->nframes++;
    return 0;
}

/* Whether node i can match the empty string (memoised in the node). */
static int nullable(parser *ps, size_t i)
{
    node *nd = &ps->nodes[i];
    if (nd->nullable >= 0) return nd->nullable;
    int r = nd->type == N_ASSERT || nd->type == N_CAT || (nd->type == N_REP && nd->a == 0);
    if (nd->type == N_GROUP || (nd->type == N_REP && nd->a > 0)) r = nullable(ps, nd->kid);
    for (size_t k = nd->kid; (nd->type == N_CAT || nd->type == N_ALT) && k != NONE; k = ps->nodes[k].next)
        r = nd->type == N_CAT ? r && nullable(ps, k) : r || nullable(ps, k);
    return nd->nullable = r;
}

/* Points every instruction on the chain at pc (linked through the field that gets the target:
 * x for JMP and a lazy SPLIT, y for a greedy SPLIT and JEMPTY) to target. */
static void patch(gen *g, size_t pc, size_t target)
{
    while (pc != NO_PC) {
        inst *in = &g->prog[pc];
        uint32_t *f = in->op == OP_JMP || (in->op == OP_SPLIT && in->x != pc + 1) ? &in->x : &in->y;
        pc = *f; /* NO_PC ends the chain */
        *f = (uint32_t)target;
    }
}

static int gen_node(gen *g, size_t i);

/* a|b|c: SPLIT L1, N1; L1: a; JMP out; N1: SPLIT L2, N2; L2: b; JMP out; N2: c; out: */
static int gen_alt(gen *g, const node *nd)
{
    size_t jumps = NO_PC;
    for (size_t k = nd->kid; k != NONE; k = g->ps->nodes[k].next) {
        int last = g->ps->nodes[k].next == NONE;
        size_t split = last ? 0 : emit(g, OP_SPLIT, 0, 0);
        if (split == NONE || gen_node(g, k)) return -1;
        if (last) break;
        if ((jumps = emit(g, OP_JMP, (uint32_t)jumps, 0)) == NONE) return -1;
        g->prog[split].x = (uint32_t)split + 1, g->prog[split].y = (uint32_t)g->n;
    }
    patch(g, jumps, g->n);
    return 0;
}

/* The unbounded tail of a repetition. A body that cannot match empty loops plainly,
 *   L: SPLIT body, out (lazy: out, body); body: X; JMP L; out:
 * and one that can records where each iteration starts and leaves after an empty one (CPython's
 * MAX_UNTIL / MIN_UNTIL zero-width protection):
 *   L: SPLIT body, out; body: SAVE s; X; JEMPTY s, out; JMP L; out: */
static int gen_star(gen *g, node *nd, int nul)
{
    size_t loop = emit(g, OP_SPLIT, 0, 0), je = NO_PC;
    if (nul && nd->slot == NO_PC) nd->slot = (uint32_t)g->nslots++;
    if (loop == NONE || (nul && (emit(g, OP_SAVE, nd->slot, 0) == NONE || enter(g, nd->slot)))) return -1;
    if (gen_node(g, nd->kid) || (nul && (je = emit(g, OP_JEMPTY, nd->slot, NO_PC)) == NONE)) return -1;
    if (nul) g->cur = g->frames[g->cur].parent;
    if (emit(g, OP_JMP, (uint32_t)loop, 0) == NONE) return -1;
    g->prog[loop].x = nd->greedy ? (uint32_t)loop + 1 : (uint32_t)g->n;
    g->prog[loop].y = nd->greedy ? (uint32_t)g->n : (uint32_t)loop + 1;
    patch(g, je, g->n);
    return 0;
}

/* count optional copies, nested: (X (X (X)?)?)? as SPLIT body, out; body: [SAVE s] X [JEMPTY s,
 * out] ... out:, every copy but the last ending the repetition after an empty iteration. */
static int gen_opt(gen *g, node *nd, uint32_t count, int nul)
{
    size_t chain = NO_PC;
    if (nul && count > 1 && nd->slot == NO_PC) nd->slot = (uint32_t)g->nslots++;
    for (uint32_t k = 0; k < count; k++) {
        int check = nul && k + 1 < count;
        size_t split = emit(g, OP_SPLIT, 0, 0);
        if (split == NONE) return -1;
        g->prog[split].x = nd->greedy ? (uint32_t)split + 1 : (uint32_t)chain;
        g->prog[split].y = nd->greedy ? (uint32_t)chain : (uint32_t)split + 1;
        chain = split;
        if (check && (emit(g, OP_SAVE, nd->slot, 0) == NONE || enter(g, nd->slot))) return -1;
        if (gen_node(g, nd->kid)) return -1;
        if (check && (chain = emit(g, OP_JEMPTY, nd->slot, (uint32_t)chain)) == NONE) return -1;
        if (check) g->cur = g->frames[g->cur].parent;
    }
    patch(g, chain, g->n);
    return 0;
}

/* X{lo,hi}: lo copies of X, then the optional part. When X cannot match empty and hi is
 * unbounded, the last required copy is the loop itself (X+ is L: X; SPLIT L, out). */
static int gen_rep(gen *g, node *nd)
{
    int nul = nullable(g->ps, nd->kid);
    int plus = nd->b == RE_INF && nd->a > 0 && !nul;
    size_t saved = g->off, body;
    g->off = nd->off;
    for (uint32_t k = 0; k + (uint32_t)plus < nd->a; k++)
        if (gen_node(g, nd->kid)) return -1;
    if (plus) {
        body = g->n;
        if (gen_node(g, nd->kid) || emit(g, OP_SPLIT, 0, 0) == NONE) return -1;
        g->prog[g->n - 1].x = nd->greedy ? (uint32_t)body : (uint32_t)g->n;
        g->prog[g->n - 1].y = nd->greedy ? (uint32_t)g->n : (uint32_t)body;
    } else if (nd->b == RE_INF ? gen_star(g, nd, nul) : gen_opt(g, nd, nd->b - nd->a, nul)) {
        return -1;
    }
    g->off = saved;
    return 0;
}

/* Emits the code of node i. */
static int gen_node(gen *g, size_t i)
{
    node *nd = &g->ps->nodes[i];
    switch (nd->type) {
    case N_BYTE: return emit(g, OP_BYTE, nd->a, 0) == NONE ? -1 : 0;
    case N_ASSERT: return emit(g, OP_ASSERT, nd->a, 0) == NONE ? -1 : 0;
    case N_SET:
        if (!g->ps->sets[nd->a].nonascii) return emit(g, OP_SET, nd->a, 0) == NONE ? -1 : 0;
        for (int k = 0; k < 4; k++)
            if (emit(g, k ? OP_CONT : OP_CHAR, nd->a, 0) == NONE) return -1;
        return 0;
    case N_CAT:
        for (size_t k = nd->kid; k != NONE; k = g->ps->nodes[k].next)
            if (gen_node(g, k)) return -1;
        return 0;
    case N_ALT: return gen_alt(g, nd);
    case N_GROUP:
        if (emit(g, OP_SAVE, 2 * nd->a, 0) == NONE || gen_node(g, nd->kid)) return -1;
        return emit(g, OP_SAVE, 2 * nd->a + 1, 0) == NONE ? -1 : 0;
    default: return gen_rep(g, nd);
    }
}

static int consumes(uint32_t op)
{
    return op == OP_BYTE || op == OP_SET || op == OP_CHAR || op == OP_CONT;
}

/* The program SAVE 0; <root>; SAVE 1; MATCH, moved into re with its sets and frames; then the
 * visit marks and the scratch size. 0 or -1. */
static int generate(parser *ps, size_t root, it__re *re)
{
    gen g = {ps, NULL, 0, 0, NULL, 0, 0, NO_PC, 2 * (ps->ngroups + 1), 0};
    int bad = emit(&g, OP_SAVE, 0, 0) == NONE || gen_node(&g, root) || emit(&g, OP_SAVE, 1, 0) == NONE ||
              emit(&g, OP_MATCH, 0, 0) == NONE;
    re->prog = g.prog, re->ninst = g.n, re->frames = g.frames, re->nframes = g.nframes;
    re->sets = ps->sets, re->nsets = ps->nsets, ps->sets = NULL;
    re->ngroups = ps->ngroups, re->nslots = g.nslots;
    if (bad) return -1;
    for (size_t pc = 0; pc < g.n; pc++) {
        inst *in = &g.prog[pc];
        in->mark = (uint32_t)re->nmarks;
        re->nmarks += 1 + (consumes(in->op) || in->frame == NO_PC ? 0 : g.frames[in->frame].depth);
    }
    /* scratch: two thread lists (ninst, 1 + nslots), marks, stack (nmarks + 1, 2), 3 slot rows */
    size_t table;
    if (it__mul_size(g.n, g.nslots + 1, &table) || table > RE_MAX_TABLE || re->nmarks > RE_MAX_TABLE) {
        perr(ps, 0, "patterns this large (groups and loops times size) are not supported");
        return -1;
    }
    re->nwords = 2 * table + re->nmarks + 2 * (re->nmarks + 1) + 3 * g.nslots;
    return 0;
}

/* ============================================================================================ */
/* Compilation                                                                                   */
/* ============================================================================================ */

int it__re_compile(it__re **out, const char *pattern, it_err *err)
{
    *out = NULL;
    if (!pattern) return it__fail(err, IT_EINVAL, "no regular expression given");
    parser ps = {0};
    ps.pat = pattern, ps.len = strlen(pattern), ps.err = err;
    size_t root = parse_alt(&ps);
    if (root != NONE && ps.pos < ps.len) root = perr(&ps, ps.pos, "unbalanced parenthesis");
    it__re *re = root == NONE ? NULL : calloc(1, sizeof *re);
    if (root != NONE && !re) oom(&ps);
    if (re && generate(&ps, root, re)) {
        it__re_free(re);
        re = NULL;
    }
    free(ps.nodes);
    free(ps.sets);
    free(ps.names);
    if (!re) return ps.rc;
    *out = re;
    return IT_OK;
}

void it__re_free(it__re *re)
{
    if (!re) return;
    free(re->prog);
    free(re->sets);
    free(re->frames);
    free(re);
}

size_t it__re_groups(const it__re *re)
{
    return re ? re->ngroups : 0;
}

/* ============================================================================================ */
/* Pike VM                                                                                       */
/* ============================================================================================ */

typedef struct vm {
    const it__re *re;
    const unsigned char *s;
    size_t len, nslots, row; /* row = 1 + nslots words per thread */
    size_t *cur, *nxt;       /* (ninst, row) threads of this step and the next, by priority: pc, slots */
    size_t ncur, nnxt;
    size_t *mark;            /* (nmarks) the stamp of the step that last reached each (instruction, state) */
    size_t stamp;
    size_t *stack;           /* (nmarks + 1, 2) depth-first work: pc to visit, or ninst + slot, value */
    size_t *work;            /* (nslots) the slots along the path being followed */
    size_t *best;            /* (nslots) the slots of the best match so far */
    int full;                /* fullmatch: MATCH counts only at the end of the subject */
    int matched;
} vm;

static int is_word(unsigned char c)
{
    return is_alpha(c) || is_digit(c, 10) || c == '_';
}

/* Whether assertion kind holds at pos (Python 3.11: \b and \B never hold in an empty subject). */
static int assert_ok(const vm *m, uint32_t kind, size_t pos)
{
    int before = pos > 0 && is_word(m->s[pos - 1]), after = pos < m->len && is_word(m->s[pos]);
    switch (kind) {
    case A_BEGIN: return pos == 0;
    case A_END: return pos == m->len;
    case A_END_NL: return pos == m->len || (pos + 1 == m->len && m->s[pos] == '\n');
    case A_WORD: return m->len > 0 && before != after;
    default: return m->len > 0 && before == after;
    }
}

static int in_set(const cset *s, unsigned char c)
{
    return c < 0x80 ? (s->bits[c >> 3] >> (c & 7)) & 1 : s->nonascii;
}

/* Where the thread at pc goes on after the subject byte at pos, or NONE if it does not match. */
static size_t advance(const vm *m, size_t pc, size_t pos)
{
    const inst *in = &m->re->prog[pc];
    unsigned char c = m->s[pos];
    switch (in->op) {
    case OP_BYTE: return c == in->x ? pc + 1 : NONE;
    case OP_SET: return c < 0x80 && in_set(&m->re->sets[in->x], c) ? pc + 1 : NONE;
    case OP_CHAR: return in_set(&m->re->sets[in->x], c) ? pc + 5 - utf8_len(m->s, pos, m->len) : NONE;
    default: return pc + 1; /* OP_CONT */
    }
}

/* Marks instruction pc reached at pos in this step; 0 if it was reached before in the same state.
 * The state is how many of its enclosing empty-checked loop bodies, from the outermost, are in
 * an iteration begun before pos (JEMPTY tests nothing else, and the fresh ones are innermost),
 * so a later path in the same state has the same future and lower priority. A consuming
 * instruction has one state: after a byte no iteration is empty. */
static int first_visit(vm *m, size_t pc, size_t pos)
{
    const inst *in = &m->re->prog[pc];
    const frame *fr = m->re->frames;
    uint32_t f = consumes(in->op) ? NO_PC : in->frame;
    while (f != NO_PC && m->work[fr[f].slot] == pos) f = fr[f].parent;
    size_t key = in->mark + (f == NO_PC ? 0 : fr[f].depth);
    if (m->mark[key] == m->stamp) return 0;
    m->mark[key] = m->stamp;
    return 1;
}

/* Follows the empty transitions from pc at subject position pos, starting with slots src, depth
 * first and preferred branch first -- the order a backtracking matcher tries them in -- and
 * appends each consuming instruction reached to the next list with its slots; a path reaching
 * an instruction already reached in the same state is dropped (first_visit). Reaching MATCH
 * records the match and returns 1: every path not yet followed has lower priority. */
static int closure(vm *m, size_t pc, size_t pos, const size_t *src)
{
    const inst *prog = m->re->prog;
    size_t ninst = m->re->ninst, sp = 0;
    memcpy(m->work, src, m->nslots * sizeof *src);
    m->stack[sp++] = pc, m->stack[sp++] = 0;
    while (sp) {
        size_t val = m->stack[--sp];
        pc = m->stack[--sp];
        if (pc >= ninst) { /* leaving the part of the path after a SAVE: undo it */
            m->work[pc - ninst] = val;
            continue;
        }
        while (pc != NONE && first_visit(m, pc, pos)) {
            const inst *in = &prog[pc];
            switch (in->op) {
            case OP_JMP: pc = in->x; break;
            case OP_SPLIT: m->stack[sp++] = in->y, m->stack[sp++] = 0, pc = in->x; break;
            case OP_SAVE:
                m->stack[sp++] = ninst + in->x, m->stack[sp++] = m->work[in->x];
                m->work[in->x] = pos, pc++;
                break;
            case OP_JEMPTY: pc = m->work[in->x] == pos ? in->y : pc + 1; break;
            case OP_ASSERT: pc = assert_ok(m, in->x, pos) ? pc + 1 : NONE; break;
            case OP_MATCH:
                if (m->full && pos != m->len) pc = NONE;
                else return memcpy(m->best, m->work, m->nslots * sizeof *src), m->matched = 1;
                break;
            default: { /* a consuming instruction: a thread for the next step */
                size_t *t = m->nxt + m->nnxt++ * m->row;
                t[0] = pc;
                memcpy(t + 1, m->work, m->nslots * sizeof *src);
                pc = NONE;
            }
            }
        }
    }
    return 0;
}

/* Runs the program on s[start..len), one step per byte; 1 if it matched (slots in m->best). */
static int run(vm *m, size_t start)
{
    size_t *init = m->best + m->nslots, *t;
    for (size_t k = 0; k < m->nslots; k++) init[k] = NONE;
    m->stamp = 1;
    closure(m, 0, start, init);
    for (size_t pos = start;; pos++) {
        t = m->cur, m->cur = m->nxt, m->nxt = t;
        m->ncur = m->nnxt, m->nnxt = 0;
        if (m->ncur == 0 || pos == m->len) break;
        m->stamp++;
        for (size_t i = 0; i < m->ncur; i++) {
            t = m->cur + i * m->row;
            size_t next = advance(m, t[0], pos);
            if (next != NONE && closure(m, next, pos + 1, t + 1)) break; /* cut the rest */
        }
    }
    return m->matched;
}

/* Clears cap, sets up scratch for re (re->nwords words, on this stack when they fit) and runs:
 * 1 (spans to cap), 0, or -1 when the scratch cannot be allocated. */
static int execute(const it__re *re, const char *s, size_t len, size_t start, int full, size_t *cap, size_t ncap)
{
    size_t local[RE_LOCAL], *w = local;
    for (size_t k = 0; cap && k < ncap; k++) cap[k] = NONE;
    if (!re || (!s && len) || start > len) return 0;
    if (re->nwords > RE_LOCAL && !(w = it__malloc_n(re->nwords, sizeof *w))) return -1;
    vm m = {.re = re, .s = (const unsigned char *)s, .len = len, .nslots = re->nslots, .row = re->nslots + 1};
    m.full = full;
    size_t table = re->ninst * m.row;
    m.cur = w, m.nxt = w + table, m.mark = w + 2 * table, m.stack = m.mark + re->nmarks;
    m.work = m.stack + 2 * (re->nmarks + 1), m.best = m.work + m.nslots;
    memset(m.mark, 0, re->nmarks * sizeof *m.mark);
    int r = run(&m, start);
    for (size_t k = 0; r > 0 && cap && k < (ncap & ~(size_t)1) && k < 2 * (re->ngroups + 1); k++) cap[k] = m.best[k];
    if (w != local) free(w);
    return r;
}

/* As declared in internal.h; -1 (not 0 or 1) only when out of memory for a large pattern. */
int it__re_fullmatch(const it__re *re, const char *s, size_t len, size_t start)
{
    return execute(re, s, len, start, 1, NULL, 0);
}

int it__re_match(const it__re *re, const char *s, size_t len, size_t start, size_t *cap, size_t ncap)
{
    return execute(re, s, len, start, 0, cap, ncap);
}
