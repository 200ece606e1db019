// report.html: one self-contained page. The numbers travel as one JSON block (bulk arrays in
// base64: q and k as float16 for UMAP and attention lines, PCA pictures as uint16 on each
// picture's own range); the page's script, style and umap-js are inlined from core/assets/report.
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "markup.h"
#include "qkscope/joint_report.h"

namespace qkscope {
namespace detail {
extern const char* const kReportJs;
extern const char* const kReportCss;
extern const char* const kUmapJs;
}  // namespace detail

namespace {

std::string base64(const void* data, size_t n) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0) |
                       (i + 2 < n ? uint32_t{p[i + 2]} : 0);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < n ? table[(v >> 6) & 63] : '=';
    out += i + 2 < n ? table[v & 63] : '=';
  }
  return out;
}

// IEEE binary16, round to nearest even; overflow to infinity, NaN kept.
uint16_t to_half(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (abs < 0x38800000u) {  // subnormal half (or zero)
    const float scaled = std::fabs(value) * 16777216.0f;  // 2^24: units of the smallest subnormal
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  const uint32_t mant = abs & 0x7fffffu;
  uint32_t h = ((abs >> 23) - 112) << 10 | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

std::string token_text(const QkData& data, const ReportOptions& options, int64_t t) {
  if (!data.has_token_ids()) return "patch " + std::to_string(data.position[t]);
  const int64_t id = data.token_id[t];
  if (options.token_text) {
    std::string s = options.token_text(id);
    if (!s.empty()) return s;
  }
  return "#" + std::to_string(id);
}

nlohmann::json optional_number(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// JSON inside <script>: no "</" may appear (a token could be "</script>").
std::string script_safe(std::string text) {
  for (size_t p = 0; (p = text.find("</", p)) != std::string::npos; p += 3) text.replace(p, 2, "<\\/");
  return text;
}


}  // namespace

std::string report_html(const JointReport& report, const QkData& data, const CTable& table,
                        const RunInfo& run) {
  using nlohmann::json;
  const int64_t n = static_cast<int64_t>(report.tokens.size());
  json tokens = {{"text", json::array()}, {"seq", json::array()}, {"pos", json::array()}};
  for (int64_t t : report.tokens) {
    tokens["text"].push_back(token_text(data, report.options, t));
    tokens["seq"].push_back(data.sequence[t]);
    tokens["pos"].push_back(data.position[t]);
  }
  json heads = json::array();
  std::vector<uint16_t> half, grid;
  for (size_t h = 0; h < report.heads.size(); ++h) {
    const ReportHead& r = report.heads[h];
    const HeadResult& t = table.heads[h];
    const SiteData& site = data.sites[static_cast<size_t>(r.site)];
    const int dim = site.head_dim;
    half.assign(static_cast<size_t>(2 * n * dim), 0);
    std::vector<bool> left_out(static_cast<size_t>(n), false);
    for (int64_t i : r.nonfinite) left_out[static_cast<size_t>(i)] = true;
    for (int64_t i = 0; i < n; ++i) {
      if (left_out[static_cast<size_t>(i)]) continue;  // NaN/Inf in this head: zeros, masked
      const size_t from = (static_cast<size_t>(report.tokens[i]) * site.n_heads + r.head) * dim;
      for (int d = 0; d < dim; ++d) {
        half[i * dim + d] = to_half(site.q[from + d]);
        half[(n + i) * dim + d] = to_half(site.k[from + d]);
      }
    }
    json pictures = json::array();
    for (const std::vector<float>& xy : r.pca) {
      // Range over the finite entries (NaN: a token left out of this head, stored as 0).
      float lo[2] = {0, 0}, hi[2] = {0, 0};
      bool any[2] = {false, false};
      for (size_t i = 0; i < xy.size(); ++i) {
        if (std::isnan(xy[i])) continue;
        lo[i % 2] = any[i % 2] ? std::min(lo[i % 2], xy[i]) : xy[i];
        hi[i % 2] = any[i % 2] ? std::max(hi[i % 2], xy[i]) : xy[i];
        any[i % 2] = true;
      }
      grid.resize(xy.size());
      for (size_t i = 0; i < xy.size(); ++i) {
        const float span = hi[i % 2] - lo[i % 2];
        grid[i] = span > 0 && !std::isnan(xy[i])
                      ? static_cast<uint16_t>(std::lround((xy[i] - lo[i % 2]) / span * 65535.0f))
                      : 0;
      }
      pictures.push_back({{"lo", {lo[0], lo[1]}}, {"hi", {hi[0], hi[1]}},
                          {"xy", base64(grid.data(), grid.size() * 2)}});
    }
    json fd = json::array(), f2 = json::array(), wcorr = json::array();
    for (const ScaleResult& sr : t.scales) wcorr.push_back(optional_number(sr.wcorr));
    for (const auto& v : r.faithfulness_d) fd.push_back(optional_number(v));
    for (const auto& v : r.faithfulness_2d) f2.push_back(optional_number(v));
    heads.push_back({{"layer", t.layer}, {"head", t.head}, {"module", t.module},
                     {"prescale", t.prescale}, {"dim", dim}, {"queries", r.queries},
                     {"nonfinite", r.nonfinite},
                     {"c_wcorr", optional_number(t.c_wcorr)},
                     {"c_wcorr_scaled", optional_number(t.c_wcorr_scaled)},
                     {"c_norm", optional_number(t.c_norm)},
                     {"c_faithfulness_2d", optional_number(r.c_faithfulness_2d)},
                     {"faithfulness_d", fd}, {"faithfulness_2d", f2}, {"wcorr", wcorr},
                     {"qk", base64(half.data(), half.size() * 2)}, {"pca", pictures}});
  }
  json page = {{"model", run.model}, {"input", run.input}, {"k", report.options.k},
               {"seed", report.options.seed}, {"pairs", to_string(table.options.pairs)},
               {"scales", table.options.scales}, {"tokens", tokens}, {"heads", heads},
               {"sample", {{"sequences", report.sequences.size()}, {"tokens", n},
                           {"max_tokens", report.options.max_tokens}}}};

  std::string svg = heatmaps_svg(table);
  if (svg.rfind("<?xml", 0) == 0) svg.erase(0, svg.find('\n') + 1);
  std::string html;
  html += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  html += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
          "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n";
  html += "<title>qkscope report: " + detail::xml_escape(run.model) + "</title>\n<style>\n";
  html += detail::kReportCss;
  html += "</style></head><body>\n<header><h1>qkscope: joint query/key report</h1><p>" +
          detail::xml_escape(run.model) + (run.input.empty() ? "" : " over " + detail::xml_escape(run.input)) +
          "</p></header>\n<section id=\"heatmaps\"><h2>Chosen c per head</h2>\n<div class=\"svg\">" +
          svg + "</div><div id=\"faithfulness-heatmap\"></div></section>\n";
  html += "<section id=\"overview\"><h2>All heads at their chosen c</h2><div id=\"overview-controls\">"
          "</div><div id=\"overview-grid\"></div></section>\n"
          "<section id=\"head-view\" hidden></section>\n<div id=\"tooltip\" hidden></div>\n";
  html += "<script id=\"qk-data\" type=\"application/json\">" + script_safe(page.dump()) + "</script>\n";
  html += "<script>\n" + script_safe(detail::kUmapJs) + "\n</script>\n<script>\n";
  html += detail::kReportJs;
  html += "\n</script>\n</body></html>\n";
  return html;
}

}  // namespace qkscope
