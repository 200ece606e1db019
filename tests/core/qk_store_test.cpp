#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <numeric>
#include <thread>
#include <fstream>
#include <optional>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "qkscope/error.h"
#include "qkscope/qk_store.h"

namespace qkscope {
namespace {

// Value of q for (layer, sequence, position, head, dim): lets tests check every float kept.
float q_value(int layer, int64_t seq, int64_t pos, int h, int l) {
  return static_cast<float>(layer * 100000 + seq * 1000 + pos * 10 + h) + 0.01f * l;
}

// A batch of whole sequences (lengths[b] tokens each, numbered from first_seq) for one layer.
struct BatchData {
  std::vector<float> q, k;
  std::vector<int64_t> seq, pos, ids;
  QkBatch view(int layer, int heads, int dim) {
    QkBatch b;
    b.layer = layer;
    b.n_tokens = static_cast<int64_t>(seq.size());
    b.n_heads = heads;
    b.head_dim = dim;
    b.q = q.data();
    b.k = k.data();
    b.sequence = seq.data();
    b.position = pos.data();
    b.token_id = ids.data();
    return b;
  }
};

BatchData make_batch(int layer, int64_t first_seq, const std::vector<int>& lengths, int heads,
                     int dim) {
  BatchData d;
  for (size_t b = 0; b < lengths.size(); ++b)
    for (int p = 0; p < lengths[b]; ++p) {
      int64_t s = first_seq + static_cast<int64_t>(b);
      d.seq.push_back(s);
      d.pos.push_back(p);
      d.ids.push_back(s * 7 + p);
      for (int h = 0; h < heads; ++h)
        for (int l = 0; l < dim; ++l) {
          d.q.push_back(q_value(layer, s, p, h, l));
          d.k.push_back(-q_value(layer, s, p, h, l));
        }
    }
  return d;
}

void declare(QkStore& store, const std::vector<int>& layers, int heads) {
  SiteMeta meta;
  meta.head_index.resize(heads);
  std::iota(meta.head_index.begin(), meta.head_index.end(), 0);
  for (int l : layers) {
    meta.module = "m" + std::to_string(l);
    store.declare_site(l, meta);
  }
}

// Feeds sequences 0..n-1 of varying length through layers {0, 1}, in batches of 3.
QkData run(QkStore& store, int n_sequences, int heads = 2, int dim = 3) {
  declare(store, {0, 1}, heads);
  for (int first = 0; first < n_sequences; first += 3) {
    std::vector<int> lengths;
    for (int s = first; s < std::min(n_sequences, first + 3); ++s) lengths.push_back(1 + s % 5);
    for (int layer : {0, 1}) {
      BatchData d = make_batch(layer, first, lengths, heads, dim);
      store.add(d.view(layer, heads, dim));
    }
  }
  return store.take();
}

TEST(QkStoreTest, KeepsEverythingWithoutBudget) {
  QkStore store;
  QkData data = run(store, 10);
  int64_t expected = 0;
  for (int s = 0; s < 10; ++s) expected += 1 + s % 5;
  ASSERT_EQ(data.n_tokens(), expected);
  EXPECT_EQ(data.tokens_seen, expected);
  EXPECT_EQ(data.sequences_seen, 10);
  ASSERT_EQ(data.sites.size(), 2u);
  for (const SiteData& site : data.sites) {
    ASSERT_EQ(site.q.size(), static_cast<size_t>(expected * 2 * 3));
    for (int64_t t = 0; t < expected; ++t)
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 3; ++l) {
          float want = q_value(site.layer, data.sequence[t], data.position[t], h, l);
          ASSERT_EQ(site.q[(t * 2 + h) * 3 + l], want);
          ASSERT_EQ(site.k[(t * 2 + h) * 3 + l], -want);
        }
  }
  EXPECT_EQ(data.token_id[0], 0);
  EXPECT_TRUE(std::is_sorted(data.sequence.begin(), data.sequence.end()));
}

TEST(QkStoreTest, BudgetKeepsWholeSequencesWithinBudget) {
  StoreOptions o;
  o.max_tokens = 20;
  o.seed = 3;
  QkStore store(o);
  QkData data = run(store, 40);
  EXPECT_LE(data.n_tokens(), 20);
  EXPECT_GT(data.n_tokens(), 10);
  EXPECT_EQ(data.sequences_seen, 40);
  // Whole sequences: each kept sequence has all its positions 0..len-1.
  std::map<int64_t, std::vector<int64_t>> positions;
  for (int64_t t = 0; t < data.n_tokens(); ++t) positions[data.sequence[t]].push_back(data.position[t]);
  for (const auto& [seq, pos] : positions) {
    ASSERT_EQ(static_cast<int64_t>(pos.size()), 1 + seq % 5) << "sequence " << seq;
    for (size_t i = 0; i < pos.size(); ++i) EXPECT_EQ(pos[i], static_cast<int64_t>(i));
  }
}

TEST(QkStoreTest, SampleIsThePriorityPrefixOfAnIndependentComputation) {
  StoreOptions o;
  o.max_tokens = 25;
  o.seed = 99;
  QkStore store(o);
  QkData data = run(store, 40);
  // Independent: sort sequences by priority, keep the longest prefix within the budget.
  std::vector<std::pair<double, int>> order;
  for (int s = 0; s < 40; ++s) order.push_back({QkStore::priority(99, s), s});
  std::sort(order.begin(), order.end());
  std::vector<int64_t> expected;
  int64_t used = 0;
  for (auto [p, s] : order) {
    if (used + 1 + s % 5 > 25) break;
    used += 1 + s % 5;
    expected.push_back(s);
  }
  std::sort(expected.begin(), expected.end());
  std::vector<int64_t> kept(data.sequence);
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  EXPECT_EQ(kept, expected);
}

TEST(QkStoreTest, DeterministicForASeedAndDifferentAcrossSeeds) {
  auto kept = [](uint64_t seed) {
    StoreOptions o;
    o.max_tokens = 15;
    o.seed = seed;
    QkStore store(o);
    return run(store, 30).sequence;
  };
  EXPECT_EQ(kept(5), kept(5));
  EXPECT_NE(kept(5), kept(6));
}

TEST(QkStoreTest, PrioritiesAreUniform) {
  // Mean of 10000 priorities of a uniform [0,1) draw is 0.5 +- 0.003 (sd 0.289/100): 5 sigma.
  double sum = 0;
  for (int s = 0; s < 10000; ++s) sum += QkStore::priority(1, s);
  EXPECT_NEAR(sum / 10000, 0.5, 0.015);
}

TEST(QkStoreTest, ConcurrentAddsMatchSerial) {
  StoreOptions o;
  o.max_tokens = 60;
  QkStore serial(o);
  QkData expected = run(serial, 48);

  QkStore store(o);
  declare(store, {0, 1}, 2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int first = t * 12; first < t * 12 + 12; first += 3) {
        std::vector<int> lengths;
        for (int s = first; s < first + 3; ++s) lengths.push_back(1 + s % 5);
        for (int layer : {0, 1}) {
          BatchData d = make_batch(layer, first, lengths, 2, 3);
          store.add(d.view(layer, 2, 3));
        }
      }
    });
  for (auto& th : threads) th.join();
  QkData got = store.take();
  EXPECT_EQ(got.sequence, expected.sequence);
  EXPECT_EQ(got.sites[1].q, expected.sites[1].q);
}

TEST(QkStoreTest, RejectsInconsistentInput) {
  EXPECT_THROW(QkStore(StoreOptions{0, 1}), UsageError);
  QkStore store;
  declare(store, {0, 1}, 2);
  BatchData d = make_batch(5, 0, {3}, 2, 3);
  EXPECT_THROW(store.add(d.view(5, 2, 3)), Error);  // undeclared layer
  BatchData wrong_heads = make_batch(0, 0, {3}, 3, 3);
  EXPECT_THROW(store.add(wrong_heads.view(0, 3, 3)), Error);
  BatchData ok = make_batch(0, 0, {3}, 2, 3);
  store.add(ok.view(0, 2, 3));
  EXPECT_THROW(store.add(ok.view(0, 2, 3)), Error);  // sequence 0 twice at the first layer
  BatchData shorter = make_batch(1, 0, {2}, 2, 3);
  EXPECT_THROW(store.add(shorter.view(1, 2, 3)), Error);  // different tokens at layer 1
}

// Found by hardening: the duplicate check ran before the rows were copied and not again after,
// so threads offering the same sequence at once were all admitted (tokens_kept() counted each;
// with a budget, eviction could then pop an empty set). Large rows widen the race window.
TEST(QkStoreTest, ConcurrentDuplicateSequenceIsAdmittedOnce) {
  for (bool budget : {false, true}) {
    StoreOptions o;
    if (budget) o.max_tokens = 1000;
    QkStore store(o);
    declare(store, {0}, 1);
    const int dim = 1 << 14;
    BatchData d = make_batch(0, 0, {16}, 1, dim);
    std::atomic<int> admitted{0}, refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&] {
        try {
          store.add(d.view(0, 1, dim));
          ++admitted;
        } catch (const Error&) {
          ++refused;
        }
      });
    for (auto& th : threads) th.join();
    EXPECT_EQ(admitted.load(), 1);
    EXPECT_EQ(refused.load(), 7);
    EXPECT_EQ(store.tokens_kept(), 16);
    EXPECT_EQ(store.take().n_tokens(), 16);
  }
}

TEST(QkStoreTest, TakeReportsSequencesMissingALayer) {
  QkStore store;
  declare(store, {0, 1}, 1);
  BatchData d = make_batch(0, 0, {2}, 1, 2);
  store.add(d.view(0, 1, 2));
  try {
    store.take();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("never reached layer 1"), std::string::npos) << e.what();
  }
  // Nothing was freed by the failed take(): once the missing layer arrives, all of it is there.
  store.add(d.view(1, 1, 2));
  QkData data = store.take();
  ASSERT_EQ(data.sites.size(), 2u);
  EXPECT_EQ(data.n_tokens(), 2);
  EXPECT_EQ(data.sites[0].q.size(), data.sites[1].q.size());
  EXPECT_FALSE(data.sites[0].q.empty());
}

// The store's buffers (detail::StoreArena): blocks freed by evictions serve later blocks, and
// what take() frees goes back to the kernel.
TEST(StoreArenaTest, EvictedBlocksAreReusedAndTakeReturnsMemory) {
  detail::StoreArena arena;
  size_t ga = 0, gb = 0, gc = 0, gd = 0;
  void* a = arena.allocate(8448, &ga);  // a 33 x 4 x 16 float site buffer: carved
  void* b = arena.allocate(8448, &gb);
  EXPECT_EQ(ga, 8448u);  // already a multiple of the 256-byte class step
  EXPECT_NE(a, b);
  std::fill_n(static_cast<float*>(a), ga / sizeof(float), 1.0f);  // the memory is writable
  arena.release(a, ga, /*keep=*/true);
  void* c = arena.allocate(8300, &gc);  // the same class
  EXPECT_EQ(c, a) << "a freed block of the same class is reused";
  EXPECT_EQ(gc, 8448u);
  void* d = arena.allocate(8000, &gd);  // another class: a new block
  EXPECT_EQ(gd, 8192u);
  EXPECT_NE(d, a);
  EXPECT_NE(d, b);
  for (auto [p, g] : {std::pair{b, gb}, std::pair{c, gc}, std::pair{d, gd}})
    arena.release(p, g, true);
  EXPECT_EQ(arena.mapped_bytes(), size_t{4} << 20) << "two emptied chunks (a huge page each), kept";
  // Large blocks: a freed one waits in the pool and serves a block of about its size.
  size_t gl = 0, gl2 = 0;
  void* big = arena.allocate(size_t{3} << 20, &gl);
  EXPECT_GE(gl, size_t{3} << 20);
  arena.release(big, gl, true);
  EXPECT_EQ(arena.pooled_bytes(), gl);
  EXPECT_EQ(arena.allocate((size_t{3} << 20) - 1000, &gl2), big);
  EXPECT_EQ(gl2, gl);
  EXPECT_EQ(arena.pooled_bytes(), 0u);
  // take()'s releases (keep false): nothing stays mapped.
  arena.release(big, gl2, false);
  void* e = arena.allocate(100, &ga);
  arena.release(e, ga, false);
  EXPECT_EQ(arena.mapped_bytes(), 0u);
}

// A long run under a budget (evictions recycle buffers): the data kept are exactly the sampled
// sequences' (the lowest priorities whose lengths fit, computed here independently), every
// float the one it was given.
TEST(QkStoreTest, BudgetRunRecyclesEvictedBuffers) {
  StoreOptions options;
  options.max_tokens = 64;
  options.seed = 7;
  QkStore store(options);
  declare(store, {0, 1}, 2);
  constexpr int64_t kSequences = 400;
  for (int64_t seq = 0; seq < kSequences; ++seq) {
    BatchData d0 = make_batch(0, seq, {8}, 2, 4), d1 = make_batch(1, seq, {8}, 2, 4);
    store.add(d0.view(0, 2, 4));
    store.add(d1.view(1, 2, 4));
  }
  std::vector<std::pair<double, int64_t>> by_priority;
  for (int64_t seq = 0; seq < kSequences; ++seq)
    by_priority.push_back({QkStore::priority(7, seq), seq});
  std::sort(by_priority.begin(), by_priority.end());
  std::vector<int64_t> expected;
  for (size_t i = 0; i < 64 / 8; ++i) expected.push_back(by_priority[i].second);
  std::sort(expected.begin(), expected.end());

  QkData data = store.take();
  std::vector<int64_t> kept;
  for (int64_t t = 0; t < data.n_tokens(); ++t)
    if (t == 0 || data.sequence[t] != data.sequence[t - 1]) kept.push_back(data.sequence[t]);
  EXPECT_EQ(kept, expected);
  ASSERT_EQ(data.sites.size(), 2u);
  for (const SiteData& site : data.sites)
    for (int64_t t = 0; t < data.n_tokens(); ++t)
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 4; ++l) {
          ASSERT_EQ(site.q[(t * 2 + h) * 4 + l],
                    q_value(site.layer, data.sequence[t], data.position[t], h, l));
          ASSERT_EQ(site.k[(t * 2 + h) * 4 + l],
                    -q_value(site.layer, data.sequence[t], data.position[t], h, l));
        }
}

// Whether the kernel offers transparent huge pages to mappings that ask (as the arena reads it).
bool thp_offered() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  return std::getline(f, line) && line.find("[never]") == std::string::npos;
}

#if defined(__linux__)
// Whether each huge page of [p, p + pages * 2 MB) is resident (any of its 4 kB pages), by
// mincore: the kernel's word, independent of the arena's counts.
std::vector<bool> resident_huge_pages(void* p, size_t pages) {
  constexpr size_t kHuge = size_t{2} << 20;
  std::vector<unsigned char> vec(pages * (kHuge / 4096));
  EXPECT_EQ(mincore(p, pages * kHuge, vec.data()), 0);
  std::vector<bool> out(pages, false);
  for (size_t i = 0; i < vec.size(); ++i)
    if (vec[i] & 1) out[i / (kHuge / 4096)] = true;
  return out;
}

// take()'s releases (keep false) give a huge page back as soon as no live block is on it, while
// the chunk's other blocks stay intact.
TEST(StoreArenaTest, TakeGivesBackEachHugePageWhenItsLastBlockGoes) {
  constexpr size_t kHuge = size_t{2} << 20;
  constexpr size_t kBlock = 300 << 10;  // a shared-chunk class (above 64 kB), 4 kB multiple
  if (!thp_offered()) GTEST_SKIP() << "no transparent huge pages: chunks are populated 4 kB pages";
  detail::StoreArena arena;
  std::vector<void*> blocks(14);
  std::vector<size_t> granted(14);
  for (size_t i = 0; i < blocks.size(); ++i) {
    blocks[i] = arena.allocate(kBlock, &granted[i]);
    ASSERT_EQ(granted[i], kBlock);
    std::fill_n(static_cast<float*>(blocks[i]), kBlock / sizeof(float), static_cast<float>(i));
  }
  char* base = static_cast<char*>(blocks[0]);
  for (size_t i = 1; i < blocks.size(); ++i)
    ASSERT_EQ(static_cast<char*>(blocks[i]), base + i * kBlock) << "carved in arrival order";
  ASSERT_EQ(reinterpret_cast<uintptr_t>(base) % kHuge, 0u) << "a fresh chunk starts a huge page";
  // 14 blocks of 300 kB: huge page 0 holds blocks 0-6 (6 straddles into page 1), page 1 blocks
  // 6-13 (13 straddles into page 2).
  EXPECT_EQ(resident_huge_pages(base, 3), (std::vector<bool>{true, true, true}));
  for (size_t i = 0; i < 6; ++i) arena.release(blocks[i], granted[i], /*keep=*/false);
  EXPECT_EQ(arena.discarded_bytes(), 0u) << "block 6 is still on page 0";
  EXPECT_TRUE(resident_huge_pages(base, 1)[0]);
  arena.release(blocks[6], granted[6], false);
  EXPECT_EQ(arena.discarded_bytes(), kHuge);
  EXPECT_EQ(resident_huge_pages(base, 3), (std::vector<bool>{false, true, true}));
  for (size_t i = 7; i < blocks.size(); ++i) {
    const float* f = static_cast<const float*>(blocks[i]);
    EXPECT_EQ(f[0], static_cast<float>(i));
    EXPECT_EQ(f[kBlock / sizeof(float) - 1], static_cast<float>(i));
  }
  for (size_t i = 7; i < blocks.size(); ++i) arena.release(blocks[i], granted[i], false);
  EXPECT_EQ(arena.mapped_bytes(), 0u) << "the emptied chunk is unmapped";
}

// trim() (the start of take()) gives back pages that hold only free blocks (evicted sequences'),
// keeps pages with a live block, and the free blocks stay usable.
TEST(StoreArenaTest, TrimGivesBackPagesOfFreeBlocksOnly) {
  constexpr size_t kHuge = size_t{2} << 20;
  constexpr size_t kBlock = 300 << 10;
  if (!thp_offered()) GTEST_SKIP() << "no transparent huge pages: chunks are populated 4 kB pages";
  detail::StoreArena arena;
  std::vector<void*> blocks(14);
  std::vector<size_t> granted(14);
  for (size_t i = 0; i < blocks.size(); ++i) {
    blocks[i] = arena.allocate(kBlock, &granted[i]);
    std::fill_n(static_cast<float*>(blocks[i]), kBlock / sizeof(float), 1.0f);
  }
  char* base = static_cast<char*>(blocks[0]);
  for (size_t i = 0; i < 7; ++i) arena.release(blocks[i], granted[i], /*keep=*/true);
  EXPECT_EQ(arena.discarded_bytes(), 0u) << "evictions keep their memory for later blocks";
  EXPECT_EQ(resident_huge_pages(base, 3), (std::vector<bool>{true, true, true}));
  arena.trim();
  // Page 0 held blocks 0-6, all free; pages 1 and 2 hold live blocks; pages 3-7 of the 16 MB
  // chunk were never touched (given back too: a no-op).
  EXPECT_EQ(resident_huge_pages(base, 3), (std::vector<bool>{false, true, true}));
  EXPECT_EQ(arena.discarded_bytes(), 6 * kHuge);
  EXPECT_EQ(static_cast<const float*>(blocks[13])[0], 1.0f);
  size_t g = 0;
  void* again = arena.allocate(kBlock, &g);  // a free block on a given-back page
  EXPECT_GE(again, static_cast<void*>(base));
  EXPECT_LT(again, static_cast<void*>(base + 7 * kBlock));
  EXPECT_EQ(static_cast<const float*>(again)[0], 0.0f) << "given back: it comes back zeroed";
  std::fill_n(static_cast<float*>(again), kBlock / sizeof(float), 2.0f);
  EXPECT_EQ(static_cast<const float*>(again)[kBlock / sizeof(float) - 1], 2.0f);
  arena.release(again, g, false);
  for (size_t i = 7; i < blocks.size(); ++i) arena.release(blocks[i], granted[i], false);
  EXPECT_EQ(arena.mapped_bytes(), 0u);
}
#endif

// A freed block serves a later block of its class or of a class at most 1/8 smaller (evictions
// under a budget: lengths vary), never a much smaller one; the granted size is the block's.
TEST(StoreArenaTest, FreeBlocksServeNearbySmallerClasses) {
  detail::StoreArena arena;
  size_t g300 = 0, g280 = 0, g200 = 0, g280b = 0, gpin = 0;
  // A live block beside it, so that freeing `a` does not empty the chunk (an empty chunk's
  // blocks leave the free lists and the chunk is kept whole as a spare).
  void* pin = arena.allocate(300 << 10, &gpin);
  void* a = arena.allocate(300 << 10, &g300);
  ASSERT_EQ(g300, size_t{300} << 10);
  arena.release(a, g300, /*keep=*/true);
  void* b = arena.allocate(200 << 10, &g200);  // 300/200 > 9/8: a new block
  EXPECT_NE(b, a);
  EXPECT_EQ(g200, size_t{200} << 10);
  void* c = arena.allocate(280 << 10, &g280);  // 300/280 <= 9/8: the freed block
  EXPECT_EQ(c, a);
  EXPECT_EQ(g280, size_t{300} << 10) << "granted is the block's class, for release";
  std::fill_n(static_cast<float*>(c), g280 / sizeof(float), 3.0f);  // all of it is usable
  void* d = arena.allocate(280 << 10, &g280b);  // no free block left: a new one of its class
  EXPECT_NE(d, a);
  EXPECT_EQ(g280b, size_t{280} << 10);
  for (auto [p, g] :
       {std::pair{b, g200}, std::pair{c, g280}, std::pair{d, g280b}, std::pair{pin, gpin}})
    arena.release(p, g, false);
  EXPECT_EQ(arena.mapped_bytes(), 0u);
}

// advise_huge_pages advises exactly the whole huge pages inside the range (computed here from
// the addresses), nothing for small ranges.
TEST(StoreArenaTest, AdviseHugePagesCoversTheAlignedInside) {
  constexpr size_t kHuge = size_t{2} << 20;
  std::vector<char> buffer(9 << 20);
  EXPECT_EQ(detail::advise_huge_pages(nullptr, 9 << 20), 0u);
  EXPECT_EQ(detail::advise_huge_pages(buffer.data(), 1 << 20), 0u) << "under the 4 MB floor";
  if (!thp_offered()) GTEST_SKIP() << "no transparent huge pages here";
  const uintptr_t begin = reinterpret_cast<uintptr_t>(buffer.data());
  const uintptr_t first = (begin / kHuge + (begin % kHuge != 0)) * kHuge;
  const uintptr_t last = (begin + buffer.size()) / kHuge * kHuge;
  EXPECT_EQ(detail::advise_huge_pages(buffer.data(), buffer.size()), last - first);
  EXPECT_GE(last - first, 3 * kHuge);
}

// take()'s output equals what was offered, float for float, for buffers in small classes and
// in shared chunks, with and without a budget (evictions, then trim() before the copy).
TEST(QkStoreTest, TakeOutputEqualsInputLargeAndSmall) {
  constexpr int kHeads = 12, kDim = 64;  // a 3 kB row: 22+ tokens make a shared-chunk block
  std::vector<int> lengths;
  for (int i = 0; i < 60; ++i) lengths.push_back(1 + (i * 37) % 150);
  for (std::optional<int64_t> budget : {std::optional<int64_t>(), std::optional<int64_t>(1500)}) {
    StoreOptions options;
    options.max_tokens = budget;
    options.seed = 11;
    QkStore store(options);
    declare(store, {0, 1, 2}, kHeads);
    for (size_t first = 0; first < lengths.size(); first += 6) {
      std::vector<int> batch(lengths.begin() + first, lengths.begin() + first + 6);
      for (int layer = 0; layer < 3; ++layer) {
        BatchData d = make_batch(layer, static_cast<int64_t>(first), batch, kHeads, kDim);
        store.add(d.view(layer, kHeads, kDim));
      }
    }
    // The kept set, independently: the lowest priorities whose lengths fit the budget.
    std::vector<std::pair<double, int64_t>> by_priority;
    for (size_t s = 0; s < lengths.size(); ++s)
      by_priority.push_back({QkStore::priority(11, static_cast<int64_t>(s)), s});
    std::sort(by_priority.begin(), by_priority.end());
    std::vector<int64_t> expected;
    int64_t tokens = 0;
    for (auto [p, s] : by_priority) {
      tokens += lengths[s];
      if (budget && tokens > *budget) break;
      expected.push_back(s);
    }
    std::sort(expected.begin(), expected.end());
    int64_t expected_tokens = 0;
    for (int64_t s : expected) expected_tokens += lengths[s];

    QkData data = store.take();
    ASSERT_EQ(data.n_tokens(), expected_tokens) << (budget ? "budget" : "no budget");
    std::vector<int64_t> kept;
    for (int64_t t = 0; t < data.n_tokens(); ++t)
      if (t == 0 || data.sequence[t] != data.sequence[t - 1]) kept.push_back(data.sequence[t]);
    EXPECT_EQ(kept, expected);
    ASSERT_EQ(data.sites.size(), 3u);
    for (const SiteData& site : data.sites) {
      ASSERT_EQ(site.q.size(), static_cast<size_t>(data.n_tokens()) * kHeads * kDim);
      ASSERT_EQ(site.k.size(), site.q.size());
      size_t wrong = 0;
      for (int64_t t = 0; t < data.n_tokens(); ++t)
        for (int h = 0; h < kHeads; ++h)
          for (int l = 0; l < kDim; ++l) {
            const float want = q_value(site.layer, data.sequence[t], data.position[t], h, l);
            wrong += site.q[(t * kHeads + h) * kDim + l] != want;
            wrong += site.k[(t * kHeads + h) * kDim + l] != -want;
          }
      EXPECT_EQ(wrong, 0u) << "layer " << site.layer << (budget ? ", budget" : ", no budget");
    }
    EXPECT_EQ(store.tokens_kept(), 0);
  }
}
}  // namespace
}  // namespace qkscope
