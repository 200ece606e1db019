#!/usr/bin/python3
"""Write vocab.txt, a lower-cased BERT WordPiece vocabulary for corpus.txt (next to this script).

Order: [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4); every character that occurs in a basic token
of the corpus (sorted by code point); "##" + every character that occurs inside a basic token
after its first character (sorted); then the most frequent whole basic tokens (count
descending, ties alphabetical) not already listed, until the vocabulary has VOCAB_SIZE
entries. Every corpus word therefore tokenizes without [UNK]. Deterministic.
"""

import collections
import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bert_tokenizer import SPECIAL_TOKENS, BasicTokenizer, BertTokenizer  # noqa: E402

VOCAB_SIZE = 2000


def main():
    with open(os.path.join(HERE, "corpus.txt"), encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    basic = BasicTokenizer()
    counts = collections.Counter()
    for line in lines:
        counts.update(basic.tokenize(line))
    first_chars = sorted({c for word in counts for c in word})
    inner_chars = sorted({c for word in counts for c in word[1:]})
    vocab = list(SPECIAL_TOKENS) + first_chars + ["##" + c for c in inner_chars]
    seen = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= VOCAB_SIZE:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    out = os.path.join(HERE, "vocab.txt")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(token + "\n" for token in vocab))

    # Coverage report.
    tokenizer = BertTokenizer(out)
    n_words = sum(counts.values())
    in_vocab = sum(n for word, n in counts.items() if word in tokenizer.vocab)
    n_pieces = sum(len(tokenizer.tokenize(line)) for line in lines)
    n_unk = sum(tokenizer.tokenize(line).count("[UNK]") for line in lines)
    print(f"{out}: {len(vocab)} tokens ({len(first_chars)} characters, {len(inner_chars)} ##characters, "
          f"{len(vocab) - 5 - len(first_chars) - len(inner_chars)} words)")
    print(f"corpus: {len(lines)} lines, {n_words} basic tokens ({len(counts)} distinct), "
          f"{100.0 * in_vocab / n_words:.1f}% whole words in vocab, {n_pieces} word pieces, {n_unk} [UNK]")


if __name__ == "__main__":
    main()
