// The report's numbers: the sample, per head the faithfulness at every constant and the PCA
// pictures, and report.json.
#include "qkscope/joint_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <thread>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "qkscope/atomic_file.h"
#include "qkscope/error.h"
#include "qkscope/faithfulness.h"

namespace qkscope {
namespace {

// Bytes one sampled token costs per head in report.html: q and k as float16 in base64, and the
// PCA picture (query and key, x and y as uint16 in base64) per constant.
double bytes_per_token(int head_dim, size_t n_scales) {
  return 2.0 * head_dim * 2 * 4 / 3 + 4.0 * 2 * 4 / 3 * static_cast<double>(n_scales);
}

// Whole sequences in a seeded random order until the token budget is spent (a sequence that
// does not fit is passed over, a later shorter one may still fit). The generator's raw output
// drives the shuffle, so the sample is the same on every platform.
void draw_sample(const QkData& data, int64_t max_tokens, uint64_t seed, JointReport& report) {
  std::vector<int64_t> begin;  // first token of each sequence
  for (int64_t t = 0; t < data.n_tokens(); ++t)
    if (t == 0 || data.sequence[t] != data.sequence[t - 1]) begin.push_back(t);
  const int64_t n_seq = static_cast<int64_t>(begin.size());
  begin.push_back(data.n_tokens());
  std::vector<int64_t> order(static_cast<size_t>(n_seq));
  for (int64_t i = 0; i < n_seq; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n_seq - 1; i > 0; --i) std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
  std::vector<int64_t> chosen;
  int64_t used = 0;
  for (int64_t s : order) {
    const int64_t size = begin[s + 1] - begin[s];
    if (used + size > max_tokens) continue;
    chosen.push_back(s);
    used += size;
  }
  std::sort(chosen.begin(), chosen.end());
  for (int64_t s : chosen) {
    report.sequences.push_back(data.sequence[begin[s]]);
    report.sizes.push_back(begin[s + 1] - begin[s]);
    for (int64_t t = begin[s]; t < begin[s + 1]; ++t) report.tokens.push_back(t);
  }
}

// The two leading principal axes of the joint cloud X [m, D] (rows queries then keys) and the
// coordinates. Each axis's sign makes its largest-magnitude entry positive (first one on ties),
// so the picture does not depend on the eigen solver's sign.
std::vector<float> pca_2d(const Eigen::MatrixXd& x) {
  const Eigen::RowVectorXd mean = x.colwise().mean();
  const Eigen::MatrixXd centred = x.rowwise() - mean;
  const Eigen::MatrixXd cov = centred.transpose() * centred / static_cast<double>(x.rows());
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(cov);
  const Eigen::Index d = x.cols();
  Eigen::MatrixXd axes(d, 2);
  for (int a = 0; a < 2; ++a) {
    Eigen::VectorXd v = a < d ? Eigen::VectorXd(solver.eigenvectors().col(d - 1 - a))
                              : Eigen::VectorXd::Zero(d);
    Eigen::Index arg = 0;
    for (Eigen::Index i = 1; i < d; ++i)
      if (std::abs(v[i]) > std::abs(v[arg])) arg = i;
    if (v[arg] < 0) v = -v;
    axes.col(a) = v;
  }
  const Eigen::MatrixXd coords = centred * axes;  // relative to the joint centroid
  std::vector<float> out(static_cast<size_t>(x.rows()) * 2);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    out[2 * r] = static_cast<float>(coords(r, 0));
    out[2 * r + 1] = static_cast<float>(coords(r, 1));
  }
  return out;
}

void compute_head(const QkData& data, const CTable& table, const HeadResult& result,
                  const JointReport& report, ReportHead& out) {
  const std::vector<double>& scales = table.options.scales;
  const PairScope scope = table.options.pairs;
  const SiteData* site = nullptr;
  for (size_t s = 0; s < data.sites.size(); ++s)
    if (data.sites[s].layer == result.layer) site = &data.sites[s], out.site = static_cast<int>(s);
  QKSCOPE_ASSERT(site != nullptr);
  int slot = -1;
  for (int h = 0; h < site->n_heads; ++h)
    if (site->head_index[h] == result.head) slot = h;
  QKSCOPE_ASSERT(slot >= 0);
  out.layer = result.layer;
  out.head = slot;

  // The sample's tokens finite in this head (the others go into out.nonfinite).
  const int64_t n = static_cast<int64_t>(report.tokens.size());
  const int dim = site->head_dim;
  std::vector<float> q, k;
  std::vector<int64_t> sequence, position, kept;
  q.reserve(static_cast<size_t>(n * dim));
  k.reserve(q.capacity());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = report.tokens[i];
    const size_t from = (static_cast<size_t>(t) * site->n_heads + slot) * dim;
    const float* qt = site->q.data() + from;
    const float* kt = site->k.data() + from;
    if (!std::all_of(qt, qt + dim, [](float v) { return std::isfinite(v); }) ||
        !std::all_of(kt, kt + dim, [](float v) { return std::isfinite(v); })) {
      out.nonfinite.push_back(i);
      continue;
    }
    q.insert(q.end(), qt, qt + dim);
    k.insert(k.end(), kt, kt + dim);
    sequence.push_back(data.sequence[t]);
    position.push_back(data.position[t]);
    kept.push_back(i);
  }
  const int64_t m = static_cast<int64_t>(kept.size());
  const HeadVectors head{m, dim, q.data(), k.data(), dim, sequence.data(), position.data()};
  const AttendedSets attended = most_attended(head, scope, report.options.k);
  out.queries = static_cast<int64_t>(attended.queries.size());
  Eigen::MatrixXd x(2 * m, dim);
  for (double c : scales) {
    out.pca.emplace_back(static_cast<size_t>(4 * n), std::numeric_limits<float>::quiet_NaN());
    if (m == 0) {
      out.faithfulness_d.emplace_back();
      out.faithfulness_2d.emplace_back();
      continue;
    }
    out.faithfulness_d.push_back(faithfulness_d(head, attended, scope, c));
    const std::vector<double> shift = key_translation(head, c);
    for (int64_t i = 0; i < m; ++i)
      for (int d = 0; d < dim; ++d) {
        x(i, d) = c * q[i * dim + d];
        x(m + i, d) = k[i * dim + d] / c + shift[d];
      }
    const std::vector<float> xy = pca_2d(x);  // [2m, 2]: kept queries, then kept keys
    out.faithfulness_2d.push_back(faithfulness_2d(head, attended, scope, xy.data(), xy.data() + 2 * m));
    float* full = out.pca.back().data();  // [2n, 2]: every sample token, NaN where left out
    for (int64_t r = 0; r < m; ++r)
      for (int a = 0; a < 2; ++a) {
        full[2 * kept[r] + a] = xy[2 * r + a];
        full[2 * (n + kept[r]) + a] = xy[2 * (m + r) + a];
      }
  }
  // The constant that maximises faithfulness_2d; ties as SPEC 3's choice (|log c|, then c).
  std::vector<std::optional<double>> negated;
  for (const auto& f : out.faithfulness_2d) negated.push_back(f ? std::optional<double>(-*f) : std::nullopt);
  if (auto best = choose_scale(scales, negated, SelectRule::min)) out.c_faithfulness_2d = scales[*best];
}

nlohmann::json optional_number(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

JointReport compute_joint_report(const QkData& data, const CTable& table,
                                 const ReportOptions& options) {
  QKSCOPE_CHECK_AS(UsageError, options.k >= 1, "--report-k: expected >= 1, got {}", options.k);
  JointReport report;
  report.options = options;
  int64_t max_tokens = options.max_tokens;
  if (max_tokens <= 0) {
    int max_dim = 1;
    for (const SiteData& s : data.sites) max_dim = std::max(max_dim, s.head_dim);
    const double per_token = bytes_per_token(max_dim, table.options.scales.size()) *
                             static_cast<double>(std::max<size_t>(table.heads.size(), 1));
    // At most 750: UMAP of one constant in the page (umap-js) stays within 3 s (README).
    max_tokens = std::clamp<int64_t>(static_cast<int64_t>(options.budget_bytes / per_token), 200, 750);
  }
  report.options.max_tokens = max_tokens;
  draw_sample(data, max_tokens, options.seed, report);
  report.heads.resize(table.heads.size());
  // Heads are independent: a few workers, each taking the next head.
  const unsigned workers = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(),
                                                           static_cast<unsigned>(table.heads.size())));
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(workers);
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      try {
        for (size_t h; (h = next++) < table.heads.size();)
          compute_head(data, table, table.heads[h], report, report.heads[h]);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return report;
}

std::string report_json(const JointReport& report, const CTable& table, const RunInfo& run) {
  using nlohmann::json;
  json j;
  j["format"] = "qkscope.report.v1";
  j["model"] = run.model;
  j["input"] = run.input;
  j["k"] = report.options.k;
  j["pairs"] = to_string(table.options.pairs);
  j["scales"] = table.options.scales;
  j["translation"] = "keys k/c + t, t = mean(c q) - mean(k/c) over the sample's tokens";
  j["nonfinite"] = "a sample token whose q or k of a head holds NaN or Inf is left out of that "
                   "head's picture, translation and faithfulness (as query and as key), as the "
                   "table leaves it out of the head's metrics; counted in nonfinite_tokens";
  j["sample"] = {{"seed", report.options.seed},
                 {"max_tokens", report.options.max_tokens},
                 {"tokens", report.tokens.size()},
                 {"sequences", report.sequences},
                 {"sizes", report.sizes},
                 {"rule", "whole sequences in a seeded random order (mt19937_64) while they fit "
                          "max_tokens; the same sample for every head"}};
  j["projection"] = {
      {"faithfulness_2d", "pca"},
      {"pca", {{"computed", "capture (Eigen, double): the two leading eigenvectors of the joint "
                            "cloud's covariance, each signed so its largest entry is positive"},
               {"components", 2}}},
      {"umap", {{"computed", "report.html, on demand (umap-js 1.4.0)"},
                {"distance", "cosine"}, {"nNeighbors", 15}, {"minDist", 0.1},
                {"nEpochs", 200}, {"seed", report.options.seed}}}};
  json heads = json::array();
  for (size_t h = 0; h < report.heads.size(); ++h) {
    const ReportHead& r = report.heads[h];
    const HeadResult& t = table.heads[h];
    json scales = json::array();
    for (size_t c = 0; c < table.options.scales.size(); ++c)
      scales.push_back({{"c", table.options.scales[c]},
                        {"faithfulness_d", optional_number(r.faithfulness_d[c])},
                        {"faithfulness_2d", optional_number(r.faithfulness_2d[c])}});
    heads.push_back({{"layer", t.layer}, {"head", t.head}, {"module", t.module},
                     {"prescale", t.prescale}, {"queries", r.queries},
                     {"nonfinite_tokens", r.nonfinite.size()},
                     {"c_wcorr", optional_number(t.c_wcorr)},
                     {"c_wcorr_scaled", optional_number(t.c_wcorr_scaled)},
                     {"c_norm", optional_number(t.c_norm)},
                     {"c_faithfulness_2d", optional_number(r.c_faithfulness_2d)},
                     {"scales", std::move(scales)}});
  }
  j["heads"] = std::move(heads);
  return j.dump(1) + "\n";
}

std::vector<std::string> write_report(const std::string& dir, const QkData& data,
                                      const CTable& table, const RunInfo& run,
                                      const ReportOptions& options) {
  const JointReport report = compute_joint_report(data, table, options);
  return write_files_together(dir, {{"report.json", report_json(report, table, run)},
                                    {"report.html", report_html(report, data, table, run)}});
}

}  // namespace qkscope
