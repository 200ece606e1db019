// capture --qk a b ...: the q/k files of runs over two corpora, merged under one budget, give
// the tables of one run over both corpora (same seed, same sequence indices); merges of
// different seeds, sites or overlapping sequences are refused naming the difference.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_test_util.h"
#include "qkscope/qk_file.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_capture;

const std::string kExample = QKSCOPE_EXAMPLE_DIR;

class MergeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_dir("qkscope_merge_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ifstream in(kExample + "/corpus.txt");
    std::ofstream a(dir_ / "a.txt"), b(dir_ / "b.txt"), ab(dir_ / "ab.txt");
    std::string line;
    // 96 lines: a multiple of the batch size, so b's batches are those of the single run.
    for (int i = 0; i < 200 && std::getline(in, line); ++i) {
      (i < 96 ? a : b) << line << "\n";
      ab << line << "\n";
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string run_args(const std::string& corpus, const std::string& extra) const {
    return "--model " + kExample + "/bert_kjv.pt --vocab " + kExample + "/vocab.txt --text " +
           (dir_ / corpus).string() + " --batch-size 8 --threads 1 --quiet " + extra;
  }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  void expect_tables_equal(const std::string& a, const std::string& b) const {
    for (const char* file : {"heads.csv", "scales.csv"}) {
      SCOPED_TRACE(file);
      const std::string ta = read_text(dir_ / a / file), tb = read_text(dir_ / b / file);
      EXPECT_FALSE(ta.empty());
      EXPECT_EQ(ta, tb);
    }
  }
  fs::path dir_;
};

TEST_F(MergeTest, MergedFilesEqualOneRunOverBothCorpora) {
  const std::string budget = " --max-tokens 2500 --seed 5";
  ASSERT_EQ(run_capture(run_args("ab.txt", budget + " --out " + p("single"))).status, 0);
  ASSERT_EQ(run_capture(run_args("a.txt", budget + " --out " + p("oa") + " --save-qk " + p("a.st"))).status, 0);
  const int64_t a_sequences = read_qk_file(p("a.st")).sequences_seen;
  ASSERT_EQ(run_capture(run_args("b.txt", budget + " --first-sequence " + std::to_string(a_sequences) +
                                              " --out " + p("ob") + " --save-qk " + p("b.st"))).status, 0);
  auto merged = run_capture("--qk " + p("b.st") + " " + p("a.st") + " --max-tokens 2500 --quiet --out " + p("merged"));
  ASSERT_EQ(merged.status, 0) << merged.err;
  expect_tables_equal("single", "merged");
  // The budget applies once over both: a smaller one on the merge equals it on the single run.
  ASSERT_EQ(run_capture(run_args("ab.txt", " --max-tokens 1200 --seed 5 --out " + p("single_small"))).status, 0);
  ASSERT_EQ(run_capture("--qk " + p("a.st") + " " + p("b.st") + " --max-tokens 1200 --quiet --out " + p("merged_small")).status, 0);
  expect_tables_equal("single_small", "merged_small");
}

TEST_F(MergeTest, RefusesMergesNamingTheDifference) {
  ASSERT_EQ(run_capture(run_args("a.txt", "--max-tokens 2000 --seed 5 --out " + p("oa") + " --save-qk " + p("a.st"))).status, 0);
  ASSERT_EQ(run_capture(run_args("b.txt", "--max-tokens 2000 --seed 6 --first-sequence 96 --out " + p("ob") + " --save-qk " + p("b.st"))).status, 0);
  ASSERT_EQ(run_capture(run_args("b.txt", "--seed 5 --first-sequence 96 --layers 0,1 --out " + p("oc") + " --save-qk " + p("c.st"))).status, 0);
  ASSERT_EQ(run_capture(run_args("b.txt", "--seed 5 --out " + p("od") + " --save-qk " + p("d.st"))).status, 0);
  const auto seeds = run_capture("--qk " + p("a.st") + " " + p("b.st") + " --out " + p("m"));
  EXPECT_EQ(seeds.status, 1);
  EXPECT_NE(seeds.err.find("sampled with seed 5 vs 6"), std::string::npos) << seeds.err;
  const auto layers = run_capture("--qk " + p("a.st") + " " + p("c.st") + " --out " + p("m"));
  EXPECT_EQ(layers.status, 1);
  EXPECT_NE(layers.err.find("layers 0,1,2,3 vs 0,1"), std::string::npos) << layers.err;
  const auto overlap = run_capture("--qk " + p("a.st") + " " + p("d.st") + " --out " + p("m"));
  EXPECT_EQ(overlap.status, 1);
  EXPECT_NE(overlap.err.find("both hold sequence"), std::string::npos) << overlap.err;
  const auto seed_flag = run_capture("--qk " + p("a.st") + " " + p("c.st") + " --seed 9 --out " + p("m"));
  EXPECT_EQ(seed_flag.status, 1);
}

}  // namespace
}  // namespace qkscope
