// The entry of each instruction-set variant of the engine (head_engine.h, compiled by
// head_engine_<isa>.cpp). compute_head() (head_metrics.cpp) calls the one engine_isa.h chose.
#pragma once

#include <cstddef>
#include <optional>

#include "head_metrics.h"

namespace qkscope::detail {

// Throws InternalError for a broken invariant of the pass. Defined once, in the baseline
// engine_isa.cpp: QKSCOPE_ASSERT's fmt::format would instantiate fmt's inline templates in each
// variant, and the linker may keep an AVX copy of one for every caller
// (tests/core/isa_symbols_test.py found it in the -O1 sanitizer build).
[[noreturn]] void engine_invariant_failed(const char* condition, int line);
#define QKSCOPE_ENGINE_ASSERT(cond) \
  do {                              \
    if (!(cond)) ::qkscope::detail::engine_invariant_failed(#cond, __LINE__); \
  } while (false)

// Workspaces (the buffers a worker reuses across heads) kept for the next call: compute_ctable
// starts its workers per call, and a server calls it per request; a workspace built anew faults
// in megabytes of fresh pages on its first head (page faults were 18 % of the engine's profile
// in all scope). Shared by every thread, defined once in engine_isa.cpp. `kind` tells the
// variants' workspace types apart (any address unique to the variant).
// A workspace given back earlier for `kind`, or nullptr.
void* take_pooled_workspace(const void* kind);
// Keeps `workspace` for take_pooled_workspace(kind), or calls destroy(workspace) when the pool
// is full or the workspace holds more than kPooledWorkspaceBytes.
constexpr size_t kPooledWorkspaceBytes = size_t{256} << 20;
void give_pooled_workspace(const void* kind, void* workspace, void (*destroy)(void*),
                           size_t bytes);

// One head's outcome; nothing when a token's q or k holds NaN or Inf (the caller leaves those
// tokens out and calls again).
#define QKSCOPE_DECLARE_HEAD_ENGINE(ns)                                                \
  namespace ns {                                                                       \
  std::optional<HeadOutcome> compute_head_variant(const HeadInput& in,                 \
                                                  const MetricOptions& options);       \
  }
QKSCOPE_DECLARE_HEAD_ENGINE(isa_baseline)
QKSCOPE_DECLARE_HEAD_ENGINE(isa_avx2)
QKSCOPE_DECLARE_HEAD_ENGINE(isa_avx512)
#undef QKSCOPE_DECLARE_HEAD_ENGINE

}  // namespace qkscope::detail
