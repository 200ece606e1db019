// Internal state shared by the capture op (capture_op.cpp), the graph pass and CaptureModule.
#pragma once

#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "libtorch_utils.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"

namespace qkscope {

struct CaptureModule::State {
  std::string name;
  LoadOptions options;
  torch::jit::Module original;
  torch::jit::Module instrumented;
  std::vector<std::string> argument_names;
  std::string schema;
  int mask_argument = -1;  // index into forward's inputs (without self), -1 when absent
  int ids_argument = -1;

  // Sites with what the first forward that reached them told: sizes, layer numbers of sites
  // in control flow, shape-derived scales.
  mutable std::mutex mutex;
  std::vector<SiteDescription> sites;
  int next_layer = 0;                    // the next layer number to give (sites in branches)
  std::atomic<bool> sizes_known{false};  // set once a forward with a session has completed

  std::vector<SiteDescription> snapshot() const {
    std::lock_guard<std::mutex> lock(mutex);
    return sites;
  }
  // Records what a forward found at `site`; returns the site's description. Throws when a scale
  // the graph computes differs from the one an earlier forward found (not a constant).
  SiteDescription reach(int site, int n_heads, int head_dim, double prescale);
};

namespace detail {

// An operand's [B, H, T, D] sizes and strides (elements).
struct Geometry {
  int64_t size[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};
  c10::IntArrayRef sizes() const { return c10::IntArrayRef(size, 4); }
};

// Everything one forward with a session needs; lives on the forward's stack, reached by the
// capture op through a thread_local pointer.
class ForwardContext {
 public:
  ForwardContext(CaptureModule::State& module, CaptureSink& sink, CaptureSession& session,
                 const std::vector<c10::IValue>& inputs, const std::vector<int64_t>* sequences);

  // Called by the capture op. Never throws: the first error is kept for finish().
  void capture(const at::Tensor& q, const at::Tensor& k, int64_t site, double prescale,
               double q_unscale, double k_unscale) noexcept;

  // Called by the fused-op capture: computes q, k [B, T, H, D] from the op's inputs (only when
  // the sink may want the site), then as capture(). Never throws.
  void capture_fused(const at::Tensor& src, int64_t num_heads, const at::Tensor& qkv_weight,
                     const at::Tensor& qkv_bias, bool norm_first, double eps,
                     const at::Tensor& norm_weight, const at::Tensor& norm_bias,
                     int64_t site) noexcept;

  // After the forward: rethrows a capture error, waits for device copies, delivers what was
  // deferred.
  void finish();

 private:
  struct Pending {
    SiteDescription description;
    std::vector<int> heads;
    at::Tensor q, k;  // [n, H', D] float, host (pinned when copied from a device)
  };

  void bind_tokens(int64_t batch, int64_t q_len, int64_t k_len, int site);
  at::Tensor gather(const at::Tensor& t, const at::Tensor& head_index, bool keys);
  // The tokens and `heads` of a CPU float operand as [n, H', D]: the operand's own memory when
  // it already has that layout, else copied into `scratch`. group: query heads per key head
  // (keys of grouped-query attention), 1 for queries.
  const float* gather_cpu(const at::Tensor& t, const Geometry& g, const std::vector<int>& heads,
                          int64_t group, bool keys, double unscale,
                          std::vector<float>& scratch) const;
  void make_index_tensors();  // row_index_, q_col_index_, k_col_index_ from the vectors
  void deliver(const Pending& p);

  CaptureModule::State& module_;
  CaptureSink& sink_;
  CaptureSession& session_;
  const std::vector<int64_t>* explicit_sequences_;
  std::vector<SiteDescription> sites_;  // snapshot at forward start
  bool defer_ = false;                  // deliver at finish() (sizes unknown at start)
  bool device_copies_ = false;          // some pending copies are non-blocking device->host
  c10::Device device_ = c10::kCPU;      // device of the last captured site
  std::exception_ptr error_;

  // Tokens of this forward, fixed by the first captured site. The mask (or the ids) spans the
  // whole sequence so far, L columns; q holds the last Tq of them (Tq < L when decoding with a
  // key/value cache) and k the last Tk (L with the cache, or Tq).
  at::Tensor mask_;  // [B, L] on CPU (nonzero: a token), or undefined
  at::Tensor ids_;   // [B, L] or [B, Tq] int64 on CPU, or undefined
  bool tokens_bound_ = false;
  int64_t batch_ = -1, total_len_ = -1, q_len_ = -1, k_len_ = -1;
  bool all_valid_ = true;  // every column of q and k is a real token, no cache: plain views
  std::vector<int64_t> rows_, q_cols_, k_cols_;  // [n] each: batch row, q and k column
  at::Tensor row_index_, q_col_index_, k_col_index_;  // the same as [n] int64 tensors, on CPU
  at::Tensor row_index_dev_, q_col_index_dev_, k_col_index_dev_;  // the same on device_
  std::vector<int64_t> sequence_, position_, token_id_;  // [n] each (token_id_ may be empty)

  std::vector<Pending> pending_;
};

// The calling thread's active forward, or nullptr.
ForwardContext* active_forward();
void set_active_forward(ForwardContext* context);

// Forces the capture op's registration into the link (static builds).
void ensure_capture_op_registered();

// The graph pass (graph_pass.cpp): instruments the inlined forward graph of `module` in place
// and returns its sites. Throws qkscope::Error naming `name` when none is found.
std::vector<SiteDescription> instrument_attention_sites(torch::jit::Module& module,
                                                        const std::string& name);

}  // namespace detail
}  // namespace qkscope
