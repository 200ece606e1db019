#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "cli_test_util.h"

#include "qkscope/metrics.h"
#include "qkscope/qk_file.h"
#include "qkscope/report.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::read_text;
using testing::run_capture;
using Result = testing::CliResult;

TEST(CaptureCliTest, QkModeWritesTheEngineTable) {
  fs::path dir = fresh_dir("qkscope_cli_qk");
  Result r = run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out " + dir.string() +
                         " --pairs causal --center --percentile 1 --select min --scales log:0.25:4:5");
  ASSERT_EQ(r.status, 0) << r.err;
  // Independent path: the library on the same file and options, rendered by the same writers.
  MetricOptions o;
  o.pairs = PairScope::causal;
  o.center = true;
  o.percentile = 1;
  o.select = SelectRule::min;
  o.scales = parse_scales("log:0.25:4:5");
  CTable t = compute_ctable(read_qk_file(QKSCOPE_EXAMPLE_QK), o);
  EXPECT_EQ(read_text(dir / "heads.csv"), heads_csv(t));
  EXPECT_EQ(read_text(dir / "scales.csv"), scales_csv(t));
  EXPECT_TRUE(fs::exists(dir / "heatmaps.svg"));
  EXPECT_NE(read_text(dir / "ctable.json").find("\"pairs\": \"causal\""), std::string::npos);
  EXPECT_NE(r.err.find("heads.csv"), std::string::npos) << r.err;  // the summary says where
}

TEST(CaptureCliTest, QkModeWithBudgetAndSaveRoundTrips) {
  fs::path dir = fresh_dir("qkscope_cli_budget");
  fs::path saved = fs::temp_directory_path() / "qkscope_cli_saved.safetensors";
  Result r = run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out " + dir.string() +
                         " --max-tokens 100 --seed 4 --save-qk " + saved.string() + " --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  QkData kept = read_qk_file(saved.string());
  EXPECT_LE(kept.n_tokens(), 100);
  EXPECT_GT(kept.n_tokens(), 50);
  EXPECT_EQ(kept.tokens_seen, read_qk_file(QKSCOPE_EXAMPLE_QK).n_tokens());
  // The table of the saved sample equals the table written by the run.
  EXPECT_EQ(read_text(dir / "heads.csv"), heads_csv(compute_ctable(kept, MetricOptions{})));
}

TEST(CaptureCliTest, HelpExplainsTheModes) {
  Result r = run_capture("--help");
  EXPECT_EQ(r.status, 0);
}

TEST(CaptureCliTest, UsageErrorsExitTwoWithOneLine) {
  const char* cases[][2] = {
      {"", "expected --model"},
      {"--bogus", "bogus"},
      {"--qk x.safetensors", "--out"},
      {"--qk x --out d --scales 0,1", "--scales"},
      {"--qk x --out d --percentile 100", "--percentile"},
      {"--qk x --out d --pairs neighbours", "--pairs"},
      {"--qk x --out d --select max", "--select"},
      {"--qk x --out d --max-tokens 0", "--max-tokens"},
      {"--qk x --out d --model m.pt", "--qk"},
      {"--model m.pt --out d", "exactly one of --text"},
      {"--model m.pt --text c.txt --out d", "--tokenizer"},
      {"--model m.pt --list-sites --out d", "--list-sites"},
      {"--model m.pt --ids i.txt --out d --layers 3-1", "--layers"},
      {"--percentile abc", "percentile"},
  };
  for (const auto& c : cases) {
    Result r = run_capture(c[0]);
    EXPECT_EQ(r.status, 2) << c[0] << ": " << r.err;
    EXPECT_NE(r.err.find(c[1]), std::string::npos) << c[0] << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c[0] << ": " << r.err;
  }
}

TEST(CaptureCliTest, BadFilesExitOneWithOneLine) {
  fs::path bad = fs::temp_directory_path() / "qkscope_cli_bad.safetensors";
  std::ofstream(bad) << "not a safetensors file at all";
  Result missing = run_capture("--qk /nonexistent/run.safetensors --out /tmp/x");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("/nonexistent/run.safetensors"), std::string::npos) << missing.err;
  Result garbage = run_capture("--qk " + bad.string() + " --out /tmp/x");
  EXPECT_EQ(garbage.status, 1);
  EXPECT_EQ(std::count(garbage.err.begin(), garbage.err.end(), '\n'), 1) << garbage.err;
  Result unwritable = run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out /proc/nope");
  EXPECT_EQ(unwritable.status, 1);
  EXPECT_NE(unwritable.err.find("/proc/nope"), std::string::npos) << unwritable.err;
}

}  // namespace
}  // namespace qkscope
