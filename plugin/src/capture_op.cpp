// The qkscope::capture op and the per-forward capture context it feeds.
//
// Delivery: on CPU each site is handed to the sink inside the op, as soon as it is copied, so
// memory stays at one site's worth. Exceptions: a model's first forwards with a session (site
// sizes not yet known, so prepare() cannot describe them) and device tensors (copied to pinned
// host memory without blocking) are delivered at the end of the forward, in site order.
#include <ATen/TensorIndexing.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <atomic>

#include "capture_context.h"
#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

thread_local ForwardContext* tls_forward = nullptr;

// The kernel. Without an active forward on this thread: one thread_local load and a return.
void capture_kernel(const at::Tensor& q, const at::Tensor& k, int64_t site) {
  ForwardContext* context = tls_forward;
  if (context == nullptr) return;
  context->capture(q, k, site);
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

}  // namespace

ForwardContext* active_forward() { return tls_forward; }
void set_active_forward(ForwardContext* context) { tls_forward = context; }
void ensure_capture_op_registered() {}

ForwardContext::ForwardContext(CaptureModule::State& module, CaptureSink& sink,
                               CaptureSession& session, const std::vector<c10::IValue>& inputs,
                               const std::vector<int64_t>* sequences)
    : module_(module), sink_(sink), session_(session), explicit_sequences_(sequences) {
  sites_ = module_.snapshot();
  defer_ = !module_.sizes_known.load(std::memory_order_acquire);
  auto token_input = [&](int index, const std::string& what) -> at::Tensor {
    if (index < 0 || index >= static_cast<int>(inputs.size()) || !inputs[index].isTensor())
      return {};
    at::Tensor t = inputs[index].toTensor();
    QKSCOPE_CHECK(t.dim() == 2, "model '{}': {} must be [batch, seq] to select tokens, got {}",
                  module_.name, what, shape_string(t.sizes()));
    return t.to(at::kCPU);
  };
  if (at::Tensor m = token_input(module_.mask_argument, module_.options.mask_argument); m.defined())
    mask_ = m.ne(0);
  if (at::Tensor ids = token_input(module_.ids_argument, module_.options.ids_argument); ids.defined())
    ids_ = ids.to(at::kLong);
  QKSCOPE_CHECK(!mask_.defined() || !ids_.defined() || mask_.sizes() == ids_.sizes(),
                "model '{}': {} is {} but {} is {}", module_.name, module_.options.mask_argument,
                shape_string(mask_.sizes()), module_.options.ids_argument,
                shape_string(ids_.sizes()));
  if (!defer_) sink_.prepare(sites_);
}

void ForwardContext::bind_tokens(const at::Tensor& q) {
  const at::Tensor& tokens = mask_.defined() ? mask_ : ids_;
  if (tokens.defined()) {
    batch_ = tokens.size(0);
    seq_len_ = tokens.size(1);
  } else {
    batch_ = q.size(0);
    seq_len_ = q.size(2);
  }
  int64_t first = 0;
  if (explicit_sequences_ != nullptr) {
    QKSCOPE_CHECK(static_cast<int64_t>(explicit_sequences_->size()) == batch_,
                  "model '{}': {} sequence indices given for a batch of {} rows", module_.name,
                  explicit_sequences_->size(), batch_);
  } else {
    first = session_.take_sequences(batch_);
  }
  if (mask_.defined()) {
    at::Tensor nz = mask_.nonzero();  // [n, 2], row-major order: by row, then position
    row_index_ = nz.select(1, 0).contiguous();
    pos_index_ = nz.select(1, 1).contiguous();
    all_valid_ = row_index_.numel() == batch_ * seq_len_;
  } else {
    auto opts = at::TensorOptions().dtype(at::kLong);
    row_index_ = at::arange(batch_, opts).repeat_interleave(seq_len_);
    pos_index_ = at::arange(seq_len_, opts).repeat({batch_});
    all_valid_ = true;
  }
  position_ = to_vector(pos_index_);
  sequence_ = to_vector(row_index_);
  for (int64_t& s : sequence_) s = explicit_sequences_ ? (*explicit_sequences_)[s] : first + s;
  if (ids_.defined()) token_id_ = to_vector(ids_.index({row_index_, pos_index_}));
  tokens_bound_ = true;
}

at::Tensor ForwardContext::gather(const at::Tensor& t, const at::Tensor& head_index) {
  using at::indexing::Slice;
  const int64_t n_heads = head_index.defined() ? head_index.numel() : t.size(1);
  at::Tensor out;
  if (all_valid_ && !head_index.defined()) {
    // Every token, every head: the [B, S, H, D] view, copied only when not already contiguous.
    out = t.permute({0, 2, 1, 3}).contiguous().view({batch_ * seq_len_, n_heads, t.size(3)});
  } else {
    const at::Tensor& rows = t.is_cpu() ? row_index_ : row_index_dev_;
    const at::Tensor& pos = t.is_cpu() ? pos_index_ : pos_index_dev_;
    if (head_index.defined()) {
      // One gather: rows [n,1] x heads [1,H'] x positions [n,1] -> [n, H', D].
      out = t.index({rows.unsqueeze(1), head_index.to(t.device()).unsqueeze(0), pos.unsqueeze(1)});
    } else {
      out = t.index({rows, Slice(), pos});  // [n, H, D]
    }
  }
  if (out.scalar_type() != at::kFloat) out = out.to(at::kFloat);
  out = out.contiguous();
  // When the model's tensor already has the [B, S, H, D] layout (BERT's view of the projection)
  // `out` is that tensor itself: fine for an immediate delivery, but a deferred one must not see
  // later in-place changes.
  if (defer_ && t.is_cpu() && out.is_alias_of(t)) out = out.clone();
  return out;
}

void ForwardContext::capture(const at::Tensor& q, const at::Tensor& k, int64_t site) noexcept {
  if (error_) return;
  try {
    QKSCOPE_ASSERT(site >= 0 && site < static_cast<int64_t>(sites_.size()));
    // A site accepted from the graph's structure alone (scripted graphs carry no shapes) that
    // turns out not to be 4-D attention at run time is not captured.
    if (q.dim() != 4 || k.dim() != 4) return;
    SiteDescription& description = sites_[site];
    const int64_t n_heads = q.size(1), head_dim = q.size(3), kv_heads = k.size(1);
    QKSCOPE_CHECK(k.size(0) == q.size(0) && k.size(3) == head_dim && kv_heads > 0 &&
                      n_heads % kv_heads == 0,
                  "model '{}', site {}: q {} and k {} are not [batch, heads, seq, head_dim] "
                  "attention operands", module_.name, site, shape_string(q.sizes()),
                  shape_string(k.sizes()));
    if (description.n_heads != n_heads || description.head_dim != head_dim) {
      description.n_heads = static_cast<int>(n_heads);
      description.head_dim = static_cast<int>(head_dim);
      module_.record_sizes(static_cast<int>(site), description.n_heads, description.head_dim);
    }
    if (!tokens_bound_) bind_tokens(q);
    QKSCOPE_CHECK(q.size(0) == batch_ && q.size(2) == seq_len_ && k.size(2) == seq_len_,
                  "model '{}', site {}: q {} and k {} do not match the input tokens [{}, {}]",
                  module_.name, site, shape_string(q.sizes()), shape_string(k.sizes()), batch_,
                  seq_len_);

    std::vector<int> heads = sink_.wants_heads(description);
    if (heads.empty()) return;
    std::vector<char> seen(n_heads, 0);
    bool identity = static_cast<int64_t>(heads.size()) == n_heads;
    for (size_t i = 0; i < heads.size(); ++i) {
      QKSCOPE_CHECK(heads[i] >= 0 && heads[i] < n_heads && !seen[heads[i]],
                    "model '{}', site {}: the sink asked for head {} (site has {} heads, each "
                    "head at most once)", module_.name, site, heads[i], n_heads);
      seen[heads[i]] = 1;
      identity = identity && heads[i] == static_cast<int>(i);
    }
    if (sequence_.empty()) return;

    at::Tensor q_heads, k_heads;  // undefined: all heads in order
    if (!identity || kv_heads != n_heads) {
      auto opts = at::TensorOptions().dtype(at::kLong);
      at::Tensor h = at::tensor(std::vector<int64_t>(heads.begin(), heads.end()), opts);
      if (!identity) q_heads = h;
      // Grouped-query keys: query head h attends with key head h / (H / H_kv).
      if (kv_heads != n_heads) k_heads = h.div(n_heads / kv_heads, "floor");
      else k_heads = q_heads;
    }
    if (!q.is_cpu() && (!row_index_dev_.defined() || row_index_dev_.device() != q.device())) {
      row_index_dev_ = row_index_.to(q.device());
      pos_index_dev_ = pos_index_.to(q.device());
    }
    Pending p;
    p.site = static_cast<int>(site);
    p.description = description;
    p.heads = std::move(heads);
    p.q = gather(q, q_heads);
    p.k = gather(k, k_heads);
    count_capture_copies(2);
    if (!p.q.is_cpu()) {
      auto pinned = at::TensorOptions().dtype(at::kFloat).device(at::kCPU).pinned_memory(true);
      at::Tensor hq = at::empty(p.q.sizes(), pinned), hk = at::empty(p.k.sizes(), pinned);
      hq.copy_(p.q, /*non_blocking=*/true);
      hk.copy_(p.k, /*non_blocking=*/true);
      device_ = p.q.device();
      device_copies_ = true;
      p.q = hq;  // the device sources may be freed: the caching allocator orders reuse after
      p.k = hk;  // the copies on the same stream
      pending_.push_back(std::move(p));
    } else if (defer_) {
      pending_.push_back(std::move(p));
    } else {
      deliver(p);
    }
  } catch (...) {
    error_ = std::current_exception();
  }
}

void ForwardContext::deliver(const Pending& p) {
  QkBatch batch;
  batch.layer = p.site;
  batch.n_tokens = static_cast<int64_t>(sequence_.size());
  batch.n_heads = static_cast<int>(p.heads.size());
  batch.head_dim = p.description.head_dim;
  batch.q = p.q.data_ptr<float>();
  batch.k = p.k.data_ptr<float>();
  batch.sequence = sequence_.data();
  batch.position = position_.data();
  batch.token_id = token_id_.empty() ? nullptr : token_id_.data();
  sink_.consume(p.description, batch);
}

void ForwardContext::finish() {
  if (error_) std::rethrow_exception(error_);
  if (device_copies_) {
    // One wait for all non-blocking copies of this forward (they ran on the current stream).
    c10::impl::VirtualGuardImpl impl(device_.type());
    impl.getStream(device_).synchronize();
  }
  if (defer_) {
    sites_ = module_.snapshot();
    module_.sizes_known.store(true, std::memory_order_release);
    sink_.prepare(sites_);
  }
  for (const Pending& p : pending_) deliver(p);
  pending_.clear();
}

}  // namespace qkscope::detail

TORCH_LIBRARY(qkscope, m) {
  // CONSERVATIVE: the op has side effects, so dead-code elimination keeps it and no pass
  // reorders work across it.
  m.def(torch::schema("capture(Tensor q, Tensor k, int site) -> ()",
                      c10::AliasAnalysisKind::CONSERVATIVE),
        &qkscope::detail::capture_kernel);
}
