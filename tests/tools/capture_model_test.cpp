// capture over the reference models in models/: text, ids and tensor inputs in, tables out.
// The table of every run must equal the engine's table on the q/k the run saved.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "cli_test_util.h"
#include "qkscope/qk_file.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using testing::CliResult;
using testing::fresh_dir;
using testing::read_text;
using testing::run_capture;
using testing::write_file;

const std::string kModels = QKSCOPE_MODELS_DIR;

std::string model(const std::string& name) { return kModels + "/" + name + ".pt"; }

// A BERT vocab worked by hand for the sentences below (ids are line numbers from 0).
const char* kVocab =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\non\nmat\n.\na\n##s\ndog\nrun\n";

int lines_of(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

// Runs `args --out DIR --save-qk FILE`, then `--qk FILE --out DIR2` with the same metric options,
// and checks both tables are the same. Returns the saved q/k.
QkData run_and_check_table(const std::string& name, const std::string& args,
                           const std::string& metric_args = "") {
  fs::path out = fresh_dir("qkscope_model_" + name);
  fs::path again = fresh_dir("qkscope_model_" + name + "_again");
  fs::path saved = fs::temp_directory_path() / ("qkscope_model_" + name + ".safetensors");
  CliResult r = run_capture(args + " --out " + out.string() + " --save-qk " + saved.string() +
                            " --quiet " + metric_args);
  EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
  CliResult q = run_capture("--qk " + saved.string() + " --out " + again.string() + " --quiet " +
                            metric_args);
  EXPECT_EQ(q.status, 0) << q.err;
  EXPECT_EQ(read_text(out / "heads.csv"), read_text(again / "heads.csv")) << name;
  EXPECT_EQ(read_text(out / "scales.csv"), read_text(again / "scales.csv")) << name;
  return read_qk_file(saved.string());
}

TEST(CaptureModelTest, SkippedSitesAreListedSaidAndRecorded) {
  // A decoder layer: its self-attention is captured, its cross-attention is not, and says why.
  CliResult list = run_capture("--model " + model("cross_decoder") + " --list-sites");
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_NE(list.out.find("decoder.layers.0.self_attn"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("[skipped: cross-attention"), std::string::npos) << list.out;
  // torch.nn's slow path: baddbmm as torch 1.x traces it, SDPA as torch 2.x does.
  EXPECT_TRUE(list.out.find("baddbmm") != std::string::npos ||
              list.out.find("sdpa") != std::string::npos) << list.out;
  fs::path out = fresh_dir("qkscope_model_cross_decoder");
  CliResult r = run_capture("--model " + model("cross_decoder") + " --inputs " + kModels +
                            "/cross_decoder_inputs.safetensors --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("decoder.layers.0.multihead_attn) is not captured: cross-attention"),
            std::string::npos) << r.err;
  const std::string json = read_text(out / "ctable.json");
  EXPECT_NE(json.find("\"skipped_sites\""), std::string::npos);
  EXPECT_NE(json.find("decoder.layers.0.multihead_attn"), std::string::npos);
  EXPECT_EQ(lines_of(read_text(out / "heads.csv")), 1 + 4);  // one captured layer of 4 heads
}

TEST(CaptureModelTest, MaxLengthBeyondThePositionTableIsAUsageError) {
  fs::path out = fresh_dir("qkscope_model_max_length");
  fs::path corpus = write_file("qkscope_model_max_length.txt", "the cat sat on the mat .\n");
  fs::path vocab = write_file("qkscope_model_max_length_vocab.txt", kVocab);
  CliResult r = run_capture("--model " + model("bert") + " --text " + corpus.string() +
                            " --vocab " + vocab.string() + " --max-length 100000 --out " +
                            out.string());
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("--max-length 100000 is longer than the model's position table (64 "
                       "positions"), std::string::npos) << r.err;
  CliResult pad = run_capture("--model " + model("bert") + " --text " + corpus.string() +
                              " --vocab " + vocab.string() + " --pad-to 100 --out " + out.string());
  EXPECT_EQ(pad.status, 2) << pad.err;
  EXPECT_NE(pad.err.find("--pad-to 100 is longer than the model's position table"),
            std::string::npos) << pad.err;
}

TEST(CaptureModelTest, ListSitesShowsLayersAndModules) {
  CliResult r = run_capture("--model " + model("bert") + " --list-sites");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), 4) << r.out;  // header + 3 sites
  for (int l = 0; l < 3; ++l)
    EXPECT_NE(r.out.find("encoder.layer." + std::to_string(l) + ".attention.self"), std::string::npos) << r.out;
}

TEST(CaptureModelTest, InputsModeForEveryFamily) {
  for (const char* family : {"bert", "gpt2", "distilbert", "llama", "t5", "vit", "bert_scripted"}) {
    SCOPED_TRACE(family);
    QkData data = run_and_check_table(
        family, "--model " + model(family) + " --inputs " + kModels + "/" + family + "_inputs.safetensors --batch-size 2");
    EXPECT_FALSE(data.sites.empty());
    // Right padding 12, 9, 5 in text models; ViT: 2 images of 17 tokens.
    EXPECT_EQ(data.n_tokens(), std::string(family) == "vit" ? 34 : 26);
  }
}

TEST(CaptureModelTest, TextWithVocabTokenizesAsWorkedByHand) {
  fs::path vocab = write_file("qkscope_vocab.txt", kVocab);
  fs::path corpus = write_file("qkscope_corpus.txt", "The cat sat on the mat.\n\n  \nA dog runs.\nZebra!\n");
  QkData data = run_and_check_table(
      "text", "--model " + model("bert") + " --text " + corpus.string() + " --vocab " + vocab.string(),
      "--pairs causal");
  // [CLS] the cat sat on the mat . [SEP] / [CLS] a dog run ##s . [SEP] / [CLS] [UNK] [UNK] [SEP]
  const std::vector<int64_t> ids = {2, 5, 6, 7, 8, 5, 9, 10, 3, 2, 11, 13, 14, 12, 10, 3, 2, 1, 1, 3};
  const std::vector<int64_t> seq = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2};
  EXPECT_EQ(data.token_id, ids);
  EXPECT_EQ(data.sequence, seq);
  EXPECT_EQ(data.position[9], 0);
  EXPECT_EQ(data.sites.size(), 3u);
}

TEST(CaptureModelTest, LongLinesAreSplitIntoChunksWithSpecialTokens) {
  fs::path vocab = write_file("qkscope_vocab.txt", kVocab);
  fs::path corpus = write_file("qkscope_long.txt", "the cat sat on the mat . a dog\n");
  QkData data = run_and_check_table(
      "chunks", "--model " + model("bert") + " --text " + corpus.string() + " --vocab " + vocab.string() +
                    " --max-length 6");
  // 9 content ids in chunks of 4: [CLS] the cat sat on [SEP] | [CLS] the mat . a [SEP] | [CLS] dog [SEP]
  const std::vector<int64_t> ids = {2, 5, 6, 7, 8, 3, 2, 5, 9, 10, 11, 3, 2, 13, 3};
  EXPECT_EQ(data.token_id, ids);
  EXPECT_EQ(data.sequence.back(), 2);
}

TEST(CaptureModelTest, IdsModeWithLayersAndBudget) {
  fs::path ids = write_file("qkscope_ids.txt", "2 5 6 7 3\n2 9 10 3\n\n2 11 13 14 12 10 3\n2 5 3\n");
  QkData all = run_and_check_table("ids", "--model " + model("bert") + " --ids " + ids.string());
  EXPECT_EQ(all.n_tokens(), 5 + 4 + 7 + 3);
  QkData some = run_and_check_table(
      "ids_layers", "--model " + model("bert") + " --ids " + ids.string() + " --layers 0,2 --max-tokens 9 --seed 3");
  ASSERT_EQ(some.sites.size(), 2u);
  EXPECT_EQ(some.sites[0].layer, 0);
  EXPECT_EQ(some.sites[1].layer, 2);
  EXPECT_LE(some.n_tokens(), 9);
  EXPECT_EQ(some.tokens_seen, 19);
}

// Padding to a fixed width changes the shapes LibTorch multiplies (so the last bits of q/k), not
// which tokens are captured or their vectors beyond rounding.
TEST(CaptureModelTest, PadToCapturesTheSameTokens) {
  fs::path ids = write_file("qkscope_ids_pad.txt", "2 5 6 7 3\n2 9 10 3\n");
  fs::path qa = fs::temp_directory_path() / "qkscope_pad_a.safetensors";
  fs::path qb = fs::temp_directory_path() / "qkscope_pad_b.safetensors";
  const std::string base = "--model " + model("bert") + " --ids " + ids.string() + " --quiet --out /tmp/qkscope_pad_out";
  ASSERT_EQ(run_capture(base + " --save-qk " + qa.string()).status, 0);
  ASSERT_EQ(run_capture(base + " --pad-to 12 --save-qk " + qb.string()).status, 0);
  QkData a = read_qk_file(qa.string()), b = read_qk_file(qb.string());
  EXPECT_EQ(a.token_id, b.token_id);
  EXPECT_EQ(a.position, b.position);
  ASSERT_EQ(a.sites.size(), b.sites.size());
  for (size_t s = 0; s < a.sites.size(); ++s) {
    ASSERT_EQ(a.sites[s].q.size(), b.sites[s].q.size());
    for (size_t i = 0; i < a.sites[s].q.size(); ++i) {
      ASSERT_NEAR(a.sites[s].q[i], b.sites[s].q[i], 1e-5);
      ASSERT_NEAR(a.sites[s].k[i], b.sites[s].k[i], 1e-5);
    }
  }
}

struct BadCase {
  std::string args;
  int status;
  std::string expected;
};

TEST(CaptureModelTest, BadInputsGiveOneLineErrors) {
  fs::path vocab = write_file("qkscope_vocab.txt", kVocab);
  fs::path no_unk = write_file("qkscope_vocab_nounk.txt", "[PAD]\n[CLS]\n[SEP]\nthe\n");
  fs::path corpus = write_file("qkscope_corpus.txt", "The cat.\n");
  fs::path empty = write_file("qkscope_empty.txt", "\n  \n\n");
  fs::path bad_utf8 = write_file("qkscope_bad_utf8.txt", "fine line\nbad \xC3\x28 byte\n");
  fs::path ids_range = write_file("qkscope_ids_range.txt", "2 5 3\n2 100 3\n");
  fs::path ids_text = write_file("qkscope_ids_text.txt", "2 five 3\n");
  fs::path ids_ok = write_file("qkscope_ids_ok.txt", "2 5 3\n");
  fs::path unigram = write_file("qkscope_unigram.json",
                                R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})");
  const std::string bert = " --model " + model("bert") + " --out /tmp/qkscope_bad_out --quiet";
  const std::vector<BadCase> cases = {
      {bert + " --text /nonexistent/corpus.txt --vocab " + vocab.string(), 1, "/nonexistent/corpus.txt"},
      {bert + " --text " + empty.string() + " --vocab " + vocab.string(), 1, "empty corpus"},
      {bert + " --text " + bad_utf8.string() + " --vocab " + vocab.string(), 1, ":2:"},
      {bert + " --text " + corpus.string() + " --vocab " + no_unk.string(), 1, "[UNK]"},
      {bert + " --text " + corpus.string() + " --tokenizer " + unigram.string(), 1, "Unigram"},
      {bert + " --ids " + ids_range.string(), 1, "token id 100"},
      {bert + " --ids " + ids_range.string(), 1, ":2:"},
      {bert + " --ids " + ids_text.string(), 1, "'five'"},
      {" --model " + model("vit") + " --ids " + ids_text.string() + " --out /tmp/x", 1, "'five'"},
      {" --model /nonexistent/m.pt --list-sites", 1, "/nonexistent/m.pt"},
      {" --model " + model("mlp") + " --list-sites", 1, "no attention site"},
      {" --model " + model("corrupt") + " --list-sites", 1, "failed to load model"},
      {" --model " + model("not_torchscript") + " --list-sites", 1, "failed to load model"},
      {bert + " --ids " + ids_range.string() + " --bogus", 2, "bogus"},
      {bert + " --ids " + ids_ok.string() + " --layers 7", 1, "7"},
  };
  for (const BadCase& c : cases) {
    CliResult r = run_capture(c.args);
    EXPECT_EQ(r.status, c.status) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(lines_of(r.err), 1) << c.args << "\n" << r.err;
  }
}

TEST(CaptureModelTest, UnbindableForwardPrintsTheSchema) {
  fs::path ids = write_file("qkscope_ids_ok.txt", "2 5 3\n");
  CliResult r = run_capture("--model " + model("vit") + " --ids " + ids.string() + " --out /tmp/x --quiet");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("pixel_values"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace qkscope

namespace qkscope {
namespace {

// True once `pid` catches `signal` (the SigCgt mask of /proc/<pid>/status), within 60 s.
bool wait_for_handler(pid_t pid, int signal) {
  for (int i = 0; i < 3000; ++i) {
    std::string status = read_text("/proc/" + std::to_string(pid) + "/status");
    size_t at = status.find("SigCgt:");
    if (at != std::string::npos) {
      unsigned long long mask = std::stoull(status.substr(at + 7), nullptr, 16);
      if (mask & (1ULL << (signal - 1))) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A long run stopped by SIGINT or SIGTERM ends within about a second, with exit status 1, a
// one-line message, no output file and no temporary file left behind.
void expect_clean_stop(int signal) {
  std::string ids;
  for (int s = 0; s < 20000; ++s) ids += "2 5 6 7 8 9 10 11 12 13 5 6 7 3\n";
  fs::path corpus = write_file("qkscope_long_ids.txt", ids);
  fs::path out = fresh_dir("qkscope_interrupted");
  fs::path saved = fs::temp_directory_path() / "qkscope_interrupted.safetensors";
  fs::remove(saved);
  fs::path err = fs::temp_directory_path() / "qkscope_interrupted_err.txt";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* e = std::freopen(err.c_str(), "w", stderr);
    (void)e;
    std::string model_path = model("bert");
    execl(QKSCOPE_CAPTURE_EXE, QKSCOPE_CAPTURE_EXE, "--model", model_path.c_str(), "--ids",
          corpus.c_str(), "--out", out.c_str(), "--save-qk", saved.c_str(), (char*)nullptr);
    _exit(127);
  }
  // Signal only once the program has installed its handlers (before that, the default action
  // would kill it: that is process start-up, not the behaviour under test), then let it work.
  ASSERT_TRUE(wait_for_handler(pid, signal)) << "capture never installed its signal handler";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(kill(pid, signal), 0);
  const auto sent = std::chrono::steady_clock::now();
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  EXPECT_LT(seconds, 1.5);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::string message = read_text(err);
  EXPECT_NE(message.find("interrupted"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(saved));
  EXPECT_FALSE(fs::exists(out / "heads.csv"));
  for (const auto& dir : {out, fs::temp_directory_path()})
    if (fs::exists(dir))
      for (const auto& entry : fs::directory_iterator(dir))
        EXPECT_EQ(entry.path().filename().string().find("qkscope_interrupted.safetensors.tmp"),
                  std::string::npos) << entry.path();
}

TEST(CaptureInterruptTest, SigintStopsCleanly) { expect_clean_stop(SIGINT); }
TEST(CaptureInterruptTest, SigtermStopsCleanly) { expect_clean_stop(SIGTERM); }

}  // namespace
}  // namespace qkscope
