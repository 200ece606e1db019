#include "output_json.h"

#include <torch/script.h>

#include <cmath>
#include <functional>
#include <string>

#include "qkscope/error.h"

namespace qkscope::http {
namespace {

nlohmann::json shape_of(const at::Tensor& t) {
  nlohmann::json shape = nlohmann::json::array();
  for (int64_t s : t.sizes()) shape.push_back(s);
  return shape;
}

// Names as numpy and safetensors spell them.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

nlohmann::json number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

// Flat row-major values.
nlohmann::json values(const at::Tensor& tensor) {
  const at::Tensor t = tensor.cpu().contiguous();
  const int64_t n = t.numel();
  nlohmann::json data = nlohmann::json::array();
  data.get_ref<nlohmann::json::array_t&>().reserve(static_cast<size_t>(n));
  switch (t.scalar_type()) {
    case at::kFloat: {
      const float* p = t.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i) data.push_back(number(static_cast<double>(p[i])));
      break;
    }
    case at::kDouble: {
      const double* p = t.data_ptr<double>();
      for (int64_t i = 0; i < n; ++i) data.push_back(number(p[i]));
      break;
    }
    case at::kLong: {
      const int64_t* p = t.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i) data.push_back(p[i]);
      break;
    }
    case at::kInt: {
      const int32_t* p = t.data_ptr<int32_t>();
      for (int64_t i = 0; i < n; ++i) data.push_back(p[i]);
      break;
    }
    case at::kBool: {
      const bool* p = t.data_ptr<bool>();
      for (int64_t i = 0; i < n; ++i) data.push_back(p[i]);
      break;
    }
    default: {
      // Half, bfloat16 and the rest: widened to double exactly.
      const at::Tensor d = t.to(at::kDouble);
      const double* p = d.data_ptr<double>();
      for (int64_t i = 0; i < n; ++i) data.push_back(number(p[i]));
    }
  }
  return data;
}

// argmax along the last dimension, nested as the leading dimensions.
nlohmann::json last_dim_argmax(const at::Tensor& t) {
  const at::Tensor a = t.argmax(-1).contiguous();
  if (a.dim() == 0) return a.item<int64_t>();
  std::function<nlohmann::json(const at::Tensor&)> nest = [&](const at::Tensor& x) {
    nlohmann::json out = nlohmann::json::array();
    for (int64_t i = 0; i < x.size(0); ++i)
      out.push_back(x.dim() == 1 ? nlohmann::json(x[i].item<int64_t>()) : nest(x[i]));
    return out;
  };
  return nest(a);
}

template <typename TensorFn>
nlohmann::json walk(const c10::IValue& v, const TensorFn& tensor) {
  if (v.isTensor()) return tensor(v.toTensor());
  if (v.isTuple() || v.isList()) {
    nlohmann::json out = nlohmann::json::array();
    if (v.isTuple()) {
      for (const c10::IValue& e : v.toTupleRef().elements()) out.push_back(walk(e, tensor));
    } else {
      for (const c10::IValue& e : v.toListRef()) out.push_back(walk(e, tensor));
    }
    return out;
  }
  if (v.isGenericDict()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& entry : v.toGenericDict()) {
      QKSCOPE_CHECK(entry.key().isString(),
                    "model output: expected a dict with string keys, got a {} key",
                    entry.key().tagKind());
      out[entry.key().toStringRef()] = walk(entry.value(), tensor);
    }
    return out;
  }
  if (v.isNone()) return nullptr;
  if (v.isBool()) return v.toBool();
  if (v.isInt()) return v.toInt();
  if (v.isDouble()) return number(v.toDouble());
  if (v.isString()) return v.toStringRef();
  throw Error("model output: expected tensors, tuples, lists, dicts or scalars, got a " +
              v.tagKind());
}

}  // namespace

nlohmann::json output_tensors(const c10::IValue& output) {
  return walk(output, [](const at::Tensor& t) {
    return nlohmann::json{{"dtype", dtype_name(t.scalar_type())},
                          {"shape", shape_of(t)},
                          {"data", values(t)}};
  });
}

nlohmann::json output_summary(const c10::IValue& output) {
  return walk(output, [](const at::Tensor& t) {
    nlohmann::json s{{"dtype", dtype_name(t.scalar_type())},
                     {"shape", shape_of(t)}};
    if (t.is_floating_point() && t.dim() >= 1 && t.size(-1) > 0) s["argmax"] = last_dim_argmax(t);
    return s;
  });
}

}  // namespace qkscope::http
