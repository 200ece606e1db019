// QkStore: receives captured q/k site by site, batch by batch, while a model runs, and keeps
// them within an optional token budget as a uniform random sample of whole sequences.
//
// Sampling: each sequence gets a priority u = hash(seed, sequence index) in [0, 1). The store
// keeps the sequences of lowest priority whose token counts, taken in priority order, fit in the
// budget (the longest such prefix). The kept set therefore depends only on the seed and on the
// sequences offered, never on batching, arrival order or threads: runs are reproducible.
//
// Threading: add() may be called from many threads at once. take() must not overlap add().
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope {

// A non-owning view of one batch of captured tokens of one site. Pointers must stay valid for
// the duration of QkStore::add(); the store copies what it keeps.
struct QkBatch {
  int layer = 0;               // site number (declared with declare_site)
  int64_t n_tokens = 0;        // n
  int n_heads = 0;             // H: heads present in q and k
  int head_dim = 0;            // D
  const float* q = nullptr;    // [n, H, D] row-major
  const float* k = nullptr;    // [n, H, D] row-major
  const int64_t* sequence = nullptr;  // [n] sequence index of each token
  const int64_t* position = nullptr;  // [n] position inside its sequence
  const int64_t* token_id = nullptr;  // [n], or nullptr when the input has no token ids
};

// What a site is, declared once before its first batch.
struct SiteMeta {
  std::string module;           // module path; may be empty
  double prescale = 1.0;        // factor stepped over on q (SPEC 1)
  std::vector<int> head_index;  // model head number of each head the batches carry
};

struct StoreOptions {
  std::optional<int64_t> max_tokens;  // token budget; nullopt keeps everything; must be > 0
  uint64_t seed = 0;                  // seed of the sequence sample
};

namespace detail {
// Where the store's q/k buffers live. Not the malloc heap: there they pinned the heap's top under
// a model's short-lived tensors, so every forward after them grew the heap anew and faulted its
// pages in (+160 us per captured 33-token request of the small BERT, BM_Request/small/captured),
// and freeing them in take() was slow (3x) and left them resident beside the assembled QkData.
//  - Blocks up to kCarveMax bytes are carved in size classes (256-byte steps to 64 kB, 4 kB
//    above). Classes up to 64 kB have chunks of their own, one huge page each; larger classes
//    share 16 MB chunks, carved in arrival order. Chunks of one class each (round 3) left a
//    partly touched huge page per class (BERT-base, lengths 16-128: ~90 classes, ~100 MB
//    before take(), and as much again held during it); shared chunks leave one, and take(),
//    copying sequences in about their arrival order, empties their huge pages in turn (below).
//    Each class has a free list: blocks of evicted sequences serve later blocks of their class
//    or of a class at most 1/8 smaller (exact classes only: with random lengths the store held
//    1.7x the kept q/k under a budget, 1.4x with the 1/8 window). A chunk whose
//    blocks are all free is kept whole as a spare (up to kSpareChunks) when an eviction emptied
//    it, and unmapped when take() did.
//  - Larger blocks get mappings of their own (whole huge pages where that adds at most 1/8,
//    else whole 4 kB pages); freed by an eviction they wait in a pool of at
//    most kPoolMax bytes for a later block of about their size, freed by take() they are unmapped.
//  Mappings ask for transparent huge pages (where the kernel offers them), whose first touch is
//  far cheaper than 4 kB pages' on a VM; otherwise they are populated at once.
//  - Each chunk counts the live blocks on each of its huge pages. take() (keep false) gives a
//    huge page back to the kernel as soon as its last block is freed, and trim() gives back every
//    page holding no live block (free-list blocks of evicted sequences, spares, the pool): a
//    class's chunk holds the blocks of sequences in the order they arrived, which is the order
//    take() copies them in, so the store shrinks as fast as take()'s output grows. Freeing only
//    whole chunks held up to a chunk (16 MB) per class, ~100 classes, during take() (BERT-base,
//    256 sequences: +0.24-0.5 GB of peak RSS).
// Thread-safe.
class StoreArena {
 public:
  static constexpr size_t kCarveMax = size_t{2} << 20;
  static constexpr size_t kSpareChunks = 4;
  static constexpr size_t kPoolMax = size_t{256} << 20;

  StoreArena() = default;
  ~StoreArena();
  StoreArena(const StoreArena&) = delete;
  StoreArena& operator=(const StoreArena&) = delete;

  // A block of at least `bytes`; *granted is its size (to pass back to release).
  void* allocate(size_t bytes, size_t* granted);
  // keep = false: memory goes back to the kernel where it can (take(), where a pool would only
  // add to the peak); true: it is kept for later blocks (evictions).
  void release(void* p, size_t granted, bool keep);

  // Gives back to the kernel every page of the arena holding no live block: chunks' pages whose
  // blocks are all free, the spare chunks and the pool. Free blocks stay usable (their pages
  // come back, zeroed, when touched). Called by take() before it copies.
  void trim();

  size_t mapped_bytes() const;     // chunks, live large blocks and the pool (for tests)
  size_t pooled_bytes() const;     // large blocks waiting in the pool
  size_t discarded_bytes() const;  // bytes of chunk pages given back so far (for tests)

 private:
  struct Chunk {
    size_t bytes = 0;
    size_t live = 0;                   // blocks handed out
    std::vector<uint32_t> page_live;   // per huge page: live blocks overlapping it
  };
  struct Bump {       // a class's chunk that blocks are carved from, and its free tail
    char* chunk = nullptr;
    char* next = nullptr;
    size_t left = 0;
  };
  Chunk& chunk_of(void* p);  // requires mutex_
  void drop_spares();        // unmaps the spare chunks; requires mutex_
  // Counts a block of `size` bytes at p on the pages it overlaps (delta +1 or -1); with
  // `discard`, pages left with no live block are given back to the kernel. Requires mutex_.
  void count_pages(char* base, Chunk& chunk, char* p, size_t size, int delta, bool discard);

  mutable std::mutex mutex_;
  std::map<char*, Chunk> chunks_;               // by base address
  std::vector<char*> spare_;                    // empty chunks kept whole
  size_t chunk_bytes_ = 0;                      // all chunks together
  std::map<size_t, Bump> bump_;                 // by class size, classes up to 64 kB
  Bump shared_;                                 // classes above 64 kB
  std::map<size_t, std::vector<void*>> free_;   // free carved blocks by class size
  std::multimap<size_t, void*> pool_;           // freed large blocks by size
  size_t pool_bytes_ = 0, large_live_bytes_ = 0, discarded_bytes_ = 0;
};

// Asks for transparent huge pages on the whole huge pages inside [p, p + bytes) (memory not yet
// touched: take()'s output vectors, which glibc maps with 4 kB pages, whose first touch is slow
// on a VM). Returns the bytes advised: 0 where the range holds no whole huge page, below
// `min_bytes`, or where the system has no transparent huge pages.
size_t advise_huge_pages(void* p, size_t bytes, size_t min_bytes = size_t{4} << 20);

// A [n] float buffer from a StoreArena; move-only.
class ArenaFloats {
 public:
  ArenaFloats() = default;
  ArenaFloats(StoreArena& arena, size_t n);
  ~ArenaFloats() { reset(true); }
  ArenaFloats(ArenaFloats&& o) noexcept { swap(o); }
  ArenaFloats& operator=(ArenaFloats&& o) noexcept {
    ArenaFloats(std::move(o)).swap(*this);
    return *this;
  }
  // Frees the buffer; keep: see StoreArena::release.
  void reset(bool keep);
  void swap(ArenaFloats& o) noexcept {
    std::swap(arena_, o.arena_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(granted_, o.granted_);
  }
  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const float* begin() const { return data_; }
  const float* end() const { return data_ + size_; }

 private:
  StoreArena* arena_ = nullptr;
  float* data_ = nullptr;
  size_t size_ = 0, granted_ = 0;
};
}  // namespace detail

class QkStore {
 public:
  explicit QkStore(StoreOptions options = {});

  // Declares site `layer`. All sites must be declared before the first add(). Declaring the
  // same layer again with identical meta is a no-op; with different meta it throws.
  void declare_site(int layer, const SiteMeta& meta);

  // Offers one batch. Every sequence in a batch must bring all its captured tokens for that
  // site, and the same tokens (count, positions, ids) at every site. A sequence is sampled (or
  // not) when it reaches the lowest declared layer, which every forward visits first; batches of
  // other sites only fill in sequences already kept. Thread-safe.
  void add(const QkBatch& batch);

  // Materialises the kept tokens (sorted by sequence, then position) and empties the store.
  // Throws if a kept sequence is missing a declared site.
  QkData take();

  int64_t tokens_seen() const;
  int64_t tokens_kept() const;
  int64_t sequences_seen() const;

  // --- Checkpoints and merges (see checkpoint.h). None of these may overlap add().

  // What, besides the kept sequences, a store's sample depends on.
  struct Counts {
    int64_t tokens_seen = 0, sequences_seen = 0;
    double cutoff = 2.0;  // lowest priority ever evicted (2: none); such sequences are refused
  };
  Counts counts() const;
  const StoreOptions& options() const { return options_; }

  // A declared site as the store knows it (n_heads/head_dim -1 until its first batch).
  struct SiteInfo {
    int layer = 0;
    SiteMeta meta;
    int n_heads = -1, head_dim = -1;
  };
  std::vector<SiteInfo> sites() const;
  bool has_token_ids() const;  // false until the first batch

  // One kept sequence, read in place. q[i]/k[i] are [n, H_i, D_i] of declared site i (layer
  // order), n = position.size().
  struct KeptView {
    int64_t sequence = 0;
    double priority = 0;
    const std::vector<int64_t>* position = nullptr;
    const std::vector<int64_t>* token_id = nullptr;  // empty without token ids
    std::vector<const float*> q, k;
  };
  // Calls `visit` for every kept sequence, in increasing sequence order, under the store's lock.
  void visit_kept(const std::function<void(const KeptView&)>& visit) const;

  // Merges a sample kept by another store (or by this one, saved: a checkpoint) with the same
  // seed and sites: its sequences are offered with their priorities, `counts` are added to this
  // store's, the cutoff becomes the lower of the two, and the budget is applied. The result is
  // the sample one store offered every sequence of both would keep. `kept` must hold every
  // declared site (same layers, heads and head_dim); a sequence already kept throws.
  void merge(const QkData& kept, const Counts& counts);

  // The priority of a sequence under a seed, in [0, 1) (exposed for tests).
  static double priority(uint64_t seed, int64_t sequence);

 private:
  using RowBuffer = detail::ArenaFloats;
  struct Sequence {
    double priority = 0;
    std::vector<int64_t> position;
    std::vector<int64_t> token_id;
    std::vector<RowBuffer> q, k;  // per declared site index: [n, H, D]
  };
  struct Site {
    int layer = 0;
    SiteMeta meta;
    int n_heads = -1, head_dim = -1;  // fixed by the first batch
  };

  int site_slot(int layer) const;  // index into sites_, throws when undeclared
  void admit(int64_t sequence, Sequence entry);  // requires mutex_
  void evict_over_budget();                      // requires mutex_

  StoreOptions options_;
  // Declared before kept_: the sequences' buffers go back to it when they are destroyed.
  std::unique_ptr<detail::StoreArena> arena_ = std::make_unique<detail::StoreArena>();
  mutable std::mutex mutex_;
  std::vector<Site> sites_;
  std::unordered_map<int64_t, Sequence> kept_;
  std::set<std::pair<double, int64_t>> by_priority_;  // (priority, sequence) of kept_
  double cutoff_ = 2.0;        // sequences with priority >= cutoff are rejected (evicted once)
  int64_t tokens_seen_ = 0, tokens_kept_ = 0, sequences_seen_ = 0;
  std::optional<bool> has_token_ids_;
};

}  // namespace qkscope
