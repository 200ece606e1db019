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
#include <map>
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

// Assembles sequences that arrive over many forwards (a generation with a key/value cache) and
// hands each one, whole, to a target sink. A QkStore needs every sequence to arrive in one batch
// per site; a cached decoder brings a sequence's tokens a few at a time (the prompt, then one
// token per step), so the steps go to the assembler and flush() / finish() deliver.
//
// Protocol, one generation:
//   std::vector<int64_t> seq = assembler.new_sequences(batch);  // or your own unique indices
//   {
//     qkscope::CaptureSession session(assembler);
//     out = module.forward(prompt_inputs, seq);                   // P = 0
//     for (each step) out = module.forward(step_inputs, seq);     // the SAME indices per row
//   }
//   assembler.flush();  // or finish(seq) when other generations share the assembler
//
// Every forward must pass explicit sequence indices (CaptureModule::forward(inputs, sequences)),
// the same index for the same batch row at every step: a forward without them numbers its rows
// anew and each step would become sequences of its own (caught at flush as positions that do not
// start at 0). Rows that stop early (padding, mask 0, in later steps) are fine: the mask drops
// their tokens. The positions the capture op gives (index among the row's real tokens) must
// cover 0..n-1 exactly once per sequence by the time it is delivered.
//
// prepare() and wants_heads() pass through to the target at every forward; consume() copies the
// batch into per-(layer, sequence) buffers and delivers nothing. Delivery: per layer in
// ascending order, one QkBatch holding the delivered sequences, ascending, each with its tokens
// sorted by position, to target.consume() with the site's description. Before anything is
// delivered every sequence is checked: positions exactly 0..n-1, and the same tokens (positions,
// token ids) at every layer that received any; otherwise qkscope::Error naming the sequence and
// the layer, and the checked sequences are dropped (nothing of them reaches the target).
// Thread-safe: generations on several threads may share one assembler, each with its own
// indices, if they deliver with finish(their indices). flush() delivers everything buffered, so
// it must not overlap a forward that uses the assembler. The target must outlive the assembler.
class SequenceAssembler : public CaptureSink {
 public:
  explicit SequenceAssembler(CaptureSink& target);

  void prepare(const std::vector<SiteDescription>& sites) override;
  std::vector<int> wants_heads(const SiteDescription& site) override;
  // Buffers the batch. Throws qkscope::Error when a site's head count or head dimension changes
  // between forwards, or token ids are present in some batches and not in others.
  void consume(const SiteDescription& site, const QkBatch& batch) override;

  // Delivers every buffered sequence and clears the buffers. Throws qkscope::Error (see above);
  // errors of the target propagate.
  void flush();
  // Delivers the buffered tokens of `sequences` only (indices never seen are ignored) and drops
  // their buffers; the others stay.
  void finish(const std::vector<int64_t>& sequences);
  // Drops the buffered tokens of `sequences` (an abandoned generation) without delivering.
  void discard(const std::vector<int64_t>& sequences);

  // `n` fresh sequence indices from the target's numbering (target.take_sequences(n)), so that
  // generations through several assemblers over one target never share an index.
  std::vector<int64_t> new_sequences(int64_t n);

  int64_t buffered_tokens() const;     // tokens of the lowest buffered layer
  int64_t buffered_sequences() const;  // sequences with tokens buffered at some layer

  CaptureSink& target() const { return target_; }

 private:
  struct Tokens {
    std::vector<float> q, k;  // [n, H, D]
    std::vector<int64_t> position, token_id;
  };
  struct Layer {
    SiteDescription site;  // of the latest batch
    int n_heads = -1, head_dim = -1;
    std::map<int64_t, Tokens> sequences;
  };
  // Takes the buffers of `sequences` (all when null) out under the lock.
  std::map<int, Layer> take(const std::vector<int64_t>* sequences);
  void deliver(std::map<int, Layer> layers);

  CaptureSink& target_;
  mutable std::mutex mutex_;
  std::map<int, Layer> layers_;
  int ids_ = -1;  // -1: no batch yet; 1: batches carry token ids; 0: they do not
};

}  // namespace qkscope
