// Exact per-head metrics in three steps:
//  1. Screen: for each block of pairs, one float Gram matrix q.k^T gives every distance under
//     every scale up to a proven margin. A bound B, which at least K = lo + 2 items provably
//     stay under (lo = the percentile's lower order statistic), keeps only the (pair, scale)
//     items whose lower bound can fall under it. B starts from a pilot estimate on a sample of
//     queries and tightens as items arrive; if the pilot was too tight the pass is redone.
//  2. Recompute the survivors directly in double: ||c q - k/c|| and q.k. The K smallest exact
//     distances are among them, so the percentile threshold d is exact.
//  3. Weighted correlation per (query, scale) over the near keys (y < d), two-pass in double.
#include "head_metrics.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>

#include <Eigen/Core>

#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr int64_t kRowBlock = 256;   // queries per Gram block
constexpr int64_t kColBlock = 1024;  // keys per Gram block
constexpr double kInf = std::numeric_limits<double>::infinity();
// Relative slack for double rounding in norms, in the screen's arithmetic and in the direct
// recomputation: all are ~1e-15 of the magnitudes involved.
constexpr double kDoubleSlack = 1e-12;

// A run of tokens whose queries pair with keys of the same run (a sequence, or all tokens).
struct Region {
  int64_t begin = 0, end = 0;
};

// One (pair, scale) item that may fall under the threshold.
struct Candidate {
  uint32_t query, key;
  uint32_t scale;
  double lower, upper;  // bounds of y^2
};

// The head's vectors: float copies for the Gram matrices (centred with --center), their
// squared norms in double, and the pair structure. Tokens arrive sorted by (sequence,
// position), which QkData guarantees.
struct PreparedHead {
  int64_t n = 0;
  int dim = 0;
  std::vector<double> q_mean, k_mean;    // [dim]; zero without --center
  std::vector<double> qd, kd;            // [n, dim] distance vectors in double
  RowMatrixF qf, kf;                     // [n, dim] distance vectors in float
  std::vector<double> q_norm2, k_norm2;  // [n] squared norms of the distance vectors (double)
  std::vector<double> q_len, k_len;      // [n] their square roots
  std::vector<Region> regions;
  std::vector<int64_t> key_end;          // per query: its keys are [region.begin, key_end)
  std::vector<int64_t> region_begin;     // per query: its region's begin

};

// Fills `h` (reusing its memory: a worker thread prepares many heads of the same size).
void prepare(const HeadInput& in, const MetricOptions& options, PreparedHead& h) {
  h.regions.clear();
  h.n = in.n_tokens;
  h.dim = in.head_dim;
  const int64_t n = h.n;
  const int d = h.dim;
  h.q_mean.assign(d, 0.0);
  h.k_mean.assign(d, 0.0);
  if (options.center && n > 0) {
    for (int64_t t = 0; t < n; ++t)
      for (int l = 0; l < d; ++l) {
        h.q_mean[l] += in.q[t * in.stride + l];
        h.k_mean[l] += in.k[t * in.stride + l];
      }
    for (int l = 0; l < d; ++l) {
      h.q_mean[l] /= static_cast<double>(n);
      h.k_mean[l] /= static_cast<double>(n);
    }
  }
  h.qd.resize(n * d);
  h.kd.resize(n * d);
  h.qf.resize(n, d);
  h.kf.resize(n, d);
  h.q_norm2.assign(n, 0.0);
  h.k_norm2.assign(n, 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int l = 0; l < d; ++l) {
      const double a = static_cast<double>(in.q[t * in.stride + l]) - h.q_mean[l];
      const double b = static_cast<double>(in.k[t * in.stride + l]) - h.k_mean[l];
      h.qd[t * d + l] = a;
      h.kd[t * d + l] = b;
      h.q_norm2[t] += a * a;
      h.k_norm2[t] += b * b;
      h.qf(t, l) = static_cast<float>(a);
      h.kf(t, l) = static_cast<float>(b);
    }
  h.q_len.resize(n);
  h.k_len.resize(n);
  for (int64_t t = 0; t < n; ++t) {
    h.q_len[t] = std::sqrt(h.q_norm2[t]);
    h.k_len[t] = std::sqrt(h.k_norm2[t]);
  }

  if (options.pairs == PairScope::all) {
    if (n > 0) h.regions.push_back({0, n});
  } else {
    int64_t start = 0;
    for (int64_t t = 1; t <= n; ++t)
      if (t == n || in.sequence[t] != in.sequence[start]) {
        h.regions.push_back({start, t});
        start = t;
      }
  }
  h.key_end.resize(n);
  h.region_begin.resize(n);
  for (const Region& r : h.regions)
    for (int64_t i = r.begin; i < r.end; ++i) {
      h.region_begin[i] = r.begin;
      // Positions are sorted inside a sequence: causal keys (position <= p_i) form a prefix.
      h.key_end[i] = options.pairs == PairScope::causal
                         ? std::upper_bound(in.position + r.begin, in.position + r.end,
                                            in.position[i]) - in.position
                         : r.end;
    }
}

// Keeps B = the K-th smallest of the values offered (values at or above a starting cap are
// ignored), with amortised O(1) work per value.
class KthSmallestBound {
 public:
  KthSmallestBound(size_t k, double cap) : k_(k), bound_(cap) {}
  double bound() const { return bound_; }
  void offer(double value) {
    if (value >= bound_) return;
    values_.push_back(value);
    if (values_.size() >= 2 * k_ + 1024) shrink();
  }
  // False when fewer than K values were under the cap: the cap was too tight.
  bool finish() {
    if (values_.size() < k_) return false;
    shrink();
    return true;
  }

 private:
  void shrink() {
    std::nth_element(values_.begin(), values_.begin() + (k_ - 1), values_.end());
    bound_ = values_[k_ - 1];
    values_.resize(k_);
  }
  size_t k_;
  double bound_;
  std::vector<double> values_;
};

// Screening arithmetic shared by the pilot and the pass: per scale c^2 and 1/c^2, and the
// margin of the float Gram entry. |G - x| <= gamma_D |q||k| for a float dot product, plus 2u
// for rounding the vectors to float; doubled for safety and again because y^2 carries -2x.
// The screen walks the scales in increasing order (`sorted`: grid indices by c): for a pair,
// c^2 a + b / c^2 is unimodal in c with its grid minimum at the first s where
// b <= a c_s^2 c_{s+1}^2 (`breakpoint`), so the scales under a bound form a run around it.
struct ScreenConstants {
  std::vector<double> c2, inv_c2;   // by grid index
  std::vector<uint32_t> sorted;     // grid indices by increasing c
  std::vector<double> breakpoint;   // c_s^2 c_{s+1}^2 for consecutive sorted scales
  double rel = 0;
  explicit ScreenConstants(const MetricOptions& o, int dim) {
    for (double c : o.scales) {
      c2.push_back(c * c);
      inv_c2.push_back(1.0 / (c * c));
    }
    for (uint32_t s = 0; s < o.scales.size(); ++s) sorted.push_back(s);
    std::sort(sorted.begin(), sorted.end(),
              [&](uint32_t a, uint32_t b) { return o.scales[a] < o.scales[b]; });
    for (size_t s = 0; s + 1 < sorted.size(); ++s)
      breakpoint.push_back(c2[sorted[s]] * c2[sorted[s + 1]]);
    rel = 2.0 * 2.0 * (dim + 3) * std::ldexp(1.0, -24) * 1.01;
  }
};

// Calls fn(first, n_rows, c0, c1, gram) for every Gram block of keys [c0, c1) against the
// queries first, first + row_stride, ... (n_rows of them) of a block that holds pairs in scope.
// The screen takes every query (row_stride 1); the pilot takes a sparse sample of them.
template <class Fn>
void for_each_block(const PreparedHead& h, int64_t row_stride, const Fn& fn) {
  using StridedRows = Eigen::Map<const RowMatrixF, 0, Eigen::OuterStride<>>;
  RowMatrixF gram;
  for (const Region& r : h.regions) {
    for (int64_t r0 = r.begin; r0 < r.end; r0 += kRowBlock * row_stride) {
      const int64_t first = (r0 + row_stride - 1) / row_stride * row_stride;
      const int64_t r1 = std::min(r.end, r0 + kRowBlock * row_stride);
      if (first >= r1) continue;
      const int64_t n_rows = (r1 - 1 - first) / row_stride + 1;
      const int64_t last = first + (n_rows - 1) * row_stride;
      const int64_t key_limit = h.key_end[last];  // key_end never decreases inside a region
      const StridedRows queries(h.qf.data() + first * h.dim, n_rows, h.dim,
                                Eigen::OuterStride<>(row_stride * h.dim));
      for (int64_t c0 = r.begin; c0 < key_limit; c0 += kColBlock) {
        const int64_t c1 = std::min(key_limit, c0 + kColBlock);
        gram.resize(n_rows, c1 - c0);
        gram.noalias() = queries * h.kf.middleRows(c0, c1 - c0).transpose();
        fn(first, n_rows, c0, c1, gram);
      }
    }
  }
}

// Upper bounds of y^2 for the items of every `row_stride`-th query and about one key in
// `key_stride`: a sample spread over many queries (their distances differ the most) whose
// quantiles give starting caps for B.
std::vector<double> pilot_upper_bounds(const PreparedHead& h, const ScreenConstants& sc,
                                       int64_t row_stride, int64_t key_stride) {
  std::vector<double> uppers;
  for_each_block(h, row_stride, [&](int64_t first, int64_t n_rows, int64_t c0, int64_t c1,
                                    const RowMatrixF& gram) {
    for (int64_t t = 0; t < n_rows; ++t) {
      const int64_t i = first + t * row_stride;
      const int64_t j_end = std::min(c1, h.key_end[i]);
      for (int64_t j = c0 + i % key_stride; j < j_end; j += key_stride) {
        const double two_g = 2.0 * static_cast<double>(gram(t, j - c0));
        const double margin = sc.rel * h.q_len[i] * h.k_len[j];
        for (size_t s = 0; s < sc.c2.size(); ++s) {
          const double mag = sc.c2[s] * h.q_norm2[i] + sc.inv_c2[s] * h.k_norm2[j];
          uppers.push_back(mag - two_g + margin + kDoubleSlack * mag);
        }
      }
    }
  });
  return uppers;
}

// One pass over every pair: the items whose lower bound of y^2 can fall under the final B.
// Returns false (and nothing) when `cap` turned out to be below the true B.
bool screen(const PreparedHead& h, const ScreenConstants& sc, size_t need, double cap,
            std::vector<Candidate>& candidates) {
  const size_t n_scales = sc.c2.size();
  KthSmallestBound bound(need, cap);
  candidates.clear();
  size_t prune_at = 1 << 16;
  std::vector<double> pair_lower(kColBlock);
  std::vector<uint32_t> survivors(kColBlock);
  std::vector<double> row_mag(n_scales);
  const double* inv_c2 = sc.inv_c2.data();
  for_each_block(h, 1, [&](int64_t r0, int64_t n_rows, int64_t c0, int64_t c1,
                           const RowMatrixF& gram) {
    for (int64_t i = r0; i < r0 + n_rows; ++i) {
      const int64_t width = std::min(c1, h.key_end[i]) - c0;
      if (width <= 0) continue;
      const float* g = gram.data() + (i - r0) * (c1 - c0);
      const double* b = h.k_norm2.data() + c0;
      const double* k_len = h.k_len.data() + c0;
      double* lower = pair_lower.data();
      for (size_t s = 0; s < n_scales; ++s) row_mag[s] = sc.c2[s] * h.q_norm2[i];
      const double rel_q = sc.rel * h.q_len[i];
      // Over every scale c^2 a + b / c^2 >= 2 sqrt(ab) = 2 |q||k|: one multiply-add per pair
      // bounds y^2 from below at every scale at once (nearly as tight as the grid's own minimum
      // where it matters, and branch-free so that it vectorises). Most pairs stop here.
      const double pair_factor = 2.0 * (1.0 - 2 * kDoubleSlack) * h.q_len[i] - rel_q;
#pragma omp simd
      for (int64_t t = 0; t < width; ++t)
        lower[t] = pair_factor * k_len[t] - 2.0 * static_cast<double>(g[t]);
      // Branch-free compaction of the survivors' indices, then work on those alone. A bound read
      // once per row may be stale (higher): that only admits extra candidates, which the final
      // filter drops.
      const double row_bound = bound.bound();
      int64_t n_survivors = 0;
      for (int64_t t = 0; t < width; ++t) {
        survivors[n_survivors] = static_cast<uint32_t>(t);
        n_survivors += lower[t] <= row_bound;
      }
      const double a = h.q_norm2[i];
      for (int64_t u = 0; u < n_survivors; ++u) {
        const int64_t t = survivors[u];
        const double two_g = 2.0 * static_cast<double>(g[t]);
        const double margin_pair = rel_q * k_len[t];
        const double bt = b[t];
        // Visits one scale (by sorted position); false once its lower bound is over the bound.
        auto visit = [&](size_t pos) {
          const uint32_t s = sc.sorted[pos];
          const double mag = row_mag[s] + inv_c2[s] * bt;
          const double approx = mag - two_g;
          const double margin = margin_pair + kDoubleSlack * mag;
          const double item_lower = approx - margin;
          if (item_lower > bound.bound()) return false;  // its upper bound is higher still
          const double upper = approx + margin;
          bound.offer(upper);
          if (item_lower <= bound.bound())
            candidates.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(c0 + t), s,
                                  item_lower, upper});
          return true;
        };
        size_t best = 0;
        while (best < sc.breakpoint.size() && bt > a * sc.breakpoint[best]) ++best;
        if (!visit(best)) continue;
        for (size_t pos = best; pos-- > 0;)
          if (!visit(pos)) break;
        for (size_t pos = best + 1; pos < n_scales; ++pos)
          if (!visit(pos)) break;
      }
      if (candidates.size() >= prune_at) {
        const double b_now = bound.bound();
        candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                        [&](const Candidate& c) { return c.lower > b_now; }),
                         candidates.end());
        prune_at = std::max<size_t>(2 * candidates.size(), 1 << 16);
      }
    }
  });
  if (!bound.finish()) return false;
  const double b_final = bound.bound();
  candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                  [&](const Candidate& c) { return c.lower > b_final; }),
                   candidates.end());
  return true;
}

// Candidates reordered so that those of one (query, scale) are contiguous: a counting sort,
// linear in the number of candidates.
void group_by_query_and_scale(const std::vector<Candidate>& candidates, int64_t n_queries,
                              size_t n_scales, std::vector<Candidate>& grouped) {
  std::vector<uint32_t> start(static_cast<size_t>(n_queries) * n_scales + 1, 0);
  auto bucket = [&](const Candidate& c) { return static_cast<size_t>(c.query) * n_scales + c.scale; };
  for (const Candidate& c : candidates) ++start[bucket(c) + 1];
  for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
  grouped.resize(candidates.size());
  for (const Candidate& c : candidates) grouped[start[bucket(c)]++] = c;
}

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

// v[lo] + frac (v[lo + 1] - v[lo]) of the sorted values (v[lo] alone when lo is the last).
// The survivors barely outnumber lo, so the order statistics sit among the few largest values:
// a small heap over one pass finds them without reordering everything.
double interpolated_order_statistic(const std::vector<double>& values, int64_t lo, double frac,
                                    std::vector<double>& scratch) {
  const auto n = static_cast<int64_t>(values.size());
  const int64_t from_top = n - lo;  // v[lo] is the from_top-th largest
  double v_lo, v_hi;
  if (from_top <= 4096) {
    std::priority_queue<double, std::vector<double>, std::greater<double>> largest;
    for (double v : values) {
      if (static_cast<int64_t>(largest.size()) < from_top) {
        largest.push(v);
      } else if (v > largest.top()) {
        largest.pop();
        largest.push(v);
      }
    }
    v_lo = largest.top();
    largest.pop();
    v_hi = largest.empty() ? v_lo : largest.top();
  } else {
    scratch.assign(values.begin(), values.end());
    std::nth_element(scratch.begin(), scratch.begin() + lo, scratch.end());
    v_lo = scratch[lo];
    v_hi = lo + 1 < n ? *std::min_element(scratch.begin() + lo + 1, scratch.end()) : v_lo;
  }
  return v_lo + frac * (v_hi - v_lo);
}

}  // namespace

FiniteHead drop_nonfinite_tokens(const HeadInput& in) {
  FiniteHead out;
  out.input = in;
  // Inf * 0 and NaN * 0 are NaN, finite * 0 is 0: one vectorised sum per token tells.
  auto finite = [&](int64_t t) {
    const float* q = in.q + t * in.stride;
    const float* k = in.k + t * in.stride;
    float probe = 0;
#pragma omp simd reduction(+ : probe)
    for (int l = 0; l < in.head_dim; ++l) probe += q[l] * 0.0f + k[l] * 0.0f;
    return probe == 0.0f;
  };
  int64_t t = 0;
  while (t < in.n_tokens && finite(t)) ++t;
  if (t == in.n_tokens) return out;
  for (int64_t u = 0; u < in.n_tokens; ++u) {
    if (!finite(u)) continue;
    out.q.insert(out.q.end(), in.q + u * in.stride, in.q + u * in.stride + in.head_dim);
    out.k.insert(out.k.end(), in.k + u * in.stride, in.k + u * in.stride + in.head_dim);
    out.sequence.push_back(in.sequence[u]);
    out.position.push_back(in.position[u]);
  }
  out.input.q = out.q.data();
  out.input.k = out.k.data();
  out.input.stride = in.head_dim;
  out.input.n_tokens = static_cast<int64_t>(out.sequence.size());
  out.input.sequence = out.sequence.data();
  out.input.position = out.position.data();
  return out;
}

HeadOutcome compute_head(const HeadInput& in, const MetricOptions& options) {
  QKSCOPE_CHECK(in.n_tokens < (int64_t{1} << 32), "head has {} tokens; at most 2^32 are supported",
                in.n_tokens);
  thread_local PreparedHead workspace;
  prepare(in, options, workspace);
  const PreparedHead& h = workspace;
  const int dim = h.dim;
  const size_t n_scales = options.scales.size();

  HeadOutcome out;
  out.scales.resize(n_scales);
  out.median_q_norm = median(h.q_len);
  out.median_k_norm = median(h.k_len);
  for (int64_t i = 0; i < h.n; ++i) out.pairs += h.key_end[i] - h.region_begin[i];
  if (out.pairs == 0) return out;

  // Percentile position over all (pair, scale) items: order statistics lo and lo + 1.
  const double total_items = static_cast<double>(out.pairs) * static_cast<double>(n_scales);
  const double pos = (total_items - 1) * options.percentile / 100.0;
  const auto lo = static_cast<int64_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(lo);
  const auto n_items = static_cast<int64_t>(total_items);
  const size_t need = static_cast<size_t>(std::min<int64_t>(lo + 2, n_items));

  // Step 1: screen, starting from a cap estimated on a sample of about 2^18 items over ~512
  // queries: its quantile at 1.25 times the needed fraction plus 6 standard deviations of the
  // count. A cap too tight is detected by the screen; it is then retried with looser quantiles
  // and finally without a cap.
  const ScreenConstants sc(options, dim);
  std::vector<double> caps;
  if (out.pairs > (int64_t{1} << 18)) {
    const int64_t row_stride = std::max<int64_t>(1, h.n / 512);
    const double sampled_items = total_items / static_cast<double>(row_stride);
    const auto key_stride = std::max<int64_t>(1, static_cast<int64_t>(sampled_items / (1 << 18)));
    std::vector<double> sample = pilot_upper_bounds(h, sc, row_stride, key_stride);
    const double expected = static_cast<double>(need) * sample.size() / total_items;
    for (double factor : {1.25, 3.0, 10.0}) {
      const double rank = factor * expected + 6.0 * std::sqrt(expected) + 16;
      if (rank >= static_cast<double>(sample.size())) break;
      auto at = sample.begin() + static_cast<int64_t>(rank);
      std::nth_element(sample.begin(), at, sample.end());
      caps.push_back(*at);
    }
  }
  caps.push_back(kInf);
  // Per-thread buffers, reused across the heads a worker computes.
  thread_local std::vector<Candidate> screened, candidates;
  thread_local std::vector<double> y, x, sorted_y;
  for (double cap : caps)
    if (screen(h, sc, need, cap, screened)) break;

  // Step 2: exact distances and dot products of the survivors, in double.
  group_by_query_and_scale(screened, h.n, n_scales, candidates);
  // `omp simd` lets the compiler split the sums into vector lanes (built with -fopenmp-simd,
  // no OpenMP runtime): the result differs from a sequential sum only in the last bits.
  y.resize(candidates.size());
  x.resize(candidates.size());
  for (size_t t = 0; t < candidates.size(); ++t) {
    const Candidate& c = candidates[t];
    const double* qd = &h.qd[static_cast<size_t>(c.query) * dim];
    const double* kd = &h.kd[static_cast<size_t>(c.key) * dim];
    const double* qm = h.q_mean.data();
    const double* km = h.k_mean.data();
    const double cs = options.scales[c.scale], inv_cs = 1.0 / cs;
    double y2 = 0, dot = 0;
    // x is the dot product of the captured vectors: the distance vectors plus the means (zero
    // without --center), read from the head's contiguous copy rather than the strided site.
#pragma omp simd reduction(+ : y2, dot)
    for (int l = 0; l < dim; ++l) {
      const double diff = cs * qd[l] - kd[l] * inv_cs;
      y2 += diff * diff;
      dot += (qd[l] + qm[l]) * (kd[l] + km[l]);
    }
    y[t] = std::sqrt(y2);
    x[t] = dot;
  }
  QKSCOPE_ASSERT(candidates.size() >= need);
  out.threshold = interpolated_order_statistic(y, lo, frac, sorted_y);
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
