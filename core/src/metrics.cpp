// The table over all heads: per-head work in parallel (head_metrics.cpp), then what needs every
// head (metric 2's mean n) and the choice of c.
#include "qkscope/metrics.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "head_metrics.h"
#include "qkscope/error.h"

namespace qkscope {
namespace {

// Runs task(i) for i in [0, count) on `threads` workers; the calling thread reports progress
// and rethrows the first exception a worker caught (workers never let one escape).
template <class Task>
void parallel_for(int64_t count, int threads, const Task& task, const ProgressFn& progress) {
  std::atomic<int64_t> next{0};
  std::mutex mutex;
  std::condition_variable changed;
  int64_t done = 0;
  std::exception_ptr failure;
  auto worker = [&] {
    while (true) {
      int64_t i = next.fetch_add(1);
      if (i >= count) return;
      std::exception_ptr error;
      try {
        task(i);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (error && !failure) {
        failure = error;
        next.store(count);  // stop handing out work
      }
      ++done;
      changed.notify_one();
    }
  };
  const int n_workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, count)));
  std::vector<std::thread> pool;
  for (int t = 0; t < n_workers; ++t) pool.emplace_back(worker);
  {
    std::unique_lock<std::mutex> lock(mutex);
    int64_t reported = -1;
    while (true) {
      bool finished = done >= count || (failure && next.load() >= count);
      if (progress && done != reported && !failure) {
        reported = done;
        int64_t now = done;
        lock.unlock();
        // The progress callback may throw to cancel (an interrupted program): workers stop
        // taking heads and the exception is rethrown once they are joined.
        std::exception_ptr cancelled;
        try {
          progress(now, count);
        } catch (...) {
          cancelled = std::current_exception();
        }
        lock.lock();
        if (cancelled) {
          if (!failure) failure = cancelled;
          next.store(count);
        }
        continue;
      }
      if (finished) break;
      changed.wait(lock);
    }
  }
  for (std::thread& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

// Tie-breaking key: nearest to 1 in |log c|, then the smaller c. Reciprocal pairs such as 0.8
// and 1.25 differ in |log c| only by the rounding of 0.8, so |log c| within 1e-12 counts as equal.
bool preferred_on_tie(double a, double b) {
  double la = std::abs(std::log(a)), lb = std::abs(std::log(b));
  if (std::abs(la - lb) > 1e-12 * std::max(1.0, std::max(la, lb))) return la < lb;
  return a < b;
}

}  // namespace

std::optional<size_t> choose_scale(const std::vector<double>& c,
                                   const std::vector<std::optional<double>>& values,
                                   SelectRule rule) {
  QKSCOPE_ASSERT(c.size() == values.size());
  std::optional<size_t> best;
  double best_score = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    if (!values[i] || std::isnan(*values[i])) continue;
    double score = rule == SelectRule::closest ? std::abs(*values[i] + 1.0) : *values[i];
    if (!best || score < best_score || (score == best_score && preferred_on_tie(c[i], c[*best]))) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

double percentile_linear(std::vector<double>& values, double percent) {
  QKSCOPE_CHECK(!values.empty(), "percentile of an empty set");
  const double pos = static_cast<double>(values.size() - 1) * percent / 100.0;
  const auto lo = static_cast<size_t>(std::floor(pos));
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const double v_lo = values[lo];
  if (lo + 1 >= values.size()) return v_lo;
  const double v_hi = *std::min_element(values.begin() + lo + 1, values.end());
  return v_lo + (pos - static_cast<double>(lo)) * (v_hi - v_lo);
}

CTable compute_ctable(const QkData& data, const MetricOptions& options,
                      const ProgressFn& progress) {
  validate(options);
  validate(data, "compute_ctable");
  CTable table;
  table.options = options;
  table.tokens_seen = std::max(data.tokens_seen, data.n_tokens());
  table.tokens_kept = data.n_tokens();
  table.sequences_kept = 0;
  for (size_t t = 0; t < data.sequence.size(); ++t)
    if (t == 0 || data.sequence[t] != data.sequence[t - 1]) ++table.sequences_kept;
  table.sequences_seen = std::max(data.sequences_seen, table.sequences_kept);

  struct HeadRef {
    size_t site;
    int head;
  };
  std::vector<HeadRef> refs;
  for (size_t s = 0; s < data.sites.size(); ++s)
    for (int h = 0; h < data.sites[s].n_heads; ++h) refs.push_back({s, h});

  std::vector<detail::HeadOutcome> outcomes(refs.size());
  std::vector<int64_t> nonfinite(refs.size(), 0);
  const int threads =
      options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  parallel_for(
      static_cast<int64_t>(refs.size()), threads,
      [&](int64_t i) {
        const SiteData& site = data.sites[refs[i].site];
        detail::HeadInput in;
        in.stride = static_cast<int64_t>(site.n_heads) * site.head_dim;
        in.q = site.q.data() + static_cast<int64_t>(refs[i].head) * site.head_dim;
        in.k = site.k.data() + static_cast<int64_t>(refs[i].head) * site.head_dim;
        in.head_dim = site.head_dim;
        in.n_tokens = data.n_tokens();
        in.sequence = data.sequence.data();
        in.position = data.position.data();
        outcomes[i] = detail::compute_head(in, options);
        nonfinite[i] = outcomes[i].nonfinite_tokens;
      },
      progress);

  // Metric 2 needs the mean over all heads of n(h, c), heads without queries counting 0.
  const size_t n_scales = options.scales.size();
  std::vector<double> mean_queries(n_scales, 0.0);
  for (const auto& o : outcomes)
    for (size_t s = 0; s < n_scales; ++s) mean_queries[s] += static_cast<double>(o.scales[s].queries);
  for (double& m : mean_queries) m /= std::max<double>(1.0, static_cast<double>(outcomes.size()));

  for (size_t i = 0; i < refs.size(); ++i) {
    const SiteData& site = data.sites[refs[i].site];
    const detail::HeadOutcome& o = outcomes[i];
    HeadResult head;
    head.layer = site.layer;
    head.head = site.head_index[refs[i].head];
    head.module = site.module;
    head.prescale = site.prescale;
    head.tokens = data.n_tokens() - nonfinite[i];
    head.nonfinite_tokens = nonfinite[i];
    head.pairs = o.pairs;
    head.threshold = o.threshold;
    head.median_q_norm = o.median_q_norm;
    head.median_k_norm = o.median_k_norm;
    std::vector<std::optional<double>> wcorr(n_scales), scaled(n_scales);
    for (size_t s = 0; s < n_scales; ++s) {
      ScaleResult r;
      r.c = options.scales[s];
      r.wcorr = o.scales[s].wcorr;
      r.queries = o.scales[s].queries;
      r.near_pairs = o.scales[s].near_pairs;
      if (r.wcorr && mean_queries[s] > 0)
        r.wcorr_scaled = *r.wcorr * static_cast<double>(r.queries) / mean_queries[s];
      wcorr[s] = r.wcorr;
      scaled[s] = r.wcorr_scaled;
      head.scales.push_back(r);
    }
    if (auto s = choose_scale(options.scales, wcorr, options.select)) head.c_wcorr = options.scales[*s];
    if (auto s = choose_scale(options.scales, scaled, options.select))
      head.c_wcorr_scaled = options.scales[*s];
    if (o.median_q_norm > 0 && o.median_k_norm > 0)
      head.c_norm = std::sqrt(o.median_k_norm / o.median_q_norm);  // sqrt(1 / rho)
    table.heads.push_back(std::move(head));
  }
  return table;
}

}  // namespace qkscope
