#include "qkscope/qk_store.h"

#if defined(__unix__)
#include <sys/mman.h>
#endif

#include <cstdlib>
#include <fstream>
#include <string>
#include <new>

#include <algorithm>
#include <iterator>

#include "qkscope/error.h"

namespace qkscope {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Token indices of a batch grouped by sequence, in order of first appearance.
std::vector<std::pair<int64_t, std::vector<int64_t>>> group_by_sequence(const QkBatch& b) {
  std::vector<std::pair<int64_t, std::vector<int64_t>>> groups;
  std::unordered_map<int64_t, size_t> slot;
  for (int64_t t = 0; t < b.n_tokens; ++t) {
    auto [it, inserted] = slot.emplace(b.sequence[t], groups.size());
    if (inserted) groups.push_back({b.sequence[t], {}});
    groups[it->second].second.push_back(t);
  }
  return groups;
}

// Copies the rows `tokens` of a [n, H, D] array into a buffer of `arena`.
detail::ArenaFloats gather_rows(detail::StoreArena& arena, const float* src,
                                const std::vector<int64_t>& tokens, size_t row_size) {
  detail::ArenaFloats out(arena, tokens.size() * row_size);
  float* dst = out.data();
  // Runs of consecutive tokens (a sequence's tokens usually are) in one copy each.
  for (size_t i = 0; i < tokens.size();) {
    size_t j = i + 1;
    while (j < tokens.size() && tokens[j] == tokens[j - 1] + 1) ++j;
    std::copy_n(src + tokens[i] * row_size, (j - i) * row_size, dst + i * row_size);
    i = j;
  }
  return out;
}

}  // namespace

namespace detail {
namespace {

#if defined(MAP_POPULATE)
constexpr int kPopulate = MAP_POPULATE;
#else
constexpr int kPopulate = 0;
#endif
constexpr size_t kHuge = size_t{2} << 20;  // a transparent huge page on x86-64
constexpr size_t kPage = 4096;

// Whether the kernel gives huge pages to mappings that ask (THP "always" or "madvise").
bool huge_pages_available() {
  static const bool available = [] {
    std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string line;
    return std::getline(f, line) && line.find("[never]") == std::string::npos;
  }();
  return available;
}

// `bytes` (a multiple of kHuge when huge) of fresh memory. Huge: 2 MB aligned and advised for
// transparent huge pages: on this project's VM the first write to a 4 kB page costs ~13 us
// even after MAP_POPULATE (0.1-0.16 GB/s into fresh 4 kB pages, 7-15 GB/s into fresh huge
// pages; bench/README.md). Otherwise populated at once (one call instead of a fault per page).
void* map_pages(size_t bytes, bool huge) {
#if defined(__unix__)
  if (huge && huge_pages_available()) {
    void* raw = mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kHuge - 1) & ~static_cast<uintptr_t>(kHuge - 1);
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t tail = start + bytes + kHuge - (aligned + bytes);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
#if defined(MADV_HUGEPAGE)
    madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);
#endif
    return reinterpret_cast<void*>(aligned);
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | kPopulate,
                 -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return p;
#else
  (void)huge;
  void* p = std::malloc(bytes);
  if (!p) throw std::bad_alloc();
  return p;
#endif
}

// Gives the pages of [p, p + bytes) back to the kernel; the range stays mapped and reads as
// zeros. On a whole transparent huge page this frees it at once.
void discard_pages(void* p, size_t bytes) {
#if defined(__unix__) && defined(MADV_DONTNEED)
  madvise(p, bytes, MADV_DONTNEED);
#else
  (void)p;
  (void)bytes;
#endif
}

void unmap_pages(void* p, size_t bytes) {
#if defined(__unix__)
  munmap(p, bytes);
#else
  (void)bytes;
  std::free(p);
#endif
}

// Size classes: 256-byte steps up to 64 kB, page steps above.
size_t class_size(size_t bytes) {
  const size_t step = bytes <= (size_t{64} << 10) ? 256 : kPage;
  return (std::max<size_t>(bytes, 1) + step - 1) / step * step;
}

// Blocks up to kSmallMax are carved from chunks of their class, one huge page each (a tail of
// under 64 kB: under 1/32). Larger ones from chunks shared by all classes, in arrival order.
constexpr size_t kSmallMax = size_t{64} << 10;
constexpr size_t kSharedChunk = size_t{16} << 20;

}  // namespace

StoreArena::~StoreArena() {
  // Blocks still handed out were released by their owners before: the store's sequences are
  // destroyed before its arena.
  for (auto& [bytes, p] : pool_) unmap_pages(p, bytes);
  for (auto& [base, chunk] : chunks_) unmap_pages(base, chunk.bytes);
}

void* StoreArena::allocate(size_t bytes, size_t* granted) {
  const size_t size = class_size(bytes);
  *granted = size;
  std::lock_guard<std::mutex> lock(mutex_);
  if (size > kCarveMax) {
    // A block of its own, whole huge pages. A pooled block of about this size first: its pages
    // are mapped and touched. At most a quarter larger, so that a short sequence does not hold
    // a long one's memory.
    const size_t huge = (size + kHuge - 1) / kHuge * kHuge;
    const size_t mapped = huge - size <= size / 8 ? huge : (size + kPage - 1) / kPage * kPage;
    auto it = pool_.lower_bound(mapped);
    void* p = nullptr;
    if (it != pool_.end() && it->first <= mapped + mapped / 4) {
      p = it->second;
      *granted = it->first;
      pool_bytes_ -= it->first;
      pool_.erase(it);
    } else {
      p = map_pages(mapped, /*huge=*/true);
      *granted = mapped;
    }
    large_live_bytes_ += *granted;
    return p;
  }
  // A free block of this class, else of the nearest class at most 1/8 larger: under a budget,
  // evicted blocks of one class only served later sequences of exactly that class, and the rest
  // piled up (random lengths: the store held 1.7x the kept q/k at take()).
  auto found = free_.end();
  for (auto it = free_.lower_bound(size); it != free_.end() && it->first <= size + size / 8; ++it)
    if (!it->second.empty()) {
      found = it;
      break;
    }
  if (found != free_.end()) {
    std::vector<void*>& list = found->second;
    *granted = found->first;
    void* p = list.back();
    list.pop_back();
    auto it = std::prev(chunks_.upper_bound(static_cast<char*>(p)));
    ++it->second.live;
    count_pages(it->first, it->second, static_cast<char*>(p), *granted, +1, false);
    return p;
  }
  Bump& bump = size > kSmallMax ? shared_ : bump_[size];
  if (bump.chunk == nullptr || bump.left < size) {
    // A new chunk (a spare one first); the old chunk's tail is left unused (untouched but for
    // the rest of its last huge page).
    const size_t bytes = size > kSmallMax ? kSharedChunk : kHuge;
    char* base = nullptr;
    for (size_t i = 0; i < spare_.size(); ++i)
      if (chunks_.at(spare_[i]).bytes >= size) {
        base = spare_[i];
        spare_.erase(spare_.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    if (base == nullptr) {
      base = static_cast<char*>(map_pages(bytes, /*huge=*/true));
      chunks_.emplace(base, Chunk{bytes, 0, std::vector<uint32_t>(bytes / kHuge, 0)});
      chunk_bytes_ += bytes;
    }
    bump.chunk = base;
    bump.next = base;
    bump.left = chunks_.at(base).bytes;
  }
  char* p = bump.next;
  bump.next += size;
  bump.left -= size;
  Chunk& chunk = chunks_.at(bump.chunk);
  ++chunk.live;
  count_pages(bump.chunk, chunk, p, size, +1, false);
  return p;
}

void StoreArena::count_pages(char* base, Chunk& chunk, char* p, size_t size, int delta,
                             bool discard) {
  const size_t first = static_cast<size_t>(p - base) / kHuge;
  const size_t last = (static_cast<size_t>(p - base) + size - 1) / kHuge;
  for (size_t i = first; i <= last && i < chunk.page_live.size(); ++i) {
    QKSCOPE_ASSERT(delta > 0 || chunk.page_live[i] > 0);
    if (delta > 0)
      ++chunk.page_live[i];
    else
      --chunk.page_live[i];
    if (discard && chunk.page_live[i] == 0) {
      discard_pages(base + i * kHuge, kHuge);
      discarded_bytes_ += kHuge;
    }
  }
}

StoreArena::Chunk& StoreArena::chunk_of(void* p) {
  auto it = chunks_.upper_bound(static_cast<char*>(p));
  QKSCOPE_ASSERT(it != chunks_.begin());
  return std::prev(it)->second;
}

void StoreArena::release(void* p, size_t granted, bool keep) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (granted > kCarveMax) {
    large_live_bytes_ -= granted;
    if (!keep || granted > kPoolMax) {
      unmap_pages(p, granted);
      return;
    }
    pool_.emplace(granted, p);
    pool_bytes_ += granted;
    // Over the cap: the largest blocks go first (the least likely to fit a typical sequence).
    while (pool_bytes_ > kPoolMax) {
      auto last = std::prev(pool_.end());
      unmap_pages(last->second, last->first);
      pool_bytes_ -= last->first;
      pool_.erase(last);
    }
    return;
  }
  auto it = std::prev(chunks_.upper_bound(static_cast<char*>(p)));
  free_[granted].push_back(p);
  // take(): a huge page whose blocks have all been copied out goes back at once (see the header).
  count_pages(it->first, it->second, static_cast<char*>(p), granted, -1,
              !keep && it->second.live > 1);
  if (--it->second.live > 0) return;
  // The chunk is empty: its blocks leave the free lists. take() (keep false) gives it back to
  // the kernel at once, so that take() needs little more memory than the store; an eviction
  // keeps a few as spares, whole, for blocks of any size.
  char* base = it->first;
  char* end = base + it->second.bytes;
  for (auto& [cls, list] : free_)
    list.erase(std::remove_if(list.begin(), list.end(),
                              [&](void* q) { return q >= base && q < end; }),
               list.end());
  for (auto& [cls, bump] : bump_)
    if (bump.chunk == base) bump = Bump();
  if (shared_.chunk == base) shared_ = Bump();
  if (keep && spare_.size() < kSpareChunks) {
    spare_.push_back(base);
    return;
  }
  unmap_pages(base, it->second.bytes);
  chunk_bytes_ -= it->second.bytes;
  chunks_.erase(it);
  if (keep) return;
  drop_spares();  // take(): the spares go too
}

void StoreArena::drop_spares() {
  for (char* spare : spare_) {
    auto s = chunks_.find(spare);
    unmap_pages(spare, s->second.bytes);
    chunk_bytes_ -= s->second.bytes;
    chunks_.erase(s);
  }
  spare_.clear();
}

void StoreArena::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [bytes, p] : pool_) unmap_pages(p, bytes);
  pool_.clear();
  pool_bytes_ = 0;
  drop_spares();
  for (auto& [base, chunk] : chunks_)
    for (size_t i = 0; i < chunk.page_live.size(); ++i)
      if (chunk.page_live[i] == 0) {
        // Pages past a class's free tail were never touched: giving them back costs a call.
        discard_pages(base + i * kHuge, kHuge);
        discarded_bytes_ += kHuge;
      }
}

size_t StoreArena::discarded_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return discarded_bytes_;
}

size_t StoreArena::mapped_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return chunk_bytes_ + large_live_bytes_ + pool_bytes_;
}

size_t StoreArena::pooled_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pool_bytes_;
}

size_t advise_huge_pages(void* p, size_t bytes, size_t min_bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t first = (begin + kHuge - 1) & ~static_cast<uintptr_t>(kHuge - 1);
  const uintptr_t last = (begin + bytes) & ~static_cast<uintptr_t>(kHuge - 1);
  if (p == nullptr || bytes < min_bytes || last <= first || !huge_pages_available()) return 0;
#if defined(__unix__) && defined(MADV_HUGEPAGE)
  if (madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE) != 0) return 0;
  return last - first;
#else
  return 0;
#endif
}

ArenaFloats::ArenaFloats(StoreArena& arena, size_t n) : arena_(&arena), size_(n) {
  data_ = static_cast<float*>(arena.allocate(n * sizeof(float), &granted_));
}

void ArenaFloats::reset(bool keep) {
  if (arena_ != nullptr && data_ != nullptr) arena_->release(data_, granted_, keep);
  arena_ = nullptr;
  data_ = nullptr;
  size_ = 0;
  granted_ = 0;
}

}  // namespace detail

QkStore::QkStore(StoreOptions options) : options_(options) {
  QKSCOPE_CHECK_AS(UsageError, !options_.max_tokens || *options_.max_tokens > 0,
                   "max_tokens: expected a positive token budget, got {}", *options_.max_tokens);
}

double QkStore::priority(uint64_t seed, int64_t sequence) {
  uint64_t h = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(sequence)));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

void QkStore::declare_site(int layer, const SiteMeta& meta) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const Site& s : sites_) {
    if (s.layer != layer) continue;
    QKSCOPE_CHECK(s.meta.module == meta.module && s.meta.prescale == meta.prescale &&
                      s.meta.head_index == meta.head_index,
                  "QkStore: layer {} declared twice with different module/prescale/heads "
                  "('{}' then '{}')", layer, s.meta.module, meta.module);
    return;
  }
  QKSCOPE_CHECK(kept_.empty() && sequences_seen_ == 0,
                "QkStore: layer {} declared after the first batch; declare every site first",
                layer);
  QKSCOPE_CHECK(!meta.head_index.empty(), "QkStore: layer {} declared with no heads", layer);
  Site site;
  site.layer = layer;
  site.meta = meta;
  auto pos = std::lower_bound(sites_.begin(), sites_.end(), layer,
                              [](const Site& s, int l) { return s.layer < l; });
  sites_.insert(pos, std::move(site));
}

int QkStore::site_slot(int layer) const {
  for (size_t i = 0; i < sites_.size(); ++i)
    if (sites_[i].layer == layer) return static_cast<int>(i);
  throw Error(fmt::format("QkStore: batch for layer {}, which was never declared", layer));
}

void QkStore::add(const QkBatch& b) {
  QKSCOPE_CHECK(b.n_tokens >= 0 && b.n_heads > 0 && b.head_dim > 0,
                "QkStore: batch of layer {} has n_tokens={}, n_heads={}, head_dim={}; expected "
                "n_tokens >= 0 and positive heads and head_dim", b.layer, b.n_tokens, b.n_heads,
                b.head_dim);
  if (b.n_tokens == 0) return;
  QKSCOPE_CHECK(b.q && b.k && b.sequence && b.position,
                "QkStore: batch of layer {} lacks q, k, sequence or position data", b.layer);

  int slot;
  bool first_site;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    slot = site_slot(b.layer);
    Site& site = sites_[slot];
    QKSCOPE_CHECK(b.n_heads == static_cast<int>(site.meta.head_index.size()),
                  "QkStore: layer {} declared with {} heads, batch has {}", b.layer,
                  site.meta.head_index.size(), b.n_heads);
    QKSCOPE_CHECK(site.head_dim < 0 || site.head_dim == b.head_dim,
                  "QkStore: layer {} had head_dim {}, batch has {}", b.layer, site.head_dim,
                  b.head_dim);
    site.head_dim = b.head_dim;
    site.n_heads = b.n_heads;
    bool ids = b.token_id != nullptr;
    QKSCOPE_CHECK(!has_token_ids_ || *has_token_ids_ == ids,
                  "QkStore: some batches carry token ids and others do not (layer {})", b.layer);
    has_token_ids_ = ids;
    first_site = slot == 0;
  }

  // Copies happen outside the lock so that concurrent forwards do not queue behind each other.
  const size_t row = static_cast<size_t>(b.n_heads) * b.head_dim;
  auto groups = group_by_sequence(b);
  for (auto& [seq, tokens] : groups) {
    std::vector<int64_t> positions(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) positions[i] = b.position[tokens[i]];
    std::vector<int64_t> ids;
    if (b.token_id)
      for (int64_t t : tokens) ids.push_back(b.token_id[t]);

    if (first_site) {
      double p = priority(options_.seed, seq);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        QKSCOPE_CHECK(!kept_.count(seq),
                      "QkStore: sequence {} arrived twice at layer {}; sequence indices must be "
                      "unique over a run", seq, b.layer);
        ++sequences_seen_;
        tokens_seen_ += static_cast<int64_t>(tokens.size());
        if (p >= cutoff_) continue;  // would be evicted at once: skip the copy
      }
      Sequence entry;
      entry.priority = p;
      entry.position = std::move(positions);
      entry.token_id = std::move(ids);
      entry.q.resize(sites_.size());
      entry.k.resize(sites_.size());
      entry.q[0] = gather_rows(*arena_, b.q, tokens, row);
      entry.k[0] = gather_rows(*arena_, b.k, tokens, row);
      std::lock_guard<std::mutex> lock(mutex_);
      // Checked again: while the rows were copied, another thread may have admitted the same
      // sequence, or lowered the cutoff (then a serial run would have rejected it above).
      QKSCOPE_CHECK(!kept_.count(seq),
                    "QkStore: sequence {} arrived twice at layer {}; sequence indices must be "
                    "unique over a run", seq, b.layer);
      if (p >= cutoff_) continue;
      admit(seq, std::move(entry));
      continue;
    }

    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!kept_.count(seq)) continue;  // not sampled, or evicted since
    }
    auto q = gather_rows(*arena_, b.q, tokens, row);
    auto k = gather_rows(*arena_, b.k, tokens, row);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = kept_.find(seq);
    if (it == kept_.end()) continue;
    Sequence& s = it->second;
    QKSCOPE_CHECK(s.position == positions && s.token_id == ids,
                  "QkStore: sequence {} has different tokens at layer {} than at layer {}", seq,
                  b.layer, sites_[0].layer);
    QKSCOPE_CHECK(s.q[slot].empty(), "QkStore: sequence {} arrived twice at layer {}", seq,
                  b.layer);
    s.q[slot] = std::move(q);
    s.k[slot] = std::move(k);
  }
}

void QkStore::admit(int64_t sequence, Sequence entry) {
  tokens_kept_ += static_cast<int64_t>(entry.position.size());
  by_priority_.emplace(entry.priority, sequence);
  kept_.emplace(sequence, std::move(entry));
  evict_over_budget();
}

void QkStore::evict_over_budget() {
  if (!options_.max_tokens) return;
  while (tokens_kept_ > *options_.max_tokens) {
    // Evict the highest priority; the cutoff keeps the kept set a prefix in priority order.
    auto worst = std::prev(by_priority_.end());
    cutoff_ = std::min(cutoff_, worst->first);
    auto entry = kept_.find(worst->second);
    tokens_kept_ -= static_cast<int64_t>(entry->second.position.size());
    kept_.erase(entry);
    by_priority_.erase(worst);
  }
}

QkData QkStore::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::pair<int64_t, Sequence*>> order;
  order.reserve(kept_.size());
  for (auto& [seq, entry] : kept_) order.push_back({seq, &entry});
  std::sort(order.begin(), order.end());
  // Everything is checked before anything is freed: a take() that throws leaves the store whole.
  for (size_t slot = 0; slot < sites_.size(); ++slot)
    for (auto& [seq, entry] : order)
      QKSCOPE_CHECK(!entry->q[slot].empty() || entry->position.empty(),
                    "QkStore: sequence {} never reached layer {}; was take() called while a "
                    "forward was still running?", seq, sites_[slot].layer);

  QkData data;
  data.tokens_seen = tokens_seen_;
  data.sequences_seen = sequences_seen_;
  data.sample = QkData::Sample{options_.seed, options_.max_tokens.value_or(0), cutoff_};
  // Memory the kept sequences do not use (evicted sequences' blocks, spares, the pool) goes back
  // before the output grows: take()'s peak is then about the kept q/k once plus a little.
  arena_->trim();
  for (auto& [seq, entry] : order) {
    for (size_t t = 0; t < entry->position.size(); ++t) {
      data.sequence.push_back(seq);
      data.position.push_back(entry->position[t]);
    }
    data.token_id.insert(data.token_id.end(), entry->token_id.begin(), entry->token_id.end());
  }
  const size_t n = data.sequence.size();
  for (size_t slot = 0; slot < sites_.size(); ++slot) {
    const Site& site = sites_[slot];
    SiteData out;
    out.layer = site.layer;
    out.module = site.meta.module;
    out.prescale = site.meta.prescale;
    out.head_index = site.meta.head_index;
    out.n_heads = static_cast<int>(site.meta.head_index.size());
    out.head_dim = std::max(site.head_dim, 0);
    // Reserved, not touched: the pages are faulted in as the copy below reaches them, and asked
    // for as huge pages first (glibc maps vectors this large with 4 kB pages, whose first touch
    // made half of take()'s time on a VM). reserve + insert writes each float once (resize
    // would zero-fill first, and touch the whole output before the store shrinks).
    out.q.reserve(n * out.n_heads * out.head_dim);
    out.k.reserve(n * out.n_heads * out.head_dim);
    detail::advise_huge_pages(out.q.data(), out.q.capacity() * sizeof(float));
    detail::advise_huge_pages(out.k.data(), out.k.capacity() * sizeof(float));
    data.sites.push_back(std::move(out));
  }
  // Sequence by sequence, every site of a sequence, then its buffers are freed (back to the
  // kernel, not to the pool): an arena chunk holds the buffers of neighbouring sequences of all
  // sites, so it empties, and is unmapped, as the copy passes it. Site by site, no chunk would
  // empty before the last site, and take() would hold the sample twice.
  for (auto& [seq, entry] : order) {
    for (size_t slot = 0; slot < sites_.size(); ++slot) {
      SiteData& out = data.sites[slot];
      out.q.insert(out.q.end(), entry->q[slot].begin(), entry->q[slot].end());
      out.k.insert(out.k.end(), entry->k[slot].begin(), entry->k[slot].end());
      entry->q[slot].reset(false);
      entry->k[slot].reset(false);
    }
  }
  kept_.clear();
  by_priority_.clear();
  tokens_kept_ = 0;
  return data;
}

QkStore::Counts QkStore::counts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return Counts{tokens_seen_, sequences_seen_, cutoff_};
}

std::vector<QkStore::SiteInfo> QkStore::sites() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<SiteInfo> out;
  for (const Site& s : sites_) out.push_back(SiteInfo{s.layer, s.meta, s.n_heads, s.head_dim});
  return out;
}

bool QkStore::has_token_ids() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return has_token_ids_.value_or(false);
}

void QkStore::visit_kept(const std::function<void(const KeptView&)>& visit) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::pair<int64_t, const Sequence*>> order;
  order.reserve(kept_.size());
  for (const auto& [seq, entry] : kept_) order.push_back({seq, &entry});
  std::sort(order.begin(), order.end());
  KeptView view;
  view.q.resize(sites_.size());
  view.k.resize(sites_.size());
  for (const auto& [seq, entry] : order) {
    view.sequence = seq;
    view.priority = entry->priority;
    view.position = &entry->position;
    view.token_id = &entry->token_id;
    for (size_t slot = 0; slot < sites_.size(); ++slot) {
      QKSCOPE_CHECK(!entry->q[slot].empty() || entry->position.empty(),
                    "QkStore: sequence {} never reached layer {}; a forward is still running?",
                    seq, sites_[slot].layer);
      view.q[slot] = entry->q[slot].data();
      view.k[slot] = entry->k[slot].data();
    }
    visit(view);
  }
}

void QkStore::merge(const QkData& kept, const Counts& counts) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Everything is checked before the store changes: a refused merge leaves it as it was.
  QKSCOPE_CHECK(kept.sites.size() == sites_.size(),
                "QkStore::merge: the sample has {} sites, the store {}", kept.sites.size(),
                sites_.size());
  for (size_t slot = 0; slot < sites_.size(); ++slot) {
    const Site& mine = sites_[slot];
    const SiteData& theirs = kept.sites[slot];
    QKSCOPE_CHECK(theirs.layer == mine.layer, "QkStore::merge: site {} is layer {} in the sample",
                  mine.layer, theirs.layer);
    QKSCOPE_CHECK(theirs.head_index == mine.meta.head_index && theirs.module == mine.meta.module &&
                      theirs.prescale == mine.meta.prescale,
                  "QkStore::merge: layer {} differs in heads, module or prescale", mine.layer);
    QKSCOPE_CHECK(kept.n_tokens() == 0 || mine.head_dim < 0 || theirs.head_dim == mine.head_dim,
                  "QkStore::merge: layer {} has head_dim {} in the sample, {} in the store",
                  mine.layer, theirs.head_dim, mine.head_dim);
  }
  const bool ids = kept.has_token_ids();
  QKSCOPE_CHECK(kept.n_tokens() == 0 || !has_token_ids_ || *has_token_ids_ == ids,
                "QkStore::merge: one sample has token ids and the other not");
  // Runs of equal sequence index: [begin, end) of each sequence.
  std::vector<std::pair<int64_t, int64_t>> runs;
  std::set<int64_t> incoming;
  for (int64_t t = 0; t < kept.n_tokens(); ++t) {
    if (t == 0 || kept.sequence[t] != kept.sequence[t - 1]) {
      QKSCOPE_CHECK(incoming.insert(kept.sequence[t]).second,
                    "QkStore::merge: sequence {} is not contiguous in the sample", kept.sequence[t]);
      QKSCOPE_CHECK(!kept_.count(kept.sequence[t]),
                    "QkStore::merge: sequence {} is in both samples; sequence indices must be "
                    "unique over the merged runs", kept.sequence[t]);
      runs.push_back({t, t});
    }
    runs.back().second = t + 1;
  }

  tokens_seen_ += counts.tokens_seen;
  sequences_seen_ += counts.sequences_seen;
  cutoff_ = std::min(cutoff_, counts.cutoff);
  while (!by_priority_.empty() && std::prev(by_priority_.end())->first >= cutoff_) {
    auto worst = std::prev(by_priority_.end());
    auto entry = kept_.find(worst->second);
    tokens_kept_ -= static_cast<int64_t>(entry->second.position.size());
    kept_.erase(entry);
    by_priority_.erase(worst);
  }
  if (kept.n_tokens() > 0) has_token_ids_ = ids;
  for (size_t slot = 0; slot < sites_.size(); ++slot) {
    if (kept.n_tokens() == 0) break;
    sites_[slot].head_dim = kept.sites[slot].head_dim;
    sites_[slot].n_heads = kept.sites[slot].n_heads;
  }
  for (const auto& [begin, end] : runs) {
    const int64_t seq = kept.sequence[begin];
    const double p = priority(options_.seed, seq);
    if (p >= cutoff_) continue;
    std::vector<int64_t> tokens(static_cast<size_t>(end - begin));
    for (int64_t t = begin; t < end; ++t) tokens[t - begin] = t;
    Sequence entry;
    entry.priority = p;
    entry.position.assign(kept.position.begin() + begin, kept.position.begin() + end);
    if (ids) entry.token_id.assign(kept.token_id.begin() + begin, kept.token_id.begin() + end);
    for (const SiteData& site : kept.sites) {
      const size_t row = static_cast<size_t>(site.n_heads) * site.head_dim;
      entry.q.push_back(gather_rows(*arena_, site.q.data(), tokens, row));
      entry.k.push_back(gather_rows(*arena_, site.k.data(), tokens, row));
    }
    admit(seq, std::move(entry));
  }
}

int64_t QkStore::tokens_seen() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tokens_seen_;
}
int64_t QkStore::tokens_kept() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tokens_kept_;
}
int64_t QkStore::sequences_seen() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sequences_seen_;
}

}  // namespace qkscope
