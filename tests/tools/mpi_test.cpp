// mpirun -np K capture as a user runs it: the built-in example model over the first 203 lines of
// its corpus (26 batches of 8, the last one partial). For K = 1, 2 and 3 (oversubscribed on
// this 2-core machine) heads.csv, scales.csv and the saved q/k must be byte for byte those of
// the run without mpirun, with and without a --max-tokens budget that binds; a failing rank ends the run with
// one error line and a non-zero status, within the timeout.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "cli_test_util.h"
#include "qkscope/qk_file.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using testing::read_text;

const std::string kExample = QKSCOPE_EXAMPLE_DIR;
// mpirun as root needs both; -q is what a user types too (no banners).
const std::string kMpirun = std::string("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ") +
                            "timeout -k 5 180 " + QKSCOPE_MPIEXEC + " -q";

struct Result {
  int status = -1;
  std::string err;
};

Result shell(const std::string& cmd, const fs::path& err) {
  const int raw = std::system((cmd + " >/dev/null 2>" + err.string() + " </dev/null").c_str());
  return Result{WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw), read_text(err)};
}

class MpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_dir("qkscope_mpi_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ifstream in(kExample + "/corpus.txt");
    std::ofstream out(dir_ / "corpus.txt");
    std::string line;
    for (int i = 0; i < 203 && std::getline(in, line); ++i) out << line << "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string args(const std::string& out, const std::string& extra = "",
                   bool quiet = true) const {
    return "--model " + kExample + "/bert_kjv.pt --vocab " + kExample + "/vocab.txt --text " +
           (dir_ / "corpus.txt").string() + " --seed 5 --batch-size 8 --threads 1 " +
           (quiet ? "--quiet " : "") + "--out " + (dir_ / out).string() + " " + extra;
  }
  Result capture(const std::string& args) const {
    return shell(std::string(QKSCOPE_CAPTURE_EXE) + " " + args, dir_ / "err.txt");
  }
  Result mpirun(int np, const std::string& args) const {
    return shell(kMpirun + " -np " + std::to_string(np) + (np > 2 ? " --oversubscribe " : " ") +
                     QKSCOPE_CAPTURE_EXE + " " + args,
                 dir_ / "err.txt");
  }
  void expect_tables_equal(const std::string& a, const std::string& b) const {
    for (const char* file : {"heads.csv", "scales.csv", "ctable.json"}) {
      SCOPED_TRACE(std::string(file) + ": " + a + " vs " + b);
      const std::string ta = read_text(dir_ / a / file), tb = read_text(dir_ / b / file);
      EXPECT_FALSE(ta.empty());
      EXPECT_EQ(ta, tb);
    }
  }

  fs::path dir_;
};

TEST_F(MpiTest, RanksGiveTheTablesOfOneProcess) {
  // And the saved q/k of one process, byte for byte: the merged sample, its counts and cutoff,
  // and the sequences.* keys (the line of each kept sequence, which rank 0 notes for every
  // rank's batches while it reads the corpus).
  const auto save = [&](const std::string& name) {
    return " --save-qk " + (dir_ / (name + ".qk")).string();
  };
  for (const std::string budget : {"", "--max-tokens 2500"}) {
    SCOPED_TRACE("budget: '" + budget + "'");
    ASSERT_EQ(capture(args("plain", budget + save("plain"))).status, 0);
    const std::string plain_qk = read_text(dir_ / "plain.qk");
    ASSERT_NE(plain_qk.find("sequences.0.lines"), std::string::npos);
    for (int np : {1, 2, 3}) {
      const std::string out = "np" + std::to_string(np);
      fs::remove_all(dir_ / out);
      fs::remove(dir_ / (out + ".qk"));
      const Result r = mpirun(np, args(out, budget + save(out)));
      ASSERT_EQ(r.status, 0) << "np " << np << ": " << r.err;
      EXPECT_EQ(r.err, "") << "np " << np;  // --quiet: nothing from any rank
      expect_tables_equal("plain", out);
      EXPECT_TRUE(read_text(dir_ / (out + ".qk")) == plain_qk) << "np " << np << ": the saved q/k differs";
    }
  }
}

TEST_F(MpiTest, ProgressAndSummaryAreRankZerosOnly) {
  const Result r = mpirun(2, args("out", "--max-tokens 2500", /*quiet=*/false));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto count = [&](const std::string& s) {
    size_t n = 0;
    for (size_t at = r.err.find(s); at != std::string::npos; at = r.err.find(s, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("samples merged on rank 0"), 1u) << r.err;
  EXPECT_EQ(count("tokens kept"), 1u) << r.err;
}

TEST_F(MpiTest, AFailureOnEveryRankIsOneLine) {
  // --layers past the model's layers: found by every rank at its first forward; one line.
  Result none = mpirun(2, args("none", "--layers 9"));
  EXPECT_EQ(none.status, 1);
  EXPECT_EQ(std::count(none.err.begin(), none.err.end(), '\n'), 1) << none.err;
  EXPECT_NE(none.err.find("layer 9 requested but the model has 4 attention layers"), std::string::npos)
      << none.err;
  // A usage error every rank finds while parsing.
  Result bad = mpirun(3, args("bad", "--layers x"));
  EXPECT_EQ(bad.status, 2);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  EXPECT_EQ(bad.err.rfind("capture: --layers", 0), 0u) << bad.err;
  EXPECT_FALSE(fs::exists(dir_ / "bad" / "heads.csv"));
}

TEST_F(MpiTest, AFailingRankStopsTheRunAndNoRankHangs) {
  // Rank 1 alone gets a bad --layers (mpirun's MPMD form): rank 0 waits for it at the merge; rank
  // 1's line ends the run.
  const std::string cmd = kMpirun + " -np 1 " + QKSCOPE_CAPTURE_EXE + " " + args("out") + " : -np 1 " +
                          QKSCOPE_CAPTURE_EXE + " " + args("out", "--layers x");
  const auto start = std::chrono::steady_clock::now();
  const Result r = shell(cmd, dir_ / "err.txt");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.status, 124) << "timed out";
  EXPECT_LT(seconds, 60);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("capture: rank 1: --layers", 0), 0u) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "heads.csv"));
}

// `capture --qk FILES` under mpirun: rank 0 reads (and merges) the files, the heads are spread.
class MpiQkTest : public MpiTest {
 protected:
  void SetUp() override {
    MpiTest::SetUp();
    ASSERT_EQ(capture(args("a", "--save-qk " + path("a.qk"))).status, 0);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string qk_args(const std::string& files, const std::string& out, const std::string& extra = "",
                      bool quiet = true) const {
    return "--qk " + files + " --threads 1 " + (quiet ? "--quiet " : "") + "--out " + path(out) +
           " " + extra;
  }
};

TEST_F(MpiQkTest, RanksGiveTheTablesOfOneProcess) {
  // b.qk: the same lines as other sequences (distinct indices), so that the two files merge.
  ASSERT_EQ(capture(args("b", "--first-sequence 1000 --save-qk " + path("b.qk"))).status, 0);
  for (const std::string& files : {path("a.qk"), path("a.qk") + " " + path("b.qk") + " --max-tokens 3000"}) {
    SCOPED_TRACE("--qk " + files);
    fs::remove_all(dir_ / "plain");
    const Result plain = capture(qk_args(files, "plain"));
    ASSERT_EQ(plain.status, 0) << plain.err;
    for (int np : {1, 2, 3}) {
      const std::string out = "np" + std::to_string(np);
      fs::remove_all(dir_ / out);
      const Result r = mpirun(np, qk_args(files, out));
      ASSERT_EQ(r.status, 0) << "np " << np << ": " << r.err;
      EXPECT_EQ(r.err, "") << "np " << np;
      expect_tables_equal("plain", out);
    }
  }
}

TEST_F(MpiQkTest, EachRankGetsExactlyItsHeads) {
  // 16 heads (4 layers x 4) over 3 ranks: 5, 5 and 6. Rank 0 keeps the first 5 and sends ranks 1
  // and 2 the q/k of their 11 heads: 2 x 16 dims x 4 bytes per head and token, plus sequence and
  // position (16 bytes per token) for each of the two ranks, plus two small file headers.
  const int64_t n = read_qk_file(path("a.qk")).n_tokens();
  const Result r = mpirun(3, qk_args(path("a.qk"), "out", "", /*quiet=*/false));
  ASSERT_EQ(r.status, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex(
      R"(16 heads spread over 3 ranks \(at most 6 each\): their q/k sent from rank 0, ([0-9.]+) MB)")))
      << r.err;
  const double expected_mb = static_cast<double>(n * (11 * 16 * 4 * 2 + 2 * 16)) / 1e6;
  EXPECT_NEAR(std::stod(m[1].str()), expected_mb, 0.06) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 3) << r.err;  // spread, summary (2 lines)
}

TEST_F(MpiQkTest, MoreRanksThanHeads) {
  // Layer 0 alone: 4 heads over 5 ranks, so rank 0 (heads [0, 0)) computes none and ranks 1-4
  // one each; the table is still one process's.
  ASSERT_EQ(capture(args("l0", "--layers 0 --save-qk " + path("l0.qk"))).status, 0);
  ASSERT_EQ(capture(qk_args(path("l0.qk"), "plain")).status, 0);
  const Result r = mpirun(5, qk_args(path("l0.qk"), "np5", "", /*quiet=*/false));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("4 heads spread over 5 ranks (at most 1 each)"), std::string::npos) << r.err;
  expect_tables_equal("plain", "np5");
}

TEST_F(MpiQkTest, RanksWithOtherOptionsAreRefused) {
  // mpirun's A : B form with another grid on rank 1: rank 0 refuses its rows; one line, no hang.
  const std::string cmd = kMpirun + " -np 1 " + QKSCOPE_CAPTURE_EXE + " " + qk_args(path("a.qk"), "out") +
                          " : -np 1 " + QKSCOPE_CAPTURE_EXE + " " +
                          qk_args(path("a.qk"), "out", "--scales 0.5,2");
  const Result r = shell(cmd, dir_ / "err.txt");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("capture: error: rank 1 computed layer 2 head 0 over the scales 0.5,2, "
                       "rank 0's options are 0.2,0.4,0.8,1,1.25,2.5,5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "heads.csv"));
}

TEST_F(MpiQkTest, ARankKilledDuringItsHeadsStopsTheRun) {
  // Rank 1 dies (SIGKILL) after its first head while rank 0 waits for its rows: mpirun ends the
  // run; no rank waits for ever and no table is written.
  const std::string cmd = kMpirun + " -np 1 " + QKSCOPE_CAPTURE_EXE + " " + qk_args(path("a.qk"), "out") +
                          " : -np 1 env QKSCOPE_TEST_CRASH=metrics:1 " + QKSCOPE_CAPTURE_EXE + " " +
                          qk_args(path("a.qk"), "out");
  const auto start = std::chrono::steady_clock::now();
  const Result r = shell(cmd, dir_ / "err.txt");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.status, 0) << r.err;
  EXPECT_NE(r.status, 124) << "timed out";
  EXPECT_LT(seconds, 60);
  EXPECT_FALSE(fs::exists(dir_ / "out" / "heads.csv"));
}

TEST_F(MpiTest, RefusesCheckpointsUnderSeveralRanks) {
  Result r = mpirun(2, args("out", "--checkpoint " + (dir_ / "run.ckpt").string()));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("under mpirun -np 2"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace qkscope
