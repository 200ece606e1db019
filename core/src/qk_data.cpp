#include "qkscope/qk_data.h"

#include <cmath>
#include <cstddef>
#include <limits>
#include <set>
#include <string_view>
#include <tuple>

#include "qkscope/error.h"

namespace qkscope {
namespace {

// Every message: "<where>: <rule>: <detail>", as the file readers write theirs.
[[noreturn]] void fail(const std::string& where, std::string_view rule, const std::string& detail) {
  throw Error(fmt::format("{}: {}: {}", where, rule, detail));
}

void validate_tokens(const QkData& data, const std::string& where) {
  const std::size_t n = data.sequence.size();
  if (data.position.size() != n)
    fail(where, "token arrays differ in length",
         fmt::format("{} sequence indices but {} positions", n, data.position.size()));
  if (!data.token_id.empty() && data.token_id.size() != n)
    fail(where, "token arrays differ in length",
         fmt::format("{} sequence indices but {} token ids", n, data.token_id.size()));
  for (std::size_t t = 0; t < n; ++t) {
    if (data.sequence[t] < 0 || data.position[t] < 0)
      fail(where, "negative sequence index or position",
           fmt::format("token {} has sequence {} position {}", t, data.sequence[t],
                       data.position[t]));
    // Consumers find a sequence's tokens as one contiguous run: the order is part of the format.
    if (t > 0 && std::tie(data.sequence[t - 1], data.position[t - 1]) >=
                     std::tie(data.sequence[t], data.position[t]))
      fail(where, "tokens not sorted by sequence, then position",
           fmt::format("token {} (sequence {}, position {}) follows (sequence {}, position {})",
                       t, data.sequence[t], data.position[t], data.sequence[t - 1],
                       data.position[t - 1]));
  }
  if (data.tokens_seen < 0 || data.sequences_seen < 0)
    fail(where, "negative count",
         fmt::format("tokens_seen {}, sequences_seen {}", data.tokens_seen, data.sequences_seen));
}

void validate_site(const SiteData& site, int64_t n_tokens, const std::string& where) {
  const std::string name = fmt::format("layer {}", site.layer);
  if (site.layer < 0) fail(where, "negative layer number", name);
  if (site.n_heads < 1 || site.head_dim < 1)
    fail(where, "site without heads",
         fmt::format("{} has {} heads of dimension {}", name, site.n_heads, site.head_dim));
  if (!std::isfinite(site.prescale) || site.prescale <= 0)
    fail(where, "prescale not a positive finite number",
         fmt::format("{} has prescale {}", name, site.prescale));
  if (site.head_index.size() != static_cast<std::size_t>(site.n_heads))
    fail(where, "head_index size differs from n_heads",
         fmt::format("{} has {} heads but {} head numbers", name, site.n_heads,
                     site.head_index.size()));
  std::set<int> seen;
  for (int head : site.head_index)
    if (head < 0 || !seen.insert(head).second)
      fail(where, "head numbers not distinct non-negative integers",
           fmt::format("{} has head numbers [{}]", name, fmt::join(site.head_index, ", ")));
  uint64_t expected = 0;
  const bool overflow =
      __builtin_mul_overflow(static_cast<uint64_t>(n_tokens), static_cast<uint64_t>(site.n_heads),
                             &expected) ||
      __builtin_mul_overflow(expected, static_cast<uint64_t>(site.head_dim), &expected);
  if (overflow || site.q.size() != expected || site.k.size() != expected)
    fail(where, "q/k size differs from [N, H, D]",
         fmt::format("{} has {} q and {} k values, expected {} x {} x {} = {}", name,
                     site.q.size(), site.k.size(), n_tokens, site.n_heads, site.head_dim,
                     expected));
}

}  // namespace

void validate(const QkData& data, const std::string& where) {
  validate_tokens(data, where);
  for (std::size_t i = 0; i < data.sites.size(); ++i) {
    const SiteData& site = data.sites[i];
    validate_site(site, data.n_tokens(), where);
    if (i > 0 && data.sites[i - 1].layer >= site.layer)
      fail(where, "sites not in increasing layer order",
           fmt::format("layer {} follows layer {}", site.layer, data.sites[i - 1].layer));
  }
}

}  // namespace qkscope
