// torch.nn's fused fast paths, which eval + no-grad (and so inference mode) select:
// aten::_transformer_encoder_layer_fwd (nn.TransformerEncoderLayer) and
// aten::_native_multi_head_attention (nn.MultiheadAttention). q and k never exist as graph
// values there, so the site is captured by qkscope::capture_fused, which computes them on the
// side from the op's own inputs (input, packed in-projection, layer norm when norm_first) only
// when a session wants the site; the fused op itself is left as it is.
#include "attention_forms.h"
#include "symbols.h"

namespace qkscope::detail::graph {
namespace {

class FusedForm : public AttentionForm {
 public:
  std::optional<FormMatch> match(Node* node, const PassContext& ctx) const override {
    FormMatch m;
    m.kind = "fused";
    m.sdpa_default_scale = true;  // both ops scale q by 1/sqrt(head_dim) internally
    if (node->kind() == sym::kEncoderLayerFwd && node->inputs().size() >= 12) {
      // (src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu,
      //  norm_first, eps, norm_weight_1, norm_bias_1, ...)
      m.q = m.k = node->input(0);
      m.fused_inputs = {node->input(0), node->input(2),  node->input(3),  node->input(4),
                        node->input(8), node->input(9),  node->input(10), node->input(11)};
    } else if (node->kind() == sym::kNativeMha && node->inputs().size() >= 9) {
      // (query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, ...)
      m.q = node->input(0);
      m.k = node->input(1);
      if (m.q != m.k) m.refusal = "cross-attention: the fused attention's query and key differ";
      // No layer norm: the driver fills the missing arguments (nullptr) with false, 0, None.
      m.fused_inputs = {node->input(0), node->input(4), node->input(5), node->input(6),
                        nullptr,        nullptr,        nullptr,        nullptr};
    } else {
      return std::nullopt;
    }
    (void)ctx;
    return m;
  }
};

}  // namespace

std::unique_ptr<AttentionForm> make_fused_form() { return std::make_unique<FusedForm>(); }

}  // namespace qkscope::detail::graph
