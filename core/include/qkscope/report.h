// Writes the outputs of a run (SPEC section 4) into a folder: heads.csv, scales.csv,
// ctable.json, heatmaps.svg. Each file is written under a temporary name and renamed, so an
// interrupted run never leaves a file that looks complete.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "qkscope/metrics.h"

namespace qkscope {

// Settings of the run recorded in ctable.json next to MetricOptions.
struct RunInfo {
  std::string model;   // model file, or the q/k file analysed
  std::string input;   // corpus / inputs file; may be empty
  std::optional<int64_t> max_tokens;
  uint64_t seed = 0;
  // Attention sites of the model that were not captured, with the reason (ctable.json lists
  // them so that a table never hides what it left out).
  struct SkippedSite {
    int site = 0;
    std::string form, module, reason;
  };
  std::vector<SkippedSite> skipped_sites;
};

// Creates `dir` if needed and writes the four files; returns their paths.
std::vector<std::string> write_outputs(const std::string& dir, const CTable& table,
                                       const RunInfo& run);

std::string heads_csv(const CTable& table);
std::string scales_csv(const CTable& table);
std::string ctable_json(const CTable& table, const RunInfo& run);
std::string heatmaps_svg(const CTable& table);

}  // namespace qkscope
