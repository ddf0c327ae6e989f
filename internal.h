/* internal.h -- helpers shared between the library's files (prefix it__). Not part of the API. */
#ifndef ITERIS_INTERNAL_H
#define ITERIS_INTERNAL_H

#include "iteris.h"

#include <stdarg.h>
#include <stdio.h>

#if defined(__GNUC__) || defined(__clang__)
#define IT__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define IT__PRINTF(a, b)
#endif

/* ---- errors (util.c) ---- */

/* Records code and a printf-formatted message in err (if not NULL); returns code, so that a
 * failing path reads `return it__fail(err, IT_EFORMAT, "%s: ...", path);`. */
int it__fail(it_err *err, int code, const char *fmt, ...) IT__PRINTF(3, 4);
/* Control characters in s (NUL-terminated, in a buffer of size bytes) written as \n, \r, \t or
 * \xNN, cut to fit: a message or description that quotes input stays one line. */
void it__escape_controls(char *s, size_t size);

/* Prefixes err->msg with "prefix: " (used to add a file name to a message from a lower layer). */
void it__err_prefix(it_err *err, const char *prefix);

/* Appends sep and text to err->msg, truncating at IT_ERR_MAX. */
void it__err_append(it_err *err, const char *sep, const char *text);

/* ---- text (json.c) ---- */

/* 1 if s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points
 * above U+10FFFF), else 0. */
int it__utf8_valid(const void *s, size_t n);

/* ---- sizes and memory (util.c) ---- */

/* a * b and a + b with overflow detection: return 0 and set *out, or return -1. */
int it__mul_size(size_t a, size_t b, size_t *out);
int it__add_size(size_t a, size_t b, size_t *out);
int it__mul_u64(uint64_t a, uint64_t b, uint64_t *out);

/* malloc(n * size) with the product checked; NULL on overflow or failure. calloc semantics for
 * it__calloc. */
void *it__malloc_n(size_t n, size_t size);
void *it__calloc(size_t n, size_t size);
char *it__strdup(const char *s);
char *it__strndup(const char *s, size_t len);

/* ---- little-endian loads and stores, whatever the host's byte order ---- */

static inline uint16_t it__le16(const void *p)
{
    const unsigned char *b = (const unsigned char *)p;
    return (uint16_t)(b[0] | (unsigned)b[1] << 8);
}
static inline uint32_t it__le32(const void *p)
{
    const unsigned char *b = (const unsigned char *)p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t it__le64(const void *p)
{
    const unsigned char *b = (const unsigned char *)p;
    return (uint64_t)it__le32(b) | (uint64_t)it__le32(b + 4) << 32;
}
static inline void it__put_le16(void *p, uint16_t v)
{
    unsigned char *b = (unsigned char *)p;
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}
static inline void it__put_le32(void *p, uint32_t v)
{
    unsigned char *b = (unsigned char *)p;
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static inline void it__put_le64(void *p, uint64_t v)
{
    unsigned char *b = (unsigned char *)p;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

/* ---- files (util.c) ---- */

/* Opens a regular file for reading (a FIFO, device or folder is refused at once, never waited
 * on): sets *fd and *size, or returns an error code with err filled. */
int it__open_regular(const char *path, int *fd, size_t *size, it_err *err);

/* Reads a whole regular file into a NUL-terminated malloc'd buffer; *len excludes the NUL.
 * Refuses files larger than max bytes (IT_EFORMAT). Messages name the path. */
int it__read_file(const char *path, size_t max, char **data, size_t *len, it_err *err);

/* Joins a folder and a file name with one '/'; malloc'd, NULL on failure. */
char *it__path_join(const char *dir, const char *name);

/* 1 if path names a directory, 0 otherwise. */
int it__is_dir(const char *path);
/* 1 if path names an existing file of any kind, 0 otherwise. */
int it__exists(const char *path);

/* splitmix64 (Steele, Lea & Flood, OOPSLA 2014): the seeded stream behind every random number the
 * library draws (SVD start vectors, DARE masks); the same on every platform. */
uint64_t it__splitmix64(uint64_t *state);

/* Atomic output: it__out_open creates a temporary file next to path (same folder, so the final
 * rename stays within one filesystem); write with it__out_write; it__out_commit flushes, syncs and
 * renames it over path (inside an output set, it_out_begin, at the set's end); it__out_abort (also
 * safe after a failed write or commit) removes it. */
typedef struct it__out {
    FILE *f;
    char *path;
    char *tmp;
    int failed;
    int slot; /* where a signal handler finds tmp (-1: nowhere) */
} it__out;

int it__out_open(it__out *o, const char *path, it_err *err);
int it__out_write(it__out *o, const void *data, size_t len, it_err *err);
int it__out_commit(it__out *o, it_err *err);
void it__out_abort(it__out *o);
/* it_make_dir made dir: inside an output set, it is removed again if the set fails. Fails (and
 * removes dir) when it cannot be noted. */
int it__out_dir_made(const char *dir, it_err *err);

/* ---- reading a configuration object (json.c) ---- */

/* The keys of obj, read with messages that name the file. */
typedef struct it__jreader {
    const char *path;      /* the file, for messages */
    const it_json *obj;    /* the object the keys are read from */
    it_err *err;
} it__jreader;

/* IT_EFORMAT "<path>: <key>: expected <expected>, got <v described>". */
int it__jr_bad(const it__jreader *r, const char *key, const char *expected, const it_json *v);
/* The value of key, NULL when absent or null (Python's None: the constructor's default). */
const it_json *it__jr_get(const it__jreader *r, const char *key);

/* ---- threads (thread.c) ---- */

/* Runs fn(ctx, i) for every i in [0, n) on the thread pool and returns when all are done. The
 * order is unspecified: each i must write its own outputs. */
void it__parallel_for(size_t n, void (*fn)(void *ctx, size_t i), void *ctx);

/* ---- GEMM micro-kernels (linalg.c, linalg_<isa>.c) ---- */

/* The micro-kernel contract, one per precision (BLIS-style, row-major C):
 *   a  packed op(A): k groups of MR values, a[p*MR + i] = op(A)[i][p] (rows past m are zero);
 *   b  packed op(B): k groups of NR values, b[p*NR + j] = op(B)[p][j] (columns past n are zero);
 *   for i < m <= MR and j < n <= NR:  C[i*ldc + j] = fma(alpha, acc[i][j], beta * C[i*ldc + j])
 *   in the SIMD kernels (alpha * acc + beta * C, unfused, in the portable one), or alpha * acc[i][j]
 *   when beta == 0 (C is then not read), where acc[i][j] accumulates a[p*MR + i] * b[p*NR + j] over
 *   p = 0, 1, ..., k-1 in that order (fused multiply-adds in the SIMD kernels). A full tile and a
 *   partial one compute the same values. */
typedef void (*it__skern)(size_t k, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                          size_t m, size_t n);
typedef void (*it__dkern)(size_t k, const double *a, const double *b, double *c, size_t ldc, double alpha,
                          double beta, size_t m, size_t n);

/* The largest micro-tile any kernel set may declare (scratch tiles in linalg.c are this size). */
#define IT__MAX_MR 16
#define IT__MAX_NR 64

/* A kernel set: micro-tiles MR x NR and cache blocking (KC: depth of a packed panel; NB: columns of
 * op(B) packed at once, to stay in L2; MB: rows of op(A) packed at once, to stay in L3). */
/* The base case of the triangular solves: X op(L) = B for B [m x n], n <= IT__TRSM_BASE, with exactly the
 * operations of it_dtrsm_right_naive (separate multiply and subtract, in the same order), only
 * vectorised across rows: results identical to the naive routine. */
#define IT__TRSM_BASE 64
typedef void (*it__dtrsm_rows)(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb);

typedef struct it__kernels {
    const char *name;
    size_t smr, snr, skc, snb, smb; /* float */
    size_t dmr, dnr, dkc, dnb, dmb; /* double */
    it__skern sgemm;
    it__dkern dgemm;
    it__dtrsm_rows dtrsm_rows;
} it__kernels;

extern const it__kernels it__kernels_generic; /* linalg.c: portable C, always there */
extern const it__kernels it__kernels_avx2;    /* linalg_avx2.c (x86-64 builds with SIMD) */
extern const it__kernels it__kernels_avx512;  /* linalg_avx512.c */
extern const it__kernels it__kernels_neon;    /* linalg_neon.c (aarch64 builds with SIMD) */

/* The kernel set in use (chosen at the first call). */
const it__kernels *it__kern(void);

/* Flops done by the GEMM driver since the start (2 m n k per call; for the benchmarks). */
uint64_t it__gemm_flops(void);

/* Task i's part of the IterIS objective at a site (iteris.c): l_i ||X_i V_i^T - Xt_i W^T||_F^2 from
 * the statistics, = l_i (tr(V XX V^T) - 2 tr(V XT W^T) + tr(W TT W^T)); V_i = dW_i, plus W0 with
 * o->with_pretrain. IT_OK or IT_ENOMEM. */
int it__site_objective(const it_site *site, const it_site_task *t, const it_solve_opts *o, double l, const double *W,
                       double *out);

/* Regular expressions (regex.c): the subset of Python's `re` that PEFT configurations use
 * (target_modules / exclude_modules as one string, rank_pattern / alpha_pattern keys,
 * layers_pattern): literals, '.', classes [...] with ranges and negation, escapes \d \w \s \D \W \S
 * and escaped metacharacters, groups (...) and (?:...), alternation |, quantifiers * + ? {m} {m,}
 * {m,n} and their lazy forms, anchors ^ $ (\A \Z). Matching is by simulation, linear in the
 * subject's length (no catastrophic backtracking). */
typedef struct it__re it__re;
/* Compiles pattern; IT_EFORMAT with a message "...: at offset N: ..." for an unsupported or
 * malformed pattern (the caller prefixes the file and key). */
int it__re_compile(it__re **out, const char *pattern, it_err *err);
void it__re_free(it__re *re);
/* 1 when the pattern matches s[start..len) completely (re.fullmatch with pos=start: '^' and \A
 * match only at absolute position 0, as Python's do), 0 when it does not, -1 when the working
 * memory of a large pattern cannot be allocated (callers test == 1 and treat -1 as IT_ENOMEM). */
int it__re_fullmatch(const it__re *re, const char *s, size_t len, size_t start);
/* 1 when the pattern matches a prefix of s[start..len) (re.match), 0 when not, -1 out of memory. The spans Python would
 * report (greedy / lazy as written, leftmost alternative first) go to cap (if not NULL): cap[2k],
 * cap[2k+1] for group k (k = 0 the whole match) for k < ncap / 2; SIZE_MAX for a group that did
 * not take part. */
int it__re_match(const it__re *re, const char *s, size_t len, size_t start, size_t *cap, size_t ncap);
/* The number of capturing groups. */
size_t it__re_groups(const it__re *re);

/* ---- allocation faults (a test build: make faults) ----
 * Built with -DIT_FAULTS, every allocation of the library goes through test/faults.c, which counts
 * live blocks and fails the allocation it is told to. A site is where the library asks: the line of
 * a malloc / calloc / realloc / aligned_alloc, or of a call to one of the helpers above (which
 * name their caller's line with it__fault_site). */
#ifdef IT_FAULTS
#include <stdlib.h>
void *it__fault_malloc(size_t n, const char *file, int line);
void *it__fault_calloc(size_t n, size_t size, const char *file, int line);
void *it__fault_realloc(void *p, size_t n, const char *file, int line);
void *it__fault_aligned_alloc(size_t align, size_t n, const char *file, int line);
void it__fault_free(void *p);
int it__fault_site(const char *file, int line); /* names the next allocation's site; returns 0 */
void *it__fault_done(void *p);                   /* forgets a site that no allocation took; returns p */
#define malloc(n) it__fault_malloc((n), __FILE__, __LINE__)
#define calloc(n, s) it__fault_calloc((n), (s), __FILE__, __LINE__)
#define realloc(p, n) it__fault_realloc((p), (n), __FILE__, __LINE__)
#define aligned_alloc(a, n) it__fault_aligned_alloc((a), (n), __FILE__, __LINE__)
#define free(p) it__fault_free(p)
#define it__malloc_n(n, s) it__fault_done((it__fault_site(__FILE__, __LINE__), (it__malloc_n)((n), (s))))
#define it__calloc(n, s) it__fault_done((it__fault_site(__FILE__, __LINE__), (it__calloc)((n), (s))))
#define it__strdup(s) ((char *)it__fault_done((it__fault_site(__FILE__, __LINE__), (it__strdup)(s))))
#define it__strndup(s, n) ((char *)it__fault_done((it__fault_site(__FILE__, __LINE__), (it__strndup)((s), (n)))))
#define it__path_join(d, n) ((char *)it__fault_done((it__fault_site(__FILE__, __LINE__), (it__path_join)((d), (n)))))
#endif

#endif /* ITERIS_INTERNAL_H */
