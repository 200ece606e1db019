#include "qkscope/qk_merge.h"

#include <map>

#include "qkscope/checkpoint.h"
#include "qkscope/error.h"
#include "qkscope/qk_store.h"

namespace qkscope {
namespace {

std::string layer_list(const QkData& d) {
  std::vector<int> layers;
  for (const SiteData& s : d.sites) layers.push_back(s.layer);
  return fmt::format("{}", fmt::join(layers, ","));
}

// Throws naming the first difference between the sites of `a` and `b`.
void check_same_sites(const std::string& pa, const QkData& a, const std::string& pb,
                      const QkData& b) {
  QKSCOPE_CHECK(layer_list(a) == layer_list(b), "cannot merge {} and {}: layers {} vs {}", pa, pb,
                layer_list(a), layer_list(b));
  for (size_t i = 0; i < a.sites.size(); ++i) {
    const SiteData &x = a.sites[i], &y = b.sites[i];
    QKSCOPE_CHECK(x.module == y.module, "cannot merge {} and {}: layer {} is module '{}' vs '{}' "
                  "(different models?)", pa, pb, x.layer, x.module, y.module);
    QKSCOPE_CHECK(x.prescale == y.prescale, "cannot merge {} and {}: layer {} prescale {} vs {}",
                  pa, pb, x.layer, x.prescale, y.prescale);
    QKSCOPE_CHECK(x.head_index == y.head_index, "cannot merge {} and {}: layer {} heads {} vs {}",
                  pa, pb, x.layer, fmt::join(x.head_index, ","), fmt::join(y.head_index, ","));
    QKSCOPE_CHECK(a.n_tokens() == 0 || b.n_tokens() == 0 || x.head_dim == y.head_dim,
                  "cannot merge {} and {}: layer {} head_dim {} vs {}", pa, pb, x.layer,
                  x.head_dim, y.head_dim);
  }
  QKSCOPE_CHECK(a.n_tokens() == 0 || b.n_tokens() == 0 || a.has_token_ids() == b.has_token_ids(),
                "cannot merge {} and {}: token ids in {} only", pa, pb,
                a.has_token_ids() ? pa : pb);
}

}  // namespace

QkData merge_qk_files(const std::vector<std::string>& paths, std::optional<int64_t> max_tokens,
                      std::optional<uint64_t> seed) {
  QKSCOPE_CHECK(!paths.empty(), "merge_qk_files: no file");
  std::vector<StoreFile> files;
  for (const std::string& p : paths) files.push_back(read_store_file(p));

  std::optional<size_t> seeded;  // the first file that records a seed
  std::map<int64_t, size_t> owner;  // sequence -> file
  for (size_t i = 0; i < files.size(); ++i) {
    const QkData& d = files[i].kept;
    check_same_sites(paths[0], files[0].kept, paths[i], d);
    if (d.sample) {
      if (!seeded) seeded = i;
      const uint64_t s0 = files[*seeded].kept.sample->seed;
      QKSCOPE_CHECK(d.sample->seed == s0, "cannot merge {} and {}: sampled with seed {} vs {}",
                    paths[*seeded], paths[i], s0, d.sample->seed);
    }
    for (int64_t t = 0; t < d.n_tokens(); ++t) {
      auto [it, fresh] = owner.emplace(d.sequence[t], i);
      QKSCOPE_CHECK(fresh || it->second == i,
                    "cannot merge {} and {}: both hold sequence {}; runs over different inputs "
                    "need distinct sequence indices (capture --first-sequence N)",
                    paths[it->second], paths[i], d.sequence[t]);
    }
  }
  const uint64_t file_seed = seeded ? files[*seeded].kept.sample->seed : 0;
  const uint64_t chosen = seed.value_or(file_seed);
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& sample = files[i].kept.sample;
    QKSCOPE_CHECK(!sample || sample->cutoff >= 2 || sample->seed == chosen,
                  "cannot merge {} with --seed {}: its sequences were sampled with seed {}",
                  paths[i], chosen, sample ? sample->seed : 0);
  }

  QkStore store(StoreOptions{max_tokens, chosen});
  for (const SiteData& s : files[0].kept.sites)
    store.declare_site(s.layer, SiteMeta{s.module, s.prescale, s.head_index});
  for (StoreFile& f : files) {
    store.merge(f.kept, f.counts);
    f.kept = QkData();  // free as we go
  }
  return store.take();
}

}  // namespace qkscope
