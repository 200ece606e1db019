// SentencePiece: a tiny unigram model is trained at test time (libsentencepiece's trainer) from
// a fixed text. Checks: ids in range, bos/eos options, round trip through the library's own
// decoder, and agreement with the spm_encode binary when it is installed.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

using Ids = std::vector<int64_t>;

constexpr const char* kCorpus =
    "the quick brown fox jumps over the lazy dog\n"
    "pack my box with five dozen liquor jugs\n"
    "how vexingly quick daft zebras jump\n"
    "the five boxing wizards jump quickly\n"
    "sphinx of black quartz, judge my vow\n"
    "jackdaws love my big sphinx of quartz\n"
    "the dog sleeps while the fox runs over the hill\n"
    "a quick movement of the enemy will jeopardize six gunboats\n"
    "all questions asked by five watched experts amaze the judge\n"
    "the job requires extra pluck and zeal from every young wage earner\n";

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir();
    const auto corpus = dir_->write("corpus.txt", kCorpus);
    model_ = train(corpus, "spm", "");
    model_without_bos_ = train(corpus, "spm_nobos", " --bos_id=-1");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static std::string train(const std::filesystem::path& corpus, const std::string& name,
                           const std::string& extra) {
    const std::string prefix = (dir_->path() / name).string();
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + corpus.string() + " --model_prefix=" + prefix +
        " --vocab_size=60 --model_type=unigram --character_coverage=1.0"
        " --hard_vocab_limit=false --minloglevel=2" + extra);
    EXPECT_TRUE(status.ok()) << status.ToString();
    return prefix + ".model";
  }

  static testing::ScratchDir* dir_;
  static std::string model_;
  static std::string model_without_bos_;
};

testing::ScratchDir* SentencePieceTest::dir_ = nullptr;
std::string SentencePieceTest::model_;
std::string SentencePieceTest::model_without_bos_;

// Ids from the spm_encode binary for one line of text.
Ids spm_encode_ids(const std::string& model, const std::string& text,
                   const testing::ScratchDir& dir) {
#ifdef QKSCOPE_SPM_ENCODE
  const auto input = dir.write("spm_input.txt", text + "\n");
  const std::string cmd = std::string(QKSCOPE_SPM_ENCODE) + " --model=" + model +
                          " --output_format=id < " + input.string();
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return {};
  std::string out;
  char buffer[256];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  pclose(pipe);
  Ids ids;
  std::istringstream in(out);
  for (int64_t id; in >> id;) ids.push_back(id);
  return ids;
#else
  (void)model, (void)text, (void)dir;
  return {};
#endif
}

TEST_F(SentencePieceTest, RoundTripsThroughTheLibraryDecoder) {
  auto tok = load_sentencepiece(model_);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(model_).ok());
  for (const std::string text : {"the quick brown fox", "jump over the lazy dog",
                                 "five wizards judge my box of quartz"}) {
    const Ids ids = tok->encode(text);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), sp.bos_id());
    std::vector<int> content(ids.begin() + 1, ids.end());
    for (int id : content) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok->vocab_size());
      EXPECT_NE(id, sp.unk_id()) << "every character of the text is in the corpus";
    }
    EXPECT_EQ(sp.DecodeIds(content), text);
  }
}

TEST_F(SentencePieceTest, AgreesWithSpmEncode) {
#ifndef QKSCOPE_SPM_ENCODE
  GTEST_SKIP() << "spm_encode not installed (Debian package sentencepiece)";
#endif
  auto tok = load_sentencepiece(model_, {false, false});
  for (const std::string text : {"the quick brown fox", "jackdaws judge zebras, quickly"}) {
    EXPECT_EQ(tok->encode(text), spm_encode_ids(model_, text, *dir_)) << text;
  }
}

TEST_F(SentencePieceTest, AddsBosAndEosAsAsked) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(model_).ok());
  const int64_t bos = sp.bos_id(), eos = sp.eos_id();
  auto plain = load_sentencepiece(model_, {false, false});
  const Ids content = plain->encode("the dog");
  ASSERT_FALSE(content.empty());
  EXPECT_EQ(plain->encode_plain("the dog"), content);

  auto llama = load_sentencepiece(model_);  // default: bos only
  EXPECT_EQ(llama->prefix_ids(), (Ids{bos}));
  EXPECT_TRUE(llama->suffix_ids().empty());
  auto t5 = load_sentencepiece(model_, {false, true});
  Ids expected = content;
  expected.push_back(eos);
  EXPECT_EQ(t5->encode("the dog"), expected);

  EXPECT_EQ(plain->vocab_size(), sp.GetPieceSize());
  EXPECT_EQ(plain->pad_id(), eos);  // no pad piece: eos
  EXPECT_EQ(plain->token_to_id("</s>"), eos);
  EXPECT_EQ(plain->token_to_id("no such piece"), std::nullopt);
  EXPECT_EQ(plain->token_to_id("<unk>"), sp.unk_id());
  EXPECT_EQ(plain->id_to_token(eos), "</s>");
  EXPECT_EQ(plain->id_to_token(-1), std::nullopt);
  EXPECT_NE(plain->name().find("SentencePiece"), std::string::npos);
}

TEST_F(SentencePieceTest, RefusesBosTheModelLacks) {
  EXPECT_THROW(load_sentencepiece(model_without_bos_), UsageError);
  EXPECT_NO_THROW(load_sentencepiece(model_without_bos_, {false, true}));
}

TEST_F(SentencePieceTest, RejectsFilesThatAreNotModels) {
  const auto junk = dir_->write("junk.model", "this is not a protobuf");
  try {
    load_sentencepiece(junk);
    FAIL() << "did not throw";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(junk.string()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qkscope::text
