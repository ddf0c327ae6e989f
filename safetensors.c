/* safetensors.c -- the safetensors format: element types and their conversions, the reader (mmap,
 * read() fallback, every rule of the reference reader), sharded checkpoints, the atomic writer.
 *
 * Layout of a file (FACTS.md section 1; huggingface/safetensors README "Format"):
 *
 *     [0, 8)          N, u64 little-endian: length of the header
 *     [8, 8+N)        header: UTF-8 JSON object {"__metadata__": {str: str}?,
 *                                                name: {"dtype", "shape", "data_offsets": [b, e]}, ...}
 *     [8+N, EOF)      byte buffer; a tensor's bytes are [8+N+b, 8+N+e), little-endian, row-major
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ============================================================================================ */
/* Element types                                                                                 */
/* ============================================================================================ */

static const struct {
    const char *name;
    int bits;
} dtypes[IT_DTYPE_COUNT] = {
    [IT_BOOL] = {"BOOL", 8},           [IT_F4] = {"F4", 4},
    [IT_F6_E2M3] = {"F6_E2M3", 6},     [IT_F6_E3M2] = {"F6_E3M2", 6},
    [IT_U8] = {"U8", 8},               [IT_I8] = {"I8", 8},
    [IT_F8_E5M2] = {"F8_E5M2", 8},     [IT_F8_E4M3] = {"F8_E4M3", 8},
    [IT_F8_E8M0] = {"F8_E8M0", 8},     [IT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [IT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8}, [IT_I16] = {"I16", 16},
    [IT_U16] = {"U16", 16},            [IT_F16] = {"F16", 16},
    [IT_BF16] = {"BF16", 16},          [IT_I32] = {"I32", 32},
    [IT_U32] = {"U32", 32},            [IT_F32] = {"F32", 32},
    [IT_C64] = {"C64", 64},            [IT_F64] = {"F64", 64},
    [IT_I64] = {"I64", 64},            [IT_U64] = {"U64", 64},
};

const char *it_dtype_name(it_dtype dtype)
{
    return (unsigned)dtype < IT_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

int it_dtype_bits(it_dtype dtype)
{
    return (unsigned)dtype < IT_DTYPE_COUNT ? dtypes[dtype].bits : 0;
}

int it_dtype_from_name(const char *name, size_t len, it_dtype *out)
{
    for (int d = 0; d < IT_DTYPE_COUNT; d++) {
        if (strlen(dtypes[d].name) == len && memcmp(dtypes[d].name, name, len) == 0) {
            *out = (it_dtype)d;
            return IT_OK;
        }
    }
    return IT_ENOTFOUND;
}

/* ---- scalar conversions ---- */

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Exact in binary32. */
float it_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
        float v = ldexpf((float)mant, -24);
        return f32_from_bits(f32_bits(v) | sign);
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | mant << 13); /* inf, NaN (payload kept) */
    return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
}

/* bfloat16 is the top half of a binary32. */
float it_bf16_to_f32(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

/* Round to nearest, ties to even; overflow (|f| >= 65520) gives inf; NaN gives sign|0x7e00, as
 * PyTorch's conversion does. */
uint16_t it_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f), a = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (a > 0x7f800000u) return sign | 0x7e00;
    if (a >= 0x477ff000u) return sign | 0x7c00;
    if (a >= 0x38800000u) { /* a normal half: rebias the exponent, round away 13 mantissa bits */
        uint32_t r = a - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) return sign; /* at most 2^-25, half the smallest subnormal: ties to 0 */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u; /* |f| = m 2^(e-150) */
    unsigned shift = 126 - e;                                /* units of 2^-24: 14..24 bits */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

/* Round to nearest, ties to even; NaN gives 0x7fc0, as PyTorch's conversion does. */
uint16_t it_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* A normal or subnormal minifloat with the given exponent/mantissa widths and bias; exact in
 * binary32 for every 8-bit format. */
static float minifloat(unsigned v, int ebits, int mbits, int bias)
{
    int sign = (v >> (ebits + mbits)) & 1;
    int exp = (int)(v >> mbits) & ((1 << ebits) - 1);
    int mant = (int)v & ((1 << mbits) - 1);
    float r = exp ? ldexpf((float)((1 << mbits) | mant), exp - bias - mbits)
                  : ldexpf((float)mant, 1 - bias - mbits);
    return sign ? -r : r;
}

float it_f8_to_f32(it_dtype dtype, uint8_t v)
{
    switch (dtype) {
    case IT_F8_E5M2: /* the top byte of an IEEE half, inf and NaN included */
        return it_f16_to_f32((uint16_t)(v << 8));
    case IT_F8_E4M3: /* bias 7; S.1111.111 is NaN; no inf */
        if ((v & 0x7f) == 0x7f) return NAN;
        return minifloat(v, 4, 3, 7);
    case IT_F8_E4M3FNUZ: /* bias 8; 0x80 is the only NaN; no inf, no -0 */
        if (v == 0x80) return NAN;
        return minifloat(v, 4, 3, 8);
    case IT_F8_E5M2FNUZ: /* bias 16; 0x80 is the only NaN; no inf, no -0 */
        if (v == 0x80) return NAN;
        return minifloat(v, 5, 2, 16);
    case IT_F8_E8M0: /* an exponent alone: 2^(v-127); 0xff is NaN */
        if (v == 0xff) return NAN;
        return ldexpf(1.0f, (int)v - 127);
    default:
        return NAN;
    }
}

/* ---- whole-tensor conversions ---- */

int it_tensor_to_f32(const it_tensor *t, float *out, it_err *err)
{
    const unsigned char *p = (const unsigned char *)t->data;
    uint64_t n = t->numel;
    switch (t->dtype) {
    case IT_F32: for (uint64_t i = 0; i < n; i++) out[i] = f32_from_bits(it__le32(p + 4 * i)); break;
    case IT_F16: for (uint64_t i = 0; i < n; i++) out[i] = it_f16_to_f32(it__le16(p + 2 * i)); break;
    case IT_BF16: for (uint64_t i = 0; i < n; i++) out[i] = it_bf16_to_f32(it__le16(p + 2 * i)); break;
    case IT_F64:
        for (uint64_t i = 0; i < n; i++) {
            uint64_t u = it__le64(p + 8 * i);
            double d;
            memcpy(&d, &u, sizeof d);
            out[i] = (float)d;
        }
        break;
    case IT_F8_E5M2: case IT_F8_E4M3: case IT_F8_E8M0: case IT_F8_E4M3FNUZ: case IT_F8_E5M2FNUZ:
        for (uint64_t i = 0; i < n; i++) out[i] = it_f8_to_f32(t->dtype, p[i]);
        break;
    case IT_BOOL: for (uint64_t i = 0; i < n; i++) out[i] = p[i] ? 1.0f : 0.0f; break;
    case IT_U8: for (uint64_t i = 0; i < n; i++) out[i] = (float)p[i]; break;
    case IT_I8: for (uint64_t i = 0; i < n; i++) out[i] = (float)(int8_t)p[i]; break;
    case IT_U16: for (uint64_t i = 0; i < n; i++) out[i] = (float)it__le16(p + 2 * i); break;
    case IT_I16: for (uint64_t i = 0; i < n; i++) out[i] = (float)(int16_t)it__le16(p + 2 * i); break;
    case IT_U32: for (uint64_t i = 0; i < n; i++) out[i] = (float)it__le32(p + 4 * i); break;
    case IT_I32: for (uint64_t i = 0; i < n; i++) out[i] = (float)(int32_t)it__le32(p + 4 * i); break;
    case IT_U64: for (uint64_t i = 0; i < n; i++) out[i] = (float)it__le64(p + 8 * i); break;
    case IT_I64: for (uint64_t i = 0; i < n; i++) out[i] = (float)(int64_t)it__le64(p + 8 * i); break;
    default:
        return it__fail(err, IT_EUNSUPPORTED, "tensor %s: converting %s to F32 is not supported", t->name,
                        it_dtype_name(t->dtype));
    }
    return IT_OK;
}

int it_f32_encode(void *dst, it_dtype dtype, const float *src, size_t n, it_err *err)
{
    unsigned char *p = (unsigned char *)dst;
    switch (dtype) {
    case IT_F32: for (size_t i = 0; i < n; i++) it__put_le32(p + 4 * i, f32_bits(src[i])); break;
    case IT_F16: for (size_t i = 0; i < n; i++) it__put_le16(p + 2 * i, it_f32_to_f16(src[i])); break;
    case IT_BF16: for (size_t i = 0; i < n; i++) it__put_le16(p + 2 * i, it_f32_to_bf16(src[i])); break;
    case IT_F64:
        for (size_t i = 0; i < n; i++) {
            double d = src[i];
            uint64_t u;
            memcpy(&u, &d, sizeof u);
            it__put_le64(p + 8 * i, u);
        }
        break;
    default:
        return it__fail(err, IT_EUNSUPPORTED, "encoding F32 values as %s is not supported", it_dtype_name(dtype));
    }
    return IT_OK;
}

/* ============================================================================================ */
/* Reading                                                                                       */
/* ============================================================================================ */

#define ST_MAX_HEADER 100000000u /* the reference's MAX_HEADER_SIZE; a larger N is HeaderTooLarge */
#define ST_MAX_INDEX (64u << 20) /* a *.safetensors.index.json larger than this is refused */

/* One file of the set: its bytes (mapped or read) and its parsed header. */
typedef struct st_file {
    char *path;
    const unsigned char *bytes; /* [len] the whole file */
    size_t len;
    void *map;                  /* mmap'd region to unmap, or NULL */
    unsigned char *owned;       /* read() buffer to free, or NULL */
    it_json_doc *doc;           /* the header; tensor names and metadata point into it */
} st_file;

struct it_st {
    size_t nfiles;
    st_file *files;      /* [nfiles] */
    size_t n;
    it_tensor *t;        /* [n] sorted by name */
    int has_meta;
    size_t nmeta;
    const char **mkeys;  /* [nmeta] */
    const char **mvals;  /* [nmeta] */
};

/* A reason from the reference's SafeTensorError, as the tail of every format message. */
static int st_bad(it_err *err, const char *file, const char *reason, const char *fmt, ...) IT__PRINTF(4, 5);
static int st_bad(it_err *err, const char *file, const char *reason, const char *fmt, ...)
{
    if (!err) return IT_EFORMAT;
    char what[IT_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    it__fail(err, IT_EFORMAT, "%s", file);
    it__err_append(err, ": ", what); /* cut with "..." if long, but the reason always fits */
    size_t room = IT_ERR_MAX - 1 - strlen(reason) - 3, len = strlen(err->msg);
    if (len > room) memcpy(err->msg + room - 3, "...", 4), len = room;
    snprintf(err->msg + len, IT_ERR_MAX - len, " (%s)", reason);
    return IT_EFORMAT;
}

/* A printable, truncated rendering of a name for messages: control and non-ASCII bytes as \xNN. */
static const char *printable(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    for (; *s && o + 5 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f) buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    }
    if (*s && o + 4 < size) memcpy(buf + o, "...", 4), o += 3;
    buf[o < size ? o : size - 1] = 0;
    return buf;
}

/* ---- getting the bytes: mmap, or read() where mmap fails or ITERIS_NO_MMAP is set ---- */

static int file_read_all(st_file *f, int fd, size_t size, it_err *err)
{
    f->owned = malloc(size ? size : 1);
    if (!f->owned) return it__fail(err, IT_ENOMEM, "%s: out of memory reading %zu bytes", f->path, size);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, f->owned + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return it__fail(err, IT_EIO, "%s: read failed: %s", f->path, strerror(errno));
        if (r == 0) break; /* the file shrank: the size checks below judge what is there */
        got += (size_t)r;
    }
    f->bytes = f->owned;
    f->len = got;
    return IT_OK;
}

static int file_load(st_file *f, it_err *err)
{
    size_t size;
    int fd, rc = it__open_regular(f->path, &fd, &size, err);
    if (rc != IT_OK) return rc;
    const char *nomap = getenv("ITERIS_NO_MMAP");
    void *m = (size && !(nomap && *nomap && strcmp(nomap, "0"))) ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (m != MAP_FAILED) {
        f->map = m;
        f->bytes = m;
        f->len = size;
    } else {
        rc = file_read_all(f, fd, size, err);
    }
    close(fd);
    return rc;
}

static void file_free(st_file *f)
{
    if (f->map) munmap(f->map, f->len);
    free(f->owned);
    it_json_free(f->doc);
    free(f->path);
}

void it_st_close(it_st *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->nfiles; i++) file_free(&st->files[i]);
    free(st->files);
    for (size_t i = 0; i < st->n; i++) free((void *)st->t[i].shape);
    free(st->t);
    free(st->mkeys);
    free(st->mvals);
    free(st);
}

/* ---- the header: steps 1-5 of the reference's read_metadata ---- */

/* Steps 1-4: the size prefix, the cap, the bounds, UTF-8. Sets *hlen to N. */
static int header_bounds(const st_file *f, size_t *hlen, it_err *err)
{
    if (f->len < 8) return st_bad(err, f->path, "HeaderTooSmall", "file of %zu bytes is shorter than the 8-byte header size", f->len);
    uint64_t n = it__le64(f->bytes);
    if (n > ST_MAX_HEADER)
        return st_bad(err, f->path, "HeaderTooLarge", "header size %llu exceeds the %u-byte limit", (unsigned long long)n, ST_MAX_HEADER);
    if (n > f->len - 8)
        return st_bad(err, f->path, "InvalidHeaderLength", "header of %llu bytes runs past the end of the %zu-byte file",
                      (unsigned long long)n, f->len);
    if (!it__utf8_valid(f->bytes + 8, (size_t)n)) return st_bad(err, f->path, "InvalidHeader", "header is not valid UTF-8");
    *hlen = (size_t)n;
    return IT_OK;
}

/* A JSON value that must be a non-negative integer fitting usize (serde's usize). */
static int get_usize(const it_json *v, uint64_t *out)
{
    if (!v || v->type != IT_JSON_INT || !v->u_ok || v->u > SIZE_MAX) return -1;
    *out = v->u;
    return 0;
}

/* One tensor entry (step 5): {"dtype": known name, "shape": [usize...], "data_offsets": [usize, usize]};
 * other fields are ignored, as serde does. */
static int parse_entry(const st_file *f, const char *name, const it_json *v, it_tensor *t, it_err *err)
{
    char pn[96];
    const char *R = "InvalidHeaderDeserialization";
    printable(name, pn, sizeof pn);
    if (v->type != IT_JSON_OBJ) return st_bad(err, f->path, R, "tensor %s: expected an object, got %s", pn, it_json_type_name(v->type));
    const it_json *dt = it_json_get(v, "dtype"), *sh = it_json_get(v, "shape"), *off = it_json_get(v, "data_offsets");
    if (!dt) return st_bad(err, f->path, R, "tensor %s: missing field \"dtype\"", pn);
    if (!sh) return st_bad(err, f->path, R, "tensor %s: missing field \"shape\"", pn);
    if (!off) return st_bad(err, f->path, R, "tensor %s: missing field \"data_offsets\"", pn);
    if (dt->type != IT_JSON_STR) return st_bad(err, f->path, R, "tensor %s: dtype must be a string", pn);
    if (it_dtype_from_name(dt->s, dt->len, &t->dtype) != IT_OK) {
        char pd[48];
        return st_bad(err, f->path, R, "tensor %s: unknown dtype \"%s\"", pn, printable(dt->s, pd, sizeof pd));
    }
    if (sh->type != IT_JSON_ARR) return st_bad(err, f->path, R, "tensor %s: shape must be an array", pn);
    uint64_t *shape = it__malloc_n(sh->n, sizeof *shape);
    if (!shape) return it__fail(err, IT_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < sh->n; i++) {
        if (get_usize(&sh->items[i], &shape[i])) {
            free(shape);
            return st_bad(err, f->path, R, "tensor %s: shape[%zu] is not a non-negative integer", pn, i);
        }
    }
    t->shape = shape;
    t->ndim = sh->n;
    if (off->type != IT_JSON_ARR || off->n != 2)
        return st_bad(err, f->path, R, "tensor %s: data_offsets must be an array of 2 integers", pn);
    uint64_t b, e;
    if (get_usize(&off->items[0], &b) || get_usize(&off->items[1], &e))
        return st_bad(err, f->path, R, "tensor %s: data_offsets must be non-negative integers", pn);
    t->begin = b;
    t->nbytes = (size_t)e; /* the end offset, until validate_offsets turns it into a size */
    t->name = name;
    return IT_OK;
}

/* __metadata__: null (absent) or an object of string values. */
static int parse_meta(it_st *st, const st_file *f, const it_json *v, it_err *err)
{
    const char *R = "InvalidHeaderDeserialization";
    if (v->type == IT_JSON_NULL) return IT_OK;
    if (v->type != IT_JSON_OBJ) return st_bad(err, f->path, R, "__metadata__ must be an object of strings, got %s", it_json_type_name(v->type));
    for (size_t i = 0; i < v->n; i++) {
        char pk[96];
        if (v->items[i].type != IT_JSON_STR)
            return st_bad(err, f->path, R, "__metadata__ value of \"%s\" must be a string, got %s",
                          printable(v->keys[i], pk, sizeof pk), it_json_type_name(v->items[i].type));
    }
    st->has_meta = 1;
    const char **k = realloc(st->mkeys, (st->nmeta + v->n + 1) * sizeof *k);
    if (k) st->mkeys = k;
    const char **s = realloc(st->mvals, (st->nmeta + v->n + 1) * sizeof *s);
    if (s) st->mvals = s;
    if (!k || !s) return it__fail(err, IT_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < v->n; i++) {
        if (it_st_meta_get(st, v->keys[i])) continue; /* across shards the first value wins */
        st->mkeys[st->nmeta] = v->keys[i];
        st->mvals[st->nmeta++] = v->items[i].s;
    }
    return IT_OK;
}

/* ---- step 6: offsets contiguous from 0 in offset order, sizes matching dtype and shape ---- */

typedef struct {
    uint64_t b, e;
    size_t k; /* index into the tensor array; the tiebreak keeps the sort deterministic */
} span;

static int span_cmp(const void *x, const void *y)
{
    const span *a = x, *b = y;
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    if (a->e != b->e) return a->e < b->e ? -1 : 1;
    return a->k < b->k ? -1 : a->k > b->k;
}

/* Validates the tensors t[0..n) of one file whose byte buffer has buflen bytes, and points their
 * data into it. */
static int validate_offsets(const st_file *f, it_tensor *t, size_t n, const unsigned char *buf, size_t buflen, it_err *err)
{
    span *s = it__malloc_n(n, sizeof *s);
    if (!s) return it__fail(err, IT_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < n; i++) s[i] = (span){t[i].begin, (uint64_t)t[i].nbytes, i};
    qsort(s, n, sizeof *s, span_cmp);
    uint64_t start = 0;
    int rc = IT_OK;
    for (size_t i = 0; i < n && rc == IT_OK; i++) {
        it_tensor *x = &t[s[i].k];
        char pn[96];
        uint64_t numel = 1, bits;
        int bad_count = 0;
        for (size_t d = 0; d < x->ndim && !bad_count; d++) bad_count = it__mul_u64(numel, x->shape[d], &numel) != 0;
        if (s[i].b != start || s[i].e < s[i].b)
            rc = st_bad(err, f->path, "InvalidOffset", "tensor %s: data_offsets [%llu, %llu] do not start where the previous tensor ends (%llu)",
                        printable(x->name, pn, sizeof pn), (unsigned long long)s[i].b, (unsigned long long)s[i].e, (unsigned long long)start);
        else if (bad_count || numel > SIZE_MAX || it__mul_u64(numel, (uint64_t)it_dtype_bits(x->dtype), &bits) || bits / 8 > SIZE_MAX)
            rc = st_bad(err, f->path, "ValidationOverflow", "tensor %s: element count or byte size of shape overflows", printable(x->name, pn, sizeof pn));
        else if (bits % 8)
            rc = st_bad(err, f->path, "MisalignedSlice", "tensor %s: %llu elements of %s do not fill whole bytes",
                        printable(x->name, pn, sizeof pn), (unsigned long long)numel, it_dtype_name(x->dtype));
        else if (s[i].e - s[i].b != bits / 8)
            rc = st_bad(err, f->path, "TensorInvalidInfo", "tensor %s: data_offsets span %llu bytes, but %llu elements of %s take %llu",
                        printable(x->name, pn, sizeof pn), (unsigned long long)(s[i].e - s[i].b), (unsigned long long)numel,
                        it_dtype_name(x->dtype), (unsigned long long)(bits / 8));
        if (rc != IT_OK) break;
        x->numel = numel;
        x->nbytes = (size_t)(bits / 8);
        start = s[i].e;
    }
    free(s);
    if (rc == IT_OK && start != buflen)
        rc = st_bad(err, f->path, "MetadataIncompleteBuffer", "tensors cover %llu bytes of a %zu-byte data buffer",
                    (unsigned long long)start, buflen);
    for (size_t i = 0; i < n && rc == IT_OK; i++) t[i].data = buf + t[i].begin;
    return rc;
}

/* Parses and validates one file's header, appending its tensors to st->t. */
static int parse_file(it_st *st, size_t fi, it_err *err)
{
    st_file *f = &st->files[fi];
    size_t hlen = 0;
    int rc = header_bounds(f, &hlen, err);
    if (rc != IT_OK) return rc;
    rc = it_json_parse(&f->doc, f->bytes + 8, hlen, IT_JSON_NODUP, err);
    if (rc == IT_ENOMEM) return rc;
    if (rc != IT_OK) {
        char msg[IT_ERR_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        return st_bad(err, f->path, "InvalidHeaderDeserialization", "header is not valid JSON: %s", msg);
    }
    const it_json *root = it_json_root(f->doc);
    if (root->type != IT_JSON_OBJ) return st_bad(err, f->path, "InvalidHeaderDeserialization", "header is a JSON %s, not an object", it_json_type_name(root->type));
    it_tensor *t = realloc(st->t, (st->n + root->n + 1) * sizeof *t);
    if (!t) return it__fail(err, IT_ENOMEM, "%s: out of memory", f->path);
    st->t = t;
    size_t first = st->n;
    for (size_t i = 0; i < root->n; i++) {
        if (!strcmp(root->keys[i], "__metadata__") && root->keylens[i] == 12) {
            rc = parse_meta(st, f, &root->items[i], err);
        } else if (strlen(root->keys[i]) != root->keylens[i]) {
            rc = st_bad(err, f->path, "InvalidHeaderDeserialization", "a tensor name contains a NUL character");
        } else {
            memset(&t[st->n], 0, sizeof *t);
            t[st->n].file = fi;
            rc = parse_entry(f, root->keys[i], &root->items[i], &t[st->n], err);
            st->n++; /* counted even on failure, so that it_st_close frees its shape */
        }
        if (rc != IT_OK) return rc;
    }
    return validate_offsets(f, t + first, st->n - first, f->bytes + 8 + hlen, f->len - 8 - hlen, err);
}

static int name_cmp(const void *x, const void *y)
{
    return strcmp(((const it_tensor *)x)->name, ((const it_tensor *)y)->name);
}

/* Sorts by name and refuses a name that appears twice (possible across shards). */
static int sort_names(it_st *st, it_err *err)
{
    qsort(st->t, st->n, sizeof *st->t, name_cmp);
    for (size_t i = 1; i < st->n; i++) {
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0) {
            char pn[96];
            return it__fail(err, IT_EFORMAT, "%s: tensor %s appears in both %s and %s", st->files[0].path,
                            printable(st->t[i].name, pn, sizeof pn), st->files[st->t[i - 1].file].path, st->files[st->t[i].file].path);
        }
    }
    return IT_OK;
}

static int st_new(it_st **out, size_t nfiles, it_err *err)
{
    *out = calloc(1, sizeof **out);
    if (*out) (*out)->files = it__calloc(nfiles, sizeof(st_file));
    if (!*out || !(*out)->files) {
        if (*out) free(*out);
        *out = NULL;
        return it__fail(err, IT_ENOMEM, "out of memory");
    }
    (*out)->nfiles = nfiles;
    return IT_OK;
}

int it_st_open_mem(it_st **out, const void *buf, size_t len, const char *name, it_err *err)
{
    *out = NULL;
    it_st *st;
    int rc = st_new(&st, 1, err);
    if (rc != IT_OK) return rc;
    st->files[0].path = it__strdup(name ? name : "<memory>");
    st->files[0].bytes = buf;
    st->files[0].len = len;
    rc = st->files[0].path ? parse_file(st, 0, err) : it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK) rc = sort_names(st, err);
    if (rc != IT_OK) {
        it_st_close(st);
        return rc;
    }
    *out = st;
    return IT_OK;
}

/* ---- sharded checkpoints: <name>.safetensors.index.json = {"metadata": {...}, "weight_map": {tensor: shard}} ---- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A shard must be a plain file name in the index's folder. */
static int shard_name_ok(const char *s, size_t len)
{
    return len > 0 && strlen(s) == len && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") && strcmp(s, "..");
}

/* Reads the index; fills the distinct shard names in order of first appearance. */
static int read_index(const char *path, it_json_doc **doc, const it_json **wmap, it_err *err)
{
    char *text;
    size_t len;
    int rc = it__read_file(path, ST_MAX_INDEX, &text, &len, err);
    if (rc != IT_OK) return rc;
    rc = it_json_parse(doc, text, len, IT_JSON_NODUP, err);
    free(text);
    if (rc != IT_OK) {
        it__err_prefix(err, path);
        return rc;
    }
    const it_json *root = it_json_root(*doc);
    *wmap = it_json_get(root, "weight_map");
    if (root->type != IT_JSON_OBJ || !*wmap || (*wmap)->type != IT_JSON_OBJ)
        return it__fail(err, IT_EFORMAT, "%s: an index needs an object \"weight_map\" mapping tensor names to shard files", path);
    for (size_t i = 0; i < (*wmap)->n; i++) {
        const it_json *v = &(*wmap)->items[i];
        char pk[96];
        if (v->type != IT_JSON_STR || !shard_name_ok(v->s, v->len))
            return it__fail(err, IT_EFORMAT, "%s: weight_map[\"%s\"] must be the file name of a shard in the same folder", path,
                            printable((*wmap)->keys[i], pk, sizeof pk));
    }
    return IT_OK;
}

/* Every tensor of every shard is listed in the weight map under its own shard, and every listed
 * tensor exists. */
static int check_index(const it_st *st, const char *path, const it_json *wmap, char **shards, it_err *err)
{
    char pn[96];
    for (size_t i = 0; i < wmap->n; i++) {
        const it_tensor *t = it_st_find(st, wmap->keys[i]);
        if (!t) return it__fail(err, IT_EFORMAT, "%s: tensor %s is listed in weight_map but no shard holds it", path, printable(wmap->keys[i], pn, sizeof pn));
        if (strcmp(shards[t->file], wmap->items[i].s))
            return it__fail(err, IT_EFORMAT, "%s: tensor %s is listed in %s but found in %s", path, printable(t->name, pn, sizeof pn),
                            wmap->items[i].s, shards[t->file]);
    }
    for (size_t i = 0; i < st->n; i++)
        if (!it_json_get(wmap, st->t[i].name))
            return it__fail(err, IT_EFORMAT, "%s: shard %s holds tensor %s, which weight_map does not list", path,
                            shards[st->t[i].file], printable(st->t[i].name, pn, sizeof pn));
    return IT_OK;
}

static int open_index(it_st **out, const char *path, it_err *err)
{
    it_json_doc *doc = NULL;
    const it_json *wmap = NULL;
    char **shards = NULL;
    size_t ns = 0;
    it_st *st = NULL;
    int rc = read_index(path, &doc, &wmap, err);
    if (rc == IT_OK && !(shards = it__calloc(wmap->n, sizeof *shards))) rc = it__fail(err, IT_ENOMEM, "out of memory");
    for (size_t i = 0; rc == IT_OK && i < wmap->n; i++) {
        size_t j = 0;
        while (j < ns && strcmp(shards[j], wmap->items[i].s)) j++;
        if (j == ns) shards[ns++] = (char *)wmap->items[i].s;
    }
    if (rc == IT_OK) rc = st_new(&st, ns, err);
    char *dir = it__strdup(path);
    if (rc == IT_OK && !dir) rc = it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK) {
        char *slash = strrchr(dir, '/');
        if (slash) slash[1] = 0;
        else dir[0] = 0;
    }
    for (size_t i = 0; rc == IT_OK && i < ns; i++) {
        st->files[i].path = it__path_join(dir[0] ? dir : ".", shards[i]);
        if (!st->files[i].path) rc = it__fail(err, IT_ENOMEM, "out of memory");
        if (rc == IT_OK) rc = file_load(&st->files[i], err);
        if (rc == IT_OK) rc = parse_file(st, i, err);
    }
    if (rc == IT_OK) rc = sort_names(st, err);
    if (rc == IT_OK) rc = check_index(st, path, wmap, shards, err);
    free(dir);
    free(shards);
    it_json_free(doc);
    if (rc != IT_OK) {
        it_st_close(st);
        return rc;
    }
    *out = st;
    return IT_OK;
}

/* The weights file of a model or adapter folder, in the order the reference libraries look. */
static const char *const weight_names[] = {
    "model.safetensors.index.json", "model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
    "adapter_model.safetensors", "pytorch_lora_weights.safetensors",
};

static int open_dir(it_st **out, const char *dir, it_err *err)
{
    for (size_t i = 0; i < sizeof weight_names / sizeof *weight_names; i++) {
        char *p = it__path_join(dir, weight_names[i]);
        if (!p) return it__fail(err, IT_ENOMEM, "out of memory");
        int found = it__exists(p), rc = found ? it_st_open(out, p, err) : IT_ENOTFOUND;
        free(p);
        if (found) return rc; /* the first weights file present decides, even when it fails */
    }
    return it__fail(err, IT_ENOTFOUND, "%s: no safetensors weights in this folder (looked for model.safetensors, "
                    "diffusion_pytorch_model.safetensors, their .index.json, adapter_model.safetensors, "
                    "pytorch_lora_weights.safetensors)", dir);
}

int it_st_open(it_st **out, const char *path, it_err *err)
{
    *out = NULL;
    if (it__is_dir(path)) return open_dir(out, path, err);
    if (ends_with(path, ".index.json")) return open_index(out, path, err);
    it_st *st;
    int rc = st_new(&st, 1, err);
    if (rc != IT_OK) return rc;
    st->files[0].path = it__strdup(path);
    if (!st->files[0].path) rc = it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK) rc = file_load(&st->files[0], err);
    if (rc == IT_OK) rc = parse_file(st, 0, err);
    if (rc == IT_OK) rc = sort_names(st, err);
    if (rc != IT_OK) {
        it_st_close(st);
        return rc;
    }
    *out = st;
    return IT_OK;
}

/* ---- accessors ---- */

size_t it_st_count(const it_st *st) { return st ? st->n : 0; }
const it_tensor *it_st_tensor(const it_st *st, size_t i) { return st && i < st->n ? &st->t[i] : NULL; }
int it_st_has_meta(const it_st *st) { return st ? st->has_meta : 0; }
size_t it_st_meta_count(const it_st *st) { return st ? st->nmeta : 0; }
size_t it_st_file_count(const it_st *st) { return st ? st->nfiles : 0; }
const char *it_st_file_path(const it_st *st, size_t i) { return st && i < st->nfiles ? st->files[i].path : NULL; }

const it_tensor *it_st_find(const it_st *st, const char *name)
{
    size_t lo = 0, hi = st ? st->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].name, name);
        if (c == 0) return &st->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

void it_st_meta_at(const it_st *st, size_t i, const char **key, const char **value)
{
    *key = st && i < st->nmeta ? st->mkeys[i] : NULL;
    *value = st && i < st->nmeta ? st->mvals[i] : NULL;
}

const char *it_st_meta_get(const it_st *st, const char *key)
{
    for (size_t i = 0; st && i < st->nmeta; i++)
        if (!strcmp(st->mkeys[i], key)) return st->mvals[i];
    return NULL;
}

/* ============================================================================================ */
/* Writing                                                                                       */
/* ============================================================================================ */

/* A growable byte buffer for the header. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t len)
{
    if (b->oom) return;
    if (len > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < len) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v)
{
    char tmp[24];
    sb_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v));
}

/* A JSON string as serde_json writes it: \" \\ \b \f \n \r \t, other control characters as
 * \u00xx (lowercase hex), everything else (DEL and non-ASCII included) as is. */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" : c == '\f' ? "\\f"
                        : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
        char u[8];
        if (esc) sb_str(b, esc);
        else if (c < 0x20) sb_put(b, u, (size_t)snprintf(u, sizeof u, "\\u%04x", c));
        else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

/* The reference writer's order: dtype descending (enum order), then name (bytewise). */
static int layout_cmp(const void *x, const void *y)
{
    const it_tensor *a = *(const it_tensor *const *)x, *b = *(const it_tensor *const *)y;
    if (a->dtype != b->dtype) return a->dtype > b->dtype ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Checks one tensor to be written: a valid UTF-8 name, a known dtype, nbytes matching the shape. */
static int check_out_tensor(const it_tensor *t, const char *path, it_err *err)
{
    char pn[96];
    uint64_t numel = 1, bits;
    if (!t->name || !it__utf8_valid((const unsigned char *)t->name, strlen(t->name)) || !strcmp(t->name, "__metadata__"))
        return it__fail(err, IT_EINVAL, "%s: tensor name %s is not a valid UTF-8 name", path, t->name ? printable(t->name, pn, sizeof pn) : "(null)");
    if ((unsigned)t->dtype >= IT_DTYPE_COUNT) return it__fail(err, IT_EINVAL, "%s: tensor %s: invalid dtype", path, printable(t->name, pn, sizeof pn));
    for (size_t d = 0; d < t->ndim; d++)
        if (it__mul_u64(numel, t->shape[d], &numel)) return it__fail(err, IT_EINVAL, "%s: tensor %s: shape overflows", path, printable(t->name, pn, sizeof pn));
    if (it__mul_u64(numel, (uint64_t)it_dtype_bits(t->dtype), &bits) || bits % 8 || bits / 8 != t->nbytes || (t->nbytes && !t->data))
        return it__fail(err, IT_EINVAL, "%s: tensor %s: %zu bytes given, but %s of this shape needs %llu%s", path, printable(t->name, pn, sizeof pn),
                        t->nbytes, it_dtype_name(t->dtype), (unsigned long long)(bits / 8), bits % 8 ? " and a bit" : "");
    return IT_OK;
}

/* Builds the padded header for the tensors *ord[0..n), in that order. */
static int build_header(sbuf *h, const it_tensor *const *ord, size_t n, const char *const *mk,
                        const char *const *mv, size_t nmeta, const char *path, it_err *err)
{
    sb_put(h, "{", 1);
    if (mk) {
        sb_str(h, "\"__metadata__\":{");
        for (size_t i = 0; i < nmeta; i++) {
            if (!mk[i] || !mv[i] || !it__utf8_valid((const unsigned char *)mk[i], strlen(mk[i])) || !it__utf8_valid((const unsigned char *)mv[i], strlen(mv[i])))
                return it__fail(err, IT_EINVAL, "%s: metadata entry %zu is not a pair of UTF-8 strings", path, i);
            if (i) sb_put(h, ",", 1);
            sb_json_str(h, mk[i]);
            sb_put(h, ":", 1);
            sb_json_str(h, mv[i]);
        }
        sb_str(h, n ? "}," : "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const it_tensor *x = ord[i];
        if (i) sb_put(h, ",", 1);
        sb_json_str(h, x->name);
        sb_str(h, ":{\"dtype\":");
        sb_json_str(h, it_dtype_name(x->dtype));
        sb_str(h, ",\"shape\":[");
        for (size_t d = 0; d < x->ndim; d++) {
            if (d) sb_put(h, ",", 1);
            sb_u64(h, x->shape[d]);
        }
        sb_str(h, "],\"data_offsets\":[");
        sb_u64(h, off);
        sb_put(h, ",", 1);
        off += x->nbytes;
        sb_u64(h, off);
        sb_str(h, "]}");
    }
    sb_put(h, "}", 1);
    while (!h->oom && h->n % 8) sb_put(h, " ", 1); /* pad to 8 (no progress once out of memory) */
    return h->oom ? it__fail(err, IT_ENOMEM, "%s: out of memory building the header", path) : IT_OK;
}

int it_st_save(const char *path, const it_tensor *tensors, size_t n, const char *const *meta_keys,
               const char *const *meta_values, size_t nmeta, it_err *err)
{
    const it_tensor **ord = it__malloc_n(n, sizeof *ord);
    if (!ord) return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    int rc = IT_OK;
    for (size_t i = 0; i < n && rc == IT_OK; i++) {
        ord[i] = &tensors[i];
        rc = check_out_tensor(&tensors[i], path, err);
    }
    if (rc == IT_OK) qsort(ord, n, sizeof *ord, layout_cmp);
    for (size_t i = 1; i < n && rc == IT_OK; i++) {
        char pn[96];
        if (!strcmp(ord[i - 1]->name, ord[i]->name))
            rc = it__fail(err, IT_EINVAL, "%s: tensor %s is given twice", path, printable(ord[i]->name, pn, sizeof pn));
    }
    sbuf h = {0};
    if (rc == IT_OK) rc = build_header(&h, ord, n, meta_keys, meta_values, nmeta, path, err);
    it__out out;
    if (rc == IT_OK) rc = it__out_open(&out, path, err);
    if (rc == IT_OK) {
        unsigned char len8[8];
        it__put_le64(len8, (uint64_t)h.n);
        rc = it__out_write(&out, len8, 8, err);
        if (rc == IT_OK) rc = it__out_write(&out, h.p, h.n, err);
        for (size_t i = 0; i < n && rc == IT_OK; i++) rc = it__out_write(&out, ord[i]->data, ord[i]->nbytes, err);
        if (rc == IT_OK) rc = it__out_commit(&out, err);
        else it__out_abort(&out);
    }
    free(h.p);
    free(ord);
    return rc;
}
