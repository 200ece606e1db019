#include "mpi_metrics.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "head_rows.h"
#include "mpi_run.h"
#include "qkscope/error.h"
#include "qkscope/qk_file.h"


namespace qkscope::cli {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Rank r's heads: [first(r), first(r + 1)). Balanced to one head.
int64_t first_head(int64_t heads, int rank, int ranks) {
  return heads * rank / ranks;
}

std::vector<double> scales_of(const HeadResult& h) {
  std::vector<double> c;
  for (const ScaleResult& s : h.scales) c.push_back(s.c);
  return c;
}

}  // namespace

QkData head_share(const QkData& data, int64_t first, int64_t count) {
  QkData share;
  share.sequence = data.sequence;
  share.position = data.position;
  share.tokens_seen = data.n_tokens();
  share.sequences_seen = data.sequences_seen;
  const int64_t n = data.n_tokens();
  int64_t number = 0;  // table number of the site's first head
  for (const SiteData& site : data.sites) {
    const int64_t lo = std::max<int64_t>(first - number, 0);
    const int64_t hi = std::min<int64_t>(first + count - number, site.n_heads);
    number += site.n_heads;
    if (lo >= hi) continue;
    SiteData part;
    part.layer = site.layer;
    part.module = site.module;
    part.prescale = site.prescale;
    part.n_heads = static_cast<int>(hi - lo);
    part.head_dim = site.head_dim;
    part.head_index.assign(site.head_index.begin() + lo, site.head_index.begin() + hi);
    const size_t width = static_cast<size_t>(part.n_heads) * static_cast<size_t>(site.head_dim);
    const size_t stride = static_cast<size_t>(site.n_heads) * static_cast<size_t>(site.head_dim);
    const size_t offset = static_cast<size_t>(lo) * static_cast<size_t>(site.head_dim);
    part.q.resize(static_cast<size_t>(n) * width);
    part.k.resize(static_cast<size_t>(n) * width);
    for (size_t t = 0; t < static_cast<size_t>(n); ++t) {
      std::copy_n(site.q.data() + t * stride + offset, width, part.q.data() + t * width);
      std::copy_n(site.k.data() + t * stride + offset, width, part.k.data() + t * width);
    }
    share.sites.push_back(std::move(part));
  }
  return share;
}

CTable mpi_compute_ctable(const QkData& data, const MetricOptions& options,
                          const ProgressFn& progress, MetricSpread* spread) {
  const MpiWorld& world = mpi_world();
  MetricSpread local;
  MetricSpread& s = spread ? *spread : local;
  s = MetricSpread{};
  if (!world.active || world.size == 1) {
    const auto start = std::chrono::steady_clock::now();
    CTable table = compute_ctable(data, options, progress);
    s.heads = s.most_heads = count_heads(data);
    s.own_seconds = seconds_since(start);
    return table;
  }
  const int ranks = world.size;
  s.ranks = ranks;
  if (world.rank != 0) {
    // The share's q/k file, the share's heads, their rows back to rank 0.
    std::string bytes = mpi_receive_bytes(0);
    std::vector<HeadResult> rows;
    if (!bytes.empty()) {
      const QkData share = parse_qk_bytes(std::move(bytes), fmt::format("rank {}'s heads", world.rank));
      rows = compute_heads(share, options, 0, count_heads(share), progress);
    }
    mpi_send_bytes(encode_head_rows(rows), 0);
    return CTable{};
  }

  const int64_t heads = count_heads(data);
  s.heads = heads;
  for (int r = 0; r < ranks; ++r)
    s.most_heads = std::max(s.most_heads, first_head(heads, r + 1, ranks) - first_head(heads, r, ranks));
  auto start = std::chrono::steady_clock::now();
  for (int r = 1; r < ranks; ++r) {
    const int64_t first = first_head(heads, r, ranks), count = first_head(heads, r + 1, ranks) - first;
    const auto built = std::chrono::steady_clock::now();
    const std::string bytes = count > 0 ? qk_file_bytes(head_share(data, first, count)) : std::string();
    s.share_seconds += seconds_since(built);
    s.bytes_sent += bytes.size();
    mpi_send_bytes(bytes, r);
  }
  s.send_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  std::vector<HeadResult> rows = compute_heads(data, options, 0, first_head(heads, 1, ranks), progress);
  s.own_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  for (int r = 1; r < ranks; ++r) {
    std::vector<HeadResult> part = decode_head_rows(mpi_receive_bytes(r), fmt::format("rank {}", r));
    const int64_t expected = first_head(heads, r + 1, ranks) - first_head(heads, r, ranks);
    QKSCOPE_CHECK(static_cast<int64_t>(part.size()) == expected,
                  "rank {} returned {} head rows, {} expected", r, part.size(), expected);
    for (HeadResult& h : part) {
      // Ranks started with different metric options (mpirun's A : B form) give other grids.
      bool same = h.scales.size() == options.scales.size();
      for (size_t i = 0; same && i < h.scales.size(); ++i) same = h.scales[i].c == options.scales[i];
      QKSCOPE_CHECK(same, "rank {} computed layer {} head {} over the scales {}, rank 0's options "
                    "are {}: every rank must run the same capture options", r, h.layer, h.head,
                    fmt::join(scales_of(h), ","), fmt::join(options.scales, ","));
      rows.push_back(std::move(h));
    }
  }
  s.gather_seconds = seconds_since(start);
  return assemble_ctable(data, options, std::move(rows));
}

}  // namespace qkscope::cli
