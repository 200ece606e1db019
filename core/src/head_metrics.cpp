// compute_head: one head's metrics by the instruction-set variant of the engine in use
// (engine_isa.h; the algorithm is described in head_engine.h), and the tokens holding NaN or Inf
// left out.
#include "head_metrics.h"

#include <optional>

#include "engine_isa.h"
#include "head_engine_entry.h"
#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

using HeadEngine = std::optional<HeadOutcome> (*)(const HeadInput&, const MetricOptions&);

HeadEngine head_engine(Isa isa) {
  switch (isa) {
#if defined(QKSCOPE_ISA_X86_VARIANTS)
    case Isa::avx512: return isa_avx512::compute_head_variant;
    case Isa::avx2: return isa_avx2::compute_head_variant;
#else
    case Isa::avx512:
    case Isa::avx2: break;  // not built here; supported_isas() never offers them
#endif
    case Isa::baseline: return isa_baseline::compute_head_variant;
  }
  QKSCOPE_ASSERT(false);
  return nullptr;
}

}  // namespace

FiniteHead drop_nonfinite_tokens(const HeadInput& in) {
  FiniteHead out;
  out.input = in;
  auto finite = [&](int64_t t) {
    const float* q = in.q + t * in.stride;
    const float* k = in.k + t * in.stride;
    float probe = 0;
#pragma omp simd reduction(+ : probe)
    for (int l = 0; l < in.head_dim; ++l) probe += q[l] * 0.0f + k[l] * 0.0f;
    return probe == 0.0f;
  };
  int64_t t = 0;
  while (t < in.n_tokens && finite(t)) ++t;
  if (t == in.n_tokens) return out;
  for (int64_t u = 0; u < in.n_tokens; ++u) {
    if (!finite(u)) continue;
    out.q.insert(out.q.end(), in.q + u * in.stride, in.q + u * in.stride + in.head_dim);
    out.k.insert(out.k.end(), in.k + u * in.stride, in.k + u * in.stride + in.head_dim);
    out.sequence.push_back(in.sequence[u]);
    out.position.push_back(in.position[u]);
  }
  out.input.q = out.q.data();
  out.input.k = out.k.data();
  out.input.stride = in.head_dim;
  out.input.n_tokens = static_cast<int64_t>(out.sequence.size());
  out.input.sequence = out.sequence.data();
  out.input.position = out.position.data();
  return out;
}

HeadOutcome compute_head(const HeadInput& in, const MetricOptions& options) {
  QKSCOPE_CHECK(in.n_tokens < (int64_t{1} << 32), "head has {} tokens; at most 2^32 are supported",
                in.n_tokens);
  const auto variant = head_engine(active_isa());
  if (auto out = variant(in, options)) return *std::move(out);
  // Some token holds NaN or Inf: leave it out of this head (the common case costs no copy).
  const FiniteHead finite = drop_nonfinite_tokens(in);
  std::optional<HeadOutcome> out = variant(finite.input, options);
  QKSCOPE_ASSERT(out.has_value());
  out->nonfinite_tokens = in.n_tokens - finite.input.n_tokens;
  return *std::move(out);
}

}  // namespace qkscope::detail
