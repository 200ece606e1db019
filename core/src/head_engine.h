// The engine's per-head computation, compiled once per instruction set: each
// head_engine_<isa>.cpp defines QKSCOPE_ISA_NS (the namespace that keeps its symbols apart) and
// renames Eigen's namespace before including this file, so that no inline function or template
// compiled for one instruction set can stand in for another's at link time. compute_head()
// (head_metrics.cpp) calls the variant engine_isa.h chose.
//
// Exact per-head metrics in one pass over the Gram blocks, after a small pilot:
//  1. Pilot: upper bounds of y^2 for a stratified random sample of pairs give a bound U that a
//     few more than the needed K = lo + 2 items stay under (lo = the percentile's lower order
//     statistic), and a low cut under which fewer than lo items are expected.
//  2. Pass: per block of pairs, one float Gram matrix q.k^T; the float screen (pair_screen.h)
//     admits the pairs that may hold an item under U; per admitted pair the item step
//     (exact_pair.h) tests every scale's double lower bound, computes x = q.k directly in double
//     and y^2 from the Gram identity in double with that x where its proven error is under 2^-40
//     of y^2 (directly as ||c q - k/c||^2 otherwise). Every item with y^2 <= U is collected.
//     Fewer than K of them means the pilot was too tight: the pass is redone with a looser U,
//     last with a bound that tightens as it goes.
//  3. The threshold d is the interpolated order statistic of the collected y (the K smallest
//     items are among them; only those above the low cut are selected from); per (query, scale)
//     the weighted correlation over y < d, row block by row block.
// Memory is the collected items (about 1.1 K) and per-thread buffers of one block; heads whose
// items would exceed MetricOptions::item_memory take three passes that keep one row block at a
// time instead (the handlers of collect_items).
#pragma once

#ifndef QKSCOPE_ISA_NS
#error "head_engine.h is included by head_engine_<isa>.cpp, which names QKSCOPE_ISA_NS"
#endif

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <optional>

#include <Eigen/Core>

#include "head_engine_entry.h"
#include "order_statistics.h"
#include "prepared_head.h"
#include "qkscope/error.h"
// Inside QKSCOPE_ISA_NS too: the kernels are compiled for this file's instruction set.
#include "exact_pair.h"
#include "pair_screen.h"

namespace qkscope::detail::QKSCOPE_ISA_NS {
namespace {


using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowsF = Eigen::Map<const RowMatrixF, 0, Eigen::OuterStride<>>;

constexpr int64_t kRowBlock = 256;   // queries per Gram block
constexpr int64_t kColBlock = 1024;  // keys per Gram block
constexpr int64_t kPilotMinPairs = 4096;  // heads with fewer pairs go straight to the last resort
constexpr double kInf = std::numeric_limits<double>::infinity();
// Relative slack for double rounding in norms, in the screen's arithmetic and in the direct
// recomputation: all are ~1e-15 of the magnitudes involved.
constexpr double kDoubleSlack = 1e-12;
// Absolute slack of a Gram entry's margin: where products fall among float's subnormals the
// rounding error is absolute (2^-150 each), not relative; 2^-120 covers any head dimension and
// only matters for vectors with norms under ~1e-30.
constexpr double kUnderflowSlack = 0x1p-120;

// The (pair, scale) items whose exact distance may be under the screen's bound, as columns
// (the item step writes them with vector stores). `y` holds y^2 until its row block's square
// roots are taken.
struct ItemColumns {
  // Uninitialised storage (new T[]): growing must not write zeros over memory the passes fill.
  template <class T>
  struct Column {
    std::unique_ptr<T[]> data;
    T& operator[](size_t t) { return data[t]; }
    const T& operator[](size_t t) const { return data[t]; }
    void grow(size_t used, size_t capacity) {
      std::unique_ptr<T[]> bigger(new T[capacity]);
      if (used > 0) std::copy_n(data.get(), used, bigger.get());
      data = std::move(bigger);
    }
  };
  Column<uint32_t> query, scale;
  Column<double> y, x;  // distance, dot product
  size_t size = 0, capacity = 0;
  void clear() { size = 0; }
  // Room for `extra` more items plus the 16 entries a vector store may write past them.
  void make_room(size_t extra) {
    const size_t want = size + extra + 16;
    if (want <= capacity) return;
    capacity = std::max(want, 2 * capacity);
    query.grow(size, capacity);
    scale.grow(size, capacity);
    y.grow(size, capacity);
    x.grow(size, capacity);
  }
  ItemSink sink() { return {&query[size], &scale[size], &y[size], &x[size]}; }
  void move(size_t from, size_t to) {
    query[to] = query[from];
    scale[to] = scale[from];
    y[to] = y[from];
    x[to] = x[from];
  }
};

// Scale constants and the margin of a float Gram entry: |G - x| <= gamma_D |q||k| for a float
// dot product, plus 2u for rounding the vectors to float; doubled for safety and again because
// y^2 carries -2x.
struct ScreenConstants {
  ScaleTable table;  // the grid, padded to a multiple of 8 scales
  size_t n_scales = 0;
  double rel = 0;
  ScreenConstants(const MetricOptions& o, int dim) {
    for (double s : o.scales) {
      table.c.push_back(s);
      table.inv_c.push_back(1.0 / s);
      table.c2.push_back(s * s);
      table.inv_c2.push_back(1.0 / (s * s));
    }
    n_scales = o.scales.size();
    while (table.c2.size() % 8 != 0) {
      table.c.push_back(1.0);
      table.inv_c.push_back(1.0);
      table.c2.push_back(kInf);
      table.inv_c2.push_back(kInf);
    }
    table.n_padded = table.c2.size();
    table.bound_slack = kDoubleSlack;
    // Error of the identity in double, relative to mag = c^2 a + b / c^2 (the bound multiplies
    // mag + 2|x| >= mag): a, b and x are sums of `dim` products, each within gamma_dim of the
    // sum of its terms' magnitudes, so c^2 a + b / c^2 is within dim u mag and 2x within
    // dim u mag (2 |q||k| <= mag); c^2, 1/c^2, the products and the sums add a few roundings.
    table.identity_error = (2 * dim + 8) * std::ldexp(1.0, -53) * 1.01;
    rel = 2.0 * 2.0 * (dim + 3) * std::ldexp(1.0, -24) * 1.01;
  }
  double upper(double mag, double two_g, double margin_pair) const {
    return mag - two_g + margin_pair + kDoubleSlack * mag;
  }
};

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

 private:
  void shrink() {
    std::nth_element(values_.begin(), values_.begin() + static_cast<int64_t>(k_ - 1),
                     values_.end());
    bound_ = values_[k_ - 1];
    values_.resize(k_);
  }
  size_t k_;
  double bound_;
  std::vector<double> values_;
};

// Squared norms of tokens [begin, end) (without --center, where prepare left them to the pass).
// Returns false when a token's q or k holds NaN or Inf: a float's square cannot overflow
// double, so a norm is finite exactly when every component is. Tokens are a stride of H * D
// floats apart, each on its own page, where hardware prefetchers stop: the next tokens' rows
// are requested ahead explicitly.
bool compute_norms(PreparedHead& h, int64_t begin, int64_t end) {
  if (h.norms_ready) return true;
  constexpr int64_t kAhead = 8;
  const int d = h.dim;
  for (int64_t t = begin; t < end; ++t) {
    const float* q = h.q_vec + t * h.stride;
    const float* k = h.k_vec + t * h.stride;
    if (t + kAhead < end)
      for (int l = 0; l < d; l += 16) {  // one 64-byte line per 16 floats
        __builtin_prefetch(q + kAhead * h.stride + l);
        __builtin_prefetch(k + kAhead * h.stride + l);
      }
    h.q_norm2[t] = dot_in_double(q, q, d);
    h.k_norm2[t] = dot_in_double(k, k, d);
    if (!std::isfinite(h.q_norm2[t]) || !std::isfinite(h.k_norm2[t])) return false;
  }
  finish_norms(h, begin, end);
  return true;
}

// Whether the float screen's sums stay finite for queries [q0, q1) and keys [k0, k1): float's
// range ends at 3.4e38. Outside it (norms beyond ~1e18) every pair goes to the double test.
bool float_screen_safe(const PreparedHead& h, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  const double max_a = *std::max_element(h.q_norm2.begin() + q0, h.q_norm2.begin() + q1);
  const double max_b = *std::max_element(h.k_norm2.begin() + k0, h.k_norm2.begin() + k1);
  return max_a * h.max_c2 < 1e36 && max_b * h.max_inv_c2 < 1e36;
}

// A deterministic 64-bit generator (splitmix64): the pilot's sample must not depend on anything
// but the head, so that runs repeat exactly.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

// Upper bounds of y^2, at every scale, for a sample of `n_samples` pairs: one drawn uniformly
// from each of that many equal slices of the pairs (in query order), so the sample is uniform,
// comes sorted, and spreads over the whole head. Their quantiles estimate where the K-th smallest
// item lies.
// Returns nothing when a sampled token's q or k holds NaN or Inf.
std::vector<double> pilot_upper_bounds(const PreparedHead& h, const ScreenConstants& sc,
                                       int64_t total_pairs, int64_t n_samples) {
  SplitMix64 rng{static_cast<uint64_t>(total_pairs) * 31 + static_cast<uint64_t>(h.n)};
  // The pairs first, so that the rows of those a few steps ahead can be requested from memory
  // while the current ones are computed (each is a cache miss: the sample is sparse).
  std::vector<std::pair<int64_t, int64_t>> pairs(static_cast<size_t>(n_samples));
  const double slice = static_cast<double>(total_pairs) / static_cast<double>(n_samples);
  int64_t i = 0, pairs_before = 0;  // pairs of the queries before i
  for (int64_t sample = 0; sample < n_samples; ++sample) {
    const double unit = static_cast<double>(rng.next() >> 11) * 0x1p-53;  // [0, 1)
    const int64_t p =
        std::min(total_pairs - 1,
                 static_cast<int64_t>((static_cast<double>(sample) + unit) * slice));
    while (p >= pairs_before + (h.key_end[i] - h.region_begin[i])) {
      pairs_before += h.key_end[i] - h.region_begin[i];
      ++i;
    }
    pairs[static_cast<size_t>(sample)] = {i, h.region_begin[i] + (p - pairs_before)};
  }
  std::vector<double> uppers;
  uppers.reserve(pairs.size() * sc.n_scales);
  constexpr size_t kAhead = 8;
  for (size_t t = 0; t < pairs.size(); ++t) {
    if (t + kAhead < pairs.size())
      for (int l = 0; l < h.dim; l += 16) {
        __builtin_prefetch(h.q_gram + pairs[t + kAhead].first * h.gram_stride + l);
        __builtin_prefetch(h.k_gram + pairs[t + kAhead].second * h.gram_stride + l);
      }
    const float* q = h.q_gram + pairs[t].first * h.gram_stride;
    const float* k = h.k_gram + pairs[t].second * h.gram_stride;
    const double two_g = 2.0 * dot_in_double(q, k, h.dim);
    // Without --center the pass computes the norms later: the sample's own, here.
    const double a = h.norms_ready ? h.q_norm2[pairs[t].first] : dot_in_double(q, q, h.dim);
    const double b = h.norms_ready ? h.k_norm2[pairs[t].second] : dot_in_double(k, k, h.dim);
    if (!std::isfinite(a) || !std::isfinite(b)) return {};  // NaN or Inf: the caller sees it
    const double margin_pair = sc.rel * std::sqrt(a) * std::sqrt(b) + kUnderflowSlack;
    for (size_t s = 0; s < sc.n_scales; ++s)
      uppers.push_back(sc.upper(sc.table.c2[s] * a + sc.table.inv_c2[s] * b, two_g, margin_pair));
  }
  return uppers;
}

// The items of one block of queries: items[begin, end) belong to queries [first, first + rows),
// those of one query in increasing key order.
struct RowBlock {
  size_t begin, end;
  int64_t first, rows;
};

// Weighted sums of one (query, scale) over its near keys, in one pass: the moments of x and y
// about a shift (x0, y0), the bucket's first near item, so that the centred moments come out as
// differences of sums without the cancellation of raw sums. The shift is one of the items, so
// the cancellation is bounded by how far it sits from the weighted mean against the spread;
// where that still costs more than kOnePassLoss of a moment (one item far from a tight
// cluster), the bucket's centred moments are summed again in a second pass about the mean
// (add_block_correlations), so no r loses more than a few digits to the shortcut.
struct QueryScaleMoments {
  int64_t n = 0;
  bool second_pass = false;  // the one-pass moments cancelled too far; summed again
  double x0 = 0, y0 = 0;
  double sw = 0, sx = 0, sy = 0;  // sum w, sum w dx, sum w dy (dx = x - x0, dy = y - y0)
  double x_min = kInf, x_max = -kInf, y_min = kInf, y_max = -kInf;
  double cxx = 0, cyy = 0, cxy = 0;  // sum w dx dx, sum w dy dy, sum w dx dy
};

// Buffers one worker reuses across the heads it computes.
struct Workspace {
  PreparedHead head;
  RowMatrixF gram;
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> gram_double;
  std::vector<float> slack;
  std::vector<uint32_t> admitted;
  std::vector<double> q_dist, q_dot;
  ItemColumns items;
  std::vector<RowBlock> blocks;
  std::vector<double> values;  // the items' y at or above the low cut
  int64_t below_cut = 0;        // items under it
  std::vector<QueryScaleMoments> moments;
  std::vector<uint32_t> touched;
  std::vector<uint32_t> near;  // add_block_correlations: a block's items with y < d
  std::vector<int64_t> histogram;
};

// A workspace from the pool (head_engine_entry.h) for one head, given back after it. One left by
// an exception is dropped: its per-block sums (moments) may not be zero.
struct WorkspaceLease {
  Workspace* ws;
  int exceptions = std::uncaught_exceptions();
  static const void* kind() {
    static const char this_variant = 0;  // one per variant: its address names the kind
    return &this_variant;
  }
  static void destroy(void* p) { delete static_cast<Workspace*>(p); }
  WorkspaceLease() : ws(static_cast<Workspace*>(take_pooled_workspace(kind()))) {
    if (ws == nullptr) ws = new Workspace;
  }
  WorkspaceLease(const WorkspaceLease&) = delete;
  WorkspaceLease& operator=(const WorkspaceLease&) = delete;
  ~WorkspaceLease() {
    if (std::uncaught_exceptions() > exceptions) {
      delete ws;
      return;
    }
    const PreparedHead& h = ws->head;
    const size_t bytes =
        ws->items.capacity * (2 * sizeof(uint32_t) + 2 * sizeof(double)) +
        (h.q_copy.capacity() + h.k_copy.capacity() + h.q_centered.capacity() +
         h.k_centered.capacity() + ws->gram.size()) * sizeof(float) +
        (ws->values.capacity() + 6 * h.q_norm2.capacity() + ws->gram_double.size()) *
            sizeof(double) +
        ws->moments.capacity() * sizeof(QueryScaleMoments);
    give_pooled_workspace(kind(), ws, &destroy, bytes);
  }
};

// Histogram bins of y over [low, high], for the bounded-memory passes.
struct YBins {
  double low = 0, high = 0, per_unit = 0;
  int64_t count = 0;
  YBins() = default;
  YBins(double lo, double hi, int64_t n) : low(lo), high(hi), count(n) {
    per_unit = hi > lo ? static_cast<double>(n) / (hi - lo) : 0.0;
  }
  int64_t of(double y) const {  // y >= low
    return std::min<int64_t>(count - 1, static_cast<int64_t>((y - low) * per_unit));
  }
};

void add_block_correlations(Workspace& ws, const RowBlock& block, double d, size_t n_scales,
                            std::vector<double>& r_sum, std::vector<HeadScale>& out);

// What a pass does with the items it computes: one handler per kind of pass, so that the pass
// (collect_items) holds no branch on the kind and a new kind needs no change to it. A handler has
//   kOffers               whether every admitted pair's upper bounds go to offer();
//   cap()                 the bound on y^2 the pass counts items under (its result);
//   bound()               the bound the screen and the item step use now (read once per row
//                         and again per pair; a stale, higher value only admits extra items);
//   offer(upper)          an upper bound of an admitted pair's y^2 at one scale (kOffers only);
//   end_block(ws, block)  the block's items are in ws.items[block.begin, block.end), their y
//                         computed; returns whether they stay there;
//   result(under_cap)     what collect_items returns.
// Only StoreItems keeps items past their block; the others bound memory by a row block, at the
// cost of one pass each (the bounded-memory path).

// Keeps every item (with the values at or above low_cut, for the threshold, in ws.values).
// kTighten (the last resort): the bound is the K-th smallest upper bound offered so far.
template <bool kTighten>
class StoreItems {
 public:
  static constexpr bool kOffers = kTighten;
  StoreItems(double cap, double low_cut, size_t need)
      : cap_(cap), low_cut_(low_cut), need_(need), kth_(need, cap) {}
  double cap() const { return cap_; }
  double bound() const { return kTighten ? kth_.bound() : cap_; }
  void offer(double upper) { kth_.offer(upper); }
  bool end_block(Workspace& ws, const RowBlock& block) {
    // The threshold's candidates: the items at or above the low cut, appended branch-free.
    const double* y = &ws.items.y[0];
    const size_t first = ws.values.size();
    ws.values.resize(first + (block.end - block.begin));
    size_t kept = first;
    for (size_t t = block.begin; t < block.end; ++t) {
      ws.values[kept] = y[t];
      kept += y[t] >= low_cut_;
    }
    ws.below_cut += static_cast<int64_t>((block.end - block.begin) - (kept - first));
    ws.values.resize(kept);
    ws.blocks.push_back(block);
    if (kTighten && ws.items.size >= prune_at_) prune(ws);
    return true;
  }
  int64_t result(int64_t under_cap) const {
    return kTighten ? static_cast<int64_t>(need_) : under_cap;
  }

 private:
  // Items over the bound can be neither under the threshold nor among the K smallest.
  void prune(Workspace& ws) {
    ItemColumns& items = ws.items;
    const double b_now = kth_.bound() * (1 + 1e-12);
    size_t out = 0;
    for (RowBlock& block : ws.blocks) {
      const size_t begin = out;
      for (size_t t = block.begin; t < block.end; ++t)
        if (items.y[t] * items.y[t] <= b_now) items.move(t, out++);
      block.begin = begin;
      block.end = out;
    }
    items.size = out;
    prune_at_ = std::max<size_t>(2 * items.size, 1 << 16);
  }
  double cap_, low_cut_;
  size_t need_;
  KthSmallestBound kth_;
  size_t prune_at_ = 1 << 16;
};

// Keeps no item; counts those under the cap: below low_cut in ws.below_cut, the others in
// ws.histogram's bins.
class HistogramItems {
 public:
  static constexpr bool kOffers = false;
  HistogramItems(double cap, double low_cut, const YBins& bins)
      : cap_(cap), root_cap_(std::sqrt(cap)), low_cut_(low_cut), bins_(bins) {}
  double cap() const { return cap_; }
  double bound() const { return cap_; }
  void offer(double) {}
  bool end_block(Workspace& ws, const RowBlock& block) {
    for (size_t t = block.begin; t < block.end; ++t) {
      const double y = ws.items.y[t];
      if (!(y <= root_cap_)) continue;  // see collect_items on root_cap
      if (y < low_cut_)
        ++ws.below_cut;
      else
        ++ws.histogram[static_cast<size_t>(bins_.of(y))];
    }
    return false;
  }
  int64_t result(int64_t under_cap) const { return under_cap; }

 private:
  double cap_, root_cap_, low_cut_;
  YBins bins_;
};

// Keeps the values of the items under the cap that fall in bins [first, last] (in ws.values),
// counting those below them in ws.below_cut.
class BandItems {
 public:
  static constexpr bool kOffers = false;
  BandItems(double cap, double low_cut, const YBins& bins, int64_t first, int64_t last)
      : cap_(cap), root_cap_(std::sqrt(cap)), low_cut_(low_cut), bins_(bins), first_(first),
        last_(last) {}
  double cap() const { return cap_; }
  double bound() const { return cap_; }
  void offer(double) {}
  bool end_block(Workspace& ws, const RowBlock& block) {
    for (size_t t = block.begin; t < block.end; ++t) {
      const double y = ws.items.y[t];
      if (!(y <= root_cap_)) continue;
      if (y < low_cut_) {
        ++ws.below_cut;
        continue;
      }
      const int64_t bin = bins_.of(y);
      if (bin < first_)
        ++ws.below_cut;
      else if (bin <= last_)
        ws.values.push_back(y);
    }
    return false;
  }
  int64_t result(int64_t under_cap) const { return under_cap; }

 private:
  double cap_, root_cap_, low_cut_;
  YBins bins_;
  int64_t first_, last_;
};

// Adds each block's correlations over the near keys (y < d) and drops its items.
class NearItems {
 public:
  static constexpr bool kOffers = false;
  NearItems(double d, size_t n_scales, std::vector<double>& r_sum, std::vector<HeadScale>& scales)
      : cap_(d * d * (1 + 1e-12)), d_(d), n_scales_(n_scales), r_sum_(r_sum), scales_(scales) {}
  double cap() const { return cap_; }  // every item with y < d
  double bound() const { return cap_; }
  void offer(double) {}
  bool end_block(Workspace& ws, const RowBlock& block) {
    add_block_correlations(ws, block, d_, n_scales_, r_sum_, scales_);
    return false;
  }
  int64_t result(int64_t under_cap) const { return under_cap; }

 private:
  double cap_, d_;
  size_t n_scales_;
  std::vector<double>& r_sum_;
  std::vector<HeadScale>& scales_;
};

// The pass over every pair: per block of pairs the Gram matrix, the float screen, and the item
// step for the admitted pairs, whose items (every one with exact y^2 <= handler.bound(), plus
// some above it) go to ws.items and, a row block at a time, to the handler. Returns
// handler.result(how many items have exact y^2 <= handler.cap()), or -1 when a token's q or k
// holds NaN or Inf.
template <class Handler>
int64_t collect_items(PreparedHead& h, const ScreenConstants& sc, Handler& handler,
                      Workspace& ws) {
  const double cap = handler.cap();
  const size_t n_scales = sc.n_scales;
  const size_t n_padded = sc.table.n_padded;
  const int dim = h.dim;
  int64_t under_cap = 0;
  ItemColumns& items = ws.items;
  items.clear();
  ws.blocks.clear();
  ws.values.clear();
  ws.below_cut = 0;
  ws.slack.resize(kColBlock);
  ws.admitted.resize(kColBlock + 16);
  ws.q_dist.resize(dim);
  ws.q_dot.resize(dim);
  RowScreen row;
  row.c2_a.resize(n_padded);
  row.inv_c2.resize(n_padded);
  for (size_t s = 0; s < n_padded; ++s)
    row.inv_c2[s] = static_cast<float>(sc.table.inv_c2[s < n_scales ? s : 0]);
  ScaleOrder order;  // the grid sorted by c, for the screen's active scales
  for (size_t s = 0; s < n_scales; ++s) order.sorted.push_back(s);
  std::sort(order.sorted.begin(), order.sorted.end(),
            [&](size_t u, size_t v) { return sc.table.c2[u] < sc.table.c2[v]; });
  for (size_t k = 0; k + 1 < n_scales; ++k)
    order.crossing.push_back(sc.table.c2[order.sorted[k]] * sc.table.c2[order.sorted[k + 1]]);
  const bool centred = h.centred();
  // Without --center the distance vectors are the captured ones: one double copy of the query.
  PairVectors vectors{centred ? ws.q_dist.data() : ws.q_dot.data(), ws.q_dot.data(), nullptr,
                      h.k_mean.data(), dim};

  for (const Region& r : h.regions) {
    if (!compute_norms(h, r.begin, r.end)) return -1;
    const bool float_screen = float_screen_safe(h, r.begin, r.end, r.begin, r.end);
    for (int64_t r0 = r.begin; r0 < r.end; r0 += kRowBlock) {
      const int64_t r1 = std::min(r.end, r0 + kRowBlock);
      const int64_t key_limit = h.key_end[r1 - 1];  // key_end never decreases inside a region
      const size_t block_items = items.size;
      for (int64_t c0 = r.begin; c0 < key_limit; c0 += kColBlock) {
        const int64_t c1 = std::min(key_limit, c0 + kColBlock);
        // With norms beyond float's range (float_screen_safe) the float GEMM would overflow:
        // those regions take the Gram in double (absurd inputs only, so speed does not matter).
        if (float_screen) ws.gram.resize(r1 - r0, c1 - c0);
        const auto [b_lo, b_hi] = std::minmax_element(h.k_norm2_f.begin() + c0,
                                                      h.k_norm2_f.begin() + c1);
        const Eigen::OuterStride<> gram_stride(h.gram_stride);
        const RowsF queries(h.q_gram + r0 * h.gram_stride, r1 - r0, dim, gram_stride);
        const RowsF keys(h.k_gram + c0 * h.gram_stride, c1 - c0, dim, gram_stride);
        if (float_screen)
          ws.gram.noalias() = queries * keys.transpose();
        else
          ws.gram_double.noalias() = queries.cast<double>() * keys.cast<double>().transpose();
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t width = std::min(c1, h.key_end[i]) - c0;
          if (width <= 0) continue;
          const float* g = float_screen ? ws.gram.data() + (i - r0) * (c1 - c0) : nullptr;
          const double* g_double =
              float_screen ? nullptr : ws.gram_double.data() + (i - r0) * (c1 - c0);
          const double bound = handler.bound();
          const double a = h.q_norm2[i];
          int64_t n_admitted = width;
          if (float_screen) {
            for (size_t s = 0; s < n_padded; ++s)
              row.c2_a[s] = static_cast<float>(sc.table.c2[s < n_scales ? s : 0] * a);
            row.margin_per_key_len = static_cast<float>(sc.rel * h.q_len[i] * (1 + 0x1p-16));
            row.bound = static_cast<float>(bound * (1 + 0x1p-16) + 0x1p-100);
            choose_active_scales(row, order, a, *b_lo, *b_hi);
            n_admitted = screened_pairs(row, g, h.k_norm2_f.data() + c0, h.k_len_f.data() + c0,
                                        width, ws.slack.data(), ws.admitted.data());
          } else {
            for (int64_t t = 0; t < width; ++t) ws.admitted[t] = static_cast<uint32_t>(t);
          }
          if (n_admitted == 0) continue;
          const float* q_raw = h.q_vec + i * h.stride;
          for (int l = 0; l < dim; ++l) ws.q_dot[l] = static_cast<double>(q_raw[l]);
          if (centred)
            for (int l = 0; l < dim; ++l) ws.q_dist[l] = ws.q_dot[l] - h.q_mean[l];
          const double rel_q = sc.rel * h.q_len[i];
          items.make_room(static_cast<size_t>(n_admitted) * n_padded);
          for (int64_t u = 0; u < n_admitted; ++u) {
            const int64_t j = c0 + ws.admitted[u];
            const double two_g =
                2.0 * (g ? static_cast<double>(g[ws.admitted[u]]) : g_double[ws.admitted[u]]);
            const double margin_pair = rel_q * h.k_len[j] + kUnderflowSlack;
            const double b = h.k_norm2[j];
            if constexpr (Handler::kOffers)
              for (size_t s = 0; s < n_scales; ++s) {
                const double mag = sc.table.c2[s] * a + sc.table.inv_c2[s] * b;
                handler.offer(sc.upper(mag, two_g, margin_pair));
              }
            vectors.k = h.k_vec + j * h.stride;
            const double item_bound = Handler::kOffers ? handler.bound() : bound;
            const auto query = static_cast<uint32_t>(i);
            items.size += static_cast<size_t>(
                centred ? append_pair_items<true>(sc.table, a, b, two_g, margin_pair, item_bound,
                                                  vectors, query, items.sink())
                        : append_pair_items<false>(sc.table, a, b, two_g, margin_pair, item_bound,
                                                   vectors, query, items.sink()));
          }
        }
      }
      // Square roots off the item step's critical path (a vector loop), then the handler.
      under_cap += roots_counting(&items.y[block_items], items.size - block_items, cap);
      // Every item with y^2 <= cap has y <= sqrt(cap) (roots are correctly rounded, so
      // monotone); an item above the cap whose root rounds to sqrt(cap) may be counted too by
      // the handlers that test y against it, which changes no order statistic: every item left
      // out has y >= sqrt(cap).
      if (!handler.end_block(ws, RowBlock{block_items, items.size, r0, r1 - r0}))
        items.size = block_items;  // nothing kept past the block
    }
  }
  return handler.result(under_cap);
}

// Adds the weighted Pearson correlation of x and y of every (query, scale) of a row block over
// its near keys (y < d, weights (d - y)^2) to `out`, in one pass over the items (the moments
// about a shift, QueryScaleMoments). A query whose x or y takes a single value has zero weighted variance (weights
// are positive, so that is the only way) and no r. The near items are listed first, branch-free:
// about half the block's items are near, and a branch on it mispredicts as often as not.
void add_block_correlations(Workspace& ws, const RowBlock& block, double d, size_t n_scales,
                            std::vector<double>& r_sum, std::vector<HeadScale>& out) {
  const ItemColumns& items = ws.items;
  std::vector<QueryScaleMoments>& moments = ws.moments;  // all zero between blocks
  std::vector<uint32_t>& touched = ws.touched;            // the buckets a block uses
  std::vector<uint32_t>& near = ws.near;                  // the block's near items
  if (moments.size() < static_cast<size_t>(block.rows) * n_scales)
    moments.resize(static_cast<size_t>(block.rows) * n_scales);
  const size_t count = block.end - block.begin;
  if (near.size() < count) near.resize(count);
  size_t n_near = 0;
  for (size_t t = block.begin; t < block.end; ++t) {
    near[n_near] = static_cast<uint32_t>(t - block.begin);
    n_near += items.y[t] < d;
  }
  const uint32_t* query = &items.query[block.begin];
  const uint32_t* scale = &items.scale[block.begin];
  const double* xs = &items.x[block.begin];
  const double* ys = &items.y[block.begin];
  const auto first = static_cast<uint32_t>(block.first);
  auto bucket_of = [&](uint32_t t) {
    return static_cast<uint32_t>((query[t] - first) * n_scales + scale[t]);
  };
  touched.clear();
  for (size_t u = 0; u < n_near; ++u) {
    const uint32_t t = near[u];
    const double x = xs[t], y = ys[t];
    const uint32_t bucket = bucket_of(t);
    QueryScaleMoments& m = moments[bucket];
    if (m.n == 0) {
      touched.push_back(bucket);
      m.x0 = x;
      m.y0 = y;
    }
    const double w = (d - y) * (d - y);
    const double dx = x - m.x0, dy = y - m.y0;
    const double wx = w * dx, wy = w * dy;
    ++m.n;
    m.sw += w;
    m.sx += wx;
    m.sy += wy;
    m.cxx += wx * dx;
    m.cyy += wy * dy;
    m.cxy += wx * dy;
    m.x_min = std::min(m.x_min, x);
    m.x_max = std::max(m.x_max, x);
    m.y_min = std::min(m.y_min, y);
    m.y_max = std::max(m.y_max, y);
  }
  // The centred moments: sum w (dx - mean dx)^2 = sum w dx^2 - (sum w dx)^2 / sum w, ...
  // Where the subtraction cancels more than 1 - kOnePassLoss of the raw moment, the result has
  // lost log10(1 / kOnePassLoss) of double's ~16 digits: those buckets are summed again, about
  // their means, in a second pass over the near items (rare: it needs the first near item far
  // outside a tight cluster of the others).
  constexpr double kOnePassLoss = 1e-4;
  bool any_second_pass = false;
  for (uint32_t bucket : touched) {
    QueryScaleMoments& m = moments[bucket];
    if (!(m.sw > 0)) continue;
    const double cxx = m.cxx - m.sx * (m.sx / m.sw);
    const double cyy = m.cyy - m.sy * (m.sy / m.sw);
    if (cxx < kOnePassLoss * m.cxx || cyy < kOnePassLoss * m.cyy) {
      m.second_pass = any_second_pass = true;
      m.x0 += m.sx / m.sw;  // the weighted means: the second pass's shift
      m.y0 += m.sy / m.sw;
      m.cxx = m.cyy = m.cxy = 0;
    } else {
      m.cxy -= m.sx * (m.sy / m.sw);
      m.cxx = cxx;
      m.cyy = cyy;
    }
  }
  if (any_second_pass) {
    for (size_t u = 0; u < n_near; ++u) {
      const uint32_t t = near[u];
      QueryScaleMoments& m = moments[bucket_of(t)];
      if (!m.second_pass) continue;
      const double w = (d - ys[t]) * (d - ys[t]);
      const double dx = xs[t] - m.x0, dy = ys[t] - m.y0;
      m.cxx += w * dx * dx;
      m.cyy += w * dy * dy;
      m.cxy += w * dx * dy;
    }
  }
  for (uint32_t bucket : touched) {
    QueryScaleMoments& m = moments[bucket];
    const size_t s = bucket % n_scales;
    out[s].near_pairs += m.n;
    if (m.n >= 3 && m.x_min != m.x_max && m.y_min != m.y_max && m.sw > 0 && m.cxx > 0 &&
        m.cyy > 0) {
      r_sum[s] += m.cxy / std::sqrt(m.cxx * m.cyy);  // the 1 / sum(w) of each moment cancels
      ++out[s].queries;
    }
    m = QueryScaleMoments{};
  }
}

// The head in ws.head (prepared); nothing when a token's q or k holds NaN or Inf.
std::optional<HeadOutcome> compute_prepared_head(const ScreenConstants& sc,
                                                 const MetricOptions& options, Workspace& ws) {
  PreparedHead& h = ws.head;
  const size_t n_scales = options.scales.size();
  HeadOutcome out;
  out.scales.resize(n_scales);
  for (int64_t i = 0; i < h.n; ++i) out.pairs += h.key_end[i] - h.region_begin[i];
  if (out.pairs == 0) return out;  // no tokens: the norms' medians are 0

  // Percentile position over all (pair, scale) items: order statistics lo and lo + 1.
  const double total_items = static_cast<double>(out.pairs) * static_cast<double>(n_scales);
  const double pos = (total_items - 1) * options.percentile / 100.0;
  const auto lo = static_cast<int64_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(lo);
  const auto n_items = static_cast<int64_t>(total_items);
  const size_t need = static_cast<size_t>(std::min<int64_t>(lo + 2, n_items));

  // Step 1: caps at the pilot sample's quantile for the needed fraction plus 3 standard
  // deviations of the count and 8 (then 3 and 10 times the fraction): a cap too tight is
  // detected after the pass, which is then redone with the next; the last resort tightens as it
  // goes. (4 deviations and 16 collected 2.4 times the needed items in the many-heads case,
  // where the sample is ~36 items deep; a redo was not seen in its 144 heads at 3 and 8.)
  std::vector<double> caps;
  double low_cut = 0;  // the y under which fewer than lo items are expected (0: none known)
  // Small heads too (a BERT-base head of 24 sequences has ~150k pairs): without a cap the pass
  // starts unbounded and collects, and offers to the running bound, most of its first pairs;
  // the pilot costs a few hundred sampled pairs.
  if (out.pairs >= kPilotMinPairs) {
    // The sample's size balances its cost (~100 cycles per pair) against the items a looser
    // cap costs (~60 cycles each, 4 relative standard deviations of the sample's count):
    // minimising 100 n + 60 K 4 / sqrt(0.035 n) gives n = (6.4 K)^(2/3).
    const auto balanced =
        static_cast<int64_t>(std::pow(6.4 * static_cast<double>(need), 2.0 / 3.0));
    const int64_t n_samples =
        std::min({std::max<int64_t>(balanced, 1024), int64_t{1} << 15, out.pairs / 32});
    const std::vector<double> sample = pilot_upper_bounds(h, sc, out.pairs, n_samples);
    if (sample.empty()) return std::nullopt;
    const double per_item = static_cast<double>(sample.size()) / total_items;
    const double expected = static_cast<double>(need) * per_item;
    // A cut below the lower order statistic: 4 standard deviations under its expected rank.
    const double expected_lo = static_cast<double>(lo + 1) * per_item;
    const double low_rank = expected_lo - 4.0 * std::sqrt(expected_lo) - 16;
    std::vector<size_t> ranks;
    if (low_rank >= 0) ranks.push_back(static_cast<size_t>(low_rank));
    for (double factor : {1.0, 3.0, 10.0}) {
      const double rank = factor * expected + 3.0 * std::sqrt(expected) + 8;
      if (rank >= static_cast<double>(sample.size())) break;
      ranks.push_back(static_cast<size_t>(rank));
    }
    if (!ranks.empty()) caps = small_order_statistics(sample, ranks);
    if (low_rank >= 0) {
      // An estimate: if it is too high (more than lo items under it), step 2 notices.
      low_cut = std::sqrt(std::max(0.0, caps.front()));
      caps.erase(caps.begin());
    }
  }
  std::vector<double> r_sum(n_scales, 0.0);
  auto finish = [&] {
    out.median_q_norm = median(h.q_len);  // the passes computed every token's norms
    out.median_k_norm = median(h.k_len);
    for (size_t s = 0; s < n_scales; ++s)
      if (out.scales[s].queries > 0)
        out.scales[s].wcorr = r_sum[s] / static_cast<double>(out.scales[s].queries);
    return out;
  };

  // Bounded memory: when the items would not fit options.item_memory (all scope over tens of
  // thousands of tokens), three passes that each keep a row block at most: a histogram of y
  // between the pilot's low cut and cap, the values of the one or two bins holding the order
  // statistics, then the correlations block by block. Falls back to the one-pass path below if
  // the pilot's range missed the order statistics.
  constexpr double kBytesPerItem = 2 * sizeof(uint32_t) + 3 * sizeof(double);  // columns, value
  if (!caps.empty() && 1.2 * static_cast<double>(need) * kBytesPerItem >
                           static_cast<double>(options.item_memory)) {
    constexpr int64_t kBins = int64_t{1} << 16;
    const double cap = caps.front();
    const YBins bins(low_cut, std::sqrt(cap), kBins);
    ws.histogram.assign(static_cast<size_t>(kBins), 0);
    HistogramItems histogram(cap, low_cut, bins);
    const int64_t counted = collect_items(h, sc, histogram, ws);
    if (counted < 0) return std::nullopt;
    const int64_t below = ws.below_cut;
    if (counted >= static_cast<int64_t>(need) && below <= lo) {
      // The bins of the ranks lo and lo + 1 among the items above the low cut.
      const int64_t rank_lo = lo - below, rank_hi = std::min(lo + 1, n_items - 1) - below;
      int64_t first = -1, last = -1, seen = 0;
      for (int64_t bin = 0; bin < kBins && last < 0; ++bin) {
        seen += ws.histogram[static_cast<size_t>(bin)];
        if (first < 0 && seen > rank_lo) first = bin;
        if (seen > rank_hi) last = bin;
      }
      QKSCOPE_ENGINE_ASSERT(first >= 0 && last >= first);
      BandItems band(cap, low_cut, bins, first, last);
      if (collect_items(h, sc, band, ws) < 0) return std::nullopt;
      out.threshold = interpolated_order_statistic(ws.values, lo - ws.below_cut, frac);
      const double d = *out.threshold;
      NearItems near(d, n_scales, r_sum, out.scales);
      if (collect_items(h, sc, near, ws) < 0) return std::nullopt;
      return finish();
    }
  }

  ws.items.clear();
  ws.items.make_room(need + need / 8);
  ws.values.reserve(need / 2);
  bool collected = false;
  for (double cap : caps) {
    StoreItems<false> store(cap, low_cut, need);
    const int64_t under_cap = collect_items(h, sc, store, ws);
    if (under_cap < 0) return std::nullopt;
    if (under_cap >= static_cast<int64_t>(need)) {
      collected = true;
      break;
    }
  }
  if (!collected) {
    StoreItems<true> store(kInf, 0.0, need);
    if (collect_items(h, sc, store, ws) < 0) return std::nullopt;
  }
  const ItemColumns& items = ws.items;
  QKSCOPE_ENGINE_ASSERT(items.size >= need);

  // Step 2: the threshold, from the exact distances. The pilot's low cut, when it holds,
  // leaves only the items above it to select from.
  int64_t below = ws.below_cut;
  if (below > lo || ws.values.size() + static_cast<size_t>(below) != items.size) {
    // The cut was too high, or the last-resort pass pruned items: select from everything.
    below = 0;
    ws.values.assign(&items.y[0], &items.y[0] + items.size);
  }
  out.threshold = interpolated_order_statistic(ws.values, lo - below, frac);
  const double d = *out.threshold;

  // Step 3: weighted correlation per (query, scale) over the near keys.
  for (const RowBlock& block : ws.blocks)
    add_block_correlations(ws, block, d, n_scales, r_sum, out.scales);
  return finish();
}

}  // namespace

std::optional<HeadOutcome> compute_head_variant(const HeadInput& in,
                                                const MetricOptions& options) {
  WorkspaceLease lease;  // reused across heads, threads and calls
  Workspace& ws = *lease.ws;
  const ScreenConstants sc(options, in.head_dim);
  if (!prepare(in, options, ws.head)) return std::nullopt;
  PreparedHead& h = ws.head;
  // All scope: the pilot reads the norms of any token, so they are computed first.
  if (options.pairs == PairScope::all && !h.norms_ready) {
    if (!compute_norms(h, 0, h.n)) return std::nullopt;
    h.norms_ready = true;
  }
  return compute_prepared_head(sc, options, ws);
}

}  // namespace qkscope::detail::QKSCOPE_ISA_NS
