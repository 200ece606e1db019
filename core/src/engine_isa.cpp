#include "engine_isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "head_engine_entry.h"
#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

// Ordered by preference: a CPU that runs a variant runs the ones before it.
constexpr Isa kAll[] = {Isa::baseline, Isa::avx2, Isa::avx512};

// Whether the CPU and the operating system (which must save the wider registers; libgcc's
// cpuinfo checks XCR0) can run the variant, compiled with the flags core/CMakeLists.txt gives
// it: -mavx2 -mfma, and AVX-512 F, DQ, BW, VL on top.
bool cpu_runs(Isa isa) {
#if defined(QKSCOPE_ISA_X86_VARIANTS)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case Isa::baseline: return true;
    case Isa::avx2: return avx2;
    case Isa::avx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == Isa::baseline;  // other architectures: the baseline variant alone is built
#endif
}

std::string names(const std::vector<Isa>& isas) {
  std::string out;
  for (Isa isa : isas) out += std::string(out.empty() ? "" : ", ") + isa_name(isa);
  return out;
}

std::atomic<int> g_active{-1};  // -1: not chosen yet
std::mutex g_choose;

// The pooled workspaces. The pool destroys what it holds at exit.
struct PooledWorkspace {
  const void* kind;
  void* workspace;
  void (*destroy)(void*);
};
class WorkspacePool {
 public:
  ~WorkspacePool() {
    for (PooledWorkspace& p : held_) p.destroy(p.workspace);
  }
  void* take(const void* kind) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t t = held_.size(); t-- > 0;)
      if (held_[t].kind == kind) {
        void* out = held_[t].workspace;
        held_.erase(held_.begin() + static_cast<int64_t>(t));
        return out;
      }
    return nullptr;
  }
  bool give(const PooledWorkspace& p) {
    std::lock_guard<std::mutex> lock(mutex_);
    // One per hardware thread is what a run with every core uses; a few more for callers
    // that start more workers than cores.
    const size_t limit = 2 * std::max(4u, std::thread::hardware_concurrency());
    if (held_.size() >= limit) return false;
    held_.push_back(p);
    return true;
  }

 private:
  std::mutex mutex_;
  std::vector<PooledWorkspace> held_;
};
WorkspacePool& workspace_pool() {
  static WorkspacePool pool;
  return pool;
}

}  // namespace

void* take_pooled_workspace(const void* kind) { return workspace_pool().take(kind); }

void give_pooled_workspace(const void* kind, void* workspace, void (*destroy)(void*),
                           size_t bytes) {
  if (bytes > kPooledWorkspaceBytes || !workspace_pool().give({kind, workspace, destroy}))
    destroy(workspace);
}

void engine_invariant_failed(const char* condition, int line) {
  throw InternalError(
      fmt::format("qkscope internal error: {} failed at core/src/head_engine.h:{}", condition, line));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::baseline: return "baseline";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAll)
    if (cpu_runs(isa)) out.push_back(isa);
  return out;
}

Isa choose_isa(const char* request, const std::vector<Isa>& supported) {
  QKSCOPE_ASSERT(!supported.empty() && supported.front() == Isa::baseline);
  if (request == nullptr || *request == '\0') return supported.back();
  for (Isa isa : kAll) {
    if (std::strcmp(request, isa_name(isa)) != 0) continue;
    for (Isa s : supported)
      if (s == isa) return isa;
    throw Error(fmt::format("QKSCOPE_ISA={}: this CPU (or this build) cannot run that variant of "
                            "the metric engine; it can run: {}",
                            request, names(supported)));
  }
  throw Error(fmt::format("QKSCOPE_ISA={}: expected one of baseline, avx2, avx512 (this CPU can "
                          "run: {})",
                          request, names(supported)));
}

Isa active_isa() {
  const int chosen = g_active.load(std::memory_order_acquire);
  if (chosen >= 0) return static_cast<Isa>(chosen);
  std::lock_guard<std::mutex> lock(g_choose);
  if (g_active.load(std::memory_order_relaxed) < 0)  // a bad request throws every time
    g_active.store(static_cast<int>(choose_isa(std::getenv("QKSCOPE_ISA"), supported_isas())),
                   std::memory_order_release);
  return static_cast<Isa>(g_active.load(std::memory_order_relaxed));
}

void set_active_isa(Isa isa) {
  const Isa checked = choose_isa(isa_name(isa), supported_isas());
  g_active.store(static_cast<int>(checked), std::memory_order_release);
}

}  // namespace qkscope::detail
