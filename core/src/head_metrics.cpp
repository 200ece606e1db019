// Exact per-head metrics in three steps:
//  1. Screen: for each block of pairs, one float Gram matrix q.k^T gives every distance under
//     every scale up to a proven margin; a running bound B (the K-th smallest upper bound seen)
//     keeps only the (pair, scale) items whose lower bound can still fall under it.
//  2. Recompute the survivors directly in double: ||c q - k/c|| and q.k. The K smallest exact
//     distances are among them, so the percentile threshold d is exact.
//  3. Weighted correlation per (query, scale) over the near keys (y < d), two-pass in double.
#include "head_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr int64_t kRowBlock = 256;   // queries per Gram block
constexpr int64_t kColBlock = 1024;  // keys per Gram block
constexpr double kInf = std::numeric_limits<double>::infinity();

// A contiguous run of tokens (one sequence, or everything for `all`) whose queries pair with
// keys of the same run. key_end[i] (absolute index) bounds the keys of query i (causal).
struct Region {
  int64_t begin = 0, end = 0;
};

// One (pair, scale) that may fall under the threshold.
struct Candidate {
  uint32_t query, key;
  uint32_t scale;
  double lower;  // lower bound of y^2
};

// The head's tokens sorted by (sequence, position), vectors in double (centred if asked),
// norms, and the float copies the Gram matrices are computed from.
struct PreparedHead {
  int64_t n = 0;
  int dim = 0;
  std::vector<int64_t> order;            // sorted index -> input token
  std::vector<int64_t> position;         // sorted
  std::vector<double> q, k;              // [n, dim] distance vectors (centred with --center)
  std::vector<double> q_raw, k_raw;      // [n, dim] the captured vectors, for x = q.k
  std::vector<double> q_norm2, k_norm2;  // squared norms of q, k (distance vectors)
  RowMatrixF qf, kf;                     // float copies of q, k
  std::vector<Region> regions;
  std::vector<int64_t> key_end;          // per sorted query: keys [region.begin, key_end)
};

PreparedHead prepare(const HeadInput& in, const MetricOptions& options) {
  PreparedHead h;
  h.n = in.n_tokens;
  h.dim = in.head_dim;
  const int64_t n = h.n, d = h.dim;
  h.order.resize(n);
  for (int64_t t = 0; t < n; ++t) h.order[t] = t;
  std::stable_sort(h.order.begin(), h.order.end(), [&](int64_t a, int64_t b) {
    if (in.sequence[a] != in.sequence[b]) return in.sequence[a] < in.sequence[b];
    return in.position[a] < in.position[b];
  });
  h.position.resize(n);
  h.q_raw.resize(n * d);
  h.k_raw.resize(n * d);
  for (int64_t t = 0; t < n; ++t) {
    int64_t src = h.order[t];
    h.position[t] = in.position[src];
    for (int64_t l = 0; l < d; ++l) {
      h.q_raw[t * d + l] = in.q[src * in.stride + l];
      h.k_raw[t * d + l] = in.k[src * in.stride + l];
    }
  }
  h.q = h.q_raw;
  h.k = h.k_raw;
  if (options.center && n > 0) {
    for (std::vector<double>* v : {&h.q, &h.k}) {
      std::vector<double> mean(d, 0.0);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t l = 0; l < d; ++l) mean[l] += (*v)[t * d + l];
      for (double& m : mean) m /= static_cast<double>(n);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t l = 0; l < d; ++l) (*v)[t * d + l] -= mean[l];
    }
  }
  h.q_norm2.assign(n, 0.0);
  h.k_norm2.assign(n, 0.0);
  h.qf.resize(n, d);
  h.kf.resize(n, d);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t l = 0; l < d; ++l) {
      double a = h.q[t * d + l], b = h.k[t * d + l];
      h.q_norm2[t] += a * a;
      h.k_norm2[t] += b * b;
      h.qf(t, l) = static_cast<float>(a);
      h.kf(t, l) = static_cast<float>(b);
    }
  }

  // Regions and causal key bounds.
  auto add_region = [&](int64_t b, int64_t e) { h.regions.push_back({b, e}); };
  if (options.pairs == PairScope::all) {
    if (n > 0) add_region(0, n);
  } else {
    int64_t start = 0;
    for (int64_t t = 1; t <= n; ++t)
      if (t == n || in.sequence[h.order[t]] != in.sequence[h.order[start]]) {
        add_region(start, t);
        start = t;
      }
  }
  h.key_end.resize(n);
  for (const Region& r : h.regions) {
    for (int64_t i = r.begin; i < r.end; ++i) {
      if (options.pairs == PairScope::causal) {
        // positions are sorted inside a region: keys with position <= p_i form a prefix.
        h.key_end[i] = std::upper_bound(h.position.begin() + r.begin, h.position.begin() + r.end,
                                        h.position[i]) - h.position.begin();
      } else {
        h.key_end[i] = r.end;
      }
    }
  }
  return h;
}

// Keeps B = the K-th smallest of the values offered so far (+inf until K were offered), with
// amortised O(1) work per value.
class KthSmallestBound {
 public:
  explicit KthSmallestBound(size_t k) : k_(k) {}
  double bound() const { return bound_; }
  void offer(double value) {
    if (value >= bound_) return;
    values_.push_back(value);
    if (values_.size() >= 2 * k_ + 1024) shrink();
  }
  double finish() {
    if (values_.size() >= k_) shrink();
    return bound_;
  }

 private:
  void shrink() {
    std::nth_element(values_.begin(), values_.begin() + (k_ - 1), values_.end());
    bound_ = values_[k_ - 1];
    values_.resize(k_);
  }
  size_t k_;
  double bound_ = kInf;
  std::vector<double> values_;
};

// Weighted Pearson correlation of (x, y) with weights w, two-pass; nullopt when x or y takes a
// single value (zero weighted variance: weights are positive, so that is the only way).
std::optional<double> weighted_correlation(const double* x, const double* y, const double* w,
                                           size_t n) {
  double sw = 0, sx = 0, sy = 0;
  double x_min = x[0], x_max = x[0], y_min = y[0], y_max = y[0];
  for (size_t t = 0; t < n; ++t) {
    sw += w[t];
    sx += w[t] * x[t];
    sy += w[t] * y[t];
    x_min = std::min(x_min, x[t]);
    x_max = std::max(x_max, x[t]);
    y_min = std::min(y_min, y[t]);
    y_max = std::max(y_max, y[t]);
  }
  if (x_min == x_max || y_min == y_max || !(sw > 0)) return std::nullopt;
  const double mx = sx / sw, my = sy / sw;
  double cxx = 0, cyy = 0, cxy = 0;
  for (size_t t = 0; t < n; ++t) {
    double dx = x[t] - mx, dy = y[t] - my;
    cxx += w[t] * dx * dx;
    cyy += w[t] * dy * dy;
    cxy += w[t] * dx * dy;
  }
  if (!(cxx > 0) || !(cyy > 0)) return std::nullopt;
  return (cxy / sw) / std::sqrt((cxx / sw) * (cyy / sw));
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  double lower = *std::max_element(v.begin(), v.begin() + mid);
  return (lower + upper) / 2;
}

}  // namespace

HeadOutcome compute_head(const HeadInput& in, const MetricOptions& options) {
  const PreparedHead h = prepare(in, options);
  const int64_t n = h.n;
  const int dim = h.dim;
  const size_t n_scales = options.scales.size();
  QKSCOPE_CHECK(n < (int64_t{1} << 32), "head has {} tokens; at most 2^32 are supported", n);

  HeadOutcome out;
  out.scales.resize(n_scales);
  {
    std::vector<double> qn(n), kn(n);
    for (int64_t t = 0; t < n; ++t) {
      qn[t] = std::sqrt(h.q_norm2[t]);
      kn[t] = std::sqrt(h.k_norm2[t]);
    }
    out.median_q_norm = median(std::move(qn));
    out.median_k_norm = median(std::move(kn));
  }
  for (const Region& r : h.regions)
    for (int64_t i = r.begin; i < r.end; ++i) out.pairs += h.key_end[i] - r.begin;
  if (out.pairs == 0) return out;

  std::vector<double> c2(n_scales), inv_c2(n_scales);
  double c2_max = 0, inv_c2_max = 0;
  for (size_t s = 0; s < n_scales; ++s) {
    c2[s] = options.scales[s] * options.scales[s];
    inv_c2[s] = 1.0 / c2[s];
    c2_max = std::max(c2_max, c2[s]);
    inv_c2_max = std::max(inv_c2_max, inv_c2[s]);
  }

  // Percentile position over all (pair, scale) items: order statistics lo and lo + 1.
  const double total_items = static_cast<double>(out.pairs) * static_cast<double>(n_scales);
  const double pos = (total_items - 1) * options.percentile / 100.0;
  const auto lo = static_cast<int64_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(lo);
  const auto n_items = static_cast<int64_t>(total_items);
  const size_t need = static_cast<size_t>(std::min<int64_t>(lo + 2, n_items));

  // Error of the float Gram entry against the double dot product of the distance vectors:
  // |G - x| <= gamma_D * |q||k| for the float dot product, plus the rounding of q, k to float
  // (2u); doubled for safety and doubled again because y^2 carries -2x. The 1e-12 term covers
  // the double rounding of the norms and of the direct recomputation.
  const double unit = std::ldexp(1.0, -24);
  const double rel = 2.0 * 2.0 * (dim + 3) * unit * 1.01;
  constexpr double kDoubleSlack = 1e-12;

  std::vector<double> q_len(n), k_len(n);
  for (int64_t t = 0; t < n; ++t) {
    q_len[t] = std::sqrt(h.q_norm2[t]);
    k_len[t] = std::sqrt(h.k_norm2[t]);
  }

  // Step 1: screen.
  KthSmallestBound bound(need);
  std::vector<Candidate> candidates;
  size_t prune_at = 1 << 16;
  RowMatrixF gram;
  std::vector<double> lower_row;
  for (const Region& r : h.regions) {
    for (int64_t r0 = r.begin; r0 < r.end; r0 += kRowBlock) {
      const int64_t r1 = std::min(r.end, r0 + kRowBlock);
      const int64_t key_limit = h.key_end[r1 - 1];  // key_end grows with the row in a region
      for (int64_t c0 = r.begin; c0 < key_limit; c0 += kColBlock) {
        const int64_t c1 = std::min(key_limit, c0 + kColBlock);
        gram.resize(r1 - r0, c1 - c0);
        gram.noalias() = h.qf.middleRows(r0, r1 - r0) * h.kf.middleRows(c0, c1 - c0).transpose();
        lower_row.resize(c1 - c0);
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t j_end = std::min(c1, h.key_end[i]);
          if (j_end <= c0) continue;
          const float* g = gram.data() + (i - r0) * (c1 - c0);
          const double a = h.q_norm2[i];
          // Over every scale, c^2 a + b / c^2 >= 2 sqrt(ab): a lower bound of y^2 for the pair
          // at any scale, one multiply-add per pair, that rejects most pairs at once.
          const double pair_factor = 2.0 * (1.0 - rel) * q_len[i];
          const double slack_i = kDoubleSlack * c2_max * a;
          double limit = bound.bound() + slack_i;
          for (int64_t j = c0; j < j_end; ++j) {
            lower_row[j - c0] = pair_factor * k_len[j] - 2.0 * static_cast<double>(g[j - c0]) -
                                kDoubleSlack * inv_c2_max * h.k_norm2[j];
          }
          for (int64_t j = c0; j < j_end; ++j) {
            if (lower_row[j - c0] > limit) continue;
            const double b = h.k_norm2[j];
            const double two_g = 2.0 * static_cast<double>(g[j - c0]);
            const double margin_pair = rel * q_len[i] * k_len[j];
            for (size_t s = 0; s < n_scales; ++s) {
              const double mag = c2[s] * a + inv_c2[s] * b;
              const double approx = mag - two_g;
              const double margin = margin_pair + kDoubleSlack * mag;
              const double upper = approx + margin, lower = approx - margin;
              bound.offer(upper);
              if (lower <= bound.bound())
                candidates.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(j),
                                      static_cast<uint32_t>(s), lower});
            }
            limit = bound.bound() + slack_i;
          }
          if (candidates.size() >= prune_at) {
            const double b_now = bound.bound();
            candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                            [&](const Candidate& c) { return c.lower > b_now; }),
                             candidates.end());
            prune_at = std::max<size_t>(2 * candidates.size(), 1 << 16);
          }
        }
      }
    }
  }
  const double b_final = bound.finish();
  candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                  [&](const Candidate& c) { return c.lower > b_final; }),
                   candidates.end());

  // Step 2: exact distances and dot products of the survivors, in double.
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.query != b.query) return a.query < b.query;
    if (a.scale != b.scale) return a.scale < b.scale;
    return a.key < b.key;
  });
  std::vector<double> y(candidates.size()), x(candidates.size());
  for (size_t t = 0; t < candidates.size(); ++t) {
    const Candidate& c = candidates[t];
    const double* qv = &h.q[static_cast<size_t>(c.query) * dim];
    const double* kv = &h.k[static_cast<size_t>(c.key) * dim];
    const double* qr = &h.q_raw[static_cast<size_t>(c.query) * dim];
    const double* kr = &h.k_raw[static_cast<size_t>(c.key) * dim];
    const double cs = options.scales[c.scale];
    double y2 = 0, dot = 0;
    for (int l = 0; l < dim; ++l) {
      const double diff = cs * qv[l] - kv[l] / cs;
      y2 += diff * diff;
      dot += qr[l] * kr[l];
    }
    y[t] = std::sqrt(y2);
    x[t] = dot;
  }
  QKSCOPE_ASSERT(candidates.size() >= need);
  {
    std::vector<double> sorted_y(y);
    std::nth_element(sorted_y.begin(), sorted_y.begin() + lo, sorted_y.end());
    const double v_lo = sorted_y[lo];
    double v_hi = v_lo;
    if (lo + 1 < n_items)
      v_hi = *std::min_element(sorted_y.begin() + lo + 1, sorted_y.end());
    out.threshold = v_lo + frac * (v_hi - v_lo);
  }
  const double d = *out.threshold;

  // Step 3: weighted correlation per (query, scale) over the near keys.
  std::vector<double> gx, gy, gw;
  std::vector<double> r_sum(n_scales, 0.0);
  for (size_t t = 0; t < candidates.size();) {
    size_t e = t;
    while (e < candidates.size() && candidates[e].query == candidates[t].query &&
           candidates[e].scale == candidates[t].scale)
      ++e;
    gx.clear();
    gy.clear();
    gw.clear();
    for (size_t u = t; u < e; ++u) {
      if (!(y[u] < d)) continue;
      gx.push_back(x[u]);
      gy.push_back(y[u]);
      gw.push_back((d - y[u]) * (d - y[u]));
    }
    const size_t s = candidates[t].scale;
    out.scales[s].near_pairs += static_cast<int64_t>(gx.size());
    if (gx.size() >= 3) {
      if (auto r = weighted_correlation(gx.data(), gy.data(), gw.data(), gx.size())) {
        r_sum[s] += *r;
        ++out.scales[s].queries;
      }
    }
    t = e;
  }
  for (size_t s = 0; s < n_scales; ++s)
    if (out.scales[s].queries > 0)
      out.scales[s].wcorr = r_sum[s] / static_cast<double>(out.scales[s].queries);
  return out;
}

}  // namespace qkscope::detail
