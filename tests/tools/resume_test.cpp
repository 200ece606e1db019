// capture --checkpoint / --resume as a user runs it: the process is killed with SIGKILL during a
// forward, during a checkpoint write and during the metrics, then resumed; the tables and the
// saved q/k (bytes and sequences.* identity keys) must be byte for byte those of the
// uninterrupted run, and every checkpoint records the identity of the sequences it kept. Runs the built-in example model over the first
// lines of its corpus (a second or two per run).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli_test_util.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_merge.h"
#include "qkscope/safetensors.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using testing::read_text;

const std::string kExample = QKSCOPE_EXAMPLE_DIR;

struct CliRun {
  int status = -1;  // exit status, or 128 + signal
  std::string err;
};

// Runs `prefix capture args` through /bin/sh (prefix: environment or ulimit).
CliRun run(const std::string& prefix, const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("qkscope_resume_err_" + std::to_string(::getpid()));
  const std::string cmd = prefix + " " + QKSCOPE_CAPTURE_EXE + " " + args + " >/dev/null 2>" +
                          err.string() + " </dev/null";
  const int raw = std::system(cmd.c_str());
  CliRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.err = read_text(err);
  return r;
}

class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_dir("qkscope_resume_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ifstream in(kExample + "/corpus.txt");
    std::ofstream out(dir_ / "corpus.txt");
    std::string line;
    std::ofstream big(dir_ / "big.txt");
    for (int i = 0; i < 1500 && std::getline(in, line); ++i) {
      if (i < 203) out << line << "\n";  // not a multiple of the batch size
      big << line << "\n";
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string args(const std::string& out, const std::string& corpus = "corpus.txt",
                   const std::string& seed = "5") const {
    return "--model " + kExample + "/bert_kjv.pt --vocab " + kExample + "/vocab.txt --text " +
           (dir_ / corpus).string() + " --max-tokens 2500 --seed " + seed +
           " --batch-size 8 --threads 1 --quiet --out " + (dir_ / out).string();
  }
  std::string ckpt() const { return (dir_ / "run.ckpt").string(); }
  void expect_tables_equal(const std::string& a, const std::string& b) const {
    for (const char* file : {"heads.csv", "scales.csv"}) {
      SCOPED_TRACE(file);
      const std::string ta = read_text(dir_ / a / file), tb = read_text(dir_ / b / file);
      EXPECT_FALSE(ta.empty());
      EXPECT_EQ(ta, tb);
    }
  }

  // The saved q/k of two runs: the same bytes, hence the same metadata (sequences.* included).
  void expect_qk_equal(const std::string& a, const std::string& b) const {
    const auto ma = SafetensorsFile::open((dir_ / a).string()).metadata();
    const auto mb = SafetensorsFile::open((dir_ / b).string()).metadata();
    EXPECT_EQ(ma, mb);
    EXPECT_EQ(ma.count("sequences.0.lines"), 1u);
    const std::string ba = read_text(dir_ / a), bb = read_text(dir_ / b);
    EXPECT_FALSE(ba.empty());
    EXPECT_TRUE(ba == bb) << a << " and " << b << " differ in their bytes";
  }
  // A checkpoint's sequences.* keys: the sequences offered so far (checkpoint.next_sequence of
  // them) from this corpus, and the line of each kept one. The first 203 lines of the example
  // corpus hold no blank line and none longer than --max-length: sequence i is line i + 1.
  void expect_checkpoint_identity() const {
    const auto m = SafetensorsFile::open(ckpt()).metadata();
    EXPECT_EQ(m.at("sequences.count"), "1");
    EXPECT_EQ(m.at("sequences.0.range"), "0:" + m.at("checkpoint.next_sequence"));
    EXPECT_EQ(m.at("sequences.0.source"), (dir_ / "corpus.txt").string());
    const QkData kept = read_qk_file(ckpt());
    const auto ranges = read_sequence_ranges(m, kept, ckpt());
    ASSERT_EQ(ranges.size(), 1u);
    size_t sequences = 0;
    for (int64_t t = 0; t < kept.n_tokens(); ++t) sequences += t == 0 || kept.sequence[t] != kept.sequence[t - 1];
    EXPECT_EQ(ranges[0].lines.size(), sequences);
    EXPECT_GT(sequences, 0u);
    for (const auto& [sequence, line] : ranges[0].lines) EXPECT_EQ(line, sequence + 1);
  }

  fs::path dir_;
};

TEST_F(ResumeTest, KilledAnywhereThenResumedGivesTheUninterruptedTables) {
  ASSERT_EQ(run("", args("base") + " --save-qk " + (dir_ / "base.qk").string()).status, 0);
  // 203 lines, batches of 8: sequence 90 is in the 12th forward; checkpoints every 16 sequences.
  for (const std::string point : {"forward:90", "checkpoint:3", "metrics:2"}) {
    SCOPED_TRACE(point);
    fs::remove(ckpt());
    const std::string out = "out_" + point.substr(0, point.find(':'));
    const std::string save = " --save-qk " + (dir_ / (out + ".qk")).string();
    CliRun killed = run("QKSCOPE_TEST_CRASH=" + point,
                     args(out) + save + " --checkpoint " + ckpt() + " --checkpoint-every 16");
    EXPECT_EQ(killed.status, 128 + SIGKILL) << killed.err;
    ASSERT_TRUE(fs::exists(ckpt()));
    EXPECT_FALSE(fs::exists(dir_ / out / "heads.csv"));
    EXPECT_NO_THROW(read_qk_file(ckpt()));  // the last complete checkpoint, a valid q/k file
    expect_checkpoint_identity();
    fs::remove(dir_ / (out + ".qk"));  // killed during the metrics: the run had saved it
    CliRun resumed = run("", args(out) + save + " --resume " + ckpt());
    ASSERT_EQ(resumed.status, 0) << resumed.err;
    expect_tables_equal("base", out);
    expect_qk_equal("base.qk", out + ".qk");
  }
}

TEST_F(ResumeTest, InterruptWritesACheckpointAndResumes) {
  ASSERT_EQ(run("", args("base", "big.txt")).status, 0);
  // SIGTERM once the run is going (its first checkpoint exists): one more is written on the way
  // out.
  const fs::path err = dir_ / "stopped.err";
  const std::string cmd = std::string(QKSCOPE_CAPTURE_EXE) + " " + args("out", "big.txt") +
                          " --checkpoint " + ckpt() + " --checkpoint-every 64 >/dev/null 2>" +
                          err.string() + " </dev/null & p=$!; while [ ! -e " + ckpt() +
                          " ]; do sleep 0.05; done; kill -TERM $p; wait $p";
  const int raw = std::system(cmd.c_str());
  CliRun stopped{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, read_text(err)};
  if (stopped.status == 0) GTEST_SKIP() << "the run finished before the signal";
  EXPECT_EQ(stopped.status, 1) << stopped.err;
  EXPECT_NE(stopped.err.find("checkpoint written to"), std::string::npos) << stopped.err;
  CliRun resumed = run("", args("out", "big.txt") + " --resume " + ckpt());
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  expect_tables_equal("base", "out");
}

TEST_F(ResumeTest, RefusesACheckpointOfOtherSettingsNamingTheDifference) {
  ASSERT_EQ(run("QKSCOPE_TEST_CRASH=forward:60", args("a") + " --checkpoint " + ckpt() +
                                                     " --checkpoint-every 16").status,
            128 + SIGKILL);
  CliRun seed = run("", args("a", "corpus.txt", "6") + " --resume " + ckpt());
  EXPECT_EQ(seed.status, 2);
  EXPECT_NE(seed.err.find("--seed differs"), std::string::npos) << seed.err;
  fs::copy_file(dir_ / "corpus.txt", dir_ / "other.txt");
  std::ofstream(dir_ / "other.txt", std::ios::app) << "One more line.\n";
  CliRun corpus = run("", args("a", "other.txt") + " --resume " + ckpt());
  EXPECT_EQ(corpus.status, 2);
  EXPECT_NE(corpus.err.find("corpus (--text) differs"), std::string::npos) << corpus.err;
}

TEST_F(ResumeTest, RefusesACheckpointWhoseLinesAreNotTheCorpus) {
  // The checkpoint's first recorded line changed in place (same length, the header stays
  // valid): the resumed run reads the corpus again and finds that sequence on another line.
  ASSERT_EQ(run("QKSCOPE_TEST_CRASH=forward:90", args("a") + " --checkpoint " + ckpt() +
                                                     " --checkpoint-every 16").status,
            128 + SIGKILL);
  std::string bytes = read_text(ckpt());
  const std::string key = "\"sequences.0.lines\":\"";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  char& digit = bytes[at + key.size()];
  ASSERT_TRUE(digit >= '1' && digit <= '9');
  digit = digit == '9' ? '8' : static_cast<char>(digit + 1);
  std::ofstream(ckpt(), std::ios::binary | std::ios::trunc) << bytes;
  CliRun resumed = run("", args("a") + " --resume " + ckpt());
  EXPECT_EQ(resumed.status, 1) << resumed.err;
  EXPECT_NE(resumed.err.find("the checkpoint kept sequence"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("but this corpus has it at line"), std::string::npos) << resumed.err;
  EXPECT_FALSE(fs::exists(dir_ / "a" / "heads.csv"));
}

TEST_F(ResumeTest, FullDiskKeepsThePreviousCheckpointAndStops) {
  // A 1 MB file size limit: the first checkpoints fit, a later one does not.
  CliRun full = run("ulimit -f 1024;", args("out") + " --checkpoint " + ckpt() + " --checkpoint-every 8");
  EXPECT_EQ(full.status, 1) << full.err;
  EXPECT_NE(full.err.find("checkpoint not written"), std::string::npos) << full.err;
  EXPECT_NE(full.err.find("File too large"), std::string::npos) << full.err;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "heads.csv"));
  ASSERT_TRUE(fs::exists(ckpt()));
  EXPECT_NO_THROW(read_qk_file(ckpt()));
  for (const auto& entry : fs::directory_iterator(dir_))  // no temporary left behind
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  // And the run goes on from it once there is room.
  ASSERT_EQ(run("", args("base")).status, 0);
  CliRun resumed = run("", args("out") + " --resume " + ckpt());
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  expect_tables_equal("base", "out");
}

}  // namespace
}  // namespace qkscope
