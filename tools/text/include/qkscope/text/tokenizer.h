// Tokenizers for --text: turn UTF-8 text into the token ids a HuggingFace transformer was
// trained on, id for id as HuggingFace's `tokenizers` library (or libsentencepiece) would.
//
// Three sources are supported (see the factories below):
//   - a HuggingFace tokenizer.json with a WordPiece model (BERT, DistilBERT) or a BPE model
//     (byte-level: GPT-2, RoBERTa; also Llama-3/Qwen-style Split + ByteLevel pipelines);
//   - a BERT vocab.txt (as BertTokenizerFast builds it from that file);
//   - a SentencePiece .model file (through libsentencepiece).
//
// Every failure throws a qkscope::Error (or a subclass) whose message names the file, the
// unsupported component or the offending byte. Tokenizers are immutable after loading:
// all const member functions may be called from many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope::text {

class Tokenizer {
 public:
  virtual ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids of `text` with the special tokens the model expects around one sequence (what the
  // tokenizer.json post-processor adds: [CLS] ... [SEP], <s> ... </s>, nothing for GPT-2).
  // Throws qkscope::FormatError naming the byte offset when `text` is not valid UTF-8.
  std::vector<int64_t> encode(std::string_view text) const;

  // Ids of `text` without any special tokens around it (special tokens written inside the
  // text, such as "[MASK]" or "<|endoftext|>", are still recognised).
  std::vector<int64_t> encode_plain(std::string_view text) const;

  // Splits a long text into consecutive chunks of at most `max_length` ids each, counting the
  // special tokens: every chunk is prefix_ids() + up to (max_length - number of special ids)
  // content ids + suffix_ids(). The content ids, concatenated, are exactly encode_plain(text);
  // chunk boundaries fall between ids, so a word may be cut between two chunks. An empty (or
  // all-whitespace) text gives one chunk holding only the special tokens, like encode().
  // Throws qkscope::UsageError when max_length leaves no room for content.
  std::vector<std::vector<int64_t>> encode_chunks(std::string_view text,
                                                  std::size_t max_length) const;

  // Special ids encode() puts before / after the content ids.
  const std::vector<int64_t>& prefix_ids() const noexcept { return prefix_; }
  const std::vector<int64_t>& suffix_ids() const noexcept { return suffix_; }

  // One more than the largest id encode() can return (the model's embedding rows must cover
  // it). Equals the number of tokens when ids are contiguous, as they are in released models.
  virtual int64_t vocab_size() const = 0;

  // Id to pad batches with (attention masks hide it). Resolution, per factory, is documented
  // there; it is always a valid id.
  virtual int64_t pad_id() const = 0;

  // Short description for logs and reports, e.g. "WordPiece (tokenizer.json: /m/tokenizer.json)".
  virtual std::string name() const = 0;

  // The id of one vocabulary entry (model vocabulary or added token), if any.
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  // The vocabulary entry of one id, if any (byte-level BPE entries are shown as stored,
  // e.g. "Ġworld").
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;

 protected:
  Tokenizer(std::vector<int64_t> prefix, std::vector<int64_t> suffix);

  // Content ids of `text`, already checked to be valid UTF-8.
  virtual std::vector<int64_t> encode_valid(std::string_view text) const = 0;

 private:
  std::vector<int64_t> prefix_;
  std::vector<int64_t> suffix_;
};

// HuggingFace tokenizer.json. Supported components (anything else is a qkscope::Error naming
// the unsupported type and the file):
//   model:          WordPiece, BPE (merges as "a b" strings or ["a","b"] pairs; unk_token,
//                   fuse_unk, byte_fallback, continuing_subword_prefix, end_of_word_suffix,
//                   ignore_merges; dropout must be null or 0)
//   normalizer:     null, BertNormalizer, Lowercase, StripAccents, NFC, NFD, NFKC, NFKD, Sequence
//   pre_tokenizer:  null, BertPreTokenizer, ByteLevel, Split, Sequence
//   post_processor: null, TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel,
//                   Sequence
//   added_tokens:   all, with content/single_word/lstrip/rstrip/normalized as HF matches them
// "decoder", "truncation" and the rest are ignored (this library does not decode, and
// encode_chunks() replaces truncation).
// pad_id(): the "padding" section's pad_id when present, else the id of "[PAD]" or "<pad>",
// else of "</s>" or "<|endoftext|>" (GPT-2 style models pad with end-of-text), else 0.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& path);

// BERT vocab.txt: one token per line, id = line index (trailing whitespace, including "\r", is
// trimmed as HF does). Builds what BertTokenizerFast builds from that file: BertNormalizer
// (clean_text, handle_chinese_chars, strip_accents = lowercase, lowercase), BertPreTokenizer,
// WordPiece ("##", [UNK], 100 chars per word), [CLS] $A [SEP]; [PAD], [UNK], [CLS], [SEP] and
// [MASK] (when present) are special tokens recognised in the raw text.
// [UNK], [CLS], [SEP] and [PAD] are required. pad_id() is the id of [PAD].
std::unique_ptr<Tokenizer> load_bert_vocab(const std::filesystem::path& path, bool lowercase);

// What load_sentencepiece() puts around the pieces. A .model file does not say, and models
// differ: LLaMA prepends <s> only (the default), T5 appends </s> only ({false, true}),
// ALBERT-style models are better loaded from their tokenizer.json.
struct SentencePieceOptions {
  bool add_bos = true;   // prepend the model's bos piece (an error if the model has none)
  bool add_eos = false;  // append the model's eos piece (an error if the model has none)
};

// SentencePiece model file (unigram or BPE), encoded by libsentencepiece itself.
// pad_id(): the model's pad piece if it has one, else its eos piece, else its unk piece.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path,
                                              SentencePieceOptions options = {});

}  // namespace qkscope::text
