// capture --report: both files written, report.json's numbers for a head equal an independent
// computation from the q/k file and the sample report.json names.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "qkscope/qk_file.h"
#include "report_test_util.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;

TEST(ReportCliTest, QkModeWritesReportFilesWithIndependentValues) {
  const fs::path dir = testing::fresh_dir("qkscope_report_cli");
  auto r = testing::run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out " + dir.string() +
                                " --report --report-k 3 --seed 4 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(fs::exists(dir / "report.html"));
  const auto j = nlohmann::json::parse(testing::read_text(dir / "report.json"));
  EXPECT_EQ(j["format"], "qkscope.report.v1");
  EXPECT_EQ(j["k"], 3);
  EXPECT_EQ(j["sample"]["seed"], 4);
  const QkData data = read_qk_file(QKSCOPE_EXAMPLE_QK);
  const auto sequences = j["sample"]["sequences"].get<std::vector<int64_t>>();
  const auto sizes = j["sample"]["sizes"].get<std::vector<int64_t>>();
  ASSERT_FALSE(sequences.empty());
  // Head 1 of the last site, checked at every constant.
  const size_t site = data.sites.size() - 1;
  const int slot = std::min(1, data.sites[site].n_heads - 1);
  const auto h = testing::sample_head(data, site, slot, sequences);
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  EXPECT_EQ(h.n, total);
  const nlohmann::json* head = nullptr;
  for (const auto& x : j["heads"])
    if (x["layer"] == data.sites[site].layer && x["head"] == data.sites[site].head_index[slot]) head = &x;
  ASSERT_NE(head, nullptr);
  for (const auto& s : (*head)["scales"]) {
    const double c = s["c"];
    EXPECT_NEAR(s["faithfulness_d"].get<double>(), testing::brute_faithfulness_d(h, 3, c), 1e-12) << "c " << c;
    const auto xy = testing::pca_picture(h, c);
    const double f2 = testing::brute_faithfulness(h, 3, [&](int64_t i, int64_t k) {
      return std::hypot(float(xy[2 * i]) - float(xy[2 * (h.n + k)]),
                        float(xy[2 * i + 1]) - float(xy[2 * (h.n + k) + 1]));
    });
    EXPECT_NEAR(s["faithfulness_2d"].get<double>(), f2, 1e-9) << "c " << c;
  }
  // The same run again gives the same files (seeded sample, deterministic PCA).
  const fs::path again = testing::fresh_dir("qkscope_report_cli_again");
  r = testing::run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out " + again.string() +
                           " --report --report-k 3 --seed 4 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(testing::read_text(dir / "report.html"), testing::read_text(again / "report.html"));
  // --report-k is checked.
  EXPECT_EQ(testing::run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out " +
                                 again.string() + " --report --report-k 0").status, 2);
}

// NaN/Inf in a head's q or k: those tokens are left out of that head's picture and
// faithfulness (as the table leaves them out of its metrics), the other heads are untouched.
TEST(ReportCliTest, NonFiniteTokensAreLeftOutOfTheirHeadOnly) {
  const fs::path dir = testing::fresh_dir("qkscope_report_nonfinite");
  const QkData clean = read_qk_file(QKSCOPE_EXAMPLE_QK);
  const QkData data = testing::with_nonfinite(clean);
  fs::create_directories(dir);
  write_qk_file((dir / "qk.safetensors").string(), data);
  auto r = testing::run_capture("--qk " + (dir / "qk.safetensors").string() + " --out " +
                                (dir / "nan").string() + " --report --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  r = testing::run_capture(std::string("--qk ") + QKSCOPE_EXAMPLE_QK + " --out " +
                           (dir / "clean").string() + " --report --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(testing::read_text(dir / "nan" / "report.json"));
  const auto ref = nlohmann::json::parse(testing::read_text(dir / "clean" / "report.json"));
  const auto table = nlohmann::json::parse(testing::read_text(dir / "nan" / "ctable.json"));
  ASSERT_EQ(j["sample"], ref["sample"]);
  const auto sequences = j["sample"]["sequences"].get<std::vector<int64_t>>();
  const SiteData& site = data.sites.front();
  int affected = 0;
  for (size_t h = 0; h < j["heads"].size(); ++h) {
    const auto& jh = j["heads"][h];
    int slot = -1;
    if (jh["layer"] == site.layer)
      for (int s = 0; s < site.n_heads; ++s)
        if (site.head_index[s] == jh["head"]) slot = s;
    if (slot != 0 && slot != 1) {  // untouched head: as in the clean run
      EXPECT_EQ(jh, ref["heads"][h]);
      continue;
    }
    ++affected;
    const auto all = testing::sample_head(data, 0, slot, sequences);
    const auto h_fin = testing::finite_only(all);
    ASSERT_GT(all.n - h_fin.n, 10) << "slot " << slot;
    EXPECT_EQ(jh["nonfinite_tokens"], all.n - h_fin.n);
    EXPECT_EQ(table["heads"][h]["nonfinite_tokens"], all.n - h_fin.n);  // the whole file is sampled
    for (const auto& sc : jh["scales"]) {
      const double c = sc["c"];
      EXPECT_NEAR(sc["faithfulness_d"].get<double>(), testing::brute_faithfulness_d(h_fin, 5, c), 1e-12);
      const auto xy = testing::pca_picture(h_fin, c);
      const double f2 = testing::brute_faithfulness(h_fin, 5, [&](int64_t i, int64_t k) {
        return std::hypot(float(xy[2 * i]) - float(xy[2 * (h_fin.n + k)]),
                          float(xy[2 * i + 1]) - float(xy[2 * (h_fin.n + k) + 1]));
      });
      EXPECT_NEAR(sc["faithfulness_2d"].get<double>(), f2, 1e-9) << "c " << c;
    }
  }
  EXPECT_EQ(affected, 2);
  EXPECT_EQ(ref["heads"][0]["nonfinite_tokens"], 0);
}

#ifdef QKSCOPE_HAVE_PLUGIN
// An --inputs model without token ids (the generated ViT: 2 images of 17 tokens): both files,
// every head in report.json, and the page's hover texts are patch indices.
TEST(ReportCliTest, InputsModelWithoutTokenIdsLabelsPatches) {
  const fs::path models = QKSCOPE_MODELS_DIR;
  if (!fs::exists(models / "vit.pt")) GTEST_SKIP() << "build the qkscope_models target";
  const fs::path dir = testing::fresh_dir("qkscope_report_vit");
  auto r = testing::run_capture("--model " + (models / "vit.pt").string() + " --inputs " +
                                (models / "vit_inputs.safetensors").string() + " --out " +
                                dir.string() + " --report --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto table = nlohmann::json::parse(testing::read_text(dir / "ctable.json"));
  const auto j = nlohmann::json::parse(testing::read_text(dir / "report.json"));
  ASSERT_FALSE(j["heads"].empty());
  EXPECT_EQ(j["heads"].size(), table["heads"].size());
  EXPECT_EQ(j["sample"]["tokens"], 34);
  for (const auto& h : j["heads"]) {
    EXPECT_EQ(h["queries"], 34) << h.dump();  // 17 keys per image: every query qualifies
    for (const auto& s : h["scales"]) EXPECT_TRUE(s["faithfulness_2d"].is_number()) << h.dump();
  }
  // The page's data block: hover texts "patch P" with P the token's position in its image.
  const std::string html = testing::read_text(dir / "report.html");
  const std::string open = "<script id=\"qk-data\" type=\"application/json\">";
  const size_t from = html.find(open);
  ASSERT_NE(from, std::string::npos);
  const size_t begin = from + open.size();
  const auto page = nlohmann::json::parse(html.substr(begin, html.find("</script>", begin) - begin));
  const auto& tokens = page["tokens"];
  ASSERT_EQ(tokens["text"].size(), 34u);
  for (size_t i = 0; i < 34; ++i)
    EXPECT_EQ(tokens["text"][i], "patch " + std::to_string(tokens["pos"][i].get<int>())) << i;
  EXPECT_EQ(tokens["pos"][16], 16);
  EXPECT_EQ(tokens["seq"][17], 1);
}
#endif

}  // namespace
}  // namespace qkscope
