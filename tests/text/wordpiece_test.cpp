// WordPiece (BERT) agreement with HuggingFace, through both loaders: a vocab.txt
// (load_bert_vocab) and the equivalent tokenizer.json. Expected ids are worked by hand from
// HF's BertNormalizer / BertPreTokenizer / WordPiece rules against the fixture vocabulary
// (ids listed in fixtures.h).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "fixtures.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

using Ids = std::vector<int64_t>;

class WordPieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    from_vocab_ = load_bert_vocab(dir_.write("vocab.txt", testing::bert_vocab_txt()), true);
    from_json_ =
        load_tokenizer_json(dir_.write_json("tokenizer.json", testing::bert_tokenizer_json()));
  }

  // Both loaders must give [CLS] + content + [SEP].
  void expect_content(const std::string& text, const Ids& content) const {
    Ids expected{2};
    expected.insert(expected.end(), content.begin(), content.end());
    expected.push_back(3);
    EXPECT_EQ(from_vocab_->encode(text), expected) << "vocab.txt, text: " << text;
    EXPECT_EQ(from_json_->encode(text), expected) << "tokenizer.json, text: " << text;
  }

  testing::ScratchDir dir_;
  std::unique_ptr<Tokenizer> from_vocab_;
  std::unique_ptr<Tokenizer> from_json_;
};

TEST_F(WordPieceTest, StripsAccentsWhenLowercasing) {
  expect_content("Héllo Wörld", {5, 6});  // NFD, drop Mn, lowercase: "hello world"
  expect_content("HELLO World", {5, 6});
}

TEST(WordPieceCasedTest, KeepsAccentsAndCaseWhenNotLowercasing) {
  testing::ScratchDir dir;
  auto cased = load_bert_vocab(dir.write("vocab.txt", testing::bert_vocab_txt()), false);
  EXPECT_EQ(cased->encode("Héllo"), (Ids{2, 23, 24, 25, 3}));  // H ##é ##llo
  EXPECT_EQ(cased->encode("hello"), (Ids{2, 5, 3}));
  // "H" matches, but no "##e..." piece continues it: the whole word is unknown.
  EXPECT_EQ(cased->encode("Hello"), (Ids{2, 1, 3}));
}

TEST_F(WordPieceTest, MatchesLongestPieceFirst) {
  expect_content("worldworld", {6, 7});  // world ##world
  expect_content("aaa", {14, 15, 15});   // a ##a ##a
}

TEST_F(WordPieceTest, GivesEachCjkIdeographItsOwnToken) {
  expect_content("hello中文world", {5, 21, 22, 6});
  expect_content("中文字", {21, 22, 1});  // 字 is not in the vocabulary
  // Hiragana is not in is_chinese_char's blocks: it stays one (unknown) word.
  expect_content("文ひらがな", {22, 1});
}

TEST_F(WordPieceTest, IsolatesPunctuation) {
  expect_content("don't", {8, 9, 10});
  expect_content("U.S.A.", {11, 12, 13, 12, 14, 12});
  expect_content("3.14", {16, 12, 17});
  expect_content("a$b", {14, 18, 19});       // '$' is Sc in Unicode, but ASCII 33-47 counts
  expect_content("¿hello", {20, 5});         // U+00BF is Po
  expect_content("hello—world", {5, 1, 6});  // U+2014 is Pd, not in the vocabulary
}

TEST_F(WordPieceTest, KeepsSymbolsAndEmojiInsideTheWord) {
  expect_content("hello©", {1});  // © is So: "hello©" is one word no pieces cover
  expect_content("hello 😀", {5, 1});
  expect_content("hello😀", {1});
}

TEST_F(WordPieceTest, CleanTextRemovesControlCharacters) {
  expect_content("hel\x01lo", {5});                    // Cc
  expect_content("hel\xE2\x80\x8Blo", {5});            // U+200B is Cf
  expect_content("hel\xEE\x80\x80lo", {5});            // U+E000 is Co
  expect_content(std::string("\0hello\xEF\xBF\xBD", 9), {5});  // NUL and U+FFFD
  // '\v' and U+0085 are whitespace but also Cc: HF filters them out before mapping
  // whitespace to ' ', so they join the words around them.
  expect_content("hello\x0Bworld", {5, 7});
  expect_content("hello\xC2\x85world", {5, 7});
}

TEST_F(WordPieceTest, TreatsRunsOfWhitespaceAsOneSeparator) {
  expect_content("  hello \t\n\n\r\n world\xC2\xA0hello\xE3\x80\x80world  ", {5, 6, 5, 6});
  expect_content(" \t\n", {});
  expect_content("", {});
}

TEST_F(WordPieceTest, WordsLongerThanMaxInputCharsAreUnknown) {
  Ids hundred{14};
  hundred.insert(hundred.end(), 99, 15);
  expect_content(std::string(100, 'a'), hundred);
  expect_content(std::string(101, 'a'), {1});
}

TEST_F(WordPieceTest, MatchesSpecialTokensInTheRawText) {
  expect_content("hello [MASK] world", {5, 4, 6});
  expect_content("hello[MASK]world", {5, 4, 6});
  expect_content("[CLS]hello[SEP]", {2, 5, 3});
  expect_content("Héllo[SEP]Wörld", {5, 3, 6});
  // Special tokens are matched before lowercasing, so "[mask]" is ordinary text.
  expect_content("[mask]", {26, 1, 27});
}

TEST_F(WordPieceTest, ReportsVocabularyFacts) {
  EXPECT_EQ(from_vocab_->vocab_size(), 30);
  EXPECT_EQ(from_json_->vocab_size(), 31);  // plus the added token QKScope
  EXPECT_EQ(from_vocab_->pad_id(), 0);
  EXPECT_EQ(from_json_->pad_id(), 0);
  EXPECT_EQ(from_vocab_->prefix_ids(), (Ids{2}));
  EXPECT_EQ(from_vocab_->suffix_ids(), (Ids{3}));
  EXPECT_EQ(from_vocab_->token_to_id("##world"), 7);
  EXPECT_EQ(from_vocab_->token_to_id("nope"), std::nullopt);
  EXPECT_EQ(from_vocab_->id_to_token(21), "中");
  EXPECT_EQ(from_json_->id_to_token(30), "QKScope");
  EXPECT_EQ(from_json_->id_to_token(99), std::nullopt);
  EXPECT_NE(from_vocab_->name().find("vocab.txt"), std::string::npos);
  EXPECT_NE(from_json_->name().find("WordPiece"), std::string::npos);
  EXPECT_EQ(from_vocab_->encode_plain("hello world"), (Ids{5, 6}));
}

TEST(WordPieceVocabTest, ReadsCrlfVocabulary) {
  testing::ScratchDir dir;
  std::string crlf;
  for (const auto& token : testing::bert_vocab()) crlf += token + "\r\n";
  auto tok = load_bert_vocab(dir.write("vocab.txt", crlf), true);
  EXPECT_EQ(tok->encode("hello world"), (Ids{2, 5, 6, 3}));
  EXPECT_EQ(tok->token_to_id("hello"), 5);
}

}  // namespace
}  // namespace qkscope::text
