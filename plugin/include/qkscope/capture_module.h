// CaptureModule: a TorchScript model instrumented to capture per-head q/k at every attention site.
//
// load() reads the model under torch::InferenceMode, finds the attention sites of the inlined
// forward graph of a private clone (module.clone(true): weights shared, types and methods new)
// and inserts qkscope::capture(q, k, site) right before each score product. The original module
// is kept uninstrumented for comparisons. forward() runs the clone under InferenceMode +
// NoGradGuard; when the calling thread has a CaptureSession, the session's sink receives the
// q/k of the valid tokens; otherwise the capture op returns at once (one thread_local check).
//
// Sites matched on the inlined graph (numbered in graph order):
//   - aten::matmul(A, transpose(K, -1, -2)) (also (-2, -1), (2, 3), (3, 2)) with A, K 4-D
//     [batch, heads, seq, head_dim]: k = K; q = A, or X when A = X / c, X * c or c * X with c a
//     constant (prescale 1/c or c). Graphs loaded from files carry no shapes, so rank 4 is
//     checked at run time: a matching node whose operands are not 4-D is not captured.
//   - aten::scaled_dot_product_attention(q, k, v, ...) (LibTorch 2.x): q = input 0, k = input 1;
//     keys with fewer heads (enable_gqa) are expanded to the query heads.
// The module path is taken from the weight of the nearest projection (linear/addmm/matmul of a
// module attribute) q is computed from: "encoder.layer.3.attention.self.query.weight" gives
// "encoder.layer.3.attention.self"; empty when there is none.
//
// Tokens: row b of a forward's batch is one sequence; a token is (b, s) for s in 0..S-1, its
// position is s (the index in the padded row) and it is captured unless the `attention_mask`
// input (any dtype, [B, S]) is 0 there. Token ids come from `input_ids` ([B, S]) when the
// model has that argument. Models without either (ViT) take B and S from q.
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
