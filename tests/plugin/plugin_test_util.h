// Helpers shared by the plugin tests: the generated models, their inputs and references.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <torch/script.h>

#include "qkscope/capture_sink.h"
#include "qkscope/safetensors.h"

namespace qkscope::test {

inline std::string models_dir() {
  if (const char* env = std::getenv("QKSCOPE_MODELS_DIR")) return env;
  return QKSCOPE_MODELS_DIR;
}
inline std::string model_path(const std::string& file) { return models_dir() + "/" + file; }

inline at::ScalarType torch_dtype(Dtype d) {
  switch (d) {
    case Dtype::F32: return at::kFloat;
    case Dtype::F64: return at::kDouble;
    case Dtype::I64: return at::kLong;
    case Dtype::I32: return at::kInt;
    case Dtype::BOOL: return at::kBool;
    case Dtype::U8: return at::kByte;
    default: throw std::runtime_error("test: unsupported dtype");
  }
}

// Every tensor of a safetensors file, as owning CPU tensors.
inline std::map<std::string, at::Tensor> read_tensors(const SafetensorsFile& file) {
  std::map<std::string, at::Tensor> out;
  for (const TensorInfo& info : file.tensors()) {
    std::string bytes = file.read_bytes(info.name);
    out[info.name] = torch::from_blob(bytes.data(), info.shape,
                                      at::TensorOptions().dtype(torch_dtype(info.dtype)))
                         .clone();
  }
  return out;
}

// Model outputs equal bit for bit: tensors, and tuples and lists of them.
inline bool ivalue_equal(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() && b.isTensor()) return torch::equal(a.toTensor(), b.toTensor());
  if (a.isTuple() && b.isTuple()) {
    const auto& x = a.toTupleRef().elements();
    const auto& y = b.toTupleRef().elements();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!ivalue_equal(x[i], y[i])) return false;
    return true;
  }
  if (a.isList() && b.isList()) {
    auto x = a.toListRef();
    auto y = b.toListRef();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!ivalue_equal(x[i], y[i])) return false;
    return true;
  }
  return a == b;
}

// One consume() call, copied.
struct Captured {
  int layer = 0;
  std::string module;
  double prescale = 1;
  int n_heads = 0;  // site's model heads
  int head_dim = 0;
  int batch_heads = 0;
  std::vector<float> q, k;
  std::vector<int64_t> sequence, position, token_id;
};

// A CallbackSink that keeps copies of every batch (thread-safe).
class RecordingSink : public CaptureSink {
 public:
  std::vector<int> heads;  // empty: all
  bool want_nothing = false;

  std::vector<int> wants_heads(const SiteDescription& site) override {
    if (want_nothing) return {};
    return heads.empty() ? CaptureSink::wants_heads(site) : heads;
  }
  void prepare(const std::vector<SiteDescription>& sites) override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++prepares;
    prepared_sites = sites;
  }
  void consume(const SiteDescription& site, const QkBatch& b) override {
    Captured c;
    c.layer = b.layer;
    c.module = site.module;
    c.prescale = site.prescale;
    c.n_heads = site.n_heads;
    c.head_dim = b.head_dim;
    c.batch_heads = b.n_heads;
    const size_t n = static_cast<size_t>(b.n_tokens) * b.n_heads * b.head_dim;
    c.q.assign(b.q, b.q + n);
    c.k.assign(b.k, b.k + n);
    c.sequence.assign(b.sequence, b.sequence + b.n_tokens);
    c.position.assign(b.position, b.position + b.n_tokens);
    if (b.token_id) c.token_id.assign(b.token_id, b.token_id + b.n_tokens);
    std::lock_guard<std::mutex> lock(mutex_);
    batches.push_back(std::move(c));
  }

  std::vector<Captured> batches;
  std::vector<SiteDescription> prepared_sites;
  int prepares = 0;

 private:
  std::mutex mutex_;
};

}  // namespace qkscope::test
