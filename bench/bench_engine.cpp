// Engine cost against its physical floor: the metrics of 8 heads (7 scales, head_dim 64) against
// the Gram-matrix GEMMs alone over the same pairs, the work no exact method can skip.
//   BM_EngineSequence/<tokens>  sequence scope, 128-token sequences
//   BM_EngineAll/<tokens>       all scope
//   BM_GramSequence/<tokens>, BM_GramAll/<tokens>   the floor, same blocks, from per-head copies
//   BM_GramSequenceInPlace/<tokens>   the same GEMMs reading the site's layout, as the engine does
//   BM_EngineManyHeads/1872, BM_GramManyHeads/1872   a BERT-base capture of 24 sequences: 144
//       heads (12 sites x 12) of 1,872 tokens, sequences of 78, sequence scope
//   BM_GramBlas*   the floor by OpenBLAS's cblas_sgemm (one thread) on the same blocks
//   BM_Ratio{Sequence,All,ManyHeads}/<tokens>   engine, Eigen floor and OpenBLAS floor
//       interleaved in every iteration, timed by the process's CPU clock: the ratios hold under
//       load from other processes (counters x_eigen, x_blas: medians of engine / floor)
// Counters: pair_scales/s (pairs x scales evaluated per second). The engine runs the variant
// engine_isa.h chose (QKSCOPE_ISA forces one); this program itself is compiled for the build
// machine's CPU, so that the floor is the best GEMM Eigen makes here.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <ctime>
#include <random>

#if defined(QKSCOPE_BENCH_OPENBLAS)
#include <cblas.h>
#endif

#include "qkscope/metrics.h"

namespace {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr int kDim = 64;
constexpr int kSeqLen = 128;
// The BERT-base-like case: 12 sites x 12 heads, 24 sequences of 78 tokens.
constexpr int kManySites = 12, kManyHeads = 12, kManySeqLen = 78;

// Heads per benchmark iteration: a run computes many heads per worker thread, which reuses its
// buffers, so one head alone would overstate the cost of allocation.
constexpr int kHeads = 8;

// `sites` sites of `heads` heads: queries and keys from two overlapping Gaussian clouds.
qkscope::QkData make_data(int64_t n_tokens, int sites = 1, int heads = kHeads,
                          int seq_len = kSeqLen) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.f, 1.f);
  qkscope::QkData data;
  for (int64_t t = 0; t < n_tokens; ++t) {
    data.sequence.push_back(t / seq_len);
    data.position.push_back(t % seq_len);
  }
  for (int s = 0; s < sites; ++s) {
    qkscope::SiteData site;
    site.layer = s;
    site.n_heads = heads;
    site.head_dim = kDim;
    for (int h = 0; h < heads; ++h) site.head_index.push_back(h);
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int l = 0; l < kDim * heads; ++l) {
        float shared = normal(rng);
        site.q.push_back(2.0f * shared + normal(rng));
        site.k.push_back(0.5f * shared + 0.5f * normal(rng));
      }
    data.sites.push_back(std::move(site));
  }
  return data;
}
qkscope::QkData make_head(int64_t n_tokens) { return make_data(n_tokens); }
qkscope::QkData make_many_heads(int64_t n_tokens) {
  return make_data(n_tokens, kManySites, kManyHeads, kManySeqLen);
}

// A benchmark case: the scope and the shape of the data.
struct Case {
  qkscope::PairScope scope;
  int sites = 1, heads = kHeads, seq_len = kSeqLen;
  int64_t total_heads() const { return int64_t{sites} * heads; }
};
const Case kSequence{qkscope::PairScope::sequence};
const Case kAll{qkscope::PairScope::all};
const Case kMany{qkscope::PairScope::sequence, kManySites, kManyHeads, kManySeqLen};

int64_t pairs_of(const Case& c, int64_t n) {
  if (c.scope == qkscope::PairScope::all) return n * n;
  int64_t full = n / c.seq_len, rest = n % c.seq_len;
  return full * c.seq_len * c.seq_len + rest * rest;
}

double pair_scales(const Case& c, int64_t n) {
  return static_cast<double>(pairs_of(c, n)) * 7 * static_cast<double>(c.total_heads());
}

qkscope::MetricOptions engine_options(const Case& c) {
  qkscope::MetricOptions options;
  options.pairs = c.scope;
  options.threads = 1;
  return options;
}

// Each head's vectors contiguous, as the floor reads them.
struct HeadCopies {
  std::vector<RowMatrixF> qs, ks;
  HeadCopies(const qkscope::QkData& data) {
    const int64_t n = data.n_tokens();
    for (const qkscope::SiteData& site : data.sites)
      for (int h = 0; h < site.n_heads; ++h) {
        RowMatrixF qh(n, kDim), kh(n, kDim);
        for (int64_t t = 0; t < n; ++t)
          for (int l = 0; l < kDim; ++l) {
            qh(t, l) = site.q[(t * site.n_heads + h) * kDim + l];
            kh(t, l) = site.k[(t * site.n_heads + h) * kDim + l];
          }
        qs.push_back(std::move(qh));
        ks.push_back(std::move(kh));
      }
  }
};

// The Gram blocks the engine's screen needs: one per sequence (sequence scope) or per
// 256 x 1024 block (all scope), each computed by `gemm(q rows, k rows, rows, cols)`.
template <class Gemm>
void for_each_block(const Case& c, int64_t n, Gemm&& gemm) {
  if (c.scope == qkscope::PairScope::all) {
    for (int64_t r0 = 0; r0 < n; r0 += 256)
      for (int64_t c0 = 0; c0 < n; c0 += 1024)
        gemm(r0, c0, std::min<int64_t>(256, n - r0), std::min<int64_t>(1024, n - c0));
  } else {
    for (int64_t s = 0; s < n; s += c.seq_len) {
      const int64_t len = std::min<int64_t>(c.seq_len, n - s);
      gemm(s, s, len, len);
    }
  }
}

// The floor by Eigen (as the engine computes its Gram blocks).
void eigen_floor(const Case& c, int64_t n, const HeadCopies& copies, RowMatrixF& gram) {
  for (size_t h = 0; h < copies.qs.size(); ++h)
    for_each_block(c, n, [&](int64_t r0, int64_t c0, int64_t rows, int64_t cols) {
      gram.resize(rows, cols);
      gram.noalias() = copies.qs[h].middleRows(r0, rows) * copies.ks[h].middleRows(c0, cols).transpose();
      benchmark::DoNotOptimize(gram.data());
    });
}

// The floor by OpenBLAS: G = Q K^T, row-major, one thread. (ssyrk does not apply: Q and K
// differ.) Without OpenBLAS at build time, nothing (x_blas then reads as infinite).
void blas_floor(const Case& c, int64_t n, const HeadCopies& copies, std::vector<float>& gram) {
#if !defined(QKSCOPE_BENCH_OPENBLAS)
  (void)c, (void)n, (void)copies, (void)gram;
#else
  gram.resize(256 * 1024);
  for (size_t h = 0; h < copies.qs.size(); ++h)
    for_each_block(c, n, [&](int64_t r0, int64_t c0, int64_t rows, int64_t cols) {
      if (gram.size() < static_cast<size_t>(rows * cols)) gram.resize(rows * cols);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(cols), kDim, 1.0f, copies.qs[h].data() + r0 * kDim, kDim,
                  copies.ks[h].data() + c0 * kDim, kDim, 0.0f, gram.data(), static_cast<int>(cols));
      benchmark::DoNotOptimize(gram.data());
    });
#endif
}

void blas_threads_one() {
#if defined(QKSCOPE_BENCH_OPENBLAS)
  openblas_set_num_threads(1);
#endif
}

void run_engine(benchmark::State& state, const Case& c, qkscope::QkData (*make)(int64_t)) {
  const int64_t n = state.range(0);
  const qkscope::QkData data = make(n);
  const qkscope::MetricOptions options = engine_options(c);
  for (auto _ : state) benchmark::DoNotOptimize(qkscope::compute_ctable(data, options));
  state.counters["pair_scales/s"] =
      benchmark::Counter(pair_scales(c, n), benchmark::Counter::kIsIterationInvariantRate);
}

void run_gram(benchmark::State& state, const Case& c, qkscope::QkData (*make)(int64_t)) {
  const int64_t n = state.range(0);
  const HeadCopies copies(make(n));
  RowMatrixF gram;
  for (auto _ : state) eigen_floor(c, n, copies, gram);
  state.counters["pair_scales/s"] =
      benchmark::Counter(pair_scales(c, n), benchmark::Counter::kIsIterationInvariantRate);
}

void run_gram_blas(benchmark::State& state, const Case& c, qkscope::QkData (*make)(int64_t)) {
#if !defined(QKSCOPE_BENCH_OPENBLAS)
  state.SkipWithError("built without OpenBLAS");
#endif
  blas_threads_one();
  const int64_t n = state.range(0);
  const HeadCopies copies(make(n));
  std::vector<float> gram;
  for (auto _ : state) blas_floor(c, n, copies, gram);
  state.counters["pair_scales/s"] =
      benchmark::Counter(pair_scales(c, n), benchmark::Counter::kIsIterationInvariantRate);
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Engine, Eigen floor and OpenBLAS floor one after another in every iteration, each timed by the
// process's CPU clock (everything runs on one thread at a time): other processes' load slows
// all three alike and leaves the ratios.
void run_ratio(benchmark::State& state, const Case& c, qkscope::QkData (*make)(int64_t)) {
  blas_threads_one();
  const int64_t n = state.range(0);
  const qkscope::QkData data = make(n);
  const HeadCopies copies(data);
  const qkscope::MetricOptions options = engine_options(c);
  RowMatrixF gram;
  std::vector<float> gram_blas;
  std::vector<double> engine_s, eigen_s, blas_s;
  for (auto _ : state) {
    double t0 = process_cpu_seconds();
    benchmark::DoNotOptimize(qkscope::compute_ctable(data, options));
    double t1 = process_cpu_seconds();
    eigen_floor(c, n, copies, gram);
    double t2 = process_cpu_seconds();
    blas_floor(c, n, copies, gram_blas);
    double t3 = process_cpu_seconds();
    engine_s.push_back(t1 - t0);
    eigen_s.push_back(t2 - t1);
    blas_s.push_back(t3 - t2);
    state.SetIterationTime(t1 - t0);
  }
  const double engine = median(engine_s), eigen = median(eigen_s), blas = median(blas_s);
  state.counters["engine_ms"] = 1e3 * engine;
  state.counters["eigen_ms"] = 1e3 * eigen;
  state.counters["blas_ms"] = 1e3 * blas;
  state.counters["x_eigen"] = engine / eigen;
  state.counters["x_blas"] = engine / blas;
  state.counters["us_per_head_token"] =
      1e6 * engine / static_cast<double>(c.total_heads() * n);
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
  state.counters["pair_scales/s"] =
      benchmark::Counter(pair_scales(kSequence, n), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_EngineSequence(benchmark::State& s) { run_engine(s, kSequence, make_head); }
void BM_GramSequence(benchmark::State& s) { run_gram(s, kSequence, make_head); }
void BM_GramBlasSequence(benchmark::State& s) { run_gram_blas(s, kSequence, make_head); }
void BM_RatioSequence(benchmark::State& s) { run_ratio(s, kSequence, make_head); }
void BM_EngineAll(benchmark::State& s) { run_engine(s, kAll, make_head); }
void BM_GramAll(benchmark::State& s) { run_gram(s, kAll, make_head); }
void BM_GramBlasAll(benchmark::State& s) { run_gram_blas(s, kAll, make_head); }
void BM_RatioAll(benchmark::State& s) { run_ratio(s, kAll, make_head); }
void BM_EngineManyHeads(benchmark::State& s) { run_engine(s, kMany, make_many_heads); }
void BM_GramManyHeads(benchmark::State& s) { run_gram(s, kMany, make_many_heads); }
void BM_GramBlasManyHeads(benchmark::State& s) { run_gram_blas(s, kMany, make_many_heads); }
void BM_RatioManyHeads(benchmark::State& s) { run_ratio(s, kMany, make_many_heads); }

#define QKSCOPE_BENCH(name) BENCHMARK(name)->Unit(benchmark::kMillisecond)->UseRealTime()
QKSCOPE_BENCH(BM_GramSequence)->Arg(10000)->Arg(50000);
QKSCOPE_BENCH(BM_GramBlasSequence)->Arg(10000)->Arg(50000);
QKSCOPE_BENCH(BM_GramSequenceInPlace)->Arg(10000)->Arg(50000);
QKSCOPE_BENCH(BM_EngineSequence)->Arg(10000)->Arg(50000);
QKSCOPE_BENCH(BM_GramAll)->Arg(2048)->Arg(4096)->Arg(8192);
QKSCOPE_BENCH(BM_GramBlasAll)->Arg(2048)->Arg(4096)->Arg(8192);
QKSCOPE_BENCH(BM_EngineAll)->Arg(2048)->Arg(4096)->Arg(8192);
QKSCOPE_BENCH(BM_GramManyHeads)->Arg(1872);
QKSCOPE_BENCH(BM_GramBlasManyHeads)->Arg(1872);
QKSCOPE_BENCH(BM_EngineManyHeads)->Arg(1872);
// Iterations fixed so that every ratio is a median of the same number of interleaved rounds.
#define QKSCOPE_RATIO(name) \
  BENCHMARK(name)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(5)
QKSCOPE_RATIO(BM_RatioSequence)->Arg(10000)->Arg(50000);
QKSCOPE_RATIO(BM_RatioAll)->Arg(2048)->Arg(4096)->Arg(8192);
QKSCOPE_RATIO(BM_RatioManyHeads)->Arg(1872);

}  // namespace

BENCHMARK_MAIN();
