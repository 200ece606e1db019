// SentencePiece: a tiny unigram model is trained at test time (libsentencepiece's trainer) from
// a fixed text. Checks: ids in range, bos/eos options, round trip through the library's own
// decoder, and agreement with the spm_encode binary when it is installed. This binary links
// libsentencepiece itself (trainer, reference decoder); the tokenizer under test still reaches
// it only through the dlopen'ed libqkscope_spm module, which the last tests check.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <link.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"
#include "src/spm_module.h"  // tools/text/src/spm_module.h: the module loader's internals

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

TEST_F(SentencePieceTest, LoadsThroughTheDlopenedModule) {
  auto tok = load_sentencepiece(model_);
  ASSERT_FALSE(tok->encode("the dog").empty());
  const auto& module = detail::spm_module();
  EXPECT_EQ(module.path.filename(), "libqkscope_spm.so");
  ASSERT_NE(module.handle, nullptr);
  void* handle = dlopen(module.path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(handle, nullptr) << module.path << " is not loaded";
  if (handle != nullptr) dlclose(handle);
}

// Sets (or unsets, with nullopt) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(SentencePieceModule, EnvironmentVariableIsTheOnlyCandidateWhenSet) {
  ScopedEnv env("QKSCOPE_SPM_MODULE", "/opt/elsewhere/libqkscope_spm.so");
  EXPECT_EQ(detail::spm_module_candidates(),
            (std::vector<std::filesystem::path>{"/opt/elsewhere/libqkscope_spm.so"}));
}

TEST(SentencePieceModule, DefaultCandidatesStartNextToTheProgramAndFindTheBuiltModule) {
  ScopedEnv env("QKSCOPE_SPM_MODULE", std::nullopt);
  const auto candidates = detail::spm_module_candidates();
  ASSERT_GE(candidates.size(), 4u);
  // qkscope_text is linked into this executable: the first place looked at is beside it.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(candidates.front(), exe.parent_path() / "libqkscope_spm.so");
  EXPECT_EQ(candidates[1],
            (exe.parent_path() / ".." / "lib" / "libqkscope_spm.so").lexically_normal());
  bool found = false;
  for (const auto& path : candidates) {
    EXPECT_EQ(path.filename(), "libqkscope_spm.so");
    EXPECT_TRUE(path.is_absolute()) << path;
    found = found || std::filesystem::is_regular_file(path, ec);
  }
  EXPECT_TRUE(found) << "the build tree's module is among the candidates";
}

TEST(SentencePieceModule, LoadFailureNamesEveryPathTriedAndWhy) {
  testing::ScratchDir dir;
  const auto missing = dir.path() / "nowhere" / "libqkscope_spm.so";
  const auto junk = dir.write("libqkscope_spm.so", "not an ELF file");
  // A real shared object that is not our module: libsentencepiece itself.
  void* sp = dlopen("libsentencepiece.so.0", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(sp, nullptr) << "this binary links libsentencepiece";
  link_map* map = nullptr;
  ASSERT_EQ(dlinfo(sp, RTLD_DI_LINKMAP, &map), 0);
  const std::filesystem::path other = map->l_name;
  dlclose(sp);
  try {
    detail::open_spm_module({missing, junk, other});
    FAIL() << "did not throw";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(missing.string() + " (no such file)"), std::string::npos) << message;
    EXPECT_NE(message.find(junk.string() + " ("), std::string::npos) << message;
    EXPECT_NE(message.find(other.string() + " (not a qkscope SentencePiece module"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("QKSCOPE_SPM_MODULE"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  }
}

TEST(SentencePieceModule, BadEnvironmentPathIsAnErrorNamingIt) {
  ScopedEnv env("QKSCOPE_SPM_MODULE", "/nonexistent/qkscope/libqkscope_spm.so");
  try {
    detail::open_spm_module(detail::spm_module_candidates());
    FAIL() << "did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/qkscope/libqkscope_spm.so (no such file)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace qkscope::text
