// What the server tests (http_server_test.cpp, server_example_test.cpp) share: the q/k of
// several files put together by hand, the independent side of a merge check.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope::testing {

// The tokens of all `parts` as one QkData, sorted by sequence then position; counts add up,
// the sample record is the first part's. The parts must hold the same sites, and no sequence
// index may be in two parts. No store, no merge: the tokens are copied row by row.
inline QkData put_together(const std::vector<QkData>& parts) {
  if (parts.empty()) throw std::invalid_argument("put_together: no part");
  struct Row {
    int64_t sequence, position;
    size_t part;
    int64_t token;
  };
  std::vector<Row> rows;
  std::map<int64_t, size_t> owner;
  for (size_t p = 0; p < parts.size(); ++p) {
    if (parts[p].sites.size() != parts[0].sites.size())
      throw std::invalid_argument("put_together: different sites");
    for (int64_t t = 0; t < parts[p].n_tokens(); ++t) {
      const int64_t s = parts[p].sequence[static_cast<size_t>(t)];
      if (owner.emplace(s, p).first->second != p)
        throw std::invalid_argument("put_together: sequence " + std::to_string(s) + " twice");
      rows.push_back({s, parts[p].position[static_cast<size_t>(t)], p, t});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::tie(a.sequence, a.position) < std::tie(b.sequence, b.position);
  });
  QkData out;
  out.sample = parts[0].sample;
  out.sites = parts[0].sites;
  for (SiteData& site : out.sites) site.q.clear(), site.k.clear();
  for (const QkData& d : parts) out.tokens_seen += d.tokens_seen, out.sequences_seen += d.sequences_seen;
  for (const Row& r : rows) {
    const QkData& d = parts[r.part];
    const size_t t = static_cast<size_t>(r.token);
    out.sequence.push_back(r.sequence);
    out.position.push_back(r.position);
    if (d.has_token_ids()) out.token_id.push_back(d.token_id[t]);
    for (size_t s = 0; s < out.sites.size(); ++s) {
      const size_t width = static_cast<size_t>(d.sites[s].n_heads) * static_cast<size_t>(d.sites[s].head_dim);
      const auto q = d.sites[s].q.begin() + static_cast<std::ptrdiff_t>(t * width);
      const auto k = d.sites[s].k.begin() + static_cast<std::ptrdiff_t>(t * width);
      out.sites[s].q.insert(out.sites[s].q.end(), q, q + static_cast<std::ptrdiff_t>(width));
      out.sites[s].k.insert(out.sites[s].k.end(), k, k + static_cast<std::ptrdiff_t>(width));
    }
  }
  return out;
}

}  // namespace qkscope::testing
