/* test/test_json.c -- the JSON parser (json.c): valid documents with their values checked, invalid
 * ones refused at the exact byte, UTF-8 and number grammar against naive oracles, depth limits,
 * duplicate keys and lookups. */
#include "test.h"

#include "iteris.h"

#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

/* text[0..len) as printable ASCII for failure messages (static buffer, cut at 80 bytes). */
static const char *show(const char *text, size_t len)
{
    static char buf[400];
    size_t m = 0;
    for (size_t i = 0; i < len && i < 80; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c < 0x7F) buf[m++] = (char)c;
        else m += (size_t)snprintf(buf + m, sizeof buf - m, "\\x%02X", c);
    }
    buf[m] = 0;
    return buf;
}

/* Parses text[0..len) and checks that it succeeds; the document, or NULL. */
static it_json_doc *parse_len(const char *text, size_t len, unsigned flags, int line)
{
    it_json_doc *doc = NULL;
    it_err err = {0, ""};
    int rc = it_json_parse(&doc, text, len, flags, &err);
    if (rc != IT_OK) test_fail(__FILE__, line, "parse of <%s> failed: %s", show(text, len), err.msg);
    return doc;
}
#define PARSE(text) parse_len((text), strlen(text), 0, __LINE__)

/* Whether msg is one line of printable ASCII. */
static int one_line(const char *msg)
{
    for (const char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F) return 0;
    return 1;
}

/* Checks that text[0..len) is refused: IT_EFORMAT, *out left NULL, a one-line message that starts
 * exactly with "at byte <at>: " and contains needle (when not NULL). */
static void refuse_len(const char *text, size_t len, unsigned flags, size_t at, const char *needle, int line)
{
    it_json_doc *doc = (it_json_doc *)&doc; /* not NULL, so that we see it cleared */
    it_err err = {0, ""};
    char prefix[64];
    int rc = it_json_parse(&doc, text, len, flags, &err);
    snprintf(prefix, sizeof prefix, "at byte %zu: ", at);
    const char *t = show(text, len);
    if (rc != IT_EFORMAT || err.code != IT_EFORMAT) test_fail(__FILE__, line, "<%s>: rc %d, want IT_EFORMAT", t, rc);
    if (rc == IT_OK) it_json_free(doc);
    else if (doc) test_fail(__FILE__, line, "<%s>: *out not cleared", t);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
        test_fail(__FILE__, line, "<%s>: message \"%s\" does not start with \"%s\"", t, err.msg, prefix);
    if (needle && !strstr(err.msg, needle)) test_fail(__FILE__, line, "<%s>: message \"%s\" lacks \"%s\"", t, err.msg, needle);
    if (!one_line(err.msg)) test_fail(__FILE__, line, "<%s>: message is not one printable line", t);
}
#define REFUSE(text, at, needle) refuse_len((text), strlen(text), 0, (at), (needle), __LINE__)

/* One invalid input: its bytes (len 0: up to the NUL), where it must fail, and a part of the
 * message. */
typedef struct bad_case {
    const char *text;
    size_t len;
    size_t at;
    const char *needle;
} bad_case;

static void refuse_table(const bad_case *cases, size_t n, int line)
{
    for (size_t i = 0; i < n; i++) {
        const bad_case *c = &cases[i];
        refuse_len(c->text, c->len ? c->len : strlen(c->text), 0, c->at, c->needle, line);
    }
}
#define REFUSE_TABLE(cases) refuse_table((cases), sizeof(cases) / sizeof(cases)[0], __LINE__)

/* Whether v is a string with exactly the bytes want[0..n). */
static int str_is(const it_json *v, const char *want, size_t n)
{
    return v && v->type == IT_JSON_STR && v->len == n && memcmp(v->s, want, n) == 0 && v->s[n] == 0;
}

/* ============================================================================================ */
/* Valid documents                                                                               */
/* ============================================================================================ */

/* null, false and true as whole documents, with their type names. */
static void test_json_literals(void)
{
    static const char *text[] = {"null", "false", "true"};
    static const it_json_type type[] = {IT_JSON_NULL, IT_JSON_FALSE, IT_JSON_TRUE};
    for (int k = 0; k < 3; k++) {
        it_json_doc *doc = PARSE(text[k]);
        const it_json *r = it_json_root(doc);
        CHECK(r && r->type == type[k] && r->pos == 0 && r->n == 0);
        CHECK(r && !strcmp(it_json_type_name(r->type), text[k]));
        it_json_free(doc);
    }
}

/* The static names of the other types, and "?" for a value outside the enum. */
static void test_json_type_names(void)
{
    CHECK(!strcmp(it_json_type_name(IT_JSON_INT), "integer"));
    CHECK(!strcmp(it_json_type_name(IT_JSON_NUM), "number"));
    CHECK(!strcmp(it_json_type_name(IT_JSON_STR), "string"));
    CHECK(!strcmp(it_json_type_name(IT_JSON_ARR), "array"));
    CHECK(!strcmp(it_json_type_name(IT_JSON_OBJ), "object"));
    CHECK(!strcmp(it_json_type_name((it_json_type)99), "?"));
}

/* Parses an integer literal and checks every field. */
static void check_int(const char *text, int i_ok, int64_t i, int u_ok, uint64_t u, double d, int line)
{
    it_json_doc *doc = parse_len(text, strlen(text), 0, line);
    const it_json *r = it_json_root(doc);
    if (!r) return;
    if (r->type != IT_JSON_INT || r->i_ok != i_ok || r->u_ok != u_ok || (i_ok && r->i != i) || (u_ok && r->u != u) ||
        r->d != d)
        test_fail(__FILE__, line, "%s: type %d i_ok %d i %lld u_ok %d u %llu d %.17g", text, (int)r->type, r->i_ok,
                  (long long)r->i, r->u_ok, (unsigned long long)r->u, r->d);
    it_json_free(doc);
}

/* serde_json's classes at the exact int64 / uint64 boundaries; d is correctly rounded (ties to
 * even above 2^53). */
static void test_json_integers(void)
{
    check_int("0", 1, 0, 1, 0, 0.0, __LINE__);
    check_int("-1", 1, -1, 0, 0, -1.0, __LINE__);
    check_int("1234567890", 1, 1234567890, 1, 1234567890, 1234567890.0, __LINE__);
    check_int("9223372036854775807", 1, INT64_MAX, 1, (uint64_t)INT64_MAX, 9223372036854775808.0, __LINE__);
    check_int("9223372036854775808", 0, 0, 1, (uint64_t)1 << 63, 9223372036854775808.0, __LINE__);
    check_int("-9223372036854775808", 1, INT64_MIN, 0, 0, -9223372036854775808.0, __LINE__);
    check_int("18446744073709551615", 0, 0, 1, UINT64_MAX, 18446744073709551616.0, __LINE__);
    check_int("9007199254740993", 1, INT64_C(9007199254740993), 1, UINT64_C(9007199254740993), 9007199254740992.0, __LINE__);
    check_int("-9007199254740995", 1, INT64_C(-9007199254740995), 0, 0, -9007199254740996.0, __LINE__);
}

/* Parses a number that must come out as IT_JSON_NUM with d == want (and the same sign). */
static void check_num(const char *text, double want, int line)
{
    it_json_doc *doc = parse_len(text, strlen(text), 0, line);
    const it_json *r = it_json_root(doc);
    if (!r) return;
    if (r->type != IT_JSON_NUM || r->d != want || signbit(r->d) != signbit(want) || r->i_ok || r->u_ok)
        test_fail(__FILE__, line, "%s: type %d d %.17g, want number %.17g", text, (int)r->type, r->d, want);
    it_json_free(doc);
}

/* Integers outside [-2^63, 2^64) and "-0" are numbers, as are literals with a fraction or exponent. */
static void test_json_integers_out_of_range(void)
{
    check_num("18446744073709551616", 18446744073709551616.0, __LINE__);
    check_num("-9223372036854775809", -9223372036854775808.0, __LINE__);
    check_num("123456789012345678901234567890", 1.2345678901234568e29, __LINE__);
    check_num("-0", -0.0, __LINE__);
    check_num("-0.0", -0.0, __LINE__);
    check_num("0.0", 0.0, __LINE__);
    check_num("0e0", 0.0, __LINE__);
    check_num("1.0", 1.0, __LINE__);
    check_num("1E2", 100.0, __LINE__);
}

/* Correct rounding near the double range's edges; underflow gives (signed) zero. */
static void test_json_floats(void)
{
    check_num("1.5", 1.5, __LINE__);
    check_num("-2.5e-3", -2.5e-3, __LINE__);
    check_num("0.1", 0.1, __LINE__);
    check_num("1e308", 1e308, __LINE__);
    check_num("1.7976931348623157e308", 1.7976931348623157e308, __LINE__);
    check_num("1E+2", 100.0, __LINE__);
    check_num("1e-400", 0.0, __LINE__);
    check_num("-1e-400", -0.0, __LINE__);
    check_num("4.9406564584124654e-324", 4.9406564584124654e-324, __LINE__);
    check_num("2.2250738585072011e-308", 2.2250738585072011e-308, __LINE__);
    check_num("9007199254740993.0", 9007199254740992.0, __LINE__);
    check_num("0.30000000000000004441", 0.30000000000000004, __LINE__);
}

/* Long literals: rounding must use every digit, and a long integer is still a number. */
static void test_json_long_number(void)
{
    char text[3100] = "0.";
    memset(text + 2, '0', 2990);
    strcpy(text + 2992, "15e2991"); /* 0.(2990 zeros)15e2991 = 1.5 */
    check_num(text, 1.5, __LINE__);
    text[0] = '1';
    memset(text + 1, '0', 308);
    text[309] = 0;
    check_num(text, 1e308, __LINE__);
    memset(text, '9', 400);
    text[400] = 0;
    refuse_len(text, 400, 0, 0, "number out of range", __LINE__);
}

/* Every simple escape, \u escapes of 1- to 3-byte code points, raw DEL, and string positions. */
static void test_json_strings(void)
{
    it_json_doc *doc = PARSE("[\"\", \"abc\", \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u0041\\u00e9\\u20AC\", \"\x7f\"]");
    const it_json *r = it_json_root(doc);
    CHECK(r && r->type == IT_JSON_ARR && r->n == 5);
    if (r && r->n == 5) {
        CHECK(str_is(&r->items[0], "", 0));
        CHECK(str_is(&r->items[1], "abc", 3));
        CHECK(str_is(&r->items[2], "\"\\/\b\f\n\r\t", 8));
        CHECK(str_is(&r->items[3], "A\xC3\xA9\xE2\x82\xAC", 6));
        CHECK(str_is(&r->items[4], "\x7f", 1));
        CHECK(r->items[1].pos == 5 && r->items[2].pos == 12);
    }
    it_json_free(doc);
}

/* \u surrogate pairs (either hex case) become one 4-byte UTF-8 sequence. */
static void test_json_surrogate_pairs(void)
{
    it_json_doc *doc = PARSE("[\"\\uD83D\\uDE00\", \"\\ud83d\\ude00x\", \"\\uDBFF\\uDFFF\", \"\\uD800\\uDC00\"]");
    const it_json *r = it_json_root(doc);
    CHECK(r && r->n == 4);
    if (r && r->n == 4) {
        CHECK(str_is(&r->items[0], "\xF0\x9F\x98\x80", 4));
        CHECK(str_is(&r->items[1], "\xF0\x9F\x98\x80x", 5));
        CHECK(str_is(&r->items[2], "\xF4\x8F\xBF\xBF", 4));
        CHECK(str_is(&r->items[3], "\xF0\x90\x80\x80", 4));
    }
    it_json_free(doc);
}

/* \u0000 gives a NUL inside the string (counted in len), in keys too. */
static void test_json_nul_in_string(void)
{
    it_json_doc *doc = PARSE("{\"a\\u0000b\": \"x\\u0000\"}");
    const it_json *r = it_json_root(doc);
    CHECK(r && r->type == IT_JSON_OBJ && r->n == 1);
    if (r && r->n == 1) {
        CHECK(r->keylens[0] == 3 && memcmp(r->keys[0], "a\0b", 4) == 0);
        CHECK(str_is(&r->items[0], "x\0", 2));
        CHECK(it_json_get(r, "a") == NULL);
    }
    it_json_free(doc);
}

/* Raw UTF-8 at the edges of each sequence length passes through unchanged. */
static void test_json_utf8_valid(void)
{
    static const char *edge[] = {"\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
                                 "\xEF\xBF\xBF", "\xEF\xBB\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"};
    for (size_t k = 0; k < sizeof edge / sizeof edge[0]; k++) {
        char text[16];
        size_t n = strlen(edge[k]);
        snprintf(text, sizeof text, "\"%s\"", edge[k]);
        it_json_doc *doc = PARSE(text);
        CHECKF(str_is(it_json_root(doc), edge[k], n), "edge %zu", k);
        it_json_free(doc);
    }
}

/* Nested arrays and objects, with positions of values and keys. */
static void test_json_nested(void)
{
    it_json_doc *doc = PARSE("{\"a\":[1,{\"b\":null}],\"c\":{\"d\":[[]]},\"e\":{}}");
    const it_json *r = it_json_root(doc), *a = it_json_get(r, "a"), *c = it_json_get(r, "c");
    CHECK(r && r->type == IT_JSON_OBJ && r->n == 3 && r->ndup == 0);
    CHECK(a && a->type == IT_JSON_ARR && a->n == 2 && a->pos == 5);
    CHECK(a && a->n == 2 && a->items[0].type == IT_JSON_INT && a->items[0].i == 1);
    CHECK(a && a->n == 2 && it_json_get(&a->items[1], "b") && it_json_get(&a->items[1], "b")->type == IT_JSON_NULL);
    const it_json *d = it_json_get(c, "d");
    CHECK(d && d->type == IT_JSON_ARR && d->n == 1 && d->items[0].type == IT_JSON_ARR && d->items[0].n == 0);
    CHECK(r && r->n == 3 && r->keypos[0] == 1 && r->keypos[1] == 20 && r->keypos[2] == 35);
    const it_json *e = it_json_get(r, "e");
    CHECK(e && e->type == IT_JSON_OBJ && e->n == 0);
    it_json_free(doc);
}

/* The four whitespace bytes before, inside and after the value. */
static void test_json_whitespace(void)
{
    it_json_doc *doc = PARSE(" \t\r\n[ 1 ,\n\t2\r]\n \t\r");
    const it_json *r = it_json_root(doc);
    CHECK(r && r->type == IT_JSON_ARR && r->n == 2 && r->pos == 4);
    CHECK(r && r->n == 2 && r->items[1].u == 2 && r->items[1].pos == 11);
    it_json_free(doc);
    doc = PARSE(" { \"k\" : \"v\" } ");
    CHECK(str_is(it_json_get(it_json_root(doc), "k"), "v", 1));
    it_json_free(doc);
}

/* it_json_get: the first member of that name, bytewise; NULL for no object or no such key. */
static void test_json_get(void)
{
    it_json_doc *doc = PARSE("{\"\":0,\"a\":1,\"ab\":2,\"a\":3,\"b\":[4]}");
    const it_json *r = it_json_root(doc);
    CHECK(it_json_get(r, "")->u == 0);
    CHECK(it_json_get(r, "a")->u == 1);
    CHECK(it_json_get(r, "ab")->u == 2);
    CHECK(it_json_get(r, "abc") == NULL);
    CHECK(it_json_get(r, "A") == NULL);
    CHECK(it_json_get(NULL, "a") == NULL);
    CHECK(it_json_get(r, NULL) == NULL);
    CHECK(it_json_get(it_json_get(r, "b"), "a") == NULL); /* an array is not an object */
    CHECK(r->ndup == 1);
    it_json_free(doc);
}

/* NULL handles and bad arguments; err may be NULL; len bounds the text. */
static void test_json_null_and_args(void)
{
    it_json_free(NULL);
    CHECK(it_json_root(NULL) == NULL);
    it_json_doc *doc = NULL;
    it_err err = {0, ""};
    CHECK(it_json_parse(NULL, "1", 1, 0, &err) == IT_EINVAL);
    CHECK(it_json_parse(&doc, NULL, 1, 0, &err) == IT_EINVAL && doc == NULL);
    CHECK(it_json_parse(&doc, "1", 1, 2, &err) == IT_EINVAL && doc == NULL);
    CHECK(it_json_parse(&doc, NULL, 0, 0, &err) == IT_EFORMAT && !strcmp(err.msg, "at byte 0: empty input"));
    CHECK(it_json_parse(&doc, "[", 1, 0, NULL) == IT_EFORMAT && doc == NULL); /* err may be NULL */
    CHECK(it_json_parse(&doc, "[1]", 2, 0, NULL) == IT_EFORMAT);               /* len is honoured */
}

/* ============================================================================================ */
/* Invalid documents                                                                             */
/* ============================================================================================ */

/* Structure: each input refused at the first byte that cannot continue a JSON text. */
static void test_json_refuse_structure(void)
{
    static const bad_case cases[] = {
        {"", 0, 0, "empty input"},
        {"   ", 0, 3, "expected a value, found end of input"},
        {"[1,]", 0, 3, "expected a value, found ']'"},
        {"{\"a\":1,}", 0, 7, "expected a string key, found '}'"},
        {"[1 2]", 0, 3, "expected ',' or ']' after an array element, found '2'"},
        {"{\"a\" 1}", 0, 5, "expected ':' after an object key, found '1'"},
        {"{\"a\":1 \"b\":2}", 0, 7, "expected ',' or '}' after an object member, found '\"'"},
        {"{1:2}", 0, 1, "expected a string key, found '1'"},
        {"{'a':1}", 0, 1, "found '''"},
        {"[1,,2]", 0, 3, "expected a value, found ','"},
        {"[", 0, 1, "expected a value, found end of input"},
        {"[1", 0, 2, "found end of input"},
        {"{\"a\":", 0, 5, "expected a value, found end of input"},
        {"{\"a\"", 0, 4, "expected ':'"},
        {"]", 0, 0, "expected a value, found ']'"},
        {"[1]]", 0, 3, "expected the end of the text after the JSON value, found ']'"},
        {"1 2", 0, 2, "found '2'"},
        {"{} {}", 0, 3, "found '{'"},
        {"[1] // c", 0, 4, "found '/'"},
        {"/* c */ 1", 0, 0, "expected a value, found '/'"},
        {"\f1", 0, 0, "found byte 0x0C"},
        {"[1]\0", 4, 3, "found byte 0x00"},
        {"{\"a\":1]", 0, 6, "expected ',' or '}'"},
        {"[\"a\":1]", 0, 4, "expected ',' or ']'"},
        {"[1}", 0, 2, "expected ',' or ']'"},
        {"{\"a\"::1}", 0, 5, "expected a value, found ':'"},
    };
    REFUSE_TABLE(cases);
}

/* Misspelt, cut or non-JSON literals. */
static void test_json_refuse_literals(void)
{
    static const bad_case cases[] = {
        {"tru", 0, 3, "expected the literal 'true', found end of input"},
        {"True", 0, 0, "expected a value, found 'T'"},
        {"nulL", 0, 3, "expected the literal 'null', found 'L'"},
        {"falsy", 0, 4, "found 'y'"},
        {"truex", 0, 4, "expected the end of the text"},
        {"[nil]", 0, 2, "'null', found 'i'"},
        {"NaN", 0, 0, "found 'N'"},
        {"nan", 0, 1, "found 'a'"},
        {"Infinity", 0, 0, "found 'I'"},
        {"-Infinity", 0, 1, "expected a digit after '-', found 'I'"},
        {"undefined", 0, 0, "found 'u'"},
    };
    REFUSE_TABLE(cases);
}

/* Numbers outside the RFC grammar, and magnitudes that overflow a double. */
static void test_json_refuse_numbers(void)
{
    static const bad_case cases[] = {
        {"01", 0, 1, "leading zeros"},
        {"-01", 0, 2, "leading zeros"},
        {"[00]", 0, 2, "leading zeros"},
        {"+1", 0, 0, "expected a value, found '+'"},
        {".5", 0, 0, "found '.'"},
        {"1.", 0, 2, "expected a digit after the decimal point, found end of input"},
        {"1.e5", 0, 2, "found 'e'"},
        {"1e", 0, 2, "expected a digit in the exponent"},
        {"1E+", 0, 3, "expected a digit in the exponent"},
        {"1e+-1", 0, 3, "found '-'"},
        {"-", 0, 1, "expected a digit after '-', found end of input"},
        {"- 1", 0, 1, "found ' '"},
        {"--1", 0, 1, "found '-'"},
        {"0x10", 0, 1, "found 'x'"},
        {"1.0.0", 0, 3, "found '.'"},
        {"1e400", 0, 0, "number out of range"},
        {"-1e400", 0, 0, "number out of range"},
        {"[0, 1.8e308]", 0, 4, "number out of range"},
        {"123456789012345678901234567890e300", 0, 0, "number out of range"},
        {"1,", 0, 1, "found ','"},
    };
    REFUSE_TABLE(cases);
}

/* Unterminated strings, raw control characters, unknown escapes, short \u escapes. */
static void test_json_refuse_strings(void)
{
    static const bad_case cases[] = {
        {"\"abc", 0, 4, "unterminated string (opened at byte 0)"},
        {"[\"", 0, 2, "unterminated string (opened at byte 1)"},
        {"\"a\nb\"", 0, 2, "control character 0x0A"},
        {"\"\t\"", 0, 1, "control character 0x09"},
        {"\"a\0b\"", 5, 2, "control character 0x00"},
        {"\"\x1f\"", 0, 1, "control character 0x1F"},
        {"\"\\x\"", 0, 2, "one of \" \\ / b f n r t u after a backslash, found 'x'"},
        {"\"\\'\"", 0, 2, "found '''"},
        {"\"\\U0041\"", 0, 2, "found 'U'"},
        {"\"\\", 0, 2, "found end of input"},
        {"\"\\u\"", 0, 3, "a hex digit in a \\u escape, found '\"'"},
        {"\"\\u12\"", 0, 5, "a hex digit"},
        {"\"\\u12G4\"", 0, 5, "found 'G'"},
        {"\"\\u00", 0, 5, "found end of input"},
    };
    REFUSE_TABLE(cases);
}

/* Lone or mismatched \u surrogates, reported at the escape that cannot be paired. */
static void test_json_refuse_surrogates(void)
{
    static const bad_case cases[] = {
        {"\"\\uD800\"", 0, 1, "unpaired high surrogate \\uD800"},
        {"\"\\udbff", 0, 7, "low surrogate after \\uDBFF, found end of input"},
        {"\"\\uD800\\", 0, 8, "found end of input"},
        {"\"\\uDC00\"", 0, 1, "unpaired low surrogate \\uDC00"},
        {"\"x\\uDFFF\\uD800\"", 0, 2, "unpaired low surrogate"},
        {"\"\\uD800\\u0041\"", 0, 1, "followed by \\u0041"},
        {"\"\\uD800\\uD800\"", 0, 1, "followed by \\uD800"},
        {"\"\\uD800\\n\"", 0, 1, "unpaired high surrogate"},
        {"\"\\uD800x\"", 0, 1, "unpaired high surrogate"},
        {"\"\\uD83D\\uDE0\"", 0, 12, "a hex digit"},
    };
    REFUSE_TABLE(cases);
}

/* Ill-formed UTF-8 in strings, reported at the first byte of the bad sequence. */
static void test_json_refuse_utf8(void)
{
    static const bad_case cases[] = {
        {"\"\xC0\x80\"", 0, 1, "invalid UTF-8: overlong encoding (0xC0)"},
        {"\"\xC1\xBF\"", 0, 1, "overlong"},
        {"\"\xE0\x80\x80\"", 0, 1, "overlong"},
        {"\"\xE0\x9F\xBF\"", 0, 1, "overlong"},
        {"\"\xF0\x80\x80\x80\"", 0, 1, "overlong"},
        {"\"\xF0\x8F\xBF\xBF\"", 0, 1, "overlong"},
        {"\"\xED\xA0\x80\"", 0, 1, "surrogate"},
        {"\"\xED\xBF\xBF\"", 0, 1, "surrogate"},
        {"\"\xF4\x90\x80\x80\"", 0, 1, "above U+10FFFF"},
        {"\"\x80\"", 0, 1, "unexpected continuation byte"},
        {"\"a\xBF\"", 0, 2, "continuation"},
        {"\"\xE2\x82\"", 0, 1, "truncated"},
        {"\"\xF0\x9F\x98\"", 0, 1, "truncated"},
        {"\"\xC3", 0, 1, "truncated"},
        {"\"\xE2\x28\xA1\"", 0, 1, "truncated"},
        {"\"ok\xF0\x9F\x98\x80\xF0\x9F\x98\"", 0, 7, "truncated"},
    };
    REFUSE_TABLE(cases);
}

/* F5..FF never appear in UTF-8, inside or outside a string. */
static void test_json_refuse_bytes_f5_ff(void)
{
    for (unsigned b = 0xF5; b <= 0xFF; b++) {
        char s[8] = {'"', (char)b, (char)0x80, (char)0x80, (char)0x80, '"', 0};
        refuse_len(s, 6, 0, 1, "never appears in UTF-8", __LINE__);
        refuse_len(s + 1, 1, 0, 0, "never appears in UTF-8", __LINE__);
    }
}

/* Outside strings: a leading byte order mark, invalid UTF-8, and valid non-ASCII characters. */
static void test_json_refuse_outside_strings(void)
{
    static const bad_case cases[] = {
        {"\xEF\xBB\xBF{}", 0, 0, "byte order mark"},
        {"\xEF\xBB\xBF", 0, 0, "byte order mark"},
        {"\xEF\xBB", 0, 0, "truncated"},
        {"[1,\xFF]", 0, 3, "invalid UTF-8"},
        {"[1,\xC3\xA9]", 0, 3, "expected a value, found U+00E9"},
        {" \xEF\xBB\xBF" "1", 0, 1, "found U+FEFF"},
        {"{\"a\":1}\xC2\xA0", 0, 7, "found U+00A0"},
        {"\xF4\x90\x80\x80", 0, 0, "above U+10FFFF"},
        {"[\xF0\x9F\x98\x80]", 0, 1, "found U+1F600"},
    };
    REFUSE_TABLE(cases);
}

/* ============================================================================================ */
/* Oracles: UTF-8 and the number grammar                                                         */
/* ============================================================================================ */

/* The length of the UTF-8 sequence at s[0..n), or 0, written from the definition rather than
 * from Table 3-7: decode by the lead byte's bit pattern, then refuse overlong forms, surrogates
 * and values above U+10FFFF. */
static size_t ref_utf8_cp(const unsigned char *s, size_t n, unsigned long *out)
{
    static const unsigned long min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len = 0;
    unsigned long cp;
    *out = s[0];
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) len = 2, cp = s[0] & 0x1Fu;
    else if ((s[0] & 0xF0) == 0xE0) len = 3, cp = s[0] & 0x0Fu;
    else if ((s[0] & 0xF8) == 0xF0) len = 4, cp = s[0] & 0x07u;
    else return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3Fu);
    }
    *out = cp;
    return cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : len;
}

static size_t ref_utf8(const unsigned char *s, size_t n)
{
    unsigned long cp;
    return ref_utf8_cp(s, n, &cp);
}

/* Whether body[0..n) is a valid string body without escapes, by the oracle. */
static int ref_body(const unsigned char *body, size_t n)
{
    for (size_t i = 0, k; i < n; i += k) {
        if (body[i] < 0x20 || body[i] == '"' || body[i] == '\\') return 0;
        if ((k = ref_utf8(body + i, n - i)) == 0) return 0;
    }
    return 1;
}

/* Every lead byte 80..FF with every second byte, and a few third and fourth bytes, inside a
 * string: the parser accepts exactly what the oracle accepts, and copies it unchanged. */
static void test_json_utf8_oracle(void)
{
    static const unsigned char tail[][2] = {{0x80, 0x80}, {0xBF, 0xBF}, {0x80, 0x20}, {0xC0, 0x80}, {0x80, 0xFF}};
    size_t bad = 0;
    for (unsigned b0 = 0x80; b0 <= 0xFF; b0++)
        for (unsigned b1 = 0; b1 <= 0xFF; b1++)
            for (size_t t = 0; t < sizeof tail / sizeof tail[0]; t++) {
                unsigned char s[6] = {'"', (unsigned char)b0, (unsigned char)b1, tail[t][0], tail[t][1], '"'};
                it_json_doc *doc = NULL;
                int rc = it_json_parse(&doc, s, 6, 0, NULL);
                int want = ref_body(s + 1, 4);
                if ((rc == IT_OK) != want || (doc && !str_is(it_json_root(doc), (const char *)s + 1, 4))) bad++;
                it_json_free(doc);
            }
    CHECKF(bad == 0, "%zu byte sequences judged differently from the oracle", bad);
}

/* Whether the string doc holds exactly one code point, cp, by the oracle. */
static int holds_code_point(const it_json_doc *doc, unsigned long cp)
{
    const it_json *r = it_json_root(doc);
    unsigned long got;
    if (!r || r->type != IT_JSON_STR || r->len == 0) return 0;
    return ref_utf8_cp((const unsigned char *)r->s, r->len, &got) == r->len && got == cp;
}

/* Every \uXXXX: a surrogate alone is refused at its backslash; anything else decodes to its
 * code point. Then each high surrogate with a few low ones, and each low one with a few high. */
static void test_json_unicode_escapes(void)
{
    size_t bad = 0;
    for (unsigned long u = 0; u <= 0xFFFF; u++) {
        char text[16];
        it_json_doc *doc = NULL;
        snprintf(text, sizeof text, "\"\\u%04lx\"", u);
        int rc = it_json_parse(&doc, text, 8, 0, NULL), surrogate = u >= 0xD800 && u <= 0xDFFF;
        if (surrogate ? rc != IT_EFORMAT : !holds_code_point(doc, u)) bad++;
        it_json_free(doc);
    }
    static const unsigned lows[] = {0xDC00, 0xDC01, 0xDE00, 0xDFFF}, highs[] = {0xD800, 0xDBFF};
    for (unsigned a = 0; a < 0x400; a++)
        for (size_t k = 0; k < 4 + 2; k++) {
            unsigned hi = k < 4 ? 0xD800 + a : highs[k - 4], lo = k < 4 ? lows[k] : 0xDC00 + a;
            char text[24];
            it_json_doc *doc = NULL;
            snprintf(text, sizeof text, "\"\\u%04X\\u%04x\"", hi, lo);
            it_json_parse(&doc, text, 14, 0, NULL);
            if (!holds_code_point(doc, 0x10000 + ((unsigned long)(hi - 0xD800) << 10) + (lo - 0xDC00))) bad++;
            it_json_free(doc);
        }
    CHECKF(bad == 0, "%zu \\u escapes decoded wrongly", bad);
}

/* The RFC 8259 number grammar as a table-free DFA: the state after each byte, -1 when none. */
static int ref_number_step(int state, char c)
{
    int digit = c >= '0' && c <= '9', e = c == 'e' || c == 'E';
    switch (state) {
    case 0: return c == '-' ? 1 : c == '0' ? 2 : digit ? 3 : -1;
    case 1: return c == '0' ? 2 : digit ? 3 : -1;
    case 2: return c == '.' ? 4 : e ? 6 : -1;
    case 3: return digit ? 3 : c == '.' ? 4 : e ? 6 : -1;
    case 4: return digit ? 5 : -1;
    case 5: return digit ? 5 : e ? 6 : -1;
    case 6: return c == '+' || c == '-' ? 7 : digit ? 8 : -1;
    default: return digit ? 8 : -1; /* 7 and 8 */
    }
}

/* Checks one candidate: accepted exactly when the DFA accepts; refused at the byte where the DFA
 * stops (or the end); accepted integers are INT except "-0"; d agrees with strtod. */
static int ref_number_check(const char *s, size_t n)
{
    int state = 0;
    size_t at = 0;
    while (at < n && (state = ref_number_step(state, s[at])) >= 0) at++;
    int accept = at == n && (state == 2 || state == 3 || state == 5 || state == 8);
    it_json_doc *doc = NULL;
    it_err err = {0, ""};
    char prefix[32];
    int rc = it_json_parse(&doc, s, n, 0, &err), ok = (rc == IT_OK) == accept;
    snprintf(prefix, sizeof prefix, "at byte %zu: ", at);
    if (rc != IT_OK) ok = ok && !strncmp(err.msg, prefix, strlen(prefix));
    if (doc) {
        const it_json *r = it_json_root(doc);
        int want_int = (state == 2 || state == 3) && strcmp(s, "-0") != 0;
        ok = ok && (r->type == IT_JSON_INT) == want_int && r->d == strtod(s, NULL);
    }
    it_json_free(doc);
    return ok;
}

/* Every string of length 1 to 5 over "01-+.eE" (19607 of them). */
static void test_json_number_oracle(void)
{
    static const char alpha[] = "01-+.eE";
    size_t bad = 0;
    for (size_t n = 1; n <= 5; n++) {
        size_t total = 1;
        for (size_t k = 0; k < n; k++) total *= 7;
        for (size_t code = 0; code < total; code++) {
            char s[8];
            for (size_t k = 0, c = code; k < n; k++, c /= 7) s[k] = alpha[c % 7];
            s[n] = 0;
            if (!ref_number_check(s, n)) bad++, test_note("number oracle disagrees on <%s>", s);
        }
    }
    CHECKF(bad == 0, "%zu number literals judged differently from the grammar DFA", bad);
}

/* Numbers must not depend on the C locale's decimal point (skipped where no such locale is
 * installed). */
static void test_json_locale(void)
{
    static const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "de_DE", "fr_FR"};
    const char *got = NULL;
    for (size_t k = 0; k < sizeof names / sizeof names[0] && !got; k++) got = setlocale(LC_NUMERIC, names[k]);
    if (!got) {
        test_note("no locale with a decimal comma installed; locale test skipped");
        return;
    }
    check_num("1.25", 1.25, __LINE__);
    check_num("-0.5e1", -5.0, __LINE__);
    refuse_len("1,5", 3, 0, 1, "found ','", __LINE__);
    setlocale(LC_NUMERIC, "C");
}

/* ============================================================================================ */
/* Truncations and mutations                                                                     */
/* ============================================================================================ */

static const char rich[] = "{\"a\": [1, -2.5e3, \"x\\u00e9\\uD83D\\uDE00y\\n\", true, false, null, {}],"
                           " \"bb\": {\"c\": [[], {\"d\": 0}]}, \"e\": 18446744073709551615}";

/* Every proper prefix of a document is refused at the byte where it ends: the document is an
 * object, so no proper prefix is a complete value, and it has no raw UTF-8, whose truncation would
 * be reported at the sequence's first byte. */
static void test_json_prefixes(void)
{
    size_t n = strlen(rich);
    it_json_doc *doc = PARSE(rich);
    CHECK(doc != NULL);
    it_json_free(doc);
    for (size_t k = 0; k < n; k++) refuse_len(rich, k, 0, k, NULL, __LINE__);
}

/* A small deterministic generator (xorshift64). */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random byte edits of a valid document: each result either parses or is refused with a
 * well-formed message at an offset inside the text; the sanitizers watch the rest. */
static void test_json_mutations(void)
{
    static const char pool[] = "{}[]\",:\\u0eE.-+ 19tfn\x80\xC3\xED\xF4\xFF";
    uint64_t seed = 0x9E3779B97F4A7C15u;
    size_t n = strlen(rich), bad = 0;
    char buf[sizeof rich];
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(buf, rich, n);
        for (int e = 0; e < 1 + iter % 3; e++) buf[rng_next(&seed) % n] = pool[rng_next(&seed) % (sizeof pool - 1)];
        it_json_doc *doc = NULL;
        it_err err = {0, ""};
        int rc = it_json_parse(&doc, buf, n, (unsigned)(iter & 1), &err);
        size_t at = 0;
        if (rc != IT_OK && (rc != IT_EFORMAT || sscanf(err.msg, "at byte %zu: ", &at) != 1 || at > n || !one_line(err.msg)))
            bad++;
        it_json_free(doc);
    }
    CHECKF(bad == 0, "%zu mutated documents gave a bad result", bad);
}

/* ============================================================================================ */
/* Depth                                                                                         */
/* ============================================================================================ */

/* count copies of unit, then count copies of close; malloc'd, length in *len. */
static char *repeat(const char *unit, const char *close, size_t count, size_t *len)
{
    size_t a = strlen(unit), b = strlen(close);
    char *s = malloc(count * (a + b) + 1);
    if (!s) return NULL;
    for (size_t k = 0; k < count; k++) memcpy(s + k * a, unit, a);
    for (size_t k = 0; k < count; k++) memcpy(s + count * a + k * b, close, b);
    *len = count * (a + b);
    s[*len] = 0;
    return s;
}

/* Exactly IT_JSON_MAX_DEPTH levels parse; one more is refused at the opening bracket. */
static void test_json_depth_limit(void)
{
    size_t len = 0;
    char *s = repeat("[", "]", IT_JSON_MAX_DEPTH, &len);
    if (!s) return;
    it_json_doc *doc = parse_len(s, len, 0, __LINE__);
    const it_json *v = it_json_root(doc);
    int depth = 0;
    for (; v && v->type == IT_JSON_ARR; depth++) v = v->n ? &v->items[0] : NULL;
    CHECK(depth == IT_JSON_MAX_DEPTH);
    it_json_free(doc);
    free(s);
    s = repeat("{\"a\":", "}", IT_JSON_MAX_DEPTH + 1, &len);
    refuse_len(s, len, 0, 5 * IT_JSON_MAX_DEPTH, "nested deeper than 128", __LINE__);
    free(s);
    s = repeat("[", "]", IT_JSON_MAX_DEPTH + 1, &len);
    refuse_len(s, len, 0, IT_JSON_MAX_DEPTH, "nested deeper than 128", __LINE__);
    free(s);
}

/* A megabyte of '[' and of '{"a":' (unclosed) must be a clean error, not a stack overflow. */
static void test_json_depth_megabyte(void)
{
    size_t n = 1 << 20;
    char *s = malloc(n);
    if (!s) return;
    memset(s, '[', n);
    refuse_len(s, n, 0, IT_JSON_MAX_DEPTH, "nested deeper", __LINE__);
    for (size_t k = 0; k + 5 <= n; k += 5) memcpy(s + k, "{\"a\":", 5);
    refuse_len(s, n - n % 5, 0, 5 * IT_JSON_MAX_DEPTH, "nested deeper", __LINE__);
    free(s);
}

/* ============================================================================================ */
/* Duplicate keys                                                                                */
/* ============================================================================================ */

/* ndup counts repeats per object (nested objects separately); prefixes and embedded NULs differ. */
static void test_json_dup_count(void)
{
    it_json_doc *doc = PARSE("{\"a\":1,\"b\":2,\"a\":3,\"a\":4,\"b\":5,\"o\":{\"x\":0,\"x\":1}}");
    const it_json *r = it_json_root(doc);
    CHECK(r && r->n == 6 && r->ndup == 3);
    CHECK(it_json_get(r, "a") && it_json_get(r, "a")->u == 1);
    CHECK(it_json_get(r, "b") && it_json_get(r, "b")->u == 2);
    CHECK(it_json_get(r, "o") && it_json_get(r, "o")->ndup == 1);
    it_json_free(doc);
    doc = PARSE("{\"a\":1,\"ab\":2,\"a\\u0000\":3,\"\\u0061\":4}"); /* "\u0061" is "a" */
    CHECK(it_json_root(doc) && it_json_root(doc)->ndup == 1);
    it_json_free(doc);
}

/* IT_JSON_NODUP refuses at the earliest repetition, names the key and the first occurrence. */
static void test_json_dup_refused(void)
{
    const char *t = "{\"a\":1,\"b\":{\"c\":2},\"b\":3,\"a\":4}";
    refuse_len(t, strlen(t), IT_JSON_NODUP, 19, "duplicate key \"b\" in an object (first at byte 7)", __LINE__);
    t = "[{\"x\":{\"k\":1,\"k\":2}}]";
    refuse_len(t, strlen(t), IT_JSON_NODUP, 13, "duplicate key \"k\"", __LINE__);
    t = "{\"a\":{\"a\":1},\"b\":{\"a\":2}}";
    it_json_doc *doc = parse_len(t, strlen(t), IT_JSON_NODUP, __LINE__);
    it_json_free(doc);
}

/* The key in the message is quoted as printable ASCII and cut when long. */
static void test_json_dup_message(void)
{
    const char *t = "{\"q\\\"\\\\\\u0001\\u00e9\":1,\"q\\\"\\\\\\u0001\\u00e9\":2}";
    refuse_len(t, strlen(t), IT_JSON_NODUP, 23, "duplicate key \"q\\\"\\\\\\x01\\xC3\\xA9\"", __LINE__);
    char big[1200];
    char key[500];
    memset(key, 'k', 499);
    key[499] = 0;
    snprintf(big, sizeof big, "{\"%s\":1,\"%s\":2}", key, key);
    refuse_len(big, strlen(big), IT_JSON_NODUP, 505, "kkkk...\" in an object (first at byte 1)", __LINE__);
}

/* In a large object with two repeated keys, the error names the one repeated first, in either
 * order (whatever order the library's sort puts them in). */
static void test_json_dup_earliest(void)
{
    static const char *late[2][2] = {{"k15", "k3"}, {"k3", "k15"}};
    for (int v = 0; v < 2; v++) {
        char text[512], want[64];
        size_t m = 0;
        for (int k = 0; k < 20; k++) m += (size_t)sprintf(text + m, "%c\"k%d\":%d", k ? ',' : '{', k, k);
        size_t at = m + 1;
        m += (size_t)sprintf(text + m, ",\"%s\":0,\"%s\":1,\"k0\":2}", late[v][0], late[v][1]);
        snprintf(want, sizeof want, "duplicate key \"%s\"", late[v][0]);
        refuse_len(text, m, IT_JSON_NODUP, at, want, __LINE__);
    }
}

/* Counts by brute force the keys of r that repeat an earlier one. */
static size_t brute_dups(const it_json *r)
{
    size_t d = 0;
    for (size_t j = 1; j < r->n; j++)
        for (size_t i = 0; i < j; i++)
            if (r->keylens[i] == r->keylens[j] && !memcmp(r->keys[i], r->keys[j], r->keylens[i])) {
                d++;
                break;
            }
    return d;
}

/* Objects of 1 to 300 random keys over a tiny alphabet (many repeats, many prefixes): ndup matches
 * brute force, on both sides of the library's small-object cut-over. */
static void test_json_dup_oracle(void)
{
    uint64_t seed = 12345;
    char *text = malloc(300 * 16 + 8);
    size_t bad = 0;
    for (size_t n = 1; n <= 300 && text; n += 1 + n / 8) {
        size_t m = 0;
        text[m++] = '{';
        for (size_t k = 0; k < n; k++) {
            m += (size_t)sprintf(text + m, "%s\"", k ? "," : "");
            for (uint64_t l = rng_next(&seed) % 4; l > 0; l--) text[m++] = "ab"[rng_next(&seed) % 2];
            m += (size_t)sprintf(text + m, "\":%zu", k);
        }
        text[m++] = '}';
        it_json_doc *doc = parse_len(text, m, 0, __LINE__);
        if (doc && it_json_root(doc)->ndup != brute_dups(it_json_root(doc))) bad++;
        it_json_free(doc);
    }
    free(text);
    CHECKF(bad == 0, "%zu objects with a wrong ndup", bad);
}

/* A safetensors-like header of n tensor entries (malloc'd), with entry dup repeated at the end
 * when dup < n. */
static char *make_header(size_t n, size_t dup, size_t *len)
{
    char *s = malloc(n * 200 + 200);
    if (!s) return NULL;
    size_t m = (size_t)sprintf(s, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t k = 0; k <= n; k++) {
        size_t id = k < n ? k : dup;
        if (k == n && dup >= n) break;
        /* offsets in 64 bits: 100000 * 32 MiB overflows a 32-bit size_t */
        m += (size_t)sprintf(s + m, ",\"model.layers.%zu.self_attn.q_proj.weight\":{\"dtype\":\"BF16\","
                                    "\"shape\":[4096,4096],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
                             id, (uint64_t)id * 33554432, (uint64_t)id * 33554432 + 33554432);
    }
    s[m++] = '}';
    *len = m;
    return s;
}

/* The sorted duplicate search of a large object: count, and the NODUP error's two offsets. */
static void test_json_dup_large(void)
{
    size_t len = 0;
    char *s = make_header(5000, 1234, &len);
    if (!s) return;
    it_json_doc *doc = parse_len(s, len, 0, __LINE__);
    const it_json *r = it_json_root(doc);
    CHECK(r && r->n == 5002 && r->ndup == 1);
    CHECK(r && r->n == 5002 && strstr(r->keys[5001], ".1234.") != NULL);
    it_json_free(doc);
    const char *first = strstr(s, "\"model.layers.1234."), *second = strstr(first + 1, "\"model.layers.1234.");
    char want[64];
    snprintf(want, sizeof want, "(first at byte %zu)", (size_t)(first - s));
    refuse_len(s, len, IT_JSON_NODUP, (size_t)(second - s), want, __LINE__);
    free(s);
}

/* A header of 100k tensor entries (about 12 MB) parses under IT_JSON_NODUP, with the throughput
 * as a note (-v). */
static void test_json_big_header(void)
{
    size_t len = 0, n = 100000;
    char *s = make_header(n, n, &len);
    if (!s) return;
    clock_t t0 = clock();
    it_json_doc *doc = parse_len(s, len, IT_JSON_NODUP, __LINE__);
    double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
    test_note("%.1f MB parsed in %.3f s", (double)len / 1e6, sec);
    const it_json *r = it_json_root(doc), *last = r && r->n ? &r->items[r->n - 1] : NULL;
    CHECK(r && r->n == n + 1 && r->ndup == 0);
    const it_json *off = it_json_get(last, "data_offsets");
    CHECK(off && off->n == 2 && off->items[1].u == (uint64_t)n * 33554432);
    it_json_free(doc);
    free(s);
}

void suite_json(void)
{
    RUN(test_json_literals);
    RUN(test_json_type_names);
    RUN(test_json_integers);
    RUN(test_json_integers_out_of_range);
    RUN(test_json_floats);
    RUN(test_json_long_number);
    RUN(test_json_strings);
    RUN(test_json_surrogate_pairs);
    RUN(test_json_nul_in_string);
    RUN(test_json_utf8_valid);
    RUN(test_json_nested);
    RUN(test_json_whitespace);
    RUN(test_json_get);
    RUN(test_json_null_and_args);
    RUN(test_json_refuse_structure);
    RUN(test_json_refuse_literals);
    RUN(test_json_refuse_numbers);
    RUN(test_json_refuse_strings);
    RUN(test_json_refuse_surrogates);
    RUN(test_json_refuse_utf8);
    RUN(test_json_refuse_bytes_f5_ff);
    RUN(test_json_refuse_outside_strings);
    RUN(test_json_utf8_oracle);
    RUN(test_json_unicode_escapes);
    RUN(test_json_number_oracle);
    RUN(test_json_locale);
    RUN(test_json_prefixes);
    RUN(test_json_mutations);
    RUN(test_json_depth_limit);
    RUN(test_json_depth_megabyte);
    RUN(test_json_dup_count);
    RUN(test_json_dup_refused);
    RUN(test_json_dup_message);
    RUN(test_json_dup_earliest);
    RUN(test_json_dup_oracle);
    RUN(test_json_dup_large);
    RUN(test_json_big_header);
}
