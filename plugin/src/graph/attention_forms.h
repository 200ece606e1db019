// The attention forms the graph pass recognises (internal). Each form matches one kind of score
// product node and says which operands are q and k and how their axes map to
// [batch, heads, tokens, head_dim]; the driver (graph_pass.cpp) applies the rules every form
// shares (operand_rules.h). Adding a form: one file with a class below, and a line in
// attention_forms().
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "operand_rules.h"

namespace qkscope::detail::graph {

struct FormMatch {
  std::string kind;                   // SiteDescription::kind
  Value* q = nullptr;                 // the product's operands as they enter it
  Value* k = nullptr;
  OperandLayout q_layout, k_layout;   // their axes' roles
  // The product's output; the driver follows constant scalings from it and requires it to reach
  // a softmax. nullptr for ops that are the whole attention (SDPA).
  Value* scores = nullptr;
  Factor scale;                       // a scale the op itself applies (baddbmm's alpha, SDPA's scale)
  bool sdpa_default_scale = false;    // SDPA without scale=, fused ops: 1/sqrt(head_dim)
  std::string refusal;                // non-empty: attention of this form that cannot be captured
  // Fused ops (kind "fused"): the arguments of qkscope::capture_fused (src, num_heads,
  // qkv_weight, qkv_bias, norm_first, eps, norm_weight, norm_bias); q and k are the op's inputs.
  std::vector<Value*> fused_inputs;
};

class AttentionForm {
 public:
  virtual ~AttentionForm() = default;
  virtual std::optional<FormMatch> match(Node* node, const PassContext& ctx) const = 0;
};

// Per-head 4-D products: aten::matmul(q [B, H, T, D], k' [B, H, D, T]) (HuggingFace eager).
std::unique_ptr<AttentionForm> make_matmul_form();
// Heads folded into the batch: aten::bmm(q [B*H, T, D], k' [B*H, D, T]) and aten::baddbmm
// (torch.nn's slow path, fairseq, Marian).
std::unique_ptr<AttentionForm> make_bmm_form();
// aten::einsum with an equation contracting the head dimension into per-head scores.
std::unique_ptr<AttentionForm> make_einsum_form();
// aten::scaled_dot_product_attention (LibTorch 2.x).
std::unique_ptr<AttentionForm> make_sdpa_form();
// torch.nn's fused encoder layer and multi-head attention ops (q, k computed on the side).
std::unique_ptr<AttentionForm> make_fused_form();

const std::vector<std::unique_ptr<AttentionForm>>& attention_forms();

}  // namespace qkscope::detail::graph
