/* test/test_tokenizer.c -- tokenizer.json encoding (tokenizer.c, tokenizer_model.c) on the small
 * fixtures of data/tokenizer/ (written by test/gen_tokenizer_fixtures.py), one per layout:
 *   gpt2.json             ByteLevel BPE with the GPT-2 regex, legacy "a b" merges, added tokens with
 *                         lstrip (<mask>), rstrip (<rs>), single_word (<sw>) and a normalized one;
 *   llama3.json           Split(Llama-3 regex) + ByteLevel, ignore_merges (" hello" is in the
 *                         vocabulary but no merge makes it), <|begin_of_text|> template;
 *   qwen2.json            NFC + Split(Qwen2 regex, single digits) + ByteLevel, chat specials;
 *   clip.json             NFC, \s+ -> " ", Lowercase; Split(CLIP regex, Removed, invert); BPE with
 *                         "</w>"; RobertaProcessing; <|startoftext|> is a normalized added token;
 *   llama2.json           Prepend("▁") + Replace(" " -> "▁"), BPE with byte_fallback and fuse_unk,
 *                         template "<s> $A"; llama2_metaspace.json the newer Metaspace("first");
 *   t5.json               Unigram, Replace(" {2,}"), WhitespaceSplit + Metaspace, "$A </s>";
 *   t5_precompiled.json   the same with a Precompiled charsmap (Ａ->A, ﬁ->fi, NBSP->" ", ①->1,
 *                         e+U+0301->é, U+3000->" ", ß->ss, Ｈ->h) built by test/gen_tokenizer_fixtures.py.
 * Byte-level vocabularies give byte b the id b, so a byte's id is its value.
 *
 * The expected ids were produced by the reference implementation, the Rust `tokenizers` library
 * (its Node binding, npm package `tokenizers` 0.23.2: Tokenizer.fromFile(f).encode(text) with
 * add_special_tokens true), on these very files; the comment above each case lists the token
 * strings it gave, from which the ids can be checked by hand against the fixture. A few cases,
 * worked by hand:
 *   llama3 "12345 67 1234567": \p{N}{1,3} cuts "123" "45" " " "67" " " "123" "456" "7"; "123" is
 *     a merge (12 + 3 = 257), the rest are bytes; the template puts <|begin_of_text|> (265) first.
 *   llama3 " hello": one Llama-3 piece " hello" = "Ġhello", which is in the vocabulary (264) and,
 *     with ignore_merges, is one token although no merge builds it.
 *   gpt2 "hello   world  ": \s+(?!\S) leaves one space to the next word: "hello" "ĠĠ" "Ġworld",
 *     and takes the whole run at the end: "ĠĠ".
 *   gpt2 "a   <mask>   b": <mask> has lstrip, so it takes the three spaces before it; the spaces
 *     after it stay text ("ĠĠ" "Ġb").
 *   clip "it's 1234": lowercased, cut into "it" "'s" "1" "2" "3" "4" (single digits), each word
 *     ending in "</w>": "i" "t</w>" "'s</w>" "1</w>" ...; RobertaProcessing adds start and end.
 *   llama2 "héllo 😀": "▁héllo▁😀"; é and 😀 are not pieces, so they fall back to their UTF-8 bytes
 *     <0xC3><0xA9> and <0xF0><0x9F><0x98><0x80> (id 3 + byte).
 *   t5 "hello   world": " {2,}" -> " ", words "▁hello" (-5) and "▁world" (-6): ids 4, 11, then </s>.
 */
#include "test.h"

#include "../iteris.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef struct tk_case {
    const char *text;
    const int32_t *ids;
    size_t n;
} tk_case;

#define IDS(...) (const int32_t[]){__VA_ARGS__}, sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)
#define NCASES(a) (sizeof(a) / sizeof((a)[0]))

static const tk_case CASES_GPT2[] = {
    /* "hello" "Ġworld" */
    {"hello world", IDS(261, 266)},
    /* "H" "e" "ll" "o" "Ġ" "W" "or" "ld" */
    {"Hello World", IDS(72, 101, 259, 111, 32, 87, 263, 265)},
    /* "Ġ" "hello" */
    {" hello", IDS(32, 261)},
    /* "hello" "ĠĠ" "Ġworld" "ĠĠ" */
    {"hello   world  ", IDS(261, 269, 266, 269)},
    /* "t" "he" "Ġ" "c" "a" "t" "'s" "Ġ" "h" "a" "t" */
    {"the cat's hat", IDS(116, 257, 32, 99, 97, 116, 267, 32, 104, 97, 116)},
    /* "12" "Ġ" "12" "3" */
    {"12 123", IDS(268, 32, 268, 51)},
    /* "h" "Ã" "©" "ll" "o" "Ġ" "ð" "Ł" "ĺ" "Ģ" "!" */
    {"h\xc3\xa9llo \xf0\x9f\x98\x80!", IDS(104, 195, 169, 259, 111, 32, 240, 159, 152, 128, 33)},
    /* "t" "a" "b" "ĉ" "he" "r" "e" "Ċ" "n" "e" "w" */
    {"tab\there\nnew", IDS(116, 97, 98, 9, 257, 114, 101, 10, 110, 101, 119)},
    /* "a" " <mask>" "Ġ" "b" */
    {"a <mask> b", IDS(97, 272, 32, 98)},
    /* "a" "   <mask>" "ĠĠ" "Ġ" "b" */
    {"a   <mask>   b", IDS(97, 272, 269, 32, 98)},
    /* "x" "<rs>   " "y" */
    {"x<rs>   y", IDS(120, 273, 121)},
    /* "<sw>" "Ġ" "a" "<" "s" "w" ">" "b" "Ġ" "<sw>" "." */
    {"<sw> a<sw>b <sw>.", IDS(274, 32, 97, 60, 115, 119, 62, 98, 32, 274, 46)},
    /* "hello" "<|endoftext|>" "Ġworld" */
    {"hello<|endoftext|> world", IDS(261, 271, 266)},
    /* "a" "hello" "b" */
    {"ahellob", IDS(97, 261, 98)},
    /* "Â" "½" "<sw>" */
    {"\xc2\xbd<sw>", IDS(194, 189, 274)},
    /* "â" "Ģ" "į" "<" "s" "w" ">" */
    {"\xe2\x80\x8d<sw>", IDS(226, 128, 141, 60, 115, 119, 62)},
};
static const tk_case CASES_LLAMA3[] = {
    /* "<|begin_of_text|>" "hello" "Ġ" "w" "o" "r" "l" "d" */
    {"hello world", IDS(265, 262, 32, 119, 111, 114, 108, 100)},
    /* "<|begin_of_text|>" "Ġhello" */
    {" hello", IDS(265, 264)},
    /* "<|begin_of_text|>" "hello" "Ġ" "Ġ" "w" "o" "r" "l" "d" */
    {"hello  world", IDS(265, 262, 32, 32, 119, 111, 114, 108, 100)},
    /* "<|begin_of_text|>" "I" "'" "L" "L" "Ġ" "w" "e" "'" "R" "e" "Ġt" "he" "y" "'" "v" "e" "Ġ" "'" "S" */
    {"I'LL we'Re they've 'S", IDS(265, 73, 39, 76, 76, 32, 119, 101, 39, 82, 101, 258, 259, 121, 39, 118, 101, 32, 39, 83)},
    /* "<|begin_of_text|>" "123" "4" "5" "Ġ" "6" "7" "Ġ" "123" "4" "5" "6" "7" */
    {"12345 67 1234567", IDS(265, 257, 52, 53, 32, 54, 55, 32, 257, 52, 53, 54, 55)},
    /* "<|begin_of_text|>" "a" "1" "b" "2" "2" "c" "3" "3" "3" */
    {"a1b22c333", IDS(265, 97, 49, 98, 50, 50, 99, 51, 51, 51)},
    /* "<|begin_of_text|>" "t" "a" "b" "ĉ" "he" "r" "e" "Ċ" "n" "e" "w" "č" "Ċ" "l" "i" "n" "e" */
    {"tab\there\nnew\r\nline", IDS(265, 116, 97, 98, 9, 259, 114, 101, 10, 110, 101, 119, 13, 10, 108, 105, 110, 101)},
    /* "<|begin_of_text|>" "Ġ" "Ġ" "l" "e" "a" "d" "i" "n" "g" */
    {"  leading", IDS(265, 32, 32, 108, 101, 97, 100, 105, 110, 103)},
    /* "<|begin_of_text|>" "t" "r" "a" "i" "l" "i" "n" "g" "Ġ" "Ġ" "Ġ" */
    {"trailing   ", IDS(265, 116, 114, 97, 105, 108, 105, 110, 103, 32, 32, 32)},
    /* "<|begin_of_text|>" "x" "Ċ" "Ċ" "Ġ" "Ġ" "y" */
    {"x\n\n  y", IDS(265, 120, 10, 10, 32, 32, 121)},
    /* "<|begin_of_text|>" "." "." "." "hello" "." "." "." "!" "!" "Ċ" "Ċ" */
    {"...hello...!!\n\n", IDS(265, 46, 46, 46, 262, 46, 46, 46, 33, 33, 10, 10)},
    /* "<|begin_of_text|>" "$" "1" "0" "0" */
    {"$100", IDS(265, 36, 49, 48, 48)},
    /* "<|begin_of_text|>" "æ" "Ĺ" "¥" "æ" "ľ" "¬" "è" "ª" "ŀ" */
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", IDS(265, 230, 151, 165, 230, 156, 172, 232, 170, 158)},
    /* "<|begin_of_text|>" "ð" "Ł" "ĺ" "Ģ" "Ġ" "e" "m" "o" "j" "i" */
    {"\xf0\x9f\x98\x80 emoji", IDS(265, 240, 159, 152, 128, 32, 101, 109, 111, 106, 105)},
    /* "<|begin_of_text|>" "Å" "¿" "Ġ" "'" "Å" "¿" */
    {"\xc5\xbf '\xc5\xbf", IDS(265, 197, 191, 32, 39, 197, 191)},
    /* "<|begin_of_text|>" "<|begin_of_text|>" "hello" "<|end_of_text|>" */
    {"<|begin_of_text|>hello<|end_of_text|>", IDS(265, 265, 262, 266)},
    /* "<|begin_of_text|>" */
    {"", IDS(265)},
};
static const tk_case CASES_QWEN2[] = {
    /* "hello" "Ġ" "w" "o" "r" "l" "d" */
    {"hello world", IDS(259, 32, 119, 111, 114, 108, 100)},
    /* "1" "2" "3" "4" "5" */
    {"12345", IDS(49, 50, 51, 52, 53)},
    /* "c" "a" "f" "Ã©" "Ġ" "c" "a" "f" "Ã©" */
    {"cafe\xcc\x81 caf\xc3\xa9", IDS(99, 97, 102, 260, 32, 99, 97, 102, 260)},
    /* "I" "'" "M" "Ġ" "he" "r" "e" */
    {"I'M here", IDS(73, 39, 77, 32, 256, 114, 101)},
    /* "<|im_start|>" "u" "s" "e" "r" "Ċ" "hello" "<|im_end|>" */
    {"<|im_start|>user\nhello<|im_end|>", IDS(262, 117, 115, 101, 114, 10, 259, 263)},
    /* "Ġ" "Ġ" "Ċ" "Ġ" "Ġ" "y" */
    {"  \n  y", IDS(32, 32, 10, 32, 32, 121)},
    /* "Â" "ł" "n" "b" "s" "p" "ã" "Ģ" "Ģ" "x" */
    {"\xc2\xa0nbsp\xe3\x80\x80x", IDS(194, 160, 110, 98, 115, 112, 227, 128, 128, 120)},
};
static const tk_case CASES_CLIP[] = {
    /* "<|startoftext|>" "a</w>" "p" "h" "o" "t" "o</w>" "o" "f</w>" "a</w>" "c" "a" "t</w>" "<|endoftext|>" */
    {"A photo of a CAT", IDS(522, 353, 112, 104, 111, 116, 367, 111, 358, 353, 99, 97, 372, 523)},
    /* "<|startoftext|>" "hello</w>" "world</w>" "<|endoftext|>" */
    {"hello world", IDS(522, 515, 519, 523)},
    /* "<|startoftext|>" "hello</w>" ",</w>" "world</w>" "!" "!</w>" "<|endoftext|>" */
    {"Hello,  World!!", IDS(522, 515, 300, 519, 33, 289, 523)},
    /* "<|startoftext|>" "i" "t</w>" "'s</w>" "1</w>" "2</w>" "3</w>" "4</w>" "<|endoftext|>" */
    {"it's 1234", IDS(522, 105, 372, 520, 305, 306, 307, 308, 523)},
    /* "<|startoftext|>" "a" "b</w>" "a" "b</w>" "<|endoftext|>" */
    {"ab ab", IDS(522, 97, 354, 97, 354, 523)},
    /* "<|startoftext|>" "<|startoftext|>" "a</w>" "p" "h" "o" "t" "o</w>" "<|endoftext|>" "<|endoftext|>" */
    {"<|startoftext|>A photo<|endoftext|>", IDS(522, 522, 353, 112, 104, 111, 116, 367, 523, 523)},
    /* "<|startoftext|>" "<|startoftext|>" "hello</w>" "<|endoftext|>" */
    {"<|STARTOFTEXT|>hello", IDS(522, 522, 515, 523)},
    /* "<|startoftext|>" "c" "a" "f" "Ã" "©</w>" "Ã" "©" "t" "Ã" "©</w>" "<|endoftext|>" */
    {"cafe\xcc\x81 \xc3\x89T\xc3\x89", IDS(522, 99, 97, 102, 195, 425, 195, 169, 116, 195, 425, 523)},
    /* "<|startoftext|>" "æ" "Ĺ" "¥" "æ" "ľ" "¬</w>" "ð" "Ł" "ĺ" "Ģ</w>" "<|endoftext|>" */
    {"\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", IDS(522, 230, 151, 165, 230, 156, 428, 240, 159, 152, 384, 523)},
    /* "<|startoftext|>" "z" "q</w>" "<|endoftext|>" */
    {"zq", IDS(522, 122, 369, 523)},
    /* "<|startoftext|>" "<|endoftext|>" */
    {"", IDS(522, 523)},
};
static const tk_case CASES_LLAMA2[] = {
    /* "<s>" "▁hello" "▁world" */
    {"hello world", IDS(1, 273, 278)},
    /* "<s>" "▁" "<0x48>" "e" "ll" "o" */
    {"Hello", IDS(1, 259, 75, 261, 270, 263)},
    /* "<s>" "▁" "▁hello" */
    {" hello", IDS(1, 259, 273)},
    /* "<s>" "▁hello" "▁" "▁world" */
    {"hello  world", IDS(1, 273, 259, 278)},
    /* "<s>" "▁h" "<0xC3>" "<0xA9>" "ll" "o" "▁" "<0xF0>" "<0x9F>" "<0x98>" "<0x80>" */
    {"h\xc3\xa9llo \xf0\x9f\x98\x80", IDS(1, 269, 198, 172, 270, 263, 259, 243, 162, 155, 131)},
    /* "<s>" "<s>" "▁hello" "</s>" */
    {"<s>hello</s>", IDS(1, 1, 273, 2)},
    /* "<s>" "▁hello" "▁" "<s>" "▁" "▁world" */
    {"hello <s> world", IDS(1, 273, 259, 1, 259, 278)},
    /* "<s>" "▁" "1" "2" */
    {"12", IDS(1, 259, 267, 268)},
    /* "<s>" */
    {"", IDS(1)},
    /* "<s>" "▁" "<0xC2>" "<0xA0>" */
    {"\xc2\xa0", IDS(1, 259, 197, 163)},
};
static const tk_case CASES_LLAMA2_METASPACE[] = {
    /* "<s>" "▁hello" "▁world" */
    {"hello world", IDS(1, 273, 278)},
    /* "<s>" "▁hello" */
    {" hello", IDS(1, 273)},
    /* "<s>" "<s>" "h" "e" "ll" "o" "▁world" */
    {"<s>hello world", IDS(1, 1, 260, 261, 270, 263, 278)},
    /* "<s>" "▁hello" "<s>" "▁world" */
    {"hello<s> world", IDS(1, 273, 1, 278)},
};
static const tk_case CASES_T5[] = {
    /* "▁hello" "▁world" "</s>" */
    {"hello world", IDS(4, 11, 1)},
    /* "▁" "H" "e" "llo" "</s>" */
    {"Hello", IDS(3, 2, 8, 6, 1)},
    /* "▁hello" "▁world" "</s>" */
    {"hello   world", IDS(4, 11, 1)},
    /* "▁a" "b" "▁a" "b" "</s>" */
    {" ab  ab", IDS(23, 21, 23, 21, 1)},
    /* "▁a" "▁" "b" "▁a" "b" "</s>" */
    {"a b ab", IDS(23, 3, 21, 23, 21, 1)},
    /* "▁" "12" "▁" "1" "▁" "2" "</s>" */
    {"12 1 2", IDS(3, 19, 3, 17, 3, 18, 1)},
    /* "▁" "xyz" "</s>" */
    {"xyz", IDS(3, 2, 1)},
    /* "<extra_id_0>" "▁hello" "▁world" "</s>" */
    {"<extra_id_0> hello world", IDS(24, 4, 11, 1)},
    /* "▁hello" "<extra_id_0>" "</s>" */
    {"hello<extra_id_0>", IDS(4, 24, 1)},
    /* "▁" "é" "▁hello" "</s>" */
    {"\xc3\xa9\t\nhello", IDS(3, 2, 4, 1)},
    /* "</s>" */
    {"", IDS(1)},
};
static const tk_case CASES_T5_PRECOMPILED[] = {
    /* "▁" "A" "h" "e" "llo" "</s>" */
    {"\xef\xbc\xa1hello", IDS(3, 2, 7, 8, 6, 1)},
    /* "▁" "fi" "▁world" "</s>" */
    {"\xef\xac\x81 world", IDS(3, 2, 11, 1)},
    /* "▁hello" "▁world" "</s>" */
    {"hello\xc2\xa0world", IDS(4, 11, 1)},
    /* "▁" "1" "②" "</s>" */
    {"\xe2\x91\xa0\xe2\x91\xa1", IDS(3, 17, 2, 1)},
    /* "▁" "é" "▁hello" "</s>" */
    {"e\xcc\x81 hello", IDS(3, 2, 4, 1)},
    /* "▁" "h" "é" "llo" "</s>" */
    {"he\xcc\x81llo", IDS(3, 7, 2, 6, 1)},
    /* "▁a" "</s>" */
    {"\xe3\x80\x80\xe3\x80\x80""a", IDS(23, 1)},
    /* "▁" "ss" "</s>" */
    {"\xc3\x9f", IDS(3, 2, 1)},
    /* "▁hello" "</s>" */
    {"\xef\xbc\xa8""ello", IDS(4, 1)},
    /* "▁" "A" "</s>" */
    {"\xef\xbc\xa1\xcc\x81", IDS(3, 2, 1)},
};

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

static it_tokenizer *load_fixture(const char *name)
{
    char rel[128];
    snprintf(rel, sizeof rel, "tokenizer/%s.json", name);
    it_tokenizer *t = NULL;
    it_err e = {0, ""};
    int rc = it_tokenizer_load(&t, test_data(rel), &e);
    CHECKF(rc == IT_OK && t, "%s: load failed: %s", name, e.msg);
    return rc == IT_OK ? t : NULL;
}

static void print_ids(char *buf, size_t size, const int32_t *ids, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && o + 16 < size; i++) o += (size_t)snprintf(buf + o, size - o, i ? ",%d" : "%d", ids[i]);
}

static void run_cases(const char *name, const tk_case *c, size_t nc)
{
    it_tokenizer *t = load_fixture(name);
    if (!t) return;
    for (size_t i = 0; i < nc; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        it_err e = {0, ""};
        int rc = it_tokenizer_encode(t, c[i].text, strlen(c[i].text), 1, &ids, &n, &e);
        int ok = rc == IT_OK && n == c[i].n && (n == 0 || memcmp(ids, c[i].ids, n * sizeof *ids) == 0);
        if (!ok) {
            char got[512], want[512];
            print_ids(got, sizeof got, ids, n);
            print_ids(want, sizeof want, c[i].ids, c[i].n);
            test_fail(__FILE__, __LINE__, "%s case %zu: got [%s], want [%s] (%s)", name, i, got, want, e.msg);
        }
        free(ids);
    }
    it_tokenizer_free(t);
}

/* Encodes text (NUL-terminated) and checks the ids. */
static void expect_ids(it_tokenizer *t, const char *text, int special, const int32_t *want, size_t nw, int line)
{
    int32_t *ids = NULL;
    size_t n = 0;
    it_err e = {0, ""};
    int rc = it_tokenizer_encode(t, text, strlen(text), special, &ids, &n, &e);
    if (rc != IT_OK || n != nw || (n && memcmp(ids, want, n * sizeof *ids))) {
        char got[512], w[512];
        print_ids(got, sizeof got, ids, n);
        print_ids(w, sizeof w, want, nw);
        test_fail(__FILE__, line, "\"%s\": got [%s], want [%s] (%s)", text, got, w, e.msg);
    }
    free(ids);
}

/* ============================================================================================ */
/* Tests                                                                                         */
/* ============================================================================================ */

static void test_tokenizer_gpt2(void) { run_cases("gpt2", CASES_GPT2, NCASES(CASES_GPT2)); }
static void test_tokenizer_llama3(void) { run_cases("llama3", CASES_LLAMA3, NCASES(CASES_LLAMA3)); }
static void test_tokenizer_qwen2(void) { run_cases("qwen2", CASES_QWEN2, NCASES(CASES_QWEN2)); }
static void test_tokenizer_clip(void) { run_cases("clip", CASES_CLIP, NCASES(CASES_CLIP)); }
static void test_tokenizer_llama2(void)
{
    run_cases("llama2", CASES_LLAMA2, NCASES(CASES_LLAMA2));
    run_cases("llama2_metaspace", CASES_LLAMA2_METASPACE, NCASES(CASES_LLAMA2_METASPACE));
}
static void test_tokenizer_t5(void)
{
    run_cases("t5", CASES_T5, NCASES(CASES_T5));
    run_cases("t5_precompiled", CASES_T5_PRECOMPILED, NCASES(CASES_T5_PRECOMPILED));
}

/* add_special false leaves the post-processor's tokens out; token_id; a folder; invalid UTF-8. */
static void test_tokenizer_api(void)
{
    it_tokenizer *t = load_fixture("llama3");
    if (!t) return;
    expect_ids(t, "hello", 0, IDS(262), __LINE__);
    expect_ids(t, "hello", 1, IDS(265, 262), __LINE__);
    expect_ids(t, "<|end_of_text|>", 0, IDS(266), __LINE__); /* added tokens stay without specials */
    CHECK(it_tokenizer_token_id(t, "<|begin_of_text|>") == 265);
    CHECK(it_tokenizer_token_id(t, "hello") == 262);
    CHECK(it_tokenizer_token_id(t, "Ġhello") == 264);
    CHECK(it_tokenizer_token_id(t, "nope") == -1);
    int32_t *ids = (int32_t *)&ids;
    size_t n = 7;
    it_err e = {0, ""};
    CHECK(it_tokenizer_encode(t, "a\xff", 2, 1, &ids, &n, &e) == IT_EINVAL && ids == NULL && n == 0);
    CHECK(strstr(e.msg, "UTF-8") != NULL);
    CHECK(it_tokenizer_encode(t, "a\xc0\x80", 3, 1, &ids, &n, &e) == IT_EINVAL); /* overlong */
    CHECK(it_tokenizer_encode(t, NULL, 0, 0, &ids, &n, &e) == IT_OK && n == 0 && ids == NULL);
    it_tokenizer_free(t);

    /* a folder holding tokenizer.json */
    const char *dir = test_tmppath("tokdir");
    size_t len = 0;
    unsigned char *text = test_read_file(test_data("tokenizer/t5.json"), &len);
    CHECK(text != NULL);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (text && mkdir(dir, 0755) == 0 && test_write_file(path, text, len) == 0) {
        it_tokenizer *u = NULL;
        CHECK(it_tokenizer_load(&u, dir, &e) == IT_OK);
        if (u) expect_ids(u, "hello world", 1, IDS(4, 11, 1), __LINE__);
        it_tokenizer_free(u);
    }
    free(text);
    it_tokenizer_free(NULL);
}

/* Writes text as a tokenizer.json and checks the refusal: code, a one-line message that starts
 * with the file's path and contains needle. */
static void refuse(const char *text, int code, const char *needle, int line)
{
    const char *p = test_tmppath("bad_tokenizer.json");
    it_tokenizer *t = (it_tokenizer *)&t;
    it_err e = {0, ""};
    if (test_write_file(p, text, strlen(text)) != 0) {
        test_fail(__FILE__, line, "cannot write %s", p);
        return;
    }
    int rc = it_tokenizer_load(&t, p, &e);
    int oneline = 1;
    for (const char *c = e.msg; *c; c++)
        if (*c == '\n' || *c == '\r') oneline = 0;
    if (rc != code || t != NULL || strncmp(e.msg, p, strlen(p)) || !strstr(e.msg, needle) || !oneline)
        test_fail(__FILE__, line, "rc %d (want %d), message \"%s\" (want \"%s: ...%s...\")", rc, code, e.msg, p, needle);
    if (rc == IT_OK) it_tokenizer_free(t);
}
#define REFUSE(text, code, needle) refuse((text), (code), (needle), __LINE__)

#define BPE_MODEL(vocab, merges) "\"model\":{\"type\":\"BPE\",\"vocab\":" vocab ",\"merges\":" merges "}"
#define GOOD_BPE BPE_MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[\"a b\"]")

static void test_tokenizer_refusals(void)
{
    REFUSE("{\"model\":", IT_EFORMAT, "");
    REFUSE("[1]", IT_EFORMAT, "top level");
    REFUSE("{}", IT_EFORMAT, "model");
    REFUSE("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", IT_EUNSUPPORTED, "WordPiece");
    REFUSE("{" BPE_MODEL("{\"a\":0}", "[\"a b\"]") "}", IT_EFORMAT, "merges[0]");
    REFUSE("{" BPE_MODEL("{\"a\":0,\"b\":1}", "[\"a b\"]") "}", IT_EFORMAT, "\"ab\" is not in the vocabulary");
    REFUSE("{" BPE_MODEL("{\"a\":-1}", "[]") "}", IT_EFORMAT, "model.vocab");
    REFUSE("{" BPE_MODEL("{\"a\":0}", "[\"a  b\"]") "}", IT_EFORMAT, "exactly one space");
    REFUSE("{" BPE_MODEL("{\"a\":0}", "[[\"a\"]]") "}", IT_EFORMAT, "merges[0]");
    REFUSE("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[],\"dropout\":0.1}}", IT_EUNSUPPORTED, "dropout");
    REFUSE("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1.0]],\"unk_id\":5}}", IT_EFORMAT, "unk_id");
    REFUSE("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", IT_EFORMAT, "empty");
    REFUSE("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",\"x\"]]}}", IT_EFORMAT, "vocab[0]");
    REFUSE("{" GOOD_BPE ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},"
           "\"behavior\":\"Isolated\",\"invert\":false}}",
           IT_EUNSUPPORTED, "the regex \"\\w+\"");
    REFUSE("{" GOOD_BPE ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"x\"},\"behavior\":\"Odd\"}}",
           IT_EFORMAT, "behavior");
    REFUSE("{" GOOD_BPE ",\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}}", IT_EUNSUPPORTED, "BertPreTokenizer");
    REFUSE("{" GOOD_BPE ",\"normalizer\":{\"type\":\"BertNormalizer\"}}", IT_EUNSUPPORTED, "BertNormalizer");
    REFUSE("{" GOOD_BPE ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"a|b\"},\"content\":\"\"}}",
           IT_EUNSUPPORTED, "a|b");
    REFUSE("{" GOOD_BPE ",\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"@@@@\"}}", IT_EFORMAT,
           "base64");
    REFUSE("{" GOOD_BPE ",\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"AQAAAA==\"}}",
           IT_EFORMAT, "trie size");
    REFUSE("{" GOOD_BPE ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":3}}", IT_EFORMAT, "normalizers");
    REFUSE("{" GOOD_BPE ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"}}", IT_EFORMAT,
           "one character");
    REFUSE("{" GOOD_BPE ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
           "{\"id\":\"<s>\",\"type_id\":0}}],\"special_tokens\":{}}}",
           IT_EFORMAT, "<s>");
    REFUSE("{" GOOD_BPE ",\"post_processor\":{\"type\":\"RobertaProcessing\",\"cls\":[\"<s>\"],\"sep\":[\"</s>\",2]}}",
           IT_EFORMAT, "post_processor.cls");
    REFUSE("{" GOOD_BPE ",\"post_processor\":{\"type\":\"Nope\"}}", IT_EUNSUPPORTED, "Nope");
    REFUSE("{" GOOD_BPE ",\"added_tokens\":[{\"id\":0}]}", IT_EFORMAT, "added_tokens[0]");
    REFUSE("{" GOOD_BPE ",\"added_tokens\":{}}", IT_EFORMAT, "added_tokens");
    REFUSE("{" GOOD_BPE ",\"normalizer\":[]}", IT_EFORMAT, "normalizer");

    it_tokenizer *t = (it_tokenizer *)&t;
    it_err e = {0, ""};
    const char *missing = test_tmppath("no_such_tokenizer.json");
    CHECK(it_tokenizer_load(&t, missing, &e) != IT_OK && t == NULL && strstr(e.msg, missing));
}

/* An unk_token that is not in the vocabulary fails when it is needed, naming it. */
static void test_tokenizer_unk(void)
{
    const char *p = test_tmppath("unk_tokenizer.json");
    const char *text = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}}";
    CHECK(test_write_file(p, text, strlen(text)) == 0);
    it_tokenizer *t = NULL;
    it_err e = {0, ""};
    CHECK(it_tokenizer_load(&t, p, &e) == IT_OK);
    if (!t) return;
    expect_ids(t, "aa", 1, IDS(0, 0), __LINE__);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(it_tokenizer_encode(t, "ab", 2, 1, &ids, &n, &e) == IT_EFORMAT && strstr(e.msg, "<unk>") && !ids);
    it_tokenizer_free(t);
}

/* Mutated fixtures: every load either fails with a message or gives a tokenizer that encodes
 * without crashing (a smoke test for AddressSanitizer; the fuzz suite goes further). */
static void test_tokenizer_mutations(void)
{
    static const char *const names[] = {"gpt2", "llama3", "clip", "llama2", "t5_precompiled"};
    uint64_t s = 12345;
    const char *p = test_tmppath("mut_tokenizer.json");
    for (size_t f = 0; f < sizeof names / sizeof *names; f++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tokenizer/%s.json", names[f]);
        size_t len = 0;
        unsigned char *orig = test_read_file(test_data(rel), &len);
        CHECK(orig != NULL && len > 0);
        if (!orig || !len) continue;
        for (int k = 0; k < 40; k++) {
            unsigned char *m = malloc(len);
            if (!m) break;
            memcpy(m, orig, len);
            for (int j = 0; j < 3; j++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                m[(s >> 33) % len] = (unsigned char)(s >> 17);
            }
            CHECK(test_write_file(p, m, len) == 0);
            it_tokenizer *t = NULL;
            it_err e = {0, ""};
            int rc = it_tokenizer_load(&t, p, &e);
            if (rc == IT_OK) {
                int32_t *ids = NULL;
                size_t n = 0;
                const char *txt = "Hello  world, it's 123 \xc3\xa9\xf0\x9f\x98\x80 <s> <|endoftext|>\n";
                rc = it_tokenizer_encode(t, txt, strlen(txt), 1, &ids, &n, &e);
                free(ids);
                it_tokenizer_free(t);
            } else {
                CHECK(e.msg[0] != 0 && t == NULL);
            }
            free(m);
        }
        free(orig);
    }
}

/* ============================================================================================ */
/* "text" samples through a model folder's tokenizer.json                                        */
/* ============================================================================================ */

/* A copy of data/<fx>/base in the temporary folder with data/tokenizer/<tok>.json as its
 * tokenizer.json; returns the folder (static) or NULL. */
static const char *with_tokenizer(const char *fx, const char *tok)
{
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmppath(fx));
    mkdir(dir, 0755);
    static const char *const files[3] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (int k = 0; k < 3; k++) {
        char src[512], dst[1200];
        if (k < 2) snprintf(src, sizeof src, "data/%s/base/%s", fx, files[k]);
        else snprintf(src, sizeof src, "data/tokenizer/%s.json", tok);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[k]);
        size_t len = 0;
        unsigned char *b = test_read_file(src, &len);
        int ok = b && test_write_file(dst, b, len) == 0;
        free(b);
        CHECKF(ok, "cannot copy %s", src);
        if (!ok) return NULL;
    }
    return dir;
}

static int run_cmd(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* forward on {"text": ...} samples dumps exactly what it dumps on the ids `iteris tokenize` prints
 * for the same texts: a Llama model with a byte-level BPE tokenizer, a T5 model with a Unigram one
 * (its decoder ids made by greedy decoding either way); a folder without tokenizer.json refuses text. */
static void test_tokenizer_text_samples(void)
{
    const char *bin = getenv("ITERIS_BIN") ? getenv("ITERIS_BIN") : "./iteris";
    static const char *const pairs[2][2] = {{"llama", "gpt2"}, {"t5", "t5"}};
    for (int k = 0; k < 2; k++) {
        const char *dir = with_tokenizer(pairs[k][0], pairs[k][1]);
        if (!dir) continue;
        char cmd[16384], text_file[1200], ids_file[1200], d1[1200], d2[1200], ids_out[1200];
        snprintf(text_file, sizeof text_file, "%s/text.jsonl", dir);
        snprintf(ids_file, sizeof ids_file, "%s/ids.jsonl", dir);
        snprintf(ids_out, sizeof ids_out, "%s/ids.txt", dir);
        snprintf(d1, sizeof d1, "%s/text.dump", dir);
        snprintf(d2, sizeof d2, "%s/ids.dump", dir);
        static const char texts[] = "{\"text\": \"ab cd\"}\n{\"text\": \"a  b\\nc\"}\n";
        CHECK(test_write_file(text_file, texts, sizeof texts - 1) == 0);
        /* the ids of each text, as `iteris tokenize` prints them */
        FILE *f = fopen(ids_file, "w");
        static const char *const raw[2] = {"ab cd", "a  b\nc"};
        for (int j = 0; f && j < 2; j++) {
            snprintf(cmd, sizeof cmd, "%s tokenize --model %s '%s' > %s", bin, dir, raw[j], ids_out);
            CHECKF(run_cmd(cmd) == 0, "%s", cmd);
            size_t len = 0;
            char *ids = (char *)test_read_file(ids_out, &len);
            if (ids) ids[strcspn(ids, "\n")] = 0, fprintf(f, "{\"input_ids\": %s}\n", ids);
            free(ids);
        }
        if (f) fclose(f);
        snprintf(cmd, sizeof cmd, "%s forward --model %s --inputs %s --dump %s --gen-len 3 && %s forward --model %s "
                 "--inputs %s --dump %s --gen-len 3", bin, dir, text_file, d1, bin, dir, ids_file, d2);
        CHECKF(run_cmd(cmd) == 0, "%s", cmd);
        size_t l1 = 0, l2 = 0;
        unsigned char *b1 = test_read_file(d1, &l1), *b2 = test_read_file(d2, &l2);
        CHECKF(b1 && b2 && l1 == l2 && !memcmp(b1, b2, l1), "%s: the text samples' dump differs", pairs[k][0]);
        free(b1), free(b2);
    }
    /* no tokenizer.json: refused, naming the file */
    char cmd[2048];
    const char *txt = test_tmppath("plain-text.jsonl");
    CHECK(test_write_file(txt, "{\"text\": \"ab\"}\n", 15) == 0);
    snprintf(cmd, sizeof cmd, "%s forward --model data/llama/base --inputs %s --dump %s 2> %s", bin, txt,
             test_tmppath("x.dump"), test_tmppath("err.txt"));
    CHECK(run_cmd(cmd) == 1);
    size_t len = 0;
    unsigned char *msg = test_read_file(test_tmppath("err.txt"), &len);
    CHECKF(msg && strstr((char *)msg, "data/llama/base/tokenizer.json: not found"), "%s", msg ? (char *)msg : "");
    free(msg);
}

void suite_tokenizer(void)
{
    RUN(test_tokenizer_gpt2);
    RUN(test_tokenizer_llama3);
    RUN(test_tokenizer_qwen2);
    RUN(test_tokenizer_clip);
    RUN(test_tokenizer_llama2);
    RUN(test_tokenizer_t5);
    RUN(test_tokenizer_api);
    RUN(test_tokenizer_refusals);
    RUN(test_tokenizer_unk);
    RUN(test_tokenizer_mutations);
    RUN(test_tokenizer_text_samples);
}
