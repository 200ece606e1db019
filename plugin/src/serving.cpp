#include "qkscope/serving.h"

#include <initializer_list>
#include <string>

#include "qkscope/error.h"

namespace qkscope {
namespace {

// Rows of the first 2-D parameter whose name ends with one of `suffixes`.
std::optional<int64_t> embedding_rows(const torch::jit::Module& module,
                                      std::initializer_list<const char*> suffixes) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    for (const char* suffix : suffixes) {
      const std::string s(suffix);
      if (p.name.size() >= s.size() &&
          p.name.compare(p.name.size() - s.size(), s.size(), s) == 0 && p.value.dim() == 2)
        return p.value.size(0);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<int64_t> vocabulary_size(const torch::jit::Module& module) {
  return embedding_rows(module, {"word_embeddings.weight", "wte.weight", "embed_tokens.weight",
                                 "shared.weight"});
}

std::optional<int64_t> position_count(const torch::jit::Module& module) {
  return embedding_rows(module, {"position_embeddings.weight", "wpe.weight"});
}

at::Tensor greedy_decode(const CaptureModule& module, const CachedDecoder& decoder,
                         const std::vector<int64_t>& prompt, int64_t steps, DecodeForward mode,
                         int64_t sequence) {
  const std::vector<int64_t>& c = decoder.cache_shape;
  QKSCOPE_CHECK(c.size() == 3, "greedy_decode: expected the cache shape {{layers, heads, "
                "head_dim}}, got {} numbers", c.size());
  QKSCOPE_CHECK(!prompt.empty(), "greedy_decode: expected a prompt of at least one token");
  const auto opts = at::TensorOptions().dtype(at::kLong);
  at::Tensor ids = at::tensor(prompt, opts).view({1, static_cast<int64_t>(prompt.size())});
  at::Tensor mask = at::ones_like(ids);
  at::Tensor past_k = at::zeros({c[0], 1, c[1], 0, c[2]}), past_v = at::zeros_like(past_k);
  at::Tensor step = ids;
  for (int64_t n = 0; n < steps; ++n) {
    std::vector<c10::IValue> in(4);
    in[static_cast<size_t>(decoder.ids)] = step;
    in[static_cast<size_t>(decoder.mask)] = mask;
    in[static_cast<size_t>(decoder.past_k)] = past_k;
    in[static_cast<size_t>(decoder.past_v)] = past_v;
    const c10::IValue out = mode == DecodeForward::original ? module.forward_original(std::move(in))
                            : mode == DecodeForward::captured
                                ? module.forward(std::move(in), {sequence})
                                : module.forward(std::move(in));
    QKSCOPE_CHECK(out.isTuple() && out.toTupleRef().elements().size() == 3,
                  "model '{}': expected forward to return (logits, present_k, present_v)",
                  module.name());
    const auto& e = out.toTupleRef().elements();
    const at::Tensor logits = e[0].toTensor();
    past_k = e[1].toTensor();
    past_v = e[2].toTensor();
    step = logits.select(1, logits.size(1) - 1).argmax(-1, /*keepdim=*/true);
    ids = at::cat({ids, step}, 1);
    mask = at::cat({mask, at::ones_like(step)}, 1);
  }
  return ids;
}

}  // namespace qkscope
