/* test/test_malformed.c -- the safetensors reader against hostile files.
 *
 * Every malformed file below is built byte by byte (8-byte little-endian N, N header bytes, data)
 * and must be refused with IT_EFORMAT and a one-line message "<file>: <what> (<Reason>)", where
 * Reason is the reference reader's SafeTensorError name for the first rule the file breaks, in the
 * reference's order (FACTS.md 1.3): HeaderTooSmall, HeaderTooLarge, InvalidHeaderLength,
 * InvalidHeader (UTF-8), InvalidHeaderDeserialization (JSON and field types), then per tensor in
 * data_offsets order InvalidOffset, ValidationOverflow, MisalignedSlice, TensorInvalidInfo, and
 * last MetadataIncompleteBuffer. Each case runs three ways: it_st_open_mem, it_st_open on a real
 * file (mmap), and it_st_open with ITERIS_NO_MMAP=1 (the read() fallback).
 *
 * Then the edge cases the reference accepts, sharded checkpoints (index + shards, by index path
 * and by folder) and paths that are not regular files. */
#include "test.h"

#include "iteris.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MEMNAME "mem.safetensors"

/* ============================================================================================ */
/* Building files                                                                                */
/* ============================================================================================ */

/* The bytes of a file: N as 8 bytes little-endian, hlen header bytes, then ndata data bytes (a copy
 * of data, or zeros when data is NULL). malloc'd; *len receives the size. */
static unsigned char *image(uint64_t n, const char *hdr, size_t hlen, const void *data, size_t ndata, size_t *len)
{
    unsigned char *b = calloc(8 + hlen + ndata + 1, 1);
    if (!b) return NULL;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(n >> (8 * i));
    if (hlen) memcpy(b + 8, hdr, hlen);
    if (data && ndata) memcpy(b + 8 + hlen, data, ndata);
    *len = 8 + hlen + ndata;
    return b;
}

/* A float32 as 4 little-endian bytes. */
static void put_f32(unsigned char *dst, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    for (int i = 0; i < 4; i++) dst[i] = (unsigned char)(u >> (8 * i));
}

/* Writes a file: header hdr (N = strlen) and data; returns 0 or -1. */
static int write_st(const char *path, const char *hdr, const void *data, size_t ndata)
{
    size_t len;
    unsigned char *b = image(strlen(hdr), hdr, strlen(hdr), data, ndata, &len);
    int rc = b ? test_write_file(path, b, len) : -1;
    free(b);
    return rc;
}

/* ITERIS_NO_MMAP on (1) or back to what it was (0). */
static void no_mmap(int on)
{
    static char saved[64];
    static int had;
    if (on) {
        const char *v = getenv("ITERIS_NO_MMAP");
        had = v != NULL;
        snprintf(saved, sizeof saved, "%s", v ? v : "");
        setenv("ITERIS_NO_MMAP", "1", 1);
    } else if (had) {
        setenv("ITERIS_NO_MMAP", saved, 1);
    } else {
        unsetenv("ITERIS_NO_MMAP");
    }
}

/* ============================================================================================ */
/* Refused files                                                                                 */
/* ============================================================================================ */

/* One malformed file. By default: N = hlen, then hlen header bytes, then ndata zero bytes. */
typedef struct {
    const char *what;   /* what the file breaks (printed when the case fails) */
    const char *reason; /* the reference error name the message must carry */
    const char *hdr;    /* header bytes */
    size_t hlen;        /* their number; 0: strlen(hdr) */
    size_t ndata;       /* zero bytes after the header */
    int raw;            /* 1: hdr[0..hlen) is the whole file (no size prefix, no data) */
    int setn;           /* 1: the size prefix says n, whatever hlen is */
    uint64_t n;
} mcase;

static unsigned char *case_bytes(const mcase *c, size_t *len)
{
    size_t hlen = c->hlen ? c->hlen : strlen(c->hdr);
    if (c->raw) {
        unsigned char *b = malloc(hlen + 1);
        if (b) memcpy(b, c->hdr, hlen);
        *len = hlen;
        return b;
    }
    return image(c->setn ? c->n : hlen, c->hdr, hlen, NULL, c->ndata, len);
}

/* 1 when hdr[0..len) holds an integer literal above SIZE_MAX: on a 32-bit host the reader, like the
 * Rust reference deserializing usize there, refuses it as InvalidHeaderDeserialization before any
 * later rule (and refuses headers a 64-bit host accepts). */
static int exceeds_size_t(const char *hdr, size_t len)
{
    for (size_t i = 0; i < len;) {
        if (hdr[i] < '0' || hdr[i] > '9') {
            i++;
            continue;
        }
        uint64_t v = 0;
        int over = 0;
        for (; i < len && hdr[i] >= '0' && hdr[i] <= '9'; i++) {
            uint64_t digit = (uint64_t)(hdr[i] - '0');
            over |= v > UINT64_MAX / 10 || (v == UINT64_MAX / 10 && digit > UINT64_MAX % 10);
            v = v * 10 + digit;
        }
        if (over || v > (uint64_t)SIZE_MAX) return 1;
    }
    return 0;
}

/* The refusal in (rc, st, err) is IT_EFORMAT with a one-line "<name>: ... (<reason>)" message. */
static void check_refusal(const mcase *c, const char *via, const char *name, int rc, it_st *st, const it_err *err)
{
    char want[64];
    size_t nl = strlen(name);
    int narrow = !c->raw && exceeds_size_t(c->hdr, c->hlen ? c->hlen : strlen(c->hdr));
    snprintf(want, sizeof want, "(%s)", narrow ? "InvalidHeaderDeserialization" : c->reason);
    CHECKF(rc == IT_EFORMAT && err->code == IT_EFORMAT, "%s [%s]: rc %d, err.code %d, want IT_EFORMAT (%s)", c->what, via, rc,
           err->code, c->reason);
    CHECKF(st == NULL, "%s [%s]: handle not NULL after a failure", c->what, via);
    CHECKF(strstr(err->msg, want) != NULL, "%s [%s]: want %s in: %s", c->what, via, want, err->msg);
    CHECKF(strncmp(err->msg, name, nl) == 0 && err->msg[nl] == ':', "%s [%s]: message does not start with \"%s:\": %s", c->what,
           via, name, err->msg);
    CHECKF(!strpbrk(err->msg, "\r\n"), "%s [%s]: message is not a single line: %s", c->what, via, err->msg);
    it_st_close(st);
}

/* Opens the case from memory, from a file (mmap) and from a file with ITERIS_NO_MMAP=1. */
static void refuse(const mcase *c)
{
    size_t len = 0;
    unsigned char *b = case_bytes(c, &len);
    CHECK(b != NULL);
    if (!b) return;
    it_st *st = NULL;
    it_err err = {0};
    int rc = it_st_open_mem(&st, b, len, MEMNAME, &err);
    test_note("%s -> %s", c->what, err.msg);
    check_refusal(c, "mem", MEMNAME, rc, st, &err);
    const char *path = test_tmppath("malformed.safetensors");
    CHECK(test_write_file(path, b, len) == 0);
    for (int nomap = 0; nomap <= 1; nomap++) {
        if (nomap) no_mmap(1);
        memset(&err, 0, sizeof err);
        st = NULL;
        rc = it_st_open(&st, path, &err);
        if (nomap) no_mmap(0);
        check_refusal(c, nomap ? "file, read()" : "file, mmap", path, rc, st, &err);
    }
    free(b);
}

static void refuse_all(const mcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) refuse(&cases[i]);
}
#define REFUSE_ALL(tab) refuse_all(tab, sizeof(tab) / sizeof(tab)[0])

/* A well-formed entry "a": one F32 at [0, 4). */
#define ENTRY_A "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

/* ---- steps 1-3: the size prefix ---- */

static void test_malformed_header_too_small(void)
{
    static const mcase cases[] = {
        {.what = "empty file", .reason = "HeaderTooSmall", .hdr = "", .raw = 1},
        {.what = "1-byte file", .reason = "HeaderTooSmall", .hdr = "\x02", .raw = 1},
        {.what = "7-byte file", .reason = "HeaderTooSmall", .hdr = "\x02\0\0\0\0\0\0", .hlen = 7, .raw = 1},
        {.what = "7-byte file holding \"{}\"-ish bytes", .reason = "HeaderTooSmall", .hdr = "{}{}{}{", .raw = 1},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_header_too_large(void)
{
    static const mcase cases[] = {
        {.what = "N = 100000001", .reason = "HeaderTooLarge", .hdr = "{}", .setn = 1, .n = 100000001u},
        {.what = "N = 2^64-1 in an 8-byte file", .reason = "HeaderTooLarge", .hdr = "", .setn = 1, .n = UINT64_MAX},
        {.what = "N = 2^63", .reason = "HeaderTooLarge", .hdr = "{}", .setn = 1, .n = (uint64_t)1 << 63},
        {.what = "N = 2^32+2 (a reader of the low 32 bits sees 2)", .reason = "HeaderTooLarge", .hdr = "{}", .setn = 1,
         .n = ((uint64_t)1 << 32) + 2},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_invalid_header_length(void)
{
    static const mcase cases[] = {
        {.what = "N = 100000000 (the cap itself) in a short file", .reason = "InvalidHeaderLength", .hdr = "{}", .setn = 1,
         .n = 100000000u},
        {.what = "N one past the end", .reason = "InvalidHeaderLength", .hdr = "{}", .setn = 1, .n = 3},
        {.what = "N = 8 in an 8-byte file", .reason = "InvalidHeaderLength", .hdr = "", .setn = 1, .n = 8},
        {.what = "N one past the end of header + data", .reason = "InvalidHeaderLength", .hdr = "{}", .ndata = 4, .setn = 1,
         .n = 7},
    };
    REFUSE_ALL(cases);
}

/* ---- step 4: UTF-8 ---- */

static void test_malformed_invalid_utf8(void)
{
    static const mcase cases[] = {
        {.what = "lone 0xff in a tensor name", .reason = "InvalidHeader",
         .hdr = "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "overlong '/' (c0 af) in a metadata value", .reason = "InvalidHeader", .hdr = "{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}"},
        {.what = "overlong 3-byte form (e0 80 af)", .reason = "InvalidHeader", .hdr = "{\"__metadata__\":{\"k\":\"\xe0\x80\xaf\"}}"},
        {.what = "UTF-8-encoded surrogate U+D800 (ed a0 80)", .reason = "InvalidHeader",
         .hdr = "{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}"},
        {.what = "code point above U+10FFFF (f4 90 80 80)", .reason = "InvalidHeader",
         .hdr = "{\"__metadata__\":{\"k\":\"\xf4\x90\x80\x80\"}}"},
        {.what = "truncated 3-byte sequence inside a string", .reason = "InvalidHeader", .hdr = "{\"__metadata__\":{\"k\":\"\xe2\x82\"}}"},
        {.what = "stray continuation byte 0x80", .reason = "InvalidHeader", .hdr = "{\"__metadata__\":{\"k\":\"\x80\"}}"},
        {.what = "lead byte 0xf5", .reason = "InvalidHeader", .hdr = "{\"__metadata__\":{\"k\":\"\xf5\x80\x80\x80\"}}"},
        {.what = "0xff in the padding after the object", .reason = "InvalidHeader", .hdr = "{}  \xff   "},
        {.what = "truncated sequence as the last header byte", .reason = "InvalidHeader", .hdr = "{}     \xc3"},
    };
    REFUSE_ALL(cases);
}

/* ---- step 5: the JSON and its types ---- */

static void test_malformed_not_json(void)
{
    static const mcase cases[] = {
        {.what = "N = 0: an empty header", .reason = "InvalidHeaderDeserialization", .hdr = "", .setn = 1, .n = 0},
        {.what = "not JSON", .reason = "InvalidHeaderDeserialization", .hdr = "hello"},
        {.what = "trailing garbage after the object", .reason = "InvalidHeaderDeserialization", .hdr = "{} x"},
        {.what = "two objects", .reason = "InvalidHeaderDeserialization", .hdr = "{}{}"},
        {.what = "unterminated object", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":{}"},
        {.what = "trailing comma", .reason = "InvalidHeaderDeserialization", .hdr = "{" ENTRY_A ",}", .ndata = 4},
        {.what = "byte order mark before the object", .reason = "InvalidHeaderDeserialization", .hdr = "\xef\xbb\xbf{}"},
        {.what = "NUL bytes as padding", .reason = "InvalidHeaderDeserialization", .hdr = "{}\0\0\0\0\0\0", .hlen = 8},
        {.what = "form feed as padding", .reason = "InvalidHeaderDeserialization", .hdr = "\f{}"},
        {.what = "raw tab inside a string", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":{\"k\":\"a\tb\"}}"},
        {.what = "lone surrogate escape \\ud800", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":{\"k\":\"\\ud800\"}}"},
        {.what = "header is an array", .reason = "InvalidHeaderDeserialization", .hdr = "[]"},
        {.what = "header is a string", .reason = "InvalidHeaderDeserialization", .hdr = "\"{}\""},
        {.what = "header is a number", .reason = "InvalidHeaderDeserialization", .hdr = "1"},
        {.what = "header is null", .reason = "InvalidHeaderDeserialization", .hdr = "null"},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_bad_entry(void)
{
    static const mcase cases[] = {
        {.what = "missing dtype", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "missing shape", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "missing data_offsets", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", .ndata = 4},
        {.what = "unknown dtype F31", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "dtype f32 (names are case-sensitive)", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "dtype \"F32 \" (trailing space)", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":\"F32 \",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "dtype a number", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "tensor entry an array", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":[\"F32\",[1],[0,4]]}", .ndata = 4},
        {.what = "tensor entry a string", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":\"F32\"}"},
        {.what = "tensor entry null", .reason = "InvalidHeaderDeserialization", .hdr = "{\"a\":null}"},
        {.what = "NUL in a tensor name (this reader's own rule)", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
    };
    REFUSE_ALL(cases);
}

#define SHAPE_CASE(w, s)                                                                                                   \
    {                                                                                                                      \
        .what = w, .reason = "InvalidHeaderDeserialization",                                                               \
        .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":" s ",\"data_offsets\":[0,2]}}", .ndata = 2                            \
    }

static void test_malformed_bad_shape(void)
{
    static const mcase cases[] = {
        SHAPE_CASE("shape [-1]", "[-1]"),
        SHAPE_CASE("shape [2.0]", "[2.0]"),
        SHAPE_CASE("shape [1e1]", "[1e1]"),
        SHAPE_CASE("shape [\"2\"]", "[\"2\"]"),
        SHAPE_CASE("shape [null]", "[null]"),
        SHAPE_CASE("shape [-0] (serde reads -0 as a float)", "[-0]"),
        SHAPE_CASE("shape [2^64] (beyond usize)", "[18446744073709551616]"),
        SHAPE_CASE("shape [true]", "[true]"),
        SHAPE_CASE("shape [[2]]", "[[2]]"),
        SHAPE_CASE("shape 2 (not an array)", "2"),
        SHAPE_CASE("shape {} (not an array)", "{}"),
        SHAPE_CASE("shape null", "null"),
    };
    REFUSE_ALL(cases);
}

#define OFFSETS_CASE(w, s)                                                                                                 \
    {                                                                                                                      \
        .what = w, .reason = "InvalidHeaderDeserialization",                                                               \
        .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" s "}}", .ndata = 4                             \
    }

static void test_malformed_bad_offsets_type(void)
{
    static const mcase cases[] = {
        OFFSETS_CASE("data_offsets with 1 item", "[4]"),
        OFFSETS_CASE("data_offsets with 3 items", "[0,4,4]"),
        OFFSETS_CASE("data_offsets empty", "[]"),
        OFFSETS_CASE("data_offsets with a negative end", "[0,-4]"),
        OFFSETS_CASE("data_offsets with a negative begin", "[-1,4]"),
        OFFSETS_CASE("data_offsets fractional (4.5)", "[0,4.5]"),
        OFFSETS_CASE("data_offsets as floats (0.0, 4.0)", "[0.0,4.0]"),
        OFFSETS_CASE("data_offsets beyond usize", "[0,18446744073709551620]"),
        OFFSETS_CASE("data_offsets a string", "\"0,4\""),
        OFFSETS_CASE("data_offsets an object", "{\"begin\":0,\"end\":4}"),
        OFFSETS_CASE("data_offsets null", "null"),
    };
    REFUSE_ALL(cases);
}

static void test_malformed_bad_metadata(void)
{
    static const mcase cases[] = {
        {.what = "__metadata__ value a number", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":{\"a\":1}}"},
        {.what = "__metadata__ value null", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":{\"a\":null}}"},
        {.what = "__metadata__ value an object", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":{\"a\":{}}}"},
        {.what = "__metadata__ an array", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":[]}"},
        {.what = "__metadata__ a string", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":\"pt\"}"},
        {.what = "__metadata__ shaped like a tensor entry", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_duplicates(void)
{
    static const mcase cases[] = {
        {.what = "duplicate tensor name", .reason = "InvalidHeaderDeserialization", .hdr = "{" ENTRY_A "," ENTRY_A "}", .ndata = 4},
        {.what = "duplicate tensor name spelled with an escape (\\u0061)", .reason = "InvalidHeaderDeserialization",
         .hdr = "{" ENTRY_A ",\"\\u0061\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", .ndata = 8},
        {.what = "duplicate field dtype inside an entry", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "duplicate field data_offsets inside an entry", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "duplicate __metadata__", .reason = "InvalidHeaderDeserialization", .hdr = "{\"__metadata__\":{},\"__metadata__\":{}}"},
        {.what = "duplicate key inside __metadata__", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"},
    };
    REFUSE_ALL(cases);
}

/* An entry whose ignored extra field "x" nests depth arrays: {"a":{...,"x":[[...]]}}. malloc'd. */
static char *nested_header(int depth)
{
    const char *head = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":";
    size_t hl = strlen(head);
    char *h = malloc(hl + 2 * (size_t)depth + 3);
    if (!h) return NULL;
    memcpy(h, head, hl);
    memset(h + hl, '[', (size_t)depth);
    memset(h + hl + depth, ']', (size_t)depth);
    memcpy(h + hl + 2 * (size_t)depth, "}}", 3);
    return h;
}

static void test_malformed_deep_nesting(void)
{
    char *h = nested_header(300);
    CHECK(h != NULL);
    if (!h) return;
    mcase c = {.what = "300 nested arrays in an ignored extra field", .reason = "InvalidHeaderDeserialization", .hdr = h, .ndata = 4};
    refuse(&c);
    free(h);
}

/* ---- step 6: offsets and sizes, tensor by tensor in data_offsets order ---- */

static void test_malformed_invalid_offset(void)
{
    static const mcase cases[] = {
        {.what = "first tensor starts at 4", .reason = "InvalidOffset",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", .ndata = 8},
        {.what = "a hole between two tensors", .reason = "InvalidOffset",
         .hdr = "{" ENTRY_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", .ndata = 12},
        {.what = "two tensors overlap", .reason = "InvalidOffset",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         .ndata = 12},
        {.what = "two tensors share one range", .reason = "InvalidOffset",
         .hdr = "{" ENTRY_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "end < begin", .reason = "InvalidOffset",
         .hdr = "{" ENTRY_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", .ndata = 4},
        {.what = "single tensor with end < begin", .reason = "InvalidOffset",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", .ndata = 8},
        {.what = "lone zero-size tensor at [2,2]", .reason = "InvalidOffset",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}}", .ndata = 2},
        {.what = "begin 2^64-1", .reason = "InvalidOffset",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]}}", .ndata = 1},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_validation_overflow(void)
{
    static const mcase cases[] = {
        {.what = "shape product 2^64", .reason = "ValidationOverflow",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}"},
        {.what = "shape product overflows before a 0 dimension", .reason = "ValidationOverflow",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808,9223372036854775808,0],\"data_offsets\":[0,0]}}"},
        {.what = "count * bits = 2^64 (U8, 2^61 elements)", .reason = "ValidationOverflow",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}"},
        {.what = "count * bits overflows (F32, 2^62 elements)", .reason = "ValidationOverflow",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}"},
        {.what = "count * bits overflows (F4, 2^63 elements)", .reason = "ValidationOverflow",
         .hdr = "{\"a\":{\"dtype\":\"F4\",\"shape\":[2,4611686018427387904],\"data_offsets\":[0,0]}}"},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_misaligned_slice(void)
{
    static const mcase cases[] = {
        {.what = "F4 with 3 elements", .reason = "MisalignedSlice", .hdr = "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", .ndata = 2},
        {.what = "F4 scalar", .reason = "MisalignedSlice", .hdr = "{\"a\":{\"dtype\":\"F4\",\"shape\":[],\"data_offsets\":[0,1]}}", .ndata = 1},
        {.what = "F4 3x3", .reason = "MisalignedSlice", .hdr = "{\"a\":{\"dtype\":\"F4\",\"shape\":[3,3],\"data_offsets\":[0,5]}}", .ndata = 5},
        {.what = "F6_E2M3 with 2 elements", .reason = "MisalignedSlice",
         .hdr = "{\"a\":{\"dtype\":\"F6_E2M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", .ndata = 2},
        {.what = "F6_E3M2 with 6 elements", .reason = "MisalignedSlice",
         .hdr = "{\"a\":{\"dtype\":\"F6_E3M2\",\"shape\":[6],\"data_offsets\":[0,5]}}", .ndata = 5},
    };
    REFUSE_ALL(cases);
}

static void test_malformed_tensor_invalid_info(void)
{
    static const mcase cases[] = {
        {.what = "F32 [2] in 7 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,7]}}", .ndata = 7},
        {.what = "F32 [2] in 9 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]}}", .ndata = 9},
        {.what = "F16 [3] in 8 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,8]}}", .ndata = 8},
        {.what = "BOOL [4] in 5 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,5]}}", .ndata = 5},
        {.what = "C64 [1] in 4 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "F64 scalar in 4 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "F32 [0] in 4 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "F4 [4] in 4 bytes", .reason = "TensorInvalidInfo", .hdr = "{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,4]}}", .ndata = 4},
        {.what = "U8 with 2^61-1 elements (just below overflow) in 8 bytes", .reason = "TensorInvalidInfo",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2305843009213693951],\"data_offsets\":[0,8]}}", .ndata = 8},
        {.what = "end 2^64-1", .reason = "TensorInvalidInfo",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", .ndata = 1},
    };
    REFUSE_ALL(cases);
}

/* ---- step 7: the buffer is covered exactly ---- */

static void test_malformed_incomplete_buffer(void)
{
    static const mcase cases[] = {
        {.what = "one trailing byte after the last tensor", .reason = "MetadataIncompleteBuffer", .hdr = "{" ENTRY_A "}", .ndata = 5},
        {.what = "no tensors but a data byte", .reason = "MetadataIncompleteBuffer", .hdr = "{}", .ndata = 1},
        {.what = "no tensors, padded header, 8 data bytes", .reason = "MetadataIncompleteBuffer", .hdr = "{}      ", .ndata = 8},
        {.what = "only zero-size tensors but a data byte", .reason = "MetadataIncompleteBuffer",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", .ndata = 1},
        /* The offsets and the shape agree, so step 6 passes; the file is short, which only the
         * final coverage check sees. */
        {.what = "buffer shorter than the offsets claim (8 of 16 bytes)", .reason = "MetadataIncompleteBuffer",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", .ndata = 8},
        {.what = "buffer empty, offsets claim 4 bytes", .reason = "MetadataIncompleteBuffer", .hdr = "{" ENTRY_A "}"},
    };
    REFUSE_ALL(cases);
}

/* ---- the order of the rules: a file breaking two rules reports the earlier one ---- */

static void test_malformed_rule_order(void)
{
    static const mcase cases[] = {
        {.what = "N = 2^64-1 and a short file: the cap comes first", .reason = "HeaderTooLarge", .hdr = "{", .setn = 1, .n = UINT64_MAX},
        {.what = "header past the end and not UTF-8: length first", .reason = "InvalidHeaderLength", .hdr = "\xff\xff", .setn = 1, .n = 3},
        {.what = "invalid UTF-8 and bad JSON: UTF-8 first", .reason = "InvalidHeader", .hdr = "{\xff"},
        {.what = "invalid UTF-8 and bad offsets: UTF-8 first", .reason = "InvalidHeader",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"\xff\":null}", .ndata = 8},
        {.what = "bad offsets in the first entry, unknown dtype in the second: JSON first", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"b\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         .ndata = 8},
        {.what = "trailing bytes and a bad metadata value: JSON first", .reason = "InvalidHeaderDeserialization",
         .hdr = "{\"__metadata__\":{\"k\":2}}", .ndata = 3},
        {.what = "overflowing shape at a bad offset: InvalidOffset first", .reason = "InvalidOffset",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[4,4]}}", .ndata = 4},
        {.what = "F4 [3] with a wrong size: MisalignedSlice first", .reason = "MisalignedSlice",
         .hdr = "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,5]}}", .ndata = 5},
        {.what = "overflowing shape and trailing bytes: ValidationOverflow first", .reason = "ValidationOverflow",
         .hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", .ndata = 4},
        {.what = "wrong size and trailing bytes: TensorInvalidInfo first", .reason = "TensorInvalidInfo",
         .hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", .ndata = 10},
        /* Tensors are checked in data_offsets order, not in document order and not rule by rule:
         * "a" at [0,5) (wrong size) is checked before "b" at [5,7) (misaligned). */
        {.what = "later tensor in the document, earlier in the buffer, is reported first", .reason = "TensorInvalidInfo",
         .hdr = "{\"b\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[5,7]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,5]}}",
         .ndata = 7},
        {.what = "a hole after a misaligned tensor: MisalignedSlice (offset order)", .reason = "MisalignedSlice",
         .hdr = "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9,10]},\"a\":{\"dtype\":\"F4\",\"shape\":[1],\"data_offsets\":[0,1]}}",
         .ndata = 10},
    };
    REFUSE_ALL(cases);
}

/* A long file name (400 bytes: deep folders do that) and a long description still leave the
 * reason at the end of the 512-byte message. */
static void test_malformed_reason_survives_long_name(void)
{
    static const char hdr[] = "{\"a_tensor_name_of_ninety_bytes_.................................................................\":"
                              "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,18446744073709551615]}}";
    char name[401];
    memset(name, 'd', sizeof name - 1);
    for (size_t i = 0; i + 1 < sizeof name - 1; i += 20) name[i] = '/';
    name[sizeof name - 1] = 0;
    size_t len;
    unsigned char *b = image(sizeof hdr - 1, hdr, sizeof hdr - 1, NULL, 0, &len);
    it_st *st = NULL;
    it_err err = {0};
    CHECK(b && it_st_open_mem(&st, b, len, name, &err) == IT_EFORMAT);
    const char *reason = exceeds_size_t(hdr, sizeof hdr - 1) ? "(InvalidHeaderDeserialization)" : "(InvalidOffset)";
    CHECKF(strstr(err.msg, reason) != NULL, "the reason was cut off: ...%s", err.msg + (strlen(err.msg) > 60 ? strlen(err.msg) - 60 : 0));
    CHECK(strncmp(err.msg, name, 40) == 0);
    it_st_close(st);
    free(b);
}

/* ============================================================================================ */
/* Accepted edge cases (FACTS.md 1.3)                                                           */
/* ============================================================================================ */

typedef void (*st_check)(const it_st *st, const char *via);

/* Opens header + data from memory, as a file (mmap) and as a file with ITERIS_NO_MMAP=1; each
 * must succeed, and check then looks at the handle. */
static void accept3(const char *hdr, size_t hlen, const void *data, size_t ndata, st_check check)
{
    size_t len;
    unsigned char *b = image(hlen, hdr, hlen, data, ndata, &len);
    CHECK(b != NULL);
    if (!b) return;
    const char *path = test_tmppath("accepted.safetensors");
    CHECK(test_write_file(path, b, len) == 0);
    for (int how = 0; how < 3; how++) {
        const char *via = how == 0 ? "mem" : how == 1 ? "file, mmap" : "file, read()";
        it_st *st = NULL;
        it_err err = {0};
        if (how == 2) no_mmap(1);
        int rc = how == 0 ? it_st_open_mem(&st, b, len, MEMNAME, &err) : it_st_open(&st, path, &err);
        if (how == 2) no_mmap(0);
        if (exceeds_size_t(hdr, hlen)) /* a 32-bit host: sizes above SIZE_MAX are refused */
            CHECKF(rc == IT_EFORMAT && strstr(err.msg, "(InvalidHeaderDeserialization)"), "[%s] %s", via, err.msg);
        else CHECKF(rc == IT_OK && st, "[%s] refused: %s (header %.*s)", via, err.msg, (int)hlen, hdr);
        if (rc == IT_OK && st) check(st, via);
        it_st_close(st);
    }
    free(b);
}

#define ACCEPT(hdr, data, ndata, check) accept3(hdr, strlen(hdr), data, ndata, check)

/* The float32 values of a tensor, converted (at most 16). */
static int tensor_f32(const it_tensor *t, float *out)
{
    it_err err;
    return t && t->numel <= 16 && it_tensor_to_f32(t, out, &err) == IT_OK;
}

static void check_empty(const it_st *st, const char *via)
{
    CHECKF(it_st_count(st) == 0 && !it_st_has_meta(st) && it_st_meta_count(st) == 0, "[%s] count %zu", via, it_st_count(st));
    CHECK(it_st_file_count(st) == 1);
}

static void test_malformed_accepts_no_tensors(void)
{
    ACCEPT("{}", NULL, 0, check_empty);
    ACCEPT("{}      ", NULL, 0, check_empty); /* the reference writer's N = 8 */
    ACCEPT("{\"__metadata__\":null}", NULL, 0, check_empty);
}

static void check_zero_size(const it_st *st, const char *via)
{
    const it_tensor *z = it_st_find(st, "z"), *a = it_st_find(st, "a"), *b = it_st_find(st, "b");
    CHECKF(it_st_count(st) == 3 && z && a && b, "[%s] count %zu", via, it_st_count(st));
    if (!z || !a || !b) return;
    CHECKF(z->numel == 0 && z->nbytes == 0 && z->ndim == 2 && z->shape[0] == 3 && z->shape[1] == 0, "[%s] z", via);
    float v[2];
    CHECKF(tensor_f32(a, v) && v[0] == 1.0f && tensor_f32(b, v) && v[0] == 2.0f, "[%s] values around a zero-size tensor", via);
}

static void check_zero_alone(const it_st *st, const char *via)
{
    const it_tensor *t = it_st_find(st, "z");
    CHECKF(t && t->numel == 0 && t->nbytes == 0 && t->ndim == 1 && t->shape[0] == 0, "[%s] z", via);
}

static void check_two_zero(const it_st *st, const char *via)
{
    CHECKF(it_st_count(st) == 3, "[%s] count %zu", via, it_st_count(st));
    const it_tensor *h = it_st_find(st, "huge");
    CHECKF(h && h->numel == 0 && h->nbytes == 0 && h->ndim == 3, "[%s] [0, 2^63, 2^63] is an empty tensor", via);
}

static void test_malformed_accepts_zero_size(void)
{
    unsigned char d[8];
    put_f32(d, 1.0f);
    put_f32(d + 4, 2.0f);
    ACCEPT("{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", NULL, 0, check_zero_alone);
    ACCEPT("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"z\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
           d, 8, check_zero_size);
    /* several empty tensors at the same offset, one of them with dimensions whose product would
     * overflow were it not for the leading 0 (the product is folded left to right) */
    ACCEPT("{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"y\":{\"dtype\":\"F64\",\"shape\":[5,0],\"data_offsets\":[0,0]},"
           "\"huge\":{\"dtype\":\"U8\",\"shape\":[0,9223372036854775808,9223372036854775808],\"data_offsets\":[0,0]}}",
           NULL, 0, check_two_zero);
}

static void check_scalar(const it_st *st, const char *via)
{
    const it_tensor *t = it_st_find(st, "s");
    float v = 0;
    CHECKF(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4 && tensor_f32(t, &v) && v == 1.5f, "[%s] scalar", via);
}

static void test_malformed_accepts_scalar(void)
{
    unsigned char d[4];
    put_f32(d, 1.5f);
    ACCEPT("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", d, 4, check_scalar);
}

static void test_malformed_accepts_whitespace_padding(void)
{
    unsigned char d[4];
    put_f32(d, 1.5f);
    ACCEPT(" \t\n\r{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}\r\n\t ", d, 4, check_scalar);
    ACCEPT("\n{ \"s\" : { \"dtype\" : \"F32\" , \"shape\" : [ ] , \"data_offsets\" : [ 0 , 4 ] } }\t\t\t", d, 4, check_scalar);
}

static void test_malformed_accepts_extra_fields(void)
{
    unsigned char d[4];
    put_f32(d, 1.5f);
    ACCEPT("{\"s\":{\"note\":\"hi\",\"dtype\":\"F32\",\"x\":[1,2.5,{\"y\":null,\"z\":[true,false]}],\"shape\":[],\"dtype_\":7,"
           "\"data_offsets\":[0,4],\"q\":-1e300}}",
           d, 4, check_scalar);
    char *h = nested_header(100); /* deep, but within the 128-level limit */
    CHECK(h != NULL);
    if (h) {
        char *s = strstr(h, "\"a\"");
        if (s) s[1] = 's';
        char *sh = strstr(h, "[1]");
        if (sh) memcpy(sh, "[ ]", 3);
        ACCEPT(h, d, 4, check_scalar);
    }
    free(h);
}

static void check_meta_empty(const it_st *st, const char *via)
{
    CHECKF(it_st_has_meta(st) == 1 && it_st_meta_count(st) == 0 && it_st_count(st) == 0, "[%s] {} metadata", via);
}

static void check_meta_null(const it_st *st, const char *via)
{
    CHECKF(it_st_has_meta(st) == 0 && it_st_meta_count(st) == 0 && it_st_count(st) == 1, "[%s] null metadata", via);
}

static void check_meta_escapes(const it_st *st, const char *via)
{
    const char *k, *v;
    CHECKF(it_st_has_meta(st) == 1 && it_st_meta_count(st) == 3, "[%s] %zu entries", via, it_st_meta_count(st));
    if (it_st_meta_count(st) != 3) return;
    it_st_meta_at(st, 0, &k, &v); /* document order */
    CHECKF(!strcmp(k, "format") && !strcmp(v, "pt"), "[%s] entry 0 %s", via, k);
    it_st_meta_at(st, 1, &k, &v);
    CHECKF(!strcmp(k, "q\"\\/") && !strcmp(v, "line\nbreak\ttab \xc3\xa9\xc3\xa9 \xf0\x9f\x98\x80"), "[%s] escapes: %s", via, v);
    const char *j = it_st_meta_get(st, "\xe6\x97\xa5\xe6\x9c\xac");
    CHECKF(j && !strcmp(j, "{\"r\": 4}"), "[%s] non-ASCII key", via);
    CHECK(it_st_meta_get(st, "absent") == NULL);
}

static void test_malformed_accepts_metadata(void)
{
    unsigned char d[4];
    put_f32(d, 1.5f);
    ACCEPT("{\"__metadata__\":{}}", NULL, 0, check_meta_empty);
    ACCEPT("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},\"__metadata__\":null}", d, 4, check_meta_null);
    ACCEPT("{\"__metadata__\":{\"format\":\"pt\",\"q\\\"\\\\\\/\":\"line\\nbreak\\ttab \\u00e9\xc3\xa9 \\ud83d\\ude00\","
           "\"\xe6\x97\xa5\xe6\x9c\xac\":\"{\\\"r\\\": 4}\"}}",
           NULL, 0, check_meta_escapes);
}

static void check_out_of_order(const it_st *st, const char *via)
{
    CHECKF(it_st_count(st) == 3, "[%s] count", via);
    const char *names[3] = {"a", "b", "c"}; /* it_st_tensor is sorted by name */
    float want[3] = {1.0f, 2.0f, 3.0f};
    for (size_t i = 0; i < 3 && i < it_st_count(st); i++) {
        const it_tensor *t = it_st_tensor(st, i);
        float v = 0;
        CHECKF(!strcmp(t->name, names[i]) && tensor_f32(t, &v) && v == want[i], "[%s] tensor %zu: %s = %g", via, i, t->name, v);
    }
}

static void test_malformed_accepts_out_of_offset_order(void)
{
    unsigned char d[12];
    put_f32(d, 3.0f); /* c at [0,4), a at [4,8), b at [8,12) */
    put_f32(d + 4, 1.0f);
    put_f32(d + 8, 2.0f);
    ACCEPT("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
           "\"c\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
           d, 12, check_out_of_order);
}

static void check_unaligned(const it_st *st, const char *via)
{
    const it_tensor *t = it_st_find(st, "w");
    float v[3] = {0};
    CHECKF(t && t->numel == 3 && tensor_f32(t, v) && v[0] == 1.0f && v[1] == -2.5f && v[2] == 1e-3f, "[%s] unaligned F32", via);
    const it_tensor *h = it_st_find(st, "h");
    CHECKF(h && h->numel == 1 && tensor_f32(h, v) && v[0] == 1.0f, "[%s] unaligned F16", via);
}

/* A header of odd length puts the data at an odd file offset. */
static void test_malformed_accepts_unaligned_buffer(void)
{
    const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[13,15]}} ";
    unsigned char d[15] = {7};
    put_f32(d + 1, 1.0f);
    put_f32(d + 5, -2.5f);
    put_f32(d + 9, 1e-3f);
    d[13] = 0x00, d[14] = 0x3c; /* F16 1.0 */
    CHECK(strlen(hdr) % 2 == 1);
    ACCEPT(hdr, d, 15, check_unaligned);
    /* and from memory at an odd address */
    size_t len;
    unsigned char *b = image(strlen(hdr), hdr, strlen(hdr), d, 15, &len);
    unsigned char *odd = malloc(len + 1);
    if (b && odd) {
        memcpy(odd + 1, b, len);
        it_st *st = NULL;
        it_err err;
        CHECK(it_st_open_mem(&st, odd + 1, len, MEMNAME, &err) == IT_OK);
        if (st) check_unaligned(st, "mem, odd address");
        const it_tensor *w = it_st_find(st, "w");
        CHECK(w && (const unsigned char *)w->data == odd + 1 + 8 + strlen(hdr) + 1);
        it_st_close(st);
    }
    free(odd);
    free(b);
}

static void check_names(const it_st *st, const char *via)
{
    const it_tensor *e = it_st_find(st, ""), *u = it_st_find(st, "\xc3\xa9.w");
    CHECKF(it_st_count(st) == 2 && e && u && e->numel == 1 && u->numel == 2, "[%s] empty and non-ASCII names", via);
}

static void test_malformed_accepts_odd_names(void)
{
    unsigned char d[3] = {1, 2, 3};
    ACCEPT("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"\\u00e9.w\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[1,3]}}",
           d, 3, check_names);
}

static void check_sub_byte(const it_st *st, const char *via)
{
    const it_tensor *f4 = it_st_find(st, "f4"), *e2 = it_st_find(st, "e2m3"), *e3 = it_st_find(st, "e3m2"), *c = it_st_find(st, "c");
    CHECKF(f4 && f4->nbytes == 1 && e2 && e2->nbytes == 3 && e3 && e3->nbytes == 6 && c && c->nbytes == 16, "[%s] sub-byte sizes", via);
    float v[8];
    it_err err;
    CHECKF(f4 && it_tensor_to_f32(f4, v, &err) == IT_EUNSUPPORTED && err.code == IT_EUNSUPPORTED, "[%s] F4 to F32 unsupported", via);
    CHECKF(c && it_tensor_to_f32(c, v, &err) == IT_EUNSUPPORTED, "[%s] C64 to F32 unsupported", via);
}

static void test_malformed_accepts_sub_byte_and_complex(void)
{
    unsigned char d[26] = {0};
    ACCEPT("{\"f4\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]},\"e2m3\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[1,4]},"
           "\"e3m2\":{\"dtype\":\"F6_E3M2\",\"shape\":[2,4],\"data_offsets\":[4,10]},\"c\":{\"dtype\":\"C64\",\"shape\":[2],\"data_offsets\":[10,26]}}",
           d, 26, check_sub_byte);
}

/* Every dtype name, one tensor each, laid out back to back; sizes follow it_dtype_bits. */
static void test_malformed_accepts_every_dtype(void)
{
    char hdr[4096];
    size_t o = 0;
    uint64_t off = 0;
    o += (size_t)snprintf(hdr + o, sizeof hdr - o, "{");
    for (int d = 0; d < IT_DTYPE_COUNT; d++) {
        uint64_t n = 8, bytes = n * (uint64_t)it_dtype_bits((it_dtype)d) / 8;
        o += (size_t)snprintf(hdr + o, sizeof hdr - o, "%s\"t%d\":{\"dtype\":\"%s\",\"shape\":[2,4],\"data_offsets\":[%llu,%llu]}",
                              d ? "," : "", d, it_dtype_name((it_dtype)d), (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    snprintf(hdr + o, sizeof hdr - o, "}");
    unsigned char *data = calloc(off, 1);
    size_t len;
    unsigned char *b = image(strlen(hdr), hdr, strlen(hdr), data, off, &len);
    it_st *st = NULL;
    it_err err;
    CHECKF(b && it_st_open_mem(&st, b, len, MEMNAME, &err) == IT_OK, "every dtype: %s", err.msg);
    CHECK(it_st_count(st) == IT_DTYPE_COUNT);
    for (int d = 0; st && d < IT_DTYPE_COUNT; d++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", d);
        const it_tensor *t = it_st_find(st, name);
        CHECKF(t && t->dtype == (it_dtype)d && t->numel == 8 && t->nbytes == (size_t)it_dtype_bits((it_dtype)d), "dtype %s",
               it_dtype_name((it_dtype)d));
    }
    it_st_close(st);
    free(b);
    free(data);
}

/* From memory the views point into the caller's buffer at 8 + N + begin. */
static void test_malformed_views_point_into_buffer(void)
{
    const char *hdr = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    unsigned char d[5] = {1, 2, 3, 4, 5};
    size_t len, hl = strlen(hdr);
    unsigned char *b = image(hl, hdr, hl, d, 5, &len);
    it_st *st = NULL;
    it_err err;
    CHECK(b && it_st_open_mem(&st, b, len, MEMNAME, &err) == IT_OK);
    const it_tensor *a = it_st_find(st, "a"), *bt = it_st_find(st, "b");
    CHECK(a && (const unsigned char *)a->data == b + 8 + hl && a->begin == 0 && a->file == 0);
    CHECK(bt && (const unsigned char *)bt->data == b + 8 + hl + 3 && bt->begin == 3 && bt->nbytes == 2);
    it_st_close(st);
    free(b);
}

/* ============================================================================================ */
/* Sharded checkpoints                                                                           */
/* ============================================================================================ */

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define INDEX "model.safetensors.index.json"

/* A fresh folder under the test folder; the path is in a rotating static buffer. */
static const char *make_dir(const char *name)
{
    const char *d = test_tmppath(name);
    CHECKF(mkdir(d, 0755) == 0 || errno == EEXIST, "mkdir %s", d);
    return d;
}

static const char *in_dir(const char *dir, const char *name)
{
    static char buf[4][4096];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Writes the two good shards: alpha (F32 [1] = 1) with metadata k=1, beta (F32 [2] = 2, 3) with
 * k=2. */
static void write_shards(const char *dir)
{
    unsigned char d[8];
    put_f32(d, 1.0f);
    CHECK(write_st(in_dir(dir, SHARD1), "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"1\"},\"alpha\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                   d, 4) == 0);
    put_f32(d, 2.0f);
    put_f32(d + 4, 3.0f);
    CHECK(write_st(in_dir(dir, SHARD2), "{\"__metadata__\":{\"k\":\"2\",\"only2\":\"x\"},\"beta\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                   d, 8) == 0);
}

static const char *good_index = "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"alpha\":\"" SHARD1 "\",\"beta\":\"" SHARD2 "\"}}";

static void check_sharded(const it_st *st)
{
    const it_tensor *a = it_st_find(st, "alpha"), *b = it_st_find(st, "beta");
    float v[2] = {0};
    CHECK(it_st_count(st) == 2 && it_st_file_count(st) == 2);
    CHECK(a && b && a->file != b->file);
    CHECK(a && tensor_f32(a, v) && v[0] == 1.0f);
    CHECK(b && tensor_f32(b, v) && v[0] == 2.0f && v[1] == 3.0f);
    const char *p = a ? it_st_file_path(st, a->file) : NULL;
    CHECKF(p && strstr(p, SHARD1), "shard path %s", p ? p : "(null)");
    /* metadata: the union over shards, the first occurrence of a key wins */
    CHECK(it_st_has_meta(st) && it_st_meta_count(st) == 3);
    const char *k = it_st_meta_get(st, "k"), *o = it_st_meta_get(st, "only2");
    CHECK(k && !strcmp(k, "1") && o && !strcmp(o, "x"));
}

static void test_malformed_sharded_by_index_and_folder(void)
{
    const char *dir = make_dir("sharded");
    write_shards(dir);
    CHECK(test_write_file(in_dir(dir, INDEX), good_index, strlen(good_index)) == 0);
    it_st *st = NULL;
    it_err err;
    CHECKF(it_st_open(&st, in_dir(dir, INDEX), &err) == IT_OK, "by index: %s", err.msg);
    if (st) check_sharded(st);
    it_st_close(st);
    st = NULL;
    CHECKF(it_st_open(&st, dir, &err) == IT_OK, "by folder: %s", err.msg);
    if (st) check_sharded(st);
    it_st_close(st);
    no_mmap(1);
    st = NULL;
    CHECKF(it_st_open(&st, dir, &err) == IT_OK, "by folder, read(): %s", err.msg);
    no_mmap(0);
    if (st) check_sharded(st);
    it_st_close(st);
}

/* The folder lookup: model index, model, diffusers index, diffusers, adapter, kohya/diffusers LoRA. */
static void test_malformed_folder_lookup_order(void)
{
    const char *dir = make_dir("lookup");
    unsigned char d[4] = {0};
    const char *names[] = {"pytorch_lora_weights.safetensors", "adapter_model.safetensors", "diffusion_pytorch_model.safetensors",
                           "model.safetensors"};
    for (size_t i = 0; i < 4; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "{\"t%zu\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", i);
        CHECK(write_st(in_dir(dir, names[i]), hdr, d, 4) == 0);
        it_st *st = NULL;
        it_err err;
        char want[8];
        snprintf(want, sizeof want, "t%zu", i);
        CHECKF(it_st_open(&st, dir, &err) == IT_OK && it_st_find(st, want), "with %s present: %s", names[i], err.msg);
        it_st_close(st);
    }
    write_shards(dir); /* the model index comes before model.safetensors */
    CHECK(test_write_file(in_dir(dir, INDEX), good_index, strlen(good_index)) == 0);
    it_st *st = NULL;
    it_err err;
    CHECKF(it_st_open(&st, dir, &err) == IT_OK && it_st_file_count(st) == 2, "index first: %s", err.msg);
    it_st_close(st);
}

/* Where a refusal's message must point. */
enum { AT_INDEX, AT_SHARD, AT_ANY };

/* One broken index (or shard set): the code expected and a piece of text the message must hold. */
typedef struct {
    const char *what;
    const char *index;  /* the index text */
    int code;           /* IT_EFORMAT, or IT_ENOTFOUND (which also allows IT_EIO) */
    const char *needle; /* must appear in the message */
    int at;             /* AT_INDEX: names the index; AT_SHARD: starts with the path of shard needle */
} icase;

static void refuse_index(const char *dir, const icase *c)
{
    const char *ip = in_dir(dir, INDEX);
    CHECK(test_write_file(ip, c->index, strlen(c->index)) == 0);
    it_st *st = NULL;
    it_err err = {0};
    int rc = it_st_open(&st, ip, &err);
    int code_ok = rc == c->code || (c->code == IT_ENOTFOUND && rc == IT_EIO);
    CHECKF(code_ok && err.code == rc && !st, "%s: rc %d (%s), want %d", c->what, rc, err.msg, c->code);
    CHECKF(strstr(err.msg, c->needle) != NULL, "%s: want \"%s\" in: %s", c->what, c->needle, err.msg);
    CHECKF(!strpbrk(err.msg, "\r\n"), "%s: not one line: %s", c->what, err.msg);
    const char *sp = in_dir(dir, c->needle);
    if (c->at == AT_SHARD)
        CHECKF(!strncmp(err.msg, sp, strlen(sp)), "%s: message does not start with the shard path %s: %s", c->what, sp, err.msg);
    if (c->at == AT_INDEX) CHECKF(strstr(err.msg, ip) != NULL, "%s: message does not name the index %s: %s", c->what, ip, err.msg);
    it_st_close(st);
}

#define W1(k) "\"" k "\":\"" SHARD1 "\""
#define W2(k) "\"" k "\":\"" SHARD2 "\""

static void test_malformed_sharded_refused(void)
{
    static const icase cases[] = {
        {"index not JSON", "{\"weight_map\":", IT_EFORMAT, INDEX, AT_INDEX},
        {"weight_map missing", "{\"metadata\":{\"total_size\":12}}", IT_EFORMAT, "weight_map", AT_INDEX},
        {"index an array", "[]", IT_EFORMAT, INDEX, AT_INDEX},
        {"weight_map not an object", "{\"weight_map\":[\"" SHARD1 "\"]}", IT_EFORMAT, "weight_map", AT_INDEX},
        {"weight_map value not a string", "{\"weight_map\":{" W1("alpha") ",\"beta\":2}}", IT_EFORMAT, "beta", AT_INDEX},
        {"shard name with '/'", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"sub/" SHARD2 "\"}}", IT_EFORMAT, "beta", AT_INDEX},
        {"shard name with '..'", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"../" SHARD2 "\"}}", IT_EFORMAT, "beta", AT_INDEX},
        {"shard name '..'", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"..\"}}", IT_EFORMAT, "beta", AT_INDEX},
        {"shard name empty", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"\"}}", IT_EFORMAT, "beta", AT_INDEX},
        {"shard name absolute", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"/etc/passwd\"}}", IT_EFORMAT, "beta", AT_INDEX},
        {"duplicate key in weight_map", "{\"weight_map\":{" W1("alpha") "," W2("beta") "," W1("alpha") "}}", IT_EFORMAT, INDEX, AT_INDEX},
        {"listed tensor missing from its shard", "{\"weight_map\":{" W1("alpha") "," W2("beta") "," W1("missing.weight") "}}", IT_EFORMAT,
         "missing.weight", AT_INDEX},
        {"tensor found in another shard than listed", "{\"weight_map\":{" W2("alpha") "," W1("beta") "}}", IT_EFORMAT, "alpha", AT_INDEX},
        {"shard tensor not listed", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"extra.safetensors\"}}", IT_EFORMAT, "unlisted.weight",
         AT_INDEX},
        {"same tensor in two shards", "{\"weight_map\":{" W1("alpha") ",\"delta\":\"dup.safetensors\"}}", IT_EFORMAT, "dup.safetensors",
         AT_ANY},
        {"missing shard file", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"model-00009-of-00009.safetensors\"}}", IT_ENOTFOUND,
         "model-00009-of-00009.safetensors", AT_SHARD},
        {"malformed shard", "{\"weight_map\":{" W1("alpha") ",\"beta\":\"bad.safetensors\"}}", IT_EFORMAT, "bad.safetensors", AT_SHARD},
    };
    const char *dir = make_dir("badindex");
    write_shards(dir);
    unsigned char d[12] = {0};
    /* extra: beta and an unlisted tensor; dup: alpha again (also in shard 1) and delta; bad:
     * a trailing byte */
    CHECK(write_st(in_dir(dir, "extra.safetensors"), "{\"beta\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"unlisted.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", d, 12) == 0);
    CHECK(write_st(in_dir(dir, "dup.safetensors"), "{\"alpha\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"delta\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", d, 8) == 0);
    CHECK(write_st(in_dir(dir, "bad.safetensors"), "{\"beta\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 9) == 0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) refuse_index(dir, &cases[i]);
    /* the malformed shard reports its own reason */
    it_st *st = NULL;
    it_err err = {0};
    CHECKF(it_st_open(&st, in_dir(dir, INDEX), &err) == IT_EFORMAT && strstr(err.msg, "(MetadataIncompleteBuffer)"), "%s", err.msg);
    it_st_close(st);
}

/* Pointed at the folder, a sharded checkpoint with a missing shard should say which shard is
 * missing, not fall back to "no weights here" or to another weights file. */
static void test_malformed_folder_with_missing_shard(void)
{
    const char *dir = make_dir("missingshard");
    write_shards(dir);
    CHECK(unlink(in_dir(dir, SHARD2)) == 0);
    CHECK(test_write_file(in_dir(dir, INDEX), good_index, strlen(good_index)) == 0);
    it_st *st = NULL;
    it_err err = {0};
    int rc = it_st_open(&st, dir, &err);
    CHECKF(rc != IT_OK && !st, "folder with a missing shard opened");
    CHECKF(strstr(err.msg, SHARD2) != NULL, "the message should name the missing shard " SHARD2 ": %s", err.msg);
    it_st_close(st);
    /* with a stale single-file checkpoint beside the index, that file must not be opened instead */
    unsigned char d[4] = {0};
    CHECK(write_st(in_dir(dir, "model.safetensors"), "{\"stale\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4) == 0);
    st = NULL;
    rc = it_st_open(&st, dir, &err);
    CHECKF(rc != IT_OK && !st, "folder with a missing shard opened model.safetensors instead of the sharded set (%zu tensors: %s)",
           it_st_count(st), it_st_count(st) ? it_st_tensor(st, 0)->name : "");
    it_st_close(st);
}

/* ============================================================================================ */
/* Paths that are not safetensors files                                                          */
/* ============================================================================================ */

static void test_malformed_missing_and_empty_dir(void)
{
    it_st *st = NULL;
    it_err err = {0};
    const char *p = test_tmppath("no-such-file.safetensors");
    CHECKF(it_st_open(&st, p, &err) == IT_ENOTFOUND && err.code == IT_ENOTFOUND && strstr(err.msg, p), "missing: %s", err.msg);
    const char *dir = make_dir("emptydir");
    CHECKF(it_st_open(&st, dir, &err) == IT_ENOTFOUND && strstr(err.msg, dir) && !st, "empty folder: %s", err.msg);
    const char *sdir = make_dir("folder.safetensors"); /* a directory with a weights-file name */
    int rc = it_st_open(&st, sdir, &err);
    CHECKF(rc != IT_OK && !st && strstr(err.msg, sdir), "directory named .safetensors: rc %d %s", rc, err.msg);
}

static void test_malformed_dev_null(void)
{
    it_st *st = NULL;
    it_err err = {0};
    int rc = it_st_open(&st, "/dev/null", &err);
    CHECKF(rc != IT_OK && !st && err.code == rc && strstr(err.msg, "/dev/null"), "/dev/null: rc %d %s", rc, err.msg);
}

/* Opens path in a child process that gets 1 second: 0 refused, 1 accepted, -1 no answer (a hang). */
static int open_in_child(const char *path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -2;
    if (pid == 0) {
        alarm(1);
        it_st *st = NULL;
        it_err err;
        int rc = it_st_open(&st, path, &err);
        it_st_close(st);
        _exit(rc == IT_OK ? 1 : 0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return -1;
}

/* A FIFO with nobody writing to it: refused at once, not waited on. */
static void test_malformed_fifo_does_not_hang(void)
{
    const char *names[] = {"fifo.safetensors", "fifo.safetensors.index.json"};
    for (int i = 0; i < 2; i++) {
        const char *p = test_tmppath(names[i]);
        CHECKF(mkfifo(p, 0600) == 0, "mkfifo %s", p);
        int r = open_in_child(p);
        CHECKF(r == 0, "it_st_open(%s) on a FIFO: %s", names[i], r == -1 ? "hangs (killed after 1 s)" : r == 1 ? "accepted" : "failed to run");
        unlink(p);
    }
}

void suite_malformed(void)
{
    RUN(test_malformed_header_too_small);
    RUN(test_malformed_header_too_large);
    RUN(test_malformed_invalid_header_length);
    RUN(test_malformed_invalid_utf8);
    RUN(test_malformed_not_json);
    RUN(test_malformed_bad_entry);
    RUN(test_malformed_bad_shape);
    RUN(test_malformed_bad_offsets_type);
    RUN(test_malformed_bad_metadata);
    RUN(test_malformed_duplicates);
    RUN(test_malformed_deep_nesting);
    RUN(test_malformed_invalid_offset);
    RUN(test_malformed_validation_overflow);
    RUN(test_malformed_misaligned_slice);
    RUN(test_malformed_tensor_invalid_info);
    RUN(test_malformed_incomplete_buffer);
    RUN(test_malformed_rule_order);
    RUN(test_malformed_reason_survives_long_name);
    RUN(test_malformed_accepts_no_tensors);
    RUN(test_malformed_accepts_zero_size);
    RUN(test_malformed_accepts_scalar);
    RUN(test_malformed_accepts_whitespace_padding);
    RUN(test_malformed_accepts_extra_fields);
    RUN(test_malformed_accepts_metadata);
    RUN(test_malformed_accepts_out_of_offset_order);
    RUN(test_malformed_accepts_unaligned_buffer);
    RUN(test_malformed_accepts_odd_names);
    RUN(test_malformed_accepts_sub_byte_and_complex);
    RUN(test_malformed_accepts_every_dtype);
    RUN(test_malformed_views_point_into_buffer);
    RUN(test_malformed_sharded_by_index_and_folder);
    RUN(test_malformed_folder_lookup_order);
    RUN(test_malformed_sharded_refused);
    RUN(test_malformed_folder_with_missing_shard);
    RUN(test_malformed_missing_and_empty_dir);
    RUN(test_malformed_dev_null);
    RUN(test_malformed_fifo_does_not_hang);
}
