// Byte-level BPE (GPT-2, RoBERTa) agreement with HuggingFace. Regex splits are worked by hand
// as Python's `regex` module splits them; merges are applied lowest rank first, against the
// fixture vocabulary and merges listed in fixtures.h.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "fixtures.h"
#include "qkscope/text/byte_level.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

using Ids = std::vector<int64_t>;
using Pieces = std::vector<std::string>;

TEST(BytesToUnicodeTest, MatchesGpt2Table) {
  EXPECT_EQ(byte_to_unicode(32), U'\u0120');   // ' ' -> 'Ġ'
  EXPECT_EQ(byte_to_unicode(10), U'\u010A');   // '\n' -> 'Ċ'
  EXPECT_EQ(byte_to_unicode(0), U'\u0100');    // first non-printable byte
  EXPECT_EQ(byte_to_unicode('!'), U'!');       // printable ASCII maps to itself
  EXPECT_EQ(byte_to_unicode(127), U'\u0121');  // 33 bytes 0..32 come before it
  EXPECT_EQ(byte_to_unicode(0xA0), U'\u0142');
  EXPECT_EQ(byte_to_unicode(0xAD), U'\u0143');  // soft hyphen: the 68th and last remapped
  EXPECT_EQ(byte_to_unicode(0xE9), U'\u00E9');
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(unicode_to_byte(byte_to_unicode(static_cast<unsigned char>(b))), b);
  }
  EXPECT_EQ(unicode_to_byte(U' '), std::nullopt);  // space itself is not in the alphabet
  EXPECT_EQ(unicode_to_byte(U'\u0144'), std::nullopt);
  EXPECT_EQ(to_byte_level("\n "), "ĊĠ");
  EXPECT_EQ(to_byte_level("😀"), "ðŁĺĢ");  // F0 9F 98 80
}

TEST(Gpt2SplitTest, SplitsLikePythonRegex) {
  // "  I" and "  ok": \s+(?!\S) backs off one space so the next word keeps its own.
  EXPECT_EQ(gpt2_split("Hello world!!  I'm  ok\n\n"),
            (Pieces{"Hello", " world", "!!", " ", " I", "'m", " ", " ok", "\n\n"}));
  // Contractions are lowercase-only; "'T" falls to the punctuation branch.
  EXPECT_EQ(gpt2_split("I'll've can't DON'T"),
            (Pieces{"I", "'ll", "'ve", " can", "'t", " DON", "'", "T"}));
  EXPECT_EQ(gpt2_split("abc123 4.5"), (Pieces{"abc", "123", " 4", ".", "5"}));
  EXPECT_EQ(gpt2_split("a \xC2\xA0" "b"), (Pieces{"a", " ", "\xC2\xA0", "b"}));  // NBSP is \s
  EXPECT_EQ(gpt2_split("ok  "), (Pieces{"ok", "  "}));
  EXPECT_EQ(gpt2_split(""), Pieces{});
}

class ByteLevelBpeTest : public ::testing::Test {
 protected:
  std::unique_ptr<Tokenizer> load(const nlohmann::json& j) {
    return load_tokenizer_json(dir_.write_json("tokenizer" + std::to_string(n_++) + ".json", j));
  }
  testing::ScratchDir dir_;
  int n_ = 0;
};

TEST_F(ByteLevelBpeTest, MergesByRankNotLeftToRight) {
  auto tok = load(testing::bpe_tokenizer_json());
  // "l l" (rank 1) beats "H e" (rank 2), and "He ll" is no merge: He + ll.
  EXPECT_EQ(tok->encode("Hell"), (Ids{30, 29}));
  // "l o" (rank 0) first, then H e, He l, Hel lo.
  EXPECT_EQ(tok->encode("Hello"), (Ids{32}));
  // Without its leading space "world" only gets "o r" and "l d".
  EXPECT_EQ(tok->encode("world"), (Ids{9, 34, 36}));
}

TEST_F(ByteLevelBpeTest, EncodesLikeGpt2) {
  // Hello Ġworld ! ! Ġ ĠI 'm Ġ Ġok ĊĊ
  const Ids expected{32, 37, 12, 12, 8, 40, 41, 8, 39, 42};
  EXPECT_EQ(load(testing::bpe_tokenizer_json())->encode("Hello world!!  I'm  ok\n\n"), expected);
  EXPECT_EQ(load(testing::bpe_tokenizer_json(true))->encode("Hello world!!  I'm  ok\n\n"),
            expected);
}

TEST_F(ByteLevelBpeTest, EncodesWhitespaceRunsAndTabs) {
  auto tok = load(testing::bpe_tokenizer_json());
  EXPECT_EQ(tok->encode("Hello   world"), (Ids{32, 43, 37}));       // Hello ĠĠ Ġworld
  EXPECT_EQ(tok->encode("Hello\tworld"), (Ids{32, 18, 9, 34, 36}));  // Hello ĉ w or ld
}

TEST_F(ByteLevelBpeTest, EncodesEmojiAndAccentsAsBytes) {
  auto tok = load(testing::bpe_tokenizer_json());
  EXPECT_EQ(tok->encode("😀"), (Ids{24, 25, 26, 27}));  // ð Ł ĺ Ģ
  EXPECT_EQ(tok->encode("Hello 😀"), (Ids{32, 8, 24, 25, 26, 27}));
  EXPECT_EQ(tok->encode("café"), (Ids{19, 20, 21, 44}));  // c a f Ã©
}

TEST_F(ByteLevelBpeTest, DropsCharactersMissingFromVocabWithoutUnkToken) {
  // HF's BPE skips a character it cannot find when the model has no unk_token.
  EXPECT_EQ(load(testing::bpe_tokenizer_json())->encode("Hez"), (Ids{30}));
}

TEST_F(ByteLevelBpeTest, MatchesAddedTokensInsideText) {
  auto tok = load(testing::bpe_tokenizer_json());
  EXPECT_EQ(tok->encode("Hello<|endoftext|> world"), (Ids{32, 46, 37}));
  // <mask> has lstrip: it swallows the space before it.
  EXPECT_EQ(tok->encode("Hello <mask> world"), (Ids{32, 45, 37}));

  auto j = testing::bpe_tokenizer_json();
  j["added_tokens"][0]["lstrip"] = false;
  // Hello Ġ <mask> Ġworld
  EXPECT_EQ(load(j)->encode("Hello <mask> world"), (Ids{32, 8, 45, 37}));
}

TEST_F(ByteLevelBpeTest, RobertaAddsPrefixSpacePerStretchAndWraps) {
  auto j = testing::bpe_tokenizer_json();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  j["post_processor"] = {{"type", "RobertaProcessing"},
                         {"sep", {"</s>", 2}},
                         {"cls", {"<s>", 0}},
                         {"trim_offsets", true},
                         {"add_prefix_space", true}};
  auto tok = load(j);
  EXPECT_EQ(tok->encode("Hello world"), (Ids{0, 8, 32, 37, 2}));  // Ġ Hello Ġworld
  // Text after an added token gets its own prefix space, as in HF.
  EXPECT_EQ(tok->encode("world<mask>world"), (Ids{0, 37, 45, 37, 2}));
  EXPECT_EQ(tok->encode("Hello <mask> world"), (Ids{0, 8, 32, 45, 37, 2}));
  EXPECT_EQ(tok->encode(""), (Ids{0, 2}));
}

TEST_F(ByteLevelBpeTest, ReportsVocabularyFacts) {
  auto tok = load(testing::bpe_tokenizer_json());
  EXPECT_EQ(tok->vocab_size(), 47);
  EXPECT_EQ(tok->pad_id(), 1);  // "<pad>"
  EXPECT_TRUE(tok->prefix_ids().empty());
  EXPECT_TRUE(tok->suffix_ids().empty());
  EXPECT_EQ(tok->id_to_token(37), "Ġworld");
  EXPECT_EQ(tok->token_to_id("<mask>"), 45);
  EXPECT_EQ(tok->token_to_id("ĊĊ"), 42);
  EXPECT_NE(tok->name().find("BPE"), std::string::npos);
}

}  // namespace
}  // namespace qkscope::text
