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
#include <cmath>
#include <cstring>

#include "capture_context.h"
#include "qkscope/error.h"

namespace qkscope::detail {
namespace {

thread_local ForwardContext* tls_forward = nullptr;

// The kernel. Without an active forward on this thread: one thread_local load and a return.
void capture_kernel(const at::Tensor& q, const at::Tensor& k, int64_t site, double prescale,
                    double q_unscale, double k_unscale) {
  ForwardContext* context = tls_forward;
  if (context == nullptr) return;
  context->capture(q, k, site, prescale, q_unscale, k_unscale);
}

// torch.nn's fused ops: q and k computed on the side from the op's inputs.
void capture_fused_kernel(const at::Tensor& src, int64_t num_heads, const at::Tensor& qkv_weight,
                          const at::Tensor& qkv_bias, bool norm_first, double eps,
                          const c10::optional<at::Tensor>& norm_weight,
                          const c10::optional<at::Tensor>& norm_bias, int64_t site) {
  ForwardContext* context = tls_forward;
  if (context == nullptr) return;
  context->capture_fused(src, num_heads, qkv_weight, qkv_bias, norm_first, eps,
                         norm_weight.value_or(at::Tensor()), norm_bias.value_or(at::Tensor()), site);
}

// An operand as [B, H, T, D] (a view where the layout allows one). Heads folded into the batch
// are unfolded with the input batch size.
at::Tensor to_bhtd(const at::Tensor& t, const OperandLayout& layout, int64_t batch) {
  if (!layout.heads_folded) return t.permute({layout.batch, layout.head, layout.token, layout.dim});
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  const int64_t folded = sizes[layout.batch];
  sizes[layout.batch] = folded / batch;
  sizes.insert(sizes.begin() + layout.batch, batch);
  at::Tensor unfolded = t.reshape(sizes);  // axis batch -> (batch, head)
  auto shift = [&](int axis) { return axis > layout.batch ? axis + 1 : axis; };
  return unfolded.permute({layout.batch, layout.batch + 1, shift(layout.token), shift(layout.dim)});
}

// Whether `t` can be the operand `layout` describes (rank, folded batch divisible).
bool fits(const at::Tensor& t, const OperandLayout& layout, int64_t batch) {
  if (t.dim() != layout.rank) return false;
  if (!layout.heads_folded) return true;
  return batch > 0 && t.size(layout.batch) % batch == 0;
}

// The [B, H, T, D] sizes and strides of an operand without building the view (to_bhtd's
// geometry): heads folded into the batch split that axis as (batch, head).
Geometry bhtd_geometry(const at::Tensor& t, const OperandLayout& layout, int64_t batch) {
  Geometry g;
  if (!layout.heads_folded) {
    const int axes[4] = {layout.batch, layout.head, layout.token, layout.dim};
    for (int i = 0; i < 4; ++i) {
      g.size[i] = t.size(axes[i]);
      g.stride[i] = t.stride(axes[i]);
    }
    return g;
  }
  const int64_t heads = t.size(layout.batch) / batch;
  g.size[0] = batch;
  g.size[1] = heads;
  g.size[2] = t.size(layout.token);
  g.size[3] = t.size(layout.dim);
  g.stride[0] = heads * t.stride(layout.batch);
  g.stride[1] = t.stride(layout.batch);
  g.stride[2] = t.stride(layout.token);
  g.stride[3] = t.stride(layout.dim);
  return g;
}

// Scratch for the heads a CPU capture copies, per thread and reused: a captured forward
// allocates nothing here once the buffers have grown (the malloc/free of per-call tensors was
// among the top entries of a captured small request's profile).
struct Scratch {
  std::vector<float> q, k;
  bool busy = false;  // a sink that runs a captured forward inside consume() gets its own
};
thread_local Scratch tls_scratch;

}  // namespace

ForwardContext* active_forward() { return tls_forward; }
void set_active_forward(ForwardContext* context) { tls_forward = context; }
void ensure_capture_op_registered() {}

}  // namespace qkscope::detail

namespace qkscope {

SiteDescription CaptureModule::State::reach(int site, int n_heads, int head_dim, double prescale) {
  std::lock_guard<std::mutex> lock(mutex);
  SiteDescription& d = sites.at(site);
  if (d.layer < 0) d.layer = next_layer++;
  d.n_heads = n_heads;
  d.head_dim = head_dim;
  if (!d.prescale_known) {
    QKSCOPE_CHECK(std::isfinite(prescale) && prescale > 0,
                  "model '{}', site {} ({}): the score scale computed in the graph is {}: "
                  "expected a positive finite factor", name, site, d.module, prescale);
    d.prescale = prescale;
    d.prescale_known = true;
  }
  QKSCOPE_CHECK(std::abs(d.prescale - prescale) <= 1e-12 * std::abs(d.prescale),
                "model '{}', site {} ({}): the score scale was {} in an earlier forward and is {} "
                "now: not a constant scale, so q and k cannot be recorded unscaled", name, site,
                d.module, d.prescale, prescale);
  return d;
}

namespace detail {

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
  // Any dtype; bind_tokens() reads it as "nonzero is a token".
  if (at::Tensor m = token_input(module_.mask_argument, module_.options.mask_argument); m.defined())
    mask_ = m;
  if (at::Tensor ids = token_input(module_.ids_argument, module_.options.ids_argument); ids.defined())
    ids_ = ids.to(at::kLong);
  // The mask may be longer than the ids: a decoder step with a key/value cache gets the new
  // tokens' ids and the mask of the whole sequence so far.
  QKSCOPE_CHECK(!mask_.defined() || !ids_.defined() ||
                    (mask_.size(0) == ids_.size(0) && mask_.size(1) >= ids_.size(1)),
                "model '{}': {} is {} but {} is {}: expected the same rows, and the mask at "
                "least as long as the ids", module_.name, module_.options.mask_argument,
                shape_string(mask_.sizes()), module_.options.ids_argument,
                shape_string(ids_.sizes()));
  if (!defer_) sink_.prepare(sites_);
}

void ForwardContext::bind_tokens(int64_t batch, int64_t q_len, int64_t k_len, int site) {
  const at::Tensor& tokens = mask_.defined() ? mask_ : ids_;
  batch_ = tokens.defined() ? tokens.size(0) : batch;
  total_len_ = tokens.defined() ? tokens.size(1) : q_len;
  q_len_ = q_len;
  k_len_ = k_len;
  QKSCOPE_CHECK(batch == batch_ && q_len <= total_len_ && (k_len == total_len_ || k_len == q_len),
                "model '{}', site {}: {} queries and {} keys per row for a batch of {} rows "
                "of {} tokens: expected as many queries as new tokens, and keys for the new "
                "tokens or for the whole sequence", module_.name, site, q_len, k_len, batch_,
                total_len_);
  int64_t first = 0;
  if (explicit_sequences_ != nullptr) {
    QKSCOPE_CHECK(static_cast<int64_t>(explicit_sequences_->size()) == batch_,
                  "model '{}': {} sequence indices given for a batch of {} rows", module_.name,
                  explicit_sequences_->size(), batch_);
  } else {
    first = session_.take_sequences(batch_);
  }
  // The new tokens are the last q_len columns of the sequence so far. Plain loops over the
  // CPU mask: the tensor ops this took (nonzero, cumsum, index, ...) were a good part of a
  // small request's capture cost.
  const int64_t new_begin = total_len_ - q_len;
  rows_.clear();
  q_cols_.clear();
  k_cols_.clear();
  position_.clear();
  std::vector<int64_t> columns;
  const size_t most = static_cast<size_t>(batch_ * q_len);
  for (std::vector<int64_t>* v : {&rows_, &q_cols_, &k_cols_, &position_, &columns}) v->reserve(most);
  if (mask_.defined()) {
    const at::Tensor m = (mask_.scalar_type() == at::kLong ? mask_ : mask_.ne(0).to(at::kLong))
                             .contiguous();
    const int64_t* mp = m.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch_; ++b) {
      // A token's position is its index among its row's real tokens, whichever side the
      // padding is on (SPEC 1).
      int64_t rank = 0;
      for (int64_t c = 0; c < total_len_; ++c) {
        if (mp[b * total_len_ + c] == 0) continue;
        if (c >= new_begin) {
          rows_.push_back(b);
          columns.push_back(c);
          position_.push_back(rank);
        }
        ++rank;
      }
    }
    all_valid_ = q_len == total_len_ && k_len == total_len_ &&
                 static_cast<int64_t>(rows_.size()) == batch_ * q_len;
  } else {
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t c = new_begin; c < total_len_; ++c) {
        rows_.push_back(b);
        columns.push_back(c);
        position_.push_back(c);
      }
    all_valid_ = q_len == total_len_ && k_len == total_len_;
  }
  for (int64_t c : columns) {
    q_cols_.push_back(c - new_begin);
    k_cols_.push_back(c - (total_len_ - k_len));
  }
  sequence_.resize(rows_.size());
  for (size_t i = 0; i < rows_.size(); ++i)
    sequence_[i] = explicit_sequences_ ? (*explicit_sequences_)[rows_[i]] : first + rows_[i];
  token_id_.clear();
  if (ids_.defined()) {
    // ids of the whole sequence, or of the new tokens only.
    const at::Tensor ids = ids_.contiguous();
    const int64_t width = ids.size(1);
    const int64_t ids_begin = width == total_len_ ? 0 : total_len_ - width;
    const int64_t* ip = ids.data_ptr<int64_t>();
    token_id_.resize(rows_.size());
    for (size_t i = 0; i < rows_.size(); ++i)
      token_id_[i] = ip[rows_[i] * width + columns[i] - ids_begin];
  }
  row_index_ = at::Tensor();  // the index tensors of gather(), made when first needed
  tokens_bound_ = true;
}

void ForwardContext::make_index_tensors() {
  if (row_index_.defined()) return;
  auto tensor = [](const std::vector<int64_t>& v) {
    return at::tensor(at::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong));
  };
  row_index_ = tensor(rows_);
  q_col_index_ = tensor(q_cols_);
  k_col_index_ = tensor(k_cols_);
}

const float* ForwardContext::gather_cpu(const at::Tensor& t, const Geometry& g,
                                        const std::vector<int>& heads, int64_t group, bool keys,
                                        double unscale, std::vector<float>& scratch) const {
  const int64_t n_heads = g.size[1] * group;  // query heads
  const int64_t d = g.size[3];
  const float* base = t.data_ptr<float>();
  const bool identity = group == 1 && static_cast<int64_t>(heads.size()) == n_heads &&
                        std::is_sorted(heads.begin(), heads.end());
  // Every token of every row, every head, and the operand is the [B, T, H, D] tensor itself
  // (BERT's view of its projection): the sink reads the model's memory, nothing is copied.
  if (all_valid_ && identity && unscale == 1.0 && g.stride[3] == 1 && g.stride[1] == d &&
      g.stride[2] == n_heads * d && (g.size[0] == 1 || g.stride[0] == g.size[2] * n_heads * d))
    return base;
  const std::vector<int64_t>& cols = keys ? k_cols_ : q_cols_;
  const size_t n = rows_.size(), h_out = heads.size();
  scratch.resize(n * h_out * static_cast<size_t>(d));
  float* out = scratch.data();
  // Scalings the captured tensors still carry (applied before a reshape, or in place), divided
  // out in float as the tensor division did.
  const float divisor = static_cast<float>(unscale);
  for (size_t i = 0; i < n; ++i) {
    const float* token = base + rows_[i] * g.stride[0] + cols[i] * g.stride[2];
    for (size_t j = 0; j < h_out; ++j) {
      // Grouped-query keys: query head h attends with key head h / (H / H_kv).
      const float* src = token + (heads[j] / group) * g.stride[1];
      float* dst = out + (i * h_out + j) * d;
      if (g.stride[3] == 1 && unscale == 1.0) {
        std::memcpy(dst, src, static_cast<size_t>(d) * sizeof(float));
      } else {
        for (int64_t x = 0; x < d; ++x) dst[x] = src[x * g.stride[3]];
        if (unscale != 1.0)
          for (int64_t x = 0; x < d; ++x) dst[x] /= divisor;
      }
    }
  }
  return out;
}

at::Tensor ForwardContext::gather(const at::Tensor& t, const at::Tensor& head_index, bool keys) {
  using at::indexing::Slice;
  const int64_t n_heads = head_index.defined() ? head_index.numel() : t.size(1);
  at::Tensor out;
  if (all_valid_ && !head_index.defined()) {
    // Every token, every head: the [B, S, H, D] view, copied only when not already contiguous.
    out = t.permute({0, 2, 1, 3}).contiguous().view({batch_ * t.size(2), n_heads, t.size(3)});
  } else {
    make_index_tensors();
    const at::Tensor& rows = t.is_cpu() ? row_index_ : row_index_dev_;
    const at::Tensor& cols = keys ? (t.is_cpu() ? k_col_index_ : k_col_index_dev_)
                                  : (t.is_cpu() ? q_col_index_ : q_col_index_dev_);
    if (head_index.defined()) {
      // One gather: rows [n,1] x heads [1,H'] x columns [n,1] -> [n, H', D].
      out = t.index({rows.unsqueeze(1), head_index.to(t.device()).unsqueeze(0), cols.unsqueeze(1)});
    } else {
      out = t.index({rows, Slice(), cols});  // [n, H, D]
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

void ForwardContext::capture(const at::Tensor& q_operand, const at::Tensor& k_operand,
                             int64_t site, double prescale, double q_unscale,
                             double k_unscale) noexcept {
  if (error_) return;
  try {
    QKSCOPE_ASSERT(site >= 0 && site < static_cast<int64_t>(sites_.size()));
    SiteDescription description = sites_[site];
    const at::Tensor& tokens = mask_.defined() ? mask_ : ids_;
    // Heads folded into the batch are unfolded with the input's batch size; 4-D operands give it.
    const int64_t batch = tokens.defined() ? tokens.size(0)
                          : description.q_layout.heads_folded
                              ? -1
                              : q_operand.size(description.q_layout.batch);
    // A product accepted from the graph's structure alone (loaded graphs carry no shapes) whose
    // operands turn out not to have the form's ranks is not attention of that form.
    if (!fits(q_operand, description.q_layout, batch) ||
        !fits(k_operand, description.k_layout, batch)) {
      QKSCOPE_CHECK(!description.q_layout.heads_folded || batch > 0,
                    "model '{}', site {} ({}): heads are folded into the batch ({}) and the model "
                    "has no '{}' or '{}' input to tell the batch size", module_.name, site,
                    description.module, description.kind, module_.options.mask_argument,
                    module_.options.ids_argument);
      return;
    }
    const Geometry q = bhtd_geometry(q_operand, description.q_layout, batch);
    const Geometry k = bhtd_geometry(k_operand, description.k_layout, batch);
    const int64_t n_heads = q.size[1], head_dim = q.size[3], kv_heads = k.size[1];
    QKSCOPE_CHECK(k.size[0] == q.size[0] && k.size[3] == head_dim && kv_heads > 0 &&
                      n_heads % kv_heads == 0,
                  "model '{}', site {}: q {} and k {} are not [batch, heads, seq, head_dim] "
                  "attention operands", module_.name, site, shape_string(q.sizes()),
                  shape_string(k.sizes()));
    // SDPA without scale= and the fused ops scale by 1/sqrt(head_dim) themselves.
    if (description.scale_at.find("-default") != std::string::npos)
      prescale /= std::sqrt(static_cast<double>(head_dim));
    if (description.layer < 0 || description.n_heads != n_heads ||
        description.head_dim != head_dim || !description.prescale_known ||
        description.prescale != prescale) {
      description = module_.reach(static_cast<int>(site), static_cast<int>(n_heads),
                                  static_cast<int>(head_dim), prescale);
      sites_[site] = description;
    }

    // The sink decides first: a site it does not want costs nothing more and cannot fail.
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

    if (!tokens_bound_) bind_tokens(q.size[0], q.size[2], k.size[2], static_cast<int>(site));
    QKSCOPE_CHECK(q.size[0] == batch_ && q.size[2] == q_len_ && k.size[2] == k_len_,
                  "model '{}', site {} ({}): q {} and k {} as [batch, heads, tokens, head_dim] do "
                  "not match this forward's tokens ({} rows, {} queries, {} keys; cross-attention "
                  "is not captured)", module_.name, site, description.module,
                  shape_string(q.sizes()), shape_string(k.sizes()), batch_, q_len_, k_len_);
    if (sequence_.empty()) return;

    // CPU float operands delivered now (the common case): the heads are read straight from
    // the operands' strides into per-thread scratch, or not copied at all, with no tensor op.
    if (!defer_ && q_operand.is_cpu() && k_operand.is_cpu() &&
        q_operand.scalar_type() == at::kFloat && k_operand.scalar_type() == at::kFloat) {
      Scratch local;
      Scratch& scratch = tls_scratch.busy ? local : tls_scratch;
      scratch.busy = true;
      struct Release {
        Scratch& s;
        ~Release() { s.busy = false; }
      } release{scratch};
      QkBatch b;
      b.layer = description.layer;
      b.n_tokens = static_cast<int64_t>(sequence_.size());
      b.n_heads = static_cast<int>(heads.size());
      b.head_dim = static_cast<int>(head_dim);
      b.q = gather_cpu(q_operand, q, heads, 1, /*keys=*/false, q_unscale, scratch.q);
      b.k = gather_cpu(k_operand, k, heads, n_heads / kv_heads, /*keys=*/true, k_unscale,
                       scratch.k);
      b.sequence = sequence_.data();
      b.position = position_.data();
      b.token_id = token_id_.empty() ? nullptr : token_id_.data();
      count_capture_copies(2);
      sink_.consume(description, b);
      return;
    }

    const at::Tensor qt = to_bhtd(q_operand, description.q_layout, batch);
    const at::Tensor kt = to_bhtd(k_operand, description.k_layout, batch);
    at::Tensor q_heads, k_heads;  // undefined: all heads in order
    if (!identity || kv_heads != n_heads) {
      auto opts = at::TensorOptions().dtype(at::kLong);
      at::Tensor h = at::tensor(std::vector<int64_t>(heads.begin(), heads.end()), opts);
      if (!identity) q_heads = h;
      // Grouped-query keys: query head h attends with key head h / (H / H_kv).
      if (kv_heads != n_heads) k_heads = h.div(n_heads / kv_heads, "floor");
      else k_heads = q_heads;
    }
    if (!qt.is_cpu() && (!row_index_dev_.defined() || row_index_dev_.device() != qt.device())) {
      make_index_tensors();
      row_index_dev_ = row_index_.to(qt.device());
      q_col_index_dev_ = q_col_index_.to(qt.device());
      k_col_index_dev_ = k_col_index_.to(qt.device());
    }
    Pending p;
    p.description = description;
    p.heads = std::move(heads);
    p.q = gather(qt, q_heads, /*keys=*/false);
    p.k = gather(kt, k_heads, /*keys=*/true);
    // Scalings the captured tensors still carry (applied before a reshape, or in place).
    if (q_unscale != 1.0) p.q = p.q / q_unscale;
    if (k_unscale != 1.0) p.k = p.k / k_unscale;
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

void ForwardContext::capture_fused(const at::Tensor& src, int64_t num_heads,
                                   const at::Tensor& qkv_weight, const at::Tensor& qkv_bias,
                                   bool norm_first, double eps, const at::Tensor& norm_weight,
                                   const at::Tensor& norm_bias, int64_t site) noexcept {
  if (error_) return;
  try {
    QKSCOPE_ASSERT(site >= 0 && site < static_cast<int64_t>(sites_.size()));
    // A site the sink has already said no to costs no projection.
    const SiteDescription& known = sites_[site];
    if (known.n_heads > 0 && known.layer >= 0 && sink_.wants_heads(known).empty()) return;
    const int64_t embed = qkv_weight.size(1);
    QKSCOPE_CHECK(num_heads > 0 && embed % num_heads == 0 && qkv_weight.size(0) == 3 * embed,
                  "model '{}', site {}: fused attention with {} heads and an in-projection of {} "
                  "is not [3 * E, E] with E divisible by the heads", module_.name, site,
                  num_heads, shape_string(qkv_weight.sizes()));
    at::Tensor x = src;
    if (x.is_nested()) {
      // Real tokens only, left-aligned per row: pad back to the input's [B, L, E].
      const at::Tensor& tokens = mask_.defined() ? mask_ : ids_;
      std::vector<int64_t> size;
      if (tokens.defined()) size = {tokens.size(0), tokens.size(1), embed};
      x = tokens.defined() ? x.to_padded_tensor(0.0, at::IntArrayRef(size))
                           : x.to_padded_tensor(0.0);
    }
    QKSCOPE_CHECK(x.dim() == 3 && x.size(2) == embed,
                  "model '{}', site {}: fused attention input {} is not [batch, tokens, {}]",
                  module_.name, site, shape_string(x.sizes()), embed);
    if (norm_first) x = at::layer_norm(x, {embed}, norm_weight, norm_bias, eps);
    // q and k: the first two thirds of the packed projection.
    at::Tensor qk = at::linear(x, qkv_weight.narrow(0, 0, 2 * embed),
                               qkv_bias.defined() ? qkv_bias.narrow(0, 0, 2 * embed) : at::Tensor());
    const int64_t head_dim = embed / num_heads;
    std::vector<int64_t> heads = {x.size(0), x.size(1), num_heads, head_dim};
    at::Tensor q = qk.narrow(2, 0, embed).view(heads);
    at::Tensor k = qk.narrow(2, embed, embed).view(heads);
    capture(q, k, site, 1.0, 1.0, 1.0);
  } catch (...) {
    error_ = std::current_exception();
  }
}

void ForwardContext::deliver(const Pending& p) {
  QkBatch batch;
  batch.layer = p.description.layer;
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

}  // namespace detail
}  // namespace qkscope

TORCH_LIBRARY(qkscope, m) {
  // CONSERVATIVE: the op has side effects, so dead-code elimination keeps it and no pass
  // reorders work across it.
  // prescale: the site's score scale as the graph computes it (a constant, or from sizes);
  // q_unscale / k_unscale: factors the captured operands still carry.
  m.def(torch::schema("capture(Tensor q, Tensor k, int site, float prescale, float q_unscale, "
                      "float k_unscale) -> ()",
                      c10::AliasAnalysisKind::CONSERVATIVE),
        &qkscope::detail::capture_kernel);
  m.def(torch::schema("capture_fused(Tensor src, int num_heads, Tensor qkv_weight, "
                      "Tensor qkv_bias, bool norm_first, float eps, Tensor? norm_weight, "
                      "Tensor? norm_bias, int site) -> ()",
                      c10::AliasAnalysisKind::CONSERVATIVE),
        &qkscope::detail::capture_fused_kernel);
}
