// Rules every attention form shares (internal): constant scalar factors, the walk from a score
// product's operand back to the per-head tensor, parameters, module paths, softmax reach.
#pragma once

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qkscope/site.h"

namespace qkscope::detail::graph {

using torch::jit::Node;
using torch::jit::Value;

// The module whose graph is being instrumented, for reading attributes (scales kept as module
// attributes, parameter ranks).
struct PassContext {
  torch::jit::Module module;
  const Value* self = nullptr;
};

// A scalar of the graph: a constant, a number the graph computes from tensor sizes only (known
// at run time, fixed for a given shape), or not a scalar we can vouch for.
struct Scalar {
  enum Kind { kConstant, kShapeDerived, kNone } kind = kNone;
  double value = 0;              // kConstant
  Value* runtime = nullptr;      // kShapeDerived: a number (or CPU 0-dim tensor) value holding it
  std::string why;               // kNone: what was found instead
};
Scalar evaluate_scalar(Value* v, const PassContext& ctx);

// A product of scalar factors: a constant part and graph values (shape-derived) with exponents
// +1 (multiplies) or -1 (divides).
struct Factor {
  double constant = 1.0;
  std::vector<std::pair<Value*, int>> runtime;
  bool is_one() const { return constant == 1.0 && runtime.empty(); }
  void multiply(const Scalar& s, int exponent);
  void multiply(const Factor& f);
};

// `v = x * s`, `s * x`, `x / s` (and the in-place forms) with s a scalar that evaluate_scalar
// vouches for: x, the factor (s or 1/s) and whether the op was in place. nullopt otherwise.
struct ScaleStep {
  Value* input;
  Scalar scale;
  int exponent;
  bool in_place;
};
std::optional<ScaleStep> as_scale(Node* node, const PassContext& ctx);

// Where a product's operand comes from: the deepest value reached through layout ops
// (transpose, permute, contiguous, clone) and constant scalings whose axes are still known, its
// layout, and the scalings on the way. Scalings beyond that point (before a view/reshape, as
// fairseq scales q right after its projection) or applied in place are still in the captured
// values: `carried`. Those between it and the product are not: `stepped`.
struct OperandTrace {
  Value* value = nullptr;
  OperandLayout layout;
  Factor stepped, carried;
  bool is_parameter = false;  // the operand is (a layout view of) a module attribute or constant
  std::string mutated;        // an in-place op other than a scaling changes it before the product
};
// `layout` describes `operand`'s axes ([B, H, T, D] roles). Rank 3 with heads folded, or 4.
// `product` is the node that reads the operand: in-place scalings of the values on the way that
// run before it (scripted `q.mul_(s)`, whose result the graph does not use) are counted.
OperandTrace trace_operand(Value* operand, const OperandLayout& layout, const PassContext& ctx,
                           Node* product);

// Scalings applied to the scores after the product (single-use chain of mul/div by a scalar):
// their product, and the last value of the chain.
std::pair<Factor, Value*> trace_score_scaling(Value* scores, const PassContext& ctx);

// Whether `scores` reaches a softmax through the ops attention puts between them (scaling,
// masks, biases, dtype casts, views), within a few nodes: what makes a product a score product.
bool reaches_softmax(Value* scores);

// "a.b.c" for a value produced by GetAttr chains rooted at `self`, else nullopt.
std::optional<std::string> attribute_path(Value* v, const Value* self);

// The projection (linear / addmm / mm / matmul with a module-attribute weight) that a captured
// operand is computed from, following data (tensor inputs), never shape computations.
struct Projection {
  Node* node = nullptr;
  Value* input = nullptr;       // the activation projected
  std::string weight_path;      // e.g. "encoder.layer.3.attention.self.query.weight"
};
std::optional<Projection> find_projection(Value* v, const Value* self);
// The module attribute a weight is, or is a slice of (nn.MultiheadAttention slices its packed
// in_proj_weight into w_q and w_kv when query and key differ).
std::optional<std::string> weight_path(Value* w, const Value* self);

// The attention module a site belongs to, from its q and k projections: the module owning the
// projection weights ("...self_attn.in_proj_weight" -> "...self_attn"), or the parent of the
// projection modules ("...attention.self.query.weight" -> "...attention.self").
std::string attention_module(const std::optional<Projection>& q, const std::optional<Projection>& k);

// The constant int list of a prim::ListConstruct / list constant, else nullopt.
std::optional<std::vector<int64_t>> constant_int_list(Value* v);
std::optional<int64_t> constant_int(const Value* v);
std::optional<std::string> constant_string(const Value* v);

}  // namespace qkscope::detail::graph
