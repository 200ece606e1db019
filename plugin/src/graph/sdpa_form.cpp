// aten::scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, *, scale,
// enable_gqa): q and k are inputs 0 and 1, [B, H, T, D]; keys with fewer heads (enable_gqa) are
// expanded by the capture op. The op scales by `scale`, or by 1/sqrt(D) when it is None.
#include "attention_forms.h"
#include "symbols.h"

namespace qkscope::detail::graph {
namespace {

class SdpaForm : public AttentionForm {
 public:
  std::optional<FormMatch> match(Node* node, const PassContext& ctx) const override {
    if (node->kind() != sym::kSdpa || node->inputs().size() < 3) return std::nullopt;
    FormMatch m;
    m.kind = "sdpa";
    m.q = node->input(0);
    m.k = node->input(1);
    m.q_layout = m.k_layout = OperandLayout{4, false, 0, 1, 2, 3};
    if (node->inputs().size() > 6 && node->input(6)->type()->kind() != c10::TypeKind::NoneType) {
      Scalar scale = evaluate_scalar(node->input(6), ctx);
      if (scale.kind == Scalar::kNone) m.refusal = "SDPA's scale= is not a constant: " + scale.why;
      else m.scale.multiply(scale, 1);
    } else {
      m.sdpa_default_scale = true;
    }
    return m;
  }
};

}  // namespace

std::unique_ptr<AttentionForm> make_sdpa_form() { return std::make_unique<SdpaForm>(); }

}  // namespace qkscope::detail::graph
