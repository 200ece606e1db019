// Engine cost against its physical floor: the metrics of 8 heads (7 scales, head_dim 64) against
// the Gram-matrix GEMMs alone over the same pairs, the work no exact method can skip.
//   BM_EngineSequence/<tokens>  sequence scope, 128-token sequences
//   BM_EngineAll/<tokens>       all scope
//   BM_GramSequence/<tokens>, BM_GramAll/<tokens>   the floor, same blocks, from per-head copies
//   BM_GramSequenceInPlace/<tokens>   the same GEMMs reading the site's layout, as the engine does
// Counters: pair_scales/s (pairs x scales evaluated per second).
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <random>

#include "qkscope/metrics.h"

namespace {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr int kDim = 64;
constexpr int kSeqLen = 128;

// Heads per benchmark iteration: a run computes many heads per worker thread, which reuses its
// buffers, so one head alone would overstate the cost of allocation.
constexpr int kHeads = 8;

// One site of kHeads heads: queries and keys from two overlapping Gaussian clouds.
qkscope::QkData make_head(int64_t n_tokens) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.f, 1.f);
  qkscope::QkData data;
  qkscope::SiteData site;
  site.n_heads = kHeads;
  site.head_dim = kDim;
  for (int h = 0; h < kHeads; ++h) site.head_index.push_back(h);
  for (int64_t t = 0; t < n_tokens; ++t) {
    data.sequence.push_back(t / kSeqLen);
    data.position.push_back(t % kSeqLen);
    for (int l = 0; l < kDim * kHeads; ++l) {
      float shared = normal(rng);
      site.q.push_back(2.0f * shared + normal(rng));
      site.k.push_back(0.5f * shared + 0.5f * normal(rng));
    }
  }
  data.sites.push_back(std::move(site));
  return data;
}

int64_t pairs_of(qkscope::PairScope scope, int64_t n) {
  if (scope == qkscope::PairScope::all) return n * n;
  int64_t full = n / kSeqLen, rest = n % kSeqLen;
  return full * kSeqLen * kSeqLen + rest * rest;
}

void run_engine(benchmark::State& state, qkscope::PairScope scope) {
  const int64_t n = state.range(0);
  qkscope::QkData data = make_head(n);
  qkscope::MetricOptions options;
  options.pairs = scope;
  options.threads = 1;
  for (auto _ : state) benchmark::DoNotOptimize(qkscope::compute_ctable(data, options));
  const double items = static_cast<double>(pairs_of(scope, n)) * options.scales.size() * kHeads;
  state.counters["pair_scales/s"] = benchmark::Counter(items, benchmark::Counter::kIsIterationInvariantRate);
}

// The same float GEMMs the engine's screen runs: one per sequence (sequence scope) or per
// 256 x 1024 block (all scope).
void run_gram(benchmark::State& state, qkscope::PairScope scope) {
  const int64_t n = state.range(0);
  qkscope::QkData data = make_head(n);
  // Each head's vectors contiguous, as the engine gathers them.
  std::vector<RowMatrixF> qs, ks;
  for (int h = 0; h < kHeads; ++h) {
    RowMatrixF qh(n, kDim), kh(n, kDim);
    for (int64_t t = 0; t < n; ++t)
      for (int l = 0; l < kDim; ++l) {
        qh(t, l) = data.sites[0].q[(t * kHeads + h) * kDim + l];
        kh(t, l) = data.sites[0].k[(t * kHeads + h) * kDim + l];
      }
    qs.push_back(qh);
    ks.push_back(kh);
  }
  RowMatrixF gram;
  for (auto _ : state) for (int h = 0; h < kHeads; ++h) {
    const RowMatrixF& qf = qs[h];
    const RowMatrixF& kf = ks[h];
    if (scope == qkscope::PairScope::all) {
      for (int64_t r0 = 0; r0 < n; r0 += 256)
        for (int64_t c0 = 0; c0 < n; c0 += 1024) {
          int64_t rows = std::min<int64_t>(256, n - r0), cols = std::min<int64_t>(1024, n - c0);
          gram.resize(rows, cols);
          gram.noalias() = qf.middleRows(r0, rows) * kf.middleRows(c0, cols).transpose();
          benchmark::DoNotOptimize(gram.data());
        }
    } else {
      for (int64_t s = 0; s < n; s += kSeqLen) {
        int64_t len = std::min<int64_t>(kSeqLen, n - s);
        gram.resize(len, len);
        gram.noalias() = qf.middleRows(s, len) * kf.middleRows(s, len).transpose();
        benchmark::DoNotOptimize(gram.data());
      }
    }
  }
  const double items = static_cast<double>(pairs_of(scope, n)) * 7 * kHeads;
  state.counters["pair_scales/s"] = benchmark::Counter(items, benchmark::Counter::kIsIterationInvariantRate);
}

// The sequence-scope GEMMs reading the site where it is ([token, head, dim], head after head),
// as the engine does: the same floor plus the cost of reading each head's rows out of the site.
void BM_GramSequenceInPlace(benchmark::State& state) {
  const int64_t n = state.range(0);
  qkscope::QkData data = make_head(n);
  const qkscope::SiteData& site = data.sites[0];
  using Rows = Eigen::Map<const RowMatrixF, 0, Eigen::OuterStride<>>;
  const Eigen::OuterStride<> stride(kHeads * kDim);
  RowMatrixF gram;
  for (auto _ : state)
    for (int h = 0; h < kHeads; ++h)
      for (int64_t s = 0; s < n; s += kSeqLen) {
        const int64_t len = std::min<int64_t>(kSeqLen, n - s);
        gram.resize(len, len);
        gram.noalias() = Rows(site.q.data() + (s * kHeads + h) * kDim, len, kDim, stride) *
                         Rows(site.k.data() + (s * kHeads + h) * kDim, len, kDim, stride).transpose();
        benchmark::DoNotOptimize(gram.data());
      }
  const double items = static_cast<double>(pairs_of(qkscope::PairScope::sequence, n)) * 7 * kHeads;
  state.counters["pair_scales/s"] = benchmark::Counter(items, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_EngineSequence(benchmark::State& s) { run_engine(s, qkscope::PairScope::sequence); }
void BM_GramSequence(benchmark::State& s) { run_gram(s, qkscope::PairScope::sequence); }
void BM_EngineAll(benchmark::State& s) { run_engine(s, qkscope::PairScope::all); }
void BM_GramAll(benchmark::State& s) { run_gram(s, qkscope::PairScope::all); }

BENCHMARK(BM_GramSequence)->Arg(10000)->Arg(50000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GramSequenceInPlace)->Arg(10000)->Arg(50000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EngineSequence)->Arg(10000)->Arg(50000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GramAll)->Arg(2048)->Arg(4096)->Arg(8192)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EngineAll)->Arg(2048)->Arg(4096)->Arg(8192)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
