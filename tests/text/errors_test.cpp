// Failures: every message names the file, the unsupported component or the offending byte.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>

#include "fixtures.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

using nlohmann::json;

// Runs `f`, expects it to throw `E`, returns the message.
template <typename E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(TokenizerErrorsTest, MissingFileNamesPath) {
  const std::string path = "/nonexistent/qkscope/tokenizer.json";
  EXPECT_CONTAINS(message_of<Error>([&] { load_tokenizer_json(path); }), path);
  EXPECT_CONTAINS(message_of<Error>([&] { load_bert_vocab("/nonexistent/vocab.txt", true); }),
                  "/nonexistent/vocab.txt");
  EXPECT_CONTAINS(message_of<Error>([&] { load_sentencepiece("/nonexistent/spm.model"); }),
                  "/nonexistent/spm.model");
}

TEST(TokenizerErrorsTest, VocabWithoutUnkNamesFile) {
  testing::ScratchDir dir;
  const auto path = dir.write("vocab.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
  const std::string msg = message_of<FormatError>([&] { load_bert_vocab(path, true); });
  EXPECT_CONTAINS(msg, path.string());
  EXPECT_CONTAINS(msg, "[UNK]");
}

TEST(TokenizerErrorsTest, UnsupportedModelTypeNamesTypeAndFile) {
  testing::ScratchDir dir;
  const auto path = dir.write_json(
      "tokenizer.json",
      {{"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", {{"<unk>", 0.0}}}}}});
  const std::string msg = message_of<Error>([&] { load_tokenizer_json(path); });
  EXPECT_CONTAINS(msg, "Unigram");
  EXPECT_CONTAINS(msg, path.string());
}

TEST(TokenizerErrorsTest, UnsupportedComponentsNameTheirType) {
  testing::ScratchDir dir;
  auto j = testing::bert_tokenizer_json();
  j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  EXPECT_CONTAINS(message_of<Error>([&] { load_tokenizer_json(dir.write_json("n.json", j)); }),
                  "unsupported normalizer type 'Precompiled'");
  j = testing::bert_tokenizer_json();
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  EXPECT_CONTAINS(message_of<Error>([&] { load_tokenizer_json(dir.write_json("p.json", j)); }),
                  "unsupported pre_tokenizer type 'Metaspace'");
  j = testing::bpe_tokenizer_json();
  j["model"]["dropout"] = 0.1;
  EXPECT_CONTAINS(message_of<Error>([&] { load_tokenizer_json(dir.write_json("d.json", j)); }),
                  "dropout");
}

TEST(TokenizerErrorsTest, MalformedJsonNamesFile) {
  testing::ScratchDir dir;
  const auto path = dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  const std::string msg = message_of<FormatError>([&] { load_tokenizer_json(path); });
  EXPECT_CONTAINS(msg, path.string());
  EXPECT_CONTAINS(msg, "malformed JSON");
  // A number past double's range is nlohmann's out_of_range, not a parse_error (found by the
  // tokenizer.json fuzzer: it escaped the loader).
  const auto overflow = dir.write("overflow.json", "{\"model\": 70000000e0000000000010000000000000}");
  const std::string overflow_msg = message_of<FormatError>([&] { load_tokenizer_json(overflow); });
  EXPECT_CONTAINS(overflow_msg, overflow.string());
  EXPECT_CONTAINS(overflow_msg, "number overflow");
  const auto not_object = dir.write("array.json", "[1, 2]");
  EXPECT_CONTAINS(message_of<FormatError>([&] { load_tokenizer_json(not_object); }),
                  not_object.string());
}

TEST(TokenizerErrorsTest, BrokenModelsNameTheProblem) {
  testing::ScratchDir dir;
  auto j = testing::bpe_tokenizer_json();
  j["model"]["merges"].push_back("Ġ zz");
  EXPECT_CONTAINS(
      message_of<FormatError>([&] { load_tokenizer_json(dir.write_json("m.json", j)); }), "'zz'");
  j = testing::bpe_tokenizer_json();
  j["model"]["merges"].push_back("a b c");
  EXPECT_CONTAINS(
      message_of<FormatError>([&] { load_tokenizer_json(dir.write_json("m3.json", j)); }),
      "model.merges[17]");
  j = testing::bert_tokenizer_json();
  j["model"]["unk_token"] = "<unk>";
  EXPECT_CONTAINS(
      message_of<FormatError>([&] { load_tokenizer_json(dir.write_json("u.json", j)); }),
      "'<unk>'");
  j = testing::bpe_tokenizer_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_CONTAINS(
      message_of<FormatError>([&] { load_tokenizer_json(dir.write_json("r.json", j)); }),
      "(unclosed");
}

// Found by hardening: a 3 MB file of nested normalizer Sequences (or a deep array quoted in a
// message) overflowed the stack. Nesting is capped at serde_json's 128 levels, as in HF.
TEST(TokenizerErrorsTest, DeepNestingIsRefusedNotACrash) {
  testing::ScratchDir dir;
  const auto nested_normalizers = [](int depth) {
    std::string open, close;
    for (int i = 0; i < depth; ++i) {
      open += R"({"type":"Sequence","normalizers":[)";
      close += "]}";
    }
    return R"({"model":{"type":"WordPiece","vocab":{"[UNK]":0}},"normalizer":)" + open +
           R"({"type":"NFC"})" + close + "}";
  };
  EXPECT_NO_THROW(load_tokenizer_json(dir.write("ok.json", nested_normalizers(50))));
  const auto deep = dir.write("deep.json", nested_normalizers(100000));
  const std::string msg = message_of<FormatError>([&] { load_tokenizer_json(deep); });
  EXPECT_CONTAINS(msg, deep.string());
  EXPECT_CONTAINS(msg, "nested deeper than 128 levels");
  const auto deep_id = dir.write(
      "pad.json", R"({"model":{"type":"WordPiece","vocab":{"[UNK]":0}},"padding":{"pad_id":)" +
                      std::string(100000, '[') + std::string(100000, ']') + "}}");
  EXPECT_CONTAINS(message_of<FormatError>([&] { load_tokenizer_json(deep_id); }),
                  "nested deeper than 128 levels");
}

// Found by fuzzing (ASan): a Split regex with \C (one byte, even inside a character) cut the
// text into invalid UTF-8, which the BPE model then decoded past the end of the piece.
TEST(TokenizerErrorsTest, SplitPatternThatCutsCharactersIsRefused) {
  testing::ScratchDir dir;
  auto j = testing::bpe_tokenizer_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a+\\C"}}},
                        {"behavior", "Isolated"}, {"invert", false}};
  const auto path = dir.write_json("c.json", j);
  const std::string msg = message_of<FormatError>([&] { load_tokenizer_json(path); });
  EXPECT_CONTAINS(msg, path.string());
  EXPECT_CONTAINS(msg, "a+\\C");
  j["pre_tokenizer"]["pattern"] = {{"String", "a+\\C"}};  // a literal may contain it
  EXPECT_NO_THROW(load_tokenizer_json(dir.write_json("literal.json", j)));
}

// Found by fuzzing (UBSan): an id of 2^63 - 1 overflowed vocab_size(). Ids are below 2^32, as
// HF's u32 ids are.
TEST(TokenizerErrorsTest, IdsFromTwoToThe32AreRefused) {
  testing::ScratchDir dir;
  auto j = testing::bert_tokenizer_json();
  j["model"]["vocab"]["huge"] = INT64_MAX;
  const auto huge = dir.write_json("v.json", j);
  EXPECT_CONTAINS(message_of<FormatError>([&] { load_tokenizer_json(huge); }),
                  "model.vocab[\"huge\"] must be an integer id in [0, 2^32)");
  j = testing::bert_tokenizer_json();
  j["added_tokens"][0]["id"] = int64_t{1} << 32;
  const auto added = dir.write_json("a.json", j);
  EXPECT_CONTAINS(message_of<FormatError>([&] { load_tokenizer_json(added); }),
                  "added_tokens[0].id");
  j["added_tokens"][0]["id"] = UINT32_MAX;
  EXPECT_EQ(load_tokenizer_json(dir.write_json("max.json", j))->vocab_size(), int64_t{1} << 32);
}

TEST(TokenizerErrorsTest, InvalidUtf8NamesByteOffset) {
  testing::ScratchDir dir;
  auto tok = load_bert_vocab(dir.write("vocab.txt", testing::bert_vocab_txt()), true);
  EXPECT_CONTAINS(message_of<FormatError>([&] { tok->encode("abc\xFF"); }), "byte offset 3");
  EXPECT_CONTAINS(message_of<FormatError>([&] { tok->encode("ab\xE4\xB8"); }),  // truncated
                  "byte offset 2");
  EXPECT_CONTAINS(message_of<FormatError>([&] { tok->encode("\xC0\x80"); }),  // overlong NUL
                  "byte offset 0");
  EXPECT_CONTAINS(message_of<FormatError>([&] { tok->encode("x\xED\xA0\x80"); }),  // surrogate
                  "byte offset 1");
  EXPECT_CONTAINS(message_of<FormatError>([&] { tok->encode("ok\xF4\x90\x80\x80"); }),  // >10FFFF
                  "byte offset 2");
  EXPECT_CONTAINS(message_of<FormatError>([&] { tok->encode_chunks("é\x80", 8); }),
                  "byte offset 2");
}

}  // namespace
}  // namespace qkscope::text
