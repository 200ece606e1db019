#include "prepared_head.h"

#include <algorithm>
#include <cmath>

#include "exact_pair.h"

namespace qkscope::detail {
namespace {

// Fills in the roots and float copies of tokens [begin, end)'s squared norms.
void finish_norms(PreparedHead& h, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t) {
    h.q_len[t] = std::sqrt(h.q_norm2[t]);
    h.k_len[t] = std::sqrt(h.k_norm2[t]);
    h.k_norm2_f[t] = static_cast<float>(h.k_norm2[t]);
    h.k_len_f[t] = static_cast<float>(h.k_len[t]);
  }
}

}  // namespace

// Squared norms of tokens [begin, end) (without --center, where prepare left them to the pass).
// Returns false when a token's q or k holds NaN or Inf: a float's square cannot overflow
// double, so a norm is finite exactly when every component is. Tokens are a stride of H * D
// floats apart, each on its own page, where hardware prefetchers stop: the next tokens' rows
// are requested ahead explicitly.
bool compute_norms(PreparedHead& h, int64_t begin, int64_t end) {
  if (h.norms_ready) return true;
  constexpr int64_t kAhead = 8;
  const int d = h.dim;
  for (int64_t t = begin; t < end; ++t) {
    const float* q = h.q_vec + t * h.stride;
    const float* k = h.k_vec + t * h.stride;
    if (t + kAhead < end)
      for (int l = 0; l < d; l += 16) {  // one 64-byte line per 16 floats
        __builtin_prefetch(q + kAhead * h.stride + l);
        __builtin_prefetch(k + kAhead * h.stride + l);
      }
    h.q_norm2[t] = dot_in_double(q, q, d);
    h.k_norm2[t] = dot_in_double(k, k, d);
    if (!std::isfinite(h.q_norm2[t]) || !std::isfinite(h.k_norm2[t])) return false;
  }
  finish_norms(h, begin, end);
  return true;
}

// Whether the float screen's sums stay finite for queries [q0, q1) and keys [k0, k1): float's
// range ends at 3.4e38. Outside it (norms beyond ~1e18) every pair goes to the double test.
bool float_screen_safe(const PreparedHead& h, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  const double max_a = *std::max_element(h.q_norm2.begin() + q0, h.q_norm2.begin() + q1);
  const double max_b = *std::max_element(h.k_norm2.begin() + k0, h.k_norm2.begin() + k1);
  return max_a * h.max_c2 < 1e36 && max_b * h.max_inv_c2 < 1e36;
}

// Fills `h` (reusing its memory: a worker prepares many heads of the same size). Where it copies
// the vectors it also computes the norms, and returns false if a token's q or k holds NaN or
// Inf; otherwise the pass computes the norms as it goes (compute_norms).
bool prepare(const HeadInput& in, const MetricOptions& options, PreparedHead& h) {
  h.regions.clear();
  h.n = in.n_tokens;
  h.dim = in.head_dim;
  const int64_t n = h.n;
  const int d = h.dim;
  h.q_vec = in.q;
  h.k_vec = in.k;
  h.stride = in.stride;
  h.q_gram = in.q;
  h.k_gram = in.k;
  h.gram_stride = in.stride;
  h.q_mean.assign(d, 0.0);
  h.k_mean.assign(d, 0.0);
  h.q_norm2.resize(n);
  h.k_norm2.resize(n);
  h.q_len.resize(n);
  h.k_len.resize(n);
  h.k_norm2_f.resize(n);
  h.k_len_f.resize(n);
  h.max_c2 = h.max_inv_c2 = 0;
  for (double c : options.scales) {
    h.max_c2 = std::max(h.max_c2, c * c);
    h.max_inv_c2 = std::max(h.max_inv_c2, 1.0 / (c * c));
  }
  h.norms_ready = false;
  // All scope reads every key for every block of queries: contiguous copies pay for themselves.
  // --center needs the centroids before anything else.
  if ((options.center || options.pairs == PairScope::all) && n > 0) {
    h.q_copy.resize(n * d);
    h.k_copy.resize(n * d);
    for (int64_t t = 0; t < n; ++t) {
      std::copy_n(in.q + t * in.stride, d, h.q_copy.data() + t * d);
      std::copy_n(in.k + t * in.stride, d, h.k_copy.data() + t * d);
    }
    h.q_vec = h.q_gram = h.q_copy.data();
    h.k_vec = h.k_gram = h.k_copy.data();
    h.stride = h.gram_stride = d;
    if (!compute_norms(h, 0, n)) return false;  // also the finiteness check
    h.norms_ready = true;
  }
  if (options.center && n > 0) {
    for (int64_t t = 0; t < n; ++t)
      for (int l = 0; l < d; ++l) {
        h.q_mean[l] += h.q_copy[t * d + l];
        h.k_mean[l] += h.k_copy[t * d + l];
      }
    for (int l = 0; l < d; ++l) {
      h.q_mean[l] /= static_cast<double>(n);
      h.k_mean[l] /= static_cast<double>(n);
    }
    h.q_centered.resize(n * d);
    h.k_centered.resize(n * d);
    const double* qm = h.q_mean.data();
    const double* km = h.k_mean.data();
    for (int64_t t = 0; t < n; ++t) {
      const float* qr = h.q_copy.data() + t * d;
      const float* kr = h.k_copy.data() + t * d;
      double a = 0, b = 0;
      for (int l = 0; l < d; ++l) {
        const double u = static_cast<double>(qr[l]) - qm[l];
        const double v = static_cast<double>(kr[l]) - km[l];
        a += u * u;
        b += v * v;
        h.q_centered[t * d + l] = static_cast<float>(u);
        h.k_centered[t * d + l] = static_cast<float>(v);
      }
      h.q_norm2[t] = a;
      h.k_norm2[t] = b;
    }
    finish_norms(h, 0, n);
    h.q_gram = h.q_centered.data();
    h.k_gram = h.k_centered.data();
  }

  if (options.pairs == PairScope::all) {
    if (n > 0) h.regions.push_back({0, n});
  } else {
    int64_t start = 0;
    for (int64_t t = 1; t <= n; ++t)
      if (t == n || in.sequence[t] != in.sequence[start]) {
        h.regions.push_back({start, t});
        start = t;
      }
  }
  h.key_end.resize(n);
  h.region_begin.resize(n);
  for (const Region& r : h.regions)
    for (int64_t i = r.begin; i < r.end; ++i) {
      h.region_begin[i] = r.begin;
      // Positions are sorted inside a sequence: causal keys (position <= p_i) form a prefix.
      h.key_end[i] = options.pairs == PairScope::causal
                         ? std::upper_bound(in.position + r.begin, in.position + r.end,
                                            in.position[i]) - in.position
                         : r.end;
    }
  return true;
}

}  // namespace qkscope::detail
