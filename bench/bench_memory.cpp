// Peak resident memory of the metric engine (compute_ctable) against the size of the q/k it
// reads. Synthetic data: `sites` sites of `heads` heads, head_dim 64, sequences of 128 tokens,
// queries and keys from two overlapping Gaussian clouds (as bench_engine), fixed seed.
//
//   bench_memory [--tokens N] [--sites L] [--heads H] [--scope sequence|causal|all] [--threads T]
//                [--item-memory-mb M]   (MetricOptions::item_memory, default 256)
//
// --threads 0 (default) uses the machine's cores, as compute_ctable does; the JSON gives the count.
// Run one size per process: ru_maxrss is a high-water mark. Prints one JSON object: qk_MB (the
// q/k floats), rss_before_MB (resident set before the engine, data built), peak_MB (ru_maxrss
// after the engine), engine_extra_MB (peak - rss_before), engine_s.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <thread>

#include "qkscope/metrics.h"

namespace {

constexpr int kDim = 64;
constexpr int kSeqLen = 128;

// xoshiro128+ with Box-Muller: fast enough for billions of normals.
struct Normal {
  uint32_t s[4] = {0x9E3779B9u, 0x243F6A88u, 0xB7E15162u, 0x12345678u};
  float spare = 0;
  bool has_spare = false;
  uint32_t next() {
    const uint32_t result = s[0] + s[3], t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >> 21);
    return result;
  }
  float operator()() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    const float u1 = (static_cast<float>(next() >> 8) + 1.0f) * (1.0f / 16777217.0f);
    const float u2 = static_cast<float>(next() >> 8) * (1.0f / 16777216.0f);
    const float r = std::sqrt(-2.0f * std::log(u1));
    spare = r * std::sin(6.2831853f * u2);
    has_spare = true;
    return r * std::cos(6.2831853f * u2);
  }
};

double mb(double bytes) { return bytes / (1024.0 * 1024.0); }

double max_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return 1024.0 * static_cast<double>(usage.ru_maxrss);  // kilobytes on Linux
}

double current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

int usage() {
  std::fprintf(stderr, "usage: bench_memory [--tokens N] [--sites L] [--heads H] "
                       "[--scope sequence|causal|all] [--threads T] [--item-memory-mb M]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n_tokens = 50000;
  int sites = 12, heads = 12, threads = 0;
  double item_memory_mb = 256;
  std::string scope = "sequence";
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--tokens") && has_value) n_tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--sites") && has_value) sites = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--heads") && has_value) heads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--scope") && has_value) scope = argv[++i];
    else if (!std::strcmp(argv[i], "--threads") && has_value) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--item-memory-mb") && has_value) item_memory_mb = std::atof(argv[++i]);
    else return usage();
  }
  if (n_tokens <= 0 || sites <= 0 || heads <= 0 || threads < 0 || !(item_memory_mb > 0)) return usage();
  try {
    qkscope::MetricOptions options;
    options.pairs = qkscope::parse_pair_scope(scope);
    options.threads = threads;
    options.item_memory = static_cast<int64_t>(item_memory_mb * 1024 * 1024);
    const double rss_start = current_rss_bytes();

    qkscope::QkData data;
    data.sequence.resize(n_tokens);
    data.position.resize(n_tokens);
    for (int64_t t = 0; t < n_tokens; ++t) {
      data.sequence[t] = t / kSeqLen;
      data.position[t] = t % kSeqLen;
    }
    data.tokens_seen = n_tokens;
    data.sequences_seen = (n_tokens + kSeqLen - 1) / kSeqLen;
    Normal normal;
    for (int l = 0; l < sites; ++l) {
      qkscope::SiteData site;
      site.layer = l;
      site.n_heads = heads;
      site.head_dim = kDim;
      for (int h = 0; h < heads; ++h) site.head_index.push_back(h);
      const size_t n = static_cast<size_t>(n_tokens) * heads * kDim;
      site.q.resize(n);
      site.k.resize(n);
      for (size_t i = 0; i < n; ++i) {
        const float shared = normal();
        site.q[i] = 2.0f * shared + normal();
        site.k[i] = 0.5f * shared + 0.5f * normal();
      }
      data.sites.push_back(std::move(site));
    }
    const double qk_bytes = 2.0 * static_cast<double>(n_tokens) * sites * heads * kDim * sizeof(float);
    const double rss_before = current_rss_bytes();

    const auto start = std::chrono::steady_clock::now();
    qkscope::CTable table = qkscope::compute_ctable(data, options);
    const double engine_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double peak = max_rss_bytes();
    std::printf("{\"tokens\": %lld, \"sites\": %d, \"heads_per_site\": %d, \"heads\": %d, "
                "\"head_dim\": %d, \"scope\": \"%s\", \"threads\": %d, \"qk_MB\": %.1f, "
                "\"rss_start_MB\": %.1f, \"rss_before_MB\": %.1f, \"peak_MB\": %.1f, "
                "\"engine_extra_MB\": %.1f, \"engine_s\": %.3f, \"heads_done\": %zu, "
                "\"item_memory_MB\": %.1f}\n",
                static_cast<long long>(n_tokens), sites, heads, sites * heads, kDim, scope.c_str(),
                threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()),
                mb(qk_bytes), mb(rss_start), mb(rss_before), mb(peak),
                mb(peak - rss_before), engine_s, table.heads.size(), item_memory_mb);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_memory: error: %s\n", e.what());
    return 1;
  }
}
