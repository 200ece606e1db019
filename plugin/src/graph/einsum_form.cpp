// aten::einsum score products: any two-operand equation that contracts exactly one label (the
// head dimension) and keeps one token label per operand, with batch and heads as labels both
// operands and the output share ("bqhd,bkhd->bhqk", "bhid,bhjd->bhij", "bid,bjd->bij" with
// heads folded into the batch). Of two shared labels, the one the output lists first is the
// batch, as every common spelling has it.
#include <algorithm>

#include "attention_forms.h"
#include "symbols.h"

namespace qkscope::detail::graph {
namespace {

std::string strip_spaces(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != ' ') out += c;
  return out;
}

// Assigns [B, H, T, D] roles to one operand's labels; nullopt when a label has no role.
std::optional<OperandLayout> layout_of(const std::string& labels, char batch, char head,
                                       char token, char dim, bool folded) {
  OperandLayout l;
  l.rank = static_cast<int>(labels.size());
  l.heads_folded = folded;
  l.batch = l.head = l.token = l.dim = -1;
  for (int i = 0; i < l.rank; ++i) {
    const char c = labels[i];
    if (c == batch) l.batch = i;
    else if (!folded && c == head) l.head = i;
    else if (c == token) l.token = i;
    else if (c == dim) l.dim = i;
    else return std::nullopt;
  }
  if (folded) l.head = l.batch;
  if (l.batch < 0 || l.head < 0 || l.token < 0 || l.dim < 0) return std::nullopt;
  return l;
}

class EinsumForm : public AttentionForm {
 public:
  std::optional<FormMatch> match(Node* node, const PassContext&) const override {
    if (node->kind() != sym::kEinsum || node->inputs().size() < 2) return std::nullopt;
    Node* list = node->input(1)->node();
    if (list->kind() != sym::kListConstruct || list->inputs().size() != 2) return std::nullopt;
    FormMatch m;
    m.kind = "einsum";
    m.q = list->input(0);
    m.k = list->input(1);
    m.scores = node->output();
    auto equation = constant_string(node->input(0));
    if (!equation) {
      m.refusal = "einsum equation is not a constant";
      return m;
    }
    const std::string eq = strip_spaces(*equation);
    const auto arrow = eq.find("->"), comma = eq.find(',');
    if (eq.find("...") != std::string::npos || arrow == std::string::npos ||
        comma == std::string::npos || comma > arrow) {
      m.refusal = "einsum equation '" + *equation + "' needs explicit labels for both operands "
                  "and the output (no '...')";
      return m;
    }
    const std::string a = eq.substr(0, comma), b = eq.substr(comma + 1, arrow - comma - 1),
                      out = eq.substr(arrow + 2);
    auto in = [](const std::string& s, char c) { return s.find(c) != std::string::npos; };
    std::string contracted, shared_kept, only_a, only_b;
    for (char c : a) {
      if (in(b, c) && !in(out, c)) contracted += c;
      else if (in(b, c) && in(out, c)) shared_kept += c;
      else if (in(out, c)) only_a += c;
      else return std::nullopt;  // summed over one operand only: not a score product
    }
    for (char c : b) {
      if (!in(a, c)) {
        if (in(out, c)) only_b += c;
        else return std::nullopt;
      }
    }
    if (contracted.size() != 1 || only_a.size() != 1 || only_b.size() != 1 ||
        shared_kept.empty() || shared_kept.size() > 2 || out.size() != shared_kept.size() + 2)
      return std::nullopt;  // not one per-head dot product per (query, key) pair
    const bool folded = shared_kept.size() == 1;
    char batch = shared_kept[0], head = folded ? shared_kept[0] : shared_kept[1];
    if (!folded && out.find(head) < out.find(batch)) std::swap(batch, head);
    auto qa = layout_of(a, batch, head, only_a[0], contracted[0], folded);
    auto kb = layout_of(b, batch, head, only_b[0], contracted[0], folded);
    if (!qa || !kb) return std::nullopt;
    m.q_layout = *qa;
    m.k_layout = *kb;
    return m;
  }
};

}  // namespace

std::unique_ptr<AttentionForm> make_einsum_form() { return std::make_unique<EinsumForm>(); }

}  // namespace qkscope::detail::graph
