// tokenizer.json components beyond the two main fixtures: BPE options, normalizer and
// pre-tokenizer sequences, Split, post-processor variants, padding. Expected ids are worked by
// hand from HF's rules.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "fixtures.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

using Ids = std::vector<int64_t>;
using nlohmann::json;

class TokenizerJsonTest : public ::testing::Test {
 protected:
  std::unique_ptr<Tokenizer> load(const json& j) {
    return load_tokenizer_json(dir_.write_json("tokenizer" + std::to_string(n_++) + ".json", j));
  }

  // A bare BPE tokenizer.json: no normalizer, no pre-tokenizer (the whole text is one word).
  static json bare_bpe(json vocab, json merges, json model_options) {
    json model = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
    model.update(model_options);
    return {{"model", model}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
            {"post_processor", nullptr}, {"added_tokens", json::array()}};
  }

  testing::ScratchDir dir_;
  int n_ = 0;
};

TEST_F(TokenizerJsonTest, BpeUnkTokenFusesUnknownRunsWhenAsked) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}, {"<unk>", 3}};
  // a b x y a b: x and y are unknown; "a b" merges on both sides.
  EXPECT_EQ(load(bare_bpe(vocab, {"a b"}, {{"unk_token", "<unk>"}, {"fuse_unk", true}}))
                ->encode("abxyab"),
            (Ids{2, 3, 2}));
  EXPECT_EQ(load(bare_bpe(vocab, {"a b"}, {{"unk_token", "<unk>"}, {"fuse_unk", false}}))
                ->encode("abxyab"),
            (Ids{2, 3, 3, 2}));
}

TEST_F(TokenizerJsonTest, BpeByteFallbackUsesByteTokensWhenAllExist) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}, {"<unk>", 3},
                      {"<0x78>", 4}, {"<0xC3>", 5}, {"<0xA9>", 6}};
  auto tok = load(bare_bpe(vocab, {"a b"}, {{"unk_token", "<unk>"}, {"byte_fallback", true}}));
  EXPECT_EQ(tok->encode("abx"), (Ids{2, 4}));    // x = 0x78
  EXPECT_EQ(tok->encode("aé"), (Ids{0, 5, 6}));  // é = C3 A9
  EXPECT_EQ(tok->encode("ay"), (Ids{0, 3}));     // no <0x79>: unk instead
}

TEST_F(TokenizerJsonTest, BpeContinuingSubwordPrefix) {
  // Non-first characters carry "##"; the merge "a ##b" yields "ab".
  auto tok = load(bare_bpe({{"a", 0}, {"##b", 1}, {"ab", 2}, {"##a", 3}}, {"a ##b"},
                           {{"continuing_subword_prefix", "##"}}));
  EXPECT_EQ(tok->encode("ab"), (Ids{2}));
  EXPECT_EQ(tok->encode("aab"), (Ids{0, 3, 1}));  // a ##a ##b: "##a ##b" is no merge
}

TEST_F(TokenizerJsonTest, NormalizedAddedTokenMatchesAfterLowercasing) {
  auto tok = load(testing::bert_tokenizer_json());
  EXPECT_EQ(tok->encode("hello QKSCOPE world"), (Ids{2, 5, 30, 6, 3}));
  EXPECT_EQ(tok->encode("helloqkscopeworld"), (Ids{2, 5, 30, 6, 3}));
}

TEST_F(TokenizerJsonTest, AddedTokenSingleWordAndRstrip) {
  auto j = testing::bpe_tokenizer_json();
  j["added_tokens"][0]["lstrip"] = false;
  j["added_tokens"][0]["rstrip"] = true;
  j["added_tokens"][0]["single_word"] = true;
  auto tok = load(j);
  // Free on both sides: matched, and it swallows both spaces after it.
  // "Hello " -> Hello Ġ; <mask>; "world" -> w or ld.
  EXPECT_EQ(tok->encode("Hello <mask>  world"), (Ids{32, 8, 45, 9, 34, 36}));
  // Touching "o": not a single word, so "<mask>" is plain text: "<" and ">" are not in the
  // vocabulary (dropped, no unk_token); "mask" keeps m, a and k (no "s").
  EXPECT_EQ(tok->encode("Hello<mask>"), (Ids{32, 15, 20, 16}));
}

TEST_F(TokenizerJsonTest, StripAccentsFollowsLowercaseUnlessSet) {
  auto j = testing::bert_tokenizer_json();
  // U+0130 'İ': stripping (NFD "I" + U+0307, drop the mark) then lowercasing gives "i".
  EXPECT_EQ(load(j)->encode("\xC4\xB0"), (Ids{2, 28, 3}));
  // Lowercasing alone gives "i" + U+0307 (Rust's to_lowercase): i ##<U+0307>.
  j["normalizer"]["strip_accents"] = false;
  EXPECT_EQ(load(j)->encode("\xC4\xB0"), (Ids{2, 28, 29, 3}));
}

TEST_F(TokenizerJsonTest, NormalizerSequence) {
  auto j = testing::bert_tokenizer_json();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}},
                                      {{"type", "Lowercase"}}}}};
  EXPECT_EQ(load(j)->encode("Héllo Wörld"), (Ids{2, 5, 6, 3}));
}

TEST_F(TokenizerJsonTest, MaxInputCharsPerWordFromFile) {
  auto j = testing::bert_tokenizer_json();
  j["model"]["max_input_chars_per_word"] = 5;
  auto tok = load(j);
  EXPECT_EQ(tok->encode("hello"), (Ids{2, 5, 3}));
  EXPECT_EQ(tok->encode("worldworld"), (Ids{2, 1, 3}));
}

TEST_F(TokenizerJsonTest, SplitThenByteLevelLikeLlama3) {
  // Llama-3/Qwen-style: the regex lives in a Split, ByteLevel only maps bytes.
  auto j = testing::bpe_tokenizer_json();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern",
          {{"Regex",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  EXPECT_EQ(load(j)->encode("Hello world!!  I'm  ok\n\n"),
            (Ids{32, 37, 12, 12, 8, 40, 41, 8, 39, 42}));
}

TEST_F(TokenizerJsonTest, SplitBehaviors) {
  auto j = testing::bpe_tokenizer_json();
  auto with_split = [&](json pattern, const char* behavior, bool invert = false) {
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    return load(j);
  };
  // Removed: "Hello", "world" (no Ġ: the space is gone).
  EXPECT_EQ(with_split({{"String", " "}}, "Removed")->encode("Hello world"),
            (Ids{32, 9, 34, 36}));
  // MergedWithNext: "Hello", " world".
  EXPECT_EQ(with_split({{"String", " "}}, "MergedWithNext")->encode("Hello world"),
            (Ids{32, 37}));
  // MergedWithPrevious: "Hello ", "world": Hello then Ġ; "w or ld".
  EXPECT_EQ(with_split({{"String", " "}}, "MergedWithPrevious")->encode("Hello world"),
            (Ids{32, 8, 9, 34, 36}));
  // Letter runs removed: only " " is left. Inverted, the non-letters are the delimiters.
  EXPECT_EQ(with_split({{"Regex", "\\p{L}+"}}, "Removed")->encode("Hello world"), (Ids{8}));
  EXPECT_EQ(with_split({{"Regex", "\\p{L}+"}}, "Removed", true)->encode("Hello world"),
            (Ids{32, 9, 34, 36}));
}

TEST_F(TokenizerJsonTest, PostProcessorVariants) {
  auto j = testing::bert_tokenizer_json();
  j["post_processor"] = {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}};
  EXPECT_EQ(load(j)->encode("hello"), (Ids{2, 5, 3}));

  // A Sequence wraps in order; a template special token may carry several ids.
  j["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}, {"trim_offsets", false}},
        {{"type", "TemplateProcessing"},
         {"single", {{{"SpecialToken", {{"id", "<b>"}, {"type_id", 0}}}},
                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                     {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}}},
         {"special_tokens",
          {{"<b>", {{"id", "<b>"}, {"ids", {2, 4}}, {"tokens", {"[CLS]", "[MASK]"}}}},
           {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}}}};
  auto tok = load(j);
  EXPECT_EQ(tok->encode("hello"), (Ids{2, 4, 5, 3}));
  EXPECT_EQ(tok->prefix_ids(), (Ids{2, 4}));

  j["post_processor"] = nullptr;
  EXPECT_EQ(load(j)->encode("hello"), (Ids{5}));
}

// Found by fuzzing: vocab_size() counted vocabulary and added tokens only, so a post-processor
// or padding id outside them came out of encode() (or pad_id()) at or past vocab_size().
TEST_F(TokenizerJsonTest, VocabSizeCoversPostProcessorAndPadIds) {
  auto j = testing::bert_tokenizer_json();  // ids 0..30
  j["post_processor"] = {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"<c>", 40}}};
  j["padding"] = {{"pad_id", 50}};
  auto tok = load(j);
  EXPECT_EQ(tok->encode("hello"), (Ids{40, 5, 3}));
  EXPECT_EQ(tok->pad_id(), 50);
  EXPECT_EQ(tok->vocab_size(), 51);
  j["padding"] = nullptr;
  EXPECT_EQ(load(j)->vocab_size(), 41);
}

TEST_F(TokenizerJsonTest, PaddingSectionGivesPadId) {
  auto j = testing::bert_tokenizer_json();
  j["padding"] = {{"strategy", "BatchLongest"}, {"pad_id", 3}, {"pad_token", "[SEP]"}};
  EXPECT_EQ(load(j)->pad_id(), 3);
}

}  // namespace
}  // namespace qkscope::text
