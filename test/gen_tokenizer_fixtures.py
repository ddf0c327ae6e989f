#!/usr/bin/env python3
"""Writes the small tokenizer.json fixtures of test/test_tokenizer.c into data/tokenizer/
(python3 test/gen_tokenizer_fixtures.py, from anywhere). Each imitates the layout of a real model's tokenizer.json with a tiny vocabulary;
byte-level vocabularies give byte b the id b (its alphabet character), so ids can be read by hand."""
import base64, json, os, struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "tokenizer")

def bytes_to_unicode():
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}

B = bytes_to_unicode()
BYTE_VOCAB = {B[b]: b for b in range(256)}

def tok(content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False, id=0):
    return {"id": id, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}

def bpe(vocab, merges, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    m.update(kw)
    m["vocab"] = vocab
    m["merges"] = merges
    return m

def with_merges(base, merges, sep=""):
    """Adds each merge's result to the vocabulary, in order."""
    v = dict(base)
    for a, b in merges:
        if a + b not in v:
            v[a + b] = len(v)
    return v

def doc(model, added=(), normalizer=None, pre=None, post=None):
    # the ids the library gives added tokens: the model's id, else the next one after the vocabulary
    vocab = model["vocab"]
    ids = {p[0]: i for i, p in enumerate(vocab)} if isinstance(vocab, list) else vocab
    nxt = len(ids)
    for t in added:
        if t["content"] in ids:
            t["id"] = ids[t["content"]]
        else:
            t["id"] = nxt
            nxt += 1
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added),
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post, "decoder": None, "model": model}

def write(name, d):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, indent=1)
        f.write("\n")

def template(single, specials):
    return {"type": "TemplateProcessing", "single": single,
            "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {s: {"id": s, "ids": [i], "tokens": [s]} for s, i in specials.items()}}

SEQ_A = {"Sequence": {"id": "A", "type_id": 0}}
def SPECIAL(s): return {"SpecialToken": {"id": s, "type_id": 0}}

RX_LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
RX_QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
RX_CLIP = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"

# ---- GPT-2: ByteLevel(use_regex) BPE, legacy "a b" merges ----
G = "Ġ"
gm = [(G, "t"), ("h", "e"), (G + "t", "he"), ("l", "l"), ("he", "ll"), ("hell", "o"), (G, "w"), ("o", "r"),
      (G + "w", "or"), ("l", "d"), (G + "wor", "ld"), ("'", "s"), ("1", "2"), (G, G), (G, "hello")]
gv = with_merges(BYTE_VOCAB, gm)
write("gpt2.json", doc(bpe(gv, ["#version: 0.2"] + [a + " " + b for a, b in gm]),
      added=[tok("<|endoftext|>"), tok("<mask>", lstrip=True), tok("<rs>", rstrip=True),
             tok("<sw>", single_word=True), tok("hello", special=False, normalized=True)],
      pre={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
      post={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}))

# ---- Llama 3: Split(Llama-3 regex) + ByteLevel, ignore_merges, [a, b] merges ----
lm = [("1", "2"), ("12", "3"), (G, "t"), ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("'", "S")]
lv = with_merges(BYTE_VOCAB, lm)
lv[G + "hello"] = len(lv)  # reachable only through ignore_merges
write("llama3.json", doc(bpe(lv, [[a, b] for a, b in lm], ignore_merges=True),
      added=[tok("<|begin_of_text|>"), tok("<|end_of_text|>")],
      pre={"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": RX_LLAMA3}, "behavior": "Isolated", "invert": False},
          {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
      post={"type": "Sequence", "processors": [
          {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
          template([SPECIAL("<|begin_of_text|>"), SEQ_A], {"<|begin_of_text|>": len(lv)})]}))

# ---- Qwen2: NFC + Split(Qwen2 regex) + ByteLevel ----
qm = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ã", "©")]
qv = with_merges(BYTE_VOCAB, qm)
write("qwen2.json", doc(bpe(qv, [[a, b] for a, b in qm]),
      added=[tok("<|endoftext|>"), tok("<|im_start|>"), tok("<|im_end|>")],
      normalizer={"type": "NFC"},
      pre={"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": RX_QWEN2}, "behavior": "Isolated", "invert": False},
          {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
      post={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}))

# ---- CLIP: NFC, \s+ -> " ", Lowercase; Split(CLIP regex, Removed, invert); BPE with </w> ----
cv = dict(BYTE_VOCAB)
for b in range(256):
    cv[B[b] + "</w>"] = 256 + b
cm = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o</w>"), ("o", "r"), ("w", "or"), ("l", "d</w>"),
      ("wor", "ld</w>"), ("'", "s</w>"), ("a", "b")]
cv = with_merges(cv, cm)
start, end = len(cv), len(cv) + 1
cv["<|startoftext|>"] = start
cv["<|endoftext|>"] = end
write("clip.json", doc(bpe(cv, [[a, b] for a, b in cm], continuing_subword_prefix="", end_of_word_suffix="</w>",
                           unk_token="<|endoftext|>"),
      added=[tok("<|startoftext|>", normalized=True), tok("<|endoftext|>", normalized=False)],
      normalizer={"type": "Sequence", "normalizers": [
          {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}, {"type": "Lowercase"}]},
      pre={"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": RX_CLIP}, "behavior": "Removed", "invert": True},
          {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
      post={"type": "RobertaProcessing", "sep": ["<|endoftext|>", end], "cls": ["<|startoftext|>", start],
            "trim_offsets": False, "add_prefix_space": False}))

# ---- Llama 2: SentencePiece BPE, Prepend + Replace, byte_fallback, fuse_unk ----
S = "▁"
l2 = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    l2["<0x%02X>" % b] = 3 + b
for c in [S, "h", "e", "l", "o", "w", "r", "d", "1", "2"]:
    l2[c] = len(l2)
l2m = [(S, "h"), ("l", "l"), (S + "h", "e"), (S + "he", "ll"), (S + "hell", "o"), (S, "w"), ("o", "r"),
       (S + "w", "or"), (S + "wor", "l"), (S + "worl", "d"), (S, S)]
l2 = with_merges(l2, l2m)
l2spec = [tok("<unk>"), tok("<s>"), tok("</s>")]
write("llama2.json", doc(bpe(l2, [a + " " + b for a, b in l2m], unk_token="<unk>", fuse_unk=True, byte_fallback=True),
      added=l2spec,
      normalizer={"type": "Sequence", "normalizers": [
          {"type": "Prepend", "prepend": S}, {"type": "Replace", "pattern": {"String": " "}, "content": S}]},
      post=template([SPECIAL("<s>"), SEQ_A], {"<s>": 1})))
# the newer layout: no normalizer, Metaspace(prepend_scheme first, split false)
write("llama2_metaspace.json", doc(bpe(l2, [[a, b] for a, b in l2m], unk_token="<unk>", fuse_unk=True,
                                       byte_fallback=True),
      added=l2spec,
      pre={"type": "Metaspace", "replacement": S, "prepend_scheme": "first", "split": False},
      post=template([SPECIAL("<s>"), SEQ_A], {"<s>": 1})))

# ---- T5: Unigram, WhitespaceSplit + Metaspace, "$A </s>" ----
t5 = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], [S, -2.0], [S + "hello", -5.0], [S + "he", -6.0],
      ["llo", -7.0], ["h", -8.0], ["e", -8.0], ["l", -8.0], ["o", -8.0], [S + "world", -6.0], ["w", -9.0],
      ["r", -9.0], ["d", -9.0], [S + "w", -7.0], ["orld", -8.0], ["1", -9.0], ["2", -9.0], ["12", -8.5],
      ["a", -3.0], ["b", -3.0], ["ab", -6.0], [S + "a", -4.0], ["<extra_id_0>", 0.0]]
t5norm = {"type": "Sequence", "normalizers": [
    {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
write("t5.json", doc({"type": "Unigram", "unk_id": 2, "vocab": t5, "byte_fallback": False},
      added=[tok("<pad>"), tok("</s>"), tok("<unk>"), tok("<extra_id_0>")],
      normalizer=t5norm,
      pre={"type": "Sequence", "pretokenizers": [
          {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True}]},
      post=template([SEQ_A, SPECIAL("</s>")], {"</s>": 1})))

# ---- T5 with a Precompiled normalizer: a small SentencePiece charsmap built here ----
def charsmap(pairs):
    """SentencePiece's precompiled charsmap: u32 trie size, a Darts double-array trie of the keys'
    UTF-8 bytes (leaf value: the replacement's offset), then the NUL-terminated replacements."""
    blob, values = b"", {}
    for k, v in pairs:
        values[k.encode()] = len(blob)
        blob += v.encode() + b"\0"
    units = {}
    def used(i): return i in units or i == 0
    # trie of keys: node = bytes prefix
    prefixes = sorted({k[:i] for k in values for i in range(len(k) + 1)}, key=lambda p: (len(p), p))
    pos = {b"": 0}
    units[0] = 0
    for p in prefixes:
        kids = sorted({k[len(p)] for k in values if len(k) > len(p) and k.startswith(p)})
        leaf = p in values
        if not kids and not leaf:
            continue
        labels = kids + ([0] if leaf else [])
        o = 1
        while any(((pos[p] ^ o) ^ c) in units or ((pos[p] ^ o) ^ c) == 0 for c in labels):
            o += 1
        assert o < (1 << 21)
        base = pos[p] ^ o
        units[pos[p]] = (o << 10) | (units.get(pos[p], 0) & 0xFF) | (0x100 if leaf else 0)
        for c in kids:
            pos[p + bytes([c])] = base ^ c
            units[base ^ c] = c
        if leaf:
            units[base] = 0x80000000 | values[p]
    n = max(units) + 1
    arr = b"".join(struct.pack("<I", units.get(i, 0)) for i in range(n))
    return base64.b64encode(struct.pack("<I", len(arr)) + arr + blob).decode()

CM = charsmap([("Ａ", "A"), ("ﬁ", "fi"), ("\u00a0", " "), ("①", "1"), ("e\u0301", "é"), ("\u3000", " "), ("ß", "ss"),
               ("Ｈ", "h")])
write("t5_precompiled.json", doc({"type": "Unigram", "unk_id": 2, "vocab": t5, "byte_fallback": False},
      added=[tok("<pad>"), tok("</s>"), tok("<unk>"), tok("<extra_id_0>")],
      normalizer={"type": "Sequence", "normalizers": [
          {"type": "Precompiled", "precompiled_charsmap": CM},
          {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
      pre={"type": "Sequence", "pretokenizers": [
          {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True}]},
      post=template([SEQ_A, SPECIAL("</s>")], {"</s>": 1})))
