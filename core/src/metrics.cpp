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

int64_t count_heads(const QkData& data) {
  int64_t n = 0;
  for (const SiteData& site : data.sites) n += site.n_heads;
  return n;
}

std::vector<HeadResult> compute_heads(const QkData& data, const MetricOptions& options,
                                      int64_t first, int64_t count, const ProgressFn& progress) {
  validate(options);
  validate(data, "compute_heads");
  const int64_t total = count_heads(data);
  QKSCOPE_CHECK(first >= 0 && count >= 0 && first + count <= total,
                "compute_heads: heads [{}, {}) requested, the data holds {} heads", first,
                first + count, total);
  struct HeadRef {
    size_t site;
    int head;
  };
  std::vector<HeadRef> refs;
  int64_t number = 0;
  for (size_t s = 0; s < data.sites.size(); ++s)
    for (int h = 0; h < data.sites[s].n_heads; ++h, ++number)
      if (number >= first && number < first + count) refs.push_back({s, h});

  std::vector<detail::HeadOutcome> outcomes(refs.size());
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
      },
      progress);

  std::vector<HeadResult> heads;
  heads.reserve(refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    const SiteData& site = data.sites[refs[i].site];
    const detail::HeadOutcome& o = outcomes[i];
    HeadResult head;
    head.layer = site.layer;
    head.head = site.head_index[refs[i].head];
    head.module = site.module;
    head.prescale = site.prescale;
    head.tokens = data.n_tokens() - o.nonfinite_tokens;
    head.nonfinite_tokens = o.nonfinite_tokens;
    head.pairs = o.pairs;
    head.threshold = o.threshold;
    head.median_q_norm = o.median_q_norm;
    head.median_k_norm = o.median_k_norm;
    std::vector<std::optional<double>> wcorr(options.scales.size());
    for (size_t s = 0; s < options.scales.size(); ++s) {
      ScaleResult r;
      r.c = options.scales[s];
      r.wcorr = o.scales[s].wcorr;
      r.queries = o.scales[s].queries;
      r.near_pairs = o.scales[s].near_pairs;
      wcorr[s] = r.wcorr;
      head.scales.push_back(r);
    }
    if (auto s = choose_scale(options.scales, wcorr, options.select)) head.c_wcorr = options.scales[*s];
    if (o.median_q_norm > 0 && o.median_k_norm > 0)
      head.c_norm = std::sqrt(o.median_k_norm / o.median_q_norm);  // sqrt(1 / rho)
    heads.push_back(std::move(head));
  }
  return heads;
}

CTable assemble_ctable(const QkData& data, const MetricOptions& options,
                       std::vector<HeadResult> heads) {
  validate(options);
  const int64_t total = count_heads(data);
  QKSCOPE_CHECK(static_cast<int64_t>(heads.size()) == total,
                "assemble_ctable: {} head results for data with {} heads", heads.size(), total);
  CTable table;
  table.options = options;
  table.tokens_seen = std::max(data.tokens_seen, data.n_tokens());
  table.tokens_kept = data.n_tokens();
  table.sequences_kept = 0;
  for (size_t t = 0; t < data.sequence.size(); ++t)
    if (t == 0 || data.sequence[t] != data.sequence[t - 1]) ++table.sequences_kept;
  table.sequences_seen = std::max(data.sequences_seen, table.sequences_kept);

  // Metric 2 needs the mean over all heads of n(h, c), heads without queries counting 0.
  const size_t n_scales = options.scales.size();
  for (const HeadResult& h : heads) {
    QKSCOPE_CHECK(h.scales.size() == n_scales, "assemble_ctable: layer {} head {} has {} scales, "
                  "the options {}", h.layer, h.head, h.scales.size(), n_scales);
    for (size_t s = 0; s < n_scales; ++s)
      QKSCOPE_CHECK(h.scales[s].c == options.scales[s], "assemble_ctable: layer {} head {} scale "
                    "{} is c = {}, the options' {}", h.layer, h.head, s, h.scales[s].c,
                    options.scales[s]);
  }
  std::vector<double> mean_queries(n_scales, 0.0);
  for (const HeadResult& h : heads)
    for (size_t s = 0; s < n_scales; ++s) mean_queries[s] += static_cast<double>(h.scales[s].queries);
  for (double& m : mean_queries) m /= std::max<double>(1.0, static_cast<double>(heads.size()));

  for (HeadResult& head : heads) {
    std::vector<std::optional<double>> scaled(n_scales);
    for (size_t s = 0; s < n_scales; ++s) {
      ScaleResult& r = head.scales[s];
      r.wcorr_scaled.reset();
      if (r.wcorr && mean_queries[s] > 0)
        r.wcorr_scaled = *r.wcorr * static_cast<double>(r.queries) / mean_queries[s];
      scaled[s] = r.wcorr_scaled;
    }
    head.c_wcorr_scaled.reset();
    if (auto s = choose_scale(options.scales, scaled, options.select))
      head.c_wcorr_scaled = options.scales[*s];
  }
  table.heads = std::move(heads);
  return table;
}

CTable compute_ctable(const QkData& data, const MetricOptions& options,
                      const ProgressFn& progress) {
  return assemble_ctable(data, options,
                         compute_heads(data, options, 0, count_heads(data), progress));
}

}  // namespace qkscope
