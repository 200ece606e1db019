#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qkscope/report.h"

namespace qkscope {
namespace {

CTable sample_table() {
  CTable t;
  t.options.scales = {0.5, 2};
  HeadResult h;
  h.layer = 0;
  h.head = 1;
  h.module = "encoder.layer.0.attention.self";
  h.tokens = 10;
  h.threshold = 0.1;
  h.median_q_norm = 1.0 / 3.0;
  h.median_k_norm = 2;
  h.c_wcorr = 0.5;
  h.c_norm = std::sqrt(6.0);
  ScaleResult a{0.5, -0.75, -0.9, 4, 12};
  ScaleResult b{2, std::nullopt, std::nullopt, 0, 1};
  h.scales = {a, b};
  t.heads.push_back(h);
  HeadResult empty = h;
  empty.layer = 1;
  empty.head = 0;
  empty.module = "a,\"b\"";
  empty.c_wcorr = std::nullopt;
  empty.c_norm = std::nullopt;
  t.heads.push_back(empty);
  return t;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(ReportTest, HeadsCsvRoundTripsNumbersAndLeavesUndefinedEmpty) {
  auto rows = lines(heads_csv(sample_table()));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], "layer,head,module,c_wcorr,c_wcorr_scaled,c_norm,threshold,median_q_norm,"
                     "median_k_norm,tokens,prescale");
  EXPECT_EQ(rows[1], "0,1,encoder.layer.0.attention.self,0.5,,2.449489742783178,0.1,"
                     "0.3333333333333333,2,10,1");
  EXPECT_EQ(std::stod("2.449489742783178"), std::sqrt(6.0));
  EXPECT_EQ(std::stod("0.3333333333333333"), 1.0 / 3.0);
  EXPECT_EQ(rows[2], "1,0,\"a,\"\"b\"\"\",,,,0.1,0.3333333333333333,2,10,1");
}

TEST(ReportTest, ScalesCsvHasOneRowPerHeadAndScale) {
  auto rows = lines(scales_csv(sample_table()));
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0], "layer,head,c,wcorr,wcorr_scaled,queries,near_pairs");
  EXPECT_EQ(rows[1], "0,1,0.5,-0.75,-0.9,4,12");
  EXPECT_EQ(rows[2], "0,1,2,,,0,1");
}

TEST(ReportTest, JsonHasSettingsCountsAndNulls) {
  RunInfo run;
  run.model = "m.pt";
  run.max_tokens = 1000;
  std::string json = ctable_json(sample_table(), run);
  EXPECT_NE(json.find("\"format\": \"qkscope.ctable.v1\""), std::string::npos);
  EXPECT_NE(json.find("\"pairs\": \"sequence\""), std::string::npos);
  EXPECT_NE(json.find("\"max_tokens\": 1000"), std::string::npos);
  EXPECT_NE(json.find("\"c_wcorr\": null"), std::string::npos);
  EXPECT_NE(json.find("\"skipped_sites\": []"), std::string::npos);
}

TEST(ReportTest, JsonListsSkippedSitesWithTheirReason) {
  RunInfo run;
  run.skipped_sites.push_back({3, "baddbmm", "decoder.layers.0.multihead_attn", "cross-attention"});
  auto doc = nlohmann::json::parse(ctable_json(sample_table(), run));
  ASSERT_EQ(doc["skipped_sites"].size(), 1u);
  EXPECT_EQ(doc["skipped_sites"][0]["site"], 3);
  EXPECT_EQ(doc["skipped_sites"][0]["form"], "baddbmm");
  EXPECT_EQ(doc["skipped_sites"][0]["module"], "decoder.layers.0.multihead_attn");
  EXPECT_EQ(doc["skipped_sites"][0]["reason"], "cross-attention");
}

TEST(ReportTest, HeatmapShowsEveryCellAndMarksEmptyOnes) {
  std::string svg = heatmaps_svg(sample_table());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("layer 1 head 0: no value"), std::string::npos);
  EXPECT_NE(svg.find("c = 0.5"), std::string::npos);
  EXPECT_NE(svg.find("norm ratio"), std::string::npos);
}

TEST(ReportTest, WritesAllFilesAndNoTemporaries) {
  auto dir = std::filesystem::temp_directory_path() / "qkscope_report_test";
  std::filesystem::remove_all(dir);
  auto paths = write_outputs(dir.string(), sample_table(), RunInfo{});
  ASSERT_EQ(paths.size(), 4u);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ++files;
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos);
  }
  EXPECT_EQ(files, 4);
  std::filesystem::remove_all(dir);
}

TEST(ReportTest, UnwritableFolderIsAClearError) {
  EXPECT_THROW(write_outputs("/proc/qkscope-cannot-write", sample_table(), RunInfo{}), std::exception);
}

}  // namespace
}  // namespace qkscope
