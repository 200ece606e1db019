// heads.csv, scales.csv and ctable.json (SPEC section 4). Numbers are written in the shortest
// form that reads back to the same double; undefined values are empty cells (null in JSON).
#include "qkscope/report.h"

#include <filesystem>
#include <memory>
#include <system_error>

#include <nlohmann/json.hpp>

#include "qkscope/atomic_file.h"
#include "qkscope/error.h"

namespace qkscope {
namespace {

std::string number(double v) { return fmt::format("{}", v); }
std::string number(const std::optional<double>& v) { return v ? number(*v) : std::string(); }

// RFC 4180 quoting for the module path (the only free-text field).
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char ch : text) {
    if (ch == '"') quoted += '"';
    quoted += ch;
  }
  return quoted + "\"";
}

nlohmann::json optional_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

std::string heads_csv(const CTable& table) {
  std::string out =
      "layer,head,module,c_wcorr,c_wcorr_scaled,c_norm,threshold,median_q_norm,median_k_norm,"
      "tokens,prescale\n";
  for (const HeadResult& h : table.heads) {
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", h.layer, h.head, csv_field(h.module),
                       number(h.c_wcorr), number(h.c_wcorr_scaled), number(h.c_norm),
                       number(h.threshold), number(h.median_q_norm), number(h.median_k_norm),
                       h.tokens, number(h.prescale));
  }
  return out;
}

std::string scales_csv(const CTable& table) {
  std::string out = "layer,head,c,wcorr,wcorr_scaled,queries,near_pairs\n";
  for (const HeadResult& h : table.heads)
    for (const ScaleResult& s : h.scales)
      out += fmt::format("{},{},{},{},{},{},{}\n", h.layer, h.head, number(s.c), number(s.wcorr),
                         number(s.wcorr_scaled), s.queries, s.near_pairs);
  return out;
}

std::string ctable_json(const CTable& table, const RunInfo& run) {
  const MetricOptions& o = table.options;
  nlohmann::json settings = {
      {"model", run.model},
      {"input", run.input},
      {"scales", o.scales},
      {"pairs", to_string(o.pairs)},
      {"percentile", o.percentile},
      {"center", o.center},
      {"select", to_string(o.select)},
      {"max_tokens", run.max_tokens ? nlohmann::json(*run.max_tokens) : nlohmann::json(nullptr)},
      {"seed", run.seed},
  };
  int64_t n_sites = 0;
  for (size_t i = 0; i < table.heads.size(); ++i)
    if (i == 0 || table.heads[i].layer != table.heads[i - 1].layer) ++n_sites;
  nlohmann::json counts = {
      {"tokens_seen", table.tokens_seen},       {"tokens_kept", table.tokens_kept},
      {"sequences_seen", table.sequences_seen}, {"sequences_kept", table.sequences_kept},
      {"sites", n_sites},                       {"heads", table.heads.size()},
  };
  nlohmann::json heads = nlohmann::json::array();
  for (const HeadResult& h : table.heads) {
    nlohmann::json scales = nlohmann::json::array();
    for (const ScaleResult& s : h.scales)
      scales.push_back({{"c", s.c},
                        {"wcorr", optional_json(s.wcorr)},
                        {"wcorr_scaled", optional_json(s.wcorr_scaled)},
                        {"queries", s.queries},
                        {"near_pairs", s.near_pairs}});
    heads.push_back({{"layer", h.layer},
                     {"head", h.head},
                     {"module", h.module},
                     {"prescale", h.prescale},
                     {"tokens", h.tokens},
                     {"nonfinite_tokens", h.nonfinite_tokens},
                     {"pairs", h.pairs},
                     {"threshold", optional_json(h.threshold)},
                     {"median_q_norm", h.median_q_norm},
                     {"median_k_norm", h.median_k_norm},
                     {"c_wcorr", optional_json(h.c_wcorr)},
                     {"c_wcorr_scaled", optional_json(h.c_wcorr_scaled)},
                     {"c_norm", optional_json(h.c_norm)},
                     {"scales", scales}});
  }
  nlohmann::json skipped = nlohmann::json::array();
  for (const RunInfo::SkippedSite& s : run.skipped_sites)
    skipped.push_back({{"site", s.site}, {"form", s.form}, {"module", s.module}, {"reason", s.reason}});
  nlohmann::json doc = {{"format", "qkscope.ctable.v1"},
                        {"settings", settings},
                        {"counts", counts},
                        {"heads", heads},
                        {"skipped_sites", skipped}};
  return doc.dump(1) + "\n";
}

std::vector<std::string> write_outputs(const std::string& dir, const CTable& table,
                                       const RunInfo& run) {
  return write_files_together(dir, {{"heads.csv", heads_csv(table)},
                                    {"scales.csv", scales_csv(table)},
                                    {"ctable.json", ctable_json(table, run)},
                                    {"heatmaps.svg", heatmaps_svg(table)}});
}

}  // namespace qkscope
