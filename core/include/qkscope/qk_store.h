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
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
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
// Allocates large blocks straight from the kernel (mmap) and hands them back at once (munmap).
// The store's per-sequence buffers use it: from the heap, where they mix with a model's freed
// tensors, freeing them in take() was slow (3x) and left them resident beside the assembled
// QkData, doubling the peak.
void* map_pages(size_t bytes);
void unmap_pages(void* p, size_t bytes);
template <class T>
struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <class U>
  PageAllocator(const PageAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(map_pages(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { unmap_pages(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const PageAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const PageAllocator<U>&) const { return false; }
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
  using RowBuffer = std::vector<float, detail::PageAllocator<float>>;
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
  mutable std::mutex mutex_;
  std::vector<Site> sites_;
  std::unordered_map<int64_t, Sequence> kept_;
  std::set<std::pair<double, int64_t>> by_priority_;  // (priority, sequence) of kept_
  double cutoff_ = 2.0;        // sequences with priority >= cutoff are rejected (evicted once)
  int64_t tokens_seen_ = 0, tokens_kept_ = 0, sequences_seen_ = 0;
  std::optional<bool> has_token_ids_;
};

}  // namespace qkscope
