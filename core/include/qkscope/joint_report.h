// The joint query/key report (SPEC section 4, --report): report.json (per head and constant,
// faithfulness_d and faithfulness_2d of the PCA picture, the sample and the projection settings)
// and report.html (one self-contained offline page: heatmaps, layers x heads overview, per head
// the joint embedding of queries c.q and translated keys k/c + t at every constant, PCA computed
// here, UMAP (umap-js, cosine, seeded) computed in the page on demand).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/metrics.h"
#include "qkscope/qk_data.h"
#include "qkscope/report.h"

namespace qkscope {

struct ReportOptions {
  int k = 5;                     // |A_i| = |N_i|
  uint64_t seed = 0;             // the sample's and UMAP's seed
  // Tokens in the sample (whole sequences, the same for every head); 0 = as many as fit
  // `budget_bytes` for all heads, between 200 and 750 (750 tokens: 1500 points, UMAP of one
  // constant in the page within 3 s).
  int64_t max_tokens = 0;
  int64_t budget_bytes = int64_t{20} << 20;
  // Text of a token id for hover (from the tokenizer); empty: "#id", or "patch P" without ids.
  std::function<std::string(int64_t)> token_text;
};

// One head of the report: what report.json holds plus the picture's coordinates.
struct ReportHead {
  int layer = 0, head = 0, site = 0;  // site: index into QkData::sites; head: stored head slot
  int64_t queries = 0;                // sample queries with at least k keys in scope
  // Sample tokens (indices into JointReport::tokens, increasing) whose q or k of this head holds
  // NaN or Inf: left out of this head's picture, translation and faithfulness (as query and as
  // key), as compute_ctable leaves them out of the head's metrics. Their pca entries are NaN.
  std::vector<int64_t> nonfinite;
  std::vector<std::optional<double>> faithfulness_d, faithfulness_2d;  // per constant
  std::optional<double> c_faithfulness_2d;                             // argmax of _2d
  std::vector<std::vector<float>> pca;  // per constant: [2n queries then keys, 2] row-major
};

struct JointReport {
  ReportOptions options;
  std::vector<int64_t> tokens;            // sample: indices into QkData tokens, increasing
  std::vector<int64_t> sequences, sizes;  // the sample's sequences and their token counts
  std::vector<ReportHead> heads;          // in CTable::heads order
};

// Draws the sample and computes every head's faithfulness and PCA pictures. `table` is
// compute_ctable(data, ...) (its options give the scales and the pair scope).
JointReport compute_joint_report(const QkData& data, const CTable& table,
                                 const ReportOptions& options);

std::string report_json(const JointReport& report, const CTable& table, const RunInfo& run);
std::string report_html(const JointReport& report, const QkData& data, const CTable& table,
                        const RunInfo& run);

// Writes report.json and report.html into `dir` (atomically, both or neither); their paths.
std::vector<std::string> write_report(const std::string& dir, const QkData& data,
                                      const CTable& table, const RunInfo& run,
                                      const ReportOptions& options);

}  // namespace qkscope
