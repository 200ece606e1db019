// What inference servers over a CaptureModule share (tools/server_example, tools/http_server):
// the sizes of a model's token and position tables, and greedy decoding with a key/value cache.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <torch/script.h>

#include "qkscope/capture_module.h"

namespace qkscope {

// Rows of the model's token embedding table (the vocabulary: the first 2-D parameter named
// *word_embeddings.weight, *wte.weight, *embed_tokens.weight or *shared.weight, HuggingFace's
// names), and of its position table (*position_embeddings.weight, *wpe.weight); nullopt when
// it has none.
std::optional<int64_t> vocabulary_size(const torch::jit::Module& module);
std::optional<int64_t> position_count(const torch::jit::Module& module);

// A cached decoder: forward(input_ids [1, T], attention_mask [1, P+T], past_k, past_v) ->
// (logits [1, T, V], present_k, present_v), past/present [layers, 1, heads, P, head_dim]
// (models/decoder_models.py's gpt2_cache). Its arguments may come in any order.
struct CachedDecoder {
  int ids = 0, mask = 1, past_k = 2, past_v = 3;  // positions of forward's arguments
  std::vector<int64_t> cache_shape;               // {layers, heads, head_dim}
};

// Which forward each step runs.
enum class DecodeForward {
  plain,     // the instrumented model, no sequence indices (nothing captured without a session)
  captured,  // the instrumented model under `sequence` (a session is open on this thread)
  original,  // the uninstrumented model
};

// `steps` greedy steps from `prompt` (one sequence, no padding): each step feeds the new
// tokens with the cache and appends the argmax of the last position's logits. Returns the ids
// [1, prompt + steps]; the last generated token is never fed, so a captured generation holds
// prompt + steps - 1 tokens, every one under `sequence`. Throws qkscope::Error when the model
// does not return (logits, present_k, present_v).
at::Tensor greedy_decode(const CaptureModule& module, const CachedDecoder& decoder,
                         const std::vector<int64_t>& prompt, int64_t steps, DecodeForward mode,
                         int64_t sequence = 0);

}  // namespace qkscope
