// Shared operand rules of the graph pass (see operand_rules.h).
#include "operand_rules.h"

#include <fmt/format.h>
#include <torch/csrc/jit/ir/constants.h>

#include <cmath>
#include <deque>
#include <unordered_set>

#include "symbols.h"

namespace qkscope::detail::graph {
namespace {

bool is_number_type(const Value* v) {
  const auto kind = v->type()->kind();
  return kind == c10::TypeKind::IntType || kind == c10::TypeKind::FloatType ||
         kind == c10::TypeKind::NumberType;
}

bool is_tensor_type(const Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

std::optional<double> scalar_of(const c10::IValue& iv) {
  if (iv.isDouble()) return iv.toDouble();
  if (iv.isInt()) return static_cast<double>(iv.toInt());
  if (iv.isBool()) return iv.toBool() ? 1.0 : 0.0;
  if (iv.isTensor() && iv.toTensor().defined() && iv.toTensor().numel() == 1)
    return iv.toTensor().to(at::kCPU).item<double>();
  return std::nullopt;
}

// The value of a GetAttr chain rooted at self, read from the module (attributes are fixed at
// inference: scales kept as ints, floats or one-element buffers).
std::optional<c10::IValue> attribute_value(Value* v, const PassContext& ctx) {
  auto path = attribute_path(v, ctx.self);
  if (!path) return std::nullopt;
  c10::IValue current(ctx.module._ivalue());
  size_t begin = 0;
  while (begin <= path->size()) {
    size_t end = path->find('.', begin);
    if (end == std::string::npos) end = path->size();
    const std::string name = path->substr(begin, end - begin);
    if (!current.isObject()) return std::nullopt;
    auto object = current.toObject();
    if (!object->type()->hasAttribute(name)) return std::nullopt;
    current = object->getAttr(name);
    begin = end + 1;
  }
  return current;
}

Scalar none(std::string why) {
  Scalar s;
  s.why = std::move(why);
  return s;
}

Scalar constant(double value) {
  Scalar s;
  s.kind = Scalar::kConstant;
  s.value = value;
  return s;
}

Scalar evaluate(Value* v, const PassContext& ctx, int depth);

// Ops that pass a scalar through unchanged (number <-> 0-dim tensor conversions, casts).
bool is_scalar_passthrough(Node* n) {
  const c10::Symbol k = n->kind();
  if (k == sym::kNumToTensor || k == sym::kScalarImplicit || k == sym::kFloat ||
      k == sym::kScalarTensor || k == sym::kTensor || k == sym::kDetach || k == sym::kTo ||
      k == sym::kTypeAs || k == sym::kClone || k == sym::kContiguous)
    return true;
  // torch.full([], x): a 0-dim tensor holding x.
  if (k == sym::kFull && n->inputs().size() >= 2) {
    auto sizes = constant_int_list(n->input(0));
    return sizes && sizes->empty();
  }
  return false;
}

Scalar evaluate(Value* v, const PassContext& ctx, int depth) {
  if (depth > 24) return none("a scalar expression too deep to follow");
  Node* n = v->node();
  const c10::Symbol k = n->kind();
  if (k == sym::kConstant) {
    auto iv = torch::jit::toIValue(v);
    if (iv) {
      if (auto s = scalar_of(*iv)) return constant(*s);
    }
    return none("a constant that is not a scalar");
  }
  if (k == sym::kGetAttr) {
    auto iv = attribute_value(v, ctx);
    if (iv) {
      if (auto s = scalar_of(*iv)) return constant(*s);
    }
    return none("a module attribute that is not a scalar");
  }
  // An element of a size list: `B, T, E = q.shape` unpacks aten::size(q).
  if ((k == sym::kListUnpack || k == sym::kGetItem) && n->input(0)->node()->kind() == sym::kSize) {
    Scalar s;
    s.kind = Scalar::kShapeDerived;
    s.runtime = v;
    return s;
  }
  if (k == sym::kSize || k == sym::kDim || k == sym::kNumel || k == sym::kLen) {
    Scalar s;
    s.kind = Scalar::kShapeDerived;
    s.runtime = v;
    return s;
  }
  if (is_scalar_passthrough(n)) {
    Scalar inner = evaluate(n->input(k == sym::kFull ? 1 : 0), ctx, depth + 1);
    if (inner.kind == Scalar::kShapeDerived && is_number_type(v)) inner.runtime = v;
    if (k == sym::kFloat || k == sym::kScalarImplicit) {
      if (inner.kind == Scalar::kShapeDerived) inner.runtime = v;
    }
    return inner;
  }
  using Fn = double (*)(double, double);
  struct Arith {
    c10::Symbol kind;
    int arity;
    Fn fn;
  };
  static const Arith kArith[] = {
      {sym::kSqrt, 1, [](double a, double) { return std::sqrt(a); }},
      {sym::kRsqrt, 1, [](double a, double) { return 1 / std::sqrt(a); }},
      {sym::kReciprocal, 1, [](double a, double) { return 1 / a; }},
      {sym::kNeg, 1, [](double a, double) { return -a; }},
      {sym::kExp, 1, [](double a, double) { return std::exp(a); }},
      {sym::kPow, 2, [](double a, double b) { return std::pow(a, b); }},
      {sym::kMul, 2, [](double a, double b) { return a * b; }},
      {sym::kDiv, 2, [](double a, double b) { return a / b; }},
      {sym::kAdd, 2, [](double a, double b) { return a + b; }},
      {sym::kSub, 2, [](double a, double b) { return a - b; }},
  };
  for (const Arith& op : kArith) {
    if (k != op.kind) continue;
    // add/sub carry an alpha; div a rounding mode: only their plain forms are folded.
    if (static_cast<int>(n->inputs().size()) < op.arity) break;
    if ((k == sym::kAdd || k == sym::kSub) && n->inputs().size() == 3) {
      auto alpha = torch::jit::toIValue(n->input(2));
      if (!alpha || scalar_of(*alpha) != 1.0) return none("an add/sub with alpha");
    } else if (static_cast<int>(n->inputs().size()) != op.arity) {
      return none(fmt::format("{} with {} arguments", k.toQualString(), n->inputs().size()));
    }
    Scalar a = evaluate(n->input(0), ctx, depth + 1);
    if (a.kind == Scalar::kNone) return a;
    Scalar b = op.arity == 2 ? evaluate(n->input(1), ctx, depth + 1) : constant(0);
    if (b.kind == Scalar::kNone) return b;
    if (a.kind == Scalar::kConstant && b.kind == Scalar::kConstant)
      return constant(op.fn(a.value, b.value));
    // Computed from sizes (and constants): the graph's own value holds it at run time.
    Scalar s;
    s.kind = Scalar::kShapeDerived;
    s.runtime = v;
    return s;
  }
  return none(fmt::format("the result of {}", k.toQualString()));
}

bool is_layout_passthrough(Node* n) {
  const c10::Symbol k = n->kind();
  return k == sym::kContiguous || k == sym::kClone || k == sym::kDetach;
}

bool is_reshape(Node* n) {
  const c10::Symbol k = n->kind();
  return k == sym::kView || k == sym::kReshape || k == sym::kFlatten || k == sym::kUnflatten ||
         k == sym::kUnsqueeze || k == sym::kSqueeze;
}

// Remaps layout roles through transpose(x, a, b) / permute(x, dims): `layout` describes the
// op's output; returns the layout of its input, or nullopt when the dims are not constants.
std::optional<OperandLayout> through_transpose(Node* n, const OperandLayout& layout) {
  const int rank = layout.rank;
  std::vector<int64_t> perm(rank);  // output axis i = input axis perm[i]
  for (int i = 0; i < rank; ++i) perm[i] = i;
  if (n->kind() == sym::kTranspose) {
    if (n->inputs().size() != 3) return std::nullopt;
    auto a = constant_int(n->input(1)), b = constant_int(n->input(2));
    if (!a || !b) return std::nullopt;
    int64_t x = *a < 0 ? *a + rank : *a, y = *b < 0 ? *b + rank : *b;
    if (x < 0 || y < 0 || x >= rank || y >= rank) return std::nullopt;
    std::swap(perm[x], perm[y]);
  } else if (n->kind() == sym::kPermute) {
    auto dims = constant_int_list(n->input(1));
    if (!dims || static_cast<int>(dims->size()) != rank) return std::nullopt;
    for (int i = 0; i < rank; ++i) {
      int64_t d = (*dims)[i] < 0 ? (*dims)[i] + rank : (*dims)[i];
      if (d < 0 || d >= rank) return std::nullopt;
      perm[i] = d;
    }
  } else {
    return std::nullopt;
  }
  OperandLayout in = layout;
  in.batch = static_cast<int>(perm[layout.batch]);
  in.head = layout.heads_folded ? in.batch : static_cast<int>(perm[layout.head]);
  in.token = static_cast<int>(perm[layout.token]);
  in.dim = static_cast<int>(perm[layout.dim]);
  return in;
}

}  // namespace

std::optional<int64_t> constant_int(const Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isInt()) return std::nullopt;
  return iv->toInt();
}

std::optional<std::string> constant_string(const Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isString()) return std::nullopt;
  return iv->toStringRef();
}

std::optional<std::vector<int64_t>> constant_int_list(Value* v) {
  Node* n = v->node();
  if (n->kind() == sym::kListConstruct) {
    std::vector<int64_t> out;
    for (Value* item : n->inputs()) {
      auto i = constant_int(item);
      if (!i) return std::nullopt;
      out.push_back(*i);
    }
    return out;
  }
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isIntList()) return std::nullopt;
  return iv->toIntVector();
}

Scalar evaluate_scalar(Value* v, const PassContext& ctx) { return evaluate(v, ctx, 0); }

void Factor::multiply(const Scalar& s, int exponent) {
  if (s.kind == Scalar::kConstant) {
    constant = exponent > 0 ? constant * s.value : constant / s.value;
  } else if (s.kind == Scalar::kShapeDerived) {
    runtime.emplace_back(s.runtime, exponent);
  }
}

void Factor::multiply(const Factor& f) {
  constant *= f.constant;
  runtime.insert(runtime.end(), f.runtime.begin(), f.runtime.end());
}

std::optional<ScaleStep> as_scale(Node* n, const PassContext& ctx) {
  const c10::Symbol k = n->kind();
  const bool mul = k == sym::kMul || k == sym::kMulInPlace;
  const bool div = k == sym::kDiv || k == sym::kDivInPlace;
  if ((!mul && !div) || n->inputs().size() != 2) return std::nullopt;
  const bool in_place = k == sym::kMulInPlace || k == sym::kDivInPlace;
  Scalar right = evaluate_scalar(n->input(1), ctx);
  if (right.kind != Scalar::kNone) return ScaleStep{n->input(0), right, mul ? 1 : -1, in_place};
  if (mul && !in_place) {
    Scalar left = evaluate_scalar(n->input(0), ctx);
    if (left.kind != Scalar::kNone) return ScaleStep{n->input(1), left, 1, false};
  }
  return std::nullopt;
}

OperandTrace trace_operand(Value* operand, const OperandLayout& layout, const PassContext& ctx,
                           Node* product) {
  OperandTrace t;
  t.value = operand;
  t.layout = layout;
  Value* v = operand;
  OperandLayout current = layout;
  bool layout_known = true;  // false once past a view/reshape: only scalings are collected
  std::unordered_set<const Node*> in_place_seen;
  for (int step = 0; step < 64; ++step) {
    Node* n = v->node();
    // In-place ops on this value that run before the product changed the data it reads
    // (scripted graphs keep using the original value after `q.mul_(s)`).
    for (const torch::jit::Use& use : v->uses()) {
      Node* user = use.user;
      const std::string kind = user->kind().toQualString();
      if (use.offset != 0 || kind.back() != '_' || kind.find("::") == std::string::npos) continue;
      if (user->owningBlock() == product->owningBlock() && !user->isBefore(product)) continue;
      if (!in_place_seen.insert(user).second) continue;
      if (auto scale = as_scale(user, ctx)) t.carried.multiply(scale->scale, scale->exponent);
      else if (t.mutated.empty()) t.mutated = kind;
    }
    if (auto scale = as_scale(n, ctx); scale && scale->in_place) in_place_seen.insert(n);
    if (n->kind() == sym::kGetAttr || n->kind() == sym::kConstant) {
      // A module attribute or a constant as the operand (a tied embedding matrix, a learned
      // query): not an activation, so not an attention operand.
      t.is_parameter = true;
      break;
    }
    if (auto scale = as_scale(n, ctx)) {
      if (layout_known && !scale->in_place) t.stepped.multiply(scale->scale, scale->exponent);
      else t.carried.multiply(scale->scale, scale->exponent);
      v = scale->input;
      if (layout_known) {
        t.value = v;
        t.layout = current;
      }
      continue;
    }
    if (is_layout_passthrough(n)) {
      v = n->input(0);
      if (layout_known) {
        t.value = v;
        t.layout = current;
      }
      continue;
    }
    if (n->kind() == sym::kTranspose || n->kind() == sym::kPermute) {
      if (layout_known) {
        auto in = through_transpose(n, current);
        if (!in) {
          layout_known = false;
        } else {
          current = *in;
          t.value = n->input(0);
          t.layout = current;
        }
      }
      v = n->input(0);
      continue;
    }
    if (is_reshape(n)) {
      layout_known = false;
      v = n->input(0);
      continue;
    }
    break;
  }
  return t;
}

std::pair<Factor, Value*> trace_score_scaling(Value* scores, const PassContext& ctx) {
  Factor f;
  Value* v = scores;
  for (int step = 0; step < 8; ++step) {
    if (v->uses().size() != 1) break;
    Node* user = v->uses()[0].user;
    auto scale = as_scale(user, ctx);
    if (!scale || scale->input != v) break;
    f.multiply(scale->scale, scale->exponent);
    v = user->output();
  }
  return {f, v};
}

bool reaches_softmax(Value* scores) {
  static const c10::Symbol kBetween[] = {
      sym::kAdd,      sym::kAddInPlace, sym::kSub,     sym::kMul,       sym::kDiv,
      sym::kMulInPlace, sym::kDivInPlace, sym::kMaskedFill, sym::kMaskedFillInPlace,
      sym::kWhere,    sym::kView,       sym::kReshape, sym::kTo,        sym::kFloat,
      sym::kTypeAs,   sym::kContiguous, sym::kClamp,   sym::kUnsqueeze, sym::kSqueeze,
      sym::kMaximum,  sym::kMinimum,    sym::kTanh};
  std::deque<std::pair<Value*, int>> queue{{scores, 0}};
  std::unordered_set<const Value*> seen;
  while (!queue.empty()) {
    auto [v, depth] = queue.front();
    queue.pop_front();
    if (!seen.insert(v).second || depth > 10) continue;
    for (const torch::jit::Use& use : v->uses()) {
      Node* user = use.user;
      const c10::Symbol k = user->kind();
      // Returned from a control-flow block (a scripted model's branches): continue from the
      // output of the prim::If / prim::Loop it leaves.
      if (k == c10::prim::Return && user->owningBlock()->owningNode() != nullptr) {
        Node* owner = user->owningBlock()->owningNode();
        if (use.offset < owner->outputs().size()) queue.emplace_back(owner->output(use.offset), depth + 1);
        continue;
      }
      if (k == sym::kSoftmax || k == sym::kSoftmaxPrivate || k == sym::kLogSoftmax ||
          k == sym::kSafeSoftmax)
        return true;
      bool between = false;
      for (c10::Symbol s : kBetween) between = between || k == s;
      if (!between) continue;
      for (Value* out : user->outputs())
        if (is_tensor_type(out)) queue.emplace_back(out, depth + 1);
    }
  }
  return false;
}

std::optional<std::string> attribute_path(Value* v, const Value* self) {
  std::deque<std::string> names;
  while (v->node()->kind() == sym::kGetAttr) {
    names.push_front(v->node()->s(c10::Symbol::attr("name")));
    v = v->node()->input(0);
  }
  if (v != self || names.empty()) return std::nullopt;
  std::string path;
  for (const auto& n : names) path += (path.empty() ? "" : ".") + n;
  return path;
}

std::optional<std::string> weight_path(Value* w, const Value* self) {
  for (int step = 0; step < 8; ++step) {
    if (auto path = attribute_path(w, self)) return path;
    Node* n = w->node();
    const std::string kind = n->kind().toQualString();
    if (kind == "prim::ListUnpack" || kind == "aten::slice" || kind == "aten::narrow" ||
        kind == "aten::select" || kind == "aten::chunk" || kind == "aten::split" ||
        kind == "aten::unsafe_chunk" || kind == "aten::unsafe_split" ||
        kind == "aten::split_with_sizes" || kind == "aten::t") {
      w = n->input(0);
      continue;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<Projection> find_projection(Value* start, const Value* self) {
  std::deque<Value*> queue{start};
  std::unordered_set<const Node*> visited;
  while (!queue.empty() && visited.size() < 4096) {
    Value* v = queue.front();
    queue.pop_front();
    Node* node = v->node();
    if (!visited.insert(node).second) continue;
    const c10::Symbol k = node->kind();
    int weight = -1, input = 0;
    if (k == sym::kLinear) weight = 1;
    else if (k == sym::kAddmm) weight = 2, input = 1;
    else if (k == sym::kMatmul || k == sym::kMm) weight = 1;
    if (weight >= 0 && static_cast<int>(node->inputs().size()) > weight) {
      if (auto path = weight_path(node->input(weight), self))
        return Projection{node, node->input(input), *path};
      // A weight that is not a module attribute: a product of activations, not a projection.
      if (k == sym::kLinear || k == sym::kAddmm) return std::nullopt;
    }
    if (k == sym::kGetAttr || k == sym::kConstant || k == c10::prim::Param ||
        k == sym::kNumToTensor)
      continue;
    if (k == sym::kIf) {
      // A value a scripted branch returns: follow what each branch returns at its offset.
      for (torch::jit::Block* b : node->blocks())
        if (v->offset() < b->outputs().size()) queue.push_back(b->outputs()[v->offset()]);
      continue;
    }
    // Follow data only: tensor inputs (and lists of tensors, for cat/stack), never the sizes
    // a view is given, which may come from another layer's tensors.
    for (Value* in : node->inputs()) {
      if (is_tensor_type(in)) {
        queue.push_back(in);
      } else if (in->node()->kind() == sym::kListConstruct) {
        for (Value* item : in->node()->inputs())
          if (is_tensor_type(item)) queue.push_back(item);
      } else if ((in->type()->kind() == c10::TypeKind::ListType ||
                  in->type()->kind() == c10::TypeKind::TupleType) &&
                 in->node()->kind() != sym::kConstant) {
        queue.push_back(in);  // chunk/split outputs unpacked from a list, a returned tuple
      }
    }
  }
  return std::nullopt;
}

std::string attention_module(const std::optional<Projection>& q,
                             const std::optional<Projection>& k) {
  auto owner = [](const std::string& param_path) -> std::string {
    auto cut = param_path.rfind('.');
    if (cut == std::string::npos) return "";
    const std::string param = param_path.substr(cut + 1);
    std::string module = param_path.substr(0, cut);
    // A projection submodule's own "weight" (nn.Linear, Conv1D): the attention module is its
    // parent. A packed weight (nn.MultiheadAttention's in_proj_weight) belongs to it directly.
    if (param == "weight" || param == "bias") {
      auto up = module.rfind('.');
      module = up == std::string::npos ? "" : module.substr(0, up);
    }
    return module;
  };
  if (!q && !k) return "";
  const std::string a = q ? owner(q->weight_path) : owner(k->weight_path);
  if (!q || !k) return a;
  const std::string b = owner(k->weight_path);
  if (a == b) return a;
  // Different owners (a model whose q and k projections live in different modules): their
  // common ancestor.
  size_t common = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()) && a[i] == b[i]; ++i)
    if (a[i] == '.') common = i;
  return a.substr(0, common);
}

}  // namespace qkscope::detail::graph
