// Regression: LibTorch and a SentencePiece tokenizer in one process (as in `capture --text`).
//
// libsentencepiece bundles and exports its own protobuf-lite; libtorch_cpu needs the system
// libprotobuf. When a program linked both, libprotobuf's static initialisers bound to
// libsentencepiece's copy and the program died with SIGSEGV before main. This binary links
// LibTorch and qkscope_text exactly as capture does, so with that bug it would not even list
// its tests (gtest_discover_tests fails at build time). The tests then check that the tokenizer
// works next to Torch, and that libsentencepiece stayed out of the global symbol scope.
//
// The model is trained at test time by the spm_train program (Debian package sentencepiece):
// this binary must not link libsentencepiece's trainer itself, that would reintroduce the bug.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures.h"
#include "qkscope/text/tokenizer.h"
#include "src/spm_module.h"  // tools/text/src/spm_module.h: the module loader's internals

namespace qkscope::text {
namespace {

using Ids = std::vector<int64_t>;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;  // no RTLD_DEEPBIND there: see sentencepiece_tokenizer.cpp
#else
constexpr bool kSanitized = false;
#endif

[[maybe_unused]] constexpr const char* kCorpus =
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

// stdout of a shell command; empty when it fails.
[[maybe_unused]] std::string run(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {};
  std::string out;
  char buffer[256];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  return pclose(pipe) == 0 ? out : std::string();
}

class TorchSentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Before any tokenizer is loaded (this is the binary's only suite): is libsentencepiece
    // already in the process, i.e. linked into the program?
    if (void* sp = dlopen("libsentencepiece.so.0", RTLD_NOW | RTLD_NOLOAD)) {
      sentencepiece_linked_ = true;
      dlclose(sp);
    }
#if defined(QKSCOPE_SPM_TRAIN) && defined(QKSCOPE_SPM_ENCODE)
    dir_ = new testing::ScratchDir();
    const auto corpus = dir_->write("corpus.txt", kCorpus);
    const std::string prefix = (dir_->path() / "spm").string();
    const std::string command = std::string(QKSCOPE_SPM_TRAIN) + " --input=" +
                                corpus.string() + " --model_prefix=" + prefix +
                                " --vocab_size=60 --model_type=unigram"
                                " --character_coverage=1.0 --hard_vocab_limit=false"
                                " --minloglevel=2 > /dev/null 2>&1";
    if (std::system(command.c_str()) == 0) model_ = prefix + ".model";
#endif
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    if (kSanitized) {
      GTEST_SKIP() << "sanitizer build: RTLD_DEEPBIND is unavailable, so libsentencepiece "
                      "cannot be isolated from LibTorch's libprotobuf";
    }
#if !defined(QKSCOPE_SPM_TRAIN) || !defined(QKSCOPE_SPM_ENCODE)
    GTEST_SKIP() << "spm_train / spm_encode not installed (Debian package sentencepiece)";
#endif
    ASSERT_FALSE(model_.empty()) << "spm_train failed";
  }

  static Ids spm_encode_ids(const std::string& text) {
    Ids ids;
#ifdef QKSCOPE_SPM_ENCODE
    const auto input = dir_->write("input.txt", text + "\n");
    std::istringstream out(run(std::string(QKSCOPE_SPM_ENCODE) + " --model=" + model_ +
                               " --output_format=id < " + input.string()));
    for (int64_t id; out >> id;) ids.push_back(id);
#else
    (void)text;
#endif
    return ids;
  }

  static testing::ScratchDir* dir_;
  static std::string model_;
  static bool sentencepiece_linked_;
};

testing::ScratchDir* TorchSentencePieceTest::dir_ = nullptr;
std::string TorchSentencePieceTest::model_;
bool TorchSentencePieceTest::sentencepiece_linked_ = false;

TEST_F(TorchSentencePieceTest, ProgramDoesNotLinkLibSentencePiece) {
  EXPECT_FALSE(sentencepiece_linked_)
      << "libsentencepiece.so.0 was loaded before any tokenizer: something links it into the "
         "program (qkscope_text must reach it only through libqkscope_spm)";
}

TEST_F(TorchSentencePieceTest, TokenizerAndTorchWorkInOneProcess) {
  const at::Tensor before = at::arange(10, at::kLong);
  EXPECT_EQ(before.sum().item<int64_t>(), 45);

  auto tok = load_sentencepiece(model_, {false, false});
  for (const std::string text : {"the quick brown fox", "jackdaws judge zebras, quickly",
                                 "five wizards judge my box of quartz"}) {
    const Ids ids = tok->encode(text);
    ASSERT_FALSE(ids.empty()) << text;
    EXPECT_EQ(ids, spm_encode_ids(text)) << text;
    // The ids as capture hands them to the model: an int64 tensor.
    const at::Tensor t = at::tensor(ids, at::kLong);
    ASSERT_EQ(t.numel(), static_cast<int64_t>(ids.size()));
    int64_t sum = 0;
    for (int64_t id : ids) sum += id;
    EXPECT_EQ(t.sum().item<int64_t>(), sum);
  }
  const at::Tensor after = at::ones({3, 4}).matmul(at::ones({4, 2}));
  EXPECT_TRUE(after.equal(at::full({3, 2}, 4.0)));
}

TEST_F(TorchSentencePieceTest, LibSentencePieceStaysOutOfTheGlobalScope) {
  auto tok = load_sentencepiece(model_);
  ASSERT_FALSE(tok->encode("the dog").empty());

  // The tokenizer went through the module, which is loaded in this process...
  const std::string module = detail::spm_module().path.string();
  void* handle = dlopen(module.c_str(), RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(handle, nullptr) << module << " is not loaded";
  if (handle != nullptr) dlclose(handle);

  // ...and nothing of libsentencepiece is visible to the rest of the process.
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"), nullptr)
      << "libsentencepiece's symbols are in the global scope";
  // Protobuf symbols that both libsentencepiece and libprotobuf define (protobuf 3.21 names;
  // those missing from this libprotobuf are skipped) resolve to libprotobuf.
  for (const char* name : {
           "_ZN6google8protobuf11MessageLite13MergeFromImplEPNS0_2io16CodedInputStreamENS1_"
           "10ParseFlagsE",
           "_ZN6google8protobuf8internal13MergeFromImplILb0EEEbNS1_11BoundedZCISEPNS0_"
           "11MessageLiteENS4_10ParseFlagsE",
       }) {
    void* symbol = dlsym(RTLD_DEFAULT, name);
    if (symbol == nullptr) continue;
    Dl_info info{};
    ASSERT_NE(dladdr(symbol, &info), 0) << name;
    ASSERT_NE(info.dli_fname, nullptr) << name;
    EXPECT_EQ(std::string(info.dli_fname).find("sentencepiece"), std::string::npos)
        << name << " resolves into " << info.dli_fname;
  }
}

}  // namespace
}  // namespace qkscope::text
