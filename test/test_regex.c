/* test/test_regex.c -- regular expressions (regex.c) against CPython 3.11's `re`: a table of
 * patterns and subjects with re.fullmatch's verdict and the spans re.match reports (produced
 * once with python3 and kept here as literals), PEFT's own patterns among them; then starts past
 * 0, NUL bytes, the capture-array contract, every class of compile error with its offset, and
 * linear time on patterns that make a backtracking matcher explode. */
#include "test.h"

#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

/* s as printable ASCII for failure messages (static rotating buffers, cut at 100 bytes). */
static const char *show(const char *s, size_t len)
{
    static char bufs[2][500];
    static int which;
    char *buf = bufs[which ^= 1];
    size_t m = 0;
    for (size_t i = 0; i < len && i < 100; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F) buf[m++] = (char)c;
        else m += (size_t)snprintf(buf + m, sizeof bufs[0] - m, "\\x%02X", c);
    }
    buf[m] = 0;
    return buf;
}

/* Compiles pattern, failing the test (with the message) when it does not; NULL then. */
static it__re *compile_ok(const char *pattern, int line)
{
    it__re *re = NULL;
    it_err err = {0, ""};
    int rc = it__re_compile(&re, pattern, &err);
    if (rc != IT_OK || !re)
        test_fail(__FILE__, line, "<%s> does not compile: %s", show(pattern, strlen(pattern)), err.msg);
    return rc == IT_OK ? re : NULL;
}
#define COMPILE(p) compile_ok((p), __LINE__)

/* One case: re.fullmatch(pat, subj, start) and re.match(pat, subj, start) as CPython gives them.
 * Positions are byte offsets of the UTF-8 subject; -1 for a group that did not take part. */
typedef struct re_case {
    const char *pat, *subj;
    size_t start;
    int full, match, groups;
    long span[12]; /* group k: span[2k], span[2k+1], for k <= groups (when match) */
} re_case;

/* Checks one case: the group count, fullmatch, match and every span; returns 0 if all agree. */
static int check_case(const re_case *c, int line)
{
    it__re *re = compile_ok(c->pat, line);
    if (!re) return -1;
    size_t len = strlen(c->subj), cap[14];
    const char *p = show(c->pat, strlen(c->pat)), *s = show(c->subj, len);
    int bad = 0, full = it__re_fullmatch(re, c->subj, len, c->start);
    int m = it__re_match(re, c->subj, len, c->start, cap, 14);
    size_t groups = it__re_groups(re);
    if (groups != (size_t)c->groups) bad = 1, test_fail(__FILE__, line, "<%s>: %zu groups", p, groups);
    if (full != c->full) bad = 1, test_fail(__FILE__, line, "fullmatch <%s> <%s> @%zu = %d", p, s, c->start, full);
    if (m != c->match) bad = 1, test_fail(__FILE__, line, "match <%s> <%s> @%zu = %d", p, s, c->start, m);
    for (int k = 0; m && c->match && k <= 2 * c->groups + 1; k++) {
        long got = cap[k] == SIZE_MAX ? -1 : (long)cap[k];
        if (got == c->span[k]) continue;
        test_fail(__FILE__, line, "match <%s> <%s>: group %d %s = %ld, want %ld", p, s, k / 2, k % 2 ? "end" : "start",
                  got, c->span[k]);
        bad = 1;
    }
    for (int k = m ? 2 * c->groups + 2 : 0; k < 14; k++)
        if (cap[k] != SIZE_MAX) bad = 1, test_fail(__FILE__, line, "<%s> <%s>: cap[%d] not SIZE_MAX", p, s, k);
    it__re_free(re);
    return bad ? -1 : 0;
}

/* ============================================================================================ */
/* Tables (values from CPython 3.11)                                                             */
/* ============================================================================================ */

/* PEFT target_modules as one string: re.fullmatch(pattern, name) */
static const re_case peft_target_modules[] = {
    {".*\\.(q_proj|v_proj)", "model.layers.0.self_attn.q_proj", 0, 1, 1, 1, {0, 31, 25, 31}},
    {".*\\.(q_proj|v_proj)", "model.layers.0.self_attn.k_proj", 0, 0, 0, 1, {0}},
    {".*\\.(q_proj|v_proj)", "model.layers.0.self_attn.v_proj", 0, 1, 1, 1, {0, 31, 25, 31}},
    {".*\\.(q_proj|v_proj)", "q_proj", 0, 0, 0, 1, {0}},
    {".*\\.(q_proj|v_proj)", "model.layers.0.self_attn.q_proj.lora_A", 0, 0, 1, 1, {0, 31, 25, 31}},
    {".*\\.(q_proj|v_proj)", "a.q_proj.b.v_proj", 0, 1, 1, 1, {0, 17, 11, 17}},
    {".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$",
     "decoder.block.0.layer.0.SelfAttention.q", 0, 1, 1, 2, {0, 39, 24, 37, 38, 39}},
    {".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$", "encoder.block.0.layer.0.SelfAttention.q", 0, 0, 0, 2, {0}},
    {".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$",
     "decoder.block.1.layer.1.EncDecAttention.v", 0, 1, 1, 2, {0, 41, 24, 39, 40, 41}},
    {".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$",
     "decoder.block.1.layer.1.EncDecAttention.k", 0, 0, 0, 2, {0}},
    {".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$",
     "decoder.block.1.layer.1.EncDecAttention.v\n", 0, 0, 1, 2, {0, 41, 24, 39, 40, 41}},
    {".*(lm_head|embed_tokens).*", "model.embed_tokens", 0, 1, 1, 1, {0, 18, 6, 18}},
    {".*(lm_head|embed_tokens).*", "lm_head", 0, 1, 1, 1, {0, 7, 0, 7}},
    {"model\\.layers\\.[0-9]+\\.self_attn\\.(q|k|v|o)_proj",
     "model.layers.0.self_attn.q_proj", 0, 1, 1, 1, {0, 31, 25, 26}},
    {"model\\.layers\\.[0-9]+\\.self_attn\\.(q|k|v|o)_proj", "model.layers.x.self_attn.q_proj", 0, 0, 0, 1, {0}},
};

/* rank_pattern / alpha_pattern keys K as re.match(rf"(.*\.)?({K})$", name) */
static const re_case peft_rank_pattern[] = {
    {"(.*\\.)?(q_proj)$", "model.layers.0.self_attn.q_proj", 0, 1, 1, 2, {0, 31, 0, 25, 25, 31}},
    {"(.*\\.)?(q_proj)$", "q_proj", 0, 1, 1, 2, {0, 6, -1, -1, 0, 6}},
    {"(.*\\.)?(q_proj)$", "xq_proj", 0, 0, 0, 2, {0}},
    {"(.*\\.)?(q_proj)$", "model.layers.0.self_attn.q_proj_x", 0, 0, 0, 2, {0}},
    {"(.*\\.)?(q_proj)$", "model.layers.0.self_attn.q_proj\n", 0, 0, 1, 2, {0, 31, 0, 25, 25, 31}},
    {"(.*\\.)?(model.layers.0.self_attn.q_proj)$",
     "base_model.model.model.layers.0.self_attn.q_proj", 0, 1, 1, 2, {0, 48, 0, 17, 17, 48}},
    {"(.*\\.)?(model.layers.0.self_attn.q_proj)$", "model.layers.10.self_attn.q_proj", 0, 0, 0, 2, {0}},
    {"(.*\\.)?(model.layers.0.self_attn.q_proj)$",
     "modelXlayersX0Xself_attnXq_proj", 0, 1, 1, 2, {0, 31, -1, -1, 0, 31}},
    {"(.*\\.)?(^down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q)$",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 0, 1, 1, 2, {0, 58, -1, -1, 0, 58}},
    {"(.*\\.)?(^down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q)$",
     "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 0, 0, 0, 2, {0}},
    {"(.*\\.)?(layers.1.mlp.down_proj)$", "model.layers.1.mlp.down_proj", 0, 1, 1, 2, {0, 28, 0, 6, 6, 28}},
    {"(.*\\.)?(layers.1.mlp.down_proj)$", "model.layers.11.mlp.down_proj", 0, 0, 0, 2, {0}},
    {"(.*\\.)?(layers.1.mlp.down_proj)$", "model.xlayers.1.mlp.down_proj", 0, 0, 0, 2, {0}},
    {"(.*\\.)?(layers\\.1\\.mlp\\.down_proj)$", "model.layers.1.mlp.down_proj", 0, 1, 1, 2, {0, 28, 0, 6, 6, 28}},
    {"(.*\\.)?(q_proj|v_proj)$", "model.layers.3.self_attn.v_proj", 0, 1, 1, 2, {0, 31, 0, 25, 25, 31}},
};

/* layers_to_transform: group 1 of re.match(r".*\.[^.]*\.(\d+)\.", key) (the last such segment) */
static const re_case peft_layers[] = {
    {".*\\.[^.]*\\.(\\d+)\\.", "encoder.block.0.layer.1.SelfAttention.q", 0, 0, 1, 1, {0, 24, 22, 23}},
    {".*\\.block\\.(\\d+)\\.", "encoder.block.0.layer.1.SelfAttention.q", 0, 0, 1, 1, {0, 16, 14, 15}},
    {".*\\.[^.]*\\.(\\d+)\\.", "base_model.model.model.layers.12.self_attn.q_proj", 0, 0, 1, 1, {0, 33, 30, 32}},
    {".*\\.layers\\.(\\d+)\\.", "base_model.model.model.layers.12.self_attn.q_proj", 0, 0, 1, 1, {0, 33, 30, 32}},
    {".*\\.[^.]*\\.(\\d+)\\.", "layers.3.mlp.down_proj", 0, 0, 0, 1, {0}},
    {".*\\.[^.]*\\.(\\d+)\\.", "model.layers.3", 0, 0, 0, 1, {0}},
    {".*\\.(?:layers|h)\\.(\\d+)\\.", "transformer.h.7.attn.c_attn", 0, 0, 1, 1, {0, 16, 14, 15}},
};

/* greedy and lazy */
static const re_case greedy_lazy[] = {
    {"a*?b", "aaab", 0, 1, 1, 0, {0, 4}},
    {"a*b", "aaab", 0, 1, 1, 0, {0, 4}},
    {"a*?", "aaa", 0, 1, 1, 0, {0, 0}},
    {"(a*?)(a*)", "aaa", 0, 1, 1, 2, {0, 3, 0, 0, 0, 3}},
    {"(a+?)(a*)", "aaa", 0, 1, 1, 2, {0, 3, 0, 1, 1, 3}},
    {"(a?\?)(a?)", "a", 0, 1, 1, 2, {0, 1, 0, 0, 0, 1}},
    {"(a{1,3}?)(a*)", "aaaa", 0, 1, 1, 2, {0, 4, 0, 1, 1, 4}},
    {"(.*?)\\.(.*)", "x.y.z", 0, 1, 1, 2, {0, 5, 0, 1, 2, 5}},
    {"(.*)\\.(.*)", "x.y.z", 0, 1, 1, 2, {0, 5, 0, 3, 4, 5}},
    {"(a*?)b", "ab", 0, 1, 1, 1, {0, 2, 0, 1}},
    {"(a+?)b", "aab", 0, 1, 1, 1, {0, 3, 0, 2}},
    {"(a|b)*?c", "abc", 0, 1, 1, 1, {0, 3, 1, 2}},
    {"a{2,3}?", "aaaa", 0, 0, 1, 0, {0, 2}},
    {"(a{2,}?)(a*)", "aaaaa", 0, 1, 1, 2, {0, 5, 0, 2, 2, 5}},
    {"(.+?)(b*)", "abb", 0, 1, 1, 2, {0, 3, 0, 1, 1, 3}},
    {"(a?)(a?\?)", "aa", 0, 1, 1, 2, {0, 1, 0, 1, 1, 1}},
};

/* alternation: leftmost alternative first */
static const re_case alternation[] = {
    {"(a|ab)(c|bcd)", "abcd", 0, 1, 1, 2, {0, 4, 0, 1, 1, 4}},
    {"(a|ab)(c|bcd)(d*)", "abcd", 0, 1, 1, 3, {0, 4, 0, 1, 1, 4, 4, 4}},
    {"(ab|a)(bc|c)?", "abc", 0, 1, 1, 2, {0, 3, 0, 2, 2, 3}},
    {"a|ab", "ab", 0, 1, 1, 0, {0, 1}},
    {"ab|a", "ab", 0, 1, 1, 0, {0, 2}},
    {"x(a|b|)y", "xy", 0, 1, 1, 1, {0, 2, 1, 1}},
    {"(a|b|c)+", "cab", 0, 1, 1, 1, {0, 3, 2, 3}},
    {"(?:a|ab)c", "abc", 0, 1, 1, 0, {0, 3}},
    {"(|a)+", "aa", 0, 1, 1, 1, {0, 0, 0, 0}},
    {"(|a)*b", "ab", 0, 1, 1, 1, {0, 2, 1, 1}},
    {"a|b|", "c", 0, 0, 1, 0, {0, 0}},
    {"|", "", 0, 1, 1, 0, {0, 0}},
    {"(a)|(b)", "b", 0, 1, 1, 2, {0, 1, -1, -1, 0, 1}},
    {"(a)|b", "b", 0, 1, 1, 1, {0, 1, -1, -1}},
};

/* empty iterations: loops end after an iteration that consumed nothing */
static const re_case empty_loops[] = {
    {"(a*)*", "", 0, 1, 1, 1, {0, 0, 0, 0}},
    {"(a*)*", "b", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"(a*)*", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"(a*)+", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"(a|)+", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"(a|)*", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"(a*?)*", "aa", 0, 1, 1, 1, {0, 0, 0, 0}},
    {"(a*)*b", "aab", 0, 1, 1, 1, {0, 3, 2, 2}},
    {"((a*)*)*", "aa", 0, 1, 1, 2, {0, 2, 2, 2, 2, 2}},
    {"(?:a*)*", "aa", 0, 1, 1, 0, {0, 2}},
    {"(a?)*", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"(a?){2,}", "a", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"(a*){2,3}", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"(a|b|)*?c", "abc", 0, 1, 1, 1, {0, 3, 1, 2}},
    {"()*", "a", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"(()|a)+", "aa", 0, 1, 1, 2, {0, 0, 0, 0, 0, 0}},
    {"(a*|b)*", "ab", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"(?:()|a)*", "aa", 0, 1, 1, 1, {0, 0, 0, 0}},
    {"(a|)+?b", "aab", 0, 1, 1, 1, {0, 3, 1, 2}},
    {"(a*)*?b", "aab", 0, 1, 1, 1, {0, 3, 0, 2}},
    {"(a?){0,3}", "a", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"(a?){0,3}?b", "ab", 0, 1, 1, 1, {0, 2, 0, 1}},
    {"(?:(a)|b)*", "ab", 0, 1, 1, 1, {0, 2, 0, 1}},
    {"(?:(a)|(b))*", "ab", 0, 1, 1, 2, {0, 2, 0, 1, 1, 2}},
    {"(?:a|()){3}", "a", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"(a{0,2}){2,3}", "aaa", 0, 1, 1, 1, {0, 3, 3, 3}},
    {"(a*)*(b)", "aab", 0, 1, 1, 2, {0, 3, 2, 2, 2, 3}},
    {"((a)|b)*", "ab", 0, 1, 1, 2, {0, 2, 1, 2, 0, 1}},
    {"(\\w*)*", "baa.b", 0, 0, 1, 1, {0, 3, 3, 3}},
    {"(a|)(a|)+", "a", 0, 1, 1, 2, {0, 1, 0, 1, 1, 1}},
    {"(?:(a*)(b*))*", "abab", 0, 1, 1, 2, {0, 4, 4, 4, 4, 4}},
};

/* counted repetition */
static const re_case counted[] = {
    {"a{2}", "aa", 0, 1, 1, 0, {0, 2}},
    {"a{2}", "aaa", 0, 0, 1, 0, {0, 2}},
    {"a{2,}", "aaaa", 0, 1, 1, 0, {0, 4}},
    {"a{,2}", "aaa", 0, 0, 1, 0, {0, 2}},
    {"a{1,2}", "", 0, 0, 0, 0, {0}},
    {"a{0}", "a", 0, 0, 1, 0, {0, 0}},
    {"(ab){2,3}", "abababab", 0, 0, 1, 1, {0, 6, 4, 6}},
    {"a{,}", "aa", 0, 1, 1, 0, {0, 2}},
    {"(a){1}", "a", 0, 1, 1, 1, {0, 1, 0, 1}},
    {"(a|b){3}", "abab", 0, 0, 1, 1, {0, 3, 2, 3}},
    {"a{3,3}b", "aaab", 0, 1, 1, 0, {0, 4}},
    {"a{}", "a{}", 0, 1, 1, 0, {0, 3}},
    {"a{1,2", "a{1,2", 0, 1, 1, 0, {0, 5}},
    {"a{x}", "a{x}", 0, 1, 1, 0, {0, 4}},
    {"{", "{", 0, 1, 1, 0, {0, 1}},
    {"a{,", "a{,", 0, 1, 1, 0, {0, 3}},
    {"x{2}{", "xx{", 0, 1, 1, 0, {0, 3}},
    {"}", "}", 0, 1, 1, 0, {0, 1}},
    {"(a{2}){2}", "aaaa", 0, 1, 1, 1, {0, 4, 2, 4}},
    {"[ab]{2,4}?c", "abac", 0, 1, 1, 0, {0, 4}},
};

/* classes */
static const re_case classes[] = {
    {"[abc]+", "cabd", 0, 0, 1, 0, {0, 3}},
    {"[^.]+", "layers.0", 0, 0, 1, 0, {0, 6}},
    {"[a-z0-9_]+", "q_proj1.x", 0, 0, 1, 0, {0, 7}},
    {"[]a]+", "]a]", 0, 1, 1, 0, {0, 3}},
    {"[^]a]", "]", 0, 0, 0, 0, {0}},
    {"[^]a]", "b", 0, 1, 1, 0, {0, 1}},
    {"[a-]+", "a-a", 0, 1, 1, 0, {0, 3}},
    {"[-a]+", "-a", 0, 1, 1, 0, {0, 2}},
    {"[\\d.]+", "1.5x", 0, 0, 1, 0, {0, 3}},
    {"[\\w-]+", "a-b_c.d", 0, 0, 1, 0, {0, 5}},
    {"[\\]]", "]", 0, 1, 1, 0, {0, 1}},
    {"[\\\\]", "\\", 0, 1, 1, 0, {0, 1}},
    {"[.]", "x", 0, 0, 0, 0, {0}},
    {"[.]", ".", 0, 1, 1, 0, {0, 1}},
    {"[\\n]", "\n", 0, 1, 1, 0, {0, 1}},
    {"[a-c-e]+", "ace-d", 0, 0, 1, 0, {0, 4}},
    {"[\\x41-\\x43]+", "ABCD", 0, 0, 1, 0, {0, 3}},
    {"[\\b]", "\010", 0, 1, 1, 0, {0, 1}},
    {"[^a]", "\n", 0, 1, 1, 0, {0, 1}},
    {"[\\s\\d]+", " 1\t2x", 0, 0, 1, 0, {0, 4}},
    {"[^\\W\\d]+", "ab1", 0, 0, 1, 0, {0, 2}},
    {"[(|)]+", "(|)", 0, 1, 1, 0, {0, 3}},
    {"[*+?{]+", "*+?{", 0, 1, 1, 0, {0, 4}},
    {"[\\101-\\103]", "B", 0, 1, 1, 0, {0, 1}},
    {"[\\0-\\x1f]", "\037", 0, 1, 1, 0, {0, 1}},
};

/* escapes */
static const re_case escapes[] = {
    {"\\d+", "123a", 0, 0, 1, 0, {0, 3}},
    {"\\D", "a", 0, 1, 1, 0, {0, 1}},
    {"\\D", "1", 0, 0, 0, 0, {0}},
    {"\\w+", "a_1-", 0, 0, 1, 0, {0, 3}},
    {"\\W", "-", 0, 1, 1, 0, {0, 1}},
    {"\\s+", " \t\n\015\014\013\034\037.", 0, 0, 1, 0, {0, 8}},
    {"\\S", " ", 0, 0, 0, 0, {0}},
    {"a\\.b", "a.b", 0, 1, 1, 0, {0, 3}},
    {"a\\.b", "axb", 0, 0, 0, 0, {0}},
    {"\\\\", "\\", 0, 1, 1, 0, {0, 1}},
    {"\\(\\)", "()", 0, 1, 1, 0, {0, 2}},
    {"\\n\\t\\r\\f\\v\\a", "\n\t\015\014\013\007", 0, 1, 1, 0, {0, 6}},
    {"\\x41\\x2e", "A.", 0, 1, 1, 0, {0, 2}},
    {"\\u00e9", "\303\251", 0, 1, 1, 0, {0, 2}},
    {"\\U0001F600", "\360\237\230\200", 0, 1, 1, 0, {0, 4}},
    {"\\101", "A", 0, 1, 1, 0, {0, 1}},
    {"\\*\\+\\?\\{\\}\\[\\]\\|\\^\\$", "*+?{}[]|^$", 0, 1, 1, 0, {0, 10}},
    {"\\-\\ \\/", "- /", 0, 1, 1, 0, {0, 3}},
    {"\\xe9", "\303\251", 0, 1, 1, 0, {0, 2}},
};

/* anchors: ^ and \A only at absolute 0, $ at the end or before a final newline, \Z at the end */
static const re_case anchors[] = {
    {"^a", "a", 0, 1, 1, 0, {0, 1}},
    {"a$", "a", 0, 1, 1, 0, {0, 1}},
    {"a$", "a\n", 0, 0, 1, 0, {0, 1}},
    {"a$", "a\n\n", 0, 0, 0, 0, {0}},
    {"a\\Z", "a\n", 0, 0, 0, 0, {0}},
    {"\\Aa", "a", 0, 1, 1, 0, {0, 1}},
    {"$", "", 0, 1, 1, 0, {0, 0}},
    {"a$\n", "a\n", 0, 1, 1, 0, {0, 2}},
    {"^$", "", 0, 1, 1, 0, {0, 0}},
    {"^$", "\n", 0, 0, 1, 0, {0, 0}},
    {"a^", "a", 0, 0, 0, 0, {0}},
    {"(^a|b)+", "ab", 0, 1, 1, 1, {0, 2, 1, 2}},
    {"\\bfoo\\b", "foo bar", 0, 0, 1, 0, {0, 3}},
    {"\\bfoo\\b", "foobar", 0, 0, 0, 0, {0}},
    {"\\Bo", "foo", 0, 0, 0, 0, {0}},
    {"o\\B", "foo", 0, 0, 0, 0, {0}},
    {"a\\b", "a", 0, 1, 1, 0, {0, 1}},
    {"\\b", "", 0, 0, 0, 0, {0}},
    {"\\B", "", 0, 0, 0, 0, {0}},
    {"\\b", "a", 0, 0, 1, 0, {0, 0}},
    {"a\\b$", "a\n", 0, 0, 1, 0, {0, 1}},
    {"a|$", "", 0, 1, 1, 0, {0, 0}},
    {"(a$)?", "a", 0, 1, 1, 1, {0, 1, 0, 1}},
};

/* dot and UTF-8: a well-formed sequence is one character */
static const re_case utf8[] = {
    {"a.c", "abc", 0, 1, 1, 0, {0, 3}},
    {"a.c", "a\nc", 0, 0, 0, 0, {0}},
    {"a.c", "a\303\251c", 0, 1, 1, 0, {0, 4}},
    {".", "\303\251", 0, 1, 1, 0, {0, 2}},
    {"..", "\303\251", 0, 0, 0, 0, {0}},
    {"\303\251+", "\303\251\303\251\303\251", 0, 1, 1, 0, {0, 6}},
    {"a\303\251?", "a", 0, 1, 1, 0, {0, 1}},
    {"[^a]", "\303\251", 0, 1, 1, 0, {0, 2}},
    {"[^a]b", "\303\251b", 0, 1, 1, 0, {0, 3}},
    {".*", "a\nb", 0, 0, 1, 0, {0, 1}},
    {".*", "\342\202\254x", 0, 1, 1, 0, {0, 4}},
    {"(.)(.)", "\360\237\230\200x", 0, 1, 1, 2, {0, 5, 0, 4, 4, 5}},
    {"\\.", "\303\251", 0, 0, 0, 0, {0}},
};

/* pattern.match(s, pos) and fullmatch(s, pos): start > 0 */
static const re_case start_cases[] = {
    {"^a", "ba", 1, 0, 0, 0, {0}},
    {"a", "ba", 1, 1, 1, 0, {1, 2}},
    {"\\Aa", "ba", 1, 0, 0, 0, {0}},
    {"\\ba", "ba", 1, 0, 0, 0, {0}},
    {"\\ba", " a", 1, 1, 1, 0, {1, 2}},
    {"$", "ab", 2, 1, 1, 0, {2, 2}},
    {"b", "ab", 1, 1, 1, 0, {1, 2}},
    {"(a*)b", "xaab", 1, 1, 1, 1, {1, 4, 1, 3}},
    {".*", "abc", 3, 1, 1, 0, {3, 3}},
    {"(.*\\.)?(q)$", "x.y.q", 2, 1, 1, 2, {2, 5, 2, 4, 4, 5}},
    {"a", "aa", 2, 0, 0, 0, {0}},
};

/* random patterns of this subset (from the differential fuzzing against CPython 3.11) */
static const re_case random_cases[] = {
    {"a|((?:b){2})*ab", "abab", 0, 0, 1, 1, {0, 1, -1, -1}},
    {"(a|)", "baba", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"(a|)|\\baa", "a", 0, 1, 1, 1, {0, 1, 0, 1}},
    {"b(a*){2,}", "abaa", 0, 0, 0, 1, {0}},
    {"(?:(b(?:){1,3}?a|a{0,2}?|a{1,3}))?\?", "aaaaa", 0, 0, 1, 1, {0, 0, -1, -1}},
    {"()(?:b?\?)", "bbaa", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"(b){0,2}b{,2}?", "bb", 0, 1, 1, 1, {0, 2, 1, 2}},
    {"(?:(?:)|a\\w(a{0,2}a){1,3}){,2}?", "", 0, 1, 1, 1, {0, 0, -1, -1}},
    {"(a*)", "a", 0, 1, 1, 1, {0, 1, 0, 1}},
    {"a{2,}?|((?:a|aa{1,3}|(a?)*aa+)aa){,2}", "aababa", 0, 0, 1, 2, {0, 2, -1, -1, -1, -1}},
    {"b+|(aa?|aa{,2}a{0,2})a{0,2}a{2}", "baaa", 0, 0, 1, 1, {0, 1, -1, -1}},
    {"((?:b).b)|\\bb?\?", "aabaa", 0, 0, 1, 1, {0, 0, -1, -1}},
    {"(?:a{2,}a|(a|a|a*b)a{0,2}a{1,3}?|b)", "b", 0, 1, 1, 1, {0, 1, -1, -1}},
    {"a{2}?|((ba{2}?\\b)a{1,3}b)", "aabaaa", 0, 0, 1, 2, {0, 2, -1, -1, -1, -1}},
    {"(?:(a*)+?b{2,}){0,2}|a?\?a?\?(a){,2}", "aaaab", 0, 0, 1, 2, {0, 0, -1, -1, -1, -1}},
    {"(?:(a?)(b?)\\w*|b|b*(?:.())){2}?", "aba", 0, 1, 1, 3, {0, 3, 3, 3, 3, 3, -1, -1}},
    {"bb{,2}?a|(\\bb|(a|))?|[^a]+b[ab]", "", 0, 1, 1, 2, {0, 0, 0, 0, 0, 0}},
    {"(){2,}bb{0,2}|(ba){0,2}", "aa", 0, 0, 1, 2, {0, 0, -1, -1, -1, -1}},
    {"(?:(a?){2,}){0,2}[^a]*?", "a", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"a|b?a+(a?)*?|b{2,}b{1,3}?", "a", 0, 1, 1, 1, {0, 1, -1, -1}},
    {"b{1,3}a{1,3}(?:b{1,3}(b(a*){2,}[ab])a)", "abaaaa", 0, 0, 0, 2, {0}},
    {"b+|b*((a|)+)a+", "b", 0, 1, 1, 2, {0, 1, -1, -1, -1, -1}},
    {"(b+(aa)b)|\\b|(a*){0,2}b", "a", 0, 0, 1, 3, {0, 0, -1, -1, -1, -1, -1, -1}},
    {"a(a?){2,}|.*|b{,2}", "ab", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"([ab](abb)?\?b*|.*b?a{2,}?)*", "ab", 0, 1, 1, 2, {0, 2, 0, 2, -1, -1}},
    {"(a|)?\?", "a", 0, 1, 1, 1, {0, 0, -1, -1}},
    {"(?:(a*)){0,2}a", "aaabba", 0, 0, 1, 1, {0, 3, 2, 2}},
    {"(b?\\w+?){0,2}.{2,}?", "aaaaba", 0, 1, 1, 1, {0, 4, 1, 2}},
    {"(a()){2,}?b{1,3}?a|a{0,2}", "", 0, 1, 1, 2, {0, 0, -1, -1, -1, -1}},
    {"(?:(aa|b{1,3}|a){,2}(b*|b{,2})?\?){2,}(){,2}", "aaab", 0, 1, 1, 3, {0, 4, 3, 4, -1, -1, 4, 4}},
    {"(?:a*?(a*)b{,2}?)(?:[ab])a?", "bab", 0, 0, 1, 1, {0, 2, 0, 0}},
    {"b?\?((a|a{,2}?a{1,3}a{,2}?)b+?){2}a", "ba", 0, 0, 0, 2, {0}},
    {"(?:a{2,}(a{2,})+((a*)+.))", "bbaa", 0, 0, 0, 3, {0}},
    {"b{2}(\\b)*((ab*?).{0,2}?b|(a|))*", "aba", 0, 0, 0, 4, {0}},
    {"(){2}|a{2}?a", "aba", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"\\b[ab]|((b*)+){2,}?", "ababa", 0, 0, 1, 2, {0, 1, -1, -1, -1, -1}},
    {"a(a?)?", "aaa", 0, 0, 1, 1, {0, 2, 1, 2}},
    {"ba*?b+|(a|)?b+|(?:(a[ab]?|aa+)|b|bb)", "abaaa", 0, 0, 1, 2, {0, 2, 0, 1, -1, -1}},
    {"(b?b|(a?)?b|a{1,3}(?:b{,2}b{2,}?)+)a{0,2}", "", 0, 0, 0, 2, {0}},
    {"a{2,}(b{,2}a?\?(?:[^a]{,2}aa{2}|bab?)*?)", "bbbbaa", 0, 0, 0, 1, {0}},
    {"b(?:)|.{0,2}?(a?){1,3}(?:(){2,}){2,}?|\\w(?:a)?", "a", 0, 1, 1, 2, {0, 1, 1, 1, 1, 1}},
    {"(a+[^a]?\?|()(?:aa{1,3})){,2}(a*){0,2}", "bbaa", 0, 0, 1, 3, {0, 0, -1, -1, -1, -1, 0, 0}},
    {"aa{2}?|(a|)a[ab]{0,2}", "aaabab", 0, 0, 1, 1, {0, 3, -1, -1}},
    {"(b{2})|b", "a", 0, 0, 0, 1, {0}},
    {"a+bb|((?:ab{,2}))|aaa", "b", 0, 0, 0, 1, {0}},
    {"b(a|){2,}(b()*|b{0,2}?){1,3}|ab", "aabb", 0, 0, 0, 3, {0}},
    {"a{,2}(a*)+?", "a", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"\\w|.|(a?){,2}ba*", "aa", 0, 0, 1, 1, {0, 1, -1, -1}},
    {"((?:a{0,2}?a|(a*){1,3}?|[^a][ab])a{2,})", "aab", 0, 0, 1, 2, {0, 2, 0, 2, 0, 0}},
    {"()a|b{2,}a(?:)|aa", "aaaa", 0, 0, 1, 1, {0, 1, 0, 0}},
    {"(a|)*b{0,2}", "aa", 0, 1, 1, 1, {0, 2, 2, 2}},
    {"a?(?:b*?(a?b|b|b{2}b{1,3}()+?){,2})", "aaaa", 0, 0, 1, 2, {0, 1, -1, -1, -1, -1}},
    {"(a?){,2}", "baa", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"aa?|(b?b)?\\b|bb{2}?", "", 0, 0, 0, 1, {0}},
    {"b[ab]{0,2}|aaa+|(a|){0,2}", "aaba", 0, 0, 1, 1, {0, 2, 1, 2}},
    {"(a|){,2}(b+b(a|){2,}?)|b{0,2}?a\\b|a{0,2}", "aaba", 0, 0, 1, 3, {0, 2, -1, -1, -1, -1, -1, -1}},
    {"\\w*(a*){0,2}|.{2}((?:a{1,3}){2,}?(?:.)b{0,2})", "baaa", 0, 1, 1, 2, {0, 4, 4, 4, -1, -1}},
    {"ab*(a*)|(a|)+\\w{1,3}b{2}", "aabaa", 0, 0, 1, 2, {0, 2, 1, 2, -1, -1}},
    {"b{1,3}()a{2,}?", "abb", 0, 0, 0, 1, {0}},
    {"()+a", "aa", 0, 0, 1, 1, {0, 1, 0, 0}},
    {"a|a(?:aa{2,}(a(a*)a*?){0,2})?", "aaaaab", 0, 0, 1, 2, {0, 1, -1, -1, -1, -1}},
    {"ab|((a|)*?(.{1,3}?b{2}a)?)+?\\wb{,2}", "bbaaaa", 0, 0, 1, 3, {0, 2, 0, 0, -1, -1, -1, -1}},
    {"b{2,}?a{2,}(ab|b{2,})|a|b(?:b){2,}?a", "", 0, 0, 0, 1, {0}},
    {"()", "aaa", 0, 0, 1, 1, {0, 0, 0, 0}},
    {"(a|){2,}b{2,}?(?:(b{2}){0,2}b{0,2}|a?\?|a?b{1,3})", "baaa", 0, 0, 0, 2, {0}},
    {"(?:a)|b|(?:(b[ab]){2,}(b*?)(a|b*ba))", "aa", 0, 0, 1, 3, {0, 1, -1, -1, -1, -1, -1, -1}},
    {"a(?:)|a{2}?|(a?)+b{2}", "a", 0, 1, 1, 1, {0, 1, -1, -1}},
    {"b{2,}?|(a|){1,3}b", "aaaa", 0, 0, 0, 1, {0}},
    {"b+a*(?:(a?)(?:b)|a{2,}?b{2,})|ab|ba{2,}?(){2}", "baaba", 0, 0, 1, 2, {0, 4, 3, 3, -1, -1}},
    {"bb|b*()|[^a](a+?a{0,2}?|(?:b*a{,2}b{0,2})){2,}a", "aaabba", 0, 0, 1, 2, {0, 0, 0, 0, -1, -1}},
    {"(?:[ab]*(?:b{,2}|(a|)?\?ab?\?|b{,2}a){0,2}?)*", "", 0, 1, 1, 1, {0, 0, -1, -1}},
    {"a{2}a|((a|)|a{,2})bb{1,3}?", "aabbab", 0, 0, 1, 2, {0, 4, 0, 2, -1, -1}},
    {"a{1,3}()", "ab", 0, 0, 1, 1, {0, 1, 1, 1}},
    {"((a|){1,3}?(?:a*|b)){0,2}", "", 0, 1, 1, 2, {0, 0, 0, 0, 0, 0}},
    {"(a*){2}?", "aababb", 0, 0, 1, 1, {0, 2, 2, 2}},
    {"(a*){2}", "a", 0, 1, 1, 1, {0, 1, 1, 1}},
    {"\\b(a(?:b?b)a){2,}|(a*)", "aaa", 0, 1, 1, 2, {0, 3, -1, -1, 0, 3}},
    {"a(a{2,}?|a+()+?[ab]){2}|bb*b|()", "aaaa", 0, 0, 1, 3, {0, 0, -1, -1, -1, -1, 0, 0}},
    {"(a*)?b{2,}|(a|)|(b{1,3}([ab]{,2}b*?|aa)b)+", "aa", 0, 0, 1, 4, {0, 1, -1, -1, 0, 1, -1, -1, -1, -1}},
    {"(a*)b{0,2}", "", 0, 1, 1, 1, {0, 0, 0, 0}},
};

/* Runs every row of a table. */
static void check_table(const re_case *rows, size_t n, int line)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += check_case(&rows[i], line) != 0;
    test_note("%zu cases, %zu wrong", n, bad);
}
#define CHECK_TABLE(rows) check_table((rows), sizeof(rows) / sizeof(rows)[0], __LINE__)

/* PEFT's target_modules / exclude_modules given as one string. */
static void test_regex_peft_target_modules(void) { CHECK_TABLE(peft_target_modules); }

/* rank_pattern / alpha_pattern keys in PEFT's (.*\.)?(K)$ wrapper */
static void test_regex_peft_rank_pattern(void) { CHECK_TABLE(peft_rank_pattern); }

/* The layer index of layers_to_transform / layers_pattern */
static void test_regex_peft_layers(void) { CHECK_TABLE(peft_layers); }

/* Greedy and lazy quantifiers */
static void test_regex_greedy_lazy(void) { CHECK_TABLE(greedy_lazy); }

/* Leftmost alternative first */
static void test_regex_alternation(void) { CHECK_TABLE(alternation); }

/* Loops whose body can match empty (CPython's zero-width protection) */
static void test_regex_empty_loops(void) { CHECK_TABLE(empty_loops); }

/* Counted repetition and literal braces */
static void test_regex_counted(void) { CHECK_TABLE(counted); }

/* Character classes */
static void test_regex_classes(void) { CHECK_TABLE(classes); }

/* Escapes */
static void test_regex_escapes(void) { CHECK_TABLE(escapes); }

/* Anchors and word boundaries */
static void test_regex_anchors(void) { CHECK_TABLE(anchors); }

/* '.', negated classes and literals on UTF-8 */
static void test_regex_utf8(void) { CHECK_TABLE(utf8); }

/* A start past 0 (pattern.match(s, pos)) */
static void test_regex_start(void) { CHECK_TABLE(start_cases); }

/* Random patterns from the differential fuzzing */
static void test_regex_random(void) { CHECK_TABLE(random_cases); }

/* ============================================================================================ */
/* Compile errors                                                                                */
/* ============================================================================================ */

/* A refused pattern, the offset its message names, and a part of the message. The first group
 * is malformed for Python too; the rest Python accepts and this subset does not. */
typedef struct bad_pattern {
    const char *pat;
    size_t at;
    const char *needle;
} bad_pattern;

static const bad_pattern bad_patterns[] = {
    {"*a", 0, "nothing to repeat"},
    {"a|*", 2, "nothing to repeat"},
    {"(*)", 1, "nothing to repeat"},
    {"^*", 1, "nothing to repeat"},
    {"$+", 1, "nothing to repeat"},
    {"\\b+", 2, "nothing to repeat"},
    {"\\A?", 2, "nothing to repeat"},
    {"{1}", 0, "nothing to repeat"},
    {"a|{,2}", 2, "nothing to repeat"},
    {"a**", 2, "multiple repeat"},
    {"a*?\?", 3, "multiple repeat"},
    {"a{2}{3}", 4, "multiple repeat"},
    {"a{2}*", 4, "multiple repeat"},
    {"a?{1}", 2, "multiple repeat"},
    {"(a", 0, "missing ), unterminated subpattern"},
    {"((a)", 0, "missing )"},
    {"(?:a", 0, "missing )"},
    {"(?P<n>a", 0, "missing )"},
    {"a)", 1, "unbalanced parenthesis"},
    {"())", 2, "unbalanced parenthesis"},
    {")", 0, "unbalanced parenthesis"},
    {"[a", 0, "unterminated character set"},
    {"[]", 0, "unterminated character set"},
    {"[^]", 0, "unterminated character set"},
    {"[a-", 0, "unterminated character set"},
    {"x[\\]", 1, "unterminated character set"},
    {"[z-a]", 1, "bad character range"},
    {"[\\d-z]", 1, "bad character range"},
    {"[a-\\d]", 1, "bad character range"},
    {"[\\w-\\d]", 1, "bad character range"},
    {"a\\", 1, "bad escape (end of pattern)"},
    {"[a\\", 2, "bad escape (end of pattern)"},
    {"\\q", 0, "bad escape \\q"},
    {"\\e", 0, "bad escape"},
    {"[\\A]", 1, "bad escape \\A"},
    {"[\\Z]", 1, "bad escape"},
    {"[\\B]", 1, "bad escape"},
    {"[\\8]", 1, "bad escape"},
    {"\\x4", 0, "incomplete escape \\x"},
    {"\\xg0", 0, "incomplete escape"},
    {"\\u12", 0, "incomplete escape \\u"},
    {"[\\x]", 1, "incomplete escape"},
    {"\\U00110000", 0, "above U+10FFFF"},
    {"\\400", 0, "octal escape value"},
    {"[\\777]", 1, "octal escape value"},
    {"a{2,1}", 1, "min repeat greater than max repeat"},
    {"(?P<>a)", 0, "missing group name"},
    {"(?P<1a>x)", 4, "bad character in group name"},
    {"(?P<a-b>x)", 5, "bad character in group name"},
    {"(?P<a>x)(?P<a>y)", 12, "redefinition of group name"},
    {"(?P<a", 0, "missing >"},
    {"(?", 0, "unexpected end of pattern"},
    {"(?Q)", 0, "unknown extension"},
    {"(?P", 0, "unknown extension"},
    {"(?Px)", 0, "unknown extension"},
    {"(?<a>x)", 0, "unknown extension"},
    {"\\1", 0, "backreferences are not supported"},
    {"(a)\\1", 3, "backreferences are not supported"}, /* Python accepts it */
    {"(a)\\10", 3, "backreferences"},
    {"(?P<n>a)(?P=n)", 8, "named backreferences are not supported"}, /* Python accepts it */
    {"a{1001}", 1, "repetition counts above 1000"}, /* Python accepts it */
    {"a{0,1001}", 1, "repetition counts above 1000"}, /* Python accepts it */
    {"a{99999999999}", 1, "repetition counts above 1000"},
    {"a{2000,}", 1, "repetition counts above 1000"}, /* Python accepts it */
    {"a*+", 2, "possessive quantifiers"}, /* Python accepts it */
    {"a++", 2, "possessive"}, /* Python accepts it */
    {"a?+", 2, "possessive"}, /* Python accepts it */
    {"a{2}+", 4, "possessive"}, /* Python accepts it */
    {"a{1,2}+", 6, "possessive"}, /* Python accepts it */
    {"(?=a)", 0, "lookahead assertions"}, /* Python accepts it */
    {"(?!a)", 0, "lookahead"}, /* Python accepts it */
    {"(?<=a)b", 0, "lookbehind assertions"}, /* Python accepts it */
    {"(?<!a)b", 0, "lookbehind"}, /* Python accepts it */
    {"(?>a)", 0, "atomic groups"}, /* Python accepts it */
    {"(?#c)a", 0, "comments"}, /* Python accepts it */
    {"(a)(?(1)a|b)", 3, "conditional groups"}, /* Python accepts it */
    {"(?i)a", 0, "inline flags"}, /* Python accepts it */
    {"(?i:a)", 0, "inline flags"}, /* Python accepts it */
    {"(?x)a", 0, "inline flags"}, /* Python accepts it */
    {"(?-i:a)", 0, "inline flags"}, /* Python accepts it */
    {"\\N{EM DASH}", 0, "named characters"}, /* Python accepts it */
    {"[\303\251]", 1, "non-ASCII"}, /* Python accepts it */
    {"[\\xe9]", 1, "non-ASCII"}, /* Python accepts it */
    {"[a-\\u00e9]", 3, "non-ASCII"}, /* Python accepts it */
    {"(?:a{1000}){1000}", 4, "more than 20000 instructions"}, /* Python accepts it */
    {"(?:(?:.{1000}){10}){10}", 7, "more than 20000 instructions"}, /* Python accepts it */
};

/* Whether msg is one line of printable ASCII. */
static int one_line(const char *msg)
{
    for (const char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F) return 0;
    return 1;
}

/* Checks that pattern is refused with IT_EFORMAT, *out cleared, and a one-line message that
 * starts with "at offset <at>: " and holds needle; then again with no error record. */
static void check_refused(const char *pattern, size_t at, const char *needle, int line)
{
    it__re *re = (it__re *)&re; /* not NULL, so that we see it cleared */
    it_err err = {0, ""};
    char prefix[64];
    const char *p = show(pattern, strlen(pattern));
    int rc = it__re_compile(&re, pattern, &err);
    snprintf(prefix, sizeof prefix, "at offset %zu: ", at);
    if (rc != IT_EFORMAT || err.code != IT_EFORMAT) test_fail(__FILE__, line, "<%s>: rc %d, want IT_EFORMAT", p, rc);
    if (rc == IT_OK) it__re_free(re);
    else if (re) test_fail(__FILE__, line, "<%s>: *out not cleared", p);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
        test_fail(__FILE__, line, "<%s>: message \"%s\" does not start with \"%s\"", p, err.msg, prefix);
    if (!strstr(err.msg, needle)) test_fail(__FILE__, line, "<%s>: message \"%s\" lacks \"%s\"", p, err.msg, needle);
    if (!one_line(err.msg)) test_fail(__FILE__, line, "<%s>: message is not one printable line", p);
    re = NULL;
    rc = it__re_compile(&re, pattern, NULL);
    if (rc != IT_EFORMAT || re) test_fail(__FILE__, line, "<%s>: without an error record rc %d", p, rc);
    if (rc == IT_OK) it__re_free(re);
}

/* Every class of malformed or unsupported pattern, refused at the right offset. */
static void test_regex_errors(void)
{
    for (size_t i = 0; i < sizeof bad_patterns / sizeof bad_patterns[0]; i++)
        check_refused(bad_patterns[i].pat, bad_patterns[i].at, bad_patterns[i].needle, __LINE__);
}

/* Parentheses nest 100 deep, not 101; the compile-time limits hold at their edge. */
static void test_regex_limits(void)
{
    char pat[256];
    for (int depth = 100; depth <= 101; depth++) {
        memset(pat, '(', (size_t)depth);
        pat[depth] = 'a';
        memset(pat + depth + 1, ')', (size_t)depth);
        pat[2 * depth + 1] = 0;
        if (depth == 101) {
            check_refused(pat, 100, "nested deeper than 100", __LINE__);
            continue;
        }
        it__re *re = COMPILE(pat);
        size_t cap[4];
        CHECK(re && it__re_groups(re) == 100);
        CHECK(re && it__re_match(re, "ab", 2, 0, cap, 4) == 1 && cap[1] == 1 && cap[2] == 0 && cap[3] == 1);
        it__re_free(re);
    }
    it__re *re = COMPILE("a{1000}b{0,1000}");
    CHECK(re && it__re_fullmatch(re, "aaa", 3, 0) == 0);
    it__re_free(re);
    CHECK(it__re_compile(&re, NULL, NULL) == IT_EINVAL && re == NULL);
    it__re_free(NULL);
    CHECK(it__re_groups(NULL) == 0);
}

/* ============================================================================================ */
/* The matching contract                                                                         */
/* ============================================================================================ */

/* Subjects are lengths, not strings: NUL bytes match '.', classes and \0 / \x00 escapes. */
static void test_regex_nul_bytes(void)
{
    static const struct {
        const char *pat;
        int full;
    } rows[] = {{"a.b", 1},   {"a\\0b", 1}, {"a\\x00b", 1}, {"a[^a]b", 1},
                {"a\\Wb", 1}, {"a\\sb", 0}, {"ab", 0},       {"a", 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        it__re *re = COMPILE(rows[i].pat);
        size_t cap[2];
        if (!re) continue;
        CHECKF(it__re_fullmatch(re, "a\0b", 3, 0) == rows[i].full, "<%s>", rows[i].pat);
        int m = it__re_match(re, "a\0b", 3, 0, cap, 2);
        CHECKF(m == (rows[i].full || i == 7), "<%s>", rows[i].pat);
        CHECKF(!m || cap[1] == (rows[i].full ? 3u : 1u), "<%s>: end %zu", rows[i].pat, cap[1]);
        it__re_free(re);
    }
    it__re *re = COMPILE("[^\\n]*");
    size_t cap[2];
    CHECK(re && it__re_match(re, "x\0y\nz", 5, 0, cap, 2) == 1 && cap[0] == 0 && cap[1] == 3);
    it__re_free(re);
}

/* cap may be NULL or short (only whole pairs are written); unused entries are SIZE_MAX; a start
 * past the end, or a NULL subject of length 0, is handled. */
static void test_regex_captures(void)
{
    it__re *re = COMPILE("(a)(b)?(?P<c>c)");
    size_t cap[9];
    if (!re) return;
    CHECK(it__re_groups(re) == 3);
    CHECK(it__re_match(re, "ac", 2, 0, NULL, 0) == 1);
    CHECK(it__re_match(re, "ac", 2, 0, NULL, 4) == 1);
    for (size_t k = 0; k < 9; k++) cap[k] = 7;
    CHECK(it__re_match(re, "ac", 2, 0, cap, 3) == 1);
    CHECK(cap[0] == 0 && cap[1] == 2 && cap[2] == SIZE_MAX && cap[3] == 7);
    CHECK(it__re_match(re, "acx", 3, 0, cap, 9) == 1);
    CHECK(cap[2] == 0 && cap[3] == 1 && cap[4] == SIZE_MAX && cap[5] == SIZE_MAX && cap[6] == 1 && cap[7] == 2);
    CHECK(cap[8] == SIZE_MAX);
    CHECK(it__re_match(re, "xac", 3, 0, cap, 9) == 0);
    for (size_t k = 0; k < 9; k++) CHECKF(cap[k] == SIZE_MAX, "cap[%zu] after no match", k);
    CHECK(it__re_match(re, "ac", 2, 3, cap, 2) == 0 && cap[0] == SIZE_MAX);
    CHECK(it__re_fullmatch(re, "ac", 2, 3) == 0);
    CHECK(it__re_fullmatch(re, "xac", 3, 1) == 1);
    it__re_free(re);
    re = COMPILE("a*");
    CHECK(re && it__re_match(re, NULL, 0, 0, cap, 2) == 1 && cap[0] == 0 && cap[1] == 0);
    CHECK(re && it__re_fullmatch(re, NULL, 0, 0) == 1);
    CHECK(re && it__re_fullmatch(re, "aab", 3, 3) == 1);
    it__re_free(re);
}

/* Patterns whose scratch does not fit on the stack run from the heap with the same results. */
static void test_regex_large_program(void)
{
    char subj[301];
    for (int i = 0; i < 300; i++) subj[i] = "ab"[i % 3 == 0];
    subj[300] = 0;
    it__re *re = COMPILE("(a|b){300}");
    size_t cap[4];
    CHECK(re && it__re_fullmatch(re, subj, 300, 0) == 1);
    CHECK(re && it__re_match(re, subj, 300, 0, cap, 4) == 1 && cap[1] == 300 && cap[2] == 299 && cap[3] == 300);
    CHECK(re && it__re_fullmatch(re, subj, 299, 0) == 0);
    it__re_free(re);
    re = COMPILE("(?:(a*)|b){2,200}c");
    CHECK(re && it__re_match(re, "aabc", 4, 0, cap, 4) == 1 && cap[1] == 4 && cap[2] == 3 && cap[3] == 3);
    it__re_free(re);
}

/* Patterns that take a backtracking matcher exponential time run in one pass here: (a*)*b
 * against 10000 'a's returns 0 (no timing assertion: a hang fails the suite). */
static void test_regex_linear_time(void)
{
    enum { N = 10000 };
    char *s = malloc(N + 2);
    size_t cap[4];
    if (!s) return;
    memset(s, 'a', N);
    s[N] = 'b', s[N + 1] = 0;
    static const char *const no_b[] = {"(a*)*b", "(a|a)*b", "((a*)*)*b", "(?:(a|)+)*b",
                                       "(.*)*c", "(a+)+b",  "(?:a?){50}a{50}b"};
    for (size_t i = 0; i < sizeof no_b / sizeof no_b[0]; i++) {
        it__re *re = COMPILE(no_b[i]);
        CHECKF(re && it__re_match(re, s, N, 0, cap, 4) == 0, "%s", no_b[i]);
        CHECKF(re && it__re_fullmatch(re, s, N + 1, 0) == (i < 4 || i == 5), "%s with the b", no_b[i]);
        it__re_free(re);
    }
    it__re *re = COMPILE("(a|a)*");
    CHECK(re && it__re_match(re, s, N, 0, cap, 4) == 1 && cap[1] == N && cap[2] == N - 1 && cap[3] == N);
    it__re_free(re);
    free(s);
}

/* The documented deviation: \d \w \s and \b know only ASCII (Python's str patterns know
 * Unicode: there \w matches "é" and \W does not). */
static void test_regex_ascii_classes(void)
{
    it__re *w = COMPILE("\\w"), *nw = COMPILE("\\W+"), *b = COMPILE("\\b");
    size_t cap[2];
    CHECK(w && it__re_match(w, "\303\251", 2, 0, NULL, 0) == 0);
    CHECK(nw && it__re_match(nw, "\303\251\342\202\254a", 6, 0, cap, 2) == 1 && cap[1] == 5);
    CHECK(b && it__re_match(b, "\303\251", 2, 0, NULL, 0) == 0);
    it__re_free(w), it__re_free(nw), it__re_free(b);
}

void suite_regex(void)
{
    RUN(test_regex_peft_target_modules);
    RUN(test_regex_peft_rank_pattern);
    RUN(test_regex_peft_layers);
    RUN(test_regex_greedy_lazy);
    RUN(test_regex_alternation);
    RUN(test_regex_empty_loops);
    RUN(test_regex_counted);
    RUN(test_regex_classes);
    RUN(test_regex_escapes);
    RUN(test_regex_anchors);
    RUN(test_regex_utf8);
    RUN(test_regex_start);
    RUN(test_regex_random);
    RUN(test_regex_errors);
    RUN(test_regex_limits);
    RUN(test_regex_nul_bytes);
    RUN(test_regex_captures);
    RUN(test_regex_large_program);
    RUN(test_regex_linear_time);
    RUN(test_regex_ascii_classes);
}
