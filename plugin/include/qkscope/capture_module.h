// CaptureModule: a TorchScript model instrumented to capture per-head q/k at every attention site.
//
// load() reads the model under torch::InferenceMode, finds the attention sites of the inlined
// forward graph of a private clone (module.clone(true): weights shared, types and methods new)
// and inserts qkscope::capture(q, k, site, ...) at each score product. The original module
// is kept uninstrumented for comparisons. forward() runs the clone under InferenceMode +
// NoGradGuard; when the calling thread has a CaptureSession, the session's sink receives the
// q/k of the valid tokens; otherwise the capture op returns at once (one thread_local check).
//
// Sites: the graph pass finds every attention score product of the inlined graph, in any of
// the forms README "Attention forms" lists (4-D matmul, bmm/baddbmm with heads folded into the
// batch, einsum, SDPA, torch.nn's fused ops), with q and k unscaled and `prescale` the product of
// the constant scales on q, k and the scores. Sites it cannot vouch for are listed with
// SiteDescription::skipped set and are not captured. Graphs loaded from files carry no shapes,
// so ranks are checked at run time: a matching node whose operands do not fit is not captured.
//
// Tokens: row b of a forward's batch is one sequence. The `attention_mask` input (any dtype,
// [B, L]) marks real tokens (non-zero); a token's position is its index among its row's real
// tokens. Token ids come from `input_ids` ([B, L], or [B, Tq] for a decoder step). A decoder step
// with a key/value cache (Tq queries, L = past + Tq mask columns) captures its Tq new tokens.
// Models without either input (ViT) take B and the length from q.
//
// Threading: a CaptureModule is a cheap shared handle; forward() may be called from many threads
// at once (as far as the model itself allows it), each with its own session or none.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/script.h>

#include "qkscope/site.h"

namespace qkscope {

struct LoadOptions {
  c10::Device device = c10::kCPU;              // where the model runs (inputs must be there too)
  std::string mask_argument = "attention_mask";  // forward argument holding the [B, S] mask
  std::string ids_argument = "input_ids";        // forward argument holding the [B, S] token ids
};

class CaptureModule {
 public:
  // Loads and instruments `path`. Throws qkscope::Error: file missing (names the path),
  // not TorchScript or corrupt ("failed to load model '<path>': <torch's first line>"),
  // no forward method, no attention site ("no attention site found in '<path>': looked for ...").
  static CaptureModule load(const std::string& path, const LoadOptions& options = {});

  // Instruments an already loaded module (it is left as is; a clone is instrumented). `name`
  // appears in messages. The module may have run already: the clone gets methods of its own.
  static CaptureModule instrument(const torch::jit::Module& module, const std::string& name,
                                  const LoadOptions& options = {});

  // Runs the model's own forward with its own arguments; returns its own outputs, bit-identical
  // to original() run the same way. With a session on this thread, row b of the batch gets
  // sequence index session.take_sequences(B) + b. Capture errors (a sink that throws, shapes
  // that do not fit the mask) are rethrown here after the forward completes; errors of the
  // model itself propagate as Torch threw them.
  c10::IValue forward(std::vector<c10::IValue> inputs) const;
  // The same with explicit sequence indices, one per batch row.
  c10::IValue forward(std::vector<c10::IValue> inputs, const std::vector<int64_t>& sequences) const;

  // Runs the uninstrumented model under the same guards (for comparisons and benchmarks).
  c10::IValue forward_original(std::vector<c10::IValue> inputs) const;

  // The sites, in layer order; n_heads/head_dim are -1 until a forward with a session reached them.
  std::vector<SiteDescription> sites() const;
  // forward's argument names, without self.
  const std::vector<std::string>& argument_names() const;
  // forward's schema, e.g. "forward(Tensor input_ids, Tensor attention_mask) -> Tensor".
  std::string forward_schema() const;

  const torch::jit::Module& original() const;
  const torch::jit::Module& instrumented() const;
  const std::string& name() const;
  c10::Device device() const;

  struct State;  // internal

 private:
  explicit CaptureModule(std::shared_ptr<State> state) : state_(std::move(state)) {}
  c10::IValue run(std::vector<c10::IValue> inputs, const std::vector<int64_t>* sequences) const;
  std::shared_ptr<State> state_;
};

}  // namespace qkscope
