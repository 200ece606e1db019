// The store alone, shaped like a BERT-base capture: sequences of random lengths offered batch by
// batch, site by site (as forwards do), then take(). Prints the time of the adds and of take(),
// the peak RSS before and after take() (VmHWM), and checks every float of take()'s output.
//
//   bench_store_take [--sequences N=256] [--min-len 16] [--max-len 128] [--batch 8]
//                    [--sites 12] [--heads 12] [--dim 64] [--max-tokens T] [--seed 1]
//
// One process per measurement: VmHWM only grows. Without the model the figures isolate the
// store: its growth on fresh pages during the adds, take()'s copy and its peak.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "qkscope/qk_store.h"

namespace {

long status_kb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field));
  return -1;
}

// The value every float is checked against: distinct per (site, sequence, position, element).
float value(int site, int64_t seq, int64_t pos, int e) {
  return static_cast<float>((site * 131 + seq * 7 + pos * 3 + e) % 65521);
}

}  // namespace

int main(int argc, char** argv) {
  int sequences = 256, min_len = 16, max_len = 128, batch = 8, sites = 12, heads = 12, dim = 64;
  int64_t max_tokens = 0;
  unsigned seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    long v = std::atol(argv[i + 1]);
    if (a == "--sequences") sequences = static_cast<int>(v);
    else if (a == "--min-len") min_len = static_cast<int>(v);
    else if (a == "--max-len") max_len = static_cast<int>(v);
    else if (a == "--batch") batch = static_cast<int>(v);
    else if (a == "--sites") sites = static_cast<int>(v);
    else if (a == "--heads") heads = static_cast<int>(v);
    else if (a == "--dim") dim = static_cast<int>(v);
    else if (a == "--max-tokens") max_tokens = v;
    else if (a == "--seed") seed = static_cast<unsigned>(v);
    else {
      std::fprintf(stderr, "bench_store_take: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> len(min_len, max_len);
  std::vector<int> lengths(sequences);
  for (int& l : lengths) l = len(rng);

  qkscope::StoreOptions options;
  if (max_tokens > 0) options.max_tokens = max_tokens;
  qkscope::QkStore store(options);
  qkscope::SiteMeta meta;
  meta.head_index.resize(heads);
  std::iota(meta.head_index.begin(), meta.head_index.end(), 0);
  for (int s = 0; s < sites; ++s) store.declare_site(s, meta);

  const int row = heads * dim;
  double add_s = 0;
  for (int first = 0; first < sequences; first += batch) {
    std::vector<int64_t> seq, pos;
    for (int b = first; b < std::min(sequences, first + batch); ++b)
      for (int p = 0; p < lengths[b]; ++p) {
        seq.push_back(b);
        pos.push_back(p);
      }
    std::vector<float> q(seq.size() * row), k(seq.size() * row);
    for (int s = 0; s < sites; ++s) {
      for (size_t t = 0; t < seq.size(); ++t)
        for (int e = 0; e < row; ++e) {
          q[t * row + e] = value(s, seq[t], pos[t], e);
          k[t * row + e] = -value(s, seq[t], pos[t], e);
        }
      qkscope::QkBatch view;
      view.layer = s;
      view.n_tokens = static_cast<int64_t>(seq.size());
      view.n_heads = heads;
      view.head_dim = dim;
      view.q = q.data();
      view.k = k.data();
      view.sequence = seq.data();
      view.position = pos.data();
      const auto t0 = std::chrono::steady_clock::now();
      store.add(view);
      add_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  const long hwm_before = status_kb("VmHWM:"), rss_before = status_kb("VmRSS:");
  const auto t0 = std::chrono::steady_clock::now();
  qkscope::QkData data = store.take();
  const double take_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const long hwm_after = status_kb("VmHWM:"), rss_after = status_kb("VmRSS:");

  size_t bad = 0;
  for (int s = 0; s < sites; ++s) {
    const auto& site = data.sites[s];
    for (int64_t t = 0; t < data.n_tokens(); ++t)
      for (int e = 0; e < row; ++e) {
        const float want = value(s, data.sequence[t], data.position[t], e);
        bad += site.q[t * row + e] != want || site.k[t * row + e] != -want;
      }
  }
  const double qk_mb = 2.0 * sites * static_cast<double>(data.n_tokens()) * row * 4 / 1e6;
  std::printf("tokens kept %lld, q/k %.0f MB: add %.2f s, take %.3f s (%.2f GB/s); RSS before "
              "take %ld MB, after %ld MB; peak RSS before take %ld MB, after %ld MB; %zu wrong "
              "floats\n",
              static_cast<long long>(data.n_tokens()), qk_mb, add_s, take_s, qk_mb / 1e3 / take_s,
              rss_before / 1024, rss_after / 1024, hwm_before / 1024, hwm_after / 1024, bad);
  return bad == 0 ? 0 : 1;
}
