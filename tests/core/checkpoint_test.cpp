// Store files and QkStore::merge: a store saved and merged back continues exactly; shards
// merged give the sample one store would keep.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>

#include "qkscope/checkpoint.h"
#include "qkscope/error.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_store.h"

namespace qkscope {
namespace {

constexpr int kHeads = 2, kDim = 3;
const std::vector<int> kLayers = {0, 2, 5};

// Offers sequences [first, first + count) to `store`, one batch per 4 sequences, lengths 1..9.
void offer(QkStore& store, int64_t first, int64_t count) {
  for (int64_t b = first; b < first + count; b += 4) {
    for (int layer : kLayers) {
      std::vector<float> q, k;
      std::vector<int64_t> seq, pos, ids;
      for (int64_t s = b; s < std::min(first + count, b + 4); ++s)
        for (int64_t p = 0; p < 1 + (s * 5) % 9; ++p) {
          seq.push_back(s);
          pos.push_back(p);
          ids.push_back(s * 3 + p);
          for (int i = 0; i < kHeads * kDim; ++i) {
            q.push_back(static_cast<float>(layer * 1e5 + s * 100 + p) + 0.1f * i);
            k.push_back(-q.back());
          }
        }
      QkBatch batch{layer, static_cast<int64_t>(seq.size()), kHeads, kDim, q.data(), k.data(),
                    seq.data(), pos.data(), ids.data()};
      store.add(batch);
    }
  }
}

std::unique_ptr<QkStore> make_store(std::optional<int64_t> budget, uint64_t seed = 7) {
  auto store = std::make_unique<QkStore>(StoreOptions{budget, seed});
  for (int layer : kLayers)
    store->declare_site(layer, SiteMeta{"m" + std::to_string(layer), 0.5, {0, 1}});
  return store;
}

void expect_same(const QkData& a, const QkData& b) {
  EXPECT_EQ(a.sequence, b.sequence);
  EXPECT_EQ(a.position, b.position);
  EXPECT_EQ(a.token_id, b.token_id);
  EXPECT_EQ(a.tokens_seen, b.tokens_seen);
  EXPECT_EQ(a.sequences_seen, b.sequences_seen);
  ASSERT_EQ(a.sites.size(), b.sites.size());
  for (size_t i = 0; i < a.sites.size(); ++i) {
    EXPECT_EQ(a.sites[i].q, b.sites[i].q);
    EXPECT_EQ(a.sites[i].k, b.sites[i].k);
  }
  ASSERT_TRUE(a.sample && b.sample);
  EXPECT_EQ(a.sample->cutoff, b.sample->cutoff);
}

std::string temp(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          (name + "_" + std::to_string(::getpid()) + ".safetensors")).string();
}

TEST(CheckpointTest, SavedStoreResumesToTheUninterruptedSample) {
  for (std::optional<int64_t> budget : {std::optional<int64_t>{}, std::optional<int64_t>{60}}) {
    auto whole_p = make_store(budget);
    QkStore& whole = *whole_p;
    offer(whole, 0, 80);
    auto first_p = make_store(budget);
    QkStore& first = *first_p;
    offer(first, 0, 36);
    const std::string path = temp("qkscope_store_file");
    write_store_file(path, first, {{"checkpoint.note", "x"}});
    StoreFile f = read_store_file(path);
    EXPECT_EQ(f.metadata.at("checkpoint.note"), "x");
    auto resumed_p = make_store(budget);
    QkStore& resumed = *resumed_p;
    resumed.merge(f.kept, f.counts);
    offer(resumed, 36, 44);
    expect_same(whole.take(), resumed.take());
    std::filesystem::remove(path);
  }
}

TEST(CheckpointTest, StoreFileIsTheQkFileOfTake) {
  auto store_p = make_store(50);
    QkStore& store = *store_p;
  offer(store, 0, 40);
  const std::string a = temp("qkscope_store_a"), b = temp("qkscope_store_b");
  write_store_file(a, store, {});
  write_qk_file(b, store.take());
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  std::string da((std::istreambuf_iterator<char>(fa)), {}), db((std::istreambuf_iterator<char>(fb)), {});
  EXPECT_EQ(da, db);
  std::filesystem::remove(a);
  std::filesystem::remove(b);
}

TEST(CheckpointTest, MergedShardsEqualOneStore) {
  for (int64_t budget : {30, 75, 100000}) {
    SCOPED_TRACE(budget);
    auto whole_p = make_store(budget);
    QkStore& whole = *whole_p;
    offer(whole, 0, 90);
    auto a_p = make_store(budget), b_p = make_store(budget), c_p = make_store(budget);
    QkStore &a = *a_p, &b = *b_p, &c = *c_p;
    offer(a, 0, 28);
    offer(b, 28, 40);
    offer(c, 68, 22);
    auto merged_p = make_store(budget);
    QkStore& merged = *merged_p;
    for (QkStore* part : std::vector<QkStore*>{&b, &a, &c}) {
      QkData d = part->take();
      merged.merge(d, QkStore::Counts{d.tokens_seen, d.sequences_seen, d.sample->cutoff});
    }
    expect_same(whole.take(), merged.take());
  }
}

TEST(CheckpointTest, MergeRefusesOverlapsAndOtherSites) {
  auto a_p = make_store(std::nullopt), b_p = make_store(std::nullopt);
  QkStore &a = *a_p, &b = *b_p;
  offer(a, 0, 8);
  offer(b, 4, 8);
  QkData d = b.take();
  EXPECT_THROW(a.merge(d, {}), Error);
  EXPECT_EQ(a.tokens_seen(), a.take().n_tokens());  // a refused merge changes nothing
  QkStore other(StoreOptions{std::nullopt, 7});
  other.declare_site(0, SiteMeta{"m0", 0.5, {0, 1}});
  EXPECT_THROW(other.merge(d, {}), Error);
}

TEST(CheckpointTest, HashTellsFilesApart) {
  const std::string a = temp("qkscope_hash_a");
  std::ofstream(a, std::ios::binary) << std::string(100000, 'x');
  const std::string h1 = hash_file(a);
  EXPECT_EQ(h1, hash_file(a));
  std::ofstream(a, std::ios::binary) << std::string(99999, 'x') << 'y';
  EXPECT_NE(h1, hash_file(a));
  EXPECT_EQ(hash_file(a).substr(0, 7), "100000:");
  std::filesystem::remove(a);
  EXPECT_THROW(hash_file(a), Error);
}

}  // namespace
}  // namespace qkscope
