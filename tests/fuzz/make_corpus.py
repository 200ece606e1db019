#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/seed-*).

Run from anywhere; it overwrites only the seed-* files (saved regression inputs, named
regress-*, are left alone). Standard library only, deterministic output.
"""
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


# --- safetensors ------------------------------------------------------------------------------

DTYPES = {"BOOL": ("?", 1), "U8": ("B", 1), "I8": ("b", 1), "F8_E5M2": ("B", 1),
          "F8_E4M3": ("B", 1), "I16": ("h", 2), "U16": ("H", 2), "F16": ("e", 2),
          "BF16": ("H", 2), "I32": ("i", 4), "U32": ("I", 4), "F32": ("f", 4), "F64": ("d", 8),
          "I64": ("q", 8), "U64": ("Q", 8)}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, values); laid out in the order given."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, values in tensors:
        fmt, size = DTYPES[dtype]
        raw = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    write("safetensors", "two-tensors", safetensors(
        [("weight", "F32", [2, 3], [0.5, -1.0, 2.0, 3.25, 0.0, -0.0]),
         ("ids", "I64", [2], [7, -1])], {"format": "pt", "note": "seed"}))
    write("safetensors", "empty", safetensors([]))
    write("safetensors", "scalar-and-empty", safetensors(
        [("scalar", "F64", [], [3.5]), ("nothing", "F32", [0, 4], []),
         ("bytes", "U8", [3], [1, 2, 255])], pad=False))
    write("safetensors", "all-dtypes", safetensors(
        [(d, d, [1], [1 if d != "BOOL" else True]) for d in DTYPES]))
    full = safetensors([("x", "I32", [2, 2], [1, 2, 3, 4])], {"a": "b"})
    write("safetensors", "truncated", full[:-3])
    write("safetensors", "unicode-names", safetensors(
        [("q\u00e9\u4e2d", "I16", [1, 2], [1, -2])], {"m\u00f6dule": "\u00fc"}))


# --- q/k files --------------------------------------------------------------------------------

def qk_file(sites, sequence, position, token_id=None, extra=None):
    """sites: list of (layer, module, prescale, H, D, heads or None)."""
    n = len(sequence)
    metadata = {"format": "qkscope.qk.v1", "layers": ",".join(str(s[0]) for s in sites)}
    tensors = [("tokens.sequence", "I64", [n], sequence), ("tokens.position", "I64", [n], position)]
    if token_id is not None:
        tensors.append(("tokens.id", "I64", [n], token_id))
    for layer, module, prescale, h, d, heads in sites:
        metadata["layer%d.module" % layer] = module
        metadata["layer%d.prescale" % layer] = prescale
        if heads is not None:
            metadata["layer%d.heads" % layer] = ",".join(str(x) for x in heads)
        q = [0.25 * (i % 7) - 0.5 for i in range(n * h * d)]
        k = [1.0 - 0.125 * (i % 5) for i in range(n * h * d)]
        tensors.append(("layer%d.q" % layer, "F32", [n, h, d], q))
        tensors.append(("layer%d.k" % layer, "F32", [n, h, d], k))
    metadata.update(extra or {})
    return safetensors(tensors, metadata)


def qk_seeds():
    write("qk_file", "two-sites", qk_file(
        [(0, "encoder.layer.0.attention.self", "1", 2, 2, None),
         (3, "encoder.layer.3.attention.self", "0.125", 2, 3, [5, 1])],
        sequence=[0, 0, 2], position=[0, 1, 0], token_id=[101, 7, 101],
        extra={"tokens_seen": "5", "sequences_seen": "3"}))
    write("qk_file", "no-ids", qk_file([(1, "", "0.35355339059327379", 1, 4, None)],
                                       sequence=[4, 4, 4, 9], position=[0, 1, 2, 0]))
    write("qk_file", "no-sites", qk_file([], sequence=[0], position=[0]))
    write("qk_file", "no-tokens", qk_file([(0, "m", "1", 1, 1, None)], sequence=[], position=[]))


# --- q/k store programs (the byte reader of fuzz_qk_store.cpp) --------------------------------

class Program:
    def __init__(self):
        self.out = bytearray()

    def u8(self, v):
        self.out.append(v & 0xFF)

    def u32(self, v):
        self.out += struct.pack("<I", v & 0xFFFFFFFF)

    def u64(self, v):
        self.out += struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)

    def range(self, lo, hi, v):  # Bytes::range(lo, hi) returning v
        self.u32(v - lo)

    def meta(self, module, n_heads):
        self.u8(len(module))
        self.out += module.encode()
        self.u8(0)  # prescale 1
        self.u8(n_heads)
        for _ in range(n_heads):
            self.u8(1)  # head h (not the "anything" branch)

    def batch(self, layer_slot, n_tokens, heads, dim, first, length, free=False):
        self.u8(2)  # op: add
        self.u8(1)  # keep the store's choice of token ids
        self.u8(1)  # a declared layer ...
        self.u8(layer_slot)  # ... this one
        self.range(-1, 24, n_tokens)
        self.range(-1, 4, heads)
        self.range(-1, 5, dim)
        self.u8(3)  # base value
        self.u8(1)  # no NaN
        self.u8(0 if free else 1)  # structured sequences?
        self.range(-1, 8, first)
        self.range(1, 6, length)
        if free:
            for t in range(n_tokens):
                self.range(-1, 8, first + t % 3)
                self.range(-1, 8, t % 4)
        self.u8(5)  # no missing array


def store_seeds():
    for name, budget in (("budget", 7), ("no-budget", None)):
        p = Program()
        p.u8(1 if budget else 0)
        if budget:
            p.range(-1, 64, budget)
        p.u64(42)
        p.u8(2)  # two sites
        p.range(-2, 6, 0)
        p.meta("enc.0", 2)
        p.range(-2, 6, 1)
        p.meta("enc.1", 2)
        p.u8(1)  # token ids
        for first in (0, 3, 6):
            p.batch(0, 6, 2, 3, first, 2)
            p.batch(1, 6, 2, 3, first, 2)
        p.u8(1)  # take
        write("qk_store", name, bytes(p.out))
    p = Program()
    p.u8(0)
    p.u64(7)
    p.u8(1)
    p.range(-2, 6, 2)
    p.meta("", 1)
    p.u8(0)
    p.batch(0, 5, 1, 2, 0, 3, free=True)
    p.batch(0, 4, 1, 2, 0, 2)
    p.u8(1)
    write("qk_store", "mismatched", bytes(p.out))
    rng = random.Random(1)
    for i in range(3):
        write("qk_store", "random-%d" % i, bytes(rng.randrange(256) for _ in range(96)))


# --- tokenizers -------------------------------------------------------------------------------

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##world", "don",
              "'", "t", "u", ".", "s", "a", "##a", "3", "14", "$", "b", "\u00bf", "\u4e2d",
              "\u6587", "H", "##\u00e9", "##llo", "[", "]", "i", "##\u0307"]

TEXT = "Hello world! Don't \u00bfs\u00e9 3.14$ \u4e2d\u6587 [MASK]\tQKScope\u0130 \U0001F600 \u00e9t\u00e9"


def bert_json():
    added = [{"id": i, "content": BERT_VOCAB[i], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in range(5)]
    added.append({"id": 30, "content": "QKScope", "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": True, "special": False})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {t: i for i, t in enumerate(BERT_VOCAB)}},
    }


BPE_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "H", "e", "l", "o", "\u0120", "w", "r", "d", "!",
              "I", "'", "m", "k", "\u010a", "\u0109", "c", "a", "f", "\u00c3", "\u00a9", "\u00f0",
              "\u0141", "\u013a", "\u0122", "lo", "ll", "He", "Hel", "Hello", "\u0120w", "or",
              "\u0120wor", "ld", "\u0120world", "ok", "\u0120ok", "\u0120I", "'m", "\u010a\u010a",
              "\u0120\u0120", "\u00c3\u00a9"]
BPE_MERGES = [("l", "o"), ("l", "l"), ("H", "e"), ("He", "l"), ("Hel", "lo"), ("\u0120", "w"),
              ("o", "r"), ("\u0120w", "or"), ("l", "d"), ("\u0120wor", "ld"), ("o", "k"),
              ("\u0120", "ok"), ("\u0120", "I"), ("'", "m"), ("\u010a", "\u010a"),
              ("\u0120", "\u0120"), ("\u00c3", "\u00a9")]


def bpe_json(pairs):
    added = [{"id": 45, "content": "<mask>", "single_word": False, "lstrip": True,
              "rstrip": False, "normalized": False, "special": True},
             {"id": 46, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": True, "special": True}]
    merges = [[a, b] if pairs else a + " " + b for a, b in BPE_MERGES]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "vocab": {t: i for i, t in enumerate(BPE_TOKENS)},
                  "merges": merges},
    }


def llama_like_json():
    """SentencePiece-style BPE: Sequence normalizer, Split pre-tokenizer, byte fallback."""
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + \
        ["\u2581", "H", "e", "l", "o", "w", "r", "d", "\u2581w", "or", "ld", "He", "ll", "llo",
         "Hello", "\u2581wor", "\u2581world"]
    merges = [["H", "e"], ["l", "l"], ["ll", "o"], ["He", "llo"], ["\u2581", "w"], ["o", "r"],
              ["\u2581w", "or"], ["l", "d"], ["\u2581wor", "ld"]]
    return {
        "version": "1.0", "added_tokens": [
            {"id": 0, "content": "<unk>", "special": True, "normalized": False},
            {"id": 1, "content": "<s>", "special": True, "normalized": False,
             "single_word": True, "rstrip": True},
            {"id": 2, "content": "</s>", "special": True, "normalized": False}],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "StripAccents"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\s+|\\d"}, "behavior": "MergedWithNext",
             "invert": False},
            {"type": "Split", "pattern": {"String": "o"}, "behavior": "Contiguous"}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
             "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}},
            {"type": "RobertaProcessing", "cls": ["<s>", 1], "sep": ["</s>", 2]}]},
        "padding": {"pad_id": 2},
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                  "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }


def tokenizer_seeds():
    def dump(obj):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    write("tokenizer_json", "bert", dump(bert_json()) + "\0" + TEXT)
    write("tokenizer_json", "bpe-strings", dump(bpe_json(False)) + "\0" + TEXT + " <mask> I'm ok")
    write("tokenizer_json", "bpe-pairs", dump(bpe_json(True)) + "\0" + "Hello\n\nworld<|endoftext|>")
    write("tokenizer_json", "llama-like", dump(llama_like_json()) + "\0" + TEXT + " 2024 <s> x")
    untagged = bert_json()
    del untagged["model"]["type"]
    untagged["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "NFC"}]}
    untagged["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 3],
                                  "cls": ["[CLS]", 2]}
    write("tokenizer_json", "untagged-wordpiece", dump(untagged) + "\0" + "hello  world\u3000a##a")
    write("tokenizer_json", "invalid-utf8-text", dump(bpe_json(True)).encode() + b"\0Hel\xc3(lo")

    vocab = "".join(t + "\n" for t in BERT_VOCAB)
    write("bert_vocab", "basic", vocab + "\0" + TEXT)
    write("bert_vocab", "basic-odd", vocab + "\0" + TEXT + ".")  # odd size: cased
    write("bert_vocab", "crlf", vocab.replace("\n", " \r\n") + "\0" + "hello [SEP] worldworld")
    write("bert_vocab", "no-pad", "".join(t + "\n" for t in BERT_VOCAB[1:]) + "\0" + "hello")


if __name__ == "__main__":
    safetensors_seeds()
    qk_seeds()
    store_seeds()
    tokenizer_seeds()
