#include "prepared_head.h"

#include <algorithm>
#include <cmath>

namespace qkscope::detail {

void finish_norms(PreparedHead& h, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t) {
    h.q_len[t] = std::sqrt(h.q_norm2[t]);
    h.k_len[t] = std::sqrt(h.k_norm2[t]);
    h.k_norm2_f[t] = static_cast<float>(h.k_norm2[t]);
    h.k_len_f[t] = static_cast<float>(h.k_len[t]);
  }
}

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
    // A NaN or Inf anywhere makes a centroid, and so every centred norm, NaN or Inf.
    for (int64_t t = 0; t < n; ++t)
      if (!std::isfinite(h.q_norm2[t]) || !std::isfinite(h.k_norm2[t])) return false;
    finish_norms(h, 0, n);
    h.norms_ready = true;
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
