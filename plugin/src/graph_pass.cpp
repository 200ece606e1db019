// The graph pass: finds the attention score products of an inlined forward graph, form by form
// (graph/attention_forms.h), applies the rules all forms share (graph/operand_rules.h) and
// inserts qkscope::capture(q, k, site, prescale, q_unscale, k_unscale) before each product it
// can vouch for. What it cannot vouch for is listed as a skipped site with the reason.
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <cmath>

#include "capture_context.h"
#include "graph/attention_forms.h"
#include "graph/symbols.h"
#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

using graph::Factor;
using graph::FormMatch;
using graph::PassContext;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

struct Found {
  Node* anchor;
  FormMatch match;
  graph::OperandTrace q, k;
  Factor prescale;
  bool in_branch = false;
  SiteDescription description;
};

std::string scale_places(const graph::OperandTrace& q, const graph::OperandTrace& k,
                         const Factor& op_scale, const Factor& scores, bool sdpa_default) {
  std::string out;
  auto add = [&](bool present, const char* name) {
    if (present) out += (out.empty() ? "" : "+") + std::string(name);
  };
  add(!q.stepped.is_one() || !q.carried.is_one(), "q");
  add(!k.stepped.is_one() || !k.carried.is_one(), "k");
  add(!op_scale.is_one() || !scores.is_one(), "scores");
  add(sdpa_default, "sdpa-default");
  return out;
}

// A fused op: q and k are computed by capture_fused from the op's inputs, at the scale the
// op applies (1/sqrt(head_dim)); the module is the owner of the packed in-projection.
bool describe_fused(Found& f, const PassContext& ctx, bool in_loop) {
  FormMatch& m = f.match;
  SiteDescription& d = f.description;
  if (auto path = graph::weight_path(m.fused_inputs[2], ctx.self))
    d.module = graph::attention_module(graph::Projection{f.anchor, m.q, *path}, std::nullopt);
  d.scale_at = "fused-default";
  d.prescale_known = false;
  d.q_layout = d.k_layout = OperandLayout{4, false, 0, 2, 1, 3};  // [B, T, H, D]
  if (!m.refusal.empty()) d.skipped = m.refusal;
  else if (in_loop) d.skipped = "inside a prim::Loop: the op runs once per iteration";
  return true;
}

// Fills `f.description` (and decides whether the site is skipped) from the form's match.
// Returns false when the node is not a score product after all (no site at all).
bool describe(Found& f, const PassContext& ctx, bool in_loop) {
  FormMatch& m = f.match;
  SiteDescription& d = f.description;
  d.kind = m.kind;
  if (!m.fused_inputs.empty()) return describe_fused(f, ctx, in_loop);
  Factor score_scale;
  if (m.scores != nullptr) {
    auto [factor, last] = graph::trace_score_scaling(m.scores, ctx);
    // A product whose result never reaches a softmax is not attention (an MLP, p @ v, a
    // projection): no site, not even a skipped one.
    if (!graph::reaches_softmax(last)) return false;
    score_scale = factor;
  }
  f.q = graph::trace_operand(m.q, m.q_layout, ctx, f.anchor);
  f.k = graph::trace_operand(m.k, m.k_layout, ctx, f.anchor);
  // Tied output embeddings (h @ W.T) and other products with a module attribute.
  if (f.q.is_parameter || f.k.is_parameter) return false;

  auto q_projection = graph::find_projection(f.q.value, ctx.self);
  auto k_projection = graph::find_projection(f.k.value, ctx.self);
  d.module = graph::attention_module(q_projection, k_projection);

  f.prescale = f.q.stepped;
  f.prescale.multiply(f.q.carried);
  f.prescale.multiply(f.k.stepped);
  f.prescale.multiply(f.k.carried);
  f.prescale.multiply(m.scale);
  f.prescale.multiply(score_scale);
  d.scale_at = scale_places(f.q, f.k, m.scale, score_scale, m.sdpa_default_scale);
  d.prescale = f.prescale.constant;
  d.prescale_known = f.prescale.runtime.empty() && !m.sdpa_default_scale;
  d.q_layout = f.q.layout;
  d.k_layout = f.k.layout;
  d.q_unscale = f.q.carried.constant;
  d.k_unscale = f.k.carried.constant;

  if (!m.refusal.empty()) {
    d.skipped = m.refusal;
  } else if (!f.q.mutated.empty() || !f.k.mutated.empty()) {
    d.skipped = fmt::format("{} is changed in place by {} before the product",
                            f.q.mutated.empty() ? "k" : "q",
                            f.q.mutated.empty() ? f.k.mutated : f.q.mutated);
  } else if (in_loop) {
    d.skipped = "inside a prim::Loop: the product runs once per iteration, which is not one "
                "layer";
  } else if (!std::isfinite(f.prescale.constant) || f.prescale.constant <= 0) {
    d.skipped = fmt::format("the constant score scale is {}: expected a positive finite factor",
                            f.prescale.constant);
  } else if (!f.q.carried.runtime.empty() || !f.k.carried.runtime.empty()) {
    d.skipped = "a shape-derived scale applied before a reshape or in place";
  } else if (q_projection && k_projection && q_projection->input != k_projection->input) {
    d.skipped = fmt::format("cross-attention: q is projected from '%{}', k from '%{}'",
                            q_projection->input->debugName(), k_projection->input->debugName());
  }
  return true;
}

void collect(torch::jit::Block* block, const PassContext& ctx, bool in_branch, bool in_loop,
             std::vector<Found>& found) {
  for (Node* node : block->nodes()) {
    for (torch::jit::Block* sub : node->blocks())
      collect(sub, ctx, in_branch || node->kind() == sym::kIf, in_loop || node->kind() == sym::kLoop,
              found);
    for (const auto& form : graph::attention_forms()) {
      auto match = form->match(node, ctx);
      if (!match) continue;
      Found f{node, std::move(*match), {}, {}, {}, in_branch, {}};
      if (describe(f, ctx, in_loop)) found.push_back(std::move(f));
      break;
    }
  }
}

// A float value holding `factor`, computed in the graph from its shape-derived parts.
Value* factor_value(Graph& g, const Factor& factor) {
  Value* acc = g.insertConstant(factor.constant);
  for (const auto& [v, exponent] : factor.runtime) {
    Value* f = v->type()->kind() == c10::TypeKind::FloatType ? v : g.insert(sym::kFloat, {v});
    acc = g.insert(exponent > 0 ? sym::kMul : sym::kDiv, {acc, f});
  }
  return acc;
}

// Where the capture op goes: right before the product, or after the last of the shape-derived
// scale values it reads when the model computes them after the product (GPT-2 computes its
// divisor from the value tensor's size after q @ k').
Node* insertion_point(Node* anchor, const Factor& factor) {
  Node* after = nullptr;
  for (const auto& [v, exponent] : factor.runtime) {
    (void)exponent;
    Node* def = v->node();
    if (def->owningBlock() == anchor->owningBlock() && anchor->isBefore(def) &&
        (after == nullptr || after->isBefore(def)))
      after = def;
  }
  return after == nullptr ? anchor : after->next();
}

}  // namespace

std::vector<SiteDescription> instrument_attention_sites(torch::jit::Module& module,
                                                        const std::string& name) {
  auto graph = module.get_method("forward").graph();
  torch::jit::Inline(*graph);
  PassContext ctx{module, graph->inputs().at(0)};
  std::vector<Found> found;
  collect(graph->block(), ctx, /*in_branch=*/false, /*in_loop=*/false, found);
  QKSCOPE_CHECK(!found.empty(),
                "no attention site found in '{}': looked for score products (aten::matmul, "
                "aten::bmm, aten::baddbmm, aten::einsum of per-head q and k whose result reaches "
                "a softmax) and aten::scaled_dot_product_attention",
                name);
  // Layers are numbered in execution order. Without control flow that is graph order; with
  // sites inside prim::If branches it is known only when they run (CaptureModule assigns it).
  bool dynamic = false;
  for (const Found& f : found) dynamic = dynamic || (f.in_branch && f.description.skipped.empty());
  std::vector<SiteDescription> sites;
  int next_layer = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    Found& f = found[i];
    SiteDescription& d = f.description;
    d.site = static_cast<int>(i);
    if (d.skipped.empty()) {
      if (!dynamic) d.layer = next_layer++;
      // SDPA's default 1/sqrt(D) is applied by the capture op, which knows D.
      torch::jit::WithInsertPoint guard(insertion_point(f.anchor, f.prescale));
      Value* site = graph->insertConstant(static_cast<int64_t>(i));
      if (!f.match.fused_inputs.empty()) {
        std::vector<Value*> args = f.match.fused_inputs;
        if (args[4] == nullptr) args[4] = graph->insertConstant(false);
        if (args[5] == nullptr) args[5] = graph->insertConstant(0.0);
        for (int a : {6, 7})
          if (args[a] == nullptr) args[a] = graph->insertNode(graph->createNone())->output();
        args.push_back(site);
        graph->insertNode(graph->create(sym::kCaptureFused, args, 0));
        sites.push_back(d);
        continue;
      }
      Value* prescale = factor_value(*graph, f.prescale);
      Value* q_unscale = graph->insertConstant(d.q_unscale);
      Value* k_unscale = graph->insertConstant(d.k_unscale);
      Node* capture = graph->create(sym::kCapture,
                                    {f.q.value, f.k.value, site, prescale, q_unscale, k_unscale}, 0);
      graph->insertNode(capture);
    }
    sites.push_back(d);
  }
  graph->lint();
  return sites;
}

}  // namespace qkscope::detail
