#!/usr/bin/python3
"""test/gen_unicode.py -- generates the Unicode tables of unicode.c (unicode_tables.h) and the expected values of
test/test_unicode.c from Python's unicodedata, and checks unicode.c against it exhaustively.

    /usr/bin/python3 test/gen_unicode.py          rewrite the generated blocks (between the
                                                  "BEGIN GENERATED" / "END GENERATED" comments)
    /usr/bin/python3 test/gen_unicode.py --check  build a throwaway C driver in a temporary folder
                                                  (cc, unicode.c) and compare, for every code
                                                  point, our properties, lowercase and the four
                                                  normalization forms of the single character
                                                  with Python's; then random strings of combining
                                                  sequences, Hangul and compatibility characters
                                                  ($CC and $CFLAGS pick the compiler and flags)

The tables (see unicode.c for how they are read):
  - letter (Lu Ll Lt Lm Lo), number (Nd Nl No), punctuation (Pc Pd Ps Pe Pi Pf Po), mark (Mn Mc
    Me), control (Cc Cf only: not Cs Co Cn) as sorted [lo, hi] ranges; White_Space (the Unicode
    property, which Python's str.isspace does not follow: it also takes U+001C-001F) as a fixed
    list below;
  - lowercase: str.lower() of each single code point, as runs {lo, hi, stride, delta} for the
    one-code-point results and a short list for the longer ones (U+0130 -> "i\\u0307");
  - decompositions: the full recursive canonical and compatibility decomposition of each code
    point that has one (Hangul syllables left to code): runs {lo, hi, delta} of three or more
    consecutive code points whose compatibility decomposition is the code point + delta (and
    which have no canonical one), and the others in one uint32 array: per code point a
    header word (cp | canonical length << 21 | compatibility length << 24) followed by the
    canonical decomposition and then the compatibility one when it differs (length 0: the same);
    a uint16 array of offsets sorted by code point indexes it;
  - canonical combining classes as {lo, hi, ccc} ranges of the non-zero classes;
  - composition pairs {a, b, c}, sorted by (a, b): c's canonical decomposition is exactly [a, b]
    and c is not excluded from composition (NFC(c) == c).
"""
import os
import random
import re
import subprocess
import sys
import tempfile
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNICODE_C = os.path.join(ROOT, "unicode.c")
UNICODE_TABLES_H = os.path.join(ROOT, "unicode_tables.h")
TEST_C = os.path.join(ROOT, "test", "test_unicode.c")
MAXCP = 0x110000
SBASE, LBASE, VBASE, TBASE = 0xAC00, 0x1100, 0x1161, 0x11A7
LCOUNT, VCOUNT, TCOUNT = 19, 21, 28
SCOUNT = LCOUNT * VCOUNT * TCOUNT

# The White_Space property (PropList.txt); unicodedata does not expose it.
WHITE_SPACE = [(0x0009, 0x000D), (0x0020, 0x0020), (0x0085, 0x0085), (0x00A0, 0x00A0),
               (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F),
               (0x205F, 0x205F), (0x3000, 0x3000)]


def codepoints():
    for cp in range(MAXCP):
        if not 0xD800 <= cp <= 0xDFFF:
            yield cp


def cat(cp):
    return unicodedata.category(chr(cp))


def ranges_of(pred):
    out, lo = [], None
    for cp in range(MAXCP + 1):
        ok = cp < MAXCP and pred(cp)
        if ok and lo is None:
            lo = cp
        elif not ok and lo is not None:
            out.append((lo, cp - 1))
            lo = None
    return out


def in_ranges(rs, cp):
    return any(lo <= cp <= hi for lo, hi in rs)


def decomp(cp, compat):
    """Full recursive decomposition of cp (Hangul algorithmically), as a list of code points."""
    if SBASE <= cp < SBASE + SCOUNT:
        s = cp - SBASE
        out = [LBASE + s // (VCOUNT * TCOUNT), VBASE + (s % (VCOUNT * TCOUNT)) // TCOUNT]
        if s % TCOUNT:
            out.append(TBASE + s % TCOUNT)
        return out
    d = unicodedata.decomposition(chr(cp)).split()
    if not d:
        return [cp]
    if d[0].startswith("<"):
        if not compat:
            return [cp]
        d = d[1:]
    out = []
    for p in d:
        out += decomp(int(p, 16), compat)
    return out


def lower_of(cp):
    return [ord(x) for x in chr(cp).lower()]


def flags_of(cp):
    c = cat(cp)
    f = 0
    if c in ("Lu", "Ll", "Lt", "Lm", "Lo"):
        f |= 1
    if c in ("Nd", "Nl", "No"):
        f |= 2
    if in_ranges(WHITE_SPACE, cp):
        f |= 4
    if c in ("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"):
        f |= 8
    if c in ("Mn", "Mc", "Me"):
        f |= 16
    if c in ("Cc", "Cf"):
        f |= 32
    return f


# ------------------------------------------------------------------------------------------------
# C output helpers

def wrap(items, indent="    ", width=100):
    lines, cur = [], indent
    for it in items:
        piece = it + ","
        if len(cur) + len(piece) + 1 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = indent
        cur += piece + " "
    if cur.strip():
        lines.append(cur.rstrip())
    return "\n".join(lines)


def hx(v):
    return "0x%X" % v


def c_array(decl, items):
    return "%s = {\n%s\n};\n" % (decl, wrap(items))


def range_table(name, rs, what):
    return "/* %s: %d ranges */\n" % (what, len(rs)) + c_array(
        "static const uint32_t %s[][2]" % name, ["{%s, %s}" % (hx(a), hx(b)) for a, b in rs])


def c_str(bs, width=90):
    """bs as C string literals (octal escapes, which cannot run into what follows), split into
    adjacent literals on lines of at most width characters."""
    pieces, cur = [], ""
    for b in bs:
        t = chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C, 0x3F) else "\\%03o" % b
        if len(cur) + len(t) > width - 2:
            pieces.append(cur)
            cur = ""
        cur += t
    pieces.append(cur)
    return "\n      ".join('"%s"' % x for x in pieces)


def replace_block(path, text, tag):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    begin = re.search(r"/\* =+ BEGIN GENERATED %s[^\n]*\n" % tag, src)
    end = re.search(r"/\* =+ END GENERATED %s[^\n]*\n" % tag, src)
    if not begin or not end or end.start() < begin.end():
        sys.exit("%s: no BEGIN/END GENERATED %s markers" % (path, tag))
    new = src[:begin.end()] + text + src[end.start():]
    if new != src:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        print("wrote", os.path.relpath(path, ROOT))
    else:
        print("unchanged", os.path.relpath(path, ROOT))


# ------------------------------------------------------------------------------------------------
# unicode.c tables

def gen_tables():
    out = ["/* Generated by test/gen_unicode.py from Python %s's unicodedata, Unicode %s. */\n"
           % (sys.version.split()[0], unicodedata.unidata_version)]
    out.append("#define UNI_VERSION \"%s\"\n\n" % unicodedata.unidata_version)
    cats = {}
    for cp in range(MAXCP):
        cats.setdefault(cat(cp), None)
    classes = [
        ("uni_letter", ("Lu", "Ll", "Lt", "Lm", "Lo"), "letters (Lu Ll Lt Lm Lo)"),
        ("uni_number", ("Nd", "Nl", "No"), "numbers (Nd Nl No)"),
        ("uni_punct", ("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"),
         "punctuation (Pc Pd Ps Pe Pi Pf Po)"),
        ("uni_mark", ("Mn", "Mc", "Me"), "marks (Mn Mc Me)"),
        ("uni_control", ("Cc", "Cf"), "control and format characters (Cc Cf)"),
    ]
    for name, cs, what in classes:
        out.append(range_table(name, ranges_of(lambda cp: cat(cp) in cs), what))
    out.append(range_table("uni_space", WHITE_SPACE, "White_Space"))

    # Lowercase: runs of one-code-point mappings with a common delta and stride.
    single, multi = [], []
    for cp in codepoints():
        lo = lower_of(cp)
        if lo == [cp]:
            continue
        if len(lo) == 1:
            single.append((cp, lo[0] - cp))
        else:
            assert len(lo) <= 3
            multi.append((cp, lo))
    runs = []
    i = 0
    while i < len(single):
        cp, d = single[i]
        stride, j = 1, i + 1
        if j < len(single) and single[j][1] == d and single[j][0] - cp in (1, 2):
            stride = single[j][0] - cp
            while (j < len(single) and single[j][1] == d
                   and single[j][0] == single[j - 1][0] + stride):
                j += 1
        runs.append((cp, single[j - 1][0], stride, d))
        i = j
    out.append("/* lowercase: %d one-code-point mappings in %d runs {lo, hi, stride, delta} */\n"
               % (len(single), len(runs)))
    out.append(c_array("static const uni_case_run uni_lower_runs[]",
                       ["{%s, %s, %d, %d}" % (hx(a), hx(b), s, d) for a, b, s, d in runs]))
    out.append("/* lowercase mappings to more than one code point */\n")
    out.append(c_array("static const uni_case_multi uni_lower_multi[]",
                       ["{%s, %d, {%s}}" % (hx(cp), len(lo),
                                            ", ".join(hx(x) for x in lo + [0] * (3 - len(lo))))
                        for cp, lo in multi]))

    # Decompositions: runs of compatibility-only one-code-point decompositions with a common
    # delta (full-width forms, mathematical alphanumerics, ...), then the rest one by one.
    single = []
    for cp in codepoints():
        c, k = decomp(cp, False), decomp(cp, True)
        if c == [cp] and len(k) == 1 and k != [cp]:
            if single and single[-1][1] == cp - 1 and single[-1][2] == k[0] - cp:
                single[-1][1] = cp
            else:
                single.append([cp, cp, k[0] - cp])
    kruns = [r for r in single if r[1] - r[0] >= 2]
    in_kruns = set(cp for a, b, _ in kruns for cp in range(a, b + 1))
    out.append("/* compatibility decompositions to one code point, in %d runs {lo, hi, delta} of %d\n"
               " * code points */\n" % (len(kruns), len(in_kruns)))
    out.append(c_array("static const uni_dec_run uni_dec_runs[]",
                       ["{%s, %s, %d}" % (hx(a), hx(b), d) for a, b, d in kruns]))
    data, offs = [], []
    ncanon = ncompat = 0
    maxc = maxk = 0
    for cp in codepoints():
        if SBASE <= cp < SBASE + SCOUNT or cp in in_kruns:
            continue
        c, k = decomp(cp, False), decomp(cp, True)
        if c == [cp] and k == [cp]:
            continue
        if c == [cp]:
            c = []
        else:
            ncanon += 1
        ncompat += 1
        if k == c:
            k = []
        assert len(c) <= 7 and len(k) <= 31
        maxc, maxk = max(maxc, len(c)), max(maxk, len(k))
        offs.append(len(data))
        data.append(cp | len(c) << 21 | len(k) << 24)
        data += c + k
    assert len(data) < 65536
    out.append("/* the other decompositions: %d code points (%d canonical), longest %d canonical and %d\n"
               " * compatibility; header cp | canonical length << 21 | compatibility length << 24, then\n"
               " * the canonical and the compatibility decomposition (length 0: the canonical one) */\n"
               % (len(offs), ncanon, maxc, maxk))
    out.append(c_array("static const uint32_t uni_dec_data[%d]" % len(data), [hx(x) for x in data]))
    out.append(c_array("static const uint16_t uni_dec_off[%d]" % len(offs), [str(x) for x in offs]))

    # Canonical combining classes.
    cccr = []
    for cp in range(MAXCP):
        c = unicodedata.combining(chr(cp))
        if not c:
            continue
        if cccr and cccr[-1][1] == cp - 1 and cccr[-1][2] == c:
            cccr[-1][1] = cp
        else:
            cccr.append([cp, cp, c])
    out.append("/* canonical combining classes other than 0: %d ranges {lo, hi, ccc} */\n" % len(cccr))
    out.append(c_array("static const uni_ccc_range uni_ccc[]",
                       ["{%s, %s, %d}" % (hx(a), hx(b), c) for a, b, c in cccr]))

    # Composition pairs.
    pairs = []
    for cp in codepoints():
        d = unicodedata.decomposition(chr(cp)).split()
        if len(d) != 2 or d[0].startswith("<"):
            continue
        if unicodedata.normalize("NFC", chr(cp)) != chr(cp):
            continue
        a, b = int(d[0], 16), int(d[1], 16)
        assert unicodedata.combining(chr(a)) == 0 and unicodedata.combining(chr(cp)) == 0
        pairs.append((a, b, cp))
    pairs.sort()
    out.append("/* canonical composition pairs {a, b, composite}: %d, sorted by (a, b) */\n" % len(pairs))
    out.append(c_array("static const uni_pair uni_comp[]",
                       ["{%s, %s, %s}" % (hx(a), hx(b), hx(c)) for a, b, c in pairs]))
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# test/test_unicode.c expectations

NORM_CASES = [
    "",
    "hello, world",
    "\u00c5",                      # A with ring above (precomposed)
    "A\u030a",                     # A + combining ring
    "\u212b",                      # ANGSTROM SIGN (singleton decomposition)
    "e\u0301",
    "\u00e9",
    "\ufb01ance\u0301",            # fi ligature
    "\uff11\uff12\uff13\uff41",    # full-width digits and letter
    "\u1e9b\u0323",                # long s with dot above + dot below (UAX #15's example)
    "\u1e0b\u0323",
    "q\u0307\u0323",
    "a\u0301\u0323\u0300\u0316b",  # marks out of canonical order
    "\u0041\u0327\u0301\u0327",
    "a\u0305\u0301",              # acute blocked by a mark of the same class
    "a\u0323\u0305\u0302",        # dot below composes, circumflex blocked by the overline
    "\ud55c\uad6d\uc5b4",          # Hangul syllables
    "\u1100\u1161\u11a8",          # conjoining jamo (LVT)
    "\u1100\u1161",
    "\uac00\u11a8",                # LV + T
    "\u1100\u0301\u1161",          # blocked jamo
    "Ti\u1ebfng Vi\u1ec7t",        # Vietnamese, precomposed
    "Tie\u0302\u0301ng Vie\u0323\u0302t",
    "\u0915\u093c\u0937\u093f",    # Devanagari with nukta
    "\u0958",                      # composition exclusion (QA)
    "\u0928\u093c",                # NNNA composes
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",   # emoji ZWJ family
    "\U0001f44d\U0001f3fd",
    "\u2460\u00bd\u2075\u00b2",    # circled one, one half, superscripts
    "\ufdfa",                      # the longest compatibility decomposition
    "\u3300\u321c",                # squared katakana, parenthesized Hangul
    "\u00a0\u2002\u3000x",         # compatibility spaces
    "\u0344\u0f73\u0f75",          # non-starter decompositions
    "\u1f80\u1fb3\u0391\u0313\u0345",  # Greek with ypogegrammeni
    "\u0b47\u0b3e\u0b47\u0b57",    # Oriya two-starter compositions
    "\u0301abc",                   # leading combining mark
    "\u2126\u212a",                # OHM, KELVIN singletons
    "\U0001d400\U0001d7ce",        # mathematical alphanumerics
    "\u0f71\u0f72\u0f74",
    "\u05b8\u05b9\u05b1\u0591\u05c3\u05b0\u05ac\u059f",  # Hebrew cantillation
    "\u0063\u0327\u0306",
    "\u00e7\u0306",
    "\U000110ab\U000110ba\U000110a5\U000110ba",  # Kaithi compositions (non-BMP)
    "\u0626\u0654",                # Arabic
    "\uff8a\uff9f\uff76\uff9e",    # half-width katakana with (semi-)voiced marks
    "\u304b\u3099",
]

SAMPLE_CPS = sorted(set(
    list(range(0x00, 0x180))
    + [0x180, 0x1C4, 0x1C5, 0x1C6, 0x1F0, 0x2B0, 0x2C6, 0x300, 0x301, 0x345, 0x370, 0x386, 0x391,
       0x3A3, 0x3C2, 0x3D2, 0x3F4, 0x400, 0x410, 0x42F, 0x4C0, 0x531, 0x591, 0x5D0, 0x600, 0x61C,
       0x660, 0x669, 0x6DD, 0x903, 0x915, 0x93C, 0x966, 0x10A0, 0x10C7, 0x1100, 0x13A0, 0x13F8,
       0x1680, 0x180E, 0x1D2C, 0x1E00, 0x1E9E, 0x1F08, 0x1F88, 0x1FBC, 0x2000, 0x200A, 0x200B,
       0x200D, 0x2010, 0x2028, 0x2029, 0x202F, 0x205F, 0x2060, 0x2070, 0x20AC, 0x20DD, 0x2126,
       0x212A, 0x212B, 0x2160, 0x2170, 0x2183, 0x2460, 0x24B6, 0x24D0, 0x2C00, 0x2C30, 0x2C62,
       0x3000, 0x3001, 0x3007, 0x3041, 0x3099, 0x30A0, 0x3131, 0x3400, 0x4E00, 0x9FFF, 0xA640,
       0xA7AE, 0xAB70, 0xAC00, 0xD7A3, 0xD7B0, 0xE000, 0xF8FF, 0xF900, 0xFB01, 0xFDFA, 0xFE0F,
       0xFEFF, 0xFF10, 0xFF21, 0xFF41, 0xFF61, 0xFFFC, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10400,
       0x10428, 0x104B0, 0x10570, 0x10C80, 0x118A0, 0x16E40, 0x1D400, 0x1D7CE, 0x1E900, 0x1E922,
       0x1F1E6, 0x1F3FB, 0x1F468, 0x1F600, 0x20000, 0x2A6DF, 0x2FA1D, 0x30000, 0x31350, 0xE0001,
       0xE0020, 0xE0100, 0xF0000, 0x10FFFD, 0x10FFFF]))


def gen_test_data():
    out = ["/* Generated by test/gen_unicode.py from Python %s's unicodedata, Unicode %s. */\n"
           % (sys.version.split()[0], unicodedata.unidata_version)]
    items = []
    for cp in SAMPLE_CPS:
        lo = lower_of(cp)
        items.append("{%s, %d, %d, {%s}}" % (hx(cp), flags_of(cp), len(lo),
                                             ", ".join(hx(x) for x in lo + [0] * (3 - len(lo)))))
    out.append("/* %d code points: flags (1 letter, 2 number, 4 space, 8 punct, 16 mark, 32 control)\n"
               " * and str.lower() */\n" % len(SAMPLE_CPS))
    out.append(c_array("static const prop_case prop_cases[]", items))
    out.append("/* {input, NFC, NFD, NFKC, NFKD} as unicodedata.normalize gives them */\n")
    out.append("static const norm_case norm_cases[] = {\n")
    for s in NORM_CASES:
        fs = [s] + [unicodedata.normalize(f, s) for f in ("NFC", "NFD", "NFKC", "NFKD")]
        strs = [c_str(x.encode("utf-8")) for x in fs]
        one = "    {%s},\n" % ", ".join(strs)
        out.append(one if len(one) <= 101 and "\n" not in one[:-1] else "    {%s},\n" % ",\n     ".join(strs))
    out.append("};\n")
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# Exhaustive check against a throwaway driver

DRIVER = r"""
#include "unicode.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static const char *forms[4] = {"NFC", "NFD", "NFKC", "NFKD"};
static void norm(const char *s, size_t n)
{
    for (int f = 0; f < 4; f++) {
        char *o = NULL;
        size_t on = 0;
        int rc = it__uni_normalize(forms[f], s, n, &o, &on);
        if (rc) { printf(" ERR%d", rc); continue; }
        if (o[on] != 0) printf(" BADNUL");
        putchar(' ');
        for (size_t i = 0; i < on;) {
            uint32_t c;
            size_t k = it__utf8_get(o + i, on - i, &c);
            if (!k) { printf("BAD"); break; }
            printf("%s%X", i ? "." : "", (unsigned)c);
            i += k;
        }
        free(o);
    }
    putchar('\n');
}
int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "all")) {
        for (uint32_t cp = 0; cp < 0x110000; cp++) {
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            uint32_t lo[3];
            size_t n = it__uni_lower(cp, lo);
            int f = (it__uni_is_letter(cp) ? 1 : 0) | (it__uni_is_number(cp) ? 2 : 0) |
                    (it__uni_is_space(cp) ? 4 : 0) | (it__uni_is_punct(cp) ? 8 : 0) |
                    (it__uni_is_mark(cp) ? 16 : 0) | (it__uni_is_control(cp) ? 32 : 0);
            printf("%X %d ", (unsigned)cp, f);
            for (size_t i = 0; i < n; i++) printf("%s%X", i ? "." : "", (unsigned)lo[i]);
            char buf[4];
            size_t k = it__utf8_put(cp, buf);
            uint32_t back = 0;
            if (it__utf8_get(buf, k, &back) != k || back != cp) printf(" UTF8");
            norm(buf, k);
        }
        return 0;
    }
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        norm(line, n);
    }
    return 0;
}
"""


def py_norm(s):
    return "".join(" " + ".".join("%X" % ord(c) for c in unicodedata.normalize(f, s))
                   for f in ("NFC", "NFD", "NFKC", "NFKD"))


def check():
    cc = os.environ.get("CC", "cc")
    tmp = tempfile.mkdtemp(prefix="gen_unicode_")
    drv, exe = os.path.join(tmp, "driver.c"), os.path.join(tmp, "driver")
    with open(drv, "w") as f:
        f.write(DRIVER)
    flags = os.environ.get("CFLAGS", "-O2").split()
    subprocess.check_call([cc, "-std=c11", "-Wall", "-Wextra", "-Werror"] + flags +
                          ["-I", ROOT, "-o", exe, drv, UNICODE_C])
    bad = 0
    nlines = 0
    proc = subprocess.Popen([exe, "all"], stdout=subprocess.PIPE, text=True)
    it = iter(proc.stdout)
    for cp in codepoints():
        got = next(it).rstrip("\n")
        lo = ".".join("%X" % x for x in lower_of(cp))
        want = "%X %d %s%s" % (cp, flags_of(cp), lo, py_norm(chr(cp)))
        nlines += 1
        if got != want:
            bad += 1
            if bad <= 20:
                print("MISMATCH\n  ours   %s\n  python %s" % (got, want))
    proc.wait()
    print("code points: %d checked, %d mismatches" % (nlines, bad))

    # Random strings over an alphabet rich in interactions.
    rng = random.Random(1234)
    marks = [cp for cp in codepoints() if unicodedata.combining(chr(cp))]
    decomposable = [cp for cp in codepoints() if unicodedata.decomposition(chr(cp))]
    jamo = list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11A7, 0x11C3))
    starters = [ord(c) for c in "aeiouAEOUcnszkqwyAΑαωΩιυοεикеЕ"] + [0x0B47, 0x0B3E, 0x0B57,
                                                                   0x0CC6, 0x0CD5, 0x110A5, 0x110BA]
    syll = [rng.randrange(SBASE, SBASE + SCOUNT) for _ in range(200)]
    strings = []
    for _ in range(200000):
        n = rng.randrange(1, 9)
        s = []
        for _ in range(n):
            r = rng.random()
            pool = marks if r < 0.4 else decomposable if r < 0.65 else jamo if r < 0.8 else \
                starters if r < 0.92 else syll
            s.append(chr(rng.choice(pool)))
        s = "".join(s)
        if "\n" not in s and "\0" not in s:
            strings.append(s)
    inp = "".join(s + "\n" for s in strings).encode("utf-8")
    res = subprocess.run([exe], input=inp, stdout=subprocess.PIPE, check=True)
    got = res.stdout.decode().split("\n")
    assert len(got) == len(strings) + 1, "driver printed %d lines" % len(got)
    sbad = 0
    for s, g in zip(strings, got):
        if g != py_norm(s):
            sbad += 1
            if sbad <= 20:
                print("STRING MISMATCH %r\n  ours   %s\n  python %s" % (s, g, py_norm(s)))
    print("random strings: %d checked, %d mismatches" % (len(strings), sbad))
    os.unlink(exe)
    os.unlink(drv)
    os.rmdir(tmp)
    return 1 if bad or sbad else 0


def main():
    if "--check" in sys.argv[1:]:
        sys.exit(check())
    replace_block(UNICODE_TABLES_H, gen_tables(), "TABLES")
    replace_block(TEST_C, gen_test_data(), "TEST DATA")


if __name__ == "__main__":
    main()
