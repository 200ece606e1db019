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
#include "qkscope/qk_merge.h"
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

// The kept sequence indices of a sample, in order.
std::vector<int64_t> sequences_of(const QkData& d) {
  std::vector<int64_t> out;
  for (int64_t s : d.sequence)
    if (out.empty() || out.back() != s) out.push_back(s);
  return out;
}

TEST(CheckpointTest, SequenceKeysReadInPlaceAreThoseOfTake) {
  // Sequences 100..139 from lines 1000 + 2i of "c.txt": the keys list the kept ones' lines.
  auto store_p = make_store(50);
  QkStore& store = *store_p;
  offer(store, 100, 40);
  SequenceRange range{100, 140, "c.txt", {}};
  for (int64_t s = 100; s < 140; ++s) range.lines.emplace_back(s, 1000 + 2 * (s - 100));
  const auto in_place = store_sequence_metadata({range}, store);
  const QkData kept = store.take();
  std::string lines;
  for (int64_t s : sequences_of(kept))
    lines += (lines.empty() ? "" : ",") + std::to_string(1000 + 2 * (s - 100));
  ASSERT_LT(sequences_of(kept).size(), 40u);  // the budget binds
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"sequences.count", "1"}, {"sequences.0.range", "100:140"},
      {"sequences.0.source", "c.txt"}, {"sequences.0.lines", lines}};
  EXPECT_EQ(in_place, expected);
  EXPECT_EQ(in_place, sequence_metadata({range}, kept));
  // A kept sequence outside every range is an error, as for sequence_metadata.
  auto again_p = make_store(50);
  offer(*again_p, 100, 40);
  EXPECT_THROW(store_sequence_metadata({SequenceRange{100, 110, "c.txt", {}}}, *again_p), Error);
}

// What capture's SequenceLines relies on to hold a line only for sequences the sample may keep:
// the sequences offered with a priority under the store's cutoff are exactly the kept ones, and
// a shard's cutoff is at least that of the merged sample (so a shard's own cutoff never drops a
// sequence the merged sample keeps).
TEST(CheckpointTest, SequencesUnderTheCutoffAreTheKeptOnes) {
  for (int64_t budget : {20, 75, 100000}) {
    SCOPED_TRACE(budget);
    auto a_p = make_store(budget), b_p = make_store(budget), merged_p = make_store(budget);
    offer(*a_p, 0, 50);
    offer(*b_p, 50, 40);
    const double a_cutoff = a_p->counts().cutoff, b_cutoff = b_p->counts().cutoff;
    std::vector<int64_t> under;
    for (int64_t s = 0; s < 50; ++s)
      if (QkStore::priority(7, s) < a_cutoff) under.push_back(s);
    QkData a = a_p->take(), b = b_p->take();
    EXPECT_EQ(sequences_of(a), under);
    for (const QkData* part : {&a, &b})
      merged_p->merge(*part, QkStore::Counts{part->tokens_seen, part->sequences_seen, part->sample->cutoff});
    const double merged_cutoff = merged_p->counts().cutoff;
    EXPECT_LE(merged_cutoff, std::min(a_cutoff, b_cutoff));
    under.clear();
    for (int64_t s = 0; s < 90; ++s)
      if (QkStore::priority(7, s) < merged_cutoff) under.push_back(s);
    EXPECT_EQ(sequences_of(merged_p->take()), under);
    if (budget == 100000) {
      EXPECT_EQ(merged_cutoff, 2.0);  // nothing evicted: every line is kept
    }
  }
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
