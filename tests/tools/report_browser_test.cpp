// report.html in headless Chromium (Debian's `chromium`), from file://, network off: no error,
// no request, the overview and a head view render with drawn points, and values read from the
// page (PCA coordinates, faithfulness) equal those computed here independently.
#include <gtest/gtest.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "qkscope/qk_file.h"
#include "report_test_util.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;

std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (fs::exists(p)) return p;
  return "";
}

std::string unescape_html(std::string s) {
  const std::pair<const char*, const char*> entities[] = {{"&quot;", "\""}, {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}};
  for (const auto& [from, to] : entities)
    for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += std::strlen(to))
      s.replace(p, std::strlen(from), to);
  return s;
}

// Chromium with no network: every host resolves to nothing, every request would go to a closed
// proxy; the page's Content-Security-Policy also forbids any load.
std::string chromium_command(const std::string& chromium, const fs::path& profile) {
  return chromium + " --headless --disable-gpu --no-sandbox --no-first-run --disable-extensions"
         " --disable-background-networking --disable-sync --host-resolver-rules='MAP * ~NOTFOUND'"
         " --proxy-server=http://127.0.0.1:9 --user-data-dir=" + profile.string();
}

// Opens `dir`/report.html at `hash` (the page's test hook) and returns what the hook wrote.
nlohmann::json page_test_output(const std::string& chromium, const fs::path& dir, const std::string& hash) {
  const fs::path dom = dir / "dom.html", log = dir / "chromium.log";
  const std::string url = "'file://" + (dir / "report.html").string() + "#" + hash + "'";
  const std::string cmd = "timeout 50 " + chromium_command(chromium, dir / "profile") +
                          " --virtual-time-budget=8000 --dump-dom " + url + " >" + dom.string() +
                          " 2>" + log.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << testing::read_text(log);
  const std::string html = testing::read_text(dom);
  const size_t at = html.find("<pre id=\"qk-test\">");
  if (at == std::string::npos) {
    ADD_FAILURE() << "the page's test hook did not run; chromium said:\n"
                  << testing::read_text(log).substr(0, 3000);
    return nlohmann::json::object();
  }
  const size_t from = at + std::strlen("<pre id=\"qk-test\">");
  return nlohmann::json::parse(unescape_html(html.substr(from, html.find("</pre>", from) - from)));
}

TEST(ReportBrowserTest, ExampleReportRendersOfflineWithIndependentValues) {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "chromium is not installed (tools/setup.sh installs Debian's 'chromium')";
  const fs::path dir = testing::fresh_dir("qkscope_report_browser");
  const fs::path qk = dir / "qk.safetensors";
#ifdef QKSCOPE_HAVE_PLUGIN
  // The built-in example (a budget keeps the saved q/k small).
  const std::string ex = QKSCOPE_EXAMPLE_DIR;
  auto r = testing::run_capture("--model " + ex + "/bert_kjv.pt --text " + ex + "/corpus.txt --vocab " +
                                ex + "/vocab.txt --max-tokens 20000 --out " + dir.string() +
                                " --save-qk " + qk.string() + " --report --quiet");
#else
  fs::create_directories(dir);
  fs::copy_file(QKSCOPE_EXAMPLE_QK, qk);
  auto r = testing::run_capture("--qk " + qk.string() + " --out " + dir.string() + " --report --quiet");
#endif
  ASSERT_EQ(r.status, 0) << r.err;
  const auto report = nlohmann::json::parse(testing::read_text(dir / "report.json"));
  const int head_index = 5;
  ASSERT_GT(report["heads"].size(), size_t{head_index});

  const auto page = page_test_output(chromium, dir, "test=" + std::to_string(head_index) + "&umap=1");
  ASSERT_FALSE(page.empty());

  EXPECT_TRUE(page["errors"].empty()) << page["errors"].dump();
  EXPECT_EQ(page["resources"], 0) << "the page made a request";
  EXPECT_EQ(page["overview_cells"], report["heads"].size());
  EXPECT_GT(page["drawn_pixels"].get<int>(), 2000) << "the head view's large plot is blank";
  EXPECT_TRUE(page["umap_again_equal"].get<bool>()) << "UMAP is not deterministic";
  std::printf("overview %.0f ms, head view %.0f ms, UMAP of one constant %.0f ms (neighbours %.0f, "
              "epochs %.0f; %d tokens)\n",
              page["overview_ms"].get<double>(), page["head_ms"].get<double>(),
              page["umap_ms"].get<double>(), page["umap"]["neighbours_ms"].get<double>(),
              page["umap"]["epochs_ms"].get<double>(), page["tokens"].get<int>());
  EXPECT_LE(page["tokens"].get<int>(), 750) << "the default sample keeps UMAP within its budget";

  // Independent PCA pictures of the head from the saved q/k and report.json's sample.
  const QkData data = read_qk_file(qk.string());
  const auto& jh = report["heads"][head_index];
  size_t site = 0;
  while (data.sites[site].layer != jh["layer"].get<int>()) ++site;
  int slot = 0;
  while (data.sites[site].head_index[slot] != jh["head"].get<int>()) ++slot;
  const auto h = testing::sample_head(data, site, slot,
                                      report["sample"]["sequences"].get<std::vector<int64_t>>());
  ASSERT_EQ(page["tokens"].get<int64_t>(), h.n);
  const auto scales = report["scales"].get<std::vector<double>>();
  for (size_t ci = 0; ci < scales.size(); ++ci) {
    const auto got = page["pca"][ci].get<std::vector<double>>();
    const auto want = testing::pca_picture(h, scales[ci]);
    ASSERT_EQ(got.size(), want.size());
    double range = 0, err = 0, mq[2] = {0, 0}, mk[2] = {0, 0};
    for (size_t i = 0; i < want.size(); ++i) range = std::max(range, std::abs(want[i]));
    for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
    // Tolerance: the page's uint16 grid (range / 65535) and float32 coordinates.
    EXPECT_LT(err, 1e-4 * range) << "PCA at c = " << scales[ci];
    // Translation: the plotted query and key clouds share their centroid.
    for (int64_t i = 0; i < h.n; ++i)
      for (int a = 0; a < 2; ++a) mq[a] += got[2 * i + a] / h.n, mk[a] += got[2 * (h.n + i) + a] / h.n;
    EXPECT_LT(std::hypot(mq[0] - mk[0], mq[1] - mk[1]), 1e-4 * range) << "c = " << scales[ci];
    // faithfulness in the page (recomputed there from its own coordinates) and in report.json.
    const double f2 = jh["scales"][ci]["faithfulness_2d"];
    EXPECT_EQ(page["faithfulness_2d"][ci].get<double>(), f2);
    EXPECT_NEAR(page["faithfulness_2d_page"][ci].get<double>(), f2, 5e-3) << "c = " << scales[ci];
    EXPECT_NEAR(page["faithfulness_d"][ci].get<double>(), testing::brute_faithfulness_d(h, 5, scales[ci]), 1e-12);
  }

  // A screenshot of the page: a PNG with content (not a blank page).
  const fs::path png = dir / "screenshot.png", log = dir / "chromium.log";
  const std::string shot = "timeout 50 " + chromium_command(chromium, dir / "profile") +
                           " --window-size=1280,1600 --virtual-time-budget=3000 --screenshot=" +
                           png.string() + " 'file://" + (dir / "report.html").string() +
                           "#test=" + std::to_string(head_index) + "' >" + log.string() + " 2>&1";
  ASSERT_EQ(std::system(shot.c_str()), 0) << testing::read_text(log);
  ASSERT_TRUE(fs::exists(png));
  EXPECT_GT(fs::file_size(png), 20000u) << "screenshot looks blank";
}

// Tokens with NaN/Inf in a head's q or k: the page draws the head without them, its faithfulness
// and UMAP leave them out, and nothing fails.
TEST(ReportBrowserTest, NonFiniteTokensAreLeftOutInThePage) {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "chromium is not installed (tools/setup.sh installs Debian's 'chromium')";
  const fs::path dir = testing::fresh_dir("qkscope_report_browser_nonfinite");
  fs::create_directories(dir);
  const QkData data = testing::with_nonfinite(read_qk_file(QKSCOPE_EXAMPLE_QK));
  write_qk_file((dir / "qk.safetensors").string(), data);
  auto r = testing::run_capture("--qk " + (dir / "qk.safetensors").string() + " --out " +
                                dir.string() + " --report --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto report = nlohmann::json::parse(testing::read_text(dir / "report.json"));
  for (int slot : {0, 1}) {  // NaN in the queries of stored head 0, Inf in the keys of head 1
    SCOPED_TRACE(slot);
    size_t hi = 0;
    while (report["heads"][hi]["layer"] != data.sites[0].layer ||
           report["heads"][hi]["head"] != data.sites[0].head_index[slot]) ++hi;
    const auto& jh = report["heads"][hi];
    const auto page = page_test_output(chromium, dir, "test=" + std::to_string(hi) + "&umap=1");
    ASSERT_FALSE(page.empty());
    EXPECT_TRUE(page["errors"].empty()) << page["errors"].dump();
    EXPECT_GT(page["drawn_pixels"].get<int>(), 1000);
    const int64_t n = page["tokens"];
    const auto h = testing::sample_head(data, 0, slot, report["sample"]["sequences"].get<std::vector<int64_t>>());
    ASSERT_EQ(h.n, n);
    std::vector<bool> left_out(n);
    for (int64_t i = 0; i < n; ++i)
      for (int d = 0; d < h.dim; ++d)
        if (!std::isfinite(h.q[i * h.dim + d]) || !std::isfinite(h.k[i * h.dim + d])) left_out[i] = true;
    int64_t count = 0;
    for (bool b : left_out) count += b;
    EXPECT_EQ(jh["nonfinite_tokens"], count);
    for (size_t ci = 0; ci < page["pca"].size(); ++ci) {
      const auto& xy = page["pca"][ci];
      for (int64_t i = 0; i < n; ++i)  // left out: no point (NaN, null in JSON), as query and key
        for (int64_t row : {i, n + i}) EXPECT_EQ(xy[2 * row].is_null(), bool(left_out[i])) << i;
      EXPECT_NEAR(page["faithfulness_2d_page"][ci].get<double>(),
                  jh["scales"][ci]["faithfulness_2d"].get<double>(), 5e-3);
    }
    EXPECT_TRUE(page["umap_faithfulness_2d"].is_number()) << page.dump().substr(0, 500);
    EXPECT_TRUE(page["umap_again_equal"].get<bool>());
  }
}

}  // namespace
}  // namespace qkscope
