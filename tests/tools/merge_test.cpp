// capture --qk a b ...: the q/k files of runs over two corpora, merged under one budget, give
// the tables of one run over both corpora (same seed, same sequence indices); merges of
// different seeds, sites or overlapping sequences are refused naming the difference. Each file
// records where its sequences come from (sequences.* keys: the index range, the corpus, the line
// of each kept sequence), and two files whose ranges overlap are refused even when their samples
// share no sequence.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <vector>
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
  EXPECT_NE(overlap.err.find("both drew sequences 0..95 (" + p("a.st") + ": sequences 0..95 of " +
                             p("a.txt") + "; " + p("d.st") + ": sequences 0..103 of " + p("b.txt")),
            std::string::npos) << overlap.err;
  const auto seed_flag = run_capture("--qk " + p("a.st") + " " + p("c.st") + " --seed 9 --out " + p("m"));
  EXPECT_EQ(seed_flag.status, 1);
}

// The metadata of a q/k file, and the line of each kept sequence as sequence_metadata wrote it.
std::map<std::string, std::string> metadata_of(const std::string& path) {
  return SafetensorsFile::open(path).metadata();
}

TEST_F(MergeTest, FilesRecordEachSequencesCorpusAndLine) {
  // a.txt and b.txt hold no blank line and no line longer than --max-length: sequence i of a run
  // with --first-sequence F is line i - F + 1 of its corpus.
  ASSERT_EQ(run_capture(run_args("a.txt", "--max-tokens 1500 --seed 5 --out " + p("oa") + " --save-qk " + p("a.st"))).status, 0);
  ASSERT_EQ(run_capture(run_args("b.txt", "--max-tokens 1500 --seed 5 --first-sequence 500 --out " + p("ob") + " --save-qk " + p("b.st"))).status, 0);
  const auto a = metadata_of(p("a.st"));
  EXPECT_EQ(a.at("sequences.count"), "1");
  EXPECT_EQ(a.at("sequences.0.range"), "0:96");
  EXPECT_EQ(a.at("sequences.0.source"), p("a.txt"));
  const QkData a_data = read_qk_file(p("a.st"));
  std::vector<std::string> expected;
  for (size_t t = 0; t < a_data.sequence.size(); ++t)
    if (t == 0 || a_data.sequence[t] != a_data.sequence[t - 1])
      expected.push_back(std::to_string(a_data.sequence[t] + 1));
  ASSERT_FALSE(expected.empty());
  std::string joined;
  for (const std::string& e : expected) joined += (joined.empty() ? "" : ",") + e;
  EXPECT_EQ(a.at("sequences.0.lines"), joined);

  // The merged file keeps both ranges, and each kept sequence's line from its own file.
  ASSERT_EQ(run_capture("--qk " + p("b.st") + " " + p("a.st") + " --max-tokens 1500 --quiet --out " +
                        p("m") + " --save-qk " + p("m.st")).status, 0);
  const auto m = metadata_of(p("m.st"));
  EXPECT_EQ(m.at("sequences.count"), "2");
  EXPECT_EQ(m.at("sequences.0.range"), "0:96");
  EXPECT_EQ(m.at("sequences.0.source"), p("a.txt"));
  EXPECT_EQ(m.at("sequences.1.range"), "500:604");
  EXPECT_EQ(m.at("sequences.1.source"), p("b.txt"));
  const QkData merged = read_qk_file(p("m.st"));
  const auto ranges = read_sequence_ranges(m, merged, p("m.st"));
  ASSERT_EQ(ranges.size(), 2u);
  size_t lines = 0;
  for (const SequenceRange& r : ranges)
    for (const auto& [sequence, line] : r.lines) {
      EXPECT_EQ(line, sequence - r.begin + 1) << "sequence " << sequence;
      ++lines;
    }
  size_t kept = 0;
  for (size_t t = 0; t < merged.sequence.size(); ++t)
    kept += t == 0 || merged.sequence[t] != merged.sequence[t - 1];
  EXPECT_EQ(lines, kept);
}

TEST_F(MergeTest, OverlappingRangesAreRefusedEvenWhenNoSequenceIsInBoth) {
  // a's sample (a budget that binds) leaves out some sequence k of its range; a one-line corpus
  // run as sequence k shares no kept sequence with a, but draws an index a drew too: its priority
  // would be that of a's sequence k, which is not one sample of two sequences. Refused.
  ASSERT_EQ(run_capture(run_args("a.txt", "--max-tokens 1000 --seed 5 --out " + p("oa") + " --save-qk " + p("a.st"))).status, 0);
  const QkData a = read_qk_file(p("a.st"));
  int64_t k = 0;
  while (std::find(a.sequence.begin(), a.sequence.end(), k) != a.sequence.end()) ++k;
  ASSERT_LT(k, 96);
  std::ifstream in(dir_ / "b.txt");
  std::string line;
  std::getline(in, line);
  std::ofstream(dir_ / "one.txt") << line << "\n";
  ASSERT_EQ(run_capture(run_args("one.txt", "--seed 5 --first-sequence " + std::to_string(k) +
                                                " --out " + p("o1") + " --save-qk " + p("one.st"))).status, 0);
  const auto r = run_capture("--qk " + p("a.st") + " " + p("one.st") + " --out " + p("m"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("both drew sequences " + std::to_string(k) + ".." + std::to_string(k) + " ("),
            std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "m" / "heads.csv"));
}

}  // namespace
}  // namespace qkscope
