/* test_dtype.c -- element types: names and sizes, every conversion to float32 (exact, with
 * subnormals, inf and NaN), and float32 -> F16/BF16 rounding to nearest even, checked against
 * independent formulas and by exhaustive enumeration. */
#include "test.h"

#include "iteris.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The bits a float returned by value can have when the function computed bits u. On 32-bit x86 a
 * float is returned in the x87 st(0), whose load quiets a signaling NaN (sets the top mantissa
 * bit, 0x400000) and keeps the rest of the payload; everywhere else the bits come back as they are. */
static uint32_t returned_bits(uint32_t u)
{
#if defined(__i386__)
    if ((u & 0x7f800000) == 0x7f800000 && (u & 0x7fffff)) u |= 0x400000;
#endif
    return u;
}

/* An independent decoder for IEEE-style minifloats, in double: (-1)^s 2^(e-bias) (1 + m/2^mb),
 * subnormal when e = 0. Specials are left to the caller. */
static double ref_minifloat(unsigned v, int eb, int mb, int bias)
{
    int s = (v >> (eb + mb)) & 1, e = (int)(v >> mb) & ((1 << eb) - 1), m = (int)v & ((1 << mb) - 1);
    double r = e ? ldexp(1.0 + m / (double)(1 << mb), e - bias) : ldexp(m / (double)(1 << mb), 1 - bias);
    return s ? -r : r;
}

static void dtype_names_and_sizes(void)
{
    const char *names[] = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
                           "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"};
    const int bits[] = {8, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32, 64, 64, 64, 64};
    CHECK(sizeof names / sizeof *names == IT_DTYPE_COUNT);
    for (int d = 0; d < IT_DTYPE_COUNT; d++) {
        it_dtype got;
        CHECKF(!strcmp(it_dtype_name((it_dtype)d), names[d]), "dtype %d named %s", d, it_dtype_name((it_dtype)d));
        CHECK(it_dtype_bits((it_dtype)d) == bits[d]);
        CHECK(it_dtype_from_name(names[d], strlen(names[d]), &got) == IT_OK && got == (it_dtype)d);
    }
    it_dtype got;
    CHECK(it_dtype_from_name("f32", 3, &got) == IT_ENOTFOUND); /* names are case-sensitive */
    CHECK(it_dtype_from_name("F3", 2, &got) == IT_ENOTFOUND);
    CHECK(it_dtype_from_name("F32 ", 4, &got) == IT_ENOTFOUND);
    CHECK(!strcmp(it_dtype_name((it_dtype)99), "?"));
}

/* Every half converts exactly; specials keep their class, NaN payloads are kept. */
static void f16_to_f32_all(void)
{
    int bad = 0;
    for (unsigned h = 0; h < 65536; h++) {
        float f = it_f16_to_f32((uint16_t)h);
        unsigned e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) {
            if (m == 0) bad += !(isinf(f) && (signbit(f) != 0) == ((h >> 15) != 0));
            else bad += !isnan(f) || (bits_of(f) & 0x7fffff) != (returned_bits(0x7f800000 | m << 13) & 0x7fffff);
        } else {
            bad += (double)f != ref_minifloat(h, 5, 10, 15) || (signbit(f) != 0) != ((h >> 15) != 0);
        }
    }
    CHECKF(bad == 0, "%d halves converted wrongly", bad);
    CHECK(it_f16_to_f32(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
    CHECK(it_f16_to_f32(0x03ff) == ldexpf(1023, -24));
    CHECK(it_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(it_f16_to_f32(0x3c00) == 1.0f);
}

/* The nearest half to x with ties to even, found by comparing neighbours in double. */
static int is_nearest_even_f16(float x, uint16_t h)
{
    if (isnan(x)) return isnan(it_f16_to_f32(h));
    double v = fabs((double)x), got = fabs((double)it_f16_to_f32(h));
    if (got != got) return 0;
    if (isinf(got)) return v >= 65520.0; /* 65504 + half an ulp (32/2) ties to the even "next" = inf */
    uint16_t a = h & 0x7fff;
    double below = a ? fabs((double)it_f16_to_f32((uint16_t)(a - 1))) : -1.0;
    double above = a < 0x7bff ? fabs((double)it_f16_to_f32((uint16_t)(a + 1))) : 65536.0;
    double d = fabs(v - got), db = below >= 0 ? fabs(v - below) : INFINITY, da = fabs(v - above);
    if (d > db || d > da) return 0;
    if ((d == db || d == da) && (a & 1)) return 0; /* a tie must land on the even neighbour */
    return (h >> 15) == (bits_of(x) >> 31);
}

static void f32_to_f16_rounding(void)
{
    int bad = 0;
    for (unsigned h = 0; h < 65536; h++) { /* every half round-trips */
        if (((h >> 10) & 31) == 31 && (h & 1023)) continue;
        bad += it_f32_to_f16(it_f16_to_f32((uint16_t)h)) != h;
    }
    CHECKF(bad == 0, "%d halves do not round-trip", bad);
    uint32_t s = 12345; /* midpoints and their neighbours, plus random bit patterns */
    for (unsigned h = 0; h < 0x7c00; h++) {
        float lo = it_f16_to_f32((uint16_t)h), hi = h < 0x7bff ? it_f16_to_f32((uint16_t)(h + 1)) : 65536.0f;
        float mid = (float)(((double)lo + hi) / 2);
        bad += !is_nearest_even_f16(mid, it_f32_to_f16(mid));
        bad += !is_nearest_even_f16(nextafterf(mid, 0), it_f32_to_f16(nextafterf(mid, 0)));
        bad += !is_nearest_even_f16(nextafterf(mid, INFINITY), it_f32_to_f16(nextafterf(mid, INFINITY)));
        bad += !is_nearest_even_f16(-mid, it_f32_to_f16(-mid));
    }
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        float x = float_of(s);
        if (!isnan(x)) bad += !is_nearest_even_f16(x, it_f32_to_f16(x));
    }
    CHECKF(bad == 0, "%d values rounded wrongly", bad);
    CHECK(it_f32_to_f16(65519.996f) == 0x7bff);
    CHECK(it_f32_to_f16(65520.0f) == 0x7c00);
    CHECK(it_f32_to_f16(-1e30f) == 0xfc00);
    CHECK(it_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(it_f32_to_f16(ldexpf(1, -25)) == 0x0000);                 /* a tie between 0 and 2^-24: even */
    CHECK(it_f32_to_f16(nextafterf(ldexpf(1, -25), 1)) == 0x0001);
    CHECK(it_f32_to_f16(ldexpf(3, -25)) == 0x0002);                 /* 1.5 ulp: tie, to even 2 */
    CHECK(it_f32_to_f16(-0.0f) == 0x8000);
    CHECK(it_f32_to_f16(NAN) == 0x7e00);
    CHECK(it_f32_to_f16(-NAN) == 0xfe00);
}

static void bf16_conversions(void)
{
    int bad = 0;
    for (unsigned b = 0; b < 65536; b++) {
        float f = it_bf16_to_f32((uint16_t)b);
        bad += bits_of(f) != returned_bits((uint32_t)b << 16);
        if (!isnan(f)) bad += it_f32_to_bf16(f) != b;
    }
    CHECKF(bad == 0, "%d bf16 values wrong", bad);
    CHECK(it_f32_to_bf16(float_of(0x3f808000)) == 0x3f80); /* tie, even stays */
    CHECK(it_f32_to_bf16(float_of(0x3f818000)) == 0x3f82); /* tie, odd rounds up */
    CHECK(it_f32_to_bf16(float_of(0x3f808001)) == 0x3f81);
    CHECK(it_f32_to_bf16(float_of(0x7f7fffff)) == 0x7f80); /* FLT_MAX rounds to inf */
    CHECK(it_f32_to_bf16(float_of(0x00008000)) == 0x0000); /* subnormal tie to even zero */
    CHECK(it_f32_to_bf16(NAN) == 0x7fc0);
    CHECK(it_f32_to_bf16(float_of(0xffc00001)) == 0x7fc0);
}

/* The five 8-bit float formats against the formula and their documented specials. */
static void f8_conversions(void)
{
    int bad = 0;
    for (unsigned v = 0; v < 256; v++) {
        float e4 = it_f8_to_f32(IT_F8_E4M3, (uint8_t)v), e5 = it_f8_to_f32(IT_F8_E5M2, (uint8_t)v);
        float u4 = it_f8_to_f32(IT_F8_E4M3FNUZ, (uint8_t)v), u5 = it_f8_to_f32(IT_F8_E5M2FNUZ, (uint8_t)v);
        float m0 = it_f8_to_f32(IT_F8_E8M0, (uint8_t)v);
        if ((v & 0x7f) == 0x7f) bad += !isnan(e4);
        else bad += (double)e4 != ref_minifloat(v, 4, 3, 7);
        if (((v >> 2) & 31) == 31) bad += (v & 3) ? !isnan(e5) : !isinf(e5);
        else bad += (double)e5 != ref_minifloat(v, 5, 2, 15);
        if (v == 0x80) bad += !isnan(u4) || !isnan(u5);
        else bad += (double)u4 != ref_minifloat(v, 4, 3, 8) || (double)u5 != ref_minifloat(v, 5, 2, 16);
        if (v == 0xff) bad += !isnan(m0);
        else bad += (double)m0 != ldexp(1.0, (int)v - 127);
    }
    CHECKF(bad == 0, "%d fp8 values wrong", bad);
    CHECK(it_f8_to_f32(IT_F8_E4M3, 0x7e) == 448.0f);
    CHECK(it_f8_to_f32(IT_F8_E4M3, 0x01) == ldexpf(1, -9));
    CHECK(it_f8_to_f32(IT_F8_E5M2, 0x7b) == 57344.0f);
    CHECK(it_f8_to_f32(IT_F8_E5M2, 0x01) == ldexpf(1, -16));
    CHECK(it_f8_to_f32(IT_F8_E4M3FNUZ, 0x7f) == 240.0f);
    CHECK(it_f8_to_f32(IT_F8_E4M3FNUZ, 0x01) == ldexpf(1, -10));
    CHECK(it_f8_to_f32(IT_F8_E5M2FNUZ, 0x7f) == 57344.0f);
    CHECK(it_f8_to_f32(IT_F8_E5M2FNUZ, 0x01) == ldexpf(1, -17));
    CHECK(it_f8_to_f32(IT_F8_E8M0, 0x00) == ldexpf(1, -127));
    CHECK(it_f8_to_f32(IT_F8_E8M0, 0x7f) == 1.0f);
    CHECK(signbit(it_f8_to_f32(IT_F8_E4M3, 0x80)) && it_f8_to_f32(IT_F8_E4M3, 0x80) == 0.0f);
}

/* A tensor view over little-endian bytes. */
static it_tensor view(it_dtype dt, const void *bytes, uint64_t n)
{
    static uint64_t shape[1];
    shape[0] = n;
    it_tensor t = {"t", dt, 1, shape, n, (size_t)(n * (uint64_t)it_dtype_bits(dt) / 8), bytes, 0, 0};
    return t;
}

static void tensor_to_f32_every_dtype(void)
{
    float out[4];
    it_err err;
    const unsigned char f32[] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0xc0, 0xff}; /* 1.0, NaN */
    it_tensor t = view(IT_F32, f32, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 1.0f && isnan(out[1]));
    const unsigned char f16[] = {0x00, 0x3c, 0x01, 0x00, 0x00, 0xfc}; /* 1, 2^-24, -inf */
    t = view(IT_F16, f16, 3);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 1.0f && out[1] == ldexpf(1, -24) && isinf(out[2]) && out[2] < 0);
    const unsigned char bf[] = {0x80, 0x3f, 0x80, 0xbf};
    t = view(IT_BF16, bf, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 1.0f && out[1] == -1.0f);
    const unsigned char f64[] = {1, 0, 0, 0x10, 0, 0, 0xf0, 0x3f,   /* 1 + 2^-52 + 2^-24: just above a tie */
                                 0, 0, 0, 0x10, 0, 0, 0xf0, 0x3f};  /* 1 + 2^-24: a tie, to even 1 */
    t = view(IT_F64, f64, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == nextafterf(1, 2) && out[1] == 1.0f);
    const unsigned char i64[] = {1, 0, 0, 0, 0, 0, 0x20, 0,  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    t = view(IT_I64, i64, 2); /* 2^53 + 1 -> 2^53; -1 */
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == ldexpf(1, 53) && out[1] == -1.0f);
    t = view(IT_U64, i64 + 8, 1);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == ldexpf(1, 64));
    const unsigned char i32[] = {0xff, 0xff, 0xff, 0x7f, 0x00, 0x00, 0x00, 0x80};
    t = view(IT_I32, i32, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == ldexpf(1, 31) && out[1] == -ldexpf(1, 31));
    t = view(IT_U32, i32 + 4, 1);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == ldexpf(1, 31));
    const unsigned char i16[] = {0x00, 0x80, 0xff, 0xff};
    t = view(IT_I16, i16, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == -32768.0f && out[1] == -1.0f);
    t = view(IT_U16, i16, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 32768.0f && out[1] == 65535.0f);
    const unsigned char i8[] = {0x80, 0x7f, 0x00, 0x02};
    t = view(IT_I8, i8, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == -128.0f && out[1] == 127.0f);
    t = view(IT_U8, i8, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 128.0f && out[1] == 127.0f);
    t = view(IT_BOOL, i8 + 2, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 0.0f && out[1] == 1.0f);
    const unsigned char f8[] = {0x7e, 0x7c};
    t = view(IT_F8_E4M3, f8, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && out[0] == 448.0f && out[1] == 384.0f);
    t = view(IT_F8_E5M2, f8, 2);
    CHECK(it_tensor_to_f32(&t, out, &err) == IT_OK && isnan(out[0]) && isinf(out[1]));
}

static void tensor_to_f32_unsupported(void)
{
    float out[4];
    it_err err;
    const unsigned char z[16] = {0};
    it_dtype no[] = {IT_C64, IT_F4, IT_F6_E2M3, IT_F6_E3M2};
    for (size_t i = 0; i < 4; i++) {
        it_tensor t = view(no[i], z, no[i] == IT_C64 ? 1 : 4);
        CHECK(it_tensor_to_f32(&t, out, &err) == IT_EUNSUPPORTED && err.code == IT_EUNSUPPORTED);
        CHECK(strstr(err.msg, it_dtype_name(no[i])) != NULL);
    }
}

static void encode_from_f32(void)
{
    const float src[3] = {1.0f, -2.5f, 65519.996f};
    unsigned char b[24];
    it_err err;
    CHECK(it_f32_encode(b, IT_F32, src, 3, &err) == IT_OK && b[0] == 0 && b[3] == 0x3f && b[7] == 0xc0);
    CHECK(it_f32_encode(b, IT_F16, src, 3, &err) == IT_OK && b[0] == 0x00 && b[1] == 0x3c && b[4] == 0xff && b[5] == 0x7b);
    CHECK(it_f32_encode(b, IT_BF16, src, 2, &err) == IT_OK && b[0] == 0x80 && b[1] == 0x3f && b[2] == 0x20 && b[3] == 0xc0);
    CHECK(it_f32_encode(b, IT_F64, src, 2, &err) == IT_OK && b[7] == 0x3f && b[6] == 0xf0 && b[15] == 0xc0 && b[14] == 0x04);
    CHECK(it_f32_encode(b, IT_I32, src, 1, &err) == IT_EUNSUPPORTED);
}

void suite_dtype(void)
{
    RUN(dtype_names_and_sizes);
    RUN(f16_to_f32_all);
    RUN(f32_to_f16_rounding);
    RUN(bf16_conversions);
    RUN(f8_conversions);
    RUN(tensor_to_f32_every_dtype);
    RUN(tensor_to_f32_unsupported);
    RUN(encode_from_f32);
}
