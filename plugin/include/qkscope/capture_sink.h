// Capture sinks: where captured q/k go. Torch-free.
//
// Protocol for one forward with a session (see capture_session.h):
//   1. prepare(sites) once, before the first consume() of that forward (at its start; for the
//      first forwards of a model, whose site sizes are not known yet, at its end, after the
//      wants_heads() calls, with deliveries deferred until then);
//   2. for each site reached, in execution order: wants_heads(site) (empty: the site is skipped
//      and nothing is copied), then consume(site, batch) with exactly the heads asked for.
// All three run on the thread that called forward. A sink used by several sessions on several
// threads at once must be thread-safe; StoreSink and SafetensorsSink are.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "qkscope/qk_store.h"
#include "qkscope/site.h"

namespace qkscope {

class CaptureSink {
 public:
  virtual ~CaptureSink() = default;

  // Reserves `n` consecutive sequence indices of this sink's run and returns the first. Sessions
  // opened without explicit indices number their rows through it, so that many sessions (one
  // per captured request, on many threads) never give two sequences the same index.
  // Thread-safe.
  int64_t take_sequences(int64_t n) { return next_sequence_.fetch_add(n); }
  int64_t next_sequence() const { return next_sequence_.load(); }

  // Every site of the model, in layer order. n_heads/head_dim are -1 for sites no forward has
  // reached yet. Called before the first consume() of each forward. Default: nothing.
  virtual void prepare(const std::vector<SiteDescription>& sites);

  // The model heads (0..n_heads-1, distinct) wanted at `site`, whose n_heads and head_dim are
  // filled in. Empty: nothing of this site is copied. Default: all heads.
  virtual std::vector<int> wants_heads(const SiteDescription& site);

  // One batch of `site`: batch.q/k are [n_tokens, H', D] with H' = wants_heads(site).size(),
  // heads in the order wants_heads returned; padding tokens are already dropped. The pointers
  // are valid only during the call.
  virtual void consume(const SiteDescription& site, const QkBatch& batch) = 0;

 private:
  std::atomic<int64_t> next_sequence_{0};
};

// Calls std::functions. Thread-safe as far as the functions are.
class CallbackSink : public CaptureSink {
 public:
  using Consume = std::function<void(const SiteDescription&, const QkBatch&)>;
  using WantsHeads = std::function<std::vector<int>(const SiteDescription&)>;

  // `wants` null: all heads of every site.
  explicit CallbackSink(Consume consume, WantsHeads wants = nullptr);

  std::vector<int> wants_heads(const SiteDescription& site) override;
  void consume(const SiteDescription& site, const QkBatch& batch) override;

 private:
  Consume consume_;
  WantsHeads wants_;
};

// Which sites and heads a StoreSink keeps. Empty lists mean all.
struct SiteFilter {
  std::vector<int> layers;  // site numbers
  std::vector<int> heads;   // model head numbers, the same at every kept site
};

// Feeds a QkStore. On the first prepare() it declares the kept sites that a forward has
// reached (module, prescale, head_index); sites reached only later are skipped. Thread-safe.
// The store must outlive the sink.
class StoreSink : public CaptureSink {
 public:
  explicit StoreSink(QkStore& store, SiteFilter filter = {});

  // Throws qkscope::Error when the filter names a layer the model does not have.
  void prepare(const std::vector<SiteDescription>& sites) override;
  // Throws qkscope::Error when the filter names a head the site does not have.
  std::vector<int> wants_heads(const SiteDescription& site) override;
  void consume(const SiteDescription& site, const QkBatch& batch) override;

 private:
  bool layer_kept(int layer) const;

  QkStore& store_;
  SiteFilter filter_;
  std::mutex mutex_;
  bool declared_ = false;
  std::vector<char> declared_layers_;  // by site number; read only after declared_ is set
};

// Writes a q/k file (SPEC 2) on close(), through its own QkStore. Thread-safe until close().
class SafetensorsSink : public CaptureSink {
 public:
  explicit SafetensorsSink(std::string path, StoreOptions store_options = {},
                           SiteFilter filter = {});

  void prepare(const std::vector<SiteDescription>& sites) override;
  std::vector<int> wants_heads(const SiteDescription& site) override;
  void consume(const SiteDescription& site, const QkBatch& batch) override;

  // Writes the file (write_qk_file of store().take()). Must not overlap a forward that uses
  // this sink. Nothing is written unless close() is called. Throws qkscope::Error.
  void close();

  QkStore& store() { return store_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  QkStore store_;
  StoreSink inner_;
  bool closed_ = false;
};

}  // namespace qkscope
