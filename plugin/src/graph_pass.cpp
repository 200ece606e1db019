// The graph pass: finds the attention score products of an inlined forward graph and inserts
// qkscope::capture(q, k, site) right before each (see capture_module.h for the forms matched).
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <deque>
#include <optional>
#include <unordered_set>

#include "capture_context.h"
#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

using torch::jit::Node;
using torch::jit::Value;

const c10::Symbol kMatmul = c10::Symbol::fromQualString("aten::matmul");
const c10::Symbol kTranspose = c10::Symbol::fromQualString("aten::transpose");
const c10::Symbol kDiv = c10::Symbol::fromQualString("aten::div");
const c10::Symbol kMul = c10::Symbol::fromQualString("aten::mul");
const c10::Symbol kLinear = c10::Symbol::fromQualString("aten::linear");
const c10::Symbol kAddmm = c10::Symbol::fromQualString("aten::addmm");
const c10::Symbol kGetAttr = c10::Symbol::fromQualString("prim::GetAttr");
const c10::Symbol kConstant = c10::Symbol::fromQualString("prim::Constant");
// Absent from LibTorch 1.13; matching by name compiles everywhere and matches on 2.x.
const c10::Symbol kSdpa = c10::Symbol::fromQualString("aten::scaled_dot_product_attention");
const c10::Symbol kCapture = c10::Symbol::fromQualString("qkscope::capture");

// Rank of a tensor value when the graph's type says it (traced graphs built in memory).
std::optional<int64_t> rank_of(const Value* v) {
  auto type = v->type()->cast<c10::TensorType>();
  if (!type) return std::nullopt;
  auto dim = type->dim();
  if (!dim) return std::nullopt;
  return static_cast<int64_t>(*dim);
}

std::optional<int64_t> constant_int(const Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isInt()) return std::nullopt;
  return iv->toInt();
}

// A constant scalar: a number, or a one-element tensor constant.
std::optional<double> constant_scalar(const Value* v) {
  if (v->node()->kind() != kConstant) return std::nullopt;
  auto iv = torch::jit::toIValue(v);
  if (!iv) return std::nullopt;
  if (iv->isDouble()) return iv->toDouble();
  if (iv->isInt()) return static_cast<double>(iv->toInt());
  if (iv->isTensor() && iv->toTensor().numel() == 1) return iv->toTensor().item<double>();
  return std::nullopt;
}

bool rank_is_4_or_unknown(const Value* v) {
  auto r = rank_of(v);
  return !r || *r == 4;
}

// B = transpose(K, a, b) swapping the last two dims of a 4-D tensor: returns K.
Value* transposed_key(Value* b) {
  Node* t = b->node();
  if (t->kind() != kTranspose || t->inputs().size() != 3) return nullptr;
  auto d0 = constant_int(t->input(1)), d1 = constant_int(t->input(2));
  if (!d0 || !d1) return nullptr;
  Value* k = t->input(0);
  auto rank = rank_of(k);
  if (rank && *rank != 4) return nullptr;
  auto norm = [](int64_t d) { return d < 0 ? d + 4 : d; };
  // Negative dims are the last two whatever the rank; (2, 3) needs rank 4, checked at run time
  // in the op when the graph has no shapes.
  int64_t a = norm(*d0), c = norm(*d1);
  if (!((a == 2 && c == 3) || (a == 3 && c == 2))) return nullptr;
  return k;
}

// "a.b.c" for a value produced by GetAttr chains rooted at `self`, else nullopt.
std::optional<std::string> attribute_path(Value* v, const Value* self) {
  std::deque<std::string> names;
  while (v->node()->kind() == kGetAttr) {
    names.push_front(v->node()->s(c10::Symbol::attr("name")));
    v = v->node()->input(0);
  }
  if (v != self || names.empty()) return std::nullopt;
  std::string path;
  for (const auto& n : names) path += (path.empty() ? "" : ".") + n;
  return path;
}

// Walks back from q through the ops that produce it to the nearest projection (linear, addmm,
// matmul) whose weight is a module attribute; never walks past a projection, so a frozen or
// unusual q projection yields "" rather than another layer's module.
std::string module_path(Value* q, const Value* self) {
  std::deque<Value*> queue{q};
  std::unordered_set<const Node*> visited;
  while (!queue.empty() && visited.size() < 256) {
    Value* v = queue.front();
    queue.pop_front();
    Node* node = v->node();
    if (!visited.insert(node).second) continue;
    const c10::Symbol kind = node->kind();
    int weight = -1;
    if (kind == kLinear) weight = 1;
    else if (kind == kAddmm) weight = 2;
    else if (kind == kMatmul) weight = 1;
    if (weight >= 0) {
      if (static_cast<int>(node->inputs().size()) > weight) {
        if (auto path = attribute_path(node->input(weight), self)) {
          // "encoder.layer.3.attention.self.query.weight" -> "encoder.layer.3.attention.self"
          auto cut = path->rfind('.');
          if (cut != std::string::npos) cut = path->rfind('.', cut - 1);
          return cut == std::string::npos ? std::string() : path->substr(0, cut);
        }
      }
      continue;
    }
    if (kind == kGetAttr || kind == kConstant || node->kind() == c10::prim::Param) continue;
    for (Value* input : node->inputs()) queue.push_back(input);
  }
  return {};
}

struct Found {
  Node* anchor;
  Value* q;
  Value* k;
  SiteDescription description;
};

void collect(torch::jit::Block* block, const Value* self, std::vector<Found>& found) {
  for (Node* node : block->nodes()) {
    for (torch::jit::Block* sub : node->blocks()) collect(sub, self, found);
    if (node->kind() == kMatmul && node->inputs().size() == 2) {
      Value* k = transposed_key(node->input(1));
      Value* a = node->input(0);
      if (k == nullptr || !rank_is_4_or_unknown(a)) continue;
      // Step over a constant scaling of q right before the product: q / c or q * c.
      Value* q = a;
      double prescale = 1.0;
      Node* scale = a->node();
      if (scale->kind() == kDiv && scale->inputs().size() == 2) {
        if (auto c = constant_scalar(scale->input(1)); c && *c != 0.0) {
          q = scale->input(0);
          prescale = 1.0 / *c;
        }
      } else if (scale->kind() == kMul && scale->inputs().size() == 2) {
        if (auto c = constant_scalar(scale->input(1))) {
          q = scale->input(0);
          prescale = *c;
        } else if (auto c0 = constant_scalar(scale->input(0))) {
          q = scale->input(1);
          prescale = *c0;
        }
      }
      SiteDescription d;
      d.kind = "matmul";
      d.prescale = prescale;
      found.push_back({node, q, k, d});
    } else if (node->kind() == kSdpa && node->inputs().size() >= 3) {
      SiteDescription d;
      d.kind = "sdpa";
      found.push_back({node, node->input(0), node->input(1), d});
    }
  }
}

}  // namespace

std::vector<SiteDescription> instrument_attention_sites(torch::jit::Module& module,
                                                        const std::string& name) {
  auto graph = module.get_method("forward").graph();
  torch::jit::Inline(*graph);
  const Value* self = graph->inputs().at(0);
  std::vector<Found> found;
  collect(graph->block(), self, found);
  QKSCOPE_CHECK(!found.empty(),
                "no attention site found in '{}': looked for aten::matmul(q, transpose(k, -1, -2)) "
                "on 4-D tensors and aten::scaled_dot_product_attention",
                name);
  std::vector<SiteDescription> sites;
  for (size_t i = 0; i < found.size(); ++i) {
    Found& f = found[i];
    f.description.layer = static_cast<int>(i);
    f.description.module = module_path(f.q, self);
    torch::jit::WithInsertPoint guard(f.anchor);
    Value* site = graph->insertConstant(static_cast<int64_t>(i));
    Node* capture = graph->create(kCapture, {f.q, f.k, site}, 0);
    graph->insertNode(capture);
    sites.push_back(f.description);
  }
  graph->lint();
  return sites;
}

}  // namespace qkscope::detail
