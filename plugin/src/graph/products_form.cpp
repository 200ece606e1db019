// Score products written as matrix products: 4-D aten::matmul, and aten::bmm / aten::baddbmm on
// heads folded into the batch.
#include "attention_forms.h"
#include "symbols.h"

namespace qkscope::detail::graph {
namespace {

// [B, H, T, D] for the left operand, [B, H, D, T] for the right one (the keys transposed).
constexpr OperandLayout kQuery4{4, false, 0, 1, 2, 3};
constexpr OperandLayout kKeyT4{4, false, 0, 1, 3, 2};
// [B*H, T, D] and [B*H, D, T].
constexpr OperandLayout kQueryFolded{3, true, 0, 0, 1, 2};
constexpr OperandLayout kKeyTFolded{3, true, 0, 0, 2, 1};

class MatmulForm : public AttentionForm {
 public:
  std::optional<FormMatch> match(Node* node, const PassContext&) const override {
    if (node->kind() != sym::kMatmul || node->inputs().size() != 2) return std::nullopt;
    FormMatch m;
    m.kind = "matmul";
    m.q = node->input(0);
    m.k = node->input(1);
    m.q_layout = kQuery4;
    m.k_layout = kKeyT4;
    m.scores = node->output();
    return m;
  }
};

class BmmForm : public AttentionForm {
 public:
  std::optional<FormMatch> match(Node* node, const PassContext& ctx) const override {
    FormMatch m;
    if (node->kind() == sym::kBmm && node->inputs().size() == 2) {
      m.kind = "bmm";
      m.q = node->input(0);
      m.k = node->input(1);
    } else if (node->kind() == sym::kBaddbmm && node->inputs().size() == 5) {
      // baddbmm(bias, q, k', beta, alpha) = beta * bias + alpha * q @ k'.
      m.kind = "baddbmm";
      m.q = node->input(1);
      m.k = node->input(2);
      Scalar alpha = evaluate_scalar(node->input(4), ctx);
      if (alpha.kind == Scalar::kNone) m.refusal = "baddbmm's alpha is not a constant: " + alpha.why;
      else m.scale.multiply(alpha, 1);
    } else {
      return std::nullopt;
    }
    m.q_layout = kQueryFolded;
    m.k_layout = kKeyTFolded;
    m.scores = node->output();
    return m;
  }
};

}  // namespace

std::unique_ptr<AttentionForm> make_matmul_form() { return std::make_unique<MatmulForm>(); }
std::unique_ptr<AttentionForm> make_bmm_form() { return std::make_unique<BmmForm>(); }

const std::vector<std::unique_ptr<AttentionForm>>& attention_forms() {
  static const std::vector<std::unique_ptr<AttentionForm>> forms = [] {
    std::vector<std::unique_ptr<AttentionForm>> f;
    f.push_back(make_matmul_form());
    f.push_back(make_bmm_form());
    f.push_back(make_einsum_form());
    f.push_back(make_sdpa_form());
    f.push_back(make_fused_form());
    return f;
  }();
  return forms;
}

}  // namespace qkscope::detail::graph
